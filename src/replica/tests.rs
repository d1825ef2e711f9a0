//! The replica's side of the persistence contract, with a storage the test syncs by hand.

use std::cell::RefCell;
use std::io;
use std::rc::Rc;
use std::time::Duration;

use super::*;
use crate::core::paper_tests::harness::{append, entries_from};
use crate::core::{Entry, HardState, MessageKind, Role};
use crate::runtime::request::Local;
use crate::storage::Recovered;

/// Records batches; `synced` moves only when the test says so; can be told to fail.
#[derive(Clone, Default)]
struct ManualStorage {
    state: Rc<RefCell<(u64, u64, bool)>>, // (appended, synced, fail writes)
}

impl ManualStorage {
    fn sync(&self, upto: u64) {
        let mut s = self.state.borrow_mut();
        s.1 = upto.min(s.0);
    }
}

impl Storage for ManualStorage {
    fn recover(&mut self) -> io::Result<Recovered> {
        Ok(Recovered::default())
    }
    fn append(&mut self, _: Option<HardState>, _: Option<LogIndex>, _: &[Entry]) -> io::Result<()> {
        let mut s = self.state.borrow_mut();
        if s.2 {
            return Err(io::Error::other("disk full"));
        }
        s.0 += 1;
        Ok(())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
    fn synced(&self) -> u64 {
        self.state.borrow().1
    }
    // These tests' machine has no snapshots: nothing below is called.
    fn save_snapshot(&mut self, _: crate::core::SnapshotMeta, _: crate::Snapshot) -> io::Result<()> {
        unreachable!()
    }
    fn poll_snapshot(&mut self) -> Option<io::Result<crate::core::SnapshotInfo>> {
        None
    }
    fn read_snapshot(&mut self, _: LogIndex, _: u64, _: &mut [u8]) -> io::Result<()> {
        unreachable!()
    }
    fn open_snapshot(&mut self) -> io::Result<Box<dyn io::Read + '_>> {
        unreachable!()
    }
    fn receive_snapshot(&mut self, _: &crate::core::SnapshotChunk) -> io::Result<()> {
        unreachable!()
    }
    fn install_snapshot(&mut self, _: &crate::core::InstallSnapshotOrder) -> io::Result<()> {
        unreachable!()
    }
    fn compact(&mut self, _: LogIndex) -> io::Result<()> {
        unreachable!()
    }
}

struct Nothing;
impl StateMachine for Nothing {
    type Command = ();
    type Response = ();
    fn apply(&mut self, _: ()) {}
}

/// Test settings: a 10 ms tick, a 1 s request timeout, no time bound on applying.
fn replica_cfg(
    core: CoreConfig,
    initial: Membership,
    apply_entries_max: u64,
    compaction: super::Compaction,
) -> ReplicaConfig {
    ReplicaConfig {
        core,
        initial,
        tick: Duration::from_millis(10),
        request_timeout: Duration::from_secs(1),
        apply_entries_max,
        compaction,
        apply_time_max: None,
        sessions: Default::default(),
    }
}

fn follower(storage: ManualStorage) -> Replica<Nothing, ManualStorage, Local> {
    let cfg = replica_cfg(
        CoreConfig::new(2),
        Membership::with_voters((1..=3).map(|id| (id, format!("n{id}")))),
        16,
        Default::default(),
    );
    Replica::new(cfg, storage, Nothing).unwrap()
}

/// A follower's acknowledgement leaves only once the batch it rests on is durable.
#[test]
fn acknowledgements_wait_for_their_batch() {
    let storage = ManualStorage::default();
    let mut r = follower(storage.clone());
    r.step(1, append(1, (0, 0), entries_from(1, &[1]), 0));
    r.advance();
    assert_eq!(r.drain_outbox().count(), 0, "the ack waits for the sync");
    storage.sync(1);
    r.advance();
    let sent: Vec<_> = r.drain_outbox().collect();
    assert!(matches!(
        sent[..],
        [Envelope { to: 1, message: Message { kind: MessageKind::AppendEntriesResponse(_), .. } }]
    ));
    assert_eq!(r.core().persisted_index(), LogIndex(1));
}

