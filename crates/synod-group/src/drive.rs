//! The group's half of the runtime loop: take the replica's `Ready`, apply
//! what was chosen, answer what waited, and hand the shell one
//! [`GroupReady`] to send and persist.
//!
//! ```text
//!   replica.ready() ─► apply chosen slots ─► serve reads ─► snapshot? ─► GroupReady
//!                                                                          │
//!   shell: connect ─► send ─► write persist + snapshot (one fsync) ─► on_persisted(token)
//! ```

use crate::group::{Group, ReplyTo, Waiter};
use crate::types::{Answer, Compaction, GroupReady, LeaseAnswer, PeerItem};
use bytes::Bytes;
use prost::Message as _;
use std::collections::BTreeMap;
use synod_kv::StateChanges;
use synod_paxos::{Persist, PersistToken, Ready, RoleKind, Slot, Value};
use synod_proto::synodpb::command::Op;
use synod_proto::synodpb::zk_op::Op as ZkOpKind;
use synod_proto::synodpb::{outcome, Command, LeaseExpire};

/// Bytes of applied commands after which the log is compacted even before
/// `snapshot_every` slots: the log lives in memory until compacted, and
/// large values would otherwise hold gigabytes there. Deleting the
/// compacted records is one storage operation whose time grows with
/// their bytes, inside one round of the node: at 64 MiB it took 0.12 to
/// 0.52 s (1 KiB puts on `synod dev`), the write stall of issue 14;
/// compacting every 8 MiB keeps each deletion an eighth of that.
pub const COMPACT_LOG_BYTES: u64 = 8 << 20;

/// Slots behind the applied slot a node's compaction leaves in the log
/// (`GroupConfig::compact_keep`): a follower that far behind catches up
/// from the log, not from a snapshot of the whole state (etcd keeps 5,000
/// entries for the same reason).
pub const COMPACT_KEEP_SLOTS: u64 = 1_000;

/// Rounds that applied commands between two writes of a group's rows
/// (`GroupConfig::state_flush_rounds`). Writing every round rewrote the
/// meta row, the session rows and the last page of versions once per
/// round, and with several shards one set of pages per shard per round:
/// the storage commit was the largest cost of a put (docs/perf). A
/// restart replays at most this many rounds of the log.
pub const STATE_FLUSH_ROUNDS: u64 = 32;

/// Bytes of rows waiting in memory past which they are written whatever
/// the round count: long values stay in memory until their rows are.
pub const STATE_FLUSH_BYTES: u64 = 4 << 20;

/// Rows waiting this long are written even if no more rounds come: an
/// idle group's restart replays nothing old.
pub const STATE_FLUSH_IDLE_MS: u64 = 1_000;

impl Group {
    /// True when [`ready`](Group::ready) has work to hand out.
    pub fn has_ready(&self) -> bool {
        self.replica.has_ready()
            || !self.sends.is_empty()
            || !self.answers.is_empty()
            || !self.events.is_empty()
            || !self.zk_events.is_empty()
            || self.compact_out.is_some()
            || self.jump.is_some()
            || self.membership_out.is_some()
            || self.installed.is_some()
            || !self.snapshots_out.is_empty()
            || self.read_index_target().is_some()
            || self.stamper.out.is_some()
            || !self.splits.is_empty()
            || self.flush_now
    }

    /// Everything to send, persist and answer since the last call. Handle
    /// it as [`GroupReady`] says, then call
    /// [`on_persisted`](Group::on_persisted) with its token.
    pub fn ready(&mut self) -> GroupReady {
        // A phase 1 starts with a promise to persist, so every election
        // passes through here while this replica is a candidate.
        let role = self.replica.role_kind();
        if role != self.last_role && role == RoleKind::Candidate {
            self.counters.elections += 1;
        }
        self.last_role = role;
        let ready = self.replica.ready();
        let token = ready.token;
        let persist = self.handle_ready(ready);
        // A compaction now covers what this round applied: this round's
        // rows hold its effects. One installed from the leader in the same
        // round is older: the new one covers it.
        self.maybe_compact();
        self.ask_read_index();
        self.take_output(token, persist)
    }

