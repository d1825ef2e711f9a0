//! The deterministic simulator over many seeds: safety after every step, liveness after
//! healing. A failure prints its seed and a one-line replay command.
//!
//! Soak: `QUORATE_SIM_SEEDS=20000 cargo test --release --test simulator`.

mod support;

use support::workload::{Leases, Scenario, run, run_seeds, seeds};

const SEEDS_PER_TEST: u64 = 4000;
const FAULT_TICKS: u64 = 600;

fn scenario(nodes: u64, churn: bool) -> Scenario {
    Scenario { nodes, fault_ticks: FAULT_TICKS, churn, hostile: false, leases: None }
}

/// Seeds of the hostile-input runs (each also churns membership).
const HOSTILE_SEEDS: u64 = 2000;

/// Messages with random terms (extremes included) and indexes from ids outside every
/// configuration are mixed into the traffic; every safety check still holds, and the
/// cluster is live once faults end.
#[test]
fn hostile_input_from_non_members() {
    for nodes in [3, 5] {
        let sc = Scenario { hostile: true, ..scenario(nodes, true) };
        let stats = run_seeds("hostile_input_from_non_members", seeds(0, HOSTILE_SEEDS), sc);
        assert!(stats.committed > 0, "the workload committed nothing");
        assert!(stats.refused > 0, "no hostile message reached a core");
    }
}

#[test]
fn safety_and_liveness_3_nodes() {
    let stats = run_seeds("safety_and_liveness_3_nodes", seeds(0, SEEDS_PER_TEST), scenario(3, false));
    assert!(stats.committed > 0, "the workload committed nothing");
}

#[test]
fn safety_and_liveness_5_nodes() {
    let stats = run_seeds("safety_and_liveness_5_nodes", seeds(0, SEEDS_PER_TEST), scenario(5, false));
    assert!(stats.committed > 0);
}

#[test]
fn safety_and_liveness_7_nodes() {
    let stats = run_seeds("safety_and_liveness_7_nodes", seeds(0, SEEDS_PER_TEST), scenario(7, false));
    assert!(stats.committed > 0);
}

#[test]
fn membership_churn() {
    let stats = run_seeds("membership_churn", seeds(0, SEEDS_PER_TEST), scenario(3, true));
    assert!(stats.committed > 0);
}

/// A cluster that starts with one voter and grows (and shrinks) by churn: the only shape
/// in which a lone voter leads, and learners follow it.
#[test]
fn membership_churn_from_one_voter() {
    let stats = run_seeds("membership_churn_from_one_voter", seeds(0, SEEDS_PER_TEST / 4), scenario(1, true));
    assert!(stats.committed > 0);
}

/// Seeds of each lease-read run.
const LEASE_SEEDS: u64 = 2000;

fn lease_scenario(nodes: u64, churn: bool) -> Scenario {
    Scenario { leases: Some(Leases { beyond: 0.0 }), ..scenario(nodes, churn) }
}

/// Lease reads (dissertation §6.4.1) with every node's tick clock drifting within the
/// configured bound (drawn per seed, from none to 0.45), under every fault, with and
/// without membership churn, transfers and forced elections, and with clients reading at
/// any server that believes it leads (a deposed leader may not know yet): every read sees
/// every write acknowledged, and every state read, before it was issued.
#[test]
fn lease_reads_under_clock_drift() {
    for (nodes, churn) in [(3, false), (3, true), (5, true)] {
        let stats = run_seeds("lease_reads_under_clock_drift", seeds(0, LEASE_SEEDS), lease_scenario(nodes, churn));
        assert!(stats.lease_reads > 0, "no read was served under a lease");
    }
}

/// Lease-run seeds on which the simulator caught a lease rule broken on purpose (each
/// passes with the rule in place): (seed, nodes, churn, the mutation that failed on it).
const LEASE_REGRESSIONS: &[(u64, u64, bool, &str)] = &[
    // (a) A lease of twice the election timeout: a cut-off leader served stale reads.
    (22, 3, false, "lease of 2 * election_ticks"),
    (36, 3, false, "lease of 2 * election_ticks"),
    (39, 3, false, "lease of 2 * election_ticks"),
    (42, 3, false, "lease of 2 * election_ticks"),
    // (b) A leader that sent TimeoutNow kept serving lease reads: the target, elected past
    // every promise, committed writes the old leader's reads did not see.
    (273, 3, true, "no end of the lease on a transfer"),
    (303, 3, true, "no end of the lease on a transfer"),
    (427, 3, true, "no end of the lease on a transfer"),
    (678, 3, true, "no end of the lease on a transfer"),
    (933, 3, true, "no end of the lease on a transfer"),
];

