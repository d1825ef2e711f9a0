//! Seeded scenarios for the simulator: faults and client traffic, optionally membership
//! churn, then a heal phase that checks liveness.

use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use quorate::core::{Membership, NodeId, Role};
use quorate::replica::Request;

use super::clients::SimReply;
use super::hostile;
use super::sim::{ClockDrift, Faults, Rng, Sim, UNITS_PER_TICK};

/// What one run did, for the summary.
#[derive(Debug, Default, Clone, Copy)]
pub struct Stats {
    pub committed: u64,
    pub writes_acked: u64,
    pub writes_refused: u64,
    pub writes_indeterminate: u64,
    pub reads: u64,
    pub reads_failed: u64,
    pub max_term: u64,
    /// Messages the cores dropped at their door (hostile input, mostly).
    pub refused: u64,
    /// Snapshots saved, and received by InstallSnapshot and installed.
    pub snapshots_saved: u64,
    pub snapshots_installed: u64,
    /// Committed retries of session commands, answered from the session table.
    pub duplicates_skipped: u64,
    /// Reads served under a lease.
    pub lease_reads: u64,
}

impl Stats {
    fn add(&mut self, s: Stats) {
        self.committed += s.committed;
        self.writes_acked += s.writes_acked;
        self.writes_refused += s.writes_refused;
        self.writes_indeterminate += s.writes_indeterminate;
        self.reads += s.reads;
        self.reads_failed += s.reads_failed;
        self.max_term = self.max_term.max(s.max_term);
        self.refused += s.refused;
        self.snapshots_saved += s.snapshots_saved;
        self.snapshots_installed += s.snapshots_installed;
        self.duplicates_skipped += s.duplicates_skipped;
        self.lease_reads += s.lease_reads;
    }
}

/// Options of a run.
#[derive(Clone, Copy, Debug)]
pub struct Scenario {
    pub nodes: u64,
    pub fault_ticks: u64,
    pub churn: bool,
    /// Mix messages from non-members with random terms into the network (`hostile.rs`).
    pub hostile: bool,
    /// Lease reads on, with tick clocks that drift.
    pub leases: Option<Leases>,
}

/// Lease reads under clock drift.
#[derive(Clone, Copy, Debug)]
pub struct Leases {
    /// How far beyond the configured bound the clocks drift: 0 keeps the assumption
    /// leases rest on; more breaks it (the simulator should then find stale reads).
    pub beyond: f64,
}

/// The drift bounds a seed may configure: none, realistic, and far beyond any real clock.
const CONFIGURED_DRIFTS: &[f64] = &[0.0, 0.01, 0.05, 0.2, 0.45];

impl Leases {
    /// The drift this seed configures (from a generator of its own), and the drift its
    /// clocks keep to.
    fn drift(&self, seed: u64) -> ClockDrift {
        let configured = Rng::new(seed ^ 0x001e_a5e5).pick(CONFIGURED_DRIFTS).expect("not empty");
        ClockDrift { configured, actual: configured + self.beyond }
    }
}

/// Ticks after healing within which a leader must commit a new entry everywhere, or at
/// least some server must store or apply more: slow catching up is allowed, a stall is not.
pub const LIVENESS_TICKS: u64 = 400;
/// How many times longer catching up may take, while it progresses.
const LIVENESS_EXTENSIONS_MAX: u64 = 10;

/// Runs one seed; panics (with the property that broke, and the last events) on any
/// violation.
pub fn run(seed: u64, sc: Scenario) -> Stats {
    let drift = sc.leases.map(|l| l.drift(seed));
    let mut sim = Sim::with_drift(seed, sc.nodes, Faults::for_seed(seed), drift);
    let result = catch_unwind(AssertUnwindSafe(|| drive(&mut sim, sc)));
    if let Err(panic) = result {
        eprintln!(
            "\nseed {seed}: settings {:?} drift {drift:?}\nlast events before the failure:\n{}",
            sim.settings, sim.trace
        );
        resume_unwind(panic);
    }
    Stats {
        committed: sim.checker.max_committed().0,
        writes_acked: sim.checker.writes_acked,
        writes_refused: sim.checker.writes_refused,
        writes_indeterminate: sim.checker.writes_indeterminate,
        reads: sim.checker.reads_checked,
        reads_failed: sim.checker.reads_failed,
        max_term: sim.max_term_seen,
        refused: sim.refused_seen,
        snapshots_saved: sim.disks().map(|d| d.saves).sum(),
        snapshots_installed: sim.disks().map(|d| d.installs).sum(),
        duplicates_skipped: sim.checker.duplicates_skipped,
        lease_reads: sim.lease_reads_seen,
    }
}

