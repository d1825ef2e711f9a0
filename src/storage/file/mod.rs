//! Durable storage in a directory (`Config::data_dir`): a segmented, append-only log of
//! checksummed records, group-committed with one `fdatasync` per turn of the node, and
//! snapshot files beside it.
//!
//! The directory holds `LOCK` (held exclusively while a node runs on it), `IDENTITY` (the
//! cluster id, node id and incarnation, written atomically), the segments `<seq>.log` and
//! the snapshots `snapshot-<index>.snap`. Each batch becomes records appended to the last
//! segment (as etcd's WAL does): the first carries the batch's hard state and its `from`,
//! so truncation on conflict is a record too and nothing is ever rewritten in place;
//! recovery replays them in order. Each segment starts with a record of the hard state so
//! far, so a segment never depends on an older one for it, and compaction can delete old
//! segments whole.
//!
//! Snapshots (format in `snapshot.rs`): a save streams to `snapshot.tmp` on a thread of its
//! own, a transfer from the leader to `incoming.tmp`; each is fsynced and only then renamed
//! to its final name (and the directory fsynced), so a file with a final name is complete
//! and durable, and a half-written or half-received one never replaces a good one. At
//! start the newest snapshot whose checksums verify is current (a corrupt newer one is
//! reported and set aside), the log is replayed, and entries the snapshot covers are
//! dropped; the log after it must follow it without a gap, or start fails naming the file.
//!
//! Ordering rules, so a crash at any point leaves a state recovery accepts:
//! - a log segment is deleted only once a durable snapshot covers every entry in it, and
//!   only once the active segment (whose first record holds the hard state) is durable;
//!   segments are deleted oldest first, each deletion made durable before the next, so the
//!   segments on disk are always a suffix of those written;
//! - installing a received snapshot first makes durable every batch handed over before it
//!   (and, if the log is not kept after the snapshot, a record dropping it from the
//!   snapshot's index), then the snapshot, then a fresh segment holding the hard state, and
//!   only then deletes the log it replaces.
//!
//! Failure rules: after any failed write or sync of the log, or of a snapshot being
//! installed, the storage refuses everything (it never retries a sync and trusts it: after
//! a failed `fsync` the kernel may have dropped the dirty pages and a later `fsync`
//! succeeds without them — PostgreSQL's "fsyncgate", 2018). A failed save of a snapshot
//! only fails that save (nothing acknowledged rests on it; its file is deleted), unless the
//! directory's own fsync failed, which the log's files depend on too. What is on disk
//! stays readable: at worst a torn tail, which recovery drops, or a temporary, which it
//! deletes.

mod compact;
mod crc;
mod dir;
mod record;
mod replay;
mod segment;
mod snapshot;
mod sync;

pub use sync::{StorageFaults, sync_count};

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{Recovered, Storage};
use crate::core::{
    Entry, HardState, InstallSnapshotOrder, LogIndex, NodeId, SnapshotChunk, SnapshotInfo, SnapshotMeta,
};
use crate::state_machine::Snapshot;
use dir::Identity;
use replay::Replay;

/// Default size at which the log moves on to a new segment.
pub const SEGMENT_BYTES_DEFAULT: u64 = 64 << 20;

/// Settings of a [`FileStorage`] beyond its identity.
#[derive(Clone, Debug)]
pub struct FileOptions {
    /// A segment that has reached this size is closed and a new one started.
    pub segment_bytes: u64,
    /// Injected failures, for tests.
    pub faults: Option<Arc<StorageFaults>>,
    /// `flush` only writes; [`FileStorage::sync_written`] syncs. The node loop sets it so
    /// a leader's AppendEntries leave before its own `fdatasync` instead of after it
    /// (dissertation §10.2.1): the leader's and the followers' syncs overlap.
    pub sync_after_send: bool,
}

impl Default for FileOptions {
    fn default() -> FileOptions {
        FileOptions { segment_bytes: SEGMENT_BYTES_DEFAULT, faults: None, sync_after_send: false }
    }
}

/// The segment being appended to.
struct Active {
    seq: u64,
    file: File,
    /// Bytes in the file. Invariant: every byte up to here is durable after each flush.
    len: u64,
    /// The highest index of an entry written to it (0 for none).
    max_index: u64,
}

/// A segment no longer appended to.
#[derive(Clone, Copy, Debug)]
struct Closed {
    seq: u64,
    /// The highest index of an entry in it (0 for none): once a durable snapshot covers
    /// it, the segment holds nothing recovery needs.
    max_index: u64,
}

