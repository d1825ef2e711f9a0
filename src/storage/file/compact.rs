//! Dropping the log a snapshot covers: installing a received snapshot, compaction after a
//! saved one, and the repair of a log that contradicts its snapshot. The ordering rules
//! are in the module docs of `file`; each step below is durable before the next begins.

use std::io;

use super::snapshot::{self, Current};
use super::{FileStorage, record, segment, sync};
use crate::core::{InstallSnapshotOrder, LogIndex, SnapshotInfo};

impl FileStorage {
    /// Writes and syncs every record handed over (batches and this module's own records)
    /// now, whatever `sync_after_send` says: what follows must not overtake them.
    fn persist_now(&mut self) -> io::Result<()> {
        let wrote = !self.pending.is_empty();
        if wrote {
            self.write_out()?;
        }
        if wrote || self.written > self.synced || self.dir_unsynced {
            self.sync_active()?;
            self.synced = self.written;
        }
        debug_assert!(self.pending.is_empty() && self.synced == self.appended);
        Ok(())
    }

    /// Hands over a record dropping the stored entries at and after `from` (not a batch:
    /// nothing waits on it, so `appended` does not count it).
    fn truncate_from(&mut self, from: LogIndex) -> io::Result<()> {
        debug_assert!(from.0 >= 1 && from.0 <= self.log_last);
        record::encode(&mut self.pending, None, Some(from), &[])?;
        self.log_last = from.0 - 1;
        Ok(())
    }

    /// At start, the log held the snapshot's index with another term: makes durable that
    /// it is dropped from there, or the next start would drop what is appended after the
    /// snapshot along with it.
    pub(super) fn repair_contradiction(&mut self, index: LogIndex) -> io::Result<()> {
        log::warn!(
            "node {}: the log contradicts snapshot {} (another term at its index); dropping the log from there",
            self.identity.node_id,
            index
        );
        self.truncate_from(index)?;
        self.persist_now().map_err(|e| self.fail("repairing", e))
    }

    /// [`crate::storage::Storage::install_snapshot`], in the three steps of the module docs.
    pub(super) fn install(&mut self, order: &InstallSnapshotOrder) -> io::Result<()> {
        self.refuse()?;
        let info = &order.info;
        let Some(receiving) = self.receiving.take().filter(|r| r.holds(info)) else {
            let why = format!("no complete received snapshot of {} bytes at {}", info.size, info.meta.index);
            return Err(io::Error::other(why));
        };
        let what = format!("installing snapshot {} in {}", snapshot::name(info.meta.index), self.dir.display());
        let result = self
            .install_prepare(order)
            .and_then(|()| self.install_publish(receiving, info))
            .and_then(|()| self.install_drop_log(order));
        result.map_err(|e| self.fail_with(&what, e))
    }

    /// Install, step 1: every batch handed over before the install, and (unless the log
    /// after the snapshot is kept) a record dropping the log from its index, made durable.
    pub(super) fn install_prepare(&mut self, order: &InstallSnapshotOrder) -> io::Result<()> {
        let index = order.info.meta.index;
        if !order.keep_log_after && self.log_last >= index.0 {
            // Our entry at `index`, if any, is not the snapshot's, nor is anything after it.
            self.truncate_from(index)?;
        }
        self.persist_now()
    }

    /// Install, step 2: the snapshot made durable under its final name, and current.
    pub(super) fn install_publish(&mut self, receiving: snapshot::Receiving, info: &SnapshotInfo) -> io::Result<()> {
        let current = receiving.finish(&self.dir, info, self.options.faults.as_deref())?;
        self.make_current(current);
        Ok(())
    }

    /// Install, step 3: the log through the snapshot's index deleted (all of it, unless
    /// the log after it is kept).
    fn install_drop_log(&mut self, order: &InstallSnapshotOrder) -> io::Result<()> {
        let index = order.info.meta.index;
        if order.keep_log_after {
            return self.drop_segments_through(index);
        }
        self.start_fresh_log(index)?;
        self.delete_oldest(self.closed.len())
    }

    /// Makes `current` the current snapshot and deletes the older files.
    fn make_current(&mut self, current: Current) {
        debug_assert!(self.current.as_ref().is_none_or(|c| c.info.meta.index <= current.info.meta.index));
        let index = current.info.meta.index;
        self.current = Some(current);
        snapshot::remove_older(&self.dir, index);
    }

    /// A save finished: current if it is newer than the current snapshot, else discarded.
    pub(super) fn adopt_saved(&mut self, saved: Current) -> SnapshotInfo {
        let info = saved.info.clone();
        let current = self.current.as_ref().map(|c| c.info.meta.index);
        match current {
            Some(c) if c > info.meta.index => saved.discard(),
            // The same name: the rename replaced the file, whose state is the same; the
            // open handle still reads the one the core knows (and its size).
            Some(c) if c == info.meta.index => {}
            _ => self.make_current(saved),
        }
        info
    }

    /// Deletes the closed segments whose every entry is at or before `through` (which a
    /// durable snapshot covers), oldest first.
    pub(super) fn drop_segments_through(&mut self, through: LogIndex) -> io::Result<()> {
        let covered = self.closed.iter().take_while(|c| c.max_index <= through.0).count();
        if covered == 0 || self.active.is_none() {
            // Without an active segment the last closed one holds the only hard state.
            return Ok(());
        }
        // The active segment, whose first record holds the hard state the deleted ones
        // held, must be durable before they go.
        if self.written > self.synced || self.dir_unsynced {
            self.sync_active()?;
            self.synced = self.written;
        }
        self.delete_oldest(covered)
    }

    /// The log is not kept after the snapshot at `index`: a fresh segment, holding the hard
    /// state (the vote must outlive the old log: Raft §5.2), made durable to replace the
    /// others, which are closed (the caller deletes them).
    pub(super) fn start_fresh_log(&mut self, index: LogIndex) -> io::Result<()> {
        debug_assert!(self.pending.is_empty() && self.flushed_hard_state == self.hard_state);
        self.start_segment()?;
        self.dir_unsynced = true;
        self.sync_active()?;
        self.log_last = index.0;
        Ok(())
    }

    /// Deletes the `count` oldest closed segments, each deletion durable before the next, so
    /// what a crash leaves is always a suffix of the segments.
    pub(super) fn delete_oldest(&mut self, count: usize) -> io::Result<()> {
        debug_assert!(count <= self.closed.len() && self.active.is_some());
        for _ in 0..count {
            let oldest = self.closed.front().expect("counted");
            let path = self.dir.join(segment::name(oldest.seq));
            match std::fs::remove_file(&path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
            sync::sync_dir(&self.dir)?;
            self.closed.pop_front();
            log::debug!("node {}: deleted log segment {}", self.identity.node_id, path.display());
        }
        Ok(())
    }
}
