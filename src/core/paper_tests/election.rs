//! Elections: terms (§5.1), leader election (§5.2), pre-vote, check-quorum, leases, the election restriction (§5.4.1).

use std::collections::BTreeSet;

use super::harness::*;
use crate::core::*;

// ----- §5.1: terms -----

/// §5.1, Figure 2 "Rules for All Servers": a server that sees a higher term in any RPC
/// adopts it and reverts to follower, whatever its role; if the RPC comes from a leader,
/// it learns the leader.
#[test]
fn any_role_adopts_higher_term_and_becomes_follower() {
    let make = |role: Role| match role {
        Role::Leader => leader(cfg(1), 3),
        Role::Candidate => {
            let mut r = Raft::new(cfg(1), voters(3));
            r.trigger_election().unwrap();
            persist(&mut r); // its own vote counts once durable
            r
        }
        _ => Raft::new(cfg(1), voters(3)),
    };
    for role in [Role::Follower, Role::Candidate, Role::Leader] {
        let mut r = make(role);
        assert_eq!(r.role(), role);
        r.step(2, heartbeat(5, 0));
        assert_eq!(r.role(), Role::Follower, "{role}");
        assert_eq!(r.current_term(), Term(5), "{role}");
        assert_eq!(r.hard_state().voted_for, None, "{role}: a new term has no vote yet");
        assert_eq!(r.leader_id(), Some(2), "{role}");

        // Forced, so that the leader lease (tested below) does not apply.
        let mut r = make(role);
        r.step(3, vote_req(5, 0, 0, false, true));
        assert_eq!(r.role(), Role::Follower, "{role}");
        assert_eq!(r.current_term(), Term(5), "{role}");
    }
}

/// §5.1: "If a server receives a request with a stale term number, it rejects the request."
/// A stale AppendEntries changes nothing and is answered with the current term; a stale
/// RequestVote wins no vote.
#[test]
fn stale_term_requests_are_rejected() {
    let mut r = restarted(cfg(1), 3, 3, &[1, 1, 2]);
    r.step(2, append(2, (3, 2), entries_from(4, &[2]), 3));
    assert_eq!(log_terms(&r), [1, 1, 2], "stale entries are not appended");
    assert_eq!(r.commit_index(), LogIndex(0), "a stale leader's commit index means nothing");
    assert_eq!(r.leader_id(), None, "a stale leader is not our leader");
    let out = sent(&mut r);
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(out[0].to, 2);
    assert_eq!(out[0].message.term, Term(3), "the stale leader is told the current term");

    r.step(2, vote_req(2, 9, 2, false, false));
    assert_ne!(vote_answer(&sent(&mut r)), Some(true));
    assert_eq!(r.hard_state(), HardState { current_term: Term(3), voted_for: None });
}

/// §5.1: "If a candidate or leader discovers that its term is out of date, it immediately
/// reverts to follower state." A leader cut off while the others elect a new one steps
/// down at the first answer carrying the new term, and its uncommitted entry is replaced.
#[test]
fn stale_leader_steps_down_when_it_learns_the_new_term() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.isolate(1);
    let stale = c.propose(1, b"lost");
    c.node_mut(2).trigger_election().unwrap();
    c.deliver_all();
    assert_eq!(c.node(2).role(), Role::Leader);
    assert_eq!(c.node(1).role(), Role::Leader, "node 1 has not heard of term 2 yet");

    c.heal();
    c.tick(1, HEARTBEAT); // its heartbeats are answered with term 2
    assert_eq!(c.node(1).role(), Role::Follower);
    assert_eq!(c.node(1).current_term(), Term(2));
    c.tick(2, HEARTBEAT);
    assert_eq!(c.node(1).leader_id(), Some(2));
    assert_eq!(log_terms(c.node(1)), log_terms(c.node(2)));
    assert_eq!(c.node(1).log().term_at(stale), Some(Term(2)), "the stale entry was overwritten");
}

// ----- §5.2: leader election -----

