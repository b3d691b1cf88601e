//! kill -9: `synod server` processes die without running any of their code
//! (SIGKILL), under writes, one at a time and all at once. Every write a
//! client saw acknowledged must survive, on every node.

mod common;

use common::{bounded, Cluster};
use etcd_client::{Client, GetOptions};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What a writer saw.
#[derive(Default)]
struct Writes {
    /// Acknowledged (key, value), in order.
    acked: Vec<(String, String)>,
    /// When each acknowledgement arrived.
    acked_at: Vec<Instant>,
    /// Failed attempts (each retried with the same key and value).
    errors: Vec<String>,
    /// The key being written when the writer stopped, if not acknowledged.
    in_flight: Option<String>,
}

/// Sequential puts of unique keys `{prefix}{n}` until `stop`; a failed put
/// is retried with the same key and value, so a write that failed but took
/// effect is never a different key. Gives up after `max_errors` failures.
async fn write_until(
    mut client: Client,
    prefix: &str,
    stop: Arc<AtomicBool>,
    max_errors: usize,
) -> Writes {
    let mut w = Writes::default();
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        let key = format!("{prefix}{n:06}");
        // Every other value is long: the state machine keeps it only on
        // disk, so the check below also reads values back from disk.
        let value = if n % 2 == 1 {
            format!("value-{n}-{}", "x".repeat(300))
        } else {
            format!("value-{n}")
        };
        match client.put(key.as_str(), value.as_str(), None).await {
            Ok(_) => {
                w.acked.push((key, value));
                w.acked_at.push(Instant::now());
                w.in_flight = None;
                n += 1;
            }
            Err(e) => {
                w.errors.push(e.to_string());
                w.in_flight = Some(key);
                if w.errors.len() > max_errors {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    w
}

/// Every key under `prefix` on node `id`, read there (serializable: the
/// node's own state, no help from the leader).
async fn local_keys(cluster: &Cluster, id: u64, prefix: &str) -> BTreeMap<String, String> {
    let mut c = cluster.client(id).await;
    let r = c
        .get(
            prefix,
            Some(GetOptions::new().with_prefix().with_serializable()),
        )
        .await
        .unwrap_or_else(|e| panic!("range read on node {id}: {e}"));
    r.kvs()
        .iter()
        .map(|kv| {
            (
                kv.key_str().unwrap().to_string(),
                kv.value_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// Asserts that every node holds every acknowledged write, read key by key
/// with serializable reads, and nothing under `prefix` but those and
/// possibly the write that was in flight.
async fn assert_everywhere(cluster: &Cluster, prefix: &str, writes: &Writes) {
    for id in cluster.ids() {
        let mut c = cluster.client(id).await;
        for (k, v) in &writes.acked {
            let r = c
                .get(k.as_str(), Some(GetOptions::new().with_serializable()))
                .await
                .unwrap_or_else(|e| panic!("read {k} on node {id}: {e}"));
            let got = r
                .kvs()
                .first()
                .map(|kv| kv.value_str().unwrap().to_string());
            assert_eq!(
                got.as_deref(),
                Some(v.as_str()),
                "acknowledged {k} on node {id}"
            );
        }
        let all = local_keys(cluster, id, prefix).await;
        let extra: Vec<&String> = all
            .keys()
            .filter(|k| !writes.acked.iter().any(|(a, _)| a == *k))
            .collect();
        assert!(
            extra.iter().all(|k| Some(*k) == writes.in_flight.as_ref()),
            "node {id} holds writes nobody made: {extra:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_dash_9_leader_under_writes() {
    let mut cluster = Cluster::start(3);
    let leader = bounded("ready", Duration::from_secs(20), cluster.wait_ready()).await;
    let follower = cluster.ids().into_iter().find(|id| *id != leader).unwrap();
    // The writer talks to a follower, which outlives the leader.
    let client = cluster.client(follower).await;
    let stop = Arc::new(AtomicBool::new(false));
    let writer = tokio::spawn({
        let stop = stop.clone();
        async move { write_until(client, "w/", stop, 40).await }
    });

    tokio::time::sleep(Duration::from_secs(1)).await;
    // Kill whoever leads now (normally the same node).
    let leader = cluster.wait_ready().await;
    assert_ne!(leader, follower, "leadership moved to the writer's node");
    cluster.kill(leader);
    let killed_at = Instant::now();
    tokio::time::sleep(Duration::from_secs(4)).await;
    let stopped_at = Instant::now();
    stop.store(true, Ordering::Relaxed);
    let writes = bounded("writer", Duration::from_secs(10), writer)
        .await
        .expect("writer task");

    let before = writes.acked_at.iter().filter(|t| **t < killed_at).count();
    let after = writes.acked.len() - before;
    let first_after = writes
        .acked_at
        .iter()
        .find(|t| **t > killed_at)
        .map(|t| *t - killed_at);
    eprintln!(
        "kill -9 leader {leader}: {before} writes acknowledged before, {after} after, \
         the first {first_after:?} after the kill, {} failed attempts",
        writes.errors.len()
    );
    assert!(before > 0, "writes before the kill: {:?}", writes.errors);
    assert!(
        writes.errors.len() <= 40,
        "too many failed writes: {:?}",
        writes.errors
    );
    // Unavailable for at most an election: the survivors wait out the
    // election timeout (1 s) plus up to as much jitter, then the follower
    // forwards the write to the new leader.
    let gap = first_after.expect("no write succeeded after the kill");
    assert!(
        gap < Duration::from_millis(3500),
        "writes were unavailable for {gap:?} after the leader died; errors: {:?}",
        writes.errors
    );
    let last = *writes.acked_at.last().expect("acks");
    assert!(
        last + Duration::from_millis(500) > stopped_at,
        "writes kept succeeding until the end: the last one was {:?} before",
        stopped_at - last
    );

    // The old leader comes back on its data and catches up.
    cluster.spawn(leader);
    bounded("ready", Duration::from_secs(20), cluster.wait_ready()).await;
    let revision = cluster
        .wait_caught_up(leader, Duration::from_secs(15))
        .await;
    assert!(revision > writes.acked.len() as i64);
    bounded(
        "reads",
        Duration::from_secs(30),
        assert_everywhere(&cluster, "w/", &writes),
    )
    .await;
    cluster.assert_alive();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_cluster_restart_keeps_acknowledged_writes() {
    let mut cluster = Cluster::start(3);
    bounded("ready", Duration::from_secs(20), cluster.wait_ready()).await;
    // 300 writes, through every node: 30 writers, 10 per node, each
    // writing its 10 keys in order.
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..30u64 {
        let mut c = cluster.client(t % 3 + 1).await;
        tasks.spawn(async move {
            let mut acked = Vec::new();
            for n in 0..10 {
                let (k, v) = (format!("r/{t:02}/{n:02}"), format!("value-{t}-{n}"));
                c.put(k.as_str(), v.as_str(), None)
                    .await
                    .unwrap_or_else(|e| panic!("put {k}: {e}"));
                acked.push((k, v));
            }
            acked
        });
    }
    let mut writes = Writes::default();
    bounded("writes", Duration::from_secs(30), async {
        while let Some(acked) = tasks.join_next().await {
            writes.acked.extend(acked.expect("writer"));
        }
    })
    .await;
    assert_eq!(writes.acked.len(), 300);

    for id in cluster.ids() {
        cluster.kill(id);
    }
    for id in cluster.ids() {
        cluster.spawn(id);
    }
    bounded("ready", Duration::from_secs(20), cluster.wait_ready()).await;
    for id in cluster.ids() {
        cluster.wait_caught_up(id, Duration::from_secs(15)).await;
    }
    // A linearizable read through each node, then every key on every node.
    for id in cluster.ids() {
        let mut c = cluster.client(id).await;
        let r = c
            .get(
                "r/",
                Some(GetOptions::new().with_prefix().with_count_only()),
            )
            .await
            .expect("linearizable count");
        assert_eq!(r.count(), 300, "node {id}");
    }
    bounded(
        "reads",
        Duration::from_secs(30),
        assert_everywhere(&cluster, "r/", &writes),
    )
    .await;
    cluster.assert_alive();
}

/// A node that restarts must not answer a new write with the outcome of one
/// it made in its previous life.
///
/// The bug: `Node::write` names each write (client, seq) =
/// (node id << 48 | a counter that starts at 1 in every process, 1), and the
/// state machine's client sessions, restored from the log or a snapshot,
/// remember the names of the previous life's writes. After a restart the
/// n-th write through the node reuses the name of the n-th write of its
/// previous life, is taken for a retry, is not applied, and is answered with
/// the old write's response (its old revision): acknowledged, and lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_through_a_restarted_node_take_effect() {
    let mut cluster = Cluster::start(3);
    let leader = bounded("ready", Duration::from_secs(20), cluster.wait_ready()).await;
    let node = cluster.ids().into_iter().find(|id| *id != leader).unwrap();
    let other = cluster.ids().into_iter().find(|id| *id != node).unwrap();
    let mut c = cluster.client(node).await;
    for n in 0..5 {
        c.put(format!("before/{n}"), "old", None)
            .await
            .expect("put");
    }
    drop(c);
    cluster.kill(node);
    cluster.spawn(node);
    bounded("ready", Duration::from_secs(20), cluster.wait_ready()).await;
    cluster.wait_caught_up(node, Duration::from_secs(15)).await;

    let mut c = cluster.client(node).await;
    let mut o = cluster.client(other).await;
    let mut last = cluster.status(other).await.expect("status").revision;
    for n in 0..5 {
        let key = format!("after/{n}");
        let r = c.put(key.as_str(), "new", None).await.expect("put");
        let rev = r.header().unwrap().revision();
        let got = o.get(key.as_str(), None).await.expect("get");
        assert_eq!(
            got.kvs().first().map(|kv| kv.value_str().unwrap()),
            Some("new"),
            "{key}, acknowledged by node {node} at revision {rev} \
             (the store was at {last}), read on node {other}"
        );
        assert!(
            rev > last,
            "put {key} acknowledged at revision {rev} after {last}"
        );
        last = rev;
    }
    cluster.assert_alive();
}
