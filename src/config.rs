//! The node's configuration builder.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::core::{CoreConfig, LeaseReads, Membership, NodeId};
use crate::error::Error;
use crate::replica::{Compaction, ReplicaConfig, SessionLimits};
use crate::storage::StorageFaults;

/// Most entries applied per loop turn.
const APPLY_ENTRIES_MAX: u64 = 1024;
/// Most time spent applying per loop turn; the rest waits for the next turn, which comes
/// at once.
const APPLY_TIME_MAX: Duration = Duration::from_millis(5);
use crate::transport::{CLUSTER_SECRET_BYTES_MIN, ClusterKey};

/// How one node runs: who it is, whom it talks to, and its timings and bounds.
///
/// ```
/// use std::time::Duration;
/// let config = quorate::Config::new(1, "127.0.0.1:7001".parse().unwrap())
///     .peer(2, "127.0.0.1:7002".parse().unwrap())
///     .peer(3, "127.0.0.1:7003".parse().unwrap())
///     .request_timeout(Duration::from_secs(2));
/// assert_eq!(config.id(), 1);
/// ```
#[derive(Clone, Debug)]
pub struct Config {
    pub(crate) id: NodeId,
    pub(crate) listen: SocketAddr,
    /// The address peers and clients reach this node at, if not `listen`.
    pub(crate) advertise: Option<SocketAddr>,
    /// What this node announces about itself to its peers (see [`Config::metadata`]).
    pub(crate) metadata: Option<String>,
    pub(crate) peers: BTreeMap<NodeId, SocketAddr>,
    pub(crate) join: bool,
    pub(crate) cluster_id: String,
    /// Derived from the cluster secret; its `Debug` prints nothing of it.
    pub(crate) cluster_key: ClusterKey,
    secret_too_short: bool,
    pub(crate) tick: Duration,
    pub(crate) election_timeout: Duration,
    pub(crate) heartbeat_interval: Duration,
    pub(crate) request_timeout: Duration,
    pub(crate) max_frame_bytes: usize,
    pub(crate) max_append_bytes: usize,
    pub(crate) max_append_entries: usize,
    pub(crate) max_inflight: usize,
    pub(crate) client_queue: usize,
    pub(crate) compaction: Compaction,
    pub(crate) sessions: SessionLimits,
    pub(crate) data_dir: Option<PathBuf>,
    pub(crate) storage_faults: Option<Arc<StorageFaults>>,
    pub(crate) lease_reads: Option<LeaseReads>,
    duplicate_peer: Option<NodeId>,
}

impl Config {
    /// Node `id` listening on `listen`. Defaults: election timeout 300 ms (randomized up to
    /// twice that), heartbeat 50 ms, request timeout 5 s, frames up to 16 MiB.
    pub fn new(id: NodeId, listen: SocketAddr) -> Config {
        // One set of defaults: the core's, in ticks of `TICK`.
        const TICK: Duration = Duration::from_millis(10);
        let core = CoreConfig::new(id);
        Config {
            id,
            listen,
            advertise: None,
            metadata: None,
            peers: BTreeMap::new(),
            join: false,
            cluster_id: "quorate".into(),
            cluster_key: ClusterKey::unauthenticated(),
            secret_too_short: false,
            tick: TICK,
            election_timeout: TICK * core.election_ticks,
            heartbeat_interval: TICK * core.heartbeat_ticks,
            request_timeout: Duration::from_secs(5),
            max_frame_bytes: 16 << 20,
            max_append_bytes: core.max_append_bytes,
            max_append_entries: core.max_append_entries,
            max_inflight: core.max_inflight,
            client_queue: 65_536,
            compaction: Compaction::default(),
            sessions: SessionLimits::default(),
            data_dir: None,
            storage_faults: None,
            lease_reads: None,
            duplicate_peer: None,
        }
    }

