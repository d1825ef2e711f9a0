//! The user's replicated state machine, and its snapshots.

use std::fmt;
use std::io::{self, Read, Write};

use serde::Serialize;
use serde::de::DeserializeOwned;

/// A deterministic state machine that quorate replicates.
///
/// Every node applies the same commands in the same order, so every node must reach the
/// same state: `apply` must not read clocks, randomness, the environment or anything
/// else that differs between nodes.
///
/// If `apply` panics, the node stops; it never goes on serving a half-applied state. The
/// write whose command panicked, and any other write already proposed, get
/// [`crate::Error::LeadershipLost`] (indeterminate: the other nodes may apply it, and,
/// `apply` being deterministic, panic too); every later call gets
/// [`crate::Error::Stopped`].
///
/// # Snapshots
///
/// A machine that can write its state out and read it back lets the node compact its log
/// (§7 of the Raft paper): once enough entries were applied, the node takes a
/// [`StateMachine::snapshot`], saves it, and drops the log it covers; a follower too far
/// behind receives the snapshot and [`StateMachine::restore`]s from it. A machine without
/// snapshots (the default) keeps working, but its log is never compacted (the node says so
/// at start). A machine that is `Clone + Serialize + DeserializeOwned` gets both methods
/// with one line, [`serde_snapshots!`](crate::serde_snapshots):
///
/// ```
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Clone, Default, Serialize, Deserialize)]
/// struct Counter { value: u64 }
///
/// impl quorate::StateMachine for Counter {
///     type Command = u64;
///     type Response = u64;
///     fn apply(&mut self, n: u64) -> u64 { self.value += n; self.value }
///     quorate::serde_snapshots!();
/// }
/// ```
pub trait StateMachine: Send + 'static {
    /// A command clients send; it travels to followers as MessagePack.
    type Command: Serialize + DeserializeOwned + Send + 'static;
    /// What `apply` answers to the client that sent the command.
    type Response: Serialize + DeserializeOwned + Send + 'static;

    /// Whether [`StateMachine::snapshot`] and [`StateMachine::restore`] are implemented.
    const SNAPSHOTS: bool = false;

    /// Applies one committed command and returns the answer for its client.
    fn apply(&mut self, command: Self::Command) -> Self::Response;

    /// Captures the current state for a snapshot. It runs on the node's thread, which sends
    /// no heartbeat meanwhile, so it should be cheap: a clone of a persistent (structurally
    /// shared) map, a copy-on-write handle. The [`Snapshot`] it returns writes the bytes
    /// later, on another thread, while the node goes on. `None` if unsupported.
    fn snapshot(&self) -> Option<Snapshot> {
        None
    }

    /// Replaces the whole state with the one a [`StateMachine::snapshot`] wrote, read
    /// from `from`. An error stops the node (it has no state it could serve).
    fn restore(&mut self, from: &mut dyn Read) -> io::Result<()> {
        let _ = from;
        Err(io::Error::new(io::ErrorKind::Unsupported, "this state machine does not support snapshots"))
    }

    /// Answers a remote client's query, MessagePack in and out. Not written by hand:
    /// implement [`Queries`] and put [`remote_queries!`](crate::remote_queries) in the
    /// `impl StateMachine` block. By default a machine answers no remote query (in-process
    /// clients read with closures, which need none of this).
    #[doc(hidden)]
    fn query_encoded(&self, query: &[u8]) -> Result<Vec<u8>, String> {
        let _ = query;
        Err("this state machine answers no remote queries (it implements no `quorate::Queries`)".into())
    }
}

