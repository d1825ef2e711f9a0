//! quorate turns a deterministic state machine into a strongly consistent, replicated
//! one with Raft. Implement [`StateMachine`], start one [`Node`] per process (or several
//! in one process), and call blocking methods on a [`Client`]. No async runtime: each node
//! is one thread running a `mio` event loop; nodes speak length-prefixed MessagePack over TCP.
//!
//! ```
//! use std::time::Duration;
//! use quorate::{Config, Node, StateMachine};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Default)]
//! struct Counter { value: u64 }
//!
//! #[derive(Serialize, Deserialize)]
//! enum Op { Increment, IncrementBy(u64) }
//!
//! impl StateMachine for Counter {
//!     type Command = Op;
//!     type Response = u64;
//!     fn apply(&mut self, op: Op) -> u64 {
//!         match op {
//!             Op::Increment => self.value += 1,
//!             Op::IncrementBy(n) => self.value += n,
//!         }
//!         self.value
//!     }
//! }
//!
//! # fn main() -> Result<(), quorate::Error> {
//! // A one-node cluster; add `.peer(id, addr)` for each other member of a real one.
//! let node = Node::start(Config::new(1, "127.0.0.1:0".parse().unwrap()), Counter::default())?;
//! let client = node.client();
//! client.await_leader(Duration::from_secs(5))?;
//! assert_eq!(client.write(Op::Increment)?, 1);
//! assert_eq!(client.write(Op::IncrementBy(41))?, 42);
//! assert_eq!(client.read(|c: &Counter| c.value)?, 42); // linearizable
//! node.stop();
//! # Ok(())
//! # }
//! ```
//!
//! # Guide
//!
//! **Concepts.** A cluster is a few [`Node`]s (three or five, usually), each in its own
//! process, each holding a copy of your [`StateMachine`]. A write is a *command*: the
//! leader appends it to its log, replicates it to a majority, and then every node applies
//! it, in the same order, to its copy. `apply` must be deterministic, so every copy goes
//! through the same states. A node is leader, follower or candidate ([`Role`]); only the
//! leader accepts writes, and a new one is elected when it fails.
//!
//! **Two kinds of client.**
//! - [`Client`], from [`Node::client`], calls the node in its own process: `write` and
//!   `submit` (pipelined) replicate commands, `read` runs a closure on the leader's state
//!   after confirming its leadership (linearizable), `read_local` on this node's (maybe
//!   stale). On a follower, `write` answers [`Error::Redirect`] naming the leader, or, from
//!   a [`Client::forwarding`] handle, forwards the write to the leader.
//! - [`RemoteClient`] calls a cluster from any other process over TCP: it finds the leader
//!   from any node, follows it through failovers, and reads with a serializable query (a
//!   state machine that implements [`Queries`]).
//!
//! **Errors and retries.** Every [`Error`] says whether the command may have taken effect
//! ([`Error::is_indeterminate`]: only `Timeout` and `LeadershipLost`). Clients have
//! sessions (Raft dissertation §6.3): each write carries a session and a sequence number,
//! every node remembers the answers it gave, so a retried write applies once and gets the
//! first answer. `Client::write` and `RemoteClient::write` retry by themselves whenever
//! that is safe, until their timeout.
//!
//! **Memory or durable.** By default the log and the vote live in memory: fast, and a
//! cluster survives the loss of any minority, but a restarted node has forgotten its state
//! and must rejoin under a new id. With [`Config::data_dir`] they are on disk, synced once
//! per batch before anything that depends on them is acknowledged, so an acknowledged
//! write survives any crash of any number of nodes. A state machine with snapshots
//! ([`serde_snapshots!`]) lets the log be compacted in both modes.
//!
//! **Membership.** A new node starts with [`Config::join`] and waits; the leader's
//! [`Client::add_server`] adds it as a learner, catches it up and makes it a voter.
//! [`Client::remove_server`] removes one; [`Client::transfer_leadership`] hands leadership
//! over; [`Client::trigger_election`] makes a node campaign now.
//!
//! **Watching a node.** [`Client::status`] gives role, term, leader, indexes, members and
//! [`Metrics`]; [`Client::watch`] a channel of statuses at every role or leader change;
//! [`Client::await_new_leader`] waits for a failover to finish.
//!
//! **The advanced layers.** The crate is built in layers that are public for tools, tests
//! and alternative drivers, not for everyday use: [`core`] is the Raft protocol as a
//! sans-IO state machine; [`replica`] one server's bookkeeping around it (storage, state
//! machine, client answers), also sans-IO; [`storage`] the memory and file storages;
//! [`transport`] the framing and handshake. A deterministic simulator drives the replica
//! under faults in the test suite.
#![deny(missing_docs)]

mod client;
mod codec;
mod config;
mod config_file;
pub mod core;
mod error;
mod node;
mod remote;
pub mod replica;
mod runtime;
mod session;
mod state_machine;
mod status;
pub mod storage;
pub mod transport;

// What a user works with, first.
pub use client::{Client, PendingWrite};
pub use config::Config;
pub use config_file::ConfigFile;
pub use core::{NodeId, Role};
pub use error::{Error, Peer, Result};
pub use node::Node;
pub use remote::{RemoteClient, RemoteOptions, RemotePending};
#[doc(hidden)]
pub use state_machine::answer_query;
pub use state_machine::{Queries, Snapshot, StateMachine};
pub use status::{Member, Metrics, PeerTraffic, Status};

#[cfg(test)]
mod tests {
    use super::*;

    const fn assert_send_sync<T: Send + Sync>() {}
    struct Nothing;
    impl StateMachine for Nothing {
        type Command = ();
        type Response = ();
        fn apply(&mut self, _: ()) {}
    }
    const _: () = assert_send_sync::<Client<Nothing>>();
    const _: () = assert_send_sync::<Node<Nothing>>();
}
