//! Shards that split while a real 3-node cluster serves the etcd API
//! (issue 10, design 0016): no acknowledged write lost or hidden, one
//! revision order, watches that follow the new shards, a node that was
//! down catching up by snapshots, and shards that split by size.

mod common;

use common::*;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use synod_paxos::NodeId;
use synod_proto::etcdserverpb::*;
use synod_proto::synodpb::outcome::Result as Done;

/// Splits the shard holding `at` through `node`, retried while the
/// cluster settles (the oracle or the shard electing).
async fn split(cluster: &Cluster, node: u64, at: &str) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let outcome = cluster.nodes[&NodeId(node)].split(b(at)).await;
        match outcome.map(|o| o.result) {
            Ok(Some(Done::Split(left))) => {
                assert_eq!(left.end, b(at), "the shard that stayed ends at the split");
                return left.right;
            }
            other if Instant::now() < deadline => {
                println!("split at {at} not taken yet: {other:?}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            other => panic!("split at {at} never taken: {other:?}"),
        }
    }
}

/// Node `node`'s shard map's split points, as text.
fn splits_of(cluster: &Cluster, node: u64) -> Vec<String> {
    let map = cluster.nodes[&NodeId(node)].shards().expect("sharded");
    map.splits()
        .iter()
        .map(|s| String::from_utf8(s.to_vec()).unwrap())
        .collect()
}

/// A counter of node `node`'s Prometheus metrics.
fn metric(cluster: &Cluster, node: u64, name: &str) -> f64 {
    let text = cluster.nodes[&NodeId(node)].metrics().encode();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in the metrics"))
}

