//! The harness of the paper tests: single cores fed hand-made messages, and a small
//! in-memory network of cores.

use crate::core::*;
use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// Minimum election timeout of the test cores, in ticks.
pub(super) const ELECTION: u32 = 10;
/// Heartbeat interval of the test cores, in ticks.
pub(super) const HEARTBEAT: u32 = 2;
/// Most messages one [`Cluster::deliver_all`] delivers: a livelock fails instead of hanging.
pub(super) const DELIVERIES_MAX: usize = 10_000;

// ----- building blocks -----

pub(super) fn cfg(id: NodeId) -> CoreConfig {
    let mut c = CoreConfig::new(id);
    c.election_ticks = ELECTION;
    c.heartbeat_ticks = HEARTBEAT;
    c
}

/// A configuration whose voters are 1..=n.
pub(super) fn voters(n: u64) -> Membership {
    Membership::with_voters((1..=n).map(|id| (id, format!("n{id}"))))
}

/// Entries with the given terms, the first at index `first`.
pub(crate) fn entries_from(first: u64, terms: &[u64]) -> Vec<Entry> {
    terms
        .iter()
        .zip(first..)
        .map(|(&t, i)| Entry { term: Term(t), index: LogIndex(i), payload: Payload::Command(vec![i as u8].into()) })
        .collect()
}

pub(super) fn log_of(terms: &[u64]) -> Log {
    Log::new(LogIndex(0), Term(0), entries_from(1, terms))
}

/// The terms of `r`'s log, index 1 first.
pub(super) fn log_terms(r: &Raft) -> Vec<u64> {
    r.log().entries().iter().map(|e| e.term.0).collect()
}

/// A voter of an `n`-voter cluster restarting in `term` (without a vote) with a log of `terms`.
pub(super) fn restarted(c: CoreConfig, n: u64, term: u64, terms: &[u64]) -> Raft {
    let hard = HardState { current_term: Term(term), voted_for: None };
    Raft::recover(c, hard, log_of(terms), voters(n), None)
}

/// Server `c.id` (not 2) of an `n`-voter cluster, made leader of term 1 by votes from the
/// others; its first AppendEntries (carrying the no-op) are discarded unanswered.
pub(super) fn leader(c: CoreConfig, n: u64) -> Raft {
    let me = c.id;
    let lease_reads = c.lease_reads.is_some();
    let mut r = Raft::new(c, voters(n));
    if lease_reads {
        // With lease reads, a server that just started promises its vote to no one for an
        // election timeout (it cannot know whom it promised before): wait that out.
        for _ in 0..ELECTION {
            r.tick();
        }
    }
    r.trigger_election().unwrap();
    persist(&mut r); // its own vote counts once durable
    for from in (1..=n).filter(|&id| id != me) {
        if r.role() != Role::Leader {
            r.step(from, vote_resp(1, true));
        }
    }
    assert_eq!(r.role(), Role::Leader);
    persist(&mut r);
    r
}

/// [`leader`] whose followers all acknowledged the no-op: they replicate, and 1 is committed.
pub(super) fn steady_leader(c: CoreConfig, n: u64) -> Raft {
    let me = c.id;
    let mut r = leader(c, n);
    for from in (1..=n).filter(|&id| id != me) {
        r.step(from, append_ok(1, 1));
    }
    persist(&mut r);
    assert_eq!(r.commit_index(), LogIndex(1));
    r
}

pub(super) fn msg(term: u64, kind: MessageKind) -> Message {
    Message { term: Term(term), kind }
}

pub(super) fn vote_req(term: u64, last_index: u64, last_term: u64, pre_vote: bool, force: bool) -> Message {
    let rv = RequestVote {
        last_log_index: LogIndex(last_index),
        last_log_term: Term(last_term),
        pre_vote,
        force,
        transfer: false,
    };
    msg(term, MessageKind::RequestVote(rv))
}

