//! Real TCP clusters on 127.0.0.1 with OS-assigned ports, and waits with deadlines.

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::time::{Duration, Instant};

use quorate::{Client, Config, Node, NodeId, Role, StateMachine};
use serde::{Deserialize, Serialize};

/// How long any test waits for a condition before failing.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// A state machine that records every command, so tests can compare order across nodes.
/// It has snapshots (`Config`'s default thresholds are far beyond most tests).
#[derive(Clone, Default, Debug, Serialize, Deserialize)]
pub struct Recorder {
    pub applied: Vec<u64>,
}

/// Commands of [`Recorder`].
#[derive(Debug, Serialize, Deserialize)]
pub enum Cmd {
    Put(u64),
    /// `apply` panics on this one.
    Explode,
    /// Records many values at once (a large command).
    Many(Vec<u64>),
    /// `apply` takes this many milliseconds (a slow state machine), then records the value.
    Slow(u64, u64),
}

impl StateMachine for Recorder {
    type Command = Cmd;
    type Response = usize;
    fn apply(&mut self, cmd: Cmd) -> usize {
        match cmd {
            Cmd::Put(v) => self.applied.push(v),
            Cmd::Many(vs) => self.applied.extend(vs),
            Cmd::Explode => panic!("state machine exploded (on purpose)"),
            Cmd::Slow(v, ms) => {
                std::thread::sleep(std::time::Duration::from_millis(ms));
                self.applied.push(v);
            }
        }
        self.applied.len()
    }
    quorate::serde_snapshots!();
    quorate::remote_queries!();
}

/// What a remote client may ask a [`Recorder`].
#[derive(Debug, Serialize, Deserialize)]
pub enum Question {
    /// Every value applied, in order.
    Applied,
}

impl quorate::Queries for Recorder {
    type Query = Question;
    type QueryResponse = Vec<u64>;
    fn query(&self, q: Question) -> Vec<u64> {
        match q {
            Question::Applied => self.applied.clone(),
        }
    }
}

/// Waits until `cond` holds, checking every few milliseconds, or panics after `PATIENCE`.
pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Binds `n` listeners on free ports.
pub fn listeners(n: usize) -> Vec<TcpListener> {
    (0..n).map(|_| TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0")).collect()
}

/// Test timings: quick elections, generous enough for a loaded 2-core machine.
pub fn test_config(id: NodeId, addr: SocketAddr) -> Config {
    Config::new(id, addr)
        .election_timeout(Duration::from_millis(300))
        .heartbeat_interval(Duration::from_millis(50))
        .request_timeout(Duration::from_secs(10))
}

/// A one-node cluster (node 1) on a free port, with `tweak` applied to its config.
pub fn single_node(tweak: impl Fn(Config) -> Config) -> Node<Recorder> {
    let l = listeners(1).pop().unwrap();
    let addr = l.local_addr().unwrap();
    Node::start_with_listener(tweak(test_config(1, addr)), l, Recorder::default()).expect("start node")
}

/// A cluster of nodes in this process.
pub struct Cluster {
    pub nodes: BTreeMap<NodeId, Node<Recorder>>,
    pub addrs: BTreeMap<NodeId, SocketAddr>,
}

impl Cluster {
    /// Nodes 1..=n, each listing all the others as peers.
    pub fn start(n: usize) -> Cluster {
        Cluster::start_with(n, |c| c)
    }

    /// Like [`Cluster::start`], with `tweak` applied to every node's config.
    pub fn start_with(n: usize, tweak: impl Fn(Config) -> Config) -> Cluster {
        let ls = listeners(n);
        let addrs: BTreeMap<NodeId, SocketAddr> =
            ls.iter().enumerate().map(|(i, l)| (i as u64 + 1, l.local_addr().unwrap())).collect();
        let mut nodes = BTreeMap::new();
        for (i, l) in ls.into_iter().enumerate() {
            let id = i as u64 + 1;
            let config = test_config(id, addrs[&id]).members(addrs.clone());
            nodes.insert(id, Node::start_with_listener(tweak(config), l, Recorder::default()).expect("start node"));
        }
        Cluster { nodes, addrs }
    }

    pub fn client(&self, id: NodeId) -> Client<Recorder> {
        self.nodes[&id].client()
    }

    /// Waits until exactly one running node leads and all running nodes agree on it.
    pub fn stable_leader(&self) -> NodeId {
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        self.leader_among(&ids)
    }

    /// Waits until exactly one of `ids` leads and all of `ids` agree on it.
    pub fn leader_among(&self, ids: &[NodeId]) -> NodeId {
        let mut found = 0;
        wait_until(&format!("nodes {ids:?} agree on one leader among them"), || {
            let statuses: Vec<_> = ids.iter().filter_map(|id| self.client(*id).status().ok()).collect();
            if statuses.len() != ids.len() {
                return false;
            }
            let leaders: Vec<_> = statuses.iter().filter(|s| s.role == Role::Leader).map(|s| s.id).collect();
            if leaders.len() != 1 || statuses.iter().any(|s| s.leader != Some(leaders[0])) {
                return false;
            }
            found = leaders[0];
            true
        });
        found
    }

    /// Writes `Put(v)` for each value through node `id`, recording each acknowledged one,
    /// then checks that node's linearizable view is exactly `acked`.
    pub fn write_and_check(&self, id: NodeId, values: std::ops::RangeInclusive<u64>, acked: &mut Vec<u64>) {
        for v in values {
            self.client(id).write(Cmd::Put(v)).expect("write through the leader");
            acked.push(v);
        }
        let applied = self.client(id).read(|m: &Recorder| m.applied.clone()).unwrap();
        assert_eq!(&applied, acked, "an acknowledged write was lost or reordered");
    }

    /// Waits until every running node has applied exactly `expected`, in order.
    pub fn await_applied_everywhere(&self, expected: &[u64]) {
        for (&id, node) in &self.nodes {
            let client = node.client();
            wait_until(&format!("node {id} applied {} commands", expected.len()), || {
                client.read_local(|m: &Recorder| m.applied.len()).unwrap_or(0) >= expected.len()
            });
            let applied = client.read_local(|m: &Recorder| m.applied.clone()).expect("read_local");
            assert_eq!(applied, expected, "node {id} applied a different sequence");
        }
    }

    pub fn stop(&mut self, id: NodeId) {
        self.nodes.remove(&id).expect("running").stop();
    }
}

/// Holds a node's thread inside a `read_local` closure until released, so requests pile
/// up in its queue deterministically.
pub struct HeldNode {
    release: crossbeam_channel::Sender<()>,
    blocker: std::thread::JoinHandle<quorate::Result<()>>,
}

impl HeldNode {
    /// Returns once the node's thread is inside the closure.
    pub fn hold(client: &Client<Recorder>) -> HeldNode {
        let (entered_tx, entered_rx) = crossbeam_channel::bounded(1);
        let (release, release_rx) = crossbeam_channel::bounded::<()>(1);
        let client = client.clone();
        let blocker = std::thread::spawn(move || {
            client.read_local(move |_: &Recorder| {
                entered_tx.send(()).unwrap();
                release_rx.recv().unwrap();
            })
        });
        entered_rx.recv_timeout(PATIENCE).expect("the node's thread entered the closure");
        HeldNode { release, blocker }
    }

    /// Lets the node's thread go on.
    pub fn release(self) {
        self.release.send(()).unwrap();
        self.blocker.join().unwrap().expect("read_local of the holder");
    }
}
