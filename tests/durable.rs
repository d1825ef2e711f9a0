//! Durable mode (`Config::data_dir`): restarts on the same ids and directories keep every
//! acknowledged write; torn and corrupt logs are recovered or refused by the rules; the
//! directory's lock and identity; storage failures refuse writes and lose nothing.

mod support;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use quorate::core::{Entry, HardState, LogIndex, Payload, Term};
use quorate::storage::{FileOptions, FileStorage, Storage, StorageFaults};
use quorate::{Error, Node, NodeId};
use support::cluster::{Cmd, Recorder, listeners, test_config, wait_until};
use support::durable::DurableCluster;

/// The linearizable view of node `id`, through a fresh read on the leader.
fn applied_on(dc: &DurableCluster, id: u64) -> Vec<u64> {
    dc.cluster.client(id).read(|m: &Recorder| m.applied.clone()).expect("read on the leader")
}

#[test]
fn a_three_node_cluster_restarted_on_its_dirs_keeps_every_acknowledged_write_in_order() {
    let mut dc = DurableCluster::start(3);
    let leader = dc.cluster.stable_leader();
    let mut acked = Vec::new();
    dc.cluster.write_and_check(leader, 1..=30, &mut acked);

    // One node at a time (the leader first): each comes back and is let in by its peers,
    // which saw its earlier incarnation (a durable restart keeps it).
    for id in [leader, leader % 3 + 1] {
        dc.cluster.stop(id);
        let new = dc.cluster.leader_among(&dc.cluster.nodes.keys().copied().collect::<Vec<_>>());
        let next = acked.last().unwrap() + 1;
        dc.cluster.write_and_check(new, next..=next + 9, &mut acked);
        dc.restart(id);
        dc.cluster.await_applied_everywhere(&acked);
        let refused = dc.cluster.client(id).status().unwrap().refused;
        assert_eq!(refused, None, "node {id} was refused after a durable restart");
    }

    // The whole cluster at once.
    for id in 1..=3 {
        dc.cluster.stop(id);
    }
    for id in 1..=3 {
        dc.restart(id);
    }
    let leader = dc.cluster.stable_leader();
    assert_eq!(applied_on(&dc, leader), acked, "a restart lost or reordered acknowledged writes");
    let next = acked.last().unwrap() + 1;
    dc.cluster.write_and_check(leader, next..=next + 9, &mut acked);
    dc.cluster.await_applied_everywhere(&acked);
}

#[test]
fn a_single_durable_node_restarts_with_its_state() {
    let mut dc = DurableCluster::start(1);
    let client = dc.cluster.client(1);
    client.await_leader(Duration::from_secs(10)).unwrap();
    let mut acked = Vec::new();
    dc.cluster.write_and_check(1, 1..=20, &mut acked);
    let term = client.status().unwrap().term;
    dc.cluster.stop(1);
    dc.restart(1);
    let client = dc.cluster.client(1);
    client.await_leader(Duration::from_secs(10)).unwrap();
    assert!(client.status().unwrap().term > term, "the term (hard state) was forgotten");
    assert_eq!(applied_on(&dc, 1), acked);
    dc.cluster.write_and_check(1, 21..=25, &mut acked);
}

#[test]
fn a_wiped_data_dir_is_refused_by_peers_like_a_restarted_memory_node() {
    let mut dc = DurableCluster::start(3);
    let leader = dc.cluster.stable_leader();
    dc.cluster.client(leader).write(Cmd::Put(1)).unwrap();
    let victim = leader % 3 + 1;
    dc.cluster.stop(victim);
    std::fs::remove_dir_all(dc.dir(victim)).unwrap();
    dc.restart(victim);
    let client = dc.cluster.client(victim);
    wait_until("the wiped node is refused", || client.status().is_ok_and(|s| s.refused.is_some()));
}

#[test]
fn the_lock_refuses_a_second_node_on_the_same_dir() {
    let dc = DurableCluster::start(1);
    let l = listeners(1).pop().unwrap();
    let config = test_config(1, l.local_addr().unwrap()).data_dir(dc.dir(1));
    match Node::start_with_listener(config, l, Recorder::default()) {
        Err(Error::DataDir(why)) => assert!(why.contains("in use"), "{why}"),
        other => panic!("a second node on a locked dir must fail, got {:?}", other.map(|n| n.id())),
    }
}

