//! A deterministic simulator: replicas wired through a hostile network and slow, crashing
//! storage, all driven by one seeded RNG. One seed decides the whole run; the same seed
//! replays it exactly. It drives the same `Replica` as the mio runtime, so every answer a
//! client gets is checked too.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use quorate::core::{CoreConfig, LeaseReads, Membership, Message, MessageKind, NodeId, Raft, Role, SplitMix64};
use quorate::replica::{Compaction, ReadFn, Replica, ReplicaConfig, Request};

use super::checker::{Checker, NodeCheck};
use super::clients::{Outcome, Outcomes, Refusal, SimClient, SimMachine, SimReply, WriteResponse, write_reply};
use super::sim_storage::{Disk, SimStorage};
use super::trace::{Event, Trace};

/// Virtual time units per tick: nodes tick at staggered offsets, messages take units.
pub const UNITS_PER_TICK: u64 = 4;
/// Drifting clocks keep time in thousandths of a unit.
const MILLIS_PER_UNIT: u64 = 1000;

/// Lease reads, and tick clocks that drift apart.
#[derive(Clone, Copy, Debug)]
pub struct ClockDrift {
    /// The bound every node is configured with ([`LeaseReads::max_clock_drift`]).
    pub configured: f64,
    /// The bound the simulated clocks keep to: one node's tick lasts at most `1 + actual`
    /// times another's. Above `configured`, the assumption leases rest on is broken.
    pub actual: f64,
}

/// One node's drifting tick clock: a tick every `period` thousandths of a unit, the next
/// at `next`. It runs while the node is down too (a restart does not rewind real time).
#[derive(Clone, Copy, Debug)]
struct Clock {
    period: u64,
    next: u64,
}

/// Every node's clock, drawn from a generator of their own (the other draws stay as they
/// are without drift).
struct Clocks {
    drift: ClockDrift,
    rng: Rng,
    by_node: BTreeMap<NodeId, Clock>,
}

impl Clocks {
    /// A tick period for a new node: the fastest and slowest allowed ones as often as
    /// anything between, so the extremes the bound allows meet often.
    fn draw(&mut self, now: u64) -> Clock {
        let base = (UNITS_PER_TICK * MILLIS_PER_UNIT) as f64;
        let spread = self.drift.actual / (2.0 + self.drift.actual);
        let fastest = (base * (1.0 - spread)).ceil() as u64;
        // Rounded down, so any two periods keep within the bound exactly.
        let slowest = ((fastest as f64) * (1.0 + self.drift.actual)).floor() as u64;
        let period = match self.rng.between(0, 2) {
            0 => fastest,
            1 => slowest,
            _ => self.rng.between(fastest, slowest),
        };
        assert!(period > MILLIS_PER_UNIT, "at most one tick per unit");
        Clock { period, next: now * MILLIS_PER_UNIT + self.rng.between(1, period) }
    }
}

/// The simulator's RNG: the project's SplitMix64, with helpers.
pub struct Rng(SplitMix64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(SplitMix64::new(seed.wrapping_mul(0x2545_F491_4F6C_DD1D)))
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }
    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }
    /// A value in `[lo, hi]`.
    pub fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo + 1)
    }
    pub fn pick<T: Copy>(&mut self, items: &[T]) -> Option<T> {
        if items.is_empty() { None } else { Some(items[(self.next_u64() % items.len() as u64) as usize]) }
    }
}

/// How hostile the network is.
#[derive(Clone, Copy, Debug)]
pub struct Faults {
    pub drop: f64,
    pub duplicate: f64,
    /// Probability a message takes a long path (which reorders it).
    pub long_delay: f64,
    pub partition: f64,
    pub heal: f64,
    pub crash: f64,
    /// Probability per unit that the current leader crashes (the Figure 8 shapes).
    pub crash_leader: f64,
    /// Probability that a leader crashes while sending a batch, right after it was elected
    /// or while replicating: only a random part of its messages leave (Figure 8 shapes).
    pub crash_mid_send: f64,
    pub restart: f64,
    /// Probability that an AppendEntries carries only a prefix of its entries, as a leader
    /// with a smaller batch budget would send (every field stays true).
    pub short_append: f64,
}

