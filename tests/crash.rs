//! Crash test with real processes: three `kv` example nodes as OS processes on data dirs,
//! a client writing continuously through their stdin, and `SIGKILL` of a random node (the
//! leader every other time), each restarted on its directory; nodes snapshot every 40
//! entries, so kills land while snapshots are written, installed and loaded. At the end every
//! acknowledged write is present and all nodes hold the same map.
//!
//! `QUORATE_CRASH_KILLS=N` kills N times (default 4); `QUORATE_CRASH_SEED` picks the run.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};
use support::kvprocs::kv_binary;

mod support;

const NODES: u64 = 3;
/// How long one command may take before the writer gives up on it (indeterminate).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the test waits for any condition.
const PATIENCE: Duration = Duration::from_secs(60);
/// Acknowledged writes between kills.
const WRITES_BETWEEN_KILLS: usize = 25;

/// One running `kv` process: its stdin, and its stdout lines.
struct Proc {
    child: Child,
    stdin: ChildStdin,
    lines: Receiver<String>,
}

struct Cluster {
    kv: PathBuf,
    root: tempfile::TempDir,
    addrs: Vec<SocketAddr>,
    procs: Vec<Mutex<Proc>>,
    pids: Vec<AtomicU64>,
}

impl Cluster {
    fn start() -> Cluster {
        let kv = kv_binary();
        let root = tempfile::tempdir().unwrap();
        // Bound together so they differ, then released for the processes to bind.
        let ls: Vec<TcpListener> = (0..NODES).map(|_| TcpListener::bind("127.0.0.1:0").unwrap()).collect();
        let addrs: Vec<SocketAddr> = ls.iter().map(|l| l.local_addr().unwrap()).collect();
        drop(ls);
        let mut cluster = Cluster { kv, root, addrs, procs: Vec::new(), pids: Vec::new() };
        for id in 1..=NODES {
            let proc = cluster.spawn(id);
            cluster.pids.push(AtomicU64::new(u64::from(proc.child.id())));
            cluster.procs.push(Mutex::new(proc));
        }
        cluster
    }

    fn spawn(&self, id: u64) -> Proc {
        let mut cmd = Command::new(&self.kv);
        let i = id as usize - 1;
        cmd.args(["--id", &id.to_string(), "--listen", &self.addrs[i].to_string()]);
        for (j, addr) in self.addrs.iter().enumerate() {
            if j != i {
                cmd.args(["--peer", &format!("{}={addr}", j + 1)]);
            }
        }
        cmd.arg("--data-dir").arg(self.root.path().join(format!("node-{id}")));
        // Compact often, so kills land while snapshots are written, installed and loaded.
        cmd.args(["--snapshot-every", "40"]);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.root.path().join(format!("node-{id}.log")))
            .unwrap();
        cmd.env("RUST_LOG", "warn").stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(log);
        let mut child = cmd.spawn().expect("spawn kv");
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = crossbeam_channel::unbounded();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Proc { child, stdin, lines }
    }

    /// Sends `command` to node `id` and returns its answer, or `None` if the process died
    /// or did not answer in time.
    fn ask(&self, id: u64, command: &str) -> Option<String> {
        let mut proc = self.procs[id as usize - 1].lock().unwrap();
        writeln!(proc.stdin, "{command}").ok()?;
        proc.stdin.flush().ok()?;
        let echo = format!("> {command}");
        let deadline = Instant::now() + ANSWER_TIMEOUT;
        let mut echoed = false;
        loop {
            let line = match proc.lines.recv_deadline(deadline) {
                Ok(line) => line,
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => return None,
            };
            if echoed {
                return Some(line);
            }
            echoed = line == echo; // Skips start-up lines and late answers to older commands.
        }
    }

    /// SIGKILLs node `id` and starts it again on its data dir.
    fn kill_and_restart(&self, id: u64) {
        let pid = self.pids[id as usize - 1].load(Ordering::SeqCst);
        let status = Command::new("kill").args(["-9", &pid.to_string()]).status().expect("run kill");
        assert!(status.success(), "kill -9 {pid}");
        let mut proc = self.procs[id as usize - 1].lock().unwrap();
        proc.child.wait().unwrap();
        *proc = self.spawn(id);
        self.pids[id as usize - 1].store(u64::from(proc.child.id()), Ordering::SeqCst);
    }

    /// Node `id`'s map, read locally.
    fn dump(&self, id: u64) -> Option<Vec<(u64, u64)>> {
        let line = self.ask(id, "dump-local")?;
        let rest = line.strip_prefix("dump ")?;
        let mut words = rest.split_whitespace();
        let n: usize = words.next()?.parse().ok()?;
        let pairs: Vec<(u64, u64)> = words
            .map(|w| {
                let (k, v) = w.split_once('=').expect("key=value");
                (k.trim_start_matches('k').parse().unwrap(), v.parse().unwrap())
            })
            .collect();
        assert_eq!(pairs.len(), n, "{line}");
        Some(pairs)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for proc in &self.procs {
            let mut proc = proc.lock().unwrap_or_else(|e| e.into_inner());
            let _ = proc.child.kill();
            let _ = proc.child.wait();
        }
    }
}

