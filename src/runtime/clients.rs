//! Remote clients' connections on a node: they introduced themselves with the `client`
//! role (see [`crate::transport::Handshake::client`]), so they carry client requests, never
//! Raft messages. Requests become the same replica requests in-process clients make, with
//! answers that go back over the connection (see [`Remote`]).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use mio::{Interest, Registry, Token};

use crate::error::Error;
use crate::remote::wire::{Call, ClientRequest, ClientResponse, WireError};
use crate::replica::{Request, check_command, command_body};
use crate::state_machine::StateMachine;
use crate::transport::{Connection, ReadOutcome};

use super::limits::{Activity, PARTIAL_FRAME_CHECK_BYTES, PARTIAL_FRAMES_PER_NODE_MAX};
use super::request::{LocalRequest, Outbox, Remote, Reply, encode_msgpack};

/// Most remote client connections a node keeps; past it the longest idle one with nothing
/// in flight is closed (or, if every one has requests in flight, the newcomer).
const CLIENT_CONNS_MAX: usize = 1024;
/// Most requests one connection may have unanswered; more are answered `Busy` at once, so
/// one client cannot fill the node's memory with waiting requests.
const IN_FLIGHT_PER_CLIENT_MAX: usize = 4096;
/// Most requests all remote clients together may have unanswered (each holds a pending
/// entry on the node); more are answered `Busy` at once.
const IN_FLIGHT_TOTAL_MAX: usize = 65_536;
/// Longest wait a remote client may ask for: a waiting request holds a slot of the caps
/// above, so it must not hold it long (a client that wants to wait longer asks again).
const REMOTE_TIMEOUT_MAX: Duration = Duration::from_secs(60);
/// A client connection with nothing in flight that sends nothing for this long is closed
/// (a [`crate::RemoteClient`] reconnects by itself when it next calls).
const CLIENT_IDLE_TIMEOUT: Duration = Duration::from_secs(300);

struct ClientConn {
    conn: Connection,
    interest: Interest,
    in_flight: usize,
    activity: Activity,
}

/// Every remote client connection of one node.
pub(crate) struct Clients {
    node: u64,
    conns: HashMap<Token, ClientConn>,
    /// Where replies to remote requests wait for the turn's flush.
    outbox: Outbox,
    /// Connections whose read budget ran out: read again without waiting for an event.
    unread: Vec<Token>,
    /// Requests read and not yet answered, over the open connections (a closed one's
    /// requests stop counting when it closes; their answers are then dropped).
    /// Invariant: the sum of the open connections' `in_flight`.
    in_flight: usize,
    /// Most bytes the partial frames of all client connections may hold together.
    partial_budget: usize,
}

impl Clients {
    /// Client connections of node `node`, whose frames may be up to `max_frame_bytes`.
    pub fn new(node: u64, max_frame_bytes: usize) -> Clients {
        let partial_budget = max_frame_bytes.saturating_mul(PARTIAL_FRAMES_PER_NODE_MAX);
        Clients {
            node,
            conns: HashMap::new(),
            outbox: Outbox::default(),
            unread: Vec::new(),
            in_flight: 0,
            partial_budget,
        }
    }

    pub fn contains(&self, token: Token) -> bool {
        self.conns.contains_key(&token)
    }

    pub fn has_leftovers(&self) -> bool {
        !self.unread.is_empty()
    }

    /// Takes over a connection whose handshake said "client" and reads what came with it.
    pub fn adopt<M: StateMachine>(
        &mut self,
        registry: &Registry,
        token: Token,
        conn: Connection,
        now: Instant,
        requests: &mut Vec<LocalRequest<M>>,
    ) {
        if self.conns.len() >= CLIENT_CONNS_MAX && !self.evict_idle(registry) {
            log::warn!("node {}: {CLIENT_CONNS_MAX} client connections, all busy: refusing another", self.node);
            let mut conn = conn;
            let _ = registry.deregister(&mut conn);
            return;
        }
        let interest = conn.interest();
        self.conns.insert(token, ClientConn { conn, interest, in_flight: 0, activity: Activity::new(now) });
        log::debug!("node {}: a remote client connected", self.node);
        self.on_ready(registry, token, true, now, requests);
    }

    fn evict_idle(&mut self, registry: &Registry) -> bool {
        let idle = self.conns.iter().filter(|(_, c)| c.in_flight == 0).min_by_key(|(_, c)| c.activity.last_frame_at);
        let Some((&token, _)) = idle else { return false };
        self.close(registry, token, "too many client connections; closing the longest idle");
        true
    }