    /// Adds an initial voting member. All nodes of a new cluster start with the same set.
    /// This node dials `addr` to reach `id`, even after membership changes.
    pub fn peer(mut self, id: NodeId, addr: SocketAddr) -> Config {
        if self.peers.insert(id, addr).is_some() {
            self.duplicate_peer = Some(id);
        }
        self
    }

    /// The address other nodes and clients reach this node at, when it is not the listen
    /// address: a node listening on `0.0.0.0:7001` (every interface) advertises, say,
    /// `10.0.0.5:7001`, or sits behind a NAT or a proxy. It is what this node's membership
    /// entry records, what it tells peers it dials, and so what a `Redirect` to it names.
    pub fn advertise(mut self, addr: SocketAddr) -> Config {
        self.advertise = Some(addr);
        self
    }

    /// A short text this node announces to its peers, shown for it in every node's
    /// [`crate::Status::members`]: typically the address of the API it serves clients on,
    /// so a client redirected to the leader (whose id the `Redirect` names) can find it.
    /// At most 1 KiB.
    pub fn metadata(mut self, metadata: impl Into<String>) -> Config {
        self.metadata = Some(metadata.into());
        self
    }

    /// Adds every member of `members` (id and listen address) but this node itself as a
    /// peer: the one line that gives each node of a new cluster the same member list.
    ///
    /// ```
    /// let addrs = [(1, "127.0.0.1:7001".parse().unwrap()), (2, "127.0.0.1:7002".parse().unwrap())];
    /// let config = quorate::Config::new(2, addrs[1].1).members(addrs);
    /// assert!(config.validate().is_ok());
    /// ```
    pub fn members(self, members: impl IntoIterator<Item = (NodeId, SocketAddr)>) -> Config {
        let id = self.id;
        members.into_iter().filter(|&(peer, _)| peer != id).fold(self, |c, (peer, addr)| c.peer(peer, addr))
    }

    /// Starts with no configuration: the node never campaigns and waits for a leader to
    /// add it with `add_server` (it then learns the members from the log).
    pub fn join(mut self) -> Config {
        self.join = true;
        self
    }

    /// A name shared by every node of the cluster; connections from another cluster are
    /// refused. Default `"quorate"`.
    pub fn cluster_id(mut self, cluster_id: impl Into<String>) -> Config {
        self.cluster_id = cluster_id.into();
        self
    }

    /// A secret every node of the cluster shares: each connection between nodes starts
    /// with a challenge-response on it (fresh nonces both ways, keyed BLAKE3), so a
    /// process without it never gets past the handshake, and a recorded handshake cannot
    /// be replayed. At least 16 bytes; generate 32 random ones, for example with
    /// `openssl rand -hex 32` (pass the hex string's bytes), and keep it out of logs and
    /// version control. Without one the node logs a warning at start: peers are then
    /// unauthenticated. Connections are authenticated, not encrypted (see the README).
    pub fn cluster_secret(mut self, secret: impl AsRef<[u8]>) -> Config {
        let secret = secret.as_ref();
        self.secret_too_short = secret.len() < CLUSTER_SECRET_BYTES_MIN;
        self.cluster_key = ClusterKey::from_secret(secret);
        self
    }

    /// Minimum election timeout; each one is drawn at random between it and twice it.
    pub fn election_timeout(mut self, timeout: Duration) -> Config {
        self.election_timeout = timeout;
        self
    }

    /// How often the leader sends heartbeats; must be at most half the election timeout.
    pub fn heartbeat_interval(mut self, interval: Duration) -> Config {
        self.heartbeat_interval = interval;
        self
    }

    /// The logical clock's period: timeouts are counted in ticks of this length.
    pub fn tick(mut self, tick: Duration) -> Config {
        self.tick = tick;
        self
    }

    /// How long a client call waits before it returns [`Error::Timeout`]. Default 5 s.
    pub fn request_timeout(mut self, timeout: Duration) -> Config {
        self.request_timeout = timeout;
        self
    }

    /// Largest frame accepted from a peer; bigger ones close the connection.
    pub fn max_frame_bytes(mut self, bytes: usize) -> Config {
        self.max_frame_bytes = bytes;
        self
    }

