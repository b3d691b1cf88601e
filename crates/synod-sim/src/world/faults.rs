//! The nemesis and the end-of-run checks: partitions (symmetric and one-way),
//! message loss, duplication and delay, crashes that lose unsynced writes,
//! long pauses; then healing, the liveness bound, convergence and the
//! linearizability check.

use super::{Event, World, CONVERGE_MAX, FOLLOW_SETTLE_MAX};
use crate::checker::{LeaseChecker, Violation};
use crate::config::MS;
use crate::linearizability::{check, CheckOutcome};
use crate::node::GROUP;
use rand::seq::SliceRandom;
use rand::Rng;
use synod_paxos::{Membership, NodeId, RoleKind, Slot};
use synod_storage::GroupId;

/// Configurations the linearizability search may explore per key, unless
/// `SYNOD_SIM_LIN_STATES` says otherwise (to decide a seed the default
/// budget left undecided: `SYNOD_SIM_LIN_STATES=50000000 synod-sim
/// --replay SEED`; each configuration costs a few dozen bytes).
const LIN_STATES_MAX: u64 = 2_000_000;

fn lin_states_max() -> u64 {
    std::env::var("SYNOD_SIM_LIN_STATES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(LIN_STATES_MAX)
}

impl World {
    pub(super) fn nemesis(&mut self) {
        if self.healed_at.is_some() {
            return;
        }
        let all = self.cfg.nodes.clone();
        match self.rng.gen_range(0..100) {
            0..=14 => {
                let k = self.rng.gen_range(1..=all.len() / 2);
                let side: Vec<NodeId> = all.choose_multiple(&mut self.rng, k).copied().collect();
                self.note(|| format!("nemesis: partition {side:?} from the rest"));
                self.network.partition(&side, &all);
            }
            15..=29 => {
                let from = *all.choose(&mut self.rng).expect("nodes");
                let to = *all.choose(&mut self.rng).expect("nodes");
                if from != to {
                    self.note(|| format!("nemesis: cut {from} -> {to}"));
                    self.network.cut.insert((from, to));
                }
            }
            30..=44 => {
                self.note(|| "nemesis: heal network".to_string());
                self.network.heal();
            }
            45..=59 => self.crash_one(),
            60..=69 => {
                let i = self.rng.gen_range(0..self.nodes.len());
                let pause = self.rng.gen_range(50..1500) * MS;
                let id = self.nodes[i].id;
                self.note(|| format!("nemesis: pause {id} for {}ms", pause / MS));
                self.nodes[i].paused_until = self.nodes[i].paused_until.max(self.now + pause);
            }
            _ => {
                self.network.loss = [0.0, 0.05, 0.2][self.rng.gen_range(0..3)];
                self.network.duplicate = [0.0, 0.05, 0.2][self.rng.gen_range(0..3)];
                self.network.slow = [0.0, 0.02, 0.1][self.rng.gen_range(0..3)];
                let n = &self.network;
                let line = format!(
                    "nemesis: loss={} dup={} slow={}",
                    n.loss, n.duplicate, n.slow
                );
                self.note(|| line);
            }
        }
        let next = self.rng.gen_range(50..400) * MS;
        self.schedule(next, Event::Nemesis);
    }

    /// The replica that leads with the highest ballot, if any is up.
    fn leader_index(&self) -> Option<usize> {
        (0..self.nodes.len())
            .filter(|&i| self.nodes[i].paused_until <= self.now)
            .filter_map(|i| {
                let r = self.nodes[i].replica()?;
                (r.role_kind() == RoleKind::Leader).then(|| (r.status().promised, i))
            })
            .max()
            .map(|(_, i)| i)
    }

    /// The membership nemesis: asks the leader to add, remove, replace,
    /// promote or demote a replica, or to hand leadership over; retires
    /// (stops for good) replicas a finished change removed.
    pub(super) fn membership_nemesis(&mut self) {
        if self.healed_at.is_some() {
            return;
        }
        let next = self.rng.gen_range(100..600) * MS;
        self.schedule(next, Event::MembershipNemesis);
        let Some(li) = self.leader_index() else {
            return;
        };
        let replica = self.nodes[li].replica().expect("up");
        let Some(current) = replica.membership().cloned() else {
            return;
        };
        let changing = replica.status().membership_changing;
        let leader = self.nodes[li].id;
        if !changing && self.rng.gen_bool(0.3) {
            self.retire_removed(&current);
        }
        if self.rng.gen_bool(0.25) {
            let voters = current.voters();
            let to = *voters.choose(&mut self.rng).expect("voters");
            let result = self.nodes[li].group().transfer_leadership(to);
            self.note(|| format!("nemesis: {leader} transfer leadership to {to}: {result:?}"));
            if result.is_ok() {
                self.report.transfers += 1;
            }
            return;
        }
        if changing {
            return;
        }
        let m = current.target().clone();
        // As the node does: one change at a time across the cluster, once
        // every shard (as this node's replicas hold them) followed the
        // last (design 0019).
        let shards = self.nodes[li].shards.values();
        if !synod_group::shards_settled(leader, &m, shards) {
            return;
        }
        let n = self.cfg.options.voters;
        let outside: Vec<NodeId> = self
            .nodes
            .iter()
            .filter(|node| !node.retired && !m.is_member(node.id))
            .map(|node| node.id)
            .collect();
        let (mut voters, mut observers) = (m.voters.clone(), m.observers.clone());
        let voters_min = n.saturating_sub(1).max(1);
        match self.rng.gen_range(0..7) {
            0 if voters.len() <= n && !outside.is_empty() => {
                voters.push(*outside.choose(&mut self.rng).expect("outside"));
            }
            1 if voters.len() > voters_min => {
                let v = *voters.choose(&mut self.rng).expect("voters");
                voters.retain(|x| *x != v);
            }
            2 if !outside.is_empty() => {
                let v = *voters.choose(&mut self.rng).expect("voters");
                voters.retain(|x| *x != v);
                voters.push(*outside.choose(&mut self.rng).expect("outside"));
            }
            3 if !outside.is_empty() => {
                observers.push(*outside.choose(&mut self.rng).expect("outside"));
            }
            4 if !observers.is_empty() && voters.len() <= n => {
                let o = *observers.choose(&mut self.rng).expect("observers");
                observers.retain(|x| *x != o);
                voters.push(o);
            }
            5 if voters.len() > voters_min => {
                let v = *voters.choose(&mut self.rng).expect("voters");
                voters.retain(|x| *x != v);
                observers.push(v);
            }
            6 if !observers.is_empty() => {
                let o = *observers.choose(&mut self.rng).expect("observers");
                observers.retain(|x| *x != o);
            }
            _ => return,
        }
        let mut new = Membership::new(&voters, &observers);
        if self.rng.gen_bool(0.25) {
            let k = new.voters.len();
            new.phase1_quorum = self.rng.gen_range(1..=k);
            new.phase2_quorum = k - new.phase1_quorum + 1;
        }
        for id in new.voters.iter().chain(new.observers.iter()) {
            if !self.ever_member.contains(id) {
                self.ever_member.push(*id);
            }
        }
        let result = self.nodes[li].group().change_membership(new.clone());
        self.note(|| format!("nemesis: {leader} propose membership {new}: {result:?}"));
        if result.is_ok() {
            self.report.membership_changes += 1;
        }
    }

    /// Stops for good, now and then, a replica that a finished change
    /// removed (as an operator shuts a removed member down).
    fn retire_removed(&mut self, current: &synod_paxos::Configuration) {
        // Only once the removal is settled everywhere: every running replica
        // committed a configuration without it and knows of no pending
        // entry (else a takeover could still re-propose one that adds it).
        // In a sharded run, every shard's too (they follow the meta
        // group's changes).
        let settled = |id: NodeId| {
            self.nodes.iter().all(|n| {
                n.group_ids().into_iter().all(|g| {
                    n.group_ref(g).is_none_or(|g| {
                        let st = g.replica().status();
                        !st.membership_changing
                            && st.membership.as_ref().is_some_and(|c| !c.is_member(id))
                    })
                })
            })
        };
        let removed: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| {
                let id = self.nodes[i].id;
                !self.nodes[i].retired
                    && self.ever_member.contains(&id)
                    && !current.is_member(id)
                    && settled(id)
            })
            .collect();
        let Some(&i) = removed.choose(&mut self.rng) else {
            return;
        };
        let id = self.nodes[i].id;
        self.note(|| format!("nemesis: retire removed {id}"));
        if self.nodes[i].is_up() {
            self.crash_node(i);
        }
        self.nodes[i].retired = true;
    }

    /// Crashes node `i`: what was not durable is lost, and every request
    /// waiting there gets no answer (a write's outcome becomes unknown).
    pub(super) fn crash_node(&mut self, i: usize) {
        for waiting in self.nodes[i].crash() {
            let _ = self.on_answer(waiting, None);
        }
    }

    /// Crashes node `id` if it runs, and restarts it a little later.
    pub(super) fn crash_at(&mut self, id: NodeId) {
        let i = self.node_index(id);
        if !self.nodes[i].is_up() || self.healed_at.is_some() {
            return;
        }
        self.note(|| format!("nemesis: crash {id} in the snapshot window"));
        self.crash_for(i, 50..500);
    }

    fn crash_one(&mut self) {
        let up: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| self.nodes[i].is_up())
            .collect();
        if up.len() <= 1 {
            return;
        }
        let i = *up.choose(&mut self.rng).expect("up nodes");
        let id = self.nodes[i].id;
        self.note(|| format!("nemesis: crash {id}"));
        self.crash_for(i, 50..2000);
    }

    /// Crashes node `i` and restarts it after a draw from `down_ms`.
    fn crash_for(&mut self, i: usize, down_ms: std::ops::Range<u64>) {
        self.crash_node(i);
        self.report.crashes += 1;
        let down_for = self.rng.gen_range(down_ms) * MS;
        self.schedule(down_for, Event::Restart(self.nodes[i].id));
    }

    pub(super) fn restart(&mut self, id: NodeId) {
        let i = self.node_index(id);
        if self.nodes[i].is_up() || self.nodes[i].retired {
            return;
        }
        self.note(|| format!("restart {id}"));
        self.nodes[i].restart(&self.cfg, self.now);
        if let Some(m) = self.cfg.options.mutation {
            self.nodes[i].group().replica_mut().set_mutation(Some(m));
        }
        for gid in self.nodes[i].group_ids() {
            let applied = self.nodes[i]
                .group_ref(gid)
                .map_or(Slot(0), |g| g.applied());
            self.applied.entry(gid).or_default().on_restart(id, applied);
        }
        let incarnation = self.nodes[i].incarnation;
        self.schedule(self.cfg.tick_every, Event::Tick(id, incarnation));
    }

    /// Ends the fault phase: perfect network, every node running. From here
    /// every outstanding operation must finish within the liveness bound.
    pub(super) fn heal(&mut self) {
        self.note(|| "heal: network healed, all nodes restarted".to_string());
        self.network.heal();
        for id in self.cfg.nodes.clone() {
            self.restart(id);
        }
        self.healed_at = Some(self.now);
        self.schedule(10 * MS, Event::Finish);
    }

    /// `Finish` fires once every client is idle; until then it re-arms.
    pub(super) fn clients_idle(&self) -> bool {
        self.clients.iter().all(|c| c.outstanding.is_none())
    }

    /// At most one replica of each group holds its leader lease.
    pub(super) fn check_leases(&self) -> Result<(), Violation> {
        for gid in self.group_ids() {
            let mut holders = Vec::new();
            for node in &self.nodes {
                let Some(replica) = node.group_ref(gid).map(|g| g.replica()) else {
                    continue;
                };
                if replica
                    .lease_until()
                    .is_some_and(|until| node.local_time(self.now) < until)
                {
                    holders.push(node.id);
                }
            }
            LeaseChecker::check(self.now, &holders)?;
        }
        Ok(())
    }

    /// Every group of the run: the meta group, then the shards.
    fn group_ids(&self) -> Vec<GroupId> {
        let shards = self.cfg.shard_map.iter().flat_map(|m| m.groups());
        let mut ids: Vec<GroupId> = std::iter::once(GROUP).chain(shards.map(GroupId)).collect();
        ids.extend(self.split_groups.iter().copied());
        ids
    }

    pub(super) fn liveness_violation(&self) -> Violation {
        let stuck: Vec<String> = self
            .clients
            .iter()
            .filter_map(|c| {
                c.outstanding
                    .as_ref()
                    .map(|o| format!("client {} #{} {:?}", c.id, o.seq, o.input))
            })
            .collect();
        let mut status: Vec<String> = self
            .nodes
            .iter()
            .filter_map(|n| n.replica().map(|r| r.status().to_string()))
            .collect();
        for gid in self.group_ids().into_iter().filter(|g| *g != GROUP) {
            let config = self.group_config(gid).map(|c| c.to_string());
            status.push(format!("{gid} at {config:?}:"));
            status.extend(
                self.nodes
                    .iter()
                    .filter_map(|n| n.group_ref(gid).map(|g| g.replica().status().to_string())),
            );
        }
        Violation {
            invariant: "liveness after healing",
            detail: format!(
                "{}ms after healing, still outstanding: {stuck:?}; {}replicas: {status:?}",
                self.cfg.liveness_bound / MS,
                self.leases_left()
            ),
        }
    }

    /// In every group, the members of the final configuration have
    /// applied the same slots and hold the same state (spares never added
    /// and removed replicas may lag: nobody sends them anything).
    fn converged(&self) -> Result<(), Violation> {
        for gid in self.group_ids() {
            self.group_converged(gid)?;
        }
        self.shards_followed()
    }

    /// The running replica of `gid` that applied the most (lowest id on a
    /// tie).
    fn furthest(&self, gid: GroupId) -> Option<&crate::node::SimNode> {
        let applied = |n: &crate::node::SimNode| n.group_ref(gid).map_or(Slot(0), |g| g.applied());
        self.nodes
            .iter()
            .filter(|n| n.is_up())
            .max_by_key(|n| (applied(n), std::cmp::Reverse(n.id)))
    }

    /// Group `gid`'s configuration as its furthest replica knows it.
    pub(super) fn group_config(&self, gid: GroupId) -> Option<synod_paxos::Configuration> {
        self.furthest(gid)?
            .group_ref(gid)
            .and_then(|g| g.replica().membership().cloned())
    }

    /// After healing, every shard settled on the meta group's
    /// configuration (design 0019): the followers' work is done.
    fn shards_followed(&self) -> Result<(), Violation> {
        let Some(meta) = self.group_config(GROUP) else {
            return Ok(());
        };
        for gid in self.group_ids().into_iter().filter(|g| *g != GROUP) {
            let shard = self.group_config(gid);
            if shard
                .as_ref()
                .is_some_and(|c| c.is_joint() || c.target() != meta.target())
            {
                let replicas: Vec<String> = self
                    .nodes
                    .iter()
                    .filter_map(|n| n.group_ref(gid).map(|g| g.replica().status().to_string()))
                    .collect();
                return Err(Violation {
                    invariant: "shards follow the meta group's configuration",
                    detail: format!(
                        "{}ms after clients finished: {gid} is at {}, the meta group at {meta}; {gid}'s replicas: {replicas:?}",
                        self.converge_max() / MS,
                        shard.map_or("?".to_string(), |c| c.to_string()),
                    ),
                });
            }
        }
        Ok(())
    }

    fn group_converged(&self, gid: GroupId) -> Result<(), Violation> {
        let applied = |n: &crate::node::SimNode| n.group_ref(gid).map_or(Slot(0), |g| g.applied());
        let config = self.group_config(gid);
        let members: Vec<&crate::node::SimNode> = self
            .nodes
            .iter()
            .filter(|n| !n.retired && config.as_ref().is_none_or(|c| c.is_member(n.id)))
            .collect();
        let first = members[0];
        let same_state = |a: &crate::node::SimNode, b: &crate::node::SimNode| match (
            a.group_ref(gid),
            b.group_ref(gid),
        ) {
            (Some(x), Some(y)) => x.kv() == y.kv(),
            (x, y) => x.is_none() && y.is_none(),
        };
        for node in &members[1..] {
            if applied(node) != applied(first) || !same_state(node, first) {
                let what = if applied(node) == applied(first) {
                    "states differ"
                } else {
                    "slots differ"
                };
                return Err(Violation {
                    invariant: "replicas converge after healing",
                    detail: format!(
                        "{}ms after clients finished: in {gid}, {} applied {} and {} applied {} ({what}); members of {}",
                        self.converge_max() / MS,
                        first.id,
                        applied(first),
                        node.id,
                        applied(node),
                        config.as_ref().map_or("?".to_string(), |c| c.to_string())
                    ),
                });
            }
        }
        Ok(())
    }

    /// Once replicas converged: the client history must be linearizable.
    pub(super) fn final_checks(&mut self) -> Result<super::Report, Violation> {
        match check(&self.history, lin_states_max()) {
            Ok(CheckOutcome::Linearizable) => {}
            Ok(CheckOutcome::Unknown { .. }) => self.report.lin_undecided = true,
            Err(v) => {
                return Err(Violation {
                    invariant: "linearizable client history",
                    detail: v.to_string(),
                })
            }
        }
        self.report.ops_unknown = self.history.iter().filter(|o| o.output.is_none()).count() as u64;
        self.report.sim_time = self.now;
        self.report.leases_granted = self.lease_agent.granted;
        self.report.leases_expired = self.lease_agent.expired;
        self.report.timestamps = self.oracle_agent.handed_out();
        self.report.stamped_writes = self.revisions.checked();
        self.report.splits = self.split_groups.len() as u64;
        self.zk_final_check()?;
        self.report.zk_creates = self.zk_agent.acknowledged();
        (self.report.zk_sessions, self.report.zk_ephemerals) = self.zk_agent.sessions();
        self.auth_final_check()?;
        self.report.auth_flips = self.auth_agent.flips();
        self.report.auth_puts_ok = self.auth_agent.puts_ok;
        self.report.auth_denied = self.auth_agent.denied;
        self.report.auth_old_revision = self.auth_agent.old_revision;
        self.report.sessions_expired = self
            .nodes
            .iter()
            .filter_map(|n| n.group.as_ref())
            .map(|g| g.status().sessions_expired)
            .max()
            .unwrap_or(0);
        Ok(self.report.clone())
    }

    /// How long replicas have to converge once clients are idle.
    fn converge_max(&self) -> crate::config::Micros {
        if self.cfg.shard_map.is_some() && self.cfg.options.membership {
            FOLLOW_SETTLE_MAX
        } else {
            CONVERGE_MAX
        }
    }

    /// `Finish` re-arms until clients are idle, then polls until replicas
    /// converge, which must happen within `converge_max`.
    pub(super) fn on_finish_probe(&mut self) -> Result<(), Violation> {
        match self.idle_since {
            None if self.clients_idle() && self.leases_settled() => {
                self.idle_since = Some(self.now)
            }
            None => {}
            Some(since) => match self.converged() {
                Ok(()) => self.finished = true,
                Err(v) if self.now >= since + self.converge_max() => return Err(v),
                Err(_) => {}
            },
        }
        self.schedule(10 * MS, Event::Finish);
        Ok(())
    }
}
