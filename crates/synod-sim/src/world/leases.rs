//! Leases under faults. A lease agent grants a lease (attaching a key),
//! keeps it alive through whichever node leads for a while, then abandons
//! it; each node runs the runtime's lessor, and the leader proposes the
//! expiry of leases that ran out, exactly as the node runtime does.
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
use crate::kv::{Command, Op};
use rand::Rng;
use std::collections::BTreeMap;
use synod_paxos::{NodeId, ReadId, RoleKind};

/// Seconds each lease is granted for.
pub(super) const LEASE_TTL_S: i64 = 1;
/// How often the agent acts (grants, keeps alive).
const AGENT_EVERY: Micros = 150 * MS;
/// Client ids of lease commands: the agent's grants, the leaders'
/// expiries; above every register client's id.
const AGENT_CLIENT: u64 = 1 << 40;
const EXPIRY_CLIENT: u64 = 1 << 41;

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
    /// Expiry commands proposed so far (their client ids).
    expiries: u64,
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
        let i = self.node_index(to);
        match self.lease_agent.current {
            None => {
                self.lease_agent.next_id += 1;
                let id = self.lease_agent.next_id;
                let keepalives = self.rng.gen_range(2..20);
                self.lease_agent.current = Some((id, keepalives));
                let command = Command {
                    client: AGENT_CLIENT + id as u64,
                    seq: 1,
                    op: Op::Grant {
                        id,
                        ttl: LEASE_TTL_S,
                    },
                };
                // Lost if the node stops leading; then the lease never
                // exists and its keep-alives are refused: harmless.
                if let Some(r) = self.nodes[i].replica.as_mut() {
                    if r.propose(command).is_ok() {
                        self.lease_agent.granted += 1;
                    }
                }
            }
            Some((id, 0)) => {
                self.note(|| format!("lease agent abandons lease {id}"));
                self.lease_agent.current = None;
            }
            Some((id, left)) => {
                self.lease_agent.current = Some((id, left - 1));
                let sent_at = self.now;
                let delay = self.rng.gen_range(50..1000);
                self.schedule(delay, Event::LeaseKeepAlive { to, id, sent_at });
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
                n.replica
                    .as_ref()
                    .is_some_and(|r| r.role_kind() == RoleKind::Leader)
            })
            .map(|n| n.id)
    }

    /// A keep-alive at a node: answered once the node confirmed it leads
    /// (a lease or read-index read), as the runtime does.
    pub(super) fn on_lease_keepalive(&mut self, to: NodeId, id: i64, sent_at: Micros) {
        let i = self.node_index(to);
        if self.cfg.options.unconfirmed_keepalives {
            let leading = self.nodes[i]
                .replica
                .as_ref()
                .is_some_and(|r| r.role_kind() == RoleKind::Leader);
            if leading {
                self.answer_keepalive(i, id, sent_at);
            }
            return;
        }
        let now = self.nodes[i].local_time(self.now);
        let node = &mut self.nodes[i];
        let rid = ReadId(node.next_read);
        node.next_read += 1;
        let replica = node.replica.as_mut().expect("up");
        if replica.read(rid, now).is_ok() {
            node.lease_reads.insert(rid, (id, sent_at));
        }
    }

    /// A confirmed keep-alive: renew on the leader's lessor, acknowledge.
    pub(super) fn answer_keepalive(&mut self, i: usize, id: i64, sent_at: Micros) {
        let local = self.nodes[i].local_ms(self.now);
        let node = &mut self.nodes[i];
        if node.lessor.renew(node.kv.store(), id, local).is_some() {
            let from = node.id;
            self.note(|| format!("{from} renewed lease {id} (sent {sent_at})"));
            let delay = self.rng.gen_range(50..1000);
            self.schedule(delay, Event::LeaseAck { id, sent_at });
        }
    }

    pub(super) fn on_lease_ack(&mut self, id: i64, sent_at: Micros) {
        let acked = self.lease_agent.acked.entry(id).or_insert(0);
        *acked = (*acked).max(sent_at);
    }

    /// The leader's lease duties on node `i`, run after each event: restart
    /// every lease on taking over, propose the expiry of those that ran
    /// out.
    pub(super) fn lease_duties(&mut self, i: usize) {
        let local = self.nodes[i].local_ms(self.now);
        let node = &mut self.nodes[i];
        let Some(replica) = node.replica.as_mut() else {
            return;
        };
        let ballot = replica.leading_ballot();
        if ballot.is_some() && ballot != node.led_ballot {
            node.lessor.promote(node.kv.store(), local);
        }
        node.led_ballot = ballot;
        if ballot.is_none() {
            return;
        }
        let due = node.lessor.due(local);
        if due.is_empty() {
            return;
        }
        // Confirm leadership first: a deposed leader that has not noticed
        // holds deadlines its successor's renewals never reached, and its
        // proposal could still be chosen later (a new leader re-proposes
        // what it finds accepted).
        let rid = ReadId(node.next_read);
        node.next_read += 1;
        let now = node.local_time(self.now);
        let replica = node.replica.as_mut().expect("up");
        if replica.read(rid, now).is_ok() {
            node.expiry_reads.insert(rid, due);
        }
    }

    /// Leadership confirmed: propose the expiry of `ids`.
    pub(super) fn propose_expiry(&mut self, i: usize, ids: Vec<i64>) {
        self.lease_agent.expiries += 1;
        let command = Command {
            client: EXPIRY_CLIENT + self.lease_agent.expiries,
            seq: 1,
            op: Op::Expire(ids),
        };
        if let Some(r) = self.nodes[i].replica.as_mut() {
            let _ = r.propose(command);
        }
    }

    /// Keeps node `i`'s lessor in step with an applied lease command, and
    /// checks that no expiry came early. `existed` lists the leases that
    /// existed before an expiry applied.
    pub(super) fn follow_leases(
        &mut self,
        i: usize,
        command: &Command,
        existed: &[i64],
    ) -> Result<(), Violation> {
        let local = self.nodes[i].local_ms(self.now);
        match &command.op {
            Op::Grant { id, ttl } => {
                if self.nodes[i].kv.store().leases().contains(*id) {
                    self.nodes[i].lessor.granted(*id, *ttl, local);
                }
            }
            Op::Expire(ids) => {
                for id in ids {
                    self.nodes[i].lessor.revoked(*id);
                }
                for id in existed {
                    self.check_not_early(self.nodes[i].id, *id)?;
                }
            }
            Op::Kv(_) => {}
        }
        Ok(())
    }

    fn check_not_early(&mut self, at: NodeId, id: i64) -> Result<(), Violation> {
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

    /// After healing: the agent holds nothing and no member of the current
    /// configuration still has a lease (every abandoned lease expired).
    pub(super) fn leases_settled(&self) -> bool {
        if self.lease_agent.current.is_some() {
            return false;
        }
        let config = self
            .nodes
            .iter()
            .filter(|n| n.is_up())
            .max_by_key(|n| (n.applied, std::cmp::Reverse(n.id)))
            .and_then(|n| n.replica.as_ref().and_then(|r| r.membership().cloned()));
        self.nodes
            .iter()
            .filter(|n| n.is_up() && !n.retired)
            .filter(|n| config.as_ref().is_none_or(|c| c.is_member(n.id)))
            .all(|n| n.kv.store().leases().is_empty())
    }
}
