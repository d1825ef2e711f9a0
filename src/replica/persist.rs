//! The persistence contract, from the replica's side: every `Ready` with something to
//! persist becomes one storage batch; the messages that must wait for it wait with it;
//! once storage says the batch is durable, the core hears so and the messages leave.

use super::Replica;
use super::reply::Channel;
use crate::core::{Envelope, HardState, LogIndex, Ready, Term};
use crate::error::Error;
use crate::state_machine::StateMachine;
use crate::storage::Storage;

/// One batch handed to storage and not yet known durable.
pub(super) struct Batch {
    /// Its number in the storage's order (1 for the first batch).
    seq: u64,
    /// The hard state once this batch is written.
    hard: HardState,
    /// The log's last entry once this batch is written, lowered by any later truncation
    /// (a durable copy of an entry since overwritten proves nothing about its successor).
    last: (LogIndex, Term),
    /// Messages that may leave once this batch is durable.
    messages: Vec<Envelope>,
}

impl<M: StateMachine, S: Storage, C: Channel> Replica<M, S, C> {
    /// Takes the core's output until it has none: writes batches, queues messages, flushes
    /// storage once, then tells the core what became durable (which may cause more output).
    pub(super) fn process_ready(&mut self) {
        loop {
            let ready = self.core.take_ready();
            if !ready.is_empty() {
                self.on_ready(ready);
                continue;
            }
            if let Err(e) = self.storage.flush() {
                self.poison_storage(format!("cannot sync storage: {e}"));
            }
            if !self.release_synced() {
                return;
            }
        }
    }

    fn on_ready(&mut self, mut ready: Ready) {
        if self.poisoned.is_some() {
            // A write failed: nothing may leave that could rest on it. The node stops.
            return;
        }
        if !ready.snapshot_work.is_empty() {
            // Before this Ready's writes, which (after an install) start past the snapshot.
            self.receive_snapshot(std::mem::take(&mut ready.snapshot_work));
            if self.poisoned.is_some() {
                return;
            }
        }
        self.fill_snapshot_chunks(&mut ready.messages);
        self.outbox.extend(ready.messages);
        let mut held = ready.persisted_messages;
        if ready.hard_state.is_some() || ready.log_changed_from.is_some() {
            self.append_batch(ready.hard_state, ready.log_changed_from, std::mem::take(&mut held));
        }
        if !held.is_empty() {
            // Nothing new to write, but what they say may rest on batches not yet durable.
            match self.unsynced.back_mut() {
                Some(batch) => batch.messages.append(&mut held),
                None => self.outbox.append(&mut held),
            }
        }
        for read in ready.reads {
            if let Some(f) = self.pending.unconfirmed_reads.remove(&read.ctx) {
                self.pending.confirmed_reads.push((read.index, f));
            }
        }
        for ctx in ready.dropped_reads {
            if let Some(f) = self.pending.unconfirmed_reads.remove(&ctx) {
                f(Err(Error::LeadershipLost));
            }
        }
        if ready.soft_state_changed {
            self.members_changed = true;
            let leader = self.core.leader_id();
            if leader.is_some() && leader != self.seen_leader {
                self.metrics.leader_changes += 1;
                self.seen_leader = leader;
            }
            log::debug!("node {}: {:?}", self.core.id(), self.core);
        }
    }

    fn append_batch(&mut self, hard_state: Option<HardState>, from: Option<LogIndex>, messages: Vec<Envelope>) {
        let log = self.core.log();
        let entries = match from {
            Some(from) => {
                // `from` comes from the core, which only changes entries after its snapshot.
                let first = from.0.checked_sub(log.snapshot_index().0 + 1).and_then(|k| usize::try_from(k).ok());
                let first = first.filter(|&k| k <= log.entries().len());
                &log.entries()[first.expect("the log changed after its snapshot point and within it")..]
            }
            None => &[],
        };
        if let Err(e) = self.storage.append(hard_state, from, entries) {
            // Nothing that rests on this batch may leave: drop its messages and stop.
            self.poison_storage(format!("cannot write to storage: {e}"));
            return;
        }
        self.appended += 1;
        let last = (log.last_index(), log.last_term());
        if let Some(from) = from {
            let kept = from.prev();
            let kept_term = log.term_at(kept).expect("the entry before a change is in the log");
            for batch in &mut self.unsynced {
                if batch.last.0 > kept {
                    batch.last = (kept, kept_term);
                }
            }
        }
        let hard = self.core.hard_state();
        self.unsynced.push_back(Batch { seq: self.appended, hard, last, messages });
    }

    /// Tells the core about the batches storage made durable, and lets their messages go.
    /// Returns whether any batch was released.
    fn release_synced(&mut self) -> bool {
        let synced = self.storage.synced();
        debug_assert!(synced <= self.appended);
        let mut released = false;
        while self.unsynced.front().is_some_and(|b| b.seq <= synced) {
            let batch = self.unsynced.pop_front().expect("checked");
            self.core.on_hard_state_persisted(batch.hard);
            self.core.on_persisted(batch.last.0, batch.last.1);
            self.outbox.extend(batch.messages);
            released = true;
        }
        released
    }
}
