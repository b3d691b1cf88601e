//! synod's durable store: every Paxos group's acceptor state and log in one
//! redb database per node, so one fsync commits a batch of writes from many
//! groups (group commit).
//!
//! The consensus core hands its runtime a `Ready` whose `persist` must be
//! durable before the replies waiting on it may leave. The runtime collects
//! the `persist` of every group that has one into one [`Batch`], commits it,
//! and then acknowledges every token. At restart, [`Storage::load`] returns
//! exactly the `Durable` state `Replica::restore` needs.
//!
//! ```
//! use bytes::Bytes;
//! use std::sync::Arc;
//! use synod_paxos::{Ballot, NodeId, Persist, Slot, SlotRecord, Value};
//! use synod_storage::{GroupId, Identity, Storage};
//!
//! # fn main() -> Result<(), synod_storage::StorageError> {
//! let dir = tempfile::tempdir().expect("temp dir");
//! let identity = Identity { cluster_id: 7, node_id: 1 };
//!
//! // Open (or create) the node's data dir; the identity is recorded on first
//! // use and checked on every later open.
//! let storage = Storage::open(dir.path(), identity)?;
//!
//! // One batch per runtime round: every group's persist, one fsync.
//! let ballot = Ballot { round: 1, node: NodeId(1) };
//! let persist = Persist {
//!     promised: Some(ballot),
//!     records: vec![SlotRecord {
//!         slot: Slot(1),
//!         ballot,
//!         value: Value::Batch(Arc::from(vec![Bytes::from_static(b"put x=1")])),
//!         chosen: false,
//!     }],
//!     commit: None,
//!     compact_through: None,
//!     membership: None,
//! };
//! let mut batch = storage.batch()?;
//! batch.persist(GroupId(1), &persist)?;
//! batch.persist(GroupId(2), &Persist::default())?; // nothing to write: a no-op
//! batch.commit()?; // durable now: call replica.on_persisted(token)
//!
//! // After a restart: what each group's replica is restored from.
//! drop(storage);
//! let storage = Storage::open(dir.path(), identity)?;
//! assert_eq!(storage.groups()?, vec![GroupId(1)]);
//! let durable = storage.load(GroupId(1))?;
//! assert_eq!(durable.promised, ballot);
//! assert_eq!(durable.records, persist.records);
//!
//! // Another node's data dir is refused with a message an operator can act on.
//! drop(storage);
//! let wrong = Identity { cluster_id: 7, node_id: 2 };
//! let err = Storage::open(dir.path(), wrong).unwrap_err();
//! assert!(err.to_string().contains("belongs to node 1 of cluster 7, not node 2 of cluster 7"));
//! # Ok(())
//! # }
//! ```
//!
//! The on-disk format and its invariants are described in [`format`](mod@format); the
//! value codec in `codec.rs`. Every implementation of a node's disk passes
//! the suite in [`conformance`].

mod batch;
mod codec;
pub mod conformance;
mod error;
pub mod format;
pub mod sim_file;
pub mod snapshot;
pub mod state;
mod storage;
pub mod stream;
mod types;

pub use batch::Batch;
pub use error::StorageError;
pub use sim_file::SimulatedFile;
pub use state::StateRows;
pub use storage::{Storage, CACHE_BYTES};
pub use stream::{Received, SnapshotReader, StreamChunk};
pub use types::{GroupId, Identity};
