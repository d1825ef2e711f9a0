//! The blocking client handle.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::replica::Respond;
use crate::runtime::Shared;
use std::sync::atomic::{Ordering, fence};

use crossbeam_channel::{Receiver, Sender, TrySendError};

use crate::core::NodeId;
use crate::error::{Error, Result};
use crate::replica::{ReadFn, Request};
use crate::runtime::request::{Answer, LocalRequest, Reply, deadline_after, reply_slot};
use crate::state_machine::StateMachine;
use crate::status::Status;

/// A handle for calling one node from any thread: `Clone + Send + Sync`, cheap to clone.
///
/// Every call blocks until the node answers or the node's request timeout passes
/// ([`crate::Config::request_timeout`], 5 s by default); none waits forever.
///
/// Backpressure: requests wait in a bounded queue ([`crate::Config::client_queue`]); when
/// it is full a call returns [`Error::Busy`] at once, having proposed nothing.
pub struct Client<M: StateMachine> {
    tx: Sender<LocalRequest<M>>,
    /// Used only to drain the queue once the node thread has exited.
    rx: Receiver<LocalRequest<M>>,
    shared: Arc<Shared>,
    timeout: Duration,
    /// Largest encoded command: one AppendEntries must be able to carry it.
    max_command_bytes: usize,
}

impl<M: StateMachine> Clone for Client<M> {
    fn clone(&self) -> Self {
        Client {
            tx: self.tx.clone(),
            rx: self.rx.clone(),
            shared: self.shared.clone(),
            timeout: self.timeout,
            max_command_bytes: self.max_command_bytes,
        }
    }
}

impl<M: StateMachine> Client<M> {
    pub(crate) fn new(
        tx: Sender<LocalRequest<M>>,
        rx: Receiver<LocalRequest<M>>,
        shared: Arc<Shared>,
        timeout: Duration,
        max_command_bytes: usize,
    ) -> Client<M> {
        Client { tx, rx, shared, timeout, max_command_bytes }
    }

    /// Replicates `command` and returns the state machine's answer once the leader has
    /// applied it. On a follower: `Err(Redirect { leader })` at once, nothing proposed.
    pub fn write(&self, command: M::Command) -> Result<M::Response> {
        self.write_timeout(command, self.timeout)
    }

    /// [`Client::write`] with its own timeout. A timeout is indeterminate: the command may
    /// still be applied. A command that encodes to more than
    /// [`crate::Config::max_append_bytes`] is refused with [`Error::TooLarge`].
    pub fn write_timeout(&self, command: M::Command, timeout: Duration) -> Result<M::Response> {
        self.submit_timeout(command, timeout)?.wait()
    }

    /// Hands `command` to the node and returns at once, so one thread can keep many writes
    /// in flight (pipelining); [`PendingWrite::wait`] returns the answer. Writes submitted
    /// through one node are proposed, and so applied, in submission order. Errors that
    /// need no round trip (`TooLarge`, `Busy`, `Stopped`) come back here; the rest, such
    /// as `Redirect`, from `wait`.
    pub fn submit(&self, command: M::Command) -> Result<PendingWrite<M::Response>> {
        self.submit_timeout(command, self.timeout)
    }

    /// [`Client::submit`] whose answer is awaited at most `timeout` from now.
    pub fn submit_timeout(&self, command: M::Command, timeout: Duration) -> Result<PendingWrite<M::Response>> {
        let deadline = deadline_after(timeout);
        let command = rmp_serde::to_vec(&command).map_err(|e| Error::Codec(e.to_string()))?;
        if command.len() > self.max_command_bytes {
            return Err(Error::TooLarge { bytes: command.len(), max: self.max_command_bytes });
        }
        let (reply, answer) = reply_slot();
        self.enqueue(Request::Write { command, reply })?;
        Ok(PendingWrite { answer, deadline, shared: self.shared.clone() })
    }

    /// Runs `f` on the leader's state machine after confirming leadership with a majority
    /// (ReadIndex, dissertation §6.4), so it sees every write acknowledged before the call.
    /// On a follower: `Err(Redirect)` (the closure cannot cross the network).
    pub fn read<R, F>(&self, f: F) -> Result<R>
    where
        R: Send + 'static,
        F: FnOnce(&M) -> R + Send + 'static,
    {
        self.read_with(f, |read| Request::Read { read })
    }

    /// Runs `f` on this node's state machine at once, without asking anyone: on any node,
    /// but the state **may be stale** (a follower lags; a deposed leader may not know yet).
    /// Like ExRaft's `read_dirty` and ra's `local_query`.
    pub fn read_local<R, F>(&self, f: F) -> Result<R>
    where
        R: Send + 'static,
        F: FnOnce(&M) -> R + Send + 'static,
    {
        self.read_with(f, |read| Request::ReadLocal { read })
    }

