//! A three-node counter cluster in one process: a few writes, a failover, more writes.
//!
//! Run with `cargo run --example counter`.

use std::time::Duration;

use quorate::{Client, Config, Error, Node, StateMachine};
use serde::{Deserialize, Serialize};

/// The counter from the Pistis README.
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
        match op {
            Op::Increment => self.value += 1,
            Op::IncrementBy(n) => self.value += n,
        }
        self.value
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();

    // Bind three listeners on free ports first, so every node knows every address.
    let listeners: Vec<std::net::TcpListener> =
        (0..3).map(|_| std::net::TcpListener::bind("127.0.0.1:0")).collect::<Result<_, _>>()?;
    let addrs: Vec<_> = listeners.iter().map(|l| l.local_addr()).collect::<Result<_, _>>()?;
    let mut nodes: Vec<Option<Node<Counter>>> = Vec::new();
    for (i, listener) in listeners.into_iter().enumerate() {
        let id = i as u64 + 1;
        let config = Config::new(id, addrs[i]).members((1..).zip(addrs.iter().copied()));
        nodes.push(Some(Node::start_with_listener(config, listener, Counter::default())?));
        println!("started node {id} on {}", addrs[i]);
    }

    let clients: Vec<Client<Counter>> = nodes.iter().map(|n| n.as_ref().expect("running").client()).collect();
    let client = |id: u64| clients[id as usize - 1].clone();
    let leader = client(1).await_leader(Duration::from_secs(5))?;
    println!("node {leader} is the leader");

    for _ in 0..3 {
        println!("increment -> {}", client(leader).write(Op::Increment)?);
    }
    println!("increment by 10 -> {}", client(leader).write(Op::IncrementBy(10))?);

    let follower = if leader == 1 { 2 } else { 1 };
    match client(follower).write(Op::Increment) {
        Err(Error::Redirect { leader: Some(peer) }) => println!("node {follower} redirects writes to node {}", peer.id),
        other => println!("unexpected answer from a follower: {other:?}"),
    }
    let value = client(leader).read(|c: &Counter| c.value)?;
    println!("linearizable read on the leader: {value}");

    println!("stopping leader {leader}");
    nodes[leader as usize - 1].take().expect("running").stop();
    let survivor = if leader == 3 { 2 } else { 3 };
    let new_leader = await_new_leader(&client(survivor), leader)?;
    println!("node {new_leader} is the new leader");
    println!("increment -> {}", client(new_leader).write(Op::Increment)?);
    let value = client(new_leader).read(|c: &Counter| c.value)?;
    println!("value after failover: {value} (nothing acknowledged was lost)");
    assert_eq!(value, 14);
    Ok(())
}

/// Waits until `client`'s node knows a leader other than `old`.
fn await_new_leader(client: &Client<Counter>, old: u64) -> Result<u64, Error> {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let leader = client.await_leader(Duration::from_secs(5))?;
        if leader != old {
            return Ok(leader);
        }
        if std::time::Instant::now() > deadline {
            return Err(Error::Timeout);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
