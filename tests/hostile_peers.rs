//! Issue 8's reproductions, each over real TCP with the raw-frame attacker of
//! `support/attacker.rs`: whatever the attacker sends after the handshake, the cluster
//! keeps its leader, commits, and loses no acknowledged write.
//!
//! Most run against a cluster *without* a secret, where anyone completes the handshake:
//! that exercises the guards behind it (the core's, and the connection bounds). With a
//! secret the attacker does not get that far (`with_a_secret_*`).

mod support;

use std::net::{SocketAddr, TcpListener};
use std::time::{Duration, Instant};

use quorate::Config;
use quorate::core::{AppendEntries, Entry, LogIndex, MessageKind, Payload, RequestVote, Term};
use quorate::transport::ClusterKey;
use serde::Serialize;
use support::attacker::{ANSWER_DEADLINE, Attacker, FakeWire};
use support::cluster::{Cluster, Cmd, wait_until};

const SECRET: &str = "0123456789abcdef0123456789abcdef";

/// A voter every node is configured with but that never runs: an id the attacker can
/// claim that is a member, and was never seen (so any incarnation passes).
const ABSENT: u64 = 4;

fn absent_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

/// Three nodes of a four-voter configuration whose fourth never starts.
fn cluster_with_absent_member() -> Cluster {
    let absent = absent_addr();
    Cluster::start_with(3, move |c| c.peer(ABSENT, absent))
}

fn heartbeat(commit: u64) -> MessageKind {
    MessageKind::Heartbeat { commit: LogIndex(commit), read_seq: 0 }
}

fn status(cluster: &Cluster, id: u64) -> quorate::Status {
    cluster.client(id).status().expect("status")
}

/// Writes `Put(v)` for the next few values through the current leader.
fn write_some(cluster: &Cluster, acked: &mut Vec<u64>, n: u64) {
    let leader = cluster.stable_leader();
    let from = acked.len() as u64 + 1;
    cluster.write_and_check(leader, from..=from + n - 1, acked);
}

fn assert_terms_below(cluster: &Cluster, max: u64) {
    for &id in cluster.nodes.keys() {
        let s = status(cluster, id);
        assert!(s.term < max, "node {id} is at term {} after the attack", s.term);
    }
}

/// Attack 1: one `Heartbeat` at term `u64::MAX` used to leave every node PreCandidate at
/// that term for good (`Term::next` wrapped). Now it is refused, from a made-up id and
/// from a member's alike, and the cluster goes on.
#[test]
fn attack_1_a_huge_term_is_refused() {
    let cluster = cluster_with_absent_member();
    let mut acked = Vec::new();
    write_some(&cluster, &mut acked, 3);
    for &addr in cluster.addrs.values() {
        for id in [99, ABSENT] {
            let mut a = Attacker::introduced(addr, id, 1);
            for term in [u64::MAX, u64::MAX / 2, u64::MAX - 1] {
                let _ = a.raft(term, heartbeat(0));
            }
            a.barrier();
        }
    }
    write_some(&cluster, &mut acked, 3);
    assert_terms_below(&cluster, 1000);
    cluster.await_applied_everywhere(&acked);
}

/// Attack 2: a forged leader with a made-up id and a higher term sent a follower two
/// bogus entries and a commit index covering them; the follower applied them and froze.
/// Now the follower drops them (it hears its leader), and applies exactly what was
/// acknowledged.
#[test]
fn attack_2_a_forged_leader_cannot_fork_a_follower() {
    let cluster = Cluster::start(3);
    let mut acked = Vec::new();
    write_some(&cluster, &mut acked, 3);
    let leader = cluster.stable_leader();
    let follower = *cluster.nodes.keys().find(|&&id| id != leader).unwrap();
    let s = status(&cluster, follower);
    let (last, term) = (s.last_log_index, s.term);
    let bogus = rmp_serde::to_vec(&Cmd::Put(999)).unwrap();
    let entries = (1..=2)
        .map(|k| Entry {
            term: Term(term + 1),
            index: LogIndex(last + k),
            payload: Payload::Command(bogus.clone().into()),
        })
        .collect();
    let mut a = Attacker::introduced(cluster.addrs[&follower], 99, 1);
    let probe = AppendEntries {
        prev_log_index: LogIndex(last),
        prev_log_term: Term(term),
        entries: vec![],
        leader_commit: LogIndex(0),
    };
    let _ = a.raft(term + 1, MessageKind::AppendEntries(probe));
    let fork = AppendEntries {
        prev_log_index: LogIndex(last),
        prev_log_term: Term(term),
        entries,
        leader_commit: LogIndex(last + 2),
    };
    let _ = a.raft(term + 1, MessageKind::AppendEntries(fork));
    a.barrier();
    let s = status(&cluster, follower);
    assert_ne!(s.leader, Some(99), "the forged leader was heard");
    assert!(s.term <= term + 1 && s.last_log_index < last + 2 || s.leader.is_some(), "forged entries were taken");
    write_some(&cluster, &mut acked, 5);
    cluster.await_applied_everywhere(&acked);
    let s = status(&cluster, follower);
    assert_eq!(s.leader, Some(cluster.stable_leader()), "the follower follows the real leader");
}