#[test]
fn another_node_id_or_cluster_id_on_an_existing_dir_is_a_clear_error() {
    let mut dc = DurableCluster::start(1);
    dc.cluster.client(1).await_leader(Duration::from_secs(10)).unwrap();
    dc.cluster.stop(1);
    let cases = [("node id", test_config(2, dc.cluster.addrs[&1])), ("cluster id", dc.config(1).cluster_id("other"))];
    for (what, config) in cases {
        let l = std::net::TcpListener::bind(dc.cluster.addrs[&1]).unwrap();
        match Node::start_with_listener(config.data_dir(dc.dir(1)), l, Recorder::default()) {
            Err(Error::DataDir(why)) => {
                assert!(why.contains("belongs to node 1 of cluster \"quorate\""), "{what}: {why}")
            }
            other => panic!("{what}: opening another's dir must fail, got {:?}", other.map(|n| n.id())),
        }
    }
}

/// Storage failing under a node: the write in flight is indeterminate, every later call
/// gets `StorageFailed`, nothing acknowledged is lost, and the directory reads back.
fn storage_failure(inject: impl Fn(&StorageFaults)) {
    let mut dc = DurableCluster::start(1);
    dc.cluster.stop(1);
    let faults = Arc::new(StorageFaults::default());
    let l = std::net::TcpListener::bind(dc.cluster.addrs[&1]).unwrap();
    let node = Node::start_with_listener(dc.config(1).storage_faults(faults.clone()), l, Recorder::default()).unwrap();
    let client = node.client();
    client.await_leader(Duration::from_secs(10)).unwrap();
    let mut acked = Vec::new();
    for v in 1..=20 {
        client.write(Cmd::Put(v)).unwrap();
        acked.push(v);
    }
    inject(&faults);
    match client.write(Cmd::Put(21)) {
        Err(e) if e.is_indeterminate() => {}
        other => panic!("the write whose sync failed must not be acknowledged, got {other:?}"),
    }
    wait_until("the node stops", || !node.is_running());
    match client.write(Cmd::Put(22)) {
        Err(Error::StorageFailed(why)) => assert!(why.contains("injected"), "{why}"),
        other => panic!("writes after a storage failure must get StorageFailed, got {other:?}"),
    }
    assert!(matches!(client.status(), Err(Error::StorageFailed(_))));
    drop(node);
    dc.restart(1);
    dc.cluster.client(1).await_leader(Duration::from_secs(10)).unwrap();
    let applied = applied_on(&dc, 1);
    assert_eq!(&applied[..acked.len()], acked, "an acknowledged write was lost");
    assert!(applied.len() <= acked.len() + 1 && !applied.contains(&22), "{applied:?}");
}

#[test]
fn a_failed_fsync_stops_the_node_with_storage_failed_and_loses_nothing_acknowledged() {
    storage_failure(StorageFaults::fail_syncs);
}

#[test]
fn a_full_disk_stops_the_node_with_storage_failed_and_leaves_the_dir_readable() {
    storage_failure(StorageFaults::fail_writes);
}

// ---------------------------------------------------------------------------------------
// Snapshots on disk, through whole nodes.

/// Node `id` of `dc`, taking a snapshot every 20 entries and keeping 5 behind it.
fn start_compacting(dc: &mut DurableCluster, id: NodeId, listener: std::net::TcpListener) {
    let config = dc.config(id).snapshot_threshold(20, u64::MAX).snapshot_keep_entries(5);
    let node = Node::start_with_listener(config, listener, Recorder::default()).expect("start node");
    dc.cluster.nodes.insert(id, node);
}

/// The snapshot files in node `id`'s directory.
fn snapshot_files(dc: &DurableCluster, id: NodeId) -> Vec<String> {
    let names = std::fs::read_dir(dc.dir(id)).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap());
    names.filter(|n| n.starts_with("snapshot")).collect()
}

fn snapshot_index(dc: &DurableCluster, id: NodeId) -> u64 {
    dc.cluster.client(id).status().map_or(0, |s| s.snapshot_index)
}