/// §5.2: "If a follower receives no communication over a period of time called the election
/// timeout, then it assumes there is no viable leader and begins an election." With pre-vote
/// (dissertation §9.6) it first asks, at its current term, whether it could win in term + 1.
#[test]
fn follower_campaigns_after_election_timeout() {
    let mut r = Raft::new(cfg(1), voters(3));
    let mut ticks = 0;
    while r.role() == Role::Follower {
        assert!(ticks < 2 * ELECTION, "no election within two timeouts");
        assert!(sent(&mut r).is_empty(), "a follower is quiet until its timeout");
        r.tick();
        ticks += 1;
    }
    assert!((ELECTION..2 * ELECTION).contains(&ticks), "timed out after {ticks} ticks");
    assert_eq!(r.role(), Role::PreCandidate);
    assert_eq!(r.current_term(), Term(0), "pre-vote does not bump the term");
    let out = sent(&mut r);
    let to: BTreeSet<NodeId> = out.iter().map(|e| e.to).collect();
    assert_eq!(to, BTreeSet::from([2, 3]));
    for e in &out {
        assert_eq!(e.message, vote_req(1, 0, 0, true, false), "pre-vote for term 1");
    }

    r.step(2, msg(1, MessageKind::RequestVoteResponse { granted: true, pre_vote: true }));
    assert_eq!(r.role(), Role::Candidate);
    assert_eq!(r.hard_state(), HardState { current_term: Term(1), voted_for: Some(1) }, "votes for itself");
    let out = sent(&mut r);
    assert_eq!(out.len(), 2);
    for e in &out {
        assert_eq!(e.message, vote_req(1, 0, 0, false, false));
    }
}

/// §5.2: "A server remains in follower state as long as it receives valid RPCs from a
/// leader or candidate."
#[test]
fn heartbeats_keep_a_follower_from_campaigning() {
    let mut r = Raft::new(cfg(2), voters(3));
    for _ in 0..10 {
        for _ in 0..ELECTION - 1 {
            r.tick();
        }
        r.step(1, heartbeat(1, 0));
    }
    assert_eq!(r.role(), Role::Follower);
    assert_eq!(r.current_term(), Term(1));
    let out = sent(&mut r);
    assert!(out.iter().all(|e| e.to == 1 && matches!(e.message.kind, MessageKind::HeartbeatResponse { .. })));
}

/// Votes a candidate receives: `(voter, granted)`.
type Votes = &'static [(NodeId, bool)];

/// §5.2: "A candidate wins an election if it receives votes from a majority of the servers
/// in the full cluster for the same term"; a majority of refusals sends it back to follower.
#[test]
fn candidate_with_majority_of_votes_becomes_leader() {
    // (voters, votes received in order, resulting role)
    let cases: [(u64, Votes, Role); 9] = [
        (1, &[], Role::Leader),
        (3, &[(2, true)], Role::Leader),
        (3, &[(2, false)], Role::Candidate),
        (3, &[(2, false), (3, false)], Role::Follower),
        (5, &[(2, true)], Role::Candidate),
        (5, &[(2, true), (3, true)], Role::Leader),
        (5, &[(2, false), (3, true), (4, false)], Role::Candidate),
        (5, &[(2, false), (3, false), (4, false)], Role::Follower),
        (5, &[(2, false), (3, false), (4, true), (5, true)], Role::Leader),
    ];
    for (n, votes, want) in cases {
        let mut r = Raft::new(cfg(1), voters(n));
        r.trigger_election().unwrap();
        persist(&mut r); // its own vote counts once durable
        for &(from, granted) in votes {
            r.step(from, vote_resp(1, granted));
        }
        assert_eq!(r.role(), want, "n={n} votes={votes:?}");
        assert_eq!(r.current_term(), Term(1), "n={n} votes={votes:?}");
    }
}

/// §5.2: "Each server will vote for at most one candidate in a given term, on a
/// first-come-first-served basis." A repeated request from the same candidate is granted
/// again (it may be a retransmission).
#[test]
fn follower_votes_at_most_once_per_term() {
    let mut r = Raft::new(cfg(1), voters(3));
    r.step(2, vote_req(1, 0, 0, false, false));
    assert_eq!(vote_answer(&sent(&mut r)), Some(true));
    assert_eq!(r.hard_state(), HardState { current_term: Term(1), voted_for: Some(2) });

    r.step(3, vote_req(1, 0, 0, false, false));
    assert_eq!(vote_answer(&sent(&mut r)), Some(false), "already voted for 2 in term 1");
    assert_eq!(r.hard_state().voted_for, Some(2));

    r.step(2, vote_req(1, 0, 0, false, false));
    assert_eq!(vote_answer(&sent(&mut r)), Some(true), "same candidate, same term");

    r.step(3, vote_req(2, 0, 0, false, false));
    assert_eq!(vote_answer(&sent(&mut r)), Some(true), "a new term brings a new vote");
    assert_eq!(r.hard_state(), HardState { current_term: Term(2), voted_for: Some(3) });
}

