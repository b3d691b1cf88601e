//! Phase 2 and everything only a leader does: batching commands into slots,
//! a bounded pipeline of open slots, counting acceptances, spreading the
//! commit point, retransmitting, catching lagging replicas up, the leader
//! lease and read-index reads.
//!
//! ```text
//!  queue ──flush──► inflight (≤ window_slots_max) ──Q2 acks──► chosen ──► commit
//!                      │ base = commit + 1
//!                      └─ retransmitted to voters that did not ack within a heartbeat
//! ```
//!
//! Membership: every open slot is governed by the configuration in effect
//! after the commit point, because a membership entry is always the last
//! open slot: nothing is proposed after it until it is committed (the
//! "stall"). Values a takeover found after such an entry wait in `deferred`.
//! Once a joint configuration is committed, the leader proposes its new half
//! on its own.

use crate::membership::Configuration;
use crate::message::Message;
use crate::mutation::Mutation;
use crate::ready::ReadReady;
use crate::replica::{ProposeError, Replica, Role, TransferError};
use crate::types::{Ballot, NodeId, ReadId, Slot, Time, Value};
use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;

/// An acceptance as the leader receives it.
pub(crate) struct Ack {
    pub(crate) first: Slot,
    pub(crate) count: u64,
    pub(crate) commit: Slot,
    pub(crate) behind: bool,
    pub(crate) seq: u64,
    pub(crate) sent_at: Time,
}

/// A slot proposed in this ballot and not yet committed.
struct Inflight<C> {
    value: Value<C>,
    /// Replicas that accepted it.
    acks: Vec<NodeId>,
    chosen: bool,
    /// When it was last broadcast; retransmitted a heartbeat later.
    sent_at: Time,
}

/// What the leader knows of one replica (itself included).
struct Peer {
    id: NodeId,
    /// Highest accept `seq` acknowledged: confirms reads registered before it.
    acked_seq: u64,
    /// Latest `sent_at` acknowledged: the base of the lease.
    acked_sent_at: Option<Time>,
    /// The replica's commit point as last reported.
    commit: Slot,
    last_ack: Option<Time>,
    learn_sent_at: Option<Time>,
    learn_through: Slot,
    snapshot_sent_at: Option<Time>,
    /// Last retransmission of unacknowledged slots to this voter.
    resent_at: Option<Time>,
}

/// A read waiting for a quorum to confirm leadership.
pub(crate) struct PendingRead {
    pub(crate) id: ReadId,
    slot: Slot,
    seq: u64,
}

/// Phase-2 state of one ballot.
///
/// Invariants: `ballot == promised` of the replica; `base == commit + 1`;
/// `inflight[i]` is slot `base + i`; `inflight.len() <= window` (a takeover
/// re-proposes the open slots one window at a time, the rest in `deferred`),
/// so no accept carries more than `window_slots_max` values.
pub(crate) struct Leader<C> {
    pub(crate) ballot: Ballot,
    /// Reads are served only once the commit point reaches this: every slot
    /// an earlier ballot may have chosen is then known here.
    barrier: Slot,
    base: Slot,
    inflight: VecDeque<Inflight<C>>,
    pub(crate) queue: VecDeque<C>,
    seq: u64,
    peers: Vec<Peer>,
    pub(crate) reads: VecDeque<PendingRead>,
    last_broadcast: Time,
    /// The commit point the last broadcast carried: when the commit point
    /// moves past it, followers are told at once rather than at the next
    /// heartbeat, so a follower answering its own clients is not a
    /// heartbeat interval late.
    commit_sent: Slot,
    heartbeat_due: bool,
    elected_at: Time,
    /// Takeover values waiting behind a membership entry.
    pub(crate) deferred: VecDeque<Value<C>>,
    /// A joint configuration `propose_membership` asked for, proposed as soon
    /// as no membership entry is open.
    pub(crate) config_request: Option<Configuration>,
    /// A slot we proposed was learned chosen with another value: a higher
    /// ballot chose it, so this one must stop.
    pub(crate) deposed: bool,
    /// Acknowledgements of accepts up to this `seq` do not count for the
    /// lease (they may have been released by a handover).
    lease_floor_seq: u64,
    /// A leadership transfer under way.
    pub(crate) transfer: Option<Transfer>,
}

