//! Hostile and malformed input on a node's listening socket, from raw `std::net::TcpStream`s.
//!
//! For every case the node must close that one connection (a blocking read ends in EOF or a
//! reset, never in the read deadline), stay up, and the cluster must keep committing writes.
//! Both the leader and a follower are attacked.

mod support;

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use quorate::NodeId;
use quorate::transport::{Handshake, LEN_PREFIX_BYTES, PROTOCOL_VERSION, encode_frame};
use serde::Serialize;
use support::cluster::{Cluster, Cmd, wait_until};

/// The cluster id nodes use when `Config::cluster_id` is not set.
const CLUSTER_ID: &str = "quorate";

/// How long a raw socket waits for the node to close it. A deadline, not a synchronisation:
/// a healthy node closes in microseconds.
const CLOSE_DEADLINE: Duration = Duration::from_secs(10);

/// The two tests count the process's open file descriptors; they must not overlap.
static SERIAL: Mutex<()> = Mutex::new(());

/// Mirrors the runtime's private `Wire` enum closely enough to produce frames it decodes
/// (externally tagged enums encode by variant name).
#[derive(Serialize)]
enum FakeWire {
    /// Only an acceptor may send this; a dialer sending it is a protocol violation.
    Refused(String),
}

fn handshake(protocol_version: u32, cluster_id: &str, node_id: u64) -> Handshake {
    Handshake { protocol_version, cluster_id: cluster_id.into(), node_id, client: false, nonce: [7; 32] }
}

fn frame<T: Serialize>(msg: &T) -> Vec<u8> {
    let mut buf = Vec::new();
    encode_frame(&mut buf, msg, usize::MAX).expect("encode");
    buf
}

fn raw_frame(body: &[u8]) -> Vec<u8> {
    let mut out = (body.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(body);
    out
}

fn valid_handshake() -> Vec<u8> {
    // Node 77 is no member: the transport does not care, membership is the runtime's business.
    frame(&handshake(PROTOCOL_VERSION, CLUSTER_ID, 77))
}

fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).expect("connect to the node");
    stream.set_read_timeout(Some(CLOSE_DEADLINE)).unwrap();
    stream.set_write_timeout(Some(CLOSE_DEADLINE)).unwrap();
    stream
}

/// Reads until the node closes the connection. `Ok(bytes the node sent)` on EOF or reset,
/// `Err` if the deadline passed with the connection still open.
fn read_until_closed(stream: &mut TcpStream) -> Result<Vec<u8>, String> {
    let started = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return Ok(got),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted | ErrorKind::BrokenPipe
                ) =>
            {
                return Ok(got);
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return Err(format!("still open after {:?} ({} bytes received)", started.elapsed(), got.len()));
            }
            Err(e) => return Err(format!("unexpected read error {e}")),
        }
    }
}

/// What a raw client does on one connection.
struct Case {
    name: &'static str,
    /// Bytes to send; a failing write is fine (the node may already have closed).
    send: Vec<u8>,
    /// Half-close our side after sending (the node then sees EOF but we can still read).
    shutdown_write: bool,
}

impl Case {
    fn new(name: &'static str, send: Vec<u8>) -> Case {
        Case { name, send, shutdown_write: false }
    }
    fn then_eof(mut self) -> Case {
        self.shutdown_write = true;
        self
    }
}

/// Sends `case` and checks the node closes the connection; returns a finding otherwise.
fn run_case(addr: SocketAddr, case: &Case) -> Option<String> {
    let mut stream = connect(addr);
    let _ = stream.write_all(&case.send);
    if case.shutdown_write {
        let _ = stream.shutdown(Shutdown::Write);
    }
    match read_until_closed(&mut stream) {
        Ok(received) => {
            // Whatever the node managed to send first must be its own handshake.
            if received.len() >= LEN_PREFIX_BYTES {
                let len = u32::from_be_bytes(received[..LEN_PREFIX_BYTES].try_into().unwrap()) as usize;
                if received.len() >= LEN_PREFIX_BYTES + len {
                    let hs: Handshake = rmp_serde::from_slice(&received[LEN_PREFIX_BYTES..LEN_PREFIX_BYTES + len])
                        .expect("the node's first frame is a handshake");
                    assert_eq!((hs.protocol_version, hs.cluster_id.as_str()), (PROTOCOL_VERSION, CLUSTER_ID));
                }
            }
            None
        }
        Err(why) => Some(format!("{}: the node did not close the connection: {why}", case.name)),
    }
}

