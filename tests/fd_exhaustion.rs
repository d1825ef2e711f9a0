//! Issue 8, attack 6: a node out of file descriptors must recover once they are free.
//!
//! It used to stay leaderless for good: after a failed `accept` the edge-triggered
//! listener raised no new event for the connections already waiting in its backlog, and a
//! dialer whose handshake reply never came waited forever. This test runs alone in its
//! own process because it lowers the process's descriptor limit, which every node in it
//! shares.

mod support;

use std::fs::File;
use std::io::Read;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use support::cluster::{Cluster, wait_until};

/// Descriptors left above what the cluster already uses: a few more connections, no more.
const HEADROOM_FDS: u64 = 24;
/// Tries at leaving a connection in the follower's backlog (a thread that frees a
/// descriptor at the wrong moment lets the follower accept it at once).
const SETUP_ATTEMPTS: usize = 5;
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

/// Reads the node's greeting (its handshake frame's length prefix) within `within`.
fn greeted(stream: &mut TcpStream, within: Duration) -> bool {
    stream.set_read_timeout(Some(within)).unwrap();
    let mut prefix = [0u8; 4];
    stream.read_exact(&mut prefix).is_ok()
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
    let follower = *cluster.nodes.keys().find(|&&id| id != leader).unwrap();
    let old = set_soft_limit(open_fds() + HEADROOM_FDS);

    // Every descriptor taken but the one our connection to the follower needs: it lands
    // in the follower's backlog, and the follower's `accept` fails (EMFILE).
    let mut held = Vec::new();
    let mut waiting = None;
    for _attempt in 0..SETUP_ATTEMPTS {
        exhaust(&mut held);
        let stream = loop {
            held.pop().expect("something to free");
            if let Ok(s) = TcpStream::connect(cluster.addrs[&follower]) {
                break s;
            }
        };
        exhaust(&mut held);
        let mut stream = stream;
        // Greeted already: another thread freed a descriptor the follower took. Again.
        if !greeted(&mut stream, Duration::from_millis(300)) {
            waiting = Some(stream);
            break;
        }
    }
    let mut waiting = waiting.expect("a connection the follower could not accept");
    drop(std::mem::take(&mut held));
    // No new connection arrives to raise an edge: only a retry on the timer accepts ours.
    assert!(greeted(&mut waiting, Duration::from_secs(5)), "the follower never accepted again");

    // The leader dies while descriptors are short; whatever its death frees is taken too.
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
