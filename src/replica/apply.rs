//! Applying committed entries to the user's state machine, and answering their writers.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::Instant;

use super::Replica;
use super::reply::{Channel, Respond};
use crate::core::{LogIndex, Payload};
use crate::error::Error;
use crate::state_machine::StateMachine;
use crate::storage::Storage;

impl<M: StateMachine, S: Storage, C: Channel> Replica<M, S, C> {
    /// Applies committed entries, within the apply budget (but at least one), answers
    /// their writers and serves the reads they unblock. Returns whether committed entries
    /// remain.
    pub(super) fn apply_committed(&mut self) -> bool {
        let commit = self.core.commit_index();
        let end = LogIndex(commit.0.min(self.applied.0.saturating_add(self.cfg.apply_entries_max.max(1))));
        let started = self.cfg.apply_time_max.map(|max| (Instant::now(), max));
        let mut count = 0u64;
        while self.applied < end && self.poisoned.is_none() {
            if count > 0
                && let Some((at, max)) = started
                && at.elapsed() >= max
            {
                break;
            }
            self.apply_one(self.applied.next());
            count += 1;
        }
        if self.poisoned.is_none() {
            self.pending.serve_reads(self.applied, &self.machine);
        }
        self.applied < commit && self.poisoned.is_none()
    }

    fn apply_one(&mut self, index: LogIndex) {
        let entry = self.core.log().get(index).expect("committed entries are in memory");
        debug_assert_eq!(entry.index, index);
        let term = entry.term;
        self.applied_bytes_since += entry.payload.size_bytes() as u64;
        let decoded = match &entry.payload {
            Payload::Command(bytes) => Some(rmp_serde::from_slice::<M::Command>(bytes)),
            Payload::Noop | Payload::Config(_) => None,
        };
        let response = match decoded {
            Some(Ok(command)) => self.apply_command(index, command),
            Some(Err(e)) => {
                // Every node must apply every command; skipping one would fork the state.
                self.poison(format!("cannot decode the command at {index}: {e}"));
                None
            }
            None => None,
        };
        if self.poisoned.is_some() {
            // The state is half-applied or misses this command: it is no committed state,
            // so `applied` stays before it and nothing is served from it. Its writer hears
            // `LeadershipLost` when the node stops (another node may still apply it).
            return;
        }
        self.applied = index;
        if let Some((proposed_term, reply)) = self.pending.writes.remove(&index) {
            let result = match response {
                Some(r) if proposed_term == term => Ok(r),
                // Another leader's entry took the slot: ours was dropped (§5.3).
                _ => Err(Error::LeadershipLost),
            };
            reply.send(result);
        }
    }

    fn apply_command(&mut self, index: LogIndex, command: M::Command) -> Option<M::Response> {
        match catch_unwind(AssertUnwindSafe(|| self.machine.apply(command))) {
            Ok(response) => Some(response),
            Err(_) => {
                self.poison(format!("the state machine panicked applying {index}"));
                None
            }
        }
    }
}
