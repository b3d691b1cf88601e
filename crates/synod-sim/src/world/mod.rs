//! The simulated world: one seeded random source, one event queue, the nodes,
//! the clients, the network and the checkers. `World::run` plays a whole run
//! and returns a report or the first violated invariant.
//!
//! ```text
//!   fault phase (nemesis active) ──► heal ──► clients finish ──► quiet ──► final checks
//!   every event: handle, drive the node's runtime loop, check lease holders
//! ```

use crate::checker::{ApplyChecker, ChosenChecker, Violation};
use crate::client::Client;
use crate::config::{Micros, SimConfig, SimOptions, MS};
use crate::linearizability::{KvInput, KvOutput, Operation};
use crate::network::Network;
use crate::node::SimNode;
use rand::{Rng, SeedableRng};

mod auth;
mod clients;
mod faults;
mod leases;
mod members;
mod oracle;
mod revocations;
mod runtime;
mod splits;
mod zk;
use rand_chacha::ChaCha8Rng;
use std::cmp::Ordering;
use std::collections::{BTreeMap, BinaryHeap, VecDeque};
use synod_group::PeerItem;
use synod_paxos::{Envelope, NodeId};
use synod_storage::GroupId;

/// Runtime-loop rounds per event; more means the replica never settles.
const DRIVE_ROUNDS_MAX: usize = 1000;
/// Events per run; more means something spins.
const EVENTS_MAX: u64 = 5_000_000;
/// Trace lines kept for a violation report.
const TRACE_LINES_MAX: usize = 400;
/// After clients finish, every replica must catch up within this long.
const CONVERGE_MAX: Micros = 3000 * MS;
/// ... and in a sharded run with membership changes, every shard must
/// also follow the meta group within this long: a shard led from a node
/// removed while cut off waits `FOLLOW_CUT_OFF_MS` for its leader to hand
/// it over (design 0019).
const FOLLOW_SETTLE_MAX: Micros =
    (synod_group::FOLLOW_CUT_OFF_MS + 2 * synod_group::FOLLOW_BARRIER_MS) * MS + CONVERGE_MAX;

/// Something scheduled to happen.
#[derive(Clone, Debug)]
enum Event {
    Tick(NodeId, u64),
    Deliver {
        from: NodeId,
        to: NodeId,
        group: GroupId,
        item: PeerItem,
    },
    PersistDone(NodeId, u64),
    /// One chunk of a snapshot stream (chunks of a stream arrive in
    /// order, as on one connection).
    SnapshotChunk {
        from: NodeId,
        to: NodeId,
        group: GroupId,
        slot: synod_paxos::Slot,
        membership: Option<synod_paxos::Configuration>,
        chunk: synod_storage::StreamChunk,
    },
    Request {
        to: NodeId,
        client: u64,
        seq: u64,
        attempt: u64,
        input: KvInput,
    },
    Reply {
        client: u64,
        seq: u64,
        attempt: u64,
        result: Option<KvOutput>,
    },
    ClientTimeout {
        client: u64,
        seq: u64,
        attempt: u64,
        redirect: bool,
    },
    ClientStart(u64),
    LeaseAgent,
    LeaseKeepAlive {
        to: NodeId,
        id: i64,
        sent_at: Micros,
    },
    LeaseAck {
        id: i64,
        sent_at: Micros,
    },
    /// The lease agent's put to an abandoned lease, sent late.
    LateAttach(i64),
    OracleAgent,
    ZkAgent,
    AuthAgent,
    SplitAgent,
    OracleReply {
        asked: Micros,
        first: i64,
        last: i64,
    },
    Nemesis,
    MembershipNemesis,
    Restart(NodeId),
    /// Crash this node now (a negative control aims at a window).
    Crash(NodeId),
    Heal,
    Finish,
}

impl Event {
    /// The node that must be running (and not paused) to take the event.
    fn node(&self) -> Option<NodeId> {
        match self {
            Event::Tick(n, _) | Event::PersistDone(n, _) => Some(*n),
            Event::Deliver { to, .. }
            | Event::SnapshotChunk { to, .. }
            | Event::Request { to, .. }
            | Event::LeaseKeepAlive { to, .. } => Some(*to),
            _ => None,
        }
    }
}