/// Read-only questions a [`crate::RemoteClient`] can ask the state machine. A closure (what
/// [`crate::Client::read`] takes) cannot cross the network, so a remote read names its
/// question as data instead. Implement it, then put `quorate::remote_queries!();` in the
/// `impl StateMachine` block so the node answers them:
///
/// ```
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Default)]
/// struct Counter { value: u64 }
///
/// #[derive(Serialize, Deserialize)]
/// enum Question { Value, IsAbove(u64) }
///
/// impl quorate::StateMachine for Counter {
///     type Command = u64;
///     type Response = u64;
///     fn apply(&mut self, n: u64) -> u64 { self.value += n; self.value }
///     quorate::remote_queries!();
/// }
///
/// impl quorate::Queries for Counter {
///     type Query = Question;
///     type QueryResponse = u64;
///     fn query(&self, q: Question) -> u64 {
///         match q { Question::Value => self.value, Question::IsAbove(n) => u64::from(self.value > n) }
///     }
/// }
/// ```
pub trait Queries: StateMachine {
    /// A question; it travels as MessagePack.
    type Query: Serialize + DeserializeOwned + Send + 'static;
    /// Its answer.
    type QueryResponse: Serialize + DeserializeOwned + Send + 'static;
    /// Answers `query` from the current state (which it must not change: it has `&self`).
    fn query(&self, query: Self::Query) -> Self::QueryResponse;
}

/// What [`remote_queries!`](crate::remote_queries) expands to call.
#[doc(hidden)]
pub fn answer_query<M: Queries>(machine: &M, query: &[u8]) -> Result<Vec<u8>, String> {
    let query: M::Query = rmp_serde::from_slice(query).map_err(|e| format!("the query does not decode: {e}"))?;
    rmp_serde::to_vec(&machine.query(query)).map_err(|e| format!("the query's answer does not encode: {e}"))
}

/// Lets a node answer [`crate::RemoteClient`] queries with the machine's [`Queries`]
/// implementation: put `quorate::remote_queries!();` in the `impl StateMachine` block.
#[macro_export]
macro_rules! remote_queries {
    () => {
        fn query_encoded(&self, query: &[u8]) -> ::std::result::Result<::std::vec::Vec<u8>, ::std::string::String> {
            $crate::answer_query(self, query)
        }
    };
}

type WriteFn = Box<dyn FnOnce(&mut dyn Write) -> io::Result<()> + Send>;

/// A captured state, not yet written: [`Snapshot::write_to`] streams its bytes to a file
/// (or, in memory mode, a buffer) on a thread other than the node's.
pub struct Snapshot {
    write: WriteFn,
}

impl Snapshot {
    /// A snapshot that `write` produces when called (once, on another thread).
    pub fn new(write: impl FnOnce(&mut dyn Write) -> io::Result<()> + Send + 'static) -> Snapshot {
        Snapshot { write: Box::new(write) }
    }

    /// A snapshot of `state` as MessagePack, which [`Snapshot::deserialize`] reads back.
    /// `state` is usually a clone of the machine, taken on the node's thread.
    pub fn serialize<T: Serialize + Send + 'static>(state: T) -> Snapshot {
        Snapshot::new(move |w| {
            let mut w = io::BufWriter::with_capacity(256 << 10, w);
            rmp_serde::encode::write_named(&mut w, &state).map_err(io::Error::other)?;
            w.flush()
        })
    }

    /// Reads a state that [`Snapshot::serialize`] wrote.
    pub fn deserialize<T: DeserializeOwned>(from: &mut dyn Read) -> io::Result<T> {
        let r = io::BufReader::with_capacity(256 << 10, from);
        rmp_serde::from_read(r).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }

    /// Writes the snapshot's bytes to `to`.
    pub fn write_to(self, to: &mut dyn Write) -> io::Result<()> {
        (self.write)(to)
    }
}

impl fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Snapshot")
    }
}

/// Implements [`StateMachine`]'s snapshots for a machine that is `Clone + Serialize +
/// DeserializeOwned`: put `quorate::serde_snapshots!();` in the `impl StateMachine` block.
/// The snapshot is a clone taken on the node's thread and serialized with MessagePack on
/// another; for a state of many megabytes prefer structurally shared collections (whose
/// clone is cheap), or implement the two methods by hand.
#[macro_export]
macro_rules! serde_snapshots {
    () => {
        const SNAPSHOTS: bool = true;

        fn snapshot(&self) -> ::std::option::Option<$crate::Snapshot> {
            ::std::option::Option::Some($crate::Snapshot::serialize(::std::clone::Clone::clone(self)))
        }

        fn restore(&mut self, from: &mut dyn ::std::io::Read) -> ::std::io::Result<()> {
            *self = $crate::Snapshot::deserialize(from)?;
            ::std::result::Result::Ok(())
        }
    };
}