/// A durable batch vouches only for the entries no later batch overwrote: the disk may
/// hold that later batch's truncation, not the entries the first one wrote (even when a
/// third batch wrote them back).
#[test]
fn a_synced_batch_does_not_vouch_for_entries_a_later_batch_truncated() {
    let storage = ManualStorage::default();
    let mut r = follower(storage.clone());
    r.step(1, append(1, (0, 0), entries_from(1, &[1, 1, 1]), 0)); // batch 1
    r.advance();
    r.step(3, append(2, (1, 1), entries_from(2, &[2]), 0)); // batch 2: leader of term 2 truncates at 2
    r.advance();
    r.step(1, append(3, (1, 1), entries_from(2, &[1, 1]), 0)); // batch 3: term 3 writes them back
    r.advance();
    assert_eq!(r.core().log().last_index(), LogIndex(3));
    storage.sync(2); // the disk now holds [1: t1, 2: t2]
    r.advance();
    assert_eq!(r.core().persisted_index(), LogIndex(1), "index 3 of term 1 is not on disk");
    storage.sync(3);
    r.advance();
    assert_eq!(r.core().persisted_index(), LogIndex(3));
}

/// A write that fails stops the replica, and nothing that rests on it leaves.
#[test]
fn a_failed_write_stops_the_replica_and_sends_nothing() {
    let storage = ManualStorage::default();
    let mut r = follower(storage.clone());
    storage.state.borrow_mut().2 = true;
    r.step(1, append(1, (0, 0), entries_from(1, &[1]), 0));
    r.advance();
    assert!(r.poisoned().is_some_and(|why| why.contains("disk full")));
    storage.state.borrow_mut().2 = false;
    r.step(1, append(1, (1, 1), entries_from(2, &[1]), 0));
    r.advance();
    assert_eq!(r.drain_outbox().count(), 0);
}

/// Counts its commands; panics on `true` after counting it (a half-applied command).
#[derive(Default)]
struct Fragile {
    count: u64,
}
impl StateMachine for Fragile {
    type Command = bool;
    type Response = u64;
    fn apply(&mut self, fail: bool) -> u64 {
        self.count += 1;
        assert!(!fail, "fragile machine");
        self.count
    }
}

fn lone_voter() -> Replica<Fragile, crate::storage::MemoryStorage, Local> {
    let mut core = CoreConfig::new(1);
    core.max_append_bytes = 64;
    let cfg = replica_cfg(core, Membership::with_voters([(1, "n1".to_string())]), 1, Default::default());
    let mut r = Replica::new(cfg, crate::storage::MemoryStorage::default(), Fragile::default()).unwrap();
    r.on_request(Request::TriggerElection { reply: crate::runtime::request::reply_slot().0 });
    r.advance();
    assert_eq!(r.core().role(), Role::Leader);
    r
}

fn write(r: &mut Replica<Fragile, crate::storage::MemoryStorage, Local>, fail: bool) {
    let (reply, _answer) = crate::runtime::request::reply_slot();
    r.on_request(Request::Write {
        command: encode_command(None, &fail).unwrap().into(),
        timeout: Duration::from_secs(1),
        reply,
    });
}

/// A command whose apply panicked leaves the state half-applied: no read may see it, and
/// `applied` stays before it (found by review: reads were served from it).
#[test]
fn a_poisoned_replica_serves_no_read_from_a_failed_apply() {
    let mut r = lone_voter();
    write(&mut r, false);
    write(&mut r, true);
    assert!(r.advance(), "commits both, applies one (the budget is one entry)");
    // Confirmed at once (a lone voter) at index 3, the failing command.
    let seen = std::sync::Arc::new(parking_lot::Mutex::new(None));
    let slot = seen.clone();
    let read: ReadFn<Fragile> = Box::new(move |m| *slot.lock() = Some(m.map(|m| m.count).ok()));
    r.on_request(Request::Read { read });
    r.advance();
    assert!(r.poisoned().is_some_and(|why| why.contains("panicked")));
    assert_eq!(*seen.lock(), None, "a read was served from a half-applied state");
    assert_eq!(r.applied(), LogIndex(2), "the no-op and the first command only");
}

