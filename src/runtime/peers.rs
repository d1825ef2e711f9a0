//! Connections to the other nodes: one outbound connection per peer that this node
//! dials and writes to (with reconnect and backoff), and the inbound connections peers
//! dial to us, which this node only reads. Only this module and the transport see sockets.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Interest, Registry, Token};

use crate::core::{Message, NodeId};
use crate::runtime::limits::{
    Activity, Deadlines, NON_MEMBER_INBOUND_MAX, PARTIAL_FRAME_CHECK_BYTES, PARTIAL_FRAMES_PER_NODE_MAX,
};
use crate::runtime::wire::{Hello, Wire};
use crate::status::PeerTraffic;
use crate::transport::{
    Backoff, Connection, ConnectionConfig, Handshake, PROTOCOL_VERSION, ReadOutcome, Role, TransportError,
};

/// Who this node is, as it introduces itself on every connection.
pub(crate) struct Identity {
    pub id: NodeId,
    pub cluster_id: String,
    pub incarnation: u64,
    pub listen_addr: SocketAddr,
    pub metadata: Option<String>,
}

enum Side {
    /// A peer dialed us; it is known once its handshake and Hello arrive.
    Inbound { peer: Option<NodeId>, hello: bool },
    /// We dialed this peer.
    Outbound(NodeId),
}

struct Conn {
    conn: Connection,
    side: Side,
    interest: Interest,
    opened_at: Instant,
    activity: Activity,
}

/// An accepted connection must introduce itself (handshake and Hello) within this time,
/// or it is closed: silent connections would otherwise hold file descriptors forever.
const INTRODUCTION_TIMEOUT: Duration = Duration::from_secs(3);
/// Most accepted connections still waiting to introduce themselves; past it the oldest is
/// closed, so a flood of idle connections can neither exhaust the node's file descriptors
/// nor lock out a real peer (which introduces itself within a round trip).
const UNINTRODUCED_MAX: usize = 64;

impl Conn {
    fn introduced(&self) -> bool {
        !matches!(self.side, Side::Inbound { hello: false, .. })
    }
}

/// Largest metadata a node may announce (see [`crate::Config::metadata`]).
pub(crate) const METADATA_BYTES_MAX: usize = 1024;
/// How often refusing a restarted peer is logged at `error` while it keeps trying.
const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(60);
/// Most peers whose refusal times are kept (past it the memory starts over).
const REFUSALS_REMEMBERED_MAX: usize = 1024;
/// How often a node refused by a peer (it restarted without its state) tries again: the
/// refusal lasts until an operator acts, so trying often only makes noise.
const REFUSED_RETRY: Duration = Duration::from_secs(5);

/// Reconnect state of one peer.
struct Dialer {
    token: Option<Token>,
    backoff: Backoff,
    retry_at: Option<Instant>,
    /// Warned about the current episode of trouble (warn once, not per retry).
    warned: bool,
    /// The peer refused us for good (we restarted without our state): retry slowly, and
    /// say so once, not at every attempt.
    refused: bool,
}

/// All peer connections of one node.
pub(crate) struct Peers {
    me: Identity,
    conn_config: ConnectionConfig,
    /// Addresses from this node's own `Config`: they win over everything else.
    config_addrs: BTreeMap<NodeId, SocketAddr>,
    /// Addresses from membership entries in the log.
    member_addrs: BTreeMap<NodeId, SocketAddr>,
    /// Addresses peers announced when they dialed us.
    hello_addrs: HashMap<NodeId, SocketAddr>,
    /// Metadata peers announced when they dialed us (see `metadata_of`).
    hello_metadata: HashMap<NodeId, String>,
    conns: HashMap<Token, Conn>,
    dialers: HashMap<NodeId, Dialer>,
    /// The first incarnation seen of each peer.
    incarnations: HashMap<NodeId, u64>,
    next_token: usize,
    /// Connections with output queued since the last flush.
    unflushed: Vec<Token>,
    /// Connections whose read budget ran out: read again without waiting for an event.
    unread: Vec<Token>,
    /// The last reason a peer gave for refusing us.
    pub refused: Option<String>,
    /// A leader's word that this node is not in its configuration (it was removed), until
    /// this node hears from a leader again (see `Wire::Removed`).
    pub removed: Option<String>,
    /// When this node (as leader) last told each non-member that it is not one.
    removals_told: HashMap<NodeId, Instant>,
    deadlines: Deadlines,
    /// Inbound connections displaced by newer ones, closed at the next flush.
    pending_close: Vec<Token>,
    /// Inbound connections whose handshake said "client", to hand over.
    clients_found: Vec<Token>,
    /// When this node last logged refusing each restarted peer.
    refusals_logged: HashMap<NodeId, Instant>,
    /// Messages and bytes to and from each peer (only members' entries are kept: see
    /// `traffic`).
    traffic: BTreeMap<NodeId, PeerTraffic>,
}

