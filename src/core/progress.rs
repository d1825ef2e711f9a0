//! What a leader knows about each follower's log (Figure 2's `nextIndex`/`matchIndex`),
//! plus the flow control that lets it pipeline AppendEntries.

use std::collections::VecDeque;

use super::types::LogIndex;

/// How the leader is currently replicating to one follower.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplicationState {
    /// Searching for the point where the logs agree: one AppendEntries in flight at a time.
    Probe,
    /// Logs agree up to `match_index`: stream batches ahead of acknowledgements, up to
    /// the in-flight bound, with `next_index` advanced optimistically.
    Replicate,
    /// The entries it needs are compacted away: sending it the snapshot (§7).
    Snapshot,
}

/// A snapshot being sent to one follower, in chunks (§7).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SnapshotSend {
    /// The snapshot's index.
    pub index: LogIndex,
    /// Where the next chunk starts.
    pub next_offset: u64,
    /// How far the follower acknowledged. What is in flight is counted in bytes from here
    /// to `next_offset`, so a duplicated or lost answer cannot skew it.
    pub acked_offset: u64,
    /// The last chunk was sent (a zero-byte snapshot still has one chunk).
    pub sent_last: bool,
    /// Incremented by every resend from an earlier offset; refusals of older attempts
    /// (answers to duplicates the resend itself caused) are ignored, or each would start
    /// another resend and the duplicates would multiply on a slow link.
    pub attempt: u32,
    /// Heartbeat intervals since the follower last answered (a rewind does not reset it).
    pub silent_heartbeats: u32,
}

/// The leader's view of one follower (or learner).
///
/// Invariant: `match_index < next_index`.
#[derive(Clone, Debug)]
pub struct Progress {
    /// Index of the next entry to send (Figure 2).
    pub next_index: LogIndex,
    /// Highest index known to be replicated on this server (Figure 2).
    pub match_index: LogIndex,
    /// Probe or pipelined replication.
    pub state: ReplicationState,
    /// In probe state: an AppendEntries is outstanding, wait for its answer or a heartbeat.
    pub probe_sent: bool,
    /// Last index of each AppendEntries in flight (Replicate state), oldest first.
    pub inflight: VecDeque<LogIndex>,
    /// Heard from this server since the last check-quorum round (dissertation §6.2).
    pub recent_active: bool,
    /// Acknowledged an AppendEntries since the last heartbeat: used to detect lost messages.
    pub acked_since_heartbeat: bool,
    /// The highest ReadIndex round this server has acknowledged.
    pub read_seq_acked: u64,
    /// In Snapshot state: the transfer under way.
    pub snapshot: Option<SnapshotSend>,
}

impl Progress {
    /// A fresh view, as a new leader sets it up (Figure 2: next = leader's last + 1, match = 0).
    pub fn new(next_index: LogIndex) -> Progress {
        Progress {
            next_index,
            match_index: LogIndex(0),
            state: ReplicationState::Probe,
            probe_sent: false,
            inflight: VecDeque::new(),
            recent_active: true,
            acked_since_heartbeat: false,
            read_seq_acked: 0,
            snapshot: None,
        }
    }

    /// Whether the leader may send another AppendEntries carrying entries now.
    pub fn can_send(&self, max_inflight: usize) -> bool {
        match self.state {
            ReplicationState::Probe => !self.probe_sent,
            ReplicationState::Replicate => self.inflight.len() < max_inflight,
            ReplicationState::Snapshot => false,
        }
    }

    /// Records that an AppendEntries ending at `last` was sent.
    pub fn on_sent(&mut self, last: LogIndex) {
        match self.state {
            ReplicationState::Probe => self.probe_sent = true,
            ReplicationState::Replicate => {
                self.next_index = last.next();
                self.inflight.push_back(last);
            }
            ReplicationState::Snapshot => debug_assert!(false, "no AppendEntries while sending a snapshot"),
        }
    }

    /// Records a successful AppendEntries up to `index`; returns whether `match_index` moved.
    pub fn on_success(&mut self, index: LogIndex) -> bool {
        self.acked_since_heartbeat = true;
        while self.inflight.front().is_some_and(|&last| last <= index) {
            self.inflight.pop_front();
        }
        if index <= self.match_index {
            return false;
        }
        self.match_index = index;
        if self.next_index <= index {
            self.next_index = index.next();
        }
        if self.state != ReplicationState::Replicate {
            self.become_replicate();
        }
        true
    }

    /// Starts sending the snapshot at `index` from its first byte.
    pub fn become_snapshot(&mut self, index: LogIndex) {
        self.state = ReplicationState::Snapshot;
        self.inflight.clear();
        self.probe_sent = false;
        self.snapshot = Some(SnapshotSend {
            index,
            next_offset: 0,
            acked_offset: 0,
            sent_last: false,
            attempt: 0,
            silent_heartbeats: 0,
        });
    }

    /// In Snapshot state: resends from what the follower acknowledged, or from `offset` if
    /// it says that is what it holds (a lost chunk or a lost ack; 0 after it restarted).
    pub fn rewind_snapshot(&mut self, offset: Option<u64>) {
        if let Some(t) = &mut self.snapshot {
            if let Some(offset) = offset {
                t.acked_offset = offset;
            }
            t.next_offset = t.acked_offset;
            t.sent_last = false;
            t.attempt = t.attempt.wrapping_add(1);
        }
    }

    /// Switches to pipelined replication from `match_index + 1`.
    pub fn become_replicate(&mut self) {
        self.state = ReplicationState::Replicate;
        self.snapshot = None;
        self.next_index = self.match_index.next();
        self.inflight.clear();
        self.probe_sent = false;
    }

    /// Switches to probing, starting at `next_index` (never at or below `match_index`).
    pub fn become_probe(&mut self, next_index: LogIndex) {
        self.state = ReplicationState::Probe;
        self.snapshot = None;
        self.next_index = next_index.max(self.match_index.next());
        self.inflight.clear();
        self.probe_sent = false;
    }

    /// Checks `match_index < next_index`.
    pub fn check_invariants(&self) {
        assert!(self.match_index < self.next_index, "match {} next {}", self.match_index, self.next_index);
        assert_eq!(self.snapshot.is_some(), self.state == ReplicationState::Snapshot, "snapshot transfer state");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pipelining_is_bounded_and_acks_free_slots() {
        let mut p = Progress::new(LogIndex(1));
        assert!(p.can_send(2));
        p.on_sent(LogIndex(5));
        assert!(!p.can_send(2), "probe waits for an answer");
        assert!(p.on_success(LogIndex(5)));
        assert_eq!(p.state, ReplicationState::Replicate);
        assert_eq!(p.next_index, LogIndex(6));
        p.on_sent(LogIndex(8));
        p.on_sent(LogIndex(10));
        assert!(!p.can_send(2));
        assert_eq!(p.next_index, LogIndex(11));
        assert!(p.on_success(LogIndex(8)));
        assert!(p.can_send(2));
        assert!(!p.on_success(LogIndex(7)), "stale acks do not move match");
        p.check_invariants();
    }

    #[test]
    fn probe_never_goes_below_match() {
        let mut p = Progress::new(LogIndex(10));
        p.on_success(LogIndex(4));
        p.become_probe(LogIndex(2));
        assert_eq!(p.next_index, LogIndex(5));
    }
}