    /// Handles readiness: flushes, then reads requests into `requests`.
    pub fn on_ready<M: StateMachine>(
        &mut self,
        registry: &Registry,
        token: Token,
        writable: bool,
        now: Instant,
        requests: &mut Vec<LocalRequest<M>>,
    ) {
        if writable {
            self.flush_one(registry, token);
        }
        if let Err(why) = self.read(token, now, requests) {
            self.close(registry, token, &why);
        }
        self.enforce_partial_budget(registry, token);
    }

    /// Closes the connection holding the largest partial frame while all partial frames
    /// together exceed their budget, so many trickling clients cannot pin memory.
    fn enforce_partial_budget(&mut self, registry: &Registry, token: Token) {
        if self.conns.get(&token).is_none_or(|c| c.conn.partial_frame_bytes() <= PARTIAL_FRAME_CHECK_BYTES) {
            return;
        }
        loop {
            let total: usize = self.conns.values().map(|c| c.conn.partial_frame_bytes()).sum();
            if total <= self.partial_budget {
                return;
            }
            let largest = self.conns.iter().max_by_key(|(_, c)| c.conn.partial_frame_bytes()).map(|(&t, _)| t);
            let Some(largest) = largest else { return };
            self.close(registry, largest, "client partial frames over the node's budget; closing the largest");
        }
    }

