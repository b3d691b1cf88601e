//! A simulated node: the real group driver (`synod-group`: replica, state
//! machine, leases, forwarding, read paths, snapshots), a disk that loses
//! unsynced writes on a crash, and a drifting clock.

use crate::config::{Micros, SimConfig};
use bytes::Bytes;
use std::collections::{BTreeMap, VecDeque};
use synod_group::{Group, GroupConfig, SnapshotWrite, Ticket};
use synod_kv::KvStore;
use synod_paxos::{
    Ballot, Durable, MembershipRecord, NodeId, Persist, PersistToken, Replica, Slot, SlotRecord,
    Time,
};

/// What survives a crash: only writes whose fsync completed. It follows
/// the storage layer's rules (`synod-storage`'s F4, F8, F9): a write is
/// atomic; a snapshot compacts the log it covers, records its applied slot
/// and the configuration at it, in the same write.
#[derive(Clone, Default)]
pub struct Disk {
    /// Highest ballot promised.
    pub promised: Ballot,
    /// Log records after the compaction point.
    pub records: BTreeMap<Slot, SlotRecord<Bytes>>,
    /// Commit hint.
    pub commit: Slot,
    /// The log's compaction point.
    pub compacted: Slot,
    /// The slot the state machine's durable state reflects.
    pub applied: Slot,
    /// The latest state-machine snapshot and the slot it covers.
    pub snapshot: Option<(Slot, Bytes)>,
    /// The configuration in effect after a slot, stored with the snapshot.
    pub membership: Option<MembershipRecord>,
}

impl Disk {
    /// Makes one round's write durable, as one atomic write: the persist,
    /// then the snapshot (with its compaction, unless `split` models the
    /// old bug where the compaction came with a later write).
    pub fn write(&mut self, persist: &Persist<Bytes>, snapshot: Option<&SnapshotWrite>) {
        if let Some(b) = persist.promised {
            assert!(b >= self.promised, "durable promise regressed");
            self.promised = b;
        }
        for r in &persist.records {
            if r.slot > self.compacted {
                self.records.insert(r.slot, r.clone());
            }
        }
        if let Some(c) = persist.commit {
            self.commit = self.commit.max(c);
        }
        if let Some(through) = persist.compact_through {
            self.compact(through);
        }
        if let Some(m) = &persist.membership {
            self.record_membership(m.clone());
        }
        if let Some(s) = snapshot {
            self.put_snapshot(s, true);
        }
    }

    /// Stores a state-machine snapshot and its applied slot; with
    /// `compact`, also the log compaction and the configuration at it.
    pub fn put_snapshot(&mut self, s: &SnapshotWrite, compact: bool) {
        self.snapshot = Some((s.slot, s.data.clone()));
        self.applied = self.applied.max(s.slot);
        if compact {
            self.compact(s.slot);
            if let Some(configuration) = &s.membership {
                self.record_membership(MembershipRecord {
                    slot: s.slot,
                    configuration: configuration.clone(),
                });
            }
        }
    }

    fn compact(&mut self, through: Slot) {
        if through > self.compacted {
            self.records = self.records.split_off(&through.next());
            self.compacted = through;
        }
    }

    fn record_membership(&mut self, m: MembershipRecord) {
        if self
            .membership
            .as_ref()
            .is_none_or(|have| have.slot <= m.slot)
        {
            self.membership = Some(m);
        }
    }

    /// What a restarting replica reads back.
    pub fn durable(&self) -> Durable<Bytes> {
        Durable {
            promised: self.promised,
            snapshot: self.compacted,
            records: self.records.values().cloned().collect(),
            commit: self.commit,
            applied: self.applied.max(self.compacted),
            membership: self.membership.clone(),
        }
    }

    /// The state machine a restarting node starts from.
    pub fn state(&self) -> (KvStore, Option<(Slot, Bytes)>) {
        match &self.snapshot {
            Some((slot, data)) => {
                let kv = synod_group::decode_snapshot(data)
                    .unwrap_or_else(|e| panic!("own snapshot at {slot} does not decode: {e}"));
                (kv, self.snapshot.clone())
            }
            None => (KvStore::default(), None),
        }
    }
}

/// Who waits for a ticket's answer.
#[derive(Clone, Copy, Debug)]
pub enum Waiting {
    /// A client's operation (its attempt, to tell stale answers).
    Client {
        /// The client.
        client: u64,
        /// Its sequence number.
        seq: u64,
        /// The attempt.
        attempt: u64,
    },
    /// The lease agent's grant of lease `id`.
    Grant(i64),
    /// The lease agent's keep-alive of lease `id`, sent at `sent_at`.
    KeepAlive(i64, Micros),
    /// The lease agent's put attaching a key to lease `id`.
    Attach(i64),
}

