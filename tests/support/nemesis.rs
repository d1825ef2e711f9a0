//! Faults from outside the nodes, Jepsen's "nemesis": a mesh of proxies, one per ordered
//! pair of nodes, whose links can pass, black-hole, delay or cut; and schedules that hold
//! a fault for a while (partitions, a bridge, one-way links, flaky and slow links, nodes
//! stopped and restarted), then heal.
//!
//! A node sends only on connections it dialed, so the proxy `(i, j)` is the one-way link
//! from `i` to `j`: cutting it alone is a one-way partition.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use quorate::NodeId;

use super::proxy::{LinkMode, Proxy};
use super::sim::Rng;

/// Every directed link between the nodes, each through its own proxy.
pub struct Net {
    proxies: BTreeMap<(NodeId, NodeId), Proxy>,
}

impl Net {
    /// A proxy `(i, j)` in front of node `j`'s address for every ordered pair `i != j`.
    pub fn start(addrs: &BTreeMap<NodeId, SocketAddr>) -> Net {
        let mut proxies = BTreeMap::new();
        for &i in addrs.keys() {
            for (&j, &addr) in addrs {
                if i != j {
                    proxies.insert((i, j), Proxy::start(addr));
                }
            }
        }
        Net { proxies }
    }

    /// Where node `from` dials to reach node `to`.
    pub fn addr(&self, from: NodeId, to: NodeId) -> SocketAddr {
        self.proxies[&(from, to)].addr()
    }

    pub fn links(&self) -> Vec<(NodeId, NodeId)> {
        self.proxies.keys().copied().collect()
    }

    pub fn set(&self, from: NodeId, to: NodeId, mode: LinkMode) {
        self.proxies[&(from, to)].set_mode(mode);
    }

    pub fn delay(&self, from: NodeId, to: NodeId, delay: Duration) {
        self.proxies[&(from, to)].set_delay(delay);
    }

    /// Both directions between `a` and `b`.
    pub fn set_both(&self, a: NodeId, b: NodeId, mode: LinkMode) {
        self.set(a, b, mode);
        self.set(b, a, mode);
    }

    /// Every link from one side to another gets `mode`; links within a side pass.
    pub fn partition(&self, sides: &[Vec<NodeId>], mode: LinkMode) {
        let side_of = |id: NodeId| sides.iter().position(|s| s.contains(&id));
        for (from, to) in self.links() {
            if side_of(from) != side_of(to) {
                self.set(from, to, mode);
            }
        }
    }

    /// Every link into and out of `id` gets `mode`.
    pub fn isolate(&self, id: NodeId, mode: LinkMode) {
        for (from, to) in self.links() {
            if from == id || to == id {
                self.set(from, to, mode);
            }
        }
    }

    /// Every link passes again, at once.
    pub fn heal(&self) {
        for proxy in self.proxies.values() {
            proxy.heal();
        }
    }
}

/// What a schedule needs of the cluster besides its links.
pub trait Target {
    fn ids(&self) -> Vec<NodeId>;
    fn net(&self) -> &Net;
    /// The node that believes it leads in the highest term, if any (no waiting).
    fn leader(&self) -> Option<NodeId>;
    /// Stops node `id` (it keeps its data dir).
    fn stop(&self, id: NodeId);
    /// Starts node `id` again on its address and data dir.
    fn restart(&self, id: NodeId);
}

/// One fault, held for a while and then healed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Schedule {
    /// A random majority and minority, the links between them cut or black-holed.
    MajorityMinority,
    /// The leader alone on one side: writes it accepted time out, and a new leader is
    /// elected on the other side while it may still believe it leads.
    IsolateLeader,
    /// Two halves that cannot reach each other, and one node that reaches both (Jepsen's
    /// bridge): each half may elect it, or one of its own, but only one majority exists.
    Bridge,
    /// Each directed link dropped with probability 0.3: partitions that are often one-way.
    OneWayRandom,
    /// Nothing reaches the leader, but everything it sends arrives: it keeps sending
    /// heartbeats it never hears answered.
    LeaderDeaf,
    /// Links toggle at random between passing, black-holed, cut and slow, every 50-250 ms.
    Flaky,
    /// Every link delays each chunk by 5-60 ms (a different delay per link).
    Slow,
    /// A random node stopped, then restarted on its data dir; it catches up from the log
    /// or, when the others compacted past it, from a snapshot.
    RestartNode,
    /// The leader stopped, then restarted on its data dir.
    RestartLeader,
    /// A minority stopped together (two of five), then restarted.
    RestartMinority,
}

