//! One replica of a Multi-Paxos group: acceptor, proposer and learner in one
//! pure state machine.
//!
//! ```text
//!            timeout (+jitter)           Q1 promises
//!  Follower ──────────────────► Candidate ───────────► Leader
//!     ▲  ▲   higher ballot seen      │                   │
//!     │  └───────────────────────────┘                   │
//!     └──────────── higher ballot seen / lost quorum ────┘
//! ```
//!
//! Every replica is also an acceptor (when it votes) and a learner, whatever
//! its role: messages addressed to itself go through the same handlers as
//! remote ones, including the wait for persistence.

use crate::config::{Config, ConfigError};
use crate::limits::{judge, Refused, Verdict};
use crate::log::Log;
use crate::membership::{Configuration, Membership, MembershipError, MembershipRecord};
use crate::message::{Envelope, Message, SlotRecord};
use crate::mutation::Mutation;
use crate::ready::{Apply, Persist, PersistToken, ReadReady, Ready};
use crate::rng::Rng;
use crate::types::{Ballot, NodeId, ReadId, Slot, Time};
use std::collections::VecDeque;
use std::fmt;

pub(crate) use crate::acceptor::Heard;
pub(crate) use crate::candidate::{Candidate, Prober};
pub(crate) use crate::leader::{Ack, Leader};

/// Loops that drain self-addressed messages stop after this many rounds; more
/// means two handlers keep feeding each other, which is a bug.
const LOCAL_DELIVERY_ROUNDS_MAX: usize = 1024;

/// What a replica is doing as a proposer.
pub(crate) enum Role<C> {
    /// Follows whoever leads; probes when the leader goes quiet.
    Follower,
    /// Asking voters whether they would promise, before raising any ballot.
    Prober(Prober),
    /// Running phase 1 for its ballot.
    Candidate(Candidate<C>),
    /// Running phase 2 for its ballot.
    Leader(Box<Leader<C>>),
}

/// The role without its state, for status and traces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RoleKind {
    /// Not proposing.
    Follower,
    /// Probing before phase 1.
    Prober,
    /// In phase 1.
    Candidate,
    /// In phase 2.
    Leader,
}

impl fmt::Display for RoleKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            RoleKind::Follower => "follower",
            RoleKind::Prober => "prober",
            RoleKind::Candidate => "candidate",
            RoleKind::Leader => "leader",
        };
        f.write_str(s)
    }
}

/// Why a proposal or a read was not taken.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProposeError {
    /// Only the leader proposes and serves linearizable reads; `leader` is the
    /// best guess of who does.
    NotLeader {
        /// The replica believed to lead, if any.
        leader: Option<NodeId>,
    },
    /// The leader's queue is full; retry after earlier commands commit.
    Busy,
}

impl fmt::Display for ProposeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProposeError::NotLeader { leader: Some(l) } => write!(f, "not the leader; try {l}"),
            ProposeError::NotLeader { leader: None } => write!(f, "not the leader; none known"),
            ProposeError::Busy => write!(f, "too many proposals queued"),
        }
    }
}

impl std::error::Error for ProposeError {}

/// Durable state read back at restart.
#[derive(Clone, Debug)]
pub struct Durable<C> {
    /// Highest ballot promised.
    pub promised: Ballot,
    /// Slots through here live in the application's snapshot.
    pub snapshot: Slot,
    /// Stored slots after the snapshot, any order; a later record for the same
    /// slot replaces an earlier one.
    pub records: Vec<SlotRecord<C>>,
    /// Last persisted commit hint.
    pub commit: Slot,
    /// Slots through here are already reflected in the application's state.
    pub applied: Slot,
    /// The last stored `Persist::membership`: the configuration in effect
    /// after its slot. `None` for a replica that never stored one: it starts
    /// from `Config::voters` and `observers` (or, with `Config::join`, from
    /// no known membership).
    pub membership: Option<MembershipRecord>,
}

impl<C> Durable<C> {
    /// The state of a replica that never ran.
    pub fn empty() -> Durable<C> {
        Durable {
            promised: Ballot::ZERO,
            snapshot: Slot(0),
            records: Vec::new(),
            commit: Slot(0),
            applied: Slot(0),
            membership: None,
        }
    }
}

