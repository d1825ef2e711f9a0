//! The RESP server: accepts client connections and serves each on a thread of its own.
//!
//! Why a thread per connection rather than a mio loop: every quorate `Client` call blocks
//! (a write waits until applied, a read until leadership is confirmed, a forwarded command
//! until the leader answers), so an event loop would need a worker pool and a hand-written
//! state machine per connection to do the same. Threads keep each connection's code
//! straight-line. They are bounded ([`CLIENTS_MAX`]), as is everything a connection holds:
//! its input (about 3 × [`REQUEST_BYTES_MAX`], see `resp.rs`), its output between
//! flushes ([`OUT_FLUSH_BYTES`]), and the time a started command may take to arrive
//! (`--command-timeout-ms`).
//!
//! Pipelining: each turn parses every whole command already read (up to
//! [`BATCH_COMMANDS_MAX`]); consecutive writes are submitted together (`Client::submit`,
//! one proposal batch) and then awaited in order; consecutive reads share one ReadIndex
//! round (`Client::read` with a closure that answers all of them). Replies leave in
//! command order, in one `write` per turn.

use std::collections::{BTreeMap, VecDeque};
use std::io::{self, BufReader, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use quorate::{Client, Error, NodeId, Peer, Role};

use crate::commands::{self, Cmd, FORWARDED};
use crate::resp::{self, Args, ProtocolError, REQUEST_BYTES_MAX, RequestParser};
use crate::store::{Answer, Read, Store, Write};

/// Most client connections served at once; more are answered with an error and closed.
pub const CLIENTS_MAX: usize = 1024;
/// Most commands taken from one connection's input per turn.
const BATCH_COMMANDS_MAX: usize = 1024;
/// Replies are written out once this many bytes are waiting, even mid-batch.
const OUT_FLUSH_BYTES: usize = 1 << 20;
/// A client that does not take its replies for this long is disconnected.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long, and how many bytes, a closing connection still reads (and drops) so that
/// its client gets the last replies rather than a reset.
const LINGER: Duration = Duration::from_millis(200);
const LINGER_BYTES_MAX: usize = 1 << 20;
/// How long connecting to the leader's client port may take when forwarding.
const FORWARD_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// A forwarded command waits for the leader's reply this much longer than the leader's
/// own request timeout, so the leader's answer (even `-TRYAGAIN`) normally comes first.
const FORWARD_REPLY_MARGIN: Duration = Duration::from_secs(2);
/// Forwarded commands are sent in chunks of about this many bytes, each chunk's replies
/// read before the next is sent, so neither side can block writing to the other forever.
const FORWARD_CHUNK_BYTES: usize = 64 << 10;

/// How this node serves clients (from the command line).
#[derive(Clone, Debug)]
pub struct ServeOptions {
    /// Answer `-MOVED` on a follower instead of forwarding to the leader.
    pub redirect: bool,
    /// Serve reads from this node's copy (`Client::read_local`), possibly stale.
    pub stale_reads: bool,
    /// A command whose first bytes arrived must be whole within this.
    pub command_timeout: Duration,
    /// A connection with nothing pending is closed after this long (`None`: never).
    pub idle_timeout: Option<Duration>,
    /// The node's own request timeout (`Config::request_timeout`).
    pub request_timeout: Duration,
}

/// What every connection of this process shares.
pub struct Server {
    pub client: Client<Store>,
    pub id: NodeId,
    /// This node's RESP address.
    pub client_addr: SocketAddr,
    /// The other nodes' RESP addresses (`--client-peer`), where commands are forwarded.
    pub client_peers: BTreeMap<NodeId, SocketAddr>,
    pub options: ServeOptions,
    /// Connections being served. Invariant: <= CLIENTS_MAX once admitted.
    clients: AtomicUsize,
    started: Instant,
    /// RESP addresses learned from the nodes' announced metadata (a node's metadata never
    /// changes while it runs, so a learned address stays right).
    announced: parking_lot::Mutex<BTreeMap<NodeId, SocketAddr>>,
}

impl Server {
    pub fn new(
        client: Client<Store>,
        id: NodeId,
        client_addr: SocketAddr,
        client_peers: BTreeMap<NodeId, SocketAddr>,
        options: ServeOptions,
    ) -> Server {
        Server {
            client,
            id,
            client_addr,
            client_peers,
            options,
            clients: AtomicUsize::new(0),
            started: Instant::now(),
            announced: parking_lot::Mutex::default(),
        }
    }

    /// Accepts connections forever.
    pub fn run(self: Arc<Self>, listener: TcpListener) {
        for stream in listener.incoming() {
            match stream {
                Ok(stream) => self.clone().admit(stream),
                Err(e) => {
                    // Out of descriptors, most likely: wait for some to be freed.
                    log::warn!("accept failed: {e}");
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        }
    }

    fn admit(self: Arc<Self>, mut stream: TcpStream) {
        if self.clients.fetch_add(1, Ordering::SeqCst) >= CLIENTS_MAX {
            self.clients.fetch_sub(1, Ordering::SeqCst);
            let _ = stream.write_all(b"-ERR max number of clients reached\r\n");
            return;
        }
        let slot = Slot(self.clone());
        let spawned = std::thread::Builder::new().name("resp-client".into()).spawn(move || {
            let _slot = slot;
            Connection::new(self, stream).serve();
        });
        if let Err(e) = spawned {
            // The closure, and so the slot, was dropped: the count is right again.
            log::warn!("cannot start a connection thread: {e}");
        }
    }

    /// The RESP address of node `id`, if known: from `--client-peer`, else from the
    /// metadata it announced to this node (`resp=ADDR`, see [`quorate::Config::metadata`]).
    fn client_addr_of(&self, id: NodeId) -> Option<SocketAddr> {
        if id == self.id {
            return Some(self.client_addr);
        }
        if let Some(&addr) = self.client_peers.get(&id).or(self.announced.lock().get(&id)) {
            return Some(addr);
        }
        // A miss costs one status call, which learns every member's address at once.
        let status = self.client.status().ok()?;
        let mut announced = self.announced.lock();
        for m in status.members {
            let addr = m.metadata.and_then(|t| t.strip_prefix(crate::RESP_METADATA_PREFIX)?.parse().ok());
            if let Some(addr) = addr {
                announced.insert(m.id, addr);
            }
        }
        announced.get(&id).copied()
    }
}

/// One admitted connection; gives its place back when dropped.
struct Slot(Arc<Server>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.clients.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Whether to go on serving a connection.
#[derive(PartialEq, Eq)]
enum Flow {
    Continue,
    Close,
}

struct Connection {
    server: Arc<Server>,
    stream: TcpStream,
    parser: RequestParser,
    /// Replies not yet written. Invariant: < OUT_FLUSH_BYTES between commands, plus one
    /// reply.
    out: Vec<u8>,
    forwarder: Forwarder,
    /// Set by `QUORATE.FORWARDED`: the peer is a node relaying its clients' commands; we
    /// never forward them further.
    forwarded: bool,
}

impl Connection {
    fn new(server: Arc<Server>, stream: TcpStream) -> Connection {
        Connection {
            server,
            stream,
            parser: RequestParser::default(),
            out: Vec::new(),
            forwarder: Forwarder::default(),
            forwarded: false,
        }
    }

    fn serve(mut self) {
        let _ = self.stream.set_nodelay(true);
        if self.stream.set_write_timeout(Some(WRITE_TIMEOUT)).is_err() {
            return;
        }
        // When the command now being received started to arrive, if one is.
        let mut partial_since: Option<Instant> = None;
        let mut read_timeout: Option<Option<Duration>> = None;
        loop {
            let (batch, broken) = self.take_batch();
            let parsed = !batch.is_empty();
            // Commands before a protocol error are served, as Redis does.
            if parsed && self.execute(batch) == Flow::Close {
                return self.close();
            }
            if let Some(e) = broken {
                return self.refuse(&format!("ERR Protocol error: {}", e.0));
            }
            if self.flush() == Flow::Close {
                return;
            }
            let pending = self.parser.pending_bytes();
            if parsed {
                // What is left, if anything, is the start of the next command.
                partial_since = (pending > 0).then(Instant::now);
                continue;
            }
            let timeout = match self.read_timeout(pending, &mut partial_since) {
                Ok(timeout) => timeout,
                Err(why) => return self.refuse(&format!("ERR Protocol error: {why}")),
            };
            if read_timeout != Some(timeout) {
                if self.stream.set_read_timeout(timeout).is_err() {
                    return;
                }
                read_timeout = Some(timeout);
            }
            match self.parser.read_from(&mut self.stream) {
                Ok(0) => return,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // A command in progress: `read_timeout` closes the connection if its time
                // is up. Nothing in progress: the idle timeout passed.
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) && pending > 0 => {}
                Err(_) => return,
            }
        }
    }

    /// The whole commands already received (at most [`BATCH_COMMANDS_MAX`]), and the
    /// protocol error that stopped parsing, if one did.
    fn take_batch(&mut self) -> (Vec<Args>, Option<ProtocolError>) {
        let mut batch = Vec::new();
        while batch.len() < BATCH_COMMANDS_MAX {
            match self.parser.next_command() {
                Ok(Some(args)) => batch.push(args),
                Ok(None) => break,
                Err(e) => return (batch, Some(e)),
            }
        }
        (batch, None)
    }

    /// How long the next read may wait: the rest of the command timeout while `pending`
    /// bytes of a command are in (an error once it is over, or once the command is too
    /// large), else the idle timeout.
    fn read_timeout(&self, pending: usize, partial_since: &mut Option<Instant>) -> Result<Option<Duration>, String> {
        if pending == 0 {
            *partial_since = None;
            return Ok(self.server.options.idle_timeout);
        }
        if pending >= REQUEST_BYTES_MAX {
            return Err(format!("request larger than {REQUEST_BYTES_MAX} bytes"));
        }
        let since = *partial_since.get_or_insert_with(Instant::now);
        let left = self.server.options.command_timeout.saturating_sub(since.elapsed());
        if left.is_zero() {
            return Err(format!("command not completed within {} ms", self.server.options.command_timeout.as_millis()));
        }
        Ok(Some(left))
    }

    /// Answers the error `text` after the replies waiting, and closes the connection.
    fn refuse(mut self, text: &str) {
        resp::error(&mut self.out, text);
        self.close();
    }

    /// Writes the replies waiting and closes the connection gracefully: our side first,
    /// then reading (and dropping) what the client still sends for a moment. Closing with
    /// unread input would send a reset, which can make the client lose its last replies.
    fn close(mut self) {
        if self.flush() == Flow::Close || self.stream.shutdown(std::net::Shutdown::Write).is_err() {
            return;
        }
        let deadline = Instant::now() + LINGER;
        let mut discarded = 0;
        let mut sink = [0u8; 16 << 10];
        while discarded < LINGER_BYTES_MAX {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || self.stream.set_read_timeout(Some(left)).is_err() {
                return;
            }
            match io::Read::read(&mut self.stream, &mut sink) {
                Ok(0) | Err(_) => return,
                Ok(n) => discarded += n,
            }
        }
    }

    /// Writes out the replies waiting; `Close` if the client is gone or does not read.
    fn flush(&mut self) -> Flow {
        if self.out.is_empty() {
            return Flow::Continue;
        }
        let result = self.stream.write_all(&self.out);
        self.out.clear();
        if result.is_ok() { Flow::Continue } else { Flow::Close }
    }

    /// Serves a batch of commands in order, grouping consecutive writes and reads.
    fn execute(&mut self, batch: Vec<Args>) -> Flow {
        let mut queue: VecDeque<(Args, Cmd)> = batch
            .into_iter()
            .map(|args| {
                let cmd = commands::parse(&args);
                (args, cmd)
            })
            .collect();
        while let Some((args, cmd)) = queue.pop_front() {
            match cmd {
                Cmd::Write(write) => {
                    let mut run = vec![(args, write)];
                    while let Some((_, Cmd::Write(_))) = queue.front() {
                        let Some((args, Cmd::Write(write))) = queue.pop_front() else { unreachable!() };
                        run.push((args, write));
                    }
                    self.writes(run);
                }
                Cmd::Read(read) => {
                    let mut run = vec![(args, read)];
                    while let Some((_, Cmd::Read(_))) = queue.front() {
                        let Some((args, Cmd::Read(read))) = queue.pop_front() else { unreachable!() };
                        run.push((args, read));
                    }
                    self.reads(run);
                }
                Cmd::Reply(bytes) => self.out.extend_from_slice(&bytes),
                Cmd::Info(sections) => self.info(&sections),
                Cmd::Quit => {
                    self.out.extend_from_slice(resp::OK);
                    return Flow::Close;
                }
                Cmd::Forwarded => {
                    self.forwarded = true;
                    self.out.extend_from_slice(resp::OK);
                }
            }
            if self.out.len() >= OUT_FLUSH_BYTES && self.flush() == Flow::Close {
                return Flow::Close;
            }
        }
        Flow::Continue
    }

    /// Replicates a run of consecutive writes: one alone with `Client::write` (which
    /// retries by itself while the outcome is certain), several submitted together and
    /// awaited in order.
    fn writes(&mut self, run: Vec<(Args, Write)>) {
        let client = &self.server.client;
        let (args, writes): (Vec<Args>, Vec<Write>) = run.into_iter().unzip();
        let alone = writes.len() == 1;
        let results: Vec<Result<Answer, Error>> = if alone {
            writes.into_iter().map(|w| client.write(w)).collect()
        } else {
            let mut refused = false;
            let pending: Vec<_> = writes
                .into_iter()
                .map(|w| {
                    // After a refusal (a full queue), submitting later writes could apply
                    // them without the earlier one: refuse them too.
                    if refused {
                        return Err(Error::Busy);
                    }
                    let submitted = client.submit(w);
                    // (A write refused for its own sake, as too large, stops nothing.)
                    refused = matches!(submitted, Err(Error::Busy | Error::Stopped | Error::StorageFailed(_)));
                    submitted
                })
                .collect();
            pending.into_iter().map(|p| p.and_then(|p| p.wait())).collect()
        };
        // `Client::write` retried a dropped write already, until its timeout.
        self.settle_writes(&args, results, !alone);
    }

    /// Answers a run of writes from their results. Those that certainly did not apply
    /// because this node does not lead (`Redirect`, `Dropped`) are sent again (forwarded,
    /// or retried here) if no later write of the run applied or may have: sending one
    /// again after a later one applied would reorder this client's writes. Earlier ones
    /// are answered `-TRYAGAIN` (not applied).
    /// `retry`: whether a `Dropped` write may be sent again (once).
    fn settle_writes(&mut self, args: &[Args], results: Vec<Result<Answer, Error>>, retry: bool) {
        let certain_failure = |r: &Result<Answer, Error>| matches!(r, Err(e) if !e.is_indeterminate());
        let retry_from = results.iter().rposition(|r| !certain_failure(r)).map_or(0, |last_maybe| last_maybe + 1);
        let again = |r: &Result<Answer, Error>| matches!(r, Err(Error::Redirect { .. } | Error::Dropped { .. }));
        let mut i = 0;
        while i < results.len() {
            match &results[i] {
                Err(Error::Redirect { leader }) if i >= retry_from => {
                    // This and the following not-leader failures go to the leader together.
                    let end = (i..results.len()).find(|&j| !again(&results[j])).unwrap_or(results.len());
                    let leader = *leader;
                    self.redirected(leader, &args[i..end], true);
                    i = end;
                    continue;
                }
                Err(Error::Dropped { .. }) if retry && i >= retry_from => self.write_again(&args[i]),
                Ok(answer) => answer.encode(&mut self.out),
                Err(e) => resp::error(&mut self.out, &error_text(e, true)),
            }
            i += 1;
        }
    }

    /// Runs a write again from its arguments, alone (it was certainly not applied).
    fn write_again(&mut self, args: &Args) {
        let Cmd::Write(write) = commands::parse(args) else { unreachable!("parsed as a write before") };
        let result = self.server.client.write(write);
        self.settle_writes(std::slice::from_ref(args), vec![result], false);
    }

    /// Serves a run of consecutive reads with as few ReadIndex rounds as possible: one
    /// closure answers them all, unless its replies pass [`OUT_FLUSH_BYTES`].
    fn reads(&mut self, run: Vec<(Args, Read)>) {
        let (args, reads): (Vec<Args>, Vec<Read>) = run.into_iter().unzip();
        let reads: Arc<[Read]> = reads.into();
        let mut done = 0;
        while done < reads.len() {
            let (batch, from) = (reads.clone(), done);
            let answer = move |store: &Store| {
                let mut out = Vec::new();
                let mut next = from;
                while next < batch.len() && out.len() < OUT_FLUSH_BYTES {
                    batch[next].answer(store, &mut out);
                    next += 1;
                }
                (out, next)
            };
            let client = &self.server.client;
            let result = if self.server.options.stale_reads { client.read_local(answer) } else { client.read(answer) };
            match result {
                Ok((bytes, next)) => {
                    self.out.extend_from_slice(&bytes);
                    done = next;
                    if self.out.len() >= OUT_FLUSH_BYTES && self.flush() == Flow::Close {
                        return;
                    }
                }
                Err(Error::Redirect { leader }) => return self.redirected(leader, &args[done..], false),
                Err(e) => {
                    let text = error_text(&e, false);
                    for _ in done..reads.len() {
                        resp::error(&mut self.out, &text);
                    }
                    return;
                }
            }
        }
    }

    /// Answers commands this node cannot serve because `leader` leads: forwards them to
    /// it, or answers `-MOVED` (`--redirect`), or an error if no leader is known or this
    /// connection is itself a forwarding hop. Nothing was applied here.
    fn redirected(&mut self, leader: Option<Peer>, args: &[Args], write: bool) {
        let reply = match leader.map(|p| (p.id, self.server.client_addr_of(p.id))) {
            None => "CLUSTERDOWN no leader".to_string(),
            Some((id, None)) => {
                format!("CLUSTERDOWN the leader, node {id}, has no known client address (--client-peer)")
            }
            Some((_, Some(addr))) if self.server.options.redirect => format!("MOVED 0 {addr}"),
            Some((id, Some(_))) if self.forwarded => {
                format!("TRYAGAIN node {id} leads now; the command was not applied")
            }
            Some((id, Some(addr))) => {
                let timeout = self.server.options.request_timeout + FORWARD_REPLY_MARGIN;
                return self.forwarder.forward(id, addr, args, write, timeout, &mut self.out);
            }
        };
        for _ in args {
            resp::error(&mut self.out, &reply);
        }
    }

    /// `INFO`: a `# Server`, a `# Replication` (this node's Raft view) and a `# Keyspace`
    /// section, or those named.
    fn info(&mut self, sections: &[String]) {
        let client = &self.server.client;
        let status = match client.status() {
            Ok(status) => status,
            Err(e) => return resp::error(&mut self.out, &error_text(&e, false)),
        };
        let keys = client.read_local(|store: &Store| store.map.len()).unwrap_or(0);
        let wants = |name: &str| {
            sections.is_empty()
                || sections.iter().any(|s| s == name || s == "all" || s == "everything" || s == "default")
        };
        let mut text = String::new();
        if wants("server") {
            text.push_str("# Server\r\nredis_version:7.0.0\r\nredis_mode:standalone\r\nquorate_example:redis\r\n");
            text.push_str(&format!("process_id:{}\r\n", std::process::id()));
            text.push_str(&format!("tcp_port:{}\r\n", self.server.client_addr.port()));
            text.push_str(&format!("uptime_in_seconds:{}\r\n", self.server.started.elapsed().as_secs()));
            text.push_str(&format!("connected_clients:{}\r\n\r\n", self.server.clients.load(Ordering::SeqCst)));
        }
        if wants("replication") {
            text.push_str(&self.replication_info(&status));
        }
        if wants("stats") {
            text.push_str(&metrics_info(&status.metrics));
        }
        if wants("keyspace") {
            text.push_str("# Keyspace\r\n");
            if keys > 0 {
                text.push_str(&format!("db0:keys={keys},expires=0,avg_ttl=0\r\n"));
            }
        }
        resp::bulk(&mut self.out, Some(text.as_bytes()));
    }

    fn replication_info(&self, status: &quorate::Status) -> String {
        let addr_text = |a: Option<SocketAddr>| a.map_or_else(String::new, |a| a.to_string());
        let leader_addr = status.leader.and_then(|id| self.server.client_addr_of(id));
        // `role` in Redis's words, for tools that read it; `raft_role` in Raft's.
        let role = if status.role == Role::Leader { "master" } else { "slave" };
        let mut text = format!("# Replication\r\nrole:{role}\r\n");
        if status.role != Role::Leader
            && let Some(addr) = leader_addr
        {
            text.push_str(&format!("master_host:{}\r\nmaster_port:{}\r\n", addr.ip(), addr.port()));
        }
        let leader = status.leader.map_or_else(String::new, |id| id.to_string());
        text.push_str(&format!("raft_role:{}\r\nraft_id:{}\r\nraft_term:{}\r\n", status.role, status.id, status.term));
        text.push_str(&format!("raft_leader_id:{leader}\r\nraft_leader_addr:{}\r\n", addr_text(leader_addr)));
        text.push_str(&format!(
            "raft_commit_index:{}\r\nraft_applied_index:{}\r\n",
            status.commit_index, status.applied_index
        ));
        text.push_str(&format!("raft_last_log_index:{}\r\n", status.last_log_index));
        text.push_str(&format!("raft_members:{}\r\n", status.members.len()));
        for (i, m) in status.members.iter().enumerate() {
            let matched = m.match_index.map(|n| format!(",match_index={n}")).unwrap_or_default();
            text.push_str(&format!(
                "member{i}:id={},raft_addr={},client_addr={},voter={}{matched}\r\n",
                m.id,
                addr_text(m.addr),
                addr_text(self.server.client_addr_of(m.id)),
                if m.voter { "yes" } else { "no" },
            ));
        }
        text.push_str("\r\n");
        text
    }
}

/// `INFO stats`: the node's Raft counters ([`quorate::Metrics`]).
fn metrics_info(m: &quorate::Metrics) -> String {
    let mut text = String::from("# Stats\r\n");
    for (name, value) in [
        ("raft_proposals", m.proposals),
        ("raft_entries_committed", m.entries_committed),
        ("raft_entries_applied", m.entries_applied),
        ("raft_elections_started", m.elections_started),
        ("raft_elections_won", m.elections_won),
        ("raft_leader_changes", m.leader_changes),
        ("raft_snapshots_taken", m.snapshots_taken),
        ("raft_snapshots_installed", m.snapshots_installed),
        ("raft_snapshot_chunks_sent", m.snapshot_chunks_sent),
        ("raft_log_fsyncs", m.log_syncs),
    ] {
        text.push_str(&format!("{name}:{value}\r\n"));
    }
    for (id, t) in &m.peers {
        text.push_str(&format!(
            "raft_peer{id}:messages_out={},bytes_out={},messages_in={},bytes_in={}\r\n",
            t.messages_out, t.bytes_out, t.messages_in, t.bytes_in
        ));
    }
    text.push_str("\r\n");
    text
}

/// A quorate error as a Redis error reply's text, its code first. `write`: whether the
/// failed command was a write (only a write "may have been applied").
fn error_text(e: &Error, write: bool) -> String {
    match e {
        Error::Redirect { leader: None } | Error::Dropped { leader: None } => "CLUSTERDOWN no leader".into(),
        Error::Redirect { leader: Some(p) } => {
            format!("TRYAGAIN node {} leads now; the command was not applied", p.id)
        }
        Error::Timeout if !write => "TRYAGAIN the read timed out".into(),
        Error::LeadershipLost if !write => "TRYAGAIN leadership lost during the read".into(),
        // The texts say the command may have been applied.
        e if e.is_indeterminate() => format!("TRYAGAIN {e}"),
        Error::Busy => format!("BUSY {e}; nothing was applied, retry later"),
        Error::Dropped { .. } | Error::TransferInProgress | Error::SessionExpired => format!("TRYAGAIN {e}"),
        e => format!("ERR {e}"),
    }
}

/// A connection to the leader's client port, kept for the next forwarded command.
#[derive(Default)]
struct Forwarder {
    conn: Option<LeaderConn>,
}

/// How far a relay got: commands sent (maybe partly), and answered.
#[derive(Default)]
struct Progress {
    sent: usize,
    answered: usize,
}

struct LeaderConn {
    id: NodeId,
    addr: SocketAddr,
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Forwarder {
    /// Relays `args` (one or many commands) to node `id`'s client port at `addr` and
    /// appends its replies, in order, to `out`. This is the one place that knows how to
    /// reach a leader; when quorate forwards by itself it can replace this function.
    ///
    /// A failure answers the commands not yet answered with `-TRYAGAIN` (for writes: they
    /// may have been applied) and drops the connection.
    fn forward(
        &mut self,
        id: NodeId,
        addr: SocketAddr,
        args: &[Args],
        write: bool,
        timeout: Duration,
        out: &mut Vec<u8>,
    ) {
        let mut progress = Progress::default();
        let result = self.relay(id, addr, args, timeout, out, &mut progress);
        if let Err(e) = result {
            self.conn = None;
            let failed = format!("TRYAGAIN forwarding to the leader, node {id} at {addr}, failed: {e}");
            for i in progress.answered..args.len() {
                // Only a write that (maybe partly) left may have reached the leader.
                let effect = match (write, i < progress.sent) {
                    (false, _) => "",
                    (true, true) => "; the command may have been applied",
                    (true, false) => "; the command was not applied",
                };
                resp::error(out, &format!("{failed}{effect}"));
            }
        }
    }

    fn relay(
        &mut self,
        id: NodeId,
        addr: SocketAddr,
        args: &[Args],
        timeout: Duration,
        out: &mut Vec<u8>,
        progress: &mut Progress,
    ) -> io::Result<()> {
        let conn = self.connect(id, addr, timeout)?;
        let mut request = Vec::new();
        let mut next = 0;
        while next < args.len() {
            let first = next;
            request.clear();
            while next < args.len() && (next == first || request.len() < FORWARD_CHUNK_BYTES) {
                resp::command(&mut request, &args[next]);
                next += 1;
            }
            progress.sent = next;
            conn.writer.write_all(&request)?;
            for _ in first..next {
                let whole = out.len();
                if let Err(e) = resp::copy_reply(&mut conn.reader, out) {
                    out.truncate(whole); // No half reply.
                    return Err(e);
                }
                progress.answered += 1;
            }
        }
        Ok(())
    }

    /// The cached connection to `id` at `addr` if it is still open, else a new one,
    /// introduced with `QUORATE.FORWARDED`.
    fn connect(&mut self, id: NodeId, addr: SocketAddr, timeout: Duration) -> io::Result<&mut LeaderConn> {
        let reusable = self.conn.as_ref().is_some_and(|c| c.id == id && c.addr == addr && still_open(&c.writer));
        if !reusable {
            self.conn = None;
            let stream = TcpStream::connect_timeout(&addr, FORWARD_CONNECT_TIMEOUT)?;
            stream.set_nodelay(true)?;
            stream.set_read_timeout(Some(timeout))?;
            stream.set_write_timeout(Some(timeout))?;
            let mut conn = LeaderConn { id, addr, reader: BufReader::new(stream.try_clone()?), writer: stream };
            let mut hello = Vec::new();
            resp::command(&mut hello, &[FORWARDED.as_bytes().to_vec()]);
            conn.writer.write_all(&hello)?;
            let mut answer = Vec::new();
            resp::copy_reply(&mut conn.reader, &mut answer)?;
            if answer != resp::OK {
                let text = String::from_utf8_lossy(&answer).trim_end().to_string();
                return Err(io::Error::other(format!("{addr} is not a quorate redis node: {text}")));
            }
            self.conn = Some(conn);
        }
        Ok(self.conn.as_mut().expect("connected"))
    }
}

/// Whether a connection we only write requests on, and read replies to them from, is
/// still open: nothing should be waiting to be read, and the peer has not closed it (a
/// leader restarted since). Checked before reuse so a dead connection costs a reconnect,
/// not a `-TRYAGAIN`.
fn still_open(stream: &TcpStream) -> bool {
    if stream.set_nonblocking(true).is_err() {
        return false;
    }
    let peeked = stream.peek(&mut [0u8; 1]);
    let restored = stream.set_nonblocking(false).is_ok();
    restored && matches!(peeked, Err(e) if e.kind() == io::ErrorKind::WouldBlock)
}
