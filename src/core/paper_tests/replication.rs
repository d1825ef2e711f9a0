//! Replication: the log consistency check (§5.3), committing (§5.4.2, Figure 8), pipelining and batching.

use super::harness::*;
use crate::core::*;

// ----- §5.3: log replication -----

/// §5.3, Figure 2 AppendEntries rule 2: "Reply false if log doesn't contain an entry at
/// prevLogIndex whose term matches prevLogTerm." The rejection carries the hint for fast
/// backtracking: the conflicting term and its first index, or the end of a short log.
#[test]
fn append_entries_rejected_when_prev_does_not_match() {
    // (prev index, prev term) -> (conflict term, conflict index)
    let cases = [
        ((5, 3), (Some(2), 3)), // follower's entry 5 has term 2, which starts at 3
        ((2, 2), (Some(1), 1)), // follower's entry 2 has term 1, which starts at 1
        ((7, 3), (None, 6)),    // follower's log ends at 5
    ];
    for ((prev_index, prev_term), (conflict_term, conflict_index)) in cases {
        let mut r = restarted(cfg(1), 3, 3, &[1, 1, 2, 2, 2]);
        r.step(2, append(3, (prev_index, prev_term), entries_from(prev_index + 1, &[3]), 9));
        let ready = persist(&mut r);
        let answer = append_answer(&ready.messages);
        let want = AppendEntriesResponse {
            success: false,
            index: LogIndex(prev_index),
            conflict_term: conflict_term.map(Term),
            conflict_index: LogIndex(conflict_index),
        };
        assert_eq!(answer, want, "prev=({prev_index}, {prev_term})");
        assert_eq!(log_terms(&r), [1, 1, 2, 2, 2], "log untouched");
        assert_eq!(ready.log_changed_from, None);
        assert_eq!(r.commit_index(), LogIndex(0), "nothing verified, nothing committed");
        assert_eq!(r.leader_id(), Some(2), "still a legitimate leader");
    }
}

/// An AppendEntries after `prev` carrying entries of `terms`, and what it should leave.
struct AppendCase {
    prev: (u64, u64),
    terms: &'static [u64],
    want_log: &'static [u64],
    want_changed_from: Option<u64>,
}

/// §5.3, Figure 2 AppendEntries rules 3 and 4: "If an existing entry conflicts with a new one
/// (same index but different terms), delete the existing entry and all that follow it";
/// "Append any new entries not already in the log". Entries already present are kept.
#[test]
fn append_entries_truncates_conflicting_suffix_and_appends() {
    let case = |prev, terms, want_log, want_changed_from| AppendCase { prev, terms, want_log, want_changed_from };
    // The follower's log is [1, 1, 2, 2].
    let cases = [
        case((2, 1), &[3], &[1, 1, 3], Some(3)),
        case((1, 1), &[1, 3, 3], &[1, 1, 3, 3], Some(3)),
        case((4, 2), &[3, 3], &[1, 1, 2, 2, 3, 3], Some(5)),
        case((0, 0), &[3, 3], &[3, 3], Some(1)),
        case((0, 0), &[1, 1], &[1, 1, 2, 2], None),
        case((4, 2), &[], &[1, 1, 2, 2], None),
    ];
    for AppendCase { prev, terms, want_log, want_changed_from } in cases {
        let mut r = restarted(cfg(1), 3, 3, &[1, 1, 2, 2]);
        r.step(2, append(3, prev, entries_from(prev.0 + 1, terms), 0));
        let ready = persist(&mut r);
        assert_eq!(log_terms(&r), want_log, "prev={prev:?} terms={terms:?}");
        assert_eq!(ready.log_changed_from, want_changed_from.map(LogIndex), "prev={prev:?} terms={terms:?}");
        let answer = append_answer(&ready.messages);
        assert!(answer.success);
        assert_eq!(answer.index, LogIndex(prev.0 + terms.len() as u64), "acks what it verified");
    }
}

