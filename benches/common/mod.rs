//! What the benches share: the floors (TCP ping-pong, TCP bandwidth, blocking clients of
//! one mio thread), a cluster on loopback, the workloads, and the meters (CPU and context
//! switches from `getrusage`, heap allocations from a counting allocator).
//!
//! Every figure is printed as one `name=value` line (see [`figure`]), so runs can be
//! compared with `grep` and `diff`.
#![allow(dead_code)] // each bench uses a part

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering, fence};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use mio::{Events, Interest, Poll, Token, Waker};
use parking_lot::{Condvar, Mutex};
use quorate::{Client, Config, Node, StateMachine};
use serde::de::{Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

// ----- output -----

/// Prints one figure as `name=value`.
pub fn figure(name: &str, value: f64) {
    let digits = if value.abs() >= 100.0 {
        0
    } else if value.abs() >= 10.0 {
        1
    } else {
        2
    };
    println!("{name}={value:.digits$}");
}

/// Prints a comment line (context for a human reader; `#` so scripts skip it).
pub fn note(text: &str) {
    println!("# {text}");
}

/// How long each figure is measured: `QUORATE_BENCH_SECS` (fractions allowed), or `default`.
pub fn secs(default: f64) -> Duration {
    let s = std::env::var("QUORATE_BENCH_SECS").ok().and_then(|v| v.parse::<f64>().ok()).unwrap_or(default);
    Duration::from_secs_f64(s.max(0.05))
}

/// Whether the group `name` runs: all do unless `QUORATE_BENCH_ONLY` lists some
/// (comma-separated), which is how a profiler is pointed at one path.
pub fn enabled(name: &str) -> bool {
    match std::env::var("QUORATE_BENCH_ONLY") {
        Ok(only) => only.split(',').any(|o| o.trim() == name),
        Err(_) => true,
    }
}

pub fn us(nanos: u64) -> f64 {
    nanos as f64 / 1000.0
}

/// The machine the figures come from.
pub fn machine_note() {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    note(&format!(
        "{cores} cores, {cpu}; load average {}",
        load.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
    ));
}

// ----- meters -----

/// What this process used so far (all threads, including finished ones).
#[derive(Clone, Copy, Debug)]
pub struct Usage {
    pub cpu: Duration,
    /// The part of `cpu` spent in the kernel.
    pub sys: Duration,
    pub context_switches: u64,
}

impl Usage {
    pub fn now() -> Usage {
        // SAFETY: getrusage fills the struct it is given; a zeroed rusage is a valid value.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: a valid pointer to a rusage.
        let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
        assert_eq!(rc, 0, "getrusage");
        let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
        Usage {
            cpu: tv(ru.ru_utime) + tv(ru.ru_stime),
            sys: tv(ru.ru_stime),
            context_switches: (ru.ru_nvcsw + ru.ru_nivcsw) as u64,
        }
    }

    /// Per operation since `before`: (µs of CPU, context switches).
    pub fn per_op_since(before: Usage, ops: u64) -> (f64, f64) {
        Usage::since(before, ops).0
    }

    /// Per operation since `before`: (µs of CPU, context switches), and the kernel's share
    /// of that CPU.
    pub fn since(before: Usage, ops: u64) -> ((f64, f64), f64) {
        let after = Usage::now();
        let kernel = (after.sys - before.sys).as_secs_f64() / (after.cpu - before.cpu).as_secs_f64().max(1e-9);
        (Usage::per_op(before, after, ops), kernel)
    }

    fn per_op(before: Usage, after: Usage, ops: u64) -> (f64, f64) {
        let ops = ops.max(1) as f64;
        (
            (after.cpu - before.cpu).as_nanos() as f64 / 1000.0 / ops,
            (after.context_switches - before.context_switches) as f64 / ops,
        )
    }
}

/// The system allocator, counting allocations and live bytes while [`count_allocations`]
/// is on (one relaxed load per call otherwise).
pub struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);
static LIVE_BYTES: AtomicI64 = AtomicI64::new(0);

