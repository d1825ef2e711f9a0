//! The last events of a simulation, printed when a seed fails.

use std::collections::VecDeque;
use std::fmt;

use quorate::core::{Message, MessageKind, NodeId};

/// How many events a failure prints.
const TRACE_EVENTS_MAX: usize = 48;

/// One thing that happened.
#[derive(Debug)]
pub enum Event {
    /// A message delivered: its kind, and up to three numbers that say most about it.
    Deliver {
        from: NodeId,
        to: NodeId,
        term: u64,
        what: &'static str,
        detail: [u64; 3],
    },
    Write(NodeId, u64),
    Read(NodeId),
    Admin(NodeId, String),
    Answer(String),
    Sync(NodeId),
    Crash {
        id: NodeId,
        graceful: bool,
        kept: usize,
        lost: usize,
    },
    Restart(NodeId),
    Partition(usize),
    Heal,
}

impl Event {
    pub fn deliver(from: NodeId, to: NodeId, msg: &Message) -> Event {
        let (what, detail) = match &msg.kind {
            MessageKind::RequestVote(rv) => {
                ("RequestVote[last_index,last_term,pre]", [rv.last_log_index.0, rv.last_log_term.0, rv.pre_vote as u64])
            }
            MessageKind::RequestVoteResponse { granted, pre_vote } => {
                ("RequestVoteResponse[granted,pre]", [*granted as u64, *pre_vote as u64, 0])
            }
            MessageKind::AppendEntries(ae) => (
                "AppendEntries[prev,entries,commit]",
                [ae.prev_log_index.0, ae.entries.len() as u64, ae.leader_commit.0],
            ),
            MessageKind::AppendEntriesResponse(r) => {
                ("AppendEntriesResponse[ok,index,hint]", [r.success as u64, r.index.0, r.conflict_index.0])
            }
            MessageKind::Heartbeat { commit, read_seq } => ("Heartbeat[commit,read_seq]", [commit.0, *read_seq, 0]),
            MessageKind::HeartbeatResponse { read_seq } => ("HeartbeatResponse[read_seq]", [*read_seq, 0, 0]),
            MessageKind::TimeoutNow => ("TimeoutNow", [0; 3]),
            MessageKind::LeaderHint { leader } => ("LeaderHint[leader]", [*leader, 0, 0]),
            MessageKind::LeaderQuery => ("LeaderQuery", [0; 3]),
            MessageKind::InstallSnapshot(is) => {
                ("InstallSnapshot[index,offset,len]", [is.meta.index.0, is.offset, is.data.len() as u64])
            }
            MessageKind::InstallSnapshotResponse(r) => {
                ("InstallSnapshotResponse[index,next,done]", [r.index.0, r.next_offset, r.done as u64])
            }
        };
        Event::Deliver { from, to, term: msg.term.0, what, detail }
    }
}

/// A ring of the latest events, with the virtual time of each.
#[derive(Default)]
pub struct Trace {
    events: VecDeque<(u64, Event)>,
}

impl Trace {
    pub fn push(&mut self, at: u64, event: Event) {
        if self.events.len() == TRACE_EVENTS_MAX {
            self.events.pop_front();
        }
        self.events.push_back((at, event));
    }
}

impl fmt::Display for Trace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (at, event) in &self.events {
            writeln!(f, "  t={at:>6} {event:?}")?;
        }
        Ok(())
    }
}
