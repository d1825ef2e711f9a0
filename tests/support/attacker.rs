//! A raw-frame attacker: a blocking `std::net::TcpStream` that speaks the peer protocol
//! byte by byte, so tests can send what no honest node would.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use quorate::core::{Message, MessageKind, Term};
use quorate::transport::{ClusterKey, Handshake, LEN_PREFIX_BYTES, Proof, Role, Transcript, encode_frame, prove};
use serde::{Serialize, de::DeserializeOwned};

/// The cluster id nodes use when `Config::cluster_id` is not set.
pub const CLUSTER_ID: &str = "quorate";

/// How long the attacker waits for a node to answer or close.
pub const ANSWER_DEADLINE: Duration = Duration::from_secs(10);

/// Mirrors the runtime's private `Wire` enum (externally tagged enums encode by name).
#[derive(Serialize)]
pub enum FakeWire {
    Hello(FakeHello),
    Raft(Message),
    Refused(String),
    Keepalive,
}

/// Mirrors the runtime's private `Hello`.
#[derive(Serialize)]
pub struct FakeHello {
    pub incarnation: u64,
    pub listen_addr: SocketAddr,
}

/// One frame holding `msg`.
pub fn frame<T: Serialize>(msg: &T) -> Vec<u8> {
    let mut buf = Vec::new();
    encode_frame(&mut buf, msg, usize::MAX).expect("encode");
    buf
}

/// A connection to a node, as a dialer.
pub struct Attacker {
    pub stream: TcpStream,
    /// The node's handshake, once read.
    pub node: Option<Handshake>,
}

impl Attacker {
    /// Connects to `addr` without saying anything.
    pub fn connect(addr: SocketAddr) -> Attacker {
        let stream = TcpStream::connect(addr).expect("connect to the node");
        stream.set_read_timeout(Some(ANSWER_DEADLINE)).unwrap();
        stream.set_write_timeout(Some(ANSWER_DEADLINE)).unwrap();
        Attacker { stream, node: None }
    }

    /// Connects and completes the handshake as node `id`, proving `key` (the public one
    /// of a cluster without a secret, or a wrong one). `Err` if the node closed on us.
    pub fn handshake(addr: SocketAddr, id: u64, key: &ClusterKey) -> Result<Attacker, String> {
        Attacker::handshake_as(addr, id, key, false)
    }

    /// [`Attacker::handshake`] as a peer node, or (`client`) as a remote client.
    pub fn handshake_as(addr: SocketAddr, id: u64, key: &ClusterKey, client: bool) -> Result<Attacker, String> {
        let mut a = Attacker::connect(addr);
        let ours = Handshake { client, ..Handshake::new(CLUSTER_ID, id).unwrap() };
        a.send_frame(&ours).map_err(|e| e.to_string())?;
        let theirs: Handshake = a.read_frame()?;
        let t = Transcript {
            cluster_id: CLUSTER_ID,
            dialer: (id, &ours.nonce),
            acceptor: (theirs.node_id, &theirs.nonce),
            client,
        };
        a.send_frame(&prove(key, Role::Dialer, &t)).map_err(|e| e.to_string())?;
        let _their_proof: Proof = a.read_frame()?;
        a.node = Some(theirs);
        Ok(a)
    }

    /// [`Attacker::handshake`] in a cluster without a secret, then a Hello.
    pub fn introduced(addr: SocketAddr, id: u64, incarnation: u64) -> Attacker {
        let mut a = Attacker::handshake(addr, id, &ClusterKey::unauthenticated()).expect("handshake");
        let listen_addr = "127.0.0.1:9".parse().unwrap();
        a.send(&FakeWire::Hello(FakeHello { incarnation, listen_addr })).expect("hello");
        a
    }

    pub fn send_frame<T: Serialize>(&mut self, msg: &T) -> std::io::Result<()> {
        self.stream.write_all(&frame(msg))
    }

    pub fn send(&mut self, wire: &FakeWire) -> std::io::Result<()> {
        self.send_frame(wire)
    }

    /// Sends one Raft message; `Err` once the node has closed the connection.
    pub fn raft(&mut self, term: u64, kind: MessageKind) -> std::io::Result<()> {
        self.send(&FakeWire::Raft(Message { term: Term(term), kind }))
    }

    pub fn read_frame<T: DeserializeOwned>(&mut self) -> Result<T, String> {
        let mut prefix = [0u8; LEN_PREFIX_BYTES];
        self.stream.read_exact(&mut prefix).map_err(|e| format!("reading a frame: {e}"))?;
        let mut body = vec![0u8; u32::from_be_bytes(prefix) as usize];
        self.stream.read_exact(&mut body).map_err(|e| format!("reading a frame: {e}"))?;
        rmp_serde::from_slice(&body).map_err(|e| e.to_string())
    }

    /// Waits until the node has acted on every frame sent so far: sends a frame no node
    /// accepts from a dialer, and waits for the close it causes. The node steps what it
    /// decoded before that frame in the same turn, so a client call made after this
    /// returns sees its effect. No sleep: a wait for a condition.
    pub fn barrier(&mut self) {
        let _ = self.send(&FakeWire::Refused("barrier".into()));
        assert!(self.closed_within(ANSWER_DEADLINE), "the node did not close on an invalid frame");
    }

    /// Sends keepalives every few milliseconds for `window`; returns whether the node
    /// closed the connection meanwhile (so it was not the idle timeout that closed it).
    pub fn closed_while_alive(&mut self, window: Duration) -> bool {
        let until = Instant::now() + window;
        while Instant::now() < until {
            if self.send(&FakeWire::Keepalive).is_err() || self.closed_within(Duration::from_millis(20)) {
                return true;
            }
        }
        false
    }

    /// One keepalive, ignoring errors (the node may have closed already).
    pub fn barrier_free_keepalive(&mut self) {
        let _ = self.send(&FakeWire::Keepalive);
    }

    /// Collects what the node sends for up to `window`, or until it closes.
    pub fn read_for(&mut self, window: Duration) -> Vec<u8> {
        self.stream.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        let until = Instant::now() + window;
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while Instant::now() < until {
            match self.stream.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted) => {}
                Err(_) => break,
            }
        }
        got
    }

    /// Waits until the node closes the connection; `false` if it was still open after
    /// `deadline`.
    pub fn closed_within(&mut self, deadline: Duration) -> bool {
        self.stream.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        let until = Instant::now() + deadline;
        let mut buf = [0u8; 4096];
        while Instant::now() < until {
            match self.stream.read(&mut buf) {
                Ok(0) => return true,
                Ok(_) => {}
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted) => {}
                Err(_) => return true,
            }
        }
        false
    }
}
