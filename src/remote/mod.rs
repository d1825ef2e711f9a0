//! The remote client: calls a cluster from any process over TCP, following the leader.
//!
//! It speaks the nodes' own framing (length prefix + MessagePack) and handshake, as a
//! *client* (the role is covered by the cluster-secret proof), so a node tells it from a
//! peer and it can never inject Raft messages. Writes carry the client's session (§6.3),
//! so retrying one after a lost connection or a timeout, at another node, applies it once.

mod link;
pub(crate) mod wire;

use std::marker::PhantomData;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde::de::DeserializeOwned;

use crate::core::NodeId;
use crate::error::{Error, Peer, Result};
use crate::replica::{check_command, encode_command, tag_encoded};
use crate::session::ClientSession;
use crate::state_machine::{Queries, StateMachine};
use crate::status::Status;
use crate::transport::{ClusterKey, DEFAULT_MAX_FRAME_BYTES};
use link::{InFlight, Link, LinkConfig, Outcome};
use wire::{Bytes, Call, WireError, millis};

/// Longest pause between two attempts.
const BACKOFF_MAX: Duration = Duration::from_millis(100);

/// How to reach a cluster: its nodes' addresses (any of them; the client finds the
/// leader), its id and secret, and how long calls wait.
#[derive(Clone, Debug)]
pub struct RemoteOptions {
    /// Nodes to try, round robin, while no leader is known.
    addrs: Vec<SocketAddr>,
    link: LinkConfig,
    timeout: Duration,
    attempt_timeout: Duration,
}

impl RemoteOptions {
    /// Options for the cluster whose nodes listen on `addrs` (the nodes' own listen
    /// addresses: clients and peers share the port). Cluster id `"quorate"`, no secret,
    /// a 5 s timeout, as [`crate::Config`]'s defaults.
    pub fn new(addrs: impl IntoIterator<Item = SocketAddr>) -> RemoteOptions {
        RemoteOptions {
            addrs: addrs.into_iter().collect(),
            link: LinkConfig {
                cluster_id: "quorate".into(),
                key: ClusterKey::unauthenticated(),
                connect_timeout: Duration::from_secs(1),
                max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
            },
            timeout: Duration::from_secs(5),
            attempt_timeout: Duration::from_secs(2),
        }
    }

    /// The cluster's id (as [`crate::Config::cluster_id`]); a node of another cluster
    /// refuses the connection, which fails with [`Error::Config`].
    pub fn cluster_id(mut self, id: impl Into<String>) -> RemoteOptions {
        self.link.cluster_id = id.into();
        self
    }

    /// The cluster's secret (as [`crate::Config::cluster_secret`]).
    pub fn cluster_secret(mut self, secret: impl AsRef<[u8]>) -> RemoteOptions {
        self.link.key = ClusterKey::from_secret(secret.as_ref());
        self
    }

    /// How long each call waits in all, retries included (default 5 s).
    pub fn timeout(mut self, timeout: Duration) -> RemoteOptions {
        self.timeout = timeout;
        self
    }

    /// How long one attempt of a call that is safe to repeat (a write with a session, a
    /// read) waits for its answer before the client gives up on that connection and tries
    /// again, at the leader it knows or another node (default 2 s): a node that died
    /// without closing its connections is then left behind without waiting out the whole
    /// timeout.
    pub fn attempt_timeout(mut self, timeout: Duration) -> RemoteOptions {
        self.attempt_timeout = timeout;
        self
    }

    /// How long connecting to one node may take (default 1 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> RemoteOptions {
        self.link.connect_timeout = timeout;
        self
    }

    /// Connects to the first node that answers, checking its cluster id and secret.
    pub fn connect<M: StateMachine>(self) -> Result<RemoteClient<M>> {
        if self.addrs.is_empty() {
            return Err(Error::Config("a remote client needs at least one node address".into()));
        }
        let client = RemoteClient {
            shared: Arc::new(Shared { options: self, state: Mutex::new(LinkState::default()) }),
            session: Some(Arc::new(ClientSession::default())),
            _machine: PhantomData,
        };
        let deadline = Instant::now() + client.shared.options.timeout;
        client.shared.link(deadline)?;
        Ok(client)
    }
}