#[test]
fn lease_regression_seeds() {
    for &(seed, nodes, churn, _) in LEASE_REGRESSIONS {
        run(seed, lease_scenario(nodes, churn));
    }
}

/// The checker's side of the clock assumption: with clocks drifting 0.9 beyond the bound
/// the lease is computed for, these seeds serve a stale read, and the simulator says so.
/// (0.45 beyond is caught too, but rarely: seed 20499 of 30,000.)
#[test]
fn drift_beyond_the_bound_is_caught() {
    for seed in [960, 2886, 3024, 3768] {
        let sc = Scenario { leases: Some(Leases { beyond: 0.9 }), ..scenario(3, false) };
        let failure = std::panic::catch_unwind(|| run(seed, sc)).expect_err("drift beyond the bound went unnoticed");
        let why = failure.downcast_ref::<String>().map_or("", String::as_str);
        assert!(why.contains("stale read"), "seed {seed} failed otherwise: {why}");
    }
    let sc = Scenario { leases: Some(Leases { beyond: 0.45 }), ..scenario(3, false) };
    assert!(std::panic::catch_unwind(|| run(20499, sc)).is_err(), "seed 20499, 0.45 beyond");
}

/// Seeds that once failed, kept as regressions: (seed, nodes, churn). The first three
/// failed on the simulator before it drove replicas; they replay other histories now.
const REGRESSIONS: &[(u64, u64, bool)] = &[
    // A `join()` server snapshotted before any configuration entry in its log, recording
    // an empty configuration that every follower refused: one behind never caught up.
    (2347, 3, true),
    // (With session clients) a registration and an older write waited at one index,
    // proposed in different terms; only one was answered.
    (382, 3, false),
    // A leader removing itself lost leadership before the change committed; its log was
    // the only up-to-date one and it refused to campaign: the cluster never recovered.
    (448, 3, true),
    // A learner kept a silent leader's id forever, so its lease never ended and it ignored
    // the pre-votes of the only candidate that could win.
    (2131, 3, true),
    // (A simulator bug) the liveness check did not re-propose its marker when the same
    // node regained leadership in a later term after the marker had been truncated.
    (270295, 3, true),
    // (A simulator bug) a leader that crashed while sending its AddServer entry had the
    // new node retired, though the entry reached a follower and committed later.
    (16, 3, true),
    // (A simulator bug) the liveness marker was refused (a transfer was under way) and
    // never written again.
    (370, 3, true),
    // A learner catching up one entry per round trip behind a slow disk took longer than
    // the liveness bound: liveness now means no stall rather than a fixed deadline.
    (3102, 3, true),
    // Two voters, one catching up an entry per slow sync: commit waits for it, so nothing
    // is applied for long while the log still moves. Storing counts as progress now.
    (107637, 3, true),
    // Dropping non-members' messages left a voter whose configuration was behind unable to
    // hear the leader added since (it never caught up); fixed by LeaderHint.
    (657, 3, true),
    // The same for a learner, which never campaigns; fixed by LeaderQuery.
    (945, 3, true),
    // Snapshots (each found while building them). A joining server refused InstallSnapshot
    // from a leader outside its empty configuration (guard.rs now admits it like
    // AppendEntries).
    (0, 1, true),
    // Compaction ran before the turn's installed snapshot was stored, so storage would have
    // dropped log entries no durable snapshot covered.
    (481, 1, true),
    // A follower that held more of the snapshot than the leader had resent asked for a
    // later offset, and the leader ignored it: the transfer stalled for good.
    (336, 3, false),
    // Duplicated acknowledgements drove a chunk count to zero while chunks were lost: the
    // leader waited for answers that would never come. In-flight is now counted in bytes.
    (627, 5, false),
    // Learners whose configuration was behind knew only a voter that had since removed
    // itself and handed over to a server added after them: nobody vouched for the new
    // leader and they never caught up. A removed server now names a voter of the
    // configuration that removed it, and a vouch holds for the vouched member's later terms.
    (114, 1, true),
    // Found by the 112,000-seed soak. A leader that had just removed itself took a forged
    // heartbeat from a non-member (the exception for servers outside their configuration
    // was meant for `join()` servers with none) and committed its own uncommitted entry.
    // Now only a server never yet in a configuration takes any leader's word.
    (509661, 3, true),
    // A learner behind knew only a voter since removed, which knew no leader and said
    // nothing; a server knowing no leader now names the voters it knows.
    (511405, 1, true),
    // With the exception narrowed to servers with no configuration, a `join()` server
    // whose log held configurations from before its addition was cut off: narrowed
    // instead to servers never yet in one.
    (512718, 1, true),
];

#[test]
fn regression_seeds() {
    for &(seed, nodes, churn) in REGRESSIONS {
        run(seed, scenario(nodes, churn));
    }
}
