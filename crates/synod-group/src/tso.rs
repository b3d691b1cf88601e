//! The timestamp oracle (design 0011): the group's leader hands out
//! revisions as timestamps that increase in real time across leaders.
//!
//! ```text
//!   request ─► replica.read(): confirmed leadership ─► window has room? ─► first..=last
//!                                                       │ no
//!                                                       ▼
//!             ReserveRevisions{count} through the log (this ballot only)
//!             applied here, still leading with that ballot ─► window ─► serve waiters
//! ```
//!
//! Why the order holds (O1: a range handed out after another was
//! received lies above it): a window comes only from a reservation that
//! this leader proposed under its current ballot and saw applied, and the
//! log puts every reservation of a later leader after it, so later
//! leaders' windows lie above. A leader hands out only after confirming,
//! after the request arrived, that it still leads (lease or heartbeat
//! quorum), and a successor can only be confirmed after that; within one
//! leadership the window only moves up. The simulator's clients check O1
//! under every fault, and its negative control (serving without the
//! confirmation) must be caught.

use crate::group::{Group, ReplyTo, Waiter};
use crate::types::Ticket;
use crate::types::{Answer, Granted, PeerItem, Timestamps};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use synod_kv::RESERVE_REVISIONS_MAX;
use synod_paxos::{Ballot, ProposeError, ReadId};
use synod_proto::synodpb::command::Op;
use synod_proto::synodpb::{outcome, Outcome, ReserveRevisions};

/// The most timestamps one request may take.
pub const TIMESTAMPS_MAX: u32 = 1 << 16;
/// Revisions a leader reserves at once (more when a waiter needs more):
/// one log command covers this many timestamps.
pub const TIMESTAMP_BATCH: u64 = 4_096;

const _: () = assert!(TIMESTAMPS_MAX as u64 <= RESERVE_REVISIONS_MAX);
const _: () = assert!(TIMESTAMP_BATCH <= RESERVE_REVISIONS_MAX);

/// The oracle's state on one replica.
#[derive(Default)]
pub(crate) struct Oracle {
    /// Revisions reserved by this leadership, not yet handed out:
    /// `(ballot, next, last)`.
    window: Option<(Ballot, i64, i64)>,
    /// This leadership's reservation in flight: its `(session, seq)` and
    /// the ballot it was proposed under.
    reserving: Option<((u64, u64), Ballot)>,
    /// Confirmed requests waiting for a window.
    waiting: VecDeque<(u32, Vec<i64>, ReplyTo)>,
    /// Questions forwarded to the leader, by token.
    pub(crate) asked: BTreeMap<u64, Ticket>,
}

impl Oracle {
    /// Forgets the requests of clients that stopped waiting.
    pub(crate) fn abandon(&mut self, tickets: &BTreeSet<Ticket>) {
        self.asked.retain(|_, t| !tickets.contains(t));
        self.waiting
            .retain(|(_, _, r)| !matches!(r, ReplyTo::Local(t) if tickets.contains(t)));
    }
}

impl Group {
    /// Timestamps for a client here (`reply` local) or for a member that
    /// asked us as its leader.
    pub(crate) fn timestamps(&mut self, count: u32, leases: Vec<i64>, reply: ReplyTo) {
        if !self.config.timestamp_oracle
            || count == 0
            || count > TIMESTAMPS_MAX
            || leases.len() > TIMESTAMPS_MAX as usize
        {
            self.route_timestamps(reply, None, &[]);
            return;
        }
        #[cfg(feature = "mutations")]
        if self.mutated(crate::group::GroupMutation::UnconfirmedTimestamps)
            && self.replica.leading_ballot().is_some()
        {
            self.serve_timestamps(count, leases, reply);
            return;
        }
        let rid = ReadId(self.next_read);
        self.next_read += 1;
        match self.replica.read(rid, self.now) {
            Ok(()) => {
                self.reads.insert(
                    rid,
                    Waiter::Timestamps {
                        count,
                        leases,
                        reply,
                    },
                );
            }
            Err(ProposeError::NotLeader { leader: Some(l) })
                if l != self.config.node && matches!(reply, ReplyTo::Local(_)) =>
            {
                let ReplyTo::Local(ticket) = reply else {
                    unreachable!("matched above")
                };
                let token = self.next_token;
                self.next_token += 1;
                self.oracle.asked.insert(token, ticket);
                self.sends.push((
                    l,
                    PeerItem::TimestampQuery {
                        token,
                        count,
                        leases,
                    },
                ));
            }
            // No leader known, busy, or asked as a leader we are not: the
            // asker tries again.
            Err(_) => self.route_timestamps(reply, None, &[]),
        }
    }

