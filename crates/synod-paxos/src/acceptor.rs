//! The acceptor and learner side of a replica: answering prepares and
//! accepts, storing chosen values. These rules are what make Paxos safe:
//!
//! - promise `b` only if `b` is above every ballot promised before;
//! - accept in `b` only if no higher ballot was promised;
//! - reply only after the promise or acceptance is durable.
//!
//! Liveness and lease rules layer on top: a voter refuses to promise another
//! node while it still grants a lease to the current leader or heard from it
//! within the election timeout (stickiness).

use crate::limits::{CANDIDATE_LAG_MAX, MESSAGE_SLOTS_MAX};
use crate::message::Message;
use crate::mutation::Mutation;
use crate::replica::{Helped, Replica, Role};
use crate::types::{Ballot, NodeId, Slot, Time, Value};
use std::fmt;

/// The parts of an accept that are not values: the leader's commit point and
/// the echo fields for its lease and read accounting.
pub(crate) struct Heard {
    pub(crate) commit: Slot,
    pub(crate) seq: u64,
    pub(crate) sent_at: Time,
}

impl<C: Clone + PartialEq + fmt::Debug> Replica<C> {
    /// Answers a probe with what `on_prepare` would do, changing nothing.
    ///
    /// A prober behind our snapshot can never lead before it installs one,
    /// and when the leader is gone nobody else would send it: offer ours
    /// (the runtime ships it, as for a leader's `Ready::snapshots`). Probes
    /// come once per election timeout, which bounds the offers.
    pub(crate) fn on_probe(&mut self, from: NodeId, ballot: Ballot, commit: Slot) {
        if commit < self.log.snapshot() && !self.snapshots_out.contains(&from) {
            self.snapshots_out.push(from);
        }
        let ok = self.would_promise(from, ballot, commit);
        let promised = self.promised;
        self.send(
            from,
            Message::ProbeReply {
                ballot,
                ok,
                promised,
            },
        );
    }

    /// True when a prepare for `ballot` from `from` would be promised now.
    pub(crate) fn would_promise(&self, from: NodeId, ballot: Ballot, commit: Slot) -> bool {
        // A candidate behind our snapshot could not re-propose the slots we
        // compacted, so it cannot lead; promising it would only depose a
        // leader that can.
        //
        // A candidate that votes in no configuration we know of, and knows
        // no more than we do, is a removed replica that missed its removal
        // (or a stranger): promising it would only disrupt the group. One
        // that knows more may vote in a configuration we have not learned.
        //
        // A candidate more than `CANDIDATE_LAG_MAX` slots behind our commit
        // point would need every chosen slot in between in one promise; a
        // more advanced voter can lead instead and catch it up.
        ballot > self.promised
            && !self.refuses_prepare(from)
            && commit >= self.log.snapshot()
            && self.log.commit().0.saturating_sub(commit.0) <= CANDIDATE_LAG_MAX
            && (commit > self.log.commit() || self.knows_voter(from))
    }

    /// Phase 1b.
    ///
    /// Every replica answers as an acceptor, whatever its role in the
    /// configuration it knows: quorums count only voters, and a replica
    /// that is about to become a voter (or does not know yet that it is one)
    /// must be able to promise.
    pub(crate) fn on_prepare(&mut self, from: NodeId, ballot: Ballot, commit: Slot) {
        if ballot < self.promised {
            self.send(
                from,
                Message::Reject {
                    ballot,
                    promised: self.promised,
                },
            );
            return;
        }
        if ballot > self.promised && !self.would_promise(from, ballot, commit) {
            // Refused silently: the candidate's timer will retry, and by then
            // the leader is either back in touch or truly gone.
            return;
        }
        if self.log.span_after(commit) > MESSAGE_SLOTS_MAX {
            // Only a log stored under a larger window (before a restart with
            // a smaller one) gets here. A promise must report every slot, so
            // it cannot be cut short: refuse, as for a lagging candidate.
            self.refused.promise_size += 1;
            return;
        }
        self.set_promised(ballot);
        self.step_down_if_outbid();
        if from != self.config.id {
            self.reset_election_deadline();
        }
        let promise = Message::Promise {
            ballot,
            accepted: self.log.records_after(commit),
            snapshot: self.log.snapshot(),
        };
        self.send_after_persist(from, promise);
    }

    /// True while this acceptor is bound to another node: by a lease it
    /// granted, by recent contact with the leader, or by a restart that made
    /// it forget both.
    fn refuses_prepare(&self, from: NodeId) -> bool {
        if self.mutated(Mutation::LeaseNotBinding) {
            return false;
        }
        if self.now < self.prepare_blocked_until && from != self.config.id {
            return true;
        }
        let released = self.released_for(from);
        if let Some((holder, until)) = self.lease_grant {
            if holder != from && self.now < until && !released {
                return true;
            }
        }
        match (self.leader, self.leader_contact) {
            (Some(leader), Some(at)) if leader != from && !released => {
                self.now < at.plus_ms(self.config.election_timeout_ms)
            }
            _ => false,
        }
    }

