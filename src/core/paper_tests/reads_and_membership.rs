//! ReadIndex (dissertation §6.4), membership changes (§4) and leadership transfer (§3.10).

use super::harness::*;
use crate::core::*;

// ----- ReadIndex (dissertation §6.4) -----

/// Dissertation §6.4: the leader records its commit index, then confirms it still leads by
/// a heartbeat round acknowledged by a majority; only then is the read served.
#[test]
fn read_index_waits_for_a_majority_to_confirm_leadership() {
    let mut r = steady_leader(cfg(1), 5);
    r.read_index(7).unwrap();
    let ready = persist(&mut r);
    assert!(ready.reads.is_empty(), "not confirmed yet");
    let rounds: Vec<(NodeId, u64)> = ready
        .messages
        .iter()
        .filter_map(|e| match e.message.kind {
            MessageKind::Heartbeat { read_seq, .. } => Some((e.to, read_seq)),
            _ => None,
        })
        .collect();
    assert_eq!(rounds, [(2, 1), (3, 1), (4, 1), (5, 1)]);

    r.step(2, heartbeat_ack(1, 0)); // an older round does not count
    r.step(3, heartbeat_ack(1, 1));
    assert!(persist(&mut r).reads.is_empty(), "2 of 5");
    r.step(4, heartbeat_ack(1, 1));
    assert_eq!(persist(&mut r).reads, [ReadState { ctx: 7, index: LogIndex(1) }]);
}

/// Dissertation §6.4: a leader cut off from the majority can never confirm a read; the read
/// is dropped when it steps down.
#[test]
fn partitioned_leader_never_serves_a_read() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.isolate(1);
    c.node_mut(1).read_index(9).unwrap();
    c.tick(1, 2 * ELECTION);
    assert_ne!(c.node(1).role(), Role::Leader, "check-quorum deposed it");
    c.tick(1, 2 * ELECTION);
    assert!(c.reads[&1].is_empty(), "{:?}", c.reads[&1]);
    assert_eq!(c.dropped_reads[&1], [9]);
}

/// Dissertation §6.4: only the leader serves ReadIndex; others redirect.
#[test]
fn read_index_on_follower_is_refused() {
    let mut c = Cluster::new(3);
    c.elect(1);
    assert_eq!(c.node_mut(2).read_index(1), Err(ProposeError::NotLeader(Some(1))));
    let mut fresh = Raft::new(cfg(1), voters(3));
    assert_eq!(fresh.read_index(1), Err(ProposeError::NotLeader(None)));
    assert!(persist(&mut fresh).reads.is_empty());
}

// ----- membership changes (dissertation §4) -----

/// Dissertation §4.2.1: a new server joins as a learner (no vote, not counted) and is
/// promoted to voter only once it has caught up with the leader.
#[test]
fn add_server_adds_learner_then_promotes_after_catch_up() {
    let mut c = Cluster::from_nodes((1..=3).map(|id| Raft::new(cfg(id), voters(3))));
    c.nodes.insert(4, Raft::new(cfg(4), Membership::default()));
    c.elect(1);
    c.isolate(4);
    let index = c.node_mut(1).add_server(4, "n4".into()).unwrap();
    c.deliver_all();
    let m = c.node(1).membership();
    assert!(m.learners.contains_key(&4) && !m.is_voter(4), "{m:?}");
    assert!(c.node(1).commit_index() >= index, "learners do not count: 3 voters committed it");
    c.tick_all(ELECTION);
    assert!(!c.node(1).membership().is_voter(4), "not promoted before it catches up");

    c.heal();
    c.tick_all(ELECTION);
    let leader = c.node(1);
    assert!(leader.membership().is_voter(4), "{:?}", leader.membership());
    assert!(leader.membership().learners.is_empty());
    assert!(leader.membership_index() <= leader.commit_index(), "promotion committed");
    assert_eq!(log_terms(c.node(4)), log_terms(leader));
    assert!(c.node(4).membership().is_voter(4));
}

/// Dissertation §4.1: only one configuration change may be uncommitted at a time.
#[test]
fn second_membership_change_is_refused_while_one_is_uncommitted() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.node_mut(1).remove_server(3).unwrap();
    let r = c.node_mut(1);
    assert_eq!(r.remove_server(2), Err(ProposeError::ChangeInProgress));
    assert_eq!(r.add_server(4, "n4".into()), Err(ProposeError::ChangeInProgress));
    assert!(!r.membership().is_voter(3), "the pending change is in effect at once");

    c.deliver_all();
    assert!(c.node(1).membership_index() <= c.node(1).commit_index());
    assert!(c.node_mut(1).add_server(4, "n4".into()).is_ok(), "the first change committed");
}

