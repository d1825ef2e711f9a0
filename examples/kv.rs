//! A replicated key-value store, one node per OS process, driven from a tiny command line.
//!
//! Three nodes by hand, one terminal each:
//!
//! ```text
//! cargo run --example kv -- --id 1 --listen 127.0.0.1:7001 --peer 2=127.0.0.1:7002 --peer 3=127.0.0.1:7003
//! cargo run --example kv -- --id 2 --listen 127.0.0.1:7002 --peer 1=127.0.0.1:7001 --peer 3=127.0.0.1:7003
//! cargo run --example kv -- --id 3 --listen 127.0.0.1:7003 --peer 1=127.0.0.1:7001 --peer 2=127.0.0.1:7002
//! ```
//!
//! A fourth node, added later: start it with `--join`, then type `add 4 127.0.0.1:7004` on
//! the leader:
//!
//! ```text
//! cargo run --example kv -- --id 4 --listen 127.0.0.1:7004 --join
//! ```
//!
//! Durable nodes survive `kill -9`: give each its own `--data-dir` and restart it with the
//! same arguments; it comes back with its log and vote and rejoins under the same id:
//!
//! ```text
//! cargo run --example kv -- --id 1 --listen 127.0.0.1:7001 --peer 2=127.0.0.1:7002 --peer 3=127.0.0.1:7003 --data-dir /var/lib/kv1
//! ```
//!
//! Or everything at once: `cargo run --example kv -- --cluster` starts three child processes
//! on free ports, makes node 1 the leader, and forwards your commands to node 1. Children
//! exit with the parent (they quit when their stdin, a pipe from the parent, closes).
//!
//! Type `help` for the commands. Logs go to stderr (`RUST_LOG=info` for more; default warn).

use std::collections::BTreeMap;
use std::io::{BufRead, IsTerminal, Write};
use std::net::{SocketAddr, TcpListener};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use quorate::{Client, Config, Error, Node, NodeId, Role, StateMachine};
use serde::{Deserialize, Serialize};

/// The replicated state: a sorted map of strings. It has snapshots, so the log is
/// compacted (and, with `--data-dir`, a restarted node loads its latest snapshot).
#[derive(Clone, Default, Debug, Serialize, Deserialize)]
struct Kv {
    map: BTreeMap<String, String>,
}

/// What clients ask the store to do; every command goes through the Raft log.
#[derive(Debug, Serialize, Deserialize)]
enum KvCommand {
    /// Read through the log (linearizable, but costs a log entry; `client.read` is cheaper).
    Get(String),
    /// Set `key` to `value`; answers the previous value.
    Put(String, String),
    /// Remove `key`; answers the previous value.
    Delete(String),
    /// Set `key` to `new` (`None` deletes) only if its value is `expected` (`None`: absent).
    CompareAndSwap { key: String, expected: Option<String>, new: Option<String> },
    /// Append `value` to `key`'s comma-separated list (an absent key is an empty list);
    /// answers the previous value.
    Append(String, String),
}

/// The store's answers.
#[derive(Debug, Serialize, Deserialize)]
enum KvResponse {
    /// The value (for `Get`) or the previous value (for `Put` and `Delete`).
    Value(Option<String>),
    /// Whether a compare-and-swap took place, and the value the key holds afterwards.
    Swapped { swapped: bool, current: Option<String> },
}

impl StateMachine for Kv {
    type Command = KvCommand;
    type Response = KvResponse;

    fn apply(&mut self, command: KvCommand) -> KvResponse {
        match command {
            KvCommand::Get(key) => KvResponse::Value(self.map.get(&key).cloned()),
            KvCommand::Put(key, value) => KvResponse::Value(self.map.insert(key, value)),
            KvCommand::Delete(key) => KvResponse::Value(self.map.remove(&key)),
            KvCommand::CompareAndSwap { key, expected, new } => {
                if self.map.get(&key) != expected.as_ref() {
                    return KvResponse::Swapped { swapped: false, current: self.map.get(&key).cloned() };
                }
                match new {
                    Some(value) => self.map.insert(key.clone(), value),
                    None => self.map.remove(&key),
                };
                KvResponse::Swapped { swapped: true, current: self.map.get(&key).cloned() }
            }
            KvCommand::Append(key, value) => {
                let previous = self.map.get(&key).cloned();
                let list = previous.as_ref().map_or(value.clone(), |l| format!("{l},{value}"));
                self.map.insert(key, list);
                KvResponse::Value(previous)
            }
        }
    }

    quorate::serde_snapshots!();
}

