//! A simulated node: the real replica, a disk that loses unsynced writes on
//! a crash, a drifting clock, and the runtime loop a real node would run
//! (persist, then release replies; apply; serve reads; ship snapshots).

use crate::config::{Micros, SimConfig};
use crate::kv::{Command, Kv};
use std::collections::{BTreeMap, VecDeque};
use synod_paxos::{
    Ballot, Durable, MembershipRecord, NodeId, Persist, PersistToken, ReadId, Replica, Slot,
    SlotRecord, Time,
};

/// What survives a crash: only writes whose fsync completed.
#[derive(Clone, Default)]
pub struct Disk {
    /// Highest ballot promised.
    pub promised: Ballot,
    /// Log records after the snapshot.
    pub records: BTreeMap<Slot, SlotRecord<Command>>,
    /// Commit hint.
    pub commit: Slot,
    /// The application snapshot and the slot it covers.
    pub snapshot: Slot,
    /// State machine at `snapshot`.
    pub snapshot_kv: Kv,
    /// The configuration in effect after a slot, stored with the snapshot.
    pub membership: Option<MembershipRecord>,
}

impl Disk {
    /// Makes one `Persist` durable, as one atomic write.
    pub fn write(&mut self, persist: &Persist<Command>) {
        if let Some(b) = persist.promised {
            assert!(b >= self.promised, "durable promise regressed");
            self.promised = b;
        }
        for r in &persist.records {
            if r.slot > self.snapshot {
                self.records.insert(r.slot, r.clone());
            }
        }
        if let Some(c) = persist.commit {
            self.commit = self.commit.max(c);
        }
        if let Some(through) = persist.compact_through {
            self.records = self.records.split_off(&through.next());
        }
        if let Some(m) = &persist.membership {
            if self
                .membership
                .as_ref()
                .is_none_or(|have| have.slot <= m.slot)
            {
                self.membership = Some(m.clone());
            }
        }
    }

    /// What a restarting replica reads back.
    pub fn durable(&self) -> Durable<Command> {
        Durable {
            promised: self.promised,
            snapshot: self.snapshot,
            records: self.records.values().cloned().collect(),
            commit: self.commit,
            applied: self.snapshot,
            membership: self.membership.clone(),
        }
    }
}

/// A pending client request held by a node until its command applies.
#[derive(Clone, Copy, Debug)]
pub struct ReadWait {
    /// Client waiting.
    pub client: u64,
    /// Its sequence number.
    pub seq: u64,
    /// The client's attempt, so it can tell a stale refusal.
    pub attempt: u64,
    /// Key to read.
    pub key: u64,
}

/// One node of the simulated cluster.
pub struct SimNode {
    /// Node id.
    pub id: NodeId,
    /// Removed from the group and shut down for good by the operator.
    pub retired: bool,
    /// The replica while the node is up.
    pub replica: Option<Replica<Command>>,
    /// Bumped on every crash, so stale timers and fsyncs are ignored.
    pub incarnation: u64,
    /// Durable state.
    pub disk: Disk,
    /// Writes issued and not yet durable, in issue order.
    pub persist_queue: VecDeque<(PersistToken, Persist<Command>)>,
    /// When the last queued fsync completes (fsyncs complete in order).
    pub fsync_done_at: Micros,
    /// The state machine in memory.
    pub kv: Kv,
    /// Slots applied to `kv`.
    pub applied: Slot,
    /// Writes proposed here whose clients wait for the apply, with the attempt.
    pub pending_writes: BTreeMap<(u64, u64), u64>,
    /// Reads registered with the replica.
    pub pending_reads: BTreeMap<ReadId, ReadWait>,
    /// Reads the replica released, waiting for `applied` to reach their slot.
    pub ready_reads: Vec<(ReadId, Slot)>,
    /// Next read id.
    pub next_read: u64,
    /// Events for this node wait until then.
    pub paused_until: Micros,
    /// Lease deadlines (the runtime's lessor, on this node's clock).
    pub lessor: synod_kv::Lessor,
    /// The ballot this node led with at the last lease check: a new
    /// leadership (even one that follows another without a look in
    /// between) restarts every lease.
    pub led_ballot: Option<synod_paxos::Ballot>,
    /// Keep-alives waiting for a leadership confirmation: lease id and
    /// when the agent sent the keep-alive.
    pub lease_reads: BTreeMap<ReadId, (i64, Micros)>,
    /// Expiries waiting for a leadership confirmation.
    pub expiry_reads: BTreeMap<ReadId, Vec<i64>>,
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
            replica: None,
            incarnation: 0,
            disk: Disk::default(),
            persist_queue: VecDeque::new(),
            fsync_done_at: 0,
            kv: Kv::default(),
            applied: Slot(0),
            pending_writes: BTreeMap::new(),
            pending_reads: BTreeMap::new(),
            ready_reads: Vec::new(),
            next_read: 1,
            paused_until: 0,
            lessor: synod_kv::Lessor::default(),
            led_ballot: None,
            lease_reads: BTreeMap::new(),
            expiry_reads: BTreeMap::new(),
            clock_offset_us,
            drift_ppm: cfg.drift_ppm[index],
        };
        let now = node.local_time(0);
        node.replica = Some(Replica::new(cfg.paxos_for(id), now).expect("valid config"));
        node
    }

    /// This node's clock in milliseconds, as the lessor reads it.
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
        self.replica.is_some()
    }

    /// Loses everything not durable.
    pub fn crash(&mut self) {
        self.replica = None;
        self.incarnation += 1;
        self.persist_queue.clear();
        self.pending_writes.clear();
        self.pending_reads.clear();
        self.ready_reads.clear();
        self.kv = Kv::default();
        self.lessor = synod_kv::Lessor::default();
        self.led_ballot = None;
        self.lease_reads.clear();
        self.expiry_reads.clear();
    }

    /// Starts again from the disk.
    pub fn restart(&mut self, cfg: &SimConfig, now: Micros) {
        assert!(!self.is_up(), "restart of a running node");
        let local = self.local_time(now);
        let replica = Replica::restore(cfg.paxos_for(self.id), self.disk.durable(), local)
            .expect("valid config");
        self.replica = Some(replica);
        self.kv = self.disk.snapshot_kv.clone();
        self.applied = self.disk.snapshot;
        self.fsync_done_at = now;
    }
}
