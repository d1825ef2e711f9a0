//! Paper tests: one test per rule of the Raft paper's Figure 2 and §5 (Ongaro and Ousterhout,
//! "In Search of an Understandable Consensus Algorithm"), plus the extensions from Ongaro's
//! dissertation that the core implements (pre-vote, check-quorum, the leader lease, ReadIndex,
//! single-server membership changes, leadership transfer). In the spirit of etcd's
//! `raft_paper_test.go`, each test names the rule it checks and asserts on concrete state.
//!
//! Two kinds of harness: hand-made messages stepped into one core (to pin a single rule
//! down exactly), and [`Cluster`], a few cores wired through an in-memory FIFO network that
//! can cut links and rewrite or drop messages. Every loop is bounded.

mod election;
pub(crate) mod harness;
mod leases;
mod persistence;
mod reads_and_membership;
mod replication;
mod snapshots;