impl Peers {
    /// `deadlines` bound how long connections may idle, stall or take to handshake.
    pub fn new(
        me: Identity,
        conn_config: ConnectionConfig,
        config_addrs: BTreeMap<NodeId, SocketAddr>,
        first_token: usize,
        deadlines: Deadlines,
    ) -> Peers {
        Peers {
            me,
            conn_config,
            config_addrs,
            member_addrs: BTreeMap::new(),
            hello_addrs: HashMap::new(),
            hello_metadata: HashMap::new(),
            conns: HashMap::new(),
            dialers: HashMap::new(),
            incarnations: HashMap::new(),
            next_token: first_token,
            unflushed: Vec::new(),
            unread: Vec::new(),
            refused: None,
            removed: None,
            removals_told: HashMap::new(),
            deadlines,
            pending_close: Vec::new(),
            clients_found: Vec::new(),
            refusals_logged: HashMap::new(),
            traffic: BTreeMap::new(),
        }
    }

    /// Records the addresses of the latest configuration.
    pub fn set_member_addrs(&mut self, addrs: BTreeMap<NodeId, SocketAddr>) {
        self.member_addrs = addrs;
    }

    /// Dials every member of the latest configuration not connected (backoff permitting),
    /// so each learns this node's Hello (its address and metadata) even if no Raft message
    /// goes that way (followers never message each other), and again after it restarted.
    /// Outbound connections are kept alive. Called every tick: cheap when all are up.
    pub fn connect_members(&mut self, registry: &Registry, now: Instant) {
        let ids: Vec<NodeId> = self.member_addrs.keys().copied().filter(|&id| id != self.me.id).collect();
        for id in ids {
            let connected = self.dialers.get(&id).is_some_and(|d| d.token.is_some());
            if !connected {
                self.outbound_token(registry, id, now);
            }
        }
    }

    /// As leader: tells `to`, which campaigns without being in this leader's configuration,
    /// that it was removed, at most once a minute per node (it cannot learn it from the
    /// log: the leader stopped replicating to it when the change was appended). The word
    /// goes back on the connection its vote request came in on: a non-member is never
    /// dialed (it could be an impostor, which must learn nothing, not even our Hello).
    pub fn tell_removed(&mut self, to: NodeId, term: u64, now: Instant) {
        if self.removals_told.get(&to).is_some_and(|&at| now.duration_since(at) < REFUSAL_LOG_INTERVAL) {
            return;
        }
        let inbound = self
            .conns
            .iter()
            .filter(|(_, c)| matches!(c.side, Side::Inbound { peer: Some(p), hello: true } if p == to));
        let Some(token) = inbound.max_by_key(|(_, c)| c.opened_at).map(|(&t, _)| t) else { return };
        if self.removals_told.len() >= REFUSALS_REMEMBERED_MAX {
            self.removals_told.clear();
        }
        self.removals_told.insert(to, now);
        let why = format!(
            "this node is not in the configuration of the leader (node {}, term {term}): it was removed from the cluster, or is not added yet",
            self.me.id
        );
        let conn = self.conns.get_mut(&token).expect("just found");
        if conn.conn.queue(&Wire::Removed(why)).is_ok() {
            self.unflushed.push(token);
        }
    }

    /// The metadata node `id` announced: this node's own, or what a peer said when it last
    /// dialed us (every member dials every other, see `connect_all`, so each node learns
    /// all of them).
    pub fn metadata_of(&self, id: NodeId) -> Option<&str> {
        if id == self.me.id { self.me.metadata.as_deref() } else { self.hello_metadata.get(&id).map(String::as_str) }
    }