/// A [`Storage`] in a directory; see the module docs for the format and the rules.
pub struct FileStorage {
    dir: PathBuf,
    /// Held for the storage's lifetime: a second node on the directory is refused.
    _lock: File,
    identity: Identity,
    /// What `open` found; handed over once by `recover`.
    recovered: Option<Recovered>,
    /// `None` until the first flush of a new directory (or after a torn segment header).
    active: Option<Active>,
    next_seq: u64,
    options: FileOptions,
    /// Records handed over since the last flush; the next flush writes and syncs them.
    pending: Vec<u8>,
    /// The hard state as of the last record handed over.
    hard_state: HardState,
    /// The hard state as of the last record on disk (what a new segment starts with).
    flushed_hard_state: HardState,
    appended: u64,
    /// Batches written to the file (not necessarily synced). Invariant: `synced <= written
    /// <= appended`.
    written: u64,
    /// A segment was created since the last sync: the directory needs a sync too.
    dir_unsynced: bool,
    /// `fdatasync`s of log segments this storage made.
    log_syncs: u64,
    /// Invariant: `synced <= appended`, and `synced == appended` right after a good flush.
    synced: u64,
    /// Why the storage refuses everything, after a failed write or sync.
    failed: Option<String>,
    /// The closed segments, oldest first (one per file: bounded by what compaction leaves).
    closed: VecDeque<Closed>,
    /// The index of the last entry of the log as handed over (pending records included).
    log_last: u64,
    /// The highest index of an entry in `pending` (0 for none).
    pending_max: u64,
    /// The newest complete, durable snapshot.
    current: Option<snapshot::Current>,
    /// The save in progress, if any.
    saving: Option<snapshot::Saving>,
    /// The snapshot being received, if any.
    receiving: Option<snapshot::Receiving>,
}

impl std::fmt::Debug for FileStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileStorage")
            .field("dir", &self.dir)
            .field("identity", &self.identity)
            .field("appended", &self.appended)
            .field("synced", &self.synced)
            .field("failed", &self.failed)
            .field("snapshot", &self.current.as_ref().map(|c| c.info.meta.index))
            .finish_non_exhaustive()
    }
}