/// A leadership transfer in progress.
pub(crate) struct Transfer {
    pub(crate) target: NodeId,
    pub(crate) started_at: Time,
    /// The handover went out: no more accepts until the transfer ends.
    handed_over: bool,
}

impl<C: Clone> Leader<C> {
    pub(crate) fn new(members: &[NodeId], ballot: Ballot, base: Slot, now: Time) -> Leader<C> {
        let peers = members.iter().map(|&id| Peer::new(id)).collect();
        Leader {
            ballot,
            barrier: base,
            base,
            inflight: VecDeque::new(),
            queue: VecDeque::new(),
            seq: 0,
            peers,
            reads: VecDeque::new(),
            last_broadcast: now,
            commit_sent: Slot(0),
            heartbeat_due: false,
            elected_at: now,
            deferred: VecDeque::new(),
            config_request: None,
            deposed: false,
            lease_floor_seq: 0,
            transfer: None,
        }
    }

    /// True when a membership entry is open (proposed, not committed).
    pub(crate) fn has_config_inflight(&self) -> bool {
        self.inflight
            .iter()
            .any(|i| i.value.configuration().is_some())
    }

    /// Adds peers for new members and forgets removed ones, keeping what is
    /// known of the others.
    fn sync_peers(&mut self, members: &[NodeId]) {
        self.peers.retain(|p| members.contains(&p.id));
        for &id in members {
            if !self.peers.iter().any(|p| p.id == id) {
                self.peers.push(Peer::new(id));
            }
        }
    }
}

impl Peer {
    fn new(id: NodeId) -> Peer {
        Peer {
            id,
            acked_seq: 0,
            acked_sent_at: None,
            commit: Slot(0),
            last_ack: None,
            learn_sent_at: None,
            learn_through: Slot(0),
            snapshot_sent_at: None,
            resent_at: None,
        }
    }
}

impl<C: Clone> Leader<C> {
    /// Reads wait until the commit point reaches `barrier`, the last slot
    /// re-proposed at takeover.
    pub(crate) fn with_barrier(mut self, barrier: Slot) -> Leader<C> {
        self.barrier = barrier;
        self
    }

    fn next_slot(&self) -> Slot {
        Slot(self.base.0 + self.inflight.len() as u64)
    }

    fn peer_mut(&mut self, id: NodeId) -> Option<&mut Peer> {
        self.peers.iter_mut().find(|p| p.id == id)
    }

    pub(crate) fn check_invariants<X>(&self, replica: &Replica<X>)
    where
        X: Clone,
    {
        assert_eq!(
            self.ballot, replica.promised,
            "leader ballot is not the promised one"
        );
        assert_eq!(
            self.base,
            replica.log.commit().next(),
            "leader base vs commit"
        );
        assert!(
            self.inflight.len() as u64 <= replica.config.window_slots_max,
            "{} slots open, window {}",
            self.inflight.len(),
            replica.config.window_slots_max
        );
        let configs = self
            .inflight
            .iter()
            .filter(|i| i.value.configuration().is_some())
            .count();
        assert!(configs <= 1, "{configs} membership entries open at once");
        assert!(
            configs == 0
                || self
                    .inflight
                    .back()
                    .is_some_and(|i| i.value.configuration().is_some()),
            "a slot was proposed after an open membership entry"
        );
    }

    /// True when this leader votes in the committed configuration or in a
    /// membership entry it still has to propose or see committed. A
    /// takeover leader may find itself added by entries it re-proposes; a
    /// leader that removed itself leads until that entry is committed (and
    /// then until a new voter caught up).
    pub(crate) fn votes<X: Clone>(&self, replica: &Replica<X>) -> bool {
        let id = replica.config.id;
        replica.membership.as_ref().is_some_and(|c| c.is_voter(id))
            || self
                .inflight
                .iter()
                .map(|i| &i.value)
                .chain(self.deferred.iter())
                .filter_map(Value::configuration)
                .any(|c| c.is_voter(id))
    }
}

