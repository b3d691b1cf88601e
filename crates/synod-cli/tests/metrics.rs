//! The HTTP endpoint of real `synod server` processes: Prometheus scrapes
//! every node (a real Prometheus server, and promtool's parser and lint),
//! etcd's health probes answer as etcd's do, and the cluster report that
//! the dashboard draws follows a leader's death.
//!
//! Prometheus and promtool come from Debian's `prometheus` package, which
//! `.ci/run` installs; without them the scrape tests say so and skip.

mod common;

use common::{bounded, http_get, Cluster};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn have(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Waits until `check` holds, polling every 200 ms, or panics with `what`.
fn eventually(what: &str, limit: Duration, mut check: impl FnMut() -> Option<String>) -> String {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        match check() {
            Some(found) => return found,
            None => std::thread::sleep(Duration::from_millis(200)),
        }
    }
    panic!("timed out waiting for {what}");
}

/// The value of the sample `name` (exact, labels included) in a scrape.
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread")]
async fn every_node_serves_metrics_that_promtool_accepts_and_health_as_etcd() {
    bounded("metrics and health", Duration::from_secs(120), async {
        let mut cluster = Cluster::start(3);
        let leader = cluster.wait_ready().await;
        let follower = cluster.ids().into_iter().find(|i| *i != leader).unwrap();
        let endpoints = cluster.host_ports();
        for i in 0..20 {
            common::etcdctl(&endpoints, &["put", &format!("k{i}"), "v"], None);
        }
        common::etcdctl(
            &[endpoints[follower as usize - 1].clone()],
            &["get", "k1"],
            None,
        );
        for id in cluster.ids() {
            let url = cluster.http_url(id);
            let (code, text) = http_get(&format!("{url}/metrics")).unwrap();
            assert_eq!(code, 200, "node {id} /metrics");
            // etcd's well-known names, with etcd's meaning.
            assert_eq!(
                sample(&text, "etcd_server_has_leader"),
                Some(1.0),
                "node {id}"
            );
            let is_leader = if id == leader { 1.0 } else { 0.0 };
            assert_eq!(
                sample(&text, "etcd_server_is_leader"),
                Some(is_leader),
                "node {id}"
            );
            assert!(sample(&text, "etcd_mvcc_db_total_size_in_bytes").unwrap() > 0.0);
            assert!(text.contains("# TYPE etcd_disk_wal_fsync_duration_seconds histogram"));
            assert!(sample(&text, "etcd_disk_wal_fsync_duration_seconds_count").unwrap() > 0.0);
            assert!(text.contains("etcd_server_leader_changes_seen_total"));
            if have("promtool") {
                // Prometheus's own parser and naming lint.
                let file = tempfile::NamedTempFile::new().unwrap();
                std::fs::write(file.path(), &text).unwrap();
                let out = Command::new("sh")
                    .arg("-c")
                    .arg(format!(
                        "promtool check metrics < {}",
                        file.path().display()
                    ))
                    .output()
                    .unwrap();
                assert!(
                    out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
                    "promtool on node {id}: {}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
            } else {
                eprintln!("promtool not installed (Debian package prometheus): lint skipped");
            }
            let (code, body) = http_get(&format!("{url}/health")).unwrap();
            assert_eq!(
                (code, body.as_str()),
                (200, r#"{"health":"true","reason":""}"#)
            );
            let (code, body) = http_get(&format!("{url}/readyz?verbose")).unwrap();
            assert_eq!(code, 200);
            assert!(
                body.contains("[+]linearizable_read ok") && body.ends_with("ok\n"),
                "{body}"
            );
            let (code, body) = http_get(&format!("{url}/livez")).unwrap();
            assert_eq!((code, body.as_str()), (200, "ok\n"));
        }
        // Requests are counted where they arrived: the puts spread by
        // etcdctl's balancer, the get on the follower.
        let (_, text) = http_get(&format!("{}/metrics", cluster.http_url(follower))).unwrap();
        let gets = sample(
            &text,
            r#"synod_requests_total{api="etcd",code="OK",op="Range"}"#,
        );
        assert!(gets.unwrap_or(0.0) >= 1.0, "{text}");
        assert!(sample(&text, r#"synod_reads_total{path="follower"}"#).unwrap_or(0.0) >= 1.0);
        let (_, text) = http_get(&format!("{}/metrics", cluster.http_url(leader))).unwrap();
        assert!(
            sample(&text, "synod_proposals_total").unwrap() >= 20.0,
            "{text}"
        );
        assert!(sample(&text, "etcd_server_proposals_committed_total").unwrap() >= 20.0);
        // ZooKeeper requests are counted by opcode and result, and the
        // session and its connection are visible.
        cluster.wait_zk_listening();
        let zk = zookeeper_client::Client::connector()
            .with_session_timeout(Duration::from_secs(10))
            .connect(&cluster.zk_hosts(&[follower]))
            .await
            .unwrap();
        let options = zookeeper_client::CreateMode::Persistent
            .with_acls(zookeeper_client::Acls::anyone_all());
        zk.create("/metered", b"x", &options).await.unwrap();
        assert!(zk.create("/metered", b"x", &options).await.is_err());
        let (_, text) = http_get(&format!("{}/metrics", cluster.http_url(follower))).unwrap();
        // The client sends create2 (a create answered with the Stat).
        let created = r#"synod_requests_total{api="zookeeper",code="OK",op="create2"}"#;
        let existed = r#"synod_requests_total{api="zookeeper",code="NODEEXISTS",op="create2"}"#;
        assert_eq!(sample(&text, created), Some(1.0), "{text}");
        assert_eq!(sample(&text, existed), Some(1.0), "{text}");
        assert_eq!(sample(&text, "synod_zk_connections"), Some(1.0));
        let sessions = eventually("the session in the metrics", Duration::from_secs(5), || {
            let (_, text) = http_get(&format!("{}/metrics", cluster.http_url(leader))).ok()?;
            (sample(&text, "synod_zk_sessions")? >= 1.0).then_some(text)
        });
        assert!(sample(&sessions, "synod_leases").unwrap() >= 1.0);
        drop(zk);
        // A member whose quorum is gone is unhealthy, with etcd's reason.
        let others: Vec<u64> = cluster
            .ids()
            .into_iter()
            .filter(|i| *i != follower)
            .collect();
        for id in others {
            cluster.kill(id);
        }
        let url = cluster.http_url(follower);
        let body = eventually(
            "/health to fail without a quorum",
            Duration::from_secs(30),
            || {
                let (code, body) = http_get(&format!("{url}/health")).ok()?;
                (code == 503).then_some(body)
            },
        );
        assert!(
            body.starts_with(r#"{"health":"false","reason":""#),
            "{body}"
        );
        let (code, body) = http_get(&format!("{url}/readyz")).unwrap();
        assert_eq!(code, 503);
        assert!(body.contains("[-]linearizable_read failed"), "{body}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_real_prometheus_scrapes_every_node() {
    if !have("prometheus") {
        eprintln!("prometheus not installed (Debian package prometheus): skipped");
        return;
    }
    bounded("a Prometheus scrape", Duration::from_secs(120), async {
        let mut cluster = Cluster::start(3);
        cluster.wait_ready().await;
        common::etcdctl(&cluster.host_ports(), &["put", "scraped", "yes"], None);
        let dir = tempfile::tempdir().unwrap();
        let targets: Vec<String> = cluster
            .ids()
            .into_iter()
            .map(|id| format!("'{}'", cluster.http_url(id).trim_start_matches("http://")))
            .collect();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
                 scrape_configs:\n  - job_name: synod\n    static_configs:\n      - targets: [{}]\n",
                targets.join(", ")
            ),
        )
        .unwrap();
        let web = common::free_addr();
        let mut prometheus = common::Proc::spawn(
            Path::new("prometheus"),
            &[
                format!("--config.file={}", config.display()),
                format!("--storage.tsdb.path={}", dir.path().join("data").display()),
                format!("--web.listen-address={web}"),
            ],
            &dir.path().join("prometheus.log"),
        );
        let query = |q: &str| -> Option<serde_json::Value> {
            let q: String = q
                .bytes()
                .map(|b| match b {
                    b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' => (b as char).to_string(),
                    _ => format!("%{b:02X}"),
                })
                .collect();
            let (code, body) = http_get(&format!("http://{web}/api/v1/query?query={q}")).ok()?;
            (code == 200).then(|| serde_json::from_str(&body).ok())?
        };
        // Every target up, and every node's etcd metrics stored.
        let scraped = eventually("Prometheus to scrape all three nodes", Duration::from_secs(60), || {
            let up = query("up")?;
            let results = up["data"]["result"].as_array()?.clone();
            let all_up = results.len() == 3 && results.iter().all(|r| r["value"][1] == "1");
            let leaders = query("sum(etcd_server_has_leader)")?;
            let has = leaders["data"]["result"][0]["value"][1].as_str()?.to_string();
            (all_up && has == "3").then(|| format!("{results:?}"))
        });
        assert!(scraped.contains("synod"), "{scraped}");
        let led = query("sum(etcd_server_is_leader)").unwrap();
        assert_eq!(led["data"]["result"][0]["value"][1], "1", "{led}");
        prometheus.kill();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cluster_report_shows_a_new_leader_after_the_leader_dies() {
    bounded("the cluster report", Duration::from_secs(120), async {
        let mut cluster = Cluster::start(3);
        let leader = cluster.wait_ready().await;
        let watcher = cluster.ids().into_iter().find(|i| *i != leader).unwrap();
        let url = format!("{}/api/cluster", cluster.http_url(watcher));
        let report = |url: &str| -> serde_json::Value {
            let (code, body) = http_get(url).unwrap();
            assert_eq!(code, 200);
            serde_json::from_str(&body).unwrap()
        };
        let before = eventually(
            "the report to name the leader",
            Duration::from_secs(10),
            || {
                // Each node refreshes its own line every 100 ms: wait until
                // all three have seen the election settle.
                let r = report(&url);
                let mut roles: Vec<String> = r["members"]
                    .as_array()?
                    .iter()
                    .map(|m| m["groups"][0]["role"].as_str().unwrap_or("").to_string())
                    .collect();
                roles.sort();
                (r["leaders"][0]["leader"] == leader && roles == ["follower", "follower", "leader"])
                    .then(|| r.to_string())
            },
        );
        let r: serde_json::Value = serde_json::from_str(&before).unwrap();
        let members = r["members"].as_array().unwrap();
        assert_eq!(members.len(), 3);
        assert!(members.iter().all(|m| m["reachable"] == true), "{r}");
        let roles: Vec<&str> = members
            .iter()
            .map(|m| m["groups"][0]["role"].as_str().unwrap())
            .collect();
        assert_eq!(
            roles.iter().filter(|r| **r == "leader").count(),
            1,
            "{roles:?}"
        );
        assert_eq!(
            roles.iter().filter(|r| **r == "follower").count(),
            2,
            "{roles:?}"
        );
        cluster.kill(leader);
        let after = eventually(
            "a new leader in the report",
            Duration::from_secs(20),
            || {
                let r = report(&url);
                let l = r["leaders"][0]["leader"].as_u64()?;
                (l != leader).then(|| r.to_string())
            },
        );
        let r: serde_json::Value = serde_json::from_str(&after).unwrap();
        let dead = r["members"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["id"] == leader)
            .unwrap();
        assert_eq!(dead["reachable"], false, "{r}");
        // The election is in the event log of the members that saw it.
        let events: Vec<String> = r["members"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|m| m["events"].as_array().cloned().unwrap_or_default())
            .map(|e| e["text"].as_str().unwrap_or("").to_string())
            .collect();
        let new = r["leaders"][0]["leader"].as_u64().unwrap();
        assert!(
            events
                .iter()
                .any(|t| t.contains(&format!("node {new} leads"))),
            "{events:?}"
        );
    })
    .await;
}
