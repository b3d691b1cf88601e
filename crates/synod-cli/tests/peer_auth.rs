//! Who may talk to a node's peer port: with `--peer-secret-file`, a call
//! without the cluster's token is refused before anything reaches the
//! core; without it, batches from nodes that are not members are dropped
//! (they could otherwise forward commands into the log).

mod common;

use common::{bounded, Cluster};
use std::time::Duration;
use synod_proto::peerpb::{peer_client::PeerClient, Batch, ReportRequest};
use synod_proto::synodpb::{command::Op, Command};
use tonic::Code;

/// A put of `key` as a peer would forward it to the leader, as the
/// `seq`th command of one forged session.
fn forwarded_put(key: &str, seq: u64) -> Vec<u8> {
    use prost::Message as _;
    Command {
        client: 0xbad,
        seq,
        op: Some(Op::Put(synod_proto::etcdserverpb::PutRequest {
            key: key.as_bytes().to_vec().into(),
            value: b"forged".to_vec().into(),
            ..Default::default()
        })),
        ..Default::default()
    }
    .encode_to_vec()
}

async fn peer(cluster: &Cluster, id: u64) -> PeerClient<tonic::transport::Channel> {
    PeerClient::connect(format!("http://{}", cluster.addrs(id).peer))
        .await
        .expect("peer port")
}

/// Sends one batch on a fresh peer stream; the call's own result.
async fn send_batch(cluster: &Cluster, to: u64, batch: Batch) -> Result<(), tonic::Status> {
    let mut client = peer(cluster, to).await;
    client
        .stream(tokio_stream::iter(vec![batch]))
        .await
        .map(|_| ())
}

#[tokio::test(flavor = "multi_thread")]
async fn with_a_secret_calls_without_the_token_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("peer-secret");
    std::fs::write(&secret, "a cluster secret of enough bytes\n").unwrap();
    let secret_flag = secret.display().to_string();
    bounded("peer secret", Duration::from_secs(90), async {
        let mut cluster = Cluster::start_with(3, &["--peer-secret-file", &secret_flag]);
        // The members prove the secret to each other: they elect and serve.
        let leader = cluster.wait_ready().await;
        let endpoints = cluster.host_ports();
        common::etcdctl(&endpoints, &["put", "k", "v"], None);
        let cluster_id = cluster
            .client(leader)
            .await
            .status()
            .await
            .unwrap()
            .header()
            .unwrap()
            .cluster_id();
        // A caller without the token: every peer call is refused.
        let batch = Batch {
            from: 2,
            cluster_id,
            forwards: vec![forwarded_put("forged", 1).into()],
            ..Batch::default()
        };
        let e = send_batch(&cluster, leader, batch).await.unwrap_err();
        assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
        assert!(e.message().contains("peer authentication failed"), "{e:?}");
        let e = peer(&cluster, leader)
            .await
            .report(ReportRequest { cluster_id })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::Unauthenticated);
        let got = common::etcdctl(&endpoints, &["get", "forged"], None);
        assert_eq!(got.trim(), "", "a forged command was applied");
        // A secret too short is refused at start, with the reason.
        let short = dir.path().join("short");
        std::fs::write(&short, "short").unwrap();
        let out = std::process::Command::new(common::synod_bin())
            .args(["server", "--id", "1", "--peers", "1=127.0.0.1:1"])
            .args(["--client-addr", "127.0.0.1:1", "--peer-addr", "127.0.0.1:1"])
            .args(["--data-dir", &dir.path().join("x").display().to_string()])
            .args(["--peer-secret-file", &short.display().to_string()])
            .output()
            .unwrap();
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("use at least 16"), "{stderr}");
        cluster.assert_alive();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn batches_from_non_members_are_dropped() {
    bounded("non-members", Duration::from_secs(90), async {
        let mut cluster = Cluster::start(3);
        let leader = cluster.wait_ready().await;
        let endpoints = cluster.host_ports();
        let cluster_id = cluster
            .client(leader)
            .await
            .status()
            .await
            .unwrap()
            .header()
            .unwrap()
            .cluster_id();
        // Node 99 is no member: its forwarded put must not apply.
        let stranger = Batch {
            from: 99,
            cluster_id,
            forwards: vec![forwarded_put("from-a-stranger", 1).into()],
            ..Batch::default()
        };
        let _ = send_batch(&cluster, leader, stranger).await;
        // The same batch claiming another cluster is dropped too.
        let foreign = Batch {
            from: 2,
            cluster_id: cluster_id ^ 1,
            forwards: vec![forwarded_put("from-another-cluster", 1).into()],
            ..Batch::default()
        };
        let _ = send_batch(&cluster, leader, foreign).await;
        // A member's forward, by contrast, is proposed (the control: the
        // forged command itself is well formed).
        let member = cluster.ids().into_iter().find(|i| *i != leader).unwrap();
        // It carries other groups' batches nested (one message per peer
        // per round): a nested one from the same member is stepped, one
        // naming another sender is dropped.
        let nested = |from: u64, key: &str, seq: u64| Batch {
            from,
            cluster_id,
            forwards: vec![forwarded_put(key, seq).into()],
            ..Batch::default()
        };
        let control = Batch {
            from: member,
            cluster_id,
            forwards: vec![forwarded_put("from-a-member", 1).into()],
            more: vec![
                nested(99, "from-a-nested-stranger", 3),
                nested(member, "from-a-nested-member", 2),
            ],
            ..Batch::default()
        };
        send_batch(&cluster, leader, control).await.unwrap();
        let mut seen = String::new();
        for _ in 0..50 {
            seen = common::etcdctl(&endpoints, &["get", "--prefix", "from-"], None);
            if seen.contains("from-a-member") && seen.contains("from-a-nested-member") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(
            seen.contains("from-a-member") && seen.contains("from-a-nested-member"),
            "the controls never applied: {seen:?}"
        );
        assert!(!seen.contains("from-a-stranger"), "{seen}");
        assert!(!seen.contains("from-a-nested-stranger"), "{seen}");
        assert!(!seen.contains("from-another-cluster"), "{seen}");
        cluster.assert_alive();
    })
    .await;
}