    fn read_with<R, F>(&self, f: F, make: impl FnOnce(ReadFn<M>) -> LocalRequest<M>) -> Result<R>
    where
        R: Send + 'static,
        F: FnOnce(&M) -> R + Send + 'static,
    {
        let (reply, answer) = reply_slot();
        let read = Box::new(move |machine: Result<&M>| reply.send(machine.map(f)));
        self.enqueue(make(read))?;
        explain_stop(&self.shared, answer.wait(self.timeout))
    }

    /// Waits until this node knows a leader and returns its id. On a `join()` node not yet
    /// added, it waits and ends in `Timeout`.
    pub fn await_leader(&self, timeout: Duration) -> Result<NodeId> {
        let (reply, answer) = reply_slot();
        self.enqueue(Request::AwaitLeader { timeout, reply })?;
        explain_stop(&self.shared, answer.wait(timeout))
    }

    /// The leader this node knows of right now, if any.
    pub fn leader(&self) -> Result<Option<NodeId>> {
        Ok(self.status()?.leader)
    }

    /// This node's role, term, leader, indexes and members.
    pub fn status(&self) -> Result<Status> {
        self.call(|reply| Request::Status { reply })
    }

    /// Adds node `id`, listening on `addr`: it joins as a learner, catches up, and is
    /// promoted to voter. Returns once a committed configuration lists it as a voter.
    pub fn add_server(&self, id: NodeId, addr: SocketAddr) -> Result<()> {
        self.call(|reply| Request::AddServer { id, addr: addr.to_string(), reply })
    }

    /// Removes node `id`; returns once the configuration without it is committed. Removing
    /// the leader works: it commits the change, then steps down and hands over.
    pub fn remove_server(&self, id: NodeId) -> Result<()> {
        self.call(|reply| Request::RemoveServer { id, reply })
    }

    /// Makes this node campaign now (skipping pre-vote and leases). Returns once it has
    /// started; a no-op on the leader; `Err(NotAVoter)` on a node without a vote.
    pub fn trigger_election(&self) -> Result<()> {
        self.call(|reply| Request::TriggerElection { reply })
    }

    /// Hands leadership to voter `to` (§3.10) and returns once `to` leads. While the
    /// transfer runs, writes fail with [`Error::TransferInProgress`].
    pub fn transfer_leadership(&self, to: NodeId) -> Result<()> {
        self.call(|reply| Request::TransferLeadership { to, reply })
    }

    fn call<T>(&self, make: impl FnOnce(Reply<T>) -> LocalRequest<M>) -> Result<T> {
        let (reply, answer) = reply_slot();
        self.enqueue(make(reply))?;
        explain_stop(&self.shared, answer.wait(self.timeout))
    }

    fn enqueue(&self, request: LocalRequest<M>) -> Result<()> {
        if self.shared.exited.load(Ordering::SeqCst) {
            return explain_stop(&self.shared, Err(Error::Stopped));
        }
        match self.tx.try_send(request) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) if self.shared.exited.load(Ordering::SeqCst) => return Err(Error::Stopped),
            Err(TrySendError::Full(_)) => return Err(Error::Busy),
            Err(TrySendError::Disconnected(_)) => return Err(Error::Stopped),
        }
        // Pairs with the fence in the node loop's `Drop`: if the node exited before it
        // could see our request, we see `exited` and drop the queue's requests ourselves,
        // which answers them `Stopped`.
        fence(Ordering::SeqCst);
        if self.shared.exited.load(Ordering::SeqCst) {
            for request in self.rx.try_iter() {
                drop(request);
            }
            return Ok(());
        }
        if let Err(e) = self.shared.wake() {
            // The request is queued: if the node is gone, its answer slot says `Stopped`.
            log::warn!("cannot wake the node thread: {e}");
        }
        Ok(())
    }
}

/// A write handed to the node by [`Client::submit`], whose answer is still to come.
#[must_use = "a submitted write is only known to have succeeded once `wait` says so"]
pub struct PendingWrite<R> {
    answer: Answer<R>,
    deadline: Instant,
    shared: Arc<Shared>,
}

impl<R> PendingWrite<R> {
    /// Waits for the answer until the deadline set at submission. A `Timeout` is
    /// indeterminate: the write may still be applied.
    pub fn wait(self) -> Result<R> {
        explain_stop(&self.shared, self.answer.wait(self.deadline.saturating_duration_since(Instant::now())))
    }
}

/// A `Stopped` answer from a node that stopped because its storage failed becomes
/// [`Error::StorageFailed`], so the caller learns why (both mean nothing was proposed).
fn explain_stop<T>(shared: &Shared, result: Result<T>) -> Result<T> {
    match (result, shared.storage_failure.get()) {
        (Err(Error::Stopped), Some(why)) => Err(Error::StorageFailed(why.clone())),
        (result, _) => result,
    }
}
