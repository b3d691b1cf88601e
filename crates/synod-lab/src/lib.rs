//! The protocol lab: the textbook protocols that synod's design starts
//! from, run in a small deterministic simulator under the seeds' own
//! scripted faults, each ending in a verdict that a checker computed from
//! what happened.
//!
//! | protocol | what it shows |
//! | --- | --- |
//! | `paxos` | seed 000's road to basic Paxos: a mutex acceptor deadlocks, epochs preempt and endorse, five servers in the three cases, duelling proposers |
//! | `multipaxos` | a leader change fills open slots with the old values or no-ops |
//! | `lease` | a partitioned leader on a slow clock, with and without the drift margin |
//! | `quorum` | N, W, R with W + R > N and with W + R ≤ N |
//! | `2pc`, `3pc` | seed 003's commit protocols under their classic faults, beside synod's Paxos-backed two-phase commit |
//!
//! The simulator is pure: virtual time, a queue ordered by (time,
//! sequence), no clock, no randomness, no hash-map order, so every run is
//! the same run and a dashboard can replay it step by step. The actors are
//! the textbook's, written for reading; synod's real consensus core is
//! `synod-paxos`, exercised by `synod-sim`.

mod check;
mod engine;
mod lease;
mod multipaxos;
mod paxos;
mod quorum;
mod synodtx;
mod threepc;
mod twopc;

use serde::Serialize;

/// What happened at one step of a run: the dashboard colours and filters
/// the timeline by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum StepKind {
    /// A node put a message on the network.
    Send,
    /// A message reached its destination and was handled.
    Deliver,
    /// A message was lost: scripted loss, a dead receiver, a partition.
    Drop,
    /// A node stopped; it keeps only what it persisted.
    Crash,
    /// A node restarted from what it persisted.
    Recover,
    /// The network split into sides that cannot talk.
    Partition,
    /// The partition ended.
    Heal,
    /// A node learned a final value: chosen, committed or aborted.
    Decide,
    /// Anything else worth reading: a timeout, a client's answer.
    Note,
}

/// One step of a run's timeline, with every node's state after it, so a
/// replay can show the cluster at any point without re-running anything.
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    /// Virtual milliseconds since the start of the run.
    pub at: u64,
    /// What kind of step.
    pub kind: StepKind,
    /// The sender, or the node that acted.
    pub from: Option<String>,
    /// The receiver of a message.
    pub to: Option<String>,
    /// What was sent or done, e.g. `prepare(b=3.1)`.
    pub what: String,
    /// Every node's short state after this step, in node order.
    pub states: Vec<(String, String)>,
}

/// The kinds of verdict: the classic outcomes of these protocols, so each
/// scenario's lesson has a name a test can assert.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum VerdictKind {
    /// One value was chosen and every node that learned a value learned it.
    Chosen,
    /// A live node is stuck behind a lock held by a crashed node.
    Deadlock,
    /// Proposers kept preempting each other; nothing was chosen in time.
    Livelock,
    /// Live nodes cannot decide and wait for unreachable ones.
    Blocked,
    /// Two nodes decided differently.
    Inconsistent,
    /// A read returned something older than an acknowledged write.
    StaleRead,
    /// Nothing bad happened: decisions agree, reads are fresh, nobody waits.
    Safe,
}

/// A run's verdict and its evidence in one sentence.
#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    /// Which outcome.
    pub kind: VerdictKind,
    /// The evidence: which nodes, values, times.
    pub summary: String,
}

/// A scenario as menus list it, before anything runs.
#[derive(Debug, Clone, Serialize)]
pub struct ScenarioInfo {
    /// The name `run` and `synod lab --scenario` take.
    pub name: String,
    /// One line.
    pub title: String,
    /// One paragraph: the setup, the fault, and what to look for.
    pub about: String,
}

/// A finished run: everything a terminal or a dashboard needs to show and
/// replay it.
#[derive(Debug, Clone, Serialize)]
pub struct Run {
    /// The protocol, e.g. `paxos`.
    pub protocol: String,
    /// The scenario's name.
    pub scenario: String,
    /// The scenario's title.
    pub title: String,
    /// The scenario's paragraph.
    pub about: String,
    /// Node names, in the order `Step::states` lists them.
    pub nodes: Vec<String>,
    /// The timeline.
    pub steps: Vec<Step>,
    /// What the checkers concluded.
    pub verdict: Verdict,
}

