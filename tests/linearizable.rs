//! Jepsen-style chaos over real TCP, checked for linearizability.
//!
//! Five durable nodes whose every directed link runs through a proxy; concurrent clients
//! that follow the leader, three on each of eight keys (four registers: write, CAS, read;
//! four lists: append, read), every written value unique; and a nemesis that partitions,
//! bridges, black-holes, delays, cuts one way, and stops and restarts nodes (a small
//! snapshot threshold makes restarted and cut-off nodes catch up by InstallSnapshot).
//! Each run ends with the faults healed, a leader, and a linearizable read of every key;
//! its history (JSON lines, Porcupine-style) is written under
//! `target/chaos-histories/` and checked: by `support::linearizability::check`, and for
//! lists directly (no acknowledged append lost, none applied twice, one order of appends).
//! A variant runs `kv` example nodes as processes killed with `SIGKILL`; another proves
//! the check can fail, with reads deliberately served stale by an isolated follower.
//!
//! Every run prints its seed and the command that replays its schedule:
//! `QUORATE_CHAOS_SEED=S cargo test --release --test linearizable NAME` (the seed fixes
//! the faults and the operations; thread timing still varies). A soak:
//! `QUORATE_CHAOS_SECS=N` runs random schedules (and process kills) for N seconds.

mod support;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use support::cluster::wait_until;
use support::history::{F, History, Input, Op, Output, Value};
use support::kvclients::{ChaosCluster, KvClient, Reads, Workload, check_effects, final_reads, is_list, keys};
use support::kvmodel::KvModel;
use support::kvprocs::{self, KvProcs, Next};
use support::linearizability::{self, Anomaly};
use support::nemesis::{Schedule, Target, hold_for};
use support::proxy::LinkMode;
use support::sim::Rng;

const NODES: usize = 5;
const REGISTERS: usize = 4;
const LISTS: usize = 4;
const CLIENTS_PER_KEY: usize = 3;
/// How long each fault is held.
const HOLD: Duration = Duration::from_secs(2);
/// Seconds of random schedules `random_schedules` runs without `QUORATE_CHAOS_SECS`.
const RANDOM_SECS_DEFAULT: u64 = 8;
/// A soak checks one history per this much time (with fresh keys), so each stays a size
/// the checker can search.
const EPOCH: Duration = Duration::from_secs(30);
/// Client id of the final reads.
const FINAL_CLIENT: u64 = 1_000_000;

/// One test at a time: each loads a 2-core machine on its own.
static SERIAL: Mutex<()> = Mutex::new(());

/// Takes the serial lock, and prints the run's seed and how to replay it.
fn begin(name: &str) -> (MutexGuard<'static, ()>, u64, Rng) {
    let serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let _ = env_logger::builder().is_test(true).try_init();
    let seed = match std::env::var("QUORATE_CHAOS_SEED").ok().and_then(|v| v.parse().ok()) {
        Some(seed) => seed,
        None if soak_secs().is_some() => {
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
            now.as_nanos() as u64 % 1_000_000_007
        }
        None => 1,
    };
    eprintln!("{name}: seed={seed} (replay: {})", replay(name, seed));
    (serial, seed, Rng::new(seed))
}

fn replay(name: &str, seed: u64) -> String {
    let secs = soak_secs().map(|s| format!("QUORATE_CHAOS_SECS={s} ")).unwrap_or_default();
    format!("{secs}QUORATE_CHAOS_SEED={seed} cargo test --release --test linearizable {name}")
}

fn soak_secs() -> Option<u64> {
    std::env::var("QUORATE_CHAOS_SECS").ok().and_then(|v| v.parse().ok())
}

/// Where histories are kept: `chaos-histories/` in the target dir, which outlives the test.
fn histories_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| {
        let exe = std::env::current_exe().expect("test binary path");
        exe.ancestors().nth(3).expect("target/<profile>/deps/<test>").to_path_buf()
    });
    let dir = target.join("chaos-histories");
    std::fs::create_dir_all(&dir).expect("create the histories dir");
    dir
}

// ---------------------------------------------------------------------------------------
// Checking a history.

/// Writes the history, prints its summary, and checks it; panics with the anomaly, the
/// history's path and the replay command.
fn verify(name: &str, seed: u64, history: &History, finals: &BTreeMap<String, Value>) {
    let ops = history.ops();
    let path = history.write_jsonl(&histories_dir(), &format!("{name}-seed{seed}"));
    eprintln!("{name}: {}; history {}", summary(&ops), path.display());
    let fail = |why: String| -> ! {
        panic!("{name} seed={seed}: {why}\n  history: {}\n  replay: {}", path.display(), replay(name, seed))
    };
    if let Err(why) = check_effects(&ops, finals) {
        fail(why);
    }
    match linearizability::check(&ops) {
        Ok(r) => eprintln!(
            "{name}: linearizable: {} keys, {} ops ({} info), {} configurations explored",
            r.keys, r.ops, r.info_ops, r.configurations
        ),
        Err(anomaly) => fail(anomaly.to_string()),
    }
}

