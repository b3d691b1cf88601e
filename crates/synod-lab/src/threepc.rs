//! Three-phase commit as seed 003 writes it down (CanCommit, PreCommit,
//! doCommit), and the same partition on synod's Paxos-backed two-phase
//! commit.
//!
//! 3PC removes 2PC's blocking with timeouts: a participant that voted yes
//! but saw no preCommit aborts on its own; one that acknowledged preCommit
//! but sees no doCommit commits on its own. Seeds 000 and 003 name the
//! price: if a partition separates a pre-committed participant from a
//! coordinator that then aborts (it missed that participant's
//! acknowledgement), the participant times out and commits while the
//! others roll back.

use crate::check::{Goal, Wait};
use crate::engine::{Action, Cx, Message, Node, Played, Sim, World};
use crate::synodtx;
use crate::Def;
use std::collections::BTreeSet;

const LATENCY: u64 = 10;
/// The coordinator's wait for votes and for preCommit acknowledgements.
const TIMEOUT_MS: u64 = 100;
/// A participant's wait for preCommit and for doCommit: longer than the
/// coordinator's, so an abort sent on time arrives before it expires.
const PART_TIMEOUT_MS: u64 = 150;
/// When the partition starts: after P3 received preCommit and answered.
pub(crate) const PARTITION_AT: u64 = 35;
/// When it heals.
pub(crate) const HEAL_AT: u64 = 300;

pub(crate) const SCENARIOS: &[Def] = &[
    Def {
        name: "textbook-commit",
        title: "Textbook 3PC without faults",
        about: "Seed 003's three-phase commit: CanCommit (C asks, each participant answers yes), PreCommit (C sends preCommit, each pre-commits and acknowledges), doCommit (C sends doCommit, each commits and reports haveCommitted).",
        goal: Goal::Safety,
        play: textbook_commit,
    },
    Def {
        name: "textbook-partition",
        title: "Textbook 3PC: a partition during doCommit: INCONSISTENT",
        about: "Seeds 003 and 000's 3PC flaw. All vote yes and receive preCommit; then a partition cuts P3 off, so its acknowledgement never reaches C. C times out waiting for it and aborts: P1 and P2 roll back. P3, pre-committed and hearing nothing, follows the 3PC rule and commits when its doCommit timeout expires. The partition heals with T1 committed on P3 and aborted on P1 and P2.",
        goal: Goal::Safety,
        play: textbook_partition,
    },
    Def {
        name: "synod-partition",
        title: "synod's Paxos-backed 2PC, same partition: safe, P3 waits and then agrees",
        about: "The same transaction and the same partition (P3's group cut off from everyone at 35 ms, healed at 300 ms) on synod's two-phase commit with Paxos groups. P3's vote is lost, so the coordinator group aborts after its timeout, as 3PC's coordinator did. But a prepared participant never decides on a timeout: P3 keeps its locks through the partition, and when it heals the coordinator's retried abort reaches it. Everyone aborts; nobody is left waiting.",
        goal: Goal::Safety,
        play: synodtx::partition_in_decision,
    },
];

#[derive(Clone, Debug)]
enum Msg3 {
    CanCommit,
    Yes,
    PreCommit,
    PreAck,
    DoCommit,
    Abort,
    HaveCommitted,
}

