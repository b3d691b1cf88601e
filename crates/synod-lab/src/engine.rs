//! The discrete-event engine every lab scenario runs on.
//!
//! Virtual time in milliseconds; one queue ordered by (time, sequence), so
//! two events at the same instant keep the order in which they were
//! scheduled and every run is the same run. A protocol is a [`World`]: it
//! owns every node's state and reacts to deliveries and timers through a
//! [`Cx`], which records what it sends, notes and decides. Faults are a
//! script of [`Action`]s at fixed times plus [`Rule`]s that drop or delay
//! chosen messages; nothing is random.

use crate::check::{Decision, Facts, ReadObs, Wait, WriteAck};
use crate::{Step, StepKind};
use std::collections::BTreeMap;
use std::fmt;

/// A node's index in the scenario's node list.
pub(crate) type Node = usize;

/// A Paxos proposal number: `(round, node)`, ordered by round first, shown
/// as `round.node` like the seeds' "P 3.1" and "A 4.5 X".
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Ballot {
    pub round: u32,
    pub node: u32,
}

impl Ballot {
    pub fn new(round: u32, node: u32) -> Ballot {
        Ballot { round, node }
    }
}

impl fmt::Display for Ballot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.round, self.node)
    }
}

/// A message of one protocol: its label is what the timeline shows and what
/// [`Rule`]s match on.
pub(crate) trait Message: Clone {
    fn label(&self) -> String;
}

/// One protocol's nodes, as the engine drives them.
pub(crate) trait World {
    type Msg: Message;
    type Timer: Clone;
    /// `msg` from `from` arrives at `to` (which is up).
    fn on_message(&mut self, cx: &mut Cx<'_, Self>, to: Node, from: Node, msg: Self::Msg);
    /// A timer of `node` (which is up, in the incarnation that set it) fires;
    /// scripted kick-offs arrive here too.
    fn on_timer(&mut self, cx: &mut Cx<'_, Self>, node: Node, timer: Self::Timer);
    /// `node` crashed: forget what it did not persist.
    fn on_crash(&mut self, _node: Node) {}
    /// `node` restarts from what it persisted.
    fn on_recover(&mut self, _cx: &mut Cx<'_, Self>, _node: Node) {}
    /// A short description of `node`'s state for the timeline.
    fn state(&self, node: Node) -> String;
    /// What live nodes still wait for when the run ends.
    fn waits(&self, _up: &[bool]) -> Vec<Wait> {
        Vec::new()
    }
}

/// A node's clock: local time runs at `rate`/1000 of virtual time from an
/// anchor, so a lease can be measured on a drifting clock.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Clock {
    real: u64,
    local: u64,
    rate: u64,
}

impl Clock {
    fn at(&self, now: u64) -> u64 {
        self.local + (now - self.real) * self.rate / 1000
    }

    /// Virtual milliseconds until this clock has advanced `local_ms`.
    fn real_after(&self, local_ms: u64) -> u64 {
        (local_ms * 1000).div_ceil(self.rate)
    }
}

/// What a scripted rule does to the messages it matches.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Effect {
    /// Lost on the way.
    Drop,
    /// Arrives this many milliseconds later than usual.
    Delay(u64),
}

/// Drops or delays every message whose label starts with `prefix`, sent
/// `from` → `to` (`None`: from anyone).
#[derive(Clone, Debug)]
pub(crate) struct Rule {
    pub from: Option<Node>,
    pub to: Node,
    pub prefix: String,
    pub effect: Effect,
}

impl Rule {
    pub fn drop(from: Node, to: Node, prefix: &str) -> Rule {
        Rule {
            from: Some(from),
            to,
            prefix: prefix.to_string(),
            effect: Effect::Drop,
        }
    }

    pub fn delay(from: Option<Node>, to: Node, prefix: &str, ms: u64) -> Rule {
        Rule {
            from,
            to,
            prefix: prefix.to_string(),
            effect: Effect::Delay(ms),
        }
    }