#[global_allocator]
static ALLOCATOR: Counting = Counting;

// SAFETY: every call is forwarded to `System` unchanged; only counters are added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
            LIVE_BYTES.fetch_add(layout.size() as i64, Ordering::Relaxed);
        }
        // SAFETY: the caller's contract is System's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if COUNTING.load(Ordering::Relaxed) {
            LIVE_BYTES.fetch_sub(layout.size() as i64, Ordering::Relaxed);
        }
        // SAFETY: the caller's contract is System's.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
            LIVE_BYTES.fetch_add(new_size as i64 - layout.size() as i64, Ordering::Relaxed);
        }
        // SAFETY: the caller's contract is System's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// Runs `f` with the allocation counter on; returns its result, the allocations made and
/// the change in live heap bytes (every thread of the process counts).
pub fn count_allocations<T>(f: impl FnOnce() -> T) -> (T, u64, i64) {
    let (a, b) = (ALLOCATIONS.load(Ordering::SeqCst), LIVE_BYTES.load(Ordering::SeqCst));
    COUNTING.store(true, Ordering::SeqCst);
    let out = f();
    COUNTING.store(false, Ordering::SeqCst);
    (out, ALLOCATIONS.load(Ordering::SeqCst) - a, LIVE_BYTES.load(Ordering::SeqCst) - b)
}

// ----- the state machine -----

/// Bytes that encode as one MessagePack binary (not an array of integers).
#[derive(Clone, Debug)]
pub struct Blob(pub Vec<u8>);

impl Serialize for Blob {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for Blob {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Blob, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Blob;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E>(self, v: &[u8]) -> Result<Blob, E> {
                Ok(Blob(v.to_vec()))
            }
            fn visit_byte_buf<E>(self, v: Vec<u8>) -> Result<Blob, E> {
                Ok(Blob(v))
            }
        }
        d.deserialize_byte_buf(V)
    }
}

/// Counts the commands and bytes it applied. No snapshots: the log is never compacted, so
/// memory per entry can be read off the heap.
#[derive(Default)]
pub struct Store {
    pub count: u64,
    pub bytes: u64,
}

/// The command: `payload` bytes to store.
#[derive(Serialize, Deserialize)]
pub struct Put(pub Blob);

impl StateMachine for Store {
    type Command = Put;
    type Response = u64;
    fn apply(&mut self, Put(blob): Put) -> u64 {
        self.count += 1;
        self.bytes += blob.0.len() as u64;
        self.count
    }
}

/// The standard command: 16 bytes.
pub const COMMAND_BYTES: usize = 16;

pub fn put(bytes: usize) -> Put {
    Put(Blob(vec![7; bytes]))
}

// ----- a cluster -----

pub struct Cluster {
    pub nodes: Vec<Node<Store>>,
    /// A client of the leader.
    pub client: Client<Store>,
}

impl Cluster {
    /// `size` nodes on loopback, in one process; returns once a leader committed a write.
    pub fn start(size: usize, tweak: impl Fn(Config) -> Config) -> Cluster {
        let listeners: Vec<TcpListener> = (0..size).map(|_| TcpListener::bind("127.0.0.1:0").unwrap()).collect();
        let addrs: Vec<_> = listeners.iter().map(|l| l.local_addr().unwrap()).collect();
        let nodes: Vec<Node<Store>> = listeners
            .into_iter()
            .enumerate()
            .map(|(i, l)| {
                let config = Config::new(i as u64 + 1, addrs[i]).members((1..).zip(addrs.iter().copied()));
                Node::start_with_listener(tweak(config), l, Store::default()).unwrap()
            })
            .collect();
        let leader = nodes[0].client().await_leader(Duration::from_secs(10)).unwrap();
        let client = nodes[leader as usize - 1].client();
        client.write(put(COMMAND_BYTES)).unwrap();
        Cluster { nodes, client }
    }

