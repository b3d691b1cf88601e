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

use crate::config::Config;
use crate::message::Message;
use crate::mutation::Mutation;
use crate::ready::ReadReady;
use crate::replica::{ProposeError, Replica, Role};
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
    /// Voters (by index) that accepted it.
    acks: u64,
    chosen: bool,
    /// When it was last broadcast; retransmitted a heartbeat later.
    sent_at: Time,
}

/// What the leader knows of one replica (itself included).
struct Peer {
    id: NodeId,
    voter: Option<usize>,
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
/// `inflight[i]` is slot `base + i`; `inflight.len() <= window` except right
/// after takeover, when every open slot is re-proposed at once.
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
}

impl<C: Clone> Leader<C> {
    pub(crate) fn new(config: &Config, ballot: Ballot, base: Slot, now: Time) -> Leader<C> {
        let peers = config
            .voters
            .iter()
            .chain(config.observers.iter())
            .map(|&id| Peer {
                id,
                voter: config.voter_index(id),
                acked_seq: 0,
                acked_sent_at: None,
                commit: Slot(0),
                last_ack: None,
                learn_sent_at: None,
                learn_through: Slot(0),
                snapshot_sent_at: None,
                resent_at: None,
            })
            .collect();
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
        }
    }

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
        let voters = replica.config.voters.len() as u32;
        assert!(
            self.inflight
                .iter()
                .all(|i| i.acks.checked_shr(voters).unwrap_or(0) == 0),
            "acknowledgement from a voter index beyond {voters}"
        );
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

    /// Assigns `values` to the next slots and broadcasts them.
    pub(crate) fn leader_propose(&mut self, values: Vec<Value<C>>) {
        self.with_leader(|this, leader| {
            let first = leader.next_slot();
            for value in &values {
                leader.inflight.push_back(Inflight {
                    value: value.clone(),
                    acks: 0,
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

    /// Packs queued commands into slots while the window has room, and sends
    /// a heartbeat if reads wait for one or the commit point moved.
    pub(crate) fn leader_flush(&mut self) {
        let window = self.config.window_slots_max as usize;
        let batch = self.config.batch_commands_max;
        let Some((values, heartbeat)) = self.with_leader(|this, leader| {
            let mut values = Vec::new();
            while !leader.queue.is_empty() && leader.inflight.len() + values.len() < window {
                let n = leader.queue.len().min(batch);
                let commands: Arc<[C]> = leader.queue.drain(..n).collect();
                values.push(Value::Batch(commands));
            }
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
                l.heartbeat_due
                    || self.log.commit() > l.commit_sent
                    || (!l.queue.is_empty()
                        && (l.inflight.len() as u64) < self.config.window_slots_max)
            }
            _ => false,
        }
    }

    /// Heartbeats, retransmissions, and stepping down when no quorum answers.
    pub(crate) fn leader_tick(&mut self) {
        let timeout = self.config.election_timeout_ms;
        let q2 = self.config.phase2_quorum;
        let lost_quorum = self
            .with_leader(|this, leader| {
                if this.now < leader.elected_at.plus_ms(timeout) {
                    return false;
                }
                let live = leader
                    .peers
                    .iter()
                    .filter(|p| {
                        p.voter.is_some()
                            && p.last_ack.is_some_and(|t| this.now < t.plus_ms(timeout))
                    })
                    .count();
                live < q2
            })
            .unwrap_or(false);
        if lost_quorum {
            self.become_follower();
            return;
        }
        let due = match &self.role {
            Role::Leader(l) => {
                self.now >= l.last_broadcast.plus_ms(self.config.heartbeat_interval_ms)
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
            for i in 0..leader.peers.len() {
                let peer = &leader.peers[i];
                let Some(v) = peer.voter else { continue };
                let recent = peer
                    .resent_at
                    .is_some_and(|t| this.now < t.plus_ms(interval));
                if peer.id == this.config.id || recent {
                    continue;
                }
                let id = peer.id;
                let (first, values) = unacked(leader, v, this.now, interval);
                if values.is_empty() {
                    continue;
                }
                leader.peers[i].resent_at = Some(this.now);
                let accept = this.accept_message(leader, first, values);
                this.send(id, accept);
            }
        });
    }

    /// Sends every replica the commit point, and every voter the open slots
    /// it has not acknowledged for a heartbeat interval.
    fn leader_heartbeat(&mut self) {
        let interval = self.config.heartbeat_interval_ms;
        self.with_leader(|this, leader| {
            leader.seq += 1;
            leader.last_broadcast = this.now;
            leader.commit_sent = this.log.commit();
            leader.heartbeat_due = false;
            for i in 0..leader.peers.len() {
                let (id, voter) = (leader.peers[i].id, leader.peers[i].voter);
                let (first, values) = match voter {
                    Some(v) if id != this.config.id => unacked(leader, v, this.now, interval),
                    _ => (leader.next_slot(), Vec::new()),
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
        let q2 = if self.mutated(Mutation::ChooseWithoutQuorum) {
            (self.config.phase2_quorum - 1).max(1)
        } else {
            self.config.phase2_quorum
        };
        self.with_leader(|this, leader| {
            if ballot != leader.ballot {
                return;
            }
            let now = this.now;
            let Some(peer) = leader.peer_mut(from) else {
                return;
            };
            peer.acked_seq = peer.acked_seq.max(ack.seq);
            peer.acked_sent_at = peer.acked_sent_at.max(Some(ack.sent_at));
            // A replica that says it is behind may have restarted and lost a
            // commit hint it reported before: believe its number as is.
            peer.commit = if ack.behind {
                ack.commit
            } else {
                peer.commit.max(ack.commit)
            };
            peer.last_ack = Some(now);
            if let Some(index) = peer.voter {
                count_acks(leader, index, ack.first, ack.count, q2);
            }
            this.leader_advance_commit(leader);
            this.confirm_reads(leader);
            if ack.behind {
                this.catch_up(leader, from);
            }
        });
    }

    /// A lagging replica stored a `Learn`; send it the next batch.
    pub(crate) fn on_learned(&mut self, from: NodeId, ballot: Ballot, commit: Slot) {
        self.with_leader(|this, leader| {
            if ballot != leader.ballot {
                return;
            }
            if let Some(peer) = leader.peer_mut(from) {
                peer.commit = peer.commit.max(commit);
            }
            this.catch_up(leader, from);
        });
    }

    /// Realigns the open slots after the log learned chosen values from
    /// elsewhere (a `Learn` from an older leader).
    pub(crate) fn leader_sync_commit(&mut self) {
        self.with_leader(|this, leader| this.leader_advance_commit(leader));
    }

    /// Moves the commit point over the chosen prefix of the open slots.
    fn leader_advance_commit(&mut self, leader: &mut Leader<C>) {
        while let Some(front) = leader.inflight.front() {
            let slot = leader.base;
            if slot > self.log.commit() && !front.chosen {
                break;
            }
            let front = leader.inflight.pop_front().expect("front exists");
            leader.base = slot.next();
            if slot > self.log.commit() && !self.log.mark_chosen_if(slot, leader.ballot) {
                // Chosen by a quorum that did not (yet) include our own acceptor.
                let record = self.log.learn(slot, leader.ballot, &front.value);
                self.record(record);
            }
            self.advance_commit();
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
        let last = Slot(commit.0.min(peer.commit.0 + self.config.catchup_slots_max));
        peer.learn_sent_at = Some(now);
        peer.learn_through = last;
        let values = (first.0..=last.0)
            .map(|s| {
                self.log
                    .get(Slot(s))
                    .expect("chosen slot in log")
                    .value
                    .clone()
            })
            .collect();
        let ballot = leader.ballot;
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
            leader: self.leader,
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
        let needed = self.config.confirm_quorum();
        while let Some(read) = leader.reads.front() {
            let confirmed = leader
                .peers
                .iter()
                .filter(|p| p.voter.is_some() && p.acked_seq >= read.seq)
                .count();
            if confirmed < needed {
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
    /// every phase-1 quorum acknowledged: each of them refuses other
    /// prepares for `lease_duration_ms` after *receiving* it.
    pub fn lease_until(&self) -> Option<Time> {
        let Role::Leader(leader) = &self.role else {
            return None;
        };
        let d = self.config.lease_duration_ms;
        if d == 0 {
            return None;
        }
        let mut sent: Vec<Time> = leader
            .peers
            .iter()
            .filter(|p| p.voter.is_some())
            .filter_map(|p| p.acked_sent_at)
            .collect();
        sent.sort_unstable_by(|a, b| b.cmp(a));
        let start = *sent.get(self.config.confirm_quorum() - 1)?;
        Some(start.plus_ms(d - self.config.lease_margin_ms()))
    }
}

/// Marks `first .. first + count` accepted by voter `index`.
fn count_acks<C>(leader: &mut Leader<C>, index: usize, first: Slot, count: u64, quorum: usize) {
    let lo = first.0.max(leader.base.0);
    let hi = (first.0 + count).min(leader.base.0 + leader.inflight.len() as u64);
    for s in lo..hi {
        let slot = &mut leader.inflight[(s - leader.base.0) as usize];
        slot.acks |= 1 << index;
        if slot.acks.count_ones() as usize >= quorum {
            slot.chosen = true;
        }
    }
}

/// The open slots voter `index` has not acknowledged although they went out
/// at least `interval` ago, as one consecutive range.
fn unacked<C: Clone>(
    leader: &Leader<C>,
    index: usize,
    now: Time,
    interval: u64,
) -> (Slot, Vec<Value<C>>) {
    let missing =
        |i: &Inflight<C>| i.acks & (1 << index) == 0 && now >= i.sent_at.plus_ms(interval);
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