impl<C: Clone + PartialEq + fmt::Debug> Replica<C> {
    /// Runs `f` with the leader state taken out of `self`, so handlers can use
    /// both; returns `None` when not leading.
    fn with_leader<R>(&mut self, f: impl FnOnce(&mut Self, &mut Leader<C>) -> R) -> Option<R> {
        if !matches!(self.role, Role::Leader(_)) {
            return None;
        }
        let Role::Leader(mut leader) = std::mem::replace(&mut self.role, Role::Follower) else {
            unreachable!("checked above");
        };
        let result = f(self, &mut leader);
        assert!(
            matches!(self.role, Role::Follower),
            "role changed inside a leader handler"
        );
        self.role = Role::Leader(leader);
        Some(result)
    }

    /// Who a leader talks to: every member of the committed configuration
    /// and of the membership entries in `values` (new members receive the
    /// entry that adds them, so they start catching up at once).
    pub(crate) fn leader_members(&self, values: &[Value<C>]) -> Vec<NodeId> {
        let mut members: Vec<NodeId> = self
            .membership
            .as_ref()
            .map(Configuration::members)
            .unwrap_or_default();
        for c in values.iter().filter_map(Value::configuration) {
            for m in c.members() {
                if !members.contains(&m) {
                    members.push(m);
                }
            }
        }
        members
    }

    /// True when `leader` has proposed a value for a membership change that
    /// is not finished, or holds one back.
    pub(crate) fn leader_config_requested(&self) -> bool {
        match &self.role {
            Role::Leader(l) => l.config_request.is_some() || !l.deferred.is_empty(),
            _ => false,
        }
    }

    /// Steps down when the ballot is dead (a slot it proposed was chosen
    /// with another value), when the committed configuration no longer has
    /// this replica as a voter, or when a transfer timed out (then resumes).
    pub(crate) fn leader_checks(&mut self) {
        let removed = match &self.role {
            Role::Leader(l) => !l.votes(self),
            _ => return,
        };
        let Role::Leader(leader) = &mut self.role else {
            return;
        };
        if leader.deposed {
            self.become_follower();
            return;
        }
        if removed {
            // Lead on until a voter of the new configuration has every
            // chosen slot (new voters may be far behind, and only a leader
            // catches them up); then tell the members the commit point and
            // hand leadership to that voter instead of leaving the group to
            // time out.
            let commit = self.log.commit();
            let target = match (&self.role, &self.membership) {
                (Role::Leader(l), Some(cfg)) => l
                    .peers
                    .iter()
                    .filter(|p| cfg.is_voter(p.id) && p.commit >= commit)
                    .map(|p| p.id)
                    .min(),
                _ => None,
            };
            let Some(target) = target else {
                return;
            };
            self.leader_heartbeat();
            self.with_leader(|this, leader| this.send_handover(leader, target));
            self.become_follower();
            return;
        }
        if let Some(t) = &leader.transfer {
            if self.now >= t.started_at.plus_ms(self.config.election_timeout_ms) {
                // The target did not take over in time: resume. Leases from
                // accepts sent before now may have been released, so only
                // later ones count.
                leader.transfer = None;
                leader.lease_floor_seq = leader.seq;
                leader.heartbeat_due = true;
                // Acknowledgements stopped during the handover: give them
                // one election timeout to come back before judging.
                leader.elected_at = self.now;
            }
        }
    }

    /// Starts handing leadership to `to` (etcd's MoveLeader). From now on
    /// this leader serves no lease reads and proposes nothing new (commands
    /// queue, and go back as `Ready::dropped` once it steps down). When `to`
    /// has every proposed slot, the leader sends every voter a `Handover`
    /// releasing its leases and stickiness in `to`'s favour, and `to`
    /// campaigns at once. If `to` has not taken over within an election
    /// timeout, this leader resumes.
    pub fn transfer_leadership(&mut self, to: NodeId) -> Result<(), TransferError> {
        let id = self.config.id;
        let changing = self.membership_changing();
        let voter = self
            .membership
            .as_ref()
            .is_some_and(|c| c.halves().iter().all(|m| m.is_voter(to)));
        let now = self.now;
        let Role::Leader(leader) = &mut self.role else {
            return Err(TransferError::NotLeader {
                leader: self.leader,
            });
        };
        if to == id {
            return Err(TransferError::ToSelf);
        }
        if !voter {
            return Err(TransferError::NotVoter(to));
        }
        if changing || leader.transfer.is_some() || leader.has_config_inflight() {
            return Err(TransferError::Busy);
        }
        leader.transfer = Some(Transfer {
            target: to,
            started_at: now,
            handed_over: false,
        });
        leader.heartbeat_due = true;
        self.deliver_local();
        Ok(())
    }

