//! The leader's lease duties: keep-alives and time-to-live questions are
//! answered only at a point where this replica surely still leads, every
//! lease restarts on a new leadership, and expiries are proposed through
//! the log after a leadership confirmation.

use crate::group::{Group, ReplyTo, Waiter};
use crate::types::PeerItem;
use synod_paxos::ReadId;

impl Group {
    /// A lease question: the leader answers once it confirmed it still
    /// leads; anyone else asks the leader.
    pub(crate) fn lease_query(&mut self, id: i64, renew: bool, reply: ReplyTo) {
        #[cfg(feature = "mutations")]
        if self.mutated(crate::group::GroupMutation::UnconfirmedKeepalives)
            && self.replica.leading_ballot().is_some()
        {
            self.answer_lease(id, renew, reply);
            return;
        }
        let rid = ReadId(self.next_read);
        self.next_read += 1;
        if self.replica.read(rid, self.now).is_ok() {
            self.reads.insert(rid, Waiter::Lease { id, renew, reply });
            return;
        }
        let ReplyTo::Local(ticket) = reply else {
            // Asked by a peer that thinks we lead; it will ask again.
            return;
        };
        match self.replica.status().leader {
            Some(leader) if leader != self.config.node => {
                let token = self.next_token;
                self.next_token += 1;
                self.lease_queries.insert(token, ticket);
                self.sends
                    .push((leader, PeerItem::LeaseQuery { token, id, renew }));
            }
            // No leader known: the caller times out and asks again.
            _ => {}
        }
    }

    /// Answers a lease question at a confirmed point of leadership.
    pub(crate) fn answer_lease(&mut self, id: i64, renew: bool, reply: ReplyTo) {
        let now = self.now.0;
        let answer = if renew {
            self.lessor.renew(&self.kv, id, now).map(|ttl| (ttl, ttl))
        } else {
            self.lessor.remaining(&self.kv, id, now)
        };
        self.route_lease_answer(reply, answer);
    }

    /// Restarts every lease's time on taking over, then proposes the
    /// expiry of those that ran out, after confirming leadership.
    pub(crate) fn lease_duties(&mut self) {
        if self.config.stamped {
            // A shard's leases are stubs listing its keys: the meta group
            // decides when leases end (design 0017).
            return;
        }
        let ballot = self.replica.leading_ballot();
        let now = self.now.0;
        // A new leadership, even one that followed another between two
        // ticks, restarts every lease (etcd's promote).
        if ballot.is_some() && ballot != self.led_ballot {
            self.lessor.promote(&self.kv, now);
        }
        self.led_ballot = ballot;
        if ballot.is_none() {
            return;
        }
        let due = self.lessor.due(now);
        if due.is_empty() {
            return;
        }
        // Confirm leadership first: a deposed leader that has not noticed
        // holds deadlines its successor's renewals never reached, and its
        // proposal could still be chosen later (a new leader re-proposes
        // what it finds accepted). The simulator checks it.
        let rid = ReadId(self.next_read);
        self.next_read += 1;
        if self.replica.read(rid, self.now).is_ok() {
            self.reads.insert(rid, Waiter::Expire(due));
        }
    }
}
