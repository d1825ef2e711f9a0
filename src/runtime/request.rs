//! How the node thread answers an in-process [`crate::Client`]: a slot per request.

use std::cell::RefCell;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::Token;
use parking_lot::{Condvar, Mutex};

use crate::error::{Error, Result};
use crate::remote::wire::{Bytes, ClientResponse, WireError};
use crate::replica::{Channel, Respond};

/// Longest wait any deadline is set for: `Duration::MAX` and the like mean "a very long
/// time", not an overflow panic.
const WAIT_MAX: Duration = Duration::from_secs(365 * 24 * 3600);

/// The instant `timeout` from now, clamped to [`WAIT_MAX`].
pub(crate) fn deadline_after(timeout: Duration) -> Instant {
    Instant::now() + timeout.min(WAIT_MAX)
}

/// Where one answer lands: the node thread fills it, the client waits on it. A mutex and
/// a condition variable, not a channel: a blocked client then sleeps instead of spinning
/// on the node threads' cores.
struct Slot<T> {
    value: Mutex<Option<Result<T>>>,
    filled: Condvar,
}

impl<T: 'static> Slot<T> {
    fn fill(self: Arc<Self>, result: Result<T>) {
        *self.value.lock() = Some(result);
        // Any thread may answer (a client dropping a request it could not queue, too),
        // even from a thread-local's destructor, when this thread's list may be gone:
        // then, or if the list is busy (a drop during `wake_all`), the waiter is woken now.
        let mut slot = Some(self);
        let _ = DEFERRED.try_with(|d| {
            if let Ok(mut d) = d.try_borrow_mut() {
                d.wake_or_defer(slot.take().expect("taken once"));
            }
        });
        if let Some(slot) = slot {
            slot.wake();
        }
    }
}

/// A filled slot whose waiter is still to be woken.
trait Wake {
    fn wake(&self);
}

impl<T> Wake for Slot<T> {
    fn wake(&self) {
        self.filled.notify_one();
    }
}

thread_local! {
    static DEFERRED: RefCell<Deferred> = const { RefCell::new(Deferred { on: false, slots: Vec::new() }) };
}

/// On a node's thread, the waiters of the slots filled during a turn are woken only after
/// the turn's messages have left ([`wake_deferred`]): each wake-up is a futex call that
/// costs microseconds (an IPI on a VM), and a leader answering hundreds of writers would
/// otherwise hold back its next AppendEntries, and the followers with it, until all were
/// woken. A waiter that looks meanwhile finds its answer already there.
struct Deferred {
    on: bool,
    slots: Vec<Arc<dyn Wake>>,
}

impl Deferred {
    fn wake_or_defer(&mut self, slot: Arc<dyn Wake>) {
        if self.on {
            self.slots.push(slot);
        } else {
            slot.wake();
        }
    }

    fn wake_all(&mut self) {
        for slot in self.slots.drain(..) {
            slot.wake();
        }
    }
}

impl Drop for Deferred {
    /// A thread that ends, however it ends, leaves nobody waiting.
    fn drop(&mut self) {
        self.wake_all();
    }
}

/// From now on, this thread (a node's) defers wake-ups until [`wake_deferred`].
pub(crate) fn defer_wakes() {
    DEFERRED.with(|d| d.borrow_mut().on = true);
}

/// Wakes the waiters of every slot filled since the last call. The node loop calls it
/// once its turn's output is written, and before it blocks.
pub(crate) fn wake_deferred() {
    DEFERRED.with(|d| d.borrow_mut().wake_all());
}

/// Wakes every deferred waiter and stops deferring on this thread (a node loop ending).
pub(crate) fn stop_deferring_wakes() {
    DEFERRED.with(|d| {
        let mut d = d.borrow_mut();
        d.on = false;
        d.wake_all();
    });
}

