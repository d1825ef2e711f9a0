//! The in-memory Raft log: a `Vec` of entries after the last snapshot point.

use super::types::{Entry, LogIndex, Term};

/// The log of one server.
///
/// Entries before and at `snapshot_index` have been compacted away: they are covered by a
/// snapshot (whose own index may lie later, when the log keeps a trailing window of entries
/// for followers a little behind). Only the term at `snapshot_index` is kept.
/// Invariant: `entries[k].index == snapshot_index + 1 + k`, and terms never decrease.
#[derive(Clone, Debug, Default)]
pub struct Log {
    entries: Vec<Entry>,
    snapshot_index: LogIndex,
    snapshot_term: Term,
}

impl Log {
    /// A log holding `entries`, which must start right after the snapshot point.
    pub fn new(snapshot_index: LogIndex, snapshot_term: Term, entries: Vec<Entry>) -> Log {
        let log = Log { entries, snapshot_index, snapshot_term };
        log.check_invariants();
        log
    }

    /// Index of the last entry (or of the snapshot point when empty).
    pub fn last_index(&self) -> LogIndex {
        LogIndex(self.snapshot_index.0 + self.entries.len() as u64)
    }

    /// Term of the last entry.
    pub fn last_term(&self) -> Term {
        self.entries.last().map_or(self.snapshot_term, |e| e.term)
    }

    /// Index of the last compacted entry.
    pub fn snapshot_index(&self) -> LogIndex {
        self.snapshot_index
    }

    /// The term of the entry at `index`, if the log knows it (the snapshot point counts).
    pub fn term_at(&self, index: LogIndex) -> Option<Term> {
        if index == self.snapshot_index {
            return Some(self.snapshot_term);
        }
        self.get(index).map(|e| e.term)
    }

    /// The entry at `index`, if it is in memory.
    pub fn get(&self, index: LogIndex) -> Option<&Entry> {
        let offset = index.0.checked_sub(self.snapshot_index.0 + 1)?;
        self.entries.get(usize::try_from(offset).ok()?)
    }

    /// The entries from `from` (inclusive) on, at most `max_entries` of them and at most
    /// `max_bytes` of payload, but always at least one if any exist.
    pub fn slice(&self, from: LogIndex, max_entries: usize, max_bytes: usize) -> &[Entry] {
        debug_assert!(from > self.snapshot_index);
        let start = (from.0 - self.snapshot_index.0 - 1) as usize;
        if start >= self.entries.len() {
            return &[];
        }
        let mut bytes = 0;
        let mut end = start;
        for entry in self.entries[start..].iter().take(max_entries.max(1)) {
            bytes += entry.payload.size_bytes();
            if end > start && bytes > max_bytes {
                break;
            }
            end += 1;
        }
        &self.entries[start..end]
    }

    /// All entries in memory.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// Appends one entry at the end.
    pub fn push(&mut self, entry: Entry) {
        assert_eq!(entry.index, self.last_index().next(), "log entries must be contiguous");
        assert!(entry.term >= self.last_term(), "terms in the log never decrease");
        self.entries.push(entry);
    }

    /// Removes every entry after `index`.
    pub fn truncate_after(&mut self, index: LogIndex) {
        assert!(index >= self.snapshot_index, "cannot truncate into the snapshot");
        self.entries.truncate((index.0 - self.snapshot_index.0) as usize);
    }

    /// Drops every entry at and before `index`, which must be in the log (log compaction,
    /// §7); `index` becomes the snapshot point.
    pub fn compact_to(&mut self, index: LogIndex) {
        let term = self.term_at(index).expect("compaction point is in the log");
        let count = (index.0 - self.snapshot_index.0) as usize;
        self.entries.drain(..count);
        self.snapshot_index = index;
        self.snapshot_term = term;
    }

    /// Whether a log ending at (`last_index`, `last_term`) is at least as up-to-date as this
    /// one (§5.4.1): the later last term wins; with equal terms the longer log wins.
    pub fn is_up_to_date(&self, last_index: LogIndex, last_term: Term) -> bool {
        (last_term, last_index) >= (self.last_term(), self.last_index())
    }