    /// Traffic with the members this node knows (an id that sent frames without being a
    /// member, a hostile peer's say, is left out, so the map stays bounded).
    pub fn traffic(&self) -> BTreeMap<NodeId, PeerTraffic> {
        let member = |id: &NodeId| self.member_addrs.contains_key(id) || self.config_addrs.contains_key(id);
        self.traffic.iter().filter(|(id, _)| member(id)).map(|(&id, &t)| (id, t)).collect()
    }

    fn addr_of(&self, id: NodeId) -> Option<SocketAddr> {
        let known = self.config_addrs.get(&id).or_else(|| self.member_addrs.get(&id));
        known.or_else(|| self.hello_addrs.get(&id)).copied()
    }

    /// Queues a Raft message for `to`, dialing it if needed. Raft tolerates loss, so a
    /// peer that is unreachable, backing off or backlogged simply misses the message.
    pub fn send(&mut self, registry: &Registry, to: NodeId, msg: Message, now: Instant) {
        let Some(token) = self.outbound_token(registry, to, now) else { return };
        let conn = self.conns.get_mut(&token).expect("dialer tokens are live");
        let before = conn.conn.bytes_queued();
        match conn.conn.queue(&Wire::Raft(msg)) {
            Ok(()) => {
                conn.activity.last_sent_at = now;
                let traffic = self.traffic.entry(to).or_default();
                traffic.messages_out += 1;
                traffic.bytes_out += conn.conn.bytes_queued() - before;
                self.unflushed.push(token)
            }
            // Backpressure from a stuck peer is routine; a frame too large to send is a
            // sizing bug that would stall replication, so it is loud.
            Err(e @ TransportError::FrameTooLarge { .. }) => {
                log::error!("node {}: message to {to} not sent: {e}", self.me.id)
            }
            Err(e) => log::debug!("node {}: dropping message to {to}: {e}", self.me.id),
        }
    }

    /// The outbound connection to `to`, dialing now unless backing off.
    fn outbound_token(&mut self, registry: &Registry, to: NodeId, now: Instant) -> Option<Token> {
        let dialer = self.dialers.entry(to).or_insert_with(|| Dialer {
            token: None,
            backoff: Backoff::new(to ^ 0x5eed),
            retry_at: None,
            warned: false,
            refused: false,
        });
        if let Some(token) = dialer.token {
            return Some(token);
        }
        if dialer.retry_at.is_some_and(|at| now < at) {
            return None;
        }
        let Some(addr) = self.addr_of(to) else {
            log::debug!("node {}: no address for node {to}", self.me.id);
            return None;
        };
        match self.dial(registry, to, addr) {
            Ok(token) => {
                self.dialers.get_mut(&to).expect("inserted above").token = Some(token);
                Some(token)
            }
            Err(e) => {
                self.connection_trouble(to, now, &format!("cannot dial {addr}: {e}"));
                None
            }
        }
    }

    fn dial(&mut self, registry: &Registry, to: NodeId, addr: SocketAddr) -> std::io::Result<Token> {
        let mut conn = Connection::connect(addr, self.conn_config)?;
        let handshake = Handshake::new(&self.me.cluster_id, self.me.id).map_err(std::io::Error::other)?;
        // Held back by the connection until the peer has proven it holds the secret: the
        // incarnation is what an impostor would need to pass for us.
        let hello = Wire::Hello(Hello {
            incarnation: self.me.incarnation,
            listen_addr: self.me.listen_addr,
            metadata: self.me.metadata.clone(),
        });
        conn.start_handshake(handshake, Role::Dialer)
            .and_then(|()| conn.queue(&hello))
            .map_err(std::io::Error::other)?;
        let token = self.add_conn(registry, conn, Side::Outbound(to))?;
        self.unflushed.push(token);
        Ok(token)
    }

    /// Takes a connection a peer dialed to us.
    pub fn accept(&mut self, registry: &Registry, stream: TcpStream) {
        self.evict_oldest_silent_if_full(registry);
        let result = Connection::new(stream, self.conn_config).and_then(|mut conn| {
            let handshake = Handshake::new(&self.me.cluster_id, self.me.id).map_err(std::io::Error::other)?;
            conn.start_handshake(handshake, Role::Acceptor).map_err(std::io::Error::other)?;
            self.add_conn(registry, conn, Side::Inbound { peer: None, hello: false })
        });
        match result {
            Ok(token) => self.unflushed.push(token),
            Err(e) => log::warn!("node {}: cannot set up an accepted connection: {e}", self.me.id),
        }
    }