/// A scenario of one protocol: its menu entry, what success means, and the
/// simulation that plays it.
pub(crate) struct Def {
    pub name: &'static str,
    pub title: &'static str,
    pub about: &'static str,
    pub goal: check::Goal,
    pub play: fn() -> engine::Played,
}

/// The protocols, in the order a course would take them, so menus and
/// `synod lab --help` list them the same way.
pub fn protocols() -> &'static [&'static str] {
    &["paxos", "multipaxos", "lease", "quorum", "2pc", "3pc"]
}

fn defs(protocol: &str) -> &'static [Def] {
    match protocol {
        "paxos" => paxos::SCENARIOS,
        "multipaxos" => multipaxos::SCENARIOS,
        "lease" => lease::SCENARIOS,
        "quorum" => quorum::SCENARIOS,
        "2pc" => twopc::SCENARIOS,
        "3pc" => threepc::SCENARIOS,
        _ => &[],
    }
}

/// The scenarios of `protocol` without running them, so a menu can offer
/// them cheaply; empty for an unknown protocol.
pub fn scenarios(protocol: &str) -> Vec<ScenarioInfo> {
    defs(protocol)
        .iter()
        .map(|d| ScenarioInfo {
            name: d.name.to_string(),
            title: d.title.to_string(),
            about: d.about.to_string(),
        })
        .collect()
}

fn play(protocol: &str, def: &Def) -> Run {
    let played = (def.play)();
    let verdict = check::verdict(def.goal, &played.nodes, &played.facts);
    Run {
        protocol: protocol.to_string(),
        scenario: def.name.to_string(),
        title: def.title.to_string(),
        about: def.about.to_string(),
        nodes: played.nodes,
        steps: played.steps,
        verdict,
    }
}

/// Runs one scenario; `None` if the protocol or scenario does not exist,
/// so callers taking names from users can answer with the valid choices.
pub fn run(protocol: &str, scenario: &str) -> Option<Run> {
    defs(protocol)
        .iter()
        .find(|d| d.name == scenario)
        .map(|d| play(protocol, d))
}

/// Runs every scenario of `protocol`, in menu order: a protocol's lesson
/// is the contrast between its scenarios.
pub fn run_all(protocol: &str) -> Vec<Run> {
    defs(protocol).iter().map(|d| play(protocol, d)).collect()
}

/// The run as JSON, so the dashboard and `synod lab --json` share one
/// format.
pub fn to_json(run: &Run) -> String {
    serde_json::to_string(run).expect("a run always serializes")
}

fn kind_word(kind: StepKind) -> &'static str {
    match kind {
        StepKind::Send => "send",
        StepKind::Deliver => "deliver",
        StepKind::Drop => "DROP",
        StepKind::Crash => "CRASH",
        StepKind::Recover => "recover",
        StepKind::Partition => "PARTITION",
        StepKind::Heal => "heal",
        StepKind::Decide => "DECIDE",
        StepKind::Note => "note",
    }
}

/// One timeline line for step `i` of `run`: time, kind, from → to, what,
/// and for a delivery or an action the acting node's state after it. A
/// replay prints these one at a time.
pub fn render_step(run: &Run, i: usize) -> String {
    let s = &run.steps[i];
    let who = match (&s.from, &s.to) {
        (Some(f), Some(t)) => format!("{f} → {t}"),
        (Some(f), None) => f.clone(),
        (None, Some(t)) => format!("→ {t}"),
        (None, None) => String::new(),
    };
    let mut line = format!(
        "{:>6} ms  {:<9} {:<12} {}",
        s.at,
        kind_word(s.kind),
        who,
        s.what
    );
    let shown = match s.kind {
        StepKind::Deliver => s.to.as_ref(),
        StepKind::Decide | StepKind::Crash | StepKind::Recover => s.from.as_ref(),
        StepKind::Note => s.from.as_ref(),
        _ => None,
    };
    if let Some(node) = shown {
        if let Some((_, state)) = s.states.iter().find(|(n, _)| n == node) {
            if !state.is_empty() {
                line.push_str(&format!("   [{node}: {state}]"));
            }
        }
    }
    line
}

