//! The node's shell as the simulator plays it around the real group
//! driver: take a `GroupReady`, send its messages through the simulated
//! network, queue its write behind earlier ones, and acknowledge each
//! write, in order, when its simulated fsync completes. Everything that
//! decides (forwarding, reads, leases, snapshots) is `synod-group`'s code.

use super::{Event, World, DRIVE_ROUNDS_MAX};
use crate::checker::Violation;
use crate::node::{QueuedWrite, Waiting, GROUP};
use rand::Rng;
use synod_group::{Answer, GroupReady, PeerItem, Request};
use synod_paxos::{Message, NodeId, RoleKind, Slot};
use synod_proto::synodpb::outcome;
use synod_storage::GroupId;

impl World {
    /// Runs the node's runtime loop until none of its groups has anything
    /// to hand out (a shard's question for stamps is work for the meta
    /// group, whose answer is work for the shard).
    pub(super) fn drive(&mut self, id: NodeId) -> Result<(), Violation> {
        let i = self.node_index(id);
        for round in 0..DRIVE_ROUNDS_MAX {
            if !self.nodes[i].is_up() {
                return Ok(());
            }
            let mut busy = false;
            for gid in self.nodes[i].group_ids() {
                let Some(group) = self.nodes[i].group_of(gid) else {
                    continue;
                };
                if !group.has_ready() {
                    group.check_invariants();
                    continue;
                }
                busy = true;
                let ready = group.ready();
                self.handle_ready(i, gid, ready)?;
            }
            if !busy {
                if round > 0 || self.auth_unchecked(i) {
                    self.auth_check_replica(i)?;
                }
                if round > 0 && !self.split_groups.is_empty() {
                    self.check_shards(i)?;
                }
                return Ok(());
            }
        }
        panic!("{id}: groups kept producing work for {DRIVE_ROUNDS_MAX} rounds");
    }

    fn handle_ready(
        &mut self,
        i: usize,
        gid: GroupId,
        mut ready: GroupReady,
    ) -> Result<(), Violation> {
        let id = self.nodes[i].id;
        let meta = gid == GROUP;
        self.note_proposals(i, gid, &ready);
        let sends = std::mem::take(&mut ready.sends);
        self.send_items(id, gid, sends);
        for (slot, value) in &ready.applied {
            let chosen = self.chosen.entry(gid).or_default().chosen(*slot).cloned();
            let applied = self.applied.entry(gid).or_default();
            applied.on_apply(id, *slot, value, chosen.as_ref())?;
            if meta {
                self.auth_on_apply(*slot, value);
                self.report.slots = self.report.slots.max(slot.0);
            } else {
                self.auth_on_shard_apply(value);
            }
        }
        for to in std::mem::take(&mut ready.snapshots) {
            self.stream_snapshot(i, gid, to);
        }
        if let Some(installed) = ready.installed {
            let slot = installed.slot;
            self.report.snapshots += 1;
            self.applied.entry(gid).or_default().on_snapshot(id, slot);
            self.note(|| format!("{id} installed snapshot of {gid} through {slot}"));
            if meta {
                self.auth_check_puts(i, Slot(0)..=ready.applied_through)?;
                self.auth_installed(i);
            }
        } else if let (true, Some((first, _)), Some((last, _))) =
            (meta, ready.applied.first(), ready.applied.last())
        {
            self.auth_check_puts(i, *first..=*last)?;
        }
        for lease in std::mem::take(&mut ready.expired) {
            self.check_not_early(id, lease)?;
        }
        for (ticket, answer) in std::mem::take(&mut ready.answers) {
            if let Some(waiting) = self.nodes[i].waiting.remove(&ticket) {
                self.on_answer_at(i, waiting, Some(answer))?;
            }
        }
        if let Some(q) = ready.stamps.take() {
            let node = &mut self.nodes[i];
            let ticket = node.ticket(Waiting::Stamps {
                group: gid,
                question: q.id,
            });
            let now = node.local_time(self.now);
            let request = Request::Timestamps {
                count: q.count,
                leases: q.leases,
            };
            node.group().request(ticket, request, now);
        }
        let also = self.host_splits(i, gid, &mut ready);
        self.queue_write(i, gid, ready, also);
        Ok(())
    }

