//! The quorum mechanism (NWR): N replicas, a write succeeds once W of them
//! stored it, a read asks R of them and keeps the highest version. Seed 004
//! ("Quorum 机制"): with W + R > N every read set meets every write set
//! (the pigeonhole principle), so a read sees the latest acknowledged
//! write; with W + R ≤ N the sets can miss each other. synod's Paxos uses
//! the same rule for its phase-1 and phase-2 quorums (Q1 + Q2 > N).

use crate::check::Goal;
use crate::engine::{Action, Cx, Message, Node, Played, Rule, Sim, World};
use crate::Def;
use std::collections::BTreeMap;

const LATENCY: u64 = 10;
/// How late the slow replicas receive the write (the background sync).
const LAG_MS: u64 = 400;

pub(crate) const SCENARIOS: &[Def] = &[
    Def {
        name: "w3r3",
        title: "N = 5, W = 3, R = 3 (W + R > N): the read meets the write",
        about: "Seed 004's example: five replicas hold V1 (version 1). The writer sends V2 (version 2) to all five; R4 and R5 receive it late, so the write is acknowledged once R1-R3 stored it: (V2, V2, V2, V1, V1). The reader asks R3, R4, R5 and gets V2, V1, V1: at least one of any three replicas holds V2, and the highest version wins.",
        goal: Goal::Safety,
        play: w3r3,
    },
    Def {
        name: "w2r2",
        title: "N = 5, W = 2, R = 2 (W + R <= N): a stale read",
        about: "The same five replicas with W = 2 and R = 2. The write of V2 is acknowledged once R1 and R2 stored it; the reader asks R4 and R5, which have not heard of it yet, and returns V1 after V2 was acknowledged. With W + R <= N a read set can miss the write set entirely.",
        goal: Goal::Safety,
        play: w2r2,
    },
    Def {
        name: "n2w1r1",
        title: "One primary, one asynchronous backup (N = 2, W = 1, R = 1): a stale read",
        about: "Seed 004's weak-consistency example: a primary R1 and a backup R2 replicated asynchronously. The write of V2 is acknowledged once the primary stored it (W = 1); a read served by the backup alone (R = 1) still returns V1.",
        goal: Goal::Safety,
        play: n2w1r1,
    },
];