impl Faults {
    /// A level of hostility picked by the seed, so every run of seeds covers them all.
    pub fn for_seed(seed: u64) -> Faults {
        match seed % 3 {
            0 => Faults {
                drop: 0.02,
                duplicate: 0.01,
                long_delay: 0.02,
                partition: 0.002,
                heal: 0.01,
                crash: 0.001,
                crash_leader: 0.0005,
                crash_mid_send: 0.001,
                restart: 0.01,
                short_append: 0.01,
            },
            1 => Faults {
                drop: 0.05,
                duplicate: 0.03,
                long_delay: 0.05,
                partition: 0.004,
                heal: 0.01,
                crash: 0.002,
                crash_leader: 0.002,
                crash_mid_send: 0.005,
                restart: 0.02,
                short_append: 0.03,
            },
            _ => Faults {
                drop: 0.15,
                duplicate: 0.05,
                long_delay: 0.1,
                partition: 0.01,
                heal: 0.02,
                crash: 0.004,
                crash_leader: 0.006,
                crash_mid_send: 0.02,
                restart: 0.05,
                short_append: 0.1,
            },
        }
    }
    pub fn none() -> Faults {
        Faults {
            drop: 0.0,
            duplicate: 0.0,
            long_delay: 0.0,
            partition: 0.0,
            heal: 1.0,
            crash: 0.0,
            crash_leader: 0.0,
            crash_mid_send: 0.0,
            restart: 1.0,
            short_append: 0.0,
        }
    }
}

/// The settings one seed draws, each independently of the others.
#[derive(Clone, Debug)]
pub struct Settings {
    pub core: CoreConfig,
    pub apply_entries_max: u64,
    /// Storage syncs each batch as it is appended.
    pub instant_storage: bool,
    /// Otherwise: the chance per unit that a server with unsynced batches syncs them.
    pub sync_chance: f64,
    pub compaction: Compaction,
}

impl Settings {
    fn draw(rng: &mut Rng, seed: u64) -> Settings {
        let mut core = CoreConfig::new(1);
        // A quarter of the seeds run with the defaults users get from `Config`.
        if !rng.chance(0.25) {
            core.election_ticks = rng.between(6, 30) as u32;
            core.heartbeat_ticks = rng.between(1, u64::from(core.election_ticks / 3)) as u32;
            core.max_append_entries = rng.pick(&[1, 2, 3, 5, 8, 64, 4096]).unwrap();
            core.max_inflight = rng.pick(&[1, 2, 3, 4, 32]).unwrap();
        }
        let apply_entries_max = rng.pick(&[1, 3, 1024]).unwrap();
        let instant_storage = rng.chance(0.3);
        let sync_chance = rng.pick(&[0.5, 0.2, 0.05]).unwrap();
        let (compaction, chunk, inflight) = Settings::draw_compaction(&mut Rng::new(seed ^ 0x5eed_c0de));
        (core.snapshot_chunk_bytes, core.max_snapshot_inflight) = (chunk, inflight);
        Settings { core, apply_entries_max, instant_storage, sync_chance, compaction }
    }

    /// Snapshot settings, from a generator of their own so the other draws (and the
    /// regression seeds found before snapshots existed) stay as they were. A quarter of
    /// the seeds keep `Config`'s defaults, which a short run never reaches.
    fn draw_compaction(rng: &mut Rng) -> (Compaction, usize, usize) {
        if rng.chance(0.25) {
            let core = CoreConfig::new(1);
            return (Compaction::default(), core.snapshot_chunk_bytes, core.max_snapshot_inflight);
        }
        let entries = rng.pick(&[3, 8, 20, 60]).unwrap();
        let keep_entries = rng.pick(&[0, 1, 5, 30]).unwrap();
        let bytes = rng.pick(&[200, 1 << 20]).unwrap();
        // Tiny chunks, so a snapshot of the simulated machine (about 20 bytes) takes several.
        let chunk = rng.pick(&[1, 3, 8, 1 << 20]).unwrap();
        let inflight = rng.pick(&[1, 2, 4]).unwrap();
        (Compaction { entries, bytes, keep_entries }, chunk, inflight)
    }
}

type SimReplica = Replica<SimMachine, SimStorage, SimClient>;