/// Attack 3: forced RequestVotes with rising terms from an id outside the configuration
/// (at 10 per second they used to stall the cluster), and a heartbeat at the leader's own
/// term from a fake id (it used to make the leader step down). Both are dropped: the
/// term does not move and the leader stays.
#[test]
fn attack_3_a_non_member_cannot_disrupt() {
    let cluster = Cluster::start(3);
    let mut acked = Vec::new();
    write_some(&cluster, &mut acked, 2);
    let leader = cluster.stable_leader();
    let term = status(&cluster, leader).term;
    let mut attackers: Vec<Attacker> = cluster.addrs.values().map(|&addr| Attacker::introduced(addr, 99, 1)).collect();
    for round in 1..=20u64 {
        for a in &mut attackers {
            let rv = RequestVote {
                last_log_index: LogIndex(1 << 40),
                last_log_term: Term(term + round),
                pre_vote: false,
                force: true,
                transfer: true,
            };
            let _ = a.raft(term + round, MessageKind::RequestVote(rv));
            let _ = a.raft(term, heartbeat(0));
        }
        write_some(&cluster, &mut acked, 1);
    }
    for a in &mut attackers {
        a.barrier();
    }
    assert_eq!(cluster.stable_leader(), leader, "the leader was deposed");
    assert_eq!(status(&cluster, leader).term, term, "the term moved");
    cluster.await_applied_everywhere(&acked);
}

/// Attack 4, without a secret: an impostor that gives a listen address is not dialed back
/// (so it never learns a node's incarnation), and one that claims a live member's id with
/// a guessed incarnation is refused.
#[test]
fn attack_4_an_impostor_learns_nothing_and_is_refused() {
    let cluster = Cluster::start(3);
    let mut acked = Vec::new();
    write_some(&cluster, &mut acked, 2);
    let leader = cluster.stable_leader();
    let trap = TcpListener::bind("127.0.0.1:0").unwrap();
    trap.set_nonblocking(true).unwrap();
    let mut a = Attacker::handshake(cluster.addrs[&leader], 99, &ClusterKey::unauthenticated()).unwrap();
    let hello = support::attacker::FakeHello { incarnation: 1, listen_addr: trap.local_addr().unwrap() };
    a.send(&FakeWire::Hello(hello)).unwrap();
    let term = status(&cluster, leader).term;
    let _ = a.raft(term + 1, heartbeat(0));
    let _ = a.raft(term, heartbeat(0));
    // A vote request from a non-member: the leader's "you were removed" goes back on this
    // connection, never by dialing the address the impostor gave (found by review).
    let vote = RequestVote {
        last_log_index: LogIndex(0),
        last_log_term: Term(0),
        pre_vote: true,
        force: false,
        transfer: false,
    };
    let _ = a.raft(term + 1, MessageKind::RequestVote(vote));
    a.barrier();
    // An observation window, not a synchronisation: a dial-back would come in microseconds.
    let until = Instant::now() + Duration::from_millis(500);
    while Instant::now() < until {
        assert!(trap.accept().is_err(), "the node dialed the impostor back");
        std::thread::sleep(Duration::from_millis(10));
    }
    let other = *cluster.nodes.keys().find(|&&id| id != leader).unwrap();
    let mut impostor = Attacker::introduced(cluster.addrs[&leader], other, 12345);
    assert!(impostor.closed_within(ANSWER_DEADLINE), "an impostor of node {other} was accepted");
    assert_eq!(cluster.stable_leader(), leader);
    write_some(&cluster, &mut acked, 2);
    cluster.await_applied_everywhere(&acked);
}

