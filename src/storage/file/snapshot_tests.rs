//! Snapshots in the file storage: saving, reading, receiving and installing them,
//! compaction, and what recovery makes of each after a crash.

use std::io::Read;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::*;
use crate::core::{Log, Membership, Payload, Term};

fn entry(term: u64, index: u64) -> Entry {
    Entry { term: Term(term), index: LogIndex(index), payload: Payload::Command(index.to_le_bytes().to_vec().into()) }
}

fn hard(term: u64, vote: u64) -> HardState {
    HardState { current_term: Term(term), voted_for: Some(vote) }
}

fn meta(index: u64, term: u64) -> SnapshotMeta {
    SnapshotMeta { index: LogIndex(index), term: Term(term), membership: Membership::with_voters([(1, "a".into())]) }
}

/// Segments of a few records each, so a short log spans many.
fn small_segments() -> FileOptions {
    FileOptions { segment_bytes: 256, ..FileOptions::default() }
}

fn open_with(dir: &Path, options: FileOptions) -> FileStorage {
    FileStorage::open(dir, "test", 1, options).unwrap()
}

/// Opens and recovers.
fn reopen(dir: &Path, options: FileOptions) -> (FileStorage, Recovered) {
    let mut s = open_with(dir, options);
    let r = s.recover().unwrap();
    (s, r)
}

/// Byte `k` of the snapshot data numbered `seed`.
fn byte_at(seed: u64, k: u64) -> u8 {
    (k.wrapping_mul(31).wrapping_add(seed.wrapping_mul(97)) % 251) as u8
}

fn bytes_of(seed: u64, len: u64) -> Vec<u8> {
    (0..len).map(|k| byte_at(seed, k)).collect()
}

/// A snapshot of `len` bytes produced 64 KiB at a time, as a large state streams out.
fn streamed(seed: u64, len: u64) -> Snapshot {
    Snapshot::new(move |w| {
        let mut buf = vec![0u8; 64 << 10];
        let mut k = 0;
        while k < len {
            let n = (len - k).min(buf.len() as u64) as usize;
            buf[..n].iter_mut().enumerate().for_each(|(j, b)| *b = byte_at(seed, k + j as u64));
            w.write_all(&buf[..n])?;
            k += n as u64;
        }
        Ok(())
    })
}

/// Appends entries `from..=to` of `term`, one batch each, flushing after each.
fn append_range(s: &mut FileStorage, from: u64, to: u64, term: u64) {
    for i in from..=to {
        s.append(None, Some(LogIndex(i)), &[entry(term, i)]).unwrap();
        s.flush().unwrap();
    }
}

/// Starts a save and waits for its end.
fn save(s: &mut FileStorage, meta: SnapshotMeta, snapshot: Snapshot) -> io::Result<SnapshotInfo> {
    s.save_snapshot(meta, snapshot)?;
    wait_saved(s)
}

fn wait_saved(s: &mut FileStorage) -> io::Result<SnapshotInfo> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Some(result) = s.poll_snapshot() {
            return result;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    panic!("the snapshot save did not finish");
}

/// Receives `data` as the snapshot `meta`, in chunks of `chunk` bytes.
fn receive(s: &mut FileStorage, meta: &SnapshotMeta, data: &[u8], chunk: usize) {
    for (k, piece) in data.chunks(chunk).enumerate() {
        let c = SnapshotChunk { meta: meta.clone(), offset: (k * chunk) as u64, data: piece.to_vec() };
        s.receive_snapshot(&c).unwrap();
    }
}

fn order(meta: SnapshotMeta, size: u64, keep_log_after: bool) -> InstallSnapshotOrder {
    InstallSnapshotOrder { info: SnapshotInfo { meta, size }, keep_log_after }
}

fn read_all(s: &mut FileStorage) -> Vec<u8> {
    let mut out = Vec::new();
    s.open_snapshot().unwrap().read_to_end(&mut out).unwrap();
    out
}

