//! Leases under faults. A lease agent grants a lease (then attaches a key),
//! keeps it alive through whichever node leads for a while, then abandons
//! it; each node's group runs the real lease duties: keep-alives answered
//! at a confirmed point of leadership, expiry proposed by the leader.
//!
//! Checked:
//! - **no early expiry**: a lease is never revoked by expiry before its
//!   TTL (shortened by the clock-drift bound) has passed, in real time,
//!   since the agent sent the last keep-alive the leader acknowledged;
//! - **expiry happens**: after healing, every abandoned lease is gone
//!   (within the liveness bound);
//! - every replica deletes the attached key at the same revision: the
//!   apply-sequence and convergence checks cover it, since expiry is a
//!   command in the log.

use super::{Event, World};
use crate::checker::Violation;
use crate::config::{Micros, MS};
use crate::node::Waiting;
use rand::Rng;
use std::collections::BTreeMap;
use synod_group::{Answer, Request};
use synod_paxos::{NodeId, RoleKind};
use synod_proto::etcdserverpb::LeaseGrantRequest;
use synod_proto::synodpb::command::Op;
use synod_proto::synodpb::outcome;
use synod_storage::GroupId;

/// Seconds each lease is granted for.
pub(super) const LEASE_TTL_S: i64 = 1;
/// How often the agent acts (grants, keeps alive).
const AGENT_EVERY: Micros = 150 * MS;

/// The lease agent's view.
#[derive(Default)]
pub(super) struct LeaseAgent {
    /// The lease being kept alive and keep-alives left to send.
    current: Option<(i64, u32)>,
    next_id: i64,
    /// Per lease: when the agent sent the latest keep-alive that a leader
    /// acknowledged.
    acked: BTreeMap<i64, Micros>,
    /// Leases granted, abandoned and expired, for the report.
    pub(super) granted: u64,
    pub(super) expired: u64,
}

impl World {
    /// The agent's periodic step: grant a new lease, or keep the current
    /// one alive through a node it believes leads, or abandon it.
    pub(super) fn on_lease_agent(&mut self) {
        if self.healed_at.is_some() {
            // After healing nothing is kept alive: every lease must expire.
            self.lease_agent.current = None;
            return;
        }
        self.schedule(AGENT_EVERY, Event::LeaseAgent);
        let Some(to) = self.believed_leader() else {
            return;
        };
        match self.lease_agent.current {
            None => {
                self.lease_agent.next_id += 1;
                let id = self.lease_agent.next_id;
                let keepalives = self.rng.gen_range(2..20);
                self.lease_agent.current = Some((id, keepalives));
                let grant = Op::LeaseGrant(LeaseGrantRequest {
                    id,
                    ttl: LEASE_TTL_S,
                });
                // Lost if the node crashes; then the lease never exists
                // and its keep-alives are refused: harmless.
                self.agent_request(to, Waiting::Grant(id), Request::Write(grant));
            }
            Some((id, 0)) => {
                self.note(|| format!("lease agent abandons lease {id}"));
                self.lease_agent.current = None;
                // A put that names the lease once it may have expired:
                // refused, or attached and deleted with the lease, never
                // left behind (sharded: the oracle's check, design 0017).
                let late = self.rng.gen_range(500 * MS..2500 * MS);
                self.schedule(late, Event::LateAttach(id));
            }
            Some((id, left)) => {
                self.lease_agent.current = Some((id, left - 1));
                let sent_at = self.now;
                let delay = self.rng.gen_range(50..1000);
                self.schedule(delay, Event::LeaseKeepAlive { to, id, sent_at });
            }
        }
    }

    /// Sends an agent's request to node `to` (answers come back tagged
    /// `waiting`).
    pub(super) fn agent_request(&mut self, to: NodeId, waiting: Waiting, request: Request) {
        let i = self.node_index(to);
        let now = self.nodes[i].local_time(self.now);
        let node = &mut self.nodes[i];
        let ticket = node.ticket(waiting);
        node.group().request(ticket, request, now);
    }

    /// A grant answered: attach the lease's key.
    pub(super) fn on_grant_answer(&mut self, id: i64, answer: Option<Answer>) {
        let Some(Answer::Write(o)) = answer else {
            return;
        };
        if !matches!(o.result, Some(outcome::Result::LeaseGrant(_))) {
            return;
        }
        self.lease_agent.granted += 1;
        self.attach(id);
    }

