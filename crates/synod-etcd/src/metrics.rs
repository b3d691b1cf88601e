//! Request metrics for the etcd API, as a tower layer around every gRPC
//! service: go-grpc-prometheus's `grpc_server_started_total` and
//! `grpc_server_handled_total` (what etcd's dashboards chart), and
//! synod's `synod_requests_total` / `synod_request_duration_seconds` for
//! unary calls.
//!
//! A unary call is handled when its response head leaves: an error then
//! rides in the head (`grpc-status`, trailers-only), success in the
//! trailers. A streaming call (Watch, LeaseKeepAlive, Snapshot, Observe)
//! is counted as started, and as handled only when it fails at once; its
//! duration is the stream's life, which says nothing about latency.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;
use synod_server::{GrpcMethod, Metrics};

/// Wraps the etcd services with request metrics.
#[derive(Clone)]
pub(crate) struct MetricsLayer {
    metrics: Arc<Metrics>,
    /// Every known method's counters, in `METHODS` order.
    methods: Arc<Vec<GrpcMethod>>,
}

impl MetricsLayer {
    /// Resolves every known method's counters once.
    pub(crate) fn new(metrics: Arc<Metrics>) -> MetricsLayer {
        let methods = METHODS
            .iter()
            .flat_map(|(s, ms)| ms.iter().map(move |m| (*s, *m)))
            .map(|(s, m)| metrics.grpc_method(grpc_type(s, m), s, m))
            .collect();
        MetricsLayer {
            metrics,
            methods: Arc::new(methods),
        }
    }
}

impl<S> tower::Layer<S> for MetricsLayer {
    type Service = MetricsService<S>;

    fn layer(&self, inner: S) -> MetricsService<S> {
        MetricsService {
            inner,
            layer: self.clone(),
        }
    }
}

/// The wrapped service.
#[derive(Clone)]
pub(crate) struct MetricsService<S> {
    inner: S,
    layer: MetricsLayer,
}

/// Every service and method the etcd front end serves: labels are these
/// static names, so a request costs no allocation and a client sending
/// made-up paths cannot grow the label set (they count as `unknown`).
const METHODS: &[(&str, &[&str])] = &[
    (
        "etcdserverpb.KV",
        &["Range", "Put", "DeleteRange", "Txn", "Compact"],
    ),
    ("etcdserverpb.Watch", &["Watch"]),
    (
        "etcdserverpb.Lease",
        &[
            "LeaseGrant",
            "LeaseRevoke",
            "LeaseKeepAlive",
            "LeaseTimeToLive",
            "LeaseLeases",
        ],
    ),
    (
        "etcdserverpb.Cluster",
        &[
            "MemberAdd",
            "MemberRemove",
            "MemberUpdate",
            "MemberList",
            "MemberPromote",
        ],
    ),
    (
        "etcdserverpb.Maintenance",
        &[
            "Alarm",
            "Status",
            "Defragment",
            "Hash",
            "HashKV",
            "Snapshot",
            "MoveLeader",
            "Downgrade",
        ],
    ),
    ("v3lockpb.Lock", &["Lock", "Unlock"]),
    (
        "v3electionpb.Election",
        &["Campaign", "Proclaim", "Leader", "Observe", "Resign"],
    ),
];

/// The static names of `/service/method` (`unknown` for what is not
/// served), and the method's index in `METHODS` order when known.
fn names(path: &str) -> (&'static str, &'static str, Option<usize>) {
    let (service, method) = path
        .trim_start_matches('/')
        .split_once('/')
        .unwrap_or(("", ""));
    let mut index = 0;
    for (s, methods) in METHODS {
        if *s == service {
            return match methods.iter().position(|m| *m == method) {
                Some(i) => (s, methods[i], Some(index + i)),
                None => (s, "unknown", None),
            };
        }
        index += methods.len();
    }
    ("unknown", "unknown", None)
}

/// go-grpc-prometheus's `grpc_type` of an etcd method.
fn grpc_type(service: &str, method: &str) -> &'static str {
    match (service, method) {
        ("etcdserverpb.Watch", "Watch") | ("etcdserverpb.Lease", "LeaseKeepAlive") => "bidi_stream",
        ("etcdserverpb.Maintenance", "Snapshot") | ("v3electionpb.Election", "Observe") => {
            "server_stream"
        }
        _ => "unary",
    }
}

/// gRPC's name of a status code, as Go's `codes.Code.String()` spells it.
fn code_name(code: &[u8]) -> &'static str {
    match code {
        b"0" => "OK",
        b"1" => "Canceled",
        b"2" => "Unknown",
        b"3" => "InvalidArgument",
        b"4" => "DeadlineExceeded",
        b"5" => "NotFound",
        b"6" => "AlreadyExists",
        b"7" => "PermissionDenied",
        b"8" => "ResourceExhausted",
        b"9" => "FailedPrecondition",
        b"10" => "Aborted",
        b"11" => "OutOfRange",
        b"12" => "Unimplemented",
        b"13" => "Internal",
        b"14" => "Unavailable",
        b"15" => "DataLoss",
        b"16" => "Unauthenticated",
        _ => "Unknown",
    }
}

impl<S, B, RB> tower::Service<http::Request<B>> for MetricsService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<RB>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        // "/etcdserverpb.KV/Range" → ("etcdserverpb.KV", "Range").
        let (service, method, index) = names(request.uri().path());
        let kind = grpc_type(service, method);
        let known = index.map(|i| self.layer.methods[i].clone());
        match &known {
            Some(m) => m.started.inc(),
            None => self.layer.metrics.grpc_started(kind, service, method),
        }
        let metrics = Arc::clone(&self.layer.metrics);
        let started = Instant::now();
        let call = self.inner.call(request);
        Box::pin(async move {
            let response = call.await;
            let head_code = match &response {
                Ok(r) => r
                    .headers()
                    .get("grpc-status")
                    .map(|c| code_name(c.as_bytes())),
                Err(_) => Some("Unknown"),
            };
            if kind == "unary" {
                let seconds = started.elapsed().as_secs_f64();
                match (head_code, &known) {
                    (None, Some(m)) => metrics.grpc_ok(m, seconds),
                    (code, _) => {
                        let code = code.unwrap_or("OK");
                        metrics.grpc_handled(kind, service, method, code);
                        metrics.observe_request("etcd", method, code, seconds);
                    }
                }
            } else if let Some(code) = head_code {
                metrics.grpc_handled(kind, service, method, code);
            }
            response
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_types_are_named_as_go_grpc_prometheus_names_them() {
        assert_eq!(code_name(b"0"), "OK");
        assert_eq!(code_name(b"14"), "Unavailable");
        assert_eq!(code_name(b"99"), "Unknown");
        assert_eq!(grpc_type("etcdserverpb.KV", "Range"), "unary");
        assert_eq!(grpc_type("etcdserverpb.Watch", "Watch"), "bidi_stream");
        assert_eq!(
            grpc_type("etcdserverpb.Maintenance", "Snapshot"),
            "server_stream"
        );
        assert_eq!(
            names("/etcdserverpb.KV/Range"),
            ("etcdserverpb.KV", "Range", Some(0))
        );
        assert_eq!(
            names("/etcdserverpb.Watch/Watch"),
            ("etcdserverpb.Watch", "Watch", Some(5))
        );
        assert_eq!(
            names("/etcdserverpb.KV/Nope"),
            ("etcdserverpb.KV", "unknown", None)
        );
        assert_eq!(names("/made.Up/Path"), ("unknown", "unknown", None));
        assert_eq!(names("garbage"), ("unknown", "unknown", None));
    }
}