/// A summary for operators, tests and traces.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    /// This replica.
    pub id: NodeId,
    /// Proposer role.
    pub role: RoleKind,
    /// Highest ballot promised.
    pub promised: Ballot,
    /// Believed leader.
    pub leader: Option<NodeId>,
    /// Highest slot known chosen with all below.
    pub commit: Slot,
    /// Highest slot handed to the application.
    pub applied: Slot,
    /// Log start (slots through here are in a snapshot).
    pub snapshot: Slot,
    /// Highest slot stored.
    pub last: Slot,
    /// The configuration in effect after the commit point; `None` while a
    /// joining replica has not learned it yet.
    pub membership: Option<Configuration>,
    /// A membership change is under way: a joint configuration is in effect,
    /// a membership entry waits to be chosen, or the leader holds one back.
    pub membership_changing: bool,
    /// The leader is handing leadership to this replica.
    pub transferring_to: Option<NodeId>,
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let leader = self.leader.map_or("-".to_string(), |l| l.to_string());
        write!(
            f,
            "{} {} promised={} leader={} commit={} applied={} snapshot={} last={}",
            self.id,
            self.role,
            self.promised,
            leader,
            self.commit,
            self.applied,
            self.snapshot,
            self.last
        )
    }
}

/// One replica. Drive it with `step`, `tick`, `propose`, `read`; collect work
/// with `ready`; acknowledge durability with `on_persisted`.
pub struct Replica<C> {
    pub(crate) config: Config,
    pub(crate) now: Time,
    pub(crate) rng: Rng,
    /// Acceptor: highest ballot promised. Never decreases.
    pub(crate) promised: Ballot,
    pub(crate) log: Log<C>,
    /// Learner: slots through here were handed to the application.
    pub(crate) applied: Slot,
    pub(crate) role: Role<C>,
    /// The leader whose accepts we last took, and when (stickiness).
    pub(crate) leader: Option<NodeId>,
    pub(crate) leader_contact: Option<Time>,
    /// Acceptor's lease promise: no prepare from another node before this.
    pub(crate) lease_grant: Option<(NodeId, Time)>,
    /// After a restart we forgot any lease we granted: refuse all prepares
    /// until one lease duration has passed.
    pub(crate) prepare_blocked_until: Time,
    pub(crate) election_deadline: Time,
    /// Highest round seen in any message, so a new ballot outbids it.
    pub(crate) round_seen: u64,
    // Output buffers, drained by `ready`.
    pub(crate) persist: Persist<C>,
    pub(crate) outbox: Vec<Envelope<C>>,
    pub(crate) held: VecDeque<(u64, Envelope<C>)>,
    pub(crate) local: VecDeque<(NodeId, Message<C>)>,
    pub(crate) reads_ready: Vec<ReadReady>,
    pub(crate) reads_dropped: Vec<ReadId>,
    pub(crate) snapshots_out: Vec<NodeId>,
    pub(crate) dropped: Vec<C>,
    pub(crate) next_token: u64,
    pub(crate) persisted_token: u64,
    pub(crate) mutation: Option<Mutation>,
    /// The configuration in effect after `membership_scanned` (the commit
    /// point); `None` while a joining replica knows none.
    pub(crate) membership: Option<Configuration>,
    /// Configurations in effect after each slot, from the log start on: the
    /// first entry is the one at or before the snapshot.
    pub(crate) membership_history: Vec<(Slot, Configuration)>,
    /// Committed slots already scanned for membership entries.
    pub(crate) membership_scanned: Slot,
    /// The committed configuration changed since the last `ready`.
    pub(crate) membership_changed: bool,
    /// The `seq` of the accept that last renewed `lease_grant`.
    pub(crate) lease_seq: u64,
    /// The leader of `ballot` released every lease granted by its accepts up
    /// to `seq`, and its stickiness, in favour of `target` (a leadership
    /// transfer).
    pub(crate) released: Option<Release>,
    /// Voters this non-voting replica is catching up because no leader was
    /// heard for an election timeout (see `Replica::help_voters`).
    pub(crate) helping: Vec<Helped>,
    /// Peer messages (or parts of them) refused, by reason.
    pub(crate) refused: Refused,
}

