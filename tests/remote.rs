//! The remote client against real clusters over TCP: it finds the leader from any node,
//! follows it through a failover without applying anything twice, refuses the wrong
//! cluster, skips a node that is down; and the two kinds of connection cannot pass for
//! each other.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use quorate::transport::ClusterKey;
use quorate::{Error, RemoteClient, RemoteOptions, Role};
use support::attacker::Attacker;
use support::cluster::{Cluster, Cmd, PATIENCE, Question, Recorder, wait_until};

fn remote(addrs: &[SocketAddr]) -> RemoteClient<Recorder> {
    RemoteOptions::new(addrs.iter().copied()).timeout(PATIENCE).connect().expect("connect")
}

#[test]
fn a_client_given_only_a_follower_reaches_the_leader() {
    let cluster = Cluster::start(3);
    let leader = cluster.stable_leader();
    let follower = *cluster.nodes.keys().find(|&&id| id != leader).unwrap();
    let client = remote(&[cluster.addrs[&follower]]);
    for v in 1..=20u64 {
        assert_eq!(client.write_timeout(Cmd::Put(v), PATIENCE).expect("write"), v as usize);
    }
    assert_eq!(client.connected_node(), Some(leader), "it followed the redirect");
    assert_eq!(client.read(Question::Applied).unwrap(), (1..=20).collect::<Vec<_>>());
    let pending: Vec<_> = (21..=120).map(|v| client.submit(Cmd::Put(v)).expect("submit")).collect();
    let answers: Vec<usize> = pending.into_iter().map(|p| p.wait().expect("pipelined write")).collect();
    assert_eq!(answers, (21..=120).collect::<Vec<_>>(), "pipelined writes apply in order");
    let status = client.status().unwrap();
    assert_eq!((status.id, status.role), (leader, Role::Leader));
    assert_eq!(client.await_leader(PATIENCE).unwrap(), leader);
    cluster.await_applied_everywhere(&(1..=120).collect::<Vec<_>>());
}

/// The leader stops under a stream of writes: every write the client was told succeeded is
/// applied exactly once (the session makes the retries of uncertain ones safe), in order.
#[test]
fn the_client_follows_a_new_leader_and_applies_nothing_twice() {
    let mut cluster = Cluster::start(3);
    let old = cluster.stable_leader();
    let addrs: Vec<SocketAddr> = cluster.addrs.values().copied().collect();
    let client = remote(&addrs);
    let done = Arc::new(AtomicBool::new(false));
    let writer = {
        let (client, done) = (client.clone(), done.clone());
        std::thread::spawn(move || {
            let mut acked = Vec::new();
            let mut v = 0;
            while !done.load(Ordering::Acquire) {
                v += 1;
                match client.write(Cmd::Put(v)) {
                    Ok(_) => acked.push(v),
                    Err(e) => panic!("write {v} failed: {e}"),
                }
            }
            acked
        })
    };
    wait_until("some writes went through the old leader", || {
        client.read(Question::Applied).map(|a| a.len() >= 50).unwrap_or(false)
    });
    cluster.stop(old);
    let survivors: Vec<_> = cluster.nodes.keys().copied().collect();
    let new = cluster.leader_among(&survivors);
    let before = client.read(Question::Applied).unwrap().len();
    wait_until("writes go through the new leader", || {
        client.read(Question::Applied).map(|a| a.len() >= before + 50).unwrap_or(false)
    });
    done.store(true, Ordering::Release);
    let acked = writer.join().expect("the writer saw no error");
    let applied = cluster.client(new).read(|m: &Recorder| m.applied.clone()).unwrap();
    let mut seen = std::collections::HashSet::new();
    assert!(applied.iter().all(|v| seen.insert(*v)), "a write applied twice: {applied:?}");
    assert_eq!(applied, acked, "every acknowledged write, once, in order, and nothing else");
}

#[test]
fn another_cluster_id_or_secret_is_a_configuration_error() {
    let cluster = Cluster::start_with(1, |c| c.cluster_secret("a secret of sixteen bytes+"));
    let addr = [cluster.addrs[&1]];
    let fast = |o: RemoteOptions| o.timeout(Duration::from_secs(2));
    let other_cluster = fast(RemoteOptions::new(addr).cluster_id("other").cluster_secret("a secret of sixteen bytes+"));
    match other_cluster.connect::<Recorder>() {
        Err(Error::Config(why)) => assert!(why.contains("cluster"), "{why}"),
        other => panic!("expected a configuration error, got {:?}", other.err()),
    }
    match fast(RemoteOptions::new(addr).cluster_secret("another secret, also long")).connect::<Recorder>() {
        Err(Error::Config(why)) => assert!(why.contains("secret"), "{why}"),
        other => panic!("expected a configuration error, got {:?}", other.err()),
    }
    let right = fast(RemoteOptions::new(addr).cluster_secret("a secret of sixteen bytes+"));
    assert!(right.connect::<Recorder>().is_ok());
}

