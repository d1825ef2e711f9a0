//! End-to-end tests over real loopback sockets, driven by a `mio::Poll` with a deadline.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token};
use serde::{Deserialize, Serialize};

use super::*;

const CLUSTER: &str = "test-cluster";
const DEADLINE: Duration = Duration::from_secs(20);
const LISTENER: Token = Token(0);

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Msg {
    seq: u64,
    text: String,
}

fn msg(seq: u64) -> Msg {
    Msg { seq, text: format!("message {seq} {}", "p".repeat((seq % 97) as usize)) }
}

fn handshake(node_id: u64) -> Handshake {
    Handshake::new(CLUSTER, node_id).unwrap()
}

/// What a test step wants next.
enum Step {
    Done,
    /// Wait for the next event.
    Wait,
    /// Run again at once: a read budget ran out and mio will not report the rest.
    Again,
}

/// Polls and runs `step` after every wake-up until it is done; panics at the deadline.
fn drive(poll: &mut Poll, mut step: impl FnMut(&Poll) -> Step) {
    let deadline = Instant::now() + DEADLINE;
    let mut events = Events::with_capacity(64);
    let mut again = false;
    loop {
        let now = Instant::now();
        assert!(now < deadline, "loopback test timed out");
        let timeout = if again { Duration::ZERO } else { deadline - now };
        poll.poll(&mut events, Some(timeout)).unwrap();
        match step(poll) {
            Step::Done => return,
            Step::Wait => again = false,
            Step::Again => again = true,
        }
    }
}

/// One end of a test connection and its progress.
struct Peer {
    conn: Connection,
    token: Token,
    sent: u64,
    received: u64,
    more: bool,
    closed: bool,
}

impl Peer {
    fn new(conn: Connection, token: Token, poll: &Poll) -> Self {
        let mut peer = Peer { conn, token, sent: 0, received: 0, more: false, closed: false };
        let interest = peer.conn.interest();
        poll.registry().register(&mut peer.conn, token, interest).unwrap();
        peer
    }

    /// Sends up to `total` messages, reads what has arrived, and re-registers.
    fn pump(&mut self, poll: &Poll, total: u64) {
        self.send(total);
        self.receive();
        let interest = self.conn.interest();
        poll.registry().reregister(&mut self.conn, self.token, interest).unwrap();
    }

    fn send(&mut self, total: u64) {
        loop {
            let before = self.sent;
            while self.sent < total {
                match self.conn.queue(&msg(self.sent)) {
                    Ok(()) => self.sent += 1,
                    Err(TransportError::Backpressure) => break,
                    Err(e) => panic!("queue failed: {e}"),
                }
            }
            let flushed = self.conn.flush().unwrap();
            // Before the peer is authenticated frames are held back, and flushing frees
            // no room for more.
            if !flushed || self.sent == total || self.sent == before {
                return;
            }
        }
    }

    fn receive(&mut self) {
        if self.closed || self.conn.read_handshake(PROTOCOL_VERSION, CLUSTER).unwrap().is_none() {
            return;
        }
        let mut got = Vec::new();
        let outcome = self.conn.read_frames::<Msg>(&mut got).unwrap();
        for m in got {
            assert_eq!(m, msg(self.received));
            self.received += 1;
        }
        self.more = outcome == ReadOutcome::MoreAvailable;
        self.closed = outcome == ReadOutcome::Closed;
    }
}

/// Connects a client (node 1) to a fresh listener and accepts it as the server (node 2);
/// each has queued its handshake.
fn connected_pair(poll: &mut Poll, config: ConnectionConfig) -> (Peer, Peer) {
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let mut listener = TcpListener::bind(any).unwrap();
    poll.registry().register(&mut listener, LISTENER, Interest::READABLE).unwrap();
    let mut client = Connection::connect(listener.local_addr().unwrap(), config).unwrap();
    client.start_handshake(handshake(1), Role::Dialer).unwrap();
    let client = Peer::new(client, Token(1), poll);
    let mut accepted = None;
    drive(poll, |_| match listener.accept() {
        Ok((stream, _)) => {
            accepted = Some(stream);
            Step::Done
        }
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Step::Wait,
        Err(e) => panic!("accept failed: {e}"),
    });
    let mut server = Connection::new(accepted.unwrap(), config).unwrap();
    server.start_handshake(handshake(2), Role::Acceptor).unwrap();
    (client, Peer::new(server, Token(2), poll))
}

/// Pumps both peers until `done` holds for them.
fn pump_until(poll: &mut Poll, a: &mut Peer, b: &mut Peer, total: u64, done: fn(&Peer) -> bool) {
    drive(poll, |poll| {
        a.pump(poll, total);
        b.pump(poll, total);
        if done(a) && done(b) {
            Step::Done
        } else if a.more || b.more {
            Step::Again
        } else {
            Step::Wait
        }
    });
}

