//! The core's rules as readable scripts: each file in `testdata/` drives a
//! few replicas by hand over a network the script controls, and the expected
//! output (messages, persistence, applied values) is checked in. Run with
//! `REWRITE=1` to regenerate after an intended change, then read the diff.

use datadriven::{walk, TestCase};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;
use synod_paxos::{
    Ballot, Config, Durable, Envelope, NodeId, ReadId, Replica, Slot, SlotRecord, Time, ValueFmt,
};

type Cmd = String;

/// What a node's disk holds.
#[derive(Default)]
struct Disk {
    promised: Ballot,
    snapshot: Slot,
    records: BTreeMap<Slot, SlotRecord<Cmd>>,
    commit: Slot,
}

struct Node {
    replica: Option<Replica<Cmd>>,
    config: Config,
    disk: Disk,
}

#[derive(Default)]
struct Env {
    nodes: BTreeMap<NodeId, Node>,
    now: Time,
    mail: Vec<Envelope<Cmd>>,
    cut: BTreeSet<(NodeId, NodeId)>,
}

fn ids(tc: &mut TestCase, arg: &str) -> Vec<NodeId> {
    tc.try_take_args::<u64>(arg)
        .unwrap()
        .unwrap_or_default()
        .into_iter()
        .map(NodeId)
        .collect()
}

fn id(tc: &mut TestCase) -> NodeId {
    NodeId(tc.take_arg::<u64>("id").unwrap())
}

impl Env {
    fn replica(&mut self, id: NodeId) -> &mut Replica<Cmd> {
        self.nodes
            .get_mut(&id)
            .and_then(|n| n.replica.as_mut())
            .unwrap_or_else(|| panic!("{id} is down"))
    }

    fn run(&mut self, tc: &mut TestCase) -> String {
        let mut out = String::new();
        match tc.directive.as_str() {
            "add-nodes" => self.add_nodes(tc),
            "campaign" => {
                let id = id(tc);
                self.replica(id).campaign_now();
            }
            "tick" => {
                let ms = tc.take_arg::<u64>("ms").unwrap();
                self.now = self.now.plus_ms(ms);
                let now = self.now;
                let targets = ids(tc, "id");
                for (nid, node) in self.nodes.iter_mut() {
                    if let Some(r) = node.replica.as_mut() {
                        if targets.is_empty() || targets.contains(nid) {
                            r.tick(now);
                        }
                    }
                }
            }
            "propose" => {
                let id = id(tc);
                for line in tc.input.lines() {
                    let result = self.replica(id).propose(line.to_string());
                    if let Err(e) = result {
                        writeln!(out, "{id}: propose {line}: {e}").unwrap();
                    }
                }
            }
            "read" => {
                let id = id(tc);
                let rid = tc.take_arg::<u64>("rid").unwrap();
                if let Err(e) = self.replica(id).read(ReadId(rid)) {
                    writeln!(out, "{id}: read {rid}: {e}").unwrap();
                }
            }
            "process-ready" => {
                for id in ids(tc, "id") {
                    self.process_ready(id, &mut out);
                }
            }
            "deliver-msgs" => {
                let drop = tc.take_flag("drop").unwrap();
                let to = ids(tc, "to");
                self.deliver(&to, drop, &mut out);
            }
            "stabilize" => self.stabilize(&mut out),
            "partition" => {
                // `partition 1 2` cuts nodes 1 and 2 off from everyone else.
                let side: BTreeSet<NodeId> = ids(tc, "id").into_iter().collect();
                let all: Vec<NodeId> = self.nodes.keys().copied().collect();
                for &a in &all {
                    for &b in &all {
                        if side.contains(&a) != side.contains(&b) {
                            self.cut.insert((a, b));
                        }
                    }
                }
            }
            "cut" => {
                let from = NodeId(tc.take_arg::<u64>("from").unwrap());
                for to in ids(tc, "to") {
                    self.cut.insert((from, to));
                }
            }
            "heal" => self.cut.clear(),
            "crash" => {
                let id = id(tc);
                self.nodes.get_mut(&id).unwrap().replica = None;
                self.mail.retain(|m| m.to != id && m.from != id);
            }
            "restart" => {
                let id = id(tc);
                self.restart(id);
            }
            "compact" => {
                let id = id(tc);
                let slot = Slot(tc.take_arg::<u64>("slot").unwrap());
                self.replica(id).compact(slot);
                self.process_ready(id, &mut out);
            }
            "status" => {}
            other => panic!("unknown directive {other}"),
        }
        for node in self.nodes.values() {
            if let Some(r) = &node.replica {
                if tc.directive == "status" || tc.directive == "stabilize" {
                    writeln!(out, "{}", r.status()).unwrap();
                }
            }
        }
        if out.is_empty() {
            out.push_str("ok\n");
        }
        out
    }

