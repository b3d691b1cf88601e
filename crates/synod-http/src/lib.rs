//! A node's HTTP endpoint (`--metrics-addr`): what the people who run
//! synod and the people who learn from it look at.
//!
//! | path | what |
//! | --- | --- |
//! | `/metrics` | Prometheus text format: synod's metrics and etcd's well-known names |
//! | `/health` | etcd's health check: JSON `{"health":"true","reason":""}`, 503 when unhealthy |
//! | `/livez`, `/readyz` | etcd 3.5's probes: `ok`, or the failed checks with 503 (`?verbose` lists them all) |
//! | `/` | the live dashboard (one page, no external assets) |
//! | `/api/cluster` | every member's report as JSON (what the dashboard draws) |
//! | `/api/stream` | the same, pushed once a second as server-sent events |
//! | `/api/lab`, `/api/lab/{protocol}/{scenario}` | the protocol lab's runs, for the dashboard's replay |
//!
//! It only reads: nothing here can change the cluster.

mod json;
mod lab;

use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use synod_proto::etcdserverpb::RangeRequest;
use synod_server::{Metrics, Node};
use tokio_stream::StreamExt;

/// How long a health check's linearizable read may take (etcd allows a
/// request timeout; a dashboard probe should answer sooner).
const HEALTH_READ_TIMEOUT: Duration = Duration::from_secs(2);
/// How often the dashboard's stream pushes the cluster's reports.
const STREAM_EVERY: Duration = Duration::from_secs(1);

/// The dashboard page.
const DASHBOARD: &str = include_str!("dashboard.html");

/// The routes of one node's endpoint.
pub fn router(node: Arc<Node>) -> Router {
    Router::new()
        .route("/", get(dashboard))
        .route("/metrics", get(metrics))
        .route("/health", get(health))
        .route("/livez", get(livez))
        .route("/readyz", get(readyz))
        .route("/api/cluster", get(cluster))
        .route("/api/shards", get(shards))
        .route("/api/split", axum::routing::post(split))
        .route("/api/stream", get(stream))
        .route("/api/lab", get(lab::list))
        .route("/api/lab/{protocol}/{scenario}", get(lab::run))
        .with_state(node)
}

/// Serves `node`'s endpoint on `listener` until the node stops.
pub async fn serve(node: Arc<Node>, listener: tokio::net::TcpListener) -> std::io::Result<()> {
    if let Ok(addr) = listener.local_addr() {
        node.set_http_addr(addr);
    }
    let app = router(Arc::clone(&node));
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { node.stopped().await })
        .await
}

/// Binds the HTTP address, with an error an operator can act on.
pub async fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await
}

async fn dashboard() -> Html<&'static str> {
    Html(DASHBOARD)
}

async fn metrics(State(node): State<Arc<Node>>) -> Response {
    (
        [(header::CONTENT_TYPE, Metrics::content_type())],
        node.metrics().encode(),
    )
        .into_response()
}

