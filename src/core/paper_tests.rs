//! Paper tests: one test per rule of the Raft paper's Figure 2 and §5 (Ongaro and Ousterhout,
//! "In Search of an Understandable Consensus Algorithm"), plus the extensions from Ongaro's
//! dissertation that the core implements (pre-vote, check-quorum, the leader lease, ReadIndex,
//! single-server membership changes, leadership transfer). In the spirit of etcd's
//! `raft_paper_test.go`, each test names the rule it checks and asserts on concrete state.
//!
//! Two kinds of harness: hand-made messages stepped into one core (to pin a single rule
//! down exactly), and [`Cluster`], a few cores wired through an in-memory FIFO network that
//! can cut links and rewrite or drop messages. Every loop is bounded.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use super::*;

/// Minimum election timeout of the test cores, in ticks.
const ELECTION: u32 = 10;
/// Heartbeat interval of the test cores, in ticks.
const HEARTBEAT: u32 = 2;
/// Most messages one [`Cluster::deliver_all`] delivers: a livelock fails instead of hanging.
const DELIVERIES_MAX: usize = 10_000;

// ----- building blocks -----

fn cfg(id: NodeId) -> CoreConfig {
    let mut c = CoreConfig::new(id);
    c.election_ticks = ELECTION;
    c.heartbeat_ticks = HEARTBEAT;
    c
}

/// A configuration whose voters are 1..=n.
fn voters(n: u64) -> Membership {
    Membership::with_voters((1..=n).map(|id| (id, format!("n{id}"))))
}

/// Entries with the given terms, the first at index `first`.
fn entries_from(first: u64, terms: &[u64]) -> Vec<Entry> {
    terms
        .iter()
        .zip(first..)
        .map(|(&t, i)| Entry { term: Term(t), index: LogIndex(i), payload: Payload::Command(vec![i as u8]) })
        .collect()
}

fn log_of(terms: &[u64]) -> Log {
    Log::new(LogIndex(0), Term(0), entries_from(1, terms))
}

/// The terms of `r`'s log, index 1 first.
fn log_terms(r: &Raft) -> Vec<u64> {
    r.log().entries().iter().map(|e| e.term.0).collect()
}

/// A voter of an `n`-voter cluster restarting in `term` (without a vote) with a log of `terms`.
fn restarted(c: CoreConfig, n: u64, term: u64, terms: &[u64]) -> Raft {
    let hard = HardState { current_term: Term(term), voted_for: None };
    Raft::recover(c, hard, log_of(terms), voters(n))
}

/// Server `c.id` (not 2) of an `n`-voter cluster, made leader of term 1 by votes from the
/// others; its first AppendEntries (carrying the no-op) are discarded unanswered.
fn leader(c: CoreConfig, n: u64) -> Raft {
    let me = c.id;
    let mut r = Raft::new(c, voters(n));
    r.trigger_election().unwrap();
    for from in (1..=n).filter(|&id| id != me) {
        if r.role() != Role::Leader {
            r.step(from, vote_resp(1, true));
        }
    }
    assert_eq!(r.role(), Role::Leader);
    r.take_ready();
    r
}

/// [`leader`] whose followers all acknowledged the no-op: they replicate, and 1 is committed.
fn steady_leader(c: CoreConfig, n: u64) -> Raft {
    let me = c.id;
    let mut r = leader(c, n);
    for from in (1..=n).filter(|&id| id != me) {
        r.step(from, append_ok(1, 1));
    }
    r.take_ready();
    assert_eq!(r.commit_index(), LogIndex(1));
    r
}

fn msg(term: u64, kind: MessageKind) -> Message {
    Message { term: Term(term), kind }
}

fn vote_req(term: u64, last_index: u64, last_term: u64, pre_vote: bool, force: bool) -> Message {
    let rv = RequestVote { last_log_index: LogIndex(last_index), last_log_term: Term(last_term), pre_vote, force };
    msg(term, MessageKind::RequestVote(rv))
}

fn vote_resp(term: u64, granted: bool) -> Message {
    msg(term, MessageKind::RequestVoteResponse { granted, pre_vote: false })
}

