//! Basic Paxos on one register, walking seed 000's road.
//!
//! The API is the seed's `propose(var, V) => <ok, f>`: a proposer asks to
//! set `var` to `V` and learns `f`, the value the system settled on (`V` if
//! its proposal won, the earlier value otherwise).
//!
//! - Design one: a single acceptor guarding `var` with a mutex
//!   (`prepare()` locks, `accept(var, v)` sets and unlocks, `release()`
//!   unlocks). A proposer that dies holding the lock deadlocks everyone.
//! - Design two: the lock becomes preemptible. Every request carries an
//!   epoch; a higher epoch invalidates the lower ones, and "the later
//!   epoch endorses the earlier one": a proposer that finds a value set
//!   adopts it instead of its own.
//! - Design three: basic Paxos, five servers, majorities; the seed's three
//!   cases between server 1's ballot 3.1 and server 5's ballot 4.5, and
//!   the duelling proposers that make progress need a leader.

use crate::check::{Goal, Wait};
use crate::engine::{Action, Ballot, Cx, Message, Node, Played, Rule, Sim, World};
use crate::Def;
use std::collections::{BTreeMap, BTreeSet};

/// One-way network delay between two servers.
const LATENCY: u64 = 10;

pub(crate) const SCENARIOS: &[Def] = &[
    Def {
        name: "design1",
        title: "Design one: one acceptor with a mutex, no faults",
        about: "Seed 000, design one. The acceptor A keeps var and a lock: prepare() locks and returns var's value, accept(var, v) sets an empty var and unlocks, release() unlocks. P1 locks, finds var empty and sets X; P2, refused while P1 holds the lock, retries, finds X and releases: propose returns <ok, X> to both.",
        goal: Goal::Choose,
        play: design1,
    },
    Def {
        name: "design1-deadlock",
        title: "Design one: the proposer holding the lock dies",
        about: "Seed 000, design one's second flaw. P1 locks the single acceptor and crashes before accept(var, v) or release(). A keeps the lock for a proposer that will never come back; P2 is refused on every retry and gives up with <error>. Nothing can ever set var.",
        goal: Goal::Choose,
        play: design1_deadlock,
    },
    Def {
        name: "design2-preempt",
        title: "Design two: epochs preempt a dead holder",
        about: "Seed 000, design two. Access is preemptible: every request carries an epoch, and the acceptor invalidates older epochs when it promises a newer one. P1 obtains epoch 1.1 and crashes; P2's epoch 2.2 preempts it, finds var empty and sets Y. When P1 comes back it proposes X with epoch 3.1, finds Y and endorses it: <ok, Y>. No deadlock.",
        goal: Goal::Choose,
        play: design2_preempt,
    },
    Def {
        name: "design2-endorse",
        title: "Design two: the later epoch endorses the earlier value",
        about: "Seed 000, design two's rule. P1 sets X with epoch 1.1 and crashes before hearing back. P2 proposes Y with epoch 2.2; the acceptor's promise shows X accepted at 1.1, so P2 submits nothing and returns <ok, X>: the later epoch endorses the earlier one, and var never changes once set.",
        goal: Goal::Choose,
        play: design2_endorse,
    },
    Def {
        name: "design3-chosen",
        title: "Design three, case 1: X already chosen, server 5 sees it through server 3",
        about: "Seed 000, design three, first figure. Five servers, majorities of three. Server 1 runs prepare(3.1) and accept(3.1, X) on servers 1-3: X is chosen. Server 5 then proposes Y with ballot 4.5 on servers 3-5; server 3's promise carries (3.1, X), so server 5 sends accept(4.5, X), not Y. Both learn X.",
        goal: Goal::Choose,
        play: design3_chosen,
    },
    Def {
        name: "design3-seen",
        title: "Design three, case 2: X accepted by a minority, still adopted",
        about: "Seed 000, design three, second figure. Server 1's accept(3.1, X) has reached only server 3 (its copies to servers 1 and 2 are slow) when server 5's prepare(4.5) arrives there. X is not chosen yet, but server 3's promise shows it, so server 5 proposes X at 4.5 and X is chosen; server 1's slow accepts land later and agree.",
        goal: Goal::Choose,
        play: design3_seen,
    },
    Def {
        name: "design3-unseen",
        title: "Design three, case 3: nothing seen, server 5's Y wins, server 1's accepts fail",
        about: "Seed 000, design three, third figure. Server 5's prepare(4.5) reaches server 3 before server 1's accept(3.1, X). Server 5's promises carry no value, so it proposes its own Y and Y is chosen on servers 3-5. Server 3 rejects accept(3.1, X) because it promised 4.5: X reaches only servers 1 and 2, a minority, and server 1's propose returns <error>.",
        goal: Goal::Choose,
        play: design3_unseen,
    },
    Def {
        name: "duel",
        title: "Duelling proposers: livelock without a leader",
        about: "Servers 1 and 5 propose X and Y to all five servers, and each restarts with a higher ballot the moment it sees a higher one. Each new prepare lands between the other's promises and its accepts, so every accept is rejected and nothing is ever chosen (the livelock of Lamport's 'Paxos Made Simple'). The run stops at its time budget.",
        goal: Goal::Choose,
        play: duel,
    },
    Def {
        name: "duel-leader",
        title: "Duelling proposers with a distinguished proposer",
        about: "The same start as 'duel', but server 5 defers to server 1, the distinguished proposer (leader): after a preemption it waits 80 ms instead of retrying at once. Server 1's next ballot runs both phases undisturbed and X is chosen; server 5's retry finds X and endorses it. Progress needs one leader; safety never did.",
        goal: Goal::Choose,
        play: duel_leader,
    },
];

