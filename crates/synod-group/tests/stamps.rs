//! Shards stamping their writes with the meta group's timestamp oracle
//! (design 0011): three nodes, each hosting the meta group and two
//! stamped shards, wired by an in-memory network that delivers at once
//! (optionally cutting a node off) and a shell that carries each shard's
//! questions to its node's meta group and the answers back.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use synod_group::{Answer, Group, GroupConfig, PeerItem, Request, Ticket};
use synod_kv::{outcome_error, KvError, KvStore};
use synod_paxos::{Config, NodeId, Replica, Time};
use synod_proto::etcdserverpb::request_op::Request as TxnOp;
use synod_proto::etcdserverpb::response_op::Response;
use synod_proto::etcdserverpb::{PutRequest, RangeRequest, RequestOp, TxnRequest};
use synod_proto::synodpb::{command::Op, outcome, Outcome};

const TICK_MS: u64 = 10;
const META: u64 = 0;
const SHARDS: [u64; 2] = [1, 2];
/// Tickets from here up are the shell's own questions to the oracle.
const SHELL: Ticket = 1 << 40;

struct Node {
    groups: BTreeMap<u64, Group>,
    /// The shell's oracle questions: ticket → (shard, question id).
    questions: BTreeMap<Ticket, (u64, u64)>,
    next: Ticket,
}

struct Cluster {
    nodes: BTreeMap<NodeId, Node>,
    now: u64,
    cut: BTreeSet<NodeId>,
    answers: Vec<(NodeId, Ticket, Answer)>,
}

fn config(node: NodeId, group: u64) -> GroupConfig {
    GroupConfig {
        node,
        session: 100 * (group + 1) + node.0,
        snapshot_every: 10_000,
        compact_keep: 0,
        session_idle_ms: 0,
        initial_members: Vec::new(),
        record_applied: false,
        timestamp_oracle: group == META,
        stamped: group != META,
        state_flush_rounds: 4,
    }
}

impl Cluster {
    fn new() -> Cluster {
        let ids: Vec<NodeId> = (1..=3).map(NodeId).collect();
        let nodes = ids
            .iter()
            .map(|&id| {
                let groups = std::iter::once(META)
                    .chain(SHARDS)
                    .map(|g| {
                        let replica = Replica::new(Config::majority(id, &ids), Time(0)).unwrap();
                        (
                            g,
                            Group::new(config(id, g), replica, KvStore::default(), Time(0)),
                        )
                    })
                    .collect();
                let node = Node {
                    groups,
                    questions: BTreeMap::new(),
                    next: SHELL,
                };
                (id, node)
            })
            .collect();
        let mut c = Cluster {
            nodes,
            now: 0,
            cut: BTreeSet::new(),
            answers: Vec::new(),
        };
        c.run_ms(2_000);
        c
    }

    /// Drives every group and delivers every message until all are quiet.
    fn settle(&mut self) {
        let mut wire: VecDeque<(NodeId, u64, NodeId, PeerItem)> = VecDeque::new();
        let now = Time(self.now);
        for _ in 0..100_000 {
            for (&id, node) in self.nodes.iter_mut() {
                let mut asks = Vec::new();
                let mut granted = Vec::new();
                for (&gid, group) in node.groups.iter_mut() {
                    while group.has_ready() {
                        let ready = group.ready();
                        for (to, item) in ready.sends {
                            wire.push_back((id, gid, to, item));
                        }
                        for (ticket, answer) in ready.answers {
                            match (ticket >= SHELL, answer) {
                                (true, Answer::Timestamps(range, live)) => {
                                    let (shard, q) = node.questions.remove(&ticket).unwrap();
                                    granted.push((shard, q, range, live));
                                }
                                (false, answer) => self.answers.push((id, ticket, answer)),
                                (true, other) => panic!("the oracle answered {other:?}"),
                            }
                        }
                        if let Some(q) = ready.stamps {
                            assert_ne!(gid, META, "only shards ask for stamps");
                            asks.push((gid, q.id, q.count, q.leases));
                        }
                        group.on_written();
                        group.on_persisted(ready.token);
                    }
                    group.check_invariants();
                }
                for (shard, q, count, leases) in asks {
                    let ticket = node.next;
                    node.next += 1;
                    node.questions.insert(ticket, (shard, q));
                    let meta = node.groups.get_mut(&META).unwrap();
                    meta.request(ticket, Request::Timestamps { count, leases }, now);
                }
                for (shard, q, range, live) in granted {
                    let g = node.groups.get_mut(&shard).unwrap();
                    g.stamps_granted(q, range, &live, now);
                }
            }
            let quiet = self
                .nodes
                .values()
                .all(|n| n.groups.values().all(|g| !g.has_ready()));
            let Some((from, gid, to, item)) = wire.pop_front() else {
                if quiet {
                    return;
                }
                continue;
            };
            if !self.cut.contains(&from) && !self.cut.contains(&to) {
                let g = self.nodes.get_mut(&to).unwrap().groups.get_mut(&gid);
                g.unwrap().step(from, item, now);
            }
        }
        panic!("the cluster did not settle");
    }

    fn run_ms(&mut self, ms: u64) {
        for _ in 0..ms / TICK_MS {
            self.now += TICK_MS;
            for node in self.nodes.values_mut() {
                for group in node.groups.values_mut() {
                    group.tick(Time(self.now));
                }
            }
            self.settle();
        }
    }