/// A fresh answer slot: the node thread's end and the client's end.
pub(crate) fn reply_slot<T>() -> (Reply<T>, Answer<T>) {
    let slot = Arc::new(Slot { value: Mutex::new(None), filled: Condvar::new() });
    (Reply { way: Some(Way::Slot(slot.clone())), proposed: false }, Answer { slot })
}

/// The client's end of an answer slot.
pub(crate) struct Answer<T> {
    slot: Arc<Slot<T>>,
}

impl<T> Answer<T> {
    /// Waits up to `timeout` for the answer.
    pub fn wait(self, timeout: Duration) -> Result<T> {
        let mut value = self.slot.value.lock();
        // Read the clock only if the answer is not there yet: a pipelining client often
        // finds it there.
        let mut deadline = None;
        loop {
            if let Some(result) = value.take() {
                return result;
            }
            let deadline = *deadline.get_or_insert_with(|| deadline_after(timeout));
            if self.slot.filled.wait_until(&mut value, deadline).timed_out() {
                return value.take().unwrap_or(Err(Error::Timeout));
            }
        }
    }
}

/// Answers bound for remote clients' connections, in the order given; the node loop
/// writes them out once per turn.
pub(crate) type Outbox = Arc<Mutex<Vec<(Token, ClientResponse)>>>;

/// The way back to a remote client: its connection, its request id, and how to encode `T`.
pub(crate) struct Remote<T> {
    pub conn: Token,
    pub id: u64,
    pub outbox: Outbox,
    pub encode: fn(T) -> std::result::Result<Vec<u8>, String>,
}

impl<T> Remote<T> {
    fn send(self, result: Result<T>) {
        let result = match result.map(self.encode) {
            Ok(Ok(bytes)) => Ok(Bytes(bytes)),
            Ok(Err(why)) => Err(WireError::Codec(why)),
            Err(e) => Err(WireError::from(e)),
        };
        self.outbox.lock().push((self.conn, ClientResponse { id: self.id, result }));
    }
}

/// Encodes an answer for a remote client with MessagePack.
pub(crate) fn encode_msgpack<T: serde::Serialize>(value: T) -> std::result::Result<Vec<u8>, String> {
    crate::codec::to_vec(&value)
}

enum Way<T> {
    /// An in-process client waits on it.
    Slot(Arc<Slot<T>>),
    /// A remote client's connection.
    Remote(Remote<T>),
}

/// The node thread's end of an answer: a slot an in-process client waits on, or a remote
/// client's connection. If dropped unanswered (the node stopped with the request still
/// queued, say), it answers by itself: `Stopped` if nothing was proposed, `LeadershipLost`
/// once the request was proposed — so a client never gets a wrong answer, and never waits
/// on an answer that cannot come.
pub(crate) struct Reply<T: 'static> {
    way: Option<Way<T>>,
    proposed: bool,
}

impl<T: 'static> Reply<T> {
    /// An answer that goes back over a remote client's connection.
    pub fn remote(remote: Remote<T>) -> Reply<T> {
        Reply { way: Some(Way::Remote(remote)), proposed: false }
    }

    fn answer(&mut self, result: Result<T>) {
        match self.way.take() {
            Some(Way::Slot(slot)) => slot.fill(result),
            Some(Way::Remote(remote)) => remote.send(result),
            None => {}
        }
    }
}

impl<T: Send + 'static> Respond<T> for Reply<T> {
    fn proposed(mut self) -> Reply<T> {
        self.proposed = true;
        self
    }

    fn send(mut self, result: Result<T>) {
        self.answer(result);
    }
}

/// The in-process client kind: answers land in a [`Reply`] slot.
pub(crate) struct Local;

impl Channel for Local {
    type Reply<T: Send + 'static> = Reply<T>;
}

/// A request from an in-process client.
pub(crate) type LocalRequest<M> = crate::replica::Request<M, Local>;

impl<T: 'static> Drop for Reply<T> {
    fn drop(&mut self) {
        let gone = if self.proposed { Error::LeadershipLost } else { Error::Stopped };
        self.answer(Err(gone));
    }
}