fn append(term: u64, prev: (u64, u64), entries: Vec<Entry>, commit: u64) -> Message {
    let ae = AppendEntries {
        prev_log_index: LogIndex(prev.0),
        prev_log_term: Term(prev.1),
        entries,
        leader_commit: LogIndex(commit),
    };
    msg(term, MessageKind::AppendEntries(ae))
}

fn append_ok(term: u64, index: u64) -> Message {
    let r = AppendEntriesResponse {
        success: true,
        index: LogIndex(index),
        conflict_term: None,
        conflict_index: LogIndex(0),
    };
    msg(term, MessageKind::AppendEntriesResponse(r))
}

fn heartbeat(term: u64, commit: u64) -> Message {
    msg(term, MessageKind::Heartbeat { commit: LogIndex(commit), read_seq: 0 })
}

fn heartbeat_ack(term: u64, read_seq: u64) -> Message {
    msg(term, MessageKind::HeartbeatResponse { read_seq })
}

fn sent(r: &mut Raft) -> Vec<Envelope> {
    r.take_ready().messages
}

/// The AppendEntries among `msgs` addressed to `to`.
fn appends_to(msgs: &[Envelope], to: NodeId) -> Vec<&AppendEntries> {
    msgs.iter()
        .filter(|e| e.to == to)
        .filter_map(|e| match &e.message.kind {
            MessageKind::AppendEntries(ae) => Some(ae),
            _ => None,
        })
        .collect()
}

/// The answer to a (pre-)vote request among `msgs`: `Some(granted)`, or `None` if none was sent.
fn vote_answer(msgs: &[Envelope]) -> Option<bool> {
    let answers: Vec<bool> = msgs
        .iter()
        .filter_map(|e| match e.message.kind {
            MessageKind::RequestVoteResponse { granted, .. } => Some(granted),
            _ => None,
        })
        .collect();
    assert!(answers.len() <= 1, "one request, at most one answer: {msgs:?}");
    answers.first().copied()
}

/// The single AppendEntriesResponse among `msgs`.
fn append_answer(msgs: &[Envelope]) -> AppendEntriesResponse {
    match msgs {
        [Envelope { message: Message { kind: MessageKind::AppendEntriesResponse(r), .. }, .. }] => r.clone(),
        other => panic!("expected one AppendEntriesResponse, got {other:?}"),
    }
}

/// Ticks a follower until it starts a (pre-)election; returns how many ticks that took.
fn ticks_until_campaign(r: &mut Raft) -> u32 {
    for ticks in 1..=2 * r.cfg.election_ticks {
        r.tick();
        if r.role() != Role::Follower {
            return ticks;
        }
    }
    panic!("node {} did not campaign within two election timeouts", r.id());
}

// ----- an in-memory network -----

/// Decides the fate of a message `(from, to, message)` in flight: `false` drops it, and it
/// may rewrite the message.
type Filter = Box<dyn Fn(NodeId, NodeId, &mut Message) -> bool>;

/// A few cores wired through a FIFO network with cuttable links.
struct Cluster {
    nodes: BTreeMap<NodeId, Raft>,
    queue: VecDeque<(NodeId, Envelope)>,
    /// Directed links `(from, to)` that drop everything.
    cut: BTreeSet<(NodeId, NodeId)>,
    filter: Option<Filter>,
    /// Every message that reached its addressee: `(from, to, message)`.
    delivered: Vec<(NodeId, NodeId, Message)>,
    reads: BTreeMap<NodeId, Vec<ReadState>>,
    dropped_reads: BTreeMap<NodeId, Vec<u64>>,
}

impl Cluster {
    /// `n` fresh voters 1..=n.
    fn new(n: u64) -> Cluster {
        Cluster::from_nodes((1..=n).map(|id| Raft::new(cfg(id), voters(n))))
    }

    fn from_nodes(nodes: impl IntoIterator<Item = Raft>) -> Cluster {
        Cluster {
            nodes: nodes.into_iter().map(|r| (r.id(), r)).collect(),
            queue: VecDeque::new(),
            cut: BTreeSet::new(),
            filter: None,
            delivered: Vec::new(),
            reads: BTreeMap::new(),
            dropped_reads: BTreeMap::new(),
        }
    }