    fn matches(&self, from: Node, to: Node, label: &str) -> bool {
        self.from.is_none_or(|f| f == from) && self.to == to && label.starts_with(&self.prefix)
    }
}

/// A scripted event.
#[derive(Clone, Debug)]
pub(crate) enum Action<T> {
    Crash(Node),
    Recover(Node),
    /// Nodes on different sides cannot exchange messages; unlisted nodes
    /// are each on a side of their own.
    Partition(Vec<Vec<Node>>),
    Heal,
    /// Fires one of the node's timers: how scenarios start proposals,
    /// client requests and scripted election timeouts.
    Fire(Node, T),
    /// From now on the node's clock runs at `rate`/1000 of real time.
    Drift(Node, u64),
    Note(String),
}

enum Event<M, T> {
    Deliver {
        from: Node,
        to: Node,
        msg: M,
        lost: bool,
    },
    Timer {
        node: Node,
        life: u32,
        timer: T,
    },
    Script(Action<T>),
}

enum Out<M, T> {
    Send {
        from: Node,
        to: Node,
        msg: M,
    },
    Timer {
        node: Node,
        after: u64,
        timer: T,
    },
    Step {
        kind: StepKind,
        node: Node,
        what: String,
    },
}

/// A handler's window on the engine: the time, the node clocks, and where
/// sends, timers, notes and decisions go.
pub(crate) struct Cx<'a, W: World + ?Sized> {
    now: u64,
    clocks: &'a [Clock],
    names: &'a [String],
    facts: &'a mut Facts,
    out: Vec<Out<W::Msg, W::Timer>>,
}

impl<W: World + ?Sized> Cx<'_, W> {
    /// Virtual (real) time.
    pub fn now(&self) -> u64 {
        self.now
    }

    /// Time as `node`'s own clock reads it.
    pub fn local_now(&self, node: Node) -> u64 {
        self.clocks[node].at(self.now)
    }

    /// `node`'s name.
    pub fn name(&self, node: Node) -> &str {
        &self.names[node]
    }

    pub fn send(&mut self, from: Node, to: Node, msg: W::Msg) {
        self.out.push(Out::Send { from, to, msg });
    }

    /// Fires `timer` at `node` after `local_ms` of the node's own clock.
    pub fn timer(&mut self, node: Node, local_ms: u64, timer: W::Timer) {
        let after = self.clocks[node].real_after(local_ms);
        self.out.push(Out::Timer { node, after, timer });
    }

    pub fn note(&mut self, node: Node, what: impl Into<String>) {
        self.out.push(Out::Step {
            kind: StepKind::Note,
            node,
            what: what.into(),
        });
    }

    /// `node` learned that `key` has `value` (chosen, committed, aborted):
    /// the fact the checkers compare across nodes.
    pub fn decide(&mut self, node: Node, key: &str, value: &str, what: impl Into<String>) {
        self.facts.decisions.push(Decision {
            node,
            key: key.to_string(),
            value: value.to_string(),
        });
        self.out.push(Out::Step {
            kind: StepKind::Decide,
            node,
            what: what.into(),
        });
    }

    /// `node`'s ballot was overtaken by a higher one.
    pub fn preempted(&mut self, node: Node, what: impl Into<String>) {
        self.facts.preemptions += 1;
        self.note(node, what);
    }

    /// Client `node` saw its write of `key` = `value` (as `version`)
    /// acknowledged now.
    pub fn write_acked(&mut self, node: Node, key: &str, version: u64, value: &str) {
        self.facts.writes.push(WriteAck {
            at: self.now,
            node,
            key: key.to_string(),
            version,
            value: value.to_string(),
        });
        self.note(
            node,
            format!("write {key} = {value} (version {version}) acknowledged"),
        );
    }

    /// Client `node`, which asked at `start`, got `key` = `value` (as
    /// `version`) now.
    pub fn read(&mut self, node: Node, key: &str, version: u64, value: &str, start: u64) {
        self.facts.reads.push(ReadObs {
            start,
            at: self.now,
            node,
            key: key.to_string(),
            version,
            value: value.to_string(),
        });
        self.note(
            node,
            format!("read {key} = {value} (version {version}), asked at {start} ms"),
        );
    }
}

/// What a finished simulation hands back.
pub(crate) struct Played {
    pub nodes: Vec<String>,
    pub steps: Vec<Step>,
    pub facts: Facts,
}