/// One check of a probe: its name and, when it failed, why.
type Check = (&'static str, Result<(), String>);

/// etcd's checks: a leader is known, no data corruption alarm, and a read
/// through the log answers (linearizable) or the local state answers
/// (serializable).
async fn checks(node: &Node, linearizable: bool) -> Vec<Check> {
    let status = node.status();
    let mut out = Vec::new();
    let leader = if status.leader.is_some() {
        Ok(())
    } else {
        Err("RAFT NO LEADER".to_string())
    };
    // etcd's AlarmType CORRUPT is 2.
    let corrupt = status.alarms.iter().any(|(_, a)| *a == 2);
    out.push((
        "data_corruption",
        if corrupt {
            Err("CORRUPT alarm raised".to_string())
        } else {
            Ok(())
        },
    ));
    let read = RangeRequest {
        key: axum::body::Bytes::from_static(b"health"),
        ..RangeRequest::default()
    };
    let serializable =
        match tokio::time::timeout(HEALTH_READ_TIMEOUT, node.range(read.clone(), true)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("timed out".to_string()),
        };
    out.push(("serializable_read", serializable));
    if linearizable {
        out.push(("leader", leader));
        let linear = match tokio::time::timeout(HEALTH_READ_TIMEOUT, node.range(read, false)).await
        {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("timed out".to_string()),
        };
        out.push(("linearizable_read", linear));
    }
    out
}

async fn health(State(node): State<Arc<Node>>) -> Response {
    let failed: Vec<String> = checks(&node, true)
        .await
        .into_iter()
        .filter_map(|(name, r)| r.err().map(|why| format!("{name}: {why}")))
        .collect();
    let (code, body) = if failed.is_empty() {
        (
            StatusCode::OK,
            r#"{"health":"true","reason":""}"#.to_string(),
        )
    } else {
        let reason = serde_json::Value::String(failed.join("; "));
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(r#"{{"health":"false","reason":{reason}}}"#),
        )
    };
    (code, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// etcd's probe answer: `ok`, or the list of checks with 503 when one
/// failed; `?verbose` lists every check either way.
fn probe(checks: Vec<Check>, verbose: bool) -> Response {
    let ok = checks.iter().all(|(_, r)| r.is_ok());
    let mut body = String::new();
    if verbose || !ok {
        for (name, r) in &checks {
            match r {
                Ok(()) => body.push_str(&format!("[+]{name} ok\n")),
                Err(why) => body.push_str(&format!("[-]{name} failed: {why}\n")),
            }
        }
    }
    if ok {
        body.push_str("ok\n");
        (StatusCode::OK, body).into_response()
    } else {
        body.push_str("health check failed\n");
        (StatusCode::SERVICE_UNAVAILABLE, body).into_response()
    }
}

async fn livez(
    State(node): State<Arc<Node>>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    probe(checks(&node, false).await, q.contains_key("verbose"))
}

async fn readyz(
    State(node): State<Arc<Node>>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    probe(checks(&node, true).await, q.contains_key("verbose"))
}

async fn cluster(State(node): State<Arc<Node>>) -> Response {
    let body = json::cluster(&node).await.to_string();
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

async fn shards(State(node): State<Arc<Node>>) -> Response {
    let body = json::shards(&node).to_string();
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// `POST /api/split` with a key as the body: splits the shard holding it
/// there (`synod split`). 200 with the range that stayed; 400 when the
/// key cannot split (outside or at a shard's start, not sharded); 403
/// while etcd auth is on (this address checks no credentials, and a
/// split is an administrator's act); 503 when no answer came in time.
async fn split(State(node): State<Arc<Node>>, body: axum::body::Bytes) -> Response {
    let at = bytes::Bytes::from(body.to_vec());
    let (status, body) = if node.auth().enabled() {
        (
            axum::http::StatusCode::FORBIDDEN,
            serde_json::json!({ "error": SPLIT_UNDER_AUTH }),
        )
    } else {
        split_answer(node.split(at).await)
    };
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// Why a split by hand is refused while etcd auth is on.
pub const SPLIT_UNDER_AUTH: &str = "etcd auth is on, and this HTTP address checks no \
    credentials: splits by hand are refused (shards still split by size and load)";

fn split_answer(
    answer: Result<synod_proto::synodpb::Outcome, synod_server::RequestError>,
) -> (axum::http::StatusCode, serde_json::Value) {
    use synod_proto::synodpb::outcome::Result as Done;
    match answer {
        Ok(outcome) => match outcome.result {
            Some(Done::Split(left)) => (
                axum::http::StatusCode::OK,
                serde_json::json!({
                    "start": left.start.escape_ascii().to_string(),
                    "end": left.end.escape_ascii().to_string(),
                    "new_group": left.right,
                    "epoch": left.epoch,
                }),
            ),
            Some(Done::Error(e)) => (
                axum::http::StatusCode::BAD_REQUEST,
                serde_json::json!({ "error": synod_kv::outcome_error(&e).to_string() }),
            ),
            _ => (
                axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                serde_json::json!({ "error": "a split came back as another answer" }),
            ),
        },
        Err(e) => (
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            serde_json::json!({ "error": e.to_string() }),
        ),
    }
}

async fn stream(
    State(node): State<Arc<Node>>,
) -> Sse<impl futures::Stream<Item = Result<Event, Infallible>>> {
    let ticks = tokio_stream::wrappers::IntervalStream::new(tokio::time::interval(STREAM_EVERY));
    let events = ticks.then(move |_| {
        let node = Arc::clone(&node);
        async move {
            let data = json::cluster(&node).await.to_string();
            Ok(Event::default().event("cluster").data(data))
        }
    });
    Sse::new(events).keep_alive(KeepAlive::default())
}
