//! Simulated storage: batches wait in a volatile queue until the simulator syncs them; a
//! crash keeps the disk and a random prefix of what was not yet synced (writes may reach
//! the disk before the sync that confirms them, but never out of order).
//!
//! Snapshots as a file storage keeps them: a save is written at once but becomes durable
//! (and current) only at a later sync, so a crash before loses it; a received snapshot is
//! volatile until installed, and installing is durable at once (it syncs).

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io::{self, Read};
use std::rc::Rc;

use quorate::Snapshot;
use quorate::core::{Entry, HardState, InstallSnapshotOrder, Log, LogIndex, SnapshotChunk, SnapshotInfo, SnapshotMeta};
use quorate::storage::{Recovered, Storage};

/// What survives a crash.
#[derive(Clone, Debug, Default)]
pub struct Disk {
    pub hard: HardState,
    pub log: Log,
    pub snapshot: Option<(SnapshotInfo, Rc<Vec<u8>>)>,
    /// Snapshots saved (and durable), and received snapshots installed, over all lives.
    pub saves: u64,
    pub installs: u64,
    /// Bytes of snapshot chunks received, over all lives (a transfer under way is progress).
    pub received: u64,
}

impl Disk {
    fn write(&mut self, batch: &Batch) {
        if let Some(hard) = batch.hard {
            self.hard = hard;
        }
        if let Some(from) = batch.from {
            // Entries the log was compacted through are committed: they are already here.
            let point = self.log.snapshot_index();
            if from > self.log.last_index().next() {
                // The rest of an older log, which a snapshot that became durable first (a
                // save is published independently of the log's syncs) contradicted and
                // dropped: a file storage's recovery drops it too.
                return;
            }
            // Likewise a batch older than a snapshot that became durable before it, whose
            // first entry past the snapshot point is of an older term than that point: the
            // server had truncated those entries (a later batch rewrites them) before the
            // snapshot was taken. In order, a batch never follows an entry of a later term.
            // (Found by a lease run: a leader cut off for long wrote entries of its term
            // slowly, was deposed, and snapshotted the new leader's entries first.)
            let first = batch.entries.iter().find(|e| e.index > point);
            if first.is_some_and(|e| self.log.term_at(e.index.prev()).is_some_and(|t| e.term < t)) {
                return;
            }
            self.log.truncate_after(from.prev().max(point));
            for e in batch.entries.iter().filter(|e| e.index > point) {
                self.log.push(e.clone());
            }
        }
    }

    /// What a restart finds.
    fn recovered(&self) -> Recovered {
        let snapshot = self.snapshot.as_ref().map(|(i, _)| i.clone());
        Recovered { hard_state: self.hard, log: self.log.clone(), snapshot }
    }

    /// A durable snapshot replaces the log it covers, as a file storage's recovery reads
    /// it: the log after the snapshot if it continues it, else none.
    fn make_current(&mut self, info: SnapshotInfo, bytes: Vec<u8>) {
        if self.snapshot.as_ref().is_some_and(|(c, _)| c.meta.index >= info.meta.index) {
            return;
        }
        let (s, t) = (info.meta.index, info.meta.term);
        assert!(self.log.snapshot_index() <= s, "the disk's log was compacted past a newer snapshot");
        if self.log.term_at(s) == Some(t) {
            self.log.compact_to(s);
        } else {
            self.log = Log::new(s, t, Vec::new());
        }
        self.snapshot = Some((info, Rc::new(bytes)));
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
    /// A snapshot written but not yet durable.
    saving: Option<(SnapshotInfo, Vec<u8>)>,
    /// A durable save the replica has not polled yet.
    saved: Option<SnapshotInfo>,
    /// The snapshot being received and its bytes so far.
    receiving: Option<(SnapshotMeta, Vec<u8>)>,
}

impl SimStorage {
    pub fn new(disk: Rc<RefCell<Disk>>, instant: bool) -> SimStorage {
        SimStorage {
            disk,
            unsynced: VecDeque::new(),
            appended: 0,
            synced: 0,
            instant,
            changed_from: None,
            saving: None,
            saved: None,
            receiving: None,
        }
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
        if let Some((info, bytes)) = self.saving.take() {
            disk.make_current(info.clone(), bytes);
            disk.saves += 1;
            self.saved = Some(info);
        }
    }

