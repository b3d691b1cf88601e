//! Two-phase commit as seed 003 writes it down, and the same faults on
//! synod's Paxos-backed two-phase commit.
//!
//! Textbook 2PC: the coordinator asks every participant whether it can
//! commit (phase one, the vote); a participant that votes yes logs undo and
//! redo and is *prepared*: from then on it may neither commit nor abort on
//! its own. If every vote is yes the coordinator sends commit, otherwise
//! rollback (phase two). Seed 000 names the fatal case: the coordinator and
//! the participant that received the first commit crash together; the
//! others are all prepared and no one alive knows the decision, so they
//! block until one of the two comes back.

use crate::check::{Goal, Wait};
use crate::engine::{Action, Cx, Message, Node, Played, Sim, World};
use crate::synodtx;
use crate::Def;
use std::collections::BTreeSet;

const LATENCY: u64 = 10;
/// The coordinator sends its decision to one participant after the other.
const SEND_GAP_MS: u64 = 5;
/// A prepared participant asks the others after this long without a decision.
const DECISION_TIMEOUT_MS: u64 = 100;
/// How many times it asks before giving up until someone recovers.
const ASK_ROUNDS: u32 = 3;

pub(crate) const SCENARIOS: &[Def] = &[
    Def {
        name: "textbook-commit",
        title: "Textbook 2PC without faults",
        about: "Seed 003's two-phase commit. C asks P1, P2, P3 to prepare T1; each logs undo/redo, votes yes and is prepared; C decides commit and tells them one after the other; each commits and acknowledges.",
        goal: Goal::Safety,
        play: textbook_commit,
    },
    Def {
        name: "textbook-crash",
        title: "Textbook 2PC: the coordinator and a participant crash after the vote: BLOCKED",
        about: "Seed 000's 2PC case 3. Every participant voted yes; C decides commit, sends the first commit to P1 and crashes; P1 commits and crashes too. P2 and P3 are prepared: they may not commit or abort on their own. After a timeout they ask each other (cooperative termination), but both only know 'prepared', and the only nodes that know the decision are down. They stay blocked, holding their locks, until C or P1 recovers.",
        goal: Goal::Safety,
        play: textbook_crash,
    },
    Def {
        name: "synod-crash",
        title: "synod's Paxos-backed 2PC, same crashes: a leader change, not a block",
        about: "The same transaction and the same crashes on synod's design (DESIGN.md: 2PC whose coordinator and participants are Paxos groups). C and P1..P3 are groups of three replicas; a vote, the decision and each outcome are chosen in the group's log before anyone acts on them. Ca (C's leader) crashes right after sending the first commit, P1a (P1's leader) right after receiving it. Cb and P1b take over through Paxos phase 1, find 'decide commit' and 'commit T1' in the log, and finish: every group commits, nobody waits.",
        goal: Goal::Safety,
        play: synodtx::crash_after_vote,
    },
];

#[derive(Clone, Debug)]
enum TMsg {
    Prepare,
    Vote(bool),
    Commit,
    Rollback,
    Ack,
    StateQ,
    StateA(PState),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PState {
    Init,
    Prepared,
    Committed,
    Aborted,
}

impl PState {
    fn word(self) -> &'static str {
        match self {
            PState::Init => "init",
            PState::Prepared => "prepared",
            PState::Committed => "committed",
            PState::Aborted => "aborted",
        }
    }
}

impl Message for TMsg {
    fn label(&self) -> String {
        match self {
            TMsg::Prepare => "prepare(T1)".into(),
            TMsg::Vote(yes) => format!("vote(T1, {})", if *yes { "yes" } else { "no" }),
            TMsg::Commit => "commit(T1)".into(),
            TMsg::Rollback => "rollback(T1)".into(),
            TMsg::Ack => "ack(T1)".into(),
            TMsg::StateQ => "state?(T1)".into(),
            TMsg::StateA(s) => format!("state(T1) = {}", s.word()),
        }
    }
}