    /// Phase 2b. An empty accept is a heartbeat: it still moves the commit
    /// point and renews the lease.
    pub(crate) fn on_accept(
        &mut self,
        ballot: Ballot,
        first: Slot,
        values: Vec<Value<C>>,
        heard: Heard,
    ) {
        let from = ballot.node;
        if ballot < self.promised && !self.mutated(Mutation::AcceptBelowPromise) {
            self.send(
                from,
                Message::Reject {
                    ballot,
                    promised: self.promised,
                },
            );
            return;
        }
        if ballot >= self.promised {
            self.set_promised(ballot);
            self.step_down_if_outbid();
            self.follow(ballot, heard.seq);
        }
        let count = self.storable(first, values.len());
        for (i, value) in values.iter().take(count).enumerate() {
            let record = self.log.accept(Slot(first.0 + i as u64), ballot, value);
            self.record(record);
        }
        self.learn_commit(ballot, heard.commit);
        let ack = Message::Accepted {
            ballot,
            first,
            count: count as u64,
            commit: self.log.commit(),
            behind: self.log.commit() < heard.commit,
            seq: heard.seq,
            sent_at: heard.sent_at,
        };
        self.send_after_persist(from, ack);
    }

    /// How many of `len` values starting at `first` to store: those at most
    /// `Config::slots_ahead_max` past the commit point. The rest are dropped
    /// (and counted), as if lost: a correct sender retransmits them, and
    /// catches this replica up by `Learn` or snapshot first when it is that
    /// far behind. The range itself was checked on arrival (`limits::judge`).
    fn storable(&mut self, first: Slot, len: usize) -> usize {
        let limit = self.log.store_limit(self.config.slots_ahead_max());
        let room = if first > limit {
            0
        } else {
            usize::try_from(limit.0 - first.0)
                .unwrap_or(usize::MAX)
                .saturating_add(1)
        };
        let count = len.min(room);
        self.refused.slots_ahead += (len - count) as u64;
        count
    }

    /// Takes `ballot`'s proposer as the leader: resets the election timer and,
    /// as a voter, grants it the lease.
    fn follow(&mut self, ballot: Ballot, seq: u64) {
        if matches!(self.role, Role::Prober(_)) && ballot.node != self.config.id {
            // A live leader answered before our probe did: no election.
            self.role = Role::Follower;
        }
        // Our own accept, delivered after we stopped leading in its ballot
        // (a removed leader steps down with its own accept still queued),
        // must not make us name ourselves as leader.
        if ballot.node != self.config.id || matches!(self.role, Role::Leader(_)) {
            self.leader = Some(ballot.node);
        }
        self.leader_contact = Some(self.now);
        // A leader catches everyone up; helpers stand down.
        self.helping.clear();
        // Every replica grants, voter or not: a replica becoming a voter
        // must already be bound, and a grant by a non-voter costs nothing.
        if self.config.lease_duration_ms > 0 {
            self.lease_grant = Some((ballot.node, self.now.plus_ms(self.config.lease_duration_ms)));
            self.lease_seq = seq;
        }
        if ballot.node != self.config.id {
            self.reset_election_deadline();
        }
    }

    /// The leader of `ballot` says every slot through `commit` is chosen. A
    /// slot we accepted in that same ballot holds the value that leader
    /// proposed, hence the chosen one; anything else must come by `Learn`.
    fn learn_commit(&mut self, ballot: Ballot, commit: Slot) {
        let mut slot = self.log.commit().next();
        while slot <= commit && self.log.mark_chosen_if(slot, ballot) {
            slot = slot.next();
        }
        self.advance_commit();
    }

    /// Stores chosen values sent to a lagging replica.
    pub(crate) fn on_learn(
        &mut self,
        from: NodeId,
        ballot: Ballot,
        first: Slot,
        values: Vec<Value<C>>,
    ) {
        let count = self.storable(first, values.len());
        for (i, value) in values.iter().take(count).enumerate() {
            let slot = Slot(first.0 + i as u64);
            if self.log.conflicts(slot, value) {
                // Two values chosen for one slot: the sender is broken or
                // hostile. Keep ours; the simulator's checkers judge safety.
                self.refused.conflicting_chosen += 1;
                continue;
            }
            let record = self.log.learn(slot, ballot, value);
            self.record(record);
        }
        self.advance_commit();
        self.leader_sync_commit();
        let commit = self.log.commit();
        self.send_after_persist(from, Message::Learned { ballot, commit });
    }

