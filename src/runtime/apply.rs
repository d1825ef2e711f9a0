//! Applying committed entries to the user's state machine.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::{Duration, Instant};

use crate::core::{LogIndex, Payload};
use crate::error::Error;
use crate::state_machine::StateMachine;

use super::event_loop::NodeLoop;

/// Most entries applied per loop turn, so a long backlog cannot keep the loop from
/// heartbeats and I/O for long.
pub(crate) const APPLY_BATCH_MAX: u64 = 1024;
/// Most time spent applying per loop turn, so a slow state machine cannot either: the
/// rest waits for the next turn, which comes at once.
pub(crate) const APPLY_TIME_MAX: Duration = Duration::from_millis(5);

impl<M: StateMachine> NodeLoop<M> {
    /// Applies committed entries, up to [`APPLY_BATCH_MAX`] of them or [`APPLY_TIME_MAX`]
    /// (but at least one), and answers their clients.
    /// Returns whether committed entries remain.
    pub(super) fn apply_committed(&mut self) -> bool {
        let commit = self.core.commit_index();
        let end = LogIndex(commit.0.min(self.applied.0 + APPLY_BATCH_MAX));
        let started = Instant::now();
        while self.applied < end && !self.poisoned && started.elapsed() < APPLY_TIME_MAX {
            let index = self.applied.next();
            let entry = self.core.log().get(index).expect("committed entries are in memory");
            debug_assert_eq!(entry.index, index);
            let term = entry.term;
            let decoded = match &entry.payload {
                Payload::Command(bytes) => Some(rmp_serde::from_slice::<M::Command>(bytes)),
                Payload::Noop | Payload::Config(_) => None,
            };
            let response = match decoded {
                Some(Ok(command)) => self.apply_command(index, command),
                Some(Err(e)) => {
                    // Every node must apply every command; skipping one would fork the state.
                    log::error!("node {}: cannot decode command at {index}: {e}; stopping", self.id);
                    self.poisoned = true;
                    None
                }
                None => None,
            };
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
        self.pending.serve_reads(self.applied, &self.machine);
        self.applied < commit && !self.poisoned
    }

    fn apply_command(&mut self, index: LogIndex, command: M::Command) -> Option<M::Response> {
        match catch_unwind(AssertUnwindSafe(|| self.machine.apply(command))) {
            Ok(response) => Some(response),
            Err(_) => {
                log::error!("node {}: state machine panicked applying {index}; stopping the node", self.id);
                self.poisoned = true;
                None
            }
        }
    }
}
