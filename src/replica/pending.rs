//! Client requests the node thread has accepted and not yet answered.

use std::collections::{HashMap, VecDeque};

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

/// Proposals waiting for their entry's fate, sorted by (index, term proposed in).
///
/// A leader proposes at increasing indexes and entries are applied in index order, so
/// proposals join at the back and leave from the front: a deque, not a tree (this runs
/// for every write). Only after a change of leader can a proposal land before others (the
/// new leader overwrote their indexes), and then it is inserted in order.
pub(crate) struct ProposedAt<R> {
    queue: VecDeque<((LogIndex, Term), Proposed<R>)>,
}

impl<R> ProposedAt<R> {
    pub fn new() -> ProposedAt<R> {
        ProposedAt { queue: VecDeque::new() }
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// The lowest (index, term) waiting.
    pub fn first_key(&self) -> Option<(LogIndex, Term)> {
        self.queue.front().map(|(k, _)| *k)
    }

    /// Adds the proposal of `index` made in `term`; returns the one it replaces, if any.
    pub fn insert(&mut self, index: LogIndex, term: Term, p: Proposed<R>) -> Option<Proposed<R>> {
        let key = (index, term);
        if self.queue.back().is_none_or(|(k, _)| *k < key) {
            self.queue.push_back((key, p));
            return None;
        }
        let at = self.queue.partition_point(|(k, _)| *k < key);
        if self.queue[at].0 == key {
            return Some(std::mem::replace(&mut self.queue[at].1, p));
        }
        self.queue.insert(at, (key, p));
        None
    }

    /// Removes and returns one proposal waiting at `index` (the one proposed in the
    /// lowest term, if several are).
    pub fn pop_at(&mut self, index: LogIndex) -> Option<(Term, Proposed<R>)> {
        let front = self.queue.front()?.0.0;
        let at = match front.cmp(&index) {
            std::cmp::Ordering::Equal => 0,
            std::cmp::Ordering::Greater => return None,
            std::cmp::Ordering::Less => self.queue.partition_point(|((i, _), _)| *i < index),
        };
        if self.queue.get(at).is_none_or(|((i, _), _)| *i != index) {
            return None;
        }
        self.queue.remove(at).map(|((_, term), p)| (term, p))
    }

    /// Removes and returns the proposals waiting at `index` or before.
    pub fn take_through(&mut self, index: LogIndex) -> Vec<Proposed<R>> {
        let end = self.queue.partition_point(|((i, _), _)| *i <= index);
        self.queue.drain(..end).map(|(_, p)| p).collect()
    }

    /// Removes and returns every proposal.
    pub fn take_all(&mut self) -> Vec<Proposed<R>> {
        self.queue.drain(..).map(|(_, p)| p).collect()
    }

    /// Removes and returns the proposals whose deadline is `now` or earlier.
    fn take_expired(&mut self, now: Deadline) -> Vec<Proposed<R>> {
        if self.queue.iter().all(|(_, p)| p.deadline > now) {
            return Vec::new();
        }
        let mut expired = Vec::new();
        let mut waiting = VecDeque::with_capacity(self.queue.len());
        for (k, p) in self.queue.drain(..) {
            if p.deadline <= now { expired.push(p) } else { waiting.push_back((k, p)) }
        }
        self.queue = waiting;
        expired
    }
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
            writes: ProposedAt::new(),
            registrations: ProposedAt::new(),
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
        for p in self.writes.take_all() {
            p.reply.send(Err(Error::LeadershipLost));
        }
        for p in self.registrations.take_all() {
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
    for p in proposed.take_expired(now) {
        p.reply.send(Err(Error::Timeout));
    }
}

/// Removes and returns the waiters whose deadline has passed.
fn extract_expired<T>(waiters: &mut Vec<(Deadline, T)>, now: Deadline) -> Vec<(Deadline, T)> {
    let (expired, waiting) = std::mem::take(waiters).into_iter().partition(|(deadline, _)| *deadline <= now);
    *waiters = waiting;
    expired
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(deadline: Deadline) -> Proposed<u32> {
        Proposed { tag: None, deadline, reply: deadline as u32 }
    }

    #[test]
    fn proposals_leave_in_index_then_term_order() {
        let mut q = ProposedAt::new();
        assert!(q.insert(LogIndex(5), Term(1), p(5)).is_none());
        assert!(q.insert(LogIndex(6), Term(1), p(6)).is_none());
        // A new leader overwrote index 5 and 6: proposals land before and among the others.
        assert!(q.insert(LogIndex(5), Term(2), p(52)).is_none());
        assert!(q.insert(LogIndex(4), Term(2), p(42)).is_none());
        assert_eq!(q.insert(LogIndex(6), Term(1), p(61)).map(|old| old.reply), Some(6));
        assert_eq!(q.first_key(), Some((LogIndex(4), Term(2))));
        assert!(q.pop_at(LogIndex(3)).is_none());
        assert_eq!(q.pop_at(LogIndex(5)).map(|(t, p)| (t, p.reply)), Some((Term(1), 5)));
        assert_eq!(q.pop_at(LogIndex(5)).map(|(t, p)| (t, p.reply)), Some((Term(2), 52)));
        assert!(q.pop_at(LogIndex(5)).is_none());
        assert_eq!(q.take_through(LogIndex(5)).iter().map(|p| p.reply).collect::<Vec<_>>(), [42]);
        assert_eq!(q.take_expired(60).len(), 0);
        assert_eq!(q.take_expired(61).iter().map(|p| p.reply).collect::<Vec<_>>(), [61]);
        assert!(q.is_empty());
    }
}

/// The deque against the `BTreeMap<(LogIndex, Term), _>` it replaced (ede5207), under
/// random proposals at increasing indexes, leader changes re-proposing lower indexes in
/// higher terms, several proposals per index, pops, snapshot jumps and expiry.
#[cfg(test)]
mod model_tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::core::SplitMix64;

    type Reference = BTreeMap<(LogIndex, Term), Proposed<u32>>;

    fn p(deadline: Deadline, id: u32) -> Proposed<u32> {
        Proposed { tag: None, deadline, reply: id }
    }

    fn replies(ps: impl IntoIterator<Item = Proposed<u32>>) -> Vec<u32> {
        ps.into_iter().map(|p| p.reply).collect()
    }

    #[test]
    fn the_deque_answers_as_the_tree_did() {
        for seed in 0..200 {
            let mut rng = SplitMix64::new(seed);
            let mut r = |n: u64| rng.next_u64() % n;
            let (mut q, mut tree) = (ProposedAt::new(), Reference::new());
            let (mut term, mut next, mut id) = (1u64, 1u64, 0u32);
            for step in 0..500 {
                let why = format!("seed={seed} step={step}");
                id += 1;
                match r(20) {
                    0..=9 => {
                        let key = (LogIndex(next), Term(term));
                        let deadline = r(50);
                        let old = q.insert(key.0, key.1, p(deadline, id)).map(|p| p.reply);
                        assert_eq!(old, tree.insert(key, p(deadline, id)).map(|p| p.reply), "{why}");
                        next += 1;
                    }
                    10 => {
                        // A new leader: its log ends lower, in a higher term.
                        term += 1 + r(2);
                        next = next.saturating_sub(r(6)).max(1);
                    }
                    11..=14 => {
                        let index = LogIndex(1 + r(next + 2));
                        loop {
                            let got = q.pop_at(index).map(|(t, p)| (t, p.reply));
                            let want = tree
                                .range((index, Term(0))..=(index, Term(u64::MAX)))
                                .next()
                                .map(|(&k, _)| k)
                                .and_then(|k| tree.remove(&k).map(|p| (k.1, p.reply)));
                            assert_eq!(got, want, "{why}: pop_at {index:?}");
                            if got.is_none() {
                                break;
                            }
                        }
                    }
                    15 => {
                        let index = LogIndex(r(next + 2));
                        let later = tree.split_off(&(index.next(), Term(0)));
                        let want = replies(std::mem::replace(&mut tree, later).into_values());
                        assert_eq!(replies(q.take_through(index)), want, "{why}: take_through {index:?}");
                    }
                    16..=18 => {
                        let now = r(50);
                        let expired: Vec<_> = tree.iter().filter(|(_, p)| p.deadline <= now).map(|(&k, _)| k).collect();
                        let want = replies(expired.iter().map(|k| tree.remove(k).unwrap()));
                        assert_eq!(replies(q.take_expired(now)), want, "{why}: take_expired {now}");
                    }
                    _ => {
                        assert_eq!(q.first_key(), tree.keys().next().copied(), "{why}");
                    }
                }
                assert_eq!(q.is_empty(), tree.is_empty(), "{why}");
            }
            assert_eq!(replies(q.take_all()), replies(tree.into_values()));
        }
    }
}
