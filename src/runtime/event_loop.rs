//! The node thread's loop, as mio's own examples write it: poll, drain every ready
//! source until `WouldBlock`, then turn the core's output into I/O once per turn.

use std::io::ErrorKind;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering, fence};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token, Waker};

use crate::config::Config;
use crate::core::{Message, MessageKind, NodeId, Raft, Role};
use crate::replica::{Replica, Request, Respond};
use crate::state_machine::StateMachine;
use crate::status::Status;
use crate::storage::{FileOptions, FileStorage, MemoryStorage, NodeStorage};
use crate::transport::ConnectionConfig;

use super::clients::Clients;
use super::limits::{AcceptRetry, Deadlines, FRAME_DEADLINE};
use super::peers::{Identity, Peers};
use super::request::{self, Local, LocalRequest};

/// The listening socket's token.
pub(crate) const LISTENER: Token = Token(0);
/// The token client requests wake the loop with.
pub(crate) const WAKER: Token = Token(1);
/// Peer connections get tokens from here on.
const FIRST_PEER_TOKEN: usize = 2;
/// Most client requests taken per turn: a flood of requests must not starve heartbeats.
const REQUESTS_PER_TURN_MAX: usize = 4096;
/// Most poll events handled per turn.
const EVENTS_CAPACITY: usize = 1024;
/// Durable mode: sync after sending the turn's messages (measured: see the durable bench).
const SYNC_AFTER_SEND: bool = true;
/// Most syncs per turn: what one sync releases rarely needs another (a sync releases acks
/// and commits, which write nothing); if it does, the next turn comes at once.
const SYNCS_PER_TURN_MAX: usize = 2;
/// If the loop falls this many ticks behind, it skips them instead of catching up (and
/// tells the replica, whose read lease is measured in ticks: see `on_timers`).
const TICKS_CATCH_UP_MAX: u32 = 5;

/// State shared between the node thread and its handles.
pub(crate) struct Shared {
    pub stop: AtomicBool,
    pub waker: Waker,
    /// The node thread is (about to be) blocked in `poll`: a new request must wake it.
    /// While it is awake it drains the queue anyway, so clients skip the wake-up syscall.
    pub sleeping: AtomicBool,
    /// The node thread has finished (or is unwinding): it takes no more requests. Whoever
    /// sees this drains the queue, so every queued request answers `Stopped` at once.
    pub exited: AtomicBool,
    /// Why the node stopped, if its storage failed: set before `exited`, so clients that
    /// see the node gone answer [`crate::Error::StorageFailed`] instead of `Stopped`.
    pub storage_failure: OnceLock<String>,
    /// Channels that get this node's status whenever its role, leader or membership
    /// changes (see [`crate::Client::watch`]).
    pub watchers: parking_lot::Mutex<Watchers>,
    /// A watcher was added: send it the current status at the next turn.
    pub new_watcher: AtomicBool,
}

impl Shared {
    /// Wakes the node thread if it sleeps. Called after enqueueing a request.
    pub fn wake(&self) -> std::io::Result<()> {
        // Pairs with the fence in `NodeLoop::poll_timeout` (a Dekker handshake): either we
        // see `sleeping`, or the node sees our request in the queue.
        fence(Ordering::SeqCst);
        if self.sleeping.swap(false, Ordering::SeqCst) { self.waker.wake() } else { Ok(()) }
    }
}

/// The channels of [`crate::Client::watch`].
#[derive(Default)]
pub(crate) struct Watchers {
    /// Get the status at every role, leader or membership change.
    pub all: Vec<crossbeam_channel::Sender<Status>>,
    /// Added since the last turn: they get the current status first.
    pub new: Vec<crossbeam_channel::Sender<Status>>,
}

/// One node's event loop and everything it owns.
pub(crate) struct NodeLoop<M: StateMachine> {
    id: NodeId,
    /// The server itself: core, storage, state machine, pending requests.
    replica: Replica<M, NodeStorage, Local>,
    poll: Poll,
    listener: TcpListener,
    peers: Peers,
    /// Remote clients' connections (handed over by `peers` after their handshake).
    clients: Clients,
    /// Requests read from remote clients this turn.
    remote_requests: Vec<LocalRequest<M>>,
    requests: Receiver<LocalRequest<M>>,
    shared: Arc<Shared>,
    tick: Duration,
    next_tick: Instant,
    inbox: Vec<(NodeId, Message)>,
    /// Work left over from the last turn (requests, entries to apply, unread input).
    busy: bool,
    accept_retry: AcceptRetry,
}

