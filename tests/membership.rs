//! Membership changes, leadership transfer and partitioned leaders, over real TCP on
//! 127.0.0.1: joining nodes, growing and shrinking under load, removing the leader,
//! the change errors, transfers to every member, and a cut-off leader that must not
//! serve linearizable reads.

mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use quorate::{Error, Node, NodeId, Role};
use support::cluster::{Cluster, Cmd, HeldNode, PATIENCE, Recorder, listeners, test_config, wait_until};
use support::writer::{Clients, Writer, check_history, start_proxied};

fn init_log() {
    let _ = env_logger::builder().is_test(true).try_init();
}

/// Starts a `join()` node: no configuration, waits to be added.
fn start_joiner(id: NodeId) -> (Node<Recorder>, SocketAddr) {
    let l = listeners(1).pop().unwrap();
    let addr = l.local_addr().unwrap();
    let node =
        Node::start_with_listener(test_config(id, addr).join(), l, Recorder::default()).expect("start join node");
    (node, addr)
}

/// Calls `f` until it stops answering `NotCommittedInTerm` (a fresh leader must commit
/// its no-op before it may change membership; the error says "retry shortly").
fn retry_not_committed<T>(what: &str, mut f: impl FnMut() -> quorate::Result<T>) -> quorate::Result<T> {
    let deadline = Instant::now() + PATIENCE;
    loop {
        match f() {
            Err(Error::NotCommittedInTerm) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(Error::NotCommittedInTerm) => panic!("{what}: the leader never committed in its term"),
            other => return other,
        }
    }
}

/// Writes a last value on the leader and returns the leader's state once that value is
/// applied: every entry from before is decided by then, so nothing can still change.
fn final_state(cluster: &Cluster, ids: &[NodeId], sentinel: u64) -> Vec<u64> {
    let leader = cluster.leader_among(ids);
    let client = cluster.client(leader);
    client.write(Cmd::Put(sentinel)).expect("sentinel write on the leader");
    client.read(|m: &Recorder| m.applied.clone()).expect("read on the leader")
}

// ---------------------------------------------------------------------------------------
// 1. The ExRaft README scenario.

#[test]
fn exraft_readme_scenario() {
    init_log();
    let ls = listeners(2);
    let (a1, a2) = (ls[0].local_addr().unwrap(), ls[1].local_addr().unwrap());
    let mut it = ls.into_iter();
    let n1 =
        Node::start_with_listener(test_config(1, a1).peer(2, a2), it.next().unwrap(), Recorder::default()).unwrap();
    let n2 =
        Node::start_with_listener(test_config(2, a2).peer(1, a1), it.next().unwrap(), Recorder::default()).unwrap();
    let (n3, a3) = start_joiner(3);
    let mut cluster = Cluster {
        nodes: BTreeMap::from([(1, n1), (2, n2), (3, n3)]),
        addrs: BTreeMap::from([(1, a1), (2, a2), (3, a3)]),
    };
    let c3 = cluster.client(3);

    // Not yet added: node 3 knows no leader and has no vote.
    assert!(
        matches!(c3.await_leader(Duration::from_millis(400)), Err(Error::Timeout)),
        "await_leader on a join() node not yet added must time out"
    );
    assert!(matches!(c3.trigger_election(), Err(Error::NotAVoter)), "a join() node not yet added has no vote");

    // As in the README, node 1 leads (if node 2 won the first election, hand over).
    if cluster.leader_among(&[1, 2]) == 2 {
        cluster.client(2).transfer_leadership(1).expect("transfer to node 1");
    }
    let leader = cluster.leader_among(&[1, 2]);
    assert_eq!(leader, 1);
    let lc = cluster.client(leader);
    retry_not_committed("add_server(3)", || lc.add_server(3, a3)).expect("add_server(3) on the leader");
    assert_eq!(lc.status().unwrap().voters(), vec![1, 2, 3], "node 3 is a voter on the leader");
    wait_until("node 3 reports the leader", || c3.status().unwrap().leader == Some(leader));
    assert_eq!(c3.await_leader(Duration::from_secs(5)).unwrap(), leader);
    assert!(c3.status().unwrap().voters().contains(&3), "node 3 knows it votes");

    let mut acked = Vec::new();
    for v in 1..=10 {
        lc.write(Cmd::Put(v)).expect("write on the leader");
        acked.push(v);
    }
    for follower in [1, 2, 3].into_iter().filter(|&id| id != leader) {
        match cluster.client(follower).write(Cmd::Put(999)) {
            Err(Error::Redirect { leader: Some(p) }) => {
                assert_eq!(p.id, leader, "node {follower} redirects to the leader");
                assert_eq!(p.addr, Some(cluster.addrs[&leader]), "node {follower} knows the leader's address");
            }
            other => panic!("a write on follower {follower} must redirect, got {other:?}"),
        }
    }

    cluster.stop(leader);
    c3.trigger_election().expect("node 3 campaigns");
    let rest: Vec<NodeId> = cluster.nodes.keys().copied().collect();
    let new = cluster.leader_among(&rest);
    assert!(new == 2 || new == 3, "the new leader is 2 or 3, got {new}");
    cluster.write_and_check(new, 11..=20, &mut acked);
    cluster.await_applied_everywhere(&acked);
}

