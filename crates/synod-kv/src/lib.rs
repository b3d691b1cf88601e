//! synod's replicated state machine: etcd's MVCC key-value semantics as a
//! pure, deterministic function from (state, command) to (state, outcome,
//! events). Every replica applies the same commands in slot order and so
//! holds the same store, answers the same, and emits the same watch events.
//!
//! ```
//! use bytes::Bytes;
//! use synod_kv::KvStore;
//! use synod_proto::etcdserverpb::{PutRequest, RangeRequest};
//! use synod_proto::synodpb::{command::Op, Command};
//!
//! let mut store = KvStore::default();
//! let put = Command {
//!     client: 7,          // a session: one per node incarnation
//!     seq: 1,
//!     answered_below: 1,  // the session's earlier seqs were answered
//!     op: Some(Op::Put(PutRequest {
//!         key: Bytes::from_static(b"greeting"),
//!         value: Bytes::from_static(b"hello"),
//!         ..Default::default()
//!     })),
//!     caller: None,       // an etcd client's user, checked while auth is on
//!     stamp: 0,           // a shard's write carries the oracle's revision
//!     live_leases: vec![], // and the leases the oracle found live
//!     auth_fence: None,    // and the auth store as the oracle found it
//! };
//! let applied = store.apply(&put);
//! assert_eq!(applied.revision, 2); // etcd starts at revision 1
//! // A retried command (same client and sequence) does not apply twice.
//! assert!(store.apply(&put).duplicate);
//! let read = store
//!     .range(&RangeRequest { key: Bytes::from_static(b"greeting"), ..Default::default() })
//!     .unwrap();
//! assert_eq!(read.kvs[0].value, Bytes::from_static(b"hello"));
//! assert_eq!(read.kvs[0].version, 1);
//! ```

mod apply;
pub mod auth;
pub mod cut;
mod error;
mod lease;
mod lessor;
mod mvcc;
mod range;
mod read;
pub mod revoking;
pub mod shard;
pub mod state;
mod store;
pub mod validate;
pub mod zk;

pub use auth::{Access, AuthError, AuthStore};
pub use error::KvError;
pub use lease::{Lease, Leases, LEASE_TTL_MAX};
pub use lessor::{Lessor, LEASE_TTL_MIN_S};
pub use mvcc::{Mvcc, ValueRow, Version, INITIAL_REVISION};
pub use range::KeyRange;
pub use read::sort_as_requested;
pub use shard::Shard;
pub use state::{MemoryRows, StateChanges, StateOp, StateSource, INLINE_VALUE_MAX};
pub use store::{
    check_access, error_outcome, judge_routed, leases_named, outcome_error, takes_stamp,
    txn_requests, Applied, KvStore, RangeAnswer, RESERVE_REVISIONS_MAX, SESSIONS_MAX,
    SESSION_OUTCOMES_MAX,
};