    pub fn stop(self) {
        drop(self.client);
        for node in self.nodes {
            node.stop();
        }
    }
}

// ----- workloads -----

/// Latencies of `op` called back to back for `duration`.
pub fn sequential(duration: Duration, mut op: impl FnMut()) -> Histogram<u64> {
    let mut hist = Histogram::<u64>::new(3).unwrap();
    let end = Instant::now() + duration;
    while Instant::now() < end {
        let t = Instant::now();
        op();
        hist.record(t.elapsed().as_nanos() as u64).unwrap();
    }
    hist
}

/// What `threads` threads calling `op` back to back did in `duration`.
pub struct Concurrent {
    pub ops: u64,
    pub per_s: f64,
    pub latency: Histogram<u64>,
    pub cpu_us: f64,
    pub switches: f64,
    /// The kernel's share of the CPU used.
    pub kernel: f64,
    /// µs per op the nodes' threads spent runnable but waiting for a CPU (all nodes).
    pub node_wait_us: f64,
}

/// `threads` threads, each calling `op` back to back for `duration` (all start together;
/// CPU is counted from the start to the end of the measured window).
pub fn concurrent<F>(threads: usize, duration: Duration, op: F) -> Concurrent
where
    F: Fn() + Send + Sync + 'static,
{
    let op = Arc::new(op);
    let barrier = Arc::new(Barrier::new(threads + 1));
    let stop = Arc::new(AtomicBool::new(false));
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let (op, barrier, stop) = (op.clone(), barrier.clone(), stop.clone());
            std::thread::Builder::new()
                .stack_size(256 * 1024)
                .spawn(move || {
                    let mut hist = Histogram::<u64>::new(3).unwrap();
                    barrier.wait();
                    while !stop.load(Ordering::Relaxed) {
                        let t = Instant::now();
                        op();
                        hist.record(t.elapsed().as_nanos() as u64).unwrap();
                    }
                    hist
                })
                .unwrap()
        })
        .collect();
    barrier.wait();
    let before = Usage::now();
    let waited_before = node_run_queue_wait();
    let started = Instant::now();
    std::thread::sleep(duration);
    let node_wait = node_run_queue_wait().saturating_sub(waited_before);
    stop.store(true, Ordering::Relaxed);
    let mut latency = Histogram::<u64>::new(3).unwrap();
    for h in handles {
        latency.add(h.join().unwrap()).unwrap();
    }
    // The few ops that finished after `stop` count: they were in flight in the window.
    let elapsed = started.elapsed();
    let ops = latency.len();
    let ((cpu_us, switches), kernel) = Usage::since(before, ops);
    let node_wait_us = node_wait.as_secs_f64() * 1e6 / ops.max(1) as f64;
    Concurrent { ops, per_s: ops as f64 / elapsed.as_secs_f64(), latency, cpu_us, switches, kernel, node_wait_us }
}

/// How long the nodes' threads (`quorate-node-*`) have waited, runnable, for a CPU in all,
/// from the scheduler's `/proc/self/task/*/schedstat` (zero where it is not available).
/// With many client threads on few cores, this is where a write's time goes that no CPU
/// figure shows: a follower woken by an AppendEntries queues behind runnable clients.
pub fn node_run_queue_wait() -> Duration {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else { return Duration::ZERO };
    let mut waited = 0u64;
    for task in tasks.flatten() {
        let path = task.path();
        let is_node = std::fs::read_to_string(path.join("comm")).is_ok_and(|c| c.starts_with("quorate-node"));
        if !is_node {
            continue;
        }
        let stat = std::fs::read_to_string(path.join("schedstat")).unwrap_or_default();
        waited += stat.split_whitespace().nth(1).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    }
    Duration::from_nanos(waited)
}