struct Scheduled {
    at: Micros,
    seq: u64,
    event: Event,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Scheduled {
    fn cmp(&self, other: &Self) -> Ordering {
        // Min-heap on (time, insertion order): ties resolve deterministically.
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

/// Counts describing a finished run.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// Events processed.
    pub events: u64,
    /// Simulated time at the end.
    pub sim_time: Micros,
    /// Client operations that completed.
    pub ops_ok: u64,
    /// Client operations whose result stayed unknown.
    pub ops_unknown: u64,
    /// Highest slot applied anywhere.
    pub slots: u64,
    /// Crashes injected.
    pub crashes: u64,
    /// Membership changes the leader accepted.
    pub membership_changes: u64,
    /// Membership changes shards proposed to follow the meta group.
    pub shard_membership_changes: u64,
    /// Leadership transfers the leader accepted.
    pub transfers: u64,
    /// Snapshots streamed from a leader and installed.
    pub snapshots: u64,
    /// Sessions expired through the log (the most any replica applied).
    pub sessions_expired: u64,
    /// Leases the agent asked for.
    pub leases_granted: u64,
    /// Leases revoked by a leader's expiry after being kept alive.
    pub leases_expired: u64,
    /// Timestamps the oracle agent received.
    pub timestamps: u64,
    /// ZooKeeper creates acknowledged by the agent.
    pub zk_creates: u64,
    /// ZooKeeper sessions the agent opened.
    pub zk_sessions: u64,
    /// Ephemeral creates acknowledged by the agent.
    pub zk_ephemerals: u64,
    /// Changes of the auth agent's permission, in log order.
    pub auth_flips: u64,
    /// The auth agent's puts acknowledged OK.
    pub auth_puts_ok: u64,
    /// The auth agent's puts refused with PermissionDenied.
    pub auth_denied: u64,
    /// The auth agent's puts refused for credentials judged before an
    /// auth change (AuthOldRevision).
    pub auth_old_revision: u64,
    /// Acknowledged writes checked for cross-shard revision order.
    pub stamped_writes: u64,
    /// Shards splits made (groups hosted by a split somewhere).
    pub splits: u64,
    /// Shards a node hosted empty because a snapshot named them (it
    /// learned of their split without applying it).
    pub splits_learned: u64,
    /// Shards that deleted a revoked lease's keys (design 0017).
    pub detaches: u64,
    /// Keys the lease agent attached to its leases.
    pub lease_keys: u64,
    /// The linearizability search hit its budget (not a violation, not a pass).
    pub lin_undecided: bool,
    /// A digest of every event, for determinism checks.
    pub digest: u64,
}

/// The whole simulated world for one seed.
pub struct World {
    cfg: SimConfig,
    rng: ChaCha8Rng,
    now: Micros,
    queue: BinaryHeap<Scheduled>,
    next_seq: u64,
    nodes: Vec<SimNode>,
    clients: Vec<Client>,
    history: Vec<Operation>,
    network: Network,
    /// Per group: what was chosen, and what each replica applied.
    chosen: BTreeMap<GroupId, ChosenChecker>,
    applied: BTreeMap<GroupId, ApplyChecker>,
    /// Acknowledged writes' revisions in real-time order (sharded runs).
    revisions: crate::checker::RevisionOrder,
    trace: Option<VecDeque<String>>,
    healed_at: Option<Micros>,
    finished: bool,
    idle_since: Option<Micros>,
    report: Report,
    /// Nodes that were members at some point (a spare is not until added).
    ever_member: Vec<NodeId>,
    lease_agent: leases::LeaseAgent,
    oracle_agent: oracle::OracleAgent,
    zk_agent: zk::ZkAgent,
    auth_agent: auth::AuthAgent,
    /// Groups splits made, on any node.
    split_groups: std::collections::BTreeSet<GroupId>,
    /// The split agent's next new group.
    next_split_group: u64,
    /// Each shard's range at each epoch, as the first replica showed it.
    shard_epochs: BTreeMap<(GroupId, u64), synod_kv::Shard>,
    /// Detaches of revoked leases' keys each node sent, tracked as the
    /// node's core tracks them.
    detaches_sent: BTreeMap<NodeId, synod_group::DetachTracker>,
    /// The leases each detach sent named, by batch number.
    detach_batches: Vec<Vec<i64>>,
}

impl World {
    /// Builds the world for `seed`.
    pub fn new(seed: u64, options: &SimOptions) -> World {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let cfg = SimConfig::from_seed(seed, options, &mut rng);
        let nodes = (0..cfg.nodes.len())
            .map(|i| {
                let offset = rng.gen_range(0..1_000_000_000);
                let mut node = SimNode::new(&cfg, i, offset);
                if let Some(m) = options.mutation {
                    node.group().replica_mut().set_mutation(Some(m));
                }
                node
            })
            .collect();
        let clients = (1..=cfg.clients)
            .map(|id| Client::new(id, cfg.keys))
            .collect();
        let mut world = World {
            rng,
            now: 0,
            queue: BinaryHeap::new(),
            next_seq: 0,
            nodes,
            clients,
            history: Vec::new(),
            network: Network::default(),
            chosen: BTreeMap::new(),
            applied: BTreeMap::new(),
            revisions: crate::checker::RevisionOrder::default(),
            trace: options.trace.then(VecDeque::new),
            healed_at: None,
            finished: false,
            idle_since: None,
            report: Report::default(),
            ever_member: cfg
                .nodes
                .iter()
                .copied()
                .filter(|n| !cfg.spares.contains(n))
                .collect(),
            lease_agent: leases::LeaseAgent::default(),
            oracle_agent: oracle::OracleAgent::default(),
            zk_agent: zk::ZkAgent::default(),
            auth_agent: auth::AuthAgent::default(),
            split_groups: std::collections::BTreeSet::new(),
            next_split_group: splits::FIRST_SPLIT_GROUP,
            shard_epochs: BTreeMap::new(),
            detaches_sent: BTreeMap::new(),
            detach_batches: Vec::new(),
            cfg,
        };
        world.schedule_start();
        world
    }

    fn schedule_start(&mut self) {
        for i in 0..self.nodes.len() {
            let delay = self.rng.gen_range(0..self.cfg.tick_every);
            self.schedule(delay, Event::Tick(self.nodes[i].id, 0));
        }
        for c in 1..=self.cfg.clients {
            let delay = self.rng.gen_range(0..50 * MS);
            self.schedule(delay, Event::ClientStart(c));
        }
        if self.cfg.options.faults {
            self.schedule(100 * MS, Event::Nemesis);
        }
        if self.cfg.options.membership {
            self.schedule(300 * MS, Event::MembershipNemesis);
        }
        if self.cfg.options.leases {
            self.schedule(200 * MS, Event::LeaseAgent);
        }
        if self.cfg.options.timestamps {
            self.schedule(250 * MS, Event::OracleAgent);
        }
        if self.cfg.options.zk {
            self.schedule(150 * MS, Event::ZkAgent);
        }
        if self.cfg.options.auth {
            self.schedule(120 * MS, Event::AuthAgent);
        }
        if self.cfg.options.splits && self.cfg.shard_map.is_some() {
            self.schedule(200 * MS, Event::SplitAgent);
        }
        self.schedule(self.cfg.options.fault_phase, Event::Heal);
    }

    /// The run's configuration.
    pub fn config(&self) -> &SimConfig {
        &self.cfg
    }

    /// The recorded trace (empty unless tracing was on).
    pub fn trace(&self) -> Vec<String> {
        self.trace
            .as_ref()
            .map(|t| t.iter().cloned().collect())
            .unwrap_or_default()
    }

    fn schedule(&mut self, delay: Micros, event: Event) {
        self.next_seq += 1;
        self.queue.push(Scheduled {
            at: self.now + delay,
            seq: self.next_seq,
            event,
        });
    }

    fn note(&mut self, line: impl FnOnce() -> String) {
        if let Some(trace) = self.trace.as_mut() {
            if trace.len() == TRACE_LINES_MAX {
                trace.pop_front();
            }
            trace.push_back(format!("{:>10.3}ms {}", self.now as f64 / 1000.0, line()));
        }
    }

    /// Plays the run to its end.
    pub fn run(mut self) -> (Result<Report, Violation>, World) {
        let result = self.run_inner();
        (result, self)
    }

    fn run_inner(&mut self) -> Result<Report, Violation> {
        while let Some(Scheduled { at, event, .. }) = self.queue.pop() {
            assert!(at >= self.now, "event queue went back in time");
            self.now = at;
            self.report.events += 1;
            assert!(
                self.report.events < EVENTS_MAX,
                "run exceeded {EVENTS_MAX} events"
            );
            self.digest(&event);
            self.handle(event)?;
            self.check_leases()?;
            if self.finished {
                return self.final_checks();
            }
            if let Some(healed) = self.healed_at {
                if self.now > healed + self.cfg.liveness_bound {
                    return Err(self.liveness_violation());
                }
            }
        }
        unreachable!("ticks keep the queue non-empty until Finish")
    }

    fn digest(&mut self, event: &Event) {
        let kind = match event {
            Event::Tick(n, _) => n.0,
            Event::Deliver { from, to, .. } => 100 + from.0 * 10 + to.0,
            Event::PersistDone(n, _) => 2000 + n.0,
            Event::SnapshotChunk { from, to, .. } => 2500 + from.0 * 10 + to.0,
            Event::Request { to, client, .. } => 3000 + to.0 * 100 + client,
            Event::Reply { client, .. } => 4000 + client,
            Event::ClientTimeout { client, .. } => 5000 + client,
            Event::ClientStart(c) => 6000 + c,
            Event::LeaseAgent => 6500,
            Event::LeaseKeepAlive { to, .. } => 6600 + to.0,
            Event::LeaseAck { .. } => 6700,
            Event::LateAttach(_) => 6750,
            Event::OracleAgent => 6800,
            Event::ZkAgent => 6850,
            Event::AuthAgent => 6860,
            Event::SplitAgent => 6870,
            Event::OracleReply { .. } => 6900,
            Event::Nemesis => 7000,
            Event::MembershipNemesis => 7001,
            Event::Restart(n) => 8000 + n.0,
            Event::Crash(n) => 8500 + n.0,
            Event::Heal => 9000,
            Event::Finish => 9001,
        };
        for x in [self.now, kind] {
            self.report.digest = (self.report.digest ^ x).wrapping_mul(0x100_0000_01b3);
        }
    }

    /// A node that runs and is not paused, picked at random (an agent's
    /// next contact); `None` when every node is down or paused.
    fn random_running_node(&mut self) -> Option<usize> {
        let running: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| self.nodes[i].is_up() && self.nodes[i].paused_until <= self.now)
            .collect();
        if running.is_empty() {
            return None;
        }
        Some(running[self.rng.gen_range(0..running.len())])
    }

    fn node_index(&self, id: NodeId) -> usize {
        (id.0 - 1) as usize
    }

    fn handle(&mut self, event: Event) -> Result<(), Violation> {
        if let Some(id) = event.node() {
            let node = &self.nodes[self.node_index(id)];
            if !node.is_up() {
                return Ok(());
            }
            if node.paused_until > self.now {
                let delay = node.paused_until - self.now;
                self.schedule(delay, event);
                return Ok(());
            }
            self.tick_node(id);
        }
        match event {
            Event::Tick(id, incarnation) => self.on_tick(id, incarnation),
            Event::Deliver {
                from,
                to,
                group,
                item,
            } => {
                let i = self.node_index(to);
                if let PeerItem::Paxos(message) = &item {
                    self.note(|| {
                        let message = message.clone();
                        format!("{group} {}", Envelope { from, to, message })
                    });
                }
                let now = self.nodes[i].local_time(self.now);
                if self.nodes[i].is_up() && self.nodes[i].group_of(group).is_none() {
                    self.host_on_demand(i, from, group);
                }
                if let Some(g) = self.nodes[i].group_of(group) {
                    g.step(from, item, now);
                }
            }
            Event::PersistDone(id, incarnation) => self.on_persist_done(id, incarnation)?,
            Event::SnapshotChunk {
                from,
                to,
                group,
                slot,
                membership,
                chunk,
            } => self.on_snapshot_chunk(from, to, group, slot, membership, chunk),
            Event::Request {
                to,
                client,
                seq,
                attempt,
                input,
            } => self.on_request(to, client, seq, attempt, input),
            Event::Reply {
                client,
                seq,
                attempt,
                result,
            } => self.on_reply(client, seq, attempt, result)?,
            Event::ClientTimeout {
                client,
                seq,
                attempt,
                redirect,
            } => self.on_client_timeout(client, seq, attempt, redirect),
            Event::ClientStart(client) => self.on_client_start(client),
            Event::LeaseAgent => self.on_lease_agent(),
            Event::LeaseKeepAlive { to, id, sent_at } => self.on_lease_keepalive(to, id, sent_at),
            Event::LeaseAck { id, sent_at } => self.on_lease_ack(id, sent_at),
            Event::LateAttach(id) => self.attach(id),
            Event::OracleAgent => self.on_oracle_agent(),
            Event::ZkAgent => self.on_zk_agent()?,
            Event::AuthAgent => self.on_auth_agent()?,
            Event::SplitAgent => self.on_split_agent(),
            Event::OracleReply { asked, first, last } => {
                self.on_oracle_reply(asked, first, last)?
            }
            Event::Nemesis => self.nemesis(),
            Event::MembershipNemesis => self.membership_nemesis(),
            Event::Restart(id) => self.restart(id),
            Event::Crash(id) => self.crash_at(id),
            Event::Heal => self.heal(),
            Event::Finish => self.on_finish_probe()?,
        }
        self.drive_all()
    }

    /// Brings a node's replica clock up to date before it handles anything,
    /// as a real runtime reads its clock before serving a request.
    fn tick_node(&mut self, id: NodeId) {
        let i = self.node_index(id);
        let now = self.nodes[i].local_time(self.now);
        for gid in self.nodes[i].group_ids() {
            if let Some(g) = self.nodes[i].group_of(gid) {
                g.tick(now);
            }
        }
    }

    fn on_tick(&mut self, id: NodeId, incarnation: u64) {
        let i = self.node_index(id);
        if self.nodes[i].incarnation != incarnation {
            return;
        }
        self.schedule(self.cfg.tick_every, Event::Tick(id, incarnation));
        if self.nodes[i].is_up() && self.nodes[i].paused_until <= self.now {
            self.drive_revocations(i);
            self.drive_follower(i);
        }
    }

    fn drive_all(&mut self) -> Result<(), Violation> {
        for i in 0..self.nodes.len() {
            let node = &self.nodes[i];
            if node.is_up() && node.paused_until <= self.now {
                let id = node.id;
                self.drive(id)?;
            }
        }
        Ok(())
    }
}
