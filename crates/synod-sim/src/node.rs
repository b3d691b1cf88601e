//! A simulated node: the real group driver (`synod-group`: replica, state
//! machine, leases, forwarding, read paths, snapshots), the real storage
//! code on a simulated file that loses unsynced writes on a crash, and a
//! drifting clock.

use crate::config::{Micros, SimConfig};
use bytes::Bytes;
use std::collections::{BTreeMap, VecDeque};
use synod_group::{Compaction, Group, GroupConfig, Installed, Ticket};
use synod_kv::{KvStore, StateChanges};
use synod_paxos::{Durable, NodeId, Persist, PersistToken, Replica, Slot, Time};
use synod_storage::{GroupId, Identity, SimulatedFile, Storage};

/// The node's database: synod's real storage code (`synod-storage`, redb)
/// on a simulated file that keeps only what was fsynced. A round's write is
/// one batch (persist, state rows, compaction) committed when its
/// simulated fsync completes; a crash keeps the file's durable image.
pub struct Disk {
    file: SimulatedFile,
    storage: Option<Storage>,
    identity: Identity,
}

/// The meta group (the only one unless the run is sharded).
pub const GROUP: GroupId = GroupId(1);
/// Rows of replaced stores deleted per write.
const GARBAGE_ROWS_PER_WRITE: usize = 16;

impl Disk {
    fn new(id: NodeId) -> Disk {
        Disk {
            file: SimulatedFile::new(),
            storage: None,
            identity: Identity {
                cluster_id: 1,
                node_id: id.0,
            },
        }
    }

    fn storage(&mut self) -> &Storage {
        let (file, identity) = (&self.file, self.identity);
        self.storage
            .get_or_insert_with(|| file.open(identity).expect("simulated storage opens"))
    }

    /// Makes one round's write durable, as one batch: the persist, the
    /// state rows with the slot they hold, and the log compaction (F8, F9;
    /// S3). A storage error is a bug here (the file never fails): it
    /// panics.
    pub fn write(&mut self, write: &QueuedWrite, compact: Option<&Compaction>) {
        let storage = self.storage();
        let mut batch = storage.batch().expect("batch");
        Disk::add(&mut batch, write, compact);
        // The groups a split made, in the same batch as the split (their
        // first state stands for the split's slot).
        for born in &write.also {
            Disk::add(&mut batch, born, born.compact.as_ref());
        }
        // Few rows per round, so a replaced store takes many rounds to go
        // and crashes meet it half deleted.
        batch
            .collect_garbage(GARBAGE_ROWS_PER_WRITE)
            .expect("garbage");
        batch
            .collect_log_garbage(GARBAGE_ROWS_PER_WRITE)
            .expect("log garbage");
        batch.commit().expect("commit");
    }

    fn add(batch: &mut synod_storage::Batch, write: &QueuedWrite, compact: Option<&Compaction>) {
        let group = write.group;
        batch.persist(group, &write.persist).expect("persist");
        if let Some(installed) = &write.installed {
            batch
                .install_staged(group, installed.stage)
                .expect("install the stage");
        }
        if !write.state.is_empty() || write.installed.is_some() {
            batch.write_state(group, &write.state).expect("state rows");
            batch.set_applied(group, write.applied).expect("applied");
        }
        if let Some(c) = compact {
            batch
                .compact_to(group, c.slot, c.membership.as_ref())
                .expect("compaction");
        }
    }

    /// Every group with state on disk.
    pub fn groups(&mut self) -> Vec<GroupId> {
        self.storage().groups().expect("simulated read")
    }

    /// Group `group`'s rows, for a store the node makes (a split's).
    pub fn source(&mut self, group: GroupId) -> std::sync::Arc<synod_storage::StateRows> {
        self.storage().state(group).expect("simulated read")
    }

    /// The old runtime's bug, for a negative control: an installed
    /// snapshot's rows and applied slot made durable at once, without the
    /// compaction (and the configuration) it implies.
    pub fn write_install_alone(
        &mut self,
        group: GroupId,
        stage: u64,
        state: &StateChanges,
        applied: Slot,
    ) {
        let storage = self.storage();
        let mut batch = storage.batch().expect("batch");
        batch
            .install_staged(group, stage)
            .expect("install the stage");
        batch.write_state(group, state).expect("state rows");
        batch.set_applied(group, applied).expect("applied");
        batch.require_sync();
        batch.commit().expect("commit");
    }

    /// A reader of the committed rows, for a snapshot stream.
    pub fn snapshot_reader(&mut self, group: GroupId) -> synod_storage::SnapshotReader {
        self.storage()
            .snapshot_reader(group)
            .expect("simulated read")
    }