#[derive(Clone, Debug)]
enum TTimer {
    Begin,
    /// Send the decision to participant i (1-based node index).
    SendDecision(Node),
    DecisionTimeout,
}

/// Node 0 is the coordinator, 1.. the participants.
struct TwoPc {
    decision: Option<bool>,
    votes: BTreeSet<Node>,
    acks: BTreeSet<Node>,
    parts: Vec<PState>,
    asked: Vec<u32>,
}

impl TwoPc {
    fn new(participants: usize) -> TwoPc {
        TwoPc {
            decision: None,
            votes: BTreeSet::new(),
            acks: BTreeSet::new(),
            parts: vec![PState::Init; participants],
            asked: vec![0; participants],
        }
    }

    fn n(&self) -> usize {
        self.parts.len() + 1
    }

    fn outcome(&mut self, cx: &mut Cx<'_, Self>, p: Node, commit: bool, why: &str) {
        let s = if commit {
            PState::Committed
        } else {
            PState::Aborted
        };
        self.parts[p - 1] = s;
        let word = if commit { "commit" } else { "abort" };
        cx.decide(p, "T1", word, format!("{word}s T1{why}"));
    }
}

impl World for TwoPc {
    type Msg = TMsg;
    type Timer = TTimer;

    fn on_message(&mut self, cx: &mut Cx<'_, Self>, to: Node, from: Node, msg: TMsg) {
        let n = self.n();
        if to == 0 {
            match msg {
                TMsg::Vote(yes) => {
                    if !yes {
                        self.decision.get_or_insert(false);
                    }
                    self.votes.insert(from);
                    if self.votes.len() == n - 1 && self.decision.is_none() {
                        self.decision = Some(true);
                        cx.decide(0, "T1", "commit", "every vote is yes: decides commit");
                        self.on_timer(cx, 0, TTimer::SendDecision(1));
                    }
                }
                TMsg::Ack => {
                    self.acks.insert(from);
                    if self.acks.len() == n - 1 {
                        cx.note(0, "every participant acknowledged: T1 is complete");
                    }
                }
                TMsg::StateQ => {
                    if let Some(d) = self.decision {
                        let s = if d {
                            PState::Committed
                        } else {
                            PState::Aborted
                        };
                        cx.send(0, from, TMsg::StateA(s));
                    }
                }
                _ => {}
            }
            return;
        }
        let i = to - 1;
        match msg {
            TMsg::Prepare => {
                self.parts[i] = PState::Prepared;
                cx.note(
                    to,
                    "logs undo/redo for T1 and votes yes: prepared, may no longer decide alone",
                );
                cx.send(to, 0, TMsg::Vote(true));
                cx.timer(to, DECISION_TIMEOUT_MS, TTimer::DecisionTimeout);
            }
            TMsg::Commit if self.parts[i] == PState::Prepared => {
                self.outcome(cx, to, true, "");
                cx.send(to, 0, TMsg::Ack);
            }
            TMsg::Rollback if self.parts[i] == PState::Prepared => {
                self.outcome(cx, to, false, " (rollback)");
                cx.send(to, 0, TMsg::Ack);
            }
            TMsg::StateQ => cx.send(to, from, TMsg::StateA(self.parts[i])),
            TMsg::StateA(s) if self.parts[i] == PState::Prepared => match s {
                PState::Committed => {
                    self.outcome(cx, to, true, &format!(" (learned from {})", cx.name(from)))
                }
                PState::Aborted | PState::Init => {
                    self.outcome(cx, to, false, &format!(" (learned from {})", cx.name(from)))
                }
                PState::Prepared => {}
            },
            _ => {}
        }
    }