/// One line counting what the clients were told.
fn summary(ops: &[Op]) -> String {
    let count = |p: &dyn Fn(&Op) -> bool| ops.iter().filter(|op| p(op)).count();
    let done = count(&|op| matches!(op.output, Output::Done | Output::Swapped(_) | Output::Read(_)));
    let info = count(&|op| op.output == Output::Info);
    let of = |f: F| count(&|op| op.input.f() == f);
    let swapped = count(&|op| op.output == Output::Swapped(true));
    let longest = ops.iter().filter_map(|op| match &op.output {
        Output::Read(Value::List(l)) => Some(l.len()),
        _ => None,
    });
    format!(
        "{} ops: {done} ok, {} fail, {info} info; {} reads, {} writes, {} cas ({swapped} swapped), {} appends; longest list {}",
        ops.len(),
        ops.len() - done - info,
        of(F::Read),
        of(F::Write),
        of(F::Cas),
        of(F::Append),
        longest.max().unwrap_or(0)
    )
}

// ---------------------------------------------------------------------------------------
// In-process nodes behind proxies.

enum Plan {
    /// These schedules, once each, in this order.
    Fixed(&'static [Schedule]),
    /// Schedules picked at random for this long.
    Random(Duration),
}

fn run_schedules(name: &str, plan: Plan) {
    let (_serial, seed, mut rng) = begin(name);
    let cluster = ChaosCluster::start(NODES);
    cluster.await_leader();
    let values = Arc::new(AtomicI64::new(1));
    let started = Instant::now();
    let mut round = 0;
    for epoch in 0.. {
        let history = History::new();
        let prefix = if epoch == 0 { String::new() } else { format!("e{epoch}.") };
        let keys = keys(&prefix, REGISTERS, LISTS);
        let workload = Workload::start(&cluster.clients, &history, &keys, CLIENTS_PER_KEY, &values, 1, &mut rng);
        workload.await_progress(20, "before any fault");
        let epoch_started = Instant::now();
        let more = loop {
            let schedule = match &plan {
                Plan::Fixed(list) if round < list.len() => list[round],
                Plan::Fixed(_) => break false,
                Plan::Random(secs) if started.elapsed() >= *secs => break false,
                Plan::Random(_) if epoch_started.elapsed() >= EPOCH => break true,
                Plan::Random(_) => rng.pick(&Schedule::ALL).unwrap(),
            };
            let what = schedule.run(&cluster, &mut rng, HOLD);
            eprintln!("{name}: round {round} at {:.1}s: {schedule}: {what}", started.elapsed().as_secs_f64());
            round += 1;
            cluster.await_leader();
            workload.await_progress(10, &format!("after {schedule} healed"));
        };
        let stats = workload.stop();
        let finals = final_reads(&cluster.clients, &history, &keys, FINAL_CLIENT);
        cluster.await_converged();
        eprintln!("{name}: clients {stats:?}; snapshot index per node {:?}", cluster.snapshot_indexes());
        let label = if epoch == 0 && !more { name.to_string() } else { format!("{name}-epoch{epoch}") };
        verify(&label, seed, &history, &finals);
        if !more {
            break;
        }
    }
    let snapshots = cluster.snapshot_indexes();
    assert!(snapshots.values().all(|&i| i > 0), "some node never took a snapshot: {snapshots:?}");
}

#[test]
fn partitions_majority_minority_isolated_leader_and_bridge() {
    run_schedules(
        "partitions_majority_minority_isolated_leader_and_bridge",
        Plan::Fixed(&[Schedule::MajorityMinority, Schedule::IsolateLeader, Schedule::Bridge]),
    );
}

#[test]
fn one_way_flaky_and_slow_links() {
    run_schedules(
        "one_way_flaky_and_slow_links",
        Plan::Fixed(&[Schedule::OneWayRandom, Schedule::LeaderDeaf, Schedule::Flaky, Schedule::Slow]),
    );
}

#[test]
fn nodes_stopped_and_restarted_on_their_data_dirs() {
    run_schedules(
        "nodes_stopped_and_restarted_on_their_data_dirs",
        Plan::Fixed(&[Schedule::RestartNode, Schedule::RestartLeader, Schedule::RestartMinority]),
    );
}

/// The soak: `QUORATE_CHAOS_SECS=N` runs random schedules for N seconds.
#[test]
fn random_schedules() {
    let secs = soak_secs().unwrap_or(RANDOM_SECS_DEFAULT);
    run_schedules("random_schedules", Plan::Random(Duration::from_secs(secs)));
}

// ---------------------------------------------------------------------------------------
// The check can fail.

/// A deliberately broken client, which reads with `read_local` on a follower cut off from
/// the others while the majority goes on writing, must be caught: after each write or
/// append is acknowledged the isolated follower serves the state before it, so the history
/// cannot be linearized. The checker must say so, and so must the direct list checks.
#[test]
fn stale_reads_from_an_isolated_follower_are_not_linearizable() {
    let name = "stale_reads_from_an_isolated_follower_are_not_linearizable";
    let (_serial, seed, mut rng) = begin(name);
    let cluster = ChaosCluster::start(3);
    let leader = cluster.await_leader();
    let victim = (1..=3).filter(|&id| id != leader).max().unwrap();
    let history = History::new();
    let values = AtomicI64::new(1);
    let mut writer = KvClient::new(1, 10, cluster.clients.clone(), leader, history.clone(), Reads::Linearizable);
    let mut reader = KvClient::new(2, 10, cluster.clients.clone(), victim, history.clone(), Reads::StaleOn(victim));
    let keys = keys("", 3, 1);
    for key in &keys {
        let old = write_until_done(&mut writer, key, &values);
        let local = cluster.client(victim);
        let before = local_value(&local, key);
        wait_until(&format!("node {victim} applies the first write to {key}"), || local_value(&local, key) != before);
        let old_state = local_value(&local, key);
        let mode = if rng.chance(0.5) { LinkMode::Cut } else { LinkMode::Drop };
        cluster.net().isolate(victim, mode);
        let new = write_until_done(&mut writer, key, &values);
        let seen = reader.call(key, Input::Read);
        assert_eq!(seen, Output::Read(old_state.clone()), "node {victim} ({mode:?}) must serve the state before {new}");
        eprintln!("{name}: {key}: {old} then {new} acknowledged; node {victim} ({mode:?}) served {old_state:?}");
        cluster.net().heal();
    }
    let path = history.write_jsonl(&histories_dir(), &format!("{name}-seed{seed}"));
    let ops = history.ops();
    let why = check_effects(&ops, &BTreeMap::new()).expect_err("the list checks must catch the stale list read");
    assert!(why.contains("acknowledged before it began"), "{why}");
    match linearizability::check(&ops) {
        Err(Anomaly::NotLinearizable { key, details }) => {
            eprintln!("{name}: caught as expected, on {key}: {details}");
        }
        Err(other) => panic!("expected NotLinearizable, got: {other}\n  history: {}", path.display()),
        Ok(r) => panic!("the checker accepted {} ops with stale reads\n  history: {}", r.ops, path.display()),
    }
}

/// Writes a fresh value to `key` (a register) or appends one (a list) until the leader
/// acknowledges it; returns the value.
fn write_until_done(client: &mut KvClient, key: &str, values: &AtomicI64) -> i64 {
    let mut written = 0;
    wait_until(&format!("a write to {key} is acknowledged"), || {
        written = values.fetch_add(1, Ordering::SeqCst);
        let input = if is_list(key) { Input::Append(written) } else { Input::Write(written) };
        client.call(key, input) == Output::Done
    });
    written
}

fn local_value(client: &quorate::Client<KvModel>, key: &str) -> Value {
    let key = key.to_string();
    client.read_local(move |m: &KvModel| m.get(&key)).expect("read_local")
}

/// The direct list checks catch what they claim to, on hand-made histories.
#[test]
fn the_list_checks_catch_lost_doubled_reordered_unwritten_and_stale_appends() {
    let op = |client, input, output, invoke_ns, complete_ns| Op {
        client,
        key: "list-0".to_string(),
        input,
        output,
        invoke_ns,
        complete_ns,
    };
    let read = |l: &[i64], at: u64| op(3, Input::Read, Output::Read(Value::List(l.to_vec())), at, at + 1);
    let finals = |l: &[i64]| BTreeMap::from([("list-0".to_string(), Value::List(l.to_vec()))]);
    let appends = vec![
        op(1, Input::Append(1), Output::Done, 0, 10),
        op(2, Input::Append(2), Output::Done, 5, 20),
        op(4, Input::Append(3), Output::Fail, 5, 20),
    ];
    let with = |reads: &[Op]| [appends.clone(), reads.to_vec()].concat();
    assert_eq!(check_effects(&with(&[read(&[1], 12), read(&[1, 2], 30)]), &finals(&[1, 2])), Ok(()));
    let cases: [(&str, Vec<Op>, &[i64]); 6] = [
        ("missing from the final read", with(&[]), &[1]),
        ("appears twice", with(&[read(&[1, 2, 1], 30)]), &[1, 2]),
        ("acknowledged before it began", with(&[read(&[1], 25)]), &[1, 2]),
        ("different orders", with(&[read(&[1, 2], 30), read(&[2, 1], 30)]), &[1, 2]),
        ("never appended", with(&[read(&[1, 2, 7], 30)]), &[1, 2]),
        ("never appended", with(&[read(&[1, 2, 3], 30)]), &[1, 2]),
    ];
    for (expected, ops, last) in cases {
        let why = check_effects(&ops, &finals(last)).expect_err(expected);
        assert!(why.contains(expected), "expected {expected:?}, got {why}");
    }
}

// ---------------------------------------------------------------------------------------
// `kv` example nodes as processes, killed with SIGKILL.

const PROCESS_CLIENTS: u64 = 3;
const PROCESS_KILLS: usize = 4;
/// Acknowledged operations between kills.
const OPS_BETWEEN_KILLS: usize = 30;

#[test]
fn kv_processes_killed_with_sigkill_stay_linearizable() {
    let name = "kv_processes_killed_with_sigkill_stay_linearizable";
    let (_serial, seed, mut rng) = begin(name);
    let procs = Arc::new(KvProcs::start());
    let keys = Arc::new(keys("", 2, 2));
    let history = History::new();
    let (stop, ok, leader) =
        (Arc::new(AtomicBool::new(false)), Arc::new(AtomicUsize::new(0)), Arc::new(AtomicU64::new(0)));
    let values = Arc::new(AtomicI64::new(1));
    let clients: Vec<_> = (0..PROCESS_CLIENTS)
        .map(|c| {
            let (procs, history, keys, values) = (procs.clone(), history.clone(), keys.clone(), values.clone());
            let (stop, ok, leader) = (stop.clone(), ok.clone(), leader.clone());
            let rng = Rng::new(rng.next_u64());
            std::thread::spawn(move || {
                kvprocs::client_loop(&procs, &history, c + 1, PROCESS_CLIENTS, &keys, rng, &values, &stop, &ok, &leader)
            })
        })
        .collect();
    let progress = |more: usize, what: &str| {
        let target = ok.load(Ordering::SeqCst) + more;
        let patience = Instant::now() + Duration::from_secs(60);
        while ok.load(Ordering::SeqCst) < target {
            assert!(Instant::now() < patience, "timed out waiting for {more} more operations ({what})");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    progress(OPS_BETWEEN_KILLS, "before the first kill");
    let started = Instant::now();
    let soak = soak_secs().map(Duration::from_secs);
    for round in 0.. {
        let done = match soak {
            Some(secs) => started.elapsed() >= secs,
            None => round >= PROCESS_KILLS,
        };
        if done {
            break;
        }
        let victim = match (round % 2, leader.load(Ordering::SeqCst)) {
            (0, l) if l != 0 => l,
            _ => rng.between(1, kvprocs::NODES),
        };
        let down = Duration::from_millis(rng.between(0, 1000));
        eprintln!(
            "{name}: kill {round}: SIGKILL node {victim}, down {down:?}, after {} ok ops",
            ok.load(Ordering::SeqCst)
        );
        procs.kill(victim);
        hold_for(down);
        procs.restart(victim);
        progress(OPS_BETWEEN_KILLS, &format!("after kill {round}"));
    }
    stop.store(true, Ordering::SeqCst);
    for c in clients {
        c.join().expect("client thread");
    }
    let finals = process_final_reads(&procs, &history, &keys);
    let mut dumps = Vec::new();
    wait_until("every node holds the same map", || {
        dumps = (1..=kvprocs::NODES).filter_map(|id| procs.dump(id)).collect();
        dumps.len() == kvprocs::NODES as usize && dumps.windows(2).all(|w| w[0] == w[1])
    });
    for id in 1..=kvprocs::NODES {
        assert!(procs.snapshot_files(id) > 0, "node {id} never saved a snapshot: the run did not exercise compaction");
    }
    verify(name, seed, &history, &finals);
}

/// Reads every key through whichever process leads, until each read succeeds.
fn process_final_reads(procs: &KvProcs, history: &History, keys: &[String]) -> BTreeMap<String, Value> {
    let mut finals = BTreeMap::new();
    let mut target = 1;
    for key in keys {
        wait_until(&format!("a final read of {key} succeeds"), || {
            match procs.call(target, history, FINAL_CLIENT, key, Input::Read) {
                (Output::Read(v), _) => {
                    finals.insert(key.clone(), v);
                    return true;
                }
                (_, Next::Leader(n)) if (1..=kvprocs::NODES).contains(&n) => target = n,
                _ => target = target % kvprocs::NODES + 1,
            }
            false
        });
    }
    finals
}