    /// Byte budget of one AppendEntries batch, and so the largest command a client may
    /// write (default 1 MiB). Must stay at least 64 KiB below `max_frame_bytes`.
    pub fn max_append_bytes(mut self, bytes: usize) -> Config {
        self.max_append_bytes = bytes;
        self
    }

    /// Most entries in one AppendEntries batch.
    pub fn max_append_entries(mut self, entries: usize) -> Config {
        self.max_append_entries = entries;
        self
    }

    /// Most AppendEntries in flight to one follower.
    pub fn max_inflight(mut self, messages: usize) -> Config {
        self.max_inflight = messages;
        self
    }

    /// Capacity of the client request queue; when full, calls fail with [`Error::Busy`].
    pub fn client_queue(mut self, requests: usize) -> Config {
        self.client_queue = requests;
        self
    }

    /// Log compaction (§7): take a snapshot once `entries` entries or `bytes` bytes of
    /// commands were applied since the last one (defaults 100,000 entries, 64 MiB), then
    /// drop the log before it except the last [`Config::snapshot_keep_entries`]. Only for
    /// state machines with snapshots (see [`crate::StateMachine::snapshot`]); others keep
    /// their whole log.
    pub fn snapshot_threshold(mut self, entries: u64, bytes: u64) -> Config {
        self.compaction.entries = entries;
        self.compaction.bytes = bytes;
        self
    }

    /// How many entries before a snapshot the log keeps (default 5,000), so a follower a
    /// little behind catches up from the log instead of needing the whole snapshot.
    pub fn snapshot_keep_entries(mut self, entries: u64) -> Config {
        self.compaction.keep_entries = entries;
        self
    }

    /// Client sessions (§6.3), which make retried writes apply once: at most
    /// `max_sessions` live sessions (registering one more evicts the least recently used;
    /// default 65,536), each expiring once `expiry_entries` log entries passed without a
    /// command of it (default 10 million). The limits travel in the log: each session
    /// registration carries its proposer's, and every node applies the latest registration's
    /// limits from then on, so nodes configured differently (mid rolling restart) still
    /// agree on what every session table holds.
    pub fn session_limits(mut self, max_sessions: usize, expiry_entries: u64) -> Config {
        self.sessions.max_sessions = max_sessions;
        self.sessions.expiry_entries = expiry_entries;
        self
    }

    /// The most bytes of responses all client sessions keep together (default 256 MiB);
    /// beyond it the least recently used sessions are evicted (their later commands are
    /// refused with [`crate::Error::SessionExpired`], never applied twice). Carried in the
    /// log like [`Config::session_limits`].
    pub fn session_memory_limit(mut self, bytes: u64) -> Config {
        self.sessions.max_bytes = bytes;
        self
    }

    /// Durable mode: keep the log and the hard state (term, vote) in `dir` (created if
    /// missing), synced before anything that depends on them is sent, so the node can be
    /// killed and restarted on the same directory under the same id. Without it the node
    /// keeps everything in memory (the default). See [`crate::storage::FileStorage`].
    pub fn data_dir(mut self, dir: impl Into<PathBuf>) -> Config {
        self.data_dir = Some(dir.into());
        self
    }