/// Nodes that compact restart from their snapshot files; a follower left behind the
/// leader's compacted log gets the snapshot, installs it on disk, and restarts from it.
#[test]
fn compacting_nodes_restart_from_their_snapshots_and_a_follower_left_behind_installs_one() {
    let mut dc = DurableCluster::start(3);
    for id in 1..=3 {
        dc.cluster.stop(id);
        let listener = std::net::TcpListener::bind(dc.cluster.addrs[&id]).unwrap();
        start_compacting(&mut dc, id, listener);
    }
    let leader = dc.cluster.stable_leader();
    let mut acked = Vec::new();
    dc.cluster.write_and_check(leader, 1..=60, &mut acked);
    dc.cluster.await_applied_everywhere(&acked);
    for id in 1..=3 {
        // One file: older snapshots are deleted once a newer one is current.
        wait_until(&format!("node {id} holds one snapshot, past 40"), || {
            snapshot_index(&dc, id) >= 40 && snapshot_files(&dc, id).len() == 1
        });
    }

    let behind = leader % 3 + 1;
    dc.cluster.stop(behind);
    let others: Vec<NodeId> = dc.cluster.nodes.keys().copied().collect();
    let leader = dc.cluster.leader_among(&others);
    dc.cluster.write_and_check(leader, 61..=150, &mut acked);
    wait_until("the leader compacted past what the follower holds", || snapshot_index(&dc, leader) >= 100);
    let listener = std::net::TcpListener::bind(dc.cluster.addrs[&behind]).unwrap();
    start_compacting(&mut dc, behind, listener);
    dc.cluster.await_applied_everywhere(&acked);
    wait_until("the follower holds a snapshot past 100", || snapshot_index(&dc, behind) >= 100);

    // Everyone at once: each comes back from its snapshot file and the log after it.
    for id in 1..=3 {
        dc.cluster.stop(id);
    }
    for id in 1..=3 {
        let listener = std::net::TcpListener::bind(dc.cluster.addrs[&id]).unwrap();
        start_compacting(&mut dc, id, listener);
        assert!(snapshot_index(&dc, id) >= 100, "node {id} restarted without its snapshot");
    }
    let leader = dc.cluster.stable_leader();
    assert_eq!(applied_on(&dc, leader), acked, "a restart lost or reordered acknowledged writes");
    dc.cluster.write_and_check(leader, 151..=160, &mut acked);
    dc.cluster.await_applied_everywhere(&acked);
}

// ---------------------------------------------------------------------------------------
// Torn and corrupt logs, on the storage itself.

/// A small, seeded random number generator (SplitMix64).
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (z ^ (z >> 31)) % n
    }
}

const SEGMENT_BYTES: u64 = 2048;
const ENTRIES: u64 = 60;

fn open(dir: &Path) -> std::io::Result<FileStorage> {
    FileStorage::open(dir, "torn", 7, FileOptions { segment_bytes: SEGMENT_BYTES, ..FileOptions::default() })
}

fn entry(index: u64) -> Entry {
    Entry {
        term: Term(1 + index / 20),
        index: LogIndex(index),
        payload: Payload::Command(vec![index as u8; 40].into()),
    }
}

/// Writes `ENTRIES` entries, one batch per flush; returns the log's segments and the
/// last segment's length before its last flush.
fn write_log(dir: &Path) -> (Vec<std::path::PathBuf>, u64) {
    let mut s = open(dir).unwrap();
    s.recover().unwrap();
    let mut before_last = 0;
    for i in 1..=ENTRIES {
        let hs = (i % 20 == 0).then_some(HardState { current_term: Term(1 + i / 20), voted_for: Some(7) });
        s.append(hs, Some(LogIndex(i)), &[entry(i)]).unwrap();
        if i == ENTRIES {
            before_last = std::fs::metadata(last_segment(dir)).unwrap().len();
        }
        s.flush().unwrap();
    }
    (segments(dir), before_last)
}

fn segments(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    v.sort();
    v
}

fn last_segment(dir: &Path) -> std::path::PathBuf {
    segments(dir).pop().unwrap()
}

/// Recovers `dir` and checks the log is a prefix of what was written, at least `min` long;
/// then checks the repaired directory takes new writes and reads them back.
fn recovered_prefix(dir: &Path, min: u64) -> u64 {
    let mut s = open(dir).expect("a torn tail is recovered");
    let log = s.recover().unwrap().log;
    let last = log.last_index().0;
    assert!(last >= min, "recovered only {last} entries, expected at least {min}");
    for e in log.entries() {
        assert_eq!(e, &entry(e.index.0), "recovered a different entry");
    }
    s.append(None, Some(LogIndex(last + 1)), &[entry(last + 1)]).unwrap();
    s.flush().unwrap();
    drop(s);
    let mut s = open(dir).expect("reopen after repair");
    assert_eq!(s.recover().unwrap().log.last_index().0, last + 1, "the repaired log lost the new entry");
    last
}

