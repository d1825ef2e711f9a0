//! A `Client` used from a thread-local's destructor (a per-thread batch flushed when its
//! thread ends, say): the client's own per-thread state may already be gone, and a call
//! must still work, never panic (a panic in a thread-local destructor aborts the process).

mod support;

use std::cell::RefCell;
use std::sync::mpsc;
use std::time::Duration;

use quorate::{Client, Error};
use support::cluster::{Cmd, Recorder, single_node};

/// What a call from a destructor returned; `Err` if it panicked.
type Outcome = Result<Result<usize, Error>, String>;

/// Makes one client call when its thread's thread-locals are destroyed.
struct OnExit {
    call: Option<Box<dyn FnOnce()>>,
}

impl Drop for OnExit {
    fn drop(&mut self) {
        if let Some(call) = self.call.take() {
            call();
        }
    }
}

thread_local! {
    static ON_EXIT: RefCell<OnExit> = const { RefCell::new(OnExit { call: None }) };
}

/// Runs `before` on a fresh thread whose `ON_EXIT` (set up first, so destroyed last) then
/// calls `at_exit`; returns what that call returned.
fn call_at_thread_exit(
    client: Client<Recorder>,
    before: impl FnOnce(&Client<Recorder>) + Send + 'static,
    at_exit: fn(&Client<Recorder>) -> Result<usize, Error>,
) -> Outcome {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let call = {
            let client = client.clone();
            move || {
                let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| at_exit(&client)))
                    .map_err(|e| e.downcast_ref::<String>().cloned().unwrap_or_else(|| "a panic".into()));
                let _ = tx.send(outcome);
            }
        };
        ON_EXIT.with(|o| o.borrow_mut().call = Some(Box::new(call)));
        before(&client);
    })
    .join()
    .expect("the thread ran");
    rx.recv_timeout(Duration::from_secs(10)).expect("the destructor reported")
}

#[test]
fn a_write_from_a_thread_local_destructor_is_served() {
    let node = single_node(|c| c);
    let client = node.client();
    client.await_leader(Duration::from_secs(5)).unwrap();
    let outcome = call_at_thread_exit(
        client,
        |c| {
            // A write outside any session: the per-thread encoding buffer is made now.
            c.without_session().write(Cmd::Put(1)).unwrap();
        },
        |c| c.without_session().write(Cmd::Put(2)),
    );
    assert!(matches!(outcome, Ok(Ok(2))), "{outcome:?}");
}

#[test]
fn a_call_to_a_stopped_node_from_a_thread_local_destructor_says_stopped() {
    let node = single_node(|c| c);
    let client = node.client();
    client.await_leader(Duration::from_secs(5)).unwrap();
    node.stop();
    let outcome = call_at_thread_exit(
        client,
        |c| {
            // Answered on this thread (the node is gone): its per-thread wake-up list is made now.
            assert!(matches!(c.status(), Err(Error::Stopped)));
        },
        |c| c.status().map(|s| s.applied_index as usize),
    );
    assert!(matches!(outcome, Ok(Err(Error::Stopped))), "{outcome:?}");
}