/// A voter a non-voting replica ships chosen slots to while no leader is
/// heard: the last batch sent, so duplicated replies do not multiply batches.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Helped {
    pub(crate) id: NodeId,
    /// Highest commit point it reported.
    pub(crate) commit: Slot,
    /// Last slot of the last batch sent, and when.
    pub(crate) through: Slot,
    pub(crate) sent_at: Option<Time>,
    pub(crate) snapshot_sent_at: Option<Time>,
}

/// A leader's handover: what an acceptor may ignore for the target's sake.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Release {
    pub(crate) ballot: Ballot,
    pub(crate) seq: u64,
    pub(crate) target: NodeId,
}

/// Why a leadership transfer was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TransferError {
    /// Only the leader hands leadership over.
    NotLeader {
        /// The replica believed to lead, if any.
        leader: Option<NodeId>,
    },
    /// The target is this replica.
    ToSelf,
    /// The target does not vote in the current configuration.
    NotVoter(NodeId),
    /// A membership change or another transfer is under way.
    Busy,
}

impl fmt::Display for TransferError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TransferError::NotLeader { leader: Some(l) } => write!(f, "not the leader; try {l}"),
            TransferError::NotLeader { leader: None } => write!(f, "not the leader; none known"),
            TransferError::ToSelf => write!(f, "already the leader"),
            TransferError::NotVoter(n) => write!(f, "{n} is not a voter"),
            TransferError::Busy => write!(f, "a membership change or transfer is under way"),
        }
    }
}

impl std::error::Error for TransferError {}

impl<C: Clone + PartialEq + fmt::Debug> Replica<C> {
    /// A replica that never ran, at local time `now`.
    pub fn new(config: Config, now: Time) -> Result<Replica<C>, ConfigError> {
        Replica::restore(config, Durable::empty(), now)
    }

    /// A replica restarting from its durable state at local time `now`.
    pub fn restore(
        config: Config,
        durable: Durable<C>,
        now: Time,
    ) -> Result<Replica<C>, ConfigError> {
        config.validate()?;
        assert!(
            durable.applied >= durable.snapshot,
            "applied {} below snapshot {}",
            durable.applied,
            durable.snapshot
        );
        let mut log = Log::new(durable.snapshot);
        for record in durable.records {
            log.restore(record);
        }
        log.restore_commit(durable.commit.max(durable.applied));
        // A replica that ever promised anything may have granted a lease it no
        // longer remembers; one that never did cannot have.
        let blocked_ms = if durable.promised == Ballot::ZERO {
            0
        } else {
            config.lease_duration_ms
        };
        let seed = config.rng_seed ^ config.id.0.wrapping_mul(0x2545_f491_4f6c_dd1d);
        let base = match durable.membership {
            Some(r) => Some((r.slot, r.configuration)),
            None if config.join => None,
            None => Some((Slot(0), Configuration::Stable(config.membership()))),
        };
        let scanned = base
            .as_ref()
            .map_or(log.snapshot(), |(s, _)| (*s).max(log.snapshot()));
        let mut replica = Replica {
            now,
            rng: Rng::new(seed),
            promised: durable.promised,
            applied: durable.applied.min(log.commit()),
            log,
            role: Role::Follower,
            leader: None,
            leader_contact: None,
            lease_grant: None,
            prepare_blocked_until: now.plus_ms(blocked_ms),
            election_deadline: now,
            round_seen: durable.promised.round,
            persist: Persist::default(),
            outbox: Vec::new(),
            held: VecDeque::new(),
            local: VecDeque::new(),
            reads_ready: Vec::new(),
            reads_dropped: Vec::new(),
            snapshots_out: Vec::new(),
            dropped: Vec::new(),
            next_token: 1,
            persisted_token: 0,
            mutation: None,
            membership: base.as_ref().map(|(_, c)| c.clone()),
            membership_history: base.into_iter().collect(),
            membership_scanned: scanned,
            membership_changed: false,
            lease_seq: 0,
            released: None,
            helping: Vec::new(),
            refused: Refused::default(),
            config,
        };
        replica.sync_membership();
        replica.membership_changed = false;
        replica.reset_election_deadline();
        replica.check_invariants();
        Ok(replica)
    }

    /// Turns this replica into a deliberately broken variant.
    #[cfg(feature = "mutations")]
    pub fn set_mutation(&mut self, mutation: Option<Mutation>) {
        self.mutation = mutation;
    }

    pub(crate) fn mutated(&self, mutation: Mutation) -> bool {
        self.mutation == Some(mutation)
    }

