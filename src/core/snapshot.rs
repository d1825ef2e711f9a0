//! Snapshots and log compaction (§7, dissertation ch. 5): the core never sees a
//! snapshot's bytes. It learns of a snapshot its driver saved ([`Raft::on_snapshot_saved`]),
//! drops the log prefix it covers, and when a follower needs entries that are gone, sends it
//! the snapshot in chunks whose bytes the driver fills in. A follower hands the chunks it
//! takes to its driver and, with the last one, replaces its log and state (its `Ready`'s
//! `snapshot_work`, see [`super::Ready`]).

use super::Membership;
use super::Raft;
use super::message::{InstallSnapshot, InstallSnapshotResponse, MessageKind, SnapshotMeta};
use super::progress::ReplicationState;
use super::types::{LogIndex, NodeId, Payload, Role};

/// A snapshot this server holds: what it covers and its length in bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotInfo {
    /// What it covers.
    pub meta: SnapshotMeta,
    /// Its length in bytes.
    pub size: u64,
}

/// One chunk of a snapshot a follower took, for its driver to store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotChunk {
    /// Which snapshot (offset 0 starts a new one, discarding any partial one).
    pub meta: SnapshotMeta,
    /// Where the chunk starts.
    pub offset: u64,
    /// The bytes.
    pub data: Vec<u8>,
}

/// The last chunk arrived: the driver makes the received snapshot durable and current,
/// drops its stored log through `info.meta.index` (and after it too, unless `keep_log_after`)
/// and restores the state machine from it, before writing the rest of this
/// [`Ready`](super::Ready).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstallSnapshotOrder {
    /// The snapshot.
    pub info: SnapshotInfo,
    /// The stored log holds the snapshot's last entry with its term, so the entries after
    /// it are the leader's and stay (Figure 13, step 6); otherwise the whole stored log
    /// goes, and this `Ready` rewrites whatever the log keeps after the snapshot.
    pub keep_log_after: bool,
}

/// Snapshot work for a follower's driver, in the order it arose.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SnapshotWork {
    /// Store a chunk.
    Chunk(SnapshotChunk),
    /// Install the snapshot the chunks completed.
    Install(InstallSnapshotOrder),
}

/// A snapshot being received (follower side).
#[derive(Clone, Debug)]
pub(super) struct Incoming {
    /// Who sends it, in which term: bytes from another leader may differ.
    from: (NodeId, super::types::Term),
    meta: SnapshotMeta,
    size: u64,
    next_offset: u64,
}

impl Raft {
    /// The latest snapshot this server holds, if any.
    pub fn snapshot(&self) -> Option<&SnapshotInfo> {
        self.snapshot.as_ref()
    }

    /// Whether this leader is sending its snapshot to a follower that answered within the
    /// last election timeout: a new snapshot would restart that transfer from its start.
    pub fn sending_snapshot(&self) -> bool {
        let period = (self.cfg.election_ticks / self.cfg.heartbeat_ticks.max(1)).max(1);
        self.progress.values().filter_map(|p| p.snapshot).any(|t| t.silent_heartbeats < period)
    }

    /// The configuration in force at `index` (at or after the log's snapshot point): what a
    /// snapshot through `index` must record.
    pub fn membership_at(&self, index: LogIndex) -> Membership {
        debug_assert!(index >= self.log.snapshot_index());
        if self.membership_index <= index {
            return self.membership.clone();
        }
        self.log
            .entries()
            .iter()
            .rev()
            .filter(|e| e.index <= index)
            .find_map(|e| match &e.payload {
                Payload::Config(m) => Some(m.clone()),
                _ => None,
            })
            .unwrap_or_else(|| self.base_membership.clone())
    }

    /// The driver saved (durably, if it persists anything) a snapshot of the state machine
    /// through `info.meta.index`, an applied index. The core drops the log before it, except
    /// the last `keep_entries` entries, so a follower a little behind still catches up from
    /// the log. Returns the log's new snapshot point: storage may drop entries through it.
    /// A snapshot no newer than the one held is ignored.
    pub fn on_snapshot_saved(&mut self, info: SnapshotInfo, keep_entries: u64) -> LogIndex {
        let index = info.meta.index;
        if self.snapshot.as_ref().is_some_and(|s| s.meta.index >= index) || index <= self.log.snapshot_index() {
            return self.log.snapshot_index();
        }
        debug_assert!(index <= self.commit_index, "only applied state is snapshotted");
        debug_assert_eq!(self.log.term_at(index), Some(info.meta.term));
        self.snapshot = Some(info);
        let point = LogIndex(index.0.saturating_sub(keep_entries)).max(self.log.snapshot_index());
        if point > self.log.snapshot_index() {
            self.base_membership = self.membership_at(point);
            self.log.compact_to(point);
        }
        self.log.snapshot_index()
    }