/// One thread keeping `window` operations in flight for `duration`: `submit` starts one,
/// `wait` finishes the oldest. Returns (ops/s, µs of CPU per op, switches per op), and
/// prints how many ops it did as a `#` note.
pub fn pipelined<P>(
    window: usize,
    duration: Duration,
    mut submit: impl FnMut() -> P,
    mut wait: impl FnMut(P),
) -> (f64, f64, f64) {
    let mut in_flight = VecDeque::with_capacity(window);
    let mut done = 0u64;
    let before = Usage::now();
    let started = Instant::now();
    let end = started + duration;
    while Instant::now() < end {
        for _ in 0..64 {
            if in_flight.len() == window {
                wait(in_flight.pop_front().unwrap());
                done += 1;
            }
            in_flight.push_back(submit());
        }
    }
    for p in in_flight {
        wait(p);
        done += 1;
    }
    let elapsed = started.elapsed();
    let (cpu, switches) = Usage::per_op_since(before, done);
    note(&format!("{done} ops pipelined"));
    (done as f64 / elapsed.as_secs_f64(), cpu, switches)
}

// ----- floors -----

const PING_BYTES: usize = 64;

/// Round trips of a 64-byte message between two mio threads over loopback TCP with
/// TCP_NODELAY: the floor any replicated write over TCP pays at least once. Returns the
/// latencies and the µs of CPU per round trip (both ends).
pub fn ping_pong(duration: Duration) -> (Histogram<u64>, f64) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let echo = std::thread::spawn(move || {
        let (s, _) = listener.accept().unwrap();
        s.set_nonblocking(true).unwrap();
        let mut s = mio::net::TcpStream::from_std(s);
        s.set_nodelay(true).unwrap();
        let mut poll = Poll::new().unwrap();
        poll.registry().register(&mut s, Token(0), Interest::READABLE).unwrap();
        let mut events = Events::with_capacity(4);
        let mut buf = [0u8; PING_BYTES];
        let mut have = 0;
        loop {
            poll.poll(&mut events, None).unwrap();
            loop {
                match s.read(&mut buf[have..]) {
                    Ok(0) => return,
                    Ok(n) => {
                        have += n;
                        if have == PING_BYTES {
                            write_all_nonblocking(&mut s, &buf);
                            have = 0;
                        }
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(_) => return,
                }
            }
        }
    });
    let s = std::net::TcpStream::connect(addr).unwrap();
    s.set_nonblocking(true).unwrap();
    let mut s = mio::net::TcpStream::from_std(s);
    s.set_nodelay(true).unwrap();
    let mut poll = Poll::new().unwrap();
    poll.registry().register(&mut s, Token(0), Interest::READABLE).unwrap();
    let mut events = Events::with_capacity(4);
    let mut hist = Histogram::<u64>::new(3).unwrap();
    let mut buf = [7u8; PING_BYTES];
    let before = Usage::now();
    let end = Instant::now() + duration;
    while Instant::now() < end {
        let t = Instant::now();
        write_all_nonblocking(&mut s, &buf);
        let mut have = 0;
        while have < PING_BYTES {
            match s.read(&mut buf[have..]) {
                Ok(0) => panic!("echo closed"),
                Ok(n) => have += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => poll.poll(&mut events, None).unwrap(),
                Err(e) => panic!("{e}"),
            }
        }
        hist.record(t.elapsed().as_nanos() as u64).unwrap();
    }
    let (cpu, _) = Usage::per_op_since(before, hist.len());
    drop(s);
    echo.join().unwrap();
    (hist, cpu)
}

fn write_all_nonblocking(s: &mut mio::net::TcpStream, mut buf: &[u8]) {
    while !buf.is_empty() {
        match s.write(buf) {
            Ok(n) => buf = &buf[n..],
            Err(e) if e.kind() == ErrorKind::WouldBlock => std::thread::yield_now(),
            Err(e) => panic!("{e}"),
        }
    }
}

