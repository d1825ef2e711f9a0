//! Simulated storage: batches wait in a volatile queue until the simulator syncs them; a
//! crash keeps the disk and a random prefix of what was not yet synced (writes may reach
//! the disk before the sync that confirms them, but never out of order).

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io;
use std::rc::Rc;

use quorate::core::{Entry, HardState, Log, LogIndex};
use quorate::storage::{Recovered, Storage};

/// What survives a crash.
#[derive(Clone, Debug, Default)]
pub struct Disk {
    pub hard: HardState,
    pub log: Log,
}

impl Disk {
    fn write(&mut self, batch: &Batch) {
        if let Some(hard) = batch.hard {
            self.hard = hard;
        }
        if let Some(from) = batch.from {
            self.log.truncate_after(from.prev());
            for e in &batch.entries {
                self.log.push(e.clone());
            }
        }
    }
}

struct Batch {
    hard: Option<HardState>,
    from: Option<LogIndex>,
    entries: Vec<Entry>,
}

/// One server's storage. The disk is shared with the simulator so it outlives a crash.
pub struct SimStorage {
    disk: Rc<RefCell<Disk>>,
    unsynced: VecDeque<Batch>,
    appended: u64,
    synced: u64,
    /// Sync every batch as soon as it is appended (like memory storage).
    instant: bool,
    /// Lowest index at which the log changed since the last `take_changed_from`.
    changed_from: Option<LogIndex>,
}

impl SimStorage {
    pub fn new(disk: Rc<RefCell<Disk>>, instant: bool) -> SimStorage {
        SimStorage { disk, unsynced: VecDeque::new(), appended: 0, synced: 0, instant, changed_from: None }
    }

    /// Makes every batch appended so far durable.
    pub fn sync(&mut self) {
        self.sync_first(self.unsynced.len());
    }

    /// Makes the oldest `count` unsynced batches durable (storage syncs in order).
    pub fn sync_first(&mut self, count: usize) {
        let mut disk = self.disk.borrow_mut();
        for batch in self.unsynced.drain(..count.min(self.unsynced.len())) {
            disk.write(&batch);
            self.synced += 1;
        }
    }

    pub fn has_unsynced(&self) -> bool {
        !self.unsynced.is_empty()
    }

    /// A crash: the first `keep` unsynced batches happened to reach the disk.
    pub fn crash(&mut self, keep: usize) {
        let mut disk = self.disk.borrow_mut();
        for batch in self.unsynced.drain(..).take(keep) {
            disk.write(&batch);
        }
        self.unsynced.clear();
    }

    pub fn unsynced_len(&self) -> usize {
        self.unsynced.len()
    }

    /// Where the log changed since the last call (for the log-matching check).
    pub fn take_changed_from(&mut self) -> Option<LogIndex> {
        self.changed_from.take()
    }
}

impl Storage for SimStorage {
    fn recover(&mut self) -> io::Result<Recovered> {
        let disk = self.disk.borrow();
        Ok(Recovered { hard_state: disk.hard, log: disk.log.clone() })
    }

    fn append(&mut self, hard: Option<HardState>, from: Option<LogIndex>, entries: &[Entry]) -> io::Result<()> {
        if let Some(from) = from {
            self.changed_from = Some(self.changed_from.map_or(from, |c| c.min(from)));
        }
        self.unsynced.push_back(Batch { hard, from, entries: entries.to_vec() });
        self.appended += 1;
        if self.instant {
            self.sync();
        }
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }

    fn synced(&self) -> u64 {
        self.synced
    }
}