    fn node(&self, id: NodeId) -> &Raft {
        &self.nodes[&id]
    }

    fn node_mut(&mut self, id: NodeId) -> &mut Raft {
        self.nodes.get_mut(&id).expect("no such node")
    }

    /// Takes every core's `Ready`: messages join the network, reads are recorded.
    fn collect(&mut self) {
        for (&id, r) in &mut self.nodes {
            let ready = r.take_ready();
            self.queue.extend(ready.messages.into_iter().map(|e| (id, e)));
            self.reads.entry(id).or_default().extend(ready.reads);
            self.dropped_reads.entry(id).or_default().extend(ready.dropped_reads);
        }
    }

    /// Delivers messages, and the messages they cause, until the network is quiet.
    fn deliver_all(&mut self) {
        for _ in 0..DELIVERIES_MAX {
            self.collect();
            let Some((from, envelope)) = self.queue.pop_front() else { return };
            self.deliver(from, envelope);
        }
        panic!("network still busy after {DELIVERIES_MAX} deliveries");
    }

    fn deliver(&mut self, from: NodeId, envelope: Envelope) {
        let Envelope { to, mut message } = envelope;
        if self.cut.contains(&(from, to)) {
            return;
        }
        if self.filter.as_ref().is_some_and(|keep| !keep(from, to, &mut message)) {
            return;
        }
        let Some(r) = self.nodes.get_mut(&to) else { return };
        r.step(from, message.clone());
        r.check_invariants();
        self.delivered.push((from, to, message));
    }

    /// Cuts every link to and from `id`.
    fn isolate(&mut self, id: NodeId) {
        for &other in self.nodes.keys().filter(|&&other| other != id) {
            self.cut.insert((id, other));
            self.cut.insert((other, id));
        }
    }

    fn heal(&mut self) {
        self.cut.clear();
    }

    /// Ticks node `id` alone, delivering after each tick.
    fn tick(&mut self, id: NodeId, ticks: u32) {
        for _ in 0..ticks {
            self.node_mut(id).tick();
            self.deliver_all();
        }
    }

    /// Ticks every node, delivering after each tick.
    fn tick_all(&mut self, ticks: u32) {
        for _ in 0..ticks {
            for r in self.nodes.values_mut() {
                r.tick();
            }
            self.deliver_all();
        }
    }

    /// Lets node `id` time out first and win the election.
    fn elect(&mut self, id: NodeId) {
        ticks_until_campaign(self.node_mut(id));
        self.deliver_all();
        assert_eq!(self.node(id).role(), Role::Leader, "node {id} should have won");
    }

    fn leaders(&self) -> Vec<NodeId> {
        self.nodes.values().filter(|r| r.role() == Role::Leader).map(Raft::id).collect()
    }

    /// How many AppendEntries reached `to`.
    fn appends_delivered_to(&self, to: NodeId) -> usize {
        self.delivered.iter().filter(|(_, t, m)| *t == to && matches!(m.kind, MessageKind::AppendEntries(_))).count()
    }

    fn propose(&mut self, id: NodeId, command: &[u8]) -> LogIndex {
        self.node_mut(id).propose(command.to_vec()).expect("the leader accepts proposals")
    }
}

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
        let ready = r.take_ready();
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
        let ready = r.take_ready();
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
    let ready = r.take_ready();
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

// ----- ReadIndex (dissertation §6.4) -----

/// Dissertation §6.4: the leader records its commit index, then confirms it still leads by
/// a heartbeat round acknowledged by a majority; only then is the read served.
#[test]
fn read_index_waits_for_a_majority_to_confirm_leadership() {
    let mut r = steady_leader(cfg(1), 5);
    r.read_index(7).unwrap();
    let ready = r.take_ready();
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
    assert!(r.take_ready().reads.is_empty(), "2 of 5");
    r.step(4, heartbeat_ack(1, 1));
    assert_eq!(r.take_ready().reads, [ReadState { ctx: 7, index: LogIndex(1) }]);
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
    assert!(fresh.take_ready().reads.is_empty());
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
