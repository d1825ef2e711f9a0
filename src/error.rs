//! The errors clients see. Each says whether the command may have taken effect.

use std::fmt;
use std::net::SocketAddr;

use crate::core::NodeId;

/// A cluster member: its id and the address it listens on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Peer {
    /// The member's node id.
    pub id: NodeId,
    /// Its listen address, if this node knows it.
    pub addr: Option<SocketAddr>,
}

/// Why a client call failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// This node is not the leader; nothing was proposed. `leader` is the leader it knows of.
    Redirect {
        /// The leader, if known.
        leader: Option<Peer>,
    },
    /// No answer in time: the command MAY have been applied.
    Timeout,
    /// The command was proposed, then this node stopped, or jumped past the command's
    /// entry by installing a snapshot, before it learned the command's fate: it MAY have
    /// been applied. (A leader that loses leadership keeps waiting, as a follower, for the
    /// entry's fate: see [`Error::Dropped`].)
    LeadershipLost,
    /// The command was proposed, but a later leader's entry took its place in the log
    /// (§5.3): it was certainly not applied. Retrying is safe; `leader` is the leader this
    /// node knows of now.
    Dropped {
        /// The leader, if known.
        leader: Option<Peer>,
    },
    /// The client's session (§6.3) expired or was evicted, or forgot this command's
    /// sequence, so the command was refused: this attempt certainly had no effect. (If an
    /// earlier attempt of the same command timed out, that one may have been applied.)
    /// [`crate::Client::write`] registers a new session and retries by itself when safe.
    SessionExpired,
    /// The node is stopped; nothing was proposed.
    Stopped,
    /// The node's request queue is full (backpressure); nothing was proposed. Retry later.
    Busy,
    /// The encoded command is larger than one replication batch may carry
    /// ([`crate::Config::max_append_bytes`]); nothing was proposed.
    TooLarge {
        /// The encoded command's size.
        bytes: usize,
        /// The largest command accepted.
        max: usize,
    },
    /// A leadership transfer is under way; the leader accepts no writes or changes until it
    /// ends (at most an election timeout). Nothing was proposed.
    TransferInProgress,
    /// Another membership change is not committed yet; nothing was proposed.
    ChangeInProgress,
    /// The leader has not committed an entry of its own term yet, so it may not change
    /// membership; retry shortly. Nothing was proposed.
    NotCommittedInTerm,
    /// `add_server` of a node that is already a voter.
    AlreadyMember(NodeId),
    /// `remove_server` of a node that is not a member.
    NotAMember(NodeId),
    /// The membership change is not valid (for example, it would remove the last voter).
    InvalidMembership(String),
    /// The node (or the transfer target) has no vote: a learner, a removed node, or a
    /// `join()` node not yet added.
    NotAVoter,
    /// A leadership transfer was abandoned before the target became leader.
    TransferFailed,
    /// `trigger_election` refused: lease reads are on ([`crate::Config::lease_reads`]) and
    /// this node heard from a leader (or started) less than an election timeout ago, so it
    /// promised that leader's read lease its vote. Nothing happened. Move a live leader
    /// with [`crate::Client::transfer_leadership`]; a dead one is replaced by itself.
    LeaseHeld,
    /// The configuration is invalid.
    Config(String),
    /// An I/O error (binding the listener, spawning the thread).
    Io(std::io::Error),
    /// A command or response could not be encoded or decoded.
    Codec(String),
    /// The node's storage failed to write or sync (a full disk, an I/O error), so the node
    /// stopped rather than acknowledge what it could not persist. Nothing was proposed by
    /// the call that got this; writes proposed before the failure got `LeadershipLost`.
    StorageFailed(String),
    /// The data directory cannot be used: locked by another node, another node's or
    /// cluster's, or corrupt before its tail (the message names the file and offset).
    DataDir(String),
}

impl Error {
    /// Whether the command may have taken effect despite the error: a client that retries
    /// must be ready to see it applied twice.
    pub fn is_indeterminate(&self) -> bool {
        matches!(self, Error::Timeout | Error::LeadershipLost)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Redirect { leader: Some(Peer { id, addr: Some(addr) }) } => {
                write!(f, "not the leader; the leader is node {id} at {addr}")
            }
            Error::Redirect { leader: Some(p) } => write!(f, "not the leader; the leader is node {}", p.id),
            Error::Redirect { leader: None } => write!(f, "not the leader; no leader known"),
            Error::Timeout => write!(f, "timed out (a write or membership change may still take effect)"),
            Error::LeadershipLost => write!(f, "leadership lost after proposing (the command may have been applied)"),
            Error::Dropped { leader: Some(p) } => {
                write!(f, "the command was replaced in the log by a new leader, node {} (not applied)", p.id)
            }
            Error::Dropped { leader: None } => {
                write!(f, "the command was replaced in the log by a new leader (not applied)")
            }
            Error::SessionExpired => write!(f, "the client session expired (the command was not applied)"),
            Error::Stopped => write!(f, "the node is stopped"),
            Error::Busy => write!(f, "the node's request queue is full"),
            Error::TooLarge { bytes, max } => write!(f, "command of {bytes} bytes exceeds the {max}-byte limit"),
            Error::TransferInProgress => write!(f, "a leadership transfer is in progress"),
            Error::ChangeInProgress => write!(f, "another membership change is in progress"),
            Error::NotCommittedInTerm => write!(f, "the leader has not committed an entry in its term yet"),
            Error::AlreadyMember(id) => write!(f, "node {id} is already a member"),
            Error::NotAMember(id) => write!(f, "node {id} is not a member"),
            Error::InvalidMembership(why) => write!(f, "invalid membership change: {why}"),
            Error::NotAVoter => write!(f, "not a voter"),
            Error::LeaseHeld => write!(
                f,
                "a leader's read lease holds this node's vote (use transfer_leadership to move a live leader)"
            ),
            Error::TransferFailed => write!(f, "leadership transfer failed"),
            Error::Config(why) => write!(f, "invalid configuration: {why}"),
            Error::Io(e) => write!(f, "I/O error: {e}"),
            Error::Codec(why) => write!(f, "encoding error: {why}"),
            Error::StorageFailed(why) => write!(f, "the node stopped because its storage failed: {why}"),
            Error::DataDir(why) => write!(f, "cannot use the data dir: {why}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Error {
        Error::Io(e)
    }
}

/// A `Result` with quorate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_timeouts_and_lost_leadership_are_indeterminate() {
        assert!(Error::Timeout.is_indeterminate());
        assert!(Error::LeadershipLost.is_indeterminate());
        for e in [
            Error::Redirect { leader: None },
            Error::Stopped,
            Error::Dropped { leader: None },
            Error::SessionExpired,
            Error::Busy,
            Error::TransferInProgress,
            Error::NotAVoter,
            Error::LeaseHeld,
            Error::StorageFailed("disk full".into()),
        ] {
            assert!(!e.is_indeterminate(), "{e}");
        }
    }
}
