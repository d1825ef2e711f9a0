//! Shared test support: the deterministic simulator and its workloads.
#![allow(dead_code)]

pub mod attacker;
pub mod checker;
pub mod clients;
pub mod cluster;
pub mod durable;
pub mod examples;
pub mod history;
pub mod hostile;
pub mod kvclients;
pub mod kvmodel;
pub mod kvprocs;
pub mod linearizability;
pub mod nemesis;
pub mod proxy;
pub mod redisprocs;
pub mod sim;
pub mod sim_storage;
pub mod trace;
pub mod workload;
pub mod writer;
