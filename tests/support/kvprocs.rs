//! The linearizability suite's process variant: three `kv` example nodes as OS processes
//! on data dirs, driven through the line protocol on their stdin, killed with `SIGKILL`
//! and restarted on their directories; clients that follow the leader across the
//! processes and record every operation in a [`History`].

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;

use super::examples::{example_binary, free_addrs};
use super::history::{History, Input, Output, Value};
use super::kvclients::{is_list, next_input, remember};
use super::sim::Rng;

pub const NODES: u64 = 3;
/// How long one command may take before the client gives up on it (the kv nodes' own
/// request timeout is the default 5 s, so they normally answer first).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(8);
/// Snapshot every this many entries, so kills land while snapshots are written,
/// installed and loaded.
const SNAPSHOT_EVERY: u64 = 40;

/// Builds the `kv` example with the profile this test was built with, and returns its path.
pub fn kv_binary() -> PathBuf {
    example_binary("kv")
}

/// One running `kv` process: its stdin, and its stdout lines.
struct Proc {
    child: Child,
    stdin: ChildStdin,
    lines: Receiver<String>,
}

/// Where a client goes after an answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    /// This node answered: it leads.
    Stay,
    /// This node named the leader.
    Leader(u64),
    /// Try another node.
    Elsewhere,
}

pub struct KvProcs {
    kv: PathBuf,
    pub root: tempfile::TempDir,
    addrs: Vec<SocketAddr>,
    procs: Vec<Mutex<Proc>>,
    pids: Vec<AtomicU64>,
    /// Numbers the markers sent before each command.
    marks: AtomicU64,
}

impl KvProcs {
    pub fn start() -> KvProcs {
        let kv = kv_binary();
        let addrs = free_addrs(NODES as usize);
        let root = tempfile::tempdir().unwrap();
        let mut procs = KvProcs { kv, root, addrs, procs: Vec::new(), pids: Vec::new(), marks: AtomicU64::new(0) };
        for id in 1..=NODES {
            let proc = procs.spawn(id);
            procs.pids.push(AtomicU64::new(u64::from(proc.child.id())));
            procs.procs.push(Mutex::new(proc));
        }
        procs
    }

    pub fn dir(&self, id: u64) -> PathBuf {
        self.root.path().join(format!("node-{id}"))
    }

    fn spawn(&self, id: u64) -> Proc {
        let mut cmd = Command::new(&self.kv);
        let i = id as usize - 1;
        cmd.args(["--id", &id.to_string(), "--listen", &self.addrs[i].to_string()]);
        for (j, addr) in self.addrs.iter().enumerate().filter(|&(j, _)| j != i) {
            cmd.args(["--peer", &format!("{}={addr}", j + 1)]);
        }
        cmd.arg("--data-dir").arg(self.dir(id));
        cmd.args(["--snapshot-every", &SNAPSHOT_EVERY.to_string()]);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.root.path().join(format!("node-{id}.log")))
            .unwrap();
        cmd.env("RUST_LOG", "warn").stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(log);
        let mut child = cmd.spawn().expect("spawn kv");
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = crossbeam_channel::unbounded();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Proc { child, stdin, lines }
    }

    /// Sends `command` and returns its answer. A unique marker line goes first, and
    /// everything before its echo is skipped: late answers to commands given up on,
    /// start-up lines. (Without it a late answer to an identical earlier read could pass
    /// for this one's.)
    fn ask(&self, proc: &mut Proc, command: &str) -> Answer {
        let mark = format!("mark-{}", self.marks.fetch_add(1, Ordering::SeqCst));
        // One write: if it fails, the process is gone and read none of the command.
        if proc.stdin.write_all(format!("{mark}\n{command}\n").as_bytes()).is_err() {
            return Answer::Unsent;
        }
        let deadline = Instant::now() + ANSWER_TIMEOUT;
        let (mark_echo, echo) = (format!("> {mark}"), format!("> {command}"));
        let mut marked = false;
        loop {
            let Ok(line) = proc.lines.recv_deadline(deadline) else { return Answer::Silent };
            if marked && line == echo {
                return proc.lines.recv_deadline(deadline).map_or(Answer::Silent, Answer::Line);
            }
            // The marker's own answer ("unknown command") comes between the two echoes.
            marked |= line == mark_echo;
        }
    }

    /// Carries out `input` on `key` at node `id`, recorded in `history` as `client`.
    pub fn call(&self, id: u64, history: &History, client: u64, key: &str, input: Input) -> (Output, Next) {
        let command = match input {
            Input::Read => format!("get {key}"),
            Input::Write(v) => format!("put {key} {v}"),
            Input::Cas(from, to) => format!("cas {key} {from} {to}"),
            Input::Append(v) => format!("append {key} {v}"),
        };
        let mut proc = self.procs[id as usize - 1].lock().unwrap();
        let inv = history.invoke(client, key, input);
        let answer = self.ask(&mut proc, &command);
        let (output, next) = parse_answer(key, input, answer);
        history.complete(inv, output.clone());
        (output, next)
    }

    /// SIGKILLs node `id` and reaps it.
    pub fn kill(&self, id: u64) {
        let pid = self.pids[id as usize - 1].load(Ordering::SeqCst);
        let status = Command::new("kill").args(["-9", &pid.to_string()]).status().expect("run kill");
        assert!(status.success(), "kill -9 {pid}");
        self.procs[id as usize - 1].lock().unwrap().child.wait().unwrap();
    }

    /// Starts node `id` again on its address and data dir.
    pub fn restart(&self, id: u64) {
        let mut proc = self.procs[id as usize - 1].lock().unwrap();
        *proc = self.spawn(id);
        self.pids[id as usize - 1].store(u64::from(proc.child.id()), Ordering::SeqCst);
    }

    /// Node `id`'s whole map, read locally (the `dump-local` line).
    pub fn dump(&self, id: u64) -> Option<String> {
        let mut proc = self.procs[id as usize - 1].lock().unwrap();
        match self.ask(&mut proc, "dump-local") {
            Answer::Line(line) if line.starts_with("dump ") => Some(line),
            _ => None,
        }
    }

    /// How many snapshot files node `id`'s directory holds.
    pub fn snapshot_files(&self, id: u64) -> usize {
        let entries = std::fs::read_dir(self.dir(id)).unwrap().filter_map(Result::ok);
        entries.filter(|e| e.file_name().to_string_lossy().ends_with(".snap")).count()
    }
}

