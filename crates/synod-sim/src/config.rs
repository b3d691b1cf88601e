//! What one simulated run looks like, drawn from its seed: cluster shape,
//! quorums, timings, fault mix. The seed alone reproduces the run.

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use synod_paxos::{Config, Mutation, NodeId};

/// Microseconds of simulated real time.
pub type Micros = u64;

/// One millisecond in simulated time.
pub const MS: Micros = 1000;

/// The knobs a caller picks; everything else is drawn from the seed.
#[derive(Clone, Debug)]
pub struct SimOptions {
    /// Voters in the group.
    pub voters: usize,
    /// Inject faults (off gives a clean-network baseline).
    pub faults: bool,
    /// A deliberately broken protocol variant, for negative controls.
    pub mutation: Option<Mutation>,
    /// Record a readable trace of events (slower; used when replaying).
    pub trace: bool,
    /// How long faults are injected before the network heals.
    pub fault_phase: Micros,
    /// Run the lease agent: leases granted, kept alive and abandoned, the
    /// leaders' lessors expiring them.
    pub leases: bool,
    /// Negative control: a leader answers keep-alives without confirming
    /// it still leads (the bug the runtime's read before renewing
    /// prevents). The early-expiry check must catch it.
    pub unconfirmed_keepalives: bool,
    /// Negative control: a follower serves a linearizable read from its
    /// own state at once, without the leader's read index. The
    /// linearizability checker must catch the stale reads.
    pub follower_reads_unconfirmed: bool,
    /// Run the oracle agent: timestamps asked of any node, checked for
    /// uniqueness and real-time order.
    pub timestamps: bool,
    /// Negative control: a leader hands out timestamps without confirming
    /// it still leads; the real-time order check must catch it.
    pub unconfirmed_timestamps: bool,
    /// Run the ZooKeeper agent: sequential creates through any node,
    /// checked for unique names and no lost acknowledged create.
    pub zk: bool,
    /// Run the auth agent: users and roles set up, auth enabled, a role's
    /// permission flipped while its user writes, checked against the log.
    pub auth: bool,
    /// Negative control: a node's shell drops the auth store's row from
    /// its writes, so a restart (or a snapshot streamed from its disk)
    /// loses users, roles and permissions; the auth checks must see it.
    pub lose_auth_row: bool,
    /// Negative control: a node's shell writes a state-machine snapshot
    /// (with its applied slot) at once and the log compaction only with a
    /// later write, as the runtime once did. A crash in between restarts
    /// the node taking stale acceptances as chosen; the checkers must see
    /// it.
    pub split_snapshot_compaction: bool,
    /// Negative control: a node's shell acknowledges a round's write to the
    /// group before its fsync completed, so promises and acceptances leave
    /// before they are durable (persist-after-send). A crash then forgets
    /// what was promised; the safety checkers must see it.
    pub ack_before_fsync: bool,
    /// Let clocks drift forty times beyond what the replicas are configured to
    /// tolerate: a fault outside the model, which the lease checker must see.
    pub excess_drift: bool,
    /// Change membership during the fault phase (add, remove, replace,
    /// promote, demote replicas; transfer leadership), with spare nodes that
    /// start empty and join.
    pub membership: bool,
    /// Negative control: a shard's leader keeps stamps left over from one
    /// answer of the oracle for later writes; the cross-shard revision
    /// order check must catch it.
    pub stamps_from_leftovers: bool,
    /// Cut the clients' keys into this many shards, each its own group on
    /// every node, stamped by the meta group's oracle (0: one group, as
    /// before). With `membership`, the nemesis changes the meta group's
    /// configuration and every shard follows it (design 0019).
    pub shards: usize,
    /// With `shards`: split shards at random keys during the fault phase
    /// (a split command in the shard's log, design 0016); the checkers
    /// add "no key owned by two shards" and "one range per shard and
    /// epoch".
    pub splits: bool,
    /// Negative control (with `splits`): a shard's state machine keeps
    /// applying writes of keys it split off; the history checker must see
    /// them lost.
    pub split_unfenced: bool,
    /// Negative control (with `shards`): shard leaders attach keys to
    /// leases without the oracle's check; the lease agent's late puts
    /// then keep keys of revoked leases, which settling must catch.
    pub leases_unchecked: bool,
    /// Negative control (with `shards`): shards apply the auth agent's
    /// puts whatever their stamp's auth fence says; a put judged before a
    /// revocation and ordered after it must be caught.
    pub auth_unfenced: bool,
    /// Negative control: groups compact their log without writing the
    /// rows the compaction relies on (they are written every few rounds);
    /// a crash then loses writes below the compaction.
    pub rows_unwritten_at_compaction: bool,
}

