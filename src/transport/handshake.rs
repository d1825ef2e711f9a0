//! The first frame each side sends on a connection, and its validation.

use serde::{Deserialize, Serialize};

use super::auth::{Nonce, fresh_nonce};
use super::error::TransportError;

/// The wire protocol version this build speaks; peers must match exactly. Version 2 added
/// the nonce and the [`Proof`](super::Proof) frame (peer authentication); version 3 the
/// `client` role; version 4 sends the entries of an AppendEntries as one byte string
/// (`core/entry_batch.rs`).
pub const PROTOCOL_VERSION: u32 = 4;

/// Largest handshake frame body accepted. A handshake is a few dozen bytes, so a tight
/// bound stops an unauthenticated peer from making us buffer much before we know it.
pub const MAX_HANDSHAKE_BYTES: usize = 4 * 1024;

/// Identifies the sender of a connection; each side sends one as its first frame.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Handshake {
    /// The sender's wire protocol version.
    pub protocol_version: u32,
    /// The cluster the sender belongs to.
    pub cluster_id: String,
    /// The sender's node id (a client's: any id it picked); never 0.
    pub node_id: u64,
    /// Whether the sender is a client (a remote client's connection, which carries client
    /// requests only) rather than a peer node (which carries Raft messages). Covered by
    /// the proof, so neither can pass for the other.
    pub client: bool,
    /// Fresh for every connection: the other side's proof must cover it (see `auth`).
    pub nonce: Nonce,
}

impl Handshake {
    /// This build's handshake for node `node_id` of `cluster_id`, with a fresh nonce.
    pub fn new(cluster_id: &str, node_id: u64) -> Result<Handshake, TransportError> {
        Ok(Handshake {
            protocol_version: PROTOCOL_VERSION,
            cluster_id: cluster_id.into(),
            node_id,
            client: false,
            nonce: fresh_nonce()?,
        })
    }

    /// This build's handshake for a client calling itself `client_id` (not 0).
    pub fn client(cluster_id: &str, client_id: u64) -> Result<Handshake, TransportError> {
        Ok(Handshake { client: true, ..Handshake::new(cluster_id, client_id)? })
    }
}

/// Accepts `hs` only if it speaks `expected_version`, belongs to `expected_cluster` and
/// names a valid node.
///
/// Whether the node is a *member* is the caller's business: membership changes at
/// runtime and the transport knows nothing about it.
pub fn check_handshake(hs: &Handshake, expected_version: u32, expected_cluster: &str) -> Result<(), TransportError> {
    if hs.protocol_version != expected_version {
        return Err(TransportError::VersionMismatch { ours: expected_version, theirs: hs.protocol_version });
    }
    if hs.cluster_id != expected_cluster {
        return Err(TransportError::ClusterMismatch {
            ours: expected_cluster.to_owned(),
            theirs: hs.cluster_id.clone(),
        });
    }
    if hs.node_id == 0 {
        return Err(TransportError::InvalidNode);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hs(version: u32, cluster: &str, node_id: u64) -> Handshake {
        Handshake { protocol_version: version, cluster_id: cluster.into(), node_id, client: false, nonce: [0; 32] }
    }

    #[test]
    fn accepts_matching_handshake() {
        assert!(check_handshake(&hs(PROTOCOL_VERSION, "c1", 3), PROTOCOL_VERSION, "c1").is_ok());
    }

    #[test]
    fn rejects_version_mismatch() {
        let err = check_handshake(&hs(9, "c1", 3), 1, "c1").unwrap_err();
        assert!(matches!(err, TransportError::VersionMismatch { ours: 1, theirs: 9 }));
    }

    #[test]
    fn rejects_cluster_mismatch() {
        let err = check_handshake(&hs(1, "other", 3), 1, "c1").unwrap_err();
        match err {
            TransportError::ClusterMismatch { ours, theirs } => {
                assert_eq!((ours.as_str(), theirs.as_str()), ("c1", "other"));
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn rejects_node_zero() {
        let err = check_handshake(&hs(1, "c1", 0), 1, "c1").unwrap_err();
        assert!(matches!(err, TransportError::InvalidNode));
    }

    #[test]
    fn version_is_checked_before_cluster() {
        // A peer on another version may encode cluster ids differently; report the root cause.
        let err = check_handshake(&hs(2, "other", 0), 1, "c1").unwrap_err();
        assert!(matches!(err, TransportError::VersionMismatch { .. }));
    }
}
