//! The messages Raft servers exchange (Figure 2, §5; pre-vote from dissertation §9.6;
//! TimeoutNow from §3.10). They are plain serde types: the transport frames them.

use serde::{Deserialize, Serialize};

use super::membership::Membership;
use super::types::{Entry, LogIndex, NodeId, Term};

/// One message between two servers. Every message carries the sender's term (§5.1):
/// a receiver that sees a higher term adopts it, a lower one marks the message stale.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// The sender's term; for a pre-vote request, the term it *would* campaign in.
    pub term: Term,
    /// What the message says.
    pub kind: MessageKind,
}

/// The kinds of message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MessageKind {
    /// RequestVote (§5.2), or its pre-vote probe when `pre_vote` is set.
    RequestVote(RequestVote),
    /// The answer to a RequestVote.
    RequestVoteResponse {
        /// Whether the vote (or pre-vote) was granted.
        granted: bool,
        /// Whether this answers a pre-vote.
        pre_vote: bool,
    },
    /// AppendEntries (§5.3): replicates entries after `prev_log_index`.
    AppendEntries(AppendEntries),
    /// The answer to an AppendEntries.
    AppendEntriesResponse(AppendEntriesResponse),
    /// A leader's periodic "I am alive" (§5.2), which also carries the commit index and
    /// a read-confirmation round (dissertation §6.4).
    Heartbeat {
        /// `min(leader commit, follower match)`: the follower may commit up to here.
        commit: LogIndex,
        /// The ReadIndex round this heartbeat confirms.
        read_seq: u64,
    },
    /// The answer to a Heartbeat.
    HeartbeatResponse {
        /// The round being acknowledged.
        read_seq: u64,
    },
    /// Leadership transfer (§3.10): "start an election now".
    TimeoutNow,
    /// A follower's answer to a pre-vote it ignores because it is in a leader's lease
    /// (dissertation §4.2.3): who leads its current term. A member whose configuration is
    /// behind may not know that leader, and takes its messages only once a voter it
    /// knows vouches for it like this (see `guard.rs`).
    LeaderHint {
        /// The leader of the sender's current term.
        leader: NodeId,
    },
    /// "Who leads?", from a server that cannot campaign (a learner) and heard from no
    /// leader for an election timeout; answered with a [`MessageKind::LeaderHint`].
    LeaderQuery,
    /// InstallSnapshot (§7, dissertation ch. 5): one chunk of the leader's snapshot, for
    /// a follower whose next entry the leader's log no longer holds.
    InstallSnapshot(InstallSnapshot),
    /// The answer to one InstallSnapshot chunk.
    InstallSnapshotResponse(InstallSnapshotResponse),
}

/// What a snapshot covers: the state after applying every entry through `index`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotMeta {
    /// The last entry the snapshot covers (§7's `lastIncludedIndex`).
    pub index: LogIndex,
    /// That entry's term (§7's `lastIncludedTerm`).
    pub term: Term,
    /// The configuration in force at `index` (the log that held it is gone).
    pub membership: Membership,
}

/// Arguments of InstallSnapshot: bytes `offset..offset + data.len()` of a snapshot of
/// `size` bytes. Chunks are accepted only in order; the one that reaches `size` is the last.
///
/// The core does not read snapshots: the leader's core emits chunks with `data` empty and
/// its driver fills in [`InstallSnapshot::chunk_len`] bytes before sending.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstallSnapshot {
    /// Which snapshot.
    pub meta: SnapshotMeta,
    /// Its length in bytes.
    pub size: u64,
    /// Where this chunk starts.
    pub offset: u64,
    /// Which attempt of the transfer sent it: the leader starts a new one each time it
    /// resends from an earlier offset, and heeds refusals of the current one only.
    pub attempt: u32,
    /// The chunk.
    #[serde(with = "super::types::as_bytes")]
    pub data: Vec<u8>,
}

impl InstallSnapshot {
    /// How many bytes a chunk at `offset` carries when chunks are `chunk_bytes` long.
    pub fn chunk_len(&self, chunk_bytes: usize) -> usize {
        (chunk_bytes as u64).min(self.size.saturating_sub(self.offset)) as usize
    }
}

