//! The storage layer's own nouns: which Paxos group a write belongs to, and
//! which node of which cluster owns a data dir.

use std::fmt;

/// Names one Paxos group (one shard's replication group) on this node.
///
/// One database holds every group's state, so every key the storage layer
/// writes starts with the group id; a newtype keeps it from being confused
/// with a slot or a node id at a call site.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GroupId(pub u64);

impl fmt::Display for GroupId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "group {}", self.0)
    }
}

/// The owner of a data dir: which node of which cluster wrote it.
///
/// Recorded when the data dir is created and checked at every open, because
/// an acceptor that starts on another node's data would vote with promises it
/// never made: a configuration mistake that silently breaks Paxos unless it is
/// refused here.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Identity {
    /// The cluster this node belongs to; nodes of different clusters never
    /// share data.
    pub cluster_id: u64,
    /// This node's id within the cluster (the Paxos `NodeId` of its replicas).
    pub node_id: u64,
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "node {} of cluster {}", self.node_id, self.cluster_id)
    }
}