/// §5.2: "Raft uses randomized election timeouts ... chosen randomly from a fixed interval."
/// Every timeout lies in `[election_ticks, 2 * election_ticks)`, and they differ across
/// seeds, across servers, and across one server's successive elections.
#[test]
fn election_timeouts_are_randomized() {
    let mut seen = BTreeSet::new();
    for seed in 0..100 {
        let mut c = cfg(1);
        c.seed = seed;
        let ticks = ticks_until_campaign(&mut Raft::new(c, voters(3)));
        assert!((ELECTION..2 * ELECTION).contains(&ticks), "seed {seed}: {ticks} ticks");
        seen.insert(ticks);
    }
    assert!(seen.len() >= ELECTION as usize / 2, "timeouts barely vary: {seen:?}");

    let per_node: BTreeSet<u32> = (1..=5).map(|id| ticks_until_campaign(&mut Raft::new(cfg(id), voters(5)))).collect();
    assert!(per_node.len() > 1, "five servers with the same timeout: {per_node:?}");

    let mut r = Raft::new(cfg(1), voters(3));
    let successive: BTreeSet<u32> = (0..10)
        .map(|_| {
            let ticks = ticks_until_campaign(&mut r);
            r.step(2, heartbeat(r.current_term().0, 0)); // back to follower
            ticks
        })
        .collect();
    assert!(successive.len() > 1, "one server always draws {successive:?}");
}

/// §5.2: "If many followers become candidates at the same time, votes could be split so that
/// no candidate obtains a majority. When this happens, each candidate will time out and
/// start a new election." Randomized timeouts resolve it.
#[test]
fn split_vote_resolves_in_a_later_term() {
    let mut c = Cluster::new(3);
    for id in 1..=3 {
        c.node_mut(id).trigger_election().unwrap();
    }
    c.deliver_all();
    assert!(c.leaders().is_empty(), "everyone voted for itself in term 1");
    for id in 1..=3 {
        assert_eq!(c.node(id).current_term(), Term(1));
    }

    for _ in 0..10 * ELECTION {
        if !c.leaders().is_empty() {
            break;
        }
        c.tick_all(1);
    }
    let leaders = c.leaders();
    assert_eq!(leaders.len(), 1, "{leaders:?}");
    let term = c.node(leaders[0]).current_term();
    assert!(term > Term(1));
    c.tick_all(HEARTBEAT);
    for id in 1..=3 {
        assert_eq!(c.node(id).current_term(), term);
        assert_eq!(c.node(id).leader_id(), Some(leaders[0]));
    }
}

/// §5.2, Figure 2 "Candidates": "If election timeout elapses: start new election." A
/// candidate that hears nothing tries again (pre-vote first) and then campaigns in a new term.
#[test]
fn candidate_starts_new_election_after_timeout() {
    let mut r = Raft::new(cfg(1), voters(3));
    r.trigger_election().unwrap();
    persist(&mut r); // its own vote counts once durable
    assert_eq!(r.role(), Role::Candidate);
    sent(&mut r);
    let mut ticks = 0;
    while r.role() == Role::Candidate {
        assert!(ticks < 2 * ELECTION, "candidate never timed out");
        r.tick();
        ticks += 1;
    }
    assert_eq!(r.role(), Role::PreCandidate);
    assert!(sent(&mut r).iter().all(|e| e.message == vote_req(2, 0, 0, true, false)));
    r.step(2, msg(2, MessageKind::RequestVoteResponse { granted: true, pre_vote: true }));
    assert_eq!(r.role(), Role::Candidate);
    assert_eq!(r.current_term(), Term(2));
}

/// §5.2: "If the leader's term is at least as large as the candidate's current term, then
/// the candidate recognizes the leader as legitimate and returns to follower state."
#[test]
fn candidate_steps_down_for_leader_of_its_term() {
    let mut r = Raft::new(cfg(1), voters(3));
    r.trigger_election().unwrap();
    persist(&mut r); // its own vote counts once durable
    r.step(2, heartbeat(1, 0));
    assert_eq!(r.role(), Role::Follower);
    assert_eq!(r.current_term(), Term(1));
    assert_eq!(r.leader_id(), Some(2));
    assert_eq!(r.hard_state().voted_for, Some(1), "the vote of term 1 is kept");
}

// ----- pre-vote, check-quorum, leader lease (dissertation §9.6, §6.2, §4.2.3) -----

