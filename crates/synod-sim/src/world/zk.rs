//! ZooKeeper writes under faults (design 0012). An agent sends a
//! sequential create (`/n-`) to a random running node every few
//! milliseconds, without waiting for earlier answers, as ZooKeeper
//! clients queueing lock or queue entries do. Beside it, a session agent
//! opens a session (a lease, as the front end does), keeps it alive for a
//! while through random nodes, creates ephemeral sequential nodes (`/e-`)
//! owned by it, then abandons it, so the leader expires it through the log
//! and its ephemerals go with it. The tree's rules run in the state
//! machine every replica applies, so this drives the real code.
//!
//! Checked:
//! - **unique names**: no two acknowledged creates got the same name;
//! - **no lost acknowledged create**: every acknowledged node is in the
//!   converged tree, holding the data its create wrote;
//! - **an ephemeral lives as long as its session**: on every replica that
//!   has applied an acknowledged ephemeral create and still holds its
//!   session, the node is there with its data and owner (checked at every
//!   session step);
//! - **abandoned sessions end**: after healing every lease expires
//!   (`leases_settled`), sessions with them; the converged tree holds no
//!   session without its lease and no ephemeral of a session it lacks;
//! - the tree's invariants Z1–Z3 hold on every replica after every round
//!   (`Group::check_invariants`, run by the runtime loop): an ephemeral
//!   never outlives its session.

use super::{Event, World};
use crate::checker::Violation;
use crate::config::{Micros, MS};
use crate::node::Waiting;
use bytes::Bytes;
use rand::Rng;
use std::collections::BTreeMap;
use synod_group::{Answer, Request};
use synod_kv::zk::mode;
use synod_proto::synodpb::command::Op;
use synod_proto::synodpb::outcome::Result as OutcomeResult;
use synod_proto::synodpb::zk_op::Op as ZkOpKind;
use synod_proto::synodpb::{ZkCreate, ZkOp, ZkOpenSession, ZkResult, ZkWrite};

/// How often the agent creates.
const AGENT_EVERY: Micros = 20 * MS;
/// The session agent acts every this many create ticks (160 ms).
const SESSION_EVERY_TICKS: u64 = 8;
/// A session's timeout: its lease's TTL, as the front end asks for.
const SESSION_TIMEOUT_MS: i32 = 1000;
/// Session ids start here, far from the lease agent's ids.
const SESSION_ID_BASE: i64 = 1 << 40;

/// What the agent sent and what was acknowledged.
#[derive(Default)]
pub(super) struct ZkAgent {
    sent: u64,
    /// Acknowledged name → the create's number (its data).
    acked: BTreeMap<String, u64>,
    /// The session being kept alive and the steps it has left.
    session: Option<(i64, u32)>,
    sessions_opened: i64,
    /// Acknowledged ephemeral → (its session, its data, its czxid).
    ephemerals: BTreeMap<String, (i64, u64, i64)>,
}

impl ZkAgent {
    /// Creates acknowledged so far, for the report.
    pub(super) fn acknowledged(&self) -> u64 {
        self.acked.len() as u64
    }

    /// Sessions opened and ephemerals acknowledged, for the report.
    pub(super) fn sessions(&self) -> (u64, u64) {
        (self.sessions_opened as u64, self.ephemerals.len() as u64)
    }
}

impl World {
    /// The agent's periodic create, through a random running node.
    pub(super) fn on_zk_agent(&mut self) -> Result<(), Violation> {
        if self.healed_at.is_some() {
            // After healing nothing is kept alive: every session must end.
            self.zk_agent.session = None;
            return Ok(());
        }
        self.schedule(AGENT_EVERY, Event::ZkAgent);
        if self.zk_agent.sent.is_multiple_of(SESSION_EVERY_TICKS) {
            self.on_zk_session_step()?;
        }
        let Some(i) = self.random_running_node() else {
            return Ok(());
        };
        self.zk_agent.sent += 1;
        let n = self.zk_agent.sent;
        let write = self.sequential_create("/n-", n, mode::PERSISTENT_SEQUENTIAL, 0);
        let to = self.nodes[i].id;
        self.agent_request(to, Waiting::ZkCreate(n), write);
        Ok(())
    }

    /// A sequential create under `/` named `prefix`, holding `n`, owned by
    /// `session` (0: none).
    fn sequential_create(&self, prefix: &str, n: u64, mode: i32, session: i64) -> Request {
        Request::Write(Op::Zk(ZkWrite {
            time_ms: (self.now / MS) as i64,
            session,
            ops: vec![ZkOp {
                op: Some(ZkOpKind::Create(ZkCreate {
                    path: prefix.into(),
                    data: Bytes::from(n.to_be_bytes().to_vec()),
                    acl: synod_kv::zk::acl::open(),
                    mode,
                    ttl_ms: 0,
                })),
            }],
            ..ZkWrite::default()
        }))
    }

