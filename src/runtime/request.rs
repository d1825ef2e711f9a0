//! What clients ask of the node thread, and how it answers.

use std::net::SocketAddr;

use crossbeam_channel::Sender;

use crate::core::NodeId;
use crate::error::{Error, Result};
use crate::state_machine::StateMachine;
use crate::status::Status;

/// A closure that runs on the node thread against the state machine, or learns why not.
pub(crate) type ReadFn<M> = Box<dyn FnOnce(Result<&M>) + Send>;

/// The answer channel of one request. If dropped unanswered (the node stopped with the
/// request still queued, say), it answers by itself: `Stopped` if nothing was proposed,
/// `LeadershipLost` once the request was proposed — so a client never gets a wrong answer.
pub(crate) struct Reply<T> {
    tx: Option<Sender<Result<T>>>,
    proposed: bool,
}

impl<T> Reply<T> {
    pub fn new(tx: Sender<Result<T>>) -> Reply<T> {
        Reply { tx: Some(tx), proposed: false }
    }

    /// Marks the request as handed to Raft: from now on it may take effect.
    pub fn proposed(mut self) -> Reply<T> {
        self.proposed = true;
        self
    }

    /// Answers the client (who may have given up waiting: that is fine).
    pub fn send(mut self, result: Result<T>) {
        if let Some(tx) = self.tx.take() {
            let _ = tx.send(result);
        }
    }
}

impl<T> Drop for Reply<T> {
    fn drop(&mut self) {
        if let Some(tx) = self.tx.take() {
            let _ = tx.send(Err(if self.proposed { Error::LeadershipLost } else { Error::Stopped }));
        }
    }
}

/// One client request, carrying the channel its answer goes back on.
pub(crate) enum Request<M: StateMachine> {
    /// A command, already encoded on the client's thread.
    Write { command: Vec<u8>, reply: Reply<M::Response> },
    /// A linearizable read (ReadIndex).
    Read { read: ReadFn<M> },
    /// A possibly stale read of the local state.
    ReadLocal { read: ReadFn<M> },
    /// Answer once a leader is known.
    AwaitLeader { timeout: std::time::Duration, reply: Reply<NodeId> },
    /// Snapshot of the node's state.
    Status { reply: Reply<Status> },
    /// Add a member (learner first, then voter).
    AddServer { id: NodeId, addr: SocketAddr, reply: Reply<()> },
    /// Remove a member.
    RemoveServer { id: NodeId, reply: Reply<()> },
    /// Campaign now.
    TriggerElection { reply: Reply<()> },
    /// Hand leadership to `to`.
    TransferLeadership { to: NodeId, reply: Reply<()> },
}