fn cases(target: NodeId) -> Vec<Case> {
    let hs = valid_handshake();
    let with_hs = |rest: &[u8]| [hs.clone(), rest.to_vec()].concat();
    let mut oversized = u32::MAX.to_be_bytes().to_vec();
    oversized.extend_from_slice(b"abcdef");
    let mut truncated = 100u32.to_be_bytes().to_vec();
    truncated.extend_from_slice(&[7u8; 6]); // 4 + 6 = 10 bytes of a 104-byte frame
    // Deterministic pseudo-random garbage (xorshift), starting with a small length prefix so
    // the decoder reads a body and fails to decode it, not just the prefix check.
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let noise: Vec<u8> = (0..2000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    let small_garbage_frame = [&40u32.to_be_bytes()[..], &noise[..40]].concat();
    vec![
        Case::new("garbage: HTTP request", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec()),
        Case::new("garbage: random bytes", noise.clone()),
        Case::new("garbage: small frame, undecodable body", small_garbage_frame.clone()),
        Case::new("garbage: zero-length frame", 0u32.to_be_bytes().to_vec()),
        Case::new("oversized length prefix before the handshake", oversized.clone()),
        Case::new("truncated frame then EOF", truncated.clone()).then_eof(),
        Case::new("wrong cluster id", frame(&handshake(PROTOCOL_VERSION, "another-cluster", 2))),
        Case::new("wrong protocol version", frame(&handshake(PROTOCOL_VERSION + 1, CLUSTER_ID, 2))),
        Case::new("protocol version 0", frame(&handshake(0, CLUSTER_ID, 2))),
        Case::new("node id 0", frame(&handshake(PROTOCOL_VERSION, CLUSTER_ID, 0))),
        Case::new("the target's own node id", frame(&handshake(PROTOCOL_VERSION, CLUSTER_ID, target))),
        Case::new("handshake of the wrong type", frame(&("not", "a", "handshake"))),
        Case::new(
            "handshake with trailing bytes",
            raw_frame(&[&frame(&handshake(PROTOCOL_VERSION, CLUSTER_ID, 9))[4..], &[0xc0][..]].concat()),
        ),
        Case::new(
            "handshake above the handshake size limit",
            frame(&handshake(PROTOCOL_VERSION, &"c".repeat(8192), 9)),
        ),
        Case::new("valid handshake, then random garbage", with_hs(&noise)),
        Case::new("valid handshake, then an undecodable frame", with_hs(&small_garbage_frame)),
        Case::new("valid handshake, then an oversized length prefix", with_hs(&oversized)),
        Case::new("valid handshake, then a truncated frame and EOF", with_hs(&truncated)).then_eof(),
        Case::new(
            "valid handshake, then a frame only an acceptor may send",
            with_hs(&frame(&FakeWire::Refused("x".into()))),
        ),
        Case::new("valid handshake, then EOF", hs.clone()).then_eof(),
        Case::new("nothing, then EOF", Vec::new()).then_eof(),
    ]
}

/// Open file descriptors of this process (Linux), or `None` where that cannot be counted.
fn open_fds() -> Option<usize> {
    std::fs::read_dir("/proc/self/fd").ok().map(|d| d.count())
}

/// Commits one more write through the current leader, and remembers it.
fn write_through_leader(cluster: &Cluster, expected: &mut Vec<u64>, after: &str) {
    let v = expected.len() as u64 + 1;
    let leader = cluster.stable_leader();
    let n = cluster.client(leader).write(Cmd::Put(v)).unwrap_or_else(|e| panic!("write after {after}: {e}"));
    assert_eq!(n, v as usize, "write after {after}");
    expected.push(v);
}

fn assert_all_running(cluster: &Cluster, after: &str) {
    for (id, node) in &cluster.nodes {
        assert!(node.is_running(), "node {id} stopped after {after}");
    }
}

fn attack(pick_leader: bool) {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let cluster = Cluster::start(3);
    let leader = cluster.stable_leader();
    let target = if pick_leader { leader } else { *cluster.nodes.keys().find(|&&id| id != leader).unwrap() };
    let addr = cluster.addrs[&target];
    let mut expected = Vec::new();
    write_through_leader(&cluster, &mut expected, "start");
    let fds_before = open_fds();

    let mut findings = Vec::new();
    for case in cases(target) {
        findings.extend(run_case(addr, &case));
        assert_all_running(&cluster, case.name);
        write_through_leader(&cluster, &mut expected, case.name);
    }

    // 200 connections that open and close at once (the node may even see a reset before it
    // has sent its handshake).
    for _ in 0..200 {
        drop(connect(addr));
    }
    assert_all_running(&cluster, "200 connect/close");
    write_through_leader(&cluster, &mut expected, "200 connect/close");
    // 200 that open, say nothing and half-close: each must be closed by the node too.
    for i in 0..200 {
        let case = Case::new("connect, then EOF (loop)", Vec::new()).then_eof();
        if let Some(f) = run_case(addr, &case) {
            findings.push(format!("{f} (iteration {i})"));
            break;
        }
    }
    assert_all_running(&cluster, "200 connect/EOF");
    write_through_leader(&cluster, &mut expected, "200 connect/EOF");

    // The node still accepts well-formed connections: it answers with its handshake.
    let mut probe = connect(addr);
    let mut prefix = [0u8; LEN_PREFIX_BYTES];
    probe.read_exact(&mut prefix).expect("the node still greets new connections");
    let mut body = vec![0u8; u32::from_be_bytes(prefix) as usize];
    probe.read_exact(&mut body).unwrap();
    let hs: Handshake = rmp_serde::from_slice(&body).unwrap();
    assert_eq!(hs, Handshake { nonce: hs.nonce, ..handshake(PROTOCOL_VERSION, CLUSTER_ID, target) });
    drop(probe);

    // Every refused connection was released: no descriptor leaked in the node.
    if let Some(before) = fds_before {
        wait_until("the node releases every refused connection", || open_fds().is_some_and(|now| now <= before));
    }

    assert_all_running(&cluster, "all cases");
    cluster.await_applied_everywhere(&expected);
    let now = cluster.stable_leader();
    if now != leader {
        // Not asserted: a loaded machine can miss a heartbeat without any help from us.
        eprintln!("note: leadership moved from node {leader} to node {now} during the test");
    }
    assert!(findings.is_empty(), "node {target} kept connections open:\n  {}", findings.join("\n  "));
}

#[test]
fn bad_input_to_the_leader_closes_only_that_connection() {
    attack(true);
}

#[test]
fn bad_input_to_a_follower_closes_only_that_connection() {
    attack(false);
}

/// A connection that never completes its handshake (silent, or stalled mid-frame) is
/// closed after the introduction timeout, so it cannot hold a descriptor forever.
#[test]
fn a_connection_that_never_handshakes_is_closed() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let cluster = Cluster::start(3);
    let leader = cluster.stable_leader();
    let addr = cluster.addrs[&leader];
    let mut stalled = 100u32.to_be_bytes().to_vec();
    stalled.extend_from_slice(&[7u8; 6]);
    let findings: Vec<String> =
        [Case::new("silent connection", Vec::new()), Case::new("stalled mid-handshake", stalled)]
            .iter()
            .filter_map(|case| run_case(addr, case))
            .collect();
    assert!(findings.is_empty(), "{}", findings.join("\n"));
}