/// §5.3: a duplicated or reordered (older) AppendEntries must not truncate entries that
/// match the leader's log: only a real conflict truncates (Figure 2 rule 3 says "conflicts").
#[test]
fn stale_append_entries_do_not_truncate_matching_entries() {
    let mut r = Raft::new(cfg(1), voters(3));
    r.step(2, append(1, (0, 0), entries_from(1, &[1, 1, 1, 1, 1]), 0));
    assert_eq!(log_terms(&r), [1; 5]);
    sent(&mut r);

    r.step(2, append(1, (0, 0), entries_from(1, &[1, 1]), 0)); // the older message, late
    let ready = persist(&mut r);
    assert_eq!(log_terms(&r), [1; 5], "the tail survives");
    assert_eq!(ready.log_changed_from, None);
    let answer = append_answer(&ready.messages);
    assert_eq!((answer.success, answer.index), (true, LogIndex(2)), "acks only what this message covered");
}

/// Figure 2 AppendEntries rule 5: "If leaderCommit > commitIndex, set commitIndex =
/// min(leaderCommit, index of last new entry)": entries past the verified prefix may still
/// be from a deposed leader and must not be committed.
#[test]
fn follower_commits_only_the_verified_prefix() {
    let mut r = restarted(cfg(1), 3, 3, &[1, 1, 1, 2, 2]);
    r.step(2, append(3, (2, 1), vec![], 5));
    assert_eq!(r.commit_index(), LogIndex(2));
    r.step(2, append(3, (2, 1), entries_from(3, &[1, 3]), 5));
    assert_eq!(log_terms(&r), [1, 1, 1, 3]);
    assert_eq!(r.commit_index(), LogIndex(4));
}

/// §5.3: "the leader can decrement nextIndex to bypass all of the conflicting entries in
/// that term; one AppendEntries RPC will be required for each term with conflicting entries,
/// rather than one per entry." A follower with a long divergent suffix is repaired in a
/// handful of round trips.
#[test]
fn leader_backtracks_a_term_per_round_trip() {
    let long = |base: &[u64], term: u64, n: usize| -> Vec<u64> {
        base.iter().copied().chain(std::iter::repeat_n(term, n)).collect()
    };
    // (leader's log, follower's log): the leader's log is more up to date.
    let cases = [
        (long(&[1, 1, 1], 3, 60), long(&[1, 1, 1], 2, 50)), // follower's term unknown to the leader
        (long(&[1, 1, 2, 2], 3, 60), long(&[1, 1], 2, 50)), // follower has a longer run of term 2
        (long(&[1, 1, 1], 3, 10), long(&[1, 1, 1], 2, 50)), // follower's log is longer
        (long(&[1], 1, 60), vec![1]),                       // follower's log is short
    ];
    for (leader_log, follower_log) in cases {
        let mut c = Cluster::from_nodes([
            restarted(cfg(1), 3, 3, &leader_log),
            restarted(cfg(2), 3, 3, &follower_log),
            restarted(cfg(3), 3, 3, &leader_log),
        ]);
        c.node_mut(1).trigger_election().unwrap();
        c.deliver_all();
        assert_eq!(c.node(1).role(), Role::Leader);
        assert_eq!(log_terms(c.node(2)), log_terms(c.node(1)), "follower repaired");
        let round_trips = c.appends_delivered_to(2);
        assert!(round_trips <= 3, "{round_trips} AppendEntries for {} entries", follower_log.len());
    }
}

/// §5.3: "When the entry has been safely replicated [on a majority], the leader applies
/// the entry" — the leader commits an entry of its term once a majority stores it, not before.
#[test]
fn leader_commits_once_a_majority_stores_the_entry() {
    let mut r = steady_leader(cfg(1), 5);
    let index = r.propose(b"x".to_vec()).unwrap();
    assert_eq!(index, LogIndex(2));
    sent(&mut r);
    r.step(2, append_ok(1, 2));
    assert_eq!(r.commit_index(), LogIndex(1), "2 of 5 is no majority");
    r.step(3, append_ok(1, 2));
    assert_eq!(r.commit_index(), LogIndex(2), "3 of 5 is");
}

