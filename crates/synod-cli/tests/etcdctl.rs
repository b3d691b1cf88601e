//! The real etcd CLI, `etcdctl` (API v3), against three `synod server`
//! processes: what an operator types works and prints what etcd prints.

mod common;

use base64::Engine as _;
use common::{bounded, etcdctl, etcdctl_json, etcdctl_output, Cluster};
use serde_json::Value;
use std::time::Duration;

fn b64(v: &Value) -> String {
    let s = v.as_str().unwrap_or_else(|| panic!("not a string: {v}"));
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(s)
        .expect("base64");
    String::from_utf8(bytes).expect("utf-8")
}

fn int(v: &Value) -> i64 {
    v.as_i64().unwrap_or_else(|| panic!("not an integer: {v}"))
}

/// `put -w json` prints the header; its revision is the write's.
fn put(endpoints: &[String], key: &str, value: &str) -> i64 {
    let out = etcdctl_json(endpoints, &["put", key, value], None);
    int(&out["header"]["revision"])
}

/// `get --prefix -w json`: (key, value, mod_revision) of each key, and the
/// header's revision.
fn get_prefix(endpoints: &[String], prefix: &str) -> (Vec<(String, String, i64)>, i64) {
    let out = etcdctl_json(endpoints, &["get", prefix, "--prefix"], None);
    let kvs = out["kvs"]
        .as_array()
        .map(|kvs| {
            kvs.iter()
                .map(|kv| (b64(&kv["key"]), b64(&kv["value"]), int(&kv["mod_revision"])))
                .collect()
        })
        .unwrap_or_default();
    // etcd omits `count` when it is 0 (Go's omitempty).
    let count = out.get("count").map_or(0, int);
    assert_eq!(count as usize, out["kvs"].as_array().map_or(0, Vec::len));
    (kvs, int(&out["header"]["revision"]))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_works_against_a_cluster() {
    let mut cluster = Cluster::start(3);
    let leader = bounded("ready", Duration::from_secs(20), cluster.wait_ready()).await;
    let all = cluster.endpoints();
    let follower = cluster.endpoint(if leader == 1 { 2 } else { 1 });
    let one = std::slice::from_ref(&follower);

    // put: plain output is etcd's "OK"; each write gets a higher revision,
    // through any node.
    assert_eq!(
        etcdctl(&all, &["put", "greeting", "hello"], None).trim(),
        "OK"
    );
    let r1 = put(one, "greeting/a", "alpha");
    let r2 = put(&[cluster.endpoint(leader)], "greeting/b", "beta");
    let r3 = put(&all, "other", "x");
    assert!(1 < r1 && r1 < r2 && r2 < r3, "revisions {r1} {r2} {r3}");

    // get --prefix -w json: keys in order, base64 values, the header at the
    // store's revision; the prefix excludes "other".
    let (kvs, rev) = get_prefix(one, "greeting");
    let names: Vec<(&str, &str)> = kvs
        .iter()
        .map(|(k, v, _)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(
        names,
        [
            ("greeting", "hello"),
            ("greeting/a", "alpha"),
            ("greeting/b", "beta")
        ]
    );
    assert_eq!((kvs[1].2, kvs[2].2), (r1, r2));
    assert_eq!(rev, r3);

    // del prints the number of keys deleted; deleting again deletes none.
    assert_eq!(etcdctl(one, &["del", "greeting/a"], None).trim(), "1");
    assert_eq!(etcdctl(one, &["del", "greeting/a"], None).trim(), "0");
    let (kvs, rev_after_del) = get_prefix(&all, "greeting");
    assert_eq!(kvs.len(), 2);
    assert_eq!(rev_after_del, r3 + 1, "one delete, one revision");

    // txn from stdin: compares, blank line, success ops, blank line,
    // failure ops. The first run's compare holds; the second's does not.
    let script =
        "value(\"greeting\") = \"hello\"\n\nput greeting \"hi\"\n\nput greeting \"nope\"\n\n";
    let out = etcdctl(one, &["txn"], Some(script));
    assert_eq!(out.lines().next(), Some("SUCCESS"), "txn output: {out}");
    let out = etcdctl_json(one, &["txn"], Some(script));
    // Go's omitempty drops `succeeded: false`.
    assert_eq!(out.get("succeeded"), None, "second txn fails: {out}");
    let after_txn = int(&out["header"]["revision"]);
    let (kvs, _) = get_prefix(&all, "greeting");
    assert_eq!(kvs[0].1, "nope", "the failure branch ran");

    // compaction: reads below the compacted revision fail with etcd's error;
    // the compacted revision itself and later ones still read.
    let out = etcdctl(one, &["compaction", &r2.to_string()], None);
    assert_eq!(out.trim(), format!("compacted revision {r2}"));
    let old = etcdctl_output(one, &["get", "greeting", "--rev", &r1.to_string()], None);
    assert!(!old.status.success(), "read below the compaction succeeded");
    let stderr = String::from_utf8_lossy(&old.stderr);
    assert!(
        stderr.contains("etcdserver: mvcc: required revision has been compacted"),
        "stderr: {stderr}"
    );
    let at = etcdctl_json(one, &["get", "greeting/b", "--rev", &r2.to_string()], None);
    assert_eq!(b64(&at["kvs"][0]["value"]), "beta");

    // endpoint status -w json: one entry per endpoint, all name the same
    // leader, and exactly one of them is it. Endpoints as IP:PORT: the
    // http:// form is a known bug, see `endpoint_status_with_http_urls`.
    let status = etcdctl_json(&cluster.host_ports(), &["endpoint", "status"], None);
    let status = status.as_array().expect("an array");
    assert_eq!(status.len(), 3);
    let mut leaders = Vec::new();
    for s in status {
        let st = &s["Status"];
        assert_eq!(st["version"], "3.5.0");
        assert!(int(&st["raftIndex"]) > 0);
        assert!(int(&st["header"]["revision"]) >= after_txn);
        let member = int(&st["header"]["member_id"]);
        let endpoint = s["Endpoint"].as_str().expect("endpoint");
        assert_eq!(
            endpoint,
            cluster.addrs(member as u64).client.to_string(),
            "the member answering at {endpoint}"
        );
        leaders.push((member, int(&st["leader"])));
    }
    assert!(
        leaders.iter().all(|(_, l)| *l == leader as i64),
        "{leaders:?}"
    );
    assert_eq!(leaders.iter().filter(|(m, l)| m == l).count(), 1);

    // member list -w json: three members with the client URLs they were
    // started with.
    let list = etcdctl_json(one, &["member", "list"], None);
    let members = list["members"].as_array().expect("members");
    assert_eq!(members.len(), 3);
    for m in members {
        let id = int(&m["ID"]) as u64;
        let a = cluster.addrs(id);
        assert_eq!(m["name"], format!("synod-{id}"));
        assert_eq!(
            m["clientURLs"],
            serde_json::json!([format!("http://{}", a.client)])
        );
        assert_eq!(
            m["peerURLs"],
            serde_json::json!([format!("http://{}", a.peer)])
        );
    }
    cluster.assert_alive();
}

/// `etcdctl endpoint status` with endpoints written as URLs, the form of
/// etcd's documentation and of `member list`'s clientURLs.
///
/// etcdctl 3.4 dials each endpoint on its own with the gRPC target
/// `passthrough:///http://IP:PORT`, so it sends `:authority: http://IP:PORT`.
/// etcd's Go gRPC server ignores the malformed authority; the h2 crate under
/// tonic resets the stream with PROTOCOL_ERROR ("malformed headers: malformed
/// authority", visible with RUST_LOG=h2=debug), and etcdctl prints
/// "Failed to get the status of endpoint http://...".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "bug: etcdctl endpoint status with http:// endpoints gets PROTOCOL_ERROR (h2 rejects :authority http://IP:PORT)"]
async fn endpoint_status_with_http_urls() {
    let mut cluster = Cluster::start(3);
    let leader = bounded("ready", Duration::from_secs(20), cluster.wait_ready()).await;
    let status = etcdctl_json(&cluster.endpoints(), &["endpoint", "status"], None);
    let status = status.as_array().expect("an array");
    assert_eq!(status.len(), 3);
    for s in status {
        assert_eq!(int(&s["Status"]["leader"]), leader as i64);
    }
}