#[test]
fn a_node_that_is_down_is_skipped() {
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let cluster = Cluster::start(1);
    cluster.stable_leader();
    let client = remote(&[dead, cluster.addrs[&1]]);
    assert_eq!(client.write(Cmd::Put(7)).unwrap(), 1);
    match RemoteOptions::new([dead]).timeout(Duration::from_millis(300)).connect::<Recorder>() {
        Err(Error::Io(e)) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused),
        other => panic!("expected connection refused, got {:?}", other.err()),
    }
}

/// A client cannot speak Raft, and a peer cannot make client requests: each kind of
/// connection decodes only its own frames, and closes on anything else.
#[test]
fn client_and_peer_connections_refuse_each_others_frames() {
    let cluster = Cluster::start(1);
    cluster.stable_leader();
    let addr = cluster.addrs[&1];
    let key = ClusterKey::unauthenticated();

    let mut client = Attacker::handshake_as(addr, 77, &key, true).expect("client handshake");
    client.send_frame(&(5u64, "Status")).unwrap(); // a ClientRequest { id: 5, call: Status }
    let answer: (u64, serde::de::IgnoredAny) = client.read_frame().expect("a status answer");
    assert_eq!(answer.0, 5);
    let term_before = cluster.client(1).status().unwrap().term;
    let _ = client.raft(term_before + 100, quorate::core::MessageKind::TimeoutNow);
    assert!(client.closed_within(PATIENCE), "a Raft message on a client connection closes it");

    let mut peer = Attacker::introduced(addr, 2, 1);
    let _ = peer.send_frame(&(5u64, "Status"));
    assert!(peer.closed_within(PATIENCE), "a client request on a peer connection closes it");

    let status = cluster.client(1).status().unwrap();
    assert_eq!((status.role, status.term), (Role::Leader, term_before), "neither frame reached Raft");
}

/// Pistis-style: a client of a follower, told to forward, gets the leader's answers;
/// without `forwarding()` the same follower still redirects.
#[test]
fn a_forwarding_client_on_a_follower_writes_through_the_leader() {
    let cluster = Cluster::start(3);
    let leader = cluster.stable_leader();
    let follower = *cluster.nodes.keys().find(|&&id| id != leader).unwrap();
    let plain = cluster.client(follower);
    assert!(matches!(plain.write(Cmd::Put(0)), Err(Error::Redirect { .. })), "redirect stays the default");
    let forwarding = plain.forwarding();
    for v in 1..=20u64 {
        assert_eq!(forwarding.write(Cmd::Put(v)).expect("forwarded write"), v as usize);
    }
    assert_eq!(forwarding.without_session().write(Cmd::Put(21)).expect("forwarded, no session"), 21);
    cluster.await_applied_everywhere(&(1..=21).collect::<Vec<_>>());
}

/// Through `proxy` (to the one-node `cluster`'s node 1): writes Put(1), then Put(2) on
/// a thread, which the node applies while the proxy drops its answer. Returns the thread.
fn lose_answer(
    cluster: &Cluster,
    proxy: &support::proxy::Proxy,
    client: &RemoteClient<Recorder>,
) -> std::thread::JoinHandle<quorate::Result<usize>> {
    use support::cluster::HeldNode;
    let node = cluster.client(1);
    assert_eq!(client.write(Cmd::Put(1)).unwrap(), 1); // registers the session too
    let held = HeldNode::hold(&node); // the node reads nothing until released
    let writer = {
        let client = client.clone();
        std::thread::spawn(move || client.write(Cmd::Put(2)))
    };
    let sent = proxy.bytes_forwarded();
    // (The request is one small frame, written at once: the proxy reads it in one chunk.)
    wait_until("the write went through the proxy", || proxy.bytes_forwarded() > sent);
    proxy.set_mode(support::proxy::LinkMode::Drop); // the answer will be lost
    held.release();
    wait_until("the node applied the write", || node.read_local(|m: &Recorder| m.applied.len()).unwrap_or(0) == 2);
    writer
}

/// The one case sessions exist for: a write applied, its answer lost with the connection.
/// The client cannot tell, so it sends the write again (same session tag) once it
/// reconnects; the node answers from its session table instead of applying it twice.
#[test]
fn a_write_whose_answer_was_lost_is_retried_and_applied_once() {
    let cluster = Cluster::start(1);
    cluster.stable_leader();
    let proxy = support::proxy::Proxy::start(cluster.addrs[&1]);
    let client = remote(&[proxy.addr()]);
    let writer = lose_answer(&cluster, &proxy, &client);
    proxy.cut(); // the client sees its connection end without an answer
    proxy.heal();
    assert_eq!(writer.join().unwrap().expect("the retry is answered"), 2, "the first attempt's answer");
    let applied = cluster.client(1).read_local(|m: &Recorder| m.applied.clone()).unwrap();
    assert_eq!(applied, vec![1, 2], "applied once");
}