    /// The target of a transfer under way at this leader.
    pub(crate) fn transfer_target(&self) -> Option<NodeId> {
        match &self.role {
            Role::Leader(l) => l.transfer.as_ref().map(|t| t.target),
            _ => None,
        }
    }

    /// Sends the handover once the target has every proposed slot.
    fn maybe_hand_over(&mut self, leader: &mut Leader<C>) {
        let commit = self.log.commit();
        let Some(t) = &leader.transfer else {
            return;
        };
        if t.handed_over || !leader.inflight.is_empty() {
            return;
        }
        let target = t.target;
        if !leader
            .peers
            .iter()
            .any(|p| p.id == target && p.commit >= commit)
        {
            return;
        }
        if let Some(t) = leader.transfer.as_mut() {
            t.handed_over = true;
        }
        self.send_handover(leader, target);
    }

    /// Sends every voter the handover to `target` (the target last).
    fn send_handover(&mut self, leader: &Leader<C>, target: NodeId) {
        let ballot = leader.ballot;
        let seq = leader.seq;
        let voters = self
            .membership
            .as_ref()
            .map(Configuration::voters)
            .unwrap_or_default();
        for v in voters {
            let message = Message::Handover {
                ballot,
                seq,
                target,
            };
            if v == target {
                continue;
            }
            self.send(v, message);
        }
        // The target last, so the others are likelier to know first.
        self.send(
            target,
            Message::Handover {
                ballot,
                seq,
                target,
            },
        );
    }

    /// Assigns `values` to the next slots and broadcasts them.
    pub(crate) fn leader_propose(&mut self, values: Vec<Value<C>>) {
        let members = self.leader_members(&values);
        self.with_leader(|this, leader| {
            if values.iter().any(|v| v.configuration().is_some()) {
                leader.sync_peers(&members);
            }
            let first = leader.next_slot();
            for value in &values {
                leader.inflight.push_back(Inflight {
                    value: value.clone(),
                    acks: Vec::new(),
                    chosen: false,
                    sent_at: this.now,
                });
            }
            leader.seq += 1;
            leader.last_broadcast = this.now;
            leader.commit_sent = this.log.commit();
            leader.heartbeat_due = false;
            let ids: Vec<NodeId> = leader.peers.iter().map(|p| p.id).collect();
            for id in ids {
                let accept = this.accept_message(leader, first, values.clone());
                this.send(id, accept);
            }
        });
    }

    fn accept_message(&self, leader: &Leader<C>, first: Slot, values: Vec<Value<C>>) -> Message<C> {
        Message::Accept {
            ballot: leader.ballot,
            first,
            values,
            commit: self.log.commit(),
            seq: leader.seq,
            sent_at: self.now,
        }
    }

    /// The next values to propose: deferred takeover values first, then a
    /// membership entry (finishing a joint configuration, or one asked for),
    /// then batches of queued commands. Nothing while a membership entry is
    /// open or a transfer runs; nothing after a membership entry.
    fn next_values(&self, leader: &mut Leader<C>) -> Vec<Value<C>> {
        let window = self.config.window_slots_max as usize;
        let batch = self.config.batch_commands_max;
        let mut values = Vec::new();
        if leader.has_config_inflight() || leader.transfer.is_some() {
            return values;
        }
        let room = |values: &Vec<Value<C>>, leader: &Leader<C>| {
            leader.inflight.len() + values.len() < window
        };
        while room(&values, leader) {
            let Some(v) = leader.deferred.pop_front() else {
                break;
            };
            let config = v.configuration().is_some();
            values.push(v);
            if config {
                return values;
            }
        }
        if !leader.deferred.is_empty() || !room(&values, leader) {
            return values;
        }
        match &self.membership {
            Some(Configuration::Joint { new, .. }) => {
                values.push(Value::Membership(Configuration::Stable(new.clone())));
                return values;
            }
            Some(_) => {
                if let Some(c) = leader.config_request.take() {
                    values.push(Value::Membership(c));
                    return values;
                }
            }
            None => {}
        }
        while !leader.queue.is_empty() && room(&values, leader) {
            let n = leader.queue.len().min(batch);
            let commands: Arc<[C]> = leader.queue.drain(..n).collect();
            values.push(Value::Batch(commands));
        }
        values
    }

