//! Write latency and throughput of a 3-node cluster on loopback, reported as ratios to a
//! raw TCP ping-pong measured in the same run (absolute times drift between machines).
//!
//! `cargo bench --bench writes` (set `QUORATE_BENCH_SECS` to measure longer; default 3).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
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

const PAYLOAD_BYTES: usize = 64;

fn secs() -> Duration {
    let s = std::env::var("QUORATE_BENCH_SECS").ok().and_then(|v| v.parse().ok()).unwrap_or(3);
    Duration::from_secs(s)
}

/// Round trips of a 64-byte message over loopback TCP with TCP_NODELAY: the floor any
/// replicated write over TCP pays at least once.
fn ping_pong(duration: Duration) -> Histogram<u64> {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let echo = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        s.set_nodelay(true).unwrap();
        let mut buf = [0u8; PAYLOAD_BYTES];
        while s.read_exact(&mut buf).is_ok() {
            if s.write_all(&buf).is_err() {
                break;
            }
        }
    });
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_nodelay(true).unwrap();
    let mut hist = Histogram::<u64>::new(3).unwrap();
    let mut buf = [7u8; PAYLOAD_BYTES];
    let end = Instant::now() + duration;
    while Instant::now() < end {
        let t = Instant::now();
        s.write_all(&buf).unwrap();
        s.read_exact(&mut buf).unwrap();
        hist.record(t.elapsed().as_nanos() as u64).unwrap();
    }
    drop(s);
    echo.join().unwrap();
    hist
}

