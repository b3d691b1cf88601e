//! The comparison runs end to end on a small cluster and its table holds
//! what the design note quotes.

use std::time::Duration;

use synod_placement::{compare, ConsistentHashing, Replication, Scenario, Strategy};

#[test]
fn range_placement_is_even_and_moves_the_ideal() {
    let scenario = Scenario {
        nodes: 20,
        shards: 1_000,
        replication: Replication::Three,
        moves_max: 200,
        rounds_max: 1_000,
    };
    let strategies = [
        Strategy::Range,
        Strategy::Hashing(ConsistentHashing { vnodes: 1 }),
    ];
    let comparison = compare(&scenario, &strategies, &mut || Duration::ZERO);
    let [range, hashing] = comparison.reports.as_slice() else {
        panic!("one report per strategy");
    };
    // 3,000 replicas over 21 nodes: 142.9 each.
    let ideal = scenario.ideal_copies();
    for step in [range.join, range.death] {
        assert!(
            (step.settled.copies as f64 - ideal).abs() <= 1.0,
            "{step:?}"
        );
        assert!(step.balance.replicas_max_over_mean < 1.01, "{step:?}");
    }
    assert!(range.initial.balance.replicas_stddev < 0.5);
    assert_eq!(range.death.churn.replicas_added, range.death.settled.copies);
    // Hashing with one point per node is lopsided, and a join takes from a
    // few neighbours only.
    assert!(hashing.initial.balance.replicas_max_over_mean > 1.5);
    assert!(hashing.join.churn.nodes_shedding < range.join.churn.nodes_shedding);
    let table = comparison.to_markdown();
    assert!(table.contains("| join: replicas copied | 143 |"), "{table}");
    assert_eq!(table.lines().count(), 2 + 3 * 5 + 2 * 4, "{table}");
}