impl<M: StateMachine> NodeLoop<M> {
    /// Sets up the loop; `listener` is already bound to `config.listen`.
    pub fn new(
        config: &Config,
        listener: TcpListener,
        poll: Poll,
        machine: M,
        requests: Receiver<LocalRequest<M>>,
        shared: Arc<Shared>,
    ) -> crate::Result<NodeLoop<M>> {
        let (storage, incarnation) = open_storage(config)?;
        let replica = Replica::new(config.replica_config(), storage, machine)?;
        let me = Identity {
            id: config.id,
            cluster_id: config.cluster_id.clone(),
            incarnation,
            listen_addr: config.advertised(),
            metadata: config.metadata.clone(),
        };
        let conn_config = ConnectionConfig {
            max_frame_bytes: config.max_frame_bytes,
            key: config.cluster_key,
            ..ConnectionConfig::default()
        };
        let deadlines = Deadlines::new(config.heartbeat_interval);
        let mut peers = Peers::new(me, conn_config, config.peers.clone(), FIRST_PEER_TOKEN, deadlines);
        peers.set_member_addrs(member_addrs(replica.core()));
        Ok(NodeLoop {
            id: config.id,
            replica,
            poll,
            listener,
            peers,
            clients: Clients::new(config.id, config.max_frame_bytes),
            remote_requests: Vec::new(),
            requests,
            shared,
            tick: config.tick,
            next_tick: Instant::now() + config.tick,
            inbox: Vec::new(),
            busy: false,
            accept_retry: AcceptRetry::default(),
        })
    }

