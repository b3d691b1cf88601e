//! `synod server` refuses a bad configuration at once, with a message that
//! names the problem, and explains its flags.

mod common;

use common::{free_addr, run, synod_bin, wait_listening, Proc};
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

/// `synod server` for node `id` of a three-node cluster whose peer
/// addresses are `peers`, exits within `limit` (a process that keeps running
/// is killed and the test fails).
fn server(id: u64, dir: &Path, client: SocketAddr, peers: &[SocketAddr; 3]) -> Output {
    run(
        Command::new(synod_bin()).args(server_args(id, dir, client, peers)),
        Duration::from_secs(10),
    )
}

fn server_args(id: u64, dir: &Path, client: SocketAddr, peers: &[SocketAddr; 3]) -> Vec<String> {
    let list = peers
        .iter()
        .enumerate()
        .map(|(i, a)| format!("{}={a}", i + 1))
        .collect::<Vec<_>>()
        .join(",");
    vec![
        "server".into(),
        "--id".into(),
        id.to_string(),
        "--data-dir".into(),
        dir.display().to_string(),
        "--client-addr".into(),
        client.to_string(),
        "--peer-addr".into(),
        peers[id as usize - 1].to_string(),
        "--peers".into(),
        list,
    ]
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn bad_configuration_is_reported_clearly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let peers = [free_addr(), free_addr(), free_addr()];

    // A client port that another process holds.
    let busy = TcpListener::bind("127.0.0.1:0").expect("bind");
    let busy_addr = busy.local_addr().expect("addr");
    let out = server(1, &dir.path().join("busy-client"), busy_addr, &peers);
    assert!(!out.status.success(), "started on a busy client port");
    let err = stderr(&out);
    assert!(
        err.contains(&busy_addr.to_string()),
        "stderr names {busy_addr}: {err}"
    );
    assert!(err.contains("cannot listen"), "stderr: {err}");

    // A peer port that another process holds.
    let busy_peer = TcpListener::bind("127.0.0.1:0").expect("bind");
    let busy_peer_addr = busy_peer.local_addr().expect("addr");
    let mine = [busy_peer_addr, peers[1], peers[2]];
    let out = server(1, &dir.path().join("busy-peer"), free_addr(), &mine);
    assert!(!out.status.success(), "started on a busy peer port");
    let err = stderr(&out);
    assert!(
        err.contains(&busy_peer_addr.to_string()),
        "stderr names {busy_peer_addr}: {err}"
    );
    drop((busy, busy_peer));

    // A data dir that belongs to node 1, given to node 2.
    let shared = dir.path().join("node1");
    let client1 = free_addr();
    let log = dir.path().join("node1.log");
    let mut node1 = Proc::spawn(
        &synod_bin(),
        &server_args(1, &shared, client1, &peers),
        &log,
    );
    // The peer port listens once the data dir is open (and recorded as
    // node 1's).
    assert!(
        wait_listening(peers[0], Duration::from_secs(10)),
        "node 1 did not start: {}",
        common::tail(&log, 20)
    );
    assert!(node1.exited().is_none(), "node 1 runs");
    node1.kill();
    let out = server(2, &shared, free_addr(), &peers);
    assert!(!out.status.success(), "node 2 started on node 1's data dir");
    let err = stderr(&out);
    assert!(err.contains("belongs to node 1"), "stderr: {err}");
    assert!(err.contains("node id differs"), "stderr: {err}");
    assert!(
        err.contains(&shared.display().to_string()),
        "stderr names the dir: {err}"
    );
    // Node 1 still starts on its own data dir.
    let mut node1 = Proc::spawn(
        &synod_bin(),
        &server_args(1, &shared, client1, &peers),
        &log,
    );
    assert!(
        wait_listening(peers[0], Duration::from_secs(10)),
        "node 1 did not restart: {}",
        common::tail(&log, 20)
    );
    node1.kill();

    // --peers that do not list this node at its --peer-addr.
    let out = run(
        Command::new(synod_bin()).args([
            "server",
            "--id",
            "4",
            "--data-dir",
            &dir.path().join("n4").display().to_string(),
            "--client-addr",
            &free_addr().to_string(),
            "--peer-addr",
            &free_addr().to_string(),
            "--peers",
            &format!("1={},2={},3={}", peers[0], peers[1], peers[2]),
        ]),
        Duration::from_secs(10),
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("--peers must list this node (4)"),
        "stderr: {}",
        stderr(&out)
    );

    // --help explains every flag and exits 0.
    let out = run(
        Command::new(synod_bin()).args(["server", "--help"]),
        Duration::from_secs(10),
    );
    assert!(out.status.success(), "--help failed: {}", stderr(&out));
    let help = String::from_utf8(out.stdout).expect("utf-8");
    for flag in [
        "--id",
        "--data-dir",
        "--client-addr",
        "--peer-addr",
        "--peers",
        "--clients",
    ] {
        assert!(help.contains(flag), "--help mentions {flag}: {help}");
    }
    assert!(help.contains("Run one node of a cluster"), "{help}");
    assert!(help.contains("1=10.0.0.1:2380,2=10.0.0.2:2380"), "{help}");
}