    fn add_nodes(&mut self, tc: &mut TestCase) {
        let voters = ids(tc, "voters");
        let observers = ids(tc, "observers");
        let lease = tc.try_take_arg::<u64>("lease").unwrap();
        let q1 = tc.try_take_arg::<usize>("q1").unwrap();
        let q2 = tc.try_take_arg::<usize>("q2").unwrap();
        for &id in voters.iter().chain(observers.iter()) {
            let mut config = Config::majority(id, &voters);
            config.observers = observers.clone();
            config.rng_seed = 7;
            if let Some(l) = lease {
                config.lease_duration_ms = l;
            }
            config.phase1_quorum = q1.unwrap_or(config.phase1_quorum);
            config.phase2_quorum = q2.unwrap_or(config.phase2_quorum);
            let replica = Replica::new(config.clone(), self.now).unwrap();
            self.nodes.insert(
                id,
                Node {
                    replica: Some(replica),
                    config,
                    disk: Disk::default(),
                },
            );
        }
    }

    fn restart(&mut self, id: NodeId) {
        let now = self.now;
        let node = self.nodes.get_mut(&id).unwrap();
        let durable = Durable {
            promised: node.disk.promised,
            snapshot: node.disk.snapshot,
            records: node.disk.records.values().cloned().collect(),
            commit: node.disk.commit,
            applied: node.disk.snapshot,
        };
        node.replica = Some(Replica::restore(node.config.clone(), durable, now).unwrap());
    }

    fn process_ready(&mut self, id: NodeId, out: &mut String) {
        let node = self.nodes.get_mut(&id).unwrap();
        let Some(replica) = node.replica.as_mut() else {
            return;
        };
        let ready = replica.ready();
        let p = &ready.persist;
        if let Some(b) = p.promised {
            writeln!(out, "{id}: persist promised={b}").unwrap();
            node.disk.promised = b;
        }
        for r in &p.records {
            let chosen = if r.chosen { " chosen" } else { "" };
            writeln!(
                out,
                "{id}: persist slot {}@{}{chosen}: {}",
                r.slot,
                r.ballot,
                ValueFmt(&r.value)
            )
            .unwrap();
            node.disk.records.insert(r.slot, r.clone());
        }
        if let Some(c) = p.commit {
            node.disk.commit = c;
        }
        if let Some(s) = p.compact_through {
            writeln!(out, "{id}: persist compact through {s}").unwrap();
            node.disk.snapshot = s;
            node.disk.records.retain(|slot, _| *slot > s);
        }
        for a in &ready.apply {
            writeln!(out, "{id}: apply {}: {}", a.slot, ValueFmt(&a.value)).unwrap();
        }
        for r in &ready.reads {
            writeln!(out, "{id}: read {} ready at slot {}", r.id.0, r.slot).unwrap();
        }
        for r in &ready.reads_dropped {
            writeln!(out, "{id}: read {} dropped", r.0).unwrap();
        }
        for c in &ready.dropped {
            writeln!(out, "{id}: dropped {c}").unwrap();
        }
        self.mail.extend(ready.messages);
        let snapshot_slot = replica.status().applied;
        replica.on_persisted(ready.token);
        for to in ready.snapshots {
            writeln!(out, "{id}: snapshot through {snapshot_slot} -> {to}").unwrap();
            let target = self.nodes.get_mut(&to).unwrap();
            if let Some(r) = target.replica.as_mut() {
                if r.install_snapshot(snapshot_slot) {
                    target.disk.snapshot = snapshot_slot;
                    target.disk.records.retain(|slot, _| *slot > snapshot_slot);
                }
            }
        }
    }

    fn deliver(&mut self, to: &[NodeId], drop: bool, out: &mut String) {
        let (now, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut self.mail)
            .into_iter()
            .partition(|m| to.is_empty() || to.contains(&m.to));
        self.mail = rest;
        for m in now {
            let cut = self.cut.contains(&(m.from, m.to));
            let up = self.nodes.get(&m.to).is_some_and(|n| n.replica.is_some());
            if drop || cut || !up {
                writeln!(out, "dropped: {m}").unwrap();
                continue;
            }
            writeln!(out, "{m}").unwrap();
            self.replica(m.to).step(m.from, m.message);
        }
    }

    fn stabilize(&mut self, out: &mut String) {
        for _ in 0..100 {
            let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
            let mut busy = !self.mail.is_empty();
            for &id in &ids {
                let has = self.nodes[&id]
                    .replica
                    .as_ref()
                    .is_some_and(|r| r.has_ready());
                if has {
                    busy = true;
                    self.process_ready(id, out);
                }
            }
            if !busy {
                return;
            }
            self.deliver(&[], false, out);
        }
        panic!("did not stabilize");
    }
}

#[test]
fn interaction() {
    walk("tests/testdata", |f| {
        let mut env = Env::default();
        f.run(|tc| {
            let mut tc = tc.clone();
            env.run(&mut tc)
        });
    });
}