/// A round's write, queued until its simulated fsync completes.
pub struct QueuedWrite {
    /// Acknowledged to the group when durable.
    pub token: PersistToken,
    /// The replica's state.
    pub persist: Persist<Bytes>,
    /// A snapshot written with it.
    pub snapshot: Option<SnapshotWrite>,
}

/// One node of the simulated cluster.
pub struct SimNode {
    /// Node id.
    pub id: NodeId,
    /// Removed from the group and shut down for good by the operator.
    pub retired: bool,
    /// The group while the node is up.
    pub group: Option<Group>,
    /// Bumped on every crash, so stale timers and fsyncs are ignored.
    pub incarnation: u64,
    /// Durable state.
    pub disk: Disk,
    /// Writes issued and not yet durable, in issue order.
    pub persist_queue: VecDeque<QueuedWrite>,
    /// When the last queued fsync completes (fsyncs complete in order).
    pub fsync_done_at: Micros,
    /// Requests waiting on this node, by ticket.
    pub waiting: BTreeMap<Ticket, Waiting>,
    /// The next ticket.
    pub next_ticket: Ticket,
    /// Events for this node wait until then.
    pub paused_until: Micros,
    clock_offset_us: u64,
    drift_ppm: i64,
}

impl SimNode {
    /// A fresh node.
    pub fn new(cfg: &SimConfig, index: usize, clock_offset_us: u64) -> SimNode {
        let id = cfg.nodes[index];
        let mut node = SimNode {
            id,
            retired: false,
            group: None,
            incarnation: 0,
            disk: Disk::default(),
            persist_queue: VecDeque::new(),
            fsync_done_at: 0,
            waiting: BTreeMap::new(),
            next_ticket: 1,
            paused_until: 0,
            clock_offset_us,
            drift_ppm: cfg.drift_ppm[index],
        };
        node.start(cfg, 0);
        node
    }

    /// This node's clock in milliseconds.
    pub fn local_ms(&self, now: Micros) -> u64 {
        self.local_time(now).0
    }

    /// This node's clock at real time `now`: offset, and a rate off by
    /// `drift_ppm` parts per million.
    pub fn local_time(&self, now: Micros) -> Time {
        let scaled = now as i128 * (1_000_000 + self.drift_ppm as i128) / 1_000_000;
        Time(((self.clock_offset_us as i128 + scaled) / 1000) as u64)
    }

    /// True when the process is running (not crashed).
    pub fn is_up(&self) -> bool {
        self.group.is_some()
    }

    /// The group; panics when the node is down (a caller bug).
    pub fn group(&mut self) -> &mut Group {
        self.group.as_mut().expect("node is up")
    }

    /// The replica while up.
    pub fn replica(&self) -> Option<&Replica<Bytes>> {
        self.group.as_ref().map(Group::replica)
    }

    /// Slots applied to the state machine while up.
    pub fn applied(&self) -> Slot {
        self.group.as_ref().map_or(Slot(0), Group::applied)
    }

    /// Remembers who waits for a new ticket.
    pub fn ticket(&mut self, waiting: Waiting) -> Ticket {
        let ticket = self.next_ticket;
        self.next_ticket += 1;
        self.waiting.insert(ticket, waiting);
        ticket
    }

    /// Loses everything not durable; returns who was waiting here.
    pub fn crash(&mut self) -> Vec<Waiting> {
        self.group = None;
        self.incarnation += 1;
        self.persist_queue.clear();
        std::mem::take(&mut self.waiting).into_values().collect()
    }

    /// Starts again from the disk.
    pub fn restart(&mut self, cfg: &SimConfig, now: Micros) {
        assert!(!self.is_up(), "restart of a running node");
        self.start(cfg, now);
        self.fsync_done_at = now;
    }

    fn start(&mut self, cfg: &SimConfig, now: Micros) {
        let local = self.local_time(now);
        let replica = Replica::restore(cfg.paxos_for(self.id), self.disk.durable(), local)
            .expect("valid config");
        let (kv, snapshot) = self.disk.state();
        let config = GroupConfig {
            node: self.id,
            // Unique per incarnation, as a node's clock-derived one is.
            session: (self.id.0 << 40) | self.incarnation,
            snapshot_every: cfg.snapshot_every,
            snapshot_chunk_bytes: cfg.snapshot_chunk_bytes,
            initial_members: Vec::new(),
            record_applied: true,
        };
        let mut group = Group::new(config, replica, kv, snapshot, local);
        if cfg.options.unconfirmed_keepalives {
            group.set_mutation(Some(synod_group::GroupMutation::UnconfirmedKeepalives));
        }
        self.group = Some(group);
    }
}