    /// Handles one message from the network at local time `now`.
    ///
    /// A message no correct peer sends (see [`Refused`] for which) is
    /// dropped, and counted in [`refused`](Replica::refused); no message
    /// makes the replica panic or allocate beyond the bounds in
    /// [`limits`](crate::MESSAGE_SLOTS_MAX).
    pub fn step(&mut self, from: NodeId, message: Message<C>, now: Time) {
        // The arrival time matters: an acceptor's lease grant runs from it.
        self.tick(now);
        if !self.admit(&message) {
            return;
        }
        self.round_seen = self.round_seen.max(message.ballot().round);
        self.dispatch(from, message);
        self.deliver_local();
        self.check_invariants_debug();
    }

    /// Counts and refuses a message that fails the state-free checks of
    /// `limits::judge`, or that proposes in this replica's own ballot;
    /// true when it may be handled.
    fn admit(&mut self, message: &Message<C>) -> bool {
        // Probes, prepares, accepts and handovers speak for their sender's
        // ballot, and this replica's own never come from the network (they
        // are delivered locally): one in its ballot is forged, whoever
        // claims to send it, and taken as an acceptor's it would move a
        // leader's log under its own window.
        let proposal = matches!(
            message,
            Message::Probe { .. }
                | Message::Prepare { .. }
                | Message::Accept { .. }
                | Message::Handover { .. }
        );
        if proposal && message.ballot().node == self.config.id {
            self.refused.malformed += 1;
            return false;
        }
        match judge(message) {
            Verdict::Admit => true,
            Verdict::AbsurdRound => {
                self.refused.absurd_round += 1;
                false
            }
            Verdict::Malformed => {
                self.refused.malformed += 1;
                false
            }
        }
    }

    /// How many peer messages (or parts of them) this replica refused since
    /// it started, by reason.
    pub fn refused(&self) -> Refused {
        self.refused
    }

    fn dispatch(&mut self, from: NodeId, message: Message<C>) {
        match message {
            Message::Probe { ballot, commit } => self.on_probe(from, ballot, commit),
            Message::ProbeReply {
                ballot,
                ok,
                promised,
            } => self.on_probe_reply(from, ballot, ok, promised),
            Message::Prepare { ballot, commit } => self.on_prepare(from, ballot, commit),
            Message::Accept {
                ballot,
                first,
                values,
                commit,
                seq,
                sent_at,
            } => self.on_accept(
                ballot,
                first,
                values,
                Heard {
                    commit,
                    seq,
                    sent_at,
                },
            ),
            Message::Learn {
                ballot,
                first,
                values,
            } => self.on_learn(from, ballot, first, values),
            Message::Promise {
                ballot,
                accepted,
                snapshot,
            } => self.on_promise(from, ballot, accepted, snapshot),
            Message::Accepted {
                ballot,
                first,
                count,
                commit,
                behind,
                seq,
                sent_at,
            } => self.on_accepted(
                from,
                ballot,
                Ack {
                    first,
                    count,
                    commit,
                    behind,
                    seq,
                    sent_at,
                },
            ),
            Message::Learned { ballot, commit } => self.on_learned(from, ballot, commit),
            Message::Reject { ballot, promised } => self.on_reject(ballot, promised),
            Message::Handover {
                ballot,
                seq,
                target,
            } => self.on_handover(ballot, seq, target),
        }
    }

    /// Advances this replica's clock; runs elections, heartbeats and
    /// retransmissions that are due. `now` never goes backwards.
    pub fn tick(&mut self, now: Time) {
        assert!(
            now >= self.now,
            "clock went backwards: {} -> {}",
            self.now,
            now
        );
        self.now = now;
        match &self.role {
            Role::Leader(_) => self.leader_tick(),
            Role::Candidate(_) | Role::Prober(_) | Role::Follower => {
                if now >= self.election_deadline {
                    if self.can_campaign() {
                        self.probe();
                    } else {
                        self.help_voters();
                    }
                }
            }
        }
        self.deliver_local();
        self.check_invariants_debug();
    }

    /// Starts phase 1 now, skipping the timeout and the probe (used by tests
    /// and by a leader transfer).
    pub fn campaign_now(&mut self) {
        if self.can_campaign() {
            self.campaign();
            self.deliver_local();
        }
    }

