//! The `redis` example's nodes as OS processes: a cluster on free ports, a Redis client
//! connection to any node, the leader found through `INFO`, and `SIGKILL`.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use super::examples::{example_binary, free_addrs};

/// How long the nodes may take to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// A client call gives up after this (the nodes answer within their 5 s request timeout,
/// plus forwarding).
const CALL_TIMEOUT: Duration = Duration::from_secs(15);

/// The `redis` example, built once per test binary.
pub fn redis_binary() -> &'static PathBuf {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| example_binary("redis"))
}

/// Nodes 1..=n of a cluster, each its own process.
pub struct RedisCluster {
    root: tempfile::TempDir,
    resp: Vec<SocketAddr>,
    /// `None` once killed.
    children: Vec<Mutex<Option<Child>>>,
}

impl RedisCluster {
    /// Starts `nodes` nodes, each with `extra` arguments, and waits until all listen.
    pub fn start(nodes: usize, extra: &[&str]) -> RedisCluster {
        let addrs = free_addrs(2 * nodes);
        let (raft, resp) = addrs.split_at(nodes);
        let root = tempfile::tempdir().unwrap();
        let (ready_tx, ready) = crossbeam_channel::unbounded();
        let mut children = Vec::new();
        for i in 0..nodes {
            let id = i + 1;
            let mut cmd = Command::new(redis_binary());
            cmd.args(["--id", &id.to_string(), "--listen", &raft[i].to_string(), "--client", &resp[i].to_string()]);
            for j in (0..nodes).filter(|&j| j != i) {
                cmd.args(["--peer", &format!("{}={}", j + 1, raft[j])]);
                // No `--client-peer`: nodes learn each other's RESP address from the
                // metadata they announce (the flag stays as an override).
            }
            let log = std::fs::File::create(root.path().join(format!("node-{id}.log"))).unwrap();
            cmd.args(extra).env("RUST_LOG", "warn").stdin(Stdio::null()).stdout(Stdio::piped()).stderr(log);
            let mut child = cmd.spawn().expect("spawn the redis example");
            let stdout = child.stdout.take().unwrap();
            let ready_tx = ready_tx.clone();
            // Reads every line, so the pipe never fills; reports the one that says ready.
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                    if line.starts_with("resp listening on ") {
                        let _ = ready_tx.send(id);
                    }
                }
            });
            children.push(Mutex::new(Some(child)));
        }
        let cluster = RedisCluster { root, resp: resp.to_vec(), children };
        let deadline = Instant::now() + START_TIMEOUT;
        for _ in 0..nodes {
            ready.recv_deadline(deadline).expect("a node did not start listening in time");
        }
        cluster
    }

    /// Node `id`'s RESP address.
    pub fn addr(&self, id: usize) -> SocketAddr {
        self.resp[id - 1]
    }

    /// Ids of the nodes not killed.
    pub fn alive(&self) -> Vec<usize> {
        (1..=self.resp.len()).filter(|&id| self.children[id - 1].lock().unwrap().is_some()).collect()
    }

    /// A Redis client connection to node `id`.
    pub fn connect(&self, id: usize) -> redis::RedisResult<redis::Connection> {
        let client = redis::Client::open(format!("redis://{}/", self.addr(id)))?;
        let con = client.get_connection_with_timeout(CALL_TIMEOUT)?;
        con.set_read_timeout(Some(CALL_TIMEOUT))?;
        con.set_write_timeout(Some(CALL_TIMEOUT))?;
        Ok(con)
    }

    /// Node `id`'s `INFO replication` fields, or `None` if it cannot be asked.
    pub fn replication(&self, id: usize) -> Option<Vec<(String, String)>> {
        self.info(id, "replication")
    }

    /// `INFO <section>` of node `id`, as (field, value) pairs.
    pub fn info(&self, id: usize, section: &str) -> Option<Vec<(String, String)>> {
        let mut con = self.connect(id).ok()?;
        let text: String = redis::cmd("INFO").arg(section).query(&mut con).ok()?;
        Some(
            text.lines()
                .filter_map(|l| l.split_once(':'))
                .map(|(k, v)| (k.to_string(), v.trim_end().to_string()))
                .collect(),
        )
    }

    /// Waits until one live node leads and every live node names it; returns its id.
    pub fn await_leader(&self, within: Duration) -> usize {
        let deadline = Instant::now() + within;
        loop {
            if let Some(leader) = self.agreed_leader() {
                return leader;
            }
            assert!(Instant::now() < deadline, "no leader agreed on by nodes {:?} in {within:?}", self.alive());
            // Polling pace, not synchronisation.
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn agreed_leader(&self) -> Option<usize> {
        let field =
            |info: &[(String, String)], name: &str| info.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
        let mut leader = None;
        for id in self.alive() {
            let info = self.replication(id)?;
            let named: usize = field(&info, "raft_leader_id")?.parse().ok()?;
            if leader.is_some_and(|l| l != named) {
                return None;
            }
            leader = Some(named);
            if named == id && field(&info, "role")? != "master" {
                return None;
            }
        }
        leader.filter(|l| self.alive().contains(l))
    }

    /// A live node other than `leader`.
    pub fn follower(&self, leader: usize) -> usize {
        self.alive().into_iter().find(|&id| id != leader).expect("a live follower")
    }

    /// Kills node `id` with SIGKILL and reaps it.
    pub fn kill(&self, id: usize) {
        let mut child = self.children[id - 1].lock().unwrap().take().expect("node already killed");
        child.kill().expect("SIGKILL");
        child.wait().unwrap();
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for child in &self.children {
            if let Some(mut child) = child.lock().unwrap_or_else(|e| e.into_inner()).take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        if std::thread::panicking() {
            for id in 1..=self.resp.len() {
                let log = std::fs::read_to_string(self.root.path().join(format!("node-{id}.log"))).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(30).collect();
                eprintln!("--- node {id} log (last lines) ---");
                for line in tail.iter().rev() {
                    eprintln!("{line}");
                }
            }
        }
    }
}