    fn add_conn(&mut self, registry: &Registry, mut conn: Connection, side: Side) -> std::io::Result<Token> {
        let token = Token(self.next_token);
        self.next_token += 1;
        let interest = conn.interest();
        registry.register(&mut conn, token, interest)?;
        let now = Instant::now();
        self.conns.insert(token, Conn { conn, side, interest, opened_at: now, activity: Activity::new(now) });
        Ok(token)
    }

    /// Handles readiness of a connection: flushes, reads, and collects Raft messages.
    pub fn on_ready(
        &mut self,
        registry: &Registry,
        token: Token,
        writable: bool,
        inbox: &mut Vec<(NodeId, Message)>,
        now: Instant,
    ) {
        if writable {
            self.flush_one(registry, token, now);
        }
        if let Err(reason) = self.read(token, inbox, now) {
            self.close(registry, token, now, &reason);
        }
        self.enforce_partial_budget(registry, token, now);
    }

    /// Closes the connection holding the largest partial frame while all partial frames
    /// together exceed their budget, so many slow peers cannot pin memory between them.
    fn enforce_partial_budget(&mut self, registry: &Registry, token: Token, now: Instant) {
        if self.conns.get(&token).is_none_or(|c| c.conn.partial_frame_bytes() <= PARTIAL_FRAME_CHECK_BYTES) {
            return;
        }
        let max = self.conn_config.max_frame_bytes.saturating_mul(PARTIAL_FRAMES_PER_NODE_MAX);
        loop {
            let total: usize = self.conns.values().map(|c| c.conn.partial_frame_bytes()).sum();
            let largest = self.conns.iter().max_by_key(|(_, c)| c.conn.partial_frame_bytes()).map(|(&t, _)| t);
            match largest {
                Some(t) if total > max => {
                    log::warn!("node {}: partial frames hold {total} bytes (max {max})", self.me.id);
                    self.close(registry, t, now, "partial frames over the node's budget; closing the largest");
                }
                _ => return,
            }
        }
    }

    /// Makes room for one more connection waiting to introduce itself.
    fn evict_oldest_silent_if_full(&mut self, registry: &Registry) {
        let silent = self.conns.iter().filter(|(_, c)| !c.introduced());
        let (count, oldest) = silent.fold((0, None::<(Instant, Token)>), |(n, oldest), (&t, c)| {
            (n + 1, Some(oldest.map_or((c.opened_at, t), |o| o.min((c.opened_at, t)))))
        });
        if count >= UNINTRODUCED_MAX
            && let Some((_, token)) = oldest
        {
            log::warn!("node {}: {count} connections have not introduced themselves; closing the oldest", self.me.id);
            self.close(registry, token, Instant::now(), "too many connections waiting to introduce themselves");
        }
    }

    /// Once per tick: closes accepted connections that did not introduce themselves in
    /// time, introduced ones that went idle or stalled mid-frame, and dialed ones whose
    /// handshake never completed (they are redialled with backoff); sends keepalives on
    /// dialed connections that had nothing to say for a while.
    pub fn enforce_deadlines(&mut self, registry: &Registry, now: Instant) {
        let d = self.deadlines;
        let mut expired = Vec::new();
        let mut keepalive = Vec::new();
        for (&t, c) in &self.conns {
            let age = now.duration_since(c.opened_at);
            let why = match c.side {
                _ if !c.introduced() => (age > INTRODUCTION_TIMEOUT).then_some("no handshake in time"),
                Side::Inbound { .. } => c.activity.expired(now, &d),
                Side::Outbound(_) if c.conn.peer().is_none() => {
                    (age > d.outbound_handshake).then_some("no handshake reply in time")
                }
                Side::Outbound(_) => {
                    if now.duration_since(c.activity.last_sent_at) >= d.keepalive {
                        keepalive.push(t);
                    }
                    None
                }
            };
            if let Some(why) = why {
                expired.push((t, why));
            }
        }
        for (token, why) in expired {
            self.close(registry, token, now, why);
        }
        for token in keepalive {
            let c = self.conns.get_mut(&token).expect("listed above");
            c.activity.last_sent_at = now;
            if c.conn.queue(&Wire::Keepalive).is_ok() {
                self.unflushed.push(token);
            }
        }
    }

