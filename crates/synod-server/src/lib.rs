//! The synod node runtime: the only layer that touches disks, sockets and
//! clocks. It restores the Paxos replica from storage, runs the core loop
//! (step, tick, persist with one fsync per round, apply, answer), streams
//! peer messages over gRPC, and serves the facade front ends call.

pub mod codec;
pub mod config;
mod core;
mod node;
mod transport;

pub use crate::core::Published;
pub use config::{Member, NodeConfig};
pub use node::{Node, RequestError, StartError};
