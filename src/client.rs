//! The blocking client handle.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::replica::Respond;
use crate::runtime::Shared;
use std::sync::atomic::{Ordering, fence};

use crossbeam_channel::{Receiver, Sender, TrySendError};

use crate::core::NodeId;
use crate::core::SharedBytes;
use crate::error::{Error, Peer, Result};
use crate::remote::{Forwarder, RemoteOptions, decode_answer};
use crate::replica::{ReadFn, Request, SessionTag, check_command, command_body, encode_shared, tag_shared};
use crate::runtime::request::{Answer, LocalRequest, Reply, deadline_after, reply_slot};
use crate::session::ClientSession;
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
    /// The session (§6.3) its writes are tagged with; `None` for [`Client::without_session`].
    session: Option<Arc<ClientSession>>,
    tx: Sender<LocalRequest<M>>,
    /// Used only to drain the queue once the node thread has exited.
    rx: Receiver<LocalRequest<M>>,
    shared: Arc<Shared>,
    timeout: Duration,
    /// Largest encoded command: one AppendEntries must be able to carry it.
    max_command_bytes: usize,
    /// How to reach the cluster's other nodes (for [`Client::forwarding`]).
    forward_options: Arc<RemoteOptions>,
    /// Writes this node cannot propose go to the leader through this, if set.
    forward: Option<Arc<Forwarder>>,
}

