//! Range placement against consistent hashing on one scenario: place every
//! shard, let one node join, then let one node die, and measure the balance
//! and the replicas copied after each step.
//!
//! Pure: the clock is passed in, so a test can run the comparison with a
//! fake one and the example with a real one.

use std::fmt::Write as _;
use std::time::Duration;

use crate::action::apply;
use crate::balance::{Balance, Churn};
use crate::hashing::ConsistentHashing;
use crate::range::RangePlacement;
use crate::types::{Node, NodeId, Replication, Shard, ShardId};
use crate::view::ClusterView;

/// The cluster to simulate and the planner's bounds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Scenario {
    /// Nodes at the start, ids `1..=nodes`, capacity 1.
    pub nodes: u64,
    /// Shards, ids `1..=shards`, created without replicas.
    pub shards: u64,
    /// Replicas per shard.
    pub replication: Replication,
    /// The budget of each range plan (actions of every kind).
    pub moves_max: usize,
    /// How many plans a step may take before it counts as not converging,
    /// which would be a bug in the planner.
    pub rounds_max: usize,
}

impl Scenario {
    /// The cluster the design note measures: 100 nodes, 10,000 shards, 3
    /// replicas, plans of up to 1,000 actions.
    pub fn design_note() -> Scenario {
        Scenario {
            nodes: 100,
            shards: 10_000,
            replication: Replication::Three,
            moves_max: 1_000,
            rounds_max: 10_000,
        }
    }

    /// Every node live, every shard without replicas: the starting point of
    /// both strategies.
    pub fn initial_view(&self) -> ClusterView {
        let mut view = ClusterView::new(self.replication);
        for id in 1..=self.nodes {
            view.add_node(Node::new(NodeId(id)))
                .unwrap_or_else(|e| panic!("scenario node: {e}"));
        }
        for id in 1..=self.shards {
            view.add_shard(Shard::new(ShardId(id), Vec::new(), None))
                .unwrap_or_else(|e| panic!("scenario shard: {e}"));
        }
        view
    }

    /// The node that joins: the next id.
    pub fn joining_node(&self) -> NodeId {
        NodeId(self.nodes + 1)
    }

    /// The node that dies after the join: node 1.
    pub fn dying_node(&self) -> NodeId {
        NodeId(1)
    }

    /// The fewest replicas a join or a death must copy: a node's fair share
    /// once the cluster has `nodes + 1` nodes. Joining, the new node must
    /// receive that many for the spread to stay within one; dying, a node
    /// holding that many loses them all.
    pub fn ideal_copies(&self) -> f64 {
        (self.shards * self.replication.count() as u64) as f64 / (self.nodes + 1) as f64
    }

    /// The fewest leaders a join or death must change: a node's fair share
    /// of leaders.
    pub fn ideal_leader_changes(&self) -> f64 {
        self.shards as f64 / (self.nodes + 1) as f64
    }
}

/// A placement to measure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Strategy {
    /// synod's driver, [`RangePlacement`], planned until it is settled.
    Range,
    /// [`ConsistentHashing`], recomputed.
    Hashing(ConsistentHashing),
}

impl Strategy {
    /// The column heading.
    pub fn name(&self) -> String {
        match self {
            Strategy::Range => "range placement".to_string(),
            Strategy::Hashing(h) if h.vnodes == 1 => "hashing, 1 vnode".to_string(),
            Strategy::Hashing(h) => format!("hashing, {} vnodes", h.vnodes),
        }
    }

    /// Brings `view` to this strategy's placement after a change: the range
    /// driver plans and applies until its plan is empty; hashing
    /// recomputes. Returns the rounds taken and the replicas copied.
    pub fn settle(&self, view: &mut ClusterView, scenario: &Scenario) -> Settled {
        match self {
            Strategy::Range => settle_range(view, scenario),
            Strategy::Hashing(hashing) => {
                let placed = hashing.place(view);
                let copies = Churn::between(view, &placed).replicas_added;
                *view = placed;
                Settled { rounds: 1, copies }
            }
        }
    }
}

/// What settling took.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Settled {
    /// Plans computed (1 for hashing).
    pub rounds: usize,
    /// Replicas copied to a node: `Add`s and `Move`s for the range driver
    /// (a replica moved twice counts twice), new replicas for hashing.
    pub copies: usize,
}

fn settle_range(view: &mut ClusterView, scenario: &Scenario) -> Settled {
    let mut settled = Settled::default();
    loop {
        let plan = RangePlacement.plan(view, scenario.moves_max);
        if plan.is_empty() {
            return settled;
        }
        settled.rounds += 1;
        assert!(
            settled.rounds <= scenario.rounds_max,
            "range placement did not settle in {} plans",
            scenario.rounds_max
        );
        for action in &plan {
            apply(view, action).unwrap_or_else(|e| panic!("planned {action:?} is refused: {e}"));
            settled.copies += usize::from(action.copies_replica());
        }
    }
}

/// One step of the scenario, measured.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Step {
    /// What settling took.
    pub settled: Settled,
    /// What changed between the view before the step and after settling.
    pub churn: Churn,
    /// The spread after settling.
    pub balance: Balance,
    /// The clock's reading after settling minus before (planning and
    /// applying for range placement; recomputing for hashing).
    pub elapsed: Duration,
}

