//! Workloads for TCP tests: a writer that follows the leader, history checks, and
//! clusters whose links run through cuttable proxies.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use quorate::{Client, Error, Node, NodeId};

use super::cluster::{Cluster, Cmd, Recorder, listeners, test_config, wait_until};
use super::proxy::Proxy;

/// Checks that `applied` holds every acknowledged value, in order, and that it is
/// strictly increasing: one writer writes increasing values one at a time and never
/// resends one, so any other order would reorder writes.
pub fn check_history(applied: &[u64], acked: &[u64]) {
    assert!(applied.windows(2).all(|w| w[0] < w[1]), "applied out of order or twice: {applied:?}");
    let mut it = applied.iter();
    for v in acked {
        assert!(it.any(|a| a == v), "acknowledged write {v} is missing from the final state {applied:?}");
    }
}

// ---------------------------------------------------------------------------------------
// A background writer that follows the leader.

pub type Clients = Arc<Mutex<BTreeMap<NodeId, Client<Recorder>>>>;

pub struct Writer {
    pub stop: Arc<AtomicBool>,
    pub acked: Arc<Mutex<Vec<u64>>>,
    pub thread: JoinHandle<WriterStats>,
}

#[derive(Debug, Default)]
pub struct WriterStats {
    pub next: u64,
    pub redirects: u64,
    pub indeterminate: u64,
    pub other: u64,
}

impl Writer {
    /// Writes `Put(1)`, `Put(2)`, ... to the leader among `clients` (which the test may
    /// change), following redirects and retrying with the next value after any error.
    pub fn spawn(clients: Clients) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(Mutex::new(Vec::new()));
        let thread = {
            let (stop, acked) = (stop.clone(), acked.clone());
            std::thread::spawn(move || {
                let mut stats = WriterStats { next: 1, ..WriterStats::default() };
                let mut target: NodeId = 0;
                while !stop.load(Ordering::SeqCst) {
                    let client = {
                        let map = clients.lock().unwrap();
                        match map.get(&target) {
                            Some(c) => c.clone(),
                            None => {
                                let (&id, c) = map.iter().next().expect("some node");
                                target = id;
                                c.clone()
                            }
                        }
                    };
                    let v = stats.next;
                    stats.next += 1;
                    match client.write_timeout(Cmd::Put(v), Duration::from_secs(3)) {
                        Ok(_) => acked.lock().unwrap().push(v),
                        Err(Error::Redirect { leader: Some(p) }) if p.id != target => {
                            stats.redirects += 1;
                            target = p.id;
                        }
                        Err(e) => {
                            if e.is_indeterminate() {
                                stats.indeterminate += 1;
                            } else if matches!(e, Error::Redirect { .. }) {
                                stats.redirects += 1;
                            } else {
                                stats.other += 1;
                            }
                            // Try the next node; pace retries while no leader is known.
                            let map = clients.lock().unwrap();
                            target =
                                map.keys().copied().find(|&id| id > target).or(map.keys().next().copied()).unwrap();
                            drop(map);
                            std::thread::sleep(Duration::from_millis(5));
                        }
                    }
                }
                stats
            })
        };
        Writer { stop, acked, thread }
    }

    pub fn acked_len(&self) -> usize {
        self.acked.lock().unwrap().len()
    }

    /// Waits until `more` further writes have been acknowledged.
    pub fn await_progress(&self, more: usize, what: &str) {
        let target = self.acked_len() + more;
        wait_until(&format!("{more} more writes are acknowledged ({what})"), || self.acked_len() >= target);
    }

    pub fn finish(self) -> (Vec<u64>, WriterStats) {
        self.stop.store(true, Ordering::SeqCst);
        let stats = self.thread.join().expect("writer thread");
        let acked = std::mem::take(&mut *self.acked.lock().unwrap());
        (acked, stats)
    }
}

/// Nodes `1..=n`, where node `i` reaches node `j` through its own proxy `(i, j)`.
pub fn start_proxied(n: usize) -> (Cluster, BTreeMap<(NodeId, NodeId), Proxy>) {
    let ls = listeners(n);
    let addrs: BTreeMap<NodeId, SocketAddr> =
        ls.iter().enumerate().map(|(i, l)| (i as u64 + 1, l.local_addr().unwrap())).collect();
    let mut proxies = BTreeMap::new();
    for &i in addrs.keys() {
        for (&j, &addr) in &addrs {
            if i != j {
                proxies.insert((i, j), Proxy::start(addr));
            }
        }
    }
    let mut nodes = BTreeMap::new();
    for (i, l) in ls.into_iter().enumerate() {
        let id = i as u64 + 1;
        let mut config = test_config(id, addrs[&id]);
        for &peer in addrs.keys() {
            if peer != id {
                config = config.peer(peer, proxies[&(id, peer)].addr());
            }
        }
        nodes.insert(id, Node::start_with_listener(config, l, Recorder::default()).expect("start node"));
    }
    (Cluster { nodes, addrs }, proxies)
}
