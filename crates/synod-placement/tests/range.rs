//! Range placement as short stories: a node dies, a node joins, a shard
//! loses its quorum, the replica count changes.

mod common;

use common::{
    assert_fully_repaired, check_and_apply, empty_cluster, leaders_per_live_node,
    replicas_per_live_node, settle, spread,
};
use synod_placement::{
    apply, Action, ActionError, ClusterView, Node, NodeId, RangePlacement, Replication, Shard,
    ShardId,
};

fn n(id: u64) -> NodeId {
    NodeId(id)
}

fn s(id: u64) -> ShardId {
    ShardId(id)
}

/// `nodes` live nodes, and one shard per entry of `shards` with those
/// replicas, the first leading.
fn cluster(nodes: u64, replication: Replication, shards: &[&[u64]]) -> ClusterView {
    let mut view = ClusterView::new(replication);
    for id in 1..=nodes {
        view.add_node(Node::new(n(id))).unwrap();
    }
    for (i, replicas) in shards.iter().enumerate() {
        let replicas: Vec<NodeId> = replicas.iter().map(|id| n(*id)).collect();
        let leader = replicas.first().copied();
        view.add_shard(Shard::new(s(i as u64 + 1), replicas, leader))
            .unwrap();
    }
    view
}

/// A settled cluster: `nodes` nodes, `shards` shards, every shard placed.
fn settled(nodes: u64, shards: u64, replication: Replication) -> ClusterView {
    let mut view = empty_cluster(nodes, shards, replication);
    settle(&mut view, 1_000, 1_000);
    assert_fully_repaired(&view);
    view
}

#[test]
fn a_dead_replica_is_moved_to_the_least_loaded_node() {
    // Node 4 holds one replica, node 5 none: the dead replica goes to 5.
    let mut view = cluster(5, Replication::Three, &[&[1, 2, 3], &[1, 2, 4]]);
    view.set_alive(n(3), false).unwrap();
    let plan = RangePlacement.plan(&view, 10);
    assert_eq!(
        plan[0],
        Action::Move {
            shard: s(1),
            add: n(5),
            remove: n(3)
        }
    );
}

#[test]
fn a_shard_that_lost_its_quorum_is_left_to_an_operator() {
    let mut view = cluster(5, Replication::Three, &[&[1, 2, 3]]);
    view.set_alive(n(2), false).unwrap();
    view.set_alive(n(3), false).unwrap();
    assert_eq!(view.shards_without_quorum(), [s(1)]);
    assert_eq!(RangePlacement.plan(&view, 10), []);
    let action = Action::Move {
        shard: s(1),
        add: n(4),
        remove: n(2),
    };
    let before = view.clone();
    assert_eq!(apply(&mut view, &action), Err(ActionError::NoQuorum(s(1))));
    assert_eq!(view, before, "a refused action changes nothing");
}

#[test]
fn a_live_replica_is_never_removed_from_a_shard_with_a_dead_one() {
    let mut view = cluster(6, Replication::Three, &[&[1, 2, 3]]);
    view.set_alive(n(3), false).unwrap();
    let before = view.clone();
    let action = Action::Move {
        shard: s(1),
        add: n(4),
        remove: n(1),
    };
    assert_eq!(
        apply(&mut view, &action),
        Err(ActionError::RemovesLiveWithDead {
            shard: s(1),
            node: n(1)
        })
    );
    assert_eq!(view, before, "a refused action changes nothing");
    // Even an over-replicated shard with a dead replica sheds the dead one.
    let mut view = cluster(6, Replication::Three, &[&[1, 2, 3, 4]]);
    view.set_alive(n(2), false).unwrap();
    assert_eq!(
        RangePlacement.plan(&view, 10)[0],
        Action::Remove {
            shard: s(1),
            node: n(2)
        }
    );
}

#[test]
fn five_replicas_with_two_dead_are_replaced_one_plan_at_a_time() {
    let mut view = cluster(7, Replication::Five, &[&[1, 2, 3, 4, 5]]);
    view.set_alive(n(4), false).unwrap();
    view.set_alive(n(5), false).unwrap();
    let first = RangePlacement.plan(&view, 10);
    let moves: Vec<&Action> = first.iter().filter(|a| a.copies_replica()).collect();
    assert_eq!(
        moves,
        [&Action::Move {
            shard: s(1),
            add: n(6),
            remove: n(4)
        }]
    );
    check_and_apply(&mut view, &first, 10);
    let second = RangePlacement.plan(&view, 10);
    assert_eq!(
        second,
        [Action::Move {
            shard: s(1),
            add: n(7),
            remove: n(5)
        }]
    );
    check_and_apply(&mut view, &second, 10);
    assert_fully_repaired(&view);
}

#[test]
fn a_shard_in_flight_is_left_alone() {
    let mut view = cluster(5, Replication::Three, &[]);
    let mut shard = Shard::new(s(1), vec![n(1), n(2), n(3)], Some(n(1)));
    shard.in_flight = true;
    view.add_shard(shard).unwrap();
    view.set_alive(n(3), false).unwrap();
    assert_eq!(RangePlacement.plan(&view, 10), []);
}

#[test]
fn under_and_over_replicated_shards_reach_the_target() {
    // Shard 1 has one replica, shard 2 four; the leader of 2 stays.
    let mut view = cluster(6, Replication::Three, &[&[1], &[2, 3, 4, 5]]);
    settle(&mut view, 10, 20);
    assert_fully_repaired(&view);
    assert_eq!(view.shard(s(2)).unwrap().leader, Some(n(2)));
}