/// A flood of idle connections is capped: once 64 accepted connections are waiting to
/// introduce themselves, each new one closes the oldest of them (long before the
/// introduction timeout), so the flood cannot lock out a peer that reconnects, and the
/// cluster keeps serving.
#[test]
fn a_flood_of_silent_connections_is_capped() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let cluster = Cluster::start(3);
    let leader = cluster.stable_leader();
    let addr = cluster.addrs[&leader];
    let mut held: Vec<TcpStream> = (0..64).map(|_| connect(addr)).collect();
    // Each accepted connection gets the node's handshake first: wait for all 64 of them.
    for mut s in held.iter() {
        let mut prefix = [0u8; LEN_PREFIX_BYTES];
        s.read_exact(&mut prefix).expect("an accepted connection is greeted");
    }
    let started = Instant::now();
    let mut newest = connect(addr);
    let mut prefix = [0u8; LEN_PREFIX_BYTES];
    newest.read_exact(&mut prefix).expect("the 65th connection is accepted and greeted");
    read_until_closed(&mut held[0]).expect("the oldest silent connection is closed to make room");
    assert!(started.elapsed() < Duration::from_secs(2), "closed by the cap, not by the introduction timeout");
    let mut expected = Vec::new();
    write_through_leader(&cluster, &mut expected, "a flood of silent connections");
    drop(held);
}