    /// The write of the [`GroupReady`] carrying `token` is durable.
    pub fn on_persisted(&mut self, token: PersistToken) {
        self.replica.on_persisted(token);
    }

    /// The oldest [`GroupReady`] not yet reported written is committed
    /// (readable from the disk, durable or not): the long values its
    /// `state` wrote are read from disk from now on. Call it once per
    /// ready, in order.
    pub fn on_written(&mut self) {
        if self.carried_rows.pop_front().unwrap_or(true) {
            self.kv.changes_written();
        }
    }

    /// Writes the state machine's rows in the next ready, and makes one:
    /// a reader of the rows on disk (a backup) needs them as applied now.
    pub fn write_rows_now(&mut self) {
        self.flush_now = true;
    }

    /// Rows waiting since `STATE_FLUSH_IDLE_MS` go out with the next ready.
    pub(crate) fn rows_duties(&mut self) {
        if self.rounds_unwritten > 0
            && self.now.0.saturating_sub(self.rows_written_at.0) >= STATE_FLUSH_IDLE_MS
        {
            self.flush_now = true;
        }
    }

    /// Whether this ready writes the state machine's rows. It must when
    /// its write changes what the rows stand for: a compaction (the log
    /// below it goes, so the rows must hold it), a snapshot installed, a
    /// split (the new group's rows and the parent's go in one write), a
    /// store to rewrite whole. Otherwise every `state_flush_rounds`
    /// rounds that applied something, or past `STATE_FLUSH_BYTES`.
    fn rows_due(&self, persist: &Persist<Bytes>) -> bool {
        let compacting = self.compact_out.is_some() || persist.compact_through.is_some();
        #[cfg(feature = "mutations")]
        let compacting = compacting
            && self.mutation != Some(crate::group::GroupMutation::RowsUnwrittenAtCompaction);
        self.flush_now
            || compacting
            || self.installed.is_some()
            || self.jump.is_some()
            || !self.splits.is_empty()
            || self.kv.unwritten_clear()
            || self.rounds_unwritten >= self.config.state_flush_rounds.max(1)
            || self.kv.unwritten_bytes() >= STATE_FLUSH_BYTES
    }

    fn take_output(&mut self, token: PersistToken, persist: Persist<Bytes>) -> GroupReady {
        let membership = self.membership_out.take();
        if self.applied != self.ready_applied {
            self.ready_applied = self.applied;
            self.rounds_unwritten += 1;
        }
        let rows = self.rows_due(&persist);
        let state = if rows {
            self.flush_now = false;
            self.rounds_unwritten = 0;
            self.rows_written_at = self.now;
            self.kv.take_changes()
        } else {
            StateChanges::default()
        };
        self.carried_rows.push_back(rows);
        GroupReady {
            sends: std::mem::take(&mut self.sends),
            persist,
            state,
            applied_through: self.applied,
            compact: self.compact_out.take(),
            token,
            answers: std::mem::take(&mut self.answers),
            events: std::mem::take(&mut self.events),
            zk_events: std::mem::take(&mut self.zk_events),
            revision: self.kv.revision(),
            jump: self.jump.take(),
            members_changed: std::mem::take(&mut self.members_changed) || membership.is_some(),
            membership,
            expired: std::mem::take(&mut self.expired),
            stamps: self.stamper.out.take(),
            applied: std::mem::take(&mut self.applied_log),
            installed: self.installed.take(),
            snapshots: std::mem::take(&mut self.snapshots_out),
            splits: std::mem::take(&mut self.splits),
        }
    }

