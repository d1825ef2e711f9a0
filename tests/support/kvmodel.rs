//! The linearizability suite's state machine: keys hold an integer register or a list of
//! integers. Writes and compare-and-swaps act on registers, appends on lists; reads are
//! closures over [`KvModel::get`]. It has snapshots, so a cluster configured with a small
//! threshold compacts and sends InstallSnapshot while the suite runs.
//!
//! The semantics are the ones the checker's model assumes (`tests/support/history.rs`): an
//! absent key reads as [`Value::Absent`]; a compare-and-swap on an absent key fails; an
//! append to an absent key starts a list.

use std::collections::BTreeMap;

use quorate::StateMachine;
use serde::{Deserialize, Serialize};

use super::history::{Input, Output, Value};

/// What one key holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
enum Stored {
    Int(i64),
    List(Vec<i64>),
}

/// The replicated map.
#[derive(Clone, Default, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvModel {
    map: BTreeMap<String, Stored>,
}

/// Commands; every one goes through the Raft log.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum KvCmd {
    Write(String, i64),
    /// Set the register to `.2` if it holds `.1`.
    Cas(String, i64, i64),
    Append(String, i64),
}

/// Answers to [`KvCmd`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum KvReply {
    Done,
    Swapped(bool),
}

impl KvReply {
    pub fn output(self) -> Output {
        match self {
            KvReply::Done => Output::Done,
            KvReply::Swapped(b) => Output::Swapped(b),
        }
    }
}

impl KvCmd {
    /// The command carrying out `input` on `key`; `None` for a read (reads are closures).
    pub fn of(key: &str, input: Input) -> Option<KvCmd> {
        let key = key.to_string();
        match input {
            Input::Read => None,
            Input::Write(v) => Some(KvCmd::Write(key, v)),
            Input::Cas(from, to) => Some(KvCmd::Cas(key, from, to)),
            Input::Append(v) => Some(KvCmd::Append(key, v)),
        }
    }
}

impl KvModel {
    /// What a read of `key` returns.
    pub fn get(&self, key: &str) -> Value {
        match self.map.get(key) {
            None => Value::Absent,
            Some(Stored::Int(v)) => Value::Int(*v),
            Some(Stored::List(l)) => Value::List(l.clone()),
        }
    }
}

impl StateMachine for KvModel {
    type Command = KvCmd;
    type Response = KvReply;

    fn apply(&mut self, command: KvCmd) -> KvReply {
        match command {
            KvCmd::Write(key, v) => {
                self.map.insert(key, Stored::Int(v));
                KvReply::Done
            }
            KvCmd::Cas(key, from, to) => match self.map.get_mut(&key) {
                Some(Stored::Int(v)) if *v == from => {
                    *v = to;
                    KvReply::Swapped(true)
                }
                _ => KvReply::Swapped(false),
            },
            KvCmd::Append(key, v) => {
                match self.map.entry(key).or_insert_with(|| Stored::List(Vec::new())) {
                    Stored::List(l) => l.push(v),
                    // The workload never appends to a register (keys are typed by name);
                    // leaving it unchanged keeps `apply` total without a panic on the node.
                    Stored::Int(_) => {}
                }
                KvReply::Done
            }
        }
    }

    quorate::serde_snapshots!();
}
