//! Range placement: the driver synod runs on the meta shard's leader.
//!
//! Shards are key ranges made by splits, so nothing ties a shard to a node:
//! placement is a free assignment of replicas to nodes, and the driver can
//! move exactly the replicas that need to move. Each call to
//! [`RangePlacement::plan`] looks at the view and returns the next batch of
//! actions, in three passes that share one budget:
//!
//! ```text
//!   view ─► repair ─────────► rebalance ──────────► leaders ──► actions
//!           dead / missing    heaviest → lightest   no live leader: elect;
//!           / surplus         node while the        most leaders → fewest
//!           replicas          difference is > 1     while the difference > 1
//! ```
//!
//! Rules every plan keeps:
//! - at most one action per shard, and none on a shard with one in flight,
//!   so a shard never has two membership changes running at once;
//! - never two replicas of a shard on one node, new replicas and leaders
//!   only on live nodes;
//! - never remove a live replica from a shard that has a dead one, and
//!   leave shards without a quorum alone (see [`crate::action`]);
//! - the same view gives the same plan: every choice is made in id order
//!   with exact integer comparisons.
//!
//! Repeated plans converge: repair lowers the number of unhealthy shards,
//! every rebalance move lowers `Σ replicas² / capacity`, every leader
//! election lowers the number of leaderless shards and every transfer
//! lowers `Σ leaders² / capacity`, each without raising the ones before it.

mod leaders;
mod rebalance;
mod repair;

use std::collections::BTreeSet;

use crate::action::{apply, Action};
use crate::load::Loads;
use crate::types::{Shard, ShardId};
use crate::view::ClusterView;

/// The planner synod's placement driver runs. It holds no state between
/// plans: everything it needs is in the view, so a new meta-shard leader
/// picks up where the old one stopped.
#[derive(Clone, Copy, Debug, Default)]
pub struct RangePlacement;

impl RangePlacement {
    /// The next actions for `view`, at most `moves_max` of them (every kind
    /// counts), repairs first. An empty plan means nothing more can be done
    /// now: the view is settled, or what is left waits on shards in flight
    /// or without a quorum.
    pub fn plan(&self, view: &ClusterView, moves_max: usize) -> Vec<Action> {
        let mut planner = Planner::new(view, moves_max);
        planner.repair();
        planner.rebalance();
        planner.balance_leaders();
        planner.actions
    }
}

/// One plan in the making: a working copy of the view with the plan's
/// actions applied, so each choice sees the ones before it.
struct Planner {
    view: ClusterView,
    loads: Loads,
    /// Shards that already have an action in this plan.
    touched: BTreeSet<ShardId>,
    actions: Vec<Action>,
    moves_max: usize,
}

impl Planner {
    fn new(view: &ClusterView, moves_max: usize) -> Planner {
        Planner {
            view: view.clone(),
            loads: Loads::of(view),
            touched: BTreeSet::new(),
            actions: Vec::new(),
            moves_max,
        }
    }

    fn budget_left(&self) -> bool {
        self.actions.len() < self.moves_max
    }

    /// Whether the plan may still act on the shard.
    fn is_free(&self, shard: &Shard) -> bool {
        !shard.in_flight && !self.touched.contains(&shard.id)
    }

    /// A shard with its target count of replicas, all on live nodes: the
    /// only kind rebalancing moves.
    fn is_healthy(&self, shard: &Shard) -> bool {
        shard.replicas.len() == self.view.replication().count()
            && self.view.live_replicas(shard) == shard.replicas.len()
    }

    fn shard(&self, id: ShardId) -> &Shard {
        self.view
            .shard(id)
            .unwrap_or_else(|| panic!("shard {id} is not in the view"))
    }

    /// Adds an action to the plan and applies it to the working view. Every
    /// pass checks its action's preconditions, so a refusal here is a bug.
    fn emit(&mut self, action: Action) {
        assert!(self.budget_left(), "plan over budget: {action:?}");
        let id = action.shard();
        assert!(
            self.touched.insert(id),
            "second action on shard {id}: {action:?}"
        );
        let before = self.shard(id).clone();
        apply(&mut self.view, &action)
            .unwrap_or_else(|e| panic!("planned {action:?} is refused: {e}"));
        self.loads.forget(&before);
        let after = self.shard(id).clone();
        self.loads.record(&after);
        self.actions.push(action);
    }
}
