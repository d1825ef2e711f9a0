//! The linearizability suite's cluster and clients over real TCP: durable in-process nodes
//! whose every link runs through the nemesis's proxies; clients that follow the leader and
//! record every operation in a [`History`]; final reads; and the checks of a history that
//! need no search (what lists may hold).

use std::collections::{BTreeMap, HashSet};
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

use quorate::{Client, Config, Error, Node, NodeId, Role};

use super::cluster::{listeners, wait_until};
use super::history::{History, Input, Op, Output, Value};
use super::kvmodel::{KvCmd, KvModel, KvReply};
use super::nemesis::{Net, Target};
use super::sim::Rng;

/// How long a client call waits: a write left unanswered this long is `info`.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// Snapshot every this many entries, keeping this many behind it: a node stopped or cut
/// off for a second or two falls behind the leader's log and needs InstallSnapshot.
pub const SNAPSHOT_ENTRIES: u64 = 200;
pub const SNAPSHOT_KEEP_ENTRIES: u64 = 20;
/// A client's pause after an error that named no leader (pacing, not synchronisation).
const RETRY_PAUSE: Duration = Duration::from_millis(10);

/// Every node's client, by id; a restarted node's replaces the stopped one's.
pub type Clients = Arc<RwLock<BTreeMap<NodeId, Client<KvModel>>>>;

/// Nodes `1..=n` on data dirs, node `i` reaching node `j` through the proxy `(i, j)`.
pub struct ChaosCluster {
    root: tempfile::TempDir,
    pub addrs: BTreeMap<NodeId, SocketAddr>,
    net: Net,
    nodes: Mutex<BTreeMap<NodeId, Node<KvModel>>>,
    pub clients: Clients,
}

impl ChaosCluster {
    pub fn start(n: usize) -> ChaosCluster {
        let ls = listeners(n);
        let addrs: BTreeMap<NodeId, SocketAddr> =
            ls.iter().enumerate().map(|(i, l)| (i as u64 + 1, l.local_addr().unwrap())).collect();
        let cluster = ChaosCluster {
            root: tempfile::tempdir().expect("temp dir"),
            net: Net::start(&addrs),
            addrs,
            nodes: Mutex::new(BTreeMap::new()),
            clients: Arc::new(RwLock::new(BTreeMap::new())),
        };
        for (i, l) in ls.into_iter().enumerate() {
            cluster.start_node(i as u64 + 1, l);
        }
        cluster
    }

    fn config(&self, id: NodeId) -> Config {
        let mut config = Config::new(id, self.addrs[&id])
            .election_timeout(Duration::from_millis(300))
            .heartbeat_interval(Duration::from_millis(50))
            .request_timeout(REQUEST_TIMEOUT)
            .snapshot_threshold(SNAPSHOT_ENTRIES, u64::MAX)
            .snapshot_keep_entries(SNAPSHOT_KEEP_ENTRIES)
            .data_dir(self.root.path().join(format!("node-{id}")));
        for &peer in self.addrs.keys().filter(|&&p| p != id) {
            config = config.peer(peer, self.net.addr(id, peer));
        }
        config
    }

    fn start_node(&self, id: NodeId, listener: TcpListener) {
        let node = Node::start_with_listener(self.config(id), listener, KvModel::default()).expect("start node");
        self.clients.write().unwrap().insert(id, node.client());
        self.nodes.lock().unwrap().insert(id, node);
    }

    pub fn client(&self, id: NodeId) -> Client<KvModel> {
        self.clients.read().unwrap()[&id].clone()
    }

    pub fn running(&self) -> Vec<NodeId> {
        self.nodes.lock().unwrap().keys().copied().collect()
    }

    /// Waits until every node runs, exactly one leads, and all agree on it.
    pub fn await_leader(&self) -> NodeId {
        let mut found = 0;
        wait_until("every node runs and all agree on one leader", || {
            if self.running().len() != self.addrs.len() {
                return false;
            }
            let statuses: Vec<_> = self.addrs.keys().filter_map(|&id| self.client(id).status().ok()).collect();
            let leaders: Vec<_> = statuses.iter().filter(|s| s.role == Role::Leader).map(|s| s.id).collect();
            if statuses.len() != self.addrs.len() || leaders.len() != 1 {
                return false;
            }
            found = leaders[0];
            statuses.iter().all(|s| s.leader == Some(found))
        });
        found
    }