// ---------------------------------------------------------------------------------------
// 2. Grow 3 -> 5 and shrink 5 -> 3 under continuous writes.

#[test]
fn grow_and_shrink_under_writes() {
    init_log();
    let mut cluster = Cluster::start(3);
    cluster.stable_leader();
    let clients: Clients = Arc::new(Mutex::new(cluster.nodes.iter().map(|(&id, n)| (id, n.client())).collect()));
    let writer = Writer::spawn(clients.clone());
    writer.await_progress(20, "before growing");

    let mut voters: Vec<NodeId> = vec![1, 2, 3];
    for id in [4, 5] {
        let (node, addr) = start_joiner(id);
        cluster.nodes.insert(id, node);
        cluster.addrs.insert(id, addr);
        let leader = cluster.leader_among(&voters);
        let lc = cluster.client(leader);
        retry_not_committed(&format!("add_server({id})"), || lc.add_server(id, addr)).expect("add_server");
        voters.push(id);
        assert_eq!(lc.status().unwrap().voters(), voters, "after adding {id}");
        clients.lock().unwrap().insert(id, cluster.client(id));
        writer.await_progress(20, &format!("after adding {id}"));
    }
    // Every node sees all five as voters.
    for &id in &voters {
        wait_until(&format!("node {id} sees five voters"), || cluster.client(id).status().unwrap().voters() == voters);
    }

    // Shrink by removing two of the original followers: the new nodes must carry on.
    let leader_now = cluster.leader_among(&voters);
    let victims: Vec<NodeId> = [1, 2, 3].into_iter().filter(|&id| id != leader_now).collect();
    for victim in victims {
        let leader = cluster.leader_among(&voters);
        assert_ne!(leader, victim);
        let lc = cluster.client(leader);
        retry_not_committed(&format!("remove_server({victim})"), || lc.remove_server(victim)).expect("remove_server");
        voters.retain(|&id| id != victim);
        let s = lc.status().unwrap();
        assert_eq!(s.voters(), voters, "after removing {victim}");
        assert!(s.members.iter().all(|m| m.id != victim), "{victim} is still a member: {:?}", s.members);
        clients.lock().unwrap().remove(&victim);
        cluster.stop(victim);
        writer.await_progress(20, &format!("after removing {victim}"));
    }

    let (acked, stats) = writer.finish();
    eprintln!("grow/shrink: {} writes acknowledged; writer stats {stats:?}", acked.len());
    let applied = final_state(&cluster, &voters, u64::MAX);
    check_history(&applied, &acked);
    cluster.await_applied_everywhere(&applied);
}

// ---------------------------------------------------------------------------------------
// 3. Remove the leader.

