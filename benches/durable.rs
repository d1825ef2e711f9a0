//! Durable mode against memory mode, in one run: write latency with one client (p50, p99),
//! throughput with 64 clients, and `fdatasync`s per write at 64 clients (group commit at
//! work means far fewer than one). A 3-node cluster on loopback each time.
//!
//! `cargo bench --bench durable` (`QUORATE_BENCH_SECS`, default 3, sets each phase's
//! length; `QUORATE_BENCH_DIR` where the data dirs go, default the system temp dir: put it
//! on the disk you mean to measure, not a tmpfs).

use std::net::TcpListener;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use quorate::storage::file::sync_count;
use quorate::{Client, Config, Node, StateMachine};
use serde::{Deserialize, Serialize};

#[derive(Default)]
struct Counter(u64);

#[derive(Serialize, Deserialize)]
struct Add(u64);

impl StateMachine for Counter {
    type Command = Add;
    type Response = u64;
    fn apply(&mut self, Add(n): Add) -> u64 {
        self.0 += n;
        self.0
    }
}

const CLIENTS: usize = 64;

fn secs() -> Duration {
    let s = std::env::var("QUORATE_BENCH_SECS").ok().and_then(|v| v.parse().ok()).unwrap_or(3);
    Duration::from_secs(s)
}

/// Three nodes, durable in `root` if given; returns them and a client of the leader.
fn cluster(root: Option<&std::path::Path>) -> (Vec<Node<Counter>>, Client<Counter>) {
    let listeners: Vec<TcpListener> = (0..3).map(|_| TcpListener::bind("127.0.0.1:0").unwrap()).collect();
    let addrs: Vec<_> = listeners.iter().map(|l| l.local_addr().unwrap()).collect();
    let nodes: Vec<Node<Counter>> = listeners
        .into_iter()
        .enumerate()
        .map(|(i, l)| {
            let mut config = Config::new(i as u64 + 1, addrs[i]).members((1..).zip(addrs.iter().copied()));
            if let Some(root) = root {
                config = config.data_dir(root.join(format!("node-{}", i + 1)));
            }
            Node::start_with_listener(config, l, Counter::default()).unwrap()
        })
        .collect();
    let leader = nodes[0].client().await_leader(Duration::from_secs(10)).unwrap();
    let client = nodes[leader as usize - 1].client();
    client.write(Add(0)).unwrap();
    (nodes, client)
}

fn sequential_writes(client: &Client<Counter>, duration: Duration) -> Histogram<u64> {
    let mut hist = Histogram::<u64>::new(3).unwrap();
    let end = Instant::now() + duration;
    while Instant::now() < end {
        let t = Instant::now();
        client.write(Add(1)).unwrap();
        hist.record(t.elapsed().as_nanos() as u64).unwrap();
    }
    hist
}

fn concurrent_writes(client: &Client<Counter>, duration: Duration) -> u64 {
    let end = Instant::now() + duration;
    let handles: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let client = client.clone();
            std::thread::spawn(move || {
                let mut n = 0u64;
                while Instant::now() < end {
                    client.write(Add(1)).unwrap();
                    n += 1;
                }
                n
            })
        })
        .collect();
    handles.into_iter().map(|h| h.join().unwrap()).sum()
}

fn us(nanos: u64) -> f64 {
    nanos as f64 / 1000.0
}

fn run(name: &str, root: Option<&std::path::Path>, duration: Duration) {
    let (nodes, client) = cluster(root);
    let latency = sequential_writes(&client, duration);
    let syncs_before = sync_count();
    let started = Instant::now();
    let writes = concurrent_writes(&client, duration);
    let rate = writes as f64 / started.elapsed().as_secs_f64();
    let syncs = sync_count() - syncs_before;
    println!(
        "{name}: 1 client  p50 {:.1} us, p99 {:.1} us",
        us(latency.value_at_quantile(0.5)),
        us(latency.value_at_quantile(0.99))
    );
    print!("{name}: {CLIENTS} clients {rate:.0} writes/s");
    if root.is_some() {
        // Every node's syncs (leader and followers) over the writes the cluster took.
        print!(
            ", {:.3} fsyncs per write (3 nodes together; {:.3} per node)",
            syncs as f64 / writes as f64,
            syncs as f64 / writes as f64 / 3.0
        );
    }
    println!();
    drop(client);
    drop(nodes);
}

fn main() {
    let duration = secs();
    let base = std::env::var_os("QUORATE_BENCH_DIR").map_or_else(std::env::temp_dir, Into::into);
    let root = tempfile::tempdir_in(base).unwrap();
    println!("3 nodes on loopback; durable data dirs under {}", root.path().display());
    run("memory ", None, duration);
    run("durable", Some(root.path()), duration);
}