fn indexes(log: &Log) -> Vec<u64> {
    log.entries().iter().map(|e| e.index.0).collect()
}

fn range(from: u64, to: u64) -> Vec<u64> {
    (from..=to).collect()
}

/// The names in `dir`, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    names.sort();
    names
}

fn snapshot_names(dir: &Path) -> Vec<String> {
    names(dir).into_iter().filter(|n| n.starts_with("snapshot") || n.ends_with(".tmp")).collect()
}

fn flip(path: &Path, offset: u64) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[offset as usize] ^= 0x10;
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn a_saved_snapshot_comes_back_at_start_with_the_log_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = open_with(dir.path(), FileOptions::default());
    s.recover().unwrap();
    s.append(Some(hard(2, 1)), None, &[]).unwrap();
    append_range(&mut s, 1, 20, 2);
    let info = save(&mut s, meta(10, 2), streamed(1, 100_000)).unwrap();
    assert_eq!(info, SnapshotInfo { meta: meta(10, 2), size: 100_000 });
    drop(s);
    let (mut s, r) = reopen(dir.path(), FileOptions::default());
    assert_eq!(r.snapshot, Some(info));
    assert_eq!(r.hard_state, hard(2, 1));
    assert_eq!((r.log.snapshot_index(), r.log.last_index()), (LogIndex(10), LogIndex(20)));
    assert_eq!(indexes(&r.log), range(11, 20), "entries the snapshot covers are not returned");
    assert_eq!(read_all(&mut s), bytes_of(1, 100_000));
    assert_eq!(snapshot_names(dir.path()), vec![snapshot::name(LogIndex(10))]);
}

#[test]
fn a_large_snapshot_reads_back_byte_for_byte_by_chunk_and_by_stream() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = open_with(dir.path(), FileOptions::default());
    s.recover().unwrap();
    append_range(&mut s, 1, 5, 1);
    let len = (5 << 20) + 12_345;
    save(&mut s, meta(5, 1), streamed(3, len)).unwrap();
    let expected = bytes_of(3, len);
    for _ in 0..2 {
        assert_eq!(read_all(&mut s), expected, "the stream ends where the data does");
        for (offset, n) in [(0, 1000), (1 << 20, 4096), (len - 777, 777), (len, 0)] {
            let mut buf = vec![0u8; n];
            s.read_snapshot(LogIndex(5), offset, &mut buf).unwrap();
            assert_eq!(buf, expected[offset as usize..offset as usize + n], "at {offset}");
        }
        let mut past = vec![0u8; 10];
        let e = s.read_snapshot(LogIndex(5), len - 5, &mut past).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof, "the trailer is not data");
        assert!(s.read_snapshot(LogIndex(4), 0, &mut past).is_err(), "not the current snapshot");
        drop(s);
        s = reopen(dir.path(), FileOptions::default()).0;
    }
}

#[test]
fn an_install_that_drops_the_log_keeps_the_hard_state_and_takes_appends_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = open_with(dir.path(), small_segments());
    s.recover().unwrap();
    s.append(Some(hard(3, 2)), None, &[]).unwrap();
    append_range(&mut s, 1, 60, 1); // from 50 on, another history than the leader's
    assert!(segment::list(dir.path()).unwrap().len() > 3);
    // The vote of term 5, handed over in the same turn as the install, before it.
    s.append(Some(hard(5, 3)), None, &[]).unwrap();
    let data = bytes_of(9, 300_000);
    receive(&mut s, &meta(50, 4), &data, 64 << 10);
    s.install_snapshot(&order(meta(50, 4), data.len() as u64, false)).unwrap();
    assert_eq!(s.synced(), 62, "the 62 batches handed over before the install are durable, and no more");
    assert_eq!(segment::list(dir.path()).unwrap().len(), 1, "one fresh segment replaces the log");
    assert_eq!(read_all(&mut s), data);
    // The core's next batch starts right after the snapshot.
    s.append(None, Some(LogIndex(51)), &[entry(5, 51), entry(5, 52)]).unwrap();
    s.flush().unwrap();
    drop(s);
    let (mut s, r) = reopen(dir.path(), small_segments());
    assert_eq!(r.hard_state, hard(5, 3), "the vote survives the log it was in");
    assert_eq!(r.snapshot.map(|i| i.meta), Some(meta(50, 4)));
    assert_eq!((r.log.snapshot_index(), indexes(&r.log)), (LogIndex(50), range(51, 52)));
    assert_eq!(read_all(&mut s), data);
}

