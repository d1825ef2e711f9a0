//! Leader-lease reads (dissertation §6.4.1) and the rules that end a lease (`lease.rs`):
//! one test per rule, each failing if its rule is removed.

use super::harness::*;
use crate::core::*;

/// The lease of the test cores, in ticks: `floor((ELECTION - 1) / (1 + 0)) - 1`.
const LEASE: u32 = 8;

/// The test cores' settings with lease reads on, for clocks that do not drift.
fn lease_cfg(id: NodeId) -> CoreConfig {
    let mut c = cfg(id);
    c.lease_reads = Some(LeaseReads { max_clock_drift: 0.0 });
    assert_eq!(c.lease_reads.unwrap().lease_ticks(c.election_ticks), LEASE);
    c
}

/// The heartbeat rounds (their `read_seq`) among `msgs`, one per round.
fn rounds(msgs: &[Envelope]) -> Vec<u64> {
    let mut seqs: Vec<u64> = msgs
        .iter()
        .filter_map(|e| match e.message.kind {
            MessageKind::Heartbeat { read_seq, .. } => Some(read_seq),
            _ => None,
        })
        .collect();
    seqs.dedup();
    seqs
}

/// Ticks leader `r` until it sends a heartbeat round; returns the round.
fn next_round(r: &mut Raft) -> u64 {
    for _ in 0..HEARTBEAT {
        r.tick();
        if let Some(&seq) = rounds(&sent(r)).last() {
            return seq;
        }
    }
    panic!("no heartbeat round within a heartbeat interval");
}

/// A follower of leader 1 in term 1 that has just heard from it.
fn follower_of_1() -> Raft {
    let mut r = Raft::new(lease_cfg(2), voters(3));
    r.step(1, heartbeat(1, 0));
    sent(&mut r);
    assert_eq!(r.leader_id(), Some(1));
    r
}

/// Dissertation §6.4.1: once a majority (the leader included) has acknowledged a heartbeat
/// round, the leader serves a read at once, at its commit index, with no round of its own.
#[test]
fn lease_read_is_served_at_once_after_a_majority_acknowledged_a_round() {
    let mut r = steady_leader(lease_cfg(1), 3);
    r.read_index(1).unwrap();
    let ready = persist(&mut r);
    assert!(ready.reads.is_empty(), "no round acknowledged yet: ReadIndex");
    let seq = *rounds(&ready.messages).last().expect("the read's round");
    r.step(2, heartbeat_ack(1, seq));
    assert_eq!(persist(&mut r).reads, [ReadState { ctx: 1, index: LogIndex(1) }]);
    assert!(r.lease_holds());

    r.read_index(2).unwrap();
    let ready = persist(&mut r);
    assert_eq!(ready.reads, [ReadState { ctx: 2, index: LogIndex(1) }], "served at once");
    assert!(rounds(&ready.messages).is_empty(), "without a round of its own");
    assert_eq!(r.read_counts(), ReadCounts { lease: 1, read_index: 1 });

    // Without lease reads, the same acknowledgements give no lease.
    let mut plain = steady_leader(cfg(1), 3);
    let seq = next_round(&mut plain);
    plain.step(2, heartbeat_ack(1, seq));
    plain.step(3, heartbeat_ack(1, seq));
    assert!(!plain.lease_holds());
}

/// The lease runs `LEASE` ticks from when the acknowledged round was *sent*: the followers'
/// promises began no earlier, however late their answers arrive (`lease.rs`, the bound).
#[test]
fn the_lease_runs_from_when_the_round_was_sent() {
    let mut r = steady_leader(lease_cfg(1), 3);
    let seq = next_round(&mut r);
    for _ in 0..LEASE - 1 {
        r.tick(); // later rounds go unanswered
    }
    sent(&mut r);
    r.step(2, heartbeat_ack(1, seq));
    assert!(r.lease_holds(), "{} ticks after the round", LEASE - 1);
    r.tick();
    sent(&mut r);
    assert!(!r.lease_holds(), "{LEASE} ticks after the round, though answered a tick ago");
    r.read_index(3).unwrap();
    assert!(persist(&mut r).reads.is_empty(), "back to ReadIndex");
}

