//! The node's metrics: one Prometheus registry per node (a `synod dev`
//! process runs three nodes, so the global registry would mix them up),
//! and the node's recent events for the dashboard.
//!
//! Names follow Prometheus conventions (`_total` counters, `_seconds` and
//! `_bytes` units). etcd's well-known names are exported as etcd defines
//! them, so existing etcd dashboards and alerts work against synod:
//! `etcd_server_has_leader`, `etcd_server_leader_changes_seen_total`,
//! `etcd_disk_wal_fsync_duration_seconds`,
//! `etcd_mvcc_db_total_size_in_bytes` and a few more, and the
//! go-grpc-prometheus counters (`grpc_server_started_total`,
//! `grpc_server_handled_total`) that etcd's dashboards chart.
//!
//! The pure group counts what it does (`GroupCounters`); the core loop
//! turns those counts into counter increments once a round, so nothing on
//! the consensus path knows about Prometheus.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;
use synod_group::GroupCounters;
use synod_proto::peerpb::NodeEvent;

/// Events a node keeps for its dashboard; older ones are dropped.
const EVENTS_KEPT: usize = 256;

/// etcd's buckets for disk durations: 1 ms to about 8 s, doubling.
fn disk_buckets() -> Vec<f64> {
    prometheus::exponential_buckets(0.001, 2.0, 14).expect("valid buckets")
}

/// Buckets for request latencies: 100 µs to about 13 s, doubling.
fn request_buckets() -> Vec<f64> {
    prometheus::exponential_buckets(0.0001, 2.0, 18).expect("valid buckets")
}

/// Every metric of one node. Cheap to update from any thread.
pub struct Metrics {
    registry: Registry,
    started: Instant,
    /// 1 when this member knows a leader of the etcd key space's group.
    pub(crate) has_leader: IntGauge,
    /// 1 when this member leads it.
    pub(crate) is_leader: IntGauge,
    /// Leader changes this member saw (etcd's name).
    pub(crate) leader_changes: IntCounter,
    /// Slots known chosen (etcd: proposals committed; a gauge in etcd,
    /// a counter here because it only grows and is named `_total`).
    pub(crate) proposals_committed: IntCounter,
    /// Slots applied (etcd: proposals applied).
    pub(crate) proposals_applied: IntCounter,
    /// Writes waiting to apply on this member.
    pub(crate) proposals_pending: IntGauge,
    /// Durable storage batches (the fsync that Paxos waits for).
    pub(crate) wal_fsync: Histogram,
    /// Every storage batch commit, durable or not.
    pub(crate) backend_commit: Histogram,
    /// The database file's size.
    pub(crate) db_size: IntGauge,
    pub(crate) group_commit: IntGaugeVec,
    pub(crate) group_applied: IntGaugeVec,
    pub(crate) group_round: IntGaugeVec,
    pub(crate) group_is_leader: IntGaugeVec,
    pub(crate) group_revision: IntGaugeVec,
    pub(crate) proposals: IntCounter,
    pub(crate) forwarded: IntCounter,
    pub(crate) applied_commands: IntCounter,
    pub(crate) reads: IntCounterVec,
    pub(crate) read_index: IntCounterVec,
    pub(crate) elections: IntCounter,
    pub(crate) batch_records: Histogram,
    pub(crate) snapshots_sent: IntCounter,
    /// Requests routed again because their shard split (design 0016).
    pub(crate) rerouted: IntCounter,
    /// Splits this node's replicas applied.
    pub(crate) splits: IntCounter,
    /// Membership changes this node proposed in shards it leads, to follow
    /// the meta group's configuration (design 0019).
    pub(crate) shard_follows: IntCounter,
    /// Shard leaderships this node handed over because the meta group left
    /// it out or it could not hear the meta group (design 0019).
    pub(crate) shard_hand_overs: IntCounter,
    pub(crate) snapshot_sent_bytes: IntCounter,
    pub(crate) snapshot_send_seconds: Histogram,
    pub(crate) snapshots_installed: IntCounter,
    pub(crate) watch_streams: IntGauge,
    pub(crate) watchers: IntGauge,
    pub(crate) watch_lag: IntGauge,
    pub(crate) leases: IntGauge,
    pub(crate) zk_sessions: IntGauge,
    zk_connections: IntGauge,
    requests: IntCounterVec,
    request_seconds: HistogramVec,
    grpc_started: IntCounterVec,
    grpc_handled: IntCounterVec,
    requests_total: AtomicU64,
    request_nanos_total: AtomicU64,
    events: Mutex<EventLog>,
}

