//! `synod lab` prints the protocol lab's runs (as JSON for the dashboard,
//! as timelines for people), and `synod propose` is basic Paxos's
//! `propose(var, V) => <ok, f>` against a real cluster.

mod common;

use common::{bounded, run, synod_bin, Cluster};
use std::process::{Command, Output};
use std::time::Duration;

fn synod(args: &[&str]) -> Output {
    run(
        Command::new(synod_bin()).args(args),
        Duration::from_secs(30),
    )
}

fn stdout(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).expect("utf-8 stdout")
}

#[test]
fn lab_paxos_json_has_every_scenario_with_its_verdict() {
    let out = synod(&["lab", "paxos", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let runs: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("JSON");
    let runs = runs.as_array().expect("an array of runs");
    let verdicts: Vec<(&str, &str)> = runs
        .iter()
        .map(|r| {
            assert_eq!(r["protocol"], "paxos");
            (
                r["scenario"].as_str().unwrap(),
                r["verdict"]["kind"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        verdicts,
        [
            ("design1", "Chosen"),
            ("design1-deadlock", "Deadlock"),
            ("design2-preempt", "Chosen"),
            ("design2-endorse", "Chosen"),
            ("design3-chosen", "Chosen"),
            ("design3-seen", "Chosen"),
            ("design3-unseen", "Chosen"),
            ("duel", "Livelock"),
            ("duel-leader", "Chosen"),
        ]
    );
    // Design three, case 1: server 5's accept carries X, which S3 showed it.
    let case1 = runs
        .iter()
        .find(|r| r["scenario"] == "design3-chosen")
        .unwrap();
    assert_eq!(
        case1["nodes"],
        serde_json::json!(["S1", "S2", "S3", "S4", "S5"])
    );
    let steps = case1["steps"].as_array().unwrap();
    assert!(steps
        .iter()
        .any(|s| s["kind"] == "Send" && s["from"] == "S5" && s["what"] == "accept(b=4.5, X)"));
    for s in steps {
        assert!(s["at"].is_u64());
        assert_eq!(s["states"].as_array().unwrap().len(), 5);
    }
    assert!(case1["verdict"]["summary"]
        .as_str()
        .unwrap()
        .contains("var = X"));
}

#[test]
fn lab_prints_timelines_and_refuses_unknown_scenarios() {
    let out = synod(&["lab", "2pc", "--scenario", "textbook-crash"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = stdout(&out);
    assert!(text.contains("CRASH     C "), "{text}");
    assert!(
        text.contains("verdict: Blocked: P2, P3 cannot decide T1"),
        "{text}"
    );

    let out = synod(&[
        "lab",
        "3pc",
        "--scenario",
        "textbook-partition",
        "--replay-ms",
        "1",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = stdout(&out);
    assert!(text.lines().any(|l| l.starts_with("[ 1/")), "{text}");
    assert!(text.contains("verdict: Inconsistent"), "{text}");

    let out = synod(&["lab", "paxos", "--scenario", "nope"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("design3-chosen"), "names the scenarios: {err}");

    let out = synod(&["lab", "raft"]);
    assert!(!out.status.success());

    let out = synod(&["lab", "--help"]);
    assert!(stdout(&out).contains("synod lab paxos --scenario design3-chosen"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn propose_returns_the_first_chosen_value() {
    let mut cluster = Cluster::start(3);
    let leader = bounded("ready", Duration::from_secs(20), cluster.wait_ready()).await;
    let all = cluster.host_ports().join(",");
    let other = cluster
        .ids()
        .into_iter()
        .find(|id| *id != leader)
        .map(|id| cluster.addrs(id).client.to_string())
        .unwrap();
    let propose = |endpoints: String, value: &'static str| {
        tokio::task::spawn_blocking(move || {
            synod(&["propose", "x", value, "--endpoints", &endpoints])
        })
    };
    let first = propose(all, "A").await.unwrap();
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    assert_eq!(stdout(&first).trim(), "<ok, A>");
    // Through another node: x was chosen, B is not.
    let second = propose(other, "B").await.unwrap();
    assert!(
        second.status.success(),
        "{}",
        String::from_utf8_lossy(&second.stderr)
    );
    assert_eq!(stdout(&second).trim(), "<ok, A>");
    let mut c = cluster.client(leader).await;
    let got = c.get("x", None).await.expect("get");
    assert_eq!(got.kvs()[0].value(), b"A");
    cluster.assert_alive();
}