    fn send_items(&mut self, id: NodeId, gid: GroupId, sends: Vec<(NodeId, PeerItem)>) {
        for (to, item) in sends {
            for delay in self.network.deliveries(id, to, &mut self.rng) {
                self.schedule(
                    delay,
                    Event::Deliver {
                        from: id,
                        to,
                        group: gid,
                        item: item.clone(),
                    },
                );
            }
        }
    }

    /// Hosts the groups the ready's splits made on node `i` (as the
    /// node's shell does); returns their first writes, which go into the
    /// same batch as the split's.
    fn host_splits(&mut self, i: usize, gid: GroupId, ready: &mut GroupReady) -> Vec<QueuedWrite> {
        let id = self.nodes[i].id;
        let mut also = Vec::new();
        for split in std::mem::take(&mut ready.splits) {
            let child = GroupId(split.id);
            let Some(mut first) = self.nodes[i].host_split(&self.cfg, self.now, gid, split) else {
                continue;
            };
            self.applied
                .entry(child)
                .or_default()
                .on_snapshot(id, synod_group::SPLIT_SLOT);
            self.split_groups.insert(child);
            self.note(|| format!("{id}: {gid} split off {child}"));
            let sends = std::mem::take(&mut first.sends);
            self.send_items(id, child, sends);
            assert!(first.answers.is_empty() && first.installed.is_none());
            also.push(QueuedWrite {
                group: child,
                token: first.token,
                persist: first.persist,
                state: first.state,
                applied: first.applied_through,
                compact: first.compact,
                installed: None,
                also: Vec::new(),
            });
        }
        also
    }

    /// The chosen-value checker needs the configuration each leader used
    /// for each slot it proposed, taken when the first accept leaves.
    fn note_proposals(&mut self, i: usize, gid: GroupId, ready: &GroupReady) {
        let Some(r) = self.nodes[i].group_ref(gid).map(|g| g.replica()) else {
            return;
        };
        let (RoleKind::Leader, Some(cfg)) = (r.role_kind(), r.membership().cloned()) else {
            return;
        };
        for (_, item) in &ready.sends {
            if let PeerItem::Paxos(Message::Accept {
                ballot,
                first,
                values,
                ..
            }) = item
            {
                let chosen = self.chosen.entry(gid).or_default();
                for k in 0..values.len() as u64 {
                    chosen.on_proposed(Slot(first.0 + k), *ballot, &cfg);
                }
            }
        }
    }