#[test]
fn an_install_that_keeps_the_log_after_it_deletes_only_segments_it_covers() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = open_with(dir.path(), small_segments());
    s.recover().unwrap();
    s.append(Some(hard(2, 1)), None, &[]).unwrap();
    append_range(&mut s, 1, 40, 2);
    let before = segment::list(dir.path()).unwrap().len();
    let data = bytes_of(4, 1000);
    receive(&mut s, &meta(30, 2), &data, 300);
    s.install_snapshot(&order(meta(30, 2), 1000, true)).unwrap();
    let after = segment::list(dir.path()).unwrap().len();
    assert!(after < before && after > 1, "{before} -> {after} segments");
    append_range(&mut s, 41, 45, 3);
    drop(s);
    let (_, r) = reopen(dir.path(), small_segments());
    assert_eq!(r.hard_state, hard(2, 1));
    assert_eq!((r.log.snapshot_index(), indexes(&r.log)), (LogIndex(30), range(31, 45)));
}

/// The three steps of an install, cut by a crash after each; each state recovers, and
/// appends after the snapshot survive the next start.
#[test]
fn an_install_cut_by_a_crash_after_any_step_recovers_a_consistent_state() {
    for steps in 1..=4 {
        let dir = tempfile::tempdir().unwrap();
        let mut s = open_with(dir.path(), small_segments());
        s.recover().unwrap();
        s.append(Some(hard(3, 2)), None, &[]).unwrap();
        append_range(&mut s, 1, 60, 1); // entries 50..60 are another history than the leader's
        let data = bytes_of(5, 5000);
        receive(&mut s, &meta(50, 4), &data, 1000);
        let order = order(meta(50, 4), 5000, false);
        let receiving = s.receiving.take().unwrap();
        s.install_prepare(&order).unwrap();
        if steps >= 2 {
            s.install_publish(receiving, &order.info).unwrap();
        }
        if steps >= 3 {
            s.start_fresh_log(LogIndex(50)).unwrap();
            s.delete_oldest(2).unwrap(); // some of the old segments are gone, the newest stay
        }
        if steps >= 4 {
            s.delete_oldest(s.closed.len()).unwrap();
        }
        drop(s);
        let (mut s, r) = reopen(dir.path(), small_segments());
        assert_eq!(r.hard_state, hard(3, 2), "steps {steps}");
        if steps == 1 {
            // The old state, with a prefix of the old log.
            assert_eq!((r.snapshot, indexes(&r.log)), (None, range(1, 49)), "steps {steps}");
            continue;
        }
        assert_eq!((r.log.snapshot_index(), r.log.last_index()), (LogIndex(50), LogIndex(50)), "steps {steps}");
        assert_eq!(read_all(&mut s), data);
        s.append(None, Some(LogIndex(51)), &[entry(4, 51), entry(4, 52)]).unwrap();
        s.flush().unwrap();
        drop(s);
        let (_, r) = reopen(dir.path(), small_segments());
        assert_eq!(indexes(&r.log), range(51, 52), "steps {steps}: appends after the snapshot stay");
        assert_eq!(r.hard_state, hard(3, 2));
    }
}