    /// Runs until stopped.
    pub fn run(mut self) {
        if let Err(e) = self.poll.registry().register(&mut self.listener, LISTENER, Interest::READABLE) {
            log::error!("node {}: cannot register the listener: {e}", self.id);
            return self.shutdown();
        }
        log::info!("node {}: running on {:?}", self.id, self.listener.local_addr());
        let mut events = Events::with_capacity(EVENTS_CAPACITY);
        request::defer_wakes();
        while !self.shared.stop.load(Ordering::Acquire) && self.replica.poisoned().is_none() {
            // The last turn's output is written: now its answers' waiters are woken.
            request::wake_deferred();
            let timeout = self.poll_timeout();
            let polled = self.poll.poll(&mut events, Some(timeout));
            self.shared.sleeping.store(false, Ordering::SeqCst);
            if let Err(e) = polled {
                if e.kind() == ErrorKind::Interrupted {
                    continue;
                }
                log::error!("node {}: poll failed: {e}; stopping", self.id);
                break;
            }
            let now = Instant::now();
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accept(),
                    WAKER => {}
                    token if self.clients.contains(token) => {
                        let requests = &mut self.remote_requests;
                        self.clients.on_ready(self.poll.registry(), token, event.is_writable(), now, requests)
                    }
                    token => {
                        self.peers.on_ready(self.poll.registry(), token, event.is_writable(), &mut self.inbox, now)
                    }
                }
            }
            self.turn(now);
        }
        self.shutdown();
    }

    /// How long to block in `poll`: until the next tick, or not at all if work is left
    /// or a request arrived after the last drain.
    fn poll_timeout(&mut self) -> Duration {
        if self.busy {
            return Duration::ZERO;
        }
        self.shared.sleeping.store(true, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        if !self.requests.is_empty() {
            return Duration::ZERO;
        }
        self.next_tick.saturating_duration_since(Instant::now())
    }

    /// One turn: timers, peer input, client requests, then the replica's output, batched.
    fn turn(&mut self, now: Instant) {
        self.peers.read_leftovers(self.poll.registry(), &mut self.inbox, now);
        self.adopt_clients(now);
        self.clients.read_leftovers(self.poll.registry(), now, &mut self.remote_requests);
        // The clock is read again after the sockets were: every tick due by the time the
        // inbox's messages were read runs before they are stepped. With `now` (read before
        // the sockets), a tick due while they were read ran after a leader's heartbeat was
        // stepped, though due before it was sent, and shortened the follower's promise
        // below the `a_F + (E - 1) T_F` the read lease counts on (`core/lease.rs`).
        self.on_timers(Instant::now());
        // `drain`, not `take`: the buffer keeps its capacity from turn to turn.
        for (from, msg) in self.inbox.drain(..) {
            tell_if_removed(self.replica.core(), &mut self.peers, (from, &msg), now);
            self.replica.step(from, msg);
        }
        if self.peers.removed.is_some() && self.replica.core().leader_id().is_some() {
            self.peers.removed = None; // a leader accepts this node again
        }
        let more_requests = self.drain_requests();
        for request in std::mem::take(&mut self.remote_requests) {
            self.on_request(request);
        }
        let mut more_to_apply = self.replica.advance();
        self.send_output(now);
        // The turn's messages have left: wake the clients answered so far now, not after
        // the syncs below (durable mode), which may take milliseconds.
        request::wake_deferred();
        // Durable mode: the turn's writes are synced only now, after the leader's
        // AppendEntries left, so its sync overlaps the followers'; then what the sync
        // released (acks, votes, the leader's commit and replies) goes out.
        for _ in 0..SYNCS_PER_TURN_MAX {
            if !self.replica.storage_mut().sync_written() {
                break;
            }
            more_to_apply = self.replica.advance();
            self.send_output(now);
        }
        let unsynced = self.replica.storage().has_unsynced_writes();
        let leftovers = self.peers.has_leftovers() || self.clients.has_leftovers();
        self.busy = more_requests || more_to_apply || unsynced || leftovers;
    }

    /// Takes over the connections that turned out to be remote clients.
    fn adopt_clients(&mut self, now: Instant) {
        for (token, conn) in self.peers.take_clients() {
            self.clients.adopt(self.poll.registry(), token, conn, now, &mut self.remote_requests);
        }
    }

    /// Hands the replica's outbox to the peers and writes every socket once.
    fn send_output(&mut self, now: Instant) {
        for env in self.replica.drain_outbox() {
            self.peers.send(self.poll.registry(), env.to, env.message, now);
        }
        let changed = self.replica.take_members_changed();
        if changed {
            self.peers.set_member_addrs(member_addrs(self.replica.core()));
        }
        self.notify_watchers(changed);
        self.peers.flush_all(self.poll.registry(), now);
        self.clients.flush_all(self.poll.registry());
    }

    /// Sends the status to every watcher when role, leader or membership changed (or a
    /// watcher is new). A watcher whose channel is full misses this one (it is slow); one
    /// whose receiver is gone is dropped.
    fn notify_watchers(&mut self, changed: bool) {
        let new = self.shared.new_watcher.swap(false, Ordering::AcqRel);
        if !changed && !new {
            return;
        }
        let status = self.status();
        let send = |tx: &crossbeam_channel::Sender<Status>| match tx.try_send(status.clone()) {
            Ok(()) | Err(crossbeam_channel::TrySendError::Full(_)) => true,
            Err(crossbeam_channel::TrySendError::Disconnected(_)) => false,
        };
        let mut w = self.shared.watchers.lock();
        if changed {
            w.all.retain(send);
        }
        let mut fresh = std::mem::take(&mut w.new);
        fresh.retain(send);
        w.all.append(&mut fresh);
    }

    /// Runs the ticks due by `now` (up to [`TICKS_CATCH_UP_MAX`]) and the timers that go
    /// with them.
    fn on_timers(&mut self, now: Instant) {
        let mut ticks = 0;
        while now >= self.next_tick {
            if ticks == TICKS_CATCH_UP_MAX {
                // The loop stalled (a long apply, the thread descheduled, the process
                // stopped): the tick count now lags real time for good, and a lease
                // measured in ticks could outlast the followers' promises. Skip ahead, and
                // tell the replica so it ends the lease.
                log::debug!("node {}: the loop fell more than {TICKS_CATCH_UP_MAX} ticks behind; skipping", self.id);
                self.replica.on_clock_skipped();
                self.next_tick = now + self.tick;
                break;
            }
            self.replica.tick();
            self.next_tick += self.tick;
            self.peers.enforce_deadlines(self.poll.registry(), now);
            self.peers.connect_members(self.poll.registry(), now);
            self.clients.enforce_deadlines(self.poll.registry(), now, FRAME_DEADLINE);
            ticks += 1;
        }
        if self.accept_retry.due(now) {
            self.accept();
        }
    }

    fn accept(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((stream, addr)) => {
                    log::debug!("node {}: accepted a connection from {addr}", self.id);
                    self.peers.accept(self.poll.registry(), stream);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return self.accept_retry.on_drained(self.id),
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    // Out of file descriptors and the like: no new edge will come for the
                    // connections already waiting, so retry on the timer.
                    return self.accept_retry.on_failure(self.id, Instant::now(), &e);
                }
            }
        }
    }

    /// Takes up to [`REQUESTS_PER_TURN_MAX`] client requests; returns whether more wait.
    fn drain_requests(&mut self) -> bool {
        for _ in 0..REQUESTS_PER_TURN_MAX {
            match self.requests.try_recv() {
                Ok(request) => self.on_request(request),
                Err(_) => return false,
            }
        }
        !self.requests.is_empty()
    }

    fn on_request(&mut self, request: LocalRequest<M>) {
        match request {
            // Only the status needs what the runtime knows (refused peers).
            Request::Status { reply } => reply.send(Ok(self.status())),
            // A read may be judged against the tick count (a lease read): first run the
            // ticks that fell due since the last look at the clock (while this turn read
            // sockets, or ran a slow `read_local` closure queued before it), so the count
            // lags the clock by less than a tick, the margin the lease keeps (`lease.rs`);
            // and if too many fell due, the lease ends before the read is judged.
            Request::Read { .. } => {
                self.on_timers(Instant::now());
                self.replica.on_request(request)
            }
            request => self.replica.on_request(request),
        }
    }

    fn status(&self) -> Status {
        let mut status = Status {
            refused: self.peers.refused.clone(),
            removed: self.peers.removed.clone(),
            ..self.replica.status()
        };
        status.metrics.peers = self.peers.traffic();
        for m in &mut status.members {
            m.metadata = self.peers.metadata_of(m.id).map(str::to_owned);
        }
        status.metrics.log_syncs = self.replica.storage().log_syncs();
        status
    }

    fn shutdown(mut self) {
        log::info!("node {}: stopping", self.id);
        if let Some(why) = self.replica.storage_failure() {
            let _ = self.shared.storage_failure.set(why.to_string());
        }
        self.replica.shutdown();
        self.peers.close_all(self.poll.registry());
        self.clients.close_all(self.poll.registry());
    }
}

