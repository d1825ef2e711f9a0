//! The mio driver: one thread per node owning the Raft core, the state machine, the
//! listener and every peer connection. It turns poll events into core inputs and the
//! core's `Ready` into socket writes, `apply` calls and client replies. It decides
//! nothing about Raft.

mod apply;
mod event_loop;
mod limits;
mod peers;
mod pending;
pub(crate) mod request;
mod wire;

pub(crate) use event_loop::{NodeLoop, Shared, WAKER};
