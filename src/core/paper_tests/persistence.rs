//! The persistence contract on `Ready` (etcd's `Ready`/`Advance`, raft-rs's
//! `persisted_messages`; dissertation §10.2.1): what may leave before the writes are
//! durable, and what the core waits for.

use super::harness::*;
use crate::core::*;

/// §10.2.1: the leader's AppendEntries may leave at once; a follower's acknowledgement and
/// a voter's vote wait until what they promise is on disk.
#[test]
fn only_a_leaders_messages_leave_before_the_sync() {
    let mut l = steady_leader(cfg(1), 3);
    l.propose(b"x".to_vec()).unwrap();
    let ready = l.take_ready();
    assert!(!appends_to(&ready.messages, 2).is_empty(), "the leader streams at once");
    assert!(ready.persisted_messages.is_empty());

    let mut f = Raft::new(cfg(2), voters(3));
    f.step(1, append(1, (0, 0), entries_from(1, &[1]), 0));
    let ready = f.take_ready();
    assert!(ready.messages.is_empty(), "nothing a follower says leaves before its sync");
    assert_eq!(append_answer(&ready.persisted_messages).index, LogIndex(1));

    let mut v = Raft::new(cfg(3), voters(3));
    v.step(1, vote_req(1, 0, 0, false, false));
    let ready = v.take_ready();
    assert_eq!(ready.hard_state.map(|h| h.voted_for), Some(Some(1)));
    assert_eq!(vote_answer(&ready.persisted_messages), Some(true));
    assert!(ready.messages.is_empty());
}

/// §10.2.1: the leader counts its own log toward a majority only as far as it is durable.
/// With one of two followers acknowledging, the entry commits only once the leader's own
/// copy is on disk too.
#[test]
fn leader_counts_only_its_persisted_log_toward_commit() {
    let mut r = leader(cfg(1), 3);
    r.step(2, append_ok(1, 1));
    r.step(3, append_ok(1, 1));
    assert_eq!(r.commit_index(), LogIndex(1), "the followers alone are a majority");
    let index = r.propose(b"x".to_vec()).unwrap();
    r.take_ready();
    r.step(2, append_ok(1, index.0));
    assert_eq!(r.commit_index(), LogIndex(1), "leader + one follower, but the leader's copy is not durable");
    r.on_persisted(index, Term(1));
    assert_eq!(r.commit_index(), index);
}

/// A report of durability for an entry that was overwritten since is ignored, and a
/// truncation takes back what was reported durable beyond it.
#[test]
fn persisted_reports_follow_truncation() {
    let mut f = restarted(cfg(2), 3, 1, &[1, 1, 1]);
    assert_eq!(f.persisted_index(), LogIndex(3), "a recovered log is durable");
    f.step(1, append(2, (1, 1), entries_from(2, &[2]), 0));
    assert_eq!(log_terms(&f), [1, 2]);
    assert_eq!(f.persisted_index(), LogIndex(1), "index 2 was overwritten");
    f.on_persisted(LogIndex(2), Term(1));
    assert_eq!(f.persisted_index(), LogIndex(1), "a report for the old entry at 2 is stale");
    f.on_persisted(LogIndex(2), Term(2));
    assert_eq!(f.persisted_index(), LogIndex(2));
}

/// §5.2: a candidate must not lead before its own vote is durable, or a crash could make it
/// forget the vote and lead the same term twice. A one-voter cluster shows it plainly.
#[test]
fn a_candidate_leads_only_once_its_own_vote_is_durable() {
    let mut r = Raft::new(cfg(1), voters(1));
    r.trigger_election().unwrap();
    assert_eq!(r.role(), Role::Candidate);
    let ready = r.take_ready();
    let hard = ready.hard_state.expect("the new term and vote must be written");
    assert_eq!((hard.current_term, hard.voted_for), (Term(1), Some(1)));
    r.on_hard_state_persisted(HardState { current_term: Term(0), voted_for: None });
    assert_eq!(r.role(), Role::Candidate, "an older state is no news");
    r.on_hard_state_persisted(hard);
    assert_eq!(r.role(), Role::Leader);
}