    /// Waits until every node has applied what the leader has, then checks they all hold
    /// the same map.
    pub fn await_converged(&self) {
        let leader = self.await_leader();
        let target = self.client(leader).status().expect("leader status").commit_index;
        let mut states = Vec::new();
        for &id in self.addrs.keys() {
            let c = self.client(id);
            wait_until(&format!("node {id} applies up to {target}"), || {
                c.status().is_ok_and(|s| s.applied_index >= target)
            });
            states.push((id, c.read_local(|m: &KvModel| m.clone()).expect("read_local")));
        }
        for (id, state) in &states[1..] {
            assert!(state == &states[0].1, "node {id} holds another state than node {}", states[0].0);
        }
    }

    /// Each node's latest snapshot index (0: none yet).
    pub fn snapshot_indexes(&self) -> BTreeMap<NodeId, u64> {
        let ids = self.addrs.keys();
        ids.map(|&id| (id, self.client(id).status().map_or(0, |s| s.snapshot_index))).collect()
    }
}

impl Target for ChaosCluster {
    fn ids(&self) -> Vec<NodeId> {
        self.addrs.keys().copied().collect()
    }

    fn net(&self) -> &Net {
        &self.net
    }

    fn leader(&self) -> Option<NodeId> {
        let statuses = self.running().into_iter().filter_map(|id| self.client(id).status().ok());
        statuses.filter(|s| s.role == Role::Leader).max_by_key(|s| s.term).map(|s| s.id)
    }

    fn stop(&self, id: NodeId) {
        let node = self.nodes.lock().unwrap().remove(&id);
        node.expect("stopping a running node").stop();
    }

    fn restart(&self, id: NodeId) {
        assert!(!self.nodes.lock().unwrap().contains_key(&id), "node {id} is running");
        let listener = TcpListener::bind(self.addrs[&id]).expect("rebind the node's address");
        self.start_node(id, listener);
    }
}

// ---------------------------------------------------------------------------------------
// Clients.

/// How a client reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reads {
    /// `Client::read` on the leader (ReadIndex): linearizable.
    Linearizable,
    /// Deliberately broken: `Client::read_local` on this node, which may be stale. Only
    /// the test proving that the checker catches stale reads uses it.
    StaleOn(NodeId),
}

/// What one client was told, counted.
#[derive(Clone, Copy, Debug, Default)]
pub struct Stats {
    pub ok: usize,
    pub fail: usize,
    pub info: usize,
}

impl Stats {
    pub fn add(&mut self, other: Stats) {
        self.ok += other.ok;
        self.fail += other.fail;
        self.info += other.info;
    }
}

/// A client that follows the leader: it starts at one node, goes where a `Redirect`
/// points, and on any other error tries the next node. After an `info` it takes a new
/// client id (as Jepsen's processes do), so no id has two operations open at once.
pub struct KvClient {
    id: u64,
    /// Added to `id` after an `info`.
    stride: u64,
    clients: Clients,
    target: NodeId,
    reads: Reads,
    history: History,
    pub stats: Stats,
}

impl KvClient {
    pub fn new(id: u64, stride: u64, clients: Clients, start: NodeId, history: History, reads: Reads) -> KvClient {
        KvClient { id, stride, clients, target: start, reads, history, stats: Stats::default() }
    }

    /// Carries out `input` on `key` through the node it is at, records it, and returns
    /// what it was told.
    pub fn call(&mut self, key: &str, input: Input) -> Output {
        let client = self.clients.read().unwrap()[&self.target].clone();
        let inv = self.history.invoke(self.id, key, input);
        let result = match KvCmd::of(key, input) {
            Some(cmd) => client.write(cmd).map(KvReply::output),
            None => {
                let key = key.to_string();
                let read = move |m: &KvModel| Output::Read(m.get(&key));
                match self.reads {
                    Reads::Linearizable => client.read(read),
                    Reads::StaleOn(id) => self.clients.read().unwrap()[&id].clone().read_local(read),
                }
            }
        };
        // A `fail` certainly had no effect; reads never have one, so a read that went
        // wrong in any way is a `fail`.
        let output = match &result {
            Ok(output) => output.clone(),
            Err(e) if e.is_indeterminate() && input != Input::Read => Output::Info,
            Err(_) => Output::Fail,
        };
        self.history.complete(inv, output.clone());
        match output {
            Output::Info => {
                self.stats.info += 1;
                self.id += self.stride;
            }
            Output::Fail => self.stats.fail += 1,
            _ => self.stats.ok += 1,
        }
        if let Err(e) = result {
            self.follow(&e);
        }
        output
    }

    /// Picks the node to try next after `e`.
    fn follow(&mut self, e: &Error) {
        let clients = self.clients.read().unwrap();
        match e {
            Error::Redirect { leader: Some(p) } if p.id != self.target && clients.contains_key(&p.id) => {
                self.target = p.id;
            }
            _ => {
                let next = clients.keys().copied().find(|&id| id > self.target);
                self.target = next.or(clients.keys().next().copied()).expect("some node");
                drop(clients);
                std::thread::sleep(RETRY_PAUSE);
            }
        }
    }
}