#[test]
fn exchanges_ten_thousand_frames_each_way() {
    const TOTAL: u64 = 10_000;
    let mut poll = Poll::new().unwrap();
    // Small bounds so backpressure and the read budget are exercised, not just allowed.
    let config =
        ConnectionConfig { max_outbound_bytes: 32 * 1024, read_budget_bytes: 8 * 1024, ..ConnectionConfig::default() };
    let (mut client, mut server) = connected_pair(&mut poll, config);
    let done = |p: &Peer| p.received == TOTAL && p.sent == TOTAL && p.conn.pending_bytes() == 0;
    pump_until(&mut poll, &mut client, &mut server, TOTAL, done);
    assert_eq!(client.conn.peer().map(|hs| hs.node_id), Some(2));
    assert_eq!(server.conn.peer().map(|hs| hs.node_id), Some(1));
}

#[test]
fn peer_close_is_reported_after_its_frames() {
    let mut poll = Poll::new().unwrap();
    let (mut client, mut server) = connected_pair(&mut poll, ConnectionConfig::default());
    pump_until(&mut poll, &mut client, &mut server, 3, |p| p.received == 3);
    poll.registry().deregister(&mut client.conn).unwrap();
    drop(client);
    drive(&mut poll, |poll| {
        server.pump(poll, 3);
        if server.closed { Step::Done } else { Step::Wait }
    });
}

#[test]
fn read_budget_bounds_frames_per_call() {
    const TOTAL: u64 = 300;
    let mut poll = Poll::new().unwrap();
    let budget = 4 * 1024;
    let config = ConnectionConfig { read_budget_bytes: budget, ..ConnectionConfig::default() };
    let (mut client, server) = connected_pair(&mut poll, config);
    let mut server = server.conn;
    let big = |seq| Msg { seq, text: "b".repeat(1000) };
    let frame_len = {
        let mut buf = Vec::new();
        encode_frame(&mut buf, &big(0), usize::MAX).unwrap();
        buf.len()
    };
    let mut received = Vec::new();
    let mut more = false;
    drive(&mut poll, |_| {
        while client.sent < TOTAL && client.conn.queue(&big(client.sent)).is_ok() {
            client.sent += 1;
        }
        // The client's frames leave once the server's proof has checked.
        client.conn.read_handshake(PROTOCOL_VERSION, CLUSTER).unwrap();
        client.conn.flush().unwrap();
        let authenticated = server.read_handshake(PROTOCOL_VERSION, CLUSTER).unwrap().is_some();
        server.flush().unwrap();
        if authenticated {
            let mut got = Vec::new();
            more = server.read_frames::<Msg>(&mut got).unwrap() == ReadOutcome::MoreAvailable;
            // Leftover from the last call is under one frame; the budget adds at most this.
            assert!(got.len() <= budget / frame_len + 1, "{} frames in one call", got.len());
            received.extend(got);
        }
        match (received.len() as u64 == TOTAL, more) {
            (true, _) => Step::Done,
            (false, true) => Step::Again,
            (false, false) => Step::Wait,
        }
    });
    assert!(received.iter().enumerate().all(|(i, m)| *m == big(i as u64)));
}

#[test]
fn wrong_cluster_is_refused_on_the_wire() {
    let mut poll = Poll::new().unwrap();
    let (client, server) = connected_pair(&mut poll, ConnectionConfig::default());
    let mut client = client.conn;
    let mut server = server.conn;
    let mut result = Ok(None);
    drive(&mut poll, |_| {
        // The server expects another cluster, so the client's handshake must be refused.
        client.flush().unwrap();
        result = server.read_handshake(PROTOCOL_VERSION, "elsewhere");
        if matches!(result, Ok(None)) { Step::Wait } else { Step::Done }
    });
    assert!(matches!(result, Err(TransportError::ClusterMismatch { .. })), "{result:?}");
}

#[test]
fn close_before_handshake_is_an_error() {
    let mut poll = Poll::new().unwrap();
    let (client, server) = connected_pair(&mut poll, ConnectionConfig::default());
    let mut server = server.conn;
    drop(client); // Its handshake was queued but never flushed.
    let mut result = Ok(None);
    drive(&mut poll, |_| {
        result = server.read_handshake(PROTOCOL_VERSION, CLUSTER);
        if matches!(result, Ok(None)) { Step::Wait } else { Step::Done }
    });
    assert!(matches!(result, Err(TransportError::Closed)), "{result:?}");
}

#[test]
fn frames_before_handshake_are_refused() {
    let mut poll = Poll::new().unwrap();
    let (_client, mut server) = connected_pair(&mut poll, ConnectionConfig::default());
    let result = server.conn.read_frames::<Msg>(&mut Vec::new());
    assert!(matches!(result, Err(TransportError::HandshakeIncomplete)));
}

#[test]
fn outbound_buffer_is_bounded() {
    let mut poll = Poll::new().unwrap();
    let max = 10 * 1024;
    let config = ConnectionConfig { max_outbound_bytes: max, ..ConnectionConfig::default() };
    let (mut client, _server) = connected_pair(&mut poll, config);
    // Nothing is flushed, as if the peer had stopped reading.
    let mut queued = 0;
    let result = loop {
        match client.conn.queue(&msg(queued)) {
            Ok(()) => queued += 1,
            Err(e) => break e,
        }
    };
    assert!(matches!(result, TransportError::Backpressure), "{result:?}");
    assert!(queued > 10, "only {queued} frames fit");
    assert!(client.conn.pending_bytes() <= max);
    assert_eq!(client.conn.interest(), Interest::READABLE | Interest::WRITABLE);
}
