//! Log compaction and InstallSnapshot (§7, Figure 13; dissertation ch. 5).

use super::harness::*;
use crate::core::*;

/// Chunks of 4 bytes, at most 2 in flight: a 10-byte snapshot takes three.
fn small_chunks(id: NodeId) -> CoreConfig {
    let mut c = cfg(id);
    c.snapshot_chunk_bytes = 4;
    c.max_snapshot_inflight = 2;
    c
}

fn meta(index: u64, term: u64, n: u64) -> SnapshotMeta {
    SnapshotMeta { index: LogIndex(index), term: Term(term), membership: voters(n) }
}

fn chunk(term: u64, meta: &SnapshotMeta, size: u64, offset: u64, len: usize) -> Message {
    let is = InstallSnapshot { meta: meta.clone(), size, offset, attempt: 0, data: vec![7; len] };
    msg(term, MessageKind::InstallSnapshot(is))
}

fn chunks_to(msgs: &[Envelope], to: NodeId) -> Vec<(u64, u64)> {
    msgs.iter()
        .filter(|e| e.to == to)
        .filter_map(|e| match &e.message.kind {
            MessageKind::InstallSnapshot(is) => Some((is.offset, is.chunk_len(4) as u64)),
            _ => None,
        })
        .collect()
}

fn install_order(ready: &Ready) -> Option<InstallSnapshotOrder> {
    ready.snapshot_work.iter().find_map(|w| match w {
        SnapshotWork::Install(order) => Some(order.clone()),
        SnapshotWork::Chunk(_) => None,
    })
}

fn snapshot_answer(msgs: &[Envelope]) -> InstallSnapshotResponse {
    match msgs {
        [Envelope { message: Message { kind: MessageKind::InstallSnapshotResponse(r), .. }, .. }] => r.clone(),
        other => panic!("expected one InstallSnapshotResponse, got {other:?}"),
    }
}

/// A leader of 3 whose log holds 1..=5 (all committed by node 2), compacted through 4.
fn compacted_leader() -> Raft {
    let mut l = steady_leader(small_chunks(1), 3);
    for k in 0..4 {
        l.propose(vec![k]).unwrap();
    }
    persist(&mut l);
    l.step(2, append_ok(1, 5));
    assert_eq!(l.commit_index(), LogIndex(5));
    let point = l.on_snapshot_saved(SnapshotInfo { meta: meta(4, 1, 3), size: 10 }, 0);
    assert_eq!(point, LogIndex(4));
    persist(&mut l);
    l
}

/// Node 3 rejects entries after 2: its log ends at 1, and the leader's log starts after 4.
fn needs_entry_2(l: &mut Raft) {
    let reject =
        AppendEntriesResponse { success: false, index: LogIndex(2), conflict_term: None, conflict_index: LogIndex(2) };
    l.step(3, msg(1, MessageKind::AppendEntriesResponse(reject)));
}

/// §7: a leader whose log no longer holds the entries a follower needs sends it the
/// snapshot instead, in order, a bounded number of chunks at a time.
#[test]
fn leader_sends_the_snapshot_when_the_follower_needs_compacted_entries() {
    let mut l = compacted_leader();
    needs_entry_2(&mut l);
    let out = sent(&mut l);
    assert_eq!(chunks_to(&out, 3), vec![(0, 4), (4, 4)], "two chunks in flight, in order");
    assert!(appends_to(&out, 3).is_empty(), "no AppendEntries while the snapshot is sent");
    assert_eq!(l.progress(3).unwrap().state, ReplicationState::Snapshot);
    let ack = |next_offset, done| {
        let r = InstallSnapshotResponse { index: LogIndex(4), success: true, next_offset, done, attempt: 0 };
        msg(1, MessageKind::InstallSnapshotResponse(r))
    };
    l.step(3, ack(4, false));
    assert_eq!(chunks_to(&sent(&mut l), 3), vec![(8, 2)], "an ack frees a slot: the last chunk");
    l.step(3, ack(10, true));
    assert_eq!(l.progress(3).unwrap().match_index, LogIndex(4), "the snapshot's index matches");
    let out = sent(&mut l);
    let ae = appends_to(&out, 3);
    assert_eq!(ae[0].prev_log_index, LogIndex(4), "then the log from the snapshot on");
}

