//! The storage a node's loop holds: memory or files, chosen at start by `Config::data_dir`.
//!
//! An enum rather than a generic parameter (which would spread through `NodeLoop` and
//! `Node`) or a `Box<dyn Storage>` (a virtual call per batch): one predictable branch per
//! call, and memory mode's write path measured no slower for it (see the durable bench).

use std::io::{self, Read};

use super::{FileStorage, MemoryStorage, Recovered, Storage};
use crate::core::{Entry, HardState, InstallSnapshotOrder, LogIndex, SnapshotChunk, SnapshotInfo, SnapshotMeta};
use crate::state_machine::Snapshot;

/// Calls `$call` on whichever storage this is.
macro_rules! each {
    ($self:ident, $s:ident => $call:expr) => {
        match $self {
            NodeStorage::Memory($s) => $call,
            NodeStorage::File($s) => $call,
        }
    };
}

/// Memory or file storage.
#[derive(Debug)]
pub(crate) enum NodeStorage {
    /// Nothing is kept across restarts.
    Memory(MemoryStorage),
    /// A data directory.
    File(Box<FileStorage>),
}

impl NodeStorage {
    /// Syncs what the turn wrote, after its messages were sent (see
    /// `FileOptions::sync_after_send`); returns whether the replica should look again.
    pub(crate) fn sync_written(&mut self) -> bool {
        match self {
            NodeStorage::Memory(_) => false,
            NodeStorage::File(s) => s.sync_written(),
        }
    }

    /// `fdatasync`s of the log so far (none in memory mode).
    pub(crate) fn log_syncs(&self) -> u64 {
        match self {
            NodeStorage::Memory(_) => 0,
            NodeStorage::File(s) => s.log_syncs(),
        }
    }

    /// Whether batches were written but not synced yet.
    pub(crate) fn has_unsynced_writes(&self) -> bool {
        match self {
            NodeStorage::Memory(_) => false,
            NodeStorage::File(s) => s.has_unsynced_writes(),
        }
    }
}

impl Storage for NodeStorage {
    fn recover(&mut self) -> io::Result<Recovered> {
        each!(self, s => s.recover())
    }

    fn append(&mut self, hard_state: Option<HardState>, from: Option<LogIndex>, entries: &[Entry]) -> io::Result<()> {
        each!(self, s => s.append(hard_state, from, entries))
    }

    fn flush(&mut self) -> io::Result<()> {
        each!(self, s => s.flush())
    }

    fn synced(&self) -> u64 {
        each!(self, s => s.synced())
    }

    fn save_snapshot(&mut self, meta: SnapshotMeta, snapshot: Snapshot) -> io::Result<()> {
        each!(self, s => s.save_snapshot(meta, snapshot))
    }

    fn poll_snapshot(&mut self) -> Option<io::Result<SnapshotInfo>> {
        each!(self, s => s.poll_snapshot())
    }

    fn read_snapshot(&mut self, index: LogIndex, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        each!(self, s => s.read_snapshot(index, offset, buf))
    }

    fn open_snapshot(&mut self) -> io::Result<Box<dyn Read + '_>> {
        each!(self, s => s.open_snapshot())
    }

    fn receive_snapshot(&mut self, chunk: &SnapshotChunk) -> io::Result<()> {
        each!(self, s => s.receive_snapshot(chunk))
    }

    fn install_snapshot(&mut self, order: &InstallSnapshotOrder) -> io::Result<()> {
        each!(self, s => s.install_snapshot(order))
    }

    fn compact(&mut self, through: LogIndex) -> io::Result<()> {
        each!(self, s => s.compact(through))
    }
}