    /// Writes a received snapshot chunk into the stage.
    pub fn receive_chunk(
        &mut self,
        group: GroupId,
        slot: Slot,
        chunk: &synod_storage::StreamChunk,
    ) -> synod_storage::Received {
        self.storage()
            .receive_chunk(group, slot, chunk)
            .expect("simulated write")
    }

    /// The store in a complete stage; a stage that does not load is a
    /// bug (its rows came from a real store).
    pub fn load_staged(&mut self, group: GroupId, stage: u64) -> KvStore {
        self.storage()
            .load_staged(group, stage)
            .unwrap_or_else(|e| panic!("a received snapshot does not load: {e}"))
    }

    /// Drops a stage the group did not install.
    pub fn discard_stage(&mut self, group: GroupId, stage: u64) {
        let mut batch = self.storage().batch().expect("batch");
        batch.discard_stage(group, stage).expect("discard");
        batch.commit().expect("commit");
    }

    /// The process died: only the durable image is left.
    pub fn crash(&mut self) {
        let survivor = self.file.crash();
        // The old database may write into the old file as it drops.
        self.storage = None;
        self.file = survivor;
    }

    /// What a restarting replica reads back, and the state machine it
    /// starts from (its rows, as the node loads them).
    pub fn load(&mut self, group: GroupId) -> (Durable<Bytes>, KvStore) {
        let storage = self.storage();
        let durable = storage.load(group).expect("load");
        let kv = storage
            .load_store(group)
            .unwrap_or_else(|e| panic!("own state rows do not load: {e}"));
        (durable, kv)
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
    /// The oracle agent's question, asked at this time.
    Timestamps(Micros),
    /// The ZooKeeper agent's create number `n`.
    ZkCreate(u64),
    /// The ZooKeeper agent's session open or keep-alive (answers unused).
    ZkSession,
    /// The ZooKeeper agent's ephemeral create number `n`, of a session.
    ZkEphemeral(u64, i64),
    /// The auth agent's setup step.
    AuthSetup(usize),
    /// The auth agent's grant or revoke of its role's permission.
    AuthFlip,
    /// The auth agent's put number `n`.
    AuthPut(u64),
    /// The split agent's split into new group `n`.
    Split(u64),
    /// A shard's deletion of revoked leases' keys (design 0017): which
    /// batch of the world's.
    Detach(u64),
    /// Its record in the meta group (answers unused).
    Detached,
    /// The membership follower's barrier on the meta group (design 0019).
    FollowBarrier,
    /// A shard's question for stamps, asked of the node's meta group.
    Stamps {
        /// The shard.
        group: GroupId,
        /// Its question.
        question: u64,
    },
}

/// A round's write, queued until its simulated fsync completes.
pub struct QueuedWrite {
    /// The group that wrote it.
    pub group: GroupId,
    /// Acknowledged to the group when durable.
    pub token: PersistToken,
    /// The replica's state.
    pub persist: Persist<Bytes>,
    /// The state machine's rows.
    pub state: StateChanges,
    /// The slot the rows hold.
    pub applied: Slot,
    /// A log compaction written with them.
    pub compact: Option<Compaction>,
    /// A received snapshot to make live first.
    pub installed: Option<Installed>,
    /// The first writes of groups a split in this write made: durable
    /// with it, in one batch.
    pub also: Vec<QueuedWrite>,
}

/// A shard's deliberate bug, for the negative controls that ask for one.
fn shard_mutation(cfg: &SimConfig, group: &mut Group) {
    if cfg.options.stamps_from_leftovers {
        group.set_mutation(Some(synod_group::GroupMutation::StampsFromLeftovers));
    }
    if cfg.options.split_unfenced {
        group.set_mutation(Some(synod_group::GroupMutation::SplitUnfenced));
    }
    if cfg.options.leases_unchecked {
        group.set_mutation(Some(synod_group::GroupMutation::LeasesUnchecked));
    }
    if cfg.options.auth_unfenced {
        group.set_mutation(Some(synod_group::GroupMutation::AuthUnfenced));
    }
    if cfg.options.rows_unwritten_at_compaction {
        group.set_mutation(Some(synod_group::GroupMutation::RowsUnwrittenAtCompaction));
    }
}

/// One node of the simulated cluster.
pub struct SimNode {
    /// Node id.
    pub id: NodeId,
    /// Removed from the group and shut down for good by the operator.
    pub retired: bool,
    /// The meta group while the node is up.
    pub group: Option<Group>,
    /// The shards' groups while the node is up (a sharded run only).
    pub shards: BTreeMap<GroupId, Group>,
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
    /// Its shards following the meta group's configuration (lost with a
    /// crash, as the node's is).
    pub follower: synod_group::MembershipFollower,
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
            shards: BTreeMap::new(),
            incarnation: 0,
            disk: Disk::new(id),
            persist_queue: VecDeque::new(),
            fsync_done_at: 0,
            waiting: BTreeMap::new(),
            next_ticket: 1,
            paused_until: 0,
            follower: Default::default(),
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