/// One simulated server: its replica (None while crashed) and the disk that outlives it.
pub struct SimNode {
    pub replica: Option<SimReplica>,
    disk: Rc<RefCell<Disk>>,
    cfg: ReplicaConfig,
    check: NodeCheck,
    /// Committed entries wait to be applied (the apply budget ran out).
    backlog: bool,
    /// Removed from the cluster for good: no longer driven.
    pub retired: bool,
}

impl SimNode {
    pub fn raft(&self) -> Option<&Raft> {
        self.replica.as_ref().map(Replica::core)
    }
}

struct InFlight {
    at: u64,
    from: NodeId,
    to: NodeId,
    msg: Message,
}

/// The whole simulated cluster.
pub struct Sim {
    pub seed: u64,
    pub rng: Rng,
    pub now: u64,
    pub settings: Settings,
    pub nodes: BTreeMap<NodeId, SimNode>,
    net: Vec<InFlight>,
    /// Directed links that drop everything.
    cut: BTreeSet<(NodeId, NodeId)>,
    /// A server cut off from everyone until the given unit (not ended by a random heal).
    isolated: Option<(NodeId, u64)>,
    pub faults: Faults,
    pub checker: Checker,
    outcomes: Outcomes,
    next_cmd: u64,
    next_read: u64,
    /// Simulated remote clients' sessions, and the answers to their registrations.
    sessions: Vec<SimSession>,
    registered: Arc<Mutex<Vec<(u64, u64)>>>,
    next_attempt: u64,
    pub trace: Trace,
    /// The highest term and the messages refused at the cores' door, as of the final stop.
    pub max_term_seen: u64,
    pub refused_seen: u64,
    /// Reads served under a lease.
    pub lease_reads_seen: u64,
    /// Drifting clocks (lease runs only); without them nodes tick every `UNITS_PER_TICK`.
    clocks: Option<Clocks>,
}

/// A simulated remote client's session: its commands not yet answered `Ok`, by sequence.
struct SimSession {
    id: u64,
    secret: u64,
    next_seq: u64,
    waiting: BTreeMap<u64, u64>,
    /// Sequences answered `Ok` since the client last looked.
    acked: Arc<Mutex<Vec<u64>>>,
}

impl SimSession {
    fn new((id, secret): (u64, u64)) -> SimSession {
        SimSession { id, secret, next_seq: 1, waiting: BTreeMap::new(), acked: Arc::default() }
    }
}

/// What the core counts as durable is on the disk: its entry at the persisted index (if
/// neither side compacted past it) is the disk's, so an acknowledgement or a leader's own
/// vote toward a commit rests on a copy that survives a crash.
fn check_persisted_on_disk(raft: &Raft, disk: &Disk) {
    let p = raft.persisted_index();
    if p <= raft.log().snapshot_index() || p <= disk.log.snapshot_index() {
        return;
    }
    assert_eq!(
        disk.log.term_at(p),
        raft.log().term_at(p),
        "node {}: persisted through {p}, but the disk does not hold that entry",
        raft.id()
    );
}

impl Sim {
    /// `n` servers that all start with the same configuration {1..=n}.
    pub fn new(seed: u64, n: u64, faults: Faults) -> Sim {
        Sim::with_drift(seed, n, faults, None)
    }

    /// [`Sim::new`], with lease reads on and clocks that drift as `drift` says.
    pub fn with_drift(seed: u64, n: u64, faults: Faults, drift: Option<ClockDrift>) -> Sim {
        let mut rng = Rng::new(seed);
        let mut settings = Settings::draw(&mut rng, seed);
        settings.core.lease_reads = drift.map(|d| LeaseReads { max_clock_drift: d.configured });
        let clocks = drift.map(|drift| Clocks { drift, rng: Rng::new(seed ^ 0xc10c_d21f), by_node: BTreeMap::new() });
        let members = Membership::with_voters((1..=n).map(|id| (id, format!("n{id}"))));
        let mut sim = Sim {
            seed,
            rng,
            now: 0,
            settings,
            nodes: BTreeMap::new(),
            net: Vec::new(),
            cut: BTreeSet::new(),
            isolated: None,
            faults,
            checker: Checker::default(),
            outcomes: Outcomes::default(),
            next_cmd: 1,
            next_read: 1,
            sessions: Vec::new(),
            registered: Arc::default(),
            next_attempt: 1,
            max_term_seen: 0,
            refused_seen: 0,
            lease_reads_seen: 0,
            trace: Trace::default(),
            clocks,
        };
        for id in 1..=n {
            sim.add_node(id, members.clone());
        }
        sim
    }