    /// Applies and routes one `Ready` of the replica; returns what it must
    /// persist.
    fn handle_ready(&mut self, ready: Ready<Bytes>) -> Persist<Bytes> {
        for e in ready.messages {
            self.sends.push((e.to, PeerItem::Paxos(e.message)));
        }
        for apply in &ready.apply {
            self.apply(apply.slot, &apply.value);
        }
        for read in &ready.reads {
            match self.reads.remove(&read.id) {
                // A follower's question: it waits for the slot itself.
                Some(Waiter::Index { to, token }) => self.sends.push((
                    to,
                    PeerItem::ReadIndexAnswer {
                        token,
                        slot: Some(read.slot),
                    },
                )),
                // Handed out at once: the confirmation is all they need.
                Some(Waiter::Timestamps {
                    count,
                    leases,
                    reply,
                }) => self.serve_timestamps(count, leases, reply),
                Some(w) => self.wait_for_slot(read.slot, w),
                None => {}
            }
        }
        for id in &ready.reads_dropped {
            match self.reads.remove(id) {
                // Retry as a follower read.
                Some(Waiter::Read(w)) => self.read(w, false),
                Some(Waiter::Lease { id, renew, reply }) => self.lease_query(id, renew, reply),
                Some(Waiter::Index { to, token }) => self
                    .sends
                    .push((to, PeerItem::ReadIndexAnswer { token, slot: None })),
                Some(Waiter::Timestamps {
                    count,
                    leases,
                    reply,
                }) => self.timestamps(count, leases, reply),
                // Not leading any more: the next leader decides.
                Some(Waiter::Expire(_)) | None => {}
            }
        }
        for command in ready.dropped {
            if let Ok(c) = Command::decode(command) {
                self.submit((c.client, c.seq));
            }
        }
        for to in ready.snapshots {
            if !self.snapshots_out.contains(&to) {
                self.snapshots_out.push(to);
            }
        }
        if let Some(configuration) = ready.membership {
            self.membership_out = Some(configuration);
        }
        self.serve_reads();
        ready.persist
    }

    fn apply(&mut self, slot: Slot, value: &Value<Bytes>) {
        assert_eq!(slot, self.applied.next(), "apply out of order");
        self.applied = slot;
        if self.config.record_applied {
            self.applied_log.push((slot, value.clone()));
        }
        let Value::Batch(commands) = value else {
            return;
        };
        self.log_bytes += commands.iter().map(|c| c.len() as u64).sum::<u64>();
        for bytes in commands.iter() {
            let Ok(command) = Command::decode(bytes.clone()) else {
                tracing::error!(%slot, "undecodable command in the log skipped");
                continue;
            };
            let existed = self.leases_expiring(&command);
            let mut applied = self.kv.apply(&command);
            self.counters.applied_commands += 1;
            if let Some((id, kv)) = self.kv.take_split() {
                let membership = self.replica.membership_at(slot);
                self.splits
                    .push(crate::types::SplitOff { id, kv, membership });
            }
            if !applied.duplicate {
                self.reservation_applied((command.client, command.seq), &applied.outcome);
                self.follow_leases(&command, existed);
                self.saw_session(command.client, applied.revision);
                if let Some(outcome::Result::SessionExpire(expired)) = &applied.outcome.result {
                    self.sessions_expired(expired);
                }
            }
            self.events.append(&mut applied.events);
            self.zk_events.append(&mut applied.zk_events);
            let key = (command.client, command.seq);
            if command.stamp != 0 && self.restamp(key, &applied.outcome) {
                continue;
            }
            if let Some(p) = self.writes.remove(&key) {
                if let Some(ticket) = p.ticket {
                    self.answers.push((ticket, Answer::Write(applied.outcome)));
                }
            }
        }
    }

    /// The leases an expiry command will remove (those that still exist).
    fn leases_expiring(&self, command: &Command) -> Vec<i64> {
        match &command.op {
            Some(Op::LeaseExpire(LeaseExpire { ids })) => ids
                .iter()
                .copied()
                .filter(|id| self.kv.leases().contains(*id))
                .collect(),
            _ => Vec::new(),
        }
    }

