//! The real consensus core on real storage: three nodes, two Paxos groups,
//! every node's groups persisted through one batch per round (group commit).
//! Commands are proposed and chosen, logs are compacted, then every process
//! "restarts": replicas are rebuilt from `Storage::load` alone and must hold
//! the same log, promise and commit point, and go on choosing commands.

mod common;

use bytes::Bytes;
use std::collections::BTreeMap;
use synod_paxos::{Config, Envelope, NodeId, Replica, RoleKind, Slot, SlotRecord, Time, Value};
use synod_storage::{GroupId, Identity, Storage};
use tempfile::TempDir;

const NODES: u64 = 3;
const GROUPS: [GroupId; 2] = [GroupId(1), GroupId(2)];
/// Simulated time per round: a heartbeat interval, so leaders stay leaders.
const ROUND_MS: u64 = 100;
const ROUNDS_MAX: usize = 200;
const COMPACT_EVERY_ROUNDS: usize = 8;
const COMMANDS_PER_WAVE: usize = 3;

struct Node {
    id: NodeId,
    dir: TempDir,
    storage: Storage,
    replicas: BTreeMap<GroupId, Replica<Bytes>>,
}

struct Cluster {
    nodes: Vec<Node>,
    now: Time,
    rounds: usize,
    /// Per group, what the replica on node 1 applied, in order.
    applied: BTreeMap<GroupId, Vec<Value<Bytes>>>,
}

fn ids() -> Vec<NodeId> {
    (1..=NODES).map(NodeId).collect()
}

fn identity(id: NodeId) -> Identity {
    Identity {
        cluster_id: 77,
        node_id: id.0,
    }
}

impl Cluster {
    fn new() -> Cluster {
        let nodes = ids()
            .into_iter()
            .map(|id| {
                let dir = tempfile::tempdir().unwrap();
                let storage = Storage::open(dir.path(), identity(id)).unwrap();
                let replicas = GROUPS
                    .iter()
                    .map(|&g| {
                        (
                            g,
                            Replica::new(Config::majority(id, &ids()), Time(0)).unwrap(),
                        )
                    })
                    .collect();
                Node {
                    id,
                    dir,
                    storage,
                    replicas,
                }
            })
            .collect();
        Cluster {
            nodes,
            now: Time(0),
            rounds: 0,
            applied: BTreeMap::new(),
        }
    }

    /// Every node: tick, one batch with every group's persist (and, now and
    /// then, a compaction with its applied slot), commit, acknowledge; then
    /// deliver all mail. Returns the number of messages delivered.
    fn round(&mut self) -> usize {
        self.rounds += 1;
        self.now = self.now.plus_ms(ROUND_MS);
        let compact = self.rounds % COMPACT_EVERY_ROUNDS == 0;
        let floors: BTreeMap<GroupId, Slot> =
            GROUPS.iter().map(|&g| (g, self.applied_floor(g))).collect();
        let mut mail: Vec<(GroupId, Envelope<Bytes>)> = Vec::new();
        for node in &mut self.nodes {
            let mut batch = node.storage.batch().unwrap();
            let mut tokens = Vec::new();
            for (&group, replica) in &mut node.replicas {
                replica.tick(self.now);
                if compact && floors[&group] > replica.log().snapshot() {
                    replica.compact(floors[&group]);
                    batch.set_applied(group, replica.status().applied).unwrap();
                }
                let ready = replica.ready();
                batch.persist(group, &ready.persist).unwrap();
                assert!(
                    ready.snapshots.is_empty(),
                    "compaction stays below every replica's applied slot"
                );
                if node.id == NodeId(1) {
                    let applied = self.applied.entry(group).or_default();
                    applied.extend(ready.apply.into_iter().map(|a| a.value));
                }
                mail.extend(ready.messages.into_iter().map(|m| (group, m)));
                tokens.push((group, ready.token));
            }
            batch.commit().unwrap();
            for (group, token) in tokens {
                node.replicas.get_mut(&group).unwrap().on_persisted(token);
            }
        }
        let delivered = mail.len();
        for (group, envelope) in mail {
            let node = &mut self.nodes[(envelope.to.0 - 1) as usize];
            node.replicas
                .get_mut(&group)
                .unwrap()
                .step(envelope.from, envelope.message, self.now);
        }
        delivered
    }

    /// The lowest applied slot of the group's replicas: compacting below it
    /// never leaves a replica needing a snapshot.
    fn applied_floor(&self, group: GroupId) -> Slot {
        self.nodes
            .iter()
            .map(|n| n.replicas[&group].status().applied)
            .min()
            .unwrap()
    }

    fn leader(&self, group: GroupId) -> Option<usize> {
        self.nodes
            .iter()
            .position(|n| n.replicas[&group].role_kind() == RoleKind::Leader)
    }

    /// Runs rounds until `done`, panicking after ROUNDS_MAX.
    fn run_until(&mut self, what: &str, done: impl Fn(&Cluster) -> bool) {
        for _ in 0..ROUNDS_MAX {
            if done(self) {
                return;
            }
            self.round();
        }
        panic!("{what} did not happen within {ROUNDS_MAX} rounds");
    }

    /// Proposes `waves` waves of commands, one wave per round, to each
    /// group's leader, and runs until every replica has them all chosen.
    fn propose_and_commit(&mut self, tag: &str, waves: usize) {
        for wave in 0..waves {
            for &group in &GROUPS {
                self.run_until("election", |c| c.leader(group).is_some());
                let leader = self.leader(group).unwrap();
                for i in 0..COMMANDS_PER_WAVE {
                    let command = Bytes::from(format!("{tag}-{group}-{wave}.{i}"));
                    let replica = self.nodes[leader].replicas.get_mut(&group).unwrap();
                    replica.propose(command).unwrap();
                }
            }
            self.round();
        }
        let target: BTreeMap<GroupId, Slot> = GROUPS
            .iter()
            .map(|&g| {
                (
                    g,
                    self.nodes[self.leader(g).unwrap()].replicas[&g]
                        .log()
                        .last(),
                )
            })
            .collect();
        self.run_until("commit everywhere", |c| {
            c.nodes.iter().all(|n| {
                n.replicas
                    .iter()
                    .all(|(g, r)| r.log().commit() >= target[g])
            })
        });
    }

