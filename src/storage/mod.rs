//! Where a replica keeps what Raft requires to survive a crash (Figure 2's persistent
//! state): the hard state and the log.
//!
//! A [`Storage`] takes writes in batches, one per core [`crate::core::Ready`] that has
//! something to persist, numbered 1, 2, … in the order they were handed over, and says how
//! many of them are durable. It may make them durable later, on another thread, with one
//! sync for many batches (group commit): the replica holds back the messages that depend on
//! a batch until [`Storage::synced`] covers it, and only then tells the core.
//!
//! Two implementations: [`MemoryStorage`] (the default: nothing survives the process) and
//! [`FileStorage`] (`Config::data_dir`: a checksummed, segmented log on disk).

pub mod file;
mod memory;
mod node_storage;

pub use file::{FileOptions, FileStorage, StorageFaults};
pub use memory::MemoryStorage;
pub(crate) use node_storage::NodeStorage;

use std::io;

use crate::core::{Entry, HardState, Log, LogIndex};

/// The persistent state a storage held at start.
#[derive(Clone, Debug, Default)]
pub struct Recovered {
    /// The last durable term and vote.
    pub hard_state: HardState,
    /// The durable log.
    pub log: Log,
}

/// Durable (or, for [`MemoryStorage`], pretend-durable) state of one server.
///
/// Contract:
/// - batches become durable in the order they were appended, and a crash keeps a prefix
///   of them: never a later batch without every earlier one;
/// - [`Storage::synced`] never decreases and never exceeds the number of batches appended.
pub trait Storage {
    /// The state found at start; called once, before any other method.
    fn recover(&mut self) -> io::Result<Recovered>;

    /// Hands over one batch: write `hard_state` if given; if `from` is given, drop every
    /// stored entry at or after `from` and store `entries` (which start at `from`).
    fn append(&mut self, hard_state: Option<HardState>, from: Option<LogIndex>, entries: &[Entry]) -> io::Result<()>;

    /// Called once per turn of the node, after the turn's batches: a storage that syncs
    /// on the node's thread syncs here, once for all of them.
    fn flush(&mut self) -> io::Result<()>;

    /// How many batches are durable.
    fn synced(&self) -> u64;
}