#[derive(Clone, Debug)]
enum QMsg {
    Write(&'static str, u64),
    WriteAck(u64),
    Read,
    Value(&'static str, u64),
}

impl Message for QMsg {
    fn label(&self) -> String {
        match self {
            QMsg::Write(v, ver) => format!("write(x={v}, version {ver})"),
            QMsg::WriteAck(ver) => format!("stored(version {ver})"),
            QMsg::Read => "read(x)".to_string(),
            QMsg::Value(v, ver) => format!("value(x={v}, version {ver})"),
        }
    }
}

#[derive(Clone, Debug)]
enum QTimer {
    /// The writer writes `value` as `version` to every replica.
    Write(&'static str, u64),
    /// The reader asks these replicas.
    Read(Vec<Node>),
}

struct Quorum {
    /// Each replica's (value, version).
    replicas: Vec<(&'static str, u64)>,
    w: usize,
    r: usize,
    acks: usize,
    writing: Option<(&'static str, u64)>,
    writer_state: String,
    read_start: u64,
    replies: BTreeMap<Node, (&'static str, u64)>,
    reader_state: String,
}

impl Quorum {
    fn new(n: usize, w: usize, r: usize) -> Quorum {
        Quorum {
            replicas: vec![("V1", 1); n],
            w,
            r,
            acks: 0,
            writing: None,
            writer_state: "idle".into(),
            read_start: 0,
            replies: BTreeMap::new(),
            reader_state: "idle".into(),
        }
    }

    fn writer(&self) -> Node {
        self.replicas.len()
    }

    fn reader(&self) -> Node {
        self.replicas.len() + 1
    }
}

impl World for Quorum {
    type Msg = QMsg;
    type Timer = QTimer;

    fn on_message(&mut self, cx: &mut Cx<'_, Self>, to: Node, from: Node, msg: QMsg) {
        match msg {
            QMsg::Write(v, ver) => {
                if ver > self.replicas[to].1 {
                    self.replicas[to] = (v, ver);
                }
                cx.send(to, from, QMsg::WriteAck(ver));
            }
            QMsg::Read => {
                let (v, ver) = self.replicas[to];
                cx.send(to, from, QMsg::Value(v, ver));
            }
            QMsg::WriteAck(_) => {
                self.acks += 1;
                if self.acks == self.w {
                    if let Some((v, ver)) = self.writing {
                        self.writer_state = format!("x={v} acknowledged by W={} replicas", self.w);
                        cx.write_acked(to, "x", ver, v);
                    }
                }
            }
            QMsg::Value(v, ver) => {
                if self.replies.len() >= self.r {
                    return;
                }
                self.replies.insert(from, (v, ver));
                self.reader_state = format!("{} of R={} replies", self.replies.len(), self.r);
                if self.replies.len() == self.r {
                    let all: Vec<String> = self
                        .replies
                        .iter()
                        .map(|(n, (v, ver))| format!("{}: {v}/v{ver}", cx.name(*n)))
                        .collect();
                    let (value, best) = self
                        .replies
                        .values()
                        .copied()
                        .max_by_key(|(_, ver)| *ver)
                        .expect("R replies");
                    self.reader_state = format!("read x={value} (version {best})");
                    cx.note(
                        to,
                        format!(
                            "R={} replies [{}]: keeps the highest version",
                            self.r,
                            all.join(", ")
                        ),
                    );
                    let start = self.read_start;
                    cx.read(to, "x", best, value, start);
                }
            }
        }
    }

    fn on_timer(&mut self, cx: &mut Cx<'_, Self>, node: Node, timer: QTimer) {
        match timer {
            QTimer::Write(v, ver) => {
                self.writing = Some((v, ver));
                self.writer_state = format!("writing x={v}");
                cx.note(
                    node,
                    format!("write x = {v} (version {ver}), needs W = {} acks", self.w),
                );
                for r in 0..self.replicas.len() {
                    cx.send(node, r, QMsg::Write(v, ver));
                }
            }
            QTimer::Read(from) => {
                self.read_start = cx.now();
                self.reader_state = "reading".into();
                cx.note(node, format!("read x from R = {} replicas", self.r));
                for r in from {
                    cx.send(node, r, QMsg::Read);
                }
            }
        }
    }

    fn state(&self, node: Node) -> String {
        if node == self.writer() {
            return self.writer_state.clone();
        }
        if node == self.reader() {
            return self.reader_state.clone();
        }
        let (v, ver) = self.replicas[node];
        format!("x = {v} (version {ver})")
    }
}

fn play(names: &[&str], w: usize, r: usize, late: &[Node], read_from: Vec<Node>) -> Played {
    let n = names.len() - 2;
    let writer = n;
    let reader = n + 1;
    let mut sim = Sim::new(Quorum::new(n, w, r), names, LATENCY, 1000);
    for &l in late {
        sim.rule(Rule::delay(Some(writer), l, "write(", LAG_MS));
    }
    sim.at(0, Action::Fire(writer, QTimer::Write("V2", 2)))
        .at(40, Action::Fire(reader, QTimer::Read(read_from)));
    sim.run()
}

const FIVE: &[&str] = &["R1", "R2", "R3", "R4", "R5", "writer", "reader"];

fn w3r3() -> Played {
    play(FIVE, 3, 3, &[3, 4], vec![2, 3, 4])
}

fn w2r2() -> Played {
    play(FIVE, 2, 2, &[2, 3, 4], vec![3, 4])
}

fn n2w1r1() -> Played {
    play(&["R1", "R2", "writer", "reader"], 1, 1, &[1], vec![1])
}

#[cfg(test)]
mod tests {
    use crate::{run, VerdictKind};

    #[test]
    fn overlapping_quorums_read_the_acknowledged_write() {
        let r = run("quorum", "w3r3").unwrap();
        assert_eq!(r.verdict.kind, VerdictKind::Safe, "{}", r.verdict.summary);
        assert!(r
            .steps
            .iter()
            .any(|s| s.what.starts_with("read x = V2 (version 2)")));
    }

    #[test]
    fn disjoint_quorums_read_stale_data() {
        for s in ["w2r2", "n2w1r1"] {
            let r = run("quorum", s).unwrap();
            assert_eq!(
                r.verdict.kind,
                VerdictKind::StaleRead,
                "{s}: {}",
                r.verdict.summary
            );
            assert!(
                r.verdict.summary.contains("reader read x = V1"),
                "{}",
                r.verdict.summary
            );
        }
    }
}