    /// Packs queued commands into slots while the window has room, and sends
    /// a heartbeat if reads wait for one or the commit point moved.
    pub(crate) fn leader_flush(&mut self) {
        let Some((values, heartbeat)) = self.with_leader(|this, leader| {
            let values = this.next_values(leader);
            let commit_moved = this.log.commit() > leader.commit_sent;
            (values, leader.heartbeat_due || commit_moved)
        }) else {
            return;
        };
        if !values.is_empty() {
            self.leader_propose(values);
        } else if heartbeat {
            self.leader_heartbeat();
        }
    }

    pub(crate) fn leader_has_work(&self) -> bool {
        match &self.role {
            Role::Leader(l) => {
                let open = !l.has_config_inflight()
                    && l.transfer.is_none()
                    && (l.inflight.len() as u64) < self.config.window_slots_max;
                let config_work = !l.deferred.is_empty()
                    || l.config_request.is_some()
                    || self.membership.as_ref().is_some_and(|c| c.is_joint());
                let silent = l.transfer.as_ref().is_some_and(|t| t.handed_over);
                (!silent && (l.heartbeat_due || self.log.commit() > l.commit_sent))
                    || (open && (config_work || !l.queue.is_empty()))
            }
            _ => false,
        }
    }

    /// Heartbeats, retransmissions, and stepping down when no quorum answers.
    pub(crate) fn leader_tick(&mut self) {
        let timeout = self.config.election_timeout_ms;
        let lost_quorum = self
            .with_leader(|this, leader| {
                // A transfer ends on its own timer (or with a higher ballot);
                // after the handover the leader is silent on purpose.
                if this.now < leader.elected_at.plus_ms(timeout) || leader.transfer.is_some() {
                    return false;
                }
                let Some(cfg) = this.membership.as_ref() else {
                    return true;
                };
                let live: Vec<NodeId> = leader
                    .peers
                    .iter()
                    .filter(|p| p.last_ack.is_some_and(|t| this.now < t.plus_ms(timeout)))
                    .map(|p| p.id)
                    .collect();
                !cfg.q2_met(&live)
            })
            .unwrap_or(false);
        if lost_quorum {
            self.become_follower();
            return;
        }
        self.leader_checks();
        let due = match &self.role {
            Role::Leader(l) => {
                self.now >= l.last_broadcast.plus_ms(self.config.heartbeat_interval_ms)
                    && !l.transfer.as_ref().is_some_and(|t| t.handed_over)
            }
            _ => false,
        };
        if due {
            self.leader_heartbeat();
        } else {
            self.leader_retransmit();
        }
    }

    /// Resends overdue open slots to voters that did not acknowledge them,
    /// on its own per-voter timer: under steady load the leader proposes
    /// more often than a heartbeat interval, so heartbeats never come due,
    /// and one lost accept would otherwise hold the commit point back until
    /// the window filled.
    fn leader_retransmit(&mut self) {
        let interval = self.config.heartbeat_interval_ms;
        self.with_leader(|this, leader| {
            if leader.transfer.as_ref().is_some_and(|t| t.handed_over) {
                return;
            }
            for i in 0..leader.peers.len() {
                let peer = &leader.peers[i];
                let recent = peer
                    .resent_at
                    .is_some_and(|t| this.now < t.plus_ms(interval));
                if peer.id == this.config.id || recent {
                    continue;
                }
                let id = peer.id;
                let (first, values) = unacked(leader, id, this.now, interval);
                if values.is_empty() {
                    continue;
                }
                leader.peers[i].resent_at = Some(this.now);
                let accept = this.accept_message(leader, first, values);
                this.send(id, accept);
            }
        });
    }

