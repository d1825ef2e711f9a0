//! A snapshot of one node's view of the cluster.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::core::{NodeId, Role};

/// What one node knows, as returned by [`crate::Client::status`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// This node's id.
    pub id: NodeId,
    /// Its role.
    pub role: Role,
    /// Its current term.
    pub term: u64,
    /// The leader it knows of in that term.
    pub leader: Option<NodeId>,
    /// Highest log index known committed.
    pub commit_index: u64,
    /// Highest log index applied to the state machine.
    pub applied_index: u64,
    /// Index of the last log entry.
    pub last_log_index: u64,
    /// Index of the latest snapshot this node holds (0 if none): its log was compacted.
    pub snapshot_index: u64,
    /// How many entries its log holds in memory (after compaction, those since the
    /// snapshot and a trailing window before it).
    pub log_entries: u64,
    /// Client sessions (§6.3) live in this node's applied state.
    pub sessions: u64,
    /// Members of the latest configuration in this node's log.
    pub members: Vec<Member>,
    /// Whether that configuration is committed (as far as this node knows).
    pub membership_committed: bool,
    /// Why a peer last refused this node's connection, if one did (a node restarted
    /// without its state is refused by the others: it must rejoin under a new id).
    pub refused: Option<String>,
    /// Set when the leader told this node it is not in the cluster's configuration (it was
    /// removed, and campaigns in vain); cleared once a leader accepts it again.
    pub removed: Option<String>,
    /// Counters since the node started, for graphs and alerts.
    pub metrics: Metrics,
}

/// What a node has done since it started: counters only ever grow (a production user
/// graphs their rates).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metrics {
    /// Entries this node proposed as leader (writes and session registrations).
    pub proposals: u64,
    /// Entries this node learned committed.
    pub entries_committed: u64,
    /// Entries this node applied to its state machine.
    pub entries_applied: u64,
    /// Elections this node started (real campaigns, not pre-votes).
    pub elections_started: u64,
    /// Elections this node won.
    pub elections_won: u64,
    /// Linearizable reads this node served as leader under its lease, with no round trip
    /// ([`crate::Config::lease_reads`]).
    #[serde(default)]
    pub reads_by_lease: u64,
    /// Linearizable reads this node confirmed as leader by a ReadIndex heartbeat round.
    #[serde(default)]
    pub reads_by_read_index: u64,
    /// Times the leader this node knows of changed to another (or to a first) node.
    pub leader_changes: u64,
    /// Snapshots this node took of its own state.
    pub snapshots_taken: u64,
    /// Snapshots this node received from a leader and installed.
    pub snapshots_installed: u64,
    /// InstallSnapshot chunks this node sent as leader.
    pub snapshot_chunks_sent: u64,
    /// `fdatasync`s of the log (durable mode; 0 in memory mode).
    pub log_syncs: u64,
    /// Traffic with each peer, by id.
    pub peers: std::collections::BTreeMap<NodeId, PeerTraffic>,
}

/// Messages and bytes exchanged with one peer (frames of Raft messages, and the bytes
/// of every frame on the connections).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerTraffic {
    /// Raft messages sent to it.
    pub messages_out: u64,
    /// Bytes queued to it.
    pub bytes_out: u64,
    /// Raft messages received from it.
    pub messages_in: u64,
    /// Bytes read from it.
    pub bytes_in: u64,
}

/// One member of the configuration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// Its id.
    pub id: NodeId,
    /// Its address, as recorded in the configuration.
    pub addr: Option<SocketAddr>,
    /// Voter or learner.
    pub voter: bool,
    /// On the leader: the highest index known replicated on it.
    pub match_index: Option<u64>,
    /// What the member announced about itself ([`crate::Config::metadata`]: an API or
    /// client address, say), as far as this node heard from it; `None` if it announced
    /// nothing or has not connected to this node since it started.
    pub metadata: Option<String>,
}

impl Status {
    /// Ids of the voters.
    pub fn voters(&self) -> Vec<NodeId> {
        self.members.iter().filter(|m| m.voter).map(|m| m.id).collect()
    }

    /// Ids of the learners.
    pub fn learners(&self) -> Vec<NodeId> {
        self.members.iter().filter(|m| !m.voter).map(|m| m.id).collect()
    }
}
