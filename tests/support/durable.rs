//! Durable clusters for TCP tests: nodes on data dirs that can be stopped and restarted
//! on the same ids, addresses and directories.

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;

use quorate::{Config, Node, NodeId};

use super::cluster::{Cluster, Recorder, listeners, test_config};

/// A cluster whose nodes keep their state in `root/node-<id>`.
pub struct DurableCluster {
    pub cluster: Cluster,
    pub root: tempfile::TempDir,
}

impl DurableCluster {
    /// Nodes `1..=n` on free ports, each on its own new data dir.
    pub fn start(n: usize) -> DurableCluster {
        let root = tempfile::tempdir().expect("temp dir");
        let ls = listeners(n);
        let addrs: BTreeMap<NodeId, SocketAddr> =
            ls.iter().enumerate().map(|(i, l)| (i as u64 + 1, l.local_addr().unwrap())).collect();
        let mut dc = DurableCluster { cluster: Cluster { nodes: BTreeMap::new(), addrs }, root };
        for (i, l) in ls.into_iter().enumerate() {
            dc.start_on(i as u64 + 1, l);
        }
        dc
    }

    pub fn dir(&self, id: NodeId) -> PathBuf {
        self.root.path().join(format!("node-{id}"))
    }

    pub fn config(&self, id: NodeId) -> Config {
        test_config(id, self.cluster.addrs[&id]).members(self.cluster.addrs.clone()).data_dir(self.dir(id))
    }

    fn start_on(&mut self, id: NodeId, listener: TcpListener) {
        let node = Node::start_with_listener(self.config(id), listener, Recorder::default()).expect("start node");
        self.cluster.nodes.insert(id, node);
    }

    /// Starts node `id` again on its address and data dir.
    pub fn restart(&mut self, id: NodeId) {
        assert!(!self.cluster.nodes.contains_key(&id), "node {id} is running");
        let listener = TcpListener::bind(self.cluster.addrs[&id]).expect("rebind the node's address");
        self.start_on(id, listener);
    }
}
