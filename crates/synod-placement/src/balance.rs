//! How even a placement is, and what changing it cost: the numbers the
//! comparison reports.

use std::collections::BTreeMap;

use crate::types::NodeId;
use crate::view::ClusterView;

/// The spread of replicas and leaders over live nodes, each node's count
/// divided by its capacity. A perfect placement has every ratio at 1.0 and
/// a standard deviation below 1.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Balance {
    /// The live nodes measured.
    pub live_nodes: usize,
    /// The mean replicas per unit of capacity.
    pub replicas_mean: f64,
    /// The most loaded node's replicas over the mean.
    pub replicas_max_over_mean: f64,
    /// The least loaded node's replicas over the mean.
    pub replicas_min_over_mean: f64,
    /// The standard deviation of replicas per node (population).
    pub replicas_stddev: f64,
    /// The node leading most, over the mean leaders per node.
    pub leaders_max_over_mean: f64,
}

impl Balance {
    /// Measures `view` over its live nodes; replicas and leaders on dead
    /// nodes are not counted (they are gone).
    pub fn of(view: &ClusterView) -> Balance {
        let mut replicas: BTreeMap<NodeId, (f64, f64)> = BTreeMap::new();
        for node in view.nodes().filter(|n| n.alive) {
            replicas.insert(node.id, (0.0, 0.0));
        }
        for shard in view.shards() {
            for node in &shard.replicas {
                if let Some(entry) = replicas.get_mut(node) {
                    entry.0 += 1.0;
                }
            }
            if let Some(entry) = shard.leader.and_then(|l| replicas.get_mut(&l)) {
                entry.1 += 1.0;
            }
        }
        let capacity = |id: &NodeId| view.node(*id).map_or(1.0, |n| f64::from(n.capacity));
        let loads: Vec<(f64, f64)> = replicas
            .iter()
            .map(|(id, (r, l))| (r / capacity(id), l / capacity(id)))
            .collect();
        let total_capacity: f64 = replicas.keys().map(capacity).sum();
        let replicas_total: f64 = replicas.values().map(|(r, _)| r).sum();
        let leaders_total: f64 = replicas.values().map(|(_, l)| l).sum();
        let mean = ratio(replicas_total, total_capacity);
        let leaders_mean = ratio(leaders_total, total_capacity);
        let max = |f: fn(&(f64, f64)) -> f64| loads.iter().map(f).fold(0.0, f64::max);
        let min = loads.iter().map(|(r, _)| *r).fold(f64::INFINITY, f64::min);
        let variance = ratio(
            loads.iter().map(|(r, _)| (r - mean) * (r - mean)).sum(),
            loads.len() as f64,
        );
        Balance {
            live_nodes: loads.len(),
            replicas_mean: mean,
            replicas_max_over_mean: ratio(max(|(r, _)| *r), mean),
            replicas_min_over_mean: if loads.is_empty() {
                0.0
            } else {
                ratio(min, mean)
            },
            replicas_stddev: variance.sqrt(),
            leaders_max_over_mean: ratio(max(|(_, l)| *l), leaders_mean),
        }
    }
}

fn ratio(a: f64, b: f64) -> f64 {
    if b == 0.0 {
        0.0
    } else {
        a / b
    }
}

/// What going from one view to another cost.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Churn {
    /// Replicas that exist after but not before: each is a copy of the
    /// shard's data to a node.
    pub replicas_added: usize,
    /// Shards whose leader changed (clients of those shards re-route).
    pub leaders_changed: usize,
    /// Live nodes that hold fewer replicas after: the nodes a change takes
    /// replicas from. Few such nodes means a join's work lands on a few
    /// neighbours instead of the whole cluster.
    pub nodes_shedding: usize,
    /// Live nodes that hold more replicas after: the nodes that take the
    /// work. After a death, many such nodes means the dead node's load is
    /// spread over the cluster instead of falling on its ring neighbours.
    pub nodes_receiving: usize,
}

impl Churn {
    /// Compares every shard of `before` with the same shard of `after`.
    pub fn between(before: &ClusterView, after: &ClusterView) -> Churn {
        let mut churn = Churn::default();
        let mut delta: BTreeMap<NodeId, i64> = BTreeMap::new();
        for old in before.shards() {
            let Some(new) = after.shard(old.id) else {
                continue;
            };
            churn.replicas_added += new
                .replicas
                .iter()
                .filter(|n| !old.has_replica(**n))
                .count();
            if old.leader != new.leader {
                churn.leaders_changed += 1;
            }
            for n in &old.replicas {
                *delta.entry(*n).or_default() -= 1;
            }
            for n in &new.replicas {
                *delta.entry(*n).or_default() += 1;
            }
        }
        let live = |sign: i64| {
            delta
                .iter()
                .filter(|(n, d)| d.signum() == sign && after.is_live(**n))
                .count()
        };
        churn.nodes_shedding = live(-1);
        churn.nodes_receiving = live(1);
        churn
    }
}
