//! **Advanced layer.** Where a replica keeps what Raft requires to survive a crash (Figure 2's persistent
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

use std::io::{self, Read};

use crate::core::{Entry, HardState, InstallSnapshotOrder, Log, LogIndex, SnapshotChunk, SnapshotInfo, SnapshotMeta};
use crate::state_machine::Snapshot;

/// The persistent state a storage held at start.
#[derive(Clone, Debug, Default)]
pub struct Recovered {
    /// The last durable term and vote.
    pub hard_state: HardState,
    /// The durable log. With a snapshot, it starts at the snapshot's index (its snapshot
    /// point); entries the snapshot covers are not returned.
    pub log: Log,
    /// The newest complete snapshot.
    pub snapshot: Option<SnapshotInfo>,
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

    // ----- snapshots (§7) -----
    //
    // A storage holds one current snapshot: the newest of those saved and installed. A
    // snapshot becomes current only once complete and durable, so a crash leaves the old
    // one (a half-written or half-received snapshot never replaces a good one).

    /// Starts saving `snapshot`, the applied state through `meta.index`. It may write on
    /// another thread; [`Storage::poll_snapshot`] reports the end. One save at a time.
    fn save_snapshot(&mut self, meta: SnapshotMeta, snapshot: Snapshot) -> io::Result<()>;

    /// The save that finished since the last call, if one did: it is durable, and current
    /// unless a newer snapshot was installed meanwhile (then it was discarded).
    fn poll_snapshot(&mut self) -> Option<io::Result<SnapshotInfo>>;

    /// Fills `buf` from the current snapshot at `offset`; an error if the current
    /// snapshot is not the one at `index` or is shorter.
    fn read_snapshot(&mut self, index: LogIndex, offset: u64, buf: &mut [u8]) -> io::Result<()>;

    /// Reads the current snapshot from its start.
    fn open_snapshot(&mut self) -> io::Result<Box<dyn Read + '_>>;

    /// Stores one chunk of a snapshot being received, in order (offset 0 starts anew).
    fn receive_snapshot(&mut self, chunk: &SnapshotChunk) -> io::Result<()>;

    /// Makes the received snapshot durable and current, and drops the stored log through
    /// its index (and, unless `keep_log_after`, all of it), before returning. A crash at
    /// any point leaves a prefix-consistent state: the old snapshot with a prefix of the
    /// old log, or the new snapshot with no entry that contradicts it.
    fn install_snapshot(&mut self, order: &InstallSnapshotOrder) -> io::Result<()>;

    /// The log through `through` is covered by a durable snapshot: the storage may drop it
    /// (a file storage deletes whole segments) so memory and disk stay bounded.
    fn compact(&mut self, through: LogIndex) -> io::Result<()>;
}