impl SimOptions {
    /// Defaults used by the simulator command and the test suite.
    pub fn new(voters: usize) -> SimOptions {
        SimOptions {
            voters,
            faults: true,
            mutation: None,
            trace: false,
            fault_phase: 4000 * MS,
            leases: true,
            unconfirmed_keepalives: false,
            follower_reads_unconfirmed: false,
            timestamps: true,
            unconfirmed_timestamps: false,
            zk: true,
            auth: true,
            lose_auth_row: false,
            split_snapshot_compaction: false,
            ack_before_fsync: false,
            excess_drift: false,
            membership: true,
            shards: 0,
            stamps_from_leftovers: false,
            splits: false,
            split_unfenced: false,
            leases_unchecked: false,
            auth_unfenced: false,
            rows_unwritten_at_compaction: false,
        }
    }
}

/// The concrete shape of one run.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// The seed everything derives from.
    pub seed: u64,
    /// Voters, then observers, then spares: every node of the world.
    pub nodes: Vec<NodeId>,
    /// Nodes that start empty, outside the group, in join mode: the
    /// membership nemesis adds them.
    pub spares: Vec<NodeId>,
    /// The paxos configuration shared by every replica (ids differ).
    pub paxos: Config,
    /// Simulated clients issuing operations.
    pub clients: u64,
    /// Keys the clients contend on.
    pub keys: u64,
    /// Per node clock rate error, parts per million.
    pub drift_ppm: Vec<i64>,
    /// Apply this many slots between snapshots (and log compactions).
    pub snapshot_every: u64,
    /// Bytes per snapshot chunk between replicas (small, so that shipping
    /// takes many messages and meets every network fault).
    pub snapshot_chunk_bytes: usize,
    /// Slots a compaction leaves behind the applied slot: none when
    /// snapshots come every 8 slots (a follower a slot behind then needs
    /// a snapshot, so shipping and installing meet every fault), half the
    /// interval otherwise (catch-up from the log's tail).
    pub compact_keep: u64,
    /// Rounds between writes of a group's rows (1: every round, as before
    /// `synod_group::STATE_FLUSH_ROUNDS`): with more, crashes lose rows a
    /// restart rebuilds by replaying the log.
    pub state_flush_rounds: u64,
    /// Sessions idle this long are expired through the log (0: never);
    /// a write waits at most a quarter of it on its node.
    pub session_idle_ms: u64,
    /// The node runtime ticks its replica this often.
    pub tick_every: Micros,
    /// A simulated fsync takes between these.
    pub fsync: (Micros, Micros),
    /// A client gives up on one attempt after this long and retries elsewhere.
    pub client_timeout: Micros,
    /// Bound on how long after healing every outstanding operation must finish.
    pub liveness_bound: Micros,
    /// The caller's options.
    pub options: SimOptions,
    /// Which group owns each client key, in a sharded run.
    pub shard_map: Option<synod_group::shards::ShardMap>,
}

