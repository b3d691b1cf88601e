//! The view refuses what would break its invariants, and a refusal
//! changes nothing.

use synod_placement::{
    apply, Action, ActionError, ClusterView, Node, NodeId, Replication, Shard, ShardId, ViewError,
};

fn view() -> ClusterView {
    let mut view = ClusterView::new(Replication::Three);
    for id in 1..=4 {
        view.add_node(Node::new(NodeId(id))).unwrap();
    }
    let replicas = vec![NodeId(1), NodeId(2), NodeId(3)];
    view.add_shard(Shard::new(ShardId(1), replicas, Some(NodeId(1))))
        .unwrap();
    view
}

#[test]
fn bad_nodes_and_shards_are_refused_without_change() {
    let mut v = view();
    let before = v.clone();
    assert_eq!(
        v.add_node(Node::new(NodeId(1))),
        Err(ViewError::DuplicateNode(NodeId(1)))
    );
    let heavy = Node {
        id: NodeId(9),
        alive: true,
        capacity: 0,
    };
    assert_eq!(v.add_node(heavy), Err(ViewError::ZeroCapacity(NodeId(9))));
    let twice = Shard::new(ShardId(2), vec![NodeId(1), NodeId(1)], None);
    assert_eq!(
        v.add_shard(twice),
        Err(ViewError::DuplicateReplica {
            shard: ShardId(2),
            node: NodeId(1)
        })
    );
    let unknown = Shard::new(ShardId(2), vec![NodeId(8)], None);
    assert_eq!(v.add_shard(unknown), Err(ViewError::UnknownNode(NodeId(8))));
    let stray = Shard::new(ShardId(2), vec![NodeId(1)], Some(NodeId(2)));
    assert_eq!(
        v.add_shard(stray),
        Err(ViewError::LeaderNotReplica {
            shard: ShardId(2),
            leader: NodeId(2)
        })
    );
    let again = Shard::new(ShardId(1), vec![], None);
    assert_eq!(
        v.add_shard(again),
        Err(ViewError::DuplicateShard(ShardId(1)))
    );
    assert_eq!(
        v.set_alive(NodeId(8), false),
        Err(ViewError::UnknownNode(NodeId(8)))
    );
    assert_eq!(v, before);
}

#[test]
fn bad_actions_are_refused_without_change() {
    let mut v = view();
    v.set_alive(NodeId(4), false).unwrap();
    let before = v.clone();
    let refused = [
        (
            Action::Add {
                shard: ShardId(9),
                node: NodeId(1),
            },
            ActionError::UnknownShard(ShardId(9)),
        ),
        (
            Action::Add {
                shard: ShardId(1),
                node: NodeId(7),
            },
            ActionError::UnknownNode(NodeId(7)),
        ),
        (
            Action::Add {
                shard: ShardId(1),
                node: NodeId(4),
            },
            ActionError::NodeNotLive(NodeId(4)),
        ),
        (
            Action::Add {
                shard: ShardId(1),
                node: NodeId(2),
            },
            ActionError::AlreadyReplica {
                shard: ShardId(1),
                node: NodeId(2),
            },
        ),
        (
            Action::Remove {
                shard: ShardId(1),
                node: NodeId(4),
            },
            ActionError::NotReplica {
                shard: ShardId(1),
                node: NodeId(4),
            },
        ),
        (
            Action::TransferLeader {
                shard: ShardId(1),
                to: NodeId(4),
            },
            ActionError::NotReplica {
                shard: ShardId(1),
                node: NodeId(4),
            },
        ),
    ];
    for (action, error) in refused {
        assert_eq!(apply(&mut v, &action), Err(error), "{action:?}");
        assert_eq!(v, before, "{action:?} changed the view");
    }
}

#[test]
fn removing_the_leader_leaves_the_shard_leaderless_until_it_elects() {
    let mut v = view();
    let action = Action::Move {
        shard: ShardId(1),
        add: NodeId(4),
        remove: NodeId(1),
    };
    apply(&mut v, &action).unwrap();
    let shard = v.shard(ShardId(1)).unwrap();
    assert_eq!(shard.replicas, [NodeId(4), NodeId(2), NodeId(3)]);
    assert_eq!(shard.leader, None);
}
