//! The user's replicated state machine.

use serde::Serialize;
use serde::de::DeserializeOwned;

/// A deterministic state machine that quorate replicates.
///
/// Every node applies the same commands in the same order, so every node must reach the
/// same state: `apply` must not read clocks, randomness, the environment or anything
/// else that differs between nodes.
///
/// If `apply` panics, the node stops (clients get [`crate::Error::Stopped`]); it never
/// goes on serving a half-applied state.
pub trait StateMachine: Send + 'static {
    /// A command clients send; it travels to followers as MessagePack.
    type Command: Serialize + DeserializeOwned + Send + 'static;
    /// What `apply` answers to the client that sent the command.
    type Response: Serialize + DeserializeOwned + Send + 'static;

    /// Applies one committed command and returns the answer for its client.
    fn apply(&mut self, command: Self::Command) -> Self::Response;
}
