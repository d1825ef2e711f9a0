//! Log replication (§5.3), the commit rule (§5.4.2) and heartbeats (§5.2), with batching,
//! pipelining and fast backtracking.

use std::ops::Bound::{Excluded, Unbounded};

use super::Raft;
use super::message::{AppendEntries, AppendEntriesResponse, MessageKind};
use super::progress::ReplicationState;
use super::quorum;
use super::types::{LogIndex, NodeId, Payload, Role};

impl Raft {
    /// Answers an AppendEntries from the leader of the current term (§5.3).
    ///
    /// Rejects if our log holds no entry at `prev_log_index` with `prev_log_term`, with a
    /// hint so the leader can skip a whole term; otherwise truncates the first conflicting
    /// suffix and appends the rest.
    ///
    /// # Panics
    /// If a conflict lies at or below `commit_index`: committed entries never change (§5.4).
    pub(super) fn on_append_entries(&mut self, from: NodeId, ae: AppendEntries) {
        self.accept_leader(from);
        let prev = ae.prev_log_index;
        if prev < self.log.snapshot_index() {
            // Compacted here: everything through our commit index matches the leader's
            // (it is committed), so resume from there.
            let index = self.commit_index;
            let r = AppendEntriesResponse { success: true, index, conflict_term: None, conflict_index: LogIndex(0) };
            return self.send(from, MessageKind::AppendEntriesResponse(r));
        }
        match self.log.term_at(prev) {
            Some(term) if term == ae.prev_log_term => {}
            found => {
                let conflict_index = match found {
                    Some(_) => self.log.first_index_of_term_at(prev),
                    None => self.log.last_index().next().min(prev),
                };
                let r = AppendEntriesResponse { success: false, index: prev, conflict_term: found, conflict_index };
                self.send(from, MessageKind::AppendEntriesResponse(r));
                return;
            }
        }
        let last_new = LogIndex(prev.0 + ae.entries.len() as u64);
        if !self.append_from_leader(ae.entries) {
            return;
        }
        // Only entries known to match the leader's may be committed (Figure 2, rule 5).
        let commit = ae.leader_commit.min(last_new);
        self.advance_commit(commit);
        let r =
            AppendEntriesResponse { success: true, index: last_new, conflict_term: None, conflict_index: LogIndex(0) };
        self.send(from, MessageKind::AppendEntriesResponse(r));
    }

    /// Stores the leader's entries, skipping those we already hold and truncating at the
    /// first conflict (§5.3, Figure 2 rules 3 and 4). Returns false, storing nothing more,
    /// if an entry conflicts with a committed one (see [`Raft::anomalies`]).
    fn append_from_leader(&mut self, entries: Vec<super::types::Entry>) -> bool {
        let mut config_changed = false;
        let mut truncated = false;
        for entry in entries {
            match self.log.term_at(entry.index) {
                Some(term) if term == entry.term => continue,
                Some(_) if entry.index <= self.commit_index => {
                    // Impossible from a leader of this cluster (§5.4): committed entries
                    // never change. A node of another cluster that shares our cluster id
                    // could send it, so refuse the rest rather than die or diverge.
                    ::log::error!(
                        "node {}: a leader tried to overwrite committed entry {} (commit {}); ignoring it. Is a node of another cluster using the same cluster id?",
                        self.cfg.id,
                        entry.index,
                        self.commit_index
                    );
                    self.anomalies += 1;
                    if config_changed || truncated {
                        self.reload_membership();
                    }
                    return false;
                }
                Some(_) => {
                    self.log.truncate_after(entry.index.prev());
                    self.persisted_index = self.persisted_index.min(entry.index.prev());
                    truncated = true;
                }
                None => {}
            }
            config_changed |= matches!(entry.payload, Payload::Config(_));
            self.mark_log_changed(entry.index);
            self.log.push(entry);
        }
        if config_changed || truncated {
            self.reload_membership();
        }
        true
    }

    /// Handles a follower's answer to AppendEntries.
    pub(super) fn on_append_entries_response(&mut self, from: NodeId, r: AppendEntriesResponse) {
        if self.role != Role::Leader {
            return;
        }
        let last_index = self.log.last_index();
        let Some(pr) = self.progress.get_mut(&from) else { return };
        pr.recent_active = true;
        if r.success {
            if r.index > last_index {
                log::warn!("node {}: peer {from} acked {} beyond our log", self.cfg.id, r.index);
                return;
            }
            if pr.on_success(r.index) {
                self.on_match_advanced(from);
            }
            return;
        }
        // A rejection at or below what already matched is a stale answer; one beyond our
        // log answers nothing we sent.
        if r.index <= pr.match_index || r.index > last_index {
            return;
        }
        if pr.state == ReplicationState::Probe && r.index != pr.next_index.prev() {
            return;
        }
        if pr.state == ReplicationState::Snapshot {
            return; // an answer to an AppendEntries from before the transfer
        }
        // Fast backtracking (§5.3's optimization): skip the follower's whole conflicting term.
        let hint = match r.conflict_term {
            Some(term) => self.log.last_index_of_term(term).map_or(r.conflict_index, |i| i.next()),
            None => r.conflict_index,
        };
        let pr = self.progress.get_mut(&from).expect("checked above");
        pr.become_probe(hint.min(r.index));
    }

    /// A follower's match index moved: the commit may advance, a transfer to it may hand
    /// over, a learner may be promoted.
    pub(super) fn on_match_advanced(&mut self, from: NodeId) {
        self.maybe_commit();
        self.maybe_send_timeout_now(from);
        self.maybe_promote(from);
    }

