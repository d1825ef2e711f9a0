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
//! The Raft protocol itself lives in [`core`], a sans-IO state machine. One server's
//! bookkeeping (its [`storage`], the state machine, what every client is told) lives in
//! [`replica`], also sans-IO: the node's thread drives it, and so does a deterministic
//! simulator that tests it under faults.
#![deny(missing_docs)]

mod client;
mod config;
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

pub use client::{Client, PendingWrite};
pub use config::Config;
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
