//! One framed, handshaken TCP connection driven by a mio event loop.

use std::io::{self, ErrorKind, Write};
use std::net::SocketAddr;

use mio::event::Source;
use mio::net::TcpStream;
use mio::{Interest, Registry, Token};
use serde::{Serialize, de::DeserializeOwned};

use super::error::TransportError;
use super::frame::{DEFAULT_MAX_FRAME_BYTES, FrameDecoder, RETAINED_CAPACITY_BYTES, encode_frame};
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
}

impl Default for ConnectionConfig {
    fn default() -> Self {
        Self {
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
            max_outbound_bytes: DEFAULT_MAX_OUTBOUND_BYTES,
            read_budget_bytes: READ_BUDGET_BYTES,
        }
    }
}

/// What a [`Connection::read_frames`] call ended with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadOutcome {
    /// The socket has no more data; wait for the next readable event.
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
    Bytes(usize),
    WouldBlock,
    Eof,
}

/// A TCP connection carrying length-prefixed MessagePack frames.
///
/// Protocol: each side first queues its own [`Handshake`], and reads the peer's with
/// [`read_handshake`](Self::read_handshake); every later frame is a value of the caller's
/// message type, read with [`read_frames`](Self::read_frames). The transport knows
/// nothing of what those messages mean.
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
    config: ConnectionConfig,
    peer: Option<Handshake>,
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
            config,
            peer: None,
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

    /// The peer's handshake, once accepted.
    pub fn peer(&self) -> Option<&Handshake> {
        self.peer.as_ref()
    }

    /// The underlying stream, e.g. for `peer_addr` or `take_error`.
    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }

    /// Unsent outbound bytes.
    pub fn pending_bytes(&self) -> usize {
        self.out.len() - self.out_pos
    }

    /// The events to register for: always readable, and writable while output is pending.
    pub fn interest(&self) -> Interest {
        match self.pending_bytes() {
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
        let before = self.out.len();
        encode_frame(&mut self.out, msg, self.config.max_frame_bytes)?;
        let frame_len = self.out.len() - before;
        if pending > 0 && pending + frame_len > self.config.max_outbound_bytes {
            self.out.truncate(before);
            return Err(TransportError::Backpressure);
        }
        Ok(())
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
        self.out.clear();
        self.out_pos = 0;
        if self.out.capacity() > RETAINED_CAPACITY_BYTES {
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
    /// Reads the peer's handshake and checks it with [`check_handshake`].
    ///
    /// `Ok(None)` means it has not fully arrived: wait for a readable event. Once this
    /// returns `Some`, call [`read_frames`](Self::read_frames) straight away: frames that
    /// arrived with the handshake are still in the socket, and mio, being edge-triggered,
    /// will not report them again.
    /// Calling again after success returns the same handshake.
    pub fn read_handshake(
        &mut self,
        expected_version: u32,
        expected_cluster: &str,
    ) -> Result<Option<Handshake>, TransportError> {
        if let Some(peer) = &self.peer {
            return Ok(Some(peer.clone()));
        }
        // Read exactly the handshake's bytes, never past it: later frames belong to
        // `read_frames` and its budget. Terminates: the decoder refuses a prefix above
        // MAX_HANDSHAKE_BYTES, and each read brings the frame closer to complete.
        loop {
            if let Some(hs) = self.decoder.next_frame::<Handshake>()? {
                check_handshake(&hs, expected_version, expected_cluster)?;
                self.decoder.set_max_frame_bytes(self.config.max_frame_bytes);
                self.peer = Some(hs.clone());
                return Ok(Some(hs));
            }
            match self.fill(self.decoder.bytes_needed())? {
                Fill::Bytes(_) => {}
                Fill::WouldBlock => return Ok(None),
                Fill::Eof => return Err(TransportError::Closed),
            }
        }
    }

    /// Reads and decodes frames into `out` until the socket would block, the peer closes,
    /// or `read_budget_bytes` have been read; see [`ReadOutcome`] for what to do next.
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
                Fill::Bytes(n) => budget -= n,
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
        loop {
            return match self.decoder.read_from(&mut self.stream, limit) {
                Ok(0) => Ok(Fill::Eof),
                Ok(n) => Ok(Fill::Bytes(n)),
                Err(e) if e.kind() == ErrorKind::WouldBlock => Ok(Fill::WouldBlock),
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => Err(e.into()),
            };
        }
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