/// One scenario's simulation.
pub(crate) struct Sim<W: World> {
    world: W,
    names: Vec<String>,
    now: u64,
    seq: u64,
    queue: BTreeMap<(u64, u64), Event<W::Msg, W::Timer>>,
    up: Vec<bool>,
    life: Vec<u32>,
    side: Option<Vec<usize>>,
    rules: Vec<Rule>,
    clocks: Vec<Clock>,
    latency: u64,
    steps: Vec<Step>,
    facts: Facts,
    budget: u64,
}

/// Delivery to oneself: through the local stack, not the network.
const SELF_LATENCY: u64 = 1;

impl<W: World> Sim<W> {
    /// `latency`: one-way delay between two nodes; `budget`: virtual time
    /// after which the run stops (what is still scheduled is reported).
    pub fn new(world: W, names: &[&str], latency: u64, budget: u64) -> Sim<W> {
        let n = names.len();
        Sim {
            world,
            names: names.iter().map(|s| s.to_string()).collect(),
            now: 0,
            seq: 0,
            queue: BTreeMap::new(),
            up: vec![true; n],
            life: vec![0; n],
            side: None,
            rules: Vec::new(),
            clocks: vec![
                Clock {
                    real: 0,
                    local: 0,
                    rate: 1000
                };
                n
            ],
            latency,
            steps: Vec::new(),
            facts: Facts {
                up: vec![true; n],
                budget,
                ..Facts::default()
            },
            budget,
        }
    }

    /// Schedules a scripted action.
    pub fn at(&mut self, time: u64, action: Action<W::Timer>) -> &mut Self {
        self.push(time, Event::Script(action));
        self
    }

    /// Installs a drop/delay rule for the whole run.
    pub fn rule(&mut self, rule: Rule) -> &mut Self {
        self.rules.push(rule);
        self
    }

    fn push(&mut self, time: u64, event: Event<W::Msg, W::Timer>) {
        self.queue.insert((time, self.seq), event);
        self.seq += 1;
    }

    fn states(&self) -> Vec<(String, String)> {
        (0..self.names.len())
            .map(|n| {
                let s = self.world.state(n);
                let s = if self.up[n] { s } else { format!("DOWN; {s}") };
                (self.names[n].clone(), s)
            })
            .collect()
    }

    fn step(&mut self, kind: StepKind, from: Option<Node>, to: Option<Node>, what: String) {
        let states = self.states();
        self.steps.push(Step {
            at: self.now,
            kind,
            from: from.map(|n| self.names[n].clone()),
            to: to.map(|n| self.names[n].clone()),
            what,
            states,
        });
    }

    fn partitioned(&self, a: Node, b: Node) -> bool {
        self.side.as_ref().is_some_and(|s| s[a] != s[b])
    }

    fn delay(&self, from: Node, to: Node) -> u64 {
        if from == to {
            SELF_LATENCY
        } else {
            self.latency
        }
    }

