//! Issue 8, attack 6: a node out of file descriptors must recover once they are free.
//!
//! It used to stay leaderless for good: after a failed `accept` the edge-triggered
//! listener raised no new event for the connections already waiting in its backlog, and a
//! dialer whose handshake reply never came waited forever. This test runs alone in its
//! own process because it lowers the process's descriptor limit, which every node in it
//! shares.

mod support;

use std::fs::File;
use std::time::{Duration, Instant};

use support::cluster::{Cluster, wait_until};

/// Descriptors left above what the cluster already uses: a few more connections, no more.
const HEADROOM_FDS: u64 = 24;
/// How long the descriptors stay exhausted while the leader is gone.
const EXHAUSTED_FOR: Duration = Duration::from_secs(2);

fn open_fds() -> u64 {
    std::fs::read_dir("/proc/self/fd").map(|d| d.count() as u64).unwrap_or(0)
}

fn set_soft_limit(fds: u64) -> libc::rlimit {
    let mut old = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: plain libc calls on a valid, owned struct.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut old), 0);
        let new = libc::rlimit { rlim_cur: fds.min(old.rlim_max), rlim_max: old.rlim_max };
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &new), 0);
    }
    old
}

/// Opens `/dev/null` until the process has no descriptor left.
fn exhaust(held: &mut Vec<File>) {
    while let Ok(f) = File::open("/dev/null") {
        held.push(f);
    }
}

#[test]
fn attack_6_a_cluster_out_of_descriptors_recovers_and_elects_a_leader() {
    if !std::path::Path::new("/proc/self/fd").exists() {
        eprintln!("skipped: cannot count descriptors here");
        return;
    }
    let mut cluster = Cluster::start(3);
    let mut acked = Vec::new();
    let leader = cluster.stable_leader();
    cluster.write_and_check(leader, 1..=3, &mut acked);
    let old = set_soft_limit(open_fds() + HEADROOM_FDS);

    // Every descriptor taken, then the leader dies; whatever its death frees is taken
    // again, so the survivors' accepts and dials fail for a while.
    let mut held = Vec::new();
    exhaust(&mut held);
    cluster.stop(leader);
    let until = Instant::now() + EXHAUSTED_FOR;
    while Instant::now() < until {
        exhaust(&mut held);
        std::thread::sleep(Duration::from_millis(1));
    }
    drop(held);

    let survivors: Vec<u64> = cluster.nodes.keys().copied().collect();
    let new_leader = cluster.leader_among(&survivors);
    cluster.write_and_check(new_leader, 4..=6, &mut acked);
    cluster.await_applied_everywhere(&acked);
    // SAFETY: restores the limits read above.
    unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &old) };
    wait_until("the survivors keep their leader", || cluster.leader_among(&survivors) == new_leader);
}