/// A client of a cluster from any process: `Clone + Send + Sync`; clones share the
/// connection and the session.
///
/// Every call goes to the leader: the client follows redirects, moves on from a node that
/// is down or stopped, and retries, with backoff, until the call's timeout. It retries
/// only what is safe to retry: a write only when its session makes a second attempt apply
/// at most once (see [`RemoteClient::write`]); reads and status calls always; membership
/// calls only when the node certainly did nothing.
///
/// ```no_run
/// # use serde::{Deserialize, Serialize};
/// # #[derive(Default)] struct Counter { value: u64 }
/// # impl quorate::StateMachine for Counter {
/// #     type Command = u64; type Response = u64;
/// #     fn apply(&mut self, n: u64) -> u64 { self.value += n; self.value }
/// # }
/// use quorate::RemoteClient;
///
/// let client: RemoteClient<Counter> = RemoteClient::connect(&["127.0.0.1:7001".parse()?])?;
/// let value = client.write(5)?; // reaches the leader, wherever it is
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct RemoteClient<M: StateMachine> {
    shared: Arc<Shared>,
    session: Option<Arc<ClientSession>>,
    _machine: PhantomData<fn() -> M>,
}

impl<M: StateMachine> Clone for RemoteClient<M> {
    fn clone(&self) -> Self {
        RemoteClient { shared: self.shared.clone(), session: self.session.clone(), _machine: PhantomData }
    }
}

struct Shared {
    options: RemoteOptions,
    state: Mutex<LinkState>,
}

#[derive(Default)]
struct LinkState {
    /// The connection in use (to the leader, as far as the client knows).
    link: Option<Arc<Link>>,
    /// Where the last redirect pointed.
    leader: Option<SocketAddr>,
    /// The next of `addrs` to try when no leader is known.
    next: usize,
}

/// Sends writes an in-process [`crate::Client`] could not propose (its node is a
/// follower) to the leader, Pistis-style: see [`crate::Client::forwarding`].
pub(crate) struct Forwarder {
    shared: Shared,
}

impl Forwarder {
    /// A forwarder that reaches the cluster as `options` say (the node's own cluster id,
    /// secret and peers).
    pub fn new(options: RemoteOptions) -> Forwarder {
        Forwarder { shared: Shared { options, state: Mutex::new(LinkState::default()) } }
    }

    /// Sends `command` (an encoded command entry) to the leader at `leader`, following
    /// further redirects until `deadline`. `safe`: the command carries a session, so an
    /// attempt whose fate is unknown may be sent again.
    pub fn write(&self, leader: SocketAddr, command: Vec<u8>, safe: bool, deadline: Instant) -> Result<Bytes> {
        self.shared.state.lock().leader = Some(leader);
        let command = Bytes(command);
        let make = |left: Duration| Call::Write { command: command.clone(), timeout_ms: millis(left) };
        self.shared.call(&make, safe, deadline)
    }

    /// Registers a session with `secret` at the leader at `leader` (retried: an extra
    /// registration only leaves an unused session).
    pub fn register(&self, leader: SocketAddr, secret: u64, deadline: Instant) -> Result<u64> {
        self.shared.state.lock().leader = Some(leader);
        let make = |left: Duration| Call::RegisterSession { secret, timeout_ms: millis(left) };
        decode(self.shared.call(&make, true, deadline)?)
    }
}

/// Options for a forwarder: the node's own cluster id and key, its peers' addresses.
pub(crate) fn forwarding_options(
    cluster_id: &str,
    key: ClusterKey,
    peers: impl IntoIterator<Item = SocketAddr>,
    max_frame_bytes: usize,
) -> RemoteOptions {
    let mut options = RemoteOptions::new(peers).cluster_id(cluster_id);
    options.link.key = key;
    options.link.max_frame_bytes = max_frame_bytes;
    options
}

/// Decodes a forwarded write's answer.
pub(crate) fn decode_answer<T: DeserializeOwned>(bytes: Bytes) -> Result<T> {
    decode(bytes)
}

/// What to do after an attempt's answer.
enum Next {
    Done(Result<Bytes>),
    /// Certainly not carried out: try again (at the leader, if the answer named one).
    Retry,
    /// Maybe carried out: try again only if that is safe, else answer with the error.
    Uncertain(Error),
}