    /// Queues a command for replication. Only the leader takes commands.
    pub fn propose(&mut self, command: C) -> Result<(), ProposeError> {
        let queued_max = self.config.proposals_queued_max;
        let hint = self.leader_hint();
        let Role::Leader(leader) = &mut self.role else {
            return Err(ProposeError::NotLeader { leader: hint });
        };
        if leader.queue.len() >= queued_max {
            return Err(ProposeError::Busy);
        }
        leader.queue.push_back(command);
        Ok(())
    }

    /// Asks to serve a linearizable read at local time `now` (the lease is
    /// judged against it, so it must be the clock's current reading, not the
    /// last tick's). The answer comes in a later `Ready::reads` (or
    /// `reads_dropped` if leadership is lost first).
    pub fn read(&mut self, id: ReadId, now: Time) -> Result<(), ProposeError> {
        self.tick(now);
        self.leader_read(id)?;
        self.deliver_local();
        Ok(())
    }

    /// The application took a snapshot covering slots through `through`; the
    /// log prefix it covers is dropped.
    pub fn compact(&mut self, through: Slot) {
        assert!(
            through <= self.applied,
            "compact through {through} beyond applied {}",
            self.applied
        );
        if through <= self.log.snapshot() {
            return;
        }
        self.log.compact(through);
        self.persist.compact_through = Some(through);
        if let Some(configuration) = self.membership_at(through) {
            // The entries that chose it may be among those dropped.
            self.membership_history.retain(|(s, _)| *s > through);
            self.membership_history
                .insert(0, (through, configuration.clone()));
            self.persist.membership = Some(MembershipRecord {
                slot: through,
                configuration,
            });
        }
    }

    /// The configuration in effect after `slot` (which governs `slot + 1`),
    /// for `slot` between the log start and the commit point; `None` outside
    /// that range or while a joining replica knows none. A leader ships it
    /// with a snapshot through `slot`.
    pub fn membership_at(&self, slot: Slot) -> Option<Configuration> {
        if slot > self.log.commit() {
            return None;
        }
        self.membership_history
            .iter()
            .rev()
            .find(|(s, _)| *s <= slot)
            .map(|(_, c)| c.clone())
    }

    /// The configuration in effect after the commit point.
    pub fn membership(&self) -> Option<&Configuration> {
        self.membership.as_ref()
    }

    /// Like [`install_snapshot`](Replica::install_snapshot), for a snapshot
    /// that carries the configuration in effect after `slot` (from the
    /// sender's [`membership_at`](Replica::membership_at)): the membership
    /// entries the snapshot covers are not in any log this replica can still
    /// learn from, so a replica that missed a change learns it here. The
    /// configuration is stored with the snapshot (`Persist::membership`).
    pub fn install_snapshot_with_membership(
        &mut self,
        slot: Slot,
        configuration: Configuration,
    ) -> bool {
        if configuration.validate().is_err() || !self.wants_snapshot(slot) {
            return false;
        }
        self.install_snapshot_inner(slot, Some(configuration))
    }

    /// The runtime installed a snapshot covering slots through `slot` into the
    /// application; the core jumps its log there. Returns false (and changes
    /// nothing) when the snapshot is not ahead of the commit point, in which
    /// case the runtime must not have installed it.
    ///
    /// The replica keeps the configuration it knew; when a membership change
    /// may lie inside the snapshot, use
    /// [`install_snapshot_with_membership`](Replica::install_snapshot_with_membership).
    pub fn install_snapshot(&mut self, slot: Slot) -> bool {
        if !self.wants_snapshot(slot) {
            return false;
        }
        self.install_snapshot_inner(slot, None)
    }

    fn install_snapshot_inner(&mut self, slot: Slot, configuration: Option<Configuration>) -> bool {
        self.log.install_snapshot(slot);
        let configuration = configuration.or_else(|| self.membership.clone());
        self.membership_history.clear();
        self.membership_scanned = slot;
        if let Some(c) = configuration {
            if self.membership.as_ref() != Some(&c) {
                self.membership_changed = true;
            }
            self.membership = Some(c.clone());
            self.membership_history.push((slot, c.clone()));
            self.persist.membership = Some(MembershipRecord {
                slot,
                configuration: c,
            });
        }
        self.sync_membership();
        self.applied = self.applied.max(slot);
        self.persist.compact_through = Some(slot);
        self.persist.commit = Some(self.log.commit());
        if let Some(leader) = self.leader {
            // Tell the leader at once, so the log tail follows without
            // waiting for a heartbeat.
            let learned = Message::Learned {
                ballot: self.promised,
                commit: self.log.commit(),
            };
            self.send_after_persist(leader, learned);
        }
        self.check_invariants_debug();
        true
    }