    pub fn has_unsynced(&self) -> bool {
        !self.unsynced.is_empty() || self.saving.is_some()
    }

    /// A crash: the first `keep` unsynced batches happened to reach the disk.
    pub fn crash(&mut self, keep: usize) {
        let mut disk = self.disk.borrow_mut();
        for batch in self.unsynced.drain(..).take(keep) {
            disk.write(&batch);
        }
        self.unsynced.clear();
        self.saving = None;
        self.receiving = None;
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
        Ok(self.disk.borrow().recovered())
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

    fn save_snapshot(&mut self, meta: SnapshotMeta, snapshot: Snapshot) -> io::Result<()> {
        assert!(self.saving.is_none() && self.saved.is_none(), "one snapshot save at a time");
        let mut bytes = Vec::new();
        snapshot.write_to(&mut bytes)?;
        let info = SnapshotInfo { meta, size: bytes.len() as u64 };
        self.saving = Some((info, bytes));
        if self.instant {
            self.sync();
        }
        Ok(())
    }

    fn poll_snapshot(&mut self) -> Option<io::Result<SnapshotInfo>> {
        self.saved.take().map(Ok)
    }

    fn read_snapshot(&mut self, index: LogIndex, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let disk = self.disk.borrow();
        let (info, bytes) = disk.snapshot.as_ref().ok_or_else(|| io::Error::other("no snapshot"))?;
        if info.meta.index != index {
            return Err(io::Error::other("snapshot replaced"));
        }
        let start = offset as usize;
        buf.copy_from_slice(bytes.get(start..start + buf.len()).ok_or_else(|| io::Error::other("beyond the end"))?);
        Ok(())
    }

    fn open_snapshot(&mut self) -> io::Result<Box<dyn Read + '_>> {
        let bytes =
            self.disk.borrow().snapshot.as_ref().map(|(_, b)| b.clone()).ok_or_else(|| io::Error::other("none"))?;
        Ok(Box::new(io::Cursor::new(bytes.to_vec())))
    }

    fn receive_snapshot(&mut self, chunk: &SnapshotChunk) -> io::Result<()> {
        if chunk.offset == 0 {
            self.receiving = Some((chunk.meta.clone(), Vec::new()));
        }
        let (meta, bytes) = self.receiving.as_mut().expect("a transfer starts at offset 0");
        assert!(*meta == chunk.meta && chunk.offset == bytes.len() as u64, "the core hands chunks over in order");
        bytes.extend_from_slice(&chunk.data);
        self.disk.borrow_mut().received += chunk.data.len() as u64;
        Ok(())
    }

    fn install_snapshot(&mut self, order: &InstallSnapshotOrder) -> io::Result<()> {
        let (meta, bytes) = self.receiving.take().expect("installing a snapshot never received");
        assert!(
            meta == order.info.meta && bytes.len() as u64 == order.info.size,
            "installing another or an incomplete snapshot"
        );
        // As a file storage does: what was written before is synced first, then the
        // snapshot replaces the log it covers (or all of it).
        self.sync();
        let mut disk = self.disk.borrow_mut();
        let (s, t) = (order.info.meta.index, order.info.meta.term);
        // Keeping the log after the snapshot is right only if the disk's entry there is the
        // snapshot's (it may lack it: the same Ready may append it).
        assert!(
            !order.keep_log_after || disk.log.term_at(s).is_none_or(|x| x == t),
            "told to keep the log after {s}, but the disk holds another term there"
        );
        if !order.keep_log_after {
            disk.log = Log::new(s, t, Vec::new());
        }
        disk.make_current(order.info.clone(), bytes);
        disk.installs += 1;
        Ok(())
    }

    fn compact(&mut self, through: LogIndex) -> io::Result<()> {
        let mut disk = self.disk.borrow_mut();
        let covered = disk.snapshot.as_ref().map_or(LogIndex(0), |(i, _)| i.meta.index);
        assert!(through <= covered, "compaction through {through} beyond the durable snapshot at {covered}");
        let point = through.min(disk.log.last_index());
        if point > disk.log.snapshot_index() {
            disk.log.compact_to(point);
        }
        Ok(())
    }
}