impl Schedule {
    pub const ALL: [Schedule; 10] = [
        Schedule::MajorityMinority,
        Schedule::IsolateLeader,
        Schedule::Bridge,
        Schedule::OneWayRandom,
        Schedule::LeaderDeaf,
        Schedule::Flaky,
        Schedule::Slow,
        Schedule::RestartNode,
        Schedule::RestartLeader,
        Schedule::RestartMinority,
    ];

    /// Applies the fault, holds it for `hold`, and heals the links and restarts what it
    /// stopped. Returns what it did, for the log.
    pub fn run(self, target: &dyn Target, rng: &mut Rng, hold: Duration) -> String {
        let net = target.net();
        let mut ids = target.ids();
        shuffle(&mut ids, rng);
        let mode = if rng.chance(0.5) { LinkMode::Cut } else { LinkMode::Drop };
        let mut stopped = Vec::new();
        let what = match self {
            Schedule::MajorityMinority => {
                let minority = ids.split_off(ids.len().div_ceil(2));
                net.partition(&[ids.clone(), minority.clone()], mode);
                format!("{mode:?} {ids:?} | {minority:?}")
            }
            Schedule::IsolateLeader => {
                let leader = target.leader().unwrap_or(ids[0]);
                net.isolate(leader, mode);
                format!("{mode:?} around leader {leader}")
            }
            Schedule::Bridge => {
                let (left, rest) = ids.split_at(ids.len() / 2);
                let (bridge, right) = rest.split_first().expect("at least one node");
                for &a in left {
                    for &b in right {
                        net.set_both(a, b, mode);
                    }
                }
                format!("{mode:?} {left:?} | {right:?}, bridged by {bridge}")
            }
            Schedule::OneWayRandom => {
                let dropped: Vec<_> = net.links().into_iter().filter(|_| rng.chance(0.3)).collect();
                for &(from, to) in &dropped {
                    net.set(from, to, mode);
                }
                format!("{mode:?} {}", links_text(&dropped))
            }
            Schedule::LeaderDeaf => {
                let leader = target.leader().unwrap_or(ids[0]);
                for &from in ids.iter().filter(|&&id| id != leader) {
                    net.set(from, leader, mode);
                }
                format!("{mode:?} every link into leader {leader}")
            }
            Schedule::Flaky => return format!("flaky links: {}", flaky(net, rng, hold)),
            Schedule::Slow => {
                for (from, to) in net.links() {
                    net.delay(from, to, Duration::from_millis(rng.between(5, 60)));
                }
                "every link delayed 5-60 ms".to_string()
            }
            Schedule::RestartNode => {
                stopped.push(ids[0]);
                format!("stop node {}", ids[0])
            }
            Schedule::RestartLeader => {
                stopped.push(target.leader().unwrap_or(ids[0]));
                format!("stop leader {}", stopped[0])
            }
            Schedule::RestartMinority => {
                stopped.extend(&ids[..(ids.len() - 1) / 2]);
                format!("stop nodes {stopped:?}")
            }
        };
        for &id in &stopped {
            target.stop(id);
        }
        hold_for(hold);
        net.heal();
        for &id in &stopped {
            target.restart(id);
        }
        what
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// Toggles random links for `hold`, then heals them all. Says how many toggles it made.
fn flaky(net: &Net, rng: &mut Rng, hold: Duration) -> String {
    let links = net.links();
    let started = Instant::now();
    let mut toggles = 0;
    while started.elapsed() < hold {
        for _ in 0..rng.between(1, 3) {
            let (from, to) = rng.pick(&links).expect("links");
            match rng.between(0, 9) {
                0..=3 => net.proxies[&(from, to)].heal(),
                4..=5 => net.set(from, to, LinkMode::Drop),
                6..=7 => net.set(from, to, LinkMode::Cut),
                _ => net.delay(from, to, Duration::from_millis(rng.between(10, 100))),
            }
            toggles += 1;
        }
        hold_for(Duration::from_millis(rng.between(50, 250)));
    }
    net.heal();
    format!("{toggles} toggles")
}

/// Keeps a fault in place for `hold`: the sleep is the experiment, not a wait for anything.
pub fn hold_for(hold: Duration) {
    std::thread::sleep(hold);
}

fn links_text(links: &[(NodeId, NodeId)]) -> String {
    let parts: Vec<String> = links.iter().map(|(a, b)| format!("{a}->{b}")).collect();
    format!("[{}]", parts.join(" "))
}

/// Fisher-Yates, with the seeded RNG.
pub fn shuffle<T>(items: &mut [T], rng: &mut Rng) {
    for i in (1..items.len()).rev() {
        let j = rng.between(0, i as u64) as usize;
        items.swap(i, j);
    }
}