/// A command one AppendEntries cannot carry is refused before it is proposed: it would
/// stall replication for good.
#[test]
fn a_command_larger_than_a_batch_is_refused() {
    let mut r = lone_voter();
    let (reply, answer) = crate::runtime::request::reply_slot::<u64>();
    let last = r.core().log().last_index();
    r.on_request(Request::Write { command: vec![0xc3; 65].into(), timeout: Duration::from_secs(1), reply });
    assert!(matches!(answer.wait(Duration::ZERO), Err(crate::Error::TooLarge { bytes: 65, max: 64 })));
    assert_eq!(r.core().log().last_index(), last, "nothing proposed");
}

/// Counts its commands; has snapshots.
#[derive(Clone, Default, serde::Serialize, serde::Deserialize)]
struct Tally(u64);
impl StateMachine for Tally {
    type Command = ();
    type Response = u64;
    fn apply(&mut self, _: ()) -> u64 {
        self.0 += 1;
        self.0
    }
    crate::serde_snapshots!();
}

/// Memory storage whose snapshot saves fail (a full disk), counting the attempts.
#[derive(Default)]
struct NoRoomForSnapshots {
    inner: crate::storage::MemoryStorage,
    attempts: u64,
}

impl Storage for NoRoomForSnapshots {
    fn recover(&mut self) -> io::Result<Recovered> {
        self.inner.recover()
    }
    fn append(&mut self, h: Option<HardState>, from: Option<LogIndex>, e: &[Entry]) -> io::Result<()> {
        self.inner.append(h, from, e)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
    fn synced(&self) -> u64 {
        self.inner.synced()
    }
    fn save_snapshot(&mut self, _: crate::core::SnapshotMeta, _: crate::Snapshot) -> io::Result<()> {
        self.attempts += 1;
        Err(io::Error::other("no space left on device"))
    }
    fn poll_snapshot(&mut self) -> Option<io::Result<crate::core::SnapshotInfo>> {
        None
    }
    fn read_snapshot(&mut self, i: LogIndex, o: u64, b: &mut [u8]) -> io::Result<()> {
        self.inner.read_snapshot(i, o, b)
    }
    fn open_snapshot(&mut self) -> io::Result<Box<dyn io::Read + '_>> {
        self.inner.open_snapshot()
    }
    fn receive_snapshot(&mut self, c: &crate::core::SnapshotChunk) -> io::Result<()> {
        self.inner.receive_snapshot(c)
    }
    fn install_snapshot(&mut self, o: &crate::core::InstallSnapshotOrder) -> io::Result<()> {
        self.inner.install_snapshot(o)
    }
    fn compact(&mut self, t: LogIndex) -> io::Result<()> {
        self.inner.compact(t)
    }
}

fn tally_voter<S: Storage>(storage: S) -> Replica<Tally, S, Local> {
    let cfg = replica_cfg(
        CoreConfig::new(1),
        Membership::with_voters([(1, "n1".to_string())]),
        16,
        super::Compaction { entries: 4, bytes: u64::MAX, keep_entries: 1 },
    );
    let mut r = Replica::new(cfg, storage, Tally::default()).unwrap();
    r.on_request(Request::TriggerElection { reply: crate::runtime::request::reply_slot().0 });
    r.advance();
    assert_eq!(r.core().role(), Role::Leader);
    r
}

fn tally<S: Storage>(r: &mut Replica<Tally, S, Local>) {
    let (reply, _answer) = crate::runtime::request::reply_slot();
    r.on_request(Request::Write {
        command: encode_command(None, &()).unwrap().into(),
        timeout: Duration::from_secs(1),
        reply,
    });
    r.advance();
}

