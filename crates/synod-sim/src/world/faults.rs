//! The nemesis and the end-of-run checks: partitions (symmetric and one-way),
//! message loss, duplication and delay, crashes that lose unsynced writes,
//! long pauses; then healing, the liveness bound, convergence and the
//! linearizability check.

use super::{Event, World, CONVERGE_MAX};
use crate::checker::{LeaseChecker, Violation};
use crate::config::MS;
use crate::linearizability::{check, CheckOutcome};
use rand::seq::SliceRandom;
use rand::Rng;
use synod_paxos::NodeId;

/// Configurations the linearizability search may explore per key.
const LIN_STATES_MAX: u64 = 2_000_000;

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
        self.nodes[i].crash();
        self.report.crashes += 1;
        let down_for = self.rng.gen_range(50..2000) * MS;
        self.schedule(down_for, Event::Restart(id));
    }

    pub(super) fn restart(&mut self, id: NodeId) {
        let i = self.node_index(id);
        if self.nodes[i].is_up() {
            return;
        }
        self.note(|| format!("restart {id}"));
        self.nodes[i].restart(&self.cfg, self.now);
        let snapshot = self.nodes[i].disk.snapshot;
        self.applied.on_restart(id, snapshot);
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

    pub(super) fn check_leases(&self) -> Result<(), Violation> {
        let mut holders = Vec::new();
        for node in &self.nodes {
            let Some(replica) = node.replica.as_ref() else {
                continue;
            };
            if replica
                .lease_until()
                .is_some_and(|until| node.local_time(self.now) < until)
            {
                holders.push(node.id);
            }
        }
        LeaseChecker::check(self.now, &holders)
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
        let status: Vec<String> = self
            .nodes
            .iter()
            .filter_map(|n| n.replica.as_ref().map(|r| r.status().to_string()))
            .collect();
        Violation {
            invariant: "liveness after healing",
            detail: format!(
                "{}ms after healing, still outstanding: {stuck:?}; replicas: {status:?}",
                self.cfg.liveness_bound / MS
            ),
        }
    }

    /// Replicas have applied the same slots and hold the same state.
    fn converged(&self) -> Result<(), Violation> {
        let first = &self.nodes[0];
        for node in &self.nodes[1..] {
            if node.applied != first.applied || node.kv != first.kv {
                let what = if node.applied == first.applied {
                    "states differ"
                } else {
                    "slots differ"
                };
                return Err(Violation {
                    invariant: "replicas converge after healing",
                    detail: format!(
                        "{}ms after clients finished: {} applied {} and {} applied {} ({what})",
                        CONVERGE_MAX / MS,
                        first.id,
                        first.applied,
                        node.id,
                        node.applied
                    ),
                });
            }
        }
        Ok(())
    }

    /// Once replicas converged: the client history must be linearizable.
    pub(super) fn final_checks(&mut self) -> Result<super::Report, Violation> {
        match check(&self.history, LIN_STATES_MAX) {
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
        Ok(self.report.clone())
    }

    /// `Finish` re-arms until clients are idle, then polls until replicas
    /// converge, which must happen within `CONVERGE_MAX`.
    pub(super) fn on_finish_probe(&mut self) -> Result<(), Violation> {
        match self.idle_since {
            None if self.clients_idle() => self.idle_since = Some(self.now),
            None => {}
            Some(since) => match self.converged() {
                Ok(()) => self.finished = true,
                Err(v) if self.now >= since + CONVERGE_MAX => return Err(v),
                Err(_) => {}
            },
        }
        self.schedule(10 * MS, Event::Finish);
        Ok(())
    }
}