    /// Keeps lease deadlines in step with grants and revocations.
    fn follow_leases(&mut self, command: &Command, existed: Vec<i64>) {
        let now = self.now.0;
        match &command.op {
            Some(Op::LeaseGrant(r)) => {
                if let Some(l) = self.kv.leases().get(r.id) {
                    self.lessor.granted(r.id, l.ttl, now);
                }
            }
            Some(Op::LeaseRevoke(r)) => self.lessor.revoked(r.id),
            Some(Op::LeaseExpire(r)) => {
                for id in &r.ids {
                    self.lessor.revoked(*id);
                }
                self.expired.extend(existed);
            }
            Some(Op::MemberTable(_)) => self.members_changed = true,
            // A ZooKeeper session is a lease the lessor times like any.
            Some(Op::Zk(w)) => {
                for op in &w.ops {
                    match &op.op {
                        Some(ZkOpKind::OpenSession(s)) => {
                            if let Some(l) = self.kv.leases().get(s.id) {
                                self.lessor.granted(s.id, l.ttl, now);
                            }
                        }
                        Some(ZkOpKind::CloseSession(s)) => self.lessor.revoked(s.id),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }

    /// Serves the reads whose slot has been applied.
    pub(crate) fn serve_reads(&mut self) {
        while let Some((slot, _)) = self.reads_at.front() {
            if *slot > self.applied {
                break;
            }
            let (_, w) = self.reads_at.pop_front().expect("front exists");
            self.serve(w);
        }
    }

    fn serve(&mut self, waiter: Waiter) {
        match waiter {
            Waiter::Read(w) => {
                let answer = Answer::Read(self.kv.range_deferred(&w.request));
                self.answers.push((w.ticket, answer));
            }
            Waiter::Lease { id, renew, reply } => self.answer_lease(id, renew, reply),
            Waiter::Expire(ids) => self.issue_as_leader(Op::LeaseExpire(LeaseExpire { ids })),
            Waiter::Index { .. } => unreachable!("read-index questions are answered, not queued"),
            Waiter::Timestamps {
                count,
                leases,
                reply,
            } => self.serve_timestamps(count, leases, reply),
        }
    }

    /// Every `snapshot_every` applied slots, or once the log since the
    /// last compaction holds [`COMPACT_LOG_BYTES`], the log is compacted
    /// through `compact_keep` slots before the applied slot: the rows
    /// written with this round hold the effects of every entry deleted. Nothing is copied: the state is on
    /// disk already, so compacting often is cheap, and it bounds the log a
    /// replica keeps in memory.
    fn maybe_compact(&mut self) {
        let every = self.config.snapshot_every.max(1);
        let slots_due = self.applied.0 >= self.compacted.0.saturating_add(every);
        if !slots_due && self.log_bytes < COMPACT_LOG_BYTES {
            return;
        }
        // A tail of the log stays, so a follower a little behind catches
        // up from the log instead of needing a whole snapshot.
        let keep = self.config.compact_keep.min(every / 2);
        let mut slot = Slot(self.applied.0.saturating_sub(keep));
        if let Some(held) = self.held_at() {
            slot = slot.min(held);
        }
        if slot <= self.compacted {
            return;
        }
        self.log_bytes = 0;
        // Asked before compacting: the entries that chose it may go.
        let membership = self.replica.membership_at(slot);
        self.replica.compact(slot);
        self.compacted = slot;
        self.compact_out = Some(Compaction { slot, membership });
    }

    /// Answers the writes a snapshot from the leader already contains.
    pub(crate) fn answer_from_sessions(&mut self) {
        let known: BTreeMap<(u64, u64), _> = self
            .writes
            .keys()
            .filter_map(|&(c, q)| Some(((c, q), self.kv.session_outcome(c, q)?.clone())))
            .collect();
        for (key, outcome) in known {
            if let Some(ticket) = self.writes.remove(&key).and_then(|p| p.ticket) {
                self.answers.push((ticket, Answer::Write(outcome)));
            }
        }
    }

    /// The leader's answer to a lease question, from a remote replica or a
    /// local client.
    pub(crate) fn route_lease_answer(&mut self, reply: ReplyTo, answer: LeaseAnswer) {
        match reply {
            ReplyTo::Local(ticket) => self.answers.push((ticket, Answer::Lease(answer))),
            ReplyTo::Remote { to, token } => self
                .sends
                .push((to, PeerItem::LeaseAnswer { token, answer })),
        }
    }
}
