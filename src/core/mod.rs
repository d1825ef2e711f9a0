//! **Advanced layer.** The Raft protocol as a sans-IO state machine (most users need only
//! the crate root: [`crate::Node`], [`crate::Client`], [`crate::StateMachine`]).
//!
//! [`Raft`] owns one server's protocol state and nothing else: no threads, sockets,
//! clocks or files. The driver feeds it inputs — [`Raft::tick`], [`Raft::step`],
//! [`Raft::propose`], [`Raft::read_index`], membership and transfer requests — and after
//! any batch of inputs calls [`Raft::take_ready`] to collect the work to do, in the order
//! documented on [`Ready`]. The mio runtime and the deterministic simulator are two such
//! drivers.

mod config;
mod election;
mod entry_batch;
mod guard;
mod lease;
mod log;
mod membership;
mod message;
mod progress;
pub mod quorum;
mod reads;
mod reconfig;
mod replication;
mod rng;
mod shared_bytes;
mod snapshot;
mod types;

#[cfg(test)]
pub(crate) mod paper_tests;

pub use config::{CoreConfig, LeaseReads};
pub use guard::{Refused, TERM_JUMP_MAX, TERM_MAX};
pub use lease::ReadCounts;
pub use log::Log;
pub use membership::{Membership, MembershipChange, MembershipError};
pub use message::{
    AppendEntries, AppendEntriesResponse, Envelope, INDEX_MAX, InstallSnapshot, InstallSnapshotResponse, Message,
    MessageKind, RequestVote, SnapshotMeta,
};
pub use progress::{Progress, ReplicationState, SnapshotSend};
pub use rng::SplitMix64;
pub use shared_bytes::SharedBytes;
pub use snapshot::{InstallSnapshotOrder, SnapshotChunk, SnapshotInfo, SnapshotWork};
pub(crate) use types::as_bytes;
pub use types::{Entry, HardState, LogIndex, NodeId, Payload, Role, Term};

use std::collections::{BTreeMap, VecDeque};
use std::fmt;

/// Why the core refused a request; nothing was appended to the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProposeError {
    /// This server is not the leader; the leader it knows of, if any.
    NotLeader(Option<NodeId>),
    /// A leadership transfer is under way: the leader accepts no new entries (§3.10).
    TransferInProgress,
    /// A membership change is not yet committed; only one may be in flight (§4.1).
    ChangeInProgress,
    /// The leader has not yet committed an entry of its own term, so it may not change
    /// membership (the single-server-change bug, raft-dev 2015) .
    NotCommittedInTerm,
    /// The change is not valid against the current configuration.
    InvalidChange(MembershipError),
    /// The target (or this server) is not a voter.
    NotAVoter,
    /// With lease reads on, this server heard from a leader (or started) less than an
    /// election timeout ago and promised that leader's lease its vote, its own included:
    /// it may not campaign except when the leader hands over (§3.10, see `lease.rs`).
    LeaseHeld,
}

impl fmt::Display for ProposeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProposeError::NotLeader(l) => write!(f, "not the leader (leader: {l:?})"),
            ProposeError::TransferInProgress => write!(f, "leadership transfer in progress"),
            ProposeError::ChangeInProgress => write!(f, "another membership change is in progress"),
            ProposeError::NotCommittedInTerm => write!(f, "leader has not committed an entry in its term yet"),
            ProposeError::InvalidChange(why) => write!(f, "invalid membership change: {why}"),
            ProposeError::NotAVoter => write!(f, "not a voter"),
            ProposeError::LeaseHeld => write!(f, "a leader's read lease holds this node's vote"),
        }
    }
}

/// A linearizable read that may now be served once `index` is applied (dissertation §6.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadState {
    /// The caller's tag for this read.
    pub ctx: u64,
    /// Serve the read once the state machine has applied at least this index.
    pub index: LogIndex,
}