    /// Closes connections that stalled mid-frame, or sat idle with nothing in flight.
    pub fn enforce_deadlines(&mut self, registry: &Registry, now: Instant, frame_deadline: Duration) {
        let doomed: Vec<(Token, &'static str)> = self
            .conns
            .iter()
            .filter_map(|(&t, c)| {
                if c.activity.partial_since.is_some_and(|at| now.duration_since(at) > frame_deadline) {
                    Some((t, "a frame was not completed in time"))
                } else if c.in_flight == 0 && now.duration_since(c.activity.last_frame_at) > CLIENT_IDLE_TIMEOUT {
                    Some((t, "idle for too long"))
                } else {
                    None
                }
            })
            .collect();
        for (token, why) in doomed {
            self.close(registry, token, why);
        }
    }

    /// Re-reads connections whose read budget ran out last turn.
    pub fn read_leftovers<M: StateMachine>(
        &mut self,
        registry: &Registry,
        now: Instant,
        requests: &mut Vec<LocalRequest<M>>,
    ) {
        for token in std::mem::take(&mut self.unread) {
            self.on_ready(registry, token, false, now, requests);
        }
    }

    fn read<M: StateMachine>(
        &mut self,
        token: Token,
        now: Instant,
        requests: &mut Vec<LocalRequest<M>>,
    ) -> Result<(), String> {
        let Some(c) = self.conns.get_mut(&token) else { return Ok(()) };
        let mut frames: Vec<ClientRequest> = Vec::new();
        // A frame that is not a client request (a Raft message, junk) fails to decode here
        // and closes the connection: a client cannot speak as a peer.
        let outcome = c.conn.read_frames(&mut frames);
        c.activity.on_read(now, frames.len(), c.conn.partial_frame_bytes());
        for frame in frames {
            // Every frame gets exactly one answer, which `flush_all` counts off.
            let busy = c.in_flight >= IN_FLIGHT_PER_CLIENT_MAX || self.in_flight >= IN_FLIGHT_TOTAL_MAX;
            c.in_flight += 1;
            self.in_flight += 1;
            if busy {
                self.outbox.lock().push((token, ClientResponse { id: frame.id, result: Err(WireError::Busy) }));
                continue;
            }
            match to_request::<M>(token, frame, &self.outbox) {
                Ok(request) => requests.push(request),
                Err((id, e)) => self.outbox.lock().push((token, ClientResponse { id, result: Err(e.into()) })),
            }
        }
        match outcome.map_err(|e| format!("bad input from a client: {e}"))? {
            ReadOutcome::Drained => Ok(()),
            ReadOutcome::MoreAvailable => {
                self.unread.push(token);
                Ok(())
            }
            ReadOutcome::Closed => Err("closed by the client".into()),
        }
    }

    /// Writes the turn's replies: queues each on its connection, then writes every socket
    /// once.
    pub fn flush_all(&mut self, registry: &Registry) {
        let replies = std::mem::take(&mut *self.outbox.lock());
        if replies.is_empty() {
            return;
        }
        let mut touched = Vec::new();
        for (token, response) in replies {
            // The client may have gone meanwhile: its replies have nowhere to go (and its
            // requests stopped counting when it closed).
            let Some(c) = self.conns.get_mut(&token) else { continue };
            debug_assert!(c.in_flight > 0 && self.in_flight > 0, "an answer to a request never read");
            c.in_flight -= 1;
            self.in_flight -= 1;
            if let Err(e) = c.conn.queue(&response) {
                // Too much unsent (a client that stopped reading), or a reply too large.
                self.close(registry, token, &format!("cannot queue a reply: {e}"));
                continue;
            }
            touched.push(token);
        }
        touched.sort_unstable();
        touched.dedup();
        for token in touched {
            self.flush_one(registry, token);
        }
    }

    fn flush_one(&mut self, registry: &Registry, token: Token) {
        let Some(c) = self.conns.get_mut(&token) else { return };
        if let Err(e) = c.conn.flush() {
            return self.close(registry, token, &e.to_string());
        }
        let interest = c.conn.interest();
        if interest != c.interest {
            c.interest = interest;
            if let Err(e) = registry.reregister(&mut c.conn, token, interest) {
                self.close(registry, token, &e.to_string());
            }
        }
    }

    fn close(&mut self, registry: &Registry, token: Token, why: &str) {
        if let Some(mut c) = self.conns.remove(&token) {
            self.in_flight -= c.in_flight;
            let _ = registry.deregister(&mut c.conn);
            log::debug!("node {}: closed a client connection: {why}", self.node);
        }
    }

    pub fn close_all(&mut self, registry: &Registry) {
        self.in_flight = 0;
        for (_, mut c) in self.conns.drain() {
            let _ = registry.deregister(&mut c.conn);
        }
    }
}

/// The replica request a remote client's frame asks for, answered over its connection; or
/// the refusal it gets at once.
fn to_request<M: StateMachine>(
    conn: Token,
    frame: ClientRequest,
    outbox: &Outbox,
) -> Result<LocalRequest<M>, (u64, Error)> {
    let id = frame.id;
    let timeout = |ms: u64| Duration::from_millis(ms).min(REMOTE_TIMEOUT_MAX);
    fn reply<T: serde::Serialize>(conn: Token, id: u64, outbox: &Outbox) -> Reply<T> {
        Reply::remote(Remote { conn, id, outbox: outbox.clone(), encode: encode_msgpack::<T> })
    }
    Ok(match frame.call {
        Call::Write { command, timeout_ms } => {
            // Bytes from the network: every server must be able to apply what is proposed.
            match command_body(&command.0) {
                Some(body) => check_command::<M::Command>(body).map_err(|e| (id, e))?,
                None => return Err((id, Error::Codec("not a command entry".into()))),
            }
            Request::Write { command: command.0.into(), timeout: timeout(timeout_ms), reply: reply(conn, id, outbox) }
        }
        Call::RegisterSession { secret, timeout_ms } => {
            Request::RegisterSession { secret, timeout: timeout(timeout_ms), reply: reply(conn, id, outbox) }
        }
        Call::Query { query, local } => {
            let reply: Reply<Vec<u8>> = Reply::remote(Remote { conn, id, outbox: outbox.clone(), encode: Ok });
            let read: crate::replica::ReadFn<M> = Box::new(move |machine| {
                use crate::replica::Respond;
                reply.send(machine.and_then(|m| m.query_encoded(&query.0).map_err(Error::Codec)))
            });
            if local { Request::ReadLocal { read } } else { Request::Read { read } }
        }
        Call::AwaitLeader { other_than, timeout_ms } => {
            Request::AwaitLeader { other_than, timeout: timeout(timeout_ms), reply: reply(conn, id, outbox) }
        }
        Call::Status => Request::Status { reply: reply(conn, id, outbox) },
        Call::AddServer { id: node, addr } => {
            if addr.parse::<std::net::SocketAddr>().is_err() {
                return Err((id, Error::Config(format!("not a socket address: {addr:?}"))));
            }
            Request::AddServer { id: node, addr, reply: reply(conn, id, outbox) }
        }
        Call::RemoveServer { id: node } => Request::RemoveServer { id: node, reply: reply(conn, id, outbox) },
        Call::TriggerElection => Request::TriggerElection { reply: reply(conn, id, outbox) },
        Call::TransferLeadership { to } => Request::TransferLeadership { to, reply: reply(conn, id, outbox) },
    })
}