    /// Queues the round's write behind earlier ones; it becomes durable
    /// when its simulated fsync completes.
    fn queue_write(
        &mut self,
        i: usize,
        gid: GroupId,
        mut ready: GroupReady,
        also: Vec<QueuedWrite>,
    ) {
        let id = self.nodes[i].id;
        if self.cfg.options.lose_auth_row {
            // The broken shell: the auth store's row never reaches the disk.
            ready.state.ops.retain(|op| {
                !matches!(op, synod_kv::StateOp::Put { key, .. }
                    if key.as_slice() == [synod_kv::state::TAG_AUTH])
            });
        }
        if self.cfg.options.split_snapshot_compaction && ready.installed.is_some() {
            // The old runtime's bug: an installed snapshot's state and
            // applied slot were durable at once, the compaction only with
            // a later write. Earlier queued writes lose their rows (the
            // new store replaces them anyway). The nemesis aims at the
            // window: often a crash follows right away.
            let node = &mut self.nodes[i];
            for queued in &mut node.persist_queue {
                queued.state = synod_kv::StateChanges::default();
            }
            let state = std::mem::take(&mut ready.state);
            let installed = ready.installed.take().expect("checked above");
            node.disk
                .write_install_alone(gid, installed.stage, &state, ready.applied_through);
            if self.rng.gen_bool(0.3) {
                self.schedule(1, Event::Crash(id));
            }
        }
        let (lo, hi) = self.cfg.fsync;
        let delay = if ready.must_sync() {
            self.rng.gen_range(lo..hi)
        } else {
            0
        };
        if self.cfg.options.ack_before_fsync {
            // The broken shell: replies held for this write go out now.
            // The nemesis aims at the window it opens.
            if let Some(g) = self.nodes[i].group_of(gid) {
                g.on_persisted(ready.token);
            }
            if ready.must_sync() && self.rng.gen_bool(0.02) {
                self.schedule(1, Event::Crash(id));
            }
        }
        let node = &mut self.nodes[i];
        node.fsync_done_at = node.fsync_done_at.max(self.now + delay);
        let at = node.fsync_done_at - self.now;
        node.persist_queue.push_back(QueuedWrite {
            group: gid,
            token: ready.token,
            persist: ready.persist,
            state: ready.state,
            applied: ready.applied_through,
            compact: ready.compact,
            installed: ready.installed,
            also,
        });
        let incarnation = node.incarnation;
        self.schedule(at, Event::PersistDone(id, incarnation));
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
        let write = self.nodes[i]
            .persist_queue
            .pop_front()
            .expect("a write per completion");
        self.nodes[i].disk.write(&write, write.compact.as_ref());
        let chosen = self.chosen.entry(write.group).or_default();
        for record in &write.persist.records {
            chosen.on_durable(id, record)?;
        }
        for w in std::iter::once(&write).chain(&write.also) {
            let group = self.nodes[i]
                .group_of(w.group)
                .expect("a running node hosts the groups it wrote for");
            group.on_written();
            if !self.cfg.options.ack_before_fsync || w.group != write.group {
                group.on_persisted(w.token);
            }
        }
        Ok(())
    }

    /// Streams node `i`'s committed rows to `to`, as the node's shell does
    /// from a read transaction: the chunks leave in order, one connection;
    /// a lost one ends the stream (the leader starts over later). Rows
    /// older than the log start (their write still queued) are not sent.
    fn stream_snapshot(&mut self, i: usize, gid: GroupId, to: NodeId) {
        let id = self.nodes[i].id;
        let mut reader = self.nodes[i].disk.snapshot_reader(gid);
        let slot = reader.slot();
        let group = self.nodes[i].group_of(gid).expect("the node is up");
        if slot < group.compacted() {
            return;
        }
        let membership = group.replica().membership_at(slot);
        group.snapshot_started(slot);
        self.note(|| format!("{id}->{to} snapshot stream through {slot}"));
        let chunk_bytes = self.cfg.snapshot_chunk_bytes;
        let mut at = None;
        while let Some(chunk) = reader.next_chunk(chunk_bytes).expect("simulated read") {
            let Some(delay) = self
                .network
                .deliveries(id, to, &mut self.rng)
                .first()
                .copied()
            else {
                return;
            };
            // In order: never before the chunk ahead of it.
            let delay = at.map_or(delay, |prev: u64| delay.max(prev + 1));
            at = Some(delay);
            let event = Event::SnapshotChunk {
                from: id,
                to,
                group: gid,
                slot,
                membership: membership.clone(),
                chunk,
            };
            self.schedule(delay, event);
        }
    }