/// The work the core hands back after a batch of inputs.
///
/// **Ordering rule** (as etcd's `Ready` and raft-rs's `persisted_messages`): `messages` may
/// leave at once, while the driver writes `hard_state` and the log changes from
/// `log_changed_from`; `persisted_messages` may leave only once those writes (and every
/// earlier `Ready`'s) are durable. A vote or an acknowledgement sent before it is on disk
/// could be forgotten in a crash, breaking election safety or losing committed entries.
/// Only a leader's own messages go at once (dissertation §10.2.1: the leader writes its log
/// in parallel with replicating it), and it counts its own log toward a majority only as
/// far as [`Raft::on_persisted`] says is durable. After the writes, the driver reports them
/// with [`Raft::on_persisted`] and [`Raft::on_hard_state_persisted`]. Committed entries (up
/// to [`Raft::commit_index`]) may be applied at any time.
#[derive(Debug, Default)]
pub struct Ready {
    /// Messages that may leave now (a leader's AppendEntries, heartbeats, TimeoutNow).
    pub messages: Vec<Envelope>,
    /// Messages that may leave only after this `Ready`'s writes are durable (votes,
    /// AppendEntries acknowledgements, everything a non-leader says).
    pub persisted_messages: Vec<Envelope>,
    /// The term/vote to persist, if they changed.
    pub hard_state: Option<HardState>,
    /// The log changed at and after this index: storage drops its entries from here on and
    /// writes [`Raft::log`]'s entries from here to the end.
    pub log_changed_from: Option<LogIndex>,
    /// Reads confirmed by a majority.
    pub reads: Vec<ReadState>,
    /// Reads that can no longer be confirmed because leadership was lost.
    pub dropped_reads: Vec<u64>,
    /// Role, leader or membership changed since the last `Ready`.
    pub soft_state_changed: bool,
    /// Snapshot chunks a follower took and snapshots it completed, to carry out in order
    /// before this `Ready`'s writes (the last chunk of one snapshot and the first of a
    /// newer one may arrive in the same batch of inputs).
    pub snapshot_work: Vec<SnapshotWork>,
}

impl Ready {
    /// Whether there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
            && self.persisted_messages.is_empty()
            && self.hard_state.is_none()
            && self.log_changed_from.is_none()
            && self.reads.is_empty()
            && self.dropped_reads.is_empty()
            && !self.soft_state_changed
            && self.snapshot_work.is_empty()
    }
}

/// How many elections a server started and won (for metrics).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Elections {
    /// Campaigns started (terms this server stood in; pre-votes not counted).
    pub started: u64,
    /// Campaigns won.
    pub won: u64,
}

/// A read waiting for its confirmation round.
#[derive(Clone, Copy, Debug)]
struct PendingRead {
    ctx: u64,
    index: LogIndex,
    /// The heartbeat round whose majority acknowledgement confirms it.
    seq: u64,
}

/// A leadership transfer under way (§3.10).
#[derive(Clone, Copy, Debug)]
struct Transfer {
    to: NodeId,
    elapsed_ticks: u32,
}

/// One server's Raft state machine (Figure 2).
pub struct Raft {
    cfg: CoreConfig,
    rng: SplitMix64,

    // Persistent state (Figure 2), plus the configuration as of the snapshot point.
    hard: HardState,
    log: Log,
    base_membership: Membership,
    /// How far the driver says this server's log is durable.
    /// Invariant: `persisted_index <= log.last_index()`.
    persisted_index: LogIndex,
    /// The latest hard state the driver says is durable (terms only grow and a vote is cast
    /// once per term, so a later report never names an older state).
    durable_hard: HardState,

    // Volatile state.
    role: Role,
    leader_id: Option<NodeId>,
    /// Invariant: never decreases, and never exceeds `log.last_index()`.
    commit_index: LogIndex,
    /// The latest configuration in the log (dissertation §4.1: used as soon as appended).
    membership: Membership,
    /// Index of the entry that holds `membership` (the snapshot point for the base one).
    membership_index: LogIndex,
    /// The configuration before `membership` (see [`Raft::previous_membership`]), kept so
    /// the door need not scan the log for it.
    membership_before: Membership,
    election_elapsed: u32,
    /// Ticks since this server last heard from a leader, or since it started: with lease
    /// reads, it votes for no one before this reaches the election timeout (`lease.rs`).
    /// Invariant: `election_elapsed <= since_leader_contact` (both reset together on a
    /// leader's word and at start; only the election timer resets otherwise).
    since_leader_contact: u32,
    /// Ticks since this server started: the clock a leader's lease is measured in.
    ticks: u64,
    heartbeat_elapsed: u32,
    randomized_election_ticks: u32,
    /// Votes received while (pre-)campaigning: voter -> granted.
    votes: BTreeMap<NodeId, bool>,

