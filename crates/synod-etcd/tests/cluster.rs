//! A real 3-node cluster on loopback, driven through the etcd gRPC API.

mod common;

use bytes::Bytes;
use common::*;
use std::sync::Arc;
use std::time::{Duration, Instant};
use synod_paxos::NodeId;
use synod_proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use synod_proto::etcdserverpb::maintenance_client::MaintenanceClient;
use synod_proto::etcdserverpb::request_op::Request;
use synod_proto::etcdserverpb::*;
use synod_server::{GroupId, Node};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_node_serves_reads_and_writes() {
    let cluster = Cluster::start(3).await;
    cluster.leader().await;
    let mut clients = Vec::new();
    for id in 1..=3 {
        clients.push(cluster.client(NodeId(id)).await);
    }
    let mut last = 0;
    for (i, c) in clients.iter_mut().enumerate() {
        let rev = put(c, &format!("k{i}"), &format!("v{i}")).await;
        assert!(rev > last, "revisions increase: {rev} after {last}");
        last = rev;
    }
    for c in clients.iter_mut() {
        for i in 0..3 {
            assert_eq!(
                get(c, &format!("k{i}")).await.as_deref(),
                Some(format!("v{i}").as_str())
            );
        }
    }
    // A transaction through a follower.
    let txn = TxnRequest {
        compare: vec![Compare {
            result: CompareResult::Equal as i32,
            target: CompareTarget::Value as i32,
            key: b("k0"),
            target_union: Some(TargetUnion::Value(b("v0"))),
            range_end: Bytes::new(),
        }],
        success: vec![RequestOp {
            request: Some(Request::RequestPut(PutRequest {
                key: b("k0"),
                value: b("swapped"),
                ..Default::default()
            })),
        }],
        failure: vec![],
    };
    let r = clients[2].txn(txn).await.unwrap().into_inner();
    assert!(r.succeeded);
    assert_eq!(get(&mut clients[0], "k0").await.as_deref(), Some("swapped"));
    // etcd's errors, with etcd's codes.
    let e = clients[1].put(PutRequest::default()).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert_eq!(e.message(), "etcdserver: key is not provided");
    let e = clients[1]
        .range(RangeRequest {
            key: b("k0"),
            revision: 1_000_000,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::OutOfRange);
    let addr = cluster.members[&NodeId(1)].client_addr;
    let mut m = MaintenanceClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    let s = m.status(StatusRequest {}).await.unwrap().into_inner();
    assert!(s.leader != 0 && s.raft_index > 0);
    for n in cluster.nodes.values() {
        n.stop();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_losing_the_leader_and_a_full_restart() {
    let mut cluster = Cluster::start(3).await;
    let leader = cluster.leader().await;
    let follower = NodeId(leader.0 % 3 + 1);
    let mut c = cluster.client(follower).await;
    for i in 0..50 {
        put(&mut c, &format!("a{i}"), &i.to_string()).await;
    }
    cluster.stop_node(leader);
    // The two survivors elect a leader and keep serving.
    for i in 50..100 {
        put(&mut c, &format!("a{i}"), &i.to_string()).await;
    }
    cluster.start_node(leader).await;
    let mut back = cluster.client(leader).await;
    // The survivors snapshot every 40 slots and drop their log before it, so
    // the restarted node can only catch up from a shipped snapshot.
    let deadline = Instant::now() + Duration::from_secs(10);
    while cluster.nodes[&leader].status().snapshots_installed == 0 {
        assert!(
            Instant::now() < deadline,
            "the restarted node never installed a snapshot"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for i in (0..100).step_by(7) {
        assert_eq!(
            get(&mut back, &format!("a{i}")).await,
            Some(i.to_string()),
            "key a{i} on the restarted node"
        );
    }
    // Restart everything: every acknowledged write is still there.
    let ids: Vec<NodeId> = cluster.nodes.keys().copied().collect();
    for id in &ids {
        cluster.stop_node(*id);
    }
    for id in &ids {
        cluster.start_node(*id).await;
    }
    cluster.leader().await;
    let mut c = cluster.client(NodeId(1)).await;
    for i in 0..100 {
        assert_eq!(get(&mut c, &format!("a{i}")).await, Some(i.to_string()));
    }
    for n in cluster.nodes.values() {
        n.stop();
    }
}

/// A node hosts several Paxos groups side by side: each elects and commits
/// on its own (a write in one leaves the others unchanged), all go to disk
/// in the node's one batch per round, and each comes back after a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_on_one_node_replicate_independently_and_survive_a_restart() {
    let mut cluster = Cluster::start_with_groups(3, vec![2, 3]).await;
    let put = |k: &str| {
        synod_proto::synodpb::command::Op::Put(PutRequest {
            key: Bytes::from(k.to_string()),
            value: Bytes::from_static(b"v"),
            ..Default::default()
        })
    };
    let get = |k: &str| RangeRequest {
        key: Bytes::from(k.to_string()),
        ..Default::default()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    // Each group elects on its own: retry until its write goes through.
    for (group, node, key) in [(2, 1, "in-two"), (3, 2, "in-three"), (3, 3, "again")] {
        let n = cluster.nodes[&NodeId(node)].clone();
        loop {
            match n.write_in(GroupId(group), put(key)).await {
                Ok(_) => break,
                Err(e) if Instant::now() < deadline => {
                    println!("group {group} not ready yet: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("group {group} never took a write: {e}"),
            }
        }
    }
    let revision = |n: &Arc<Node>, group: u64, key: &'static str| {
        let n = n.clone();
        async move {
            let r = n.range_in(GroupId(group), get(key), false).await.unwrap();
            (r.header.map_or(0, |h| h.revision), r.kvs.len())
        }
    };
    let n3 = cluster.nodes[&NodeId(3)].clone();
    assert_eq!(revision(&n3, 2, "in-two").await.1, 1, "group 2 has its key");
    assert_eq!(
        revision(&n3, 3, "in-three").await.1,
        1,
        "group 3 has its key"
    );
    assert_eq!(revision(&n3, 2, "in-three").await.1, 0, "and not group 3's");
    assert_eq!(
        revision(&n3, 1, "in-two").await.1,
        0,
        "the main group is untouched"
    );
    // Restart a node: its groups come back from its data dir.
    cluster.stop_node(NodeId(1));
    cluster.groups.clear();
    cluster.start_node(NodeId(1)).await;
    let n1 = cluster.nodes[&NodeId(1)].clone();
    let deadline = Instant::now() + Duration::from_secs(10);
    let found = loop {
        match n1.range_in(GroupId(3), get("again"), false).await {
            Ok(r) => break r.kvs.len(),
            Err(e) if Instant::now() < deadline => println!("not yet: {e}"),
            Err(e) => panic!("group 3 unreadable after the restart: {e}"),
        }
    };
    assert_eq!(found, 1, "group 3 restored from the data dir");
    for n in cluster.nodes.values() {
        n.stop();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sharded_cluster_routes_every_key_and_keeps_one_revision_order() {
    let cluster = Cluster::start_sharded(3, &["g", "p"]).await;
    cluster.leader().await;
    let mut clients = Vec::new();
    for id in 1..=3 {
        clients.push(cluster.client(NodeId(id)).await);
    }
    for k in ["a", "h", "z"] {
        put_ready(&mut clients[0], k, "0").await;
    }
    // One put after another, through every node, over every shard: each
    // acknowledged put's revision lies above the one before.
    let keys = ["a", "c", "g", "h", "o", "p", "z"];
    let mut last = 0;
    for (i, k) in keys.iter().cycle().take(21).enumerate() {
        let revision = put(&mut clients[i % 3], k, &i.to_string()).await;
        assert!(revision > last, "{k}: {revision} after {last}");
        last = revision;
    }
    for c in clients.iter_mut() {
        assert_eq!(get(c, "z").await.as_deref(), Some("20"));
        assert_eq!(get(c, "g").await.as_deref(), Some("16"));
    }
    // Each key is in its shard's group only; another shard refuses to
    // read it (design 0016).
    let n3 = cluster.nodes[&NodeId(3)].clone();
    let in_group = |group: u64, key: &str| {
        let n = n3.clone();
        let r = RangeRequest {
            key: b(key),
            ..Default::default()
        };
        async move {
            n.range_in(GroupId(group), r, true)
                .await
                .map(|r| r.kvs.len())
        }
    };
    assert_eq!(in_group(2, "c").await.unwrap(), 1);
    assert!(matches!(
        in_group(3, "c").await,
        Err(synod_server::RequestError::Kv(
            synod_kv::KvError::WrongShard
        ))
    ));
    assert_eq!(in_group(3, "h").await.unwrap(), 1);
    assert_eq!(in_group(4, "p").await.unwrap(), 1);
    assert_eq!(
        in_group(1, "p").await.unwrap(),
        0,
        "the meta group holds no keys"
    );
    // A range over every shard, read at one timestamp.
    let all = clients[1].range(everything()).await.unwrap().into_inner();
    assert_eq!(keys_of(&all), keys);
    assert_eq!(all.count, 7);
    assert!(all.header.unwrap().revision >= last);
    let limited = clients[2]
        .range(RangeRequest {
            limit: 3,
            ..everything()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(keys_of(&limited), ["a", "c", "g"]);
    assert!(limited.more);
    assert_eq!(limited.count, 7);
    let newest_first = clients[0]
        .range(RangeRequest {
            sort_order: range_request::SortOrder::Descend as i32,
            sort_target: range_request::SortTarget::Mod as i32,
            limit: 2,
            keys_only: true,
            ..everything()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(keys_of(&newest_first), ["z", "p"]);
    assert!(newest_first.kvs.iter().all(|kv| kv.value.is_empty()));
    let serializable = clients[2]
        .range(RangeRequest {
            serializable: true,
            count_only: true,
            ..everything()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(serializable.count, 7);
    // A txn within one shard commits; one over two is refused whole.
    let txn = |keys: &[&str]| TxnRequest {
        success: keys
            .iter()
            .map(|k| RequestOp {
                request: Some(Request::RequestPut(PutRequest {
                    key: b(k),
                    value: b("t"),
                    ..Default::default()
                })),
            })
            .collect(),
        ..Default::default()
    };
    let one = clients[0].txn(txn(&["h", "i"])).await.unwrap().into_inner();
    assert!(one.succeeded);
    let two = clients[0].txn(txn(&["a", "h"])).await.unwrap_err();
    assert_eq!(two.code(), tonic::Code::InvalidArgument);
    assert!(two.message().contains("several shards"), "{two:?}");
    assert_eq!(get(&mut clients[1], "a").await.as_deref(), Some("14"));
    // A key with a lease is refused with a reason.
    let leased = clients[0]
        .put(PutRequest {
            key: b("l"),
            value: b("v"),
            lease: 7,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(leased.message().contains("lease"), "{leased:?}");
    // A delete over every shard deletes each shard's keys.
    let gone = clients[1]
        .delete_range(DeleteRangeRequest {
            key: b("\0"),
            range_end: b("\0"),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(gone.deleted, 8);
    let left = clients[2].range(everything()).await.unwrap().into_inner();
    assert_eq!(left.count, 0);
    for n in cluster.nodes.values() {
        n.stop();
    }
}

/// HashKV of a sharded cluster hashes every shard, in key order, at one
/// revision: every member answers the same hash at the same revision
/// (what `etcdctl endpoint hashkv` compares), a write to any shard moves
/// it, and an old revision still hashes as it did.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sharded_cluster_hashes_every_shard_and_members_agree() {
    let cluster = Cluster::start_sharded(3, &["g", "p"]).await;
    cluster.leader().await;
    let mut client = cluster.client(NodeId(1)).await;
    for k in ["a", "h", "z"] {
        put_ready(&mut client, k, "0").await;
    }
    let node = |id: u64| cluster.nodes[&NodeId(id)].clone();
    let (first, at, _) = node(1).hash_kv(0).await.unwrap();
    for id in 1..=3 {
        let (hash, rev, _) = node(id).hash_kv(at).await.unwrap();
        assert_eq!((hash, rev), (first, at), "node {id}");
    }
    // A write to the last shard moves the hash (a hash of the meta group
    // alone, which holds no keys, would not).
    let later = put(&mut client, "z", "1").await;
    let (moved, now, _) = node(2).hash_kv(0).await.unwrap();
    assert!(now >= later);
    assert_ne!(moved, first, "a write to a shard left the hash as it was");
    for id in 1..=3 {
        assert_eq!(node(id).hash_kv(now).await.unwrap().0, moved, "node {id}");
        assert_eq!(
            node(id).hash_kv(at).await.unwrap().0,
            first,
            "node {id} at {at}"
        );
    }
    // The gRPC call answers the same, with its revision.
    let addr = cluster.members[&NodeId(3)].client_addr;
    let mut maintenance = MaintenanceClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    let answer = maintenance
        .hash_kv(HashKvRequest { revision: now })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((answer.hash, answer.hash_revision), (moved, now));
    // A revision no shard reached yet is refused as etcd refuses it.
    let future = node(1).hash_kv(now + 1_000_000).await.unwrap_err();
    assert!(
        matches!(
            future,
            synod_server::RequestError::Kv(synod_kv::KvError::FutureRevision { .. })
        ),
        "{future:?}"
    );
    for n in cluster.nodes.values() {
        n.stop();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sharded_watch_sees_every_shards_events_in_revision_order() {
    use synod_proto::etcdserverpb::watch_client::WatchClient;
    use synod_proto::etcdserverpb::watch_request::RequestUnion;
    let cluster = Cluster::start_sharded(3, &["g", "p"]).await;
    cluster.leader().await;
    let mut kv = cluster.client(NodeId(1)).await;
    let first = put_ready(&mut kv, "h1", "a").await;
    put_ready(&mut kv, "a1", "x").await;
    put_ready(&mut kv, "q1", "x").await;
    let addr = cluster.members[&NodeId(2)].client_addr;
    let mut watch = WatchClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let create = |key: &str, end: &str, start: i64| WatchRequest {
        request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
            key: b(key),
            range_end: b(end),
            start_revision: start,
            ..Default::default()
        })),
    };
    // Over keys h..i (one shard), from the first put on.
    tx.send(create("h", "i", first)).unwrap();
    let mut events = watch
        .watch(tokio_stream::wrappers::UnboundedReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    // Over every shard, from the first put on: the past of all three.
    tx.send(create("\0", "\0", first)).unwrap();
    let (one, all) = (0, 1);
    let mut written = vec![("h1".to_string(), first)];
    // Writes that alternate shards, from every node.
    let mut clients = Vec::new();
    for id in 1..=3 {
        clients.push(cluster.client(NodeId(id)).await);
    }
    for (i, k) in ["b2", "h2", "z2", "c3", "i3", "r3"].iter().enumerate() {
        let revision = put(&mut clients[i % 3], k, "v").await;
        written.push((k.to_string(), revision));
    }
    let mut seen_one = Vec::new();
    let mut seen_all = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while seen_all.len() < 9 || seen_one.len() < 2 {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(r) = tokio::time::timeout(left, events.message()).await else {
            panic!("only {seen_all:?} and {seen_one:?}");
        };
        let r = r.unwrap().unwrap();
        assert!(!r.canceled, "{r:?}");
        for e in r.events {
            let kv = e.kv.unwrap();
            let event = (String::from_utf8(kv.key.to_vec()).unwrap(), kv.mod_revision);
            if r.watch_id == one {
                seen_one.push(event);
            } else {
                assert_eq!(r.watch_id, all);
                seen_all.push(event);
            }
        }
    }
    let keys = |v: &[(String, i64)]| v.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>();
    assert_eq!(keys(&seen_one), ["h1", "h2"]);
    // Every shard's events, each once, in revision order.
    let revisions: Vec<i64> = seen_all.iter().map(|(_, r)| *r).collect();
    assert!(revisions.windows(2).all(|w| w[0] < w[1]), "{seen_all:?}");
    assert_eq!(
        keys(&seen_all),
        ["h1", "a1", "q1", "b2", "h2", "z2", "c3", "i3", "r3"]
    );
    for (k, r) in &written {
        assert!(seen_all.contains(&(k.clone(), *r)), "{k}@{r} missing");
    }
    for n in cluster.nodes.values() {
        n.stop();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sharded_node_restarts_with_its_data_and_refuses_other_split_points() {
    let mut cluster = Cluster::start_sharded(3, &["m"]).await;
    cluster.leader().await;
    let mut kv = cluster.client(NodeId(2)).await;
    put_ready(&mut kv, "a", "1").await;
    put_ready(&mut kv, "x", "2").await;
    cluster.stop_node(NodeId(1));
    // Two of three still take writes in both shards.
    put_ready(&mut kv, "b", "3").await;
    put_ready(&mut kv, "y", "4").await;
    // Other split points than the data dir was made with: refused.
    let mut other = cluster.clone_config(NodeId(1));
    other.shards = Some(synod_server::shards::ShardMap::new(vec![b("n")]).unwrap());
    let refused = Node::start(other).await.err().expect("refused");
    assert!(refused.to_string().contains("split points"), "{refused}");
    cluster.start_node(NodeId(1)).await;
    let mut back = cluster.client(NodeId(1)).await;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let r = back.range(everything()).await;
        match r {
            Ok(r) if r.get_ref().count == 4 => break,
            _ if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(50)).await,
            other => panic!("node 1 never served all four keys: {other:?}"),
        }
    }
    for n in cluster.nodes.values() {
        n.stop();
    }
}
