//! Before phase 1, a prober asks every voter whether it would promise, and
//! campaigns only when a phase-1 quorum says yes; answering changes no state,
//! so a replica that was cut off cannot depose a live leader on its return.
//!
//! Phase 1: a candidate asks every voter to promise its ballot and report
//! what it accepted after the candidate's commit point. With a phase-1
//! quorum of promises it knows, for every open slot, the only value that may
//! have been chosen: the one accepted in the highest ballot (or one reported
//! chosen). It re-proposes those, and no-ops in the gaps.
//!
//! With membership changes, phase 1 is iterative: a candidate needs a
//! phase-1 quorum of the configuration in effect after its commit point and
//! of every configuration that the membership entries among the values it
//! will re-propose install (each one governs the slots after its entry).
//! It asks the voters of each new configuration as it discovers it.

use crate::leader::Leader;
use crate::limits::MESSAGE_SLOTS_MAX;
use crate::message::{Message, SlotRecord};
use crate::mutation::Mutation;
use crate::replica::{Replica, Role};
use crate::types::{Ballot, NodeId, Slot, Value};
use std::collections::{BTreeMap, VecDeque};
use std::fmt;

/// Probe progress: which voters would promise `ballot`.
pub(crate) struct Prober {
    pub(crate) ballot: Ballot,
    oks: Vec<NodeId>,
}

/// Phase-1 progress of one ballot.
pub(crate) struct Candidate<C> {
    pub(crate) ballot: Ballot,
    /// Replicas whose promise arrived.
    promises: Vec<NodeId>,
    /// Replicas asked to promise.
    asked: Vec<NodeId>,
    /// Per open slot, the best value reported so far.
    best: BTreeMap<Slot, SlotRecord<C>>,
}

impl<C: Clone + PartialEq + fmt::Debug> Candidate<C> {
    /// Keeps, per slot, a chosen value over any other, else the highest
    /// ballot. Returns false when `record` reports a value chosen that
    /// contradicts one already reported chosen (only a broken or hostile
    /// acceptor does that); the first one is kept.
    fn merge(&mut self, record: SlotRecord<C>) -> bool {
        match self.best.get(&record.slot) {
            Some(have) if have.chosen => !record.chosen || have.value == record.value,
            Some(have) if !record.chosen && have.ballot >= record.ballot => true,
            _ => {
                self.best.insert(record.slot, record);
                true
            }
        }
    }
}

/// The next round after every round in `rounds`, or `None` when it would
/// pass `ROUND_MAX`: peers refuse such ballots, so a replica that reached
/// the bound (a peer sent a round of exactly `ROUND_MAX`) stays a follower
/// and goes on accepting from leaders, rather than promising itself a
/// ballot nobody takes and then refusing every leader below it.
fn next_round(rounds: &[u64]) -> Option<u64> {
    let next = rounds.iter().copied().max().unwrap_or(0).checked_add(1)?;
    (next <= crate::limits::ROUND_MAX).then_some(next)
}

impl<C: Clone + PartialEq + fmt::Debug> Replica<C> {
    /// The election timer fired: ask the voters whether they would promise
    /// the next ballot, counting our own acceptor's answer directly.
    pub(crate) fn probe(&mut self) {
        let Some(round) = next_round(&[self.round_seen, self.promised.round]) else {
            self.reset_election_deadline();
            return;
        };
        if let Role::Leader(_) = self.role {
            self.become_follower();
        }
        let ballot = Ballot {
            round,
            node: self.config.id,
        };
        let commit = self.log.commit();
        let Some(cfg) = self.membership.clone() else {
            return;
        };
        self.role = Role::Prober(Prober {
            ballot,
            oks: Vec::new(),
        });
        self.reset_election_deadline();
        for voter in cfg.voters() {
            if voter != self.config.id {
                self.send(voter, Message::Probe { ballot, commit });
            }
        }
        let promised = self.promised;
        let ok = self.would_promise(self.config.id, ballot, commit);
        self.on_probe_reply(self.config.id, ballot, ok, promised);
    }

