//! Writes to a 3-node cluster on loopback (one process), each figure beside its floor
//! measured in the same run: the latency of one client's sequential writes against a TCP
//! ping-pong between two mio threads; the throughput of 64, 256 and 1024 blocking writer
//! threads against as many threads calling one mio thread and back (channel, `Waker`,
//! condvar slot: the library's client path with no Raft and no TCP); one thread keeping
//! 256 writes in flight with `submit` (and 4096, a deeper pipeline) against the same floor
//! pipelined (256 in flight). Commands are 16 bytes. CPU per op counts every thread of the process (all nodes and clients).
//!
//! `cargo bench --bench writes` prints one `name=value` line per figure.
//! `QUORATE_BENCH_SECS` sets each figure's length (default 2); `QUORATE_BENCH_ONLY` runs
//! only the listed groups (`floors`, or one of them: `floor_pingpong`, `floor_64`, `floor_pipelined`…; `sequential`, `writers`, `pipelined`, `sessions`,
//! `writers_64`, `writers_256`, `writers_1024`, `allocations`), e.g. to profile one path.

mod common;

use common::*;

const WRITERS: [usize; 3] = [64, 256, 1024];
const WINDOW: usize = 256;
/// A deeper pipeline: batches grow with the queue, so per-write costs shrink.
const DEEP_WINDOW: usize = 4096;

struct Floors {
    ping_p50: f64,
    ping_p99: f64,
    blocking: Vec<(usize, f64)>,
    pipelined: f64,
}

fn floors(duration: std::time::Duration) -> Floors {
    let mut f = Floors { ping_p50: f64::NAN, ping_p99: f64::NAN, blocking: Vec::new(), pipelined: f64::NAN };
    if enabled("floors") || enabled("floor_pingpong") {
        let (ping, ping_cpu) = ping_pong(duration);
        f.ping_p50 = us(ping.value_at_quantile(0.5));
        f.ping_p99 = us(ping.value_at_quantile(0.99));
        figure("floor_pingpong_p50_us", f.ping_p50);
        figure("floor_pingpong_p99_us", f.ping_p99);
        figure("floor_pingpong_cpu_us", ping_cpu);
    }
    for threads in [1, 64, 256, 1024] {
        if !enabled("floors") && !enabled(&format!("floor_{threads}")) {
            continue;
        }
        let r = blocking_floor(threads, duration);
        figure(&format!("floor_blocking_{threads}_per_s"), r.per_s);
        figure(&format!("floor_blocking_{threads}_cpu_us"), r.cpu_us);
        figure(&format!("floor_blocking_{threads}_switches"), r.switches);
        figure(&format!("floor_blocking_{threads}_kernel_share"), r.kernel);
        if threads == 1 {
            figure("floor_blocking_1_p50_us", us(r.latency.value_at_quantile(0.5)));
        }
        f.blocking.push((threads, r.per_s));
    }
    if enabled("floors") || enabled("floor_pipelined") {
        let floor = Floor::start();
        let (rate, cpu, _) = pipelined(
            WINDOW,
            duration,
            || floor.submit(1),
            |slot| {
                std::hint::black_box(Floor::wait(slot));
            },
        );
        f.pipelined = rate;
        figure("floor_pipelined_per_s", rate);
        figure("floor_pipelined_cpu_us", cpu);
    }
    f
}