/// Attack 4, with a secret: a process without it is closed right after its proof, and
/// never sees anything but the node's handshake and proof; the cluster runs as usual.
#[test]
fn with_a_secret_a_process_without_it_never_gets_past_the_handshake() {
    let cluster = Cluster::start_with(3, |c: Config| c.cluster_secret(SECRET));
    let mut acked = Vec::new();
    write_some(&cluster, &mut acked, 3);
    for &addr in cluster.addrs.values() {
        for key in [ClusterKey::unauthenticated(), ClusterKey::from_secret(b"a different secret!")] {
            // The node may close before its own proof even leaves: that is a refusal too.
            let Ok(mut a) = Attacker::handshake(addr, 2, &key) else { continue };
            let _ = a.send(&FakeWire::Hello(support::attacker::FakeHello {
                incarnation: 1,
                listen_addr: "127.0.0.1:9".parse().unwrap(),
            }));
            let _ = a.raft(u64::MAX, heartbeat(0));
            // Kept alive, so only the refusal (not the idle timeout) can close it.
            assert!(a.closed_while_alive(Duration::from_secs(3)), "a wrong proof was accepted");
        }
        let mut right = Attacker::handshake(addr, 99, &ClusterKey::from_secret(SECRET.as_bytes())).unwrap();
        let hello = support::attacker::FakeHello { incarnation: 1, listen_addr: "127.0.0.1:9".parse().unwrap() };
        right.send(&FakeWire::Hello(hello)).unwrap();
        assert!(!right.closed_while_alive(Duration::from_millis(300)), "the right proof was refused");
    }
    write_some(&cluster, &mut acked, 3);
    assert_terms_below(&cluster, 1000);
    cluster.await_applied_everywhere(&acked);
}

/// Attack 5: connections after the handshake are bounded: idle ones are closed, so are
/// those that trickle a frame, a member gets one inbound connection (a newer replaces the
/// older), and partial frames cannot pin more than their budget.
#[test]
fn attack_5_connections_after_the_handshake_are_bounded() {
    let cluster = cluster_with_absent_member();
    let mut acked = Vec::new();
    write_some(&cluster, &mut acked, 2);
    let leader = cluster.stable_leader();
    let target = *cluster.nodes.keys().find(|&&id| id != leader).unwrap();
    let addr = cluster.addrs[&target];

    let mut idle: Vec<Attacker> = (100..140).map(|id| Attacker::introduced(addr, id, 1)).collect();
    // Non-members share 16 connections: the 24 oldest are closed although they are alive.
    let mut still_open = 0;
    for a in &mut idle {
        a.barrier_free_keepalive();
    }
    for a in &mut idle {
        if !a.closed_within(Duration::from_millis(5)) {
            still_open += 1;
        }
    }
    assert!(still_open <= 16, "{still_open} connections from non-members kept");
    let mut old = Attacker::introduced(addr, ABSENT, 7);
    let mut new = Attacker::introduced(addr, ABSENT, 7);
    assert!(
        old.closed_while_alive(Duration::from_secs(3)),
        "a second connection of a member did not replace the first"
    );
    assert!(!new.closed_while_alive(Duration::from_millis(300)), "the newer connection of a member was closed");

    let mut slowloris = Attacker::introduced(addr, 150, 1);
    slowloris.stream.set_nonblocking(false).unwrap();
    use std::io::Write;
    slowloris.stream.write_all(&1000u32.to_be_bytes()).unwrap();

    // Partial frames of 12 MiB on three connections: more than the node's budget (twice
    // the 16 MiB frame limit), so the largest is closed as soon as the total is over.
    let started = Instant::now();
    let mut partial: Vec<Attacker> = (160..163).map(|id| Attacker::introduced(addr, id, 1)).collect();
    let chunk = vec![0x90u8; 1 << 20];
    let mut cut_short = 0;
    for a in &mut partial {
        let mut ok = a.stream.write_all(&(16u32 << 20).to_be_bytes()).is_ok();
        for _ in 0..12 {
            ok = ok && a.stream.write_all(&chunk).is_ok();
        }
        cut_short += usize::from(!ok);
    }
    let mut closed_fast = cut_short;
    for a in &mut partial {
        if a.closed_within(Duration::from_millis(100)) {
            closed_fast += 1;
        }
    }
    assert!(
        closed_fast >= 1 && started.elapsed() < Duration::from_secs(4),
        "36 MiB of partial frames were all kept ({:?})",
        started.elapsed()
    );
    for (k, a) in idle.iter_mut().enumerate() {
        assert!(a.closed_within(ANSWER_DEADLINE), "idle connection {k} was kept");
    }
    for a in &mut partial {
        assert!(a.closed_within(ANSWER_DEADLINE), "a partial frame was kept past its deadline");
    }
    let mut drip = 0;
    let closed = (0..100).any(|_| {
        drip += 1;
        let _ = slowloris.stream.write_all(&[0x90]);
        slowloris.closed_within(Duration::from_millis(100))
    });
    assert!(closed, "a slowloris after the handshake was kept for {drip} drips");
    write_some(&cluster, &mut acked, 2);
    cluster.await_applied_everywhere(&acked);
    wait_until("the target still follows", || status(&cluster, target).leader == Some(leader));
}