#[test]
fn a_half_received_snapshot_never_replaces_the_current_one() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = open_with(dir.path(), FileOptions::default());
    s.recover().unwrap();
    append_range(&mut s, 1, 10, 1);
    save(&mut s, meta(10, 1), streamed(1, 4000)).unwrap();
    let data = bytes_of(2, 4000);
    receive(&mut s, &meta(50, 2), &data[..3000], 1000);
    let skipped = SnapshotChunk { meta: meta(50, 2), offset: 3500, data: vec![0; 500] };
    assert!(s.receive_snapshot(&skipped).is_err(), "chunks come in order");
    assert!(s.install_snapshot(&order(meta(50, 2), 4000, false)).is_err(), "incomplete");
    assert_eq!(read_all(&mut s), bytes_of(1, 4000));
    // A crash in the middle of a transfer leaves `incoming.tmp`.
    receive(&mut s, &meta(50, 2), &data[..2000], 1000);
    drop(s);
    assert!(names(dir.path()).contains(&"incoming.tmp".to_string()));
    let (mut s, r) = reopen(dir.path(), FileOptions::default());
    assert_eq!(r.snapshot.map(|i| i.meta.index), Some(LogIndex(10)));
    assert_eq!(indexes(&r.log), Vec::<u64>::new());
    assert_eq!(read_all(&mut s), bytes_of(1, 4000));
    assert_eq!(snapshot_names(dir.path()), vec![snapshot::name(LogIndex(10))], "the temporary is deleted");
    // A transfer that starts over replaces what an earlier one left, even if shorter.
    receive(&mut s, &meta(60, 2), &data, 1000);
    let shorter = bytes_of(3, 1500);
    receive(&mut s, &meta(60, 2), &shorter, 1000);
    s.install_snapshot(&order(meta(60, 2), 1500, false)).unwrap();
    drop(s);
    let (mut s, r) = reopen(dir.path(), FileOptions::default());
    assert_eq!(r.snapshot.map(|i| i.meta.index), Some(LogIndex(60)));
    assert_eq!(read_all(&mut s), shorter);
}

#[test]
fn a_save_cut_by_a_crash_or_an_error_leaves_the_current_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = open_with(dir.path(), FileOptions::default());
    s.recover().unwrap();
    append_range(&mut s, 1, 20, 1);
    save(&mut s, meta(10, 1), streamed(1, 4000)).unwrap();
    // The state machine's writer fails half-way.
    let failing = Snapshot::new(|w| {
        w.write_all(&[7u8; 100_000])?;
        Err(io::Error::other("the state machine gave up"))
    });
    assert!(save(&mut s, meta(20, 1), failing).is_err());
    assert_eq!(snapshot_names(dir.path()), vec![snapshot::name(LogIndex(10))]);
    assert_eq!(read_all(&mut s), bytes_of(1, 4000));
    append_range(&mut s, 21, 21, 1); // the log storage goes on
    // A crash in the middle of a save leaves `snapshot.tmp`: here, a storage closed while
    // its save runs, which stops it.
    let written = Arc::new(AtomicU64::new(0));
    let counter = written.clone();
    let endless = Snapshot::new(move |w| {
        for _ in 0..1024 {
            w.write_all(&[1u8; 64 << 10])?;
            counter.fetch_add(64 << 10, Ordering::Relaxed);
        }
        Ok(())
    });
    s.save_snapshot(meta(21, 1), endless).unwrap();
    while written.load(Ordering::Relaxed) == 0 {
        std::thread::yield_now();
    }
    drop(s);
    assert!(written.load(Ordering::Relaxed) < 64 << 20, "closing the storage stopped the save");
    std::fs::write(dir.path().join("snapshot.tmp"), [0u8; 5000]).unwrap(); // as a crash leaves it
    let (mut s, r) = reopen(dir.path(), FileOptions::default());
    assert_eq!(r.snapshot.map(|i| i.meta.index), Some(LogIndex(10)));
    assert_eq!(indexes(&r.log), range(11, 21));
    assert_eq!(read_all(&mut s), bytes_of(1, 4000));
    assert_eq!(snapshot_names(dir.path()), vec![snapshot::name(LogIndex(10))], "the temporary is deleted");
}