    /// A chunk of a snapshot stream at node `to`: into its stage; the
    /// last one loads the stage and offers it to the group, which installs
    /// it or has it discarded.
    pub(super) fn on_snapshot_chunk(
        &mut self,
        from: NodeId,
        to: NodeId,
        gid: GroupId,
        slot: Slot,
        membership: Option<synod_paxos::Configuration>,
        chunk: synod_storage::StreamChunk,
    ) {
        let i = self.node_index(to);
        let stage = match self.nodes[i].disk.receive_chunk(gid, slot, &chunk) {
            synod_storage::Received::Complete { stage } => stage,
            synod_storage::Received::Partial => return,
            synod_storage::Received::Refused(why) => {
                self.note(|| format!("{from}->{to} snapshot chunk refused: {why}"));
                return;
            }
        };
        let kv = self.nodes[i].disk.load_staged(gid, stage);
        // As the node does: not over a range another replica here holds.
        let overlaps = kv.shard().is_some_and(|shard| {
            let replicas = self.nodes[i]
                .shards
                .iter()
                .map(|(id, g)| (id.0, g.kv().shard()));
            synod_group::shards::ShardMap::overlaps(gid.0, shard, replicas)
        });
        let installed = !overlaps
            && self.nodes[i]
                .group_of(gid)
                .is_some_and(|g| g.install_staged(slot, membership, kv, stage));
        if installed {
            // The snapshot may name a split this node never applied.
            self.nodes[i].adopt_ranges(&self.cfg);
            for made in self.nodes[i].discover(&self.cfg, self.now) {
                self.report.splits_learned += 1;
                self.note(|| format!("{to} hosts {made}, named by {gid}'s snapshot"));
            }
        } else {
            self.note(|| format!("{to} discards the snapshot of {gid} through {slot}"));
            self.nodes[i].disk.discard_stage(gid, stage);
        }
    }

    /// Routes an answer of one of node `i`'s groups: a shard's stamps to
    /// the shard, anything else to whoever waited.
    fn on_answer_at(
        &mut self,
        i: usize,
        waiting: Waiting,
        answer: Option<Answer>,
    ) -> Result<(), Violation> {
        if let (Waiting::Stamps { group, question }, Some(Answer::Timestamps(range, granted))) =
            (&waiting, &answer)
        {
            let now = self.nodes[i].local_time(self.now);
            if let Some(shard) = self.nodes[i].group_of(*group) {
                shard.stamps_granted(*question, *range, granted, now);
            }
            return Ok(());
        }
        if let Waiting::Detach(batch) = waiting {
            self.on_detach_answer(i, batch, answer);
            return Ok(());
        }
        if let Waiting::FollowBarrier = waiting {
            self.on_follow_barrier(i, answer);
            return Ok(());
        }
        self.on_answer(waiting, answer)
    }

    /// Routes a group's answer (or a crash's silence, `None`) to whoever
    /// waited.
    pub(super) fn on_answer(
        &mut self,
        waiting: Waiting,
        answer: Option<Answer>,
    ) -> Result<(), Violation> {
        match waiting {
            Waiting::Client {
                client,
                seq,
                attempt,
            } => self.client_answer(client, seq, attempt, answer),
            Waiting::Grant(lease) => self.on_grant_answer(lease, answer),
            Waiting::KeepAlive(lease, sent_at) => {
                if let Some(Answer::Lease(Some(_))) = answer {
                    let delay = self.rng.gen_range(50..1000);
                    self.schedule(delay, Event::LeaseAck { id: lease, sent_at });
                }
            }
            Waiting::Attach(_) => {
                if let Some(Answer::Write(o)) = &answer {
                    if matches!(o.result, Some(outcome::Result::Put(_))) {
                        self.report.lease_keys += 1;
                    }
                }
            }
            Waiting::Timestamps(asked) => self.on_timestamps_answer(asked, answer),
            Waiting::ZkCreate(n) => return self.on_zk_answer(n, answer),
            Waiting::ZkSession => {}
            Waiting::ZkEphemeral(n, session) => {
                return self.on_zk_ephemeral_answer(n, session, answer)
            }
            Waiting::AuthSetup(step) => self.on_auth_setup_answer(step, answer),
            Waiting::AuthFlip => {}
            Waiting::Split(child) => self.on_split_answer(child, answer),
            Waiting::AuthPut(n) => return self.on_auth_put_answer(n, answer),
            // The shard asks again after its question times out; a crash
            // took the shard with it.
            Waiting::Stamps { .. } => {}
            // Sent again by the meta leader while needed.
            Waiting::Detach(_) | Waiting::Detached => {}
            // Asked again on a later tick.
            Waiting::FollowBarrier => {}
        }
        Ok(())
    }
}