    /// The last index holding `term`, if any entry has it (used for fast backtracking).
    pub fn last_index_of_term(&self, term: Term) -> Option<LogIndex> {
        self.entries.iter().rev().find(|e| e.term == term).map(|e| e.index)
    }

    /// The first index of the run of entries with the same term as the entry at `index`.
    pub fn first_index_of_term_at(&self, index: LogIndex) -> LogIndex {
        let term = self.term_at(index).expect("index is in the log");
        let mut first = index;
        while first > self.snapshot_index.next() && self.term_at(first.prev()) == Some(term) {
            first = first.prev();
        }
        first
    }

    /// Checks the structural invariants (a scan: debug builds and the simulator only).
    pub fn check_invariants(&self) {
        let mut term = self.snapshot_term;
        for (k, entry) in self.entries.iter().enumerate() {
            assert_eq!(entry.index.0, self.snapshot_index.0 + 1 + k as u64, "log index gap");
            assert!(entry.term >= term, "log terms decrease at {}", entry.index);
            term = entry.term;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::types::Payload;

    fn log_of(terms: &[u64]) -> Log {
        let entries = terms
            .iter()
            .enumerate()
            .map(|(k, &t)| Entry {
                term: Term(t),
                index: LogIndex(k as u64 + 1),
                payload: Payload::Command(vec![0; 10].into()),
            })
            .collect();
        Log::new(LogIndex(0), Term(0), entries)
    }

    #[test]
    fn up_to_date_compares_last_term_then_length() {
        let log = log_of(&[1, 1, 2]);
        let cases = [
            (3, 2, true),  // identical
            (4, 2, true),  // longer, same term
            (2, 2, false), // shorter, same term
            (1, 3, true),  // later term wins even if shorter
            (9, 1, false), // earlier term loses even if longer
        ];
        for (index, term, want) in cases {
            assert_eq!(log.is_up_to_date(LogIndex(index), Term(term)), want, "({index},{term})");
        }
    }

    #[test]
    fn slice_respects_budgets_but_returns_at_least_one() {
        let log = log_of(&[1, 1, 1, 1, 1]);
        let entry_bytes = log.entries()[0].payload.size_bytes();
        assert_eq!(log.slice(LogIndex(2), 2, 1_000).len(), 2);
        assert_eq!(log.slice(LogIndex(1), 100, 2 * entry_bytes + 1).len(), 2);
        assert_eq!(log.slice(LogIndex(1), 100, 1).len(), 1);
        assert!(log.slice(LogIndex(6), 100, 100).is_empty());
    }

    #[test]
    fn compaction_keeps_the_suffix_and_the_term_at_its_point() {
        let mut log = log_of(&[1, 1, 2, 2, 3]);
        log.compact_to(LogIndex(3));
        assert_eq!(log.snapshot_index(), LogIndex(3));
        assert_eq!(log.term_at(LogIndex(3)), Some(Term(2)));
        assert_eq!(log.term_at(LogIndex(2)), None);
        assert_eq!(log.entries().len(), 2);
        assert_eq!(log.slice(LogIndex(4), 10, 1000)[0].index, LogIndex(4));
        assert_eq!(log.first_index_of_term_at(LogIndex(4)), LogIndex(4));
        log.check_invariants();
    }

    #[test]
    fn term_runs_and_truncation() {
        let mut log = log_of(&[1, 1, 2, 2, 2, 3]);
        assert_eq!(log.first_index_of_term_at(LogIndex(5)), LogIndex(3));
        assert_eq!(log.first_index_of_term_at(LogIndex(2)), LogIndex(1));
        assert_eq!(log.last_index_of_term(Term(2)), Some(LogIndex(5)));
        assert_eq!(log.last_index_of_term(Term(7)), None);
        log.truncate_after(LogIndex(2));
        assert_eq!(log.last_index(), LogIndex(2));
        assert_eq!(log.term_at(LogIndex(0)), Some(Term(0)));
        assert_eq!(log.term_at(LogIndex(3)), None);
    }
}