    /// Sends every replica the commit point, and the open slots it has not
    /// acknowledged for a heartbeat interval.
    fn leader_heartbeat(&mut self) {
        let interval = self.config.heartbeat_interval_ms;
        self.with_leader(|this, leader| {
            if leader.transfer.as_ref().is_some_and(|t| t.handed_over) {
                // Accepts after the handover would grant leases the target's
                // prepare could not get past.
                return;
            }
            leader.seq += 1;
            leader.last_broadcast = this.now;
            leader.commit_sent = this.log.commit();
            leader.heartbeat_due = false;
            for i in 0..leader.peers.len() {
                let id = leader.peers[i].id;
                let (first, values) = if id != this.config.id {
                    unacked(leader, id, this.now, interval)
                } else {
                    (leader.next_slot(), Vec::new())
                };
                if !values.is_empty() {
                    leader.peers[i].resent_at = Some(this.now);
                }
                let accept = this.accept_message(leader, first, values);
                this.send(id, accept);
            }
        });
    }

    /// Phase 2b arrives at the leader.
    pub(crate) fn on_accepted(&mut self, from: NodeId, ballot: Ballot, ack: Ack) {
        self.with_leader(|this, leader| {
            if ballot != leader.ballot {
                return;
            }
            let now = this.now;
            let floor = leader.lease_floor_seq;
            let Some(peer) = leader.peer_mut(from) else {
                return;
            };
            peer.acked_seq = peer.acked_seq.max(ack.seq);
            if ack.seq > floor {
                peer.acked_sent_at = peer.acked_sent_at.max(Some(ack.sent_at));
            }
            // A replica that says it is behind may have restarted and lost a
            // commit hint it reported before: believe its number as is.
            peer.commit = if ack.behind {
                ack.commit
            } else {
                peer.commit.max(ack.commit)
            };
            peer.last_ack = Some(now);
            if let Some(cfg) = this.membership.as_ref() {
                if cfg.is_voter(from) {
                    this.count_acks(leader, cfg, from, ack.first, ack.count);
                }
            }
            this.leader_advance_commit(leader);
            this.confirm_reads(leader);
            if ack.behind {
                this.catch_up(leader, from);
            }
            this.maybe_hand_over(leader);
        });
    }

    /// Marks `first .. first + count` accepted by `from`; a slot is chosen
    /// once a phase-2 quorum of the committed configuration (which governs
    /// every open slot) accepted it.
    fn count_acks(
        &self,
        leader: &mut Leader<C>,
        cfg: &Configuration,
        from: NodeId,
        first: Slot,
        count: u64,
    ) {
        let lo = first.0.max(leader.base.0);
        let hi = first
            .0
            .saturating_add(count)
            .min(leader.base.0 + leader.inflight.len() as u64);
        for s in lo..hi {
            let slot = &mut leader.inflight[(s - leader.base.0) as usize];
            if !slot.acks.contains(&from) {
                slot.acks.push(from);
            }
            if !slot.chosen && self.quorum_met(cfg, &slot.acks, false) {
                slot.chosen = true;
            }
        }
    }

    /// A lagging replica stored a `Learn`; send it the next batch.
    pub(crate) fn on_learned(&mut self, from: NodeId, ballot: Ballot, commit: Slot) {
        let led = self.with_leader(|this, leader| {
            if ballot != leader.ballot {
                return;
            }
            if let Some(peer) = leader.peer_mut(from) {
                peer.commit = peer.commit.max(commit);
            }
            this.catch_up(leader, from);
            this.maybe_hand_over(leader);
        });
        if led.is_none() {
            self.on_learned_helping(from, commit);
        }
    }

    /// Realigns the open slots after the log learned chosen values from
    /// elsewhere (a `Learn` from an older leader).
    pub(crate) fn leader_sync_commit(&mut self) {
        self.with_leader(|this, leader| this.leader_advance_commit(leader));
    }

