//! Deterministic simulation of synod replicas under faults.
//!
//! One seed fixes everything: cluster shape, quorums, timings, the fault
//! schedule, every message delay and every client operation. The simulator
//! runs the real `synod-paxos` core with a small register state machine and
//! checks, after every event, that at most one value is chosen per slot,
//! that every replica applies the same sequence, and that at most one replica
//! holds a leader lease; at the end, that every outstanding operation
//! finished within a bound after healing, that replicas converged, and that
//! the client history is linearizable. Agents beside the clients drive
//! leases, the timestamp oracle, ZooKeeper writes and etcd auth (a role's
//! permission flipped while its user writes; every replica's auth store
//! and every outcome checked against the log replayed in order: see
//! `world::auth`). A failing seed replays exactly.

pub mod checker;
pub mod client;
pub mod config;
pub mod kv;
pub mod linearizability;
pub mod network;
pub mod node;
pub mod runner;
pub mod world;

pub use config::{SimConfig, SimOptions};
pub use runner::{run_seed, SeedOutcome};