/// Writes `put k<n> <n>` for n = 1, 2, … to whichever node leads, following redirects;
/// a write is acknowledged when the node prints the previous value, `(none)`.
fn writer(cluster: Arc<Cluster>, stop: Arc<AtomicBool>, acked: Arc<Mutex<Vec<u64>>>, leader: Arc<AtomicU64>) {
    let mut target = 1;
    let mut n = 0;
    while !stop.load(Ordering::SeqCst) {
        n += 1;
        let answer = cluster.ask(target, &format!("put k{n} {n}"));
        match answer.as_deref() {
            Some("(none)") => {
                acked.lock().unwrap().push(n);
                leader.store(target, Ordering::SeqCst);
            }
            Some(redirect) if redirect.starts_with("redirect: not the leader; node ") => {
                let id = redirect["redirect: not the leader; node ".len()..].split(' ').next().unwrap();
                target = id.parse().unwrap();
            }
            _ => {
                // An error, a death, no leader yet: try the next node, pacing the retries.
                target = target % NODES + 1;
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

#[test]
fn kv_processes_killed_with_sigkill_and_restarted_keep_every_acknowledged_write() {
    let kills = env_u64("QUORATE_CRASH_KILLS", 4);
    let mut rng = env_u64("QUORATE_CRASH_SEED", 0xC4A5);
    let cluster = Arc::new(Cluster::start());
    let (stop, acked, leader) =
        (Arc::new(AtomicBool::new(false)), Arc::new(Mutex::new(Vec::new())), Arc::new(AtomicU64::new(0)));
    let writer = {
        let (c, s, a, l) = (cluster.clone(), stop.clone(), acked.clone(), leader.clone());
        std::thread::spawn(move || writer(c, s, a, l))
    };
    let acked_len = || acked.lock().unwrap().len();
    for round in 0..kills {
        let target = acked_len() + WRITES_BETWEEN_KILLS;
        wait_until(&format!("{WRITES_BETWEEN_KILLS} more writes before kill {round}"), || acked_len() >= target);
        rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let victim = match (round % 2, leader.load(Ordering::SeqCst)) {
            (0, l) if l != 0 => l,
            _ => (rng >> 33) % NODES + 1,
        };
        eprintln!("kill {round}: SIGKILL node {victim} after {} acknowledged writes", acked_len());
        cluster.kill_and_restart(victim);
    }
    let target = acked_len() + WRITES_BETWEEN_KILLS;
    wait_until("writes resume after the last restart", || acked_len() >= target);
    stop.store(true, Ordering::SeqCst);
    writer.join().unwrap();
    let acked = acked.lock().unwrap().clone();

    let mut dumps = Vec::new();
    wait_until("every node holds the same map", || {
        dumps = (1..=NODES).filter_map(|id| cluster.dump(id)).collect();
        dumps.len() == NODES as usize && dumps.windows(2).all(|w| w[0] == w[1])
    });
    let map: std::collections::BTreeMap<u64, u64> = dumps[0].iter().copied().collect();
    for v in &acked {
        assert_eq!(map.get(v), Some(v), "acknowledged write k{v} is missing after the crashes");
    }
    eprintln!("{} acknowledged writes, {} keys on every node, {kills} kills", acked.len(), map.len());
    for id in 1..=NODES {
        let dir = cluster.root.path().join(format!("node-{id}"));
        let snapshots = std::fs::read_dir(&dir).unwrap().filter_map(Result::ok);
        let found = snapshots.filter(|e| e.file_name().to_string_lossy().ends_with(".snap")).count();
        assert!(found > 0, "node {id} never saved a snapshot: the run did not exercise compaction");
    }
}