/// Dissertation §6.4, step 1: until the leader's no-op of its term commits, its commit
/// index may lag the previous leader's, so no read is answered at it, lease or not.
#[test]
fn no_lease_read_before_the_terms_no_op_commits() {
    let mut r = leader(lease_cfg(1), 3);
    let seq = next_round(&mut r);
    r.step(2, heartbeat_ack(1, seq));
    assert!(!r.committed_in_term());
    assert!(!r.lease_holds());
    r.read_index(1).unwrap();
    assert!(persist(&mut r).reads.is_empty(), "ReadIndex, at the no-op's index");

    r.step(2, append_ok(1, 1));
    assert!(r.committed_in_term());
    assert!(r.lease_holds());
}

/// Stepping down ends the lease, and a later leadership of the same server starts with
/// none: acknowledgements of the old term's rounds promised nothing about the new one.
#[test]
fn a_lease_ends_with_its_term_and_a_new_leadership_starts_without_one() {
    let mut r = steady_leader(lease_cfg(1), 3);
    let seq = next_round(&mut r);
    r.step(2, heartbeat_ack(1, seq));
    assert!(r.lease_holds());
    r.step(2, heartbeat(2, 1));
    assert_eq!(r.role(), Role::Follower);
    assert!(!r.lease_holds());
    assert_eq!(r.read_index(4), Err(ProposeError::NotLeader(Some(2))));

    // Leader again at once, by 2's transfer, well within the old lease's ticks.
    r.step(2, msg(2, MessageKind::TimeoutNow));
    persist(&mut r);
    r.step(2, vote_resp(3, true));
    persist(&mut r);
    assert_eq!(r.role(), Role::Leader);
    r.step(2, append_ok(3, 2));
    persist(&mut r);
    assert!(r.committed_in_term());
    assert!(!r.lease_holds(), "no round of this leadership was acknowledged");
}

/// A leader that has sent TimeoutNow serves no lease read for the rest of its term: the
/// target campaigns past every promise, and a TimeoutNow delayed in the network may start
/// that campaign at any time, even after the transfer was abandoned.
#[test]
fn a_leader_that_sent_timeout_now_serves_no_lease_read_for_the_rest_of_its_term() {
    let mut r = steady_leader(lease_cfg(1), 3);
    let seq = next_round(&mut r);
    r.step(2, heartbeat_ack(1, seq));
    assert!(r.lease_holds());
    r.transfer_leadership(2).unwrap();
    let msgs = sent(&mut r);
    assert!(msgs.iter().any(|e| e.to == 2 && e.message.kind == MessageKind::TimeoutNow));
    assert!(!r.lease_holds(), "2 may be elected past the promises now");

    // The transfer times out (2 never campaigned); rounds are acknowledged again.
    for _ in 0..ELECTION {
        r.tick();
        for seq in rounds(&sent(&mut r)) {
            r.step(2, heartbeat_ack(1, seq));
            r.step(3, heartbeat_ack(1, seq));
        }
    }
    assert_eq!((r.role(), r.transfer_target()), (Role::Leader, None), "still leading, transfer abandoned");
    assert!(!r.lease_holds(), "the TimeoutNow may still be on its way");
    r.read_index(5).unwrap();
    assert!(persist(&mut r).reads.is_empty(), "ReadIndex only");
}

/// With lease reads, a forced election that is not a transfer (`trigger_election`) is
/// ignored by a voter that promised a leader its vote; only the leader's own transfer
/// overrides the promise. (Without lease reads, any forced election does:
/// `follower_in_lease_ignores_vote_requests`.)
#[test]
fn with_lease_reads_only_a_transfer_overrides_a_voters_promise() {
    let mut r = follower_of_1();
    r.step(3, vote_req(2, 0, 0, false, true));
    assert_eq!(vote_answer(&sent(&mut r)), None, "ignored");
    assert_eq!((r.current_term(), r.leader_id()), (Term(1), Some(1)), "its term not adopted");

    r.step(3, transfer_vote_req(2, 0, 0));
    assert_eq!(vote_answer(&sent(&mut r)), Some(true), "the leader handed over to 3");
}

/// A voter keeps its promise even when some other message made it adopt a later term and
/// forget its leader (a late refusal of a pre-vote it sent before it heard the leader): a
/// vote request of that same term would otherwise pass no lease check at all.
#[test]
fn a_promise_outlives_a_term_learned_from_a_stray_message() {
    let mut r = follower_of_1();
    r.step(3, msg(5, MessageKind::RequestVoteResponse { granted: false, pre_vote: true }));
    assert_eq!((r.current_term(), r.leader_id()), (Term(5), None));
    r.step(3, vote_req(5, 0, 0, false, false));
    assert_eq!(vote_answer(&sent(&mut r)), Some(false), "the promise to 1 holds");
    assert_eq!(r.hard_state().voted_for, None);

    for _ in 0..ELECTION {
        r.tick();
    }
    sent(&mut r);
    r.step(3, vote_req(5, 0, 0, false, false));
    assert_eq!(vote_answer(&sent(&mut r)), Some(true), "the promise ran out");
}

