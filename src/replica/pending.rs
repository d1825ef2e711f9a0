//! Client requests the node thread has accepted and not yet answered.

use std::collections::{BTreeMap, HashMap};

use super::reply::{Channel, Respond};
use super::session::SessionTag;
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

/// A proposed entry's client, waiting for the entry's fate.
pub(crate) struct Proposed<R> {
    /// The command's session tag, if it has one.
    pub tag: Option<SessionTag>,
    pub deadline: Deadline,
    pub reply: R,
}

/// Proposals waiting for their entry's fate, by (index, term proposed in).
pub(crate) type ProposedAt<R> = BTreeMap<(LogIndex, Term), Proposed<R>>;

/// Removes and returns one proposal waiting at `index` (the one proposed in the lowest
/// term, if several are), without allocating (this runs for every write answered).
pub(crate) fn pop_at<R>(proposed: &mut ProposedAt<R>, index: LogIndex) -> Option<(Term, Proposed<R>)> {
    let (&key, _) = proposed.range((index, Term(0))..=(index, Term(u64::MAX))).next()?;
    proposed.remove(&key).map(|p| (key.1, p))
}

/// Removes and returns the proposals waiting at `index` or before.
pub(crate) fn take_through<R>(proposed: &mut ProposedAt<R>, index: LogIndex) -> ProposedAt<R> {
    let later = proposed.split_off(&(index.next(), Term(0)));
    std::mem::replace(proposed, later)
}

/// Everything waiting for the Raft core or the state machine.
pub(crate) struct Pending<M: StateMachine, C: Channel> {
    /// Proposed writes by log index and the term they were proposed in. They outlive the
    /// leadership they were proposed under: as a follower, the replica still learns their
    /// fate when it applies their index (or their deadline passes). Several may wait at one
    /// index, proposed in different terms (the log was overwritten in between): the one
    /// whose term the committed entry has, if any, was applied; the others were not.
    pub writes: ProposedAt<C::Reply<M::Response>>,
    /// Proposed session registrations, likewise.
    pub registrations: ProposedAt<C::Reply<u64>>,
    /// The clock when expired writes were last looked for.
    swept_at: Deadline,
    /// Reads waiting for their ReadIndex confirmation, by context.
    pub unconfirmed_reads: HashMap<u64, ReadFn<M>>,
    /// Confirmed reads waiting for `applied` to reach their index, in index order.
    pub confirmed_reads: Vec<(LogIndex, ReadFn<M>)>,
    pub next_read_ctx: u64,
    /// Callers of `await_leader`, until their deadline, each with the leader it is not
    /// waiting for (`await_new_leader`'s old one).
    pub leader_waiters: Vec<(Deadline, LeaderWaiter<C>)>,
    pub changes: Vec<(Change, Deadline, C::Reply<()>)>,
    pub transfer: Option<(NodeId, Deadline, C::Reply<()>)>,
}

/// An `await_leader` caller: the leader it does not want (if any), and its reply.
pub(crate) type LeaderWaiter<C> = (Option<NodeId>, <C as Channel>::Reply<NodeId>);

impl<M: StateMachine, C: Channel> Pending<M, C> {
    pub fn new() -> Pending<M, C> {
        Pending {
            writes: BTreeMap::new(),
            registrations: BTreeMap::new(),
            swept_at: 0,
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
        if let Some(leader) = core.leader_id()
            && !self.leader_waiters.is_empty()
        {
            let (found, waiting) = std::mem::take(&mut self.leader_waiters)
                .into_iter()
                .partition(|(_, (other_than, _))| *other_than != Some(leader));
            self.leader_waiters = waiting;
            for (_, (_, w)) in found {
                w.send(Ok(leader));
            }
        }
        for (_, (_, w)) in extract_expired(&mut self.leader_waiters, now) {
            w.send(Err(Error::Timeout));
        }
        self.settle_changes(core, now);
        self.settle_transfer(core, now);
        if core.role() != Role::Leader {
            self.fail_leader_work(|| Error::LeadershipLost);
        }
        if now != self.swept_at {
            self.swept_at = now;
            expire_proposed::<M::Response, _>(&mut self.writes, now);
            expire_proposed::<u64, _>(&mut self.registrations, now);
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

    /// Fails the requests that only a leader can finish. Membership changes already
    /// proposed get an indeterminate error from `error`. (Proposed writes wait on.)
    pub fn fail_leader_work(&mut self, error: impl Fn() -> Error) {
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
        for (_, p) in std::mem::take(&mut self.writes) {
            p.reply.send(Err(Error::LeadershipLost));
        }
        for (_, p) in std::mem::take(&mut self.registrations) {
            p.reply.send(Err(Error::LeadershipLost));
        }
        for (_, (_, w)) in self.leader_waiters.drain(..) {
            w.send(Err(Error::Stopped));
        }
        if let Some((_, _, reply)) = self.transfer.take() {
            reply.send(Err(Error::Stopped));
        }
    }
}

/// Answers `Timeout` to the proposals whose deadline has passed, fate unknown. (A leader
/// sweeps too: its client has given up, and the entry is applied whether or not anyone
/// still waits.)
fn expire_proposed<T: Send + 'static, R: Respond<T>>(proposed: &mut ProposedAt<R>, now: Deadline) {
    if proposed.values().all(|p| p.deadline > now) {
        return;
    }
    let expired: Vec<(LogIndex, Term)> = proposed.iter().filter(|(_, p)| p.deadline <= now).map(|(&k, _)| k).collect();
    for key in expired {
        let p = proposed.remove(&key).expect("just found");
        p.reply.send(Err(Error::Timeout));
    }
}

/// Removes and returns the waiters whose deadline has passed.
fn extract_expired<T>(waiters: &mut Vec<(Deadline, T)>, now: Deadline) -> Vec<(Deadline, T)> {
    let (expired, waiting) = std::mem::take(waiters).into_iter().partition(|(deadline, _)| *deadline <= now);
    *waiters = waiting;
    expired
}
