//! How long taking a snapshot of a large state pauses the node's loop, and how long the
//! rest of it takes off the loop. One node, a state of about 100 MB (100,000 values of
//! 1 KiB), a snapshot forced by the entry threshold; meanwhile a thread asks the loop for
//! `read_local` every millisecond, and the longest answer during the snapshot is the
//! pause. Two machines: one whose state is a plain map (the one-line `serde_snapshots!`
//! helper clones it on the loop), and one whose values are shared `Arc`s, so the capture
//! on the loop copies only pointers and the bytes are written by the snapshot thread.
//!
//! `cargo bench --bench snapshot` (`QUORATE_BENCH_VALUES`, default 100000).

use std::collections::BTreeMap;
use std::io;
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use quorate::{Config, Node, Snapshot, StateMachine};
use serde::{Deserialize, Serialize};

const VALUE_BYTES: usize = 1024;

/// Values are bytes below 128, one byte each in MessagePack.
#[derive(Serialize, Deserialize)]
struct Put(u64, Vec<u8>);

/// A plain map: `serde_snapshots!` clones all of it on the loop.
#[derive(Clone, Default, Serialize, Deserialize)]
struct Plain(BTreeMap<u64, Vec<u8>>);

impl StateMachine for Plain {
    type Command = Put;
    type Response = ();
    fn apply(&mut self, Put(k, v): Put) {
        self.0.insert(k, v);
    }
    quorate::serde_snapshots!();
}

/// Values behind `Arc`: the capture clones the map of pointers only.
#[derive(Default)]
struct Shared(BTreeMap<u64, Arc<Vec<u8>>>);

impl StateMachine for Shared {
    type Command = Put;
    type Response = ();
    const SNAPSHOTS: bool = true;
    fn apply(&mut self, Put(k, v): Put) {
        self.0.insert(k, Arc::new(v));
    }
    fn snapshot(&self) -> Option<Snapshot> {
        let capture = self.0.clone();
        Some(Snapshot::new(move |w| {
            let mut w = io::BufWriter::with_capacity(1 << 20, w);
            for (k, v) in &capture {
                io::Write::write_all(&mut w, &k.to_le_bytes())?;
                io::Write::write_all(&mut w, v)?;
            }
            io::Write::flush(&mut w)
        }))
    }
    fn restore(&mut self, from: &mut dyn io::Read) -> io::Result<()> {
        let mut r = io::BufReader::with_capacity(1 << 20, from);
        self.0.clear();
        let mut key = [0u8; 8];
        loop {
            match io::Read::read_exact(&mut r, &mut key) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
                Err(e) => return Err(e),
            }
            let mut v = vec![0; VALUE_BYTES];
            io::Read::read_exact(&mut r, &mut v)?;
            self.0.insert(u64::from_le_bytes(key), Arc::new(v));
        }
    }
}

fn values() -> u64 {
    std::env::var("QUORATE_BENCH_VALUES").ok().and_then(|v| v.parse().ok()).unwrap_or(100_000)
}

fn run<M: StateMachine<Command = Put> + Default>(name: &str) {
    let n = values();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    // The snapshot comes when the n-th value is applied (plus the leader's no-op).
    let config = Config::new(1, addr).snapshot_threshold(n + 1, u64::MAX).snapshot_keep_entries(0);
    let node = Node::start_with_listener(config, listener, M::default()).unwrap();
    let client = node.client();
    client.await_leader(Duration::from_secs(10)).unwrap();
    let started = Instant::now();
    let mut pending = std::collections::VecDeque::new();
    for k in 0..n - 1 {
        pending.push_back(client.submit(Put(k, vec![(k % 128) as u8; VALUE_BYTES])).unwrap());
        if pending.len() >= 256 {
            pending.pop_front().unwrap().wait().unwrap();
        }
    }
    for p in pending {
        p.wait().unwrap();
    }
    let fill = started.elapsed();

    // Probe the loop every millisecond while the last write triggers the snapshot.
    let stop = Arc::new(AtomicBool::new(false));
    let prober = {
        let (client, stop) = (client.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut worst = Duration::ZERO;
            let mut samples = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                client.read_local(|_: &M| ()).unwrap();
                let d = t.elapsed();
                worst = worst.max(d);
                samples.push(d);
                std::thread::sleep(Duration::from_millis(1));
            }
            samples.sort();
            (worst, samples[samples.len() / 2])
        })
    };
    std::thread::sleep(Duration::from_millis(50));
    let t = Instant::now();
    client.write(Put(n - 1, vec![0; VALUE_BYTES])).unwrap();
    while client.status().unwrap().snapshot_index == 0 {
        std::thread::sleep(Duration::from_millis(1));
    }
    let saved = t.elapsed();
    std::thread::sleep(Duration::from_millis(50));
    stop.store(true, Ordering::Relaxed);
    let (worst, p50) = prober.join().unwrap();
    let s = client.status().unwrap();
    println!(
        "{name:>6}: {n} values of {VALUE_BYTES} B (filled in {:.1} s); loop answered in p50 {:?}, worst {:?} around the snapshot; snapshot saved {:?} after the write; log now {} entries",
        fill.as_secs_f64(),
        p50,
        worst,
        saved,
        s.log_entries
    );
    node.stop();
}

fn main() {
    println!("heartbeat interval (default): 50 ms; a pause must stay well below it");
    run::<Plain>("plain");
    run::<Shared>("shared");
}
