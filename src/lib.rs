//! quorate: a replicated state machine library built on Raft.
#![deny(missing_docs)]

mod client;
mod config;
pub mod core;
mod error;
mod node;
mod runtime;
mod state_machine;
mod status;
pub mod transport;

pub use client::Client;
pub use config::Config;
pub use core::{NodeId, Role};
pub use error::{Error, Peer, Result};
pub use node::Node;
pub use state_machine::StateMachine;
pub use status::{Member, Status};

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