    /// A voter answered our probe.
    pub(crate) fn on_probe_reply(
        &mut self,
        from: NodeId,
        ballot: Ballot,
        ok: bool,
        promised: Ballot,
    ) {
        self.round_seen = self.round_seen.max(promised.round);
        let Role::Prober(prober) = &mut self.role else {
            return;
        };
        if prober.ballot != ballot || !ok || prober.oks.contains(&from) {
            return;
        }
        prober.oks.push(from);
        let met = match (&self.role, &self.membership) {
            (Role::Prober(p), Some(cfg)) => self.quorum_met(cfg, &p.oks, true),
            _ => false,
        };
        if met {
            self.campaign();
        }
    }

    /// Phase 1a: pick a ballot above anything seen, promise it ourselves, and
    /// ask the other voters, all once the promise is durable (so a restart
    /// can never reuse the ballot).
    pub(crate) fn campaign(&mut self) {
        if self.now < self.prepare_blocked_until {
            // Restarted recently: we may have granted a lease we forgot, and
            // must not promise anyone, ourselves included, until it ran out.
            self.reset_election_deadline();
            return;
        }
        let Some(cfg) = self.membership.clone() else {
            return;
        };
        if !self.can_campaign() {
            return;
        }
        if let Some((holder, until)) = self.lease_grant {
            if holder != self.config.id && self.now < until && !self.released_for(self.config.id) {
                // Our own acceptor still binds us to another leader.
                self.reset_election_deadline();
                return;
            }
        }
        let Some(round) = next_round(&[self.round_seen, self.promised.round]) else {
            self.reset_election_deadline();
            return;
        };
        if let Role::Leader(_) = self.role {
            self.become_follower();
        }
        let ballot = Ballot {
            round,
            node: self.config.id,
        };
        self.round_seen = ballot.round;
        self.set_promised(ballot);
        self.leader = None;
        let asked = cfg.voters();
        self.role = Role::Candidate(Candidate {
            ballot,
            promises: Vec::new(),
            asked: asked.clone(),
            best: BTreeMap::new(),
        });
        self.reset_election_deadline();
        let commit = self.log.commit();
        let own = Message::Promise {
            ballot,
            accepted: self.log.records_after(commit),
            snapshot: self.log.snapshot(),
        };
        self.send_after_persist(self.config.id, own);
        for voter in asked {
            if voter != self.config.id {
                self.send_after_persist(voter, Message::Prepare { ballot, commit });
            }
        }
    }

    /// Phase 1b arrives.
    pub(crate) fn on_promise(
        &mut self,
        from: NodeId,
        ballot: Ballot,
        accepted: Vec<SlotRecord<C>>,
        snapshot: Slot,
    ) {
        let commit = self.log.commit();
        let Role::Candidate(candidate) = &mut self.role else {
            return;
        };
        if candidate.ballot != ballot {
            return;
        }
        if snapshot > commit {
            // That acceptor compacted slots we never learned, so its promise
            // cannot tell us their values: do not count it. A phase-1 quorum
            // of other promises still reports every chosen slot above our
            // commit point (each meets the quorum that chose it).
            return;
        }
        let limit = Slot(commit.0.saturating_add(MESSAGE_SLOTS_MAX));
        if accepted.iter().any(|r| r.slot > limit) {
            // A correct acceptor reports nothing that far ahead (it refuses
            // lagging candidates and stores little past its commit point);
            // counting this promise would size the takeover by it.
            self.refused.promise_range += 1;
            return;
        }
        if !candidate.promises.contains(&from) {
            candidate.promises.push(from);
        }
        let mut conflicts = 0;
        for record in accepted.into_iter().filter(|r| r.slot > commit) {
            if !candidate.merge(record) {
                conflicts += 1;
            }
        }
        self.refused.conflicting_chosen += conflicts;
        self.candidate_progress();
    }