    /// Runs a handler with a fresh context, then records its outputs.
    fn handle(
        &mut self,
        f: impl FnOnce(&mut W, &mut Cx<'_, W>),
        lead: Option<(StepKind, Node, Node, String)>,
    ) {
        let mut cx = Cx {
            now: self.now,
            clocks: &self.clocks,
            names: &self.names,
            facts: &mut self.facts,
            out: Vec::new(),
        };
        f(&mut self.world, &mut cx);
        let out = cx.out;
        if let Some((kind, from, to, what)) = lead {
            self.step(kind, Some(from), Some(to), what);
        }
        self.apply(out);
    }

    fn apply(&mut self, out: Vec<Out<W::Msg, W::Timer>>) {
        for o in out {
            match o {
                Out::Send { from, to, msg } => {
                    let label = msg.label();
                    let mut delay = self.delay(from, to);
                    let mut lost = false;
                    for rule in self.rules.iter().filter(|r| r.matches(from, to, &label)) {
                        match rule.effect {
                            Effect::Drop => lost = true,
                            Effect::Delay(ms) => delay += ms,
                        }
                    }
                    self.step(StepKind::Send, Some(from), Some(to), label);
                    let at = self.now + delay;
                    self.push(
                        at,
                        Event::Deliver {
                            from,
                            to,
                            msg,
                            lost,
                        },
                    );
                }
                Out::Timer { node, after, timer } => {
                    let life = self.life[node];
                    self.push(self.now + after, Event::Timer { node, life, timer });
                }
                Out::Step { kind, node, what } => self.step(kind, Some(node), None, what),
            }
        }
    }

    fn side_names(&self, groups: &[Vec<Node>]) -> String {
        groups
            .iter()
            .map(|g| {
                let names: Vec<&str> = g.iter().map(|&n| self.names[n].as_str()).collect();
                format!("{{{}}}", names.join(", "))
            })
            .collect::<Vec<_>>()
            .join(" | ")
    }

    /// Runs until nothing is scheduled or the budget is spent.
    pub fn run(mut self) -> Played {
        while let Some((&(time, _), _)) = self.queue.first_key_value() {
            if time > self.budget {
                let left = self.queue.len();
                self.now = self.budget;
                self.facts.exhausted = true;
                self.step(
                    StepKind::Note,
                    None,
                    None,
                    format!(
                        "time budget of {} ms spent; {left} events still scheduled",
                        self.budget
                    ),
                );
                break;
            }
            let (_, event) = self.queue.pop_first().expect("peeked");
            self.now = time;
            match event {
                Event::Deliver {
                    from,
                    to,
                    msg,
                    lost,
                } => {
                    let label = msg.label();
                    let why = if lost {
                        Some("dropped by the fault script".to_string())
                    } else if !self.up[to] {
                        Some(format!("{} is down", self.names[to]))
                    } else if self.partitioned(from, to) {
                        Some("partitioned".to_string())
                    } else {
                        None
                    };
                    if let Some(why) = why {
                        self.step(
                            StepKind::Drop,
                            Some(from),
                            Some(to),
                            format!("{label}: {why}"),
                        );
                        continue;
                    }
                    self.handle(
                        |w, cx| w.on_message(cx, to, from, msg),
                        Some((StepKind::Deliver, from, to, label)),
                    );
                }
                Event::Timer { node, life, timer } => {
                    if self.up[node] && self.life[node] == life {
                        self.handle(|w, cx| w.on_timer(cx, node, timer), None);
                    }
                }
                Event::Script(action) => self.script(action),
            }
        }
        self.facts.up = self.up.clone();
        self.facts.waits = self.world.waits(&self.up);
        Played {
            nodes: self.names,
            steps: self.steps,
            facts: self.facts,
        }
    }

    fn script(&mut self, action: Action<W::Timer>) {
        match action {
            Action::Crash(n) => {
                self.up[n] = false;
                self.life[n] += 1;
                self.world.on_crash(n);
                let what = format!("{} crashes", self.names[n]);
                self.step(StepKind::Crash, Some(n), None, what);
            }
            Action::Recover(n) => {
                self.up[n] = true;
                let what = format!("{} recovers from what it persisted", self.names[n]);
                self.step(StepKind::Recover, Some(n), None, what);
                self.handle(|w, cx| w.on_recover(cx, n), None);
            }
            Action::Partition(groups) => {
                let n = self.names.len();
                let mut side: Vec<usize> = (groups.len()..groups.len() + n).collect();
                for (i, g) in groups.iter().enumerate() {
                    for &node in g {
                        side[node] = i;
                    }
                }
                self.side = Some(side);
                let what = format!("network partition: {}", self.side_names(&groups));
                self.step(StepKind::Partition, None, None, what);
            }
            Action::Heal => {
                self.side = None;
                self.step(
                    StepKind::Heal,
                    None,
                    None,
                    "the partition heals".to_string(),
                );
            }
            Action::Fire(n, timer) => {
                if self.up[n] {
                    self.handle(|w, cx| w.on_timer(cx, n, timer), None);
                }
            }
            Action::Drift(n, rate) => {
                let c = self.clocks[n];
                self.clocks[n] = Clock {
                    real: self.now,
                    local: c.at(self.now),
                    rate,
                };
                let what = format!(
                    "{}'s clock now runs at {}.{:03}x real time",
                    self.names[n],
                    rate / 1000,
                    rate % 1000
                );
                self.step(StepKind::Note, Some(n), None, what);
            }
            Action::Note(text) => self.step(StepKind::Note, None, None, text),
        }
    }
}