/// Found by review: after an attempt whose fate is unknown, the session is evicted, and a
/// retry meets `SessionExpired`. Starting over in a new session would apply the command
/// twice; the answer must be indeterminate instead.
#[test]
fn an_expired_session_after_an_uncertain_attempt_is_not_a_fresh_start() {
    let cluster = Cluster::start_with(1, |c| c.session_limits(1, 10_000_000));
    cluster.stable_leader();
    let proxy = support::proxy::Proxy::start(cluster.addrs[&1]);
    let client = remote(&[proxy.addr()]);
    let writer = lose_answer(&cluster, &proxy, &client);
    // Another session registers: with room for one, it evicts the writer's.
    cluster.client(1).new_session().write(Cmd::Put(100)).unwrap();
    proxy.cut();
    proxy.heal();
    let e = writer.join().unwrap().expect_err("no answer can be certain");
    assert!(e.is_indeterminate(), "{e:?}");
    let applied = cluster.client(1).read_local(|m: &Recorder| m.applied.clone()).unwrap();
    assert_eq!(applied, vec![1, 2, 100], "Put(2) applied once");
}

/// Found by review: after an attempt whose fate is unknown, no node can be reached until
/// the deadline. The error must not claim the write certainly had no effect.
#[test]
fn an_unreachable_cluster_after_an_uncertain_attempt_is_indeterminate() {
    let cluster = Cluster::start(1);
    cluster.stable_leader();
    let proxy = support::proxy::Proxy::start(cluster.addrs[&1]);
    let client: RemoteClient<Recorder> =
        RemoteOptions::new([proxy.addr()]).timeout(Duration::from_secs(3)).connect().unwrap();
    let writer = lose_answer(&cluster, &proxy, &client);
    proxy.cut(); // and never heal
    let e = writer.join().unwrap().expect_err("no node reachable");
    assert!(e.is_indeterminate(), "Put(2) was applied, yet the error says certainly not: {e:?}");
}

/// A connection gone silent (a node dead without a word, a black-holed link) costs a
/// write one attempt's timeout, not its whole timeout: the client moves on to the next
/// address.
#[test]
fn a_silent_connection_is_left_after_one_attempt() {
    use support::proxy::{LinkMode, Proxy};
    let cluster = Cluster::start(1);
    cluster.stable_leader();
    let proxy = Proxy::start(cluster.addrs[&1]);
    let client: RemoteClient<Recorder> = RemoteOptions::new([proxy.addr(), cluster.addrs[&1]])
        .timeout(PATIENCE)
        .attempt_timeout(Duration::from_millis(300))
        .connect()
        .expect("connect through the proxy");
    assert_eq!(client.write(Cmd::Put(1)).unwrap(), 1);
    proxy.set_mode(LinkMode::Drop);
    let started = std::time::Instant::now();
    assert_eq!(client.write(Cmd::Put(2)).expect("written through the other address"), 2);
    assert!(started.elapsed() < PATIENCE / 2, "it waited out {:?}", started.elapsed());
    assert_eq!(cluster.client(1).read(|m: &Recorder| m.applied.clone()).unwrap(), vec![1, 2]);
}

/// Found by review: a client that starts a frame and never finishes it is closed at the
/// frame deadline, as a peer would be, rather than pinning its buffer for good.
#[test]
fn a_client_that_stalls_mid_frame_is_closed() {
    use std::io::Write;
    let cluster = Cluster::start(1);
    cluster.stable_leader();
    let mut client = Attacker::handshake_as(cluster.addrs[&1], 78, &ClusterKey::unauthenticated(), true).unwrap();
    client.stream.write_all(&1000u32.to_be_bytes()).unwrap();
    client.stream.write_all(&[0x92; 10]).unwrap(); // 10 of the 1000 bytes, then silence
    assert!(client.closed_within(PATIENCE), "a stalled client frame kept its connection open");
    assert_eq!(cluster.client(1).status().unwrap().role, Role::Leader);
}

/// One remote connection may have at most 4096 requests unanswered: past that the node
/// answers `Busy` at once instead of holding more (a rule no other test reaches).
#[test]
fn a_client_with_too_many_requests_in_flight_gets_busy() {
    use std::io::Write;
    use support::cluster::HeldNode;
    let cluster = Cluster::start(1);
    cluster.stable_leader();
    let mut client = Attacker::handshake_as(cluster.addrs[&1], 79, &ClusterKey::unauthenticated(), true).unwrap();
    let held = HeldNode::hold(&cluster.client(1)); // nothing is answered while held
    // 4097 AwaitLeader requests that wait for a leader other than the current one (never
    // answered within the test), then one more request that must be refused.
    let mut frames = Vec::new();
    for id in 1..=4097u64 {
        // ClientRequest { id, call: Call::AwaitLeader { other_than: Some(1), timeout_ms } }
        let call = std::collections::BTreeMap::from([("AwaitLeader", (Some(1u64), 60_000u64))]);
        let request = (id, call);
        frames.extend_from_slice(&support::attacker::frame(&request));
    }
    client.stream.write_all(&frames).unwrap();
    held.release();
    // Answers to ids 1..=4096 do not come (they wait); 4097 comes back Busy.
    let (id, result): (u64, Result<serde::de::IgnoredAny, String>) = client.read_frame().expect("an answer");
    assert_eq!(id, 4097);
    assert_eq!(result.unwrap_err(), "Busy");
    assert_eq!(cluster.client(1).status().unwrap().role, Role::Leader);
}