#[test]
fn a_failed_snapshot_write_or_sync_is_reported_and_does_not_fail_the_log() {
    for inject in [StorageFaults::fail_syncs, StorageFaults::fail_writes] {
        let dir = tempfile::tempdir().unwrap();
        let faults = Arc::new(StorageFaults::default());
        let options = FileOptions { faults: Some(faults.clone()), ..FileOptions::default() };
        let mut s = open_with(dir.path(), options);
        s.recover().unwrap();
        append_range(&mut s, 1, 20, 1);
        save(&mut s, meta(10, 1), streamed(1, 4000)).unwrap();
        inject(&faults);
        assert!(save(&mut s, meta(20, 1), streamed(2, 4000)).is_err());
        assert!(s.failed.is_none(), "nothing acknowledged rests on a snapshot being saved");
        assert_eq!(snapshot_names(dir.path()), vec![snapshot::name(LogIndex(10))]);
        assert_eq!(read_all(&mut s), bytes_of(1, 4000));
        s.options.faults = None; // the disk is back
        append_range(&mut s, 21, 22, 1);
        drop(s);
        let (_, r) = reopen(dir.path(), FileOptions::default());
        assert_eq!(r.snapshot.map(|i| i.meta.index), Some(LogIndex(10)));
        assert_eq!(indexes(&r.log), range(11, 22));
    }
}

#[test]
fn a_failed_write_or_sync_while_installing_fails_the_storage() {
    for inject in [StorageFaults::fail_syncs, StorageFaults::fail_writes] {
        let dir = tempfile::tempdir().unwrap();
        let faults = Arc::new(StorageFaults::default());
        let options = FileOptions { faults: Some(faults.clone()), ..FileOptions::default() };
        let mut s = open_with(dir.path(), options);
        s.recover().unwrap();
        append_range(&mut s, 1, 20, 1);
        receive(&mut s, &meta(30, 2), &bytes_of(3, 3000), 1000);
        inject(&faults);
        assert!(s.install_snapshot(&order(meta(30, 2), 3000, false)).is_err());
        assert!(s.append(None, Some(LogIndex(31)), &[entry(2, 31)]).is_err(), "refused from now on");
        assert!(s.flush().is_err());
        drop(s);
        let (_, r) = reopen(dir.path(), FileOptions::default());
        assert_eq!((r.snapshot, indexes(&r.log)), (None, range(1, 20)), "the old state");
    }
}

/// Two snapshot files, as a crash between a save's rename and the deletion of the older
/// one leaves; the newer one is then damaged at `offset` (from its end, if negative).
fn two_snapshots_newest_damaged(dir: &Path, options: &FileOptions, offset: i64) -> PathBuf {
    let mut s = open_with(dir, options.clone());
    s.recover().unwrap();
    s.append(Some(hard(2, 1)), None, &[]).unwrap();
    append_range(&mut s, 1, 30, 2);
    save(&mut s, meta(10, 2), streamed(1, 4000)).unwrap();
    let older = dir.join(snapshot::name(LogIndex(10)));
    let kept = std::fs::read(&older).unwrap();
    save(&mut s, meta(20, 2), streamed(2, 4000)).unwrap();
    s.compact(LogIndex(20)).unwrap();
    drop(s);
    std::fs::write(&older, kept).unwrap();
    let newest = dir.join(snapshot::name(LogIndex(20)));
    let len = std::fs::metadata(&newest).unwrap().len() as i64;
    flip(&newest, if offset < 0 { len + offset } else { offset } as u64);
    newest
}