/// Once saved, a snapshot compacts the log, keeping the window before it.
#[test]
fn a_saved_snapshot_compacts_the_log() {
    let mut r = tally_voter(crate::storage::MemoryStorage::default());
    for _ in 0..5 {
        tally(&mut r);
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while r.core().snapshot().is_none() {
        assert!(std::time::Instant::now() < deadline, "the snapshot thread never finished");
        std::thread::yield_now();
        r.advance();
    }
    let s = r.core().snapshot().unwrap().meta.index;
    assert_eq!(s, LogIndex(4), "taken once 4 entries were applied (the no-op and 3 commands)");
    assert_eq!(r.core().log().snapshot_index(), LogIndex(s.0 - 1), "one entry kept before it");
}

/// A snapshot that cannot be saved is retried only after another threshold's worth of
/// entries, not on every turn.
#[test]
fn a_failed_snapshot_is_retried_after_another_threshold() {
    let mut r = tally_voter(NoRoomForSnapshots::default());
    for _ in 0..12 {
        tally(&mut r);
    }
    let attempts = r.storage().attempts;
    assert!((2..=3).contains(&attempts), "{attempts} attempts in 12 writes at a threshold of 4");
    assert!(r.poisoned().is_none(), "a failed snapshot is no reason to stop");
    assert_eq!(r.core().log().snapshot_index(), LogIndex(0));
}

fn three_voters() -> Membership {
    Membership::with_voters((1..=3).map(|id| (id, format!("n{id}"))))
}

fn tally_follower<S: Storage>(storage: S) -> Replica<Tally, S, Local> {
    let cfg = replica_cfg(CoreConfig::new(2), three_voters(), 16, Default::default());
    Replica::new(cfg, storage, Tally::default()).unwrap()
}

/// A snapshot's bytes as a replica writes them: the session table (empty), then `machine`.
fn snapshot_of(machine: &Tally) -> Vec<u8> {
    let mut bytes = Vec::new();
    super::session::Sessions::default().write_to(&mut bytes).unwrap();
    bytes.extend(rmp_serde::to_vec_named(machine).unwrap());
    bytes
}

/// A chunk of a snapshot (of `data`) at `index`, sent by the leader of `term`.
fn snapshot_chunk(index: u64, term: u64, data: &[u8], offset: usize, len: usize) -> Message {
    use crate::core::{InstallSnapshot, SnapshotMeta, Term};
    let meta = SnapshotMeta { index: LogIndex(index), term: Term(term), membership: three_voters() };
    let data = data[offset..offset + len].to_vec();
    let is = InstallSnapshot { meta, size: (offset + len) as u64, offset: offset as u64, attempt: 0, data };
    Message { term: Term(term), kind: MessageKind::InstallSnapshot(is) }
}

/// Found by review. In one turn an AppendEntries overwrites a stale suffix and the last
/// chunk of a snapshot that matches the new entries arrives: the stored log still holds
/// the stale entries when the snapshot is installed, so storage must not keep "the log
/// after the snapshot" (it would keep the stale entry at the snapshot's index, and the
/// acknowledged entries after it would be dropped at restart as contradicting it).
#[test]
fn an_install_after_a_truncation_in_the_same_turn_keeps_the_acked_entries() {
    let dir = tempfile::tempdir().unwrap();
    let open = || crate::storage::FileStorage::open(dir.path(), "test", 2, Default::default()).unwrap();
    {
        let mut r = tally_follower(open());
        r.step(1, append(1, (0, 0), entries_from(1, &[1; 8]), 0));
        r.advance();
        r.drain_outbox().for_each(drop);
        r.step(3, append(2, (1, 1), entries_from(2, &[2; 7]), 1)); // term 2 replaces 2..=8
        let data = snapshot_of(&Tally(4));
        r.step(3, snapshot_chunk(4, 2, &data, 0, data.len())); // and its snapshot at 4
        r.advance();
        let acked_8 = r.drain_outbox().any(
            |e| matches!(&e.message.kind, MessageKind::AppendEntriesResponse(a) if a.success && a.index == LogIndex(8)),
        );
        assert!(acked_8 && r.poisoned().is_none());
    }
    let recovered = open().recover().unwrap();
    assert_eq!(recovered.log.last_index(), LogIndex(8), "acknowledged entries lost at restart");
    assert_eq!(recovered.log.term_at(LogIndex(8)), Some(crate::core::Term(2)));
}

/// Found by review. The last chunk of one snapshot and the first of a newer one, in one
/// turn: they are stored and installed in the order they came, so the first is installed
/// from its own bytes.
#[test]
fn the_last_chunk_of_one_snapshot_and_the_first_of_the_next_in_one_turn() {
    let mut r = tally_follower(crate::storage::MemoryStorage::default());
    let a = snapshot_of(&Tally(4));
    let b = snapshot_of(&Tally(300));
    r.step(1, snapshot_chunk(4, 1, &a, 0, a.len()));
    let mut first_of_b = snapshot_chunk(6, 1, &b, 0, 1);
    if let MessageKind::InstallSnapshot(is) = &mut first_of_b.kind {
        is.size = b.len() as u64;
    }
    r.step(1, first_of_b);
    r.advance();
    assert!(r.poisoned().is_none(), "{:?}", r.poisoned());
    assert_eq!(r.applied(), LogIndex(4));
    assert_eq!(r.machine().0, 4, "installed from its own bytes");
}

/// A snapshot records the configuration in force at its index, not a later one already in
/// the log (which may still be truncated): found by mutation, no other test noticed.
#[test]
fn a_snapshot_records_the_configuration_at_its_index() {
    let cfg = replica_cfg(
        CoreConfig::new(1),
        Membership::with_voters([(1, "n1".to_string())]),
        1,
        super::Compaction { entries: 2, bytes: u64::MAX, keep_entries: 0 },
    );
    let mut r: Replica<Tally, _, Local> =
        Replica::new(cfg, crate::storage::MemoryStorage::default(), Tally::default()).unwrap();
    r.on_request(Request::TriggerElection { reply: crate::runtime::request::reply_slot().0 });
    r.advance(); // leads; its no-op (1) commits and applies
    let (reply, _w) = crate::runtime::request::reply_slot();
    r.on_request(Request::Write {
        command: encode_command(None, &()).unwrap().into(),
        timeout: Duration::from_secs(1),
        reply,
    }); // index 2
    let (reply, _a) = crate::runtime::request::reply_slot();
    r.on_request(Request::AddServer { id: 2, addr: "n2".into(), reply }); // index 3: a learner
    r.advance(); // commits both, applies one: the snapshot is taken at 2
    assert_eq!(r.applied(), LogIndex(2));
    assert!(r.core().membership().learners.contains_key(&2));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while r.core().snapshot().is_none() {
        assert!(std::time::Instant::now() < deadline, "no snapshot");
        std::thread::yield_now();
        r.advance();
    }
    let meta = &r.core().snapshot().unwrap().meta;
    assert_eq!(meta.index, LogIndex(2));
    assert!(meta.membership.learners.is_empty(), "the learner was added after the snapshot's index");
}

/// A response that cannot be encoded for the session table fails alike on every server:
/// the table records the failure instead of stopping every server at that index, the
/// writer gets its response, and a retry learns only that the command may have applied.
#[test]
fn a_response_that_cannot_be_encoded_stops_no_server() {
    struct Unencodable;
    impl serde::Serialize for Unencodable {
        fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
            Err(serde::ser::Error::custom("never"))
        }
    }
    impl<'de> serde::Deserialize<'de> for Unencodable {
        fn deserialize<D: serde::Deserializer<'de>>(_: D) -> Result<Self, D::Error> {
            Err(serde::de::Error::custom("never"))
        }
    }
    #[derive(Default)]
    struct Machine(u64);
    impl StateMachine for Machine {
        type Command = ();
        type Response = Unencodable;
        fn apply(&mut self, _: ()) -> Unencodable {
            self.0 += 1;
            Unencodable
        }
    }
    use crate::runtime::request::reply_slot;
    let cfg =
        replica_cfg(CoreConfig::new(1), Membership::with_voters([(1, "n1".to_string())]), 100, Default::default());
    let mut r: Replica<Machine, crate::storage::MemoryStorage, Local> =
        Replica::new(cfg, crate::storage::MemoryStorage::default(), Machine::default()).unwrap();
    r.on_request(Request::TriggerElection { reply: reply_slot().0 });
    r.advance();
    let (reply, registered) = reply_slot();
    r.on_request(Request::RegisterSession { secret: 9, timeout: Duration::from_secs(1), reply });
    r.advance();
    let session = registered.wait(Duration::ZERO).expect("registered");
    let tag = SessionTag { session, secret: 9, seq: 1, acked: 1 };
    let mut answers = Vec::new();
    for _ in 0..2 {
        let (reply, answer) = reply_slot();
        let command = encode_command(Some(tag), &()).unwrap().into();
        r.on_request(Request::Write { command, timeout: Duration::from_secs(1), reply });
        r.advance();
        answers.push(answer.wait(Duration::ZERO));
    }
    assert!(r.poisoned().is_none(), "{:?}", r.poisoned());
    assert!(answers[0].is_ok(), "the writer gets its response");
    assert!(matches!(answers[1], Err(crate::Error::LeadershipLost)), "the retry: may have applied (it did)");
    assert_eq!(r.machine().0, 1, "applied once");
}