fn drive(sim: &mut Sim, sc: Scenario) {
    let mut churn = Churn { next_id: sc.nodes + 1 };
    let mut forced_election_at = None;
    for _ in 0..sc.fault_ticks * UNITS_PER_TICK {
        sim.step();
        if sim.rng.chance(0.08) {
            // Clients mostly find the leader; some hit a random server and are refused.
            let live = sim.live_ids();
            let target = if sim.rng.chance(0.8) { sim.leader() } else { sim.rng.pick(&live) };
            if let Some(id) = target {
                sim.write(id);
            }
        }
        if sim.rng.chance(0.04) {
            // Session clients retry their unanswered commands anywhere, as remote clients
            // following the leader would: the session table must apply each once.
            let live = sim.live_ids();
            let target = if sim.rng.chance(0.7) { sim.leader() } else { sim.rng.pick(&live) };
            if let Some(id) = target {
                sim.session_write(id, 0.4);
            }
        }
        if sim.rng.chance(0.02) {
            let live = sim.live_ids();
            let target = if sim.rng.chance(0.7) { sim.leader() } else { sim.rng.pick(&live) };
            if let Some(id) = target {
                sim.read(id);
            }
        }
        if sc.leases.is_some() {
            lease_nemesis(sim, &mut forced_election_at);
        }
        if sc.leases.is_some() && sim.rng.chance(0.05) {
            // A client that still believes a deposed leader leads reads there: only a
            // lease that outlives the followers' promises lets it answer stale.
            let leaders = sim.leaders();
            if let Some(id) = sim.rng.pick(&leaders) {
                sim.read(id);
            }
        }
        if sc.churn && sim.rng.chance(0.004) {
            churn.event(sim);
        }
        // Lease runs move leadership more: transfers and forced elections are what the
        // lease rules are about, and a run sees only a few at the churn rate.
        if sc.churn && sc.leases.is_some() && sim.rng.chance(0.008) {
            Churn::move_leadership(sim);
        }
        if sc.hostile && sim.rng.chance(hostile::INJECT_CHANCE) {
            hostile::inject(sim);
        }
    }
    sim.heal();
    check_liveness(sim);
    sim.stop_all_and_check_answers();
}

/// The shape a lease must survive, made frequent: the leader cut off (right after some
/// round, for long enough that the others elect a leader and commit without it), and an
/// election forced about when the followers' promises run out, so a new leader is elected
/// as early as they allow. A lease that outlives the promises then serves stale reads.
fn lease_nemesis(sim: &mut Sim, forced_election_at: &mut Option<(u64, NodeId)>) {
    let election_ticks = u64::from(sim.settings.core.election_ticks);
    if sim.rng.chance(0.002)
        && let Some(leader) = sim.leader()
    {
        let units = sim.rng.between(election_ticks, 4 * election_ticks) * UNITS_PER_TICK;
        sim.isolate(leader, units);
        let voters: Vec<NodeId> = sim.raft(leader).expect("live").membership().voters.keys().copied().collect();
        let others: Vec<NodeId> = voters.into_iter().filter(|&id| id != leader).collect();
        let after = sim.rng.between(election_ticks * UNITS_PER_TICK * 3 / 4, 2 * election_ticks * UNITS_PER_TICK);
        *forced_election_at = sim.rng.pick(&others).map(|id| (sim.now + after, id));
    }
    if let Some((at, id)) = *forced_election_at
        && sim.now >= at
    {
        *forced_election_at = None;
        sim.admin(id, Request::TriggerElection { reply: Sim::ignored() }, "trigger election".into());
    }
    // Clients that still believe the cut-off leader leads keep reading there, and so
    // read as soon as a write elsewhere is acknowledged.
    if let Some(id) = sim.isolated().filter(|&id| sim.raft(id).is_some_and(|r| r.role() == Role::Leader))
        && sim.rng.chance(0.1)
    {
        sim.read(id);
    }
}

