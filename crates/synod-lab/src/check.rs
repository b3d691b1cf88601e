//! Verdicts from what happened, never from the scenario's name.
//!
//! A run leaves [`Facts`]: every decision a node made, every write a client
//! saw acknowledged and every read it got, how often ballots preempted one
//! another, what live nodes still wait for at the end, and whether the time
//! budget ran out. [`verdict`] turns them into one [`Verdict`], the worst
//! thing first: two different decisions for one key, then a stale read,
//! then a node stuck on a dead lock holder, then one stuck without a
//! decision, then (for consensus runs) nothing chosen at all.

use crate::engine::Node;
use crate::{Verdict, VerdictKind};
use std::collections::BTreeMap;

/// A node learned the value of `key`.
#[derive(Clone, Debug)]
pub(crate) struct Decision {
    pub node: Node,
    pub key: String,
    pub value: String,
}

/// A client saw a write acknowledged.
#[derive(Clone, Debug)]
pub(crate) struct WriteAck {
    pub at: u64,
    #[allow(dead_code)]
    pub node: Node,
    pub key: String,
    pub version: u64,
    pub value: String,
}

/// A client's read: asked at `start`, answered at `at`.
#[derive(Clone, Debug)]
pub(crate) struct ReadObs {
    pub start: u64,
    pub at: u64,
    pub node: Node,
    pub key: String,
    pub version: u64,
    pub value: String,
}

/// What a live node still waits for when the run ends.
#[derive(Clone, Debug)]
pub(crate) enum Wait {
    /// `node` can only move once `holder` releases a lock.
    Lock { node: Node, holder: Node },
    /// `node` cannot decide `key` by itself.
    Decision { node: Node, key: String },
}

/// Everything the checkers look at.
#[derive(Clone, Debug, Default)]
pub(crate) struct Facts {
    pub decisions: Vec<Decision>,
    pub preemptions: u32,
    pub writes: Vec<WriteAck>,
    pub reads: Vec<ReadObs>,
    pub waits: Vec<Wait>,
    pub up: Vec<bool>,
    pub exhausted: bool,
    pub budget: u64,
}

/// What a protocol is for, which names its success: a consensus run
/// succeeds by choosing ([`VerdictKind::Chosen`]), the others by staying
/// correct ([`VerdictKind::Safe`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Goal {
    Choose,
    Safety,
}

fn list(names: &[String], nodes: impl IntoIterator<Item = Node>) -> String {
    let v: Vec<&str> = nodes.into_iter().map(|n| names[n].as_str()).collect();
    v.join(", ")
}

/// Decisions grouped by key (in the order keys were first decided), then
/// by value, with the nodes that decided it.
fn by_key(facts: &Facts) -> Vec<(String, BTreeMap<String, Vec<Node>>)> {
    let mut out: Vec<(String, BTreeMap<String, Vec<Node>>)> = Vec::new();
    for d in &facts.decisions {
        let i = match out.iter().position(|(k, _)| *k == d.key) {
            Some(i) => i,
            None => {
                out.push((d.key.clone(), BTreeMap::new()));
                out.len() - 1
            }
        };
        let nodes = out[i].1.entry(d.value.clone()).or_default();
        if !nodes.contains(&d.node) {
            nodes.push(d.node);
        }
    }
    out
}

fn verdict_of(kind: VerdictKind, summary: String) -> Verdict {
    Verdict { kind, summary }
}

