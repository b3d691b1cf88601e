//! What the placement driver asks of a shard, the rules every such action
//! obeys, and [`apply`], which simulates an action's result on a view.
//!
//! A `Move` is carried out by the executor in this order, so the shard
//! never loses its quorum:
//!
//! ```text
//!   1. add `add` as an observer      voters unchanged; it learns, never votes
//!   2. catch it up                   snapshot + log tail from the leader
//!   3. promote it to voter           joint config: old voters + `add`
//!   4. remove `remove`               (leadership moves first if it led)
//! ```
//!
//! Between 3 and 4 the shard has one voter more than its target, so the
//! quorum it needs is one larger, but it is met: a replica on a dead node
//! counts as already lost, and the plan never removes a live replica from
//! a shard that has a dead one ([`ActionError::RemovesLiveWithDead`]).
//! With 3 replicas that means one dead replica is replaced at a time, and a
//! shard with two dead replicas of three has lost its quorum: placement
//! leaves it to an operator ([`ActionError::NoQuorum`]).

use std::fmt;

use crate::types::{NodeId, Shard, ShardId};
use crate::view::ClusterView;

/// One change the placement driver asks an executor to make. A plan holds
/// at most one action per shard.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Give an under-replicated (or new) shard one more voter on `node`:
    /// observer, catch up, promote.
    Add {
        /// The shard.
        shard: ShardId,
        /// The node that gets the new replica.
        node: NodeId,
    },
    /// Replace the replica on `remove` with a new one on `add`, adding
    /// before removing (the module docs give the executor's steps).
    Move {
        /// The shard.
        shard: ShardId,
        /// The node that gets the new replica.
        add: NodeId,
        /// The node whose replica goes once `add` votes.
        remove: NodeId,
    },
    /// Take one voter away from an over-replicated shard (the target
    /// replica count went down, or a dead replica is surplus).
    Remove {
        /// The shard.
        shard: ShardId,
        /// The node whose replica goes.
        node: NodeId,
    },
    /// Make the replica on `to` the shard's leader: the current leader
    /// hands over, or, if the shard has no live leader, `to` campaigns.
    TransferLeader {
        /// The shard.
        shard: ShardId,
        /// The replica that should lead.
        to: NodeId,
    },
}

impl Action {
    /// The shard the action changes.
    pub fn shard(&self) -> ShardId {
        match *self {
            Action::Add { shard, .. }
            | Action::Move { shard, .. }
            | Action::Remove { shard, .. }
            | Action::TransferLeader { shard, .. } => shard,
        }
    }

    /// Whether the action copies a shard's data to a node (an `Add` or a
    /// `Move`): the expensive kind, the one placement minimizes.
    pub fn copies_replica(&self) -> bool {
        matches!(self, Action::Add { .. } | Action::Move { .. })
    }
}

/// Why an action may not be carried out on a view. A refused action
/// changes nothing.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ActionError {
    /// The shard is not in the view.
    UnknownShard(ShardId),
    /// The node is not in the view.
    UnknownNode(NodeId),
    /// A new replica or leader would be on a dead node.
    NodeNotLive(NodeId),
    /// The node already holds a replica of the shard: two replicas of one
    /// shard on one node would fail together.
    AlreadyReplica {
        /// The shard.
        shard: ShardId,
        /// The node.
        node: NodeId,
    },
    /// The node holds no replica of the shard.
    NotReplica {
        /// The shard.
        shard: ShardId,
        /// The node.
        node: NodeId,
    },
    /// The action would remove a live replica from a shard that already
    /// has a dead one, leaving it one failure from losing its quorum.
    RemovesLiveWithDead {
        /// The shard.
        shard: ShardId,
        /// The live replica's node.
        node: NodeId,
    },
    /// The shard's live voters are not a majority: no configuration change
    /// and no election can be chosen.
    NoQuorum(ShardId),
}

