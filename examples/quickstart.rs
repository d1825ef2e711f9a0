//! The README's quick start, as a program that runs: three nodes of one cluster in this
//! process (in production, one per process or machine, each started the same way), a
//! write, pipelined writes, reads, and a remote client.
//!
//! Run with `cargo run --example quickstart`.

use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use quorate::{Config, Error, Node, Queries, RemoteClient, StateMachine};
use serde::{Deserialize, Serialize};

#[derive(Default)]
struct Counter {
    value: u64,
}

#[derive(Serialize, Deserialize)]
enum Op {
    Increment,
    IncrementBy(u64),
}

impl StateMachine for Counter {
    type Command = Op;
    type Response = u64;
    fn apply(&mut self, op: Op) -> u64 {
        // Deterministic: same commands, same state.
        match op {
            Op::Increment => self.value += 1,
            Op::IncrementBy(n) => self.value += n,
        }
        self.value
    }
    quorate::remote_queries!(); // lets a RemoteClient ask `Counter`'s Queries
}

impl Queries for Counter {
    type Query = ();
    type QueryResponse = u64;
    fn query(&self, _: ()) -> u64 {
        self.value
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Three free ports on this machine (in production: fixed addresses).
    let listeners: Vec<TcpListener> = (0..3).map(|_| TcpListener::bind("127.0.0.1:0")).collect::<Result<_, _>>()?;
    let addrs: Vec<SocketAddr> = listeners.iter().map(|l| l.local_addr()).collect::<Result<_, _>>()?;
    let mut nodes = Vec::new();
    for (i, listener) in listeners.into_iter().enumerate() {
        let id = i as u64 + 1;
        // This node's id and address, and every member (all nodes list the same set).
        let config = Config::new(id, addrs[i]).members((1..=3).zip(addrs.iter().copied()));
        nodes.push(Node::start_with_listener(config, listener, Counter::default())?);
    }

    let client = nodes[0].client(); // Clone + Send + Sync
    let leader = client.await_leader(Duration::from_secs(5))?;
    println!("node {leader} leads");
    let client = client.forwarding(); // on a follower, writes go to the leader
    match client.write(Op::Increment) {
        Ok(value) => println!("now {value}"),
        Err(e) if e.is_indeterminate() => println!("may or may not have applied: {e}"),
        Err(e) => println!("not applied: {e}"),
    }

    // Pipelined: many writes in flight from one thread, applied in order.
    let leader_client = nodes[leader as usize - 1].client();
    let pending: Vec<_> = (0..100).map(|_| leader_client.submit(Op::IncrementBy(2))).collect::<Result<_, _>>()?;
    for p in pending {
        p.wait()?;
    }
    let value = leader_client.read(|c: &Counter| c.value)?; // linearizable (ReadIndex), on the leader
    let stale = client.read_local(|c: &Counter| c.value)?; // this node's state, possibly stale
    println!("value {value} (read on the leader), {stale} (local read on node 1)");
    let follower = nodes.iter().find(|n| n.id() != leader).expect("two followers");
    match follower.client().read(|c: &Counter| c.value) {
        Err(Error::Redirect { leader }) => println!("node {} is a follower; it redirects to {leader:?}", follower.id()),
        other => println!("node {} answered {other:?}", follower.id()),
    }

    // From any other process: a remote client finds the leader from any node.
    let remote: RemoteClient<Counter> = RemoteClient::connect(&addrs)?;
    println!("remote write: {}", remote.write(Op::Increment)?);
    println!("remote read: {}", remote.read(())?);

    for node in nodes {
        node.stop();
    }
    Ok(())
}