    /// Group `id` (the meta group or a shard); `None` while down.
    pub fn group_of(&mut self, id: GroupId) -> Option<&mut Group> {
        if id == GROUP {
            self.group.as_mut()
        } else {
            self.shards.get_mut(&id)
        }
    }

    /// Group `id` as it stands; `None` while down.
    pub fn group_ref(&self, id: GroupId) -> Option<&Group> {
        if id == GROUP {
            self.group.as_ref()
        } else {
            self.shards.get(&id)
        }
    }

    /// Every group the node hosts: the meta group, then the shards.
    pub fn group_ids(&self) -> Vec<GroupId> {
        std::iter::once(GROUP)
            .chain(self.shards.keys().copied())
            .collect()
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
        self.shards.clear();
        self.disk.crash();
        self.incarnation += 1;
        self.persist_queue.clear();
        self.follower = Default::default();
        std::mem::take(&mut self.waiting).into_values().collect()
    }

    /// Starts again from the disk.
    pub fn restart(&mut self, cfg: &SimConfig, now: Micros) {
        assert!(!self.is_up(), "restart of a running node");
        self.start(cfg, now);
        self.fsync_done_at = now;
    }

    fn start(&mut self, cfg: &SimConfig, now: Micros) {
        // A snapshot being received when the process stopped is gone with
        // its stream (as the node discards them at open).
        self.disk
            .storage()
            .discard_stages()
            .expect("discard stages");
        let mut group = self.start_group(cfg, now, GROUP);
        if cfg.options.unconfirmed_keepalives {
            group.set_mutation(Some(synod_group::GroupMutation::UnconfirmedKeepalives));
        }
        if cfg.options.unconfirmed_timestamps {
            group.set_mutation(Some(synod_group::GroupMutation::UnconfirmedTimestamps));
        }
        if cfg.options.follower_reads_unconfirmed {
            group.set_mutation(Some(synod_group::GroupMutation::FollowerReadsUnconfirmed));
        }
        if cfg.options.rows_unwritten_at_compaction {
            group.set_mutation(Some(synod_group::GroupMutation::RowsUnwrittenAtCompaction));
        }
        self.group = Some(group);
        let Some(map) = &cfg.shard_map else {
            return;
        };
        // The shards the run started with, those splits made (on disk),
        // and those their ranges name (design 0016).
        let mut ids: Vec<GroupId> = map.groups().map(GroupId).collect();
        ids.extend(self.disk.groups().into_iter().filter(|g| *g != GROUP));
        for id in ids {
            if !self.shards.contains_key(&id) {
                let shard = self.start_group(cfg, now, id);
                self.shards.insert(id, shard);
            }
        }
        self.adopt_ranges(cfg);
        self.discover(cfg, now);
    }

    /// Gives each shard the run started with its range, unless its store
    /// records one (as the node does at start and after a snapshot).
    pub fn adopt_ranges(&mut self, cfg: &SimConfig) {
        let Some(map) = &cfg.shard_map else {
            return;
        };
        if let Some(meta) = self.group.as_mut() {
            meta.set_lease_keys_in_shards();
        }
        for (i, id) in map.groups().enumerate() {
            if let (Some(shard), synod_kv::KeyRange::Span { start, end }) =
                (self.shards.get_mut(&GroupId(id)), map.span(i))
            {
                shard.set_shard_if_unset(synod_kv::Shard::new(start, end));
            }
        }
    }

    /// Hosts, empty, every group a shard here names as its right
    /// neighbour and this node does not host (it learned of the split by
    /// a snapshot); returns them.
    pub fn discover(&mut self, cfg: &SimConfig, now: Micros) -> Vec<GroupId> {
        let mut made = Vec::new();
        loop {
            let replicas = self.shards.iter().map(|(id, g)| (id.0, g.kv().shard()));
            let missing = synod_group::shards::ShardMap::unknown_neighbours(replicas);
            if missing.is_empty() {
                return made;
            }
            for id in missing.into_iter().map(GroupId) {
                let group = self.start_group_as(cfg, now, id, true);
                self.shards.insert(id, group);
                made.push(id);
            }
        }
    }