#[test]
fn removing_the_leader_hands_over() {
    init_log();
    let mut cluster = Cluster::start(3);
    let old = cluster.stable_leader();
    let mut acked = Vec::new();
    for v in 1..=10 {
        cluster.client(old).write(Cmd::Put(v)).expect("write");
        acked.push(v);
    }
    let oc = cluster.client(old);
    retry_not_committed("remove_server(leader)", || oc.remove_server(old)).expect("the leader removes itself");

    let rest: Vec<NodeId> = cluster.nodes.keys().copied().filter(|&id| id != old).collect();
    let new = cluster.leader_among(&rest);
    assert_ne!(new, old);
    let s = cluster.client(new).status().unwrap();
    assert!(s.members.iter().all(|m| m.id != old), "the removed leader is still a member: {:?}", s.members);
    assert_eq!(s.voters(), rest);
    // The removed node, still running, does not lead again or disturb the others.
    for v in 11..=30 {
        cluster.client(new).write(Cmd::Put(v)).expect("write after removing the leader");
        acked.push(v);
    }
    assert_ne!(oc.status().unwrap().role, Role::Leader, "the removed node leads again");
    assert_eq!(cluster.leader_among(&rest), new, "the removed node disturbed the leadership");
    let applied = cluster.client(new).read(|m: &Recorder| m.applied.clone()).unwrap();
    assert_eq!(applied, acked);
    cluster.stop(old);
    cluster.await_applied_everywhere(&acked);
}

/// The same with a writer running: writes in flight when the leader steps down may fail
/// (indeterminately), but every acknowledged one survives, in order.
#[test]
fn removing_the_leader_under_writes() {
    init_log();
    let mut cluster = Cluster::start(3);
    let old = cluster.stable_leader();
    let clients: Clients = Arc::new(Mutex::new(cluster.nodes.iter().map(|(&id, n)| (id, n.client())).collect()));
    let writer = Writer::spawn(clients.clone());
    writer.await_progress(20, "before removing the leader");
    let oc = cluster.client(old);
    retry_not_committed("remove_server(leader)", || oc.remove_server(old)).expect("the leader removes itself");
    clients.lock().unwrap().remove(&old);
    let rest: Vec<NodeId> = cluster.nodes.keys().copied().filter(|&id| id != old).collect();
    let new = cluster.leader_among(&rest);
    assert!(cluster.client(new).status().unwrap().members.iter().all(|m| m.id != old));
    writer.await_progress(50, "after removing the leader");
    let (acked, stats) = writer.finish();
    eprintln!("remove leader under writes: {} acknowledged; writer stats {stats:?}", acked.len());
    assert_ne!(oc.status().unwrap().role, Role::Leader, "the removed node leads again");
    let applied = final_state(&cluster, &rest, u64::MAX);
    check_history(&applied, &acked);
    cluster.stop(old);
    cluster.await_applied_everywhere(&applied);
}

/// Two voters, the leader removes itself: the other is left as the only voter and leads.
#[test]
fn removing_the_leader_of_two_leaves_the_other_leading() {
    init_log();
    let mut cluster = Cluster::start(2);
    let old = cluster.stable_leader();
    let other = 3 - old;
    cluster.client(old).write(Cmd::Put(1)).expect("write");
    let oc = cluster.client(old);
    retry_not_committed("remove_server(leader)", || oc.remove_server(old)).expect("the leader removes itself");
    assert_eq!(cluster.leader_among(&[other]), other);
    let s = cluster.client(other).status().unwrap();
    assert_eq!(s.voters(), vec![other]);
    assert!(s.learners().is_empty());
    cluster.client(other).write(Cmd::Put(2)).expect("write on the remaining node");
    assert_eq!(cluster.client(other).read(|m: &Recorder| m.applied.clone()).unwrap(), vec![1, 2]);
    cluster.stop(old);
}

// ---------------------------------------------------------------------------------------
// 4. Error variants.

#[test]
fn membership_change_errors() {
    init_log();
    let cluster = Cluster::start(3);
    let leader = cluster.stable_leader();
    let lc = cluster.client(leader);
    lc.write(Cmd::Put(1)).expect("write: the leader has committed in its term");
    let follower = *cluster.nodes.keys().find(|&&id| id != leader).unwrap();

    assert!(
        matches!(lc.add_server(follower, cluster.addrs[&follower]), Err(Error::AlreadyMember(id)) if id == follower)
    );
    assert!(matches!(lc.add_server(leader, cluster.addrs[&leader]), Err(Error::AlreadyMember(id)) if id == leader));
    match cluster.client(follower).remove_server(leader) {
        Err(Error::Redirect { leader: Some(p) }) => assert_eq!(p.id, leader),
        other => panic!("remove_server on a follower must redirect, got {other:?}"),
    }
    match cluster.client(follower).add_server(9, cluster.addrs[&follower]) {
        Err(Error::Redirect { leader: Some(p) }) => assert_eq!(p.id, leader),
        other => panic!("add_server on a follower must redirect, got {other:?}"),
    }
    assert!(matches!(lc.remove_server(42), Err(Error::NotAMember(42))));
    assert_eq!(lc.status().unwrap().voters(), vec![1, 2, 3], "nothing changed");
}