    // Leader state.
    progress: BTreeMap<NodeId, Progress>,
    /// Index of this leader's no-op; committing it commits everything before (§5.4.2).
    term_start_index: LogIndex,
    transfer: Option<Transfer>,
    /// A learner to promote to voter once it has caught up (dissertation §4.2.1).
    pending_promotion: Option<NodeId>,
    read_seq: u64,
    read_round_wanted: bool,
    pending_reads: VecDeque<PendingRead>,
    /// The read lease (dissertation §6.4.1), when lease reads are on.
    lease: lease::LeaderLease,
    read_counts: ReadCounts,

    ready: Ready,
    hard_dirty: bool,
    /// Messages refused because they contradicted committed state (see `anomalies`).
    anomalies: u64,
    /// Messages dropped at the door (see `guard.rs`).
    refused: Refused,
    /// Campaigns this server started (real elections, not pre-votes) and won.
    elections: Elections,
    /// The latest snapshot this server holds (what a leader sends to followers behind).
    snapshot: Option<SnapshotInfo>,
    /// A snapshot being received from the leader.
    incoming: Option<snapshot::Incoming>,
    /// Servers outside our configuration that a voter we know vouched for, and from which
    /// term (see `guard.rs`).
    vouched: Vec<(NodeId, Term)>,
    /// This server has been in a configuration of its log (or its snapshot's): until then
    /// it is a `join()` server being added, which takes any leader's word (see `guard.rs`).
    was_member: bool,
}

impl Raft {
    /// A new server that has never run, starting with configuration `initial`
    /// (empty for a server that waits to be added).
    pub fn new(cfg: CoreConfig, initial: Membership) -> Raft {
        Raft::recover(cfg, HardState::default(), Log::default(), initial, None)
    }

    /// A server restarting from its persistent state: `hard`, `log`, and either its latest
    /// snapshot (whose index must be the log's snapshot point) or, without one, the
    /// configuration it started with. Volatile state starts afresh (Figure 2); everything
    /// through the snapshot counts as committed.
    pub fn recover(
        cfg: CoreConfig,
        hard: HardState,
        log: Log,
        initial: Membership,
        snapshot: Option<SnapshotInfo>,
    ) -> Raft {
        cfg.validate().expect("core config was validated by the caller");
        let base_membership = match &snapshot {
            Some(s) => {
                assert_eq!(s.meta.index, log.snapshot_index(), "the log must start at the snapshot");
                assert_eq!(Some(s.meta.term), log.term_at(s.meta.index), "the snapshot's term must match the log's");
                s.meta.membership.clone()
            }
            None => initial,
        };
        let mut raft = Raft {
            rng: SplitMix64::new(cfg.seed),
            cfg,
            hard,
            durable_hard: hard,
            commit_index: log.snapshot_index(),
            persisted_index: log.last_index(),
            log,
            membership: base_membership.clone(),
            membership_index: LogIndex(0),
            membership_before: base_membership.clone(),
            base_membership,
            role: Role::Follower,
            leader_id: None,
            election_elapsed: 0,
            since_leader_contact: 0,
            ticks: 0,
            heartbeat_elapsed: 0,
            randomized_election_ticks: 0,
            votes: BTreeMap::new(),
            progress: BTreeMap::new(),
            term_start_index: LogIndex(0),
            transfer: None,
            pending_promotion: None,
            read_seq: 0,
            read_round_wanted: false,
            pending_reads: VecDeque::new(),
            lease: lease::LeaderLease::default(),
            read_counts: ReadCounts::default(),
            ready: Ready::default(),
            hard_dirty: false,
            anomalies: 0,
            refused: Refused::default(),
            elections: Elections::default(),
            vouched: Vec::new(),
            was_member: false,
            snapshot,
            incoming: None,
        };
        raft.membership_index = raft.log.snapshot_index();
        let me = raft.cfg.id;
        raft.was_member = raft.base_membership.contains(me)
            || raft.log.entries().iter().any(|e| matches!(&e.payload, Payload::Config(m) if m.contains(me)));
        raft.reload_membership();
        raft.reset_election_timer();
        raft
    }

    // ----- accessors -----

    /// This server's id.
    pub fn id(&self) -> NodeId {
        self.cfg.id
    }
    /// The current role.
    pub fn role(&self) -> Role {
        self.role
    }
    /// How many elections this server started and won since it was created.
    pub fn elections(&self) -> Elections {
        self.elections
    }

