//! `synod lab`: the textbook protocols in the deterministic simulator of
//! `synod-lab`, printed as timelines with verdicts; and `synod propose`:
//! seed 000's `propose(var, V) => <ok, f>` against a live cluster.

use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use clap::Args;
use std::io::Write as _;
use std::time::Duration;
use synod_proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use synod_proto::etcdserverpb::kv_client::KvClient;
use synod_proto::etcdserverpb::request_op::Request;
use synod_proto::etcdserverpb::response_op::Response;
use synod_proto::etcdserverpb::{Compare, PutRequest, RangeRequest, RequestOp, TxnRequest};
use tonic::transport::Endpoint;

/// Flags of `synod lab`.
#[derive(Args, Debug)]
pub struct LabArgs {
    /// The protocol to run.
    #[arg(value_parser = clap::builder::PossibleValuesParser::new(synod_lab::protocols().iter().copied()))]
    protocol: String,
    /// Run only this scenario (default: every scenario of the protocol, in
    /// order). `--list` names them.
    #[arg(long)]
    scenario: Option<String>,
    /// List the protocol's scenarios with what each shows, and exit.
    #[arg(long)]
    list: bool,
    /// Print the runs as a JSON array (what the dashboard reads) instead of
    /// timelines.
    #[arg(long, conflicts_with = "replay_ms")]
    json: bool,
    /// Replay: print the steps one by one, N milliseconds apart, each with
    /// its position in the run.
    #[arg(long, value_name = "N")]
    replay_ms: Option<u64>,
}

/// Flags of `synod propose`.
#[derive(Args, Debug)]
pub struct ProposeArgs {
    /// The variable: an etcd key.
    var: String,
    /// The value to propose.
    value: String,
    /// etcd v3 client endpoints (synod or etcd), comma-separated HOST:PORT,
    /// tried in order until one answers.
    #[arg(long, value_delimiter = ',', default_value = "127.0.0.1:2379")]
    endpoints: Vec<String>,
}

/// Runs `synod lab`.
pub async fn lab(args: LabArgs) -> Result<()> {
    let protocol = args.protocol.as_str();
    let scenarios = synod_lab::scenarios(protocol);
    if args.list {
        for s in &scenarios {
            println!("{}: {}\n  {}\n", s.name, s.title, s.about);
        }
        return Ok(());
    }
    let runs = match &args.scenario {
        None => synod_lab::run_all(protocol),
        Some(name) => vec![synod_lab::run(protocol, name).ok_or_else(|| {
            let names: Vec<&str> = scenarios.iter().map(|s| s.name.as_str()).collect();
            anyhow!(
                "{protocol} has no scenario {name:?}; choose one of: {}",
                names.join(", ")
            )
        })?],
    };
    if args.json {
        let all: Vec<String> = runs.iter().map(synod_lab::to_json).collect();
        println!("[{}]", all.join(","));
        return Ok(());
    }
    let mut out = std::io::stdout().lock();
    for (k, run) in runs.iter().enumerate() {
        if k > 0 {
            writeln!(out)?;
        }
        match args.replay_ms {
            None => write!(out, "{}", synod_lab::render(run))?,
            Some(ms) => {
                write!(out, "{}", synod_lab::render_header(run))?;
                let n = run.steps.len();
                for i in 0..n {
                    writeln!(
                        out,
                        "[{:>w$}/{n}] {}",
                        i + 1,
                        synod_lab::render_step(run, i),
                        w = n.to_string().len()
                    )?;
                    out.flush()?;
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                }
                writeln!(out, "{}", synod_lab::render_verdict(run))?;
            }
        }
    }
    Ok(())
}

/// `HOST:PORT` from `HOST:PORT` or `http://HOST:PORT`.
fn host_port(s: &str) -> Result<String> {
    let s = s.trim();
    if s.starts_with("https://") {
        bail!("{s}: TLS endpoints are not supported");
    }
    let hp = s.strip_prefix("http://").unwrap_or(s).trim_end_matches('/');
    match hp.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0) => {
            Ok(hp.to_string())
        }
        _ => bail!("{s}: expected HOST:PORT, e.g. 127.0.0.1:2379"),
    }
}

