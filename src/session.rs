//! A client's side of its session (§6.3): the session id, the sequence numbers it handed
//! out, and the ones still waiting for an answer.

use std::collections::BTreeSet;
use std::time::Instant;

use parking_lot::Mutex;

use crate::error::{Error, Result};
use crate::replica::SessionTag;

/// A fresh secret for a session registration: unguessable, so only its client can use the
/// session.
pub(crate) fn fresh_secret() -> Result<u64> {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).map_err(|e| Error::Io(std::io::Error::other(e.to_string())))?;
    Ok(u64::from_le_bytes(bytes))
}

/// One session, shared by a [`crate::Client`] and its clones.
#[derive(Default)]
pub(crate) struct ClientSession {
    state: Mutex<State>,
    /// Held while registering, so concurrent first writes register one session.
    registering: Mutex<()>,
}

#[derive(Default)]
struct State {
    /// The registered session's id (the index of its registration entry).
    id: Option<u64>,
    /// The secret it was registered with; every command of it carries the secret.
    secret: u64,
    next_seq: u64,
    /// Sequences handed out and not finished: the lowest is the client's acknowledgement.
    outstanding: BTreeSet<u64>,
}

impl ClientSession {
    /// The session's id, if registered.
    pub fn id(&self) -> Option<u64> {
        self.state.lock().id
    }

    /// The session's id, registering one first with `register` (given a fresh secret, it
    /// answers the new session's id) if there is none. Clones share the session: one
    /// registers, the others wait for it, never past `deadline`.
    pub fn id_or_register(&self, deadline: Instant, register: impl FnOnce(u64) -> Result<u64>) -> Result<u64> {
        if let Some(id) = self.id() {
            return Ok(id);
        }
        let Some(_one_at_a_time) = self.registering.try_lock_until(deadline) else { return Err(Error::Timeout) };
        if let Some(id) = self.id() {
            return Ok(id);
        }
        let secret = fresh_secret()?;
        let id = register(secret)?;
        self.set(id, secret);
        Ok(id)
    }

    /// Adopts a newly registered session (sequences start again at 1).
    fn set(&self, id: u64, secret: u64) {
        let mut s = self.state.lock();
        *s = State { id: Some(id), secret, next_seq: 1, outstanding: BTreeSet::new() };
    }

    /// Forgets session `id` (expired), so the next command registers a new one.
    pub fn expire(&self, id: u64) {
        let mut s = self.state.lock();
        if s.id == Some(id) {
            *s = State::default();
        }
    }

    /// Hands out the next sequence of the registered session, with the tag of its first
    /// attempt (one lock for both: every writer of a client's clones takes it), or `None`
    /// if no session is registered.
    pub fn begin(&self) -> Option<SessionTag> {
        let mut s = self.state.lock();
        let id = s.id?;
        let seq = s.next_seq;
        s.next_seq += 1;
        s.outstanding.insert(seq);
        let acked = s.outstanding.first().copied().expect("just inserted");
        Some(SessionTag { session: id, secret: s.secret, seq, acked })
    }

    /// The tag for (another attempt of) sequence `seq` of session `id`, or `None` if the
    /// session changed meanwhile (a clone saw it expire): the attempt must not be sent.
    pub fn tag(&self, id: u64, seq: u64) -> Option<SessionTag> {
        let s = self.state.lock();
        if s.id != Some(id) {
            return None;
        }
        let acked = s.outstanding.first().copied().unwrap_or(seq);
        debug_assert!(acked <= seq, "the command being sent is outstanding");
        Some(SessionTag { session: id, secret: s.secret, seq, acked })
    }

    /// Sequence `seq` has its answer (or the caller gave up on it).
    pub fn finish(&self, id: u64, seq: u64) {
        let mut s = self.state.lock();
        if s.id == Some(id) {
            s.outstanding.remove(&seq);
        }
    }
}