impl<M: StateMachine> Drop for NodeLoop<M> {
    /// Runs on a clean stop and on a panic alike. Requests still queued are dropped, which
    /// answers them `Stopped` (see `Reply`); a client that enqueues after this sees
    /// `exited` and drains the queue itself (a Dekker handshake, as for `sleeping`).
    fn drop(&mut self) {
        request::stop_deferring_wakes();
        self.shared.exited.store(true, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        // Ends every watch: their receivers see the channel disconnected.
        *self.shared.watchers.lock() = Watchers::default();
        for request in self.requests.try_iter() {
            drop(request);
        }
    }
}

/// The node's storage, and its incarnation (see `Hello`): random per process in memory
/// mode; the data dir's own in durable mode, so a restart on the same data is accepted by
/// peers' restart guard while a node on a new or wiped directory is refused like a
/// restarted memory-only one.
fn open_storage(config: &Config) -> Result<(NodeStorage, u64), crate::Error> {
    let Some(dir) = &config.data_dir else {
        return Ok((NodeStorage::Memory(MemoryStorage::default()), config.core_config().seed ^ 0xA5A5_5A5A));
    };
    let options = FileOptions {
        faults: config.storage_faults.clone(),
        sync_after_send: SYNC_AFTER_SEND,
        ..FileOptions::default()
    };
    let storage = FileStorage::open(dir, &config.cluster_id, config.id, options).map_err(|e| {
        log::error!("node {}: {e}", config.id);
        crate::Error::DataDir(e.to_string())
    })?;
    let incarnation = storage.incarnation();
    Ok((NodeStorage::File(Box::new(storage)), incarnation))
}

/// As leader, answers a vote request from a server outside the configuration (Raft drops
/// it) with a word that it was removed, so its status can say so.
fn tell_if_removed(core: &Raft, peers: &mut Peers, (from, msg): (NodeId, &Message), now: Instant) {
    if core.role() == Role::Leader
        && matches!(msg.kind, MessageKind::RequestVote(_))
        && !core.membership().contains(from)
    {
        peers.tell_removed(from, core.current_term().0, now);
    }
}

/// The addresses the latest configuration records, parsed.
fn member_addrs(core: &Raft) -> std::collections::BTreeMap<NodeId, SocketAddr> {
    let m = core.membership();
    m.voters.iter().chain(m.learners.iter()).filter_map(|(&id, a)| a.parse().ok().map(|addr| (id, addr))).collect()
}
