//! Memory under an endless write load: a 3-node cluster in this process (memory mode)
//! takes writes for a while and prints its resident memory every 10 seconds. The state
//! is a bounded map (10,000 keys overwritten again and again), so with log compaction the
//! memory stays flat; with `--no-snapshots` (a state machine without snapshots, whose
//! log is never compacted) it grows with every write.
//!
//! `cargo run --release --example rss -- [--secs 300] [--no-snapshots]`

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use quorate::{Client, Config, Node, StateMachine};
use serde::{Deserialize, Serialize};

const KEYS: u64 = 10_000;
const WRITERS: usize = 4;
const IN_FLIGHT: usize = 64;

#[derive(Serialize, Deserialize)]
struct Set(u64, u64);

#[derive(Clone, Default, Serialize, Deserialize)]
struct Map(BTreeMap<u64, u64>);

impl StateMachine for Map {
    type Command = Set;
    type Response = ();
    fn apply(&mut self, Set(k, v): Set) {
        self.0.insert(k, v);
    }
    quorate::serde_snapshots!();
}

/// The same map without snapshots.
#[derive(Default)]
struct Uncompacted(BTreeMap<u64, u64>);

impl StateMachine for Uncompacted {
    type Command = Set;
    type Response = ();
    fn apply(&mut self, Set(k, v): Set) {
        self.0.insert(k, v);
    }
}

fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok());
    kib.unwrap_or(0.0) / 1024.0
}

fn run<M: StateMachine<Command = Set> + Default>(secs: u64) {
    let listeners: Vec<TcpListener> = (0..3).map(|_| TcpListener::bind("127.0.0.1:0").unwrap()).collect();
    let addrs: Vec<_> = listeners.iter().map(|l| l.local_addr().unwrap()).collect();
    let nodes: Vec<Node<M>> = listeners
        .into_iter()
        .enumerate()
        .map(|(i, l)| {
            let config = Config::new(i as u64 + 1, addrs[i]).members((1..).zip(addrs.iter().copied()));
            Node::start_with_listener(config, l, M::default()).expect("start node")
        })
        .collect();
    let leader = nodes[0].client().await_leader(Duration::from_secs(10)).expect("a leader");
    let client: Client<M> = nodes[leader as usize - 1].client();
    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicU64::new(0));
    let writers: Vec<_> = (0..WRITERS as u64)
        .map(|w| {
            let (client, stop, written) = (client.clone(), stop.clone(), written.clone());
            std::thread::spawn(move || {
                let mut pending = std::collections::VecDeque::new();
                let mut v = w;
                while !stop.load(Ordering::Relaxed) {
                    v += WRITERS as u64;
                    pending.push_back(client.submit(Set(v % KEYS, v)).expect("submit"));
                    if pending.len() >= IN_FLIGHT {
                        pending.pop_front().unwrap().wait().expect("write");
                        written.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    let started = Instant::now();
    println!(
        "{:>6} {:>12} {:>10} {:>9} {:>12} {:>12}",
        "secs", "writes", "writes/s", "RSS MiB", "log entries", "snapshot at"
    );
    let mut last = (0, Instant::now());
    while started.elapsed() < Duration::from_secs(secs) {
        std::thread::sleep(Duration::from_secs(10).min(Duration::from_secs(secs)));
        let n = written.load(Ordering::Relaxed);
        let rate = (n - last.0) as f64 / last.1.elapsed().as_secs_f64();
        last = (n, Instant::now());
        let s = client.status().expect("status");
        println!(
            "{:>6} {:>12} {:>10.0} {:>9.1} {:>12} {:>12}",
            started.elapsed().as_secs(),
            n,
            rate,
            rss_mib(),
            s.log_entries,
            s.snapshot_index
        );
    }
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.join().unwrap();
    }
    for node in nodes {
        node.stop();
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let secs = args.iter().position(|a| a == "--secs").and_then(|i| args.get(i + 1)?.parse().ok()).unwrap_or(300);
    if args.iter().any(|a| a == "--no-snapshots") {
        println!("a state machine without snapshots: the log is never compacted");
        run::<Uncompacted>(secs);
    } else {
        println!("snapshots every 100,000 entries, keeping 5,000 (Config's defaults)");
        run::<Map>(secs);
    }
}