    /// Persists whatever the last deliveries changed and drops the messages
    /// that would follow: the processes die right after this fsync, so what
    /// is in memory is exactly what is on disk.
    fn flush(&mut self) {
        for node in &mut self.nodes {
            let mut batch = node.storage.batch().unwrap();
            let mut tokens = Vec::new();
            for (&group, replica) in &mut node.replicas {
                let ready = replica.ready();
                batch.persist(group, &ready.persist).unwrap();
                tokens.push((group, ready.token));
            }
            batch.commit().unwrap();
            for (group, token) in tokens {
                node.replicas.get_mut(&group).unwrap().on_persisted(token);
            }
        }
    }
}

/// What must survive a restart, per node and group.
#[derive(Debug, PartialEq)]
struct Kept {
    promised: synod_paxos::Ballot,
    snapshot: Slot,
    commit: Slot,
    /// Every stored slot's ballot and value; chosen flags only through the
    /// commit point (above it, "chosen" may be in-memory knowledge from a
    /// leader's commit message that the core re-derives after a restart).
    records: Vec<(Slot, synod_paxos::Ballot, Value<Bytes>, Option<bool>)>,
}

fn kept(replica: &Replica<Bytes>) -> Kept {
    let commit = replica.log().commit();
    let records = replica
        .log()
        .records_after(Slot(0))
        .into_iter()
        .map(|r: SlotRecord<Bytes>| {
            (
                r.slot,
                r.ballot,
                r.value,
                (r.slot <= commit).then_some(r.chosen),
            )
        })
        .collect();
    Kept {
        promised: replica.status().promised,
        snapshot: replica.log().snapshot(),
        commit,
        records,
    }
}

#[test]
fn replicas_restored_from_storage_keep_their_logs_and_go_on() {
    let mut cluster = Cluster::new();
    cluster.nodes[0]
        .replicas
        .get_mut(&GroupId(1))
        .unwrap()
        .campaign_now();
    cluster.nodes[1]
        .replicas
        .get_mut(&GroupId(2))
        .unwrap()
        .campaign_now();
    cluster.propose_and_commit("before", 30);
    cluster.flush();
    assert!(
        cluster
            .nodes
            .iter()
            .all(|n| n.replicas.values().all(|r| r.log().snapshot() > Slot(0))),
        "every replica compacted at least once"
    );
    let before: Vec<BTreeMap<GroupId, Kept>> = cluster
        .nodes
        .iter()
        .map(|n| n.replicas.iter().map(|(&g, r)| (g, kept(r))).collect())
        .collect();

    // Every process stops; only the data dirs remain.
    let dirs: Vec<(NodeId, TempDir)> = cluster.nodes.drain(..).map(|n| (n.id, n.dir)).collect();
    for (i, (id, dir)) in dirs.into_iter().enumerate() {
        let storage = Storage::open(dir.path(), identity(id)).unwrap();
        assert_eq!(storage.groups().unwrap(), GROUPS.to_vec());
        let mut replicas = BTreeMap::new();
        for &group in &GROUPS {
            let durable = storage.load(group).unwrap();
            let applied = durable.applied;
            let replica =
                Replica::restore(Config::majority(id, &ids()), durable, cluster.now).unwrap();
            eprintln!("restored {group}: {}", replica.status());
            assert_eq!(
                kept(&replica),
                before[i][&group],
                "{id} {group} after restore"
            );
            assert_eq!(
                replica.status().applied,
                applied,
                "{id} {group} resumes applying there"
            );
            replicas.insert(group, replica);
        }
        cluster.nodes.push(Node {
            id,
            dir,
            storage,
            replicas,
        });
    }

    // The restored cluster elects leaders again and keeps choosing commands
    // after the ones it had.
    cluster.propose_and_commit("after", 5);
    for &group in &GROUPS {
        let logs: Vec<Vec<(Slot, Value<Bytes>)>> = cluster
            .nodes
            .iter()
            .map(|n| {
                let log = n.replicas[&group].log();
                let from = cluster
                    .nodes
                    .iter()
                    .map(|m| m.replicas[&group].log().snapshot())
                    .max()
                    .unwrap();
                (from.0 + 1..=log.commit().0)
                    .map(|s| (Slot(s), log.get(Slot(s)).unwrap().value.clone()))
                    .collect()
            })
            .collect();
        assert!(
            logs.windows(2).all(|w| w[0] == w[1]),
            "{group}: replicas agree on the chosen log"
        );
        let last = &logs[0].last().unwrap().1;
        let Value::Batch(commands) = last else {
            panic!("{group}: last chosen value is a no-op")
        };
        assert!(
            commands
                .last()
                .unwrap()
                .starts_with(format!("after-{group}").as_bytes()),
            "{group}: new commands chosen after the restart"
        );
    }
    let applied = &cluster.applied[&GroupId(1)];
    let commands: Vec<&Bytes> = applied
        .iter()
        .flat_map(|v| match v {
            Value::Batch(c) => c.iter().collect::<Vec<_>>(),
            Value::Noop | Value::Membership(_) => Vec::new(),
        })
        .collect();
    assert!(commands.iter().any(|c| c.starts_with(b"before-group 1")));
    assert!(commands.iter().any(|c| c.starts_with(b"after-group 1")));
}
