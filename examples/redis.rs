//! A Redis-compatible (RESP2) key-value server replicated with quorate: each process runs
//! one Raft node and serves Redis clients on a separate client port, so `redis-cli`,
//! `redis-benchmark` and Redis client libraries work unchanged.
//!
//! One command starts a local three-node cluster (child processes on free ports) and
//! prints how to reach each node:
//!
//! ```text
//! cargo run --release --example redis -- --cluster 3
//! ```
//!
//! Or by hand, one terminal each. `--peer` gives each other node's Raft address; each node
//! announces its RESP address to the others (`quorate::Config::metadata`), which is where
//! a follower forwards commands to the leader (`--client-peer ID=ADDR` overrides it):
//!
//! ```text
//! cargo run --release --example redis -- --id 1 --listen 127.0.0.1:7001 --client 127.0.0.1:6381 \
//!     --peer 2=127.0.0.1:7002 --peer 3=127.0.0.1:7003
//! cargo run --release --example redis -- --id 2 --listen 127.0.0.1:7002 --client 127.0.0.1:6382 \
//!     --peer 1=127.0.0.1:7001 --peer 3=127.0.0.1:7003
//! cargo run --release --example redis -- --id 3 --listen 127.0.0.1:7003 --client 127.0.0.1:6383 \
//!     --peer 1=127.0.0.1:7001 --peer 2=127.0.0.1:7002
//! ```
//!
//! Then, against any node (a follower forwards to the leader):
//!
//! ```text
//! $ redis-cli -p 6382
//! 127.0.0.1:6382> SET greeting hello
//! OK
//! 127.0.0.1:6382> APPEND greeting ", world"
//! (integer) 12
//! 127.0.0.1:6382> INCR visits
//! (integer) 1
//! 127.0.0.1:6382> CAS greeting "hello, world" bye
//! (integer) 1
//! 127.0.0.1:6382> MGET greeting visits nope
//! 1) "bye"
//! 2) "1"
//! 3) (nil)
//! 127.0.0.1:6382> INFO replication
//! # Replication
//! role:slave
//! master_host:127.0.0.1
//! master_port:6381
//! raft_role:Follower
//! ...
//! $ redis-benchmark -p 6381 -t set,get -n 100000 -c 50 -q
//! $ redis-benchmark -p 6381 -t set,get -n 100000 -c 50 -q -P 16
//! ```
//!
//! Commands: PING, ECHO, GET, SET (NX, XX, GET; no expiry: EX/PX are refused, since a
//! key that vanishes when a clock says so is not a deterministic function of the log),
//! DEL, EXISTS, INCR, INCRBY, DECR, DECRBY, MGET, MSET, APPEND, STRLEN, `CAS key expected
//! new` (1 if swapped, else 0), DBSIZE, INFO, QUIT, COMMAND, CONFIG GET (both answer an
//! empty array), SELECT 0, FLUSHALL, FLUSHDB, CLIENT SETNAME/SETINFO. Every write is one
//! Raft log entry; reads are linearizable (ReadIndex on the leader) unless
//! `--stale-reads`.
//!
//! A follower forwards what it cannot serve to the leader's client port, found in the
//! leader's announced metadata or `--client-peer` (or answers `-MOVED 0 <leader's client address>` with `--redirect`).
//! Each client connection keeps its own connection to the leader, introduced with the
//! private command `QUORATE.FORWARDED`, so the leader never forwards those commands again
//! (no chains, no loops while leadership moves). Errors: `-TRYAGAIN` when a write's
//! outcome is unknown ("may have been applied") or leadership moved, `-CLUSTERDOWN no
//! leader` during an election, `-BUSY` when the node's queue is full.
//!
//! Limits: arguments (so values) up to 4 MiB, a command up to 8 MiB, inline commands up
//! to 64 KiB, 1024 clients (see `resp.rs` and `server.rs`). Malformed input gets
//! `-ERR Protocol error: ...` and the connection is closed.
//!
//! Durable mode: give each node its own `--data-dir`; a node killed with `kill -9` comes
//! back with its data when started again with the same arguments. Logs go to stderr
//! (`RUST_LOG=info` for more; default warn).