/// §5.3: "The leader keeps track of the highest index it knows to be committed, and it
/// includes that index in future AppendEntries RPCs (including heartbeats) so that the other
/// servers eventually find out."
#[test]
fn commit_index_reaches_followers() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.propose(1, b"a");
    c.propose(1, b"b");
    c.deliver_all();
    assert_eq!(c.node(1).commit_index(), LogIndex(3));
    c.tick(1, HEARTBEAT);
    for id in 2..=3 {
        assert_eq!(c.node(id).commit_index(), LogIndex(3), "node {id}");
    }
}

/// §5.4.2 and §8: a new leader appends a no-op entry of its own term, so it can commit (and
/// learn the commit index) without waiting for a client.
#[test]
fn new_leader_appends_noop_of_its_term() {
    let mut r = restarted(cfg(1), 3, 1, &[1, 1]);
    r.trigger_election().unwrap();
    persist(&mut r); // its own vote counts once durable
    r.step(2, vote_resp(2, true));
    assert_eq!(r.role(), Role::Leader);
    assert_eq!(log_terms(&r), [1, 1, 2]);
    let last = r.log().get(LogIndex(3)).unwrap();
    assert_eq!(last.payload, Payload::Noop);
    assert!(!r.committed_in_term());

    let mut c = Cluster::new(3);
    c.elect(1);
    for id in 1..=3 {
        let first = c.node(id).log().get(LogIndex(1)).cloned();
        assert_eq!(first.map(|e| (e.term, e.payload)), Some((Term(1), Payload::Noop)), "node {id}");
    }
    assert!(c.node(1).committed_in_term());
}

// ----- §5.4.2: committing entries from previous terms (Figure 8) -----

/// §5.4.2: "Raft never commits log entries from previous terms by counting replicas. Only
/// log entries from the leader's current term are committed by counting replicas."
/// The leader of term 3 has an uncommitted entry of term 2 at index 2; once a majority
/// holds index 2, but not the term-3 no-op at index 3, nothing may commit.
#[test]
fn leader_does_not_count_replicas_of_previous_term_entries() {
    let mut c = cfg(1);
    c.max_append_entries = 1;
    let mut r = restarted(c, 3, 2, &[1, 2]);
    r.trigger_election().unwrap();
    persist(&mut r); // its own vote counts once durable
    r.step(2, vote_resp(3, true));
    assert_eq!(log_terms(&r), [1, 2, 3]);
    sent(&mut r);

    // Follower 2 holds only index 1: the probe at prev = 2 is refused, then index 2 is sent.
    let refusal =
        AppendEntriesResponse { success: false, index: LogIndex(2), conflict_term: None, conflict_index: LogIndex(2) };
    r.step(2, msg(3, MessageKind::AppendEntriesResponse(refusal)));
    let out = sent(&mut r);
    let sent_indexes: Vec<LogIndex> =
        appends_to(&out, 2).iter().flat_map(|ae| ae.entries.iter().map(|e| e.index)).collect();
    assert_eq!(sent_indexes, [LogIndex(2)]);
    r.step(2, append_ok(3, 2));
    assert_eq!(r.commit_index(), LogIndex(0), "index 2 (term 2) is on 2 of 3 servers but must not commit");
}

/// §5.4.2: entries of previous terms commit indirectly, when an entry of the current term
/// after them commits (Log Matching).
#[test]
fn previous_term_entries_commit_with_the_current_term_entry() {
    let mut r = restarted(cfg(1), 3, 2, &[1, 2]);
    r.trigger_election().unwrap();
    persist(&mut r); // its own vote counts once durable
    r.step(2, vote_resp(3, true));
    sent(&mut r);
    r.step(2, append_ok(3, 3));
    assert_eq!(r.commit_index(), LogIndex(3), "the no-op commits, and entries 1 and 2 with it");
}

