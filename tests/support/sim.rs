//! A deterministic simulator: Raft cores wired through a hostile network, all driven by
//! one seeded RNG. One seed decides the whole run; the same seed replays it exactly.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use quorate::core::{CoreConfig, HardState, Log, LogIndex, Membership, Message, NodeId, Payload, Raft, Ready, Role};

use super::checker::{Checker, Fnv, NodeCheck, fingerprint};

/// Virtual time units per tick: nodes tick at staggered offsets, messages take units.
pub const UNITS_PER_TICK: u64 = 4;

/// SplitMix64.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x2545_F491_4F6C_DD1D) ^ 0x1234_5678)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
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
        }
    }
}

/// One simulated server: its core (None while crashed), what it persisted, what it applied.
pub struct SimNode {
    pub raft: Option<Raft>,
    hard: HardState,
    log: Log,
    base: Membership,
    cfg: CoreConfig,
    pub applied: LogIndex,
    state: Fnv,
    check: NodeCheck,
    /// Reads confirmed by the core, waiting for `applied` to reach their index.
    reads: Vec<(u64, LogIndex)>,
    /// Removed from the cluster for good: no longer driven.
    pub retired: bool,
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
    pub nodes: BTreeMap<NodeId, SimNode>,
    net: Vec<InFlight>,
    /// Directed links that drop everything.
    cut: BTreeSet<(NodeId, NodeId)>,
    pub faults: Faults,
    pub checker: Checker,
    /// Reads issued: ctx -> highest index known committed when it was issued.
    read_floor: HashMap<u64, LogIndex>,
    next_ctx: u64,
    pub next_payload: u64,
    pub reads_served: u64,
}

impl Sim {
    /// `n` servers that all start with the same configuration {1..=n}.
    pub fn new(seed: u64, n: u64, faults: Faults) -> Sim {
        let members = Membership::with_voters((1..=n).map(|id| (id, format!("n{id}"))));
        let mut sim = Sim {
            seed,
            rng: Rng::new(seed),
            now: 0,
            nodes: BTreeMap::new(),
            net: Vec::new(),
            cut: BTreeSet::new(),
            faults,
            checker: Checker::default(),
            read_floor: HashMap::new(),
            next_ctx: 1,
            next_payload: 1,
            reads_served: 0,
        };
        for id in 1..=n {
            sim.add_node(id, members.clone());
        }
        sim
    }

    /// Starts a fresh server with configuration `base` (empty: it waits to be added).
    pub fn add_node(&mut self, id: NodeId, base: Membership) {
        let mut cfg = CoreConfig::new(id);
        cfg.seed = self.seed.wrapping_mul(31).wrapping_add(id);
        cfg.max_append_entries = 1 + (self.seed % 8) as usize;
        cfg.max_inflight = 1 + (self.seed % 4) as usize;
        let node = SimNode {
            raft: Some(Raft::new(cfg.clone(), base.clone())),
            hard: HardState::default(),
            log: Log::default(),
            base,
            cfg,
            applied: LogIndex(0),
            state: Fnv::default(),
            check: NodeCheck::default(),
            reads: Vec::new(),
            retired: false,
        };
        self.nodes.insert(id, node);
    }

    pub fn live_ids(&self) -> Vec<NodeId> {
        self.nodes.iter().filter(|(_, n)| n.raft.is_some() && !n.retired).map(|(&id, _)| id).collect()
    }

    /// The leader with the highest term among live servers.
    pub fn leader(&self) -> Option<NodeId> {
        self.nodes
            .iter()
            .filter_map(|(&id, n)| {
                n.raft.as_ref().filter(|r| r.role() == Role::Leader && !n.retired).map(|r| (r.current_term(), id))
            })
            .max()
            .map(|(_, id)| id)
    }

    pub fn raft(&mut self, id: NodeId) -> Option<&mut Raft> {
        self.nodes.get_mut(&id).and_then(|n| n.raft.as_mut())
    }

    /// Runs `f` on server `id`'s core and processes what it produced.
    pub fn with<R>(&mut self, id: NodeId, f: impl FnOnce(&mut Raft) -> R) -> Option<R> {
        let r = f(self.raft(id)?);
        self.process(id);
        Some(r)
    }

    /// One unit of virtual time: faults, ticks, deliveries.
    pub fn step(&mut self) {
        self.now += 1;
        self.maybe_fault();
        let ids: Vec<NodeId> = self.live_ids();
        for id in ids {
            if (self.now + id).is_multiple_of(UNITS_PER_TICK) {
                self.with(id, Raft::tick);
            }
        }
        self.deliver_due();
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
        // swap_remove scrambles order: sort by arrival time, then break ties by the RNG
        // so the order is still decided by the seed alone.
        due.sort_by_key(|m| (m.at, m.from, m.to));
        for m in due {
            let deliverable = self.nodes.get(&m.to).is_some_and(|n| n.raft.is_some() && !n.retired);
            if deliverable && !self.cut.contains(&(m.from, m.to)) {
                self.with(m.to, |r| r.step(m.from, m.msg));
            }
        }
    }

    /// Persists, sends, applies and checks what server `id` produced.
    fn process(&mut self, id: NodeId) {
        let node = self.nodes.get_mut(&id).expect("known node");
        let Some(raft) = node.raft.as_mut() else { return };
        let ready: Ready = raft.take_ready();
        // Persist first (the ordering rule on `Ready`).
        if let Some(hard) = ready.hard_state {
            node.hard = hard;
        }
        if let Some(from) = ready.log_changed_from {
            node.log.truncate_after(from.prev());
            for e in &raft.log().entries()[(from.0 - 1 - raft.log().snapshot_index().0) as usize..] {
                node.log.push(e.clone());
            }
        }
        for (ctx, index) in ready.reads.iter().map(|r| (r.ctx, r.index)) {
            node.reads.push((ctx, index));
        }
        for ctx in &ready.dropped_reads {
            self.read_floor.remove(ctx);
        }
        let node = self.nodes.get_mut(&id).expect("known node");
        let raft = node.raft.as_ref().expect("live");
        self.checker.check_node(raft, &mut node.check, ready.log_changed_from);
        self.apply(id);
        let mut messages = ready.messages;
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
    }