    /// The values a leader of this candidacy would re-propose, from the
    /// commit point on: the best reported value per slot, no-ops in gaps.
    fn takeover_values(&self, candidate: &Candidate<C>) -> Vec<Value<C>> {
        let start = self.log.commit().next();
        let last = candidate
            .best
            .keys()
            .next_back()
            .copied()
            .unwrap_or(Slot(0));
        let ignore = self.mutated(Mutation::IgnoreAcceptedValues);
        (start.0..=last.0.max(start.0))
            .map(|s| match candidate.best.get(&Slot(s)) {
                Some(r) if r.chosen || !ignore => r.value.clone(),
                _ => Value::Noop,
            })
            .collect()
    }

    /// Asks the voters of configurations discovered in the promises, and
    /// leads once a phase-1 quorum of every configuration has promised.
    fn candidate_progress(&mut self) {
        let Role::Candidate(candidate) = &self.role else {
            return;
        };
        let Some(base) = self.membership.clone() else {
            return;
        };
        let mut configs = vec![base];
        let skip = self.mutated(Mutation::NoJointConsensus);
        configs.extend(
            self.takeover_values(candidate)
                .iter()
                .filter_map(|v| v.configuration().cloned())
                .filter(|_| !skip),
        );
        let ballot = candidate.ballot;
        let commit = self.log.commit();
        let mut ask = Vec::new();
        for c in &configs {
            for v in c.voters() {
                if !candidate.asked.contains(&v) && !ask.contains(&v) {
                    ask.push(v);
                }
            }
        }
        let met = configs
            .iter()
            .all(|c| self.quorum_met(c, &candidate.promises, true));
        if let Role::Candidate(candidate) = &mut self.role {
            candidate.asked.extend(ask.iter().copied());
        }
        for v in ask {
            if v != self.config.id {
                self.send_after_persist(v, Message::Prepare { ballot, commit });
            }
        }
        if met {
            self.become_leader();
        }
    }

    /// A voter told us our ballot is stale.
    pub(crate) fn on_reject(&mut self, ballot: Ballot, promised: Ballot) {
        self.round_seen = self.round_seen.max(promised.round);
        let mine = match &self.role {
            Role::Candidate(c) => c.ballot,
            Role::Leader(l) => l.ballot,
            Role::Prober(_) | Role::Follower => return,
        };
        if ballot == mine && promised > mine {
            self.become_follower();
        }
    }

    /// Phase 1 is complete: re-propose every open slot in our ballot.
    ///
    /// Values after the first membership entry wait in `deferred` until that
    /// entry is committed: every open slot of a leader is then governed by
    /// the one configuration in effect after its commit point. So do values
    /// past the first `window_slots_max`: the takeover goes out in window
    /// sized pieces, like any other proposal, so no accept carries more, and
    /// every acceptor (this one included) stores each piece.
    fn become_leader(&mut self) {
        let Role::Candidate(candidate) = std::mem::replace(&mut self.role, Role::Follower) else {
            unreachable!("become_leader outside candidacy");
        };
        let start = self.log.commit().next();
        let mut values = self.takeover_values(&candidate);
        let barrier = Slot(start.0 + values.len() as u64 - 1);
        let window = usize::try_from(self.config.window_slots_max).unwrap_or(usize::MAX);
        let split = values
            .iter()
            .position(|v| v.configuration().is_some())
            .map_or(values.len(), |i| i + 1)
            .min(window);
        let deferred: VecDeque<Value<C>> = values.split_off(split).into();
        self.leader = Some(self.config.id);
        let members = self.leader_members(&values);
        let mut leader = Leader::new(&members, candidate.ballot, start, self.now);
        leader.deferred = deferred;
        self.role = Role::Leader(Box::new(leader.with_barrier(barrier)));
        self.leader_propose(values);
    }
}
