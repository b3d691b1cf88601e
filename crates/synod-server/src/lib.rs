//! The synod node runtime: the only layer that touches disks, sockets and
//! clocks. It restores the Paxos replica from storage, runs the core loop
//! (step, tick, persist with one fsync per round, apply, answer), streams
//! peer messages over gRPC, and serves the facade front ends call.

pub mod codec;
pub mod config;
mod core;
mod hub;
mod inbox;
mod metrics;
mod node;
mod peer_auth;
mod report;
mod restore;
mod shard_view;
mod streams;
pub mod tls;
mod transport;

pub use crate::core::{LeaseAnswer, Published, ZkFeed, ZkListener};
pub use config::{
    Member, NodeConfig, AUTH_TOKEN_TTL_S_DEFAULT, BCRYPT_COST_DEFAULT, MAX_REQUEST_BYTES_DEFAULT,
    QUOTA_BYTES_DEFAULT, SNAPSHOT_CHUNK_BYTES_DEFAULT, WATCH_PROGRESS_MS_DEFAULT,
};
pub use hub::{StreamId, WatchReceiver, WatchSpec};
pub use metrics::{GrpcMethod, Metrics};
pub use node::{Node, RequestError, StartError};
pub use peer_auth::PEER_SECRET_MIN_BYTES;
pub use report::REPORT_TIMEOUT;
pub use restore::{
    restore_snapshot, restore_snapshot_with_progress, RestoreError, Restored, SnapshotFileWriter,
};
pub use shard_view::ShardView;
pub use synod_group::shards;
pub use synod_group::STATE_FLUSH_ROUNDS;
pub use synod_kv::LEASE_TTL_MIN_S;
pub use synod_paxos::{Configuration, Membership, NodeId};
pub use synod_storage::{GroupId, Identity};
