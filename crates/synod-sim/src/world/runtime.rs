//! The node runtime loop, as a real node would run it: take `Ready`, queue
//! its write behind earlier ones, send, apply, serve reads, ship snapshots;
//! acknowledge each write, in order, when its simulated fsync completes.

use super::{Event, World, DRIVE_ROUNDS_MAX};
use crate::checker::Violation;
use crate::kv::{Command, Kv};
use crate::linearizability::KvOutput;
use rand::Rng;
use synod_paxos::{
    Apply, Configuration, MembershipRecord, Message, NodeId, Ready, RoleKind, Slot, Value,
};

impl World {
    /// Runs the node's runtime loop until its replica has nothing to hand out.
    pub(super) fn drive(&mut self, id: NodeId) -> Result<(), Violation> {
        let i = self.node_index(id);
        for _ in 0..DRIVE_ROUNDS_MAX {
            let Some(replica) = self.nodes[i].replica.as_mut() else {
                return Ok(());
            };
            if !replica.has_ready() {
                return Ok(());
            }
            let ready = replica.ready();
            self.handle_ready(i, ready)?;
        }
        panic!("{id}: replica kept producing work for {DRIVE_ROUNDS_MAX} rounds");
    }

    fn handle_ready(&mut self, i: usize, ready: Ready<Command>) -> Result<(), Violation> {
        let id = self.nodes[i].id;
        if let Some(r) = self.nodes[i].replica.as_ref() {
            if let (RoleKind::Leader, Some(cfg)) = (r.role_kind(), r.membership()) {
                for envelope in &ready.messages {
                    if let Message::Accept {
                        ballot,
                        first,
                        values,
                        ..
                    } = &envelope.message
                    {
                        for k in 0..values.len() as u64 {
                            self.chosen.on_proposed(Slot(first.0 + k), *ballot, cfg);
                        }
                    }
                }
            }
        }
        for envelope in ready.messages {
            for delay in self
                .network
                .deliveries(envelope.from, envelope.to, &mut self.rng)
            {
                self.schedule(delay, Event::Deliver(envelope.clone()));
            }
        }
        for apply in ready.apply {
            self.apply(i, apply)?;
        }
        for read in ready.reads {
            self.nodes[i].ready_reads.push((read.id, read.slot));
        }
        self.serve_reads(i);
        for rid in ready.reads_dropped {
            if let Some(w) = self.nodes[i].pending_reads.remove(&rid) {
                self.reply(w.client, w.seq, w.attempt, Err(None));
            }
            // A keep-alive not confirmed is not answered; the agent sends
            // the next one anyway.
            self.nodes[i].lease_reads.remove(&rid);
            self.nodes[i].expiry_reads.remove(&rid);
        }
        for command in ready.dropped {
            if let Some(attempt) = self.nodes[i]
                .pending_writes
                .remove(&(command.client, command.seq))
            {
                self.reply(command.client, command.seq, attempt, Err(None));
            }
        }
        for to in ready.snapshots {
            self.send_snapshot(i, to);
        }
        self.maybe_compact(i);
        let (lo, hi) = self.cfg.fsync;
        let delay = if ready.persist.must_sync() {
            self.rng.gen_range(lo..hi)
        } else {
            0
        };
        let node = &mut self.nodes[i];
        node.fsync_done_at = node.fsync_done_at.max(self.now + delay);
        let at = node.fsync_done_at - self.now;
        node.persist_queue.push_back((ready.token, ready.persist));
        let incarnation = node.incarnation;
        self.schedule(at, Event::PersistDone(id, incarnation));
        Ok(())
    }

    fn apply(&mut self, i: usize, apply: Apply<Command>) -> Result<(), Violation> {
        let id = self.nodes[i].id;
        let chosen = self.chosen.chosen(apply.slot).cloned();
        self.applied
            .on_apply(id, apply.slot, &apply.value, chosen.as_ref())?;
        let node = &mut self.nodes[i];
        assert_eq!(apply.slot, node.applied.next(), "{id} apply out of order");
        node.applied = apply.slot;
        self.report.slots = self.report.slots.max(apply.slot.0);
        let Value::Batch(commands) = &apply.value else {
            return Ok(());
        };
        for command in commands.iter() {
            let existed: Vec<i64> = match &command.op {
                crate::kv::Op::Expire(ids) => ids
                    .iter()
                    .copied()
                    .filter(|id| self.nodes[i].kv.store().leases().contains(*id))
                    .collect(),
                _ => Vec::new(),
            };
            let output = self.nodes[i].kv.apply(command);
            self.follow_leases(i, command, &existed)?;
            let waiting = self.nodes[i]
                .pending_writes
                .remove(&(command.client, command.seq));
            if let (Some(output), Some(attempt)) = (output, waiting) {
                self.reply(command.client, command.seq, attempt, Ok(output));
            }
        }
        Ok(())
    }

