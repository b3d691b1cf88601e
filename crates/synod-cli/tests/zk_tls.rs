//! ZooKeeper's secure client port (`--zk-secure-addr`, ZooKeeper's
//! `secureClientPort`) driven by kazoo over TLS, as a user would: digest
//! ACLs and `addauth` over TLS, four-letter words there, the plain port
//! serving beside it, and with `--client-cert-auth` refusals of plain
//! text, of a certificate from another CA and of no certificate; without
//! a certificate the server does not start. Certificates are made in the
//! test with rcgen.
//!
//! Needs a Python with kazoo (`SYNOD_KAZOO_PYTHON`, else
//! `target/kazoo-venv`, else `python3`), as `zookeeper.rs` does; the
//! script fails saying how to install it.

mod common;

use common::certs::{arg, write, Ca};
use common::kazoo::kazoo;
use common::{bounded, free_addr, http_get, wait_listening, Cluster, READY_TIMEOUT};
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread")]
async fn kazoo_over_tls_with_digest_acls_and_client_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("synod test CA");
    let (server_cert, server_key) = ca.issue(&["127.0.0.1", "localhost"], "synod server");
    let (client_cert, client_key) = ca.issue(&[], "zk client");
    let foreign = Ca::new("another CA");
    let (foreign_cert, foreign_key) = foreign.issue(&[], "zk client");
    let ca_file = write(dir.path(), "ca.pem", &ca.pem());
    let cert_file = write(dir.path(), "server.pem", &server_cert);
    let key_file = write(dir.path(), "server-key.pem", &server_key);
    let client_file = write(dir.path(), "client.pem", &client_cert);
    let client_key_file = write(dir.path(), "client-key.pem", &client_key);
    let foreign_file = write(dir.path(), "foreign.pem", &foreign_cert);
    let foreign_key_file = write(dir.path(), "foreign-key.pem", &foreign_key);
    let secure = free_addr();
    let flags = [
        "--cert-file".to_string(),
        arg(&cert_file),
        "--key-file".to_string(),
        arg(&key_file),
        "--trusted-ca-file".to_string(),
        arg(&ca_file),
        "--client-cert-auth".to_string(),
        "--zk-secure-addr".to_string(),
        secure.to_string(),
    ];
    let flags: Vec<&str> = flags.iter().map(|s| s.as_str()).collect();
    bounded("ZooKeeper over TLS", Duration::from_secs(240), async {
        let mut cluster = Cluster::start_with(1, &flags);
        // The etcd API is under TLS too (the same flags); the plain HTTP
        // endpoint says when the node serves.
        let url = format!("{}/health", cluster.http_url(1));
        let deadline = Instant::now() + READY_TIMEOUT;
        while http_get(&url).map(|(c, _)| c).ok() != Some(200) {
            cluster.assert_alive();
            assert!(Instant::now() < deadline, "the node never became healthy");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert!(
            wait_listening(secure, READY_TIMEOUT),
            "nothing listens at --zk-secure-addr {secure}"
        );
        let plain = cluster.addrs(1).zk.to_string();
        let out = kazoo(
            "kazoo_tls.py",
            &[
                &secure.to_string(),
                &plain,
                &arg(&ca_file),
                &arg(&client_file),
                &arg(&client_key_file),
                &arg(&foreign_file),
                &arg(&foreign_key_file),
            ],
            &[
                "digest_acl",
                "plain_port",
                "four_letter_words",
                "plain_refused",
                "foreign_refused",
                "no_cert_refused",
            ],
            Duration::from_secs(180),
        );
        eprintln!("{out}");
        cluster.assert_alive();
    })
    .await;
}

#[test]
fn zk_secure_addr_without_a_certificate_stops_the_server_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(common::synod_bin())
        .args(["server", "--id", "1", "--peers", "1=127.0.0.1:1"])
        .args(["--client-addr", "127.0.0.1:0", "--peer-addr", "127.0.0.1:1"])
        .args(["--data-dir", &arg(&dir.path().join("data"))])
        .args(["--zk-secure-addr", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(!out.status.success(), "started without a certificate");
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(
        e.contains("--zk-secure-addr needs --cert-file and --key-file"),
        "{e}"
    );
}