/// Chunks lost in flight: after an election timeout with no answer the leader resumes from
/// the last byte the follower acknowledged, in a new attempt; a refusal of the current
/// attempt moves it to where the follower is, while a refusal of an older attempt (an
/// answer to a duplicate) is ignored, so duplicates cannot multiply on a slow link.
#[test]
fn a_lost_chunk_is_resent_from_the_last_acknowledged_byte() {
    let mut l = compacted_leader();
    needs_entry_2(&mut l);
    assert_eq!(chunks_to(&sent(&mut l), 3).len(), 2);
    let c = cfg(1);
    for _ in 0..c.election_ticks - c.heartbeat_ticks {
        l.tick();
    }
    assert!(chunks_to(&sent(&mut l), 3).is_empty(), "a slow link is not a lost chunk");
    for _ in 0..2 * c.heartbeat_ticks {
        l.tick();
    }
    assert_eq!(chunks_to(&sent(&mut l), 3), vec![(0, 4), (4, 4)], "resent from 0 after an election timeout");
    let refusal = |attempt| {
        let r = InstallSnapshotResponse { index: LogIndex(4), success: false, next_offset: 8, done: false, attempt };
        msg(1, MessageKind::InstallSnapshotResponse(r))
    };
    l.step(3, refusal(0));
    assert!(chunks_to(&sent(&mut l), 3).is_empty(), "a refusal of the first attempt is stale");
    l.step(3, refusal(1));
    assert_eq!(chunks_to(&sent(&mut l), 3), vec![(8, 2)], "the follower holds 8 bytes: resume there");
}

/// Figure 13: chunks are taken only in order; the last one replaces a log that does not
/// hold the snapshot's last entry, and the snapshot's configuration and index become the
/// server's.
#[test]
fn follower_takes_chunks_in_order_and_installs_with_the_last() {
    let mut f = restarted(small_chunks(2), 3, 1, &[1, 1]);
    let m = meta(6, 2, 3);
    f.step(1, chunk(2, &m, 10, 4, 4));
    let r = snapshot_answer(&sent(&mut f));
    assert_eq!((r.success, r.next_offset), (false, 0), "a chunk out of order is refused");
    f.step(1, chunk(2, &m, 10, 0, 4));
    let ready = persist(&mut f);
    assert_eq!(snapshot_answer(&ready.messages).next_offset, 4);
    assert!(matches!(ready.snapshot_work[..], [SnapshotWork::Chunk(_)]));
    f.step(1, chunk(2, &m, 10, 4, 4));
    f.step(1, chunk(2, &m, 10, 8, 2));
    let ready = persist(&mut f);
    let answers: Vec<_> = ready.messages.iter().map(|e| e.message.kind.clone()).collect();
    assert!(matches!(answers.last(), Some(MessageKind::InstallSnapshotResponse(r)) if r.done));
    let order = install_order(&ready).expect("the last chunk installs");
    assert!(!order.keep_log_after, "the log does not hold entry 6 of term 2");
    assert_eq!(order.info.size, 10);
    assert_eq!((f.log().snapshot_index(), f.log().last_index()), (LogIndex(6), LogIndex(6)));
    assert_eq!(f.commit_index(), LogIndex(6));
    assert_eq!(ready.log_changed_from, Some(LogIndex(7)), "storage drops whatever follows");
    assert_eq!(f.snapshot().map(|s| s.meta.index), Some(LogIndex(6)));
}

/// Figure 13, step 6: if the log holds the snapshot's last entry with its term, the
/// entries after it stay (they are the leader's, by log matching).
#[test]
fn a_log_holding_the_snapshot_point_keeps_what_follows() {
    let mut f = restarted(small_chunks(2), 3, 1, &[1, 1, 1, 1, 1]);
    f.step(1, chunk(1, &meta(3, 1, 3), 2, 0, 2));
    let ready = persist(&mut f);
    assert!(install_order(&ready).expect("installed").keep_log_after);
    assert_eq!((f.log().snapshot_index(), f.log().last_index()), (LogIndex(3), LogIndex(5)));
    assert_eq!(f.commit_index(), LogIndex(3));
    assert_eq!(ready.log_changed_from, None, "nothing after the snapshot changed");
}

/// A snapshot no newer than what the follower committed is of no use: it says it holds it.
#[test]
fn a_snapshot_the_follower_already_committed_is_answered_done() {
    let mut f = restarted(small_chunks(2), 3, 1, &[1, 1, 1]);
    f.step(1, heartbeat(1, 3));
    persist(&mut f);
    assert_eq!(f.commit_index(), LogIndex(3));
    f.step(1, chunk(1, &meta(2, 1, 3), 4, 0, 4));
    let ready = persist(&mut f);
    assert!(snapshot_answer(&ready.messages).done);
    assert!(ready.snapshot_work.is_empty());
    assert_eq!(f.log().last_index(), LogIndex(3));
}

