//! The mio driver: one thread per node owning the replica (Raft core, storage, state
//! machine, pending requests), the listener and every peer connection. It turns poll
//! events into replica inputs and the replica's output into socket writes. It decides
//! nothing about Raft or about what a client is told.

mod clients;
mod event_loop;
mod limits;
mod peers;
pub(crate) mod request;
mod wire;

pub(crate) use event_loop::{NodeLoop, Shared, WAKER};
pub(crate) use peers::METADATA_BYTES_MAX;