impl SimConfig {
    /// Draws a run's shape from its seed.
    pub fn from_seed(seed: u64, options: &SimOptions, rng: &mut ChaCha8Rng) -> SimConfig {
        let n = options.voters;
        let observers = if rng.gen_bool(0.3) { 1 } else { 0 };
        let spares = if options.membership { 2 } else { 0 };
        let nodes: Vec<NodeId> = (1..=(n + observers + spares) as u64).map(NodeId).collect();
        let voters = &nodes[..n];
        let mut paxos = Config::majority(voters[0], voters);
        paxos.observers = nodes[n..n + observers].to_vec();
        if rng.gen_bool(0.3) {
            // Flexible quorums: any Q1 with Q2 = N - Q1 + 1.
            paxos.phase1_quorum = rng.gen_range(1..=n);
            paxos.phase2_quorum = n - paxos.phase1_quorum + 1;
        }
        paxos.election_timeout_ms = 300;
        paxos.heartbeat_interval_ms = 30;
        paxos.lease_duration_ms = if rng.gen_bool(0.8) { 200 } else { 0 };
        paxos.clock_drift_max_ppm = 20_000;
        paxos.window_slots_max = [4, 32, 256][rng.gen_range(0..3)];
        paxos.batch_commands_max = [1, 4, 64][rng.gen_range(0..3)];
        paxos.catchup_slots_max = [2, 16, 256][rng.gen_range(0..3)];
        paxos.rng_seed = seed;
        let tolerated = paxos.clock_drift_max_ppm as i64 / 2;
        let half = if options.excess_drift {
            tolerated * 40
        } else {
            tolerated
        };
        let drift_ppm = nodes.iter().map(|_| rng.gen_range(-half..=half)).collect();
        let mut cfg = SimConfig {
            seed,
            spares: nodes[n + observers..].to_vec(),
            nodes,
            paxos,
            clients: rng.gen_range(2..=10),
            keys: rng.gen_range(1..=4),
            drift_ppm,
            snapshot_every: [8, 64, 1 << 40][rng.gen_range(0..3)],
            tick_every: 5 * MS,
            fsync: (50, 500),
            client_timeout: rng.gen_range(200..=800) * MS,
            liveness_bound: 15_000 * MS,
            options: options.clone(),
            snapshot_chunk_bytes: [64, 512, 1 << 20][rng.gen_range(0..3)],
            compact_keep: 0,
            session_idle_ms: 0,
            shard_map: None,
            state_flush_rounds: 1,
        };
        if options.shards > 0 {
            // Enough keys that every shard may hold some (split points in
            // byte order: "k10" sorts before "k2").
            let shards = options.shards as u64;
            cfg.keys = cfg.keys.max(2 * shards);
            let splits: std::collections::BTreeSet<bytes::Bytes> = (1..shards)
                .map(|j| crate::kv::key(j * cfg.keys / shards))
                .collect();
            let splits = splits.into_iter().collect();
            cfg.shard_map =
                Some(synod_group::shards::ShardMap::new(splits).expect("increasing split points"));
            if options.splits {
                // Keys enough that splits have somewhere to cut.
                cfg.keys = cfg.keys.max(6);
            }
        }
        // Derived, not drawn: the seeds' other draws stay as they were.
        if cfg.snapshot_every != 8 {
            cfg.compact_keep = cfg.snapshot_every / 2;
        }
        cfg.state_flush_rounds = [1, 3, synod_group::STATE_FLUSH_ROUNDS]
            [(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) as usize % 3];
        // Half the seeds expire sessions idle for 3 s (a run lasts 5 s), so
        // the sessions of incarnations that crashed early expire; a write
        // then waits at most 750 ms on its node, longer than any wait
        // without faults (400 ms was not: writes timed out at the first
        // election).
        if cfg.clients % 2 == 1 {
            cfg.session_idle_ms = 3_000;
        }
        cfg
    }

    /// The paxos configuration for one node. A spare runs in join mode: it
    /// was told only that it is a member, and learns the rest.
    pub fn paxos_for(&self, id: NodeId) -> Config {
        if self.spares.contains(&id) {
            return Config {
                id,
                voters: vec![id],
                observers: Vec::new(),
                phase1_quorum: 1,
                phase2_quorum: 1,
                join: true,
                ..self.paxos.clone()
            };
        }
        Config {
            id,
            ..self.paxos.clone()
        }
    }
}