impl Drop for KvProcs {
    fn drop(&mut self) {
        for proc in &self.procs {
            let mut proc = proc.lock().unwrap_or_else(|e| e.into_inner());
            let _ = proc.child.kill();
            let _ = proc.child.wait();
        }
    }
}

/// What a process said to a command.
enum Answer {
    Line(String),
    /// The command could not be written: the process is gone, and it had no effect.
    Unsent,
    /// No answer in time, or the process died: the command may have taken effect.
    Silent,
}

/// What the kv line protocol's `answer` to `input` means.
fn parse_answer(key: &str, input: Input, answer: Answer) -> (Output, Next) {
    // Reads have no effect: one that went wrong in any way is a `fail`.
    let unknown = if input == Input::Read { Output::Fail } else { Output::Info };
    let line = match answer {
        Answer::Line(line) => line,
        Answer::Unsent => return (Output::Fail, Next::Elsewhere),
        Answer::Silent => return (unknown, Next::Elsewhere),
    };
    let line = line.as_str();
    if let Some(rest) = line.strip_prefix("redirect: not the leader; node ") {
        let leader = rest.split(' ').next().and_then(|id| id.parse().ok());
        return (Output::Fail, leader.map_or(Next::Elsewhere, Next::Leader));
    }
    if line.starts_with("redirect:") {
        return (Output::Fail, Next::Elsewhere);
    }
    if line.starts_with("error:") {
        let output = if line.ends_with("(nothing was applied)") { Output::Fail } else { unknown };
        return (output, Next::Elsewhere);
    }
    let output = match input {
        Input::Read => Output::Read(parse_value(key, line)),
        Input::Write(_) | Input::Append(_) => {
            parse_value(key, line); // The previous value: checks the answer's shape.
            Output::Done
        }
        Input::Cas(..) if line.starts_with("swapped;") => Output::Swapped(true),
        Input::Cas(..) if line.starts_with("not swapped;") => Output::Swapped(false),
        Input::Cas(..) => panic!("unexpected answer to a cas on {key}: {line:?}"),
    };
    (output, Next::Stay)
}

/// `(none)` or a quoted value: an integer, or for a list key comma-separated integers.
fn parse_value(key: &str, text: &str) -> Value {
    if text == "(none)" {
        return Value::Absent;
    }
    let inner = text.strip_prefix('"').and_then(|t| t.strip_suffix('"'));
    let inner = inner.unwrap_or_else(|| panic!("unexpected answer on {key}: {text:?}"));
    let number = |s: &str| s.parse::<i64>().unwrap_or_else(|e| panic!("{key}: bad value {text:?}: {e}"));
    if is_list(key) { Value::List(inner.split(',').map(number).collect()) } else { Value::Int(number(inner)) }
}

/// A client that follows the leader across the processes until `stop`: random keys of
/// `keys`, fresh values from `values`. Its id is `id`, plus `stride` after each `info`.
/// Counts `ok` answers in `ok`, and stores the last node that answered in `leader`.
#[allow(clippy::too_many_arguments)]
pub fn client_loop(
    procs: &KvProcs,
    history: &History,
    mut id: u64,
    stride: u64,
    keys: &[String],
    mut rng: Rng,
    values: &AtomicI64,
    stop: &AtomicBool,
    ok: &AtomicUsize,
    leader: &AtomicU64,
) {
    let mut target = rng.between(1, NODES);
    let mut last = vec![None; keys.len()];
    while !stop.load(Ordering::SeqCst) {
        let k = rng.between(0, keys.len() as u64 - 1) as usize;
        let input = next_input(&keys[k], &mut rng, values, last[k]);
        let (output, next) = procs.call(target, history, id, &keys[k], input);
        remember(&mut last[k], input, &output);
        match output {
            Output::Info => id += stride,
            Output::Fail => {}
            _ => {
                ok.fetch_add(1, Ordering::SeqCst);
            }
        }
        match next {
            Next::Stay => leader.store(target, Ordering::SeqCst),
            Next::Leader(n) if n != target && (1..=NODES).contains(&n) => target = n,
            Next::Leader(_) | Next::Elsewhere => {
                target = target % NODES + 1;
                // Pacing while no leader is known, not synchronisation.
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}
