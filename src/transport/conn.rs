//! One framed, handshaken TCP connection driven by a mio event loop.

use std::io::{self, ErrorKind, Write};
use std::net::SocketAddr;

use mio::event::Source;
use mio::net::TcpStream;
use mio::{Interest, Registry, Token};
use serde::{Serialize, de::DeserializeOwned};

use super::auth::{ClusterKey, Proof, Role, Transcript, prove, verify};
use super::error::TransportError;
use super::frame::{
    DEFAULT_MAX_FRAME_BYTES, FrameDecoder, READ_CHUNK_BYTES, RETAINED_CAPACITY_BYTES, Retention, encode_frame,
};
use super::handshake::{Handshake, MAX_HANDSHAKE_BYTES, check_handshake};

/// Default most bytes one [`Connection::read_frames`] call reads, so one chatty peer
/// cannot starve the others sharing the event loop.
pub const READ_BUDGET_BYTES: usize = 1024 * 1024;

/// Default bound on unsent outbound bytes per connection, so a stuck peer cannot make
/// us buffer without limit.
pub const DEFAULT_MAX_OUTBOUND_BYTES: usize = 64 * 1024 * 1024;

/// Size limits of a [`Connection`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectionConfig {
    /// Largest frame body sent or accepted after the handshake.
    pub max_frame_bytes: usize,
    /// Unsent bytes beyond which [`Connection::queue`] refuses new frames.
    pub max_outbound_bytes: usize,
    /// Most bytes one [`Connection::read_frames`] call reads (at least 1 is used).
    pub read_budget_bytes: usize,
    /// The key both sides must prove they hold (see [`prove`](super::prove)).
    pub key: ClusterKey,
}

impl Default for ConnectionConfig {
    fn default() -> Self {
        Self {
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
            max_outbound_bytes: DEFAULT_MAX_OUTBOUND_BYTES,
            read_budget_bytes: READ_BUDGET_BYTES,
            key: ClusterKey::unauthenticated(),
        }
    }
}

/// What a [`Connection::read_frames`] call ended with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadOutcome {
    /// The socket has no more data (a read would block, or came back short); wait for the
    /// next readable event.
    Drained,
    /// The read budget ran out with data possibly left. mio is edge-triggered and will
    /// not report it again: call `read_frames` again soon without waiting for an event.
    MoreAvailable,
    /// The peer closed its side; no more frames will come. A trailing partial frame is
    /// discarded. Close the connection once `out` is handled.
    Closed,
}

/// What one read from the socket produced.
enum Fill {
    /// This many bytes, and whether that was fewer than asked for.
    Bytes(usize, bool),
    WouldBlock,
    Eof,
}

/// A TCP connection carrying length-prefixed MessagePack frames.
///
/// Protocol: each side first sends its own [`Handshake`] with
/// [`start_handshake`](Self::start_handshake), and reads the peer's with
/// [`read_handshake`](Self::read_handshake), which also exchanges and checks the two
/// [`Proof`]s; every later frame is a value of the caller's message type, read with
/// [`read_frames`](Self::read_frames). Frames [`queue`](Self::queue)d before the peer is
/// authenticated are held back until it is, so nothing the caller sends (such as an
/// incarnation) reaches a peer that has not proven it holds the cluster secret. The
/// transport knows nothing of what those messages mean.
///
/// Register it with a [`Registry`] directly (it is a [`Source`]) using
/// [`interest`](Self::interest), and re-register whenever that changes.
#[derive(Debug)]
pub struct Connection {
    stream: TcpStream,
    decoder: FrameDecoder,
    out: Vec<u8>,
    /// Bytes of `out` already written to the socket.
    out_pos: usize,
    /// When `out` gives back memory a large batch made it take.
    out_retention: Retention,
    config: ConnectionConfig,
    /// Our handshake and side, once sent.
    ours: Option<(Handshake, Role)>,
    /// The peer's handshake, received but its proof not yet checked.
    unproven: Option<Handshake>,
    /// The peer's handshake, once its proof checked.
    peer: Option<Handshake>,
    /// Frames queued before the peer was authenticated (bounded like `out`).
    held: Vec<u8>,
    /// Counters for traffic metrics.
    bytes_queued: u64,
    bytes_read: u64,
}