/// One gRPC method's counters for the common case (see
/// [`Metrics::grpc_method`]).
#[derive(Clone)]
pub struct GrpcMethod {
    /// `grpc_server_started_total` of the method.
    pub started: IntCounter,
    handled_ok: IntCounter,
    requests_ok: IntCounter,
    seconds: Histogram,
}

struct EventLog {
    next_seq: u64,
    kept: VecDeque<NodeEvent>,
}

fn gauge(r: &Registry, name: &str, help: &str) -> IntGauge {
    let g = IntGauge::new(name, help).expect("valid metric");
    r.register(Box::new(g.clone())).expect("registered once");
    g
}

fn counter(r: &Registry, name: &str, help: &str) -> IntCounter {
    let c = IntCounter::new(name, help).expect("valid metric");
    r.register(Box::new(c.clone())).expect("registered once");
    c
}

fn gauge_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
    r.register(Box::new(g.clone())).expect("registered once");
    g
}

fn counter_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    r.register(Box::new(c.clone())).expect("registered once");
    c
}

fn histogram(r: &Registry, name: &str, help: &str, buckets: Vec<f64>) -> Histogram {
    let h = Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets))
        .expect("valid metric");
    r.register(Box::new(h.clone())).expect("registered once");
    h
}

fn histogram_vec(
    r: &Registry,
    name: &str,
    help: &str,
    buckets: Vec<f64>,
    labels: &[&str],
) -> HistogramVec {
    let h = HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets), labels)
        .expect("valid metric");
    r.register(Box::new(h.clone())).expect("registered once");
    h
}

impl Metrics {
    /// A fresh registry with every metric at zero, labelled with the node
    /// id only through the scrape target (Prometheus adds `instance`).
    pub fn new() -> Metrics {
        let r = Registry::new();
        #[cfg(target_os = "linux")]
        {
            // process_cpu_seconds_total, process_resident_memory_bytes, …
            let pc = prometheus::process_collector::ProcessCollector::for_self();
            r.register(Box::new(pc)).expect("registered once");
        }
        let g = &["group"];
        Metrics {
            has_leader: gauge(&r, "etcd_server_has_leader", "Whether or not a leader exists. 1 is existence, 0 is not."),
            is_leader: gauge(&r, "etcd_server_is_leader", "Whether or not this member is a leader. 1 if is, 0 otherwise."),
            leader_changes: counter(&r, "etcd_server_leader_changes_seen_total", "The number of leader changes seen."),
            proposals_committed: counter(&r, "etcd_server_proposals_committed_total", "The total number of consensus proposals committed (slots chosen)."),
            proposals_applied: counter(&r, "etcd_server_proposals_applied_total", "The total number of consensus proposals applied (slots applied)."),
            proposals_pending: gauge(&r, "etcd_server_proposals_pending", "The current number of pending proposals to commit."),
            wal_fsync: histogram(&r, "etcd_disk_wal_fsync_duration_seconds", "The latency distributions of fsync called by the log (durable storage batches).", disk_buckets()),
            backend_commit: histogram(&r, "etcd_disk_backend_commit_duration_seconds", "The latency distributions of commit called by the backend (every storage batch).", disk_buckets()),
            db_size: gauge(&r, "etcd_mvcc_db_total_size_in_bytes", "Total size of the underlying database physically allocated in bytes."),
            group_commit: gauge_vec(&r, "synod_group_commit_slot", "Highest slot known chosen, per Paxos group.", g),
            group_applied: gauge_vec(&r, "synod_group_applied_slot", "Highest slot applied to the state machine, per Paxos group.", g),
            group_round: gauge_vec(&r, "synod_group_ballot_round", "Round of the highest ballot promised, per Paxos group.", g),
            group_is_leader: gauge_vec(&r, "synod_group_is_leader", "1 when this replica leads the group.", g),
            group_revision: gauge_vec(&r, "synod_group_revision", "The state machine's revision, per Paxos group.", g),
            proposals: counter(&r, "synod_proposals_total", "Commands proposed by this node as leader (its clients' writes and those forwarded to it)."),
            forwarded: counter(&r, "synod_forwarded_writes_total", "Client writes forwarded to the leader (resends included)."),
            applied_commands: counter(&r, "synod_applied_commands_total", "Commands applied to the state machine."),
            reads: counter_vec(&r, "synod_reads_total", "Reads by path: serializable (local), leader (lease or read index), follower (the leader's read index).", &["path"]),
            read_index: counter_vec(&r, "synod_read_index_questions_total", "Read-index questions asked of the leader by this follower (asked) or taken by this leader (answered).", &["side"]),
            elections: counter(&r, "synod_elections_total", "Times this node started phase 1 to lead a group."),
            batch_records: histogram(&r, "synod_storage_batch_records", "Log records (accepts, promises) written per storage batch.", prometheus::exponential_buckets(1.0, 2.0, 14).expect("valid buckets")),
            snapshots_sent: counter(&r, "synod_snapshots_sent_total", "Snapshot streams this node sent to replicas behind its log."),
            rerouted: counter(&r, "synod_requests_rerouted_total", "Requests routed again because the shard they were sent to had split."),
            splits: counter(&r, "synod_shard_splits_total", "Shard splits this node's replicas applied."),
            shard_follows: counter(
                &r,
                "synod_shard_membership_follows_total",
                "Membership changes proposed in shards this node leads, to follow the meta group's configuration.",
            ),
            shard_hand_overs: counter(
                &r,
                "synod_shard_leadership_hand_overs_total",
                "Shard leaderships handed over because the meta group left this node out or it could not hear the meta group.",
            ),
            snapshot_sent_bytes: counter(&r, "synod_snapshot_sent_bytes_total", "Bytes of rows sent in snapshot streams."),
            snapshot_send_seconds: histogram(&r, "synod_snapshot_send_duration_seconds", "How long a snapshot stream took.", prometheus::exponential_buckets(0.01, 2.0, 16).expect("valid buckets")),
            snapshots_installed: counter(&r, "synod_snapshots_installed_total", "Snapshots received from a leader and installed."),
            watch_streams: gauge(&r, "synod_watch_streams", "Open etcd watch streams."),
            watchers: gauge(&r, "synod_watchers", "etcd watchers registered on this node."),
            watch_lag: gauge(&r, "synod_watch_lag_revisions", "Revisions the slowest watcher is behind the node's state machine."),
            leases: gauge(&r, "synod_leases", "Leases (etcd leases and ZooKeeper sessions) in the state machine."),
            zk_sessions: gauge(&r, "synod_zk_sessions", "Open ZooKeeper sessions in the state machine (the whole cluster's)."),
            zk_connections: gauge(&r, "synod_zk_connections", "Open ZooKeeper client connections to this node."),
            requests: counter_vec(&r, "synod_requests_total", "Client requests by API (etcd, zookeeper), operation and result code.", &["api", "op", "code"]),
            request_seconds: histogram_vec(&r, "synod_request_duration_seconds", "Client request latency by API and operation.", request_buckets(), &["api", "op"]),
            grpc_started: counter_vec(&r, "grpc_server_started_total", "Total number of RPCs started on the server.", &["grpc_type", "grpc_service", "grpc_method"]),
            grpc_handled: counter_vec(&r, "grpc_server_handled_total", "Total number of RPCs completed on the server, regardless of success or failure.", &["grpc_type", "grpc_service", "grpc_method", "grpc_code"]),
            registry: r,
            started: Instant::now(),
            requests_total: AtomicU64::new(0),
            request_nanos_total: AtomicU64::new(0),
            events: Mutex::new(EventLog {
                next_seq: 1,
                kept: VecDeque::new(),
            }),
        }
    }

