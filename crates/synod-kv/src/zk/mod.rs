//! ZooKeeper's data tree as part of the replicated state machine (design
//! 0012): znodes beside the etcd keys, sharing the revision counter (a
//! zxid is a revision), with ZooKeeper's rules applied deterministically
//! on every replica.

pub mod acl;
pub mod path;
mod tree;

pub use tree::{ZkEvent, ZkEventKind, ZkTree, ZK_FIXED_PATHS, ZNODE_DATA_MAX};

/// ZooKeeper's error codes the tree answers with.
pub mod code {
    /// Success.
    pub const OK: i32 = 0;
    /// An op of a failed multi after the failing one.
    pub const RUNTIME_INCONSISTENCY: i32 = -2;
    /// A malformed request (bad path, TTL, mode).
    pub const BAD_ARGUMENTS: i32 = -8;
    /// An op ZooKeeper does not allow here (extended types disabled).
    pub const UNIMPLEMENTED: i32 = -6;
    /// The node does not exist.
    pub const NO_NODE: i32 = -101;
    /// The ACL does not allow the op.
    pub const NO_AUTH: i32 = -102;
    /// The expected version differs.
    pub const BAD_VERSION: i32 = -103;
    /// The parent is ephemeral.
    pub const NO_CHILDREN_FOR_EPHEMERALS: i32 = -108;
    /// The node exists already.
    pub const NODE_EXISTS: i32 = -110;
    /// The node has children.
    pub const NOT_EMPTY: i32 = -111;
    /// The session is gone.
    pub const SESSION_EXPIRED: i32 = -112;
    /// The ACL is malformed or names no identity.
    pub const INVALID_ACL: i32 = -114;
}

/// ZooKeeper's create modes.
pub mod mode {
    /// Stays until deleted.
    pub const PERSISTENT: i32 = 0;
    /// Deleted with its session.
    pub const EPHEMERAL: i32 = 1;
    /// Persistent, named with a counter.
    pub const PERSISTENT_SEQUENTIAL: i32 = 2;
    /// Ephemeral, named with a counter.
    pub const EPHEMERAL_SEQUENTIAL: i32 = 3;
    /// Deleted by the leader once it had children and has none.
    pub const CONTAINER: i32 = 4;
    /// Deleted by the leader once childless and unmodified for its TTL.
    pub const PERSISTENT_WITH_TTL: i32 = 5;
    /// The sequential form of the above.
    pub const PERSISTENT_SEQUENTIAL_WITH_TTL: i32 = 6;
}

/// The `ephemeralOwner` ZooKeeper shows for a container.
pub const CONTAINER_OWNER: i64 = i64::MIN;
/// The high byte ZooKeeper sets in a TTL node's `ephemeralOwner`; the TTL
/// is in the low bits.
pub const TTL_OWNER_BITS: i64 = 0xff00_0000_0000_0000u64 as i64;
/// The longest TTL ZooKeeper accepts (its `EphemeralType.MAX_EXTENDED_TTL`).
pub const TTL_MAX_MS: i64 = 0x00ff_ffff_ffff;
