//! Prints the table of `docs/design/0009-placement.md`: range placement
//! against consistent hashing on 100 nodes and 10,000 shards.
//!
//! `cargo run --release -p synod-placement --example compare [-- --replicas 5]`

use std::time::{Duration, Instant};

use synod_placement::{
    compare, ClusterView, ConsistentHashing, Node, RangePlacement, Replication, Scenario, Strategy,
};

fn main() {
    let replication = match std::env::args()
        .skip_while(|a| a != "--replicas")
        .nth(1)
        .as_deref()
    {
        None | Some("3") => Replication::Three,
        Some("5") => Replication::Five,
        Some(other) => {
            eprintln!("--replicas must be 3 or 5, not {other}");
            std::process::exit(2);
        }
    };
    let scenario = Scenario {
        replication,
        ..Scenario::design_note()
    };
    let mut strategies = vec![Strategy::Range];
    for vnodes in [1, 16, 64, 256] {
        strategies.push(Strategy::Hashing(ConsistentHashing { vnodes }));
    }
    let origin = Instant::now();
    let mut clock = move || origin.elapsed();
    let comparison = compare(&scenario, &strategies, &mut clock);
    println!("{}", comparison.to_markdown());
    print_plan_cost(&scenario);
}

/// What one plan costs the meta shard's leader on a cluster of this size:
/// on a settled view (the steady-state poll), and right after a node died.
fn print_plan_cost(scenario: &Scenario) {
    let mut view = scenario.initial_view();
    Strategy::Range.settle(&mut view, scenario);
    let settled = time_plan(&view, scenario.moves_max);
    view.add_node(Node::new(scenario.joining_node()))
        .expect("join");
    let joined = time_plan(&view, scenario.moves_max);
    Strategy::Range.settle(&mut view, scenario);
    view.set_alive(scenario.dying_node(), false).expect("death");
    let died = time_plan(&view, scenario.moves_max);
    println!(
        "one plan (moves_max {}): settled view {:.1} ms ({} actions); after the join {:.1} ms ({} actions); after the death {:.1} ms ({} actions)",
        scenario.moves_max,
        ms(settled.0),
        settled.1,
        ms(joined.0),
        joined.1,
        ms(died.0),
        died.1,
    );
}

fn time_plan(view: &ClusterView, moves_max: usize) -> (Duration, usize) {
    const RUNS: u32 = 5;
    let start = Instant::now();
    let mut actions = 0;
    for _ in 0..RUNS {
        actions = RangePlacement.plan(view, moves_max).len();
    }
    (start.elapsed() / RUNS, actions)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