    /// The leader this server knows of in its current term.
    pub fn leader_id(&self) -> Option<NodeId> {
        self.leader_id
    }
    /// The latest term this server has seen.
    pub fn current_term(&self) -> Term {
        self.hard.current_term
    }
    /// Term and vote, as last persisted or about to be.
    pub fn hard_state(&self) -> HardState {
        self.hard
    }
    /// Highest index known to be committed (Figure 2).
    pub fn commit_index(&self) -> LogIndex {
        self.commit_index
    }
    /// How far this server's log is known to be durable (see [`Raft::on_persisted`]).
    pub fn persisted_index(&self) -> LogIndex {
        self.persisted_index
    }
    /// The log.
    pub fn log(&self) -> &Log {
        &self.log
    }
    /// The latest configuration in the log (it may not be committed yet).
    pub fn membership(&self) -> &Membership {
        &self.membership
    }
    /// Index of the entry holding [`Raft::membership`]; committed once
    /// `membership_index <= commit_index`.
    pub fn membership_index(&self) -> LogIndex {
        self.membership_index
    }
    /// The configuration as of the log's snapshot point.
    pub fn base_membership(&self) -> &Membership {
        &self.base_membership
    }
    /// The leader's view of `peer`'s log, if this server leads and `peer` is a member.
    pub fn progress(&self, peer: NodeId) -> Option<&Progress> {
        self.progress.get(&peer)
    }
    /// How many messages this server refused because they contradicted its committed log.
    /// A leader of this cluster never sends one (§5.4); a count above zero means a node of
    /// another cluster shares this cluster's id, or a bug. The simulator requires zero.
    pub fn anomalies(&self) -> u64 {
        self.anomalies
    }
    /// The leadership transfer under way, if any.
    pub fn transfer_target(&self) -> Option<NodeId> {
        self.transfer.map(|t| t.to)
    }
    /// Whether the leader has committed an entry of its own term (so the commit index is
    /// current and membership may change).
    pub fn committed_in_term(&self) -> bool {
        self.role == Role::Leader && self.commit_index >= self.term_start_index
    }
    /// Whether this server may campaign: it is a voter of its latest configuration, or
    /// that configuration removes it but is not known to be committed and it voted in the
    /// one before. The second case matters when a leader removing itself loses leadership
    /// before the change commits: its log may be the only up-to-date one, and without it
    /// no candidate could win under the previous configuration.
    pub fn is_promotable(&self) -> bool {
        let me = self.cfg.id;
        if self.membership.is_voter(me) {
            return true;
        }
        self.membership_index > self.commit_index && self.previous_membership().is_voter(me)
    }

    /// The configuration in force before the latest configuration entry.
    fn previous_membership(&self) -> Membership {
        self.log
            .entries()
            .iter()
            .rev()
            .filter(|e| e.index < self.membership_index)
            .find_map(|e| match &e.payload {
                Payload::Config(m) => Some(m.clone()),
                _ => None,
            })
            .unwrap_or_else(|| self.base_membership.clone())
    }

    // ----- inputs -----

    /// Advances logical time by one tick: election timeouts, heartbeats, check-quorum.
    pub fn tick(&mut self) {
        self.ticks += 1;
        self.election_elapsed += 1;
        self.since_leader_contact = self.since_leader_contact.saturating_add(1);
        if self.role == Role::Leader {
            self.tick_leader();
        } else if self.election_elapsed >= self.randomized_election_ticks {
            if self.is_promotable() {
                self.campaign(election::Campaign::PreVote);
            } else {
                // Silent for a whole election timeout: the leader is gone as far as we
                // know. Forgetting it also ends our lease, so we answer (pre-)votes again;
                // a learner that kept a stale leader forever could block every election.
                if self.leader_id.take().is_some() {
                    self.ready.soft_state_changed = true;
                }
                self.ask_for_leader();
                self.reset_election_timer();
            }
        }
    }