/// Dissertation §9.6: a partitioned server that keeps timing out does not inflate its term,
/// so when it rejoins it cannot force the healthy leader to step down.
#[test]
fn prevote_keeps_partitioned_node_from_disrupting() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.isolate(3);
    for _ in 0..3 {
        c.propose(1, b"x");
    }
    c.tick_all(5 * ELECTION);
    assert_eq!(c.node(3).current_term(), Term(1), "an isolated pre-candidate never bumps its term");
    assert_ne!(c.node(3).role(), Role::Leader);

    c.heal();
    c.tick_all(3 * ELECTION);
    assert_eq!(c.leaders(), [1]);
    for id in 1..=3 {
        assert_eq!(c.node(id).current_term(), Term(1), "node {id}");
    }
    assert_eq!(c.node(3).leader_id(), Some(1));
    assert_eq!(log_terms(c.node(3)), log_terms(c.node(1)), "the rejoined node caught up");
}

/// Dissertation §6.2 (check-quorum): a leader that has not heard from a majority within an
/// election timeout steps down, so a partitioned leader does not go on believing it leads.
#[test]
fn leader_without_quorum_steps_down() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.isolate(1);
    c.tick(1, ELECTION);
    assert_eq!(c.node(1).role(), Role::Leader, "it heard from everyone in its first timeout");
    c.tick(1, ELECTION);
    assert_eq!(c.node(1).role(), Role::Follower, "silent majority for a full election timeout");
    assert_eq!(c.node(1).current_term(), Term(1), "stepping down does not change the term");
    assert_eq!(c.node(1).leader_id(), None);

    let mut c = Cluster::new(3);
    c.elect(1);
    c.tick_all(5 * ELECTION);
    assert_eq!(c.leaders(), [1], "a leader in contact with a majority stays leader");
}

/// Dissertation §4.2.3 (leader lease): a server that heard from its leader within the minimum
/// election timeout ignores RequestVote, even in a higher term, unless the request is forced
/// by a leadership transfer; once the lease runs out it votes normally.
#[test]
fn follower_in_lease_ignores_vote_requests() {
    let mut c = Cluster::new(3);
    c.elect(1);
    let r = c.node_mut(2);
    r.step(3, vote_req(2, 1, 1, false, false));
    assert_eq!(vote_answer(&sent(r)), None, "ignored");
    assert_eq!(r.hard_state(), HardState { current_term: Term(1), voted_for: Some(1) });
    assert_eq!(r.leader_id(), Some(1));

    r.step(3, vote_req(2, 1, 1, false, true));
    assert_eq!(vote_answer(&sent(r)), Some(true), "a forced election overrides the lease");
    assert_eq!(r.hard_state(), HardState { current_term: Term(2), voted_for: Some(3) });

    let mut c = Cluster::new(3);
    c.elect(1);
    let r = c.node_mut(2);
    for _ in 0..ELECTION {
        r.tick();
    }
    sent(r);
    r.step(3, vote_req(2, 1, 1, false, false));
    assert_eq!(vote_answer(&sent(r)), Some(true), "the lease expired");
    assert_eq!(r.current_term(), Term(2));
}

// ----- §5.4.1: election restriction -----

/// §5.4.1: "the voter denies its vote if its own log is more up-to-date than that of the
/// candidate": the later last term wins; with equal last terms, the longer log wins. Pre-votes
/// (dissertation §9.6) apply the same rule.
#[test]
fn vote_refused_to_candidate_with_less_up_to_date_log() {
    // The voter's log ends at index 3, term 2.
    let cases = [
        ((3, 2), true),  // identical
        ((4, 2), true),  // same last term, longer
        ((2, 2), false), // same last term, shorter
        ((1, 3), true),  // later last term, even though shorter
        ((9, 1), false), // earlier last term, even though longer
        ((3, 1), false), // same length, earlier last term
        ((0, 0), false), // empty
    ];
    for pre_vote in [false, true] {
        for ((last_index, last_term), want) in cases {
            let mut r = restarted(cfg(1), 3, 2, &[1, 1, 2]);
            r.step(2, vote_req(3, last_index, last_term, pre_vote, false));
            let got = vote_answer(&sent(&mut r));
            assert_eq!(got, Some(want), "pre_vote={pre_vote} candidate last=({last_index}, {last_term})");
            let voted = if want && !pre_vote { Some(2) } else { None };
            assert_eq!(r.hard_state().voted_for, voted, "pre_vote={pre_vote} ({last_index}, {last_term})");
            let term = if pre_vote { 2 } else { 3 };
            assert_eq!(r.current_term(), Term(term), "a pre-vote changes no term");
        }
    }
}