    /// Leader: sends `to` the next chunks of the snapshot, within the in-flight bound.
    /// Called when the entry before `to`'s next one is compacted away. Returns whether a
    /// chunk was sent.
    pub(super) fn maybe_send_snapshot_chunk(&mut self, to: NodeId) -> bool {
        let Some(info) = self.snapshot.clone() else {
            debug_assert!(false, "the log was compacted without a snapshot");
            return false;
        };
        let chunk = self.cfg.snapshot_chunk_bytes;
        let max_inflight = self.cfg.max_snapshot_inflight;
        let pr = self.progress.get_mut(&to).expect("a member");
        if pr.state != ReplicationState::Snapshot || pr.snapshot.is_some_and(|t| t.index != info.meta.index) {
            ::log::debug!("node {}: sending snapshot {} to {to}", self.cfg.id, info.meta.index);
            pr.become_snapshot(info.meta.index);
        }
        let t = pr.snapshot.as_mut().expect("in snapshot state");
        if t.sent_last || t.next_offset.saturating_sub(t.acked_offset) >= max_inflight.saturating_mul(chunk) as u64 {
            return false;
        }
        let offset = t.next_offset.min(info.size);
        let is = InstallSnapshot { meta: info.meta, size: info.size, offset, attempt: t.attempt, data: Vec::new() };
        t.next_offset = offset + is.chunk_len(chunk) as u64;
        t.sent_last = t.next_offset == info.size;
        self.send(to, MessageKind::InstallSnapshot(is));
        true
    }

    /// Leader: a follower's answer to a chunk.
    pub(super) fn on_install_snapshot_response(&mut self, from: NodeId, r: InstallSnapshotResponse) {
        if self.role != Role::Leader {
            return;
        }
        let last_index = self.log.last_index();
        let Some(pr) = self.progress.get_mut(&from) else { return };
        pr.recent_active = true;
        if r.done {
            // The follower holds everything through the snapshot's index, which is
            // committed, so its log matches ours that far.
            if r.index <= last_index && pr.on_success(r.index) {
                self.on_match_advanced(from);
            }
            return;
        }
        let size = self.snapshot.as_ref().map_or(0, |s| s.size);
        let Some(t) = pr.snapshot.as_mut().filter(|t| t.index == r.index) else { return };
        pr.acked_since_heartbeat = true;
        t.silent_heartbeats = 0;
        if r.success {
            t.acked_offset = t.acked_offset.max(r.next_offset.min(t.next_offset));
        } else if r.attempt == t.attempt {
            // Out of order at the follower (a lost chunk, or a follower that restarted):
            // resume where it says it is, in a new attempt.
            pr.rewind_snapshot(Some(r.next_offset.min(size)));
        }
    }

    /// Follower: takes one chunk from the leader of this term (§7 and Figure 13).
    pub(super) fn on_install_snapshot(&mut self, from: NodeId, is: InstallSnapshot) {
        self.accept_leader(from);
        let (index, attempt) = (is.meta.index, is.attempt);
        let reply = |success, next_offset, done| InstallSnapshotResponse { index, success, next_offset, done, attempt };
        if index <= self.commit_index {
            // Our committed log already covers it (and committed entries match the leader's).
            self.incoming = None;
            let r = reply(true, is.size, true);
            return self.send(from, MessageKind::InstallSnapshotResponse(r));
        }
        let sender = (from, self.hard.current_term);
        let expected = match &self.incoming {
            Some(inc) if inc.from == sender && inc.meta == is.meta && inc.size == is.size => inc.next_offset,
            _ => 0,
        };
        let end = is.offset + is.data.len() as u64; // checked at the door
        if is.offset != expected || (is.data.is_empty() && end != is.size) {
            let r = reply(false, expected, false);
            return self.send(from, MessageKind::InstallSnapshotResponse(r));
        }
        if is.offset == 0 {
            self.incoming = Some(Incoming { from: sender, meta: is.meta.clone(), size: is.size, next_offset: 0 });
        }
        self.incoming.as_mut().expect("started at offset 0").next_offset = end;
        let chunk = SnapshotChunk { meta: is.meta.clone(), offset: is.offset, data: is.data };
        self.ready.snapshot_work.push(SnapshotWork::Chunk(chunk));
        if end < is.size {
            return self.send(from, MessageKind::InstallSnapshotResponse(reply(true, end, false)));
        }
        self.incoming = None;
        self.install_snapshot(SnapshotInfo { meta: is.meta, size: is.size });
        self.send(from, MessageKind::InstallSnapshotResponse(reply(true, end, true)));
    }

    /// Replaces the log's prefix (or all of it) with a received snapshot.
    fn install_snapshot(&mut self, info: SnapshotInfo) {
        let (s, t) = (info.meta.index, info.meta.term);
        debug_assert!(s > self.commit_index);
        let keep_log_after = self.log.term_at(s) == Some(t);
        if keep_log_after {
            self.log.compact_to(s);
        } else {
            self.log = super::Log::new(s, t, Vec::new());
        }
        // Storage may keep its log after the snapshot only if that log is ours: if this
        // batch of inputs changed it at or before the snapshot's index (a truncation that
        // storage has not seen yet, since the install comes before this Ready's writes),
        // storage holds older entries there, so it drops all and the log after the
        // snapshot is written again (found by review: acked entries were lost at restart).
        let stored_is_ours = self.ready.log_changed_from.is_none_or(|c| c > s);
        let keep_stored = keep_log_after && stored_is_ours;
        if !keep_stored {
            self.ready.log_changed_from = Some(s.next());
            self.persisted_index = self.persisted_index.min(s);
        }
        debug_assert!(self.ready.log_changed_from.is_none_or(|c| c > s));
        self.base_membership = info.meta.membership.clone();
        self.commit_index = s;
        self.reload_membership();
        self.snapshot = Some(info.clone());
        let order = InstallSnapshotOrder { info, keep_log_after: keep_stored };
        self.ready.snapshot_work.push(SnapshotWork::Install(order));
    }
}