/// Attack 6, the dialing side: a peer that accepts at the TCP level but never answers
/// (out of descriptors, or a black hole) used to hold the dialer's link to it for good.
/// Now the dialer gives up after its handshake timeout and dials again, with backoff.
#[test]
fn attack_6_a_dialed_peer_that_never_answers_is_redialled() {
    // Never `accept`ed by anyone: the kernel completes connections into its backlog.
    let black_hole = TcpListener::bind("127.0.0.1:0").unwrap();
    let hole = black_hole.local_addr().unwrap();
    let node = support::cluster::single_node(|c| c.peer(2, hole));
    black_hole.set_nonblocking(true).unwrap();
    let mut dialed = Vec::new();
    wait_until("the node dials the silent peer twice", || {
        if let Ok((s, _)) = black_hole.accept() {
            dialed.push(s);
        }
        dialed.len() >= 2
    });
    drop(node);
}

/// `Wire::Raft(Message { kind: MessageKind::AppendEntries(..) })` with the entries as raw
/// bytes, to send entries no honest node would. Externally tagged enums encode by name.
#[derive(Serialize)]
enum RawWire {
    Raft(RawMessage),
}

#[derive(Serialize)]
struct RawMessage {
    term: Term,
    kind: RawKind,
}

#[derive(Serialize)]
enum RawKind {
    AppendEntries(RawAppendEntries),
}

#[derive(Serialize)]
struct RawAppendEntries {
    prev_log_index: LogIndex,
    prev_log_term: Term,
    entries: serde_bytes::ByteBuf,
    leader_commit: LogIndex,
}

fn raw_append_entries(entries: &[u8]) -> RawWire {
    let ae = RawAppendEntries {
        prev_log_index: LogIndex(0),
        prev_log_term: Term(0),
        entries: serde_bytes::ByteBuf::from(entries),
        leader_commit: LogIndex(0),
    };
    RawWire::Raft(RawMessage { term: Term(1), kind: RawKind::AppendEntries(ae) })
}

/// Attack 7: the entries of an AppendEntries are the one part of a frame decoded by a
/// hand-written loop (`core/entry_batch.rs`). Malformed ones close the attacker's
/// connection, on the leader and on the followers alike, and the cluster goes on. The
/// same frame with well-formed entries leaves the connection open, so it is the entries
/// that are refused.
#[test]
fn attack_7_malformed_entries_close_only_that_connection() {
    let cluster = Cluster::start(3);
    let mut acked = Vec::new();
    write_some(&cluster, &mut acked, 3);
    let malformed: [(&str, &[u8]); 6] = [
        ("fewer entries than counted", &[2, 3, 9, 0]),
        ("a count of u64::MAX", &[0xCF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF]),
        ("a command cut short", &[1, 1, 1, 1, 0xC4, 10, 1, 2]),
        ("an unknown payload tag", &[1, 1, 1, 7]),
        ("bytes after the last entry", &[0, 0]),
        ("a string where the term belongs", &[1, 0xA1, b'x', 1, 0]),
    ];
    let mut id = 200;
    for &addr in cluster.addrs.values() {
        id += 1;
        let mut control = Attacker::introduced(addr, id, 1);
        control.send_frame(&raw_append_entries(&[0])).unwrap(); // no entries: well-formed
        assert!(!control.closed_while_alive(Duration::from_millis(300)), "well-formed entries closed the connection");
        for (why, entries) in malformed {
            id += 1;
            let mut a = Attacker::introduced(addr, id, 1);
            let _ = a.send_frame(&raw_append_entries(entries));
            // Keepalives, so it is not the idle timeout that closes it.
            assert!(a.closed_while_alive(ANSWER_DEADLINE), "{why}: the node kept the connection");
        }
    }
    write_some(&cluster, &mut acked, 3);
    cluster.await_applied_everywhere(&acked);
}