impl fmt::Display for ActionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ActionError::UnknownShard(s) => write!(f, "shard {s} is not in the view"),
            ActionError::UnknownNode(n) => write!(f, "node {n} is not in the view"),
            ActionError::NodeNotLive(n) => write!(f, "node {n} is not live"),
            ActionError::AlreadyReplica { shard, node } => {
                write!(f, "node {node} already holds a replica of shard {shard}")
            }
            ActionError::NotReplica { shard, node } => {
                write!(f, "node {node} holds no replica of shard {shard}")
            }
            ActionError::RemovesLiveWithDead { shard, node } => write!(
                f,
                "shard {shard} has a dead replica; removing the live one on {node} could lose its quorum"
            ),
            ActionError::NoQuorum(s) => write!(
                f,
                "shard {s} has lost its quorum; it needs an operator, not a placement change"
            ),
        }
    }
}

impl std::error::Error for ActionError {}

/// Checks that `action` may be carried out on `view` under the rules of the
/// module docs, without changing anything.
pub fn check(view: &ClusterView, action: &Action) -> Result<(), ActionError> {
    let shard = view
        .shard(action.shard())
        .ok_or(ActionError::UnknownShard(action.shard()))?;
    if !view.has_quorum(shard) {
        return Err(ActionError::NoQuorum(shard.id));
    }
    match *action {
        Action::Add { node, .. } => check_new_replica(view, shard, node),
        Action::Move { add, remove, .. } => {
            check_new_replica(view, shard, add)?;
            check_removal(view, shard, remove)
        }
        Action::Remove { node, .. } => check_removal(view, shard, node),
        Action::TransferLeader { to, .. } => {
            check_replica(shard, to)?;
            if !view.is_live(to) {
                return Err(ActionError::NodeNotLive(to));
            }
            Ok(())
        }
    }
}

/// Simulates the result of `action` once its executor finished: what the
/// shard's descriptor says afterwards. A removed leader leaves the shard
/// without a known leader until the group elects one (and the next plan
/// balances it). A refused action changes nothing.
pub fn apply(view: &mut ClusterView, action: &Action) -> Result<(), ActionError> {
    check(view, action)?;
    let shard = view.shard_mut(action.shard());
    match *action {
        Action::Add { node, .. } => shard.replicas.push(node),
        Action::Move { add, remove, .. } => {
            let slot = shard
                .replicas
                .iter_mut()
                .find(|n| **n == remove)
                .unwrap_or_else(|| panic!("checked: {remove} holds a replica of {}", shard.id));
            *slot = add;
            drop_leader_if(shard, remove);
        }
        Action::Remove { node, .. } => {
            shard.replicas.retain(|n| *n != node);
            drop_leader_if(shard, node);
        }
        Action::TransferLeader { to, .. } => shard.leader = Some(to),
    }
    Ok(())
}

fn drop_leader_if(shard: &mut Shard, removed: NodeId) {
    if shard.leader == Some(removed) {
        shard.leader = None;
    }
}

fn check_new_replica(view: &ClusterView, shard: &Shard, node: NodeId) -> Result<(), ActionError> {
    if view.node(node).is_none() {
        return Err(ActionError::UnknownNode(node));
    }
    if !view.is_live(node) {
        return Err(ActionError::NodeNotLive(node));
    }
    if shard.has_replica(node) {
        return Err(ActionError::AlreadyReplica {
            shard: shard.id,
            node,
        });
    }
    Ok(())
}

fn check_removal(view: &ClusterView, shard: &Shard, node: NodeId) -> Result<(), ActionError> {
    check_replica(shard, node)?;
    let has_dead = view.live_replicas(shard) < shard.replicas.len();
    if view.is_live(node) && has_dead {
        return Err(ActionError::RemovesLiveWithDead {
            shard: shard.id,
            node,
        });
    }
    Ok(())
}

fn check_replica(shard: &Shard, node: NodeId) -> Result<(), ActionError> {
    if shard.has_replica(node) {
        Ok(())
    } else {
        Err(ActionError::NotReplica {
            shard: shard.id,
            node,
        })
    }
}
