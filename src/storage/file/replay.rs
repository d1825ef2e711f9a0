//! Rebuilding the hard state and the log from the records of the segments, at start, and
//! fitting the log to the snapshot found beside it.

use super::record::Record;
use crate::core::{Entry, HardState, Log, LogIndex, Term};

/// The log and hard state being rebuilt from records, in order.
pub(super) struct Replay {
    /// The hard state of the last record that had one.
    pub hard_state: HardState,
    /// `entries[k]` is at index `start + k`.
    start: u64,
    entries: Vec<Entry>,
    /// Whether a record has said where the log starts (the first one with a `from`).
    /// Compaction drops whole segments, so the first one left may start anywhere.
    started: bool,
    /// The snapshot covers the log through here: a record may resume the log past a gap
    /// the snapshot covers (the first append after an installed snapshot does).
    covered: u64,
}

/// The rebuilt log, fitted to the snapshot.
pub(super) struct Fitted {
    /// The log from the snapshot's index (or from the start, without one).
    pub log: Log,
    /// The log held the snapshot's index with another term, so everything from there on
    /// was dropped: the caller makes that durable, or appends after the snapshot would be
    /// dropped again at the next start.
    pub contradicted: bool,
}

impl Replay {
    /// An empty log, with a snapshot through `covered` (0 for none).
    pub fn new(covered: LogIndex) -> Replay {
        Replay { hard_state: HardState::default(), start: 1, entries: Vec::new(), started: false, covered: covered.0 }
    }

    /// The index of the last entry (`start - 1` when there is none).
    pub fn last_index(&self) -> u64 {
        self.start + self.entries.len() as u64 - 1
    }

    /// Applies one record, or says why it cannot follow the ones before it.
    pub fn apply(&mut self, record: Record) -> Result<(), String> {
        if let Some(hs) = record.hard_state {
            if hs.current_term < self.hard_state.current_term {
                return Err(format!("term goes back from {} to {}", self.hard_state.current_term, hs.current_term));
            }
            self.hard_state = hs;
        }
        if let Some(from) = record.from {
            self.truncate(from.0)?;
        }
        for entry in record.entries {
            let expected = self.last_index() + 1;
            if entry.index.0 != expected {
                return Err(format!("entry {} where {expected} was expected", entry.index.0));
            }
            if self.entries.last().is_some_and(|prev| prev.term > entry.term) {
                return Err(format!("entry {} has a lower term than its predecessor", entry.index.0));
            }
            self.entries.push(entry);
        }
        Ok(())
    }

    /// Drops every entry at or after `from`.
    fn truncate(&mut self, from: u64) -> Result<(), String> {
        let last = self.last_index();
        if from == 0 {
            return Err("entries from index 0".into());
        }
        let resumes_after_covered_gap = from > last + 1 && from <= self.covered + 1;
        if !self.started || from < self.start || resumes_after_covered_gap {
            // The log (re)starts here: the first record after compacted segments, a
            // truncation reaching before them, or the first append after an install.
            // Whatever it drops lies before `from`; the snapshot must cover it (`fit`).
            self.started = true;
            self.start = from;
            self.entries.clear();
            return Ok(());
        }
        if from > last + 1 {
            return Err(format!("entries from index {from} but the log ends at {last}"));
        }
        self.entries.truncate((from - self.start) as usize);
        Ok(())
    }

    /// The term of the entry at `index`, if the log holds it.
    fn term_at(&self, index: u64) -> Option<Term> {
        let k = index.checked_sub(self.start)?;
        self.entries.get(usize::try_from(k).ok()?).map(|e| e.term)
    }

    /// The log after the snapshot at `snapshot` (index and term), or all of it without one;
    /// an error if the two do not fit together (a gap between them).
    pub fn fit(mut self, snapshot: Option<(LogIndex, Term)>) -> Result<Fitted, String> {
        let Some((index, term)) = snapshot else {
            if self.last_index() > 0 && self.start != 1 {
                return Err(format!(
                    "the log starts at index {} but there is no snapshot of the entries before it",
                    self.start
                ));
            }
            return Ok(Fitted { log: Log::new(LogIndex(0), Term(0), self.entries), contradicted: false });
        };
        debug_assert_eq!(index.0, self.covered);
        let s = index.0;
        let contradicted = self.term_at(s).is_some_and(|t| t != term);
        if contradicted {
            // Cannot follow an install (it drops the log from the snapshot's index first),
            // but if it is there, what follows that entry is another history.
            self.entries.truncate((s - self.start) as usize);
        }
        if self.last_index() <= s {
            return Ok(Fitted { log: Log::new(index, term, Vec::new()), contradicted });
        }
        if self.start > s + 1 {
            return Err(format!(
                "the log resumes at index {} but the snapshot ends at {s}: entries {}..{} are missing",
                self.start,
                s + 1,
                self.start - 1
            ));
        }
        self.entries.drain(..(s + 1 - self.start) as usize);
        let first = &self.entries[0];
        if first.term < term {
            return Err(format!(
                "entry {} has a lower term ({}) than the snapshot's ({term})",
                first.index, first.term
            ));
        }
        Ok(Fitted { log: Log::new(index, term, self.entries), contradicted })
    }
}