    /// Puts the lease's key, attached to it, through the node that
    /// believes it leads.
    pub(super) fn attach(&mut self, id: i64) {
        let Some(to) = self.believed_leader() else {
            return;
        };
        let attach = Request::Write(Op::Put(crate::kv::lease_put(id)));
        // Sharded, the key goes to its shard (the lease stays in the meta
        // group, which checks it when the shard's leader stamps the put).
        let i = self.node_index(to);
        let shard = self.nodes[i]
            .shard_map()
            .map(|m| GroupId(m.group_of(&crate::kv::lease_key(id))));
        match shard {
            None => self.agent_request(to, Waiting::Attach(id), attach),
            Some(g) if self.nodes[i].is_blank(g) => {}
            Some(g) => {
                let now = self.nodes[i].local_time(self.now);
                let node = &mut self.nodes[i];
                let ticket = node.ticket(Waiting::Attach(id));
                if let Some(group) = node.group_of(g) {
                    group.request(ticket, attach, now);
                }
            }
        }
    }

    /// A running node that believes it leads (the agent's client library
    /// finds the leader as etcd clients do: by asking).
    fn believed_leader(&self) -> Option<NodeId> {
        self.nodes
            .iter()
            .filter(|n| n.is_up() && n.paused_until <= self.now)
            .find(|n| {
                n.replica()
                    .is_some_and(|r| r.role_kind() == RoleKind::Leader)
            })
            .map(|n| n.id)
    }

    /// A keep-alive reaches a node: its group answers it at a confirmed
    /// point of leadership (or asks the leader).
    pub(super) fn on_lease_keepalive(&mut self, to: NodeId, id: i64, sent_at: Micros) {
        let renew = Request::Lease { id, renew: true };
        self.agent_request(to, Waiting::KeepAlive(id, sent_at), renew);
    }

    pub(super) fn on_lease_ack(&mut self, id: i64, sent_at: Micros) {
        let acked = self.lease_agent.acked.entry(id).or_insert(0);
        *acked = (*acked).max(sent_at);
    }

    /// An expiry applied on node `at` removed lease `id`: check it did not
    /// come early.
    pub(super) fn check_not_early(&mut self, at: NodeId, id: i64) -> Result<(), Violation> {
        let Some(&sent) = self.lease_agent.acked.get(&id) else {
            return Ok(());
        };
        // Clocks run up to drift_max fast or slow: a TTL measured on one can
        // be that much shorter in real time.
        let drift = self.cfg.paxos.clock_drift_max_ppm as i128;
        let ttl_us = LEASE_TTL_S as i128 * 1_000_000;
        let earliest = sent as i128 + ttl_us * (1_000_000 - drift) / 1_000_000;
        if (self.now as i128) < earliest {
            return Err(Violation {
                invariant: "a lease kept alive does not expire early",
                detail: format!(
                    "{at} applied the expiry of lease {id} at {}us, but a keep-alive sent at \
                     {sent}us was acknowledged (TTL {LEASE_TTL_S}s: not before {earliest}us)",
                    self.now
                ),
            });
        }
        if self.lease_agent.acked.remove(&id).is_some() {
            self.lease_agent.expired += 1;
        }
        Ok(())
    }

    /// What keeps leases from settling, for the liveness report: leases,
    /// revocations under way, and shard keys still attached to a lease.
    pub(super) fn leases_left(&self) -> String {
        let mut left = String::new();
        for n in self.nodes.iter().filter(|n| n.is_up() && !n.retired) {
            if let Some(g) = &n.group {
                let (leases, revoking) = (g.kv().leases().len(), g.kv().revoking().len());
                if leases + revoking > 0 {
                    left += &format!("{}: {leases} leases, {revoking} revoking; ", n.id);
                }
            }
            for (gid, s) in &n.shards {
                for (lease, l) in s.kv().leases().iter() {
                    left += &format!("{} {gid}: keys {:?} of lease {lease} left; ", n.id, l.keys);
                }
            }
        }
        left
    }

    /// After healing: the agent holds nothing and no member of the current
    /// configuration still has a lease (every abandoned lease expired),
    /// a revocation under way, or a shard key attached to a lease (a
    /// shard's members: those of its own configuration).
    pub(super) fn leases_settled(&self) -> bool {
        if self.lease_agent.current.is_some() {
            return false;
        }
        let config = self
            .nodes
            .iter()
            .filter(|n| n.is_up())
            .max_by_key(|n| (n.applied(), std::cmp::Reverse(n.id)))
            .and_then(|n| n.replica().and_then(|r| r.membership().cloned()));
        self.nodes
            .iter()
            .filter(|n| !n.retired)
            .filter_map(|n| n.group.as_ref().map(|g| (n.id, g)))
            .filter(|(id, _)| config.as_ref().is_none_or(|c| c.is_member(*id)))
            .all(|(_, g)| g.kv().leases().is_empty() && g.kv().revoking().is_empty())
            && self
                .nodes
                .iter()
                .filter(|n| n.is_up() && !n.retired)
                .flat_map(|n| n.shards.iter().map(move |(gid, s)| (n.id, *gid, s)))
                .filter(|(id, gid, _)| self.group_config(*gid).is_none_or(|c| c.is_member(*id)))
                .all(|(_, _, s)| s.kv().leases().is_empty())
    }
}
