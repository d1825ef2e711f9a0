//! One blocking TCP connection from a remote client to a node: the handshake (as a
//! client), then requests written by any caller thread and responses read by one reader
//! thread, which hands each to the caller waiting for its id.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, bounded};
use parking_lot::Mutex;

use super::wire::{Bytes, Call, ClientRequest, ClientResponse, WireError};
use crate::core::NodeId;
use crate::error::{Error, Result};
use crate::transport::{
    ClusterKey, FrameDecoder, Handshake, MAX_HANDSHAKE_BYTES, PROTOCOL_VERSION, Proof, Role, check_handshake,
    encode_frame, prove, transcript, verify,
};

/// What one request's wait ended with.
pub(crate) enum Outcome {
    /// The node answered.
    Answered(std::result::Result<Bytes, WireError>),
    /// No answer in time; the request may still be carried out.
    TimedOut,
    /// The connection broke after the request was sent: it may have been carried out.
    Lost,
}

/// A request on its way: the sender's end of its answer.
pub(crate) struct InFlight {
    id: u64,
    rx: Receiver<std::result::Result<Bytes, WireError>>,
    waiters: Arc<Mutex<Waiters>>,
}

impl InFlight {
    /// Waits until `deadline` for the answer.
    pub fn wait(&self, deadline: Instant) -> Outcome {
        match self.rx.recv_deadline(deadline) {
            Ok(result) => Outcome::Answered(result),
            Err(RecvTimeoutError::Timeout) => Outcome::TimedOut,
            Err(RecvTimeoutError::Disconnected) => Outcome::Lost,
        }
    }
}

impl Drop for InFlight {
    /// A caller that stopped waiting leaves no entry behind.
    fn drop(&mut self) {
        self.waiters.lock().map.remove(&self.id);
    }
}

/// Settings every link of a client uses.
#[derive(Clone, Debug)]
pub(crate) struct LinkConfig {
    pub cluster_id: String,
    pub key: ClusterKey,
    pub connect_timeout: Duration,
    pub max_frame_bytes: usize,
}

/// A connection to one node.
pub(crate) struct Link {
    /// The node's id, from its handshake.
    pub node: NodeId,
    pub addr: SocketAddr,
    writer: Mutex<TcpStream>,
    waiters: Arc<Mutex<Waiters>>,
    next_id: AtomicU64,
    dead: Arc<AtomicBool>,
    max_frame_bytes: usize,
}

#[derive(Default)]
struct Waiters {
    map: HashMap<u64, Sender<std::result::Result<Bytes, WireError>>>,
    /// Set once the reader stopped: nobody may wait any more.
    closed: bool,
}