    /// True when a snapshot through `slot` would move this replica forward.
    pub fn wants_snapshot(&self, slot: Slot) -> bool {
        slot > self.log.commit() && !matches!(self.role, Role::Leader(_))
    }

    /// True when `ready` has something to hand out or a token to acknowledge.
    pub fn has_ready(&self) -> bool {
        !self.persist.is_empty()
            || !self.outbox.is_empty()
            || self.held.back().is_some_and(|(t, _)| *t >= self.next_token)
            || self.applied < self.log.commit()
            || !self.reads_ready.is_empty()
            || !self.reads_dropped.is_empty()
            || !self.snapshots_out.is_empty()
            || !self.dropped.is_empty()
            || self.membership_changed
            || self.leader_has_work()
    }

    /// Collects everything to persist, send and apply since the last call.
    pub fn ready(&mut self) -> Ready<C> {
        self.leader_flush();
        self.deliver_local();
        let apply = self.take_apply();
        let token = PersistToken(self.next_token);
        self.next_token += 1;
        Ready {
            persist: std::mem::take(&mut self.persist),
            messages: std::mem::take(&mut self.outbox),
            apply,
            reads: std::mem::take(&mut self.reads_ready),
            reads_dropped: std::mem::take(&mut self.reads_dropped),
            snapshots: std::mem::take(&mut self.snapshots_out),
            dropped: std::mem::take(&mut self.dropped),
            membership: if std::mem::take(&mut self.membership_changed) {
                self.membership.clone()
            } else {
                None
            },
            token,
        }
    }

    fn take_apply(&mut self) -> Vec<Apply<C>> {
        let commit = self.log.commit();
        let mut apply = Vec::with_capacity((commit.0 - self.applied.0) as usize);
        while self.applied < commit {
            let slot = self.applied.next();
            let entry = self
                .log
                .get(slot)
                .unwrap_or_else(|| panic!("committed slot {slot} missing from log"));
            apply.push(Apply {
                slot,
                value: entry.value.clone(),
            });
            self.applied = slot;
        }
        apply
    }

    /// The `persist` of the `Ready` carrying `token` is durable: the replies
    /// that waited for it may go.
    pub fn on_persisted(&mut self, token: PersistToken) {
        // Every token is acknowledged, in order: acknowledging a later one
        // first would release replies whose state may not be durable yet.
        assert!(
            token.0 == self.persisted_token + 1 && token.0 < self.next_token,
            "token {} acknowledged out of order (last {}, issued up to {})",
            token.0,
            self.persisted_token,
            self.next_token - 1
        );
        self.persisted_token = token.0;
        while self.held.front().is_some_and(|(t, _)| *t <= token.0) {
            let (_, envelope) = self.held.pop_front().expect("front exists");
            if envelope.to == self.config.id {
                self.local.push_back((envelope.from, envelope.message));
            } else {
                self.outbox.push(envelope);
            }
        }
        self.deliver_local();
        self.check_invariants_debug();
    }

    /// Who to redirect to: the believed leader, never this replica when it
    /// does not lead.
    pub(crate) fn leader_hint(&self) -> Option<NodeId> {
        self.leader.filter(|l| *l != self.config.id)
    }

    /// A summary of this replica's state.
    pub fn status(&self) -> Status {
        Status {
            id: self.config.id,
            role: self.role_kind(),
            promised: self.promised,
            leader: self.leader,
            commit: self.log.commit(),
            applied: self.applied,
            snapshot: self.log.snapshot(),
            last: self.log.last(),
            membership: self.membership.clone(),
            membership_changing: self.membership_changing(),
            transferring_to: self.transfer_target(),
        }
    }

    /// True while a change is under way: a joint configuration in effect, a
    /// membership entry above the commit point, or one the leader holds.
    pub fn membership_changing(&self) -> bool {
        self.membership.as_ref().is_some_and(|c| c.is_joint())
            || self.pending_configuration().is_some()
            || self.leader_config_requested()
    }

