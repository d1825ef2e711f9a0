//! quorate: a replicated state machine library built on Raft.
#![deny(missing_docs)]

pub mod core;