/// Waits until every running node's map has these split points.
async fn maps_settle(cluster: &Cluster, want: &[&str]) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let maps: Vec<Vec<String>> = cluster
            .nodes
            .keys()
            .map(|id| splits_of(cluster, id.0))
            .collect();
        if maps.iter().all(|m| m == want) {
            return;
        }
        assert!(Instant::now() < deadline, "maps never settled: {maps:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every key and value `node` serves, read as asked, retried while its
/// replicas catch up (a shard waiting for its snapshot refuses reads
/// until then, and the router retries only until the request timeout).
async fn contents(
    cluster: &Cluster,
    node: u64,
    serializable: bool,
    want: usize,
) -> BTreeMap<String, (String, i64)> {
    let mut kv = cluster.client(NodeId(node)).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let read = kv
            .range(RangeRequest {
                serializable,
                ..everything()
            })
            .await;
        match read {
            Ok(r) if r.get_ref().kvs.len() == want => {
                return r
                    .into_inner()
                    .kvs
                    .into_iter()
                    .map(|kv| {
                        (
                            String::from_utf8(kv.key.to_vec()).unwrap(),
                            (
                                String::from_utf8(kv.value.to_vec()).unwrap(),
                                kv.mod_revision,
                            ),
                        )
                    })
                    .collect();
            }
            other if Instant::now() < deadline => {
                let got = other.map(|r| r.get_ref().kvs.len());
                println!("node {node} not there yet: {got:?} of {want}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            other => panic!("node {node} never served {want} keys: {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn splits_move_keys_while_writes_run_through_every_node() {
    use synod_proto::etcdserverpb::watch_client::WatchClient;
    use synod_proto::etcdserverpb::watch_request::RequestUnion;
    let cluster = Cluster::start_splitting(3, 0).await;
    cluster.leader().await;
    let mut first = cluster.client(NodeId(1)).await;
    let start = put_ready(&mut first, "k000", "first").await;
    // A watch over every key from the first put, opened before the splits.
    let addr = cluster.members[&NodeId(2)].client_addr;
    let mut watch = WatchClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tx.send(WatchRequest {
        request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
            key: b("\0"),
            range_end: b("\0"),
            start_revision: start,
            ..Default::default()
        })),
    })
    .unwrap();
    let mut events = watch
        .watch(tokio_stream::wrappers::UnboundedReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    // One writer per node, each over its own keys, until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..3u64 {
        let mut kv = cluster.client(NodeId(w + 1)).await;
        let stop = stop.clone();
        writers.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            let mut round = 0;
            while !stop.load(Ordering::Relaxed) {
                for i in (w..300).step_by(3 * 7) {
                    let key = format!("k{i:03}");
                    let value = format!("{round}");
                    acked.push((key.clone(), value.clone(), put(&mut kv, &key, &value).await));
                }
                round += 1;
            }
            acked
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let g1 = split(&cluster, 2, "k100").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let g2 = split(&cluster, 3, "k200").await;
    let g3 = split(&cluster, 1, "k050").await;
    assert!(g1 != g2 && g2 != g3 && g1 != g3, "new groups are distinct");
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    let mut acked = vec![("k000".to_string(), "first".to_string(), start)];
    for w in writers {
        acked.extend(w.await.unwrap());
    }
    // One revision each, as a single etcd would give.
    let mut revisions: Vec<i64> = acked.iter().map(|(_, _, r)| *r).collect();
    revisions.sort_unstable();
    revisions.dedup();
    assert_eq!(revisions.len(), acked.len(), "two writes shared a revision");
    let mut last: BTreeMap<String, (String, i64)> = BTreeMap::new();
    for (k, v, r) in &acked {
        let e = last.entry(k.clone()).or_insert((v.clone(), *r));
        if *r > e.1 {
            *e = (v.clone(), *r);
        }
    }
    maps_settle(&cluster, &["k050", "k100", "k200"]).await;
    for node in 1..=3 {
        assert_eq!(metric(&cluster, node, "synod_shard_splits_total"), 3.0);
    }
    // Every node serves every acknowledged write's last value, read over
    // every shard, linearizably and from its own replicas.
    for node in 1..=3 {
        for serializable in [false, true] {
            let have = contents(&cluster, node, serializable, last.len()).await;
            assert_eq!(have, last, "node {node} (serializable: {serializable})");
        }
    }
    // The watch saw every acknowledged write once, in revision order,
    // across the splits.
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while seen.len() < acked.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(r) = tokio::time::timeout(left, events.message()).await else {
            panic!("the watch saw {} of {} writes", seen.len(), acked.len());
        };
        let r = r.unwrap().unwrap();
        assert!(!r.canceled, "{r:?}");
        for e in r.events {
            let kv = e.kv.unwrap();
            seen.push((String::from_utf8(kv.key.to_vec()).unwrap(), kv.mod_revision));
        }
    }
    assert!(
        seen.windows(2).all(|w| w[0].1 < w[1].1),
        "out of order: {seen:?}"
    );
    for (k, _, r) in &acked {
        assert!(seen.contains(&(k.clone(), *r)), "{k}@{r} never watched");
    }
    for n in cluster.nodes.values() {
        n.stop();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_down_during_splits_catches_up_by_snapshots() {
    let mut cluster = Cluster::start_splitting(3, 0).await;
    cluster.leader().await;
    let mut kv = cluster.client(NodeId(1)).await;
    let mut want = BTreeMap::new();
    for i in 0..40 {
        for side in ["a", "x"] {
            let key = format!("{side}{i:03}");
            let r = put_ready(&mut kv, &key, "before").await;
            want.insert(key, ("before".to_string(), r));
        }
    }
    cluster.stop_node(NodeId(3));
    split(&cluster, 1, "m").await;
    // Enough writes on both sides that every shard compacts its log past
    // the split (the harness compacts every 40 slots): node 3 can only
    // catch up by snapshots, of the shard that shrank and of the new one.
    for i in 0..120 {
        for side in ["b", "y"] {
            let key = format!("{side}{i:03}");
            let r = put_ready(&mut kv, &key, "after").await;
            want.insert(key, ("after".to_string(), r));
        }
        if i == 60 {
            split(&cluster, 2, "t").await;
        }
    }
    // A sharded data dir (made with no split points) started unsharded:
    // refused, its keys would be hidden.
    let mut unsharded = cluster.clone_config(NodeId(3));
    unsharded.shards = None;
    let refused = synod_server::Node::start(unsharded)
        .await
        .err()
        .expect("refused");
    assert!(refused.to_string().contains("is sharded"), "{refused}");
    cluster.start_node(NodeId(3)).await;
    maps_settle(&cluster, &["m", "t"]).await;
    let have = contents(&cluster, 3, true, want.len()).await;
    assert_eq!(have, want, "node 3's own replicas");
    let have = contents(&cluster, 3, false, want.len()).await;
    assert_eq!(have, want, "node 3, linearizable");
    // It caught up by snapshots (the shards' logs no longer held the
    // splits), not by replaying them.
    // The metrics are refreshed every 100 ms, after the data is served.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let installed = metric(&cluster, 3, "synod_snapshots_installed_total");
        if installed >= 2.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "node 3 installed {installed} snapshots"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(metric(&cluster, 3, "synod_shard_splits_total"), 0.0);
    // Its replicas take part: with node 1 down, 2 and 3 still write.
    cluster.stop_node(NodeId(1));
    let mut three = cluster.client(NodeId(3)).await;
    for key in ["c", "n", "z"] {
        put_ready(&mut three, key, "late").await;
    }
    assert_eq!(
        contents(&cluster, 2, false, want.len() + 3).await.len(),
        want.len() + 3
    );
    for n in cluster.nodes.values() {
        n.stop();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shards_split_by_themselves_past_the_size_limit() {
    let cluster = Cluster::start_splitting(3, 40_000).await;
    cluster.leader().await;
    let mut clients = Vec::new();
    for id in 1..=3 {
        clients.push(cluster.client(NodeId(id)).await);
    }
    let value = "v".repeat(300);
    let mut want = BTreeMap::new();
    for i in 0..600 {
        let key = format!("user/{i:04}");
        let r = put_ready(&mut clients[i % 3], &key, &value).await;
        want.insert(key, (value.clone(), r));
    }
    // ~200 KB of data over a 40 KB limit: several splits, each at a
    // shard's middle key.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let splits = splits_of(&cluster, 1);
        if splits.len() >= 3 {
            println!("split at {splits:?}");
            break;
        }
        assert!(Instant::now() < deadline, "only split at {splits:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for node in 1..=3 {
        let have = contents(&cluster, node, false, want.len()).await;
        assert_eq!(have, want, "node {node}");
    }
    for n in cluster.nodes.values() {
        n.stop();
    }
}

/// A shard under more writes a second than `split_load` splits by
/// itself at the middle of the keys written, however small its data, and
/// nothing written is lost or moved to the wrong shard.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shards_split_by_themselves_under_write_load() {
    let cluster = Cluster::start_splitting_by(3, 0, 40).await;
    cluster.leader().await;
    let mut clients = Vec::new();
    for id in 1..=3 {
        clients.push(cluster.client(NodeId(id)).await);
    }
    let mut want = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut i = 0usize;
    loop {
        // Writes spread over 400 keys, about 90 a second, one at a time.
        for _ in 0..60 {
            let key = format!("load/{:03}", (i * 37) % 400);
            let value = format!("{i}");
            let r = put_ready(&mut clients[i % 3], &key, &value).await;
            want.insert(key, (value, r));
            i += 1;
        }
        let splits = splits_of(&cluster, 1);
        if !splits.is_empty() {
            println!("split at {splits:?} after {i} writes");
            // At the middle of the keys written, not at their edge.
            assert!(
                splits[0].as_str() > "load/050" && splits[0].as_str() < "load/350",
                "{splits:?}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "no split after {i} writes");
    }
    for node in 1..=3 {
        let have = contents(&cluster, node, false, want.len()).await;
        assert_eq!(have, want, "node {node}");
    }
    for n in cluster.nodes.values() {
        n.stop();
    }
}

/// Keys of one lease in a shard that then splits twice (design 0017):
/// the keys' lease stubs move with them, `LeaseTimeToLive` lists them
/// from every shard, `LeaseRevoke` answers once every shard deleted them
/// (a linearizable read through any node sees none), and a put naming
/// the revoked lease is refused as etcd refuses it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leased_keys_move_with_splits_and_go_with_their_lease() {
    use synod_proto::etcdserverpb::lease_client::LeaseClient;
    let cluster = Cluster::start_splitting(3, 0).await;
    cluster.leader().await;
    let mut kv = cluster.client(NodeId(1)).await;
    put_ready(&mut kv, "a", "plain").await;
    let addr = cluster.members[&NodeId(2)].client_addr;
    let mut leases = LeaseClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    let lease = leases
        .lease_grant(LeaseGrantRequest { ttl: 60, id: 0 })
        .await
        .unwrap()
        .into_inner()
        .id;
    let leased = ["b", "k", "q", "x"];
    for key in leased {
        kv.put(PutRequest {
            key: b(key),
            value: b("leased"),
            lease,
            ..Default::default()
        })
        .await
        .unwrap();
    }
    split(&cluster, 1, "m").await;
    split(&cluster, 3, "t").await;
    maps_settle(&cluster, &["m", "t"]).await;
    let listed = leases
        .lease_time_to_live(LeaseTimeToLiveRequest {
            id: lease,
            keys: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.keys, leased.map(b).to_vec(), "{listed:?}");
    assert!(listed.ttl > 0 && listed.granted_ttl == 60, "{listed:?}");
    leases
        .lease_revoke(LeaseRevokeRequest { id: lease })
        .await
        .unwrap();
    for node in 1..=3 {
        let have = contents(&cluster, node, false, 1).await;
        assert_eq!(have.keys().collect::<Vec<_>>(), ["a"], "node {node}");
        // Every replica deletes them in the end (serializable reads).
        contents(&cluster, node, true, 1).await;
    }
    let refused = kv
        .put(PutRequest {
            key: b("z"),
            value: b("late"),
            lease,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(
        refused.message().contains("requested lease not found"),
        "{refused:?}"
    );
    let gone = leases
        .lease_time_to_live(LeaseTimeToLiveRequest {
            id: lease,
            keys: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(gone.ttl, -1, "{gone:?}");
    for n in cluster.nodes.values() {
        n.stop();
    }
}