    /// Starts a fresh server with configuration `initial` (empty: it waits to be added).
    pub fn add_node(&mut self, id: NodeId, initial: Membership) {
        let mut core = self.settings.core.clone();
        core.id = id;
        core.seed = self.seed.wrapping_mul(31).wrapping_add(id);
        let cfg = ReplicaConfig {
            core,
            initial,
            tick: Duration::from_millis(10),
            request_timeout: Duration::from_secs(5),
            apply_entries_max: self.settings.apply_entries_max,
            apply_time_max: None,
            compaction: self.settings.compaction,
            sessions: Default::default(),
        };
        let disk = Rc::new(RefCell::new(Disk::default()));
        let now = self.now;
        if let Some(clocks) = &mut self.clocks {
            let clock = clocks.draw(now);
            clocks.by_node.insert(id, clock);
        }
        let mut node =
            SimNode { replica: None, disk, cfg, check: NodeCheck::default(), backlog: false, retired: false };
        node.replica = Some(self.boot(&node));
        self.nodes.insert(id, node);
    }

    fn boot(&self, node: &SimNode) -> SimReplica {
        let storage = SimStorage::new(node.disk.clone(), self.settings.instant_storage);
        Replica::new(node.cfg.clone(), storage, SimMachine::default()).expect("simulated storage never fails")
    }

    /// Every server's disk.
    pub fn disks(&self) -> impl Iterator<Item = std::cell::Ref<'_, Disk>> + '_ {
        self.nodes.values().map(|n| n.disk.borrow())
    }

    pub fn live_ids(&self) -> Vec<NodeId> {
        self.nodes.iter().filter(|(_, n)| n.replica.is_some() && !n.retired).map(|(&id, _)| id).collect()
    }

    /// Every live server that believes it leads (a deposed one may not know yet).
    pub fn leaders(&self) -> Vec<NodeId> {
        let leads = |n: &SimNode| n.raft().is_some_and(|r| r.role() == Role::Leader);
        self.nodes.iter().filter(|(_, n)| !n.retired && leads(n)).map(|(&id, _)| id).collect()
    }

    /// The leader with the highest term among live servers.
    pub fn leader(&self) -> Option<NodeId> {
        self.nodes
            .iter()
            .filter(|(_, n)| !n.retired)
            .filter_map(|(&id, n)| n.raft().filter(|r| r.role() == Role::Leader).map(|r| (r.current_term(), id)))
            .max()
            .map(|(_, id)| id)
    }

    pub fn raft(&self, id: NodeId) -> Option<&Raft> {
        self.nodes.get(&id).and_then(SimNode::raft)
    }

    /// Runs `f` on server `id`'s replica and processes what it produced.
    pub fn with<R>(&mut self, id: NodeId, f: impl FnOnce(&mut SimReplica) -> R) -> Option<R> {
        let r = f(self.nodes.get_mut(&id)?.replica.as_mut()?);
        self.process(id);
        Some(r)
    }

    /// One unit of virtual time: faults, ticks, deliveries, syncs.
    pub fn step(&mut self) {
        self.now += 1;
        self.maybe_fault();
        for id in self.ticking() {
            self.with(id, Replica::tick);
        }
        self.deliver_due();
        for id in self.live_ids() {
            let node = &self.nodes[&id];
            let unsynced = node.replica.as_ref().is_some_and(|r| r.storage().has_unsynced());
            if unsynced && self.rng.chance(self.settings.sync_chance) {
                // Sometimes only the oldest batches: the rest stay volatile a while longer.
                let waiting = node.replica.as_ref().map_or(0, |r| r.storage().unsynced_len()) as u64;
                let count = if waiting == 0 || self.rng.chance(0.5) { waiting } else { self.rng.between(1, waiting) };
                self.trace.push(self.now, Event::Sync(id));
                self.with(id, |r| r.storage_mut().sync_first(count as usize));
            } else if node.backlog {
                self.process(id);
            }
        }
    }