    /// Handles one message from server `from`.
    pub fn step(&mut self, from: NodeId, msg: Message) {
        if from == self.cfg.id || from == 0 {
            ::log::warn!("node {}: dropping message claiming to come from {from}", self.cfg.id);
            return;
        }
        if let Err(why) = self.screen(from, &msg) {
            return self.on_refused(from, msg.term, why);
        }
        if !self.on_term(from, &msg) {
            return;
        }
        match msg.kind {
            MessageKind::RequestVote(rv) => self.on_request_vote(from, msg.term, rv),
            MessageKind::RequestVoteResponse { granted, pre_vote } => {
                self.on_request_vote_response(from, msg.term, granted, pre_vote)
            }
            MessageKind::AppendEntries(ae) => self.on_append_entries(from, ae),
            MessageKind::AppendEntriesResponse(r) => self.on_append_entries_response(from, r),
            MessageKind::Heartbeat { commit, read_seq } => self.on_heartbeat(from, commit, read_seq),
            MessageKind::HeartbeatResponse { read_seq } => self.on_heartbeat_response(from, read_seq),
            MessageKind::TimeoutNow => self.on_timeout_now(from),
            MessageKind::LeaderHint { leader } => self.on_leader_hint(from, msg.term, leader),
            MessageKind::LeaderQuery => self.send_leader_hint(from),
            MessageKind::InstallSnapshot(is) => self.on_install_snapshot(from, is),
            MessageKind::InstallSnapshotResponse(r) => self.on_install_snapshot_response(from, r),
        }
    }

    /// Appends `command` to the leader's log; it is sent at the next [`Raft::take_ready`].
    /// Returns the entry's index: the command is applied when that index commits with this
    /// term still at it (the driver checks the entry's term before answering).
    ///
    /// A `Vec<u8>` is copied once into a [`SharedBytes`]; every message that carries the
    /// entry afterwards shares that copy.
    pub fn propose(&mut self, command: impl Into<SharedBytes>) -> Result<LogIndex, ProposeError> {
        self.check_can_propose()?;
        Ok(self.append_entry(Payload::Command(command.into())))
    }

    /// The driver's report that this server's log through `index`, whose entry has `term`,
    /// is durable. A report for an entry since overwritten (its term differs) is ignored;
    /// the leader counts its own log toward a majority only this far (§10.2.1).
    pub fn on_persisted(&mut self, index: LogIndex, term: Term) {
        if index <= self.persisted_index || self.log.term_at(index) != Some(term) {
            return;
        }
        self.persisted_index = index;
        if self.role == Role::Leader {
            self.maybe_commit();
        }
    }

    /// The driver's report that `hard` (as handed out in a [`Ready`]) is durable. A
    /// candidate counts its own vote only from then on: otherwise a crash could make it
    /// forget that vote and cast another in the same term (§5.2).
    pub fn on_hard_state_persisted(&mut self, hard: HardState) {
        let rank = |h: &HardState| (h.current_term, h.voted_for.is_some());
        if rank(&hard) <= rank(&self.durable_hard) {
            return;
        }
        self.durable_hard = hard;
        let me = self.cfg.id;
        if self.role == Role::Candidate && hard == self.hard && hard.voted_for == Some(me) {
            self.votes.insert(me, true);
            self.poll_votes(false);
        }
    }

    /// Collects the work accumulated since the last call, after sending the batched
    /// AppendEntries and read-confirmation heartbeats this batch of inputs called for.
    pub fn take_ready(&mut self) -> Ready {
        if self.role == Role::Leader {
            self.flush_leader();
        }
        if self.hard_dirty {
            self.hard_dirty = false;
            self.ready.hard_state = Some(self.hard);
        }
        std::mem::take(&mut self.ready)
    }

    // ----- shared helpers -----

    fn check_can_propose(&self) -> Result<(), ProposeError> {
        if self.role != Role::Leader {
            return Err(ProposeError::NotLeader(self.leader_id));
        }
        if self.transfer.is_some() {
            return Err(ProposeError::TransferInProgress);
        }
        Ok(())
    }

    /// Appends an entry of the current term to the leader's own log.
    fn append_entry(&mut self, payload: Payload) -> LogIndex {
        debug_assert_eq!(self.role, Role::Leader);
        let index = self.log.last_index().next();
        let is_config = matches!(payload, Payload::Config(_));
        self.log.push(Entry { term: self.hard.current_term, index, payload });
        self.mark_log_changed(index);
        if is_config {
            self.reload_membership();
        }
        // No commit check here: the leader counts its own entry only once storage reports
        // it durable (`on_persisted` checks then, a one-voter cluster included), so an
        // append alone never moves the commit index.
        index
    }

    fn mark_log_changed(&mut self, from: LogIndex) {
        let changed = self.ready.log_changed_from.get_or_insert(from);
        *changed = (*changed).min(from);
    }

