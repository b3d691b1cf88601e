//! `etcdctl` (API v3) beyond the KV API, against three `synod server`
//! processes: watch, lease, lock, elect, endpoint hashkv, snapshot save and
//! `synod restore`, alarms and the space quota.

mod common;

use common::{bounded, etcdctl, etcdctl_for, etcdctl_output, run, synod_bin, Cluster, Proc};
use std::process::Command;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_watch_lease_lock_elect_hashkv_snapshot() {
    let mut cluster = Cluster::start(3);
    bounded("ready", Duration::from_secs(20), cluster.wait_ready()).await;
    let all = cluster.host_ports();
    let one = vec![all[1].clone()];

    // watch: history from revision 1, with previous values.
    etcdctl(&all, &["put", "w/a", "1"], None);
    etcdctl(&all, &["put", "w/a", "2"], None);
    etcdctl(&all, &["del", "w/a"], None);
    let out = etcdctl_for(
        &one,
        2,
        &["watch", "--prefix", "w/", "--rev=1", "--prev-kv"],
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines,
        ["PUT", "w/a", "1", "PUT", "w/a", "1", "w/a", "2", "DELETE", "w/a", "2", "w/a", ""],
        "etcdctl watch output: {out}"
    );

    // lease grant / put --lease / timetolive --keys / keep-alive --once /
    // list / revoke.
    let out = etcdctl(&all, &["lease", "grant", "60"], None);
    let id = out
        .split_whitespace()
        .nth(1)
        .unwrap_or_else(|| panic!("lease grant printed {out}"))
        .to_string();
    assert!(out.contains("granted with TTL(60s)"), "{out}");
    etcdctl(&all, &["put", "--lease", &id, "l/k", "v"], None);
    let out = etcdctl(&one, &["lease", "timetolive", "--keys", &id], None);
    assert!(
        out.contains("granted with TTL(60s)") && out.contains("attached keys([l/k])"),
        "{out}"
    );
    let out = etcdctl(&one, &["lease", "keep-alive", "--once", &id], None);
    assert!(
        out.contains(&format!("lease {id} keepalived with TTL(60)")),
        "{out}"
    );
    let out = etcdctl(&all, &["lease", "list"], None);
    assert!(out.contains(&id), "{out}");
    let out = etcdctl(&all, &["lease", "revoke", &id], None);
    assert!(out.contains(&format!("lease {id} revoked")), "{out}");
    assert_eq!(etcdctl(&all, &["get", "l/k"], None), "");
    let out = etcdctl(&all, &["lease", "timetolive", &id], None);
    assert!(out.contains("already expired"), "{out}");

    // lock: runs the command while holding the lock.
    let out = etcdctl(&all, &["lock", "L", "echo", "held"], None);
    assert!(out.contains("held"), "{out}");

    // elect: a campaigner, then a listener that sees it lead.
    let log = std::env::temp_dir().join(format!("elect-{}.log", std::process::id()));
    let mut campaigner = Proc::spawn(
        std::path::Path::new("etcdctl"),
        &[
            format!("--endpoints={}", all.join(",")),
            "elect".into(),
            "E".into(),
            "p1".into(),
        ],
        &log,
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let out = etcdctl_for(&one, 2, &["elect", "-l", "E"]);
    assert!(
        out.starts_with("E/") && out.contains("\np1"),
        "elect -l printed {out:?}"
    );
    campaigner.kill();
    let _ = std::fs::remove_file(&log);

    // endpoint hashkv: every member agrees once caught up.
    for id in cluster.ids() {
        cluster.wait_caught_up(id, Duration::from_secs(10)).await;
    }
    let out = etcdctl(&all, &["endpoint", "hashkv"], None);
    let hashes: Vec<&str> = out
        .lines()
        .map(|l| l.rsplit(", ").next().unwrap())
        .collect();
    assert_eq!(hashes.len(), 3, "{out}");
    assert!(
        hashes.iter().all(|h| *h == hashes[0]),
        "hashes differ: {out}"
    );

    // alarm list: nothing raised.
    assert_eq!(etcdctl(&all, &["alarm", "list"], None), "");

    // snapshot save, then restore into a new cluster.
    for i in 0..20 {
        etcdctl(&all, &["put", &format!("s/{i:02}"), &format!("v{i}")], None);
    }
    let file = cluster.data_dir(1).with_extension("snapshot.db");
    let out = etcdctl(&one, &["snapshot", "save", file.to_str().unwrap()], None);
    assert!(out.contains("Snapshot saved at"), "{out}");
    let before = etcdctl(&all, &["get", "s/", "--prefix"], None);
    let mut copy = Cluster::prepare(3, &[]);
    for id in copy.ids() {
        copy.restore(id, &file);
        copy.spawn(id);
    }
    bounded(
        "restored cluster",
        Duration::from_secs(20),
        copy.wait_ready(),
    )
    .await;
    let restored = copy.host_ports();
    assert_eq!(etcdctl(&restored, &["get", "s/", "--prefix"], None), before);
    etcdctl(&restored, &["put", "s/new", "x"], None);
    // A damaged file is refused with a clear message.
    let mut bytes = std::fs::read(&file).unwrap();
    bytes[40] ^= 0xff;
    let bad = file.with_extension("bad");
    std::fs::write(&bad, bytes).unwrap();
    let mut cmd = Command::new(synod_bin());
    cmd.arg("restore")
        .arg(&bad)
        .arg("--data-dir")
        .arg(copy.data_dir(1).with_extension("other"))
        .arg("--id=1")
        .arg("--peers")
        .arg(copy.peers_flag());
    let out = run(&mut cmd, Duration::from_secs(20));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("SHA-256 does not match"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn space_quota_raises_nospace_and_refuses_only_growth() {
    let mut cluster = Cluster::start_with(3, &["--quota-backend-bytes", "1"]);
    bounded("ready", Duration::from_secs(20), cluster.wait_ready()).await;
    let all = cluster.host_ports();
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let out = etcdctl(&all, &["alarm", "list"], None);
        if out.contains("alarm:NOSPACE") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no NOSPACE alarm: {out}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let out = etcdctl_output(&all, &["put", "k", "v"], None);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("database space exceeded"), "{err}");
    // Reads and deletes still work.
    assert_eq!(etcdctl(&all, &["get", "k"], None), "");
    assert_eq!(etcdctl(&all, &["del", "k"], None), "0\n");
    let out = etcdctl(&all, &["endpoint", "status"], None);
    assert!(
        out.contains("alarm:NOSPACE"),
        "status shows the alarm: {out}"
    );
    let out = etcdctl(&all, &["alarm", "disarm"], None);
    assert!(out.contains("alarm:NOSPACE"), "{out}");
}
