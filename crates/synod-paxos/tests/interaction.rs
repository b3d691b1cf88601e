//! The core's rules as readable scripts: each file in `testdata/` drives a
//! few replicas by hand over a network the script controls, and the expected
//! output (messages, persistence, applied values) is checked in. Run with
//! `REWRITE=1` to regenerate after an intended change, then read the diff.
//!
//! Directives (node lists are `id=(1,2)` or `id=1`):
//!
//! - `add-nodes voters=(..) [observers=(..)] [lease=MS] [q1=N] [q2=N]`
//! - `campaign id=N`: start phase 1 now.
//! - `tick ms=MS [id=(..)]`: advance the clock; only the listed nodes (default
//!   all) see the new time.
//! - `propose id=N` (one command per input line), `read id=N rid=R`.
//! - `process-ready id=(..)`: run each node's runtime loop until it has
//!   nothing left: persist (synchronously), queue messages, apply, acknowledge.
//! - `deliver-msgs [from=(..)] [to=(..)] [drop]`: deliver (or drop) the queued
//!   messages that match; cut links and down nodes drop them.
//! - `stabilize`: process and deliver everything until quiet, then print status.
//! - `partition id=(..)`, `cut from=N to=(..)`, `heal`.
//! - `crash id=N`, `restart id=N` (from what its disk holds), and
//!   `crash-before-persist id=N`: take one Ready, send what it releases, then
//!   crash before its write is durable.
//! - `compact id=N slot=S`: the application snapshots through S.
//! - `join-node id=N voters=(..) [observers=(..)]`: start a new, empty
//!   replica that was told the target membership (`Config::join`).
//! - `propose-membership id=N voters=(..) [observers=(..)]`: ask the leader
//!   to change membership.
//! - `transfer id=N to=M`: ask leader N to hand leadership to M.
//! - `membership`: print each replica's committed configuration.
//! - `status`.
//!
//! A leader asking for a snapshot to be sent ships the one on its disk (taken
//! at its last `compact`), which the receiver installs at once.

use datadriven::{walk, TestCase};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;
use synod_paxos::{
    Ballot, Config, Durable, Envelope, Membership, MembershipRecord, NodeId, ReadId, Replica, Slot,
    SlotRecord, Time, ValueFmt,
};

type Cmd = String;