impl Shared {
    /// The connection to use: the current one, else a new one to the leader last named,
    /// else to the next address, round robin, until `deadline`.
    fn link(&self, deadline: Instant) -> Result<Arc<Link>> {
        let mut backoff = Duration::from_millis(1);
        loop {
            let target = {
                let mut s = self.state.lock();
                match &s.link {
                    Some(link) if !link.is_dead() => return Ok(link.clone()),
                    _ => s.link = None,
                }
                match s.leader.take() {
                    Some(addr) => addr,
                    // No address to try (a forwarder on a node that knows no member yet).
                    None if self.options.addrs.is_empty() => return Err(Error::Redirect { leader: None }),
                    None => {
                        let addr = self.options.addrs[s.next % self.options.addrs.len()];
                        s.next += 1;
                        addr
                    }
                }
            };
            match Link::open(target, &self.options.link) {
                Ok(link) => {
                    let link = Arc::new(link);
                    self.state.lock().link = Some(link.clone());
                    return Ok(link);
                }
                // A node of another cluster, or with another secret: no retry will help.
                Err(e @ Error::Config(_)) => return Err(e),
                // The last node's error says why none could be reached.
                Err(e) if Instant::now() + backoff >= deadline => return Err(e),
                Err(e) => log::debug!("remote client: cannot connect to {target}: {e}"),
            }
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }

    /// Forgets `link` (if still current), and follows `leader` next if it has an address.
    fn move_on(&self, link: &Link, leader: Option<Peer>) {
        let mut s = self.state.lock();
        if s.link.as_ref().is_some_and(|l| std::ptr::eq(&**l, link)) {
            s.link = None;
        }
        if let Some(addr) = leader.and_then(|p| p.addr) {
            s.leader = Some(addr);
        }
    }

    /// Sends what `make` builds until an answer, or `deadline`. `safe`: whether a call
    /// that may have been carried out can be sent again.
    ///
    /// Once an attempt's fate is uncertain, no later failure is reported as certain: an
    /// error ending the call is then that uncertain error (`Timeout`, `LeadershipLost`),
    /// whatever the last attempt met (a refusal, an unreachable node, an expired session),
    /// since the earlier attempt may have taken effect.
    fn call(&self, make: &dyn Fn(Duration) -> Call, safe: bool, deadline: Instant) -> Result<Bytes> {
        let mut uncertain: Option<Error> = None;
        let fail = |uncertain: Option<Error>, e: Error| Err(uncertain.unwrap_or(e));
        let mut backoff = Duration::from_millis(1);
        loop {
            let link = match self.link(deadline) {
                Ok(link) => link,
                Err(e) => return fail(uncertain, e),
            };
            let now = Instant::now();
            // A call that may be repeated gives each attempt less than the whole deadline.
            let attempt_deadline = if safe { deadline.min(now + self.options.attempt_timeout) } else { deadline };
            let next = match link.send(make(attempt_deadline.saturating_duration_since(now))) {
                Err(e) => {
                    // Not sent whole: the node never read it.
                    log::debug!("remote client: cannot send to node {}: {e}", link.node);
                    self.move_on(&link, None);
                    Next::Retry
                }
                Ok(in_flight) => self.judge(&link, &in_flight, attempt_deadline),
            };
            match next {
                Next::Done(Ok(bytes)) => return Ok(bytes),
                Next::Done(Err(e)) => return fail(uncertain, e),
                Next::Uncertain(e) if !safe => return Err(e),
                Next::Uncertain(e) => uncertain = Some(e),
                Next::Retry => {}
            }
            if Instant::now() + backoff >= deadline {
                return fail(uncertain, Error::Timeout);
            }
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }

    fn judge(&self, link: &Link, in_flight: &InFlight, deadline: Instant) -> Next {
        // The node answers `Timeout` itself at the deadline; a little grace lets that
        // answer (and its leader hint) arrive.
        match in_flight.wait(deadline + Duration::from_millis(50)) {
            Outcome::Answered(Ok(bytes)) => Next::Done(Ok(bytes)),
            Outcome::Answered(Err(WireError::Redirect { leader })) => {
                self.move_on(link, leader);
                Next::Retry
            }
            // Stopping, or between leaders: certainly nothing done.
            Outcome::Answered(Err(WireError::Stopped | WireError::StorageFailed(_))) => {
                self.move_on(link, None);
                Next::Retry
            }
            Outcome::Answered(Err(WireError::Dropped { leader })) => {
                self.move_on(link, leader);
                Next::Retry
            }
            Outcome::Answered(Err(WireError::TransferInProgress)) => Next::Retry,
            Outcome::Answered(Err(e @ (WireError::Timeout | WireError::LeadershipLost))) => {
                self.move_on(link, None);
                Next::Uncertain(e.into())
            }
            Outcome::Answered(Err(e)) => Next::Done(Err(e.into())),
            Outcome::TimedOut => {
                // Silent past the attempt's deadline: the node may be gone without a word.
                self.move_on(link, None);
                Next::Uncertain(Error::Timeout)
            }
            Outcome::Lost => {
                self.move_on(link, None);
                Next::Uncertain(Error::LeadershipLost)
            }
        }
    }
}

impl<M: StateMachine> RemoteClient<M> {
    /// Connects to the cluster whose nodes listen on `addrs`, with [`RemoteOptions`]'
    /// defaults (see [`RemoteOptions::connect`] for a cluster id, a secret, timeouts).
    pub fn connect(addrs: &[SocketAddr]) -> Result<RemoteClient<M>> {
        RemoteOptions::new(addrs.iter().copied()).connect()
    }

    /// A handle to the same cluster with a session of its own.
    pub fn new_session(&self) -> RemoteClient<M> {
        RemoteClient { session: Some(Arc::new(ClientSession::default())), ..self.clone() }
    }

    /// A handle whose writes carry no session: a write whose fate is uncertain (a lost
    /// connection, a timeout) is then never retried, and its error is indeterminate.
    pub fn without_session(&self) -> RemoteClient<M> {
        RemoteClient { session: None, ..self.clone() }
    }

    /// The id of the node the client is connected to now, if any.
    pub fn connected_node(&self) -> Option<NodeId> {
        self.shared.state.lock().link.as_ref().filter(|l| !l.is_dead()).map(|l| l.node)
    }

    fn deadline(&self) -> Instant {
        Instant::now() + self.shared.options.timeout
    }

    /// Replicates `command` through the leader and returns the state machine's answer.
    ///
    /// With a session (the default), every attempt carries the same session tag, so the
    /// client retries across leader changes, lost connections and timeouts until its
    /// timeout, and the command applies once. The errors left are `Timeout` (its fate
    /// still unknown at the deadline: indeterminate), `SessionExpired` only if a new
    /// session cannot be had either, and the refusals no retry helps (`TooLarge`, ...).
    pub fn write(&self, command: M::Command) -> Result<M::Response> {
        self.write_timeout(command, self.shared.options.timeout)
    }

    /// [`RemoteClient::write`] with its own timeout (retries included).
    pub fn write_timeout(&self, command: M::Command, timeout: Duration) -> Result<M::Response> {
        let deadline = Instant::now() + timeout.min(Duration::from_secs(365 * 24 * 3600));
        let body = crate::codec::to_vec(&command).map_err(Error::Codec)?;
        check_command::<M::Command>(&body)?;
        let Some(session) = &self.session else {
            let command = Bytes(encode_command(None, &command)?);
            let make = |left: Duration| Call::Write { command: command.clone(), timeout_ms: millis(left) };
            return decode(self.shared.call(&make, false, deadline)?);
        };
        loop {
            let Some(tag) = session.begin() else {
                self.session_id(session, deadline)?; // registers one
                continue;
            };
            let (id, seq) = (tag.session, tag.seq);
            let command = Bytes(tag_encoded(tag, &body));
            let make = |left: Duration| Call::Write { command: command.clone(), timeout_ms: millis(left) };
            // Every attempt carries the same tag: the node applies it at most once.
            let result = self.shared.call(&make, true, deadline);
            session.finish(id, seq);
            match result {
                Err(Error::SessionExpired) if Instant::now() < deadline => session.expire(id),
                result => return decode(result?),
            }
        }
    }

    /// Hands `command` to the leader and returns at once, so one thread can keep many
    /// writes in flight; [`RemotePending::wait`] returns the answer. Proposed once, never
    /// retried (no session): a `Redirect` or a lost connection comes back from `wait`.
    pub fn submit(&self, command: M::Command) -> Result<RemotePending<M::Response>> {
        let deadline = self.deadline();
        let bytes = encode_command(None, &command)?;
        check_command::<M::Command>(crate::replica::command_body(&bytes).expect("a plain command"))?;
        let link = self.shared.link(deadline)?;
        let timeout_ms = millis(deadline.saturating_duration_since(Instant::now()));
        let in_flight = link.send(Call::Write { command: Bytes(bytes), timeout_ms })?;
        Ok(RemotePending { in_flight, link, deadline, _response: PhantomData })
    }

    /// The session's id, registering one first if needed (retried: an extra registration
    /// only leaves an unused session, which expires).
    fn session_id(&self, session: &ClientSession, deadline: Instant) -> Result<u64> {
        session.id_or_register(deadline, |secret| {
            let make = |left: Duration| Call::RegisterSession { secret, timeout_ms: millis(left) };
            decode(self.shared.call(&make, true, deadline)?)
        })
    }

    /// Asks the leader `query` after it confirmed its leadership with a majority
    /// (ReadIndex, §6.4): the answer reflects every write acknowledged before the call.
    /// The machine must implement [`Queries`] (and use `quorate::remote_queries!()`).
    pub fn read(&self, query: M::Query) -> Result<M::QueryResponse>
    where
        M: Queries,
    {
        self.query(query, false)
    }

    /// Asks `query` of whichever node the client is connected to, without confirming
    /// anything: possibly stale.
    pub fn read_local(&self, query: M::Query) -> Result<M::QueryResponse>
    where
        M: Queries,
    {
        self.query(query, true)
    }

    fn query(&self, query: M::Query, local: bool) -> Result<M::QueryResponse>
    where
        M: Queries,
    {
        let query = Bytes(rmp_serde::to_vec(&query).map_err(|e| Error::Codec(e.to_string()))?);
        let make = |_: Duration| Call::Query { query: query.clone(), local };
        decode(self.shared.call(&make, true, self.deadline())?)
    }

    /// The status of the node the client is connected to.
    pub fn status(&self) -> Result<Status> {
        decode(self.shared.call(&|_| Call::Status, true, self.deadline())?)
    }

    /// Waits until the node the client is connected to knows a leader; returns its id.
    pub fn await_leader(&self, timeout: Duration) -> Result<NodeId> {
        let deadline = Instant::now() + timeout;
        let make = |left: Duration| Call::AwaitLeader { other_than: None, timeout_ms: millis(left) };
        decode(self.shared.call(&make, true, deadline)?)
    }

    /// As [`crate::Client::add_server`], through the leader.
    pub fn add_server(&self, id: NodeId, addr: SocketAddr) -> Result<()> {
        let make = |_: Duration| Call::AddServer { id, addr: addr.to_string() };
        decode(self.shared.call(&make, false, self.deadline())?)
    }

    /// As [`crate::Client::remove_server`], through the leader.
    pub fn remove_server(&self, id: NodeId) -> Result<()> {
        decode(self.shared.call(&|_| Call::RemoveServer { id }, false, self.deadline())?)
    }

    /// As [`crate::Client::transfer_leadership`], through the leader.
    pub fn transfer_leadership(&self, to: NodeId) -> Result<()> {
        decode(self.shared.call(&|_| Call::TransferLeadership { to }, false, self.deadline())?)
    }
}

/// A write handed to the cluster by [`RemoteClient::submit`], its answer still to come.
#[must_use = "a submitted write is only known to have succeeded once `wait` says so"]
pub struct RemotePending<R> {
    in_flight: InFlight,
    /// Keeps the connection the write went out on.
    link: Arc<Link>,
    deadline: Instant,
    _response: PhantomData<fn() -> R>,
}

impl<R: DeserializeOwned> RemotePending<R> {
    /// Waits for the answer until the deadline set at submission. `Timeout` and
    /// `LeadershipLost` (the connection broke) are indeterminate.
    pub fn wait(self) -> Result<R> {
        match self.in_flight.wait(self.deadline) {
            Outcome::Answered(result) => decode(result.map_err(Error::from)?),
            Outcome::TimedOut => Err(Error::Timeout),
            Outcome::Lost => {
                log::debug!("remote client: lost the connection to node {} at {}", self.link.node, self.link.addr);
                Err(Error::LeadershipLost)
            }
        }
    }
}

fn decode<T: DeserializeOwned>(bytes: Bytes) -> Result<T> {
    rmp_serde::from_slice(&bytes.0).map_err(|e| Error::Codec(format!("an answer from the node: {e}")))
}