    /// Re-reads connections whose read budget ran out last turn.
    pub fn read_leftovers(&mut self, registry: &Registry, inbox: &mut Vec<(NodeId, Message)>, now: Instant) {
        for token in std::mem::take(&mut self.unread) {
            if self.conns.contains_key(&token) {
                self.on_ready(registry, token, false, inbox, now);
            }
        }
    }

    /// Hands over the connections that introduced themselves as clients (still registered
    /// with the poll under their tokens; their unflushed proof and any frames that came
    /// with the handshake are the new owner's to flush and read).
    pub fn take_clients(&mut self) -> Vec<(Token, Connection)> {
        let found = std::mem::take(&mut self.clients_found);
        found.into_iter().filter_map(|token| self.conns.remove(&token).map(|c| (token, c.conn))).collect()
    }

    /// Whether some connection has unread input waiting.
    pub fn has_leftovers(&self) -> bool {
        !self.unread.is_empty()
    }

    fn read(&mut self, token: Token, inbox: &mut Vec<(NodeId, Message)>, now: Instant) -> Result<(), String> {
        let Some(c) = self.conns.get_mut(&token) else { return Ok(()) };
        let was_known = c.conn.peer().is_some();
        let handshake = c.conn.read_handshake(PROTOCOL_VERSION, &self.me.cluster_id);
        if !was_known && c.conn.pending_bytes() > 0 {
            // The handshake queued our proof (and, once authenticated, held-back frames).
            self.unflushed.push(token);
        }
        let handshake = handshake.inspect_err(|e| {
            // A peer of another cluster, version or secret will never let us in: say so
            // in `status().refused` instead of leaving callers to time out.
            if let (Side::Outbound(peer), TransportError::ClusterMismatch { .. })
            | (Side::Outbound(peer), TransportError::VersionMismatch { .. })
            | (Side::Outbound(peer), TransportError::AuthFailed) = (&c.side, e)
            {
                self.refused = Some(format!("cannot join node {peer}: {e}"));
            }
        });
        let Some(peer) = handshake.map_err(|e| e.to_string())? else {
            return Ok(());
        };
        if peer.client {
            // A remote client: its connection carries client requests, which the client
            // side of the runtime reads (see `take_clients`); never Raft messages.
            return match c.side {
                Side::Inbound { peer: None, .. } => {
                    self.clients_found.push(token);
                    Ok(())
                }
                _ => Err("a client answered where a node was expected".into()),
            };
        }
        match c.side {
            Side::Outbound(expected) if peer.node_id != expected => {
                return Err(format!("expected node {expected} there but found node {}", peer.node_id));
            }
            _ if peer.node_id == self.me.id => return Err("connected to itself".into()),
            Side::Inbound { peer: ref mut p @ None, .. } => *p = Some(peer.node_id),
            Side::Outbound(peer) if !was_known => self.on_connected(peer),
            _ => {}
        }
        let c = self.conns.get_mut(&token).expect("still open");
        let mut frames: Vec<Wire> = Vec::new();
        let before = c.conn.bytes_read();
        let outcome = c.conn.read_frames(&mut frames);
        if let Side::Inbound { peer: Some(peer), .. } = c.side
            && (self.member_addrs.contains_key(&peer) || self.config_addrs.contains_key(&peer))
        {
            let traffic = self.traffic.entry(peer).or_default();
            traffic.bytes_in += c.conn.bytes_read() - before;
            traffic.messages_in += frames.iter().filter(|f| matches!(f, Wire::Raft(_))).count() as u64;
        }
        c.activity.on_read(now, frames.len(), c.conn.partial_frame_bytes());
        for frame in frames {
            self.on_frame(token, frame, inbox)?;
        }
        match outcome.map_err(|e| e.to_string())? {
            ReadOutcome::Drained => Ok(()),
            ReadOutcome::MoreAvailable => {
                self.unread.push(token);
                Ok(())
            }
            ReadOutcome::Closed => Err("closed by peer".into()),
        }
    }