    fn on_timer(&mut self, cx: &mut Cx<'_, Self>, node: Node, timer: TTimer) {
        let n = self.n();
        match timer {
            TTimer::Begin => {
                cx.note(0, "begins T1: asks every participant to prepare");
                for p in 1..n {
                    cx.send(0, p, TMsg::Prepare);
                }
            }
            TTimer::SendDecision(p) => {
                let msg = if self.decision == Some(true) {
                    TMsg::Commit
                } else {
                    TMsg::Rollback
                };
                cx.send(0, p, msg);
                if p + 1 < n {
                    cx.timer(0, SEND_GAP_MS, TTimer::SendDecision(p + 1));
                }
            }
            TTimer::DecisionTimeout => {
                let i = node - 1;
                if self.parts[i] != PState::Prepared {
                    return;
                }
                self.asked[i] += 1;
                if self.asked[i] > ASK_ROUNDS {
                    cx.note(
                        node,
                        "still prepared after asking everyone: blocked, holding its locks, until the coordinator or a participant that knows comes back",
                    );
                    return;
                }
                cx.note(
                    node,
                    format!("no decision after {DECISION_TIMEOUT_MS} ms: asks everyone (cooperative termination, round {})", self.asked[i]),
                );
                for other in (0..n).filter(|&o| o != node) {
                    cx.send(node, other, TMsg::StateQ);
                }
                cx.timer(node, DECISION_TIMEOUT_MS, TTimer::DecisionTimeout);
            }
        }
    }

    fn state(&self, node: Node) -> String {
        if node == 0 {
            return match self.decision {
                None => format!("collecting votes ({} yes)", self.votes.len()),
                Some(true) => format!("decided commit ({} acks)", self.acks.len()),
                Some(false) => format!("decided rollback ({} acks)", self.acks.len()),
            };
        }
        self.parts[node - 1].word().to_string()
    }

    fn waits(&self, _up: &[bool]) -> Vec<Wait> {
        (0..self.parts.len())
            .filter(|&i| self.parts[i] == PState::Prepared)
            .map(|i| Wait::Decision {
                node: i + 1,
                key: "T1".into(),
            })
            .collect()
    }
}

const NODES: &[&str] = &["C", "P1", "P2", "P3"];

fn textbook_commit() -> Played {
    let mut sim = Sim::new(TwoPc::new(3), NODES, LATENCY, 1000);
    sim.at(0, Action::Fire(0, TTimer::Begin));
    sim.run()
}

fn textbook_crash() -> Played {
    let mut sim = Sim::new(TwoPc::new(3), NODES, LATENCY, 1000);
    sim.at(0, Action::Fire(0, TTimer::Begin))
        .at(21, Action::Crash(0))
        .at(31, Action::Crash(1));
    sim.run()
}

#[cfg(test)]
mod tests {
    use crate::{run, VerdictKind};

    #[test]
    fn textbook_2pc_commits_without_faults() {
        let r = run("2pc", "textbook-commit").unwrap();
        assert_eq!(r.verdict.kind, VerdictKind::Safe, "{}", r.verdict.summary);
        assert!(
            r.verdict.summary.contains("T1 = commit"),
            "{}",
            r.verdict.summary
        );
    }

    #[test]
    fn textbook_2pc_blocks_when_coordinator_and_a_participant_crash() {
        let r = run("2pc", "textbook-crash").unwrap();
        assert_eq!(
            r.verdict.kind,
            VerdictKind::Blocked,
            "{}",
            r.verdict.summary
        );
        assert!(
            r.verdict.summary.starts_with("P2, P3 cannot decide T1"),
            "{}",
            r.verdict.summary
        );
        let last = &r.steps.last().unwrap().states;
        assert_eq!(last[2].1, "prepared");
        assert_eq!(last[3].1, "prepared");
    }

    #[test]
    fn synods_2pc_survives_the_same_crashes() {
        let r = run("2pc", "synod-crash").unwrap();
        assert_eq!(r.verdict.kind, VerdictKind::Safe, "{}", r.verdict.summary);
        assert!(
            r.verdict.summary.contains("T1 = commit"),
            "{}",
            r.verdict.summary
        );
        for g in ["Cb", "P1b", "P2a", "P3a"] {
            assert!(
                r.steps
                    .iter()
                    .any(|s| s.kind == crate::StepKind::Decide && s.from.as_deref() == Some(g)),
                "{g} decides"
            );
        }
    }
}