    /// At a confirmed point of this leadership: hand out from the window,
    /// or wait for the next reservation.
    pub(crate) fn serve_timestamps(&mut self, count: u32, leases: Vec<i64>, reply: ReplyTo) {
        let ballot = self.replica.leading_ballot();
        match &mut self.oracle.window {
            Some((b, next, last)) if Some(*b) == ballot && *last - *next + 1 >= count as i64 => {
                let first = *next;
                *next += count as i64;
                let range = Some((first, first + count as i64 - 1));
                self.route_timestamps(reply, range, &leases);
            }
            _ => {
                self.oracle.waiting.push_back((count, leases, reply));
                self.reserve_timestamps();
            }
        }
    }

    /// Proposes a reservation under the current ballot unless one is in
    /// flight.
    fn reserve_timestamps(&mut self) {
        let Some(ballot) = self.replica.leading_ballot() else {
            return;
        };
        if self.oracle.reserving.is_some_and(|(_, b)| b == ballot) {
            return;
        }
        let needed: u64 = self.oracle.waiting.iter().map(|(c, _, _)| *c as u64).sum();
        let count = needed.clamp(TIMESTAMP_BATCH, RESERVE_REVISIONS_MAX);
        let key = self.next_key();
        self.oracle.reserving = Some((key, ballot));
        let op = Op::ReserveRevisions(ReserveRevisions { count });
        self.write(
            key,
            Some(op),
            None,
            None,
            crate::group::WriteKind::LeaderOnly,
        );
    }

    /// A command applied here: if it is this leadership's reservation, its
    /// range becomes the window (only while the same ballot leads).
    pub(crate) fn reservation_applied(&mut self, key: (u64, u64), outcome: &Outcome) {
        let Some((mine, ballot)) = self.oracle.reserving else {
            return;
        };
        if mine != key {
            return;
        }
        self.oracle.reserving = None;
        let Some(outcome::Result::Reserved(r)) = &outcome.result else {
            return;
        };
        if self.replica.leading_ballot() != Some(ballot) {
            return;
        }
        self.oracle.window = Some((ballot, r.first, r.last));
        let waiting = std::mem::take(&mut self.oracle.waiting);
        for (count, leases, reply) in waiting {
            self.serve_timestamps(count, leases, reply);
        }
    }

    /// Each tick: a leadership that ended drops its window and refuses
    /// what waited on it; a reservation lost with a leader change is
    /// forgotten.
    pub(crate) fn oracle_duties(&mut self) {
        let ballot = self.replica.leading_ballot();
        if self
            .oracle
            .window
            .is_some_and(|(b, _, _)| Some(b) != ballot)
        {
            self.oracle.window = None;
        }
        if self
            .oracle
            .reserving
            .is_some_and(|(key, b)| Some(b) != ballot || !self.writes.contains_key(&key))
        {
            self.oracle.reserving = None;
        }
        if ballot.is_none() {
            for (_, _, reply) in std::mem::take(&mut self.oracle.waiting) {
                self.route_timestamps(reply, None, &[]);
            }
        } else if !self.oracle.waiting.is_empty() {
            self.reserve_timestamps();
        }
    }

    /// Hands out `range` (or says none could be), with the asked leases
    /// live and the auth store as they are at this moment: a confirmed
    /// point of this leadership, so a lease found live here was not
    /// revoked, and no auth change was applied, before these timestamps
    /// were handed out (designs 0017, 0018).
    fn route_timestamps(&mut self, reply: ReplyTo, range: Timestamps, leases: &[i64]) {
        let granted = match range {
            Some(_) => Granted {
                live: if leases.is_empty() {
                    Vec::new()
                } else {
                    self.kv.live_leases(leases)
                },
                auth: self.kv.auth_fence(),
            },
            None => Granted::default(),
        };
        match reply {
            ReplyTo::Local(ticket) => self
                .answers
                .push((ticket, Answer::Timestamps(range, granted))),
            ReplyTo::Remote { to, token } => self.sends.push((
                to,
                PeerItem::TimestampAnswer {
                    token,
                    range,
                    granted,
                },
            )),
        }
    }

    /// Requests waiting here for timestamps.
    pub(crate) fn timestamp_waiters(&self) -> usize {
        self.oracle.waiting.len() + self.oracle.asked.len()
    }
}