#[test]
fn a_corrupt_newest_snapshot_falls_back_to_an_older_one_the_log_still_reaches() {
    // A byte of the data, of the trailer, of the footer's length, checksum, magic.
    for offset in [0, 3999, 4005, -16, -13, -9, -1] {
        let dir = tempfile::tempdir().unwrap();
        let newest = two_snapshots_newest_damaged(dir.path(), &FileOptions::default(), offset);
        let (mut s, r) = reopen(dir.path(), FileOptions::default());
        assert_eq!(r.snapshot.map(|i| i.meta.index), Some(LogIndex(10)), "offset {offset}");
        assert_eq!(indexes(&r.log), range(11, 30));
        assert_eq!(r.hard_state, hard(2, 1));
        assert_eq!(read_all(&mut s), bytes_of(1, 4000));
        let aside = format!("{}.corrupt", newest.file_name().unwrap().to_str().unwrap());
        assert!(names(dir.path()).contains(&aside), "set aside, not read again");
    }
}

#[test]
fn a_corrupt_newest_snapshot_is_a_clear_error_when_the_log_no_longer_reaches_back() {
    let dir = tempfile::tempdir().unwrap();
    let newest = two_snapshots_newest_damaged(dir.path(), &small_segments(), 100);
    let before = names(dir.path());
    let e = FileStorage::open(dir.path(), "test", 1, small_segments()).unwrap_err();
    let message = e.to_string();
    assert_eq!(e.kind(), io::ErrorKind::InvalidData);
    assert!(message.contains(newest.to_str().unwrap()), "{message}");
    assert!(message.contains("corrupt snapshot at offset 0"), "{message}");
    assert!(message.contains("snapshot ends at 10"), "{message}");
    assert_eq!(names(dir.path()), before, "a failed start changes nothing on disk");
}

#[test]
fn a_corrupt_only_snapshot_is_passed_over_if_the_log_is_whole_and_an_error_if_not() {
    for compacted in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let mut s = open_with(dir.path(), small_segments());
        s.recover().unwrap();
        append_range(&mut s, 1, 30, 2);
        save(&mut s, meta(20, 2), streamed(2, 4000)).unwrap();
        if compacted {
            s.compact(LogIndex(20)).unwrap();
        }
        drop(s);
        flip(&dir.path().join(snapshot::name(LogIndex(20))), 10);
        match FileStorage::open(dir.path(), "test", 1, small_segments()) {
            Ok(mut s) if !compacted => {
                let r = s.recover().unwrap();
                assert_eq!((r.snapshot, indexes(&r.log)), (None, range(1, 30)));
            }
            Err(e) if compacted => {
                assert!(e.to_string().contains("no snapshot of the entries before it"), "{e}");
                assert!(e.to_string().contains(&snapshot::name(LogIndex(20))), "{e}");
            }
            other => panic!("compacted {compacted}: {other:?}"),
        }
    }
}

#[test]
fn compaction_deletes_covered_segments_and_keeps_the_hard_state_and_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let options = FileOptions { sync_after_send: true, ..small_segments() };
    let mut s = open_with(dir.path(), options.clone());
    s.recover().unwrap();
    s.append(Some(hard(1, 1)), None, &[]).unwrap();
    append_range(&mut s, 1, 50, 1);
    s.append(Some(hard(4, 2)), None, &[]).unwrap();
    append_range(&mut s, 51, 100, 4);
    s.sync_written();
    save(&mut s, meta(80, 4), streamed(8, 2000)).unwrap();
    // Written but not yet synced: compaction makes the active segment durable first.
    s.append(None, Some(LogIndex(101)), &[entry(4, 101)]).unwrap();
    s.flush().unwrap();
    assert!(s.has_unsynced_writes());
    let before = segment::list(dir.path()).unwrap().len();
    assert!(s.compact(LogIndex(90)).is_err(), "the snapshot does not cover 90");
    assert_eq!(segment::list(dir.path()).unwrap().len(), before);
    s.compact(LogIndex(80)).unwrap();
    assert!(!s.has_unsynced_writes(), "the active segment is durable before older ones go");
    let after = segment::list(dir.path()).unwrap();
    assert!(after.len() < before / 2, "{before} -> {} segments", after.len());
    assert_eq!(s.closed.len() + 1, after.len(), "one entry per segment file");
    let first = std::fs::read(&after[0].1).unwrap();
    let scanned = segment::scan(&after[0].1, &first, false).unwrap();
    let first_entry = scanned.records.iter().find_map(|(_, r)| r.entries.first()).unwrap();
    assert!(first_entry.index <= LogIndex(81), "no segment with an entry after 80 was deleted");
    drop(s);
    let (_, r) = reopen(dir.path(), options);
    assert_eq!(r.hard_state, hard(4, 2));
    assert_eq!((r.log.snapshot_index(), indexes(&r.log)), (LogIndex(80), range(81, 101)));
}

