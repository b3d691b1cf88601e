//! The ZooKeeper client protocol over synod's replicated state machine
//! (design 0012): zkCli, kazoo, Curator and other ZooKeeper clients talk
//! to any node of a synod cluster, beside etcd clients.
//!
//! - [`jute`] and [`proto`]: the pure wire codec (hostile bytes give a
//!   value or an error, never a panic);
//! - [`server`]: the listener, four-letter words and the reaper of
//!   containers and TTL nodes;
//! - `conn`: one connection (handshake, sessions, requests, replies);
//! - [`watches`]: who waits for which change, fed by the core thread.
//!
//! The tree's rules live in the state machine (`synod_kv::zk`): this
//! crate translates and never decides.

pub mod auth;
mod conn;
pub mod jute;
pub mod proto;
pub mod server;
pub mod watches;
mod words;

pub use server::{ZkConfig, ZkServer};