impl Connection {
    /// Wraps a connected (or connecting) non-blocking stream, e.g. one from `accept`.
    pub fn new(stream: TcpStream, config: ConnectionConfig) -> io::Result<Self> {
        // Raft messages are small and latency-bound; Nagle would hold them back.
        stream.set_nodelay(true)?;
        Ok(Self {
            stream,
            decoder: FrameDecoder::new(MAX_HANDSHAKE_BYTES),
            out: Vec::new(),
            out_pos: 0,
            out_retention: Retention::default(),
            config,
            ours: None,
            unproven: None,
            peer: None,
            held: Vec::new(),
            bytes_queued: 0,
            bytes_read: 0,
        })
    }

    /// Starts a non-blocking connect to `addr`.
    ///
    /// The connect completes in the background: queue the handshake at once, and a
    /// failed connect surfaces as an error from `flush` or `read_*` after the socket
    /// becomes writable or readable.
    pub fn connect(addr: SocketAddr, config: ConnectionConfig) -> io::Result<Self> {
        Self::new(TcpStream::connect(addr)?, config)
    }

    /// Sends our handshake as `role`; call once, first. The proof follows by itself once
    /// the peer's handshake arrives (in [`read_handshake`](Self::read_handshake)).
    pub fn start_handshake(&mut self, ours: Handshake, role: Role) -> Result<(), TransportError> {
        debug_assert!(self.ours.is_none(), "one handshake per connection");
        encode_frame(&mut self.out, &ours, MAX_HANDSHAKE_BYTES)?;
        self.ours = Some((ours, role));
        Ok(())
    }

    /// The peer's handshake, once its proof checked.
    pub fn peer(&self) -> Option<&Handshake> {
        self.peer.as_ref()
    }

    /// The underlying stream, e.g. for `peer_addr` or `take_error`.
    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }

    /// Unsent outbound bytes (held-back frames included).
    pub fn pending_bytes(&self) -> usize {
        self.out.len() - self.out_pos + self.held.len()
    }

    /// Bytes of a frame received in part: the memory a slow or stalled peer holds.
    pub fn partial_frame_bytes(&self) -> usize {
        self.decoder.buffered_len()
    }

    /// The events to register for: always readable, and writable while output is pending.
    pub fn interest(&self) -> Interest {
        match self.out.len() - self.out_pos {
            0 => Interest::READABLE,
            _ => Interest::READABLE | Interest::WRITABLE,
        }
    }
}

impl Connection {
    /// Appends a frame holding `msg` to the outbound buffer; [`flush`](Self::flush) sends it.
    ///
    /// Refuses with [`TransportError::Backpressure`] when the frame would take the unsent
    /// bytes past `max_outbound_bytes` (an empty buffer always takes one frame). Every
    /// error leaves the connection usable and nothing queued; Raft resends what is lost.
    pub fn queue<T: Serialize + ?Sized>(&mut self, msg: &T) -> Result<(), TransportError> {
        let pending = self.pending_bytes();
        if pending >= self.config.max_outbound_bytes {
            return Err(TransportError::Backpressure);
        }
        self.compact_outbound();
        let buf = if self.peer.is_some() { &mut self.out } else { &mut self.held };
        let before = buf.len();
        encode_frame(buf, msg, self.config.max_frame_bytes)?;
        let frame_len = buf.len() - before;
        if pending > 0 && pending + frame_len > self.config.max_outbound_bytes {
            buf.truncate(before);
            return Err(TransportError::Backpressure);
        }
        self.bytes_queued += frame_len as u64;
        Ok(())
    }

    /// Bytes of frames queued on this connection so far (for traffic metrics).
    pub fn bytes_queued(&self) -> u64 {
        self.bytes_queued
    }

