//! The storage a node's loop holds: memory or files, chosen at start by `Config::data_dir`.
//!
//! An enum rather than a generic parameter (which would spread through `NodeLoop` and
//! `Node`) or a `Box<dyn Storage>` (a virtual call per batch): one predictable branch per
//! call, and memory mode's write path measured no slower for it (see the durable bench).

use std::io;

use super::{FileStorage, MemoryStorage, Recovered, Storage};
use crate::core::{Entry, HardState, LogIndex};

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
        match self {
            NodeStorage::Memory(s) => s.recover(),
            NodeStorage::File(s) => s.recover(),
        }
    }

    fn append(&mut self, hard_state: Option<HardState>, from: Option<LogIndex>, entries: &[Entry]) -> io::Result<()> {
        match self {
            NodeStorage::Memory(s) => s.append(hard_state, from, entries),
            NodeStorage::File(s) => s.append(hard_state, from, entries),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            NodeStorage::Memory(s) => s.flush(),
            NodeStorage::File(s) => s.flush(),
        }
    }

    fn synced(&self) -> u64 {
        match self {
            NodeStorage::Memory(s) => s.synced(),
            NodeStorage::File(s) => s.synced(),
        }
    }
}
