//! What clients ask of a replica.

use std::time::Duration;

use super::reply::Channel;
use crate::core::{NodeId, SharedBytes};
use crate::error::Result;
use crate::state_machine::StateMachine;
use crate::status::Status;

/// A closure that runs on the node thread against the state machine, or learns why not.
pub type ReadFn<M> = Box<dyn FnOnce(Result<&M>) + Send>;

/// One client request, carrying the way its answer goes back.
pub enum Request<M: StateMachine, C: Channel> {
    /// A command, already encoded on the client's side by
    /// [`encode_command`](super::encode_command) (with its session tag, if any).
    Write {
        /// The encoded command, in the shared buffer its log entry will hold (the node
        /// thread copies nothing).
        command: SharedBytes,
        /// How long the replica keeps waiting for the command's fate (as a follower, too,
        /// after losing leadership) before answering `Timeout`.
        timeout: Duration,
        /// Gets the state machine's response once the entry is applied here.
        reply: C::Reply<M::Response>,
    },
    /// Register a client session (§6.3) through the log.
    RegisterSession {
        /// The session's secret: its commands must carry it (see [`super::SessionTag`]).
        secret: u64,
        /// How long to wait for the registration to be applied.
        timeout: Duration,
        /// Gets the new session's id.
        reply: C::Reply<u64>,
    },
    /// A linearizable read (ReadIndex, dissertation §6.4).
    Read {
        /// Runs once the read is confirmed and applied far enough.
        read: ReadFn<M>,
    },
    /// A possibly stale read of this replica's state.
    ReadLocal {
        /// Runs at once.
        read: ReadFn<M>,
    },
    /// Answer once a leader is known, or `Timeout` after `timeout`.
    AwaitLeader {
        /// A leader not to answer with (the old one, when waiting for a new leader).
        other_than: Option<NodeId>,
        /// How long to wait.
        timeout: Duration,
        /// Gets the leader's id.
        reply: C::Reply<NodeId>,
    },
    /// The replica's role, term, indexes and members.
    Status {
        /// Gets the status.
        reply: C::Reply<Status>,
    },
    /// Add a member, listening at `addr` (learner first, then voter).
    AddServer {
        /// The new member's id.
        id: NodeId,
        /// Its listen address.
        addr: String,
        /// Answered once a committed configuration lists it as a voter.
        reply: C::Reply<()>,
    },
    /// Remove a member.
    RemoveServer {
        /// The member to remove.
        id: NodeId,
        /// Answered once the configuration without it is committed.
        reply: C::Reply<()>,
    },
    /// Campaign now.
    TriggerElection {
        /// Answered once the campaign started.
        reply: C::Reply<()>,
    },
    /// Hand leadership to `to`.
    TransferLeadership {
        /// The voter that should lead.
        to: NodeId,
        /// Answered once `to` leads.
        reply: C::Reply<()>,
    },
}
