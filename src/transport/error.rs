//! The one error type of the transport layer.

use std::{error::Error, fmt, io};

/// Why a transport operation failed.
///
/// Errors from reading (`FrameTooLarge`, `Decode`, the handshake checks, `Closed`, `Io`)
/// mean the byte stream can no longer be trusted: the caller closes that one connection
/// and keeps the others. Errors from queueing (`Encode`, `FrameTooLarge`, `Backpressure`)
/// leave the connection intact; nothing was queued.
#[derive(Debug)]
pub enum TransportError {
    /// The socket failed.
    Io(io::Error),
    /// A frame's length exceeds the configured maximum.
    FrameTooLarge {
        /// The frame body's length in bytes.
        len: usize,
        /// The largest body allowed.
        max: usize,
    },
    /// A frame body is not valid MessagePack for the expected type.
    Decode(String),
    /// A value could not be serialized.
    Encode(String),
    /// The peer speaks another protocol version.
    VersionMismatch {
        /// Our protocol version.
        ours: u32,
        /// The peer's protocol version.
        theirs: u32,
    },
    /// The peer belongs to another cluster.
    ClusterMismatch {
        /// Our cluster id.
        ours: String,
        /// The peer's cluster id.
        theirs: String,
    },
    /// The peer announced node id 0, which no valid node has.
    InvalidNode,
    /// The outbound buffer is full; the message was not queued.
    Backpressure,
    /// The peer closed the connection before the handshake completed.
    Closed,
    /// Frames were read before the peer's handshake was accepted.
    HandshakeIncomplete,
    /// The peer's proof does not show it holds the cluster secret (or the two sides hold
    /// different secrets).
    AuthFailed,
}

impl fmt::Display for TransportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Io(e) => write!(f, "transport I/O error: {e}"),
            Self::FrameTooLarge { len, max } => {
                write!(f, "frame of {len} bytes exceeds the maximum of {max}")
            }
            Self::Decode(why) => write!(f, "cannot decode frame: {why}"),
            Self::Encode(why) => write!(f, "cannot encode frame: {why}"),
            Self::VersionMismatch { ours, theirs } => {
                write!(f, "protocol version mismatch: ours {ours}, theirs {theirs}")
            }
            // Debug formatting escapes control characters a hostile peer might send.
            Self::ClusterMismatch { ours, theirs } => {
                write!(f, "cluster mismatch: ours {ours:?}, theirs {theirs:?}")
            }
            Self::InvalidNode => write!(f, "peer announced invalid node id 0"),
            Self::Backpressure => write!(f, "outbound buffer full"),
            Self::Closed => write!(f, "connection closed by peer"),
            Self::HandshakeIncomplete => write!(f, "handshake not yet completed"),
            Self::AuthFailed => write!(f, "peer failed authentication: wrong or missing cluster secret"),
        }
    }
}

impl Error for TransportError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match self {
            Self::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl From<io::Error> for TransportError {
    fn from(e: io::Error) -> Self {
        Self::Io(e)
    }
}
