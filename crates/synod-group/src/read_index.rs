//! Linearizable reads on a follower by read index: the follower asks the
//! leader for a point at which it surely led, waits until it has applied
//! that slot, and serves from its own state. No log entry, no fsync.
//!
//! ```text
//!   follower                                    leader
//!   read ─► index_waiting ─(ready: one question per round)─► ReadIndex{token}
//!                                               replica.read(): lease, or one
//!                                               heartbeat quorum for every read
//!                                               registered meanwhile
//!   reads_at (slot) ◄──────────────────────── ReadIndexAnswer{token, slot}
//!   applied ≥ slot ─► serve locally
//! ```
//!
//! Why it is linearizable: the question leaves after the read arrived; the
//! leader confirms it leads at a moment after the question arrived, and
//! its commit point then covers every write acknowledged before that
//! moment, so also every write acknowledged before the read arrived. The
//! follower's state at any applied slot at or past that point holds them
//! all (R1). A refusal (not the leader, leadership lost before the
//! confirmation) or no answer within [`REFORWARD_MS`](crate::REFORWARD_MS)
//! sends the reads back to wait for the next question; the simulator's
//! negative control serves follower reads without a question and must be
//! caught.

use crate::group::{Group, Waiter, WaitingRead};
#[cfg(feature = "mutations")]
use crate::types::Answer;
use crate::types::PeerItem;
use crate::REFORWARD_MS;
use synod_paxos::{NodeId, ReadId, RoleKind, Slot, Time};

/// Follower reads handed to the leader in one question.
pub(crate) struct Question {
    /// Whom it was asked of: an answer from anyone else is ignored.
    pub(crate) to: NodeId,
    pub(crate) asked_at: Time,
    pub(crate) reads: Vec<WaitingRead>,
}

impl Group {
    /// A linearizable read this replica cannot confirm itself: it waits
    /// for the next question to the leader.
    pub(crate) fn read_by_index(&mut self, read: WaitingRead) {
        #[cfg(feature = "mutations")]
        if self.mutated(crate::group::GroupMutation::FollowerReadsUnconfirmed) {
            let answer = Answer::Read(self.kv.range_deferred(&read.request));
            self.answers.push((read.ticket, answer));
            return;
        }
        self.counters.reads_follower += 1;
        self.index_waiting.push(read);
    }

    /// Whom the waiting reads can be asked of now: the leader, or this
    /// replica when it leads; `None` when nothing can move (no reads, no
    /// leader known, or a refusal since the last tick). Whenever this is
    /// `Some`, [`ask_read_index`](Group::ask_read_index) empties
    /// `index_waiting` (the shell's loop would spin otherwise).
    pub(crate) fn read_index_target(&self) -> Option<NodeId> {
        if self.index_waiting.is_empty() || self.index_refused {
            return None;
        }
        let leader = self.replica.status().leader?;
        let me = self.config.node;
        (leader != me || self.replica.role_kind() == RoleKind::Leader).then_some(leader)
    }

    /// Sends one question for every read that arrived since the last one
    /// (called once per round, so reads batch by themselves under load).
    /// When this replica leads now, its reads register here instead.
    pub(crate) fn ask_read_index(&mut self) {
        let Some(leader) = self.read_index_target() else {
            return;
        };
        if leader == self.config.node {
            for read in std::mem::take(&mut self.index_waiting) {
                // Lost the lead meanwhile: asked after the next tick.
                if let Some(read) = self.leader_read(read) {
                    self.index_waiting.push(read);
                    self.index_refused = true;
                }
            }
            return;
        }
        let token = self.next_token;
        self.next_token += 1;
        let question = Question {
            to: leader,
            asked_at: self.now,
            reads: std::mem::take(&mut self.index_waiting),
        };
        self.index_asked.insert(token, question);
        self.sends.push((leader, PeerItem::ReadIndex { token }));
        self.counters.read_index_asked += 1;
    }

    /// A follower's question, on the leader: answered with the commit
    /// point once leadership is confirmed, or refused at once when this
    /// replica does not lead.
    pub(crate) fn answer_read_index(&mut self, from: NodeId, token: u64) {
        let rid = ReadId(self.next_read);
        self.next_read += 1;
        if self.replica.read(rid, self.now).is_ok() {
            self.counters.read_index_answered += 1;
            self.reads.insert(rid, Waiter::Index { to: from, token });
        } else {
            self.sends
                .push((from, PeerItem::ReadIndexAnswer { token, slot: None }));
        }
    }

    /// The leader's answer: the reads wait for `slot` to apply here, or,
    /// refused, for the next question (asked after the next tick, so a
    /// stale leader hint does not bounce questions every round).
    pub(crate) fn read_index_answered(&mut self, from: NodeId, token: u64, slot: Option<Slot>) {
        let Some(question) = self.index_asked.get(&token) else {
            return;
        };
        if question.to != from {
            tracing::warn!(%from, token, "read index answer from a node not asked: ignored");
            return;
        }
        let question = self.index_asked.remove(&token).expect("looked up above");
        match slot {
            Some(slot) => {
                for read in question.reads {
                    self.wait_for_slot(slot, Waiter::Read(read));
                }
                self.serve_reads();
            }
            None => {
                self.index_waiting.extend(question.reads);
                self.index_refused = true;
            }
        }
    }

    /// Questions unanswered for [`REFORWARD_MS`] (lost, or the leader
    /// changed) go again; a refusal's pause ends.
    pub(crate) fn read_index_duties(&mut self) {
        self.index_refused = false;
        let now = self.now;
        let late: Vec<u64> = self
            .index_asked
            .iter()
            .filter(|(_, q)| now.0.saturating_sub(q.asked_at.0) >= REFORWARD_MS)
            .map(|(t, _)| *t)
            .collect();
        for token in late {
            let question = self.index_asked.remove(&token).expect("listed above");
            self.index_waiting.extend(question.reads);
        }
    }

    /// Queues a waiter for `slot` to apply, keeping `reads_at` in slot
    /// order (R2) so that serving stops at the first one not yet due.
    pub(crate) fn wait_for_slot(&mut self, slot: Slot, waiter: Waiter) {
        let at = self.reads_at.partition_point(|(s, _)| *s <= slot);
        self.reads_at.insert(at, (slot, waiter));
    }

    /// Reads waiting for a question or its answer.
    pub(crate) fn index_reads(&self) -> usize {
        self.index_waiting.len()
            + self
                .index_asked
                .values()
                .map(|q| q.reads.len())
                .sum::<usize>()
    }
}