/// The RequestVote of a candidate the leader's TimeoutNow started (§3.10).
pub(super) fn transfer_vote_req(term: u64, last_index: u64, last_term: u64) -> Message {
    let rv = RequestVote {
        last_log_index: LogIndex(last_index),
        last_log_term: Term(last_term),
        pre_vote: false,
        force: true,
        transfer: true,
    };
    msg(term, MessageKind::RequestVote(rv))
}

pub(super) fn vote_resp(term: u64, granted: bool) -> Message {
    msg(term, MessageKind::RequestVoteResponse { granted, pre_vote: false })
}

pub(crate) fn append(term: u64, prev: (u64, u64), entries: Vec<Entry>, commit: u64) -> Message {
    let ae = AppendEntries {
        prev_log_index: LogIndex(prev.0),
        prev_log_term: Term(prev.1),
        entries,
        leader_commit: LogIndex(commit),
    };
    msg(term, MessageKind::AppendEntries(ae))
}

pub(super) fn append_ok(term: u64, index: u64) -> Message {
    let r = AppendEntriesResponse {
        success: true,
        index: LogIndex(index),
        conflict_term: None,
        conflict_index: LogIndex(0),
    };
    msg(term, MessageKind::AppendEntriesResponse(r))
}

pub(super) fn heartbeat(term: u64, commit: u64) -> Message {
    msg(term, MessageKind::Heartbeat { commit: LogIndex(commit), read_seq: 0 })
}

pub(super) fn heartbeat_ack(term: u64, read_seq: u64) -> Message {
    msg(term, MessageKind::HeartbeatResponse { read_seq })
}

pub(super) fn sent(r: &mut Raft) -> Vec<Envelope> {
    persist(r).messages
}

/// Takes `r`'s `Ready` as a driver whose storage is durable at once would: reports the
/// writes persisted, takes what that caused too, and puts every message in `messages`.
pub(super) fn persist(r: &mut Raft) -> Ready {
    let mut all = Ready::default();
    loop {
        let ready = r.take_ready();
        if ready.is_empty() {
            return all;
        }
        r.on_hard_state_persisted(r.hard_state());
        r.on_persisted(r.log().last_index(), r.log().last_term());
        all.messages.extend(ready.messages);
        all.messages.extend(ready.persisted_messages);
        all.hard_state = ready.hard_state.or(all.hard_state);
        all.log_changed_from = match (all.log_changed_from, ready.log_changed_from) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        all.reads.extend(ready.reads);
        all.dropped_reads.extend(ready.dropped_reads);
        all.soft_state_changed |= ready.soft_state_changed;
        all.snapshot_work.extend(ready.snapshot_work);
    }
}

/// The AppendEntries among `msgs` addressed to `to`.
pub(super) fn appends_to(msgs: &[Envelope], to: NodeId) -> Vec<&AppendEntries> {
    msgs.iter()
        .filter(|e| e.to == to)
        .filter_map(|e| match &e.message.kind {
            MessageKind::AppendEntries(ae) => Some(ae),
            _ => None,
        })
        .collect()
}