impl Link {
    /// Connects to `addr`, proves the cluster secret as a client, and starts the reader.
    pub fn open(addr: SocketAddr, config: &LinkConfig) -> Result<Link> {
        let mut stream = TcpStream::connect_timeout(&addr, config.connect_timeout)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(config.connect_timeout))?;
        stream.set_write_timeout(Some(config.connect_timeout))?;
        let node = handshake(&mut stream, config).map_err(|e| match e {
            Error::Io(io) => Error::Io(std::io::Error::new(io.kind(), format!("handshake with {addr}: {io}"))),
            e => e,
        })?;
        stream.set_read_timeout(None)?;
        let waiters = Arc::new(Mutex::new(Waiters::default()));
        let dead = Arc::new(AtomicBool::new(false));
        let reader = stream.try_clone()?;
        let (w, d, max) = (waiters.clone(), dead.clone(), config.max_frame_bytes);
        std::thread::Builder::new()
            .name(format!("quorate-remote-{node}"))
            .spawn(move || read_responses(reader, max, &w, &d))?;
        let next_id = AtomicU64::new(1);
        Ok(Link { node, addr, writer: Mutex::new(stream), waiters, next_id, dead, max_frame_bytes: max })
    }

    /// Whether the connection broke.
    pub fn is_dead(&self) -> bool {
        self.dead.load(Ordering::Acquire)
    }

    /// Sends `call`. `Err` means it certainly was not sent whole (the node never saw it).
    pub fn send(&self, call: Call) -> Result<InFlight> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = bounded(1);
        {
            let mut waiters = self.waiters.lock();
            if waiters.closed {
                return Err(Error::Io(std::io::Error::new(std::io::ErrorKind::NotConnected, "connection lost")));
            }
            waiters.map.insert(id, tx);
        }
        // Made first, so an early return below leaves no entry behind either.
        let in_flight = InFlight { id, rx, waiters: self.waiters.clone() };
        let mut frame = Vec::new();
        encode_frame(&mut frame, &ClientRequest { id, call }, self.max_frame_bytes)
            .map_err(|e| Error::Codec(e.to_string()))?;
        let mut writer = self.writer.lock();
        if let Err(e) = writer.write_all(&frame) {
            // Part of the frame may be out: the node cannot read a whole request from it,
            // and it must not read the next one as the rest, so the link is done.
            drop(writer);
            self.kill();
            return Err(e.into());
        }
        Ok(in_flight)
    }

    /// Closes the connection; the reader then fails every waiting request.
    pub fn kill(&self) {
        self.dead.store(true, Ordering::Release);
        let _ = self.writer.lock().shutdown(Shutdown::Both);
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The client's side of the transport's handshake, blocking: our handshake, theirs, our
/// proof, theirs. Returns the node's id.
fn handshake(stream: &mut TcpStream, config: &LinkConfig) -> Result<NodeId> {
    let client_id = loop {
        let id = crate::session::fresh_secret()?;
        if id != 0 {
            break id;
        }
    };
    let ours = Handshake::client(&config.cluster_id, client_id).map_err(|e| Error::Io(std::io::Error::other(e)))?;
    let mut out = Vec::new();
    encode_frame(&mut out, &ours, MAX_HANDSHAKE_BYTES).map_err(|e| Error::Codec(e.to_string()))?;
    stream.write_all(&out)?;
    let mut decoder = FrameDecoder::new(MAX_HANDSHAKE_BYTES);
    let theirs: Handshake = read_frame(stream, &mut decoder)?;
    check_handshake(&theirs, PROTOCOL_VERSION, &config.cluster_id).map_err(|e| Error::Config(e.to_string()))?;
    if theirs.client {
        return Err(Error::Config("a client answered where a node was expected".into()));
    }
    let t = transcript(&ours, &theirs, Role::Dialer);
    out.clear();
    encode_frame(&mut out, &prove(&config.key, Role::Dialer, &t), MAX_HANDSHAKE_BYTES)
        .map_err(|e| Error::Codec(e.to_string()))?;
    stream.write_all(&out)?;
    let proof: Proof = read_frame(stream, &mut decoder)?;
    verify(&config.key, Role::Acceptor, &t, &proof)
        .map_err(|_| Error::Config("the node's proof failed: another cluster secret".into()))?;
    Ok(theirs.node_id)
}

/// Reads one frame, blocking.
fn read_frame<T: serde::de::DeserializeOwned>(stream: &mut TcpStream, decoder: &mut FrameDecoder) -> Result<T> {
    loop {
        if let Some(frame) = decoder.next_frame().map_err(|e| Error::Codec(e.to_string()))? {
            return Ok(frame);
        }
        let wanted = decoder.bytes_needed().max(1);
        if decoder.read_from(stream as &mut dyn Read, wanted)? == 0 {
            // Nodes close a connection whose handshake they refuse (wrong cluster, wrong
            // secret), often without a word.
            return Err(Error::Io(std::io::Error::new(
                std::io::ErrorKind::ConnectionAborted,
                "the node closed the connection during the handshake (another cluster id or secret?)",
            )));
        }
    }
}

/// The reader thread: hands each response to its waiter until the connection ends, then
/// fails the rest (their callers see `Lost`).
fn read_responses(mut stream: TcpStream, max_frame_bytes: usize, waiters: &Mutex<Waiters>, dead: &AtomicBool) {
    let mut decoder = FrameDecoder::new(max_frame_bytes);
    loop {
        match read_frame::<ClientResponse>(&mut stream, &mut decoder) {
            Ok(response) => {
                if let Some(tx) = waiters.lock().map.remove(&response.id) {
                    let _ = tx.try_send(response.result);
                }
            }
            Err(e) => {
                if !dead.load(Ordering::Acquire) {
                    log::debug!("remote client: connection lost: {e}");
                }
                break;
            }
        }
    }
    dead.store(true, Ordering::Release);
    let mut w = waiters.lock();
    w.closed = true;
    w.map.clear(); // Dropping the senders wakes every waiter with `Lost`.
}