    fn on_frame(&mut self, token: Token, frame: Wire, inbox: &mut Vec<(NodeId, Message)>) -> Result<(), String> {
        let c = self.conns.get_mut(&token).expect("reading it");
        match (&mut c.side, frame) {
            (Side::Inbound { peer: Some(peer), hello: hello @ false }, Wire::Hello(h)) => {
                let peer = *peer;
                let first = *self.incarnations.entry(peer).or_insert(h.incarnation);
                if first != h.incarnation {
                    let why = format!(
                        "node {peer} restarted without its state (memory-only nodes must rejoin under a new id, or use a data dir); refusing it"
                    );
                    let _ = c.conn.queue(&Wire::Refused(why.clone()));
                    let _ = c.conn.flush();
                    // It will keep trying: say it loudly once a minute, not at every try.
                    let now = Instant::now();
                    if self.refusals_logged.len() >= REFUSALS_REMEMBERED_MAX {
                        self.refusals_logged.clear();
                    }
                    let last = self.refusals_logged.insert(peer, now);
                    if last.is_none_or(|at| now.duration_since(at) >= REFUSAL_LOG_INTERVAL) {
                        log::error!("node {}: {why} (said once a minute while it lasts)", self.me.id);
                    } else {
                        log::debug!("node {}: {why}", self.me.id);
                    }
                    return Err(why);
                }
                if h.metadata.as_ref().is_some_and(|m| m.len() > METADATA_BYTES_MAX) {
                    return Err(format!("node {peer} sent metadata over {METADATA_BYTES_MAX} bytes"));
                }
                *hello = true;
                self.hello_addrs.insert(peer, h.listen_addr);
                match h.metadata {
                    Some(m) => self.hello_metadata.insert(peer, m),
                    None => self.hello_metadata.remove(&peer),
                };
                self.make_room_for_inbound(token, peer);
                Ok(())
            }
            (Side::Inbound { hello: true, .. }, Wire::Keepalive) => Ok(()),
            // Only on a connection we dialed to a member (see `tell_removed`): a hint for
            // the status, which nothing else acts on.
            (Side::Outbound(peer), Wire::Removed(why)) => {
                let peer = *peer;
                if why.len() > METADATA_BYTES_MAX {
                    return Err(format!("node {peer} sent an oversized notice"));
                }
                if self.removed.is_none() {
                    log::warn!("node {}: node {peer} says: {why}", self.me.id);
                }
                self.removed = Some(format!("node {peer} says: {why}"));
                Ok(())
            }
            (Side::Inbound { peer: Some(peer), hello: true }, Wire::Raft(msg)) => {
                msg.check_well_formed().map_err(|why| format!("malformed Raft message from node {peer}: {why}"))?;
                inbox.push((*peer, msg));
                Ok(())
            }
            (Side::Outbound(peer), Wire::Refused(why)) => {
                let peer = *peer;
                let dialer = self.dialers.get_mut(&peer);
                if dialer.as_ref().is_some_and(|d| d.refused) {
                    log::debug!("node {}: refused by node {peer}: {why}", self.me.id);
                } else {
                    log::error!("node {}: refused by node {peer}: {why}", self.me.id);
                }
                if let Some(d) = dialer {
                    d.refused = true;
                }
                self.refused = Some(format!("refused by node {peer}: {why}"));
                Err(why)
            }
            (_, frame) => Err(format!("unexpected frame {}", frame_name(&frame))),
        }
    }