// The crate root's modules would be looked up beside it; they live in `redis/`.
#[path = "redis/commands.rs"]
mod commands;
#[path = "redis/resp.rs"]
mod resp;
#[path = "redis/server.rs"]
mod server;
#[path = "redis/store.rs"]
mod store;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use quorate::{Config, Node, NodeId};

use server::{ServeOptions, Server};
use store::Store;

const USAGE: &str = "\
usage:
  redis --id ID --listen ADDR --client ADDR [--peer ID=ADDR]... [--client-peer ID=ADDR]... [options]
  redis --cluster N [--data-dir DIR] [--redirect] [--stale-reads]

  --id ID              this node's id (not 0)
  --listen ADDR        Raft address (node to node), e.g. 127.0.0.1:7001
  --client ADDR        RESP address for Redis clients, e.g. 127.0.0.1:6379
  --peer ID=ADDR       an initial voting member's Raft address (repeat; the same set on every node)
  --client-peer ID=ADDR  node ID's RESP address (overrides what ID announces), for forwarding
  --data-dir DIR       durable mode: keep the log and vote in DIR (for --cluster: DIR/node-ID)
  --join               start with no configuration and wait to be added by the leader
  --redirect           on a follower, answer -MOVED 0 <leader's client address> instead of forwarding
  --stale-reads        serve reads from this node's copy (any node, possibly stale)
  --command-timeout-ms N  close a connection whose started command is not whole within N ms (10000)
  --idle-timeout-secs N   close a connection idle for N seconds (default 0: never)
  --request-timeout-ms N  how long a write or read may wait for the cluster (5000)
  --exit-on-stdin-eof  exit when standard input ends (so --cluster's children end with it)
  --cluster N          start N nodes as child processes on free ports and print their addresses

environment:
  QUORATE_SECRET   the cluster secret (at least 16 bytes), shared by --cluster's children";

/// One node's command-line options.
struct Options {
    id: NodeId,
    listen: SocketAddr,
    client: SocketAddr,
    peers: Vec<(NodeId, SocketAddr)>,
    client_peers: BTreeMap<NodeId, SocketAddr>,
    data_dir: Option<PathBuf>,
    join: bool,
    redirect: bool,
    stale_reads: bool,
    command_timeout: Duration,
    idle_timeout: Option<Duration>,
    request_timeout: Duration,
    exit_on_stdin_eof: bool,
}

enum Mode {
    Node(Box<Options>),
    /// `--cluster N`, with the options passed on to every child.
    Cluster {
        nodes: usize,
        data_dir: Option<PathBuf>,
        pass_on: Vec<String>,
    },
}

fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Mode, String> {
    let mut args = args.into_iter();
    let (mut id, mut listen, mut client, mut cluster, mut data_dir) = (None, None, None, None, None);
    let (mut peers, mut client_peers) = (Vec::new(), BTreeMap::new());
    let (mut join, mut redirect, mut stale_reads, mut exit_on_stdin_eof) = (false, false, false, false);
    let mut command_timeout = Duration::from_secs(10);
    let mut idle_timeout = None;
    let mut request_timeout = Duration::from_secs(5);
    let mut pass_on = Vec::new();
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or_else(|| format!("{name} needs a value"));
        let number = |name: &str, text: String| text.parse::<u64>().map_err(|e| format!("{name} {text:?}: {e}"));
        match arg.as_str() {
            "--id" => id = Some(number("--id", value("--id")?)?),
            "--listen" => listen = Some(parse_addr(&value("--listen")?)?),
            "--client" => client = Some(parse_addr(&value("--client")?)?),
            "--peer" => peers.push(parse_member(&value("--peer")?)?),
            "--client-peer" => {
                let (peer, addr) = parse_member(&value("--client-peer")?)?;
                client_peers.insert(peer, addr);
            }
            "--data-dir" => data_dir = Some(PathBuf::from(value("--data-dir")?)),
            "--join" => join = true,
            "--redirect" => redirect = true,
            "--stale-reads" => stale_reads = true,
            "--exit-on-stdin-eof" => exit_on_stdin_eof = true,
            "--command-timeout-ms" => {
                command_timeout = Duration::from_millis(number(&arg, value(&arg)?)?.max(1));
            }
            "--idle-timeout-secs" => {
                idle_timeout = Some(number(&arg, value(&arg)?)?).filter(|&s| s > 0).map(Duration::from_secs);
            }
            "--request-timeout-ms" => {
                request_timeout = Duration::from_millis(number(&arg, value(&arg)?)?.max(1));
            }
            "--cluster" => cluster = Some(number("--cluster", value("--cluster")?)? as usize),
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other:?}")),
        }
        if matches!(arg.as_str(), "--redirect" | "--stale-reads") {
            pass_on.push(arg);
        }
    }
    if let Some(nodes) = cluster {
        if id.is_some() || listen.is_some() || client.is_some() || !peers.is_empty() || join {
            return Err("--cluster takes only --data-dir, --redirect and --stale-reads".into());
        }
        if !(1..=9).contains(&nodes) {
            return Err("--cluster takes 1 to 9 nodes".into());
        }
        return Ok(Mode::Cluster { nodes, data_dir, pass_on });
    }
    let id = id.ok_or("--id is required")?;
    let listen = listen.ok_or("--listen is required")?;
    let client = client.ok_or("--client is required")?;
    Ok(Mode::Node(Box::new(Options {
        id,
        listen,
        client,
        peers,
        client_peers,
        data_dir,
        join,
        redirect,
        stale_reads,
        command_timeout,
        idle_timeout,
        request_timeout,
        exit_on_stdin_eof,
    })))
}

