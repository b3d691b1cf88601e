//! Membership changes with `etcdctl` against `synod server` processes, as
//! an operator does them: add a learner, start it, let it catch up from a
//! snapshot, promote it, move leadership to it, remove an old member.

mod common;

use common::{bounded, etcdctl, etcdctl_json, etcdctl_output, Cluster};
use std::time::Duration;

/// `member list -w json`: (id, name, is_learner, client URLs).
fn members(endpoints: &[String]) -> Vec<(u64, String, bool, Vec<String>)> {
    let out = etcdctl_json(endpoints, &["member", "list"], None);
    out["members"]
        .as_array()
        .expect("members")
        .iter()
        .map(|m| {
            (
                m["ID"].as_u64().expect("ID"),
                m["name"].as_str().unwrap_or("").to_string(),
                m["isLearner"].as_bool().unwrap_or(false),
                m["clientURLs"]
                    .as_array()
                    .map(|a| a.iter().map(|u| u.as_str().unwrap().to_string()).collect())
                    .unwrap_or_default(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_learner_catch_up_promote_move_leader_remove() {
    // Snapshots every 20 slots: the new member can only catch up from one.
    let mut cluster = Cluster::start_with(3, &["--snapshot-count", "20"]);
    let leader = bounded("ready", Duration::from_secs(20), cluster.wait_ready()).await;
    let all = cluster.host_ports();
    for i in 0..60 {
        etcdctl(&all, &["put", &format!("k{i:02}"), &format!("v{i}")], None);
    }

    // member add --learner, through any node (a follower forwards it).
    let follower = cluster.ids().into_iter().find(|i| *i != leader).unwrap();
    let peer = common::free_addr();
    let through = vec![cluster.addrs(follower).client.to_string()];
    let (added, cluster_hex) = common::member_add_learner(&through, "n4", peer);
    assert_eq!(added, 4);
    let listed = members(&all);
    assert!(
        listed.iter().any(|m| m.0 == 4 && m.2),
        "listed as a learner: {listed:?}"
    );

    // Start it, joining: it catches up from a snapshot, then the log.
    let id = cluster.join_node_at(peer, &cluster_hex);
    assert_eq!(id, 4);
    cluster.wait_caught_up(4, Duration::from_secs(30)).await;
    let four = vec![cluster.addrs(4).client.to_string()];
    let got = etcdctl(&four, &["get", "k59", "--consistency=s"], None);
    assert_eq!(got, "k59\nv59\n");
    // Once running it publishes its client address.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let listed = members(&all);
        if listed.iter().any(|m| m.0 == 4 && !m.3.is_empty()) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{listed:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Promote; then it votes: move leadership to it.
    let out = etcdctl(&all, &["member", "promote", "4"], None);
    assert!(out.contains("promoted"), "{out}");
    assert!(members(&all).iter().all(|m| !m.2), "no learner left");
    let all = cluster.host_ports();
    let out = etcdctl(&all, &["move-leader", "4"], None);
    assert!(out.contains("Leadership transferred"), "{out}");
    let now = bounded("new leader", Duration::from_secs(20), cluster.wait_ready()).await;
    assert_eq!(now, 4, "node 4 leads after move-leader");

    // Remove an original member and stop it: the cluster goes on.
    let out = etcdctl(&all, &["member", "remove", &format!("{leader:x}")], None);
    assert!(out.contains("removed from cluster"), "{out}");
    cluster.forget(leader);
    let all = cluster.host_ports();
    for i in 60..80 {
        etcdctl(&all, &["put", &format!("k{i:02}"), &format!("v{i}")], None);
    }
    let listed = members(&all);
    assert_eq!(listed.len(), 3, "{listed:?}");
    assert!(!listed.iter().any(|m| m.0 == leader));
    for id in cluster.ids() {
        cluster.wait_caught_up(id, Duration::from_secs(20)).await;
    }
    let out = etcdctl(&all, &["endpoint", "hashkv"], None);
    let hashes: Vec<&str> = out
        .lines()
        .map(|l| l.rsplit(", ").next().unwrap())
        .collect();
    assert!(hashes.windows(2).all(|w| w[0] == w[1]), "{out}");

    // Refusals come with etcd's messages.
    let out = etcdctl_output(&all, &["member", "remove", "99"], None);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("member not found"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = etcdctl_output(&all, &["member", "promote", "4"], None);
    assert!(String::from_utf8_lossy(&out.stderr).contains("can only promote a learner member"));
}