const USAGE: &str = "\
usage:
  kv --id ID --listen ADDR [--peer ID=ADDR]... [--join] [--elect] [--data-dir DIR]
  kv --cluster

  --id ID          this node's id (not 0)
  --listen ADDR    address to listen on, e.g. 127.0.0.1:7001
  --peer ID=ADDR   an initial voting member (repeat for each; the same set on every node)
  --join           start with no configuration and wait to be added (`add ID ADDR` on the leader)
  --elect          campaign at start until this node leads (used by --cluster for node 1)
  --data-dir DIR   durable mode: keep the log and vote in DIR (created if missing), so the
                   node survives kill -9; restart it with the same id, address and DIR
  --snapshot-every N  snapshot (and compact the log) every N entries instead of 100,000
  --cluster        start three nodes as child processes and forward stdin to node 1

environment:
  QUORATE_SECRET   the cluster secret (at least 16 bytes), e.g. `export QUORATE_SECRET=$(openssl rand -hex 32)`;
                   read from the environment, not the command line, so `ps` does not show it";

const HELP: &str = "\
commands:
  put KEY VALUE        write (leader only; a follower prints where the leader is)
  get KEY              linearizable read on the leader (ReadIndex)
  get-log KEY          read through the log (a Get command)
  get-local KEY        this node's copy, possibly stale (any node)
  dump-local           this node's whole map on one line, possibly stale (any node)
  del KEY              delete
  cas KEY OLD NEW      compare-and-swap; `-` means absent (OLD) or delete (NEW)
  append KEY VALUE     append to KEY's comma-separated list
  status               this node's view: role, term, leader, indexes, members
  add ID ADDR          add a node started with --join (on the leader)
  remove ID            remove a member (on the leader)
  transfer ID          hand leadership to ID (on the leader)
  elect                make this node campaign now
  help                 this text
  quit                 stop this node and exit (so does end of input)";

/// Parsed command-line options of one node.
struct Options {
    id: NodeId,
    listen: SocketAddr,
    peers: Vec<(NodeId, SocketAddr)>,
    join: bool,
    elect: bool,
    data_dir: Option<std::path::PathBuf>,
    snapshot_every: Option<u64>,
}

enum Mode {
    Node(Options),
    Cluster,
}

fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Mode, String> {
    let mut args = args.into_iter();
    let (mut id, mut listen, mut peers, mut join, mut elect, mut cluster) =
        (None, None, Vec::new(), false, false, false);
    let (mut data_dir, mut snapshot_every) = (None, None);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or_else(|| format!("{name} needs a value"));
        match arg.as_str() {
            "--id" => id = Some(value("--id")?.parse::<NodeId>().map_err(|e| format!("--id: {e}"))?),
            "--listen" => listen = Some(parse_addr(&value("--listen")?)?),
            "--peer" => {
                let spec = value("--peer")?;
                let (peer_id, addr) = spec.split_once('=').ok_or_else(|| format!("--peer {spec}: expected ID=ADDR"))?;
                peers.push((peer_id.parse().map_err(|e| format!("--peer {spec}: {e}"))?, parse_addr(addr)?));
            }
            "--join" => join = true,
            "--elect" => elect = true,
            "--data-dir" => data_dir = Some(value("--data-dir")?.into()),
            "--snapshot-every" => {
                let n = value("--snapshot-every")?.parse::<u64>().map_err(|e| format!("--snapshot-every: {e}"))?;
                snapshot_every = Some(n);
            }
            "--cluster" => cluster = true,
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if cluster {
        return match (id, listen, peers.is_empty(), join, elect, &data_dir) {
            (None, None, true, false, false, None) if snapshot_every.is_none() => Ok(Mode::Cluster),
            _ => Err("--cluster takes no other options".into()),
        };
    }
    let id = id.ok_or("--id is required")?;
    let listen = listen.ok_or("--listen is required")?;
    Ok(Mode::Node(Options { id, listen, peers, join, elect, data_dir, snapshot_every }))
}

fn parse_addr(s: &str) -> Result<SocketAddr, String> {
    s.parse().map_err(|e| format!("bad address {s:?}: {e}"))
}

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let result = match parse_args(std::env::args().skip(1)) {
        Ok(Mode::Node(options)) => run_node(options),
        Ok(Mode::Cluster) => run_cluster(),
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

// ---------------------------------------------------------------------------------------
// One node and its command line.

fn run_node(options: Options) -> Result<(), Box<dyn std::error::Error>> {
    let mut config = Config::new(options.id, options.listen).members(options.peers.iter().copied());
    if options.join {
        config = config.join();
    }
    if let Some(n) = options.snapshot_every {
        config = config.snapshot_threshold(n, u64::MAX).snapshot_keep_entries(n / 4);
    }
    if let Some(dir) = &options.data_dir {
        config = config.data_dir(dir);
    }
    // Children of --cluster inherit it, so the whole cluster shares one secret.
    if let Ok(secret) = std::env::var("QUORATE_SECRET") {
        config = config.cluster_secret(secret);
    }
    let node: Node<Kv> = Node::start(config, Kv::default())?;
    let client = node.client();
    println!("node {} listening on {}", options.id, node.local_addr());
    if options.join {
        println!("waiting to be added: on the leader, type `add {} {}`", options.id, node.local_addr());
    } else if options.elect {
        campaign_until_leader(&client, options.id);
    } else {
        match client.await_leader(Duration::from_secs(10)) {
            Ok(leader) => println!("leader: node {leader}"),
            Err(e) => println!("no leader yet ({e}); try `status` later"),
        }
    }

    let stdin = std::io::stdin();
    let interactive = stdin.is_terminal();
    let mut line = String::new();
    loop {
        if interactive {
            print!("kv{}> ", options.id);
            let _ = std::io::stdout().flush();
        }
        line.clear();
        if stdin.lock().read_line(&mut line)? == 0 {
            break; // End of input (in --cluster mode: the parent is gone).
        }
        if !node.is_running() {
            println!("the node has stopped");
            break;
        }
        let words: Vec<&str> = line.split_whitespace().collect();
        if words.is_empty() {
            continue;
        }
        if !interactive {
            println!("> {}", words.join(" "));
        }
        match execute(&client, &words) {
            Flow::Continue => {}
            Flow::Quit => break,
        }
    }
    node.stop();
    Ok(())
}

/// Makes this node the leader: campaigns until it wins or a few attempts have failed.
fn campaign_until_leader(client: &Client<Kv>, me: NodeId) {
    for _ in 0..10 {
        if client.await_leader(Duration::from_secs(5)).is_ok_and(|leader| leader == me) {
            println!("leader: node {me}");
            return;
        }
        if let Err(e) = client.trigger_election() {
            println!("cannot campaign: {e}");
            return;
        }
    }
    match client.leader() {
        Ok(Some(leader)) => println!("leader: node {leader} (node {me} did not win)"),
        _ => println!("no leader yet; try `status` later"),
    }
}

enum Flow {
    Continue,
    Quit,
}

fn execute(client: &Client<Kv>, words: &[&str]) -> Flow {
    let opt = |s: &str| (s != "-").then(|| s.to_string());
    match words {
        ["put", key, value] => show_write(client.write(KvCommand::Put(key.to_string(), value.to_string()))),
        ["get", key] => {
            let key = key.to_string();
            show(client.read(move |kv: &Kv| kv.map.get(&key).cloned()), show_value);
        }
        ["get-log", key] => show_write(client.write(KvCommand::Get(key.to_string()))),
        ["get-local", key] => {
            let key = key.to_string();
            match client.read_local(move |kv: &Kv| kv.map.get(&key).cloned()) {
                Ok(value) => println!("{} (local copy, may be stale)", value_text(value.as_deref())),
                Err(e) => show_error(&e),
            }
        }
        ["dump-local"] => match client.read_local(|kv: &Kv| kv.map.clone()) {
            Ok(map) => {
                let pairs: Vec<String> = map.iter().map(|(k, v)| format!("{k}={v}")).collect();
                println!("dump {} {}", map.len(), pairs.join(" "));
            }
            Err(e) => show_error(&e),
        },
        ["del", key] => show_write(client.write(KvCommand::Delete(key.to_string()))),
        ["cas", key, expected, new] => show_write(client.write(KvCommand::CompareAndSwap {
            key: key.to_string(),
            expected: opt(expected),
            new: opt(new),
        })),
        ["append", key, value] => show_write(client.write(KvCommand::Append(key.to_string(), value.to_string()))),
        ["status"] => show(client.status(), print_status),
        ["add", id, addr] => match (id.parse::<NodeId>(), addr.parse::<SocketAddr>()) {
            (Ok(id), Ok(addr)) => show(client.add_server(id, addr), |()| println!("node {id} is now a voter")),
            _ => println!("usage: add ID ADDR"),
        },
        ["remove", id] => match id.parse::<NodeId>() {
            Ok(id) => show(client.remove_server(id), |()| println!("node {id} removed")),
            Err(_) => println!("usage: remove ID"),
        },
        ["transfer", id] => match id.parse::<NodeId>() {
            Ok(id) => show(client.transfer_leadership(id), |()| println!("node {id} is now the leader")),
            Err(_) => println!("usage: transfer ID"),
        },
        ["elect"] => show(client.trigger_election(), |()| println!("campaigning")),
        ["help"] => println!("{HELP}"),
        ["quit"] | ["exit"] => return Flow::Quit,
        _ => println!("unknown command; type `help`"),
    }
    Flow::Continue
}

fn show<T>(result: Result<T, Error>, ok: impl FnOnce(T)) {
    match result {
        Ok(value) => ok(value),
        Err(e) => show_error(&e),
    }
}

fn show_write(result: Result<KvResponse, Error>) {
    show(result, |response| match response {
        KvResponse::Value(value) => show_value(value),
        KvResponse::Swapped { swapped: true, current } => println!("swapped; now {}", value_text(current.as_deref())),
        KvResponse::Swapped { swapped: false, current } => {
            println!("not swapped; the value is {}", value_text(current.as_deref()))
        }
    });
}

fn show_value(value: Option<String>) {
    println!("{}", value_text(value.as_deref()));
}

fn value_text(value: Option<&str>) -> String {
    value.map_or_else(|| "(none)".into(), |v| format!("{v:?}"))
}

fn show_error(e: &Error) {
    match e {
        Error::Redirect { leader: Some(peer) } => match peer.addr {
            Some(addr) => println!("redirect: not the leader; node {} at {addr} leads", peer.id),
            None => println!("redirect: not the leader; node {} leads (address unknown)", peer.id),
        },
        Error::Redirect { leader: None } => println!("redirect: not the leader, and no leader is known"),
        e if e.is_indeterminate() => println!("error: {e}"),
        e => println!("error: {e} (nothing was applied)"),
    }
}

fn print_status(s: quorate::Status) {
    let leader = s.leader.map_or_else(|| "none".into(), |id| format!("node {id}"));
    println!("node {}: {} in term {}, leader {leader}", s.id, s.role, s.term);
    println!(
        "  commit {} applied {} last log {}; membership {}",
        s.commit_index,
        s.applied_index,
        s.last_log_index,
        if s.membership_committed { "committed" } else { "not committed yet" }
    );
    for m in &s.members {
        let addr = m.addr.map_or_else(|| "?".into(), |a| a.to_string());
        let kind = if m.voter { "voter" } else { "learner" };
        let matched = m.match_index.map(|i| format!(", match {i}")).unwrap_or_default();
        println!("  member {} at {addr} ({kind}{matched})", m.id);
    }
    if let Some(why) = &s.refused {
        println!("  refused: {why}");
    }
    if s.role != Role::Leader && s.leader.is_none() {
        println!("  (no leader known: an election may be under way)");
    }
}

// ---------------------------------------------------------------------------------------
// --cluster: three child processes, stdin forwarded to node 1.

/// The children; killed (if still running) when dropped, so they end with the parent on
/// every exit path that unwinds. If the parent dies without unwinding, the children still
/// exit: their stdin is a pipe from the parent, and its end of input makes them quit.
struct Children(Vec<(NodeId, Child)>);

impl Drop for Children {
    fn drop(&mut self) {
        for (_, child) in &mut self.0 {
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

fn run_cluster() -> Result<(), Box<dyn std::error::Error>> {
    let exe = std::env::current_exe()?;
    let addrs = free_ports(3)?;
    let mut children = Children(Vec::new());
    let mut stdins: Vec<ChildStdin> = Vec::new();
    for (i, addr) in addrs.iter().enumerate() {
        let id = i as NodeId + 1;
        let mut cmd = Command::new(&exe);
        cmd.args(["--id", &id.to_string(), "--listen", &addr.to_string()]);
        for (j, peer) in addrs.iter().enumerate() {
            if j != i {
                cmd.args(["--peer", &format!("{}={peer}", j + 1)]);
            }
        }
        if id == 1 {
            cmd.arg("--elect");
        } else {
            cmd.stdout(Stdio::null()); // Only node 1 talks to the user.
        }
        let mut child = cmd.stdin(Stdio::piped()).spawn()?;
        stdins.push(child.stdin.take().expect("piped"));
        children.0.push((id, child));
        eprintln!("started node {id} on {addr} (pid {})", children.0[i].1.id());
    }
    eprintln!("commands go to node 1; type `help`");

    let mut to_node1 = stdins.remove(0);
    let stdin = std::io::stdin();
    let mut line = String::new();
    loop {
        line.clear();
        if stdin.lock().read_line(&mut line)? == 0 {
            break;
        }
        if to_node1.write_all(line.as_bytes()).and_then(|()| to_node1.flush()).is_err() {
            eprintln!("node 1 has exited");
            break;
        }
        if matches!(line.trim(), "quit" | "exit") {
            break;
        }
    }
    // End of input for everyone: each node stops and exits by itself. Node 1 first, so it
    // finishes printing the answers to the commands already forwarded.
    drop(to_node1);
    wait_or_kill(&mut children.0[0].1, Duration::from_secs(30));
    drop(stdins);
    for (_, child) in &mut children.0[1..] {
        wait_or_kill(child, Duration::from_secs(5));
    }
    Ok(())
}

/// Waits for `child` to exit, killing it after `patience`.
fn wait_or_kill(child: &mut Child, patience: Duration) {
    let deadline = Instant::now() + patience;
    while Instant::now() < deadline {
        match child.try_wait() {
            Ok(Some(_)) | Err(_) => return,
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
    let _ = child.kill();
    let _ = child.wait();
}