impl FileStorage {
    /// Opens (creating if missing) the data directory of node `node_id` of `cluster_id`:
    /// takes its lock, checks its identity and reads the log.
    ///
    /// Errors, each naming the path: the directory is locked by another node; it belongs to
    /// another node id or cluster id; it has log segments but no identity; a record before
    /// the tail is corrupt (with the file and offset); the log does not follow the newest
    /// valid snapshot (a gap). A torn tail (a crash mid-write) is not an error: it is
    /// truncated and logged at `warn`; nor is a corrupt snapshot when an older one and the
    /// log still cover what it did (logged at `warn`, the file renamed `*.corrupt`).
    pub fn open(dir: &Path, cluster_id: &str, node_id: NodeId, options: FileOptions) -> io::Result<FileStorage> {
        let context = |what: &str, e: io::Error| io::Error::new(e.kind(), format!("{what} {}: {e}", dir.display()));
        std::fs::create_dir_all(dir).map_err(|e| context("cannot create data dir", e))?;
        let lock = dir::lock(dir)?;
        let segments = segment::list(dir).map_err(|e| context("cannot list data dir", e))?;
        let identity = match dir::read_identity(dir)? {
            Some(found) if found.cluster_id != cluster_id || found.node_id != node_id => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "data dir {} belongs to node {} of cluster {:?}, not node {node_id} of cluster {cluster_id:?}",
                        dir.display(),
                        found.node_id,
                        found.cluster_id
                    ),
                ));
            }
            Some(found) => found,
            None if !segments.is_empty() => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("data dir {} has log segments but no IDENTITY file", dir.display()),
                ));
            }
            None => {
                let fresh = Identity { cluster_id: cluster_id.into(), node_id, incarnation: dir::random_u64() };
                dir::write_identity(dir, &fresh).map_err(|e| context("cannot write the identity of", e))?;
                fresh
            }
        };
        let mut storage = FileStorage {
            dir: dir.to_path_buf(),
            _lock: lock,
            identity,
            recovered: None,
            active: None,
            next_seq: 1,
            options,
            pending: Vec::new(),
            hard_state: HardState::default(),
            flushed_hard_state: HardState::default(),
            appended: 0,
            written: 0,
            dir_unsynced: false,
            log_syncs: 0,
            synced: 0,
            failed: None,
            closed: VecDeque::new(),
            log_last: 0,
            pending_max: 0,
            current: None,
            saving: None,
            receiving: None,
        };
        let found = snapshot::find(dir).map_err(|e| context("cannot list the snapshots in", e))?;
        storage.load(&segments, found)?;
        Ok(storage)
    }

    /// Reads every segment, replays its records, fits the log to the snapshot `found`, and
    /// opens the last segment for appending.
    fn load(&mut self, segments: &[(u64, PathBuf)], found: snapshot::Found) -> io::Result<()> {
        let base = found.current.as_ref().map(|c| (c.info.meta.index, c.info.meta.term));
        let mut replay = Replay::new(base.map_or(LogIndex(0), |b| b.0));
        for (k, (seq, path)) in segments.iter().enumerate() {
            let is_last = k + 1 == segments.len();
            let bytes = std::fs::read(path)
                .map_err(|e| io::Error::new(e.kind(), format!("cannot read {}: {e}", path.display())))?;
            let scanned = segment::scan(path, &bytes, is_last)?;
            let mut max_index = 0;
            for (offset, record) in scanned.records {
                max_index = record.entries.last().map_or(max_index, |e| e.index.0.max(max_index));
                replay
                    .apply(record)
                    .map_err(|why| segment::corrupt(path, offset, &format!("{why}{}", found.corrupt_note())))?;
            }
            self.next_seq = seq + 1;
            if !is_last {
                self.closed.push_back(Closed { seq: *seq, max_index });
                continue;
            }
            if let Some(why) = &scanned.torn {
                log::warn!("node {}: {why}", self.identity.node_id);
            }
            self.reopen_last(*seq, path, scanned.valid_len, scanned.torn.is_some(), max_index)?;
        }
        if !segments.is_empty() {
            // Likewise for the names a crashed process created or renamed.
            sync::sync_dir(&self.dir)
                .map_err(|e| io::Error::new(e.kind(), format!("cannot sync {}: {e}", self.dir.display())))?;
        }
        self.hard_state = replay.hard_state;
        self.flushed_hard_state = replay.hard_state;
        self.log_last = replay.last_index();
        let fitted = replay.fit(base).map_err(|why| {
            let at = found.current.as_ref().map_or(self.dir.clone(), |c| c.path.clone());
            let why = format!("{}: {why}{}", at.display(), found.corrupt_note());
            io::Error::new(io::ErrorKind::InvalidData, why)
        })?;
        if fitted.contradicted {
            self.repair_contradiction(fitted.log.snapshot_index())?;
        }
        self.current = found.tidy(&self.dir);
        let snapshot = self.current.as_ref().map(|c| c.info.clone());
        self.recovered = Some(Recovered { hard_state: self.hard_state, log: fitted.log, snapshot });
        Ok(())
    }

    /// Makes the last segment the active one, cutting a torn tail off first.
    fn reopen_last(&mut self, seq: u64, path: &Path, valid_len: u64, torn: bool, max_index: u64) -> io::Result<()> {
        let context = |e: io::Error| io::Error::new(e.kind(), format!("cannot repair {}: {e}", path.display()));
        if valid_len < segment::MAGIC.len() as u64 {
            // Not even a header: start this segment afresh at the next flush.
            std::fs::remove_file(path).map_err(context)?;
            sync::sync_dir(&self.dir).map_err(context)?;
            self.next_seq = seq;
            return Ok(());
        }
        let file = OpenOptions::new().write(true).open(path).map_err(context)?;
        if torn {
            file.set_len(valid_len).map_err(context)?;
        }
        // What a crashed process wrote but never synced may be only in the page cache: made
        // durable before anything is acknowledged on the strength of having read it.
        sync::sync_data(&file, None).map_err(context)?;
        let mut active = Active { seq, file, len: valid_len, max_index };
        io::Seek::seek(&mut active.file, io::SeekFrom::Start(valid_len)).map_err(context)?;
        self.active = Some(active);
        Ok(())
    }

    /// The incarnation recorded in the directory: the same on every restart on it.
    pub fn incarnation(&self) -> u64 {
        self.identity.incarnation
    }

    /// How many `fdatasync`s of the log this storage made (one per flush that had
    /// something to write, however many batches it covered).
    pub fn log_syncs(&self) -> u64 {
        self.log_syncs
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes the pending records, starting a new segment first if the active one is full.
    fn write_pending(&mut self) -> io::Result<()> {
        if self.active.as_ref().is_none_or(|a| a.len >= self.options.segment_bytes) {
            if let Some(old) = self.active.as_ref().filter(|_| self.written > self.synced) {
                // A sync covers only the active file: the old one's last writes first.
                self.log_syncs += 1;
                sync::sync_data(&old.file, self.options.faults.as_deref())?;
            }
            self.start_segment()?;
            self.dir_unsynced = true;
        }
        let active = self.active.as_mut().expect("a segment is active");
        if self.options.faults.as_deref().is_some_and(StorageFaults::writes_fail) {
            let half = &self.pending[..self.pending.len() / 2];
            active.file.write_all(half)?;
            return Err(io::Error::new(io::ErrorKind::StorageFull, "injected write failure (disk full)"));
        }
        active.file.write_all(&self.pending)?;
        active.len += self.pending.len() as u64;
        active.max_index = active.max_index.max(std::mem::take(&mut self.pending_max));
        Ok(())
    }

    /// Writes the pending records (not synced), and notes what that covers.
    fn write_out(&mut self) -> io::Result<()> {
        self.write_pending()?;
        self.pending.clear();
        self.flushed_hard_state = self.hard_state;
        self.written = self.appended;
        Ok(())
    }

    /// One `fdatasync` for everything written since the last one (and a directory sync if
    /// a segment was created: its entry must be durable too, or a crash loses the file).
    fn sync_active(&mut self) -> io::Result<()> {
        let active = self.active.as_ref().expect("written to a segment");
        self.log_syncs += 1;
        sync::sync_data(&active.file, self.options.faults.as_deref())?;
        if std::mem::take(&mut self.dir_unsynced) {
            sync::sync_dir(&self.dir)?;
        }
        Ok(())
    }

    /// Makes durable what `flush` wrote (with `sync_after_send`; otherwise `flush` already
    /// did). Returns whether `synced` moved or the storage failed: either way the replica
    /// has something to act on.
    pub fn sync_written(&mut self) -> bool {
        if self.failed.is_some() || self.written == self.synced {
            return false;
        }
        match self.sync_active() {
            Ok(()) => self.synced = self.written,
            Err(e) => {
                self.fail("syncing", e);
            }
        }
        true
    }

    /// Whether `flush` wrote batches that [`FileStorage::sync_written`] has yet to sync.
    pub fn has_unsynced_writes(&self) -> bool {
        self.failed.is_none() && self.written > self.synced
    }

    /// Records a write or sync failure of the log: from now on everything is refused.
    fn fail(&mut self, doing: &str, e: io::Error) -> io::Error {
        let seq = self.active.as_ref().map_or(0, |a| a.seq);
        self.fail_with(&format!("{doing} log segment {} in {}", segment::name(seq), self.dir.display()), e)
    }

    /// Records a failure of `what`: from now on everything is refused.
    fn fail_with(&mut self, what: &str, e: io::Error) -> io::Error {
        let why = format!("{what}: {e}");
        log::error!("node {}: {why}; refusing all further writes", self.identity.node_id);
        self.failed = Some(why.clone());
        io::Error::new(e.kind(), why)
    }

    /// Creates the next segment with its header and the hard state so far (not yet
    /// synced: the flush that follows syncs it with the records). The active one, if any,
    /// is closed.
    fn start_segment(&mut self) -> io::Result<u64> {
        let seq = self.next_seq;
        let path = self.dir.join(segment::name(seq));
        let mut file = OpenOptions::new().write(true).create_new(true).open(&path)?;
        let mut head = segment::MAGIC.to_vec();
        record::encode(&mut head, Some(self.flushed_hard_state), None, &[])?;
        file.write_all(&head)?;
        self.next_seq = seq + 1;
        let fresh = Active { seq, file, len: head.len() as u64, max_index: 0 };
        if let Some(old) = self.active.replace(fresh) {
            self.closed.push_back(Closed { seq: old.seq, max_index: old.max_index });
        }
        log::debug!("node {}: started log segment {}", self.identity.node_id, path.display());
        Ok(seq)
    }

    fn refuse(&self) -> io::Result<()> {
        match &self.failed {
            Some(why) => Err(io::Error::other(format!("storage failed earlier: {why}"))),
            None => Ok(()),
        }
    }
}