    /// The live servers whose clock ticks in this unit.
    fn ticking(&mut self) -> Vec<NodeId> {
        let now = self.now;
        let Some(clocks) = &mut self.clocks else {
            return self.live_ids().into_iter().filter(|id| (now + id).is_multiple_of(UNITS_PER_TICK)).collect();
        };
        let mut due = Vec::new();
        for (&id, clock) in &mut clocks.by_node {
            // Periods exceed a unit, so a clock ticks at most once per unit, never before
            // its time, and less than a unit after it.
            if clock.next <= now * MILLIS_PER_UNIT {
                clock.next += clock.period;
                due.push(id);
            }
        }
        due.retain(|id| self.nodes.get(id).is_some_and(|n| n.replica.is_some() && !n.retired));
        due
    }

    fn deliver_due(&mut self) {
        let now = self.now;
        let mut due = Vec::new();
        let mut k = 0;
        while k < self.net.len() {
            if self.net[k].at <= now {
                due.push(self.net.swap_remove(k));
            } else {
                k += 1;
            }
        }
        // swap_remove scrambles order: sort so the order is decided by the seed alone.
        due.sort_by_key(|m| (m.at, m.from, m.to));
        // Every message due at a server is stepped, then it advances once, as the node
        // loop's turn does: one Ready may then hold several messages' work (found by
        // review: a truncation and a snapshot install in one Ready lost acked entries).
        let mut touched: Vec<NodeId> = Vec::new();
        for m in due {
            let deliverable = self.nodes.get(&m.to).is_some_and(|n| n.replica.is_some() && !n.retired);
            let isolated = self.isolated.is_some_and(|(id, until)| now < until && (m.from == id || m.to == id));
            if deliverable && !self.cut.contains(&(m.from, m.to)) && !isolated {
                self.trace.push(now, Event::deliver(m.from, m.to, &m.msg));
                if let Some(r) = self.nodes.get_mut(&m.to).and_then(|n| n.replica.as_mut()) {
                    r.step(m.from, m.msg);
                }
                if !touched.contains(&m.to) {
                    touched.push(m.to);
                }
            }
        }
        for id in touched {
            self.process(id);
        }
    }

    /// Advances server `id`'s replica, checks it, sends what it produced, checks answers.
    fn process(&mut self, id: NodeId) {
        let node = self.nodes.get_mut(&id).expect("known node");
        let Some(replica) = node.replica.as_mut() else { return };
        node.backlog = replica.advance();
        let changed_from = replica.storage_mut().take_changed_from();
        replica.check_invariants();
        check_persisted_on_disk(replica.core(), &node.disk.borrow());
        self.checker.check_node(replica.core(), &mut node.check, changed_from);
        let machine = replica.machine();
        self.checker.check_machine(id, machine.count, machine.hash.0);
        let mut messages: Vec<_> = replica.drain_outbox().collect();
        let crash = self.may_crash_mid_send(id, messages.len());
        if crash {
            let keep = self.rng.between(0, messages.len() as u64 - 1) as usize;
            messages.truncate(keep);
        }
        for env in messages {
            self.send(id, env.to, env.message);
        }
        if crash {
            self.crash(id);
        }
        self.check_outcomes();
    }

    fn check_outcomes(&mut self) {
        let outcomes: Vec<Outcome> = std::mem::take(&mut *self.outcomes.lock().unwrap());
        for outcome in &outcomes {
            self.trace.push(self.now, Event::Answer(format!("{outcome:?}")));
            self.checker.check_outcome(outcome);
        }
    }

    /// Whether leader `id` crashes part-way through sending this batch: far more likely
    /// while it holds uncommitted entries (just elected, or replicating), which then end
    /// up on only some servers.
    fn may_crash_mid_send(&mut self, id: NodeId, messages: usize) -> bool {
        let Some(raft) = self.raft(id) else { return false };
        if raft.role() != Role::Leader || messages < 2 {
            return false;
        }
        let has_uncommitted = raft.commit_index() < raft.log().last_index();
        if !self.may_crash_one() {
            return false;
        }
        let p = if has_uncommitted { self.faults.crash_mid_send * 10.0 } else { self.faults.crash_mid_send };
        self.rng.chance(p)
    }