/// Two changes in one turn of the leader's loop: the second finds the first's
/// configuration uncommitted. Made deterministic by holding the leader's thread inside a
/// `read_local` closure while the requests queue up (queue of 2: the third is turned
/// away with `Busy`, which tells us the other two are queued), then releasing it.
#[test]
fn a_second_change_while_one_is_in_flight_is_refused() {
    init_log();
    let cluster = Cluster::start_with(3, |c| c.client_queue(2));
    let leader = cluster.stable_leader();
    let lc = cluster.client(leader);
    lc.write(Cmd::Put(1)).expect("write: the leader has committed in its term");
    let (n4, a4) = start_joiner(4);
    let (n5, a5) = start_joiner(5);

    let held = HeldNode::hold(&lc);
    let mut changes: Vec<JoinHandle<quorate::Result<()>>> = vec![
        {
            let lc = lc.clone();
            std::thread::spawn(move || lc.add_server(4, a4))
        },
        {
            let lc = lc.clone();
            std::thread::spawn(move || lc.add_server(5, a5))
        },
        {
            let lc = lc.clone();
            let follower = *cluster.nodes.keys().find(|&&id| id != leader).unwrap();
            std::thread::spawn(move || lc.remove_server(follower))
        },
    ];
    wait_until("one change is turned away", || changes.iter().any(|c| c.is_finished()));
    let busy = changes.remove(changes.iter().position(|c| c.is_finished()).unwrap());
    assert!(matches!(busy.join().unwrap(), Err(Error::Busy)), "the third request must get Busy");
    held.release();
    let results: Vec<_> = changes.into_iter().map(|c| c.join().unwrap()).collect();
    let refused = results.iter().filter(|r| matches!(r, Err(Error::ChangeInProgress))).count();
    let ok = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!((ok, refused), (1, 1), "one change goes through, the other is refused: {results:?}");
    drop((n4, n5));
}

// ---------------------------------------------------------------------------------------
// 5. Leadership transfer.

#[test]
fn transfer_leadership_to_each_member() {
    init_log();
    let cluster = Cluster::start(3);
    let first = cluster.stable_leader();
    let mut acked = Vec::new();
    let mut v = 0;
    // Every member in turn, starting with one that does not lead; then back to the first.
    let order: Vec<NodeId> = (1..=3).filter(|&id| id != first).chain([first]).collect();
    for to in order {
        let leader = cluster.stable_leader();
        cluster.client(leader).transfer_leadership(to).unwrap_or_else(|e| panic!("transfer {leader} -> {to}: {e:?}"));
        let s = cluster.client(to).status().unwrap();
        assert_eq!((s.role, s.leader), (Role::Leader, Some(to)), "{to} leads after the transfer");
        for _ in 0..5 {
            v += 1;
            cluster.client(to).write(Cmd::Put(v)).unwrap_or_else(|e| panic!("write on {to} after the transfer: {e:?}"));
            acked.push(v);
        }
        assert_eq!(cluster.stable_leader(), to);
    }
    let leader = cluster.stable_leader();
    let lc = cluster.client(leader);
    // A transfer to itself is a no-op; to a non-member, an error; on a follower, a redirect.
    lc.transfer_leadership(leader).expect("transfer to itself");
    assert!(matches!(lc.transfer_leadership(9), Err(Error::NotAVoter)), "transfer to a non-member");
    let follower = *cluster.nodes.keys().find(|&&id| id != leader).unwrap();
    assert!(matches!(cluster.client(follower).transfer_leadership(follower), Err(Error::Redirect { .. })));
    assert_eq!(lc.read(|m: &Recorder| m.applied.clone()).unwrap(), acked);
    cluster.await_applied_everywhere(&acked);
}

// ---------------------------------------------------------------------------------------
// 6. A partitioned old leader cannot serve a linearizable read.