/// The header of a run (protocol, scenario, title, paragraph, nodes), apart
/// from the steps so a replay can print it before pacing the steps.
pub fn render_header(run: &Run) -> String {
    format!(
        "== {} / {}: {}\n{}\nnodes: {}\n",
        run.protocol,
        run.scenario,
        run.title,
        run.about,
        run.nodes.join(", ")
    )
}

/// The verdict line, apart from the steps for the same reason as
/// [`render_header`].
pub fn render_verdict(run: &Run) -> String {
    format!("verdict: {:?}: {}", run.verdict.kind, run.verdict.summary)
}

/// A readable timeline for the terminal: the header, one line per step,
/// then the verdict.
pub fn render(run: &Run) -> String {
    let mut out = render_header(run);
    for i in 0..run.steps.len() {
        out.push_str(&render_step(run, i));
        out.push('\n');
    }
    out.push_str(&render_verdict(run));
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every scenario's expected verdict: the lab's table of lessons.
    const EXPECTED: &[(&str, &str, VerdictKind)] = &[
        ("paxos", "design1", VerdictKind::Chosen),
        ("paxos", "design1-deadlock", VerdictKind::Deadlock),
        ("paxos", "design2-preempt", VerdictKind::Chosen),
        ("paxos", "design2-endorse", VerdictKind::Chosen),
        ("paxos", "design3-chosen", VerdictKind::Chosen),
        ("paxos", "design3-seen", VerdictKind::Chosen),
        ("paxos", "design3-unseen", VerdictKind::Chosen),
        ("paxos", "duel", VerdictKind::Livelock),
        ("paxos", "duel-leader", VerdictKind::Chosen),
        ("multipaxos", "steady", VerdictKind::Chosen),
        ("multipaxos", "leader-change", VerdictKind::Chosen),
        ("lease", "no-margin", VerdictKind::StaleRead),
        ("lease", "margin", VerdictKind::Safe),
        ("quorum", "w3r3", VerdictKind::Safe),
        ("quorum", "w2r2", VerdictKind::StaleRead),
        ("quorum", "n2w1r1", VerdictKind::StaleRead),
        ("2pc", "textbook-commit", VerdictKind::Safe),
        ("2pc", "textbook-crash", VerdictKind::Blocked),
        ("2pc", "synod-crash", VerdictKind::Safe),
        ("3pc", "textbook-commit", VerdictKind::Safe),
        ("3pc", "textbook-partition", VerdictKind::Inconsistent),
        ("3pc", "synod-partition", VerdictKind::Safe),
    ];

    #[test]
    fn every_scenario_has_its_expected_verdict() {
        let mut listed = 0;
        for p in protocols() {
            let runs = run_all(p);
            assert!(!runs.is_empty(), "{p} has scenarios");
            assert_eq!(runs.len(), scenarios(p).len());
            for r in runs {
                listed += 1;
                let want = EXPECTED
                    .iter()
                    .find(|(ep, es, _)| ep == p && *es == r.scenario)
                    .unwrap_or_else(|| panic!("{p}/{}: no expected verdict", r.scenario));
                assert_eq!(
                    r.verdict.kind, want.2,
                    "{p}/{}: {}",
                    r.scenario, r.verdict.summary
                );
            }
        }
        assert_eq!(listed, EXPECTED.len());
    }

    #[test]
    fn runs_are_deterministic_and_serialize() {
        for p in protocols() {
            for s in scenarios(p) {
                let a = run(p, &s.name).unwrap();
                let b = run(p, &s.name).unwrap();
                let json = to_json(&a);
                assert_eq!(json, to_json(&b), "{p}/{} replays identically", s.name);
                let v: serde_json::Value = serde_json::from_str(&json).unwrap();
                assert_eq!(v["protocol"], *p);
                assert_eq!(v["steps"].as_array().unwrap().len(), a.steps.len());
                for step in &a.steps {
                    assert_eq!(step.states.len(), a.nodes.len());
                }
                let text = render(&a);
                assert_eq!(text.lines().count(), a.steps.len() + 4, "{p}/{}", s.name);
                assert!(text.ends_with(&format!("{}\n", render_verdict(&a))));
            }
        }
    }

    #[test]
    fn unknown_names_run_nothing() {
        assert!(run("raft", "x").is_none());
        assert!(run("paxos", "nope").is_none());
        assert!(scenarios("raft").is_empty());
        assert!(run_all("raft").is_empty());
    }
}
