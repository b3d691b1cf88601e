//! Random clusters: dead nodes, mixed capacities, shards with too few, too
//! many, dead or duplicate-free random replicas, shards in flight. Plans
//! are checked one by one (`common::check_and_apply`) until they run out,
//! then the settled view is checked. A failing case prints the cluster
//! proptest shrank it to, which alone reproduces it.

mod common;

use std::collections::BTreeSet;

use common::{check_and_apply, settle};
use proptest::prelude::*;
use synod_placement::{ClusterView, Node, NodeId, RangePlacement, Replication, Shard, ShardId};

/// A random cluster as plain data, so proptest can shrink it.
#[derive(Clone, Debug)]
struct Cluster {
    five: bool,
    /// Per node: alive, capacity.
    nodes: Vec<(bool, u32)>,
    /// Per shard: replica node indices, leader index among them, in flight.
    shards: Vec<(Vec<usize>, Option<usize>, bool)>,
}

fn cluster() -> impl Strategy<Value = Cluster> {
    let node = (prop::bool::weighted(0.8), 1u32..=3);
    let shard = (
        prop::collection::vec(0usize..12, 0..7),
        prop::option::of(0usize..7),
        prop::bool::weighted(0.1),
    );
    (
        any::<bool>(),
        prop::collection::vec(node, 1..12),
        prop::collection::vec(shard, 0..60),
    )
        .prop_map(|(five, nodes, shards)| Cluster {
            five,
            nodes,
            shards,
        })
}

impl Cluster {
    fn view(&self) -> ClusterView {
        let replication = if self.five {
            Replication::Five
        } else {
            Replication::Three
        };
        let mut view = ClusterView::new(replication);
        for (i, (alive, capacity)) in self.nodes.iter().enumerate() {
            let node = Node {
                id: NodeId(i as u64 + 1),
                alive: *alive,
                capacity: *capacity,
            };
            view.add_node(node).unwrap();
        }
        for (i, (picks, leader, in_flight)) in self.shards.iter().enumerate() {
            let mut replicas: Vec<NodeId> = Vec::new();
            for pick in picks {
                let node = NodeId((pick % self.nodes.len()) as u64 + 1);
                if !replicas.contains(&node) {
                    replicas.push(node);
                }
            }
            let leader = leader.and_then(|l| replicas.get(l).copied());
            let mut shard = Shard::new(ShardId(i as u64 + 1), replicas, leader);
            shard.in_flight = *in_flight;
            view.add_shard(shard).unwrap();
        }
        view
    }
}

/// Shards the planner must leave as they are: in flight, or without quorum.
fn pinned(view: &ClusterView) -> BTreeSet<ShardId> {
    view.shards()
        .filter(|s| s.in_flight || !view.has_quorum(s))
        .map(|s| s.id)
        .collect()
}

/// Every shard placement could act on is repaired when enough live nodes
/// exist; and no two live nodes are left where a move would still pay.
fn check_settled(start: &ClusterView, end: &ClusterView) {
    let target = end.replication().count();
    let live: Vec<&Node> = end.nodes().filter(|n| n.alive).collect();
    let pinned = pinned(start);
    for shard in end.shards() {
        if pinned.contains(&shard.id) {
            assert_eq!(Some(shard), start.shard(shard.id), "a pinned shard changed");
            continue;
        }
        if live.len() >= target {
            common::assert_shard_repaired(end, shard);
        }
        if shard.replicas.iter().any(|n| end.is_live(*n)) {
            assert!(
                shard.leader.is_some_and(|l| end.is_live(l)),
                "shard {} has no live leader",
                shard.id
            );
        }
    }
    let count = |id: NodeId| end.shards().filter(|s| s.has_replica(id)).count() as u64;
    for a in &live {
        for b in &live {
            let (ca, cb) = (count(a.id), count(b.id));
            let (wa, wb) = (u64::from(a.capacity), u64::from(b.capacity));
            if 2 * ca * wb <= 2 * cb * wa + wa + wb {
                continue;
            }
            // A move from a to b would pay: then no shard may be movable.
            for shard in end
                .shards()
                .filter(|s| s.has_replica(a.id) && !pinned.contains(&s.id))
            {
                let healthy = shard.replicas.len() == target && end.live_replicas(shard) == target;
                assert!(
                    !healthy || shard.has_replica(b.id),
                    "{} ({ca}) could still give shard {} to {} ({cb})",
                    a.id,
                    shard.id,
                    b.id
                );
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 500, ..ProptestConfig::default() })]

    #[test]
    fn plans_keep_the_rules_and_settle(cluster in cluster(), moves_max in 1usize..40) {
        let start = cluster.view();
        let mut view = start.clone();
        settle(&mut view, moves_max, 2_000);
        check_settled(&start, &view);
    }

    #[test]
    fn a_node_dying_mid_way_keeps_the_rules(cluster in cluster(), victim in 0usize..12) {
        let mut view = cluster.view();
        let plan = RangePlacement.plan(&view, 5);
        check_and_apply(&mut view, &plan, 5);
        let victim = NodeId((victim % cluster.nodes.len()) as u64 + 1);
        view.set_alive(victim, false).unwrap();
        let start = view.clone();
        settle(&mut view, 8, 2_000);
        check_settled(&start, &view);
    }
}
