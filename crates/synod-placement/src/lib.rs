//! Placement: which nodes hold each shard's replicas, and which replica
//! leads. The placement driver on the meta shard's leader reads a
//! [`ClusterView`] from the shard descriptors, asks [`RangePlacement`] for
//! the next [`Action`]s, and hands them to executors; this crate is the
//! pure part, so the simulator and the tests run the exact planner the
//! driver runs. `docs/design/0009-placement.md` says why synod places key
//! ranges freely instead of hashing, and measures both.
//!
//! ```text
//!   meta shard ──► ClusterView ──► RangePlacement::plan(view, moves_max)
//!        ▲                                  │ Vec<Action>: Add, Move,
//!        │                                  ▼ Remove, TransferLeader
//!        └──────── descriptors ◄──── executors (observer → catch up →
//!                                    promote → remove)
//! ```
//!
//! A node dies; the plan replaces its replicas on the least loaded nodes
//! and never touches a live replica of the shards that lost one:
//!
//! ```
//! use synod_placement::{apply, Action, ClusterView, Node, NodeId, RangePlacement, Replication, Shard, ShardId};
//!
//! let mut view = ClusterView::new(Replication::Three);
//! for id in 1..=4 {
//!     view.add_node(Node::new(NodeId(id))).unwrap();
//! }
//! let replicas = vec![NodeId(1), NodeId(2), NodeId(3)];
//! view.add_shard(Shard::new(ShardId(7), replicas, Some(NodeId(1)))).unwrap();
//! view.set_alive(NodeId(3), false).unwrap();
//!
//! let plan = RangePlacement.plan(&view, 16);
//! assert_eq!(plan, [Action::Move { shard: ShardId(7), add: NodeId(4), remove: NodeId(3) }]);
//! for action in &plan {
//!     apply(&mut view, action).unwrap();
//! }
//! assert!(RangePlacement.plan(&view, 16).is_empty(), "settled");
//! ```

mod action;
mod balance;
mod compare;
mod hashing;
mod load;
mod range;
mod types;
mod view;

pub use action::{apply, check, Action, ActionError};
pub use balance::{Balance, Churn};
pub use compare::{compare, Comparison, Report, Scenario, Settled, Step, Strategy};
pub use hashing::{shard_position, splitmix64, vnode_position, ConsistentHashing, Ring};
pub use range::RangePlacement;
pub use types::{Node, NodeId, Replication, Shard, ShardId};
pub use view::{ClusterView, ViewError};