fn cluster() -> (Vec<Node<Counter>>, Client<Counter>) {
    let listeners: Vec<TcpListener> = (0..3).map(|_| TcpListener::bind("127.0.0.1:0").unwrap()).collect();
    let addrs: Vec<_> = listeners.iter().map(|l| l.local_addr().unwrap()).collect();
    let nodes: Vec<Node<Counter>> = listeners
        .into_iter()
        .enumerate()
        .map(|(i, l)| {
            let config = Config::new(i as u64 + 1, addrs[i]).members((1..).zip(addrs.iter().copied()));
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

/// One client thread keeping `window` writes in flight with `submit`.
fn pipelined_writes(client: &Client<Counter>, window: usize, duration: Duration) -> u64 {
    let mut in_flight = std::collections::VecDeque::with_capacity(window);
    let mut done = 0u64;
    let end = Instant::now() + duration;
    while Instant::now() < end {
        if in_flight.len() == window {
            let oldest: quorate::PendingWrite<u64> = in_flight.pop_front().unwrap();
            oldest.wait().unwrap();
            done += 1;
        }
        in_flight.push_back(client.submit(Add(1)).unwrap());
    }
    for p in in_flight {
        p.wait().unwrap();
        done += 1;
    }
    done
}

fn concurrent_writes(client: &Client<Counter>, threads: usize, duration: Duration) -> u64 {
    let end = Instant::now() + duration;
    let handles: Vec<_> = (0..threads)
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

/// CPU time (user + system) this process has used, from /proc (Linux); None elsewhere.
/// Throughput on a small machine is bound by CPU per write, which is steadier than
/// wall-clock rates on a noisy host.
fn cpu_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 10)) // USER_HZ is 100 on Linux
}

fn us(nanos: u64) -> f64 {
    nanos as f64 / 1000.0
}

fn main() {
    let duration = secs();
    let cpu_before = cpu_time();
    let base = ping_pong(duration);
    let cpu_per_round_trip =
        cpu_time().zip(cpu_before).map(|(after, before)| (after - before).as_nanos() as f64 / base.len() as f64);
    let (nodes, client) = cluster();
    let writes = sequential_writes(&client, duration);
    let threads = 64;
    let cpu_before = cpu_time();
    let total = concurrent_writes(&client, threads, duration);
    let cpu_per_write =
        cpu_time().zip(cpu_before).map(|(after, before)| (after - before).as_nanos() as f64 / total as f64);
    let throughput = total as f64 / duration.as_secs_f64();
    let base_rate = 1e9 / base.mean();

    println!("baseline: loopback TCP ping-pong of {PAYLOAD_BYTES} B");
    println!(
        "  p50 {:.1} us, p99 {:.1} us, {:.0} round trips/s",
        us(base.value_at_quantile(0.5)),
        us(base.value_at_quantile(0.99)),
        base_rate
    );
    println!("quorate: one client, sequential writes, 3 nodes on loopback");
    println!(
        "  p50 {:.1} us, p99 {:.1} us  =>  p50 ratio to ping-pong: {:.1}x, p99 ratio: {:.1}x",
        us(writes.value_at_quantile(0.5)),
        us(writes.value_at_quantile(0.99)),
        writes.value_at_quantile(0.5) as f64 / base.value_at_quantile(0.5) as f64,
        writes.value_at_quantile(0.99) as f64 / base.value_at_quantile(0.99) as f64,
    );
    println!("quorate: {threads} client threads, 3 nodes on loopback");
    println!("  {throughput:.0} writes/s  =>  {:.2}x the ping-pong round-trip rate", throughput / base_rate);
    if let (Some(cpu), Some(base_cpu)) = (cpu_per_write, cpu_per_round_trip) {
        // All three nodes and the clients run in this process: this is the whole cluster's
        // cost per write, against the CPU both ends of one ping-pong round trip use.
        println!(
            "  {:.1} us of CPU per write (3 nodes + clients)  =>  {:.2}x the CPU of one ping-pong round trip ({:.1} us)",
            cpu / 1000.0,
            cpu / base_cpu,
            base_cpu / 1000.0
        );
    }
    let window = 256;
    let cpu_before = cpu_time();
    let started = Instant::now();
    let pipelined = pipelined_writes(&client, window, duration);
    let elapsed = started.elapsed();
    let cpu = cpu_time().zip(cpu_before).map(|(after, before)| (after - before).as_nanos() as f64 / pipelined as f64);
    let rate = pipelined as f64 / elapsed.as_secs_f64();
    println!("quorate: one client thread, {window} writes in flight (submit/wait), 3 nodes on loopback");
    println!("  {rate:.0} writes/s  =>  {:.2}x the ping-pong round-trip rate", rate / base_rate);
    if let (Some(cpu), Some(base_cpu)) = (cpu, cpu_per_round_trip) {
        println!(
            "  {:.1} us of CPU per write  =>  {:.2}x the CPU of one ping-pong round trip",
            cpu / 1000.0,
            cpu / base_cpu
        );
    }
    // Sessions (§6.3): the same two figures from a client without one, same run.
    let plain = client.without_session();
    let plain_writes = sequential_writes(&plain, duration);
    let cpu_before = cpu_time();
    let plain_total = concurrent_writes(&plain, threads, duration);
    let plain_cpu =
        cpu_time().zip(cpu_before).map(|(after, before)| (after - before).as_nanos() as f64 / plain_total as f64);
    println!("quorate: sessions on (the default) against a client without a session, same run");
    println!(
        "  sequential p50 {:.1} us vs {:.1} us without  =>  {:.2}x",
        us(writes.value_at_quantile(0.5)),
        us(plain_writes.value_at_quantile(0.5)),
        writes.value_at_quantile(0.5) as f64 / plain_writes.value_at_quantile(0.5) as f64
    );
    println!(
        "  {threads} threads {throughput:.0} vs {:.0} writes/s without  =>  {:.2}x",
        plain_total as f64 / duration.as_secs_f64(),
        total as f64 / plain_total as f64
    );
    if let (Some(cpu), Some(plain_cpu)) = (cpu_per_write, plain_cpu) {
        println!("  {:.2} us vs {:.2} us of CPU per write without", cpu / 1000.0, plain_cpu / 1000.0);
    }
    drop((client, plain));
    drop(nodes);
}