impl Message for Msg3 {
    fn label(&self) -> String {
        match self {
            Msg3::CanCommit => "canCommit?(T1)",
            Msg3::Yes => "yes(T1)",
            Msg3::PreCommit => "preCommit(T1)",
            Msg3::PreAck => "ack(preCommit T1)",
            Msg3::DoCommit => "doCommit(T1)",
            Msg3::Abort => "abort(T1)",
            Msg3::HaveCommitted => "haveCommitted(T1)",
        }
        .to_string()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum S3 {
    Init,
    Uncertain,
    PreCommitted,
    Committed,
    Aborted,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CPhase {
    Idle,
    Voting,
    PreCommitting,
    Committing,
    Aborted,
}

#[derive(Clone, Debug)]
enum Timer3 {
    Begin,
    /// Coordinator: the phase it started still lacks answers.
    CoordTimeout(u8),
    /// Participant: nothing came after the state it entered.
    PartTimeout(u8),
}

struct ThreePc {
    phase: CPhase,
    answers: BTreeSet<Node>,
    parts: Vec<S3>,
}

impl ThreePc {
    fn n(&self) -> usize {
        self.parts.len() + 1
    }

    fn decide(&mut self, cx: &mut Cx<'_, Self>, node: Node, commit: bool, why: &str) {
        let word = if commit { "commit" } else { "abort" };
        if node == 0 {
            cx.decide(0, "T1", word, format!("decides {word}{why}"));
        } else {
            self.parts[node - 1] = if commit { S3::Committed } else { S3::Aborted };
            cx.decide(node, "T1", word, format!("{word}s T1{why}"));
        }
    }

    fn broadcast(&self, cx: &mut Cx<'_, Self>, msg: Msg3) {
        for p in 1..self.n() {
            cx.send(0, p, msg.clone());
        }
    }
}

impl World for ThreePc {
    type Msg = Msg3;
    type Timer = Timer3;

    fn on_message(&mut self, cx: &mut Cx<'_, Self>, to: Node, from: Node, msg: Msg3) {
        let parts = self.n() - 1;
        if to == 0 {
            let next = match (self.phase, msg) {
                (CPhase::Voting, Msg3::Yes) => CPhase::PreCommitting,
                (CPhase::PreCommitting, Msg3::PreAck) => CPhase::Committing,
                (CPhase::Committing, Msg3::HaveCommitted) => CPhase::Idle,
                _ => return,
            };
            self.answers.insert(from);
            if self.answers.len() < parts {
                return;
            }
            self.answers.clear();
            self.phase = next;
            match next {
                CPhase::PreCommitting => {
                    cx.note(0, "every participant can commit: PreCommit phase");
                    self.broadcast(cx, Msg3::PreCommit);
                    cx.timer(0, TIMEOUT_MS, Timer3::CoordTimeout(2));
                }
                CPhase::Committing => {
                    self.decide(cx, 0, true, ": every participant pre-committed");
                    self.broadcast(cx, Msg3::DoCommit);
                }
                _ => cx.note(0, "every participant has committed: T1 is complete"),
            }
            return;
        }
        let i = to - 1;
        match (self.parts[i], msg) {
            (S3::Init, Msg3::CanCommit) => {
                self.parts[i] = S3::Uncertain;
                cx.send(to, 0, Msg3::Yes);
                cx.timer(to, PART_TIMEOUT_MS, Timer3::PartTimeout(1));
            }
            (S3::Uncertain, Msg3::PreCommit) => {
                self.parts[i] = S3::PreCommitted;
                cx.send(to, 0, Msg3::PreAck);
                cx.timer(to, PART_TIMEOUT_MS, Timer3::PartTimeout(2));
            }
            (S3::PreCommitted, Msg3::DoCommit) => {
                self.decide(cx, to, true, "");
                cx.send(to, 0, Msg3::HaveCommitted);
            }
            (S3::Uncertain | S3::PreCommitted, Msg3::Abort) => self.decide(cx, to, false, ""),
            _ => {}
        }
    }

    fn on_timer(&mut self, cx: &mut Cx<'_, Self>, node: Node, timer: Timer3) {
        match timer {
            Timer3::Begin => {
                self.phase = CPhase::Voting;
                cx.note(0, "begins T1: CanCommit phase");
                self.broadcast(cx, Msg3::CanCommit);
                cx.timer(0, TIMEOUT_MS, Timer3::CoordTimeout(1));
            }
            Timer3::CoordTimeout(phase) => {
                let waiting = match phase {
                    1 => self.phase == CPhase::Voting,
                    _ => self.phase == CPhase::PreCommitting,
                };
                if waiting {
                    self.phase = CPhase::Aborted;
                    self.decide(
                        cx,
                        0,
                        false,
                        &format!(
                            ": only {} of {} answered within {TIMEOUT_MS} ms",
                            self.answers.len(),
                            self.n() - 1
                        ),
                    );
                    self.broadcast(cx, Msg3::Abort);
                }
            }
            Timer3::PartTimeout(stage) => {
                let i = node - 1;
                match (stage, self.parts[i]) {
                    (1, S3::Uncertain) => {
                        self.decide(cx, node, false, ": no preCommit in time (3PC timeout rule)")
                    }
                    (2, S3::PreCommitted) => self.decide(
                        cx,
                        node,
                        true,
                        ": no doCommit or abort in time (3PC timeout rule)",
                    ),
                    _ => {}
                }
            }
        }
    }

    fn state(&self, node: Node) -> String {
        if node == 0 {
            return match self.phase {
                CPhase::Idle => "idle",
                CPhase::Voting => "CanCommit",
                CPhase::PreCommitting => "PreCommit",
                CPhase::Committing => "doCommit",
                CPhase::Aborted => "aborted",
            }
            .to_string();
        }
        match self.parts[node - 1] {
            S3::Init => "init",
            S3::Uncertain => "voted yes",
            S3::PreCommitted => "pre-committed",
            S3::Committed => "committed",
            S3::Aborted => "aborted",
        }
        .to_string()
    }

    fn waits(&self, _up: &[bool]) -> Vec<Wait> {
        (0..self.parts.len())
            .filter(|&i| matches!(self.parts[i], S3::Uncertain | S3::PreCommitted))
            .map(|i| Wait::Decision {
                node: i + 1,
                key: "T1".into(),
            })
            .collect()
    }
}

const NODES: &[&str] = &["C", "P1", "P2", "P3"];

fn sim() -> Sim<ThreePc> {
    let world = ThreePc {
        phase: CPhase::Idle,
        answers: BTreeSet::new(),
        parts: vec![S3::Init; 3],
    };
    let mut sim = Sim::new(world, NODES, LATENCY, 1000);
    sim.at(0, Action::Fire(0, Timer3::Begin));
    sim
}

fn textbook_commit() -> Played {
    sim().run()
}

fn textbook_partition() -> Played {
    let mut sim = sim();
    sim.at(
        PARTITION_AT,
        Action::Partition(vec![vec![0, 1, 2], vec![3]]),
    )
    .at(HEAL_AT, Action::Heal);
    sim.run()
}

#[cfg(test)]
mod tests {
    use crate::{run, VerdictKind};

    #[test]
    fn textbook_3pc_commits_without_faults() {
        let r = run("3pc", "textbook-commit").unwrap();
        assert_eq!(r.verdict.kind, VerdictKind::Safe, "{}", r.verdict.summary);
    }

    #[test]
    fn textbook_3pc_is_inconsistent_under_a_partition_in_docommit() {
        let r = run("3pc", "textbook-partition").unwrap();
        assert_eq!(
            r.verdict.kind,
            VerdictKind::Inconsistent,
            "{}",
            r.verdict.summary
        );
        assert!(
            r.verdict.summary.contains("abort by C, P1, P2"),
            "{}",
            r.verdict.summary
        );
        assert!(
            r.verdict.summary.contains("commit by P3"),
            "{}",
            r.verdict.summary
        );
    }

    #[test]
    fn synods_2pc_stays_consistent_under_the_same_partition() {
        let r = run("3pc", "synod-partition").unwrap();
        assert_eq!(r.verdict.kind, VerdictKind::Safe, "{}", r.verdict.summary);
        assert!(
            r.verdict.summary.contains("T1 = abort"),
            "{}",
            r.verdict.summary
        );
        // P3's group decides only after the heal.
        let p3 = r
            .steps
            .iter()
            .find(|s| {
                s.kind == crate::StepKind::Decide
                    && s.from.as_deref().is_some_and(|f| f.starts_with("P3"))
            })
            .unwrap();
        assert!(p3.at > super::HEAL_AT, "{}", p3.at);
    }
}