#[test]
fn changing_the_replica_count_adds_then_removes_one_replica_per_plan() {
    let mut view = settled(10, 200, Replication::Three);
    view.set_replication(Replication::Five);
    let up = settle(&mut view, 1_000, 100);
    assert_eq!(up.copies, 400, "two more replicas for each of 200 shards");
    assert_fully_repaired(&view);
    assert!(spread(&replicas_per_live_node(&view)) <= 1);
    view.set_replication(Replication::Three);
    let down = settle(&mut view, 1_000, 100);
    // 400 removals, each from the heaviest replica's node; evening out what
    // they leave uneven copies next to nothing.
    assert!(
        down.copies <= 8,
        "going down copied {} replicas",
        down.copies
    );
    assert_fully_repaired(&view);
    assert!(spread(&replicas_per_live_node(&view)) <= 1);
}

#[test]
fn the_budget_bounds_every_plan() {
    let view = empty_cluster(10, 100, Replication::Three);
    for moves_max in [0, 1, 7, 50] {
        assert!(RangePlacement.plan(&view, moves_max).len() <= moves_max);
    }
    assert_eq!(RangePlacement.plan(&view, 0), []);
}

#[test]
fn initial_placement_is_perfectly_even() {
    let view = settled(30, 1_000, Replication::Three);
    assert!(spread(&replicas_per_live_node(&view)) <= 1);
    // 1,000 leaders over 30 nodes: 33 or 34 each.
    assert!(
        spread(&leaders_per_live_node(&view)) <= 1,
        "{:?}",
        leaders_per_live_node(&view)
    );
}

#[test]
fn a_join_moves_the_new_nodes_fair_share_and_no_more() {
    let mut view = settled(30, 1_000, Replication::Three);
    view.add_node(Node::new(n(31))).unwrap();
    let join = settle(&mut view, 1_000, 100);
    // 3,000 replicas over 31 nodes: the new node needs 96 (96.8 is the mean).
    let ideal = 3_000.0 / 31.0;
    assert!(
        join.copies as f64 <= 1.05 * ideal,
        "{} copies, ideal {ideal:.1}",
        join.copies
    );
    assert!(
        join.copies as f64 >= ideal - 1.0,
        "{} copies, ideal {ideal:.1}",
        join.copies
    );
    assert!(spread(&replicas_per_live_node(&view)) <= 1);
    let leaders = leaders_per_live_node(&view);
    assert!(spread(&leaders) <= 2, "leaders after the join: {leaders:?}");
    assert!(
        join.transfers as f64 <= 1.5 * 1_000.0 / 31.0,
        "{} transfers",
        join.transfers
    );
}

#[test]
fn a_death_copies_exactly_the_dead_nodes_replicas_and_spreads_them() {
    let mut view = settled(30, 1_000, Replication::Three);
    let held = view.shards().filter(|s| s.has_replica(n(7))).count();
    view.set_alive(n(7), false).unwrap();
    let death = settle(&mut view, 1_000, 100);
    // The minimum: every replacement lands where the spread stays within
    // one, so the rebalance pass has nothing left to move.
    assert_eq!(death.copies, held);
    assert_fully_repaired(&view);
    assert!(spread(&replicas_per_live_node(&view)) <= 1);
    assert!(view.shards().all(|s| !s.has_replica(n(7))));
}

#[test]
fn the_design_note_join_moves_its_ideal_297() {
    let mut view = settled(100, 10_000, Replication::Three);
    view.add_node(Node::new(n(101))).unwrap();
    let join = settle(&mut view, 1_000, 100);
    assert_eq!(join.copies, 297, "30,000 / 101 = 297.03");
}

#[test]
fn capacity_weights_the_share() {
    let mut view = ClusterView::new(Replication::Three);
    for id in 1..=6 {
        let capacity = if id == 1 { 3 } else { 1 };
        view.add_node(Node {
            id: n(id),
            alive: true,
            capacity,
        })
        .unwrap();
    }
    for id in 1..=400 {
        view.add_shard(Shard::new(s(id), Vec::new(), None)).unwrap();
    }
    settle(&mut view, 1_000, 100);
    assert_fully_repaired(&view);
    // 1,200 replicas over 8 units of capacity: 450 on node 1, 150 on each
    // other node (node 1 holds at most one replica per shard, 400 < 450, so
    // it is capped by the shard count).
    let counts = replicas_per_live_node(&view);
    assert_eq!(counts[0], (n(1), 400), "{counts:?}");
    assert!(
        counts[1..].iter().all(|(_, c)| (159..=161).contains(c)),
        "{counts:?}"
    );
}

#[test]
fn a_dead_leader_is_replaced_by_the_replica_that_leads_least() {
    let mut view = cluster(4, Replication::Three, &[&[1, 2, 3], &[2, 4, 1]]);
    view.set_alive(n(1), false).unwrap();
    let plan = RangePlacement.plan(&view, 10);
    check_and_apply(&mut view, &plan, 10);
    settle(&mut view, 10, 20);
    assert_fully_repaired(&view);
}

#[test]
fn plans_do_not_depend_on_the_order_the_view_was_built_in() {
    let view = {
        let mut v = settled(12, 300, Replication::Three);
        v.set_alive(n(5), false).unwrap();
        v.add_node(Node::new(n(13))).unwrap();
        v
    };
    let mut reversed = ClusterView::new(Replication::Three);
    let nodes: Vec<Node> = view.nodes().cloned().collect();
    for node in nodes.into_iter().rev() {
        reversed.add_node(node).unwrap();
    }
    let shards: Vec<Shard> = view.shards().cloned().collect();
    for shard in shards.into_iter().rev() {
        reversed.add_shard(shard).unwrap();
    }
    assert_eq!(
        RangePlacement.plan(&view, 500),
        RangePlacement.plan(&reversed, 500)
    );
}
