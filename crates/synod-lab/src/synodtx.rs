//! synod's two-phase commit: the coordinator and every participant are
//! Paxos groups (DESIGN.md, "Sharding and transactions").
//!
//! Each group has three replicas and a leader. Nothing is acted on before
//! the group's log has chosen it: a participant's "prepared" before its
//! vote leaves, the coordinator's decision before any commit or abort
//! leaves, a participant's outcome before its acknowledgement. So a crashed
//! leader loses nothing: the next replica runs Paxos phase 1, recovers the
//! log and carries on where the old leader stopped. A crash is a leader
//! change, never a block, as long as a majority of each group lives.
//!
//! Election timeouts are scripted (heartbeats are left out of the timeline);
//! the elections themselves are real phase-1 rounds. A coordinator that has
//! decided retries its decision to every replica of a group until the group
//! acknowledges; a prepared participant never decides on a timeout.

use crate::check::Wait;
use crate::engine::{Action, Ballot, Cx, Message, Node, Played, Sim, World};
use std::collections::{BTreeMap, BTreeSet};

const LATENCY: u64 = 10;
/// Replicas per group.
const R: usize = 3;
/// Groups: the coordinator, then the participants.
const GROUPS: usize = 4;
/// The coordinator aborts if the votes are not all in by then.
const VOTE_TIMEOUT_MS: u64 = 150;
/// The coordinator resends its decision to unacknowledged groups this often.
const RETRY_MS: u64 = 100;
/// Gap between the decision's messages to successive participants.
const SEND_GAP_MS: u64 = 5;
/// How long after its leader dies a replica's election timeout fires.
const ELECTION_TIMEOUT_MS: u64 = 150;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Entry {
    Prepared,
    Decide(bool),
    Outcome(bool),
}

impl Entry {
    fn text(self) -> &'static str {
        match self {
            Entry::Prepared => "prepared T1",
            Entry::Decide(true) => "decide commit",
            Entry::Decide(false) => "decide abort",
            Entry::Outcome(true) => "commit T1",
            Entry::Outcome(false) => "abort T1",
        }
    }
}

fn word(commit: bool) -> &'static str {
    if commit {
        "commit"
    } else {
        "abort"
    }
}

#[derive(Clone, Debug)]
enum XMsg {
    P1a(Ballot),
    P1b(Ballot, Promised),
    P2a(Ballot, u32, Entry),
    P2b(Ballot, u32),
    Prepare,
    Vote,
    Decision(bool),
    Ack,
}

impl Message for XMsg {
    fn label(&self) -> String {
        match self {
            XMsg::P1a(b) => format!("paxos.prepare(b={b})"),
            XMsg::P1b(b, log) if log.is_empty() => format!("paxos.promise(b={b}, empty log)"),
            XMsg::P1b(b, log) => {
                let l: Vec<String> = log
                    .iter()
                    .map(|(s, ab, e)| format!("#{s}=({ab}, {})", e.text()))
                    .collect();
                format!("paxos.promise(b={b}, {})", l.join(" "))
            }
            XMsg::P2a(b, s, e) => format!("paxos.accept(b={b}, #{s} {})", e.text()),
            XMsg::P2b(b, s) => format!("paxos.accepted(b={b}, #{s})"),
            XMsg::Prepare => "prepare(T1)".into(),
            XMsg::Vote => "vote(T1, yes)".into(),
            XMsg::Decision(c) => format!("{}(T1)", word(*c)),
            XMsg::Ack => "ack(T1)".into(),
        }
    }
}

#[derive(Clone, Debug)]
pub(crate) enum XTimer {
    Begin,
    VoteTimeout,
    SendDecision(usize),
    Retry,
    Elect,
}

/// An acceptor's log as a promise carries it: (slot, ballot, entry).
type Promised = Vec<(u32, Ballot, Entry)>;

struct Lead {
    b: Ballot,
    electing: Option<BTreeMap<Node, Promised>>,
    next: u32,
    pending: BTreeMap<u32, BTreeSet<Node>>,
    votes: BTreeSet<usize>,
    acks: BTreeSet<usize>,
    deciding: bool,
}

impl Lead {
    fn new(b: Ballot) -> Lead {
        Lead {
            b,
            electing: None,
            next: 1,
            pending: BTreeMap::new(),
            votes: BTreeSet::new(),
            acks: BTreeSet::new(),
            deciding: false,
        }
    }
}

struct Rep {
    promised: Ballot,
    log: BTreeMap<u32, (Ballot, Entry)>,
    chosen: BTreeSet<u32>,
    lead: Option<Lead>,
    /// The replica this one believes leads each group.
    hints: [Node; GROUPS],
}

struct Tx {
    reps: Vec<Rep>,
}

fn group(n: Node) -> usize {
    n / R
}