    /// The newest membership entry stored above the commit point (accepted,
    /// not known chosen).
    pub(crate) fn pending_configuration(&self) -> Option<&Configuration> {
        let mut s = self.log.last();
        while s > self.log.commit() {
            if let Some(c) = self.log.get(s).and_then(|e| e.value.configuration()) {
                return Some(c);
            }
            s = s.prev();
        }
        None
    }

    /// True when this replica may run for leader: it knows the committed
    /// configuration (a joining replica that does not cannot know whom to
    /// ask), and votes in it or in the newest configuration it accepted an
    /// entry for. So a removed replica stops campaigning once it knows the
    /// change is committed, a voter of the old half can still finish a
    /// change, and a voter being added may lead before it learned the entry
    /// is chosen (after the old leader removed itself, the new voters may be
    /// the only ones left). Campaigning is always safe: phase 1 asks every
    /// configuration the promises reveal.
    pub(crate) fn can_campaign(&self) -> bool {
        let id = self.config.id;
        let Some(committed) = self.membership.as_ref() else {
            return false;
        };
        committed.is_voter(id) || self.pending_configuration().is_some_and(|c| c.is_voter(id))
    }

    /// True when `node` votes in a configuration this replica knows about
    /// (committed or pending); a replica that knows none accepts anyone.
    pub(crate) fn knows_voter(&self, node: NodeId) -> bool {
        match &self.membership {
            None => true,
            Some(c) => {
                c.is_voter(node)
                    || self
                        .pending_configuration()
                        .is_some_and(|p| p.is_voter(node))
            }
        }
    }

    /// Quorum test with the deliberately broken variants applied.
    pub(crate) fn quorum_met(&self, cfg: &Configuration, acks: &[NodeId], phase1: bool) -> bool {
        let halves = cfg.halves();
        let halves: &[&Membership] =
            if halves.len() == 2 && self.mutated(Mutation::NoJointConsensus) {
                &halves[1..]
            } else {
                &halves[..]
            };
        let slack = u8::from(!phase1 && self.mutated(Mutation::ChooseWithoutQuorum));
        halves.iter().all(|m| {
            let need = if phase1 {
                m.phase1_quorum
            } else {
                m.phase2_quorum
            };
            let need = if slack == 1 { (need - 1).max(1) } else { need };
            m.voters.iter().filter(|v| acks.contains(v)).count() >= need
        })
    }

    /// Asks the group, through the log, to move to membership `new`: the
    /// leader proposes the joint configuration `C_old,new` and, once that is
    /// chosen, `C_new`. The change is finished when `C_new` is chosen
    /// (`Status::membership_changing` turns false). Only one change at a
    /// time; every refusal is an error, never a panic.
    pub fn propose_membership(&mut self, new: Membership) -> Result<(), MembershipError> {
        new.validate()?;
        let changing = self.membership_changing();
        let current = self.membership.clone();
        let Role::Leader(leader) = &mut self.role else {
            return Err(MembershipError::NotLeader {
                leader: self.leader,
            });
        };
        let Some(current) = current else {
            return Err(MembershipError::InProgress);
        };
        if changing || leader.transfer.is_some() || leader.has_config_inflight() {
            return Err(MembershipError::InProgress);
        }
        if *current.target() == new {
            return Err(MembershipError::Unchanged);
        }
        leader.config_request = Some(Configuration::Joint {
            old: current.target().clone(),
            new,
        });
        Ok(())
    }

    /// Scans newly committed slots for membership entries.
    pub(crate) fn sync_membership(&mut self) {
        let commit = self.log.commit();
        let mut s = self.membership_scanned.next();
        while s <= commit {
            if let Some(c) = self.log.get(s).and_then(|e| e.value.configuration()) {
                let c = c.clone();
                self.membership = Some(c.clone());
                self.membership_history.push((s, c));
                self.membership_changed = true;
            }
            s = s.next();
        }
        self.membership_scanned = self.membership_scanned.max(commit);
    }

    /// This replica's configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Proposer role.
    pub fn role_kind(&self) -> RoleKind {
        match self.role {
            Role::Follower => RoleKind::Follower,
            Role::Prober(_) => RoleKind::Prober,
            Role::Candidate(_) => RoleKind::Candidate,
            Role::Leader(_) => RoleKind::Leader,
        }
    }