    /// One live inbound connection per member: a newer one (it proved the secret and the
    /// member's incarnation) replaces the older, which is likely half-open.
    /// Ids outside the configuration share [`NON_MEMBER_INBOUND_MAX`] connections, the
    /// oldest closed first.
    fn make_room_for_inbound(&mut self, token: Token, peer: NodeId) {
        let inbound = |c: &Conn| match c.side {
            Side::Inbound { peer: Some(p), hello: true } => Some(p),
            _ => None,
        };
        // The one accepted last stays (Hellos of one turn may be handled in any order).
        let mut same: Vec<(Instant, Token)> =
            self.conns.iter().filter(|&(_, c)| inbound(c) == Some(peer)).map(|(&t, c)| (c.opened_at, t)).collect();
        same.sort_unstable();
        same.pop();
        let mut doomed: Vec<Token> = same.into_iter().map(|(_, t)| t).collect();
        if !self.member_addrs.contains_key(&peer) && !self.config_addrs.contains_key(&peer) {
            let mut others: Vec<(Instant, Token)> = self
                .conns
                .iter()
                .filter(|&(&t, c)| {
                    t != token
                        && inbound(c).is_some_and(|p| {
                            p != peer && !self.member_addrs.contains_key(&p) && !self.config_addrs.contains_key(&p)
                        })
                })
                .map(|(&t, c)| (c.opened_at, t))
                .collect();
            others.sort_unstable();
            let excess = (others.len() + 1).saturating_sub(NON_MEMBER_INBOUND_MAX);
            doomed.extend(others.iter().take(excess).map(|&(_, t)| t));
        }
        self.pending_close.extend(doomed);
    }

    /// Writes all queued output; one write per connection per turn where possible.
    pub fn flush_all(&mut self, registry: &Registry, now: Instant) {
        for token in std::mem::take(&mut self.pending_close) {
            self.close(registry, token, now, "replaced by a newer connection, or too many from non-members");
        }
        let mut tokens = std::mem::take(&mut self.unflushed);
        tokens.sort_unstable();
        tokens.dedup();
        for token in tokens {
            self.flush_one(registry, token, now);
        }
    }

    fn flush_one(&mut self, registry: &Registry, token: Token, now: Instant) {
        let Some(c) = self.conns.get_mut(&token) else { return };
        if let Err(e) = c.conn.flush() {
            self.close(registry, token, now, &e.to_string());
            return;
        }
        let interest = c.conn.interest();
        if interest != c.interest {
            c.interest = interest;
            if let Err(e) = registry.reregister(&mut c.conn, token, interest) {
                self.close(registry, token, now, &e.to_string());
            }
        }
    }

    /// Closes one connection (never the node) and, for an outbound one, schedules a retry.
    fn close(&mut self, registry: &Registry, token: Token, now: Instant, reason: &str) {
        let Some(mut c) = self.conns.remove(&token) else { return };
        let _ = registry.deregister(&mut c.conn);
        match c.side {
            Side::Outbound(peer) => {
                if let Some(d) = self.dialers.get_mut(&peer) {
                    d.token = None;
                }
                self.connection_trouble(peer, now, reason);
            }
            Side::Inbound { peer, .. } => {
                log::info!("node {}: closed inbound connection from {peer:?}: {reason}", self.me.id);
            }
        }
    }

    fn connection_trouble(&mut self, peer: NodeId, now: Instant, reason: &str) {
        let Some(d) = self.dialers.get_mut(&peer) else { return };
        let delay = if d.refused { REFUSED_RETRY } else { d.backoff.next_delay() };
        d.retry_at = Some(now + delay);
        if d.warned {
            log::debug!("node {}: connection to {peer}: {reason}; retry in {delay:?}", self.me.id);
        } else {
            d.warned = true;
            log::warn!("node {}: connection to {peer}: {reason}; retrying with backoff", self.me.id);
        }
    }

    /// An outbound connection completed its handshake: the trouble episode is over.
    fn on_connected(&mut self, peer: NodeId) {
        if let Some(d) = self.dialers.get_mut(&peer) {
            if d.refused {
                // A handshake, but the refusal comes next: not reachable in any useful way.
                return;
            }
            if d.warned {
                log::info!("node {}: node {peer} reachable again", self.me.id);
            }
            d.warned = false;
            d.backoff.reset();
        }
    }

    /// Closes every connection (at shutdown).
    pub fn close_all(&mut self, registry: &Registry) {
        for (_, mut c) in self.conns.drain() {
            let _ = c.conn.flush();
            let _ = registry.deregister(&mut c.conn);
        }
    }
}

fn frame_name(frame: &Wire) -> &'static str {
    match frame {
        Wire::Hello(_) => "Hello",
        Wire::Raft(_) => "Raft",
        Wire::Refused(_) => "Refused",
        Wire::Keepalive => "Keepalive",
        Wire::Removed(_) => "Removed",
    }
}