impl<M: StateMachine> Clone for Client<M> {
    fn clone(&self) -> Self {
        Client {
            session: self.session.clone(),
            tx: self.tx.clone(),
            rx: self.rx.clone(),
            shared: self.shared.clone(),
            timeout: self.timeout,
            max_command_bytes: self.max_command_bytes,
            forward_options: self.forward_options.clone(),
            forward: self.forward.clone(),
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
        forward_options: RemoteOptions,
    ) -> Client<M> {
        let session = Some(Arc::new(ClientSession::default()));
        let forward_options = Arc::new(forward_options);
        Client { session, tx, rx, shared, timeout, max_command_bytes, forward_options, forward: None }
    }

    /// A handle to the same node that, on a follower, **forwards** writes to the leader
    /// (over TCP, as a [`crate::RemoteClient`] would) and returns the leader's answer,
    /// instead of answering `Redirect` (Pistis's behaviour; `Redirect` stays the default).
    /// With a session (the default) a forwarded write whose fate is uncertain is sent
    /// again, and still applies once. While no leader is known it waits for one, until
    /// the timeout. Reads are not forwarded (a closure cannot cross the network), nor is
    /// [`Client::submit`] (pipelined writes answer `Redirect` from `wait`; a
    /// [`crate::RemoteClient`] pipelines to the leader from anywhere).
    pub fn forwarding(&self) -> Client<M> {
        let forward = Forwarder::new((*self.forward_options).clone().timeout(self.timeout));
        Client { forward: Some(Arc::new(forward)), ..self.clone() }
    }

    /// A handle to the same node with a session of its own (clones share their session).
    pub fn new_session(&self) -> Client<M> {
        Client { session: Some(Arc::new(ClientSession::default())), ..self.clone() }
    }

    /// A handle to the same node whose writes carry no session: one registration and a
    /// few bytes per command fewer, but a command proposed twice would apply twice (this
    /// client never proposes one twice; a caller that retries after an indeterminate
    /// error might).
    pub fn without_session(&self) -> Client<M> {
        Client { session: None, ..self.clone() }
    }

    /// Replicates `command` and returns the state machine's answer once this node has
    /// applied it. On a follower: `Err(Redirect { leader })` at once, nothing proposed.
    ///
    /// The command is tagged with this client's session (§6.3), so it applies once however
    /// often it is proposed. The call retries by itself, until its timeout, whenever the
    /// last attempt certainly had no effect and another may succeed: a leadership transfer
    /// was under way, a new leader replaced the entry in the log (`Dropped`: the retry then
    /// usually meets `Redirect`), or the session expired (it registers a new one). A full
    /// queue is not retried: `Busy` comes back at once, as backpressure. So the errors it
    /// returns are `Redirect`, `Busy`, `Stopped`, the configuration and size errors, and
    /// the indeterminate ones, which mean:
    /// - `Timeout`: the timeout passed with the command's fate unknown (its entry neither
    ///   committed nor replaced: the node is cut off from a majority, say);
    /// - `LeadershipLost`: the node stopped, or installed a snapshot past the entry of a
    ///   command outside any session, before the fate was known.
    pub fn write(&self, command: M::Command) -> Result<M::Response> {
        self.write_timeout(command, self.timeout)
    }

    /// [`Client::write`] with its own timeout. A command that encodes to more than
    /// [`crate::Config::max_append_bytes`] is refused with [`Error::TooLarge`].
    pub fn write_timeout(&self, command: M::Command, timeout: Duration) -> Result<M::Response> {
        let deadline = deadline_after(timeout);
        let Some(session) = &self.session else {
            let command = encode_shared(None, &command)?;
            check_command::<M::Command>(command_body(&command).expect("a plain command"))?;
            return self.write_once(command, false, deadline);
        };
        let body = crate::codec::to_vec(&command).map_err(Error::Codec)?;
        self.check_size(body.len())?;
        check_command::<M::Command>(&body)?;
        loop {
            let Some(tag) = session.begin() else {
                self.session_id(session, deadline)?; // registers one
                continue;
            };
            let result = self.write_attempts(session, tag, &body, deadline);
            session.finish(tag.session, tag.seq);
            match result {
                // Certainly not applied, and neither was any earlier attempt (they all
                // ended certain): a new session and a new sequence are safe.
                Err(Error::SessionExpired) if Instant::now() < deadline => session.expire(tag.session),
                result => return result,
            }
        }
    }

    /// Sends sequence `seq` until an answer that settles it.
    fn write_attempts(
        &self,
        session: &ClientSession,
        first: SessionTag,
        body: &[u8],
        deadline: Instant,
    ) -> Result<M::Response> {
        let mut backoff = Duration::from_millis(1);
        let mut tag = Some(first);
        loop {
            // Every attempt so far ended certain: if a clone replaced the session meanwhile,
            // starting over in the new one is safe. (A retry's tag acknowledges what other
            // writes of the session finished meanwhile.)
            let tag = tag.take().or_else(|| session.tag(first.session, first.seq));
            let Some(tag) = tag else { return Err(Error::SessionExpired) };
            let command = tag_shared(tag, body);
            let result = self.write_once(command, true, deadline);
            let no_leader = self.forward.is_some() && matches!(result, Err(Error::Redirect { leader: None }));
            let certain_retryable =
                no_leader || matches!(result, Err(Error::Dropped { .. } | Error::TransferInProgress));
            let now = Instant::now();
            if !certain_retryable || now + backoff >= deadline {
                return result;
            }
            // Backing off is the point here: the node is busy or between leaders.
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(RETRY_BACKOFF_MAX);
        }
    }

    /// One attempt of an encoded write at this node, forwarded to the leader if this node
    /// redirects and the client forwards. `safe`: the command carries a session.
    fn write_once(&self, command: SharedBytes, safe: bool, deadline: Instant) -> Result<M::Response> {
        let Some(forward) = &self.forward else { return self.send_write(command, deadline)?.wait() };
        // Kept for forwarding (a shared buffer: no copy unless forwarded).
        let kept = command.clone();
        match self.send_write(command, deadline)?.wait() {
            Err(Error::Redirect { leader: Some(Peer { addr: Some(addr), .. }) }) => {
                decode_answer(forward.write(addr, kept.to_vec(), safe, deadline)?)
            }
            result => result,
        }
    }

    /// The session's id, registering it through the log first if needed. Registering is
    /// retried until `deadline` after any answer but a refusal that another attempt would
    /// meet too (`Redirect`, `Busy`, `Stopped`, ...): a registration that took effect
    /// unbeknownst to us only leaves an unused session, which expires.
    fn session_id(&self, session: &ClientSession, deadline: Instant) -> Result<u64> {
        session.id_or_register(deadline, |secret| self.register(secret, deadline))
    }

    /// Registers a session with `secret` through this node (or, forwarding, the leader).
    fn register(&self, secret: u64, deadline: Instant) -> Result<u64> {
        let mut backoff = Duration::from_millis(1);
        loop {
            let timeout = deadline.saturating_duration_since(Instant::now());
            let (reply, answer) = reply_slot();
            self.enqueue(Request::RegisterSession { secret, timeout, reply })?;
            let result = match (explain_stop(&self.shared, answer.wait(timeout)), &self.forward) {
                (Err(Error::Redirect { leader: Some(Peer { addr: Some(addr), .. }) }), Some(forward)) => {
                    forward.register(addr, secret, deadline)
                }
                (result, _) => result,
            };
            let retry = match &result {
                Err(Error::Dropped { .. } | Error::TransferInProgress | Error::LeadershipLost | Error::Timeout) => true,
                // A forwarding client waits for a leader to forward to.
                Err(Error::Redirect { leader: None }) => self.forward.is_some(),
                _ => false,
            };
            // Certainly nothing registered, or the deadline passed: no session is in use
            // yet, so no command's fate is uncertain.
            if !retry || Instant::now() + backoff >= deadline {
                return result;
            }
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(RETRY_BACKOFF_MAX);
        }
    }

    /// Hands `command` to the node and returns at once, so one thread can keep many writes
    /// in flight (pipelining); [`PendingWrite::wait`] returns the answer. Writes submitted
    /// through one node are proposed, and so applied, in submission order. Errors that
    /// need no round trip (`TooLarge`, `Busy`, `Stopped`) come back here; the rest, such
    /// as `Redirect`, from `wait`. A submitted write is proposed once and never retried,
    /// so it carries no session: it needs none to apply at most once, and skips the
    /// session table's bookkeeping on every node.
    pub fn submit(&self, command: M::Command) -> Result<PendingWrite<M::Response>> {
        self.submit_timeout(command, self.timeout)
    }

    /// [`Client::submit`] whose answer is awaited at most `timeout` from now.
    pub fn submit_timeout(&self, command: M::Command, timeout: Duration) -> Result<PendingWrite<M::Response>> {
        let command = encode_shared(None, &command)?;
        check_command::<M::Command>(command_body(&command).expect("a plain command"))?;
        self.send_write(command, deadline_after(timeout))
    }

    fn check_size(&self, bytes: usize) -> Result<()> {
        if bytes > self.max_command_bytes {
            return Err(Error::TooLarge { bytes, max: self.max_command_bytes });
        }
        Ok(())
    }

    /// Queues one attempt of an encoded write.
    fn send_write(&self, command: SharedBytes, deadline: Instant) -> Result<PendingWrite<M::Response>> {
        self.check_size(command.len())?;
        let timeout = deadline.saturating_duration_since(Instant::now());
        let (reply, answer) = reply_slot();
        self.enqueue(Request::Write { command, timeout, reply })?;
        Ok(PendingWrite { answer, deadline, shared: self.shared.clone() })
    }

    /// Runs `f` on the leader's state machine after confirming leadership with a majority
    /// (ReadIndex, dissertation §6.4), so it sees every write acknowledged before the call.
    /// With [`crate::Config::lease_reads`], a leader whose lease holds skips that round
    /// trip (under the clock assumption documented there).
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
    /// added, it waits and ends in `Timeout`. The leader may be one this node still
    /// believes in after it stopped: to wait for a successor, use
    /// [`Client::await_new_leader`].
    pub fn await_leader(&self, timeout: Duration) -> Result<NodeId> {
        self.await_leader_other_than(None, timeout)
    }

    /// Waits until this node knows a leader other than `old` (after stopping `old`, or
    /// after [`Client::trigger_election`] on another node) and returns its id.
    pub fn await_new_leader(&self, old: NodeId, timeout: Duration) -> Result<NodeId> {
        self.await_leader_other_than(Some(old), timeout)
    }

    fn await_leader_other_than(&self, other_than: Option<NodeId>, timeout: Duration) -> Result<NodeId> {
        let (reply, answer) = reply_slot();
        self.enqueue(Request::AwaitLeader { other_than, timeout, reply })?;
        explain_stop(&self.shared, answer.wait(timeout))
    }

    /// A channel of this node's [`Status`], sent once at once and then whenever its role,
    /// leader or membership changes: ra's `state_enter`, openraft's metrics watch,
    /// hashicorp's `LeaderCh`. It holds up to 64 statuses; a receiver that lets it fill
    /// misses changes until it drains it (the latest status is always a `status()` away).
    /// Dropping the receiver ends the watch; the node stopping ends it too (the receiver
    /// then sees the channel disconnected).
    pub fn watch(&self) -> Result<crossbeam_channel::Receiver<Status>> {
        if self.shared.exited.load(Ordering::SeqCst) {
            return explain_stop(&self.shared, Err(Error::Stopped));
        }
        let (tx, rx) = crossbeam_channel::bounded(WATCH_CAPACITY);
        {
            let mut watchers = self.shared.watchers.lock();
            // Checked under the lock the node's `Drop` takes to end every watch: either it
            // ends this one too, or we see it gone.
            if self.shared.exited.load(Ordering::SeqCst) {
                return explain_stop(&self.shared, Err(Error::Stopped));
            }
            watchers.new.push(tx);
        }
        self.shared.new_watcher.store(true, Ordering::Release);
        if let Err(e) = self.shared.wake() {
            log::warn!("cannot wake the node thread: {e}");
        }
        Ok(rx)
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
    ///
    /// With [`crate::Config::lease_reads`] on, it skips no lease: a leader's read lease
    /// rests on its followers' promise to vote for nobody else for an election timeout, so
    /// voters that heard from a leader that recently ignore this campaign, and a node that
    /// did itself refuses with [`Error::LeaseHeld`]. Use [`Client::transfer_leadership`]
    /// to move a live leader; a dead one is replaced once its lease has run out.
    pub fn trigger_election(&self) -> Result<()> {
        self.call(|reply| Request::TriggerElection { reply })
    }

    /// Hands leadership to voter `to` (§3.10) and returns once `to` leads. While the
    /// transfer runs, the leader proposes nothing: [`Client::write`] waits and retries,
    /// other calls fail with [`Error::TransferInProgress`].
    pub fn transfer_leadership(&self, to: NodeId) -> Result<()> {
        self.call(|reply| Request::TransferLeadership { to, reply })
    }

    fn call<T: 'static>(&self, make: impl FnOnce(Reply<T>) -> LocalRequest<M>) -> Result<T> {
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

/// Statuses a watch channel holds.
const WATCH_CAPACITY: usize = 64;

/// Longest pause between retries of a write.
const RETRY_BACKOFF_MAX: Duration = Duration::from_millis(50);

/// A `Stopped` answer from a node that stopped because its storage failed becomes
/// [`Error::StorageFailed`], so the caller learns why (both mean nothing was proposed).
fn explain_stop<T>(shared: &Shared, result: Result<T>) -> Result<T> {
    match (result, shared.storage_failure.get()) {
        (Err(Error::Stopped), Some(why)) => Err(Error::StorageFailed(why.clone())),
        (result, _) => result,
    }
}