    /// Bytes read from the socket so far, handshake included (for traffic metrics).
    pub fn bytes_read(&self) -> u64 {
        self.bytes_read
    }

    /// Writes queued bytes until done or the socket would block; `Ok(true)` once all are
    /// sent. After `Ok(false)`, wait for a writable event and call again.
    pub fn flush(&mut self) -> io::Result<bool> {
        while self.out_pos < self.out.len() {
            match self.stream.write(&self.out[self.out_pos..]) {
                Ok(0) => return Err(ErrorKind::WriteZero.into()),
                Ok(n) => self.out_pos += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        let used = self.out.len();
        self.out.clear();
        self.out_pos = 0;
        if self.out_retention.should_shrink(used, self.out.capacity()) {
            self.out.shrink_to(RETAINED_CAPACITY_BYTES);
        }
        Ok(true)
    }

    /// Drops already-sent bytes once they outweigh the unsent ones, so the buffer does not
    /// grow with total traffic while each byte is moved at most a bounded number of times.
    fn compact_outbound(&mut self) {
        if self.out_pos > 0 && self.out_pos >= self.pending_bytes() {
            self.out.drain(..self.out_pos);
            self.out_pos = 0;
        }
    }
}

impl Connection {
    /// Reads the peer's handshake, checks it with [`check_handshake`], sends our proof,
    /// then reads and [`verify`]s the peer's.
    ///
    /// `Ok(None)` means it has not fully arrived: wait for a readable event (and flush:
    /// our proof may have been queued). Once this returns `Some`, call
    /// [`read_frames`](Self::read_frames) straight away: frames that arrived with the
    /// handshake are still in the socket, and mio, being edge-triggered, will not report
    /// them again. Calling again after success returns the same handshake.
    pub fn read_handshake(
        &mut self,
        expected_version: u32,
        expected_cluster: &str,
    ) -> Result<Option<Handshake>, TransportError> {
        if let Some(peer) = &self.peer {
            return Ok(Some(peer.clone()));
        }
        let Some((ours, role)) = self.ours.clone() else { return Err(TransportError::HandshakeIncomplete) };
        // Read exactly the handshake's bytes, never past it: later frames belong to
        // `read_frames` and its budget. Terminates: the decoder refuses a prefix above
        // MAX_HANDSHAKE_BYTES, and each read brings the frame closer to complete.
        loop {
            while let Some(step) = self.next_handshake_frame(&ours, role, (expected_version, expected_cluster))? {
                if let Some(peer) = step {
                    return Ok(Some(peer));
                }
            }
            match self.fill(self.decoder.bytes_needed())? {
                Fill::Bytes(..) => {}
                Fill::WouldBlock => return Ok(None),
                Fill::Eof => return Err(TransportError::Closed),
            }
        }
    }

    /// Handles one complete handshake-stage frame, if one is buffered: `Some(None)` after
    /// the peer's handshake (our proof is now queued), `Some(Some(peer))` once the peer's
    /// proof checked, `None` if more bytes are needed.
    fn next_handshake_frame(
        &mut self,
        ours: &Handshake,
        role: Role,
        (expected_version, expected_cluster): (u32, &str),
    ) -> Result<Option<Option<Handshake>>, TransportError> {
        let Some(hs) = self.unproven.take() else {
            let Some(hs) = self.decoder.next_frame::<Handshake>()? else { return Ok(None) };
            check_handshake(&hs, expected_version, expected_cluster)?;
            let proof = prove(&self.config.key, role, &transcript(ours, &hs, role));
            encode_frame(&mut self.out, &proof, MAX_HANDSHAKE_BYTES)?;
            self.unproven = Some(hs);
            return Ok(Some(None));
        };
        let Some(proof) = self.decoder.next_frame::<Proof>()? else {
            self.unproven = Some(hs);
            return Ok(None);
        };
        let theirs = match role {
            Role::Dialer => Role::Acceptor,
            Role::Acceptor => Role::Dialer,
        };
        verify(&self.config.key, theirs, &transcript(ours, &hs, role), &proof)?;
        self.decoder.set_max_frame_bytes(self.config.max_frame_bytes);
        self.out.append(&mut self.held);
        self.peer = Some(hs.clone());
        Ok(Some(Some(hs)))
    }

    /// Reads and decodes frames into `out` until the socket would block, the peer closes,
    /// or `read_budget_bytes` have been read; see [`ReadOutcome`] for what to do next.
    ///
    /// A read that returns fewer bytes than asked for ends the call as `Drained` without
    /// another read to see `WouldBlock`: the socket's queue was empty then, and under
    /// mio's edge-triggered epoll every later arrival (data, FIN, RST) raises an event of
    /// its own. This saves one `recvfrom` per readable event (a quarter of a follower's
    /// syscalls per AppendEntries). The one thing not reported again is a FIN that had
    /// already arrived behind the data read: that connection is then found closed by its
    /// next write (outbound) or its idle timeout (inbound), not at once.
    ///
    /// On error, frames decoded before it stay in `out`; close the connection.
    pub fn read_frames<T: DeserializeOwned>(&mut self, out: &mut Vec<T>) -> Result<ReadOutcome, TransportError> {
        if self.peer.is_none() {
            return Err(TransportError::HandshakeIncomplete);
        }
        let mut budget = self.config.read_budget_bytes.max(1);
        loop {
            while let Some(msg) = self.decoder.next_frame()? {
                out.push(msg);
            }
            if budget == 0 {
                return Ok(ReadOutcome::MoreAvailable);
            }
            match self.fill(budget)? {
                Fill::Bytes(n, false) => budget -= n,
                Fill::Bytes(_, true) => {
                    while let Some(msg) = self.decoder.next_frame()? {
                        out.push(msg);
                    }
                    return Ok(ReadOutcome::Drained);
                }
                Fill::WouldBlock => return Ok(ReadOutcome::Drained),
                Fill::Eof => return Ok(self.closed()),
            }
        }
    }

    fn closed(&self) -> ReadOutcome {
        let partial = self.decoder.buffered_len();
        if partial > 0 {
            log::debug!("peer closed mid-frame; discarding {partial} buffered bytes");
        }
        ReadOutcome::Closed
    }

    /// One socket read of at most `limit` (> 0) bytes into the decoder.
    fn fill(&mut self, limit: usize) -> Result<Fill, TransportError> {
        let asked = limit.min(READ_CHUNK_BYTES);
        loop {
            return match self.decoder.read_from(&mut self.stream, limit) {
                Ok(0) => Ok(Fill::Eof),
                Ok(n) => {
                    self.bytes_read += n as u64;
                    Ok(Fill::Bytes(n, n < asked))
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => Ok(Fill::WouldBlock),
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => Err(e.into()),
            };
        }
    }
}

/// What the proofs of a connection cover, seen from the side playing `role`.
pub fn transcript<'a>(ours: &'a Handshake, theirs: &'a Handshake, role: Role) -> Transcript<'a> {
    let (dialer, acceptor) = match role {
        Role::Dialer => (ours, theirs),
        Role::Acceptor => (theirs, ours),
    };
    Transcript {
        cluster_id: &ours.cluster_id,
        dialer: (dialer.node_id, &dialer.nonce),
        acceptor: (acceptor.node_id, &acceptor.nonce),
        client: dialer.client,
    }
}

impl Source for Connection {
    fn register(&mut self, registry: &Registry, token: Token, interest: Interest) -> io::Result<()> {
        self.stream.register(registry, token, interest)
    }

    fn reregister(&mut self, registry: &Registry, token: Token, interest: Interest) -> io::Result<()> {
        self.stream.reregister(registry, token, interest)
    }

    fn deregister(&mut self, registry: &Registry) -> io::Result<()> {
        self.stream.deregister(registry)
    }
}
