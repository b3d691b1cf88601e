//! ZooKeeper writes under faults (design 0012). An agent sends a
//! sequential create (`/n-`) to a random running node every few
//! milliseconds, without waiting for earlier answers, as ZooKeeper
//! clients queueing lock or queue entries do. The tree's rules run in the
//! state machine every replica applies, so this drives the real code.
//!
//! Checked once replicas converged (they must hold equal trees, which
//! the convergence check compares with the rest of the store):
//! - **unique names**: no two acknowledged creates got the same name;
//! - **no lost acknowledged create**: every acknowledged node is in the
//!   converged tree, holding the data its create wrote;
//! - the tree's invariants Z1–Z3 hold on every replica after every round
//!   (`Group::check_invariants`, run by the runtime loop).

use super::{Event, World};
use crate::checker::Violation;
use crate::config::{Micros, MS};
use crate::node::Waiting;
use bytes::Bytes;
use std::collections::BTreeMap;
use synod_group::{Answer, Request};
use synod_kv::zk::mode;
use synod_proto::synodpb::command::Op;
use synod_proto::synodpb::outcome::Result as OutcomeResult;
use synod_proto::synodpb::zk_op::Op as ZkOpKind;
use synod_proto::synodpb::{ZkCreate, ZkOp, ZkWrite};

/// How often the agent creates.
const AGENT_EVERY: Micros = 20 * MS;

/// What the agent sent and what was acknowledged.
#[derive(Default)]
pub(super) struct ZkAgent {
    sent: u64,
    /// Acknowledged name → the create's number (its data).
    acked: BTreeMap<String, u64>,
}

impl ZkAgent {
    /// Creates acknowledged so far, for the report.
    pub(super) fn acknowledged(&self) -> u64 {
        self.acked.len() as u64
    }
}

impl World {
    /// The agent's periodic create, through a random running node.
    pub(super) fn on_zk_agent(&mut self) {
        if self.healed_at.is_some() {
            return;
        }
        self.schedule(AGENT_EVERY, Event::ZkAgent);
        let Some(i) = self.random_running_node() else {
            return;
        };
        self.zk_agent.sent += 1;
        let n = self.zk_agent.sent;
        let write = ZkWrite {
            time_ms: (self.now / MS) as i64,
            ops: vec![ZkOp {
                op: Some(ZkOpKind::Create(ZkCreate {
                    path: "/n-".into(),
                    data: Bytes::from(n.to_be_bytes().to_vec()),
                    acl: synod_kv::zk::acl::open(),
                    mode: mode::PERSISTENT_SEQUENTIAL,
                    ttl_ms: 0,
                })),
            }],
            ..ZkWrite::default()
        };
        let now = self.nodes[i].local_time(self.now);
        let node = &mut self.nodes[i];
        let ticket = node.ticket(Waiting::ZkCreate(n));
        node.group()
            .request(ticket, Request::Write(Op::Zk(write)), now);
    }

    /// A node answered a create: a name it acknowledged must be new.
    pub(super) fn on_zk_answer(&mut self, n: u64, answer: Option<Answer>) -> Result<(), Violation> {
        let Some(Answer::Write(outcome)) = answer else {
            return Ok(());
        };
        let Some(OutcomeResult::Zk(z)) = outcome.result else {
            return Ok(());
        };
        let Some(result) = z.results.first().filter(|r| r.err == 0) else {
            return Ok(());
        };
        if let Some(other) = self.zk_agent.acked.insert(result.path.clone(), n) {
            if other != n {
                return Err(Violation {
                    invariant: "ZooKeeper sequential names are unique",
                    detail: format!("creates {other} and {n} both got {}", result.path),
                });
            }
        }
        Ok(())
    }

    /// After convergence: every acknowledged create is in the tree the
    /// members converged to (the furthest node's; removed members stop
    /// where they left and are not checked).
    pub(super) fn zk_final_check(&self) -> Result<(), Violation> {
        let Some(node) = self
            .nodes
            .iter()
            .filter(|n| n.is_up() && n.group.is_some())
            .max_by_key(|n| (n.applied(), std::cmp::Reverse(n.id)))
        else {
            return Ok(());
        };
        let tree = node.group.as_ref().expect("filtered").kv().zk();
        for (path, n) in &self.zk_agent.acked {
            if tree
                .get(path)
                .is_none_or(|z| z.data.as_ref() != n.to_be_bytes())
            {
                return Err(Violation {
                    invariant: "no acknowledged ZooKeeper create is lost",
                    detail: format!("{}: {path} (create {n}) missing or changed", node.id),
                });
            }
        }
        Ok(())
    }
}