fn members(g: usize) -> std::ops::Range<Node> {
    g * R..g * R + R
}

impl Tx {
    fn new() -> Tx {
        let first = Ballot::new(1, 1);
        Tx {
            reps: (0..GROUPS * R)
                .map(|n| Rep {
                    promised: first,
                    log: BTreeMap::new(),
                    chosen: BTreeSet::new(),
                    lead: (n % R == 0).then(|| Lead::new(first)),
                    hints: [0, R, 2 * R, 3 * R],
                })
                .collect(),
        }
    }

    fn leading(&self, n: Node) -> bool {
        self.reps[n]
            .lead
            .as_ref()
            .is_some_and(|l| l.electing.is_none())
    }

    fn has(&self, n: Node, f: impl Fn(Entry) -> bool) -> bool {
        self.reps[n].log.values().any(|&(_, e)| f(e))
    }

    fn chosen_has(&self, n: Node, f: impl Fn(Entry) -> bool) -> bool {
        let r = &self.reps[n];
        r.log
            .iter()
            .any(|(s, &(_, e))| r.chosen.contains(s) && f(e))
    }

    /// Leader `n` puts `e` in the next slot and asks its group to accept it.
    fn replicate(&mut self, cx: &mut Cx<'_, Self>, n: Node, slot: Option<u32>, e: Entry) {
        let r = &mut self.reps[n];
        let Some(lead) = &mut r.lead else { return };
        let b = lead.b;
        let s = slot.unwrap_or(lead.next);
        lead.next = lead.next.max(s + 1);
        lead.pending.insert(s, BTreeSet::from([n]));
        r.log.insert(s, (b, e));
        for m in members(group(n)).filter(|&m| m != n) {
            cx.send(n, m, XMsg::P2a(b, s, e));
        }
    }

    /// Entry `e` in slot `s` is chosen in leader `n`'s group: act on it.
    fn applied(&mut self, cx: &mut Cx<'_, Self>, n: Node, e: Entry) {
        let coordinator = self.reps[n].hints[0];
        match e {
            Entry::Prepared => {
                if !self.has(n, |e| matches!(e, Entry::Outcome(_))) {
                    cx.send(n, coordinator, XMsg::Vote);
                }
            }
            Entry::Outcome(c) => {
                cx.decide(
                    n,
                    "T1",
                    word(c),
                    format!("{} chosen in its group's log: {}s T1", e.text(), word(c)),
                );
                cx.send(n, coordinator, XMsg::Ack);
            }
            Entry::Decide(c) => {
                cx.decide(
                    n,
                    "T1",
                    word(c),
                    format!("{} chosen in the coordinator group's log", e.text()),
                );
                self.send_decision(cx, n, 1);
                cx.timer(n, RETRY_MS, XTimer::Retry);
            }
        }
    }

    fn decision(&self, n: Node) -> Option<bool> {
        let r = &self.reps[n];
        r.log.iter().find_map(|(s, &(_, e))| match e {
            Entry::Decide(c) if r.chosen.contains(s) => Some(c),
            _ => None,
        })
    }

    fn send_decision(&mut self, cx: &mut Cx<'_, Self>, n: Node, g: usize) {
        let Some(c) = self.decision(n) else { return };
        let to = self.reps[n].hints[g];
        cx.send(n, to, XMsg::Decision(c));
        if g + 1 < GROUPS {
            cx.timer(n, SEND_GAP_MS, XTimer::SendDecision(g + 1));
        }
    }
}

impl World for Tx {
    type Msg = XMsg;
    type Timer = XTimer;