    fn leader(&self, gid: u64) -> NodeId {
        let leaders: Vec<NodeId> = self
            .nodes
            .iter()
            .filter(|(id, n)| !self.cut.contains(id) && n.groups[&gid].status().is_leader)
            .map(|(id, _)| *id)
            .collect();
        assert_eq!(leaders.len(), 1, "leaders of {gid}: {leaders:?}");
        leaders[0]
    }

    /// Sends `request` to `gid` at `at` and runs until it is answered.
    fn call(&mut self, at: NodeId, gid: u64, ticket: Ticket, request: Request) -> Answer {
        let now = Time(self.now);
        let g = self.nodes.get_mut(&at).unwrap().groups.get_mut(&gid);
        g.unwrap().request(ticket, request, now);
        for _ in 0..500 {
            self.settle();
            if let Some(i) = self
                .answers
                .iter()
                .position(|(n, t, _)| *n == at && *t == ticket)
            {
                return self.answers.remove(i).2;
            }
            self.run_ms(TICK_MS);
        }
        panic!("no answer at {at:?} for ticket {ticket}");
    }

    fn revision(&self, at: NodeId, gid: u64) -> i64 {
        self.nodes[&at].groups[&gid].kv().revision()
    }
}

fn put(key: &str, value: &str) -> Request {
    Request::Write(Op::Put(PutRequest {
        key: key.to_string().into(),
        value: value.to_string().into(),
        ..Default::default()
    }))
}

fn read_txn(key: &str) -> Op {
    Op::Txn(TxnRequest {
        success: vec![RequestOp {
            request: Some(TxnOp::RequestRange(RangeRequest {
                key: key.to_string().into(),
                ..Default::default()
            })),
        }],
        ..Default::default()
    })
}

/// The revision a put was written at.
fn put_revision(answer: &Answer) -> i64 {
    match answer {
        Answer::Write(Outcome {
            result: Some(outcome::Result::Put(p)),
        }) => p.header.as_ref().unwrap().revision,
        other => panic!("not a put: {other:?}"),
    }
}

#[test]
fn writes_across_shards_get_revisions_in_real_time_order() {
    let mut c = Cluster::new();
    let mut last = 0;
    let mut ticket = 1;
    // Each put starts after the one before was acknowledged, at every
    // node, alternating shards: each revision must lie above the last.
    for round in 0..30 {
        for node in 1..=3 {
            let shard = SHARDS[(round + node as usize) % 2];
            let answer = c.call(NodeId(node), shard, ticket, put("k", &format!("{round}")));
            let revision = put_revision(&answer);
            assert!(revision > last, "{revision} after {last}");
            last = revision;
            ticket += 1;
        }
    }
    // Every replica of a shard applied the same revisions.
    for shard in SHARDS {
        let r = c.revision(NodeId(1), shard);
        for node in 2..=3 {
            assert_eq!(c.revision(NodeId(node), shard), r);
        }
    }
}

#[test]
fn a_shard_whose_leader_is_cut_off_keeps_its_order_under_the_next_leader() {
    let mut c = Cluster::new();
    let shard = SHARDS[0];
    let old = c.leader(shard);
    let other = NodeId(if old == NodeId(1) { 2 } else { 1 });
    let before = put_revision(&c.call(other, shard, 1, put("k", "before")));
    c.cut.insert(old);
    c.run_ms(3_000);
    let after = put_revision(&c.call(other, shard, 2, put("k", "after")));
    assert!(after > before, "{after} after {before}");
    // The other shard's writes still come after both.
    let elsewhere = put_revision(&c.call(other, SHARDS[1], 3, put("j", "x")));
    assert!(elsewhere > after);
    c.cut.clear();
    c.run_ms(2_000);
    // The old leader caught up with the same history.
    assert_eq!(c.revision(old, shard), c.revision(other, shard));
}

#[test]
fn a_read_stamped_in_the_past_sees_the_shard_as_it_was() {
    let mut c = Cluster::new();
    let shard = SHARDS[0];
    let first = put_revision(&c.call(NodeId(1), shard, 1, put("k", "1")));
    put_revision(&c.call(NodeId(2), shard, 2, put("k", "2")));
    let request = Request::WriteStamped {
        op: read_txn("k"),
        stamp: first,
    };
    match c.call(NodeId(3), shard, 3, request) {
        Answer::Write(Outcome {
            result: Some(outcome::Result::Txn(t)),
        }) => match &t.responses[0].response {
            Some(Response::ResponseRange(r)) => assert_eq!(r.kvs[0].value, "1".as_bytes()),
            other => panic!("not a range: {other:?}"),
        },
        other => panic!("not a txn: {other:?}"),
    }
    // A stamp of 0 is refused, never sent to the leader to stamp.
    let refused = c.call(
        NodeId(3),
        shard,
        4,
        Request::WriteStamped {
            op: read_txn("k"),
            stamp: 0,
        },
    );
    match refused {
        Answer::Write(Outcome {
            result: Some(outcome::Result::Error(e)),
        }) => assert!(matches!(outcome_error(&e), KvError::InvalidArgument(_))),
        other => panic!("not refused: {other:?}"),
    }
}
