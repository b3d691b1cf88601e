//! Checkers shared by the placement tests. Each safety rule is checked here
//! independently of the planner's own checks, against the view the plan
//! was made for.

#![allow(dead_code)]

use std::collections::BTreeSet;

use synod_placement::{
    apply, Action, ClusterView, Node, NodeId, RangePlacement, Replication, Shard, ShardId,
};

/// A view of `nodes` live nodes of capacity 1 and `shards` shards without
/// replicas.
pub fn empty_cluster(nodes: u64, shards: u64, replication: Replication) -> ClusterView {
    let mut view = ClusterView::new(replication);
    for id in 1..=nodes {
        view.add_node(Node::new(NodeId(id))).unwrap();
    }
    for id in 1..=shards {
        view.add_shard(Shard::new(ShardId(id), Vec::new(), None))
            .unwrap();
    }
    view
}

/// No shard has two replicas on one node, and every leader is a replica.
pub fn assert_no_shared_nodes(view: &ClusterView) {
    for shard in view.shards() {
        let distinct: BTreeSet<NodeId> = shard.replicas.iter().copied().collect();
        assert_eq!(
            distinct.len(),
            shard.replicas.len(),
            "shard {} has two replicas on one node: {:?}",
            shard.id,
            shard.replicas
        );
        if let Some(leader) = shard.leader {
            assert!(
                shard.has_replica(leader),
                "shard {}'s leader {leader} is not a replica",
                shard.id
            );
        }
    }
}

/// The rules a plan keeps, checked against the view it was planned on:
/// within budget, one action per shard, none on a shard in flight or
/// without quorum, no live replica removed from a shard with a dead one,
/// new replicas and leaders on live nodes only. Applies the plan, checks
/// each changed shard after its action and the whole view after the plan.
pub fn check_and_apply(view: &mut ClusterView, plan: &[Action], moves_max: usize) {
    assert!(
        plan.len() <= moves_max,
        "plan of {} actions over budget {moves_max}",
        plan.len()
    );
    let mut shards = BTreeSet::new();
    for action in plan {
        let id = action.shard();
        assert!(
            shards.insert(id),
            "two actions on shard {id} in one plan: {plan:?}"
        );
        let shard = view.shard(id).unwrap().clone();
        assert!(
            !shard.in_flight,
            "{action:?} on shard {id}, which has an action in flight"
        );
        let live = shard.replicas.iter().filter(|n| view.is_live(**n)).count();
        let has_dead = live < shard.replicas.len();
        assert!(
            shard.replicas.is_empty() || 2 * live > shard.replicas.len(),
            "{action:?} on shard {id}, which lost its quorum"
        );
        let removed = match *action {
            Action::Move { add, remove, .. } => {
                assert!(view.is_live(add), "{action:?} adds on a dead node");
                Some(remove)
            }
            Action::Remove { node, .. } => Some(node),
            Action::Add { node, .. } => {
                assert!(view.is_live(node), "{action:?} adds on a dead node");
                None
            }
            Action::TransferLeader { to, .. } => {
                assert!(
                    view.is_live(to) && shard.has_replica(to),
                    "{action:?} to a dead node or non-replica"
                );
                None
            }
        };
        if let Some(node) = removed {
            assert!(
                !(has_dead && view.is_live(node)),
                "{action:?} removes the live replica on {node} from shard {id}, which has a dead one: {:?}",
                shard.replicas
            );
        }
        apply(view, action).unwrap_or_else(|e| panic!("{action:?} refused: {e}"));
        let after = view.shard(id).unwrap();
        let distinct: BTreeSet<NodeId> = after.replicas.iter().copied().collect();
        assert_eq!(
            distinct.len(),
            after.replicas.len(),
            "{action:?} put two replicas on one node"
        );
    }
    view.check_invariants();
    assert_no_shared_nodes(view);
}

/// What settling took.
#[derive(Debug, Default)]
pub struct Settled {
    pub rounds: usize,
    pub copies: usize,
    pub transfers: usize,
}

/// Plans and applies until the plan is empty, checking every plan's rules
/// and that planning twice gives the same plan.
pub fn settle(view: &mut ClusterView, moves_max: usize, rounds_max: usize) -> Settled {
    let mut settled = Settled::default();
    loop {
        let plan = RangePlacement.plan(view, moves_max);
        assert_eq!(
            plan,
            RangePlacement.plan(&view.clone(), moves_max),
            "plan is not deterministic"
        );
        if plan.is_empty() {
            return settled;
        }
        settled.rounds += 1;
        assert!(
            settled.rounds <= rounds_max,
            "not settled after {rounds_max} plans"
        );
        settled.copies += plan.iter().filter(|a| a.copies_replica()).count();
        settled.transfers += plan
            .iter()
            .filter(|a| matches!(a, Action::TransferLeader { .. }))
            .count();
        check_and_apply(view, &plan, moves_max);
    }
}

/// Replicas per live node, in id order.
pub fn replicas_per_live_node(view: &ClusterView) -> Vec<(NodeId, usize)> {
    view.nodes()
        .filter(|n| n.alive)
        .map(|n| (n.id, view.shards().filter(|s| s.has_replica(n.id)).count()))
        .collect()
}

/// Leaders per live node, in id order.
pub fn leaders_per_live_node(view: &ClusterView) -> Vec<(NodeId, usize)> {
    view.nodes()
        .filter(|n| n.alive)
        .map(|n| {
            (
                n.id,
                view.shards().filter(|s| s.leader == Some(n.id)).count(),
            )
        })
        .collect()
}

/// The shard has the target count of replicas, all live.
pub fn assert_shard_repaired(view: &ClusterView, shard: &Shard) {
    assert_eq!(
        shard.replicas.len(),
        view.replication().count(),
        "shard {} has {:?}",
        shard.id,
        shard.replicas
    );
    assert!(
        shard.replicas.iter().all(|n| view.is_live(*n)),
        "shard {} keeps a dead replica: {:?}",
        shard.id,
        shard.replicas
    );
}

/// Every shard has the target count of replicas, all live, and a live leader.
pub fn assert_fully_repaired(view: &ClusterView) {
    for shard in view.shards() {
        assert_shard_repaired(view, shard);
        assert!(
            shard.leader.is_some_and(|l| view.is_live(l)),
            "shard {} has no live leader",
            shard.id
        );
    }
}

/// Max minus min of a per-node count.
pub fn spread(counts: &[(NodeId, usize)]) -> usize {
    let max = counts.iter().map(|(_, c)| *c).max().unwrap_or(0);
    let min = counts.iter().map(|(_, c)| *c).min().unwrap_or(0);
    max - min
}