    /// Hosts shard `id` empty, in join mode (design 0019: a member sent
    /// it messages). One the run started with takes its first range: it
    /// replays its log from the start.
    pub fn host_empty(&mut self, cfg: &SimConfig, now: Micros, id: GroupId) {
        let group = self.start_group_as(cfg, now, id, true);
        self.shards.insert(id, group);
        self.adopt_ranges(cfg);
    }

    /// The shard map as this node's replicas hold it (sharded runs).
    pub fn shard_map(&self) -> Option<synod_group::shards::ShardMap> {
        let replicas = self.shards.iter().map(|(id, g)| (id.0, g.kv().shard()));
        synod_group::shards::ShardMap::from_replicas(replicas)
    }

    /// A shard this node knows of but holds no state for yet.
    pub fn is_blank(&self, id: GroupId) -> bool {
        self.shards
            .get(&id)
            .is_some_and(|g| g.kv().shard().is_none())
    }

    /// Hosts the group a split of `parent` applied here made, with the
    /// store it cut off and the parent's configuration at the split;
    /// returns its first ready, to write with the parent's (none when the
    /// group, hosted empty, got its leader's snapshot first).
    pub fn host_split(
        &mut self,
        cfg: &SimConfig,
        now: Micros,
        parent: GroupId,
        split: synod_group::SplitOff,
    ) -> Option<synod_group::GroupReady> {
        let (child, mut kv, membership) = (GroupId(split.id), split.kv, split.membership);
        let local = self.local_time(now);
        if let Some(group) = self.shards.get_mut(&child) {
            // Hosted empty already (a member sent it messages first): it
            // takes the split's state unless its leader's snapshot came
            // first, as the node does.
            kv.attach(self.disk.source(child), true);
            if !group.adopt_split(membership, kv) {
                return None;
            }
            return Some(group.ready());
        }
        // None on a spare replaying the parent's log from before it
        // learned a configuration: the new group learns its own.
        let join = membership.is_none();
        let (config, replica) = self.group_parts(cfg, local, child, Durable::empty(), join);
        kv.attach(self.disk.source(child), true);
        let lead = self
            .group_ref(parent)
            .is_some_and(|g| g.replica().role_kind() == synod_paxos::RoleKind::Leader);
        let mut group = Group::from_split(config, replica, membership, kv, local, lead);
        shard_mutation(cfg, &mut group);
        let ready = group.ready();
        self.shards.insert(child, group);
        Some(ready)
    }

    /// Group `id` restored from the disk: the meta group serves the
    /// oracle, a shard is stamped by it.
    fn start_group(&mut self, cfg: &SimConfig, now: Micros, id: GroupId) -> Group {
        self.start_group_as(cfg, now, id, false)
    }

    /// Group `id` restored from the disk; with `join`, its replica trusts
    /// no configuration until it learns one.
    fn start_group_as(&mut self, cfg: &SimConfig, now: Micros, id: GroupId, join: bool) -> Group {
        let local = self.local_time(now);
        let (durable, kv) = self.disk.load(id);
        let (config, replica) = self.group_parts(cfg, local, id, durable, join);
        let mut group = Group::new(config, replica, kv, local);
        if id != GROUP {
            shard_mutation(cfg, &mut group);
        }
        group
    }

    fn group_parts(
        &self,
        cfg: &SimConfig,
        local: Time,
        id: GroupId,
        durable: Durable<Bytes>,
        join: bool,
    ) -> (GroupConfig, Replica<Bytes>) {
        // The session below keeps the group in 8 bits.
        assert!(id.0 <= 256, "simulated groups are numbered below 256");
        let mut paxos = cfg.paxos_for(self.id);
        paxos.join |= join;
        // The meta group draws as an unsharded run's only group does.
        if id != GROUP {
            paxos.rng_seed ^= id.0.wrapping_mul(0x9e37_79b9);
        }
        let replica = Replica::restore(paxos, durable, local).expect("valid config");
        let config = GroupConfig {
            node: self.id,
            // Unique per incarnation and group, as a node's clock-derived
            // one is.
            session: (self.id.0 << 40) | ((id.0 - 1) << 32) | self.incarnation,
            snapshot_every: cfg.snapshot_every,
            compact_keep: cfg.compact_keep,
            session_idle_ms: cfg.session_idle_ms,
            initial_members: Vec::new(),
            record_applied: true,
            timestamp_oracle: id == GROUP,
            stamped: id != GROUP,
            state_flush_rounds: cfg.state_flush_rounds,
        };
        (config, replica)
    }
}
