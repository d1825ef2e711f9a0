//! How the replica answers a client, whoever and wherever the client is.

use crate::error::Result;

/// One answer's way back to the client that asked: a slot a local [`crate::Client`]
/// waits on, a simulated client's record, a remote connection.
///
/// An implementation that is dropped unanswered must answer by itself, as if the node had
/// stopped: `Stopped` (certain: nothing was done) unless [`Respond::proposed`] was called,
/// then `LeadershipLost` (indeterminate: it may have been applied).
pub trait Respond<T>: Send + 'static {
    /// Marks the request as handed to Raft: from now on it may take effect.
    fn proposed(self) -> Self;
    /// Answers the client (who may have given up waiting: that is fine).
    fn send(self, result: Result<T>);
}

/// A kind of client: names the [`Respond`] type for every kind of answer.
pub trait Channel: 'static {
    /// The way back for an answer of type `T`.
    type Reply<T: Send + 'static>: Respond<T>;
}
