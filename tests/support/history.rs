//! Client histories of a key-value workload: what each client invoked and what it was told,
//! against one shared monotonic clock, written as JSON lines that any Porcupine-style
//! checker can read:
//!
//! ```text
//! {"client":1,"type":"invoke","f":"cas","key":"k1","value":[3,7],"time_ns":1200}
//! {"client":1,"type":"ok","f":"cas","key":"k1","value":true,"time_ns":5300}
//! ```
//!
//! `fail` means the command certainly had no effect; `info` that it may have had (a timeout,
//! a lost leader): the checker lets it take effect at any time after its invocation, or never.

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// What an operation does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum F {
    Read,
    Write,
    Cas,
    Append,
}

impl F {
    pub fn name(self) -> &'static str {
        match self {
            F::Read => "read",
            F::Write => "write",
            F::Cas => "cas",
            F::Append => "append",
        }
    }
}

/// An operation's argument. Written values are unique across the whole history.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Input {
    Read,
    Write(i64),
    /// Set to `.1` if the value is `.0`.
    Cas(i64, i64),
    /// Append to the key's list (an absent key is an empty list).
    Append(i64),
}

impl Input {
    pub fn f(self) -> F {
        match self {
            Input::Read => F::Read,
            Input::Write(_) => F::Write,
            Input::Cas(..) => F::Cas,
            Input::Append(_) => F::Append,
        }
    }
}

/// What a key holds, as a read returns it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Value {
    Absent,
    Int(i64),
    List(Vec<i64>),
}

/// What the client was told.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// A write or an append took effect.
    Done,
    /// A compare-and-swap's answer: whether it swapped.
    Swapped(bool),
    /// What a read saw.
    Read(Value),
    /// Certainly no effect.
    Fail,
    /// Unknown: it may have taken effect, or may still.
    Info,
}

/// One operation from invocation to completion.
#[derive(Clone, Debug)]
pub struct Op {
    pub client: u64,
    pub key: String,
    pub input: Input,
    pub output: Output,
    pub invoke_ns: u64,
    /// When the client heard the answer (for `Info`: when it gave up, which bounds
    /// nothing: the operation may take effect later).
    pub complete_ns: u64,
}

impl Op {
    /// Whether the checker must place this operation (`Fail` ones never took effect).
    pub fn took_effect_maybe(&self) -> bool {
        self.output != Output::Fail
    }
}

/// A history being recorded by many client threads at once.
#[derive(Clone)]
pub struct History {
    origin: Instant,
    ops: Arc<Mutex<Vec<Op>>>,
}

/// An invoked operation whose answer is still to come.
pub struct Invocation {
    client: u64,
    key: String,
    input: Input,
    invoke_ns: u64,
}

impl History {
    pub fn new() -> History {
        History { origin: Instant::now(), ops: Arc::new(Mutex::new(Vec::new())) }
    }

    /// Nanoseconds since the history began (the one clock every event is stamped with).
    pub fn now_ns(&self) -> u64 {
        self.origin.elapsed().as_nanos() as u64
    }

    /// Stamps an invocation: call right before sending the request.
    pub fn invoke(&self, client: u64, key: &str, input: Input) -> Invocation {
        Invocation { client, key: key.to_string(), input, invoke_ns: self.now_ns() }
    }

    /// Stamps the answer: call right after receiving it.
    pub fn complete(&self, inv: Invocation, output: Output) {
        let complete_ns = self.now_ns();
        debug_assert!(
            matches!(
                (inv.input, &output),
                (_, Output::Fail | Output::Info)
                    | (Input::Read, Output::Read(_))
                    | (Input::Write(_) | Input::Append(_), Output::Done)
                    | (Input::Cas(..), Output::Swapped(_))
            ),
            "{:?} cannot answer {:?}",
            output,
            inv.input
        );
        let op =
            Op { client: inv.client, key: inv.key, input: inv.input, output, invoke_ns: inv.invoke_ns, complete_ns };
        self.ops.lock().unwrap().push(op);
    }

    /// Every completed operation so far.
    pub fn ops(&self) -> Vec<Op> {
        self.ops.lock().unwrap().clone()
    }

    /// Writes the history as JSON lines, events in time order, and returns the path.
    pub fn write_jsonl(&self, dir: &Path, name: &str) -> PathBuf {
        let path = dir.join(format!("{name}.jsonl"));
        let mut file = std::io::BufWriter::new(std::fs::File::create(&path).expect("create the history file"));
        for line in jsonl_lines(&self.ops()) {
            writeln!(file, "{line}").expect("write the history");
        }
        file.flush().expect("flush the history");
        path
    }
}

/// The history's events (one invoke and one completion per operation) as JSON lines,
/// in time order.
pub fn jsonl_lines(ops: &[Op]) -> Vec<String> {
    let mut events: Vec<(u64, u8, String)> = Vec::with_capacity(ops.len() * 2);
    for op in ops {
        let f = op.input.f().name();
        let invoke_value = match op.input {
            Input::Read => serde_json::Value::Null,
            Input::Write(v) | Input::Append(v) => v.into(),
            Input::Cas(from, to) => serde_json::json!([from, to]),
        };
        let (kind, value) = match &op.output {
            Output::Done => ("ok", invoke_value.clone()),
            Output::Swapped(b) => ("ok", (*b).into()),
            Output::Read(v) => ("ok", value_json(v)),
            Output::Fail => ("fail", invoke_value.clone()),
            Output::Info => ("info", invoke_value.clone()),
        };
        let event = |kind: &str, value: serde_json::Value, time_ns: u64| {
            serde_json::json!({"client": op.client, "type": kind, "f": f, "key": op.key, "value": value, "time_ns": time_ns})
                .to_string()
        };
        events.push((op.invoke_ns, 0, event("invoke", invoke_value, op.invoke_ns)));
        events.push((op.complete_ns, 1, event(kind, value, op.complete_ns)));
    }
    events.sort_by_key(|(t, order, _)| (*t, *order));
    events.into_iter().map(|(_, _, line)| line).collect()
}

fn value_json(v: &Value) -> serde_json::Value {
    match v {
        Value::Absent => serde_json::Value::Null,
        Value::Int(i) => (*i).into(),
        Value::List(l) => l.clone().into(),
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "client {} {:?} on {} -> {:?} [{}..{} ns]",
            self.client, self.input, self.key, self.output, self.invoke_ns, self.complete_ns
        )
    }
}