/// The answer to an InstallSnapshot chunk.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstallSnapshotResponse {
    /// The snapshot's index (to tell transfers apart).
    pub index: LogIndex,
    /// Whether the chunk was taken. If not, `next_offset` says where to resume.
    pub success: bool,
    /// The offset the follower expects next.
    pub next_offset: u64,
    /// The attempt of the chunk answered.
    pub attempt: u32,
    /// The follower holds the snapshot (installed, or its log already covers it).
    pub done: bool,
}

/// Arguments of RequestVote.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestVote {
    /// Index of the candidate's last log entry (§5.4.1).
    pub last_log_index: LogIndex,
    /// Term of the candidate's last log entry (§5.4.1).
    pub last_log_term: Term,
    /// A pre-vote probe (dissertation §9.6): nobody changes term or vote for it.
    pub pre_vote: bool,
    /// Sent because of a leadership transfer or a forced election: voters ignore their
    /// leader lease (dissertation §4.2.3) for it; with lease reads on, only for a transfer.
    pub force: bool,
    /// Sent because this term's leader said TimeoutNow (§3.10): that leader serves no lease
    /// read from then on, so voters may grant it inside their lease. A forced election
    /// without it (`trigger_election`) must respect leases when lease reads are on.
    #[serde(default)]
    pub transfer: bool,
}

/// Arguments of AppendEntries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppendEntries {
    /// Index of the entry immediately preceding `entries`.
    pub prev_log_index: LogIndex,
    /// Term of that entry.
    pub prev_log_term: Term,
    /// Entries to store, in order (empty for a probe). They travel as one byte string
    /// (see `entry_batch.rs`).
    #[serde(with = "super::entry_batch")]
    pub entries: Vec<Entry>,
    /// The leader's commit index.
    pub leader_commit: LogIndex,
}

/// The answer to AppendEntries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppendEntriesResponse {
    /// Whether the follower's log matched at `prev_log_index`.
    pub success: bool,
    /// On success, the index of the last entry now known to match the leader's log.
    /// On rejection, the `prev_log_index` that was rejected.
    pub index: LogIndex,
    /// On rejection, the hint for fast backtracking: the term of the follower's entry at
    /// the rejected index, if it has one.
    pub conflict_term: Option<Term>,
    /// On rejection, the first index of `conflict_term` in the follower's log, or the
    /// follower's last index + 1 if its log is too short.
    pub conflict_index: LogIndex,
}

/// Indexes at or above this are refused from the wire: no log gets near it (2^63 entries),
/// and every `LogIndex::next` on an accepted index has room.
pub const INDEX_MAX: u64 = u64::MAX / 2;

/// A message with its addressee, as the core hands it to the driver.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Envelope {
    /// The server to deliver it to.
    pub to: NodeId,
    /// The message.
    pub message: Message,
}