#[test]
fn a_log_that_contradicts_its_snapshot_is_dropped_after_it_for_good() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = open_with(dir.path(), FileOptions::default());
    s.recover().unwrap();
    append_range(&mut s, 1, 10, 1);
    // Not what an install leaves, but recovery must cope: the log's entry 5 has term 1.
    save(&mut s, meta(5, 2), streamed(1, 100)).unwrap();
    drop(s);
    let (mut s, r) = reopen(dir.path(), FileOptions::default());
    assert_eq!((r.log.snapshot_index(), indexes(&r.log)), (LogIndex(5), vec![]));
    s.append(None, Some(LogIndex(6)), &[entry(2, 6), entry(2, 7)]).unwrap();
    s.flush().unwrap();
    drop(s);
    let (_, r) = reopen(dir.path(), FileOptions::default());
    assert_eq!(indexes(&r.log), range(6, 7), "what was appended after the snapshot stays");
}

#[test]
fn one_save_at_a_time_and_a_save_overtaken_by_an_install_is_discarded() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = open_with(dir.path(), FileOptions::default());
    s.recover().unwrap();
    append_range(&mut s, 1, 10, 1);
    let (go, wait) = std::sync::mpsc::channel::<()>();
    let slow = Snapshot::new(move |w| {
        wait.recv().map_err(io::Error::other)?;
        w.write_all(&[1u8; 1000])
    });
    s.save_snapshot(meta(8, 1), slow).unwrap();
    assert!(s.save_snapshot(meta(9, 1), streamed(1, 10)).is_err(), "one save at a time");
    assert!(s.poll_snapshot().is_none(), "still running");
    let data = bytes_of(6, 2000);
    receive(&mut s, &meta(40, 2), &data, 1000);
    s.install_snapshot(&order(meta(40, 2), 2000, false)).unwrap();
    go.send(()).unwrap();
    let saved = wait_saved(&mut s).unwrap();
    assert_eq!(saved.meta.index, LogIndex(8));
    assert_eq!(read_all(&mut s), data, "the installed snapshot stays current");
    assert_eq!(snapshot_names(dir.path()), vec![snapshot::name(LogIndex(40))]);
}

#[test]
fn a_truncation_reaching_before_the_first_segment_left_by_compaction_replays() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = open_with(dir.path(), FileOptions::default());
    s.recover().unwrap();
    append_range(&mut s, 1, 27, 1);
    s.options.segment_bytes = 0; // the next flush starts a segment, then the rest stays in it
    s.append(None, Some(LogIndex(28)), &[entry(1, 28), entry(1, 29)]).unwrap();
    s.flush().unwrap();
    s.options.segment_bytes = SEGMENT_BYTES_DEFAULT;
    // A new leader overwrites from 25: a record reaching back into the first segment.
    let rewritten: Vec<Entry> = (25..=30).map(|i| entry(2, i)).collect();
    s.append(None, Some(LogIndex(25)), &rewritten).unwrap();
    s.flush().unwrap();
    save(&mut s, meta(27, 2), streamed(1, 100)).unwrap();
    s.compact(LogIndex(27)).unwrap();
    assert_eq!(segment::list(dir.path()).unwrap().len(), 1, "the first segment is covered");
    drop(s);
    let (_, r) = reopen(dir.path(), FileOptions::default());
    assert_eq!((r.log.snapshot_index(), indexes(&r.log)), (LogIndex(27), range(28, 30)));
    assert!(r.log.entries().iter().all(|e| e.term == Term(2)));
}
