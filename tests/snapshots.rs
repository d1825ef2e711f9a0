//! Log compaction and InstallSnapshot over real TCP, in memory mode: the log stays
//! bounded, a learner added after compaction and a follower that fell behind catch up from
//! the leader's snapshot, sent in chunks below the frame limit, across a cut connection.

mod support;

use quorate::{Config, Node};
use support::cluster::{Cluster, Cmd, HeldNode, Recorder, listeners, test_config, wait_until};
use support::proxy::Proxy;

/// Snapshot every 100 entries keeping 10; frames of at most 256 KiB, chunks of 64 KiB.
fn compacting(c: Config) -> Config {
    c.snapshot_threshold(100, 1 << 30).snapshot_keep_entries(10).max_frame_bytes(256 << 10).max_append_bytes(64 << 10)
}

/// One command of about 9 KB: 1,000 values that each take 9 bytes of MessagePack.
fn big(k: u64) -> Cmd {
    Cmd::Many((0..1000).map(|i| (1 << 40) + k * 1000 + i).collect())
}

fn state(client: &quorate::Client<Recorder>) -> Vec<u64> {
    client.read_local(|m: &Recorder| m.applied.clone()).expect("read_local")
}

/// Writes `count` big commands through the leader, pipelined, and waits for all answers.
fn write_big(cluster: &Cluster, leader: u64, range: std::ops::Range<u64>) {
    let client = cluster.client(leader);
    let pending: Vec<_> = range.map(|k| client.submit(big(k)).expect("submit")).collect();
    for p in pending {
        p.wait().expect("write acknowledged");
    }
}

#[test]
fn the_log_stays_bounded_under_writes() {
    let cluster = Cluster::start_with(3, compacting);
    let leader = cluster.stable_leader();
    let client = cluster.client(leader);
    for v in 0..1_000 {
        client.write(Cmd::Put(v)).unwrap();
    }
    for id in 1..=3 {
        let c = cluster.client(id);
        wait_until(&format!("node {id} compacted"), || c.status().is_ok_and(|s| s.snapshot_index >= 900));
        wait_until(&format!("node {id} applied all"), || state(&c).len() == 1_000);
        let s = c.status().unwrap();
        assert!(s.log_entries <= 100 + 10 + 100, "node {id} holds {} entries", s.log_entries);
        assert_eq!(state(&c), (0..1_000).collect::<Vec<_>>(), "node {id} lost or reordered writes");
    }
}

/// §7 and dissertation ch. 5: a learner added to a cluster whose log was compacted gets the
/// snapshot (about 9 MB, so some 140 chunks of 64 KiB); the connection carrying it is cut
/// part-way and the transfer resumes; the learner ends with the leader's state.
#[test]
fn a_learner_added_after_compaction_catches_up_by_snapshot_across_a_cut() {
    let cluster = Cluster::start_with(3, compacting);
    let leader = cluster.stable_leader();
    write_big(&cluster, leader, 0..1_000);
    let leader_client = cluster.client(leader);
    wait_until("the leader compacted", || leader_client.status().is_ok_and(|s| s.snapshot_index >= 900));

    let l4 = listeners(1).pop().unwrap();
    let proxy = Proxy::start(l4.local_addr().unwrap());
    let node4 =
        Node::start_with_listener(compacting(test_config(4, l4.local_addr().unwrap())).join(), l4, Recorder::default())
            .expect("start node 4");
    let adder = {
        let client = leader_client.clone();
        let addr = proxy.addr();
        std::thread::spawn(move || client.add_server(4, addr))
    };
    wait_until("a part of the snapshot went through", || proxy.bytes_forwarded() > 1 << 20);
    proxy.cut();
    let s4 = node4.client().status().unwrap();
    assert_eq!(s4.applied_index, 0, "cut before the snapshot was complete (else this test proves nothing)");
    proxy.heal();

    let c4 = node4.client();
    let target = leader_client.status().unwrap().applied_index;
    wait_until("node 4 has the leader's state", || c4.status().is_ok_and(|s| s.applied_index >= target));
    adder.join().unwrap().expect("add_server");
    let applied = leader_client.status().unwrap().applied_index;
    wait_until("node 4 applied the membership change", || c4.status().is_ok_and(|s| s.applied_index >= applied));
    assert_eq!(state(&c4), state(&leader_client), "the learner's state differs");
    assert!(c4.status().unwrap().snapshot_index >= 900, "it caught up by snapshot");
    node4.stop();
}

/// A follower whose thread was held while the leader wrote and compacted past it catches
/// up from the snapshot once it runs again.
#[test]
fn a_follower_left_behind_catches_up_by_snapshot() {
    let cluster = Cluster::start_with(3, compacting);
    let leader = cluster.stable_leader();
    let behind = (1..=3).find(|&id| id != leader).unwrap();
    let held = HeldNode::hold(&cluster.client(behind));
    let client = cluster.client(leader);
    for v in 0..600 {
        client.write(Cmd::Put(v)).unwrap();
    }
    wait_until("the leader compacted past the held node", || {
        client.status().is_ok_and(|s| s.snapshot_index >= 500 && s.last_log_index - s.log_entries > 100)
    });
    let target = client.status().unwrap().commit_index;
    held.release();
    let c = cluster.client(behind);
    wait_until("the held node caught up", || c.status().is_ok_and(|s| s.applied_index >= target));
    assert_eq!(state(&c), (0..600).collect::<Vec<_>>());
    assert!(c.status().unwrap().snapshot_index > 0);
}