    /// Moves the commit point over the chosen prefix of the open slots.
    fn leader_advance_commit(&mut self, leader: &mut Leader<C>) {
        let before = self.membership.clone();
        while let Some(front) = leader.inflight.front() {
            let slot = leader.base;
            if slot > self.log.commit() && !front.chosen {
                break;
            }
            let front = leader.inflight.pop_front().expect("front exists");
            leader.base = slot.next();
            if slot <= self.log.commit() {
                // Learned from elsewhere: if another value was chosen, a
                // higher ballot chose it and every later open slot of ours
                // was counted under a configuration that may not hold.
                if self.log.get(slot).is_some_and(|e| e.value != front.value) {
                    leader.deposed = true;
                    leader.inflight.clear();
                    leader.base = self.log.commit().next();
                    return;
                }
            } else if !self.log.mark_chosen_if(slot, leader.ballot) {
                // Chosen by a quorum that did not (yet) include our own acceptor.
                let record = self.log.learn(slot, leader.ballot, &front.value);
                self.record(record);
            }
            self.advance_commit();
        }
        if leader.inflight.is_empty() && leader.base <= self.log.commit() {
            // Learned from elsewhere past every open slot. The deferred
            // takeover values stand for the slots right after the open ones,
            // so those now chosen go (or, if another value was chosen at one,
            // this ballot is dead, as above); the rest keep their slots.
            while leader.base <= self.log.commit() {
                let Some(v) = leader.deferred.pop_front() else {
                    break;
                };
                if self.log.get(leader.base).is_some_and(|e| e.value != v) {
                    leader.deposed = true;
                    leader.deferred.clear();
                    leader.base = self.log.commit().next();
                    return;
                }
                leader.base = leader.base.next();
            }
            leader.base = self.log.commit().next();
        }
        if self.membership != before {
            let members = self.leader_members(&[]);
            let removed: Vec<NodeId> = leader
                .peers
                .iter()
                .map(|p| p.id)
                .filter(|id| !members.contains(id) && *id != self.config.id)
                .collect();
            // One last heartbeat tells removed replicas that the change is
            // chosen, so they know they vote nowhere and stop campaigning.
            for id in removed {
                let heartbeat = self.accept_message(leader, leader.next_slot(), Vec::new());
                self.send(id, heartbeat);
            }
            leader.sync_peers(&members);
        }
    }

    /// Sends a lagging replica the next chosen values it misses, or asks the
    /// runtime for a snapshot when the log no longer has them.
    fn catch_up(&mut self, leader: &mut Leader<C>, to: NodeId) {
        let (now, interval) = (self.now, self.config.heartbeat_interval_ms);
        let (commit, snapshot) = (self.log.commit(), self.log.snapshot());
        let Some(peer) = leader.peer_mut(to) else {
            return;
        };
        if peer.commit >= commit || to == self.config.id {
            return;
        }
        if peer.commit < snapshot {
            let timeout = self.config.election_timeout_ms;
            if peer
                .snapshot_sent_at
                .is_none_or(|t| now >= t.plus_ms(timeout))
            {
                peer.snapshot_sent_at = Some(now);
                self.snapshots_out.push(to);
            }
            return;
        }
        let in_flight = peer.learn_through > peer.commit
            && peer
                .learn_sent_at
                .is_some_and(|t| now < t.plus_ms(interval));
        if in_flight {
            return;
        }
        let first = peer.commit.next();
        let last = Slot(
            commit
                .0
                .min(peer.commit.0.saturating_add(self.config.catchup_slots_max)),
        );
        peer.learn_sent_at = Some(now);
        peer.learn_through = last;
        let ballot = leader.ballot;
        self.send_learn(to, ballot, first, last);
    }

    /// Sends `to` the chosen values of slots `first..=last` (all in the
    /// log), under `ballot`.
    pub(crate) fn send_learn(&mut self, to: NodeId, ballot: Ballot, first: Slot, last: Slot) {
        let values = (first.0..=last.0)
            .map(|s| {
                self.log
                    .get(Slot(s))
                    .expect("chosen slot in log")
                    .value
                    .clone()
            })
            .collect();
        self.send(
            to,
            Message::Learn {
                ballot,
                first,
                values,
            },
        );
    }

