//! Errors a client can observe from the state machine. The messages are
//! etcd's, word for word, because client libraries match on them.

use std::fmt;

/// Why a request was refused. A refused request changes nothing.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum KvError {
    /// The requested revision is below the compaction point.
    Compacted {
        /// The revision asked for.
        requested: i64,
        /// The store's compaction point.
        compact_revision: i64,
    },
    /// The requested revision is above the store's current revision.
    FutureRevision {
        /// The revision asked for.
        requested: i64,
        /// The store's current revision.
        current: i64,
    },
    /// `ignore_value` / `ignore_lease` on a key that does not exist.
    KeyNotFound,
    /// A put names a lease that does not exist.
    LeaseNotFound(i64),
    /// A lease with this id already exists.
    LeaseExists,
    /// The requested TTL is above `LEASE_TTL_MAX`.
    LeaseTtlTooLarge,
    /// The NOSPACE alarm is raised: writes that add data are refused until
    /// an operator frees space and disarms it.
    NoSpace,
    /// The request is malformed (empty key, duplicate keys in a txn, ...).
    InvalidArgument(&'static str),
    /// The node's queues are full (etcd's `ErrTooManyRequests`): nothing
    /// was proposed, and the client may retry after backing off.
    TooManyRequests,
    /// This node is outside its group's configuration (not yet added, or
    /// removed) and has no leader to send the request to.
    NoLeader,
    /// The write waited on its node past its deadline (no leader for that
    /// long): it may still apply, the client cannot know.
    TimedOut,
    /// Refused by authentication or access control.
    Auth(crate::auth::AuthError),
    /// A stamped write came at or below its shard's revision: nothing
    /// changed; its node stamps it again (design 0011).
    StaleStamp {
        /// The command's stamp.
        stamp: i64,
        /// The shard's revision.
        revision: i64,
    },
    /// The command or read names keys outside its shard: the shard split
    /// since the node routed it. Nothing changed; the node routes it again
    /// (design 0016).
    WrongShard,
}

impl KvError {
    /// etcd's message for this error, which clients match on.
    pub fn etcd_message(&self) -> &'static str {
        match self {
            KvError::Compacted { .. } => "etcdserver: mvcc: required revision has been compacted",
            KvError::FutureRevision { .. } => {
                "etcdserver: mvcc: required revision is a future revision"
            }
            KvError::KeyNotFound => "etcdserver: key not found",
            KvError::LeaseNotFound(_) => "etcdserver: requested lease not found",
            KvError::LeaseExists => "etcdserver: lease already exists",
            KvError::LeaseTtlTooLarge => "etcdserver: too large lease TTL",
            KvError::NoSpace => "etcdserver: mvcc: database space exceeded",
            KvError::InvalidArgument(m) => m,
            KvError::TooManyRequests => "etcdserver: too many requests",
            KvError::NoLeader => "etcdserver: no leader",
            KvError::TimedOut => "etcdserver: request timed out",
            KvError::Auth(e) => e.etcd_message(),
            KvError::StaleStamp { .. } => {
                "etcdserver: request timed out, possibly due to leader change"
            }
            KvError::WrongShard => "etcdserver: the shard moved, retry the request",
        }
    }
}

impl fmt::Display for KvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KvError::Compacted {
                requested,
                compact_revision,
            } => write!(
                f,
                "{} (asked for {requested}, compacted through {compact_revision})",
                self.etcd_message()
            ),
            KvError::FutureRevision { requested, current } => write!(
                f,
                "{} (asked for {requested}, current revision is {current})",
                self.etcd_message()
            ),
            KvError::LeaseNotFound(id) => write!(f, "{} (lease {id:x})", self.etcd_message()),
            _ => f.write_str(self.etcd_message()),
        }
    }
}

impl std::error::Error for KvError {}

impl From<crate::auth::AuthError> for KvError {
    fn from(e: crate::auth::AuthError) -> KvError {
        KvError::Auth(e)
    }
}