/// One-way loopback TCP bandwidth (64 KiB writes), in MB/s: the floor for large commands.
pub fn tcp_bandwidth(duration: Duration) -> f64 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let sink = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut buf = vec![0u8; 1 << 16];
        let mut total = 0u64;
        loop {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => return total,
                Ok(n) => total += n as u64,
            }
        }
    });
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    let buf = vec![7u8; 1 << 16];
    let started = Instant::now();
    while started.elapsed() < duration {
        s.write_all(&buf).unwrap();
    }
    drop(s);
    let total = sink.join().unwrap();
    total as f64 / started.elapsed().as_secs_f64() / 1e6
}

/// The blocking-client floor: the shape of the library's client path with no Raft and no
/// TCP. Client threads send a request over a bounded crossbeam channel to one mio thread,
/// waking it with a `Waker` only if it sleeps (the same Dekker handshake as the node
/// loop), and block on a mutex + condvar slot of their own (one `Arc` per request, as the
/// library's) until the mio thread fills it.
pub struct Floor {
    tx: crossbeam_channel::Sender<FloorRequest>,
    shared: Arc<FloorShared>,
    thread: Option<std::thread::JoinHandle<()>>,
}

struct FloorShared {
    waker: Waker,
    sleeping: AtomicBool,
    stop: AtomicBool,
}

pub struct FloorSlot {
    value: Mutex<Option<u64>>,
    filled: Condvar,
}

struct FloorRequest {
    value: u64,
    slot: Arc<FloorSlot>,
}

const FLOOR_WAKER: Token = Token(0);

impl Floor {
    pub fn start() -> Floor {
        let poll = Poll::new().unwrap();
        let waker = Waker::new(poll.registry(), FLOOR_WAKER).unwrap();
        let shared = Arc::new(FloorShared { waker, sleeping: AtomicBool::new(false), stop: AtomicBool::new(false) });
        let (tx, rx) = crossbeam_channel::bounded::<FloorRequest>(65_536);
        let s = shared.clone();
        let thread = std::thread::spawn(move || {
            let mut poll = poll;
            let mut events = Events::with_capacity(64);
            let mut sum = 0u64;
            while !s.stop.load(Ordering::Acquire) {
                s.sleeping.store(true, Ordering::SeqCst);
                fence(Ordering::SeqCst);
                let timeout = if rx.is_empty() { Duration::from_millis(10) } else { Duration::ZERO };
                poll.poll(&mut events, Some(timeout)).unwrap();
                s.sleeping.store(false, Ordering::SeqCst);
                for _ in 0..4096 {
                    let Ok(req) = rx.try_recv() else { break };
                    sum = sum.wrapping_add(req.value);
                    *req.slot.value.lock() = Some(sum);
                    req.slot.filled.notify_one();
                }
            }
        });
        Floor { tx, shared, thread: Some(thread) }
    }

    /// Sends one request; returns its slot.
    pub fn submit(&self, value: u64) -> Arc<FloorSlot> {
        let slot = Arc::new(FloorSlot { value: Mutex::new(None), filled: Condvar::new() });
        self.tx.send(FloorRequest { value, slot: slot.clone() }).unwrap();
        fence(Ordering::SeqCst);
        if self.shared.sleeping.swap(false, Ordering::SeqCst) {
            self.shared.waker.wake().unwrap();
        }
        slot
    }

    /// Blocks until the slot is filled.
    pub fn wait(slot: Arc<FloorSlot>) -> u64 {
        let mut value = slot.value.lock();
        loop {
            if let Some(v) = value.take() {
                return v;
            }
            slot.filled.wait(&mut value);
        }
    }

    pub fn call(&self, value: u64) -> u64 {
        Floor::wait(self.submit(value))
    }
}

impl Drop for Floor {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        let _ = self.shared.waker.wake();
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }
}

/// The blocking floor with `threads` clients: calls per second and the run's figures.
pub fn blocking_floor(threads: usize, duration: Duration) -> Concurrent {
    let floor = Arc::new(Floor::start());
    let f = floor.clone();
    let result = concurrent(threads, duration, move || {
        std::hint::black_box(f.call(1));
    });
    drop(floor);
    result
}