/// §5.4.2, Figure 8, played out on five servers. (c): S1 leads term 4 and replicates its
/// term-2 entry at index 2 to a majority, but its term-4 entry reaches nobody. (d): S1
/// crashes and S5, whose index 2 holds term 3, is elected and overwrites index 2 everywhere.
/// That is only safe because S1 must not have committed index 2 in (c).
#[test]
fn figure8_entry_of_previous_term_is_not_committed() {
    let mut c = Cluster::from_nodes([
        restarted(cfg(1), 5, 3, &[1, 2]),
        restarted(cfg(2), 5, 3, &[1, 2]),
        restarted(cfg(3), 5, 3, &[1]),
        restarted(cfg(4), 5, 3, &[1]),
        restarted(cfg(5), 5, 3, &[1, 3]),
    ]);
    // (c) S5 is down; S1's term-4 entries (index 3 on) never arrive.
    c.isolate(5);
    c.filter = Some(Box::new(|from, _, m| {
        if let (1, MessageKind::AppendEntries(ae)) = (from, &mut m.kind) {
            ae.entries.retain(|e| e.index < LogIndex(3));
        }
        true
    }));
    c.node_mut(1).trigger_election().unwrap();
    c.deliver_all();
    assert_eq!(c.node(1).role(), Role::Leader);
    assert_eq!(c.node(1).current_term(), Term(4));
    c.tick(1, HEARTBEAT);
    for id in 2..=4 {
        assert_eq!(log_terms(c.node(id)), [1, 2], "node {id} holds index 2 of term 2");
    }
    assert_eq!(c.node(1).commit_index(), LogIndex(0), "a term-2 entry is not committed by counting");

    // (d) S1 crashes; S5 wins (its last term, 3, beats 2) and overwrites index 2.
    c.filter = None;
    c.heal();
    c.isolate(1);
    for _ in 0..2 {
        if c.node(5).role() != Role::Leader {
            c.node_mut(5).trigger_election().unwrap();
            c.deliver_all();
        }
    }
    assert_eq!(c.node(5).role(), Role::Leader);
    for id in 2..=5 {
        assert_eq!(log_terms(c.node(id))[..2], [1, 3], "node {id}");
    }
}

// ----- pipelining and batching -----

/// Flow control: with `max_inflight = k` a leader streams up to k AppendEntries to a
/// replicating follower before any acknowledgement, never more, and each acknowledgement
/// frees one slot.
#[test]
fn leader_pipelines_at_most_max_inflight_appends() {
    let mut c = cfg(1);
    c.max_inflight = 3;
    c.max_append_entries = 1;
    let mut r = steady_leader(c, 3);
    for k in 0..10u8 {
        r.propose(vec![k]).unwrap();
    }
    let out = sent(&mut r);
    for to in [2, 3] {
        let firsts: Vec<LogIndex> = appends_to(&out, to).iter().map(|ae| ae.entries[0].index).collect();
        assert_eq!(firsts, [LogIndex(2), LogIndex(3), LogIndex(4)], "to {to}");
    }
    assert!(sent(&mut r).is_empty(), "the window is full");

    r.step(2, append_ok(1, 2));
    let out = sent(&mut r);
    let firsts: Vec<LogIndex> = appends_to(&out, 2).iter().map(|ae| ae.entries[0].index).collect();
    assert_eq!(firsts, [LogIndex(5)], "one acknowledgement, one more message");
    assert!(appends_to(&out, 3).is_empty());
}

/// Batching: proposals made in one turn leave in one AppendEntries per follower, split only
/// at `max_append_entries`.
#[test]
fn leader_batches_proposals_of_one_turn() {
    for (max_append_entries, want) in [(512, vec![10]), (4, vec![4, 4, 2])] {
        let mut c = cfg(1);
        c.max_append_entries = max_append_entries;
        let mut r = steady_leader(c, 3);
        for k in 0..10u8 {
            r.propose(vec![k]).unwrap();
        }
        let out = sent(&mut r);
        for to in [2, 3] {
            let sizes: Vec<usize> = appends_to(&out, to).iter().map(|ae| ae.entries.len()).collect();
            assert_eq!(sizes, want, "max_append_entries={max_append_entries} to {to}");
        }
    }
}
