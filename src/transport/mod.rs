//! **Advanced layer.** TCP transport: framing, handshake and non-blocking connections for
//! a mio event loop (nodes and [`crate::RemoteClient`] use it; applications need not).
//!
//! Wire format: every frame is a 4-byte big-endian body length followed by one
//! MessagePack value (see [`encode_frame`] and [`FrameDecoder`]). The first frame each side
//! sends is a [`Handshake`], the second a [`Proof`] of the cluster secret (see [`prove`]);
//! after them, frames carry whatever serde type the runtime
//! chooses. This module knows nothing about Raft.
//!
//! Bounds everywhere: frame size ([`ConnectionConfig::max_frame_bytes`], and a much
//! smaller [`MAX_HANDSHAKE_BYTES`] before the peer is known), unsent bytes
//! ([`ConnectionConfig::max_outbound_bytes`]) and bytes read per call
//! ([`ConnectionConfig::read_budget_bytes`]). Malformed input is a [`TransportError`];
//! the caller closes only that connection.

mod auth;
mod backoff;
mod conn;
mod error;
mod frame;
mod handshake;

#[cfg(test)]
mod loopback_tests;

pub use auth::{
    CLUSTER_SECRET_BYTES_MIN, ClusterKey, NONCE_BYTES, Nonce, Proof, Role, Transcript, fresh_nonce, prove, verify,
};
pub use backoff::{Backoff, DEFAULT_BACKOFF_BASE, DEFAULT_BACKOFF_MAX};
pub use conn::{Connection, ConnectionConfig, DEFAULT_MAX_OUTBOUND_BYTES, READ_BUDGET_BYTES, ReadOutcome, transcript};
pub use error::TransportError;
pub use frame::{DEFAULT_MAX_FRAME_BYTES, FrameDecoder, LEN_PREFIX_BYTES, encode_frame};
pub use handshake::{Handshake, MAX_HANDSHAKE_BYTES, PROTOCOL_VERSION, check_handshake};
