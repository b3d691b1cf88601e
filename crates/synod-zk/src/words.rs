//! ZooKeeper's four-letter words on the client ports: the one-line health
//! and status answers operators and monitoring scripts ask for.

use crate::server::Shared;
use std::fmt::Write as _;
use std::sync::atomic::Ordering;

/// The words answered; anything else on a fresh connection is a frame
/// length.
const WORDS: [&str; 10] = [
    "ruok", "srvr", "stat", "mntr", "conf", "envi", "isro", "wchs", "dump", "cons",
];

/// The word a connection opened with, if it is one.
pub fn parse(head: &[u8; 4]) -> Option<&'static str> {
    WORDS.iter().copied().find(|w| w.as_bytes() == head)
}

/// What ZooKeeper's version string looks like to tools that parse it.
const VERSION: &str = "3.8.4-synod-0.1.0, built on 2026-12-06";

/// The answer to `word`.
pub async fn answer(shared: &Shared, word: &str) -> String {
    let status = shared.node.status();
    let me = shared.node.config().id;
    // A learner (etcd's word) is what ZooKeeper calls an observer: it
    // serves reads, forwards writes and does not vote.
    let observer = status
        .membership
        .as_ref()
        .is_some_and(|c| c.is_member(me) && !c.is_voter(me));
    let mode = if shared.is_read_only() {
        "read-only"
    } else if observer {
        "observer"
    } else if status.is_leader {
        "leader"
    } else {
        "follower"
    };
    let znodes = shared
        .node
        .zk_query(|kv| {
            let ephemerals: usize = kv.zk().all_ephemerals().map(|(_, p)| p.len()).sum();
            (kv.zk().len(), kv.zk().sessions().count(), ephemerals)
        })
        .await
        .unwrap_or((0, 0, 0));
    let stats = &shared.stats;
    let received = stats.received.load(Ordering::Relaxed);
    let avg = stats.latency_us.load(Ordering::Relaxed) / received.max(1) / 1000;
    let max = stats.latency_max_us.load(Ordering::Relaxed) / 1000;
    let conns = stats.connections.load(Ordering::Relaxed);
    let (watching, paths, watches) = shared.watches.summary();
    let mut out = String::new();
    match word {
        "ruok" => out.push_str("imok"),
        "isro" => out.push_str(if shared.is_read_only() { "ro" } else { "rw" }),
        "srvr" | "stat" | "cons" => {
            let _ = writeln!(out, "Zookeeper version: {VERSION}");
            let _ = writeln!(out, "Latency min/avg/max: 0/{avg}/{max}");
            let _ = writeln!(out, "Received: {received}");
            let _ = writeln!(out, "Sent: {}", stats.sent.load(Ordering::Relaxed));
            let _ = writeln!(out, "Connections: {conns}");
            let _ = writeln!(out, "Outstanding: 0");
            let _ = writeln!(out, "Zxid: {:#x}", status.revision);
            let _ = writeln!(out, "Mode: {mode}");
            let _ = writeln!(out, "Node count: {}", znodes.0);
        }
        "mntr" => {
            let rows: [(&str, String); 14] = [
                ("zk_version", VERSION.into()),
                ("zk_server_state", mode.into()),
                ("zk_avg_latency", avg.to_string()),
                ("zk_max_latency", max.to_string()),
                ("zk_min_latency", "0".into()),
                ("zk_packets_received", received.to_string()),
                (
                    "zk_packets_sent",
                    stats.sent.load(Ordering::Relaxed).to_string(),
                ),
                ("zk_num_alive_connections", conns.to_string()),
                ("zk_outstanding_requests", "0".into()),
                ("zk_znode_count", znodes.0.to_string()),
                ("zk_watch_count", watches.to_string()),
                ("zk_ephemerals_count", znodes.2.to_string()),
                ("zk_global_sessions", znodes.1.to_string()),
                (
                    "zk_uptime",
                    shared.started.elapsed().as_millis().to_string(),
                ),
            ];
            for (k, v) in rows {
                let _ = writeln!(out, "{k}\t{v}");
            }
        }
        "conf" => {
            let c = &shared.config;
            if let Some(port) = shared.port {
                let _ = writeln!(out, "clientPort={port}");
            }
            if let Some(port) = shared.secure_port {
                let _ = writeln!(out, "secureClientPort={port}");
            }
            let _ = writeln!(out, "tickTime={}", c.tick_ms);
            let _ = writeln!(out, "minSessionTimeout={}", 2 * c.tick_ms);
            let _ = writeln!(out, "maxSessionTimeout={}", 20 * c.tick_ms);
            let _ = writeln!(out, "jute.maxbuffer={}", c.max_buffer);
            let _ = writeln!(out, "maxClientCnxns={}", c.max_client_cnxns);
            let _ = writeln!(out, "extendedTypesEnabled={}", c.extended_types);
            let _ = writeln!(out, "serverId={}", shared.node.config().id.0);
        }
        "envi" => {
            let _ = writeln!(out, "Environment:");
            let _ = writeln!(out, "zookeeper.version={VERSION}");
            let _ = writeln!(out, "os.name={}", std::env::consts::OS);
            let _ = writeln!(out, "os.arch={}", std::env::consts::ARCH);
        }
        "wchs" => {
            let _ = writeln!(out, "{watching} connections watching {paths} paths");
            let _ = writeln!(out, "Total watches:{watches}");
        }
        "dump" => {
            let sessions = shared
                .node
                .zk_query(|kv| {
                    kv.zk()
                        .all_ephemerals()
                        .map(|(s, paths)| (s, paths.iter().cloned().collect::<Vec<_>>()))
                        .collect::<Vec<_>>()
                })
                .await
                .unwrap_or_default();
            let _ = writeln!(out, "Sessions with Ephemerals ({}):", sessions.len());
            for (s, paths) in sessions {
                let _ = writeln!(out, "{s:#x}:");
                for p in paths {
                    let _ = writeln!(out, "\t{p}");
                }
            }
        }
        _ => {}
    }
    out
}
