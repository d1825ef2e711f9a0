//! Cost curves: how writes scale with the cluster size (3, 5, 7 nodes, 16-byte commands)
//! and with the command size (16 B, 1 KiB, 64 KiB on 3 nodes, with MB/s against a
//! loopback TCP bandwidth of the same run), and the heap one log entry takes. All nodes run
//! in one process on loopback, so a larger cluster also shares the same cores.
//!
//! `cargo bench --bench curves` prints one `name=value` line per figure
//! (`QUORATE_BENCH_SECS`, default 2, sets each figure's length; `QUORATE_BENCH_ONLY` runs
//! some groups only: `nodes_3`, `nodes_5`, `nodes_7`, `payload_16b`, `payload_1kib`,
//! `payload_64kib`, `memory`).

mod common;

use common::*;

const WRITERS: usize = 64;
/// Entries written to measure memory per entry.
const MEMORY_ENTRIES: u64 = 100_000;

fn main() {
    let duration = secs(2.0);
    machine_note();
    note(&format!("one process, loopback TCP; {WRITERS} blocking writer threads; ratios are to floors of this run"));
    let (ping, _) = ping_pong(duration);
    let ping_p50 = us(ping.value_at_quantile(0.5));
    figure("floor_pingpong_p50_us", ping_p50);
    let floor = blocking_floor(WRITERS, duration).per_s;
    figure(&format!("floor_blocking_{WRITERS}_per_s"), floor);
    let bandwidth = tcp_bandwidth(duration);
    figure("floor_tcp_bandwidth_mb_per_s", bandwidth);

    for size in [3, 5, 7] {
        if !enabled("nodes") && !enabled(&format!("nodes_{size}")) {
            continue;
        }
        let cluster = Cluster::start(size, |c| c);
        let c = cluster.client.clone();
        let h = sequential(duration, move || {
            std::hint::black_box(c.write(put(COMMAND_BYTES)).unwrap());
        });
        let p50 = us(h.value_at_quantile(0.5));
        figure(&format!("curve_nodes_{size}_latency_p50_us"), p50);
        figure(&format!("curve_nodes_{size}_latency_floor_ratio"), p50 / ping_p50);
        let c = cluster.client.clone();
        let r = concurrent(WRITERS, duration, move || {
            std::hint::black_box(c.write(put(COMMAND_BYTES)).unwrap());
        });
        figure(&format!("curve_nodes_{size}_throughput_per_s"), r.per_s);
        figure(&format!("curve_nodes_{size}_throughput_floor_ratio"), r.per_s / floor);
        figure(&format!("curve_nodes_{size}_cpu_us"), r.cpu_us);
        cluster.stop();
    }

    for (name, bytes) in [("16b", 16), ("1kib", 1024), ("64kib", 64 * 1024)] {
        if !enabled("payload") && !enabled(&format!("payload_{name}")) {
            continue;
        }
        let cluster = Cluster::start(3, |c| c);
        let c = cluster.client.clone();
        let h = sequential(duration, move || {
            std::hint::black_box(c.write(put(bytes)).unwrap());
        });
        figure(&format!("curve_payload_{name}_latency_p50_us"), us(h.value_at_quantile(0.5)));
        let c = cluster.client.clone();
        let r = concurrent(WRITERS, duration, move || {
            std::hint::black_box(c.write(put(bytes)).unwrap());
        });
        figure(&format!("curve_payload_{name}_throughput_per_s"), r.per_s);
        let mb = r.per_s * bytes as f64 / 1e6;
        figure(&format!("curve_payload_{name}_mb_per_s"), mb);
        // The leader sends every byte to each of its 2 followers.
        figure(&format!("curve_payload_{name}_bandwidth_ratio"), mb / bandwidth);
        figure(&format!("curve_payload_{name}_cpu_us"), r.cpu_us);
        cluster.stop();
    }

    if !enabled("memory") {
        return;
    }
    // Heap per log entry: the live bytes a run of writes leaves behind (no snapshots, so
    // the log keeps every entry), over the entries and the nodes.
    let cluster = Cluster::start(3, |c| c);
    let client = cluster.client.clone();
    let (_, _, live) = count_allocations(|| {
        let mut pending = std::collections::VecDeque::new();
        for _ in 0..MEMORY_ENTRIES {
            if pending.len() == 256 {
                let p: quorate::PendingWrite<u64> = pending.pop_front().unwrap();
                p.wait().unwrap();
            }
            pending.push_back(client.submit(put(COMMAND_BYTES)).unwrap());
        }
        for p in pending {
            p.wait().unwrap();
        }
        // Followers apply a little later than the leader answers.
        std::thread::sleep(std::time::Duration::from_millis(300));
    });
    figure("memory_per_entry_bytes", live as f64 / MEMORY_ENTRIES as f64 / 3.0);
    drop(client);
    cluster.stop();
}