/// §7: compaction keeps a trailing window of entries, and the configuration in force at
/// the new start of the log is kept with it (its entry is gone).
#[test]
fn compaction_keeps_a_window_and_the_configuration_at_its_start() {
    let mut l = steady_leader(small_chunks(1), 3);
    l.add_server(4, "n4".into()).unwrap(); // entry 2: a configuration
    for k in 0..4 {
        l.propose(vec![k]).unwrap(); // entries 3..=6
    }
    persist(&mut l);
    l.step(2, append_ok(1, 6));
    assert_eq!(l.commit_index(), LogIndex(6));
    let mut m = meta(6, 1, 3);
    m.membership = l.membership_at(LogIndex(6));
    assert!(m.membership.learners.contains_key(&4), "the configuration at 6 has the learner");
    assert_eq!(l.membership_at(LogIndex(1)), voters(3), "and the one at 1 does not");
    let point = l.on_snapshot_saved(SnapshotInfo { meta: m, size: 1 }, 2);
    assert_eq!(point, LogIndex(4), "two entries are kept before the snapshot's index");
    assert_eq!(l.log().snapshot_index(), LogIndex(4));
    assert!(l.base_membership().learners.contains_key(&4));
    assert_eq!(
        l.on_snapshot_saved(SnapshotInfo { meta: meta(5, 1, 3), size: 1 }, 0),
        LogIndex(4),
        "an older one is ignored"
    );
}

/// A leader says it is sending a snapshot while a follower is taking it (the replica then
/// holds back a newer snapshot, which would restart the transfer), and not once the
/// follower has it or fell silent for an election timeout.
#[test]
fn a_transfer_under_way_is_reported_until_done_or_silent() {
    let mut l = compacted_leader();
    assert!(!l.sending_snapshot());
    needs_entry_2(&mut l);
    persist(&mut l);
    assert!(l.sending_snapshot());
    let c = cfg(1);
    for _ in 0..c.election_ticks + c.heartbeat_ticks {
        l.tick();
    }
    assert!(!l.sending_snapshot(), "a silent follower does not hold compaction back");
    let done = InstallSnapshotResponse { index: LogIndex(4), success: true, next_offset: 10, done: true, attempt: 1 };
    l.step(3, msg(1, MessageKind::InstallSnapshotResponse(done)));
    assert_eq!(l.progress(3).unwrap().state, ReplicationState::Replicate);
    assert!(!l.sending_snapshot());
}

/// Figure 13, step 6, the other way: a log whose entry at the snapshot's index has another
/// term is not the leader's after it, and goes entirely.
#[test]
fn a_log_with_another_term_at_the_snapshot_point_is_discarded() {
    let mut f = restarted(small_chunks(2), 3, 1, &[1, 1, 1, 1, 1]);
    f.step(1, chunk(2, &meta(3, 2, 3), 2, 0, 2));
    let ready = persist(&mut f);
    assert!(!install_order(&ready).expect("installed").keep_log_after);
    assert_eq!((f.log().snapshot_index(), f.log().last_index()), (LogIndex(3), LogIndex(3)));
    assert_eq!(f.log().term_at(LogIndex(3)), Some(Term(2)));
}

/// An AppendEntries whose previous entry is compacted away is answered with the commit
/// index, not the last index: entries after the commit point may be another leader's, and
/// the leader must not count them as matching.
#[test]
fn an_append_before_the_snapshot_point_is_answered_with_the_commit_index() {
    let mut f = restarted(small_chunks(2), 3, 1, &[1, 1]);
    f.step(1, chunk(1, &meta(5, 1, 3), 2, 0, 2)); // snapshot and commit at 5
    persist(&mut f);
    f.step(1, append(1, (5, 1), entries_from(6, &[1, 1]), 5)); // a term-1 tail at 6..=7
    persist(&mut f);
    assert_eq!(f.log().last_index(), LogIndex(7));
    f.step(3, append(3, (3, 1), entries_from(4, &[1, 1, 3, 3]), 5)); // a term-3 leader, prev 3
    let r = append_answer(&persist(&mut f).messages);
    assert!(r.success);
    assert_eq!(r.index, LogIndex(5), "only the committed prefix is known to match");
}