impl Storage for FileStorage {
    fn recover(&mut self) -> io::Result<Recovered> {
        Ok(self.recovered.take().expect("recover is called once"))
    }

    fn append(&mut self, hard_state: Option<HardState>, from: Option<LogIndex>, entries: &[Entry]) -> io::Result<()> {
        self.refuse()?;
        debug_assert!(from.is_some() || entries.is_empty(), "entries come with their first index");
        debug_assert!(entries.first().is_none_or(|e| Some(e.index) == from), "entries start at `from`");
        let start = self.pending.len();
        let mut first = true;
        let result = record::chunks(entries).try_for_each(|chunk| {
            let (hs, f) = if std::mem::take(&mut first) { (hard_state, from) } else { (None, None) };
            record::encode(&mut self.pending, hs, f, chunk)
        });
        let result = result.and_then(|()| match first {
            true => record::encode(&mut self.pending, hard_state, from, &[]),
            false => Ok(()),
        });
        if let Err(e) = result {
            self.pending.truncate(start);
            return Err(e);
        }
        if let Some(hs) = hard_state {
            self.hard_state = hs;
        }
        if let Some(from) = from {
            self.log_last = from.0.saturating_sub(1);
        }
        if let Some(last) = entries.last() {
            self.log_last = last.index.0;
            self.pending_max = self.pending_max.max(last.index.0);
        }
        self.appended += 1;
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.refuse()?;
        if self.pending.is_empty() {
            debug_assert_eq!(self.written, self.appended);
            return Ok(());
        }
        if let Err(e) = self.write_out() {
            return Err(self.fail("writing", e));
        }
        if !self.options.sync_after_send {
            self.sync_active().map_err(|e| self.fail("syncing", e))?;
            self.synced = self.written;
        }
        Ok(())
    }

