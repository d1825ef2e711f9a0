//! Snapshots from the replica's side (§7): taking one when the log has grown, compacting
//! once it is saved, filling the leader's InstallSnapshot chunks from storage, and storing
//! and installing the chunks a follower receives.

use super::Replica;
use super::reply::Channel;
use super::session::Sessions;
use crate::core::{Envelope, InstallSnapshotOrder, LogIndex, MessageKind, SnapshotMeta, SnapshotWork};
use crate::state_machine::{Snapshot, StateMachine};
use crate::storage::Storage;

/// When to take a snapshot and how much log to keep behind it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Compaction {
    /// Take a snapshot once this many entries were applied since the last one.
    pub entries: u64,
    /// Or once this many bytes of entries were applied since the last one.
    pub bytes: u64,
    /// Entries before the snapshot's index the log keeps, for followers a little behind.
    pub keep_entries: u64,
}

impl Default for Compaction {
    /// 100,000 entries or 64 MiB, keeping 5,000 (etcd's defaults are of the same order).
    fn default() -> Compaction {
        Compaction { entries: 100_000, bytes: 64 << 20, keep_entries: 5_000 }
    }
}

impl<M: StateMachine, S: Storage, C: Channel> Replica<M, S, C> {
    /// Takes a snapshot if enough was applied since the last one and none is being saved.
    /// The capture runs here; storage writes it out (on another thread, if it has one).
    pub(super) fn maybe_snapshot(&mut self) {
        if !M::SNAPSHOTS || self.snapshot_saving || self.poisoned.is_some() {
            return;
        }
        let last = self.core.snapshot().map_or(self.core.log().snapshot_index(), |s| s.meta.index);
        let c = self.cfg.compaction;
        let entries = self.applied.0.saturating_sub(last.0);
        let by_entries = entries >= c.entries && self.applied >= self.snapshot_not_before;
        let by_bytes = self.applied_bytes_since >= c.bytes; // reset by every attempt
        if !by_entries && !by_bytes {
            return;
        }
        // A new snapshot would restart a transfer under way from its first byte: wait for
        // it, up to four thresholds' worth of log (so a transfer that never ends cannot
        // keep the log growing).
        let overdue = entries >= c.entries.saturating_mul(4) || self.applied_bytes_since >= c.bytes.saturating_mul(4);
        if self.core.sending_snapshot() && !overdue {
            return;
        }
        let index = self.applied;
        let Some(term) = self.core.log().term_at(index) else { return };
        self.applied_bytes_since = 0;
        let Some(capture) = self.machine.snapshot() else {
            log::warn!("node {}: the state machine declares snapshots but returned none", self.core.id());
            return self.retry_snapshot_later();
        };
        let membership = self.core.membership_at(index);
        if membership.voters.is_empty() {
            // A `join()` server whose log holds no configuration at or before `index` (the
            // cluster's first one is each founder's initial setting, not an entry) cannot
            // say which configuration the snapshot holds: it waits until one is in its log
            // (the simulator found such a snapshot, which every follower rightly refused).
            log::debug!("node {}: no configuration known at {index}; snapshot postponed", self.core.id());
            return self.retry_snapshot_later();
        }
        let meta = SnapshotMeta { index, term, membership };
        // The session table is replicated state too: it goes first, then the machine's.
        let sessions = self.sessions.clone();
        let capture = Snapshot::new(move |w| {
            sessions.write_to(w)?;
            capture.write_to(w)
        });
        match self.storage.save_snapshot(meta, capture) {
            Ok(()) => self.snapshot_saving = true,
            Err(e) => {
                log::error!("node {}: cannot save a snapshot at {index}: {e}", self.core.id());
                self.retry_snapshot_later();
            }
        }
    }

    /// After a failed snapshot, the next attempt waits for another threshold's worth of
    /// entries (or of bytes: every attempt resets that count). Not a safety matter: the
    /// log only stays longer meanwhile.
    fn retry_snapshot_later(&mut self) {
        self.snapshot_not_before = LogIndex(self.applied.0.saturating_add(self.cfg.compaction.entries));
    }

    /// Compacts the log once storage says a snapshot is saved.
    pub(super) fn poll_snapshot(&mut self) {
        let Some(saved) = self.storage.poll_snapshot() else { return };
        self.snapshot_saving = false;
        let info = match saved {
            Ok(info) => info,
            Err(e) => {
                log::error!("node {}: saving a snapshot failed: {e}", self.core.id());
                return self.retry_snapshot_later();
            }
        };
        log::debug!("node {}: snapshot at {} saved ({} bytes)", self.core.id(), info.meta.index, info.size);
        self.metrics.snapshots_taken += 1;
        let point = self.core.on_snapshot_saved(info, self.cfg.compaction.keep_entries);
        if let Err(e) = self.storage.compact(point) {
            log::error!("node {}: cannot drop the log through {point}: {e}", self.core.id());
        }
    }

    /// Fills the leader's InstallSnapshot chunks with bytes from storage; a chunk that
    /// cannot be read is dropped (the transfer resumes from the follower's last ack).
    pub(super) fn fill_snapshot_chunks(&mut self, messages: &mut Vec<Envelope>) {
        let chunk_bytes = self.cfg.core.snapshot_chunk_bytes;
        let id = self.core.id();
        let (storage, metrics) = (&mut self.storage, &mut self.metrics);
        messages.retain_mut(|env| {
            let MessageKind::InstallSnapshot(is) = &mut env.message.kind else { return true };
            is.data = vec![0; is.chunk_len(chunk_bytes)];
            match storage.read_snapshot(is.meta.index, is.offset, &mut is.data) {
                Ok(()) => {
                    metrics.snapshot_chunks_sent += 1;
                    true
                }
                Err(e) => {
                    log::warn!("node {id}: cannot read snapshot {} for node {}: {e}", is.meta.index, env.to);
                    false
                }
            }
        });
    }

    /// Stores a follower's received chunks and installs the snapshots they complete, in
    /// order: durable and current in storage, then restored into the state machine.
    pub(super) fn receive_snapshot(&mut self, work: Vec<SnapshotWork>) {
        for item in work {
            match item {
                SnapshotWork::Chunk(chunk) => {
                    if let Err(e) = self.storage.receive_snapshot(&chunk) {
                        return self.poison_storage(format!("cannot store a received snapshot chunk: {e}"));
                    }
                }
                SnapshotWork::Install(order) => self.install_snapshot(&order),
            }
            if self.poisoned.is_some() {
                return;
            }
        }
    }

    fn install_snapshot(&mut self, order: &InstallSnapshotOrder) {
        let index = order.info.meta.index;
        if let Err(e) = self.storage.install_snapshot(order) {
            return self.poison_storage(format!("cannot install the snapshot at {index}: {e}"));
        }
        if let Err(e) = self.restore_from_storage() {
            return self.poison(format!("cannot restore the state machine from the snapshot at {index}: {e}"));
        }
        log::info!("node {}: installed the leader's snapshot at {index} ({} bytes)", self.core.id(), order.info.size);
        self.applied = index;
        self.applied_bytes_since = 0;
        self.metrics.snapshots_installed += 1;
        self.answer_skipped();
    }

    /// Replaces the session table and the state machine's state with storage's current
    /// snapshot.
    pub(super) fn restore_from_storage(&mut self) -> std::io::Result<()> {
        let mut reader = self.storage.open_snapshot()?;
        self.sessions = Sessions::read_from(&mut reader)?;
        let machine = &mut self.machine;
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| machine.restore(&mut reader))) {
            Ok(result) => result,
            Err(_) => Err(std::io::Error::other("the state machine panicked restoring")),
        }
    }
}