fn main() {
    let duration = secs(2.0);
    machine_note();
    note("3 nodes, one process, loopback TCP; 16-byte commands; ratios are to floors of this run");
    let floors = if [1, 64, 256, 1024].iter().any(|n| enabled("floors") || enabled(&format!("floor_{n}"))) {
        Some(floors(duration))
    } else {
        None
    };
    let ratio = |name: &str, value: f64, floor: Option<f64>| {
        if let Some(floor) = floor.filter(|f| f.is_finite() && value.is_finite()) {
            figure(name, value / floor);
        }
    };
    let cluster = Cluster::start(3, |c| c);
    // With a session (the default): for the comparison with a client without one.
    let mut session_p50 = None;
    let mut session_64 = None;
    let client = cluster.client.clone();
    if enabled("sequential") {
        let c = client.clone();
        let h = sequential(duration, move || {
            std::hint::black_box(c.write(put(COMMAND_BYTES)).unwrap());
        });
        let (p50, p99) = (us(h.value_at_quantile(0.5)), us(h.value_at_quantile(0.99)));
        note(&format!("{} writes sequential", h.len()));
        figure("write_latency_p50_us", p50);
        session_p50 = Some(p50);
        figure("write_latency_p99_us", p99);
        ratio("write_latency_floor_ratio", p50, floors.as_ref().map(|f| f.ping_p50));
        ratio("write_latency_p99_floor_ratio", p99, floors.as_ref().map(|f| f.ping_p99));
    }
    if WRITERS.iter().any(|n| enabled("writers") || enabled(&format!("writers_{n}"))) {
        let mut rates = Vec::new();
        for threads in WRITERS {
            if !enabled("writers") && !enabled(&format!("writers_{threads}")) {
                continue;
            }
            let c = client.clone();
            let r = concurrent(threads, duration, move || {
                std::hint::black_box(c.write(put(COMMAND_BYTES)).unwrap());
            });
            figure(&format!("write_throughput_{threads}_clients_per_s"), r.per_s);
            note(&format!("{} writes by {threads} writers", r.ops));
            let floor = floors.as_ref().and_then(|f| f.blocking.iter().find(|(n, _)| *n == threads).map(|&(_, r)| r));
            ratio(&format!("write_throughput_{threads}_floor_ratio"), r.per_s, floor);
            figure(&format!("write_cpu_{threads}_clients_us"), r.cpu_us);
            figure(&format!("write_switches_{threads}_clients"), r.switches);
            figure(&format!("write_kernel_share_{threads}_clients"), r.kernel);
            figure(&format!("write_node_run_queue_wait_{threads}_clients_us"), r.node_wait_us);
            figure(&format!("write_latency_{threads}_clients_p99_us"), us(r.latency.value_at_quantile(0.99)));
            if threads == 64 {
                session_64 = Some(r.per_s);
            }
            rates.push(r.per_s);
        }
        if rates.len() == 3 {
            figure("write_throughput_1024_over_256_ratio", rates[2] / rates[1]);
        }
    }
    if enabled("pipelined") {
        for (window, name) in [(WINDOW, "pipelined"), (DEEP_WINDOW, "pipelined_4096")] {
            let (rate, cpu, _) = pipelined(
                window,
                duration,
                || client.submit(put(COMMAND_BYTES)).unwrap(),
                |p| {
                    std::hint::black_box(p.wait().unwrap());
                },
            );
            figure(&format!("write_throughput_{name}_per_s"), rate);
            ratio(&format!("write_throughput_{name}_floor_ratio"), rate, floors.as_ref().map(|f| f.pipelined));
            figure(&format!("write_cpu_{name}_us"), cpu);
        }
    }
    if enabled("sessions") {
        // Sessions (§6.3) are on by default; the same figures from a client without one.
        let plain = client.without_session();
        let c = plain.clone();
        let h = sequential(duration, move || {
            std::hint::black_box(c.write(put(COMMAND_BYTES)).unwrap());
        });
        let p50 = us(h.value_at_quantile(0.5));
        figure("write_latency_no_session_p50_us", p50);
        ratio("write_latency_session_over_none_ratio", session_p50.unwrap_or(f64::NAN), Some(p50));
        let c = plain.clone();
        let r = concurrent(64, duration, move || {
            std::hint::black_box(c.write(put(COMMAND_BYTES)).unwrap());
        });
        figure("write_throughput_64_clients_no_session_per_s", r.per_s);
        ratio("write_throughput_64_session_over_none_ratio", session_64.unwrap_or(f64::NAN), Some(r.per_s));
        figure("write_cpu_64_clients_no_session_us", r.cpu_us);
    }
    if enabled("allocations") {
        // Heap allocations per write, whole process (all nodes and the client threads),
        // counted in a run of its own so the counter does not slow the timed ones.
        let short = duration.mul_f64(0.5);
        let c = client.clone();
        let (r, allocations, _) = count_allocations(|| {
            concurrent(64, short, move || {
                std::hint::black_box(c.write(put(COMMAND_BYTES)).unwrap());
            })
        });
        figure("write_allocations_64_clients", allocations as f64 / r.ops as f64);
        let (done, allocations, _) = count_allocations(|| {
            let mut done = 0u64;
            pipelined(
                WINDOW,
                short,
                || client.submit(put(COMMAND_BYTES)).unwrap(),
                |p| {
                    std::hint::black_box(p.wait().unwrap());
                    done += 1;
                },
            );
            done
        });
        figure("write_allocations_pipelined", allocations as f64 / done as f64);
    }
    drop(client);
    cluster.stop();
}