    /// Whether one more server may go down: a majority stays up, or every server is up (a
    /// lone voter must crash too).
    fn may_crash_one(&self) -> bool {
        let live = self.live_ids().len();
        let all = self.nodes.values().filter(|n| !n.retired).count();
        live * 2 > all + 1 || live == all
    }

    fn send(&mut self, from: NodeId, to: NodeId, mut msg: Message) {
        if self.rng.chance(self.faults.drop) {
            return;
        }
        if let MessageKind::AppendEntries(ae) = &mut msg.kind
            && !ae.entries.is_empty()
            && self.rng.chance(self.faults.short_append)
        {
            let keep = self.rng.between(0, ae.entries.len() as u64 - 1) as usize;
            ae.entries.truncate(keep);
        }
        let copies = if self.rng.chance(self.faults.duplicate) { 2 } else { 1 };
        for _ in 0..copies {
            let delay =
                if self.rng.chance(self.faults.long_delay) { self.rng.between(8, 60) } else { self.rng.between(1, 4) };
            self.net.push(InFlight { at: self.now + delay, from, to, msg: msg.clone() });
        }
    }

    /// Puts a message from anyone (a hostile source, say) on the network to `to`; it meets
    /// the same drops, duplicates and delays as the rest.
    pub fn inject(&mut self, from: NodeId, to: NodeId, msg: Message) {
        self.send(from, to, msg);
    }

    /// A client writes a fresh command at server `id`; returns the command.
    pub fn write(&mut self, id: NodeId) -> u64 {
        let cmd = self.next_cmd;
        self.next_cmd += 1;
        let command = quorate::replica::encode_command(None, &cmd).expect("a u64 encodes").into();
        let reply = write_reply(&self.outcomes, cmd);
        self.checker.writes_outstanding.insert(cmd);
        self.trace.push(self.now, Event::Write(id, cmd));
        let timeout = Duration::from_secs(5);
        self.with(id, |r| r.on_request(Request::Write { command, timeout, reply }));
        cmd
    }

    /// A session client (as a remote client following the leader would be) registers a
    /// session at server `id`.
    pub fn register_session(&mut self, id: NodeId) {
        let reg = self.next_attempt;
        self.next_attempt += 1;
        self.checker.registrations_outstanding.insert(reg);
        let (outcomes, registered) = (self.outcomes.clone(), self.registered.clone());
        // Any value the client keeps to itself; the same seed gives the same secrets.
        let secret = reg.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let reply = SimReply::new(move |result: quorate::Result<u64>| {
            if let Ok(session) = &result {
                registered.lock().unwrap().push((*session, secret));
            }
            let result = result.map_err(|e| e.to_string());
            outcomes.lock().unwrap().push(Outcome::Registered { id: reg, result });
        });
        self.trace.push(self.now, Event::Admin(id, format!("register session ({reg})")));
        let timeout = Duration::from_secs(5);
        self.with(id, |r| r.on_request(Request::RegisterSession { secret, timeout, reply }));
    }