    /// Every metric in Prometheus's text exposition format (0.0.4).
    pub fn encode(&self) -> String {
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("text encoding of valid metrics");
        String::from_utf8(out).expect("the text format is UTF-8")
    }

    /// The content type Prometheus expects for [`encode`](Metrics::encode).
    pub fn content_type() -> &'static str {
        prometheus::TEXT_FORMAT
    }

    /// Records one client request: `api` is `etcd` or `zookeeper`, `op`
    /// the operation, `code` the result (`OK` or the error's name).
    pub fn observe_request(&self, api: &str, op: &str, code: &str, seconds: f64) {
        self.requests.with_label_values(&[api, op, code]).inc();
        self.request_seconds
            .with_label_values(&[api, op])
            .observe(seconds);
        self.add_totals(seconds);
    }

    /// The totals the dashboard turns into throughput and mean latency.
    fn add_totals(&self, seconds: f64) {
        self.requests_total.fetch_add(1, Ordering::Relaxed);
        self.request_nanos_total
            .fetch_add((seconds * 1e9) as u64, Ordering::Relaxed);
    }

    /// The counters one gRPC method touches on every call that succeeds,
    /// resolved once: a request then pays atomic adds, not label lookups.
    pub fn grpc_method(&self, kind: &str, service: &str, method: &str) -> GrpcMethod {
        GrpcMethod {
            started: self
                .grpc_started
                .with_label_values(&[kind, service, method]),
            handled_ok: self
                .grpc_handled
                .with_label_values(&[kind, service, method, "OK"]),
            requests_ok: self.requests.with_label_values(&["etcd", method, "OK"]),
            seconds: self.request_seconds.with_label_values(&["etcd", method]),
        }
    }

    /// Records a successful call of `m` that took `seconds`.
    pub fn grpc_ok(&self, m: &GrpcMethod, seconds: f64) {
        m.handled_ok.inc();
        m.requests_ok.inc();
        m.seconds.observe(seconds);
        self.add_totals(seconds);
    }

    /// A gRPC call started (go-grpc-prometheus's counter).
    pub fn grpc_started(&self, kind: &str, service: &str, method: &str) {
        self.grpc_started
            .with_label_values(&[kind, service, method])
            .inc();
    }

    /// A gRPC call ended with `code` (`OK`, `Unavailable`, … as gRPC
    /// names them).
    pub fn grpc_handled(&self, kind: &str, service: &str, method: &str, code: &str) {
        self.grpc_handled
            .with_label_values(&[kind, service, method, code])
            .inc();
    }

    /// ZooKeeper connections opened (+1) or closed (−1).
    pub fn zk_connections_add(&self, delta: i64) {
        self.zk_connections.add(delta);
    }

    /// Requests served since start and their summed latency in seconds:
    /// what a dashboard turns into throughput and mean latency.
    pub fn request_totals(&self) -> (u64, f64) {
        (
            self.requests_total.load(Ordering::Relaxed),
            self.request_nanos_total.load(Ordering::Relaxed) as f64 / 1e9,
        )
    }

    /// Time since this node's metrics began.
    pub fn uptime(&self) -> std::time::Duration {
        self.started.elapsed()
    }

    /// Notes something a person watching the cluster wants to see.
    pub(crate) fn event(&self, group: u64, kind: &str, text: String) {
        let unix_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        tracing::info!(group, kind, "{text}");
        let mut log = self.events.lock().expect("event log lock");
        let seq = log.next_seq;
        log.next_seq += 1;
        if log.kept.len() == EVENTS_KEPT {
            log.kept.pop_front();
        }
        log.kept.push_back(NodeEvent {
            unix_ms,
            group,
            kind: kind.to_string(),
            text,
            seq,
        });
    }

    /// The events kept, oldest first.
    pub fn events(&self) -> Vec<NodeEvent> {
        let log = self.events.lock().expect("event log lock");
        log.kept.iter().cloned().collect()
    }

    /// Adds what a group did since `before` to the counters.
    pub(crate) fn count(&self, before: &GroupCounters, now: &GroupCounters) {
        let d = |a: u64, b: u64| b.saturating_sub(a);
        self.proposals.inc_by(d(before.proposed, now.proposed));
        self.forwarded.inc_by(d(before.forwarded, now.forwarded));
        self.applied_commands
            .inc_by(d(before.applied_commands, now.applied_commands));
        let reads = [
            (
                "serializable",
                before.reads_serializable,
                now.reads_serializable,
            ),
            ("leader", before.reads_leader, now.reads_leader),
            ("follower", before.reads_follower, now.reads_follower),
        ];
        for (path, a, b) in reads {
            if b > a {
                self.reads.with_label_values(&[path]).inc_by(b - a);
            }
        }
        let index = [
            ("asked", before.read_index_asked, now.read_index_asked),
            (
                "answered",
                before.read_index_answered,
                now.read_index_answered,
            ),
        ];
        for (side, a, b) in index {
            if b > a {
                self.read_index.with_label_values(&[side]).inc_by(b - a);
            }
        }
    }
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_format_names_etcds_metrics_and_counts_requests() {
        let m = Metrics::new();
        m.has_leader.set(1);
        m.observe_request("etcd", "Range", "OK", 0.002);
        m.observe_request("etcd", "Range", "OK", 0.004);
        m.event(1, "leader", "node 2 leads at ballot 3.2".into());
        let text = m.encode();
        assert!(text.contains("etcd_server_has_leader 1"), "{text}");
        assert!(text.contains("# TYPE etcd_disk_wal_fsync_duration_seconds histogram"));
        assert!(text.contains(r#"synod_requests_total{api="etcd",code="OK",op="Range"} 2"#));
        assert_eq!(m.request_totals().0, 2);
        assert!((m.request_totals().1 - 0.006).abs() < 1e-6);
        let events = m.events();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].seq, 1);
    }

    #[test]
    fn the_event_log_keeps_the_newest() {
        let m = Metrics::new();
        for i in 0..(EVENTS_KEPT + 10) {
            m.event(1, "test", format!("event {i}"));
        }
        let events = m.events();
        assert_eq!(events.len(), EVENTS_KEPT);
        assert_eq!(
            events.last().unwrap().text,
            format!("event {}", EVENTS_KEPT + 9)
        );
        assert!(events.windows(2).all(|w| w[0].seq < w[1].seq));
    }
}