/// Single-server changes are unsafe until the leader has committed an entry of its term
/// (Ongaro, raft-dev, 2015): before that, changes are refused.
#[test]
fn leader_refuses_membership_change_before_committing_in_its_term() {
    let mut r = leader(cfg(1), 3);
    assert!(!r.committed_in_term());
    assert_eq!(r.add_server(4, "n4".into()), Err(ProposeError::NotCommittedInTerm));
    assert_eq!(r.remove_server(3), Err(ProposeError::NotCommittedInTerm));
    assert_eq!(r.log().last_index(), LogIndex(1), "nothing appended");

    r.step(2, append_ok(1, 1));
    assert!(r.committed_in_term());
    assert!(r.add_server(4, "n4".into()).is_ok());
}

/// Dissertation §4.2.2: a leader removing itself manages the cluster until the new
/// configuration commits, then steps down; the remaining servers elect a leader.
#[test]
fn removed_leader_commits_the_change_then_steps_down() {
    let mut c = Cluster::new(3);
    c.elect(1);
    let index = c.node_mut(1).remove_server(1).unwrap();
    assert_eq!(c.node(1).role(), Role::Leader, "still leads until the change commits");
    c.deliver_all();
    assert_eq!(c.node(1).role(), Role::Follower);
    c.tick_all(3 * ELECTION);
    let leaders = c.leaders();
    assert_eq!(leaders.len(), 1);
    assert_ne!(leaders[0], 1);
    for id in 2..=3 {
        let r = c.node(id);
        assert!(r.commit_index() >= index, "node {id}: the removal is committed");
        assert!(!r.membership().contains(1), "node {id}");
    }
    assert_ne!(c.node(1).role(), Role::Leader, "the removed server never campaigns back");
}

// ----- leadership transfer (dissertation §3.10) -----

/// Dissertation §3.10: the leader brings the target up to date and sends it TimeoutNow; the
/// target campaigns at once, past the others' leases, and wins.
#[test]
fn transfer_leadership_makes_target_leader() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.node_mut(1).transfer_leadership(3).unwrap();
    c.deliver_all();
    assert_eq!(c.leaders(), [3]);
    assert_eq!(c.node(3).current_term(), Term(2));
    assert_eq!(c.node(1).leader_id(), Some(3));

    // A lagging target is caught up first.
    let mut c = Cluster::new(3);
    c.elect(1);
    c.isolate(3);
    c.propose(1, b"a");
    c.propose(1, b"b");
    c.deliver_all();
    c.heal();
    c.node_mut(1).transfer_leadership(3).unwrap();
    for _ in 0..ELECTION {
        if c.leaders() == [3] {
            break;
        }
        c.tick(1, 1);
    }
    assert_eq!(c.leaders(), [3]);
    assert_eq!(log_terms(c.node(3))[..3], [1, 1, 1], "it has the entries it lacked");
}

/// Dissertation §3.10: during a transfer the leader accepts no new entries, and the transfer
/// is aborted after an election timeout if the target does not take over.
#[test]
fn proposals_are_refused_during_a_transfer() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.isolate(3); // the TimeoutNow is lost
    c.node_mut(1).transfer_leadership(3).unwrap();
    c.deliver_all();
    assert_eq!(c.node(1).transfer_target(), Some(3));
    assert_eq!(c.node_mut(1).propose(b"x".to_vec()), Err(ProposeError::TransferInProgress));
    assert_eq!(c.node_mut(1).add_server(4, "n4".into()), Err(ProposeError::TransferInProgress));

    c.tick_all(ELECTION);
    assert_eq!(c.leaders(), [1]);
    assert_eq!(c.node(1).transfer_target(), None, "aborted");
    assert!(c.node_mut(1).propose(b"x".to_vec()).is_ok());
}

/// ReadIndex across a membership change (dissertation §6.4 with §4.1): a read waiting for
/// the acknowledgement of a voter that is then removed is confirmed by the configuration
/// that remains (here the leader alone), instead of waiting forever.
#[test]
fn pending_read_is_released_when_the_awaited_voter_leaves() {
    let mut r = steady_leader(cfg(1), 2);
    r.read_index(42).unwrap();
    let ready = persist(&mut r);
    assert!(ready.reads.is_empty(), "node 2 has not confirmed yet");
    r.remove_server(2).unwrap();
    let ready = persist(&mut r);
    assert_eq!(ready.reads.iter().map(|s| s.ctx).collect::<Vec<_>>(), [42], "read 42 must be released");
}
