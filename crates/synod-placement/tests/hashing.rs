//! Consistent hashing: the ring is the same everywhere, a change moves only
//! the replicas the changed node gains or loses, and few virtual nodes
//! place unevenly.

mod common;

use common::{assert_no_shared_nodes, empty_cluster, replicas_per_live_node};
use synod_placement::{splitmix64, Balance, Churn, ConsistentHashing, Node, NodeId, Replication};

#[test]
fn splitmix64_is_the_published_function() {
    // The first outputs of the splitmix64 generator seeded with 0.
    assert_eq!(splitmix64(0), 0xe220_a839_7b1d_cdaf);
    assert_eq!(splitmix64(0x9e37_79b9_7f4a_7c15), 0x6e78_9e6a_a1b9_65f4);
}

#[test]
fn every_shard_gets_distinct_replicas_leader_first() {
    let view = empty_cluster(10, 500, Replication::Five);
    for vnodes in [1, 16] {
        let placed = ConsistentHashing { vnodes }.place(&view);
        placed.check_invariants();
        assert_no_shared_nodes(&placed);
        for shard in placed.shards() {
            assert_eq!(shard.replicas.len(), 5);
            assert_eq!(shard.leader, shard.replicas.first().copied());
        }
        assert_eq!(
            placed,
            ConsistentHashing { vnodes }.place(&view),
            "deterministic"
        );
    }
}

#[test]
fn fewer_live_nodes_than_replicas_gives_every_live_node() {
    let view = empty_cluster(2, 10, Replication::Three);
    let placed = ConsistentHashing { vnodes: 4 }.place(&view);
    assert!(placed.shards().all(|s| s.replicas.len() == 2));
}

#[test]
fn a_join_copies_exactly_what_the_new_node_receives() {
    let hashing = ConsistentHashing { vnodes: 16 };
    let before = hashing.place(&empty_cluster(20, 2_000, Replication::Three));
    let mut joined = before.clone();
    joined.add_node(Node::new(NodeId(21))).unwrap();
    let after = hashing.place(&joined);
    let churn = Churn::between(&before, &after);
    let received = after.shards().filter(|s| s.has_replica(NodeId(21))).count();
    assert_eq!(churn.replicas_added, received);
    for (old, new) in before.shards().zip(after.shards()) {
        if !new.has_replica(NodeId(21)) {
            assert_eq!(
                old.replicas, new.replicas,
                "shard {} moved without the new node",
                old.id
            );
        }
    }
}

#[test]
fn a_death_copies_exactly_what_the_dead_node_held() {
    let hashing = ConsistentHashing { vnodes: 16 };
    let mut view = hashing.place(&empty_cluster(20, 2_000, Replication::Three));
    let held = view.shards().filter(|s| s.has_replica(NodeId(3))).count();
    let before = view.clone();
    view.set_alive(NodeId(3), false).unwrap();
    let after = hashing.place(&view);
    assert_eq!(Churn::between(&before, &after).replicas_added, held);
    assert!(after.shards().all(|s| !s.has_replica(NodeId(3))));
}

#[test]
fn more_virtual_nodes_place_more_evenly() {
    let view = empty_cluster(100, 10_000, Replication::Three);
    let spread =
        |vnodes| Balance::of(&ConsistentHashing { vnodes }.place(&view)).replicas_max_over_mean;
    let (one, many) = (spread(1), spread(256));
    assert!(one > 1.5, "1 vnode: max/mean {one}");
    assert!(many < one && many < 1.25, "256 vnodes: max/mean {many}");
    let counts = replicas_per_live_node(&ConsistentHashing { vnodes: 256 }.place(&view));
    assert_eq!(counts.iter().map(|(_, c)| c).sum::<usize>(), 30_000);
}