/// Basic Paxos's contract on an etcd key: write `value` only if the key was
/// never created, otherwise read what is there. One Txn, so it is atomic
/// and a retry after a lost answer is harmless (the retry reads the value
/// the first attempt wrote).
fn proposal(var: &str, value: &str) -> TxnRequest {
    let key = Bytes::from(var.to_string());
    TxnRequest {
        compare: vec![Compare {
            result: CompareResult::Equal as i32,
            target: CompareTarget::Create as i32,
            key: key.clone(),
            target_union: Some(TargetUnion::CreateRevision(0)),
            ..Default::default()
        }],
        success: vec![RequestOp {
            request: Some(Request::RequestPut(PutRequest {
                key: key.clone(),
                value: Bytes::from(value.to_string()),
                ..Default::default()
            })),
        }],
        failure: vec![RequestOp {
            request: Some(Request::RequestRange(RangeRequest {
                key,
                ..Default::default()
            })),
        }],
    }
}

async fn propose_at(endpoint: &str, var: &str, value: &str) -> Result<String> {
    let channel = Endpoint::from_shared(format!("http://{endpoint}"))
        .with_context(|| format!("bad endpoint {endpoint}"))?
        .connect_timeout(Duration::from_secs(3))
        .timeout(Duration::from_secs(5))
        .connect()
        .await
        .with_context(|| format!("cannot connect to {endpoint} (is the server running?)"))?;
    let answer = KvClient::new(channel)
        .txn(proposal(var, value))
        .await
        .map_err(|s| anyhow!("{endpoint}: {:?}: {}", s.code(), s.message()))?
        .into_inner();
    if answer.succeeded {
        return Ok(value.to_string());
    }
    let kv = answer
        .responses
        .into_iter()
        .find_map(|r| match r.response {
            Some(Response::ResponseRange(range)) => range.kvs.into_iter().next(),
            _ => None,
        })
        .ok_or_else(|| anyhow!("{endpoint}: {var} exists but the read returned nothing"))?;
    Ok(String::from_utf8_lossy(&kv.value).into_owned())
}

/// Runs `synod propose`: prints `<ok, f>`, f being the value chosen for the
/// variable (the proposed one if it was first), or `<error>`.
pub async fn propose(args: ProposeArgs) -> Result<()> {
    let endpoints = args
        .endpoints
        .iter()
        .map(|e| host_port(e))
        .collect::<Result<Vec<_>>>()?;
    let mut failures = Vec::new();
    for endpoint in &endpoints {
        match propose_at(endpoint, &args.var, &args.value).await {
            Ok(f) => {
                println!("<ok, {f}>");
                return Ok(());
            }
            Err(e) => failures.push(format!("{e:#}")),
        }
    }
    println!("<error>");
    bail!(
        "propose({}, {}) failed on every endpoint: {}",
        args.var,
        args.value,
        failures.join("; ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_accept_an_http_prefix_only() {
        assert_eq!(
            host_port("http://127.0.0.1:2379/").unwrap(),
            "127.0.0.1:2379"
        );
        assert_eq!(host_port("localhost:2379").unwrap(), "localhost:2379");
        assert!(host_port("https://127.0.0.1:2379").is_err());
        assert!(host_port("127.0.0.1").is_err());
        assert!(host_port(":2379").is_err());
    }

    #[test]
    fn a_proposal_writes_only_a_never_created_key() {
        let t = proposal("x", "A");
        assert_eq!(t.compare.len(), 1);
        assert_eq!(t.compare[0].target, CompareTarget::Create as i32);
        assert_eq!(
            t.compare[0].target_union,
            Some(TargetUnion::CreateRevision(0))
        );
        assert!(matches!(t.success[0].request, Some(Request::RequestPut(_))));
        assert!(matches!(
            t.failure[0].request,
            Some(Request::RequestRange(_))
        ));
    }
}