    fn on_message(&mut self, cx: &mut Cx<'_, Self>, to: Node, from: Node, msg: XMsg) {
        match msg {
            XMsg::P1a(b) => {
                let r = &mut self.reps[to];
                if b > r.promised {
                    r.promised = b;
                    r.lead = None;
                    r.hints[group(to)] = from;
                    let log = r.log.iter().map(|(&s, &(ab, e))| (s, ab, e)).collect();
                    cx.send(to, from, XMsg::P1b(b, log));
                }
            }
            XMsg::P1b(b, log) => {
                let Some(lead) = &mut self.reps[to].lead else {
                    return;
                };
                let Some(promises) = &mut lead.electing else {
                    return;
                };
                if lead.b != b {
                    return;
                }
                promises.insert(from, log);
                if promises.len() < R / 2 + 1 {
                    return;
                }
                let mut best: BTreeMap<u32, (Ballot, Entry)> = BTreeMap::new();
                for list in promises.values() {
                    for &(s, ab, e) in list {
                        if best.get(&s).is_none_or(|(bb, _)| ab > *bb) {
                            best.insert(s, (ab, e));
                        }
                    }
                }
                lead.electing = None;
                let text: Vec<String> = best
                    .iter()
                    .map(|(s, (_, e))| format!("#{s} {}", e.text()))
                    .collect();
                if text.is_empty() {
                    cx.note(to, format!("leads its group at {b}: the log is empty"));
                } else {
                    cx.note(
                        to,
                        format!("leads its group at {b}; re-proposes {}", text.join(", ")),
                    );
                }
                self.reps[to].hints[group(to)] = to;
                for (s, (_, e)) in best {
                    self.replicate(cx, to, Some(s), e);
                }
            }
            XMsg::P2a(b, s, e) => {
                let r = &mut self.reps[to];
                if b >= r.promised {
                    r.promised = b;
                    r.log.insert(s, (b, e));
                    r.hints[group(to)] = from;
                    cx.send(to, from, XMsg::P2b(b, s));
                }
            }
            XMsg::P2b(b, s) => {
                let r = &mut self.reps[to];
                let Some(lead) = &mut r.lead else { return };
                if lead.b != b {
                    return;
                }
                let Some(acks) = lead.pending.get_mut(&s) else {
                    return;
                };
                acks.insert(from);
                if acks.len() > R / 2 {
                    lead.pending.remove(&s);
                    r.chosen.insert(s);
                    let e = r.log[&s].1;
                    self.applied(cx, to, e);
                }
            }
            XMsg::Prepare => {
                if !self.leading(to) {
                    return;
                }
                self.reps[to].hints[0] = from;
                if self.has(to, |e| e == Entry::Prepared) {
                    if self.chosen_has(to, |e| e == Entry::Prepared) {
                        cx.send(to, from, XMsg::Vote);
                    }
                    return;
                }
                cx.note(
                    to,
                    "locks T1's keys; logs 'prepared' through its group before voting",
                );
                self.replicate(cx, to, None, Entry::Prepared);
            }
            XMsg::Vote => {
                if !self.leading(to) {
                    return;
                }
                let g = group(from);
                self.reps[to].hints[g] = from;
                if let Some(c) = self.decision(to) {
                    cx.send(to, from, XMsg::Decision(c));
                    return;
                }
                let lead = self.reps[to].lead.as_mut().expect("leading");
                lead.votes.insert(g);
                if lead.votes.len() == GROUPS - 1 && !lead.deciding {
                    lead.deciding = true;
                    cx.note(
                        to,
                        "every group voted yes: logs 'decide commit' through its group",
                    );
                    self.replicate(cx, to, None, Entry::Decide(true));
                }
            }
            XMsg::Decision(c) => {
                if !self.leading(to) {
                    return;
                }
                self.reps[to].hints[0] = from;
                if self.chosen_has(to, |e| matches!(e, Entry::Outcome(_))) {
                    cx.send(to, from, XMsg::Ack);
                } else if !self.has(to, |e| matches!(e, Entry::Outcome(_))) {
                    self.replicate(cx, to, None, Entry::Outcome(c));
                }
            }
            XMsg::Ack => {
                if !self.leading(to) {
                    return;
                }
                let g = group(from);
                self.reps[to].hints[g] = from;
                let lead = self.reps[to].lead.as_mut().expect("leading");
                if lead.acks.insert(g) && lead.acks.len() == GROUPS - 1 {
                    cx.note(to, "every participant group acknowledged: T1 is complete");
                }
            }
        }
    }

    fn on_timer(&mut self, cx: &mut Cx<'_, Self>, node: Node, timer: XTimer) {
        match timer {
            XTimer::Begin => {
                cx.note(node, "begins T1: asks every participant group to prepare");
                for g in 1..GROUPS {
                    let to = self.reps[node].hints[g];
                    cx.send(node, to, XMsg::Prepare);
                }
                cx.timer(node, VOTE_TIMEOUT_MS, XTimer::VoteTimeout);
            }
            XTimer::VoteTimeout => {
                if !self.leading(node) {
                    return;
                }
                let lead = self.reps[node].lead.as_mut().expect("leading");
                if lead.deciding {
                    return;
                }
                lead.deciding = true;
                let votes = lead.votes.len();
                cx.note(
                    node,
                    format!("only {votes} of {} votes in {VOTE_TIMEOUT_MS} ms: logs 'decide abort' through its group", GROUPS - 1),
                );
                self.replicate(cx, node, None, Entry::Decide(false));
            }
            XTimer::SendDecision(g) => self.send_decision(cx, node, g),
            XTimer::Retry => {
                if !self.leading(node) {
                    return;
                }
                let Some(c) = self.decision(node) else { return };
                let acked = self.reps[node].lead.as_ref().expect("leading").acks.clone();
                let missing: Vec<usize> = (1..GROUPS).filter(|g| !acked.contains(g)).collect();
                if missing.is_empty() {
                    return;
                }
                let names: Vec<String> = missing.iter().map(|g| format!("P{g}")).collect();
                cx.note(
                    node,
                    format!(
                        "no ack from {} yet: resends {} to every replica there",
                        names.join(", "),
                        word(c)
                    ),
                );
                for g in missing {
                    for m in members(g) {
                        cx.send(node, m, XMsg::Decision(c));
                    }
                }
                cx.timer(node, RETRY_MS, XTimer::Retry);
            }
            XTimer::Elect => {
                let r = &mut self.reps[node];
                let b = Ballot::new(r.promised.round + 1, (node % R) as u32 + 1);
                r.promised = b;
                let own: Promised = r.log.iter().map(|(&s, &(ab, e))| (s, ab, e)).collect();
                let mut lead = Lead::new(b);
                lead.electing = Some(BTreeMap::from([(node, own)]));
                r.lead = Some(lead);
                cx.note(
                    node,
                    format!("campaigns for its group with paxos.prepare(b={b})"),
                );
                for m in members(group(node)).filter(|&m| m != node) {
                    cx.send(node, m, XMsg::P1a(b));
                }
            }
        }
    }