/// Whether `key` holds a list (appends and reads) rather than a register.
pub fn is_list(key: &str) -> bool {
    key.contains("list")
}

/// `lists` list keys and `registers` register keys, named with `prefix`.
pub fn keys(prefix: &str, registers: usize, lists: usize) -> Vec<String> {
    let regs = (0..registers).map(|i| format!("{prefix}reg-{i}"));
    regs.chain((0..lists).map(|i| format!("{prefix}list-{i}"))).collect()
}

/// Client threads, `per_key` on every key, each recording into one history.
pub struct Workload {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicUsize>,
    threads: Vec<JoinHandle<Stats>>,
}

/// A client pauses between these many milliseconds between two operations: some 25
/// operations a second per client, which keeps a run's history a size the checker can
/// search (unpaced, the clients reach thousands a second and lists of thousands).
const THINK_MS: (u64, u64) = (10, 50);

impl Workload {
    /// Starts the clients. Written values come from `values`, so they are unique across
    /// everything that shares it. Client ids are `first_id..first_id + threads`, and go
    /// up by the number of threads after each `info`.
    pub fn start(
        clients: &Clients,
        history: &History,
        keys: &[String],
        per_key: usize,
        values: &Arc<AtomicI64>,
        first_id: u64,
        rng: &mut Rng,
    ) -> Workload {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicUsize::new(0));
        let n = keys.len() * per_key;
        let nodes: Vec<NodeId> = clients.read().unwrap().keys().copied().collect();
        let threads = (0..n)
            .map(|w| {
                let key = keys[w / per_key].clone();
                let start = nodes[w % nodes.len()];
                let client = KvClient::new(
                    first_id + w as u64,
                    n as u64,
                    clients.clone(),
                    start,
                    history.clone(),
                    Reads::Linearizable,
                );
                let (stop, ok, values) = (stop.clone(), ok.clone(), values.clone());
                let rng = Rng::new(rng.next_u64());
                std::thread::Builder::new()
                    .name(format!("kv-client-{w}"))
                    .spawn(move || client_loop(client, &key, rng, &values, &stop, &ok))
                    .expect("spawn a client")
            })
            .collect();
        Workload { stop, ok, threads }
    }

    /// Operations answered `ok` so far.
    pub fn ok_ops(&self) -> usize {
        self.ok.load(Ordering::SeqCst)
    }

    /// Waits until `more` further operations were answered `ok`.
    pub fn await_progress(&self, more: usize, what: &str) {
        let target = self.ok_ops() + more;
        wait_until(&format!("{more} more operations succeed ({what})"), || self.ok_ops() >= target);
    }

    /// Stops the clients and waits for their last operations.
    pub fn stop(self) -> Stats {
        self.stop.store(true, Ordering::SeqCst);
        let mut total = Stats::default();
        for t in self.threads {
            total.add(t.join().expect("client thread"));
        }
        total
    }
}

fn client_loop(
    mut client: KvClient,
    key: &str,
    mut rng: Rng,
    values: &AtomicI64,
    stop: &AtomicBool,
    ok: &AtomicUsize,
) -> Stats {
    // The register's value as this client last saw or set it: what its CAS expects.
    let mut last: Option<i64> = None;
    while !stop.load(Ordering::SeqCst) {
        let input = next_input(key, &mut rng, values, last);
        let output = client.call(key, input);
        remember(&mut last, input, &output);
        if !matches!(output, Output::Fail | Output::Info) {
            ok.fetch_add(1, Ordering::SeqCst);
        }
        // Pacing between operations, not synchronisation.
        std::thread::sleep(Duration::from_millis(rng.between(THINK_MS.0, THINK_MS.1)));
    }
    client.stats
}

/// A random operation on `key`: on a list, reads and appends; on a register, reads,
/// writes and compare-and-swaps from `last` (the value the client last saw there). Every
/// written value is fresh from `values`.
pub fn next_input(key: &str, rng: &mut Rng, values: &AtomicI64, last: Option<i64>) -> Input {
    let fresh = || values.fetch_add(1, Ordering::SeqCst);
    match (is_list(key), rng.between(0, 9)) {
        (_, 0..=2) => Input::Read,
        (true, _) => Input::Append(fresh()),
        (false, 3..=5) => Input::Write(fresh()),
        (false, _) => Input::Cas(last.unwrap_or(0), fresh()),
    }
}

