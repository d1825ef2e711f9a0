//! The file storage on its own: round trips, group commit, failure rules.

use super::*;
use crate::core::{Payload, Term};

fn entry(term: u64, index: u64) -> Entry {
    Entry { term: Term(term), index: LogIndex(index), payload: Payload::Command(index.to_le_bytes().to_vec().into()) }
}

fn open(dir: &Path) -> io::Result<FileStorage> {
    FileStorage::open(dir, "test", 1, FileOptions::default())
}

#[test]
fn batches_of_one_turn_share_one_sync_and_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = open(dir.path()).unwrap();
    assert_eq!(s.recover().unwrap().log.last_index(), LogIndex(0));
    let hs = HardState { current_term: Term(2), voted_for: Some(1) };
    s.append(Some(hs), Some(LogIndex(1)), &[entry(2, 1), entry(2, 2)]).unwrap();
    s.append(None, Some(LogIndex(3)), &[entry(2, 3)]).unwrap();
    assert_eq!(s.synced(), 0, "nothing is durable before the flush");
    s.flush().unwrap();
    assert_eq!(s.synced(), 2);
    assert_eq!(s.log_syncs(), 1, "one fdatasync for the turn's two batches");
    s.flush().unwrap();
    assert_eq!(s.log_syncs(), 1, "nothing new, no sync");
    // A conflict truncates: entries from 2 on are replaced.
    s.append(None, Some(LogIndex(2)), &[entry(3, 2)]).unwrap();
    s.flush().unwrap();
    drop(s);
    let mut s = open(dir.path()).unwrap();
    let r = s.recover().unwrap();
    assert_eq!(r.hard_state, hs);
    let terms: Vec<u64> = r.log.entries().iter().map(|e| e.term.0).collect();
    assert_eq!(terms, vec![2, 3]);
}

#[test]
fn a_failed_sync_refuses_everything_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let faults = Arc::new(StorageFaults::default());
    let options = FileOptions { faults: Some(faults.clone()), ..FileOptions::default() };
    let mut s = FileStorage::open(dir.path(), "test", 1, options).unwrap();
    s.recover().unwrap();
    s.append(None, Some(LogIndex(1)), &[entry(1, 1)]).unwrap();
    s.flush().unwrap();
    faults.fail_syncs();
    s.append(None, Some(LogIndex(2)), &[entry(1, 2)]).unwrap();
    assert!(s.flush().is_err());
    assert_eq!(s.synced(), 1, "a failed sync reports nothing new durable");
    // Never retried and trusted (fsyncgate): everything after fails, even with a good disk.
    assert!(s.append(None, Some(LogIndex(3)), &[entry(1, 3)]).is_err());
    assert!(s.flush().is_err());
    assert_eq!(s.synced(), 1);
}

#[test]
fn segments_roll_over_and_each_starts_with_the_hard_state() {
    let dir = tempfile::tempdir().unwrap();
    let options = FileOptions { segment_bytes: 256, ..FileOptions::default() };
    let mut s = FileStorage::open(dir.path(), "test", 1, options.clone()).unwrap();
    s.recover().unwrap();
    let hs = HardState { current_term: Term(1), voted_for: Some(1) };
    s.append(Some(hs), None, &[]).unwrap();
    for i in 1..=40 {
        s.append(None, Some(LogIndex(i)), &[entry(1, i)]).unwrap();
        s.flush().unwrap();
    }
    drop(s);
    let segments = segment::list(dir.path()).unwrap();
    assert!(segments.len() > 3, "{segments:?}");
    // Drop the first segments: the hard state still comes back from the later ones' heads.
    let later = segments.last().unwrap();
    let bytes = std::fs::read(&later.1).unwrap();
    let scanned = segment::scan(&later.1, &bytes, true).unwrap();
    assert_eq!(scanned.records[0].1.hard_state, Some(hs));
    let mut s = FileStorage::open(dir.path(), "test", 1, options).unwrap();
    let r = s.recover().unwrap();
    assert_eq!(r.log.last_index(), LogIndex(40));
    assert_eq!(r.hard_state, hs);
}

#[test]
fn with_sync_after_send_a_flush_writes_and_only_sync_written_makes_durable() {
    let dir = tempfile::tempdir().unwrap();
    let options = FileOptions { sync_after_send: true, ..FileOptions::default() };
    let mut s = FileStorage::open(dir.path(), "test", 1, options).unwrap();
    s.recover().unwrap();
    s.append(None, Some(LogIndex(1)), &[entry(1, 1)]).unwrap();
    s.append(None, Some(LogIndex(2)), &[entry(1, 2)]).unwrap();
    s.flush().unwrap();
    assert_eq!(s.synced(), 0, "written, not yet synced");
    assert!(s.sync_written());
    assert_eq!((s.synced(), s.log_syncs()), (2, 1));
    assert!(!s.sync_written(), "nothing new to sync");
    assert_eq!(s.log_syncs(), 1);
}

#[test]
fn a_segment_left_with_unsynced_writes_is_synced_before_the_next_starts() {
    let dir = tempfile::tempdir().unwrap();
    let options = FileOptions { sync_after_send: true, segment_bytes: 64, ..FileOptions::default() };
    let mut s = FileStorage::open(dir.path(), "test", 1, options).unwrap();
    s.recover().unwrap();
    s.append(None, Some(LogIndex(1)), &[entry(1, 1)]).unwrap();
    s.flush().unwrap();
    s.sync_written();
    // Written, not synced, and the segment is full: the next flush moves to a new one.
    s.append(None, Some(LogIndex(2)), &[entry(1, 2)]).unwrap();
    s.flush().unwrap();
    assert!(s.has_unsynced_writes());
    let syncs = s.log_syncs();
    s.append(None, Some(LogIndex(3)), &[entry(1, 3)]).unwrap();
    s.flush().unwrap();
    assert_eq!(s.log_syncs(), syncs + 1, "the old segment's writes were synced before moving on");
    assert!(s.sync_written());
    assert_eq!(s.synced(), 3);
}