#[test]
fn a_partitioned_leader_serves_no_linearizable_read() {
    init_log();
    let (cluster, proxies) = start_proxied(3);
    let old = cluster.stable_leader();
    let oc = cluster.client(old);
    let mut acked = Vec::new();
    for v in 1..=5 {
        oc.write(Cmd::Put(v)).expect("write before the partition");
        acked.push(v);
    }
    let followers: Vec<NodeId> = cluster.nodes.keys().copied().filter(|&id| id != old).collect();
    let isolate = |cut: bool| {
        for &f in &followers {
            for link in [(old, f), (f, old)] {
                if cut { proxies[&link].cut() } else { proxies[&link].heal() }
            }
        }
    };
    isolate(true);

    // A read right after the cut, while the old leader may still believe it leads: it
    // cannot confirm leadership with a majority, so it must fail.
    let early = {
        let oc = oc.clone();
        std::thread::spawn(move || oc.read(|m: &Recorder| m.applied.clone()))
    };
    // A write there cannot commit: it must not be acknowledged, and (never replicated)
    // it must vanish when the old leader's log is overwritten after healing.
    const LOST: u64 = 1000;
    let early_write = {
        let oc = oc.clone();
        std::thread::spawn(move || oc.write(Cmd::Put(LOST)))
    };

    let new = cluster.leader_among(&followers);
    let nc = cluster.client(new);
    for v in 6..=10 {
        nc.write(Cmd::Put(v)).expect("write on the new leader");
        acked.push(v);
    }
    let refused = |what: &str, result: quorate::Result<Vec<u64>>| match result {
        Ok(state) => panic!("the cut-off leader served a read ({what}): {state:?} (acknowledged: {acked:?})"),
        Err(e) => {
            eprintln!("partition: the {what} read on the old leader failed with {e:?}");
            assert!(
                matches!(e, Error::Redirect { .. } | Error::LeadershipLost | Error::Timeout),
                "unexpected error from the {what} read: {e:?}"
            );
        }
    };
    refused("early", early.join().unwrap());
    match early_write.join().unwrap() {
        Ok(n) => panic!("the cut-off leader acknowledged a write (response {n})"),
        Err(e) => {
            eprintln!("partition: the write on the old leader failed with {e:?}");
            assert!(
                matches!(e, Error::Redirect { .. } | Error::LeadershipLost | Error::Timeout),
                "unexpected error from the write on the cut-off leader: {e:?}"
            );
        }
    }
    // After the new leader has committed writes, the old one must still not serve a read.
    refused("late", oc.read(|m: &Recorder| m.applied.clone()));
    // `read_local` is documented as possibly stale: on the cut-off node it answers at once
    // with what that node applied, which lacks the writes made on the new leader.
    let local = oc.read_local(|m: &Recorder| m.applied.clone()).expect("read_local serves on any node");
    assert!(acked.starts_with(&local), "read_local returned something never written: {local:?}");
    assert!(local.len() <= 5, "the cut-off node cannot have applied the new leader's writes: {local:?}");

    isolate(false);
    wait_until("the old leader follows the new one", || {
        oc.status().is_ok_and(|s| s.role == Role::Follower && s.leader == Some(new))
    });
    assert_eq!(cluster.stable_leader(), new);
    nc.write(Cmd::Put(11)).expect("write after healing");
    acked.push(11);
    assert_eq!(nc.read(|m: &Recorder| m.applied.clone()).unwrap(), acked);
    cluster.await_applied_everywhere(&acked);
}

/// A removed server that keeps campaigning learns from the leader that it was removed,
/// and says so in its status (it cannot learn it from the log: the leader stopped
/// replicating to it when the change was appended).
#[test]
fn a_removed_server_is_told_and_its_status_says_so() {
    let cluster = Cluster::start(3);
    let leader = cluster.stable_leader();
    let victim = *cluster.nodes.keys().find(|&&id| id != leader).unwrap();
    let lc = cluster.client(leader);
    retry_not_committed("remove_server", || lc.remove_server(victim)).expect("remove_server");
    let vc = cluster.client(victim);
    wait_until("the removed server's status says it was removed", || {
        vc.status()
            .unwrap()
            .removed
            .is_some_and(|why| why.contains("removed") && why.contains(&format!("node {leader}")))
    });
    assert!(cluster.client(leader).status().unwrap().removed.is_none());
}
