//! The etcd API over TLS, driven by etcdctl as a user would: `https://`
//! endpoints with `--cacert`, client certificates with
//! `--client-cert-auth`, refusals without them, certificates renewed
//! without a restart, and bad files refused at start with the reason.
//! Certificates are made in the test with rcgen.

mod common;

use common::certs::{arg, write, Ca};
use common::{bounded, etcdctl_output, http_get, Cluster};
use std::time::{Duration, Instant};

/// etcdctl's exit status and output for `args` against `endpoints`.
fn etcdctl(endpoints: &[String], args: &[&str]) -> (bool, String) {
    let out = etcdctl_output(endpoints, args, None);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[tokio::test(flavor = "multi_thread")]
async fn etcdctl_over_tls_with_client_certificates_and_a_renewed_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("synod test CA");
    let (server_cert, server_key) = ca.issue(&["127.0.0.1", "localhost"], "synod server");
    let (client_cert, client_key) = ca.issue(&[], "root");
    let ca_file = write(dir.path(), "ca.pem", &ca.pem());
    let cert_file = write(dir.path(), "server.pem", &server_cert);
    let key_file = write(dir.path(), "server-key.pem", &server_key);
    let client_file = write(dir.path(), "client.pem", &client_cert);
    let client_key_file = write(dir.path(), "client-key.pem", &client_key);
    let flags = [
        "--cert-file".to_string(),
        arg(&cert_file),
        "--key-file".to_string(),
        arg(&key_file),
        "--trusted-ca-file".to_string(),
        arg(&ca_file),
        "--client-cert-auth".to_string(),
    ];
    let flags: Vec<&str> = flags.iter().map(|s| s.as_str()).collect();
    bounded("etcd over TLS", Duration::from_secs(120), async {
        let mut cluster = Cluster::start_with(3, &flags);
        // The HTTP endpoint stays plain: it says when the cluster serves.
        let deadline = Instant::now() + Duration::from_secs(30);
        for id in cluster.ids() {
            let url = format!("{}/health", cluster.http_url(id));
            while http_get(&url).map(|(c, _)| c).ok() != Some(200) {
                cluster.assert_alive();
                assert!(Instant::now() < deadline, "node {id} never healthy");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        let https: Vec<String> = cluster
            .host_ports()
            .iter()
            .map(|h| format!("https://{h}"))
            .collect();
        let (ca_arg, cert_arg, key_arg) = (
            format!("--cacert={}", arg(&ca_file)),
            format!("--cert={}", arg(&client_file)),
            format!("--key={}", arg(&client_key_file)),
        );
        let tls = [ca_arg.as_str(), cert_arg.as_str(), key_arg.as_str()];
        // With the CA and a client certificate: a user's put and get.
        let (ok, out) = etcdctl(&https, &[&tls[..], &["put", "secure", "yes"]].concat());
        assert!(ok, "{out}");
        let (ok, out) = etcdctl(
            &https,
            &[&tls[..], &["get", "secure", "--print-value-only"]].concat(),
        );
        assert!(ok && out.trim() == "yes", "{out}");
        // Without a client certificate, with an unknown CA, or in the
        // clear: refused.
        // The member list advertises the https:// URLs it serves.
        let (ok, out) = etcdctl(&https, &[&tls[..], &["member", "list"]].concat());
        assert!(ok && out.matches("https://127.0.0.1").count() == 3, "{out}");
        let (ok, out) = etcdctl(&https, &[ca_arg.as_str(), "get", "secure"]);
        assert!(!ok, "no client certificate, yet: {out}");
        let other = Ca::new("another CA");
        let other_file = write(dir.path(), "other.pem", &other.pem());
        let other_arg = format!("--cacert={}", arg(&other_file));
        let (ok, out) = etcdctl(
            &https,
            &[
                other_arg.as_str(),
                cert_arg.as_str(),
                key_arg.as_str(),
                "get",
                "secure",
            ],
        );
        assert!(!ok, "an unknown CA, yet: {out}");
        let (ok, out) = etcdctl(&cluster.host_ports(), &["get", "secure"]);
        assert!(!ok, "plain text, yet: {out}");
        // A renewed server certificate from a new CA is picked up without
        // a restart: clients trusting the new CA get in, the old CA not.
        let renewed = Ca::new("renewed CA");
        let (cert, key) = renewed.issue(&["127.0.0.1"], "synod server, renewed");
        let renewed_file = write(dir.path(), "renewed.pem", &renewed.pem());
        // Key first: a reload between the two writes fails to match them
        // and keeps the working pair until both are in place.
        std::fs::write(&key_file, key).unwrap();
        std::fs::write(&cert_file, cert).unwrap();
        let renewed_arg = format!("--cacert={}", arg(&renewed_file));
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let (ok, out) = etcdctl(
                &https,
                &[
                    renewed_arg.as_str(),
                    cert_arg.as_str(),
                    key_arg.as_str(),
                    "get",
                    "secure",
                    "--print-value-only",
                ],
            );
            if ok && out.trim() == "yes" {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the renewed certificate was never served: {out}"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let (ok, out) = etcdctl(&https, &[&tls[..], &["get", "secure"]].concat());
        assert!(!ok, "the old CA still accepted: {out}");
        cluster.assert_alive();
    })
    .await;
}

#[test]
fn bad_tls_settings_stop_the_server_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let garbage = write(dir.path(), "garbage.pem", "not a certificate");
    let ca = Ca::new("synod test CA");
    let (cert, _) = ca.issue(&["127.0.0.1"], "server");
    let (_, other_key) = ca.issue(&["127.0.0.1"], "someone else");
    let cert_file = write(dir.path(), "cert.pem", &cert);
    let wrong_key = write(dir.path(), "wrong-key.pem", &other_key);
    let data = dir.path().join("data");
    let run = |extra: &[&str]| common::start_refusal(&data, extra);
    let e = run(&[
        "--cert-file",
        &arg(&garbage),
        "--key-file",
        &arg(&wrong_key),
    ]);
    assert!(
        e.contains("garbage.pem") && e.contains("no PEM certificate"),
        "{e}"
    );
    let e = run(&[
        "--cert-file",
        &arg(&cert_file),
        "--key-file",
        &arg(&wrong_key),
    ]);
    assert!(e.contains("does not fit the certificate"), "{e}");
    let e = run(&["--cert-file", &arg(&cert_file)]);
    assert!(e.contains("--cert-file and --key-file go together"), "{e}");
    let e = run(&[
        "--cert-file",
        &arg(&cert_file),
        "--key-file",
        &arg(&wrong_key),
        "--client-cert-auth",
    ]);
    assert!(
        e.contains("--client-cert-auth needs --trusted-ca-file"),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn peers_talk_over_tls_and_refuse_plain_text() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("synod peer CA");
    let (cert, key) = ca.issue(&["127.0.0.1"], "synod peer");
    let ca_file = write(dir.path(), "peer-ca.pem", &ca.pem());
    let cert_file = write(dir.path(), "peer.pem", &cert);
    let key_file = write(dir.path(), "peer-key.pem", &key);
    let flags = [
        "--peer-cert-file".to_string(),
        arg(&cert_file),
        "--peer-key-file".to_string(),
        arg(&key_file),
        "--peer-trusted-ca-file".to_string(),
        arg(&ca_file),
        "--peer-client-cert-auth".to_string(),
    ];
    let flags: Vec<&str> = flags.iter().map(|s| s.as_str()).collect();
    bounded("peer TLS", Duration::from_secs(120), async {
        let mut cluster = Cluster::start_with(3, &flags);
        // An election and forwarded writes need the peers to talk.
        let leader = cluster.wait_ready().await;
        let follower = cluster.ids().into_iter().find(|i| *i != leader).unwrap();
        let via_follower = [cluster.host_ports()[follower as usize - 1].clone()];
        let (ok, out) = etcdctl(&via_follower, &["put", "over-tls", "1"]);
        assert!(ok, "{out}");
        let (ok, out) = etcdctl(
            &cluster.host_ports(),
            &["get", "over-tls", "--print-value-only"],
        );
        assert!(ok && out.trim() == "1", "{out}");
        // A plain-text peer call gets no answer from the TLS port.
        let plain = synod_proto::peerpb::peer_client::PeerClient::connect(format!(
            "http://{}",
            cluster.addrs(leader).peer
        ))
        .await;
        if let Ok(mut client) = plain {
            let r = client
                .report(synod_proto::peerpb::ReportRequest { cluster_id: 0 })
                .await;
            assert!(r.is_err(), "a plain-text peer call was answered: {r:?}");
        }
        // The old leader killed: the others elect over TLS, and it rejoins.
        cluster.kill(leader);
        let new = cluster.wait_ready().await;
        assert_ne!(new, leader);
        cluster.spawn(leader);
        cluster.wait_ready().await;
        let only_old = [cluster.host_ports()[leader as usize - 1].clone()];
        let (ok, out) = etcdctl(&only_old, &["get", "over-tls", "--print-value-only"]);
        assert!(ok && out.trim() == "1", "{out}");
        cluster.assert_alive();
    })
    .await;
}
