//! A sharded cluster (`synod server --split-at`) as etcd's tools see it:
//! etcdctl and the etcd-client crate put, read, watch and delete across
//! shards without knowing of them, with keys attached to leases, locks
//! and elections (design 0017); what is not supported yet is refused
//! with a reason; `synod shards` lists the map; a node killed with -9
//! while writes run loses no acknowledged write; a backup taken while
//! writes run restores every shard at one revision.

mod common;

use common::{etcdctl, etcdctl_for, etcdctl_json, etcdctl_output, synod_bin, Cluster, Proc};
use serde_json::Value;
use std::time::{Duration, Instant};

const SPLITS: &str = "/g,/p";

async fn sharded() -> Cluster {
    let mut c = Cluster::start_with(3, &["--split-at", SPLITS]);
    c.wait_ready().await;
    c
}

/// A put through etcdctl, retried while the shards elect (right after
/// start each shard and the oracle elect on their own).
fn put_ready(endpoints: &[String], key: &str, value: &str) -> i64 {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = etcdctl_output(endpoints, &["put", key, value, "-w", "json"], None);
        if out.status.success() {
            let v: Value = serde_json::from_slice(&out.stdout).expect("json");
            return v["header"]["revision"].as_i64().expect("revision");
        }
        assert!(
            Instant::now() < deadline,
            "{key} never taken: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_reads_writes_and_watches_across_shards() {
    let c = sharded().await;
    let eps = c.host_ports();
    // One key per shard first, so every shard has elected.
    for k in ["/a", "/h", "/q"] {
        put_ready(&eps, k, "0");
    }
    // A watch over every key, from the start: every shard's history and
    // live events, in revision order.
    let mut watch = std::process::Command::new("etcdctl");
    watch
        .args([
            "--endpoints",
            &eps[1],
            "watch",
            "--prefix",
            "/",
            "--rev",
            "1",
        ])
        .env("ETCDCTL_API", "3")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let watcher = watch.spawn().expect("etcdctl watch");
    let mut revisions = Vec::new();
    for (i, k) in ["/b", "/i", "/z", "/c", "/j", "/y"].iter().enumerate() {
        let out = etcdctl_json(&eps[i % 3..i % 3 + 1], &["put", k, "v"], None);
        revisions.push(out["header"]["revision"].as_i64().unwrap());
    }
    assert!(revisions.windows(2).all(|w| w[0] < w[1]), "{revisions:?}");
    // Reads over all shards, at one timestamp.
    let all = etcdctl_json(&eps, &["get", "/", "--prefix", "--keys-only"], None);
    assert_eq!(all["count"], 9);
    let limited = etcdctl(
        &eps,
        &["get", "/", "--prefix", "--keys-only", "--limit", "4"],
        None,
    );
    assert_eq!(
        limited.split_whitespace().collect::<Vec<_>>(),
        ["/a", "/b", "/c", "/h"]
    );
    // A txn in one shard commits; over two it is refused whole.
    // etcdctl's txn reads compares, success ops, failure ops, each ended
    // by an empty line.
    let one = etcdctl(&eps, &["txn"], Some("\nput /k 1\nput /l 1\n\n\n"));
    assert!(one.starts_with("SUCCESS"), "{one}");
    let two = etcdctl_output(&eps, &["txn"], Some("\nput /a 2\nput /z 2\n\n\n"));
    let err = String::from_utf8_lossy(&two.stderr);
    assert!(
        !two.status.success() && err.contains("several shards"),
        "{err}"
    );
    assert_eq!(
        etcdctl(&eps, &["get", "/a", "--print-value-only"], None).trim(),
        "0"
    );
    // The watch saw every put, in revision order (a shard that lags is
    // fenced first: within a second or two in a debug build).
    std::thread::sleep(Duration::from_secs(3));
    let mut watcher = watcher;
    let _ = watcher.kill();
    let out = watcher.wait_with_output().expect("watch output");
    let lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(String::from)
        .collect();
    let keys: Vec<&str> = lines
        .chunks(3)
        .filter(|c| c[0] == "PUT")
        .map(|c| c[1].as_str())
        .collect();
    assert_eq!(
        keys,
        ["/a", "/h", "/q", "/b", "/i", "/z", "/c", "/j", "/y", "/k", "/l"],
        "{lines:?}"
    );
    // A delete over every shard.
    let deleted = etcdctl(&eps, &["del", "/", "--prefix"], None);
    assert_eq!(deleted.trim(), "11");
    assert_eq!(
        etcdctl_json(&eps, &["get", "/", "--prefix"], None)["count"].as_i64(),
        None,
        "nothing left (etcdctl omits a zero count)"
    );
}

/// Keys attached to one lease in every shard: listed by `timetolive
/// --keys`, all gone once `lease revoke` answers, gone by themselves when
/// the lease expires; a put naming a revoked lease is refused as etcd
/// refuses it; `etcdctl lock` and `elect` work as on one group.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_leases_locks_and_elections_across_shards() {
    let c = sharded().await;
    let eps = c.host_ports();
    for k in ["/a", "/h", "/q"] {
        put_ready(&eps, k, "0");
    }
    let grant = |ttl: &str| {
        let out = etcdctl(&eps, &["lease", "grant", ttl], None);
        out.split_whitespace()
            .nth(1)
            .unwrap_or_else(|| panic!("lease grant printed {out}"))
            .to_string()
    };
    let id = grant("60");
    for (i, k) in ["/a/l", "/h/l", "/q/l"].iter().enumerate() {
        etcdctl(&eps[i..i + 1], &["put", "--lease", &id, k, "v"], None);
    }
    let out = etcdctl(&eps[2..], &["lease", "timetolive", "--keys", &id], None);
    assert!(
        out.contains("granted with TTL(60s)") && out.contains("attached keys([/a/l /h/l /q/l])"),
        "{out}"
    );
    let out = etcdctl(&eps[1..2], &["lease", "revoke", &id], None);
    assert!(out.contains(&format!("lease {id} revoked")), "{out}");
    // Answered once every shard deleted its keys: read through any node.
    for ep in eps.chunks(1) {
        let left = etcdctl(ep, &["get", "/", "--prefix", "--keys-only"], None);
        assert_eq!(
            left.split_whitespace().collect::<Vec<_>>(),
            ["/a", "/h", "/q"],
            "{left}"
        );
    }
    let late = etcdctl_output(&eps, &["put", "--lease", &id, "/z/l", "v"], None);
    let err = String::from_utf8_lossy(&late.stderr);
    assert!(
        !late.status.success() && err.contains("requested lease not found"),
        "{err}"
    );
    // Expiry: a 2 s lease's keys in two shards go by themselves.
    let short = grant("2");
    for k in ["/b/e", "/z/e"] {
        etcdctl(&eps, &["put", "--lease", &short, k, "v"], None);
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let left = etcdctl(&eps, &["get", "/", "--prefix", "--keys-only"], None);
        if !left.contains("/e") {
            break;
        }
        assert!(Instant::now() < deadline, "expired keys stayed: {left}");
        std::thread::sleep(Duration::from_millis(200));
    }
    // lock: runs the command while holding the lock.
    let out = etcdctl(&eps, &["lock", "/q/lock", "echo", "held"], None);
    assert!(out.contains("held"), "{out}");
    // elect: a campaigner, then a listener through another node.
    let log = std::env::temp_dir().join(format!("elect-sharded-{}.log", std::process::id()));
    let mut campaigner = Proc::spawn(
        std::path::Path::new("etcdctl"),
        &[
            format!("--endpoints={}", eps[0]),
            "elect".into(),
            "/h/E".into(),
            "p1".into(),
        ],
        &log,
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let out = etcdctl_for(&eps[2..], 2, &["elect", "-l", "/h/E"]);
    assert!(
        out.starts_with("/h/E/") && out.contains("\np1"),
        "elect -l printed {out:?}"
    );
    campaigner.kill();
    let _ = std::fs::remove_file(&log);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn synod_shards_lists_the_map() {
    let c = sharded().await;
    put_ready(&c.host_ports(), "/x", "1");
    let http = c.http_url(1).trim_start_matches("http://").to_string();
    let run = |json: bool| {
        let mut cmd = std::process::Command::new(synod_bin());
        cmd.args(["shards", "--endpoint", &http]);
        if json {
            cmd.arg("--json");
        }
        let out = common::run(&mut cmd, Duration::from_secs(20));
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let table = run(false);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 4, "{table}");
    assert!(lines[0].starts_with("GROUP"));
    assert!(
        lines[1].contains("\"/g\"") && lines[3].contains("(end)"),
        "{table}"
    );
    let map: Value = serde_json::from_str(&run(true)).unwrap();
    let shards = map["shards"].as_array().unwrap();
    assert_eq!(shards.len(), 3);
    assert_eq!(shards[2]["start"], "/p");
    assert!(shards[2]["revision"].as_i64().unwrap() > 0, "{map}");
    // A node that is not sharded says so.
    let plain = Cluster::start(1);
    let http = plain.http_url(1).trim_start_matches("http://").to_string();
    common::wait_listening(http.parse().unwrap(), Duration::from_secs(20));
    let out = common::run(
        std::process::Command::new(synod_bin()).args(["shards", "--endpoint", &http]),
        Duration::from_secs(20),
    );
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("not sharded"));
}

/// Writes through every node into every shard while node 1 is killed with
/// -9 and restarted: every acknowledged put is there afterwards, on every
/// node, and a restart with other split points is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_while_writing_loses_no_acknowledged_write() {
    let mut c = sharded().await;
    let eps = c.host_ports();
    for k in ["/a", "/h", "/q"] {
        put_ready(&eps, k, "0");
    }
    let mut clients = Vec::new();
    for id in 1..=3 {
        clients.push(c.client(id).await);
    }
    let keys = ["/b", "/i", "/z", "/c", "/j", "/y"];
    let mut acknowledged = Vec::new();
    for round in 0..60 {
        if round == 20 {
            c.kill(1);
        }
        if round == 40 {
            c.spawn(1);
        }
        let key = format!("{}{round}", keys[round % keys.len()]);
        // Nodes 2 and 3 stay up; node 1's client fails while it is down.
        let client = &mut clients[1 + round % 2];
        match tokio::time::timeout(Duration::from_secs(10), client.put(key.clone(), "v", None))
            .await
        {
            Ok(Ok(r)) => acknowledged.push((key, r.header().unwrap().revision())),
            other => println!("{key}: {other:?}"),
        }
    }
    assert!(
        acknowledged.len() >= 50,
        "too few puts went through: {acknowledged:?}"
    );
    c.wait_ready().await;
    let deadline = Instant::now() + Duration::from_secs(30);
    for id in 1..=3 {
        let mut client = c.client(id).await;
        for (key, revision) in &acknowledged {
            loop {
                let r =
                    tokio::time::timeout(Duration::from_secs(5), client.get(key.as_str(), None))
                        .await;
                match r {
                    Ok(Ok(r)) if r.kvs().len() == 1 => {
                        assert_eq!(r.kvs()[0].mod_revision(), *revision, "{key} on node {id}");
                        break;
                    }
                    other if Instant::now() < deadline => {
                        println!("{key} on node {id}: {other:?}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    other => panic!("{key} lost on node {id}: {other:?}"),
                }
            }
        }
    }
    // The data dir keeps its split points.
    c.kill(1);
    let refusal = common::start_refusal(&c.data_dir(1), &["--split-at", "/m"]);
    assert!(refusal.contains("split points"), "{refusal}");
}

/// Every shard's voters and observers as node `id` reports them
/// (`/api/shards`), in shard order.
fn shard_members(c: &Cluster, id: u64) -> Vec<(Value, Value)> {
    let url = format!("{}/api/shards", c.http_url(id));
    let Ok((200, body)) = common::http_get(&url) else {
        return Vec::new();
    };
    let map: Value = serde_json::from_str(&body).expect("json");
    map["shards"]
        .as_array()
        .expect("shards")
        .iter()
        .map(|s| (s["voters"].clone(), s["observers"].clone()))
        .collect()
}

/// Waits until node `id` reports every one of the 3 shards with these
/// voters and observers.
fn wait_shard_members(c: &Cluster, id: u64, voters: &[u64], observers: &[u64]) {
    let want = (serde_json::json!(voters), serde_json::json!(observers));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got = shard_members(c, id);
        if got.len() == 3 && got.iter().all(|m| *m == want) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "node {id}: shards {got:?}, wanted {want:?} in each"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits until node `id` serves `key` = `value` from its own replicas.
fn wait_served(c: &Cluster, id: u64, key: &str, value: &str) {
    let on = vec![c.addrs(id).client.to_string()];
    let want = format!("{key}\n{value}\n");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = etcdctl_output(&on, &["get", key, "--consistency=s"], None);
        if String::from_utf8_lossy(&out.stdout) == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "node {id} never served {key}: {out:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `etcdctl member add`, `promote` and `remove` on a sharded cluster
/// (design 0019): every shard follows the meta group's configuration; the
/// new node catches every shard up (from snapshots: the logs are
/// compacted every 20 slots) and serves it; once an original member is
/// removed and stopped, writes go on in every shard and reach the new
/// node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_added_and_removed_on_a_sharded_cluster() {
    let mut c = Cluster::start_with(3, &["--split-at", SPLITS, "--snapshot-count", "20"]);
    c.wait_ready().await;
    let eps = c.host_ports();
    let prefixes = ["/b", "/i", "/z"];
    for k in ["/a", "/h", "/q"] {
        put_ready(&eps, k, "0");
    }
    for i in 0..60 {
        let key = format!("{}{i:02}", prefixes[i % 3]);
        etcdctl(&eps, &["put", &key, &format!("v{i}")], None);
    }
    wait_shard_members(&c, 1, &[1, 2, 3], &[]);

    // A learner first: every shard takes it as an observer.
    let peer = common::free_addr();
    let (added, cluster_hex) = common::member_add_learner(&eps, "n4", peer);
    assert_eq!(added, 4);
    wait_shard_members(&c, 2, &[1, 2, 3], &[4]);
    let id = c.join_node_at(peer, &cluster_hex);
    assert_eq!(id, 4);
    for i in 57..60 {
        wait_served(
            &c,
            4,
            &format!("{}{i:02}", prefixes[i % 3]),
            &format!("v{i}"),
        );
    }
    wait_shard_members(&c, 4, &[1, 2, 3], &[4]);

    // Promoted: a voter of every shard.
    let out = etcdctl(&eps, &["member", "promote", "4"], None);
    assert!(out.contains("promoted"), "{out}");
    wait_shard_members(&c, 4, &[1, 2, 3, 4], &[]);

    // Node 1 removed and stopped: every shard goes on without it.
    let out = etcdctl(&c.host_ports(), &["member", "remove", "1"], None);
    assert!(out.contains("removed from cluster"), "{out}");
    c.forget(1);
    wait_shard_members(&c, 4, &[2, 3, 4], &[]);
    let eps = c.host_ports();
    for i in 60..72 {
        let key = format!("{}{i:02}", prefixes[i % 3]);
        put_ready(&eps, &key, &format!("v{i}"));
    }
    for i in 60..72 {
        wait_served(
            &c,
            4,
            &format!("{}{i:02}", prefixes[i % 3]),
            &format!("v{i}"),
        );
    }
    let all = etcdctl_json(&eps, &["get", "/", "--prefix", "--keys-only"], None);
    assert_eq!(all["count"], 75, "{all}");
    // Each shard's removal of node 1 was proposed by a leader left.
    let follows: f64 = [2, 3, 4]
        .iter()
        .map(|id| metric(&c, *id, "synod_shard_membership_follows_total"))
        .sum();
    assert!(follows >= 3.0, "{follows} follows");
}

/// A counter from node `id`'s `/metrics` (0 when absent).
fn metric(c: &Cluster, id: u64, name: &str) -> f64 {
    let url = format!("{}/metrics", c.http_url(id));
    let (_, body) = common::http_get(&url).expect("metrics");
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Puts into every shard through etcd clients of nodes 2 and 3 while a
/// learner joins, is promoted, and node 1 is removed and killed: every
/// acknowledged put is found, at its revision, through every node left,
/// the new one included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn membership_changes_while_writing_lose_no_acknowledged_write() {
    let mut c = Cluster::start_with(3, &["--split-at", SPLITS, "--snapshot-count", "50"]);
    c.wait_ready().await;
    let eps = c.host_ports();
    for k in ["/a", "/h", "/q"] {
        put_ready(&eps, k, "0");
    }
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut clients = [c.client(2).await, c.client(3).await];
    let writer = tokio::spawn({
        let stop = stop.clone();
        async move {
            let prefixes = ["/b", "/i", "/z"];
            let mut acknowledged = Vec::new();
            let mut n = 0usize;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let key = format!("{}{n:04}", prefixes[n % 3]);
                let client = &mut clients[n % 2];
                let put = client.put(key.clone(), "v", None);
                if let Ok(Ok(r)) = tokio::time::timeout(Duration::from_secs(5), put).await {
                    acknowledged.push((key, r.header().unwrap().revision()));
                }
                n += 1;
            }
            (acknowledged, n)
        }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;

    let peer = common::free_addr();
    let (added, cluster_hex) = common::member_add_learner(&eps, "n4", peer);
    assert_eq!(added, 4);
    c.join_node_at(peer, &cluster_hex);
    wait_shard_members(&c, 4, &[1, 2, 3], &[4]);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = etcdctl_output(&eps, &["member", "promote", "4"], None);
        if out.status.success() {
            break;
        }
        // Refused until the learner caught up (etcd's rule too).
        assert!(Instant::now() < deadline, "{out:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    wait_shard_members(&c, 4, &[1, 2, 3, 4], &[]);
    let out = etcdctl(&c.host_ports(), &["member", "remove", "1"], None);
    assert!(out.contains("removed from cluster"), "{out}");
    c.forget(1);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (acknowledged, tried) = writer.await.expect("writer");
    println!("{} of {tried} puts acknowledged", acknowledged.len());
    assert!(
        acknowledged.len() * 10 >= tried * 9,
        "only {} of {tried} puts acknowledged",
        acknowledged.len()
    );
    wait_shard_members(&c, 4, &[2, 3, 4], &[]);
    for id in [2, 3, 4] {
        let mut client = c.client(id).await;
        for (key, revision) in &acknowledged {
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                let get = client.get(key.as_str(), None);
                match tokio::time::timeout(Duration::from_secs(5), get).await {
                    Ok(Ok(r)) if r.kvs().len() == 1 => {
                        assert_eq!(r.kvs()[0].mod_revision(), *revision, "{key} on node {id}");
                        break;
                    }
                    other => {
                        assert!(
                            Instant::now() < deadline,
                            "{key} lost on node {id}: {other:?}"
                        );
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        }
    }
}

/// A key as etcd tells of it: key, value, create and mod revision,
/// version, lease.
type Told = (String, Vec<u8>, i64, i64, i64, i64);

/// Every key under `/` through `client`: the bulk ones apart, counted.
async fn all_keys(client: &mut etcd_client::Client) -> (Vec<Told>, usize) {
    all_keys_at(client, 0).await
}

/// [`all_keys`] as a read at `revision` sees them (0: now).
async fn all_keys_at(client: &mut etcd_client::Client, revision: i64) -> (Vec<Told>, usize) {
    let mut bulk = 0;
    let mut told = Vec::new();
    // Pages of 40 keys: the bulk ones would pass the client's 4 MiB limit.
    let mut from = b"/".to_vec();
    loop {
        let options = etcd_client::GetOptions::new()
            .with_range("0")
            .with_limit(40)
            .with_revision(revision);
        let read = client
            .get(from.clone(), Some(options))
            .await
            .expect("a read of every key");
        let Some(last) = read.kvs().last() else {
            break;
        };
        from = [last.key(), b"\0"].concat();
        for kv in read.kvs() {
            let key = kv.key_str().unwrap().to_string();
            if key.contains("/bulk") {
                assert_eq!(kv.value().len(), BULK_VALUE_BYTES, "{key}");
                bulk += 1;
                continue;
            }
            told.push((
                key,
                kv.value().to_vec(),
                kv.create_revision(),
                kv.mod_revision(),
                kv.version(),
                kv.lease(),
            ));
        }
    }
    (told, bulk)
}

/// Values that make each shard a few MiB, so that reading a backup takes
/// long enough for writes to land meanwhile.
const BULK_VALUE_BYTES: usize = 64 << 10;

/// A backup of a sharded cluster (`etcdctl snapshot save`, design 0020)
/// taken while a client writes into every shard in turn, one put after
/// the other, holds a consistent cut: the puts it holds are a prefix of
/// the acknowledged ones, none later without every earlier one, and
/// the restored keys are the old cluster's as a read at the revision of
/// the cut sees them. `synod restore` builds every shard (one made by a
/// split too) on three new nodes, which serve the same keys at the same
/// revisions, with their lease, and take writes in every shard.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_taken_while_writing_restores_every_shard_at_one_revision() {
    let c = sharded().await;
    let eps = c.host_ports();
    for (i, k) in ["/a/s", "/h/s", "/q/s"].iter().enumerate() {
        put_ready(&eps, k, "0");
        etcdctl(
            &eps,
            &["put", &format!("{k}/long"), &"x".repeat(300 + i)],
            None,
        );
        etcdctl(&eps, &["put", &format!("{k}/gone"), "1"], None);
        etcdctl(&eps, &["del", &format!("{k}/gone")], None);
    }
    let lease = etcdctl(&eps, &["lease", "grant", "600"], None);
    let lease_id = lease
        .split_whitespace()
        .nth(1)
        .expect("lease id")
        .to_string();
    etcdctl(&eps, &["put", "/r/leased", "l", "--lease", &lease_id], None);
    // A fourth shard, made by a split.
    let http = c.http_url(1).trim_start_matches("http://").to_string();
    let out = common::run(
        std::process::Command::new(synod_bin()).args(["split", "--endpoint", &http, "/j"]),
        Duration::from_secs(20),
    );
    assert!(out.status.success(), "{out:?}");
    put_ready(&eps, "/k/s", "after the split");
    let mut client = c.client(1).await;
    for i in 0..160 {
        let key = format!("/{}/bulk{i:03}", ["a", "h", "k", "q"][i % 4]);
        client
            .put(key, vec![i as u8; BULK_VALUE_BYTES], None)
            .await
            .expect("bulk put");
    }
    let (before, bulk_before) = all_keys(&mut client).await;
    assert_eq!(bulk_before, 160);

    // One client writes /<shard>/w<n> into the shards in turn.
    let mut writer_client = c.client(2).await;
    let writing = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let go_on = writing.clone();
    let writer = tokio::spawn(async move {
        let mut acked = 0u64;
        while go_on.load(std::sync::atomic::Ordering::Relaxed) {
            let shard = ["b", "i", "l", "z"][(acked % 4) as usize];
            let key = format!("/{shard}/w{acked:06}");
            if writer_client.put(key, "w", None).await.is_ok() {
                acked += 1;
            }
        }
        acked
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let file = c.data_dir(1).with_extension("sharded.db");
    let saved = {
        let (eps, file) = (vec![c.host_ports()[1].clone()], file.clone());
        tokio::task::spawn_blocking(move || {
            etcdctl(&eps, &["snapshot", "save", file.to_str().unwrap()], None)
        })
        .await
        .unwrap()
    };
    assert!(saved.contains("Snapshot saved at"), "{saved}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    writing.store(false, std::sync::atomic::Ordering::Relaxed);
    let acked = writer.await.unwrap();

    let mut copy = Cluster::prepare(3, &["--split-at", SPLITS]);
    let mut cut = None;
    for id in copy.ids() {
        let said = copy.restore(id, &file);
        assert!(
            said.contains("4 shards") && said.contains("--split-at /g,/p"),
            "{said}"
        );
        // "restored FILE (revision T) ...": every shard was cut at T.
        let t: i64 = said
            .split("(revision ")
            .nth(1)
            .and_then(|r| r.split(')').next())
            .unwrap()
            .parse()
            .unwrap();
        assert!(cut.is_none() || cut == Some(t), "{said}");
        cut = Some(t);
        copy.spawn(id);
    }
    copy.wait_ready().await;
    let mut restored = copy.client(3).await;
    let (after, bulk_after) = all_keys(&mut restored).await;
    assert_eq!(bulk_after, 160);
    // The restored key space is the old one as a read at the cut sees it.
    let cut = cut.unwrap();
    assert_eq!(
        after,
        all_keys_at(&mut client, cut).await.0,
        "the keys at revision {cut}"
    );
    let (written, kept): (Vec<Told>, Vec<Told>) =
        after.into_iter().partition(|t| t.0.contains("/w"));
    assert_eq!(kept, before, "the keys written before the backup");
    let mut held: Vec<u64> = written
        .iter()
        .map(|t| t.0.rsplit("/w").next().unwrap().parse().unwrap())
        .collect();
    held.sort_unstable();
    let n = held.len() as u64;
    assert!(
        held.iter().copied().eq(0..n),
        "the backup holds a put without every earlier one: {held:?}"
    );
    assert!(
        n > 0 && n <= acked,
        "{n} puts in the backup, {acked} acknowledged"
    );
    println!("the backup holds {n} of {acked} puts acknowledged by the end of the save");
    // The lease came with its key, and every shard takes writes.
    let restored_eps = copy.host_ports();
    let ttl = etcdctl(
        &restored_eps,
        &["lease", "timetolive", &lease_id, "--keys"],
        None,
    );
    assert!(ttl.contains("/r/leased"), "{ttl}");
    for k in ["/a/new", "/h/new", "/k/new", "/q/new"] {
        etcdctl(&restored_eps, &["put", k, "n"], None);
    }
    let shards = common::run(
        std::process::Command::new(synod_bin()).args([
            "shards",
            "--endpoint",
            copy.http_url(2).trim_start_matches("http://"),
            "--json",
        ]),
        Duration::from_secs(20),
    );
    let map: Value = serde_json::from_slice(&shards.stdout).unwrap();
    assert_eq!(map["shards"].as_array().unwrap().len(), 4, "{map}");
}