    /// The ballot this replica leads with, if it leads. A runtime that keeps
    /// per-leadership state (lease deadlines) resets it when this changes:
    /// leading, losing and winning again between two looks is a new
    /// leadership even though the role reads "leader" both times.
    pub fn leading_ballot(&self) -> Option<Ballot> {
        match &self.role {
            Role::Leader(l) => Some(l.ballot),
            _ => None,
        }
    }

    /// The log, for inspection by tests and the simulator.
    pub fn log(&self) -> &Log<C> {
        &self.log
    }

    // ---- plumbing shared by the role handlers ----

    /// Sends a message that depends on nothing unpersisted.
    pub(crate) fn send(&mut self, to: NodeId, message: Message<C>) {
        if to == self.config.id {
            self.local.push_back((to, message));
        } else {
            self.outbox.push(Envelope {
                from: self.config.id,
                to,
                message,
            });
        }
    }

    /// Sends a message once everything persisted so far is durable.
    pub(crate) fn send_after_persist(&mut self, to: NodeId, message: Message<C>) {
        let envelope = Envelope {
            from: self.config.id,
            to,
            message,
        };
        self.held.push_back((self.next_token, envelope));
    }

    pub(crate) fn deliver_local(&mut self) {
        for _ in 0..LOCAL_DELIVERY_ROUNDS_MAX {
            let Some((from, message)) = self.local.pop_front() else {
                self.leader_checks();
                if self.local.is_empty() {
                    return;
                }
                continue;
            };
            self.dispatch(from, message);
        }
        panic!("self-addressed messages did not settle after {LOCAL_DELIVERY_ROUNDS_MAX} rounds");
    }

    pub(crate) fn record(&mut self, record: Option<SlotRecord<C>>) {
        if let Some(r) = record {
            self.persist.records.push(r);
        }
    }

    pub(crate) fn set_promised(&mut self, ballot: Ballot) {
        assert!(
            ballot >= self.promised,
            "promise regressed {} -> {ballot}",
            self.promised
        );
        if ballot > self.promised {
            self.promised = ballot;
            self.persist.promised = Some(ballot);
        }
    }

    pub(crate) fn advance_commit(&mut self) {
        if self.log.advance_commit() {
            self.persist.commit = Some(self.log.commit());
            self.sync_membership();
        }
    }

    pub(crate) fn reset_election_deadline(&mut self) {
        let timeout = self.config.election_timeout_ms;
        let jitter = self.rng.below(timeout);
        self.election_deadline = self.now.plus_ms(timeout + jitter);
    }

    /// Leaves the candidate or leader role: queued commands and pending reads
    /// go back to the caller.
    pub(crate) fn become_follower(&mut self) {
        if let Role::Leader(leader) = std::mem::replace(&mut self.role, Role::Follower) {
            let leader = *leader;
            self.dropped.extend(leader.queue);
            self.reads_dropped
                .extend(leader.reads.into_iter().map(|r| r.id));
            if self.leader == Some(self.config.id) {
                self.leader = None;
            }
        }
        self.reset_election_deadline();
    }

    fn check_invariants_debug(&self) {
        if cfg!(debug_assertions) {
            self.check_invariants();
        }
    }

    /// Checks the replica's invariants; panics naming the broken one. The
    /// simulator calls this after every step.
    pub fn check_invariants(&self) {
        self.log.check_invariants();
        assert!(
            self.applied <= self.log.commit(),
            "applied {} > commit {}",
            self.applied,
            self.log.commit()
        );
        assert!(
            self.applied >= self.log.snapshot(),
            "applied {} < snapshot {}",
            self.applied,
            self.log.snapshot()
        );
        match &self.role {
            Role::Leader(leader) => leader.check_invariants(self),
            Role::Candidate(c) => assert!(
                c.ballot <= self.promised && c.ballot.node == self.config.id,
                "candidate ballot {} vs promised {}",
                c.ballot,
                self.promised
            ),
            Role::Prober(p) => assert!(
                p.ballot > self.promised && p.ballot.node == self.config.id,
                "prober ballot {} vs promised {}",
                p.ballot,
                self.promised
            ),
            Role::Follower => {}
        }
    }
}