    /// Leader-lease reads (Raft dissertation §6.4.1), off by default: [`crate::Client::read`]
    /// on a leader a majority heard from recently is served at once, without the heartbeat
    /// round ReadIndex spends on every batch of reads (about the cost of a write's round
    /// trip); other reads fall back to ReadIndex.
    ///
    /// **Safe only if the clock assumption holds.** Every node of the cluster must enable
    /// lease reads, with the same `max_clock_drift`, the same `tick` and the same election
    /// timeout (a leader measures its lease by its own, a follower its promise by its
    /// own: a leader with a longer election timeout than a follower's would outlast the
    /// follower's promise); and the tick clocks of any two nodes
    /// must run at rates within that bound (0.05: over any interval, one node's ticks last
    /// at most 1.05 times another's; ordinary clocks drift by far less than 0.001). A node
    /// whose clock stops while it goes on believing it runs — a VM paused and resumed, a
    /// process stopped by `SIGSTOP` or starved for longer than a tick — violates it, and a
    /// read may then be stale. The node notices the stalls it can (its loop falling more
    /// than a few ticks behind) and ends its lease when it does. Without lease reads,
    /// `read` assumes nothing about clocks.
    ///
    /// The lease lasts `(election timeout - 1 tick) / (1 + max_clock_drift) - 1 tick` from
    /// each heartbeat round a majority acknowledged (260 ms with the defaults and a drift
    /// of 0.05), so it is renewed by every heartbeat. With lease reads on,
    /// [`crate::Client::trigger_election`] no longer overrides leases: use
    /// [`crate::Client::transfer_leadership`] to move a live leader. `max_clock_drift` must
    /// be in `[0, 0.5)`.
    pub fn lease_reads(mut self, max_clock_drift: f64) -> Config {
        self.lease_reads = Some(LeaseReads { max_clock_drift });
        self
    }