/// With lease reads, a server that promised a leader its vote refuses `trigger_election`:
/// its vote for itself would break the promise as surely as a vote for another.
#[test]
fn trigger_election_is_refused_inside_a_promise() {
    let mut r = follower_of_1();
    assert_eq!(r.trigger_election(), Err(ProposeError::LeaseHeld));
    for _ in 0..ELECTION - 1 {
        r.tick();
    }
    assert_eq!(r.trigger_election(), Err(ProposeError::LeaseHeld), "one tick of the promise left");
    assert_eq!((r.role(), r.current_term()), (Role::Follower, Term(1)));
    r.tick();
    assert_eq!(r.trigger_election(), Ok(()));
    assert_eq!((r.role(), r.current_term()), (Role::Candidate, Term(2)));

    // Without lease reads, a forced election needs no wait.
    let mut plain = Raft::new(cfg(2), voters(3));
    plain.step(1, heartbeat(1, 0));
    assert_eq!(plain.trigger_election(), Ok(()));
}

/// A promise is volatile: a server restarting cannot know whom it promised before it
/// crashed, so it promises again, for an election timeout from its start.
#[test]
fn a_restarted_voter_promises_again() {
    let hard = HardState { current_term: Term(1), voted_for: Some(1) };
    let mut r = Raft::recover(lease_cfg(2), hard, Log::default(), voters(3), None);
    r.step(3, vote_req(2, 0, 0, false, false));
    assert_eq!(vote_answer(&sent(&mut r)), None, "ignored");
    assert_eq!(r.current_term(), Term(1));
    for _ in 0..ELECTION {
        r.tick();
    }
    sent(&mut r);
    r.step(3, vote_req(2, 0, 0, false, false));
    assert_eq!(vote_answer(&sent(&mut r)), Some(true), "the promise ran out");

    let mut plain = Raft::recover(cfg(2), hard, Log::default(), voters(3), None);
    plain.step(3, vote_req(2, 0, 0, false, false));
    assert_eq!(vote_answer(&sent(&mut plain)), Some(true), "without lease reads, no promise");
}

/// A driver that dropped ticks makes the tick count lag real time: the lease ends, and
/// rounds stamped before the skip give none even when answered after it.
#[test]
fn a_skipped_clock_ends_the_lease() {
    let mut r = steady_leader(lease_cfg(1), 3);
    let before = next_round(&mut r);
    r.step(2, heartbeat_ack(1, before));
    assert!(r.lease_holds());
    let in_flight = next_round(&mut r);
    r.on_clock_skipped();
    assert!(!r.lease_holds());
    r.step(2, heartbeat_ack(1, in_flight));
    assert!(!r.lease_holds(), "a round sent before the skip gives no lease");
    let after = next_round(&mut r);
    r.step(2, heartbeat_ack(1, after));
    assert!(r.lease_holds(), "a round sent after it does");
}

/// The lease rests on a majority of the latest configuration: a learner changes nothing,
/// but once it is promoted the acknowledgements must come from a majority of four.
/// (Majorities of adjacent single-server configurations overlap, dissertation §4.1: see
/// `lease.rs` for why that suffices.)
#[test]
fn the_lease_rests_on_a_majority_of_the_latest_configuration() {
    let mut r = steady_leader(lease_cfg(1), 3);
    let seq = next_round(&mut r);
    r.step(2, heartbeat_ack(1, seq));
    assert!(r.lease_holds(), "1 and 2 of {{1, 2, 3}}");
    r.add_server(4, "n4".into()).unwrap();
    persist(&mut r);
    assert!(r.lease_holds(), "a learner is no voter");
    r.step(2, append_ok(1, 2));
    r.step(4, append_ok(1, 2));
    persist(&mut r);
    assert!(r.membership().is_voter(4), "promoted once caught up");
    assert!(!r.lease_holds(), "1 and 2 of {{1, 2, 3, 4}}");
    r.step(3, heartbeat_ack(1, seq));
    assert!(r.lease_holds(), "1, 2 and 3 of {{1, 2, 3, 4}}");
}