    /// A follower's handling of a heartbeat: it learns the leader and the commit index.
    pub(super) fn on_heartbeat(&mut self, from: NodeId, commit: LogIndex, read_seq: u64) {
        self.accept_leader(from);
        // The leader sends min(its commit, our match), so every index up to it matches.
        self.advance_commit(commit.min(self.log.last_index()));
        self.send(from, MessageKind::HeartbeatResponse { read_seq });
    }

    /// The leader's handling of a heartbeat answer: liveness and read confirmation.
    pub(super) fn on_heartbeat_response(&mut self, from: NodeId, read_seq: u64) {
        if self.role != Role::Leader {
            return;
        }
        let Some(pr) = self.progress.get_mut(&from) else { return };
        pr.recent_active = true;
        pr.read_seq_acked = pr.read_seq_acked.max(read_seq);
        self.release_reads();
        self.refresh_lease();
    }

    /// A message from the leader of our term: remember it and reset the election timer.
    pub(super) fn accept_leader(&mut self, from: NodeId) {
        if self.role != super::types::Role::Follower || self.leader_id != Some(from) {
            let term = self.hard.current_term;
            self.become_follower(term, Some(from));
        } else {
            self.election_elapsed = 0;
        }
        // With lease reads, the promise not to vote runs from here (see `lease.rs`).
        self.since_leader_contact = 0;
    }

    fn advance_commit(&mut self, to: LogIndex) {
        if to > self.commit_index {
            debug_assert!(to <= self.log.last_index());
            self.commit_index = to;
        }
    }

    /// Leader: commits the highest index a majority of voters hold, if it is of the
    /// current term (§5.4.2: older entries commit only indirectly, the Figure 8 scenario).
    pub(super) fn maybe_commit(&mut self) -> bool {
        let me = self.cfg.id;
        // The leader counts only what its own storage has made durable (dissertation
        // §10.2.1: it may write its log in parallel with replicating it, but an entry held
        // in memory alone would be lost in a crash and must not make up a majority).
        let Some(majority_index) = quorum::majority_value(&self.membership, |id| {
            if id == me { self.persisted_index } else { self.progress.get(&id).map_or(LogIndex(0), |p| p.match_index) }
        }) else {
            return false;
        };
        if majority_index <= self.commit_index || self.log.term_at(majority_index) != Some(self.hard.current_term) {
            return false;
        }
        self.commit_index = majority_index;
        self.on_commit_advanced();
        true
    }

    /// Sends heartbeats to every member, and notices pipelines whose messages were lost.
    /// With lease reads on, each broadcast is a new round, stamped for the lease.
    pub(super) fn broadcast_heartbeat(&mut self) {
        if self.cfg.lease_reads.is_some() {
            self.read_seq += 1;
            self.on_round_sent();
        }
        let commit = self.commit_index;
        let read_seq = self.read_seq;
        let peers: Vec<NodeId> = self.progress.keys().copied().collect();
        for id in peers {
            let pr = self.progress.get_mut(&id).expect("listed above");
            if pr.state == ReplicationState::Replicate && !pr.inflight.is_empty() && !pr.acked_since_heartbeat {
                // Nothing acknowledged for a heartbeat interval: assume loss and re-probe.
                let next = pr.match_index.next();
                pr.become_probe(next);
            }
            if let Some(t) = pr.snapshot.as_mut().filter(|_| !pr.acked_since_heartbeat) {
                // No answer for an election timeout: chunks or answers were lost (or the
                // connection dropped); resume from the last acknowledged byte. Not sooner:
                // on a slow link a chunk may take longer than a heartbeat interval, and
                // resending it would only compete with it.
                t.silent_heartbeats = t.silent_heartbeats.saturating_add(1);
                let period = (self.cfg.election_ticks / self.cfg.heartbeat_ticks.max(1)).max(1);
                if t.silent_heartbeats.is_multiple_of(period) {
                    pr.rewind_snapshot(None);
                }
            }
            pr.acked_since_heartbeat = false;
            // A probe that got no answer is retried once per heartbeat.
            pr.probe_sent = false;
            let commit = commit.min(pr.match_index);
            self.send(id, MessageKind::Heartbeat { commit, read_seq });
        }
    }

    /// Sends, to each follower, as many AppendEntries as its flow control allows.
    pub(super) fn flush_leader(&mut self) {
        // Called every turn: walk the followers by key instead of collecting them.
        let mut next = self.progress.keys().next().copied();
        while let Some(id) = next {
            while self.maybe_send_append(id) {}
            next = self.progress.range((Excluded(id), Unbounded)).next().map(|(&k, _)| k);
        }
        self.flush_read_round();
    }

    /// Sends one AppendEntries to `to` if it is behind and flow control allows; returns
    /// whether it sent one.
    fn maybe_send_append(&mut self, to: NodeId) -> bool {
        let last_index = self.log.last_index();
        let pr = &self.progress[&to];
        if pr.match_index >= last_index {
            return false;
        }
        let next = pr.next_index;
        if pr.state == ReplicationState::Snapshot || next <= self.log.snapshot_index() {
            // The entries it needs are compacted away (§7).
            return self.maybe_send_snapshot_chunk(to);
        }
        if !pr.can_send(self.cfg.max_inflight) {
            return false;
        }
        if pr.state == ReplicationState::Replicate && next > last_index {
            return false;
        }
        let prev_log_index = next.prev();
        let prev_log_term = self.log.term_at(prev_log_index).expect("prev is at or after the snapshot point");
        let entries = self.log.slice(next, self.cfg.max_append_entries, self.cfg.max_append_bytes).to_vec();
        let last = LogIndex(prev_log_index.0 + entries.len() as u64);
        let ae = AppendEntries { prev_log_index, prev_log_term, entries, leader_commit: self.commit_index };
        self.progress.get_mut(&to).expect("checked").on_sent(last);
        self.send(to, MessageKind::AppendEntries(ae));
        true
    }
}