    /// For tests: failures to inject into the data dir's writes and syncs.
    pub fn storage_faults(mut self, faults: Arc<StorageFaults>) -> Config {
        self.storage_faults = Some(faults);
        self
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// Says what is wrong with this configuration, if anything.
    pub fn validate(&self) -> Result<(), Error> {
        let bad = |why: String| Err(Error::Config(why));
        if self.secret_too_short {
            return bad(format!("the cluster secret must be at least {CLUSTER_SECRET_BYTES_MIN} bytes"));
        }
        if let Some(id) = self.duplicate_peer {
            return bad(format!("peer {id} is listed twice"));
        }
        if let Some(addr) = self.peers.get(&self.id)
            && *addr != self.advertised()
            && self.listen.port() != 0
        {
            let at = self.advertised();
            return bad(format!(
                "own id {} listed as a peer at {addr}, but listening (as advertised) on {at}",
                self.id
            ));
        }
        if self.metadata.as_ref().is_some_and(|m| m.len() > crate::runtime::METADATA_BYTES_MAX) {
            return bad(format!("metadata is limited to {} bytes", crate::runtime::METADATA_BYTES_MAX));
        }
        if self.advertise.is_some_and(|a| a.ip().is_unspecified() || a.port() == 0) {
            return bad("the advertised address must be a concrete address and port peers can dial".into());
        }
        if self.peers.contains_key(&0) {
            return bad("node id 0 is reserved".into());
        }
        if self.join && !self.peers.is_empty() {
            return bad("a join() node takes no initial peers: it learns members from the leader".into());
        }
        if self.tick.is_zero() || self.request_timeout.is_zero() {
            return bad("tick and request timeout must be non-zero".into());
        }
        if self.max_frame_bytes < 1024
            || self.max_append_bytes == 0
            || self.max_append_bytes + 64 * 1024 > self.max_frame_bytes
        {
            return bad("max_append_bytes must be non-zero and at least 64 KiB below max_frame_bytes (>= 1 KiB)".into());
        }
        if self.client_queue == 0 {
            return bad("client_queue must be non-zero".into());
        }
        if self.sessions.max_sessions == 0 || self.sessions.expiry_entries == 0 || self.sessions.max_bytes == 0 {
            return bad("session limits must be non-zero".into());
        }
        if self.compaction.entries == 0 || self.compaction.bytes == 0 {
            return bad("snapshot thresholds must be non-zero".into());
        }
        self.core_config().validate().map_err(Error::Config)
    }

    pub(crate) fn core_config(&self) -> CoreConfig {
        let ticks = |d: Duration| (d.as_micros() / self.tick.as_micros().max(1)).min(u128::from(u32::MAX)) as u32;
        CoreConfig {
            id: self.id,
            election_ticks: ticks(self.election_timeout),
            heartbeat_ticks: ticks(self.heartbeat_interval),
            max_append_entries: self.max_append_entries,
            max_append_bytes: self.max_append_bytes,
            max_inflight: self.max_inflight,
            // A chunk plus its header fits a frame as an AppendEntries batch does.
            snapshot_chunk_bytes: self.max_append_bytes,
            max_snapshot_inflight: 4,
            seed: self.id ^ random_seed(),
            lease_reads: self.lease_reads,
        }
    }

    /// The replica's settings: the core's, plus the bounds on applying per turn (so a
    /// backlog or a slow state machine cannot keep the loop from heartbeats and I/O).
    pub(crate) fn replica_config(&self) -> ReplicaConfig {
        ReplicaConfig {
            core: self.core_config(),
            initial: self.initial_membership(),
            tick: self.tick,
            request_timeout: self.request_timeout,
            apply_entries_max: APPLY_ENTRIES_MAX,
            apply_time_max: Some(APPLY_TIME_MAX),
            compaction: self.compaction,
            sessions: self.sessions,
        }
    }

    /// Where peers and clients reach this node: [`Config::advertise`], else the listen
    /// address.
    pub(crate) fn advertised(&self) -> SocketAddr {
        self.advertise.unwrap_or(self.listen)
    }

    /// The initial configuration: this node and its peers, or nothing for `join()`.
    pub(crate) fn initial_membership(&self) -> Membership {
        if self.join {
            return Membership::default();
        }
        let mut voters: BTreeMap<NodeId, String> = self.peers.iter().map(|(&id, a)| (id, a.to_string())).collect();
        voters.insert(self.id, self.advertised().to_string());
        Membership { voters, learners: BTreeMap::new() }
    }
}

/// A per-process random seed (std's hasher keys are random), so election timeouts of
/// nodes started together differ.
fn random_seed() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn rejects_bad_configurations() {
        let base = || Config::new(1, addr(7001)).peer(2, addr(7002));
        assert!(base().validate().is_ok());
        // A 2-tick election timeout: valid, but it leaves no lease.
        let short_ticks = || base().tick(Duration::from_millis(150)).heartbeat_interval(Duration::from_millis(150));
        assert!(short_ticks().validate().is_ok());
        assert!(base().lease_reads(0.05).validate().is_ok());
        let cases: Vec<(&str, Config)> = vec![
            ("duplicate peer", base().peer(2, addr(7003))),
            ("own id elsewhere", base().peer(1, addr(7009))),
            ("id zero", base().peer(0, addr(7004))),
            ("slow heartbeat", base().heartbeat_interval(Duration::from_millis(200))),
            ("zero sizes", base().max_append_entries(0)),
            ("frame too small", base().max_append_bytes(16 << 20)),
            ("join with peers", base().join()),
            ("zero queue", base().client_queue(0)),
            ("short secret", base().cluster_secret("short")),
            ("advertise every interface", base().advertise("0.0.0.0:7000".parse().unwrap())),
            ("metadata over 1 KiB", base().metadata("x".repeat(1025))),
            ("negative clock drift", base().lease_reads(-0.1)),
            ("clock drift of a half", base().lease_reads(0.5)),
            ("clock drift NaN", base().lease_reads(f64::NAN)),
            ("no lease left", short_ticks().lease_reads(0.0)),
            ("zero node id", Config::new(0, addr(7000))),
        ];
        for (name, config) in cases {
            assert!(matches!(config.validate(), Err(Error::Config(_))), "{name} accepted");
        }
    }

    #[test]
    fn timings_become_ticks_and_defaults_agree_with_the_core() {
        let c = Config::new(1, addr(1)).core_config();
        assert_eq!((c.election_ticks, c.heartbeat_ticks), (30, 5));
        let core = CoreConfig::new(1);
        assert_eq!(
            (c.election_ticks, c.heartbeat_ticks, c.max_append_entries, c.max_append_bytes, c.max_inflight),
            (
                core.election_ticks,
                core.heartbeat_ticks,
                core.max_append_entries,
                core.max_append_bytes,
                core.max_inflight
            )
        );
    }
}
