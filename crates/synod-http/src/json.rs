//! The cluster's reports as the dashboard reads them (JSON).

use serde_json::{json, Value};
use synod_proto::peerpb::{GroupReport, NodeEvent, NodeReport};
use synod_server::Node;

fn group(g: &GroupReport) -> Value {
    json!({
        "group": g.group,
        "role": g.role,
        "leader": g.leader,
        "ballot": format!("{}.{}", g.ballot_round, g.ballot_node),
        "commit": g.commit,
        "applied": g.applied,
        "revision": g.revision,
        "log_start": g.log_start,
        "voters": g.voters,
        "observers": g.observers,
    })
}

/// The shard map as this node sees it: each shard's keys and its group's
/// state on this node (`synod shards` prints it).
pub fn shards(node: &Node) -> Value {
    let Some(map) = node.shards() else {
        return json!({ "sharded": false, "shards": [] });
    };
    let report = node.report();
    let mut shards = Vec::new();
    for (i, id) in map.groups().enumerate() {
        let (start, end) = match map.span(i) {
            synod_kv::KeyRange::Span { start, end } => (start, end),
            synod_kv::KeyRange::Single(k) => (k.clone(), Some(k)),
        };
        let mut shard = json!({
            "group": id,
            "start": start.escape_ascii().to_string(),
            "end": end.map(|e| e.escape_ascii().to_string()),
        });
        if let Some(g) = report.groups.iter().find(|g| g.group == id) {
            shard["leader"] = json!(g.leader);
            shard["role_here"] = json!(g.role);
            shard["revision"] = json!(g.revision);
            shard["applied"] = json!(g.applied);
            shard["voters"] = json!(g.voters);
            shard["observers"] = json!(g.observers);
            shard["bytes"] = json!(g.data_bytes);
            shard["epoch"] = json!(g.shard_epoch);
        }
        shards.push(shard);
    }
    let meta = report.groups.iter().find(|g| g.group == 1).map(group);
    json!({ "sharded": true, "node": report.id, "meta": meta, "shards": shards })
}

fn event(node: u64, e: &NodeEvent) -> Value {
    json!({
        "node": node,
        "seq": e.seq,
        "unix_ms": e.unix_ms,
        "group": e.group,
        "kind": e.kind,
        "text": e.text,
    })
}

fn member(id: u64, report: &Result<NodeReport, String>) -> Value {
    match report {
        Ok(r) => json!({
            "id": id,
            "reachable": true,
            "client_addr": r.client_addr,
            "http_addr": r.http_addr,
            "db_size_bytes": r.db_size_bytes,
            "requests": r.requests,
            "request_seconds": r.request_seconds,
            "uptime_ms": r.uptime_ms,
            "groups": r.groups.iter().map(group).collect::<Vec<_>>(),
            "events": r.events.iter().map(|e| event(id, e)).collect::<Vec<_>>(),
        }),
        Err(why) => json!({ "id": id, "reachable": false, "error": why }),
    }
}

/// The leader of `group` as the reachable members report it: the member
/// that says it leads (with the highest ballot, should two say so for a
/// moment), else the leader most members name.
fn leader_of(reports: &[(u64, Result<NodeReport, String>)], group: u64) -> Option<u64> {
    let lines = reports.iter().filter_map(|(id, r)| {
        r.as_ref()
            .ok()
            .and_then(|r| r.groups.iter().find(|g| g.group == group))
            .map(|g| (*id, g))
    });
    let mut leading: Vec<(u64, u64, u64)> = Vec::new();
    let mut named: std::collections::BTreeMap<u64, usize> = Default::default();
    for (id, g) in lines {
        if g.role == "leader" {
            leading.push((g.ballot_round, g.ballot_node, id));
        }
        if g.leader != 0 {
            *named.entry(g.leader).or_default() += 1;
        }
    }
    leading.sort();
    if let Some((_, _, id)) = leading.last() {
        return Some(*id);
    }
    named.into_iter().max_by_key(|(_, n)| *n).map(|(id, _)| id)
}

/// What `/api/cluster` answers: every member's report, the leader of each
/// group, and which node answered.
/// The keys group `group` holds, as `[start, end)`: all of them for group
/// 1 unsharded; none for the meta group of a sharded cluster.
fn keys_of(node: &Node, group: u64) -> String {
    let Some(map) = node.shards() else {
        return if group == 1 {
            "every key".into()
        } else {
            "–".into()
        };
    };
    let Some(i) = map.groups().position(|g| g == group) else {
        return if group == 1 {
            "meta (no keys)".into()
        } else {
            "–".into()
        };
    };
    match map.span(i) {
        synod_kv::KeyRange::Span { start, end } => format!(
            "[{:?}, {})",
            start.escape_ascii().to_string(),
            end.map_or("∞".to_string(), |e| format!(
                "{:?}",
                e.escape_ascii().to_string()
            ))
        ),
        synod_kv::KeyRange::Single(k) => format!("{:?}", k.escape_ascii().to_string()),
    }
}

pub(crate) async fn cluster(node: &Node) -> Value {
    let reports = node.cluster_report().await;
    let mut groups: Vec<u64> = reports
        .iter()
        .filter_map(|(_, r)| r.as_ref().ok())
        .flat_map(|r| r.groups.iter().map(|g| g.group))
        .collect();
    groups.sort_unstable();
    groups.dedup();
    let leaders: Vec<Value> = groups
        .iter()
        .map(
            |g| json!({ "group": g, "leader": leader_of(&reports, *g), "keys": keys_of(node, *g) }),
        )
        .collect();
    let unix_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    json!({
        "node": node.config().id.0,
        "unix_ms": unix_ms,
        "leaders": leaders,
        "members": reports.iter().map(|(id, r)| member(*id, r)).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(groups: Vec<GroupReport>) -> Result<NodeReport, String> {
        Ok(NodeReport {
            groups,
            ..NodeReport::default()
        })
    }

    fn line(role: &str, leader: u64, round: u64, node: u64) -> GroupReport {
        GroupReport {
            group: 1,
            role: role.into(),
            leader,
            ballot_round: round,
            ballot_node: node,
            ..GroupReport::default()
        }
    }

    #[test]
    fn the_leader_is_who_says_it_leads_with_the_highest_ballot() {
        let reports = vec![
            (1, report(vec![line("leader", 1, 3, 1)])),
            (2, report(vec![line("leader", 2, 4, 2)])),
            (3, Err("down".into())),
        ];
        assert_eq!(leader_of(&reports, 1), Some(2));
    }

    #[test]
    fn without_a_self_declared_leader_the_most_named_one_is_shown() {
        let reports = vec![
            (1, report(vec![line("follower", 3, 4, 3)])),
            (2, report(vec![line("follower", 3, 4, 3)])),
            (3, Err("down".into())),
        ];
        assert_eq!(leader_of(&reports, 1), Some(3));
        assert_eq!(leader_of(&reports, 7), None);
    }
}