impl Message {
    /// Checks the shape the core relies on: AppendEntries carries contiguous entries right
    /// after `prev_log_index`, with terms that never decrease and never exceed the message's
    /// term. The runtime rejects messages that fail this at the gateway (closing that
    /// connection), so a misbehaving peer cannot trip the core's assertions.
    pub fn check_well_formed(&self) -> Result<(), &'static str> {
        match &self.kind {
            MessageKind::AppendEntries(ae) => {
                if ae.prev_log_term > self.term {
                    return Err("prev_log_term above the message term");
                }
                let mut index = ae.prev_log_index;
                let mut term = ae.prev_log_term;
                if ae.prev_log_index.0 >= INDEX_MAX || ae.leader_commit.0 >= INDEX_MAX {
                    return Err("index beyond any log");
                }
                for e in &ae.entries {
                    if index.0 >= INDEX_MAX - 1 || e.index != index.next() {
                        return Err("entries are not contiguous after prev_log_index");
                    }
                    if e.term < term || e.term > self.term {
                        return Err("entry terms decrease or exceed the message term");
                    }
                    index = e.index;
                    term = e.term;
                }
                Ok(())
            }
            MessageKind::RequestVote(rv) if rv.last_log_term > self.term => Err("last_log_term above the term"),
            MessageKind::InstallSnapshot(is) => {
                if is.meta.term > self.term || is.meta.index.0 == 0 || is.meta.index.0 >= INDEX_MAX {
                    return Err("snapshot point above the message term, or absurd");
                }
                if is.offset.checked_add(is.data.len() as u64).is_none_or(|end| end > is.size) {
                    return Err("snapshot chunk beyond the snapshot's size");
                }
                let m = &is.meta.membership;
                if m.voters.is_empty() || m.voters.keys().any(|id| m.learners.contains_key(id)) {
                    return Err("snapshot configuration without voters, or with a voter that is also a learner");
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::types::Payload;

    fn ae(term: u64, prev: (u64, u64), entries: &[(u64, u64)]) -> Message {
        let entries = entries
            .iter()
            .map(|&(index, term)| Entry { index: LogIndex(index), term: Term(term), payload: Payload::Noop })
            .collect();
        let ae = AppendEntries {
            prev_log_index: LogIndex(prev.0),
            prev_log_term: Term(prev.1),
            entries,
            leader_commit: LogIndex(0),
        };
        Message { term: Term(term), kind: MessageKind::AppendEntries(ae) }
    }

    #[test]
    fn append_entries_shape_is_checked() {
        let cases = [
            (ae(3, (4, 2), &[(5, 2), (6, 3)]), true),
            (ae(3, (4, 2), &[]), true),
            (ae(3, (4, 2), &[(6, 2)]), false),         // gap
            (ae(3, (4, 2), &[(5, 3), (6, 2)]), false), // terms decrease
            (ae(3, (4, 2), &[(5, 4)]), false),         // term above the message's
            (ae(3, (4, 5), &[]), false),               // prev term above the message's
            (ae(3, (u64::MAX, 1), &[(0, 1)]), false),  // index overflow
        ];
        for (k, (msg, ok)) in cases.iter().enumerate() {
            assert_eq!(msg.check_well_formed().is_ok(), *ok, "case {k}");
        }
    }

    /// Its position in `MessageKind`. No wildcard: a new kind fails to compile here until
    /// `one_of_each_kind` holds one.
    fn kind_position(kind: &MessageKind) -> usize {
        match kind {
            MessageKind::RequestVote(_) => 0,
            MessageKind::RequestVoteResponse { .. } => 1,
            MessageKind::AppendEntries(_) => 2,
            MessageKind::AppendEntriesResponse(_) => 3,
            MessageKind::Heartbeat { .. } => 4,
            MessageKind::HeartbeatResponse { .. } => 5,
            MessageKind::TimeoutNow => 6,
            MessageKind::LeaderHint { .. } => 7,
            MessageKind::LeaderQuery => 8,
            MessageKind::InstallSnapshot(_) => 9,
            MessageKind::InstallSnapshotResponse(_) => 10,
        }
    }

    fn one_of_each_kind() -> Vec<MessageKind> {
        let membership = Membership::with_voters([(1, "a:1".to_string()), (2, "b:2".to_string())]);
        let payloads = [Payload::Noop, Payload::Command(vec![1, 2, 3].into()), Payload::Config(membership.clone())];
        let entries = payloads
            .into_iter()
            .enumerate()
            .map(|(k, payload)| Entry { term: Term(2), index: LogIndex(5 + k as u64), payload })
            .collect();
        let ae =
            AppendEntries { prev_log_index: LogIndex(4), prev_log_term: Term(2), entries, leader_commit: LogIndex(3) };
        let rejection = AppendEntriesResponse {
            success: false,
            index: LogIndex(9),
            conflict_term: Some(Term(1)),
            conflict_index: LogIndex(5),
        };
        let meta = SnapshotMeta { index: LogIndex(10), term: Term(2), membership };
        vec![
            MessageKind::RequestVote(RequestVote {
                last_log_index: LogIndex(7),
                last_log_term: Term(2),
                pre_vote: true,
                force: true,
                transfer: true,
            }),
            MessageKind::RequestVoteResponse { granted: true, pre_vote: false },
            MessageKind::AppendEntries(ae),
            MessageKind::AppendEntriesResponse(rejection),
            MessageKind::Heartbeat { commit: LogIndex(3), read_seq: 11 },
            MessageKind::HeartbeatResponse { read_seq: 11 },
            MessageKind::TimeoutNow,
            MessageKind::LeaderHint { leader: 2 },
            MessageKind::LeaderQuery,
            MessageKind::InstallSnapshot(InstallSnapshot { meta, size: 100, offset: 10, attempt: 2, data: vec![7; 3] }),
            MessageKind::InstallSnapshotResponse(InstallSnapshotResponse {
                index: LogIndex(10),
                success: true,
                next_offset: 13,
                attempt: 2,
                done: false,
            }),
        ]
    }

    /// Every kind decodes to what was encoded, in the compact encoding frames use (structs
    /// as arrays) and in the named one (structs as maps), which decoding also accepts.
    #[test]
    fn every_kind_round_trips() {
        let kinds = one_of_each_kind();
        let mut seen: Vec<usize> = kinds.iter().map(kind_position).collect();
        seen.dedup();
        assert_eq!(seen, (0..=10).collect::<Vec<_>>(), "one of each kind, in order");
        let probe = AppendEntries {
            prev_log_index: LogIndex(4),
            prev_log_term: Term(2),
            entries: Vec::new(),
            leader_commit: LogIndex(3),
        };
        for kind in kinds.into_iter().chain([MessageKind::AppendEntries(probe)]) {
            let msg = Message { term: Term(3), kind };
            for encoded in [rmp_serde::to_vec(&msg).unwrap(), rmp_serde::to_vec_named(&msg).unwrap()] {
                assert_eq!(rmp_serde::from_slice::<Message>(&encoded).unwrap(), msg);
            }
        }
    }

    fn chunk(term: u64, index: u64, meta_term: u64, size: u64, offset: u64, len: usize, voters: &[u64]) -> Message {
        let membership = Membership::with_voters(voters.iter().map(|&id| (id, String::new())));
        let meta = SnapshotMeta { index: LogIndex(index), term: Term(meta_term), membership };
        let is = InstallSnapshot { meta, size, offset, attempt: 0, data: vec![0; len] };
        Message { term: Term(term), kind: MessageKind::InstallSnapshot(is) }
    }

    #[test]
    fn install_snapshot_shape_is_checked() {
        let cases = [
            (chunk(3, 10, 2, 100, 0, 10, &[1]), true),
            (chunk(3, 10, 2, 100, 90, 10, &[1]), true),
            (chunk(3, 10, 2, 0, 0, 0, &[1]), true), // an empty snapshot: one empty chunk
            (chunk(3, 10, 2, 100, 95, 10, &[1]), false), // beyond the size
            (chunk(3, 10, 2, u64::MAX, u64::MAX, 10, &[1]), false), // offset + len overflows
            (chunk(3, 0, 2, 100, 0, 10, &[1]), false), // index 0
            (chunk(3, INDEX_MAX, 2, 100, 0, 10, &[1]), false), // an index no log reaches
            (chunk(3, 10, 4, 100, 0, 10, &[1]), false), // snapshot term above the message's
            (chunk(3, 10, 2, 100, 0, 10, &[]), false), // no voters
        ];
        for (k, (msg, ok)) in cases.iter().enumerate() {
            assert_eq!(msg.check_well_formed().is_ok(), *ok, "case {k}");
        }
        let mut learner_too = chunk(3, 10, 2, 100, 0, 10, &[1]);
        if let MessageKind::InstallSnapshot(is) = &mut learner_too.kind {
            is.meta.membership.learners.insert(1, String::new());
        }
        assert!(learner_too.check_well_formed().is_err(), "a voter that is also a learner");
    }
}