    /// The session agent's step (every `SESSION_EVERY_TICKS` creates):
    /// open a session, or keep it alive and create an ephemeral, or
    /// abandon it; then check that every replica still holds the
    /// ephemerals of the sessions it holds.
    fn on_zk_session_step(&mut self) -> Result<(), Violation> {
        self.check_ephemerals_live()?;
        let Some(i) = self.random_running_node() else {
            return Ok(());
        };
        let to = self.nodes[i].id;
        match self.zk_agent.session {
            None => {
                self.zk_agent.sessions_opened += 1;
                let id = SESSION_ID_BASE + self.zk_agent.sessions_opened;
                let steps = self.rng.gen_range(2..15);
                self.zk_agent.session = Some((id, steps));
                let open = ZkWrite {
                    time_ms: (self.now / MS) as i64,
                    ops: vec![ZkOp {
                        op: Some(ZkOpKind::OpenSession(ZkOpenSession {
                            id,
                            timeout_ms: SESSION_TIMEOUT_MS,
                            password: Bytes::from_static(&[7; 16]),
                        })),
                    }],
                    ..ZkWrite::default()
                };
                // Lost if its node crashes: then the session never exists
                // and its ephemerals are refused, which is harmless.
                self.agent_request(to, Waiting::ZkSession, Request::Write(Op::Zk(open)));
            }
            Some((id, 0)) => {
                self.note(|| format!("ZooKeeper agent abandons session {id:#x}"));
                self.zk_agent.session = None;
            }
            Some((id, left)) => {
                self.zk_agent.session = Some((id, left - 1));
                let renew = Request::Lease { id, renew: true };
                self.agent_request(to, Waiting::ZkSession, renew);
                self.zk_agent.sent += 1;
                let n = self.zk_agent.sent;
                let create = self.sequential_create("/e-", n, mode::EPHEMERAL_SEQUENTIAL, id);
                let i = self.random_running_node().unwrap_or(i);
                let to = self.nodes[i].id;
                self.agent_request(to, Waiting::ZkEphemeral(n, id), create);
            }
        }
        Ok(())
    }

    /// An ephemeral create answered: remember what it acknowledged.
    pub(super) fn on_zk_ephemeral_answer(
        &mut self,
        n: u64,
        session: i64,
        answer: Option<Answer>,
    ) -> Result<(), Violation> {
        let Some(result) = acknowledged_create(answer) else {
            return Ok(());
        };
        let czxid = result.stat.as_ref().map_or(0, |s| s.czxid);
        let entry = (session, n, czxid);
        if let Some(other) = self.zk_agent.ephemerals.insert(result.path.clone(), entry) {
            if other != entry {
                return Err(Violation {
                    invariant: "ZooKeeper sequential names are unique",
                    detail: format!(
                        "ephemeral creates {} and {n} both got {}",
                        other.1, result.path
                    ),
                });
            }
        }
        Ok(())
    }

    /// On every running replica: each acknowledged ephemeral whose create
    /// it applied is there while the replica holds its session.
    fn check_ephemerals_live(&self) -> Result<(), Violation> {
        for node in self.nodes.iter().filter(|n| n.is_up()) {
            let Some(group) = node.group.as_ref() else {
                continue;
            };
            let kv = group.kv();
            let tree = kv.zk();
            for (path, (session, n, czxid)) in &self.zk_agent.ephemerals {
                if kv.revision() < *czxid || tree.session(*session).is_none() {
                    continue;
                }
                let held = tree.get(path).is_some_and(|z| {
                    z.data.as_ref() == n.to_be_bytes() && z.ephemeral_owner == *session
                });
                if !held {
                    return Err(Violation {
                        invariant: "an ephemeral lives as long as its session",
                        detail: format!(
                            "{}: {path} (create {n}, czxid {czxid}) missing or changed while \
                             session {session:#x} lives, at revision {}",
                            node.id,
                            kv.revision()
                        ),
                    });
                }
            }
        }
        Ok(())
    }

    /// A node answered a create: a name it acknowledged must be new.
    pub(super) fn on_zk_answer(&mut self, n: u64, answer: Option<Answer>) -> Result<(), Violation> {
        let Some(result) = acknowledged_create(answer) else {
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
        let kv = node.group.as_ref().expect("filtered").kv();
        let tree = kv.zk();
        // Sessions abandoned before healing expired (their leases did:
        // `leases_settled`); one opened by a request still in flight then
        // may live on, but only with its lease, which ends it.
        if let Some(s) = tree.sessions().find(|s| !kv.leases().contains(s.id)) {
            return Err(Violation {
                invariant: "abandoned ZooKeeper sessions end",
                detail: format!("{}: session {:#x} has no lease to end it", node.id, s.id),
            });
        }
        let outlived = self
            .zk_agent
            .ephemerals
            .iter()
            .find(|(p, (session, _, _))| tree.session(*session).is_none() && tree.get(p).is_some());
        if let Some((path, _)) = outlived {
            return Err(Violation {
                invariant: "abandoned ZooKeeper sessions end",
                detail: format!("{}: ephemeral {path} outlived its session", node.id),
            });
        }
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

/// The result of a create its node acknowledged as done, if it was.
fn acknowledged_create(answer: Option<Answer>) -> Option<ZkResult> {
    let Some(Answer::Write(outcome)) = answer else {
        return None;
    };
    let Some(OutcomeResult::Zk(z)) = outcome.result else {
        return None;
    };
    z.results.into_iter().next().filter(|r| r.err == 0)
}
