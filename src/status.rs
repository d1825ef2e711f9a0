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