    fn save_snapshot(&mut self, meta: SnapshotMeta, snapshot: Snapshot) -> io::Result<()> {
        self.refuse()?;
        if self.saving.is_some() {
            return Err(io::Error::other("a snapshot is already being saved"));
        }
        let faults = self.options.faults.clone();
        self.saving = Some(snapshot::Saving::start(&self.dir, meta, snapshot, faults)?);
        Ok(())
    }

    fn poll_snapshot(&mut self) -> Option<io::Result<SnapshotInfo>> {
        if !self.saving.as_ref()?.is_finished() {
            return None;
        }
        let saving = self.saving.take().expect("checked");
        let index = saving.index;
        Some(match saving.join(&self.dir) {
            Ok(saved) => Ok(self.adopt_saved(saved)),
            Err(e) if e.dir_unsure => {
                let what = format!("syncing {} after saving snapshot {}", self.dir.display(), snapshot::name(index));
                Err(self.fail_with(&what, e.error))
            }
            Err(e) => Err(io::Error::new(e.error.kind(), format!("saving snapshot {index}: {}", e.error))),
        })
    }

    fn read_snapshot(&mut self, index: LogIndex, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let current = self.current.as_ref().ok_or_else(|| io::Error::other("no snapshot"))?;
        if current.info.meta.index != index {
            return Err(io::Error::other(format!("snapshot {index} was replaced by {}", current.info.meta.index)));
        }
        current.read_at(offset, buf)
    }

    fn open_snapshot(&mut self) -> io::Result<Box<dyn Read + '_>> {
        let current = self.current.as_ref().ok_or_else(|| io::Error::other("no snapshot"))?;
        Ok(Box::new(current.reader()?))
    }

    fn receive_snapshot(&mut self, chunk: &SnapshotChunk) -> io::Result<()> {
        self.refuse()?;
        if chunk.offset == 0 {
            self.receiving = None;
            self.receiving = Some(snapshot::Receiving::start(&self.dir, &chunk.meta)?);
        }
        let Some(receiving) = self.receiving.as_mut().filter(|r| r.expects(chunk)) else {
            return Err(io::Error::other(format!("snapshot chunk at offset {} out of order", chunk.offset)));
        };
        if let Err(e) = receiving.append(chunk, self.options.faults.as_deref()) {
            self.receiving = None; // the file no longer matches what was counted
            return Err(e);
        }
        Ok(())
    }

    fn install_snapshot(&mut self, order: &InstallSnapshotOrder) -> io::Result<()> {
        self.install(order)
    }

    fn compact(&mut self, through: LogIndex) -> io::Result<()> {
        self.refuse()?;
        let covered = self.current.as_ref().map_or(LogIndex(0), |c| c.info.meta.index);
        if through > covered {
            // The caller's mistake, refused before anything is deleted.
            return Err(io::Error::other(format!(
                "cannot drop the log through {through}: the snapshot ends at {covered}"
            )));
        }
        self.drop_segments_through(through).map_err(|e| {
            let what = format!("dropping the log through {through} in {}", self.dir.display());
            self.fail_with(&what, e)
        })
    }

    fn synced(&self) -> u64 {
        self.synced
    }
}

impl Drop for FileStorage {
    /// A save still running is stopped and waited for: once the lock is released, another
    /// storage may open the directory, and no thread of this one may still write in it.
    fn drop(&mut self) {
        if let Some(saving) = self.saving.take() {
            saving.cancel(&self.dir);
        }
    }
}

#[cfg(test)]
mod snapshot_tests;
#[cfg(test)]
mod tests;