/// One strategy through the scenario.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Report {
    /// The strategy measured.
    pub strategy: Strategy,
    /// Placing every shard on the initial nodes.
    pub initial: Step,
    /// After [`Scenario::joining_node`] joined.
    pub join: Step,
    /// After [`Scenario::dying_node`] died.
    pub death: Step,
}

impl Report {
    /// The names of the steps, in the order [`Report::steps`] lists them.
    pub const PHASES: [&'static str; 3] = ["initial", "join", "death"];

    /// The steps with their names, in scenario order.
    pub fn steps(&self) -> [(&'static str, Step); 3] {
        let [initial, join, death] = Report::PHASES;
        [
            (initial, self.initial),
            (join, self.join),
            (death, self.death),
        ]
    }
}

/// Every strategy through one scenario.
#[derive(Clone, Debug, PartialEq)]
pub struct Comparison {
    /// The scenario run.
    pub scenario: Scenario,
    /// One report per strategy, in the order asked for.
    pub reports: Vec<Report>,
}

/// Runs each strategy through `scenario`: initial placement, one join, one
/// death. `clock` is read before and after each step; it only feeds
/// [`Step::elapsed`].
pub fn compare(
    scenario: &Scenario,
    strategies: &[Strategy],
    clock: &mut dyn FnMut() -> Duration,
) -> Comparison {
    let reports = strategies
        .iter()
        .map(|strategy| run(scenario, *strategy, clock))
        .collect();
    Comparison {
        scenario: *scenario,
        reports,
    }
}

fn run(scenario: &Scenario, strategy: Strategy, clock: &mut dyn FnMut() -> Duration) -> Report {
    let mut view = scenario.initial_view();
    let initial = step(scenario, strategy, &mut view, clock);
    view.add_node(Node::new(scenario.joining_node()))
        .unwrap_or_else(|e| panic!("joining node: {e}"));
    let join = step(scenario, strategy, &mut view, clock);
    view.set_alive(scenario.dying_node(), false)
        .unwrap_or_else(|e| panic!("dying node: {e}"));
    let death = step(scenario, strategy, &mut view, clock);
    Report {
        strategy,
        initial,
        join,
        death,
    }
}

fn step(
    scenario: &Scenario,
    strategy: Strategy,
    view: &mut ClusterView,
    clock: &mut dyn FnMut() -> Duration,
) -> Step {
    let before = view.clone();
    let start = clock();
    let settled = strategy.settle(view, scenario);
    let elapsed = clock().saturating_sub(start);
    view.check_invariants();
    Step {
        settled,
        churn: Churn::between(&before, view),
        balance: Balance::of(view),
        elapsed,
    }
}

impl Comparison {
    /// The comparison as a markdown table: one row per measure, one column
    /// per strategy, and the ideal where there is one.
    pub fn to_markdown(&self) -> String {
        let s = &self.scenario;
        let mut out = String::new();
        let _ = write!(
            out,
            "| {} nodes, {} shards, {} replicas | ideal |",
            s.nodes,
            s.shards,
            s.replication.count()
        );
        for r in &self.reports {
            let _ = write!(out, " {} |", r.strategy.name());
        }
        out.push_str("\n|---|---:|");
        out.push_str(&"---:|".repeat(self.reports.len()));
        out.push('\n');
        for phase in 0..3 {
            let steps: Vec<Step> = self.reports.iter().map(|r| r.steps()[phase].1).collect();
            phase_rows(&mut out, s, Report::PHASES[phase], &steps);
        }
        out
    }
}

/// The rows of one phase: what it cost (after a join or a death), the
/// spread it left, and the time it took.
fn phase_rows(out: &mut String, s: &Scenario, phase: &str, steps: &[Step]) {
    let mut row = |name: &str, ideal: &str, cell: &dyn Fn(&Step) -> String| {
        let _ = write!(out, "| {phase}: {name} | {ideal} |");
        for step in steps {
            let _ = write!(out, " {} |", cell(step));
        }
        out.push('\n');
    };
    if phase != "initial" {
        let copies = format!("{:.0}", s.ideal_copies());
        row("replicas copied", &copies, &|t| {
            t.settled.copies.to_string()
        });
        row("copies ÷ ideal", "1.00", &|t| {
            format!("{:.2}", t.settled.copies as f64 / s.ideal_copies())
        });
        let leaders = format!("{:.0}", s.ideal_leader_changes());
        row("leaders changed", &leaders, &|t| {
            t.churn.leaders_changed.to_string()
        });
        if phase == "join" {
            row("live nodes giving up replicas", "", &|t| {
                t.churn.nodes_shedding.to_string()
            });
        } else {
            row("live nodes taking replicas", "", &|t| {
                t.churn.nodes_receiving.to_string()
            });
        }
    }
    row("replicas/node max ÷ mean", "1.000", &|t| {
        format!("{:.3}", t.balance.replicas_max_over_mean)
    });
    row("replicas/node min ÷ mean", "1.000", &|t| {
        format!("{:.3}", t.balance.replicas_min_over_mean)
    });
    row("replicas/node std dev", "≤ 0.5", &|t| {
        format!("{:.1}", t.balance.replicas_stddev)
    });
    row("leaders/node max ÷ mean", "1.000", &|t| {
        format!("{:.3}", t.balance.leaders_max_over_mean)
    });
    row("plans, wall ms", "", &|t| {
        let ms = t.elapsed.as_secs_f64() * 1e3;
        format!("{}, {ms:.1}", t.settled.rounds)
    });
}