    /// No leader was heard for an election timeout and this replica may not
    /// campaign although it knows the committed configuration (it votes in
    /// none it knows of: an observer, or a replica removed by the change).
    /// The voters of that configuration may not know it yet (their commit
    /// point lies before the entry that made them voters, so they do not
    /// campaign either): ask each for its commit point with an empty
    /// `Learn`, and ship the chosen slots it misses when it answers
    /// (`on_learned_helping`). Chosen values are facts any replica may
    /// spread; nothing here promises, accepts or counts a vote. Repeated
    /// once per election timeout while no leader is heard, except towards
    /// voters that already reported our commit point (commit points never
    /// go back, so a removed replica that keeps running goes quiet).
    pub(crate) fn help_voters(&mut self) {
        let id = self.config.id;
        let Some(committed) = self.membership.as_ref() else {
            return;
        };
        let voters: Vec<NodeId> = committed
            .voters()
            .into_iter()
            .filter(|v| *v != id)
            .collect();
        self.helping.retain(|h| voters.contains(&h.id));
        let (ballot, first) = (self.promised, self.log.commit().next());
        for v in voters {
            match self.helping.iter().find(|h| h.id == v) {
                // It told us it has everything we could send.
                Some(h) if h.commit >= self.log.commit() => continue,
                Some(_) => {}
                None => self.helping.push(Helped {
                    id: v,
                    commit: Slot(0),
                    through: Slot(0),
                    sent_at: None,
                    snapshot_sent_at: None,
                }),
            }
            let ask = Message::Learn {
                ballot,
                first,
                values: Vec::new(),
            };
            self.send(v, ask);
        }
        self.reset_election_deadline();
    }

    /// A voter this replica is helping (see `help_voters`) is chosen through
    /// `commit`: send the next chosen slots it misses, or offer a snapshot
    /// when our log no longer has them. At most one batch in flight per
    /// voter and heartbeat interval, so duplicated replies cannot multiply
    /// batches.
    pub(crate) fn on_learned_helping(&mut self, from: NodeId, commit: Slot) {
        let (now, interval) = (self.now, self.config.heartbeat_interval_ms);
        let timeout = self.config.election_timeout_ms;
        let (ours, snapshot) = (self.log.commit(), self.log.snapshot());
        let batch = self.config.catchup_slots_max;
        let Some(h) = self.helping.iter_mut().find(|h| h.id == from) else {
            return;
        };
        h.commit = h.commit.max(commit);
        if commit >= ours {
            return;
        }
        if commit < snapshot {
            if h.snapshot_sent_at.is_none_or(|t| now >= t.plus_ms(timeout))
                && !self.snapshots_out.contains(&from)
            {
                h.snapshot_sent_at = Some(now);
                self.snapshots_out.push(from);
            }
            return;
        }
        let in_flight = h.through > commit && h.sent_at.is_some_and(|t| now < t.plus_ms(interval));
        if in_flight {
            return;
        }
        let first = commit.next();
        let last = Slot(ours.0.min(commit.0.saturating_add(batch)));
        h.through = last;
        h.sent_at = Some(now);
        let ballot = self.promised;
        self.send_learn(from, ballot, first, last);
    }

    /// True when the leader we are bound to handed leadership to `to` and
    /// every lease we granted it came from accepts it sent before the
    /// handover (so it no longer counts on them).
    pub(crate) fn released_for(&self, to: NodeId) -> bool {
        let Some(r) = self.released else {
            return false;
        };
        r.target == to
            && r.ballot == self.promised
            && self
                .lease_grant
                .is_none_or(|(holder, _)| holder == r.ballot.node)
            && self.lease_seq <= r.seq
    }

    /// The leader of `ballot` hands leadership to `target`: it stopped
    /// counting on leases granted by its accepts up to `seq`. Recorded so
    /// the target's prepare is not refused for them (or for stickiness);
    /// the target itself campaigns at once.
    pub(crate) fn on_handover(&mut self, ballot: Ballot, seq: u64, target: NodeId) {
        if ballot != self.promised {
            return;
        }
        self.released = Some(crate::replica::Release {
            ballot,
            seq,
            target,
        });
        if target == self.config.id && self.can_campaign() {
            self.campaign();
        }
    }

    /// A proposer whose ballot fell below the promise cannot finish its
    /// phase any more.
    pub(crate) fn step_down_if_outbid(&mut self) {
        let outbid = match &self.role {
            Role::Follower => false,
            Role::Prober(p) => p.ballot <= self.promised,
            Role::Candidate(c) => c.ballot < self.promised,
            Role::Leader(l) => l.ballot < self.promised,
        };
        if outbid {
            self.become_follower();
        }
    }
}