    /// Registers a linearizable read: served at once under a valid lease,
    /// otherwise after a quorum acknowledges a later heartbeat.
    pub(crate) fn leader_read(&mut self, id: ReadId) -> Result<(), ProposeError> {
        let reads_max = self.config.reads_pending_max;
        let lease_until = if self.mutated(Mutation::ReadWithoutConfirmation) {
            Some(Time(u64::MAX))
        } else {
            self.lease_until()
        };
        let not_leader = ProposeError::NotLeader {
            leader: self.leader_hint(),
        };
        self.with_leader(|this, leader| {
            let commit = this.log.commit();
            let unconfirmed = this.mutated(Mutation::ReadWithoutConfirmation);
            if (commit >= leader.barrier || unconfirmed)
                && lease_until.is_some_and(|t| this.now < t)
            {
                this.reads_ready.push(ReadReady { id, slot: commit });
                return Ok(());
            }
            if leader.reads.len() >= reads_max {
                return Err(ProposeError::Busy);
            }
            leader.reads.push_back(PendingRead {
                id,
                slot: commit.max(leader.barrier),
                seq: leader.seq + 1,
            });
            leader.heartbeat_due = true;
            Ok(())
        })
        .unwrap_or(Err(not_leader))
    }

    fn confirm_reads(&mut self, leader: &mut Leader<C>) {
        let Some(cfg) = self.membership.as_ref() else {
            return;
        };
        while let Some(read) = leader.reads.front() {
            let confirmed = cfg.halves().iter().all(|m| {
                let acked = leader
                    .peers
                    .iter()
                    .filter(|p| m.is_voter(p.id) && p.acked_seq >= read.seq)
                    .count();
                acked >= m.confirm_quorum()
            });
            if !confirmed {
                break;
            }
            let read = leader.reads.pop_front().expect("front exists");
            self.reads_ready.push(ReadReady {
                id: read.id,
                slot: read.slot,
            });
        }
    }

    /// Until when (on this replica's clock) no other replica can become
    /// leader, so reads may be served locally; `None` without a lease.
    ///
    /// The lease starts when the leader *sent* an accept that voters meeting
    /// every phase-1 quorum (of each half of a joint configuration)
    /// acknowledged: each of them refuses other prepares for
    /// `lease_duration_ms` after *receiving* it. None while a leadership
    /// transfer runs: the leader released its leases to the target.
    pub fn lease_until(&self) -> Option<Time> {
        let Role::Leader(leader) = &self.role else {
            return None;
        };
        let d = self.config.lease_duration_ms;
        if d == 0 || leader.transfer.is_some() || leader.deposed {
            return None;
        }
        let cfg = self.membership.as_ref()?;
        let mut start: Option<Time> = None;
        for m in cfg.halves() {
            let mut sent: Vec<Time> = leader
                .peers
                .iter()
                .filter(|p| m.is_voter(p.id))
                .filter_map(|p| p.acked_sent_at)
                .collect();
            sent.sort_unstable_by(|a, b| b.cmp(a));
            let s = *sent.get(m.confirm_quorum() - 1)?;
            start = Some(start.map_or(s, |t| t.min(s)));
        }
        Some(start?.plus_ms(d - self.config.lease_margin_ms()))
    }
}

/// The open slots `id` has not acknowledged although they went out at least
/// `interval` ago, as one consecutive range.
fn unacked<C: Clone>(
    leader: &Leader<C>,
    id: NodeId,
    now: Time,
    interval: u64,
) -> (Slot, Vec<Value<C>>) {
    let missing = |i: &Inflight<C>| !i.acks.contains(&id) && now >= i.sent_at.plus_ms(interval);
    let Some(lo) = leader.inflight.iter().position(missing) else {
        return (leader.next_slot(), Vec::new());
    };
    let hi = leader
        .inflight
        .iter()
        .rposition(missing)
        .expect("lo exists");
    let values = leader
        .inflight
        .range(lo..=hi)
        .map(|i| i.value.clone())
        .collect();
    (Slot(leader.base.0 + lo as u64), values)
}
