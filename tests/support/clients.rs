//! Simulated clients: the state machine they drive, the way answers come back to them,
//! and the record of every answer for the checker.

use std::sync::{Arc, Mutex};

use quorate::replica::{Channel, Respond};
use quorate::{Error, StateMachine};

use super::checker::Fnv;

/// A state machine whose state is a hash chain over the commands it applied, so two
/// servers that applied different sequences are told apart, and every response names
/// exactly which entry produced it.
#[derive(Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct SimMachine {
    /// Commands applied.
    pub count: u64,
    /// Hash of the commands applied, in order.
    pub hash: Fnv,
}

/// The answer to a write: (the command, how many commands were applied with it, the
/// state's hash after it).
pub type WriteResponse = (u64, u64, u64);

impl StateMachine for SimMachine {
    type Command = u64;
    type Response = WriteResponse;
    fn apply(&mut self, command: u64) -> WriteResponse {
        self.count += 1;
        self.hash.write(&command.to_le_bytes());
        (command, self.count, self.hash.0)
    }
    quorate::serde_snapshots!();
}

/// What a client learned.
#[derive(Debug)]
pub enum Outcome {
    /// The write of command `cmd` was answered.
    Write { cmd: u64, result: Result<WriteResponse, Refusal> },
    /// Linearizable read `id`, issued when the writes acknowledged and reads finished so
    /// far had reached `floor` commands, saw a state of `count` commands with hash `hash`.
    Read { id: u64, node: u64, floor: u64, count: u64, hash: u64 },
    /// Read `id` was refused or failed.
    ReadFailed { id: u64, why: String },
    /// Registration `id` of a session answered: the session's id, or why not.
    Registered { id: u64, result: Result<u64, String> },
    /// Attempt `attempt` of the session write of `cmd` (retries send the same tag again,
    /// as a remote client following the leader would).
    SessionWrite { cmd: u64, attempt: u64, result: Result<WriteResponse, Refusal> },
}

/// An error, as the checker classifies it.
#[derive(Debug)]
pub enum Refusal {
    /// The command may have been applied.
    Indeterminate(String),
    /// The command was certainly not applied.
    Certain(String),
}

impl From<Error> for Refusal {
    fn from(e: Error) -> Refusal {
        if e.is_indeterminate() { Refusal::Indeterminate(e.to_string()) } else { Refusal::Certain(e.to_string()) }
    }
}

/// Where every simulated client's answers land, in the order they were given.
pub type Outcomes = Arc<Mutex<Vec<Outcome>>>;

/// The simulated client kind.
pub struct SimClient;

impl Channel for SimClient {
    type Reply<T: Send + 'static> = SimReply<T>;
}

/// One answer's way back to a simulated client. Dropped unanswered (its server crashed),
/// it answers as a local client's slot does: `Stopped` unless proposed, then
/// `LeadershipLost`.
pub struct SimReply<T> {
    deliver: Option<Box<dyn FnOnce(quorate::Result<T>) + Send>>,
    proposed: bool,
}

impl<T> SimReply<T> {
    pub fn new(deliver: impl FnOnce(quorate::Result<T>) + Send + 'static) -> SimReply<T> {
        SimReply { deliver: Some(Box::new(deliver)), proposed: false }
    }

    /// Drops the reply without answering (its answer went another way).
    pub fn disarm(mut self) {
        self.deliver = None;
    }

    /// A reply nobody records.
    pub fn ignored() -> SimReply<T> {
        SimReply { deliver: None, proposed: false }
    }
}

impl<T: Send + 'static> Respond<T> for SimReply<T> {
    fn proposed(mut self) -> SimReply<T> {
        self.proposed = true;
        self
    }

    fn send(mut self, result: quorate::Result<T>) {
        if let Some(deliver) = self.deliver.take() {
            deliver(result);
        }
    }
}

impl<T> Drop for SimReply<T> {
    fn drop(&mut self) {
        if let Some(deliver) = self.deliver.take() {
            deliver(Err(if self.proposed { Error::LeadershipLost } else { Error::Stopped }));
        }
    }
}

/// A reply that records the answer to the write of `cmd`.
pub fn write_reply(outcomes: &Outcomes, cmd: u64) -> SimReply<WriteResponse> {
    let outcomes = outcomes.clone();
    SimReply::new(move |result: quorate::Result<WriteResponse>| {
        let result = result.map_err(Refusal::from);
        outcomes.lock().unwrap().push(Outcome::Write { cmd, result });
    })
}
