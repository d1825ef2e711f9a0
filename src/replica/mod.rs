//! **Advanced layer.** One server, sans-IO: the Raft core, its [`Storage`], the user's state machine, the
//! applied index, and every client request waiting for an answer.
//!
//! The replica decides what each client is told; its drivers (the mio runtime, the
//! deterministic simulator) only move bytes and time. A driver's turn:
//!
//! 1. feed inputs: [`Replica::tick`], [`Replica::step`], [`Replica::on_request`];
//! 2. call [`Replica::advance`]: it persists and releases the core's output, applies
//!    committed entries and answers what is settled;
//! 3. send [`Replica::drain_outbox`]; when [`Replica::take_members_changed`] says so,
//!    update where peers are dialed;
//! 4. when storage finishes a sync on its own (a writer thread), call
//!    [`Replica::advance`] again.
//!
//! It never blocks and never reads a clock: time is its tick count, and the one wall-clock
//! bound (how long a turn may spend applying) is the driver's to give.

mod apply;
mod pending;
mod persist;
mod reply;
mod request;
mod responses;
mod session;
mod snapshot;

pub use reply::{Channel, Respond};
pub use request::{ReadFn, Request};
pub use session::{
    SessionLimits, SessionTag, check_command, command_body, command_tag, encode_command, encode_register,
    encode_shared, tag_encoded, tag_shared,
};
pub use snapshot::Compaction;

use std::collections::VecDeque;
use std::io;
use std::time::Duration;

use crate::core::{CoreConfig, Envelope, LogIndex, Membership, Message, NodeId, ProposeError, Raft};
use crate::error::{Error, Peer};
use crate::state_machine::StateMachine;
use crate::status::{Member, Status};
use crate::storage::Storage;

use pending::{Change, Deadline, Pending, Proposed};
use persist::Batch;
use session::Sessions;

/// Settings of one replica.
#[derive(Clone, Debug)]
pub struct ReplicaConfig {
    /// The core's settings.
    pub core: CoreConfig,
    /// The configuration a server that has never run starts with (empty for `join()`).
    pub initial: Membership,
    /// The real length of one tick, to turn a request's timeout into ticks.
    pub tick: Duration,
    /// How long membership changes and transfers may wait before `Timeout`.
    pub request_timeout: Duration,
    /// Most entries applied per [`Replica::advance`], so a backlog cannot starve I/O.
    pub apply_entries_max: u64,
    /// Most time spent applying per [`Replica::advance`] (at least one entry is applied);
    /// `None` for no time bound (the simulator, which must not read clocks).
    pub apply_time_max: Option<Duration>,
    /// When to snapshot and compact the log (for machines with snapshots).
    pub compaction: Compaction,
    /// How many client sessions to remember, and for how long: proposed with every session
    /// registration, and in force on every server from then on.
    pub sessions: SessionLimits,
}

/// One server's Raft core, storage and state machine, and its clients' pending requests.
pub struct Replica<M: StateMachine, S: Storage, C: Channel> {
    core: Raft,
    storage: S,
    machine: M,
    /// Client sessions (§6.3): replicated state beside the machine's, as of `applied`.
    sessions: Sessions,
    /// Counters for [`crate::Status::metrics`] (the core keeps its election counts).
    metrics: crate::status::Metrics,
    /// The commit index and leader as of the last look, to count what changed.
    seen_commit: LogIndex,
    seen_leader: Option<NodeId>,
    /// Invariant: `applied <= core.commit_index()`.
    applied: LogIndex,
    pending: Pending<M, C>,
    /// Messages that may leave now.
    outbox: Vec<Envelope>,
    /// Batches handed to storage and not yet durable, oldest first, with the messages
    /// waiting for them.
    unsynced: VecDeque<Batch>,
    /// How many batches were handed to storage.
    appended: u64,
    /// Ticks since start: the clock of every deadline here.
    now: Deadline,
    cfg: ReplicaConfig,
    /// Why the replica stopped serving (a panicking or undecodable apply, a failed write).
    poisoned: Option<String>,
    /// Whether the poison is a storage failure (the node must not ack what it lost).
    storage_failed: bool,
    members_changed: bool,
    /// A snapshot is being saved by storage.
    snapshot_saving: bool,
    /// Bytes of entries applied since the last snapshot was taken.
    applied_bytes_since: u64,
    /// No snapshot is taken before this applied index (set after a failed one).
    snapshot_not_before: LogIndex,
    /// Where responses are encoded before the session table keeps an exact-size copy
    /// (reused, so recording one costs one allocation).
    encode_scratch: Vec<u8>,
}