/// Updates what a client believes a register holds after `input` was answered `output`.
pub fn remember(last: &mut Option<i64>, input: Input, output: &Output) {
    match (input, output) {
        (_, Output::Read(Value::Int(v))) => *last = Some(*v),
        (Input::Write(v), Output::Done) | (Input::Cas(_, v), Output::Swapped(true)) => *last = Some(v),
        _ => {}
    }
}

/// Reads every key through the leader until each read succeeds, recording each attempt
/// as client `id`; returns what the reads saw.
pub fn final_reads(clients: &Clients, history: &History, keys: &[String], id: u64) -> BTreeMap<String, Value> {
    let start = *clients.read().unwrap().keys().next().expect("some node");
    let mut client = KvClient::new(id, 1, clients.clone(), start, history.clone(), Reads::Linearizable);
    let mut finals = BTreeMap::new();
    for key in keys {
        wait_until(&format!("a final read of {key} succeeds"), || match client.call(key, Input::Read) {
            Output::Read(v) => {
                finals.insert(key.clone(), v);
                true
            }
            _ => false,
        });
    }
    finals
}

// ---------------------------------------------------------------------------------------
// Checks that need no search.

/// Checks what reads saw against what was written, key by key, without searching for a
/// linearization: every value read was written by an operation that may have taken effect;
/// no list holds a value twice (a double apply); a list's reads form a chain of prefixes
/// (one order of appends); a read sees every append acknowledged before it was invoked,
/// and the final read every acknowledged append.
pub fn check_effects(ops: &[Op], finals: &BTreeMap<String, Value>) -> Result<(), String> {
    let mut by_key: BTreeMap<&str, Vec<&Op>> = BTreeMap::new();
    for op in ops {
        by_key.entry(&op.key).or_default().push(op);
    }
    for (key, ops) in by_key {
        check_key(key, &ops, finals.get(key))?;
    }
    Ok(())
}

fn check_key(key: &str, ops: &[&Op], last: Option<&Value>) -> Result<(), String> {
    // Values that may have been written: by an operation not known to have failed.
    let mut written = HashSet::new();
    for op in ops {
        match (op.input, &op.output) {
            (_, Output::Fail) | (Input::Cas(..), Output::Swapped(false)) => {}
            (Input::Write(v) | Input::Append(v) | Input::Cas(_, v), _) => {
                written.insert(v);
            }
            _ => {}
        }
    }
    let reads: Vec<(&Op, &Value)> = ops
        .iter()
        .filter_map(|op| match &op.output {
            Output::Read(v) => Some((*op, v)),
            _ => None,
        })
        .collect();
    let mut lists: Vec<&[i64]> = Vec::new();
    for &(op, value) in &reads {
        match value {
            Value::Absent => {}
            Value::Int(v) if !written.contains(v) => return Err(format!("{key}: {op} saw a value never written")),
            Value::Int(_) => {}
            Value::List(l) => {
                let mut seen = HashSet::new();
                if let Some(v) = l.iter().find(|v| !seen.insert(**v)) {
                    return Err(format!("{key}: {v} appears twice in {l:?} (applied twice): {op}"));
                }
                if let Some(v) = l.iter().find(|v| !written.contains(*v)) {
                    return Err(format!("{key}: {op} saw {v}, never appended (or its append failed)"));
                }
                lists.push(l);
            }
        }
    }
    lists.sort_by_key(|l| l.len());
    for w in lists.windows(2) {
        if !w[1].starts_with(w[0]) {
            return Err(format!("{key}: two reads saw different orders of appends:\n  {:?}\n  {:?}", w[0], w[1]));
        }
    }
    let acked: Vec<&Op> =
        ops.iter().copied().filter(|op| matches!(op.input, Input::Append(_)) && op.output == Output::Done).collect();
    for &(read, value) in &reads {
        let held: HashSet<i64> = match value {
            Value::List(l) => l.iter().copied().collect(),
            _ => HashSet::new(),
        };
        for append in acked.iter().filter(|a| a.complete_ns < read.invoke_ns) {
            let Input::Append(v) = append.input else { unreachable!() };
            if !held.contains(&v) {
                return Err(format!("{key}: {read} misses {v}, acknowledged before it began: {append}"));
            }
        }
    }
    let final_list: HashSet<i64> = match last {
        None => return Ok(()),
        Some(Value::List(l)) => l.iter().copied().collect(),
        Some(_) => HashSet::new(),
    };
    for append in &acked {
        let Input::Append(v) = append.input else { unreachable!() };
        if !final_list.contains(&v) {
            return Err(format!("{key}: acknowledged append {v} is missing from the final read {last:?}: {append}"));
        }
    }
    Ok(())
}