    fn send(&mut self, to: NodeId, kind: MessageKind) {
        self.send_with_term(to, self.hard.current_term, kind);
    }

    fn send_with_term(&mut self, to: NodeId, term: Term, kind: MessageKind) {
        debug_assert_ne!(to, self.cfg.id);
        let envelope = Envelope { to, message: Message { term, kind } };
        // What a non-leader says rests on its vote or its log: it leaves once durable.
        if self.role == Role::Leader {
            self.ready.messages.push(envelope);
        } else {
            self.ready.persisted_messages.push(envelope);
        }
    }

    fn reset_election_timer(&mut self) {
        self.election_elapsed = 0;
        let min = self.cfg.election_ticks;
        self.randomized_election_ticks = self.rng.range(min, 2 * min);
    }

    /// Whether a leader was heard from within the minimum election timeout: if so, this
    /// server ignores vote requests (dissertation §4.2.3), so a removed or partitioned
    /// server cannot depose a healthy leader. (With lease reads on, the promise in
    /// `lease.rs` is the stronger rule.)
    fn in_lease(&self) -> bool {
        self.leader_id.is_some() && self.election_elapsed < self.cfg.election_ticks
    }

    /// Makes `membership` the latest configuration in the log, or the base one (§4.1:
    /// a server uses the latest configuration in its log, committed or not).
    fn reload_membership(&mut self) {
        let latest = self.log.entries().iter().rev().find_map(|e| match &e.payload {
            Payload::Config(m) => Some((e.index, m.clone())),
            _ => None,
        });
        let (index, membership) = latest.unwrap_or((self.log.snapshot_index(), self.base_membership.clone()));
        self.was_member |= membership.contains(self.cfg.id);
        if (index, &membership) != (self.membership_index, &self.membership) {
            self.ready.soft_state_changed = true;
        }
        self.membership_index = index;
        self.membership = membership;
        self.membership_before = self.previous_membership();
        if self.role == Role::Leader {
            self.sync_progress_with_membership();
            // A voter that left may have been the ack a pending read was waiting for.
            self.release_reads();
            // The lease rests on a majority of the configuration in use (see `lease.rs`).
            self.refresh_lease();
        }
    }

    fn set_hard_state(&mut self, term: Term, voted_for: Option<NodeId>) {
        debug_assert!(term >= self.hard.current_term, "terms never go back");
        if self.hard.current_term != term || self.hard.voted_for != voted_for {
            self.hard = HardState { current_term: term, voted_for };
            self.hard_dirty = true;
        }
    }

    /// Checks this server's invariants (the simulator calls it after every step).
    pub fn check_invariants(&self) {
        assert!(self.commit_index <= self.log.last_index(), "commit beyond the log");
        assert!(self.membership_index <= self.log.last_index(), "config beyond the log");
        assert!(self.persisted_index <= self.log.last_index(), "persisted beyond the log");
        assert!(self.log.snapshot_index() <= self.commit_index, "compacted beyond commit");
        if let Some(s) = &self.snapshot {
            assert!(s.meta.index >= self.log.snapshot_index(), "the log was compacted past its snapshot");
            assert!(s.meta.index <= self.commit_index, "snapshot of uncommitted state");
        } else {
            assert_eq!(self.log.snapshot_index(), LogIndex(0), "compacted without a snapshot");
        }
        assert!(self.election_elapsed <= self.since_leader_contact, "the election timer outran the leader contact");
        if self.role == Role::Leader {
            assert_eq!(self.leader_id, Some(self.cfg.id), "leader must know itself");
            assert_eq!(self.hard.voted_for, Some(self.cfg.id), "leader voted for itself");
            for (id, p) in &self.progress {
                p.check_invariants();
                assert!(p.match_index <= self.log.last_index(), "peer {id} matched past our log");
                assert!(self.membership.contains(*id), "progress for non-member {id}");
            }
        } else {
            assert!(self.progress.is_empty(), "only leaders track progress");
            assert!(self.pending_reads.is_empty(), "only leaders hold reads");
        }
        if cfg!(debug_assertions) {
            self.log.check_invariants();
        }
    }
}

impl fmt::Debug for Raft {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Raft")
            .field("id", &self.cfg.id)
            .field("role", &self.role)
            .field("term", &self.hard.current_term)
            .field("leader", &self.leader_id)
            .field("commit", &self.commit_index)
            .field("last", &self.log.last_index())
            .finish()
    }
}