/// The answer to a (pre-)vote request among `msgs`: `Some(granted)`, or `None` if none was sent.
pub(super) fn vote_answer(msgs: &[Envelope]) -> Option<bool> {
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
pub(super) fn append_answer(msgs: &[Envelope]) -> AppendEntriesResponse {
    match msgs {
        [Envelope { message: Message { kind: MessageKind::AppendEntriesResponse(r), .. }, .. }] => r.clone(),
        other => panic!("expected one AppendEntriesResponse, got {other:?}"),
    }
}

/// Ticks a follower until it starts a (pre-)election; returns how many ticks that took.
pub(super) fn ticks_until_campaign(r: &mut Raft) -> u32 {
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
pub(super) type Filter = Box<dyn Fn(NodeId, NodeId, &mut Message) -> bool>;

/// A few cores wired through a FIFO network with cuttable links.
pub(super) struct Cluster {
    pub(super) nodes: BTreeMap<NodeId, Raft>,
    pub(super) queue: VecDeque<(NodeId, Envelope)>,
    /// Directed links `(from, to)` that drop everything.
    pub(super) cut: BTreeSet<(NodeId, NodeId)>,
    pub(super) filter: Option<Filter>,
    /// Every message that reached its addressee: `(from, to, message)`.
    pub(super) delivered: Vec<(NodeId, NodeId, Message)>,
    pub(super) reads: BTreeMap<NodeId, Vec<ReadState>>,
    pub(super) dropped_reads: BTreeMap<NodeId, Vec<u64>>,
}

impl Cluster {
    /// `n` fresh voters 1..=n.
    pub(super) fn new(n: u64) -> Cluster {
        Cluster::from_nodes((1..=n).map(|id| Raft::new(cfg(id), voters(n))))
    }

    pub(super) fn from_nodes(nodes: impl IntoIterator<Item = Raft>) -> Cluster {
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

    pub(super) fn node(&self, id: NodeId) -> &Raft {
        &self.nodes[&id]
    }

    pub(super) fn node_mut(&mut self, id: NodeId) -> &mut Raft {
        self.nodes.get_mut(&id).expect("no such node")
    }

    /// Takes every core's `Ready`: messages join the network, reads are recorded.
    pub(super) fn collect(&mut self) {
        for (&id, r) in &mut self.nodes {
            let ready = persist(r);
            self.queue.extend(ready.messages.into_iter().map(|e| (id, e)));
            self.reads.entry(id).or_default().extend(ready.reads);
            self.dropped_reads.entry(id).or_default().extend(ready.dropped_reads);
        }
    }

    /// Delivers messages, and the messages they cause, until the network is quiet.
    pub(super) fn deliver_all(&mut self) {
        for _ in 0..DELIVERIES_MAX {
            self.collect();
            let Some((from, envelope)) = self.queue.pop_front() else { return };
            self.deliver(from, envelope);
        }
        panic!("network still busy after {DELIVERIES_MAX} deliveries");
    }

    pub(super) fn deliver(&mut self, from: NodeId, envelope: Envelope) {
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
    pub(super) fn isolate(&mut self, id: NodeId) {
        for &other in self.nodes.keys().filter(|&&other| other != id) {
            self.cut.insert((id, other));
            self.cut.insert((other, id));
        }
    }

    pub(super) fn heal(&mut self) {
        self.cut.clear();
    }

    /// Ticks node `id` alone, delivering after each tick.
    pub(super) fn tick(&mut self, id: NodeId, ticks: u32) {
        for _ in 0..ticks {
            self.node_mut(id).tick();
            self.deliver_all();
        }
    }

    /// Ticks every node, delivering after each tick.
    pub(super) fn tick_all(&mut self, ticks: u32) {
        for _ in 0..ticks {
            for r in self.nodes.values_mut() {
                r.tick();
            }
            self.deliver_all();
        }
    }

    /// Lets node `id` time out first and win the election.
    pub(super) fn elect(&mut self, id: NodeId) {
        ticks_until_campaign(self.node_mut(id));
        self.deliver_all();
        assert_eq!(self.node(id).role(), Role::Leader, "node {id} should have won");
    }

    pub(super) fn leaders(&self) -> Vec<NodeId> {
        self.nodes.values().filter(|r| r.role() == Role::Leader).map(Raft::id).collect()
    }

    /// How many AppendEntries reached `to`.
    pub(super) fn appends_delivered_to(&self, to: NodeId) -> usize {
        self.delivered.iter().filter(|(_, t, m)| *t == to && matches!(m.kind, MessageKind::AppendEntries(_))).count()
    }

    pub(super) fn propose(&mut self, id: NodeId, command: &[u8]) -> LogIndex {
        self.node_mut(id).propose(command.to_vec()).expect("the leader accepts proposals")
    }
}