    /// Whether leader `id` crashes part-way through sending this batch: far more likely
    /// while it holds uncommitted entries (just elected, or replicating), which then end
    /// up on only some servers.
    fn may_crash_mid_send(&mut self, id: NodeId, messages: usize) -> bool {
        let node = &self.nodes[&id];
        let Some(raft) = node.raft.as_ref() else { return false };
        if raft.role() != Role::Leader || messages < 2 {
            return false;
        }
        let live = self.live_ids().len();
        if live * 2 <= self.nodes.len() + 1 {
            return false;
        }
        let has_uncommitted = raft.commit_index() < raft.log().last_index();
        let p = if has_uncommitted { self.faults.crash_mid_send * 10.0 } else { self.faults.crash_mid_send };
        self.rng.chance(p)
    }

    fn apply(&mut self, id: NodeId) {
        let node = self.nodes.get_mut(&id).expect("known node");
        let raft = node.raft.as_ref().expect("live");
        while node.applied < raft.commit_index() {
            let index = node.applied.next();
            let entry = raft.log().get(index).expect("committed entry in log");
            if let Payload::Command(bytes) = &entry.payload {
                node.state.write(bytes);
            }
            node.applied = index;
            self.checker.check_applied(id, index, node.state.0);
        }
        let applied = node.applied;
        let mut served = Vec::new();
        node.reads.retain(|&(ctx, index)| {
            if index <= applied {
                served.push((ctx, index));
                false
            } else {
                true
            }
        });
        for (ctx, index) in served {
            // Linearizability: the read sees every write committed before it was issued.
            let floor = self.read_floor.remove(&ctx).expect("read was issued");
            assert!(index >= floor, "stale read on node {id}: read index {index} < committed {floor} at issue");
            self.reads_served += 1;
        }
    }

    fn send(&mut self, from: NodeId, to: NodeId, msg: Message) {
        if self.rng.chance(self.faults.drop) {
            return;
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

    /// Proposes a unique command at server `id`; returns (index, fingerprint) if accepted.
    pub fn propose(&mut self, id: NodeId) -> Option<(LogIndex, u64)> {
        let payload = self.next_payload.to_le_bytes().to_vec();
        self.next_payload += 1;
        let fp = fingerprint(&Payload::Command(payload.clone()));
        let index = self.with(id, |r| r.propose(payload))?.ok()?;
        Some((index, fp))
    }

    /// Issues a linearizable read at server `id`.
    pub fn read(&mut self, id: NodeId) {
        let ctx = self.next_ctx;
        self.next_ctx += 1;
        self.read_floor.insert(ctx, self.checker.max_committed());
        if self.with(id, |r| r.read_index(ctx)).and_then(Result::ok).is_none() {
            self.read_floor.remove(&ctx);
        }
    }

    fn maybe_fault(&mut self) {
        let f = self.faults;
        if self.rng.chance(f.partition) {
            self.partition();
        }
        if !self.cut.is_empty() && self.rng.chance(f.heal) {
            self.cut.clear();
        }
        let live = self.live_ids();
        let all = self.nodes.len();
        if live.len() * 2 > all + 1
            && self.rng.chance(f.crash)
            && let Some(id) = self.rng.pick(&live)
        {
            self.crash(id);
        }
        if live.len() * 2 > all + 1
            && self.rng.chance(f.crash_leader)
            && let Some(id) = self.leader()
        {
            self.crash(id);
        }
        if self.rng.chance(f.restart) {
            let down: Vec<NodeId> =
                self.nodes.iter().filter(|(_, n)| n.raft.is_none() && !n.retired).map(|(&id, _)| id).collect();
            if let Some(id) = self.rng.pick(&down) {
                self.restart(id);
            }
        }
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
    }

    /// Crash: volatile state and in-flight reads are lost; persisted state survives.
    pub fn crash(&mut self, id: NodeId) {
        let node = self.nodes.get_mut(&id).expect("known node");
        node.raft = None;
        for (ctx, _) in node.reads.drain(..) {
            self.read_floor.remove(&ctx);
        }
    }

    /// Restarts from persisted state; the state machine is rebuilt by re-applying the log.
    pub fn restart(&mut self, id: NodeId) {
        let node = self.nodes.get_mut(&id).expect("known node");
        let raft = Raft::recover(node.cfg.clone(), node.hard, node.log.clone(), node.base.clone());
        node.raft = Some(raft);
        node.applied = LogIndex(0);
        node.state = Fnv::default();
        node.check = NodeCheck::default();
        self.process(id);
    }

    /// Ends all faults: heal partitions, restart crashed servers, stop dropping.
    pub fn heal(&mut self) {
        self.faults = Faults::none();
        self.cut.clear();
        let down: Vec<NodeId> =
            self.nodes.iter().filter(|(_, n)| n.raft.is_none() && !n.retired).map(|(&id, _)| id).collect();
        for id in down {
            self.restart(id);
        }
    }

    /// Stops driving a server that left the cluster.
    pub fn retire(&mut self, id: NodeId) {
        if let Some(n) = self.nodes.get_mut(&id) {
            n.retired = true;
            n.raft = None;
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