    fn on_crash(&mut self, node: Node) {
        self.reps[node].lead = None;
    }

    fn state(&self, node: Node) -> String {
        let r = &self.reps[node];
        let role = match &r.lead {
            Some(l) if l.electing.is_some() => format!("campaigning {}", l.b),
            Some(l) => format!("leader {}", l.b),
            None => format!("follower (promised {})", r.promised),
        };
        let log: Vec<String> = r
            .log
            .iter()
            .map(|(s, (b, e))| {
                if r.chosen.contains(s) {
                    format!("#{s} {} *", e.text())
                } else {
                    format!("#{s} {} ({b})", e.text())
                }
            })
            .collect();
        format!("{role}; log [{}]", log.join(", "))
    }

    fn waits(&self, up: &[bool]) -> Vec<Wait> {
        let mut out = Vec::new();
        for g in 1..GROUPS {
            let live: Vec<Node> = members(g).filter(|&m| up[m]).collect();
            let prepared = live.iter().any(|&m| self.has(m, |e| e == Entry::Prepared));
            let decided = live
                .iter()
                .any(|&m| self.has(m, |e| matches!(e, Entry::Outcome(_))));
            if prepared && !decided {
                let node = live
                    .iter()
                    .copied()
                    .find(|&m| self.leading(m))
                    .unwrap_or(live[0]);
                out.push(Wait::Decision {
                    node,
                    key: "T1".into(),
                });
            }
        }
        out
    }
}

const NODES: &[&str] = &[
    "Ca", "Cb", "Cc", "P1a", "P1b", "P1c", "P2a", "P2b", "P2c", "P3a", "P3b", "P3c",
];
const CA: Node = 0;
const CB: Node = 1;
const P1A: Node = 3;
const P1B: Node = 4;

fn sim() -> Sim<Tx> {
    let mut sim = Sim::new(Tx::new(), NODES, LATENCY, 1000);
    sim.at(
        0,
        Action::Note(
            "four groups of three replicas: C (coordinator), P1, P2, P3; each led by its replica a at ballot 1.1 (that election is not shown)"
                .into(),
        ),
    )
    .at(0, Action::Fire(CA, XTimer::Begin));
    sim
}

/// Seed 000's 2PC crash on synod's 2PC: the coordinator's leader dies right
/// after sending the first commit, P1's leader right after receiving it.
pub(crate) fn crash_after_vote() -> Played {
    let mut sim = sim();
    sim.at(61, Action::Crash(CA))
        .at(71, Action::Crash(P1A))
        .at(
            61 + ELECTION_TIMEOUT_MS,
            Action::Note(format!("Cb: no heartbeat from Ca for {ELECTION_TIMEOUT_MS} ms, its election timeout fires")),
        )
        .at(61 + ELECTION_TIMEOUT_MS, Action::Fire(CB, XTimer::Elect))
        .at(
            71 + ELECTION_TIMEOUT_MS,
            Action::Note(format!("P1b: no heartbeat from P1a for {ELECTION_TIMEOUT_MS} ms, its election timeout fires")),
        )
        .at(71 + ELECTION_TIMEOUT_MS, Action::Fire(P1B, XTimer::Elect));
    sim.run()
}

/// The 3PC partition on synod's 2PC: P3's group is cut off from everyone
/// at the same moment as in the textbook run, and healed at the same time.
pub(crate) fn partition_in_decision() -> Played {
    use crate::threepc::{HEAL_AT, PARTITION_AT};
    let mut sim = sim();
    let (rest, p3): (Vec<Node>, Vec<Node>) = (0..GROUPS * R).partition(|&n| group(n) != 3);
    sim.at(PARTITION_AT, Action::Partition(vec![rest, p3]))
        .at(HEAL_AT, Action::Heal);
    sim.run()
}