    /// A session client sends a command at server `id`: with probability `retry`, another
    /// attempt of one of its earlier commands not yet acknowledged (the same tag), else a
    /// fresh one. Registers a session first if it has none.
    pub fn session_write(&mut self, id: NodeId, retry: f64) {
        self.sessions.extend(self.registered.lock().unwrap().drain(..).map(SimSession::new));
        if self.sessions.is_empty() {
            return self.register_session(id);
        }
        let k = self.rng.between(0, self.sessions.len() as u64 - 1) as usize;
        let again = self.rng.chance(retry) && !self.sessions[k].waiting.is_empty();
        let (seq, cmd) = if again {
            let seqs: Vec<u64> = self.sessions[k].waiting.keys().copied().collect();
            let seq = self.rng.pick(&seqs).expect("not empty");
            (seq, self.sessions[k].waiting[&seq])
        } else {
            let cmd = self.next_cmd;
            self.next_cmd += 1;
            let s = &mut self.sessions[k];
            let seq = s.next_seq;
            s.next_seq += 1;
            s.waiting.insert(seq, cmd);
            (seq, cmd)
        };
        let s = &self.sessions[k];
        let acked = s.waiting.keys().next().copied().unwrap_or(seq);
        let tag = quorate::replica::SessionTag { session: s.id, secret: s.secret, seq, acked };
        let command = quorate::replica::encode_command(Some(tag), &cmd).expect("a u64 encodes").into();
        let attempt = self.next_attempt;
        self.next_attempt += 1;
        self.checker.attempts_outstanding.insert(attempt);
        let outcomes = self.outcomes.clone();
        let acked_now = s.acked.clone();
        let reply = SimReply::new(move |result: quorate::Result<WriteResponse>| {
            if result.is_ok() {
                acked_now.lock().unwrap().push(seq);
            }
            let result = result.map_err(Refusal::from);
            outcomes.lock().unwrap().push(Outcome::SessionWrite { cmd, attempt, result });
        });
        self.trace.push(self.now, Event::Write(id, cmd));
        let timeout = Duration::from_secs(5);
        self.with(id, |r| r.on_request(Request::Write { command, timeout, reply }));
        // Answers so far end the waits they answer (the client stops retrying those).
        for s in &mut self.sessions {
            for seq in s.acked.lock().unwrap().drain(..) {
                s.waiting.remove(&seq);
            }
        }
    }

    /// A client issues a linearizable read at server `id`: it must see every write
    /// acknowledged before now.
    pub fn read(&mut self, id: NodeId) -> u64 {
        let floor = self.checker.read_floor_now();
        let outcomes = self.outcomes.clone();
        let read_id = self.next_read;
        self.next_read += 1;
        self.checker.reads_outstanding.insert(read_id);
        // A read dropped with its crashed server is answered as a local client's would be.
        let dropped = outcomes.clone();
        let on_drop = SimReply::<()>::new(move |result| {
            let why = result.err().map_or_else(String::new, |e| e.to_string());
            dropped.lock().unwrap().push(Outcome::ReadFailed { id: read_id, why });
        });
        let read: ReadFn<SimMachine> = Box::new(move |machine| {
            on_drop.disarm();
            let outcome = match machine {
                Ok(m) => Outcome::Read { id: read_id, node: id, floor, count: m.count, hash: m.hash.0 },
                Err(e) => Outcome::ReadFailed { id: read_id, why: e.to_string() },
            };
            outcomes.lock().unwrap().push(outcome);
        });
        self.trace.push(self.now, Event::Read(id));
        // Served under the lease exactly when it holds as the read arrives.
        self.lease_reads_seen += u64::from(self.raft(id).is_some_and(Raft::lease_holds));
        self.with(id, |r| r.on_request(Request::Read { read }));
        read_id
    }

    /// Stops every server gracefully, which must answer everything still pending; then
    /// checks that every request ever issued was answered exactly once.
    pub fn stop_all_and_check_answers(&mut self) {
        self.max_term_seen =
            self.nodes.values().filter_map(|n| n.raft()).map(|r| r.current_term().0).max().unwrap_or(0);
        self.refused_seen = self.nodes.values().filter_map(|n| n.raft()).map(|r| r.refused().total()).sum();
        for id in self.live_ids() {
            if let Some(mut replica) = self.nodes.get_mut(&id).and_then(|n| n.replica.take()) {
                replica.shutdown();
            }
        }
        self.check_outcomes();
        self.checker.check_all_answered();
    }

    /// A membership change, transfer or election request whose answer nobody checks.
    pub fn admin(&mut self, id: NodeId, request: Request<SimMachine, SimClient>, what: String) {
        self.trace.push(self.now, Event::Admin(id, what));
        self.with(id, |r| r.on_request(request));
    }

    pub fn ignored<T>() -> SimReply<T> {
        SimReply::ignored()
    }

    fn maybe_fault(&mut self) {
        let f = self.faults;
        if self.rng.chance(f.partition) {
            self.partition();
        }
        if !self.cut.is_empty() && self.rng.chance(f.heal) {
            self.trace.push(self.now, Event::Heal);
            self.cut.clear();
        }
        let live = self.live_ids();
        let may_crash = self.may_crash_one();
        if may_crash
            && self.rng.chance(f.crash)
            && let Some(id) = self.rng.pick(&live)
        {
            self.crash(id);
        }
        if may_crash
            && self.rng.chance(f.crash_leader)
            && let Some(id) = self.leader()
        {
            self.crash(id);
        }
        if self.rng.chance(f.restart) {
            let down: Vec<NodeId> =
                self.nodes.iter().filter(|(_, n)| n.replica.is_none() && !n.retired).map(|(&id, _)| id).collect();
            if let Some(id) = self.rng.pick(&down) {
                self.restart(id);
            }
        }
    }

