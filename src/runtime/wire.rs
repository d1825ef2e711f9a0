//! What node-to-node connections carry, framed by the transport.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::core::Message;

/// One frame's body.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Wire {
    /// The first frame a dialer sends after the transport's handshake.
    Hello(Hello),
    /// A Raft message from the dialer.
    Raft(Message),
    /// The acceptor's last word before closing: why it refused the connection.
    Refused(String),
    /// The leader tells a server that keeps campaigning that it is not in the leader's
    /// configuration (it was removed): informational, shown in its status; Raft ignores it.
    Removed(String),
    /// Sent by a dialer with nothing else to say, so the acceptor's idle timeout (which
    /// closes connections that stopped sending) leaves a healthy link alone.
    Keepalive,
}

/// Tells the acceptor more about the dialing node than the transport's handshake does.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Hello {
    /// Random per process start: a node that comes back with the same id but another
    /// incarnation has lost its memory-only state and must not take part again.
    pub incarnation: u64,
    /// Where the dialer listens, so a `join()` node can answer a leader it has no
    /// address for yet.
    pub listen_addr: SocketAddr,
    /// The dialer's metadata ([`crate::Config::metadata`]), shown in every node's status.
    #[serde(default)]
    pub metadata: Option<String>,
}
