//! Seeded scenarios for the simulator: faults and client traffic, optionally membership
//! churn, then a heal phase that checks liveness.

use quorate::core::{LogIndex, Membership, NodeId, Raft};

use super::hostile;
use super::sim::{Faults, Sim, UNITS_PER_TICK};

/// What one run did, for the summary.
#[derive(Debug, Default, Clone, Copy)]
pub struct Stats {
    pub committed: u64,
    pub reads: u64,
    pub max_term: u64,
    /// Messages the cores dropped at their door (hostile input, mostly).
    pub refused: u64,
}

/// Options of a run.
#[derive(Clone, Copy, Debug)]
pub struct Scenario {
    pub nodes: u64,
    pub fault_ticks: u64,
    pub churn: bool,
    /// Mix messages from non-members with random terms into the network (`hostile.rs`).
    pub hostile: bool,
}

/// Ticks after healing within which a leader must commit a new entry everywhere.
pub const LIVENESS_TICKS: u64 = 400;

/// Runs one seed; panics (with the property that broke) on any violation.
pub fn run(seed: u64, sc: Scenario) -> Stats {
    let mut sim = Sim::new(seed, sc.nodes, Faults::for_seed(seed));
    let mut churn = Churn { next_id: sc.nodes + 1 };
    for _ in 0..sc.fault_ticks * UNITS_PER_TICK {
        sim.step();
        if sim.rng.chance(0.08) {
            // Clients mostly find the leader; some hit a random server and are refused.
            let live = sim.live_ids();
            let target = if sim.rng.chance(0.8) { sim.leader() } else { sim.rng.pick(&live) };
            if let Some(id) = target {
                sim.propose(id);
            }
        }
        if sim.rng.chance(0.02) {
            let live = sim.live_ids();
            if let Some(id) = sim.rng.pick(&live) {
                sim.read(id);
            }
        }
        if sc.churn && sim.rng.chance(0.004) {
            churn.event(&mut sim);
        }
        if sc.hostile && sim.rng.chance(hostile::INJECT_CHANCE) {
            hostile::inject(&mut sim);
        }
    }
    sim.heal();
    check_liveness(&mut sim, seed);
    Stats {
        committed: sim.checker.max_committed().0,
        reads: sim.reads_served,
        max_term: sim.nodes.values().filter_map(|n| n.raft.as_ref()).map(|r| r.current_term().0).max().unwrap_or(0),
        refused: sim.nodes.values().filter_map(|n| n.raft.as_ref()).map(|r| r.refused().total()).sum(),
    }
}

/// After healing: a leader emerges, commits a fresh entry, and every member applies it.
fn check_liveness(sim: &mut Sim, seed: u64) {
    let mut marker = None;
    let ok = sim.run_until(LIVENESS_TICKS, |sim| {
        let Some(leader) = sim.leader() else { return false };
        // (Re-)propose whenever leadership moved (even back to the same node in a later
        // term) before the marker committed: its entry may have been truncated.
        let term = sim.raft(leader).map(|r| r.current_term());
        if marker.is_none_or(|(by, index, fp)| by != (leader, term) && !sim.checker.is_committed(index, fp)) {
            marker = sim.propose(leader).map(|(index, fp)| ((leader, term), index, fp));
        }
        let Some((_, index, fp)) = marker else { return false };
        if !sim.checker.is_committed(index, fp) {
            return false;
        }
        let members: Vec<NodeId> = sim.raft(leader).map(|r| r.membership().members().collect()).unwrap_or_default();
        members.iter().all(|id| sim.nodes.get(id).is_some_and(|n| n.applied >= index))
    });
    if !ok {
        for (id, n) in &sim.nodes {
            match &n.raft {
                Some(r) => eprintln!(
                    "  {id}: {r:?} applied={} members={:?} learners={:?} cfg_index={} retired={}",
                    n.applied.0,
                    r.membership().voters.keys().collect::<Vec<_>>(),
                    r.membership().learners.keys().collect::<Vec<_>>(),
                    r.membership_index().0,
                    n.retired
                ),
                None => eprintln!("  {id}: down, retired={}", n.retired),
            }
        }
    }
    assert!(
        ok,
        "liveness: seed {seed}: no entry committed and applied on all members within {LIVENESS_TICKS} ticks after healing"
    );
}

/// Random membership changes, transfers and forced elections.
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
        match sim.rng.between(0, 3) {
            0 if voters.len() < 7 => self.add(sim, leader),
            1 if voters.len() > 3 || !membership.learners.is_empty() => {
                let members: Vec<NodeId> = membership.members().collect();
                let id = sim.rng.pick(&members).expect("non-empty");
                sim.with(leader, |r| r.remove_server(id));
            }
            2 => {
                let to = sim.rng.pick(&voters).expect("non-empty");
                sim.with(leader, |r| r.transfer_leadership(to));
            }
            3 => {
                let id = sim.rng.pick(&voters).expect("non-empty");
                sim.with(id, Raft::trigger_election);
            }
            _ => {}
        }
    }

    fn add(&mut self, sim: &mut Sim, leader: NodeId) {
        let id = self.next_id;
        self.next_id += 1;
        sim.add_node(id, Membership::default());
        let added = sim.with(leader, |r| r.add_server(id, format!("n{id}")));
        if !matches!(added, Some(Ok(_))) {
            // Never in any configuration: stopping it is safe.
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
        let result = std::panic::catch_unwind(|| run(seed, sc));
        match result {
            Ok(s) => {
                total.committed += s.committed;
                total.reads += s.reads;
                total.max_term = total.max_term.max(s.max_term);
                total.refused += s.refused;
            }
            Err(panic) => {
                eprintln!(
                    "\nsimulator failure: seed={seed} scenario={sc:?}\nreplay: QUORATE_SIM_SEED_START={seed} QUORATE_SIM_SEEDS=1 cargo test --release --test simulator {name} -- --nocapture\n"
                );
                std::panic::resume_unwind(panic);
            }
        }
    }
    eprintln!(
        "{name}: {count} seeds, {} entries committed, {} linearizable reads checked, highest term {}",
        total.committed, total.reads, total.max_term
    );
    let _ = LogIndex(0);
    total
}