/// After healing: a leader emerges, commits a fresh entry, and every member applies it.
fn check_liveness(sim: &mut Sim) {
    let mut marker: Option<((NodeId, Option<u64>), u64)> = None;
    let mut read: Option<u64> = None;
    // Slow disks and one-entry batches can make catching up take long: what must not
    // happen is a stall, so the deadline moves while members keep applying, up to a cap.
    let mut progress = 0;
    let mut stalled_units = 0;
    let ok = sim.run_until(LIVENESS_TICKS * LIVENESS_EXTENSIONS_MAX, |sim| {
        // Progress is any server storing or applying more than a unit before. (Not more
        // than ever before: a follower's long uncommitted tail, truncated by the new leader,
        // once made the sum drop by hundreds, and a learner catching up by one-byte snapshot
        // chunks took longer than the bound to make up for it: found by a lease run.)
        let moved: u64 = sim
            .nodes
            .values()
            .filter_map(|n| n.replica.as_ref())
            .map(|r| r.applied().0 + r.core().persisted_index().0)
            .sum::<u64>()
            + sim.disks().map(|d| d.received).sum::<u64>();
        if moved > progress {
            stalled_units = 0;
        }
        progress = moved;
        stalled_units += 1;
        if stalled_units > LIVENESS_TICKS * UNITS_PER_TICK {
            dump(sim);
        }
        assert!(
            stalled_units <= LIVENESS_TICKS * UNITS_PER_TICK,
            "liveness: nothing stored or applied anywhere for {LIVENESS_TICKS} ticks after healing"
        );
        let Some(leader) = sim.leader() else { return false };
        // (Re-)write whenever leadership moved (even back to the same node in a later
        // term) before the marker committed: its entry may have been truncated.
        let term = sim.raft(leader).map(|r| r.current_term().0);
        // Also when its answer was not `Ok` (a transfer under way, leadership lost), or
        // will not come in time: a writer that no longer leads and was removed from the
        // configuration learns its entry's fate only when its request times out (a leader
        // that removed itself right after taking the marker: found by a lease run).
        let members = sim.raft(leader).map(|r| r.membership().clone()).unwrap_or_default();
        let stale = |(by, cmd): ((NodeId, Option<u64>), u64)| {
            let answered_not_ok = !sim.checker.writes_outstanding.contains(&cmd) && !sim.checker.is_acked(cmd);
            let moved = by != (leader, term);
            let writer_left = moved && !members.contains(by.0) && !sim.checker.is_acked(cmd);
            (moved && sim.checker.index_of(cmd).is_none()) || answered_not_ok || writer_left
        };
        if marker.is_none_or(stale) {
            marker = Some(((leader, term), sim.write(leader)));
        }
        let Some((_, cmd)) = marker else { return false };
        // Its writer must hear `Ok`, not just see it committed.
        let Some(index) = sim.checker.index_of(cmd).filter(|_| sim.checker.is_acked(cmd)) else { return false };
        let members: Vec<NodeId> = sim.raft(leader).map(|r| r.membership().members().collect()).unwrap_or_default();
        let applied = members
            .iter()
            .all(|id| sim.nodes.get(id).and_then(|n| n.replica.as_ref()).is_some_and(|r| r.applied() >= index));
        // And a linearizable read at the leader must be served (asked again if refused).
        match read.filter(|&id| sim.checker.reads_outstanding.contains(&id) || sim.checker.is_served(id)) {
            Some(id) => applied && sim.checker.is_served(id),
            None => {
                read = Some(sim.read(leader));
                false
            }
        }
    });
    if !ok {
        dump(sim);
    }
    assert!(ok, "liveness: members still catching up {LIVENESS_EXTENSIONS_MAX}x{LIVENESS_TICKS} ticks after healing");
}

/// Prints every server's state, for a liveness failure.
fn dump(sim: &Sim) {
    {
        for (id, n) in &sim.nodes {
            match &n.replica {
                Some(r) => eprintln!(
                    "  {id}: {:?} refused={:?} persisted={} unsynced={} applied={} members={:?} learners={:?} cfg_index={} retired={}",
                    r.core(),
                    r.core().refused(),
                    r.core().persisted_index().0,
                    r.storage().unsynced_len(),
                    r.applied().0,
                    r.core().membership().voters.keys().collect::<Vec<_>>(),
                    r.core().membership().learners.keys().collect::<Vec<_>>(),
                    r.core().membership_index().0,
                    n.retired
                ),
                None => eprintln!("  {id}: down, retired={}", n.retired),
            }
        }
    }
}

/// Random membership changes, transfers and forced elections, asked as clients would.
///
/// Removed servers keep running, as they would in production until an operator stops
/// them: they must not disrupt the cluster (dissertation §4.2.3).
struct Churn {
    next_id: NodeId,
}