    /// Cuts server `id` off from everyone for `units` (in both directions; messages in
    /// flight to or from it are lost), whatever random heals happen meanwhile.
    pub fn isolate(&mut self, id: NodeId, units: u64) {
        self.trace.push(self.now, Event::Admin(id, format!("isolated for {units} units")));
        self.isolated = Some((id, self.now + units));
    }

    /// The server [`Sim::isolate`] cut off, while it is.
    pub fn isolated(&self) -> Option<NodeId> {
        self.isolated.filter(|&(_, until)| self.now < until).map(|(id, _)| id)
    }

    /// Cuts the cluster in two, symmetrically or (sometimes) in one direction only.
    fn partition(&mut self) {
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        // Half the time isolate one server (often the leader), else split at random.
        let side: Vec<bool> = if self.rng.chance(0.5) {
            let lonely = if self.rng.chance(0.5) { self.leader() } else { None }.or_else(|| self.rng.pick(&ids));
            ids.iter().map(|&id| Some(id) == lonely).collect()
        } else {
            ids.iter().map(|_| self.rng.chance(0.5)).collect()
        };
        let one_way = self.rng.chance(0.3);
        for (i, &a) in ids.iter().enumerate() {
            for (j, &b) in ids.iter().enumerate() {
                if side[i] && !side[j] {
                    self.cut.insert((a, b));
                    if !one_way {
                        self.cut.insert((b, a));
                    }
                }
            }
        }
        self.trace.push(self.now, Event::Partition(self.cut.len()));
    }

    /// Crash: volatile state is lost, and so is what storage had not synced, except a
    /// random prefix of it that reached the disk anyway. Half the crashes are graceful
    /// stops, which answer every pending request first.
    pub fn crash(&mut self, id: NodeId) {
        let graceful = self.rng.chance(0.5);
        let node = self.nodes.get_mut(&id).expect("known node");
        let Some(mut replica) = node.replica.take() else { return };
        if graceful {
            replica.shutdown();
        }
        let unsynced = replica.storage().unsynced_len() as u64;
        let keep = self.rng.between(0, unsynced) as usize;
        replica.storage_mut().crash(keep);
        drop(replica);
        self.trace.push(self.now, Event::Crash { id, graceful, kept: keep, lost: unsynced as usize - keep });
        self.check_outcomes();
    }

    /// Restarts from what the disk holds; the state machine is rebuilt by re-applying.
    pub fn restart(&mut self, id: NodeId) {
        let node = &self.nodes[&id];
        let replica = self.boot(node);
        let node = self.nodes.get_mut(&id).expect("known node");
        node.replica = Some(replica);
        node.check = NodeCheck::default();
        self.trace.push(self.now, Event::Restart(id));
        self.process(id);
    }

    /// Ends all faults: heal partitions, restart crashed servers, stop dropping.
    pub fn heal(&mut self) {
        self.faults = Faults::none();
        self.cut.clear();
        self.isolated = None;
        self.trace.push(self.now, Event::Heal);
        let down: Vec<NodeId> =
            self.nodes.iter().filter(|(_, n)| n.replica.is_none() && !n.retired).map(|(&id, _)| id).collect();
        for id in down {
            self.restart(id);
        }
    }

    /// Stops driving a server that left the cluster.
    pub fn retire(&mut self, id: NodeId) {
        if let Some(n) = self.nodes.get_mut(&id) {
            n.retired = true;
            n.replica = None;
        }
    }

    /// Runs until `done` holds or `max_ticks` pass; returns whether it held.
    pub fn run_until(&mut self, max_ticks: u64, mut done: impl FnMut(&mut Sim) -> bool) -> bool {
        for _ in 0..max_ticks * UNITS_PER_TICK {
            if done(self) {
                return true;
            }
            self.step();
        }
        done(self)
    }
}