/// Attack 4, the dialing side: a node dialing a peer that cannot prove the secret sends
/// it its handshake and proof and nothing else (no Hello, so no incarnation to replay).
#[test]
fn with_a_secret_a_node_tells_an_unproven_peer_nothing() {
    use quorate::transport::{Handshake, Proof};
    let fake_peer = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = fake_peer.local_addr().unwrap();
    let node = support::cluster::single_node(|c| c.peer(2, addr).cluster_secret(SECRET));
    let (stream, _) = fake_peer.accept().unwrap();
    stream.set_read_timeout(Some(ANSWER_DEADLINE)).unwrap();
    let mut a = Attacker { stream, node: None };
    let theirs: Handshake = a.read_frame().unwrap();
    assert_eq!(theirs.node_id, 1);
    let mut ours = Handshake::new(support::attacker::CLUSTER_ID, 2).unwrap();
    ours.nonce = theirs.nonce; // a reflection: it must not help
    a.send_frame(&ours).unwrap();
    let _their_proof: Proof = a.read_frame().unwrap();
    a.send_frame(&Proof { mac: [0; 32] }).unwrap();
    let rest = a.read_for(Duration::from_secs(2));
    assert!(rest.is_empty(), "the node sent {} more bytes to an unproven peer", rest.len());
    drop(node);
}

/// The idle timeout spares healthy links: a follower's connection to another follower
/// carries no Raft traffic, and the dialer's keepalives keep it open (it would otherwise be
/// closed and redialled every idle timeout).
#[test]
fn a_quiet_link_between_followers_stays_open() {
    use quorate::Node;
    use support::cluster::{Recorder, listeners, test_config};
    use support::proxy::Proxy;
    let ls = listeners(3);
    let addrs: Vec<SocketAddr> = ls.iter().map(|l| l.local_addr().unwrap()).collect();
    let proxy = Proxy::start(addrs[2]); // node 2's link to node 3
    let mut nodes = std::collections::BTreeMap::new();
    for (i, l) in ls.into_iter().enumerate() {
        let id = i as u64 + 1;
        let mut c = test_config(id, addrs[i]);
        for peer in (1..=3u64).filter(|&p| p != id) {
            let addr = if (id, peer) == (2, 3) { proxy.addr() } else { addrs[peer as usize - 1] };
            c = c.peer(peer, addr);
        }
        nodes.insert(id, Node::start_with_listener(c, l, Recorder::default()).unwrap());
    }
    let cluster = Cluster { nodes, addrs: (1..=3).zip(addrs).collect() };
    cluster.stable_leader();
    // Node 2 campaigns (so it dials node 3 through the proxy), then hands over to node 1.
    cluster.client(2).trigger_election().unwrap();
    wait_until("node 2 dialed node 3", || proxy.connections().0 >= 1);
    cluster.client(cluster.stable_leader()).transfer_leadership(1).unwrap();
    assert_eq!(cluster.stable_leader(), 1);
    let before = proxy.connections();
    // Three idle timeouts of quiet between followers 2 and 3. An observation window.
    let until = Instant::now() + Duration::from_secs(3);
    let mut acked = Vec::new();
    while Instant::now() < until {
        write_some(&cluster, &mut acked, 1);
        std::thread::sleep(Duration::from_millis(50));
    }
    let after = proxy.connections();
    assert_eq!(after, before, "the quiet link was closed (connections forwarded, ended)");
}