impl Churn {
    fn event(&mut self, sim: &mut Sim) {
        let Some(leader) = sim.leader() else { return };
        let membership = sim.raft(leader).expect("leader is live").membership().clone();
        let voters: Vec<NodeId> = membership.voters.keys().copied().collect();
        let choice = sim.rng.between(0, 3);
        match choice {
            0 if voters.len() < 7 => self.add(sim, leader),
            1 if voters.len() > 3 || !membership.learners.is_empty() => {
                let members: Vec<NodeId> = membership.members().collect();
                let id = sim.rng.pick(&members).expect("non-empty");
                sim.admin(leader, Request::RemoveServer { id, reply: Sim::ignored() }, format!("remove {id}"));
            }
            2 | 3 => Churn::move_leadership_from(sim, leader, &voters, choice == 2),
            _ => {}
        }
    }

    /// A transfer or a forced election, half and half.
    fn move_leadership(sim: &mut Sim) {
        let Some(leader) = sim.leader() else { return };
        let voters: Vec<NodeId> =
            sim.raft(leader).expect("leader is live").membership().voters.keys().copied().collect();
        let transfer = sim.rng.chance(0.5);
        Churn::move_leadership_from(sim, leader, &voters, transfer);
    }

    fn move_leadership_from(sim: &mut Sim, leader: NodeId, voters: &[NodeId], transfer: bool) {
        if transfer {
            let to = sim.rng.pick(voters).expect("non-empty");
            let request = Request::TransferLeadership { to, reply: Sim::ignored() };
            sim.admin(leader, request, format!("transfer to {to}"));
        } else {
            let id = sim.rng.pick(voters).expect("non-empty");
            sim.admin(id, Request::TriggerElection { reply: Sim::ignored() }, "trigger election".into());
        }
    }

    fn add(&mut self, sim: &mut Sim, leader: NodeId) {
        let id = self.next_id;
        self.next_id += 1;
        sim.add_node(id, Membership::default());
        let refused = Arc::new(AtomicBool::new(false));
        let flag = refused.clone();
        let reply = SimReply::new(move |result: quorate::Result<()>| {
            if result.as_ref().is_err_and(|e| !e.is_indeterminate()) {
                flag.store(true, Ordering::Relaxed);
            }
        });
        sim.admin(leader, Request::AddServer { id, addr: format!("n{id}"), reply }, format!("add {id}"));
        if refused.load(Ordering::Relaxed) {
            // Refused at once, so never in any configuration: stopping it is safe.
            sim.retire(id);
        }
    }
}

/// Seeds to run, from `QUORATE_SIM_SEED_START` (default `default_start`) and
/// `QUORATE_SIM_SEEDS` (default `default_count`).
pub fn seeds(default_start: u64, default_count: u64) -> std::ops::Range<u64> {
    let var = |name: &str, default: u64| std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default);
    let start = var("QUORATE_SIM_SEED_START", default_start);
    start..start + var("QUORATE_SIM_SEEDS", default_count)
}

/// Runs every seed, printing the seed and a replay command for the first failure.
pub fn run_seeds(name: &str, seeds: std::ops::Range<u64>, sc: Scenario) -> Stats {
    let mut total = Stats::default();
    let count = seeds.end - seeds.start;
    for seed in seeds {
        match catch_unwind(|| run(seed, sc)) {
            Ok(s) => total.add(s),
            Err(panic) => {
                eprintln!(
                    "\nsimulator failure: seed={seed} scenario={sc:?}\nreplay: QUORATE_SIM_SEED_START={seed} QUORATE_SIM_SEEDS=1 cargo test --release --test simulator {name} -- --nocapture\n"
                );
                resume_unwind(panic);
            }
        }
    }
    eprintln!(
        "{name}: {count} seeds, {} entries committed; writes: {} acknowledged, {} refused, {} indeterminate; {} linearizable reads checked ({} served under a lease), {} refused or failed; every request answered exactly once; {} snapshots saved, {} installed by InstallSnapshot; {} committed session retries answered from the session table; highest term {}",
        total.committed,
        total.writes_acked,
        total.writes_refused,
        total.writes_indeterminate,
        total.reads,
        total.lease_reads,
        total.reads_failed,
        total.snapshots_saved,
        total.snapshots_installed,
        total.duplicates_skipped,
        total.max_term
    );
    total
}