fn copy_dir(from: &Path) -> tempfile::TempDir {
    let to = tempfile::tempdir().unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_name() != "LOCK" {
            std::fs::copy(e.path(), to.path().join(e.file_name())).unwrap();
        }
    }
    to
}

fn mangle(path: &Path, f: impl FnOnce(&mut Vec<u8>)) {
    let mut bytes = std::fs::read(path).unwrap();
    f(&mut bytes);
    std::fs::write(path, bytes).unwrap();
}

fn seed() -> u64 {
    std::env::var("QUORATE_TORN_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0x70A7)
}

#[test]
fn a_log_cut_at_any_offset_recovers_a_prefix() {
    let original = tempfile::tempdir().unwrap();
    let (segs, _) = write_log(original.path());
    assert!(segs.len() >= 3, "the test wants several segments, got {}", segs.len());
    let last_len = std::fs::metadata(segs.last().unwrap()).unwrap().len();
    // Everything in the earlier segments survives any cut of the last (a batch's records
    // never straddle segments).
    let earlier = {
        let dir = copy_dir(original.path());
        std::fs::remove_file(last_segment(dir.path())).unwrap();
        open(dir.path()).unwrap().recover().unwrap().log.last_index().0
    };
    let mut rng = Rng(seed());
    let mut offsets: Vec<u64> = (0..40).map(|_| rng.below(last_len)).collect();
    offsets.extend([0, 3, 8, last_len - 1]);
    for cut in offsets {
        let dir = copy_dir(original.path());
        let f = std::fs::OpenOptions::new().write(true).open(last_segment(dir.path())).unwrap();
        f.set_len(cut).unwrap();
        drop(f);
        let got = recovered_prefix(dir.path(), earlier);
        assert!(got < ENTRIES, "seed {}: cut at {cut} kept everything?", seed());
    }
}

#[test]
fn garbage_or_zeros_after_the_last_record_are_a_torn_tail() {
    let original = tempfile::tempdir().unwrap();
    let (_, before_last) = write_log(original.path());
    let mut rng = Rng(seed() ^ 1);
    // A flipped byte anywhere in the last record: that record is dropped, the rest kept.
    for _ in 0..20 {
        let dir = copy_dir(original.path());
        let path = last_segment(dir.path());
        let len = std::fs::metadata(&path).unwrap().len();
        let at = before_last + rng.below(len - before_last);
        mangle(&path, |b| b[at as usize] ^= 1 + rng.below(255) as u8);
        assert_eq!(recovered_prefix(dir.path(), ENTRIES - 1), ENTRIES - 1, "flip at {at}");
    }
    // Zeros a filesystem may show after a crash extended the file.
    let dir = copy_dir(original.path());
    let path = last_segment(dir.path());
    let len = std::fs::metadata(&path).unwrap().len();
    mangle(&path, |b| b.extend([0u8; 4096]));
    drop(open(dir.path()).unwrap());
    assert_eq!(std::fs::metadata(&path).unwrap().len(), len, "the torn tail was not cut off");
    assert_eq!(recovered_prefix(dir.path(), ENTRIES), ENTRIES);
}

#[test]
fn corruption_before_the_tail_is_an_error_naming_the_file_and_offset() {
    let original = tempfile::tempdir().unwrap();
    let (segs, before_last) = write_log(original.path());
    let mut rng = Rng(seed() ^ 2);
    for k in 0..30 {
        let dir = copy_dir(original.path());
        let segs_here = segments(dir.path());
        // Half in the last segment before its last record, half in earlier segments.
        let (path, len) = if k % 2 == 0 {
            (segs_here.last().unwrap().clone(), before_last)
        } else {
            let p = segs_here[rng.below(segs.len() as u64 - 1) as usize].clone();
            let len = std::fs::metadata(&p).unwrap().len();
            (p, len)
        };
        let at = rng.below(len);
        mangle(&path, |b| b[at as usize] ^= 1 + rng.below(255) as u8);
        let err = open(dir.path()).expect_err("corruption before the tail must not be skipped");
        let msg = err.to_string();
        let name = path.file_name().unwrap().to_str().unwrap();
        assert!(msg.contains(name) && msg.contains("offset"), "flip at {at} of {name}: {msg}");
    }
}
