//! What a remote client's connection carries, after the transport's handshake (with the
//! `client` role): requests one way, responses the other, matched by id. A node's peer
//! connections carry another type, so neither kind of frame is accepted on the other.

use serde::{Deserialize, Serialize};

use crate::core::NodeId;
use crate::error::{Error, Peer};

/// One request from a remote client.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct ClientRequest {
    /// Chosen by the client; its response carries it back.
    pub id: u64,
    /// What it asks.
    pub call: Call,
}

/// What a remote client can ask a node: the in-process [`crate::Client`]'s calls, with a
/// serializable query in place of a read closure.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Call {
    /// A command entry's payload (see [`crate::replica::encode_command`]), checked to
    /// decode before it is proposed.
    Write { command: Bytes, timeout_ms: u64 },
    /// Register a session with this secret.
    RegisterSession { secret: u64, timeout_ms: u64 },
    /// A query (see [`crate::Queries`]): linearizable, or of the node's local state.
    Query { query: Bytes, local: bool },
    /// Wait for a leader.
    AwaitLeader { other_than: Option<NodeId>, timeout_ms: u64 },
    /// The node's status.
    Status,
    /// Membership and leadership calls, as on [`crate::Client`].
    AddServer { id: NodeId, addr: String },
    /// See [`crate::Client::remove_server`].
    RemoveServer { id: NodeId },
    /// See [`crate::Client::trigger_election`].
    TriggerElection,
    /// See [`crate::Client::transfer_leadership`].
    TransferLeadership { to: NodeId },
}

/// The answer to request `id`: the result, MessagePack-encoded, or the error.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct ClientResponse {
    /// The request's id.
    pub id: u64,
    /// Its outcome.
    pub result: Result<Bytes, WireError>,
}

/// Bytes that MessagePack carries as one binary string (not an array of numbers).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Bytes(#[serde(with = "crate::core::as_bytes")] pub Vec<u8>);

/// An [`Error`] as it crosses the wire (I/O errors travel as their text).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum WireError {
    Redirect {
        leader: Option<Peer>,
    },
    Timeout,
    LeadershipLost,
    Dropped {
        leader: Option<Peer>,
    },
    SessionExpired,
    Stopped,
    Busy,
    TooLarge {
        bytes: u64,
        max: u64,
    },
    TransferInProgress,
    ChangeInProgress,
    NotCommittedInTerm,
    AlreadyMember(NodeId),
    NotAMember(NodeId),
    InvalidMembership(String),
    NotAVoter,
    TransferFailed,
    Config(String),
    Codec(String),
    StorageFailed(String),
    /// Anything else (an I/O error on the node, say), as text.
    Other(String),
}

impl From<Error> for WireError {
    fn from(e: Error) -> WireError {
        match e {
            Error::Redirect { leader } => WireError::Redirect { leader },
            Error::Timeout => WireError::Timeout,
            Error::LeadershipLost => WireError::LeadershipLost,
            Error::Dropped { leader } => WireError::Dropped { leader },
            Error::SessionExpired => WireError::SessionExpired,
            Error::Stopped => WireError::Stopped,
            Error::Busy => WireError::Busy,
            Error::TooLarge { bytes, max } => WireError::TooLarge { bytes: bytes as u64, max: max as u64 },
            Error::TransferInProgress => WireError::TransferInProgress,
            Error::ChangeInProgress => WireError::ChangeInProgress,
            Error::NotCommittedInTerm => WireError::NotCommittedInTerm,
            Error::AlreadyMember(id) => WireError::AlreadyMember(id),
            Error::NotAMember(id) => WireError::NotAMember(id),
            Error::InvalidMembership(why) => WireError::InvalidMembership(why),
            Error::NotAVoter => WireError::NotAVoter,
            Error::TransferFailed => WireError::TransferFailed,
            Error::Config(why) => WireError::Config(why),
            Error::Codec(why) => WireError::Codec(why),
            Error::StorageFailed(why) => WireError::StorageFailed(why),
            other => WireError::Other(other.to_string()),
        }
    }
}

impl From<WireError> for Error {
    fn from(e: WireError) -> Error {
        let size = |n: u64| usize::try_from(n).unwrap_or(usize::MAX);
        match e {
            WireError::Redirect { leader } => Error::Redirect { leader },
            WireError::Timeout => Error::Timeout,
            WireError::LeadershipLost => Error::LeadershipLost,
            WireError::Dropped { leader } => Error::Dropped { leader },
            WireError::SessionExpired => Error::SessionExpired,
            WireError::Stopped => Error::Stopped,
            WireError::Busy => Error::Busy,
            WireError::TooLarge { bytes, max } => Error::TooLarge { bytes: size(bytes), max: size(max) },
            WireError::TransferInProgress => Error::TransferInProgress,
            WireError::ChangeInProgress => Error::ChangeInProgress,
            WireError::NotCommittedInTerm => Error::NotCommittedInTerm,
            WireError::AlreadyMember(id) => Error::AlreadyMember(id),
            WireError::NotAMember(id) => Error::NotAMember(id),
            WireError::InvalidMembership(why) => Error::InvalidMembership(why),
            WireError::NotAVoter => Error::NotAVoter,
            WireError::TransferFailed => Error::TransferFailed,
            WireError::Config(why) => Error::Config(why),
            WireError::Codec(why) => Error::Codec(why),
            WireError::StorageFailed(why) => Error::StorageFailed(why),
            WireError::Other(why) => Error::Io(std::io::Error::other(why)),
        }
    }
}

/// Milliseconds as the wire carries them (saturating: `Duration::MAX` means "very long").
pub(crate) fn millis(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_keep_their_meaning_across_the_wire() {
        let leader = Some(Peer { id: 3, addr: Some("127.0.0.1:9".parse().unwrap()) });
        for e in [
            Error::Redirect { leader },
            Error::Timeout,
            Error::LeadershipLost,
            Error::Dropped { leader: None },
            Error::SessionExpired,
            Error::Stopped,
            Error::Busy,
            Error::TooLarge { bytes: 10, max: 5 },
            Error::NotAVoter,
        ] {
            let text = e.to_string();
            let indeterminate = e.is_indeterminate();
            let bytes = rmp_serde::to_vec(&WireError::from(e)).unwrap();
            let back = Error::from(rmp_serde::from_slice::<WireError>(&bytes).unwrap());
            assert_eq!((back.to_string(), back.is_indeterminate()), (text, indeterminate));
        }
    }
}
