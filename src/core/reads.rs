//! Linearizable reads by ReadIndex (dissertation §6.4): record the commit index, confirm
//! leadership with one heartbeat round to a majority, serve once applied reaches it.
//! Concurrent reads share one round. With lease reads on, a leader whose lease holds
//! skips the round (`lease.rs`).

use super::message::MessageKind;
use super::quorum;
use super::types::{LogIndex, NodeId, Role};
use super::{PendingRead, ProposeError, Raft, ReadState};

impl Raft {
    /// Asks to serve a linearizable read tagged `ctx`. When a majority has confirmed this
    /// server still leads, a [`ReadState`] with `ctx` appears in [`super::Ready::reads`]; if
    /// leadership is lost first, `ctx` appears in `dropped_reads`. With lease reads on and
    /// [`Raft::lease_holds`], the `ReadState` is there at once, at the commit index.
    pub fn read_index(&mut self, ctx: u64) -> Result<(), ProposeError> {
        if self.role != Role::Leader {
            return Err(ProposeError::NotLeader(self.leader_id));
        }
        // Until its no-op commits, a new leader's commit index may lag the previous
        // leader's: the no-op's index covers every entry committed before it (§6.4 step 1).
        let index = self.commit_index.max(self.term_start_index);
        let me = self.cfg.id;
        if self.membership.voters.len() == 1 && self.membership.is_voter(me) {
            self.ready.reads.push(ReadState { ctx, index });
            self.read_counts.read_index += 1;
            return Ok(());
        }
        if self.maybe_read_by_lease(ctx) {
            return Ok(());
        }
        self.read_counts.read_index += 1;
        // Confirmed by the next round, which must start after this read arrived.
        self.pending_reads.push_back(PendingRead { ctx, index, seq: self.read_seq + 1 });
        self.read_round_wanted = true;
        Ok(())
    }

    /// Starts the confirmation round the reads of this batch asked for.
    pub(super) fn flush_read_round(&mut self) {
        if !self.read_round_wanted {
            return;
        }
        self.read_round_wanted = false;
        self.read_seq += 1;
        self.on_round_sent();
        let read_seq = self.read_seq;
        let voters: Vec<NodeId> = self.membership.voters.keys().copied().filter(|&id| id != self.cfg.id).collect();
        for id in voters {
            let commit = self.commit_index.min(self.progress.get(&id).map_or(LogIndex(0), |p| p.match_index));
            self.send(id, MessageKind::Heartbeat { commit, read_seq });
        }
    }

    /// Releases the reads whose round a majority of voters has acknowledged.
    pub(super) fn release_reads(&mut self) {
        let Some(front) = self.pending_reads.front() else { return };
        let me = self.cfg.id;
        let confirmed = quorum::majority_value(&self.membership, |id| {
            if id == me { u64::MAX } else { self.progress.get(&id).map_or(0, |p| p.read_seq_acked) }
        })
        .unwrap_or(0);
        if front.seq > confirmed {
            return;
        }
        while let Some(read) = self.pending_reads.front().copied() {
            if read.seq > confirmed {
                break;
            }
            self.pending_reads.pop_front();
            self.ready.reads.push(ReadState { ctx: read.ctx, index: read.index });
        }
    }
}
