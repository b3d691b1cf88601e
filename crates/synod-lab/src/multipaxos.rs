//! Textbook Multi-Paxos: one leader runs phase 1 once for every open slot,
//! then phase 2 per command. On a leader change the new leader's phase 1
//! collects every accepted value above its commit point, re-proposes the
//! one with the highest ballot in each slot and fills holes with no-ops:
//! "the later epoch endorses the earlier one", slot by slot (DESIGN.md,
//! "Consensus"). synod's real implementation is `synod-paxos`; this one is
//! written for reading.

use crate::check::Goal;
use crate::engine::{Action, Ballot, Cx, Message, Node, Played, Rule, Sim, World};
use crate::Def;
use std::collections::{BTreeMap, BTreeSet};

const LATENCY: u64 = 10;

pub(crate) const SCENARIOS: &[Def] = &[
    Def {
        name: "steady",
        title: "A stable leader: phase 1 once, then one round trip per command",
        about: "S1 runs prepare(b=1.1) once for every slot, then each command a, b, c costs one accept/accepted round with a majority. Every later accept carries the commit point, so followers learn what is chosen without extra messages.",
        goal: Goal::Choose,
        play: steady,
    },
    Def {
        name: "leader-change",
        title: "Leader change: open slots filled with the old values or no-ops",
        about: "S1 leads at 1.1 and proposes a..e in slots 1-5, but accepts are lost: slot 3 reaches only S2, slot 4 nobody, slot 5 only S3; then S1 crashes. S2's prepare(b=2.2) for slots >= 3 collects (1.1, c) for slot 3 from itself and (1.1, e) for slot 5 from S3: it re-proposes c and e at 2.2 and fills slot 4, which nobody in its quorum accepted, with a no-op. S1's d was never chosen and is never acknowledged. S1 comes back, campaigns with 2.1, is rejected, and learns the chosen slots from S2.",
        goal: Goal::Choose,
        play: leader_change,
    },
];

type Slot = u32;

