//! Client requests the node thread has accepted and not yet answered.

use std::collections::{BTreeMap, HashMap};

use super::reply::{Channel, Respond};
use crate::core::{LogIndex, NodeId, Raft, Role, Term};
use crate::error::Error;
use crate::replica::request::ReadFn;
use crate::state_machine::StateMachine;

/// A deadline on the replica's clock, in ticks.
pub(crate) type Deadline = u64;

/// A membership change waiting for its configuration to commit.
pub(crate) enum Change {
    Add(NodeId),
    Remove(NodeId),
}

/// Everything waiting for the Raft core or the state machine.
pub(crate) struct Pending<M: StateMachine, C: Channel> {
    /// Proposed writes by log index, with the term they were proposed in.
    pub writes: BTreeMap<LogIndex, (Term, C::Reply<M::Response>)>,
    /// Reads waiting for their ReadIndex confirmation, by context.
    pub unconfirmed_reads: HashMap<u64, ReadFn<M>>,
    /// Confirmed reads waiting for `applied` to reach their index, in index order.
    pub confirmed_reads: Vec<(LogIndex, ReadFn<M>)>,
    pub next_read_ctx: u64,
    /// Callers of `await_leader`, until their deadline.
    pub leader_waiters: Vec<(Deadline, C::Reply<NodeId>)>,
    pub changes: Vec<(Change, Deadline, C::Reply<()>)>,
    pub transfer: Option<(NodeId, Deadline, C::Reply<()>)>,
}

impl<M: StateMachine, C: Channel> Pending<M, C> {
    pub fn new() -> Pending<M, C> {
        Pending {
            writes: BTreeMap::new(),
            unconfirmed_reads: HashMap::new(),
            confirmed_reads: Vec::new(),
            next_read_ctx: 1,
            leader_waiters: Vec::new(),
            changes: Vec::new(),
            transfer: None,
        }
    }

    /// Serves the confirmed reads whose index has been applied.
    pub fn serve_reads(&mut self, applied: LogIndex, machine: &M) {
        if self.confirmed_reads.is_empty() {
            return;
        }
        let mut k = 0;
        while k < self.confirmed_reads.len() {
            if self.confirmed_reads[k].0 <= applied {
                let (_, read) = self.confirmed_reads.swap_remove(k);
                read(Ok(machine));
            } else {
                k += 1;
            }
        }
    }

    /// Answers what the core's new state settles: changes committed, transfers done,
    /// leaders known, and (if this node no longer leads) everything that needed it to.
    pub fn settle(&mut self, core: &Raft, now: Deadline) {
        if let Some(leader) = core.leader_id() {
            for (_, w) in self.leader_waiters.drain(..) {
                w.send(Ok(leader));
            }
        }
        for (_, w) in extract_expired(&mut self.leader_waiters, now) {
            w.send(Err(Error::Timeout));
        }
        self.settle_changes(core, now);
        self.settle_transfer(core, now);
        if core.role() != Role::Leader {
            self.fail_leader_work(|| Error::LeadershipLost);
        }
    }

    fn settle_changes(&mut self, core: &Raft, now: Deadline) {
        let committed = core.membership_index() <= core.commit_index();
        let m = core.membership();
        for (change, deadline, reply) in std::mem::take(&mut self.changes) {
            let done = committed
                && match change {
                    Change::Add(id) => m.is_voter(id),
                    Change::Remove(id) => !m.contains(id),
                };
            if done {
                reply.send(Ok(()));
            } else if now >= deadline {
                reply.send(Err(Error::Timeout));
            } else {
                self.changes.push((change, deadline, reply));
            }
        }
    }

    fn settle_transfer(&mut self, core: &Raft, now: Deadline) {
        let Some((to, deadline, _)) = &self.transfer else { return };
        let result = if core.leader_id() == Some(*to) {
            Some(Ok(()))
        } else if core.role() == Role::Leader && core.transfer_target().is_none() {
            Some(Err(Error::TransferFailed))
        } else if now >= *deadline {
            Some(Err(Error::Timeout))
        } else {
            None
        };
        if let Some(result) = result {
            let (_, _, reply) = self.transfer.take().expect("checked");
            reply.send(result);
        }
    }

    /// Fails the requests that only a leader can finish. Writes and membership changes
    /// already proposed get an indeterminate error from `error`.
    pub fn fail_leader_work(&mut self, error: impl Fn() -> Error) {
        for (_, (_, reply)) in std::mem::take(&mut self.writes) {
            reply.send(Err(error()));
        }
        for (_, _, reply) in self.changes.drain(..) {
            reply.send(Err(error()));
        }
        for (_, read) in self.unconfirmed_reads.drain() {
            read(Err(Error::LeadershipLost));
        }
        for (_, read) in self.confirmed_reads.drain(..) {
            read(Err(Error::LeadershipLost));
        }
    }

    /// Fails everything at shutdown: proposed work is indeterminate, the rest `Stopped`.
    pub fn fail_all(&mut self) {
        self.fail_leader_work(|| Error::LeadershipLost);
        for (_, w) in self.leader_waiters.drain(..) {
            w.send(Err(Error::Stopped));
        }
        if let Some((_, _, reply)) = self.transfer.take() {
            reply.send(Err(Error::Stopped));
        }
    }
}

/// Removes and returns the waiters whose deadline has passed.
fn extract_expired<T>(waiters: &mut Vec<(Deadline, T)>, now: Deadline) -> Vec<(Deadline, T)> {
    let (expired, waiting) = std::mem::take(waiters).into_iter().partition(|(deadline, _)| *deadline <= now);
    *waiters = waiting;
    expired
}
