//! Reads from a 3-node cluster on loopback (one process), beside floors of the same run:
//! `read` (ReadIndex: a heartbeat round to a majority before the closure runs on the
//! leader), `read` with lease reads on (`read_lease_*`: no round while the leader's lease
//! holds) and `read_local` (no round trip), one client's latency against the TCP
//! ping-pong, and the throughput of 64 and 256 reader threads against the blocking-client
//! floor (threads calling one mio thread and back, no Raft, no TCP).
//!
//! `cargo bench --bench reads` prints one `name=value` line per figure
//! (`QUORATE_BENCH_SECS`, default 2, sets each figure's length).

mod common;

use common::*;

fn main() {
    let duration = secs(2.0);
    machine_note();
    note("3 nodes, one process, loopback TCP; reads on the leader; ratios are to floors of this run");
    let (ping, _) = ping_pong(duration);
    let ping_p50 = us(ping.value_at_quantile(0.5));
    figure("floor_pingpong_p50_us", ping_p50);
    let mut floor = Vec::new();
    for threads in [64, 256] {
        let r = blocking_floor(threads, duration);
        figure(&format!("floor_blocking_{threads}_per_s"), r.per_s);
        floor.push(r.per_s);
    }
    let cluster = Cluster::start(3, |c| c);
    for _ in 0..1000 {
        cluster.client.write(put(COMMAND_BYTES)).unwrap();
    }
    read_figures(&cluster, "read", duration, ping_p50, &floor);
    let c = cluster.client.clone();
    let h = sequential(duration, move || {
        std::hint::black_box(c.read_local(|s: &Store| s.count).unwrap());
    });
    figure("read_local_latency_p50_us", us(h.value_at_quantile(0.5)));
    figure("read_local_latency_p99_us", us(h.value_at_quantile(0.99)));
    for (k, threads) in [64, 256].into_iter().enumerate() {
        let c = cluster.client.clone();
        let r = concurrent(threads, duration, move || {
            std::hint::black_box(c.read_local(|s: &Store| s.count).unwrap());
        });
        figure(&format!("read_local_throughput_{threads}_clients_per_s"), r.per_s);
        figure(&format!("read_local_throughput_{threads}_floor_ratio"), r.per_s / floor[k]);
    }
    cluster.stop();
    lease_reads(duration, ping_p50, &floor);
}

/// The clock drift bound the lease cluster is configured with.
const LEASE_DRIFT: f64 = 0.05;

/// `read` on a cluster with lease reads on: the same figures as ReadIndex's, named
/// `read_lease_*`, and the share of reads the lease served.
fn lease_reads(duration: std::time::Duration, ping_p50: f64, floor: &[f64]) {
    note(&format!("lease reads: Config::lease_reads({LEASE_DRIFT})"));
    let cluster = Cluster::start(3, |c| c.lease_reads(LEASE_DRIFT));
    for _ in 0..1000 {
        cluster.client.write(put(COMMAND_BYTES)).unwrap();
    }
    read_figures(&cluster, "read_lease", duration, ping_p50, floor);
    let metrics = cluster.client.status().unwrap().metrics;
    let served = (metrics.reads_by_lease + metrics.reads_by_read_index).max(1);
    figure("read_lease_served_by_lease_share", metrics.reads_by_lease as f64 / served as f64);
    cluster.stop();
}

/// `read`'s figures on `cluster`, named `{name}_*`: one client's latency against the
/// ping-pong, and 64 and 256 reader threads against the blocking floors.
fn read_figures(cluster: &Cluster, name: &str, duration: std::time::Duration, ping_p50: f64, floor: &[f64]) {
    let c = cluster.client.clone();
    let h = sequential(duration, move || {
        std::hint::black_box(c.read(|s: &Store| s.count).unwrap());
    });
    let p50 = us(h.value_at_quantile(0.5));
    figure(&format!("{name}_latency_p50_us"), p50);
    figure(&format!("{name}_latency_p99_us"), us(h.value_at_quantile(0.99)));
    figure(&format!("{name}_latency_floor_ratio"), p50 / ping_p50);
    for (k, threads) in [64, 256].into_iter().enumerate() {
        let c = cluster.client.clone();
        let r = concurrent(threads, duration, move || {
            std::hint::black_box(c.read(|s: &Store| s.count).unwrap());
        });
        figure(&format!("{name}_throughput_{threads}_clients_per_s"), r.per_s);
        figure(&format!("{name}_throughput_{threads}_floor_ratio"), r.per_s / floor[k]);
        figure(&format!("{name}_cpu_{threads}_clients_us"), r.cpu_us);
    }
}