/// `ID=ADDR`.
fn parse_member(spec: &str) -> Result<(NodeId, SocketAddr), String> {
    let (id, addr) = spec.split_once('=').ok_or_else(|| format!("{spec:?}: expected ID=ADDR"))?;
    Ok((id.parse().map_err(|e| format!("{spec:?}: {e}"))?, parse_addr(addr)?))
}

fn parse_addr(s: &str) -> Result<SocketAddr, String> {
    s.parse().map_err(|e| format!("bad address {s:?}: {e}"))
}

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let result = match parse_args(std::env::args().skip(1)) {
        Ok(Mode::Node(options)) => run_node(*options),
        Ok(Mode::Cluster { nodes, data_dir, pass_on }) => run_cluster(nodes, data_dir, &pass_on),
        Err(why) => {
            if !why.is_empty() {
                eprintln!("error: {why}\n");
            }
            eprintln!("{USAGE}");
            std::process::exit(2);
        }
    };
    if let Err(e) = result {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

/// The largest Raft command: a whole request's arguments, plus room for MessagePack.
const COMMAND_BYTES_MAX: usize = resp::REQUEST_BYTES_MAX + (64 << 10);

/// How a node's metadata names its RESP address.
const RESP_METADATA_PREFIX: &str = "resp=";

fn run_node(options: Options) -> Result<(), Box<dyn std::error::Error>> {
    // Bound first: the node announces the address it got.
    let listener = TcpListener::bind(options.client)?;
    let client_addr = listener.local_addr()?;
    let mut config = Config::new(options.id, options.listen)
        .members(options.peers.iter().copied())
        .request_timeout(options.request_timeout)
        // Every command a client may send must fit one Raft entry.
        .max_append_bytes(COMMAND_BYTES_MAX)
        .max_frame_bytes(COMMAND_BYTES_MAX + (1 << 20))
        // Announced to the peers: a node without `--client-peer` for the leader finds its
        // RESP address here (see `Server::client_addr_of`).
        .metadata(format!("{RESP_METADATA_PREFIX}{client_addr}"));
    if options.join {
        config = config.join();
    }
    if let Some(dir) = &options.data_dir {
        config = config.data_dir(dir);
    }
    if let Ok(secret) = std::env::var("QUORATE_SECRET") {
        config = config.cluster_secret(secret);
    }
    let node: Node<Store> = Node::start(config, Store::default())?;
    let serve = ServeOptions {
        redirect: options.redirect,
        stale_reads: options.stale_reads,
        command_timeout: options.command_timeout,
        idle_timeout: options.idle_timeout,
        request_timeout: options.request_timeout,
    };
    let server = Arc::new(Server::new(node.client(), options.id, client_addr, options.client_peers, serve));
    println!("node {} raft on {}", options.id, node.local_addr());
    println!("resp listening on {client_addr}");
    if options.exit_on_stdin_eof {
        std::thread::spawn(|| {
            let _ = std::io::copy(&mut std::io::stdin().lock(), &mut std::io::sink());
            std::process::exit(0);
        });
    }
    server.run(listener);
    node.stop();
    Ok(())
}

// ---------------------------------------------------------------------------------------
// --cluster N: child processes on free ports.

/// The children; killed when dropped. If the parent dies without unwinding, they exit by
/// themselves: their stdin is a pipe from the parent (`--exit-on-stdin-eof`).
struct Children(Vec<Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn free_ports(n: usize) -> std::io::Result<Vec<SocketAddr>> {
    // All bound at once so they differ, then released for the children to bind.
    let listeners: Vec<TcpListener> = (0..n).map(|_| TcpListener::bind("127.0.0.1:0")).collect::<Result<_, _>>()?;
    listeners.iter().map(TcpListener::local_addr).collect()
}

fn run_cluster(nodes: usize, data_dir: Option<PathBuf>, pass_on: &[String]) -> Result<(), Box<dyn std::error::Error>> {
    let exe = std::env::current_exe()?;
    let addrs = free_ports(2 * nodes)?;
    let (raft, resp) = addrs.split_at(nodes);
    let mut children = Children(Vec::new());
    let mut stdins = Vec::new();
    let (ready_tx, ready) = std::sync::mpsc::channel();
    for i in 0..nodes {
        let id = i + 1;
        let mut cmd = Command::new(&exe);
        cmd.args(["--id", &id.to_string(), "--listen", &raft[i].to_string(), "--client", &resp[i].to_string()]);
        for j in (0..nodes).filter(|&j| j != i) {
            cmd.args(["--peer", &format!("{}={}", j + 1, raft[j])]);
            cmd.args(["--client-peer", &format!("{}={}", j + 1, resp[j])]);
        }
        if let Some(dir) = &data_dir {
            cmd.arg("--data-dir").arg(dir.join(format!("node-{id}")));
        }
        cmd.args(pass_on).arg("--exit-on-stdin-eof");
        let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).spawn()?;
        let stdout = child.stdout.take().expect("piped");
        // Kept open until we exit (`Child::wait` would close it, ending the child).
        stdins.push(child.stdin.take().expect("piped"));
        children.0.push(child);
        let ready_tx = ready_tx.clone();
        std::thread::spawn(move || echo_lines(id, stdout, ready_tx));
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    for _ in 0..nodes {
        let left = deadline.saturating_duration_since(Instant::now());
        ready.recv_timeout(left).map_err(|_| "the nodes did not start in 30 s")?;
    }
    println!("{nodes}-node cluster ready; talk to any node (followers forward to the leader):");
    for (i, addr) in resp.iter().enumerate() {
        println!("  redis-cli -p {}    # node {}", addr.port(), i + 1);
    }
    println!("  redis-benchmark -p {} -t set,get -n 100000 -c 50 -q", resp[0].port());
    println!("Ctrl-C stops the cluster.");
    // Until the children end (Ctrl-C reaches them too: they share our process group).
    for child in &mut children.0 {
        let _ = child.wait();
    }
    drop(stdins);
    Ok(())
}

/// Prints a child's output lines, prefixed with its id, and says when it is listening.
fn echo_lines(id: usize, stdout: impl Read, ready: std::sync::mpsc::Sender<()>) {
    for line in BufReader::new(stdout).lines() {
        let Ok(line) = line else { return };
        println!("[node {id}] {line}");
        if line.starts_with("resp listening on ") {
            let _ = ready.send(());
        }
    }
}