/// The verdict of a run.
pub(crate) fn verdict(goal: Goal, names: &[String], facts: &Facts) -> Verdict {
    let keys = by_key(facts);
    // Two different values decided for one key.
    for (key, values) in &keys {
        if values.len() > 1 {
            let parts: Vec<String> = values
                .iter()
                .map(|(v, nodes)| format!("{v} by {}", list(names, nodes.iter().copied())))
                .collect();
            return verdict_of(
                VerdictKind::Inconsistent,
                format!("{key} was decided two ways: {}", parts.join("; ")),
            );
        }
    }
    // A read older than a write acknowledged before the read began.
    for r in &facts.reads {
        if let Some(w) = facts
            .writes
            .iter()
            .filter(|w| w.key == r.key && w.version > r.version && w.at <= r.start)
            .max_by_key(|w| w.version)
        {
            return verdict_of(
                VerdictKind::StaleRead,
                format!(
                    "{} read {} = {} (version {}) at {} ms, but {} = {} (version {}) had been acknowledged at {} ms, before the read began at {} ms",
                    names[r.node], r.key, r.value, r.version, r.at, w.key, w.value, w.version, w.at, r.start
                ),
            );
        }
    }
    let down: Vec<Node> = (0..facts.up.len()).filter(|&n| !facts.up[n]).collect();
    // A live node waits on a lock whose holder is gone.
    for w in &facts.waits {
        if let Wait::Lock { node, holder } = w {
            if facts.up[*node] && !facts.up[*holder] {
                return verdict_of(
                    VerdictKind::Deadlock,
                    format!(
                        "{} stays locked by {}, which crashed holding the lock: no proposer can get access again",
                        names[*node], names[*holder]
                    ),
                );
            }
        }
    }
    // Live nodes that cannot decide by themselves.
    let mut stuck: BTreeMap<&str, Vec<Node>> = BTreeMap::new();
    for w in &facts.waits {
        if let Wait::Decision { node, key } = w {
            if facts.up[*node] {
                stuck.entry(key.as_str()).or_default().push(*node);
            }
        }
    }
    if let Some((key, nodes)) = stuck.into_iter().next() {
        let gone = if down.is_empty() {
            String::new()
        } else {
            format!(" (down: {})", list(names, down.iter().copied()))
        };
        return verdict_of(
            VerdictKind::Blocked,
            format!(
                "{} cannot decide {key}: they wait for a decision that only unreachable nodes know{gone}",
                list(names, nodes)
            ),
        );
    }
    if goal == Goal::Choose {
        if keys.is_empty() {
            if facts.exhausted && facts.preemptions > 0 {
                return verdict_of(
                    VerdictKind::Livelock,
                    format!(
                        "nothing chosen in {} ms: ballots preempted one another {} times",
                        facts.budget, facts.preemptions
                    ),
                );
            }
            return verdict_of(VerdictKind::Blocked, "nothing was chosen".to_string());
        }
        let parts: Vec<String> = keys
            .iter()
            .map(|(key, values)| {
                let (v, nodes) = values.iter().next().expect("one value");
                format!("{key} = {v} ({})", list(names, nodes.iter().copied()))
            })
            .collect();
        return verdict_of(
            VerdictKind::Chosen,
            format!(
                "one value per key, learned consistently: {}",
                parts.join("; ")
            ),
        );
    }
    let mut parts = Vec::new();
    for (key, values) in &keys {
        let (v, nodes) = values.iter().next().expect("one value");
        parts.push(format!(
            "{key} = {v} everywhere it was decided ({})",
            list(names, nodes.iter().copied())
        ));
    }
    if !facts.reads.is_empty() {
        parts.push(format!(
            "{} read(s), none older than a write acknowledged before it began",
            facts.reads.len()
        ));
    }
    parts.push("no live node is left waiting".to_string());
    verdict_of(VerdictKind::Safe, parts.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> Vec<String> {
        ["A", "B", "C"].iter().map(|s| s.to_string()).collect()
    }

    fn decision(node: Node, value: &str) -> Decision {
        Decision {
            node,
            key: "k".into(),
            value: value.into(),
        }
    }

    #[test]
    fn two_values_for_one_key_are_inconsistent() {
        let facts = Facts {
            decisions: vec![decision(0, "x"), decision(1, "y")],
            up: vec![true; 3],
            ..Facts::default()
        };
        assert_eq!(
            verdict(Goal::Safety, &names(), &facts).kind,
            VerdictKind::Inconsistent
        );
    }

    #[test]
    fn a_read_is_stale_only_against_writes_acknowledged_before_it_began() {
        let write = WriteAck {
            at: 10,
            node: 0,
            key: "x".into(),
            version: 2,
            value: "2".into(),
        };
        let read = |start| ReadObs {
            start,
            at: start + 5,
            node: 1,
            key: "x".into(),
            version: 1,
            value: "1".into(),
        };
        let concurrent = Facts {
            writes: vec![write.clone()],
            reads: vec![read(5)],
            up: vec![true; 3],
            ..Facts::default()
        };
        assert_eq!(
            verdict(Goal::Safety, &names(), &concurrent).kind,
            VerdictKind::Safe
        );
        let after = Facts {
            writes: vec![write],
            reads: vec![read(10)],
            up: vec![true; 3],
            ..Facts::default()
        };
        assert_eq!(
            verdict(Goal::Safety, &names(), &after).kind,
            VerdictKind::StaleRead
        );
    }

    #[test]
    fn nothing_chosen_with_preemptions_at_the_budget_is_livelock() {
        let facts = Facts {
            preemptions: 4,
            exhausted: true,
            up: vec![true; 3],
            budget: 100,
            ..Facts::default()
        };
        assert_eq!(
            verdict(Goal::Choose, &names(), &facts).kind,
            VerdictKind::Livelock
        );
    }

    #[test]
    fn waits_on_a_dead_lock_holder_deadlock_and_on_a_decision_block() {
        let lock = Facts {
            waits: vec![Wait::Lock { node: 2, holder: 0 }],
            up: vec![false, true, true],
            ..Facts::default()
        };
        assert_eq!(
            verdict(Goal::Choose, &names(), &lock).kind,
            VerdictKind::Deadlock
        );
        let undecided = Facts {
            waits: vec![Wait::Decision {
                node: 1,
                key: "T1".into(),
            }],
            up: vec![false, true, true],
            ..Facts::default()
        };
        assert_eq!(
            verdict(Goal::Safety, &names(), &undecided).kind,
            VerdictKind::Blocked
        );
    }
}
