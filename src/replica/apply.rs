//! Applying committed entries to the user's state machine, and answering their writers.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::Instant;

use super::Replica;
use super::reply::{Channel, Respond};
use super::session::{self, Admit, Header, Stored};
use crate::core::{LogIndex, Payload, Term};
use crate::error::Error;
use crate::state_machine::StateMachine;
use crate::storage::Storage;

/// Largest response-encoding buffer kept between responses.
const SCRATCH_KEPT_MAX: usize = 64 << 10;

impl<M: StateMachine, S: Storage, C: Channel> Replica<M, S, C> {
    /// Applies committed entries, within the apply budget (but at least one), answers
    /// their writers and serves the reads they unblock. Returns whether committed entries
    /// remain.
    pub(super) fn apply_committed(&mut self) -> bool {
        let commit = self.core.commit_index();
        let end = LogIndex(commit.0.min(self.applied.0.saturating_add(self.cfg.apply_entries_max.max(1))));
        // The clock is read only when there is work, and then after the 1st, 2nd, 4th...
        // entry and every 32nd: a slow machine's budget runs out at the first checks, a
        // fast one's costs no clock read per entry (measured: 2.5% of a pipelined write).
        let started = (self.applied < end).then(Instant::now).zip(self.cfg.apply_time_max);
        let mut count = 0u64;
        while self.applied < end && self.poisoned.is_none() {
            if count > 0
                && (count.is_power_of_two() || count.is_multiple_of(32))
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
        let outcome = match &entry.payload {
            Payload::Command(bytes) => match session::decode(bytes) {
                Ok((header, body)) => {
                    // Decoded while the entry is borrowed from the log (no copy); a
                    // registration has no command.
                    let command = match header {
                        Header::Register { .. } => Err(String::new()),
                        _ => rmp_serde::from_slice::<M::Command>(body).map_err(|e| e.to_string()),
                    };
                    self.apply_command_entry(index, header, command)
                }
                Err(why) => {
                    // Every node must apply every command; skipping one would fork the state.
                    self.poison(format!("cannot decode the command at {index}: {why}"));
                    Outcome::Nothing
                }
            },
            Payload::Noop | Payload::Config(_) => Outcome::Nothing,
        };
        if self.poisoned.is_some() {
            // The state is half-applied or misses this command: it is no committed state,
            // so `applied` stays before it and nothing is served from it. Its writer hears
            // `LeadershipLost` when the node stops (another node may still apply it).
            return;
        }
        self.applied = index;
        self.metrics.entries_applied += 1;
        self.answer(index, term, outcome);
    }

    /// Applies one command entry (or answers it from the session table), in log order.
    fn apply_command_entry(
        &mut self,
        index: LogIndex,
        header: Header,
        command: Result<M::Command, String>,
    ) -> Outcome<M::Response> {
        let tag = match header {
            Header::Register { secret, limits } => {
                return Outcome::Registered(self.sessions.register(index.0, secret, limits));
            }
            Header::Plain => None,
            Header::Tagged(tag) => match self.sessions.admit(index.0, tag) {
                Admit::Fresh => Some(tag),
                Admit::Duplicate(response) => {
                    self.sessions.record(index.0, tag, None);
                    return Outcome::Cached(response);
                }
                Admit::Expired => return Outcome::Refused(Error::SessionExpired),
            },
        };
        let command = match command {
            Ok(command) => command,
            Err(e) => {
                // Commands are checked before they are proposed, so only servers that
                // disagree on the command type get here: stop rather than fork.
                self.poison(format!("cannot decode the command at {index}: {e}"));
                return Outcome::Nothing;
            }
        };
        let Some(response) = self.apply_command(index, command) else { return Outcome::Nothing };
        if let Some(tag) = tag {
            // Encoded the same way on every server, so every table is the same. A response
            // that cannot be encoded fails alike everywhere: the table records the failure
            // (an empty response) instead of stopping every server at this index.
            self.encode_scratch.clear();
            let stored = match rmp_serde::encode::write(&mut self.encode_scratch, &response) {
                Ok(()) => Stored::new(&self.encode_scratch),
                Err(e) => {
                    log::error!("node {}: cannot encode the response to the command at {index}: {e}", self.core.id());
                    Stored::new(&[])
                }
            };
            if self.encode_scratch.capacity() > SCRATCH_KEPT_MAX {
                self.encode_scratch = Vec::new(); // one huge response need not pin its buffer
            }
            self.sessions.record(index.0, tag, Some(stored));
        }
        Outcome::Applied(response)
    }

    /// Answers the clients waiting for the entry at `index`: the one that proposed it
    /// (in `term`) gets its outcome; any that proposed another entry there, in another
    /// term, learn that theirs was replaced (§5.3).
    fn answer(&mut self, index: LogIndex, term: Term, outcome: Outcome<M::Response>) {
        if self.pending.registrations.is_empty() && self.pending.writes.is_empty() {
            return;
        }
        let mut outcome = Some(outcome);
        while let Some((proposed_in, p)) = self.pending.registrations.pop_at(index) {
            let result = match outcome.take_if(|o| proposed_in == term && matches!(o, Outcome::Registered(_))) {
                Some(Outcome::Registered(id)) => Ok(id),
                _ => Err(self.dropped()),
            };
            p.reply.send(result);
        }
        while let Some((proposed_in, p)) = self.pending.writes.pop_at(index) {
            let result = match outcome.take_if(|_| proposed_in == term) {
                Some(Outcome::Applied(response)) => Ok(response),
                Some(Outcome::Cached(bytes)) => decode_response::<M>(&bytes),
                Some(Outcome::Refused(e)) => Err(e),
                Some(Outcome::Registered(_) | Outcome::Nothing) | None => Err(self.dropped()),
            };
            p.reply.send(result);
        }
    }

    /// After a snapshot moved `applied` past proposals still waiting: the session table
    /// says what became of tagged commands; for the rest nobody can tell any more.
    pub(super) fn answer_skipped(&mut self) {
        for p in self.pending.writes.take_through(self.applied) {
            let result = match p.tag.map(|tag| self.sessions.lookup(tag)) {
                Some(Some(Ok(bytes))) => decode_response::<M>(&bytes),
                // The snapshot covers the entry, and the session has no response for it.
                Some(None) => Err(self.dropped()),
                Some(Some(Err(_))) | None => Err(Error::LeadershipLost),
            };
            p.reply.send(result);
        }
        for p in self.pending.registrations.take_through(self.applied) {
            p.reply.send(Err(Error::LeadershipLost));
        }
    }

    fn dropped(&self) -> Error {
        Error::Dropped { leader: self.core.leader_id().map(|id| self.peer_info(id)) }
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

/// What applying one entry produced, for the client waiting on it.
enum Outcome<R> {
    /// A no-op, a configuration, or nothing (the replica stopped).
    Nothing,
    /// The state machine's response.
    Applied(R),
    /// A retried command's response, from the session table.
    Cached(Stored),
    /// The command was refused, not applied.
    Refused(Error),
    /// A session was registered with this id.
    Registered(u64),
}

/// A retried command's answer from its stored response. An empty one could not be encoded
/// when the command applied: the retry learns only that the command may have taken effect
/// (it did), so it gets an indeterminate error, never a certain one.
fn decode_response<M: StateMachine>(bytes: &[u8]) -> crate::error::Result<M::Response> {
    if bytes.is_empty() {
        return Err(Error::LeadershipLost);
    }
    rmp_serde::from_slice(bytes).map_err(|e| {
        log::error!("cannot decode a remembered response: {e}");
        Error::LeadershipLost
    })
}