    fn serve_reads(&mut self, i: usize) {
        let applied = self.nodes[i].applied;
        let (ready, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.nodes[i].ready_reads)
            .into_iter()
            .partition(|(_, slot)| *slot <= applied);
        self.nodes[i].ready_reads = waiting;
        for (rid, _) in ready {
            if let Some(w) = self.nodes[i].pending_reads.remove(&rid) {
                let value = self.nodes[i].kv.get(w.key);
                self.reply(w.client, w.seq, w.attempt, Ok(KvOutput::Get(value)));
            }
            if let Some((id, sent_at)) = self.nodes[i].lease_reads.remove(&rid) {
                self.answer_keepalive(i, id, sent_at);
            }
            if let Some(ids) = self.nodes[i].expiry_reads.remove(&rid) {
                self.propose_expiry(i, ids);
            }
        }
    }

    fn send_snapshot(&mut self, i: usize, to: NodeId) {
        let node = &self.nodes[i];
        let (slot, kv) = (node.applied, Box::new(node.kv.clone()));
        let membership = node.replica.as_ref().and_then(|r| r.membership_at(slot));
        let from = node.id;
        self.note(|| format!("{from}->{to} Snapshot through {slot}"));
        for delay in self.network.deliveries(from, to, &mut self.rng) {
            self.schedule(
                delay,
                Event::Snapshot {
                    to,
                    slot,
                    kv: kv.clone(),
                    membership: membership.clone(),
                },
            );
        }
    }

    pub(super) fn on_snapshot(
        &mut self,
        to: NodeId,
        slot: Slot,
        kv: Kv,
        membership: Option<Configuration>,
    ) -> Result<(), Violation> {
        let i = self.node_index(to);
        let local = self.nodes[i].local_ms(self.now);
        let node = &mut self.nodes[i];
        let replica = node.replica.as_mut().expect("up");
        if !replica.wants_snapshot(slot) {
            return Ok(());
        }
        node.lessor.reset(kv.store(), local);
        // The application installs the snapshot durably first, then tells the
        // core, exactly as the storage layer will.
        node.disk.snapshot = slot;
        node.disk.snapshot_kv = kv.clone();
        node.disk.records = node.disk.records.split_off(&slot.next());
        if let Some(configuration) = membership.clone() {
            // Stored with the snapshot, in the same write.
            node.disk.membership = Some(MembershipRecord {
                slot,
                configuration,
            });
        }
        node.kv = kv;
        node.applied = slot;
        let installed = match membership {
            Some(m) => replica.install_snapshot_with_membership(slot, m),
            None => replica.install_snapshot(slot),
        };
        assert!(installed, "wanted snapshot refused");
        self.applied.on_snapshot(to, slot);
        self.note(|| format!("{to} installed snapshot through {slot}"));
        self.serve_reads(i);
        Ok(())
    }

    /// Snapshots the state machine every `snapshot_every` slots and lets the
    /// core drop the log prefix.
    fn maybe_compact(&mut self, i: usize) {
        let every = self.cfg.snapshot_every;
        let node = &mut self.nodes[i];
        if node.applied.0 < node.disk.snapshot.0 + every {
            return;
        }
        node.disk.snapshot = node.applied;
        node.disk.snapshot_kv = node.kv.clone();
        let through = node.applied;
        let replica = node.replica.as_mut().expect("up");
        // The snapshot and the configuration in effect at it are written
        // together, as the storage layer does.
        if let Some(configuration) = replica.membership_at(through) {
            node.disk.membership = Some(MembershipRecord {
                slot: through,
                configuration,
            });
        }
        replica.compact(through);
    }

    pub(super) fn on_persist_done(
        &mut self,
        id: NodeId,
        incarnation: u64,
    ) -> Result<(), Violation> {
        let i = self.node_index(id);
        if self.nodes[i].incarnation != incarnation {
            return Ok(());
        }
        let (token, persist) = self.nodes[i]
            .persist_queue
            .pop_front()
            .expect("a write per completion");
        self.nodes[i].disk.write(&persist);
        for record in &persist.records {
            self.chosen.on_durable(id, record)?;
        }
        self.nodes[i]
            .replica
            .as_mut()
            .expect("up")
            .on_persisted(token);
        Ok(())
    }
}