/// What a node's disk holds.
#[derive(Default)]
struct Disk {
    promised: Ballot,
    snapshot: Slot,
    records: BTreeMap<Slot, SlotRecord<Cmd>>,
    commit: Slot,
    membership: Option<MembershipRecord>,
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
                let now = self.now;
                if let Err(e) = self.replica(id).read(ReadId(rid), now) {
                    writeln!(out, "{id}: read {rid}: {e}").unwrap();
                }
            }
            "process-ready" => {
                for id in ids(tc, "id") {
                    self.drain(id, &mut out);
                }
            }
            "deliver-msgs" => {
                let drop = tc.take_flag("drop").unwrap();
                let (from, to) = (ids(tc, "from"), ids(tc, "to"));
                self.deliver(&from, &to, drop, &mut out);
            }
            "stabilize" => self.stabilize(&mut out),
            "partition" => {
                // `partition id=(1,2)` cuts nodes 1 and 2 off from everyone else.
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
            "crash-before-persist" => {
                let id = id(tc);
                self.handle_ready(id, false, &mut out);
                self.nodes.get_mut(&id).unwrap().replica = None;
                self.mail.retain(|m| m.to != id);
            }
            "compact" => {
                let id = id(tc);
                let slot = Slot(tc.take_arg::<u64>("slot").unwrap());
                self.replica(id).compact(slot);
                self.handle_ready(id, true, &mut out);
            }
            "join-node" => self.join_node(tc),
            "propose-membership" => {
                let id = id(tc);
                let voters = ids(tc, "voters");
                let observers = ids(tc, "observers");
                let result = self
                    .replica(id)
                    .propose_membership(Membership::new(&voters, &observers));
                if let Err(e) = result {
                    writeln!(out, "{id}: propose membership: {e}").unwrap();
                }
            }
            "transfer" => {
                let id = id(tc);
                let to = NodeId(tc.take_arg::<u64>("to").unwrap());
                if let Err(e) = self.replica(id).transfer_leadership(to) {
                    writeln!(out, "{id}: transfer to {to}: {e}").unwrap();
                }
            }
            "membership" => {
                for (nid, node) in &self.nodes {
                    if let Some(r) = &node.replica {
                        let st = r.status();
                        let m = st
                            .membership
                            .map_or("unknown".to_string(), |m| m.to_string());
                        let changing = if st.membership_changing {
                            " (changing)"
                        } else {
                            ""
                        };
                        writeln!(out, "{nid}: {m}{changing}").unwrap();
                    }
                }
            }
            "status" => {}
            other => panic!("unknown directive {other}"),
        }
        if let Err(e) = tc.expect_empty() {
            panic!("{}: {e}", tc.directive);
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

    fn join_node(&mut self, tc: &mut TestCase) {
        let id = id(tc);
        let voters = ids(tc, "voters");
        let observers = ids(tc, "observers");
        let mut config = Config::majority(id, &voters);
        config.observers = observers;
        config.rng_seed = 7;
        config.join = true;
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

    fn restart(&mut self, id: NodeId) {
        let now = self.now;
        let node = self.nodes.get_mut(&id).unwrap();
        let durable = Durable {
            promised: node.disk.promised,
            snapshot: node.disk.snapshot,
            records: node.disk.records.values().cloned().collect(),
            commit: node.disk.commit,
            applied: node.disk.snapshot,
            membership: node.disk.membership.clone(),
        };
        node.replica = Some(Replica::restore(node.config.clone(), durable, now).unwrap());
    }

    /// Runs `id`'s runtime loop until its replica has nothing to hand out.
    fn drain(&mut self, id: NodeId, out: &mut String) {
        for _ in 0..100 {
            let node = &self.nodes[&id];
            if !node.replica.as_ref().is_some_and(|r| r.has_ready()) {
                return;
            }
            self.handle_ready(id, true, out);
        }
        panic!("{id} kept producing work");
    }

    /// Takes one Ready from `id` and handles it as a runtime would. Unless
    /// `durable`, the write never completes (the caller crashes the node):
    /// it is printed as lost, and its token is never acknowledged.
    fn handle_ready(&mut self, id: NodeId, durable: bool, out: &mut String) {
        let node = self.nodes.get_mut(&id).unwrap();
        let Some(replica) = node.replica.as_mut() else {
            return;
        };
        let ready = replica.ready();
        let p = &ready.persist;
        let verb = if durable { "persist" } else { "lost write" };
        if let Some(b) = p.promised {
            writeln!(out, "{id}: {verb} promised={b}").unwrap();
        }
        for r in &p.records {
            let chosen = if r.chosen { " chosen" } else { "" };
            writeln!(
                out,
                "{id}: {verb} slot {}@{}{chosen}: {}",
                r.slot,
                r.ballot,
                ValueFmt(&r.value)
            )
            .unwrap();
        }
        if let Some(s) = p.compact_through {
            writeln!(out, "{id}: {verb} compact through {s}").unwrap();
        }
        if let Some(m) = &p.membership {
            writeln!(
                out,
                "{id}: {verb} membership after {}: {}",
                m.slot, m.configuration
            )
            .unwrap();
        }
        if durable {
            let disk = &mut node.disk;
            disk.promised = p.promised.unwrap_or(disk.promised);
            for r in &p.records {
                disk.records.insert(r.slot, r.clone());
            }
            disk.commit = p.commit.unwrap_or(disk.commit);
            if p.membership.is_some() {
                disk.membership = p.membership.clone();
            }
            if let Some(s) = p.compact_through {
                disk.snapshot = s;
                disk.records.retain(|slot, _| *slot > s);
            }
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
        if let Some(m) = &ready.membership {
            writeln!(out, "{id}: membership now {m}").unwrap();
        }
        self.mail.extend(ready.messages);
        if !durable {
            return;
        }
        replica.on_persisted(ready.token);
        let snapshot = node.disk.snapshot;
        let membership = replica.membership_at(snapshot);
        for to in ready.snapshots {
            writeln!(out, "{id}: snapshot through {snapshot} -> {to}").unwrap();
            let target = self.nodes.get_mut(&to).unwrap();
            if let Some(r) = target.replica.as_mut() {
                let installed = match membership.clone() {
                    Some(m) => r.install_snapshot_with_membership(snapshot, m),
                    None => r.install_snapshot(snapshot),
                };
                if installed {
                    target.disk.snapshot = snapshot;
                    target.disk.records.retain(|slot, _| *slot > snapshot);
                }
            }
        }
    }

    fn deliver(&mut self, from: &[NodeId], to: &[NodeId], drop: bool, out: &mut String) {
        let matches = |list: &[NodeId], id: &NodeId| list.is_empty() || list.contains(id);
        let (now, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut self.mail)
            .into_iter()
            .partition(|m| matches(from, &m.from) && matches(to, &m.to));
        self.mail = rest;
        for m in now {
            let cut = self.cut.contains(&(m.from, m.to));
            let up = self.nodes.get(&m.to).is_some_and(|n| n.replica.is_some());
            if drop || cut || !up {
                writeln!(out, "dropped: {m}").unwrap();
                continue;
            }
            writeln!(out, "{m}").unwrap();
            let now = self.now;
            self.replica(m.to).step(m.from, m.message, now);
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
                    self.handle_ready(id, true, out);
                }
            }
            if !busy {
                return;
            }
            self.deliver(&[], &[], false, out);
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