// ---------------------------------------------------------------------------
// Designs one and two: a single acceptor.

#[derive(Clone, Debug)]
enum SMsg {
    /// Design one: ask for the lock.
    Lock,
    Granted(Option<&'static str>),
    Refused(Node),
    Set(&'static str),
    SetOk,
    Release,
    /// Design two: epochs.
    Prepare(Ballot),
    Promise(Ballot, Option<(Ballot, &'static str)>),
    Accept(Ballot, &'static str),
    Accepted(Ballot),
    Rejected(Ballot, Ballot),
}

fn var(v: Option<&str>) -> String {
    v.unwrap_or("null").to_string()
}

impl Message for SMsg {
    fn label(&self) -> String {
        match self {
            SMsg::Lock => "prepare()".into(),
            SMsg::Granted(f) => format!("granted(f={})", var(*f)),
            SMsg::Refused(_) => "refused(locked)".into(),
            SMsg::Set(v) => format!("accept(var, {v})"),
            SMsg::SetOk => "accepted".into(),
            SMsg::Release => "release()".into(),
            SMsg::Prepare(e) => format!("prepare(e={e})"),
            SMsg::Promise(e, None) => format!("promise(e={e}, f=null)"),
            SMsg::Promise(e, Some((a, v))) => format!("promise(e={e}, f=({a}, {v}))"),
            SMsg::Accept(e, v) => format!("accept(e={e}, {v})"),
            SMsg::Accepted(e) => format!("accepted(e={e})"),
            SMsg::Rejected(e, p) => format!("rejected(e={e}, promised {p})"),
        }
    }
}

#[derive(Clone, Debug)]
enum STimer {
    /// `propose(var, value)` with this epoch round (design two).
    Propose(&'static str, u32),
    Retry,
}

#[derive(Clone, Debug, PartialEq)]
enum PState {
    Idle,
    Asking,
    Done(&'static str),
    Error,
}

struct SProposer {
    value: &'static str,
    epoch: Option<Ballot>,
    state: PState,
    attempts: u32,
}

/// Proposers 0..n-1 and the acceptor last.
struct Single {
    epochs: bool,
    proposers: Vec<SProposer>,
    var: Option<&'static str>,
    lock: Option<Node>,
    promised: Option<Ballot>,
    accepted: Option<(Ballot, &'static str)>,
}

/// Attempts a design-one proposer makes before returning `<error>`.
const LOCK_ATTEMPTS: u32 = 4;
const LOCK_RETRY_MS: u64 = 40;

impl Single {
    fn new(epochs: bool, proposers: usize) -> Single {
        Single {
            epochs,
            proposers: (0..proposers)
                .map(|_| SProposer {
                    value: "",
                    epoch: None,
                    state: PState::Idle,
                    attempts: 0,
                })
                .collect(),
            var: None,
            lock: None,
            promised: None,
            accepted: None,
        }
    }

    fn acceptor(&self) -> Node {
        self.proposers.len()
    }

    fn ask(&mut self, cx: &mut Cx<'_, Self>, p: Node) {
        let a = self.acceptor();
        self.proposers[p].state = PState::Asking;
        self.proposers[p].attempts += 1;
        if self.epochs {
            let e = self.proposers[p].epoch.expect("epoch set");
            cx.send(p, a, SMsg::Prepare(e));
        } else {
            cx.send(p, a, SMsg::Lock);
        }
    }

    fn finish(&mut self, cx: &mut Cx<'_, Self>, p: Node, f: &'static str) {
        self.proposers[p].state = PState::Done(f);
        cx.decide(
            p,
            "var",
            f,
            format!("propose(var, {}) => <ok, {f}>", self.proposers[p].value),
        );
    }
}

impl World for Single {
    type Msg = SMsg;
    type Timer = STimer;

    fn on_message(&mut self, cx: &mut Cx<'_, Self>, to: Node, from: Node, msg: SMsg) {
        let a = self.acceptor();
        if to == a {
            match msg {
                SMsg::Lock => match self.lock {
                    None => {
                        self.lock = Some(from);
                        cx.send(a, from, SMsg::Granted(self.var));
                    }
                    Some(holder) => cx.send(a, from, SMsg::Refused(holder)),
                },
                SMsg::Set(v) if self.lock == Some(from) && self.var.is_none() => {
                    self.var = Some(v);
                    self.lock = None;
                    cx.decide(a, "var", v, format!("var = {v}, set and unlocked"));
                    cx.send(a, from, SMsg::SetOk);
                }
                SMsg::Release if self.lock == Some(from) => self.lock = None,
                SMsg::Prepare(e) => {
                    if self.promised.is_none_or(|p| e > p) {
                        if let Some(old) = self.promised {
                            cx.note(a, format!("epoch {old} is invalidated by {e}"));
                        }
                        self.promised = Some(e);
                        cx.send(a, from, SMsg::Promise(e, self.accepted));
                    } else {
                        cx.send(a, from, SMsg::Rejected(e, self.promised.expect("promised")));
                    }
                }
                SMsg::Accept(e, v) => {
                    if self.promised == Some(e) {
                        if self.accepted.is_none_or(|(_, old)| old != v) {
                            cx.decide(a, "var", v, format!("var = {v}, accepted at epoch {e}"));
                        }
                        self.accepted = Some((e, v));
                        cx.send(a, from, SMsg::Accepted(e));
                    } else {
                        cx.send(a, from, SMsg::Rejected(e, self.promised.expect("promised")));
                    }
                }
                _ => {}
            }
            return;
        }
        let p = to;
        if self.proposers[p].state != PState::Asking {
            return;
        }
        let mine = self.proposers[p].value;
        match msg {
            SMsg::Granted(None) => cx.send(p, a, SMsg::Set(mine)),
            SMsg::Granted(Some(f)) => {
                cx.send(p, a, SMsg::Release);
                self.finish(cx, p, f);
            }
            SMsg::SetOk => self.finish(cx, p, mine),
            SMsg::Refused(holder) => {
                if self.proposers[p].attempts < LOCK_ATTEMPTS {
                    cx.note(
                        p,
                        format!(
                            "no access: {} holds the lock; retry in {LOCK_RETRY_MS} ms",
                            cx.name(holder)
                        ),
                    );
                    cx.timer(p, LOCK_RETRY_MS, STimer::Retry);
                } else {
                    self.proposers[p].state = PState::Error;
                    cx.note(
                        p,
                        format!(
                            "propose(var, {mine}) => <error>: refused {} times, {} still holds the lock",
                            LOCK_ATTEMPTS,
                            cx.name(holder)
                        ),
                    );
                }
            }
            SMsg::Promise(e, acc) if Some(e) == self.proposers[p].epoch => match acc {
                None => cx.send(p, a, SMsg::Accept(e, mine)),
                Some((old, f)) => {
                    cx.note(
                        p,
                        format!("var already has {f} from epoch {old}: epoch {e} endorses it and submits nothing"),
                    );
                    self.finish(cx, p, f);
                }
            },
            SMsg::Accepted(e) if Some(e) == self.proposers[p].epoch => self.finish(cx, p, mine),
            SMsg::Rejected(e, promised) if Some(e) == self.proposers[p].epoch => {
                self.proposers[p].state = PState::Error;
                cx.preempted(
                    p,
                    format!(
                        "propose(var, {mine}) => <error>: epoch {e} was preempted by {promised}"
                    ),
                );
            }
            _ => {}
        }
    }

    fn on_timer(&mut self, cx: &mut Cx<'_, Self>, node: Node, timer: STimer) {
        match timer {
            STimer::Propose(v, round) => {
                let p = &mut self.proposers[node];
                p.value = v;
                p.attempts = 0;
                p.epoch = self.epochs.then(|| Ballot::new(round, node as u32 + 1));
                cx.note(node, format!("propose(var, {v})"));
                self.ask(cx, node);
            }
            STimer::Retry => {
                if self.proposers[node].state == PState::Asking {
                    self.ask(cx, node);
                }
            }
        }
    }

    fn on_crash(&mut self, node: Node) {
        if node < self.proposers.len() {
            self.proposers[node].state = PState::Idle;
        }
    }

    fn state(&self, node: Node) -> String {
        if node == self.acceptor() {
            if self.epochs {
                let p = self.promised.map_or("-".to_string(), |b| b.to_string());
                let acc = self
                    .accepted
                    .map_or("none".to_string(), |(b, v)| format!("({b}, {v})"));
                return format!("promised {p}, accepted {acc}");
            }
            let lock = match self.lock {
                None => "unlocked".to_string(),
                Some(h) => format!("locked by P{}", h + 1),
            };
            return format!("var = {}, {lock}", var(self.var));
        }
        let p = &self.proposers[node];
        match &p.state {
            PState::Idle => "idle".into(),
            PState::Asking => match p.epoch {
                Some(e) => format!("proposing {} at epoch {e}", p.value),
                None => format!("proposing {} (attempt {})", p.value, p.attempts),
            },
            PState::Done(f) => format!("<ok, {f}>"),
            PState::Error => "<error>".into(),
        }
    }

    fn waits(&self, _up: &[bool]) -> Vec<Wait> {
        match self.lock {
            Some(holder) => vec![Wait::Lock {
                node: self.acceptor(),
                holder,
            }],
            None => Vec::new(),
        }
    }
}

const SINGLE: &[&str] = &["P1", "P2", "A"];

fn design1() -> Played {
    let mut sim = Sim::new(Single::new(false, 2), SINGLE, LATENCY, 1000);
    sim.at(0, Action::Fire(0, STimer::Propose("X", 0)))
        .at(5, Action::Fire(1, STimer::Propose("Y", 0)));
    sim.run()
}

fn design1_deadlock() -> Played {
    let mut sim = Sim::new(Single::new(false, 2), SINGLE, LATENCY, 1000);
    sim.at(0, Action::Fire(0, STimer::Propose("X", 0)))
        .at(15, Action::Crash(0))
        .at(30, Action::Fire(1, STimer::Propose("Y", 0)));
    sim.run()
}

fn design2_preempt() -> Played {
    let mut sim = Sim::new(Single::new(true, 2), SINGLE, LATENCY, 1000);
    sim.at(0, Action::Fire(0, STimer::Propose("X", 1)))
        .at(15, Action::Crash(0))
        .at(40, Action::Fire(1, STimer::Propose("Y", 2)))
        .at(100, Action::Recover(0))
        .at(110, Action::Fire(0, STimer::Propose("X", 3)));
    sim.run()
}

fn design2_endorse() -> Played {
    let mut sim = Sim::new(Single::new(true, 2), SINGLE, LATENCY, 1000);
    sim.at(0, Action::Fire(0, STimer::Propose("X", 1)))
        .at(25, Action::Crash(0))
        .at(40, Action::Fire(1, STimer::Propose("Y", 2)));
    sim.run()
}

// ---------------------------------------------------------------------------
// Design three: basic Paxos, every server a proposer and an acceptor.

#[derive(Clone, Debug)]
enum PMsg {
    Prepare(Ballot),
    Promise(Ballot, Option<(Ballot, &'static str)>),
    Accept(Ballot, &'static str),
    Accepted(Ballot),
    Reject(Ballot, Ballot),
}

impl Message for PMsg {
    fn label(&self) -> String {
        match self {
            PMsg::Prepare(b) => format!("prepare(b={b})"),
            PMsg::Promise(b, None) => format!("promise(b={b}, accepted none)"),
            PMsg::Promise(b, Some((a, v))) => format!("promise(b={b}, accepted ({a}, {v}))"),
            PMsg::Accept(b, v) => format!("accept(b={b}, {v})"),
            PMsg::Accepted(b) => format!("accepted(b={b})"),
            PMsg::Reject(b, p) => format!("reject(b={b}, promised {p})"),
        }
    }
}

/// What a proposer does when a higher ballot overtakes it.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Retry {
    /// Return `<error>`.
    Never,
    /// Restart with a higher ballot at once.
    AtOnce,
    /// Wait, then restart.
    After(u64),
}

#[derive(Clone, Debug)]
enum Phase {
    Idle,
    Preparing(BTreeMap<Node, Option<(Ballot, &'static str)>>),
    Accepting(&'static str, BTreeSet<Node>),
    Done(&'static str),
    Failed,
}

struct Server {
    // Acceptor.
    promised: Option<Ballot>,
    accepted: Option<(Ballot, &'static str)>,
    // Proposer.
    value: &'static str,
    ballot: Option<Ballot>,
    phase: Phase,
    targets: Vec<Node>,
    retry: Retry,
    highest_round: u32,
}

struct Basic {
    servers: Vec<Server>,
}

#[derive(Clone, Debug)]
enum BTimer {
    /// `propose(var, value)` with this first round, to these servers.
    Propose(&'static str, u32, Vec<Node>),
    Restart,
}

impl Basic {
    fn new(n: usize, retry: &[Retry]) -> Basic {
        Basic {
            servers: (0..n)
                .map(|i| Server {
                    promised: None,
                    accepted: None,
                    value: "",
                    ballot: None,
                    phase: Phase::Idle,
                    targets: Vec::new(),
                    retry: retry[i],
                    highest_round: 0,
                })
                .collect(),
        }
    }

    fn majority(&self) -> usize {
        self.servers.len() / 2 + 1
    }

    fn active(&self, p: Node) -> bool {
        matches!(
            self.servers[p].phase,
            Phase::Preparing(_) | Phase::Accepting(..)
        )
    }

    fn prepare(&mut self, cx: &mut Cx<'_, Self>, p: Node, round: u32) {
        let b = Ballot::new(round, p as u32 + 1);
        let s = &mut self.servers[p];
        s.ballot = Some(b);
        s.highest_round = s.highest_round.max(round);
        s.phase = Phase::Preparing(BTreeMap::new());
        for &t in &s.targets.clone() {
            cx.send(p, t, PMsg::Prepare(b));
        }
    }

    /// Proposer `p` learned that ballot `higher` overtook its own.
    fn overtaken(&mut self, cx: &mut Cx<'_, Self>, p: Node, higher: Ballot) {
        let s = &mut self.servers[p];
        s.highest_round = s.highest_round.max(higher.round);
        let mine = s.ballot.expect("active proposer has a ballot");
        match s.retry {
            Retry::Never => {
                s.phase = Phase::Failed;
                let v = s.value;
                cx.preempted(
                    p,
                    format!("propose(var, {v}) => <error>: ballot {mine} preempted by {higher}"),
                );
            }
            Retry::AtOnce => {
                let round = s.highest_round + 1;
                cx.preempted(
                    p,
                    format!(
                        "ballot {mine} preempted by {higher}: restarts at once with {round}.{}",
                        p + 1
                    ),
                );
                self.prepare(cx, p, round);
            }
            Retry::After(ms) => {
                s.phase = Phase::Idle;
                cx.preempted(
                    p,
                    format!("ballot {mine} preempted by {higher}: defers to the leader, retries in {ms} ms"),
                );
                cx.timer(p, ms, BTimer::Restart);
            }
        }
    }
}

impl World for Basic {
    type Msg = PMsg;
    type Timer = BTimer;

    fn on_message(&mut self, cx: &mut Cx<'_, Self>, to: Node, from: Node, msg: PMsg) {
        let majority = self.majority();
        match msg {
            PMsg::Prepare(b) => {
                let s = &mut self.servers[to];
                if s.promised.is_none_or(|p| b > p) {
                    s.promised = Some(b);
                    cx.send(to, from, PMsg::Promise(b, s.accepted));
                    // The co-located proposer sees the higher ballot here.
                    if from != to && self.active(to) && self.servers[to].ballot < Some(b) {
                        self.overtaken(cx, to, b);
                    }
                } else {
                    cx.send(to, from, PMsg::Reject(b, s.promised.expect("promised")));
                }
            }
            PMsg::Accept(b, v) => {
                let s = &mut self.servers[to];
                if s.promised.is_none_or(|p| b >= p) {
                    s.promised = Some(b);
                    s.accepted = Some((b, v));
                    cx.send(to, from, PMsg::Accepted(b));
                } else {
                    cx.send(to, from, PMsg::Reject(b, s.promised.expect("promised")));
                }
            }
            PMsg::Promise(b, acc) => {
                let s = &mut self.servers[to];
                if s.ballot != Some(b) {
                    return;
                }
                let Phase::Preparing(promises) = &mut s.phase else {
                    return;
                };
                promises.insert(from, acc);
                if promises.len() < majority {
                    return;
                }
                let seen = promises
                    .iter()
                    .filter_map(|(n, a)| a.map(|a| (a, *n)))
                    .max();
                let v = match seen {
                    Some(((ab, av), n)) => {
                        let own = if av == s.value {
                            String::new()
                        } else {
                            format!(", not its own {}", s.value)
                        };
                        cx.note(
                            to,
                            format!(
                                "{majority} promises for {b}; {} accepted ({ab}, {av}): proposes {av}{own}",
                                cx.name(n)
                            ),
                        );
                        av
                    }
                    None => {
                        cx.note(
                            to,
                            format!("{majority} promises for {b}, no value accepted: proposes its own {}", s.value),
                        );
                        s.value
                    }
                };
                s.phase = Phase::Accepting(v, BTreeSet::new());
                for &t in &s.targets.clone() {
                    cx.send(to, t, PMsg::Accept(b, v));
                }
            }
            PMsg::Accepted(b) => {
                let s = &mut self.servers[to];
                if s.ballot != Some(b) {
                    return;
                }
                let Phase::Accepting(v, acks) = &mut s.phase else {
                    return;
                };
                acks.insert(from);
                if acks.len() >= majority {
                    let v = *v;
                    let mine = s.value;
                    s.phase = Phase::Done(v);
                    cx.decide(
                        to,
                        "var",
                        v,
                        format!(
                            "{v} accepted by a majority at {b}: propose(var, {mine}) => <ok, {v}>"
                        ),
                    );
                }
            }
            PMsg::Reject(b, promised) => {
                if self.servers[to].ballot == Some(b) && self.active(to) {
                    self.overtaken(cx, to, promised);
                }
            }
        }
    }

    fn on_timer(&mut self, cx: &mut Cx<'_, Self>, node: Node, timer: BTimer) {
        match timer {
            BTimer::Propose(v, round, targets) => {
                let s = &mut self.servers[node];
                s.value = v;
                s.targets = targets;
                cx.note(node, format!("propose(var, {v})"));
                self.prepare(cx, node, round);
            }
            BTimer::Restart => {
                let round = self.servers[node].highest_round + 1;
                self.prepare(cx, node, round);
            }
        }
    }

    fn state(&self, node: Node) -> String {
        let s = &self.servers[node];
        let p = s.promised.map_or("-".to_string(), |b| b.to_string());
        let a = s
            .accepted
            .map_or("none".to_string(), |(b, v)| format!("({b}, {v})"));
        let mut out = format!("promised {p}, accepted {a}");
        let b = s.ballot.map_or(String::new(), |b| b.to_string());
        match &s.phase {
            Phase::Idle => {}
            Phase::Preparing(m) => {
                out.push_str(&format!("; proposer: prepare {b} ({} promises)", m.len()))
            }
            Phase::Accepting(v, acks) => out.push_str(&format!(
                "; proposer: accept ({b}, {v}) ({} accepted)",
                acks.len()
            )),
            Phase::Done(v) => out.push_str(&format!("; proposer: <ok, {v}>")),
            Phase::Failed => out.push_str("; proposer: <error>"),
        }
        out
    }
}

const FIVE: &[&str] = &["S1", "S2", "S3", "S4", "S5"];
const S1: Node = 0;
const S2: Node = 1;
const S3: Node = 2;
const S4: Node = 3;
const S5: Node = 4;

fn design3_sim() -> Sim<Basic> {
    Sim::new(Basic::new(5, &[Retry::Never; 5]), FIVE, LATENCY, 1000)
}

fn design3_chosen() -> Played {
    let mut sim = design3_sim();
    sim.at(
        0,
        Action::Fire(S1, BTimer::Propose("X", 3, vec![S1, S2, S3])),
    )
    .at(
        50,
        Action::Fire(S5, BTimer::Propose("Y", 4, vec![S3, S4, S5])),
    );
    sim.run()
}

fn design3_seen() -> Played {
    let mut sim = design3_sim();
    sim.rule(Rule::delay(Some(S1), S1, "accept(b=3.1", 60))
        .rule(Rule::delay(Some(S1), S2, "accept(b=3.1", 60))
        .at(
            0,
            Action::Fire(S1, BTimer::Propose("X", 3, vec![S1, S2, S3])),
        )
        .at(
            25,
            Action::Fire(S5, BTimer::Propose("Y", 4, vec![S3, S4, S5])),
        );
    sim.run()
}

fn design3_unseen() -> Played {
    let mut sim = design3_sim();
    sim.at(
        0,
        Action::Fire(S1, BTimer::Propose("X", 3, vec![S1, S2, S3])),
    )
    .at(
        15,
        Action::Fire(S5, BTimer::Propose("Y", 4, vec![S3, S4, S5])),
    );
    sim.run()
}

fn duel_sim(retry_s5: Retry, budget: u64) -> Sim<Basic> {
    let retry = [
        Retry::AtOnce,
        Retry::AtOnce,
        Retry::AtOnce,
        Retry::AtOnce,
        retry_s5,
    ];
    let all = vec![S1, S2, S3, S4, S5];
    let mut sim = Sim::new(Basic::new(5, &retry), FIVE, LATENCY, budget);
    sim.at(0, Action::Fire(S1, BTimer::Propose("X", 1, all.clone())))
        .at(13, Action::Fire(S5, BTimer::Propose("Y", 1, all)));
    sim
}

fn duel() -> Played {
    duel_sim(Retry::AtOnce, 100).run()
}

fn duel_leader() -> Played {
    duel_sim(Retry::After(80), 1000).run()
}

#[cfg(test)]
mod tests {
    use crate::{run, StepKind, VerdictKind};

    fn verdict(s: &str) -> VerdictKind {
        run("paxos", s).expect("scenario").verdict.kind
    }

    #[test]
    fn design_one_works_without_faults_and_deadlocks_when_the_holder_dies() {
        let r = run("paxos", "design1").unwrap();
        assert_eq!(r.verdict.kind, VerdictKind::Chosen);
        assert!(r
            .steps
            .iter()
            .any(|s| s.what.contains("propose(var, Y) => <ok, X>")));
        let r = run("paxos", "design1-deadlock").unwrap();
        assert_eq!(
            r.verdict.kind,
            VerdictKind::Deadlock,
            "{}",
            r.verdict.summary
        );
        assert!(r.steps.iter().any(|s| s.what.contains("<error>")));
    }

    #[test]
    fn design_two_preempts_and_endorses() {
        let r = run("paxos", "design2-preempt").unwrap();
        assert_eq!(r.verdict.kind, VerdictKind::Chosen);
        assert!(
            r.verdict.summary.contains("var = Y"),
            "{}",
            r.verdict.summary
        );
        assert!(r
            .steps
            .iter()
            .any(|s| s.what == "promise(e=3.1, f=(2.2, Y))"));
        assert!(r
            .steps
            .iter()
            .any(|s| s.what.contains("propose(var, X) => <ok, Y>")));
        let r = run("paxos", "design2-endorse").unwrap();
        assert_eq!(r.verdict.kind, VerdictKind::Chosen);
        assert!(r
            .steps
            .iter()
            .any(|s| s.what.contains("propose(var, Y) => <ok, X>")));
        assert!(
            !r.steps.iter().any(|s| s.what.starts_with("accept(e=2.2")),
            "the later epoch must not submit its own value"
        );
    }

    #[test]
    fn design_three_case_one_server_5_proposes_x() {
        let r = run("paxos", "design3-chosen").unwrap();
        assert_eq!(r.verdict.kind, VerdictKind::Chosen);
        assert!(
            r.verdict.summary.contains("var = X (S1, S5)"),
            "{}",
            r.verdict.summary
        );
        let from_s5: Vec<&str> = r
            .steps
            .iter()
            .filter(|s| s.kind == StepKind::Send && s.from.as_deref() == Some("S5"))
            .map(|s| s.what.as_str())
            .collect();
        assert!(from_s5.contains(&"accept(b=4.5, X)"), "{from_s5:?}");
        assert!(!from_s5.iter().any(|w| w.contains('Y')), "{from_s5:?}");
        assert!(r.steps.iter().any(|s| s.kind == StepKind::Deliver
            && s.from.as_deref() == Some("S3")
            && s.what == "promise(b=4.5, accepted (3.1, X))"));
    }

    #[test]
    fn design_three_case_two_adopts_a_minority_value() {
        let r = run("paxos", "design3-seen").unwrap();
        assert_eq!(r.verdict.kind, VerdictKind::Chosen);
        assert!(
            r.verdict.summary.contains("var = X"),
            "{}",
            r.verdict.summary
        );
        // When S5's prepare reached S3, only S3 had accepted X.
        let i = r
            .steps
            .iter()
            .position(|s| {
                s.kind == StepKind::Deliver
                    && s.what == "prepare(b=4.5)"
                    && s.to.as_deref() == Some("S3")
            })
            .unwrap();
        let accepted: Vec<&String> = r.steps[i]
            .states
            .iter()
            .filter(|(_, st)| st.contains("accepted (3.1, X)"))
            .map(|(n, _)| n)
            .collect();
        assert_eq!(accepted, ["S3"]);
        assert!(r.steps.iter().any(|s| s.what == "accept(b=4.5, X)"));
    }

    #[test]
    fn design_three_case_three_y_wins_and_s1_fails() {
        let r = run("paxos", "design3-unseen").unwrap();
        assert_eq!(r.verdict.kind, VerdictKind::Chosen);
        assert!(
            r.verdict.summary.contains("var = Y (S5)"),
            "{}",
            r.verdict.summary
        );
        assert!(r.steps.iter().any(|s| s.kind == StepKind::Send
            && s.from.as_deref() == Some("S3")
            && s.what == "reject(b=3.1, promised 4.5)"));
        assert!(r
            .steps
            .iter()
            .any(|s| s.from.as_deref() == Some("S1") && s.what.contains("<error>")));
    }

    #[test]
    fn duelling_proposers_livelock_without_a_leader_and_not_with_one() {
        assert_eq!(verdict("duel"), VerdictKind::Livelock);
        let r = run("paxos", "duel-leader").unwrap();
        assert_eq!(r.verdict.kind, VerdictKind::Chosen, "{}", r.verdict.summary);
        assert!(
            r.verdict.summary.contains("var = X (S1, S5)"),
            "{}",
            r.verdict.summary
        );
    }
}