#[derive(Clone, Debug)]
enum MMsg {
    Prepare {
        b: Ballot,
        from: Slot,
    },
    Promise {
        b: Ballot,
        accepted: Vec<(Slot, Ballot, &'static str)>,
    },
    Accept {
        b: Ballot,
        slot: Slot,
        v: &'static str,
        commit: Slot,
    },
    Accepted {
        b: Ballot,
        slot: Slot,
    },
    Reject {
        b: Ballot,
        promised: Ballot,
    },
    Heartbeat {
        b: Ballot,
        commit: Slot,
    },
    Behind {
        commit: Slot,
    },
    Learn {
        values: Vec<(Slot, &'static str)>,
    },
}

impl Message for MMsg {
    fn label(&self) -> String {
        match self {
            MMsg::Prepare { b, from } => format!("prepare(b={b}, slots >= {from})"),
            MMsg::Promise { b, accepted } if accepted.is_empty() => {
                format!("promise(b={b}, nothing accepted)")
            }
            MMsg::Promise { b, accepted } => {
                let a: Vec<String> = accepted
                    .iter()
                    .map(|(s, ab, v)| format!("#{s}=({ab}, {v})"))
                    .collect();
                format!("promise(b={b}, {})", a.join(" "))
            }
            MMsg::Accept { b, slot, v, commit } => {
                format!("accept(b={b}, #{slot}, {v}, commit <= {commit})")
            }
            MMsg::Accepted { b, slot } => format!("accepted(b={b}, #{slot})"),
            MMsg::Reject { b, promised } => format!("reject(b={b}, promised {promised})"),
            MMsg::Heartbeat { b, commit } => format!("heartbeat(b={b}, commit <= {commit})"),
            MMsg::Behind { commit } => format!("behind(commit <= {commit})"),
            MMsg::Learn { values } => {
                let v: Vec<String> = values.iter().map(|(s, v)| format!("#{s}={v}")).collect();
                format!("learn({})", v.join(" "))
            }
        }
    }
}

#[derive(Clone, Debug)]
enum MTimer {
    /// Campaign: phase 1 with a ballot above anything promised.
    Elect,
    /// A client command for the leader.
    Command(&'static str),
    Heartbeat,
}

enum Role {
    Follower,
    Electing {
        b: Ballot,
        from: Slot,
        promises: BTreeMap<Node, Vec<(Slot, Ballot, &'static str)>>,
    },
    Leading {
        b: Ballot,
        next: Slot,
        pending: BTreeMap<Slot, (&'static str, BTreeSet<Node>)>,
    },
}

struct Replica {
    // Durable.
    promised: Option<Ballot>,
    accepted: BTreeMap<Slot, (Ballot, &'static str)>,
    chosen: BTreeMap<Slot, &'static str>,
    // Volatile.
    role: Role,
    queued: Vec<&'static str>,
}

impl Replica {
    fn commit(&self) -> Slot {
        let mut c = 0;
        while self.chosen.contains_key(&(c + 1)) {
            c += 1;
        }
        c
    }
}

struct Multi {
    r: Vec<Replica>,
}

impl Multi {
    fn new(n: usize) -> Multi {
        Multi {
            r: (0..n)
                .map(|_| Replica {
                    promised: None,
                    accepted: BTreeMap::new(),
                    chosen: BTreeMap::new(),
                    role: Role::Follower,
                    queued: Vec::new(),
                })
                .collect(),
        }
    }

    fn majority(&self) -> usize {
        self.r.len() / 2 + 1
    }

    fn all(&self) -> Vec<Node> {
        (0..self.r.len()).collect()
    }

    fn propose(&mut self, cx: &mut Cx<'_, Self>, leader: Node, slot: Slot, v: &'static str) {
        let commit = self.r[leader].commit();
        let Role::Leading { b, pending, .. } = &mut self.r[leader].role else {
            return;
        };
        let b = *b;
        pending.insert(slot, (v, BTreeSet::new()));
        for n in self.all() {
            cx.send(leader, n, MMsg::Accept { b, slot, v, commit });
        }
    }

    /// Follower `n` learns from a leader's commit point: a slot it accepted
    /// in the leader's own ballot, at or below the commit point, is chosen.
    fn learn_commit(&mut self, n: Node, b: Ballot, commit: Slot) {
        let r = &mut self.r[n];
        for (&s, &(ab, v)) in r.accepted.range(..=commit) {
            if ab == b {
                r.chosen.entry(s).or_insert(v);
            }
        }
    }

    fn step_down(&mut self, cx: &mut Cx<'_, Self>, n: Node, higher: Ballot) {
        if !matches!(self.r[n].role, Role::Follower) {
            cx.note(n, format!("sees ballot {higher}: stops leading, follows"));
            self.r[n].role = Role::Follower;
        }
        if self.r[n].promised < Some(higher) {
            self.r[n].promised = Some(higher);
        }
    }
}

impl World for Multi {
    type Msg = MMsg;
    type Timer = MTimer;

    fn on_message(&mut self, cx: &mut Cx<'_, Self>, to: Node, from: Node, msg: MMsg) {
        let majority = self.majority();
        match msg {
            MMsg::Prepare { b, from: slot } => {
                let r = &mut self.r[to];
                if r.promised.is_none_or(|p| b > p) {
                    r.promised = Some(b);
                    let accepted = r
                        .accepted
                        .range(slot..)
                        .map(|(&s, &(ab, v))| (s, ab, v))
                        .collect();
                    cx.send(to, from, MMsg::Promise { b, accepted });
                    if from != to {
                        self.step_down(cx, to, b);
                    }
                } else {
                    let promised = r.promised.expect("promised");
                    cx.send(to, from, MMsg::Reject { b, promised });
                }
            }
            MMsg::Promise { b, accepted } => {
                let Role::Electing {
                    b: mine,
                    from: first,
                    promises,
                } = &mut self.r[to].role
                else {
                    return;
                };
                if *mine != b {
                    return;
                }
                promises.insert(from, accepted);
                if promises.len() < majority {
                    return;
                }
                let first = *first;
                // Per slot, the value accepted with the highest ballot.
                let mut best: BTreeMap<Slot, (Ballot, &'static str)> = BTreeMap::new();
                for list in promises.values() {
                    for &(s, ab, v) in list {
                        if best.get(&s).is_none_or(|(bb, _)| ab > *bb) {
                            best.insert(s, (ab, v));
                        }
                    }
                }
                let top = best.keys().next_back().copied().unwrap_or(first - 1);
                let mut plan = Vec::new();
                for s in first..=top {
                    match best.get(&s) {
                        Some(&(ab, v)) => plan.push((s, v, format!("#{s} {v} (accepted at {ab})"))),
                        None => plan.push((
                            s,
                            "no-op",
                            format!("#{s} no-op (nobody in the quorum accepted anything)"),
                        )),
                    }
                }
                let text = if plan.is_empty() {
                    format!("leads at {b}: no open slots")
                } else {
                    let p: Vec<&str> = plan.iter().map(|(_, _, t)| t.as_str()).collect();
                    format!("leads at {b}; re-proposes {}", p.join(", "))
                };
                cx.note(to, text);
                self.r[to].role = Role::Leading {
                    b,
                    next: top + 1,
                    pending: BTreeMap::new(),
                };
                for (s, v, _) in plan {
                    self.propose(cx, to, s, v);
                }
                for v in std::mem::take(&mut self.r[to].queued) {
                    let Role::Leading { next, .. } = &mut self.r[to].role else {
                        unreachable!()
                    };
                    let s = *next;
                    *next += 1;
                    self.propose(cx, to, s, v);
                }
            }
            MMsg::Accept { b, slot, v, commit } => {
                let r = &mut self.r[to];
                if r.promised.is_none_or(|p| b >= p) {
                    r.promised = Some(b);
                    r.accepted.insert(slot, (b, v));
                    cx.send(to, from, MMsg::Accepted { b, slot });
                    if from != to {
                        self.step_down(cx, to, b);
                        self.learn_commit(to, b, commit);
                    }
                } else {
                    let promised = r.promised.expect("promised");
                    cx.send(to, from, MMsg::Reject { b, promised });
                }
            }
            MMsg::Accepted { b, slot } => {
                let Role::Leading {
                    b: mine, pending, ..
                } = &mut self.r[to].role
                else {
                    return;
                };
                if *mine != b {
                    return;
                }
                let Some((v, acks)) = pending.get_mut(&slot) else {
                    return;
                };
                acks.insert(from);
                if acks.len() >= majority {
                    let v = *v;
                    pending.remove(&slot);
                    self.r[to].chosen.insert(slot, v);
                    cx.decide(
                        to,
                        &format!("slot {slot}"),
                        v,
                        format!("#{slot} = {v} chosen at {b}"),
                    );
                }
            }
            MMsg::Reject { promised, .. } => self.step_down(cx, to, promised),
            MMsg::Heartbeat { b, commit } => {
                if self.r[to].promised.is_none_or(|p| b >= p) {
                    self.step_down(cx, to, b);
                    self.learn_commit(to, b, commit);
                    let mine = self.r[to].commit();
                    if mine < commit {
                        cx.send(to, from, MMsg::Behind { commit: mine });
                    }
                }
            }
            MMsg::Behind { commit } => {
                let values: Vec<(Slot, &'static str)> = self.r[to]
                    .chosen
                    .range(commit + 1..)
                    .map(|(&s, &v)| (s, v))
                    .collect();
                if !values.is_empty() {
                    cx.send(to, from, MMsg::Learn { values });
                }
            }
            MMsg::Learn { values } => {
                for (s, v) in values {
                    let r = &mut self.r[to];
                    if let Some(&(ab, old)) = r.accepted.get(&s) {
                        if old != v {
                            cx.note(
                                to,
                                format!(
                                    "its accepted ({ab}, {old}) for #{s} was never chosen: {v} was"
                                ),
                            );
                        }
                    }
                    if r.chosen.insert(s, v).is_none() {
                        cx.decide(to, &format!("slot {s}"), v, format!("learns #{s} = {v}"));
                    }
                }
            }
        }
    }

    fn on_timer(&mut self, cx: &mut Cx<'_, Self>, node: Node, timer: MTimer) {
        match timer {
            MTimer::Elect => {
                let round = self.r[node].promised.map_or(1, |p| p.round + 1);
                let b = Ballot::new(round, node as u32 + 1);
                let from = self.r[node].commit() + 1;
                cx.note(
                    node,
                    format!("campaigns with ballot {b} for slots >= {from}"),
                );
                self.r[node].role = Role::Electing {
                    b,
                    from,
                    promises: BTreeMap::new(),
                };
                for n in self.all() {
                    cx.send(node, n, MMsg::Prepare { b, from });
                }
            }
            MTimer::Command(v) => {
                cx.note(node, format!("client command {v}"));
                match &mut self.r[node].role {
                    Role::Leading { next, .. } => {
                        let s = *next;
                        *next += 1;
                        self.propose(cx, node, s, v);
                    }
                    _ => self.r[node].queued.push(v),
                }
            }
            MTimer::Heartbeat => {
                if let Role::Leading { b, .. } = self.r[node].role {
                    let commit = self.r[node].commit();
                    for n in self.all() {
                        if n != node {
                            cx.send(node, n, MMsg::Heartbeat { b, commit });
                        }
                    }
                }
            }
        }
    }

    fn on_crash(&mut self, node: Node) {
        self.r[node].role = Role::Follower;
        self.r[node].queued.clear();
    }

    fn state(&self, node: Node) -> String {
        let r = &self.r[node];
        let role = match &r.role {
            Role::Follower => "follower".to_string(),
            Role::Electing { b, .. } => format!("campaigning {b}"),
            Role::Leading { b, .. } => format!("leader {b}"),
        };
        let p = r.promised.map_or("-".to_string(), |b| b.to_string());
        let slots: BTreeSet<Slot> = r.accepted.keys().chain(r.chosen.keys()).copied().collect();
        let all: Vec<String> = slots
            .iter()
            .map(|s| match (r.chosen.get(s), r.accepted.get(s)) {
                (Some(v), _) => format!("#{s}={v}*"),
                (None, Some((b, v))) => format!("#{s}=({b},{v})"),
                (None, None) => unreachable!("slot from one of the maps"),
            })
            .collect();
        format!(
            "{role}, promised {p}, log [{}] (* = known chosen)",
            all.join(" ")
        )
    }
}

const THREE: &[&str] = &["S1", "S2", "S3"];
const S1: Node = 0;
const S2: Node = 1;
const S3: Node = 2;

fn steady() -> Played {
    let mut sim = Sim::new(Multi::new(3), THREE, LATENCY, 1000);
    sim.at(0, Action::Fire(S1, MTimer::Elect))
        .at(30, Action::Fire(S1, MTimer::Command("a")))
        .at(40, Action::Fire(S1, MTimer::Command("b")))
        .at(50, Action::Fire(S1, MTimer::Command("c")))
        .at(100, Action::Fire(S1, MTimer::Heartbeat));
    sim.run()
}

fn leader_change() -> Played {
    let mut sim = Sim::new(Multi::new(3), THREE, LATENCY, 1000);
    sim.rule(Rule::drop(S1, S3, "accept(b=1.1, #3,"))
        .rule(Rule::drop(S1, S2, "accept(b=1.1, #4,"))
        .rule(Rule::drop(S1, S3, "accept(b=1.1, #4,"))
        .rule(Rule::drop(S1, S2, "accept(b=1.1, #5,"))
        .at(0, Action::Fire(S1, MTimer::Elect))
        .at(30, Action::Fire(S1, MTimer::Command("a")))
        .at(40, Action::Fire(S1, MTimer::Command("b")))
        .at(70, Action::Fire(S1, MTimer::Command("c")))
        .at(80, Action::Fire(S1, MTimer::Command("d")))
        .at(90, Action::Fire(S1, MTimer::Command("e")))
        .at(105, Action::Crash(S1))
        .at(
            250,
            Action::Note("S2: no word from S1 for 150 ms, its election timeout fires".into()),
        )
        .at(250, Action::Fire(S2, MTimer::Elect))
        .at(300, Action::Fire(S2, MTimer::Command("f")))
        .at(350, Action::Recover(S1))
        .at(360, Action::Fire(S1, MTimer::Elect))
        .at(400, Action::Fire(S2, MTimer::Heartbeat));
    sim.run()
}

#[cfg(test)]
mod tests {
    use crate::{run, StepKind, VerdictKind};

    #[test]
    fn steady_leader_runs_phase_one_once() {
        let r = run("multipaxos", "steady").unwrap();
        assert_eq!(r.verdict.kind, VerdictKind::Chosen, "{}", r.verdict.summary);
        let prepares = r
            .steps
            .iter()
            .filter(|s| s.kind == StepKind::Send && s.what.starts_with("prepare("))
            .count();
        assert_eq!(prepares, 3, "one prepare per replica, once");
        assert!(
            r.verdict.summary.contains("slot 3 = c"),
            "{}",
            r.verdict.summary
        );
    }

    #[test]
    fn new_leader_fills_open_slots_with_old_values_and_no_ops() {
        let r = run("multipaxos", "leader-change").unwrap();
        assert_eq!(r.verdict.kind, VerdictKind::Chosen, "{}", r.verdict.summary);
        for want in ["slot 3 = c", "slot 4 = no-op", "slot 5 = e", "slot 6 = f"] {
            assert!(
                r.verdict.summary.contains(want),
                "{want}: {}",
                r.verdict.summary
            );
        }
        for want in [
            "accept(b=2.2, #3, c",
            "accept(b=2.2, #4, no-op",
            "accept(b=2.2, #5, e",
        ] {
            assert!(
                r.steps
                    .iter()
                    .any(|s| s.from.as_deref() == Some("S2") && s.what.starts_with(want)),
                "{want}"
            );
        }
        // S1 ends with slot 4 = no-op, its accepted d replaced.
        let last = &r.steps.last().unwrap().states[0].1;
        assert!(last.contains("#4=no-op*"), "{last}");
        assert!(!r.verdict.summary.contains("= d"), "{}", r.verdict.summary);
    }
}