impl<M: StateMachine, S: Storage, C: Channel> Replica<M, S, C> {
    /// A replica resuming from what `storage` holds (nothing, for a new server).
    pub fn new(cfg: ReplicaConfig, mut storage: S, machine: M) -> io::Result<Replica<M, S, C>> {
        let recovered = storage.recover()?;
        let snapshot = recovered.snapshot;
        let applied = snapshot.as_ref().map_or(LogIndex(0), |s| s.meta.index);
        let core = Raft::recover(cfg.core.clone(), recovered.hard_state, recovered.log, cfg.initial.clone(), snapshot);
        if !M::SNAPSHOTS {
            log::warn!(
                "node {}: the state machine has no snapshots, so the log is never compacted and grows for as long as the node runs (see StateMachine::snapshot)",
                cfg.core.id
            );
        }
        let mut replica = Replica {
            core,
            storage,
            machine,
            sessions: Sessions::default(),
            metrics: crate::status::Metrics::default(),
            seen_commit: applied,
            seen_leader: None,
            applied,
            pending: Pending::new(),
            outbox: Vec::new(),
            unsynced: VecDeque::new(),
            appended: 0,
            now: 0,
            cfg,
            poisoned: None,
            storage_failed: false,
            members_changed: true,
            snapshot_saving: false,
            applied_bytes_since: 0,
            snapshot_not_before: LogIndex(0),
            encode_scratch: Vec::new(),
        };
        if applied > LogIndex(0) {
            replica.restore_from_storage().map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("cannot restore the state machine from the snapshot at {applied}: {e}"),
                )
            })?;
        }
        Ok(replica)
    }

    // ----- inputs -----

    /// Advances time by one tick.
    pub fn tick(&mut self) {
        self.now += 1;
        self.core.tick();
    }

    /// The driver's report that it dropped ticks (it fell too far behind to catch up):
    /// ends the leader's read lease, which is measured in ticks (see
    /// [`Raft::on_clock_skipped`]).
    pub fn on_clock_skipped(&mut self) {
        self.core.on_clock_skipped();
    }

    /// Hands the core one message from peer `from`.
    pub fn step(&mut self, from: NodeId, msg: Message) {
        self.core.step(from, msg);
    }

    /// Takes one client request. Refusals are answered at once; the rest when settled.
    pub fn on_request(&mut self, request: Request<M, C>) {
        if let Some(why) = &self.poisoned {
            log::debug!("node {}: refusing a request: {why}", self.core.id());
            return; // Dropping the request answers it `Stopped`.
        }
        let deadline = self.deadline_after(self.cfg.request_timeout);
        match request {
            // One AppendEntries must be able to carry it, or replication would stall on it.
            Request::Write { command, reply, .. } if command.len() > self.cfg.core.max_append_bytes => {
                let max = self.cfg.core.max_append_bytes;
                reply.send(Err(Error::TooLarge { bytes: command.len(), max }))
            }
            Request::Write { command, timeout, reply } => {
                let tag = match session::decode(&command) {
                    Ok((session::Header::Plain, _)) => None,
                    Ok((session::Header::Tagged(tag), _)) => Some(tag),
                    // A registration goes through `RegisterSession`, which waits for an id.
                    Ok((session::Header::Register { .. }, _)) => {
                        return reply.send(Err(Error::Codec("a write cannot carry a session registration".into())));
                    }
                    Err(why) => return reply.send(Err(Error::Codec(why))),
                };
                let deadline = self.deadline_after(timeout);
                match self.core.propose(command) {
                    Ok(index) => {
                        self.metrics.proposals += 1;
                        let term = self.core.current_term();
                        let proposed = Proposed { tag, deadline, reply: reply.proposed() };
                        let old = self.pending.writes.insert(index, term, proposed);
                        debug_assert!(old.is_none(), "one proposal per index and term");
                    }
                    Err(e) => reply.send(Err(self.refusal(e))),
                }
            }
            Request::RegisterSession { secret, timeout, reply } => {
                let deadline = self.deadline_after(timeout);
                match self.core.propose(session::encode_register(secret, &self.cfg.sessions)) {
                    Ok(index) => {
                        self.metrics.proposals += 1;
                        let term = self.core.current_term();
                        let proposed = Proposed { tag: None, deadline, reply: reply.proposed() };
                        let old = self.pending.registrations.insert(index, term, proposed);
                        debug_assert!(old.is_none(), "one proposal per index and term");
                    }
                    Err(e) => reply.send(Err(self.refusal(e))),
                }
            }
            Request::Read { read } => {
                let ctx = self.pending.next_read_ctx;
                self.pending.next_read_ctx += 1;
                match self.core.read_index(ctx) {
                    Ok(()) => {
                        self.pending.unconfirmed_reads.insert(ctx, read);
                    }
                    Err(e) => read(Err(self.refusal(e))),
                }
            }
            Request::ReadLocal { read } => read(Ok(&self.machine)),
            Request::AwaitLeader { other_than, timeout, reply } => {
                let deadline = self.deadline_after(timeout);
                self.pending.leader_waiters.push((deadline, (other_than, reply)))
            }
            Request::Status { reply } => reply.send(Ok(self.status())),
            Request::AddServer { id, addr, reply } => match self.core.add_server(id, addr) {
                Ok(_) => self.pending.changes.push((Change::Add(id), deadline, reply.proposed())),
                Err(e) => reply.send(Err(self.refusal(e))),
            },
            Request::RemoveServer { id, reply } => match self.core.remove_server(id) {
                Ok(_) => self.pending.changes.push((Change::Remove(id), deadline, reply.proposed())),
                Err(e) => reply.send(Err(self.refusal(e))),
            },
            Request::TriggerElection { reply } => reply.send(self.core.trigger_election().map_err(|e| self.refusal(e))),
            Request::TransferLeadership { to, reply } => match self.core.transfer_leadership(to) {
                Ok(()) if to == self.core.id() => reply.send(Ok(())),
                Ok(()) => {
                    if let Some((_, _, old)) = self.pending.transfer.replace((to, deadline, reply)) {
                        old.send(Err(Error::TransferFailed));
                    }
                }
                Err(e) => reply.send(Err(self.refusal(e))),
            },
        }
    }

    /// Does the work the inputs called for: persists and releases the core's output,
    /// applies committed entries (within the apply budget), answers what is settled.
    /// Returns whether committed entries remain to apply (call again soon).
    pub fn advance(&mut self) -> bool {
        self.process_ready();
        let commit = self.core.commit_index();
        if commit > self.seen_commit {
            self.metrics.entries_committed += commit.0 - self.seen_commit.0;
            self.seen_commit = commit;
        }
        // After the core's output is stored: a snapshot installed by this turn's input must
        // be in storage before compaction may drop the log it covers.
        self.poll_snapshot();
        let more = self.apply_committed();
        self.maybe_snapshot();
        self.pending.settle(&self.core, self.now);
        more
    }

    /// Fails every pending request, as a node stopping does: proposed work gets
    /// `LeadershipLost` (it may still be applied), the rest `Stopped`.
    pub fn shutdown(&mut self) {
        self.pending.fail_all();
    }

    // ----- outputs -----

    /// Messages to send now (the buffer is kept for the next turn).
    pub fn drain_outbox(&mut self) -> std::vec::Drain<'_, Envelope> {
        self.outbox.drain(..)
    }

    /// Whether role, leader or membership changed since the last call.
    pub fn take_members_changed(&mut self) -> bool {
        std::mem::take(&mut self.members_changed)
    }

    /// Why the replica stopped serving, if it did: its driver should stop the node.
    pub fn poisoned(&self) -> Option<&str> {
        self.poisoned.as_deref()
    }

    /// Why the replica stopped, if storage failed to write or sync.
    pub fn storage_failure(&self) -> Option<&str> {
        self.poisoned.as_deref().filter(|_| self.storage_failed)
    }

    // ----- accessors -----

    /// The Raft core.
    pub fn core(&self) -> &Raft {
        &self.core
    }
    /// The user's state machine.
    pub fn machine(&self) -> &M {
        &self.machine
    }
    /// The storage.
    pub fn storage(&self) -> &S {
        &self.storage
    }
    /// The storage, for a driver (or simulator) that makes it sync.
    pub fn storage_mut(&mut self) -> &mut S {
        &mut self.storage
    }
    /// Index of the last entry applied to the state machine.
    pub fn applied(&self) -> LogIndex {
        self.applied
    }

    /// This replica's role, term, leader, indexes and members.
    pub fn status(&self) -> Status {
        let core = &self.core;
        let m = core.membership();
        let members = m
            .voters
            .iter()
            .map(|(id, a)| (id, a, true))
            .chain(m.learners.iter().map(|(id, a)| (id, a, false)))
            .map(|(&id, addr, voter)| Member {
                id,
                addr: addr.parse().ok(),
                voter,
                match_index: core.progress(id).map(|p| p.match_index.0),
                metadata: None, // the runtime knows it (peers announce it when they connect)
            })
            .collect();
        Status {
            id: core.id(),
            role: core.role(),
            term: core.current_term().0,
            leader: core.leader_id(),
            commit_index: core.commit_index().0,
            applied_index: self.applied.0,
            last_log_index: core.log().last_index().0,
            snapshot_index: core.snapshot().map_or(0, |s| s.meta.index.0),
            log_entries: core.log().entries().len() as u64,
            sessions: self.sessions.len() as u64,
            members,
            membership_committed: core.membership_index() <= core.commit_index(),
            refused: None,
            removed: None,
            metrics: self.metrics(),
        }
    }

    fn metrics(&self) -> crate::status::Metrics {
        let elections = self.core.elections();
        let reads = self.core.read_counts();
        crate::status::Metrics {
            elections_started: elections.started,
            elections_won: elections.won,
            reads_by_lease: reads.lease,
            reads_by_read_index: reads.read_index,
            ..self.metrics.clone()
        }
    }

    /// Checks the replica's invariants (the simulator calls it after every step).
    pub fn check_invariants(&self) {
        self.core.check_invariants();
        assert!(self.applied <= self.core.commit_index(), "applied beyond commit");
        assert!(self.storage.synced() <= self.appended, "storage synced more than it was given");
        let first_waiting =
            self.pending.writes.first_key().into_iter().chain(self.pending.registrations.first_key()).min();
        assert!(first_waiting.is_none_or(|(i, _)| i > self.applied), "a proposal waits for an index already applied");
    }

    // ----- helpers -----

    fn deadline_after(&self, timeout: Duration) -> Deadline {
        let tick = self.cfg.tick.as_micros().max(1);
        let ticks = timeout.as_micros().div_ceil(tick).min(u128::from(u32::MAX)) as u64;
        self.now + ticks.max(1)
    }

    /// Turns the core's refusal into the client's error (nothing was proposed).
    fn refusal(&self, e: ProposeError) -> Error {
        use crate::core::MembershipError;
        match e {
            ProposeError::NotLeader(leader) => Error::Redirect { leader: leader.map(|id| self.peer_info(id)) },
            ProposeError::TransferInProgress => Error::TransferInProgress,
            ProposeError::ChangeInProgress => Error::ChangeInProgress,
            ProposeError::NotCommittedInTerm => Error::NotCommittedInTerm,
            ProposeError::InvalidChange(MembershipError::AlreadyMember(id)) => Error::AlreadyMember(id),
            ProposeError::InvalidChange(MembershipError::NotAMember(id)) => Error::NotAMember(id),
            ProposeError::InvalidChange(why) => Error::InvalidMembership(why.to_string()),
            ProposeError::NotAVoter => Error::NotAVoter,
            ProposeError::LeaseHeld => Error::LeaseHeld,
        }
    }

    fn peer_info(&self, id: NodeId) -> Peer {
        let addr = self.core.membership().address(id).and_then(|a| a.parse().ok());
        Peer { id, addr }
    }

    /// Stops the replica because storage failed (see [`Replica::storage_failure`]).
    fn poison_storage(&mut self, why: String) {
        if self.poisoned.is_none() {
            self.storage_failed = true;
        }
        self.poison(why);
    }

    fn poison(&mut self, why: String) {
        log::error!("node {}: {why}; stopping", self.core.id());
        if self.poisoned.is_none() {
            self.poisoned = Some(why);
        }
    }
}

#[cfg(test)]
mod tests;
