//! ZooKeeper's data tree inside the replicated state machine (design
//! 0012), driven through `KvStore::apply` as the log applies it.
//!
//! What these tests prove, against ZooKeeper 3.8's `PrepRequestProcessor`
//! and `DataTree`:
//! - creates stamp the stat from the write's revision and clock, move the
//!   parent's cversion/pzxid, and refuse as ZooKeeper does (existing node,
//!   missing parent, bad path or mode, ephemeral parent, dead session);
//!   sequential names come from the parent's cversion before the create;
//!   containers and TTL nodes carry ZooKeeper's `ephemeralOwner` markers;
//! - delete, setData, setACL and check honour versions and their stat
//!   fields;
//! - ACLs: which permission each op needs and on which node, `super`,
//!   `auth` expansion and malformed ACLs;
//! - a multi applies at one revision or not at all, with ZooKeeper's
//!   per-op error codes, leaving the tree and its rows exactly as before;
//! - closing or expiring a session deletes its ephemerals at one revision;
//!   reaping deletes only qualifying containers and TTL nodes;
//! - events carry the write's revision, which etcd writes share;
//! - the rows and snapshots rebuild an equal store, and damaged ones are
//!   refused with an error;
//! - (proptest) random op sequences keep the invariants, and every failed
//!   write changes nothing.
//!
//! Several tests pin behaviour this file first caught departing from
//! ZooKeeper 3.8 (deletes do not move cversion, ZooKeeper's error order,
//! an etcd lease is not a session, the journal is not state).

use bytes::Bytes;
use proptest::prelude::*;
use prost::Message as _;
use std::collections::BTreeSet;
use std::sync::Arc;
use synod_kv::zk::ZkEventKind::{ChildrenChanged, Created, DataChanged, Deleted};
use synod_kv::zk::{
    acl, code, mode, ZkEvent, ZkEventKind, ZkTree, CONTAINER_OWNER, TTL_MAX_MS, TTL_OWNER_BITS,
    ZK_FIXED_PATHS, ZNODE_DATA_MAX,
};
use synod_kv::{outcome_error, Applied, KvError, KvStore, MemoryRows, StateChanges, StateOp};
use synod_proto::etcdserverpb::alarm_request::AlarmAction;
use synod_proto::etcdserverpb::{
    AlarmRequest, AlarmType, LeaseGrantRequest, LeaseRevokeRequest, PutRequest,
};
use synod_proto::synodpb::zk_op::Op as ZkOpKind;
use synod_proto::synodpb::{
    command::Op, outcome, Command, LeaseExpire, ReserveRevisions, Snapshot, ZNode, ZkAcl, ZkCheck,
    ZkCloseSession, ZkCreate, ZkDelete, ZkId, ZkOp, ZkOpenSession, ZkReap, ZkResult, ZkSession,
    ZkSetAcl, ZkSetData, ZkWrite,
};

// ---------------------------------------------------------------------
// Building requests
// ---------------------------------------------------------------------

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

fn id(scheme: &str, id: &str) -> ZkId {
    ZkId {
        scheme: scheme.into(),
        id: id.into(),
    }
}

fn entry(perms: i32, scheme: &str, i: &str) -> ZkAcl {
    ZkAcl {
        perms,
        id: Some(id(scheme, i)),
    }
}

fn world(perms: i32) -> Vec<ZkAcl> {
    vec![entry(perms, "world", "anyone")]
}

/// A persistent create with the open ACL and no data.
fn create(path: &str) -> ZkCreate {
    ZkCreate {
        path: path.into(),
        acl: acl::open(),
        ..ZkCreate::default()
    }
}

fn create_mode(path: &str, m: i32) -> ZkCreate {
    ZkCreate {
        mode: m,
        ..create(path)
    }
}

fn c(x: ZkCreate) -> ZkOp {
    ZkOp {
        op: Some(ZkOpKind::Create(x)),
    }
}

fn del(path: &str, version: i32) -> ZkOp {
    ZkOp {
        op: Some(ZkOpKind::Delete(ZkDelete {
            path: path.into(),
            version,
        })),
    }
}

fn set(path: &str, data: &str, version: i32) -> ZkOp {
    ZkOp {
        op: Some(ZkOpKind::SetData(ZkSetData {
            path: path.into(),
            data: b(data),
            version,
        })),
    }
}

fn check(path: &str, version: i32) -> ZkOp {
    ZkOp {
        op: Some(ZkOpKind::Check(ZkCheck {
            path: path.into(),
            version,
        })),
    }
}

fn set_acl(path: &str, acl: Vec<ZkAcl>, version: i32) -> ZkOp {
    ZkOp {
        op: Some(ZkOpKind::SetAcl(ZkSetAcl {
            path: path.into(),
            acl,
            version,
        })),
    }
}

fn reap(paths: &[&str]) -> ZkOp {
    ZkOp {
        op: Some(ZkOpKind::Reap(ZkReap {
            paths: paths.iter().map(|p| p.to_string()).collect(),
        })),
    }
}

/// A write of `ops`, anonymous and sessionless (the harness sets the time).
fn w(ops: Vec<ZkOp>) -> ZkWrite {
    ZkWrite {
        ops,
        ..ZkWrite::default()
    }
}

fn multi(ops: Vec<ZkOp>) -> ZkWrite {
    ZkWrite {
        multi: true,
        ..w(ops)
    }
}

fn ev(kind: ZkEventKind, path: &str, zxid: i64) -> ZkEvent {
    ZkEvent {
        kind,
        path: path.into(),
        zxid,
    }
}

/// The per-op results of a ZooKeeper write's outcome.
fn results(a: &Applied) -> Vec<ZkResult> {
    match &a.outcome.result {
        Some(outcome::Result::Zk(z)) => z.results.clone(),
        other => panic!("expected a ZooKeeper outcome, got {other:?}"),
    }
}

fn errs(a: &Applied) -> Vec<i32> {
    results(a).iter().map(|r| r.err).collect()
}

/// The refusal of a command that is not a tree write.
fn refusal(a: &Applied) -> KvError {
    match &a.outcome.result {
        Some(outcome::Result::Error(e)) => outcome_error(e),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// A stored node as a result's stat shows it: without data and ACL.
fn stat_of(n: &ZNode) -> ZNode {
    ZNode {
        data: Bytes::new(),
        acl: Vec::new(),
        ..n.clone()
    }
}

// ---------------------------------------------------------------------
// The harness: one store on (in-memory) disk, one client
// ---------------------------------------------------------------------

/// A store attached to rows in memory; every command is applied as the
/// log applies it, its invariants checked and its changes written, as the
/// runtime does after each round.
struct Zk {
    store: KvStore,
    rows: Arc<MemoryRows>,
    /// The client commands come from; a store taken over gets a new one,
    /// so no seq of its earlier client reads as a retry.
    client: u64,
    seq: u64,
    /// The proposer's clock for the next write (`ZkWrite.time_ms`).
    now: i64,
}

impl Zk {
    fn new() -> Zk {
        Zk::from_store(KvStore::default())
    }

    /// Puts `store` on fresh rows (rewriting them all).
    fn from_store(mut store: KvStore) -> Zk {
        let rows = Arc::new(MemoryRows::default());
        store.attach(rows.clone(), true);
        let client = store.sessions().map(|(c, _)| c + 1).max().unwrap_or(1);
        let mut kv = Zk {
            store,
            rows,
            client,
            seq: 0,
            now: 1_000,
        };
        kv.flush();
        kv
    }

    fn flush(&mut self) {
        let changes = self.store.take_changes();
        self.rows.apply(&changes);
        self.store.changes_written();
    }

    fn command(&mut self, op: Op) -> Command {
        self.seq += 1;
        Command {
            stamp: 0,
            client: self.client,
            seq: self.seq,
            answered_below: self.seq,
            op: Some(op),
            caller: None,
            live_leases: Vec::new(),
            auth_fence: None,
        }
    }

    fn apply_command(&mut self, command: &Command) -> Applied {
        let applied = self.store.apply(command);
        self.store.check_invariants();
        self.flush();
        applied
    }

    fn apply(&mut self, op: Op) -> Applied {
        let command = self.command(op);
        self.apply_command(&command)
    }

    /// Applies a ZooKeeper write at the harness clock.
    fn write(&mut self, mut zw: ZkWrite) -> Applied {
        zw.time_ms = self.now;
        self.apply(Op::Zk(zw))
    }

    /// One op as `session` with identities `auth`.
    fn run_as(&mut self, session: i64, auth: &[ZkId], op: ZkOp) -> Result<ZkResult, i32> {
        let a = self.write(ZkWrite {
            session,
            auth: auth.to_vec(),
            ..w(vec![op])
        });
        let mut rs = results(&a);
        assert_eq!(rs.len(), 1);
        let r = rs.remove(0);
        if r.err == code::OK {
            Ok(r)
        } else {
            Err(r.err)
        }
    }

    /// One anonymous op that must succeed.
    fn ok(&mut self, op: ZkOp) -> ZkResult {
        self.run_as(0, &[], op).expect("the op succeeds")
    }

    /// A write that must be refused: checks it took no revision, made no
    /// event and left the tree and its rows as they were; returns the
    /// per-op codes.
    fn refused(&mut self, zw: ZkWrite) -> Vec<i32> {
        let tree = self.store.zk().clone();
        let rows = self.zk_rows();
        let revision = self.store.revision();
        let a = self.write(zw);
        assert_eq!(a.revision, revision, "a refused write takes no revision");
        assert_eq!(self.store.revision(), revision);
        assert!(a.zk_events.is_empty(), "a refused write emits no event");
        assert!(a.events.is_empty());
        assert_eq!(self.store.zk(), &tree, "a refused write changes no node");
        assert_eq!(self.zk_rows(), rows, "a refused write changes no row");
        let codes = errs(&a);
        assert!(codes.iter().any(|&e| e != code::OK), "{codes:?}");
        codes
    }

    /// One op (as `session`, `auth`) that must fail: its code.
    fn fails_as(&mut self, session: i64, auth: &[ZkId], op: ZkOp) -> i32 {
        let codes = self.refused(ZkWrite {
            session,
            auth: auth.to_vec(),
            ..w(vec![op])
        });
        assert_eq!(codes.len(), 1);
        codes[0]
    }

    fn fails(&mut self, op: ZkOp) -> i32 {
        self.fails_as(0, &[], op)
    }

    fn open(&mut self, session: i64) -> Applied {
        self.apply(Op::Zk(w(vec![ZkOp {
            op: Some(ZkOpKind::OpenSession(ZkOpenSession {
                id: session,
                timeout_ms: 4_000,
                password: b("secret"),
            })),
        }])))
    }

    fn close(&mut self, session: i64) -> Applied {
        self.apply(Op::Zk(w(vec![ZkOp {
            op: Some(ZkOpKind::CloseSession(ZkCloseSession { id: session })),
        }])))
    }

    fn put(&mut self, key: &str, lease: i64) -> Applied {
        let a = self.apply(Op::Put(PutRequest {
            key: b(key),
            value: b("v"),
            lease,
            ..PutRequest::default()
        }));
        assert!(matches!(a.outcome.result, Some(outcome::Result::Put(_))));
        a
    }

    fn tree(&self) -> &ZkTree {
        self.store.zk()
    }

    fn node(&self, path: &str) -> ZNode {
        self.tree()
            .get(path)
            .unwrap_or_else(|| panic!("{path} exists"))
            .clone()
    }

    fn children(&self, path: &str) -> Vec<String> {
        self.tree()
            .children(path)
            .map(|c| c.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// The znode (`z`) and ZooKeeper session (`y`) rows on disk.
    fn zk_rows(&self) -> Vec<(Vec<u8>, Bytes)> {
        self.rows
            .rows()
            .into_iter()
            .filter(|(k, _)| k[0] == b'z' || k[0] == b'y')
            .collect()
    }

    /// The store the rows on disk rebuild.
    fn load(&self) -> Result<KvStore, String> {
        KvStore::load(self.rows.clone()).map(|s| s.expect("a store on disk"))
    }
}

/// Every node below `/` but ZooKeeper's own, in path order.
fn client_paths(tree: &ZkTree) -> Vec<String> {
    fn walk(tree: &ZkTree, p: &str, out: &mut Vec<String>) {
        for child in tree.children(p).into_iter().flatten() {
            let full = if p == "/" {
                format!("/{child}")
            } else {
                format!("{p}/{child}")
            };
            if full == "/zookeeper" {
                continue;
            }
            out.push(full.clone());
            walk(tree, &full, out);
        }
    }
    let mut out = Vec::new();
    walk(tree, "/", &mut out);
    out.sort();
    out
}

/// A copy of `rows` with `damage` applied on top.
fn damaged(rows: &MemoryRows, damage: Vec<StateOp>) -> Arc<MemoryRows> {
    let copy = Arc::new(MemoryRows::default());
    copy.apply(&StateChanges {
        clear: false,
        ops: rows
            .rows()
            .into_iter()
            .map(|(key, value)| StateOp::Put { key, value })
            .collect(),
    });
    copy.apply(&StateChanges {
        clear: false,
        ops: damage,
    });
    copy
}

fn znode_row(path: &str) -> Vec<u8> {
    let mut row = vec![b'z'];
    row.extend_from_slice(path.as_bytes());
    row
}

// ---------------------------------------------------------------------
// Create
// ---------------------------------------------------------------------

#[test]
fn create_stamps_the_stat_with_the_revision_and_the_clock() {
    let mut kv = Zk::new();
    kv.now = 1_234;
    let root_before = kv.node("/");
    let rev = kv.store.revision() + 1;
    let a = kv.write(w(vec![c(ZkCreate {
        data: b("xy"),
        ..create("/a")
    })]));
    assert_eq!(a.revision, rev);
    assert_eq!(kv.store.revision(), rev);
    let r = &results(&a)[0];
    assert_eq!((r.err, r.path.as_str()), (code::OK, "/a"));
    let stat = r.stat.clone().expect("a create answers the stat");
    assert_eq!((stat.czxid, stat.mzxid, stat.pzxid), (rev, rev, rev));
    assert_eq!((stat.ctime, stat.mtime), (1_234, 1_234));
    assert_eq!((stat.version, stat.cversion, stat.aversion), (0, 0, 0));
    assert_eq!(stat.ephemeral_owner, 0);
    assert_eq!((r.data_length, r.num_children), (2, 0));
    let node = kv.node("/a");
    assert_eq!(node.data, b("xy"));
    assert_eq!(node.acl, acl::open());
    assert_eq!(stat, stat_of(&node), "the result is the stored stat");
    // The parent: one more child change at this zxid, its own data untouched.
    let root = kv.node("/");
    assert_eq!(root.cversion, root_before.cversion + 1);
    assert_eq!(root.pzxid, rev);
    assert_eq!(
        (root.mzxid, root.version),
        (root_before.mzxid, root_before.version)
    );
    assert!(kv.children("/").contains(&"a".to_string()));
    assert_eq!(
        a.zk_events,
        vec![ev(Created, "/a", rev), ev(ChildrenChanged, "/", rev)]
    );

    // A grandchild moves /a's child fields only.
    kv.now = 2_000;
    let r = kv.ok(c(create("/a/b")));
    let parent = kv.node("/a");
    assert_eq!((parent.cversion, parent.pzxid), (1, rev + 1));
    assert_eq!((parent.mzxid, parent.mtime), (rev, 1_234));
    assert_eq!(r.stat.unwrap().ctime, 2_000);
    assert_eq!(kv.children("/a"), vec!["b".to_string()]);
    assert_eq!(kv.ok(set("/a", "", -1)).num_children, 1);
    assert_eq!(kv.tree().descendants("/a"), 1);
}

#[test]
fn create_refuses_an_existing_node_a_missing_parent_and_bad_requests() {
    let mut kv = Zk::new();
    kv.ok(c(create("/a")));
    assert_eq!(kv.fails(c(create("/a"))), code::NODE_EXISTS);
    assert_eq!(kv.fails(c(create("/"))), code::NODE_EXISTS);
    for fixed in ZK_FIXED_PATHS {
        assert_eq!(kv.fails(c(create(fixed))), code::NODE_EXISTS, "{fixed}");
    }
    assert_eq!(kv.fails(c(create("/x/y"))), code::NO_NODE);
    assert_eq!(kv.fails(c(create("/a/b/c"))), code::NO_NODE);
    for bad in [
        "", "a", "/a/", "//", "/a//b", "/.", "/a/..", "/a\0b", "/a/\u{1}",
    ] {
        assert_eq!(kv.fails(c(create(bad))), code::BAD_ARGUMENTS, "{bad:?}");
    }
    // Nothing may be added to ZooKeeper's own subtree.
    assert_eq!(kv.fails(c(create("/zookeeper/x"))), code::BAD_ARGUMENTS);
    // Unknown modes, and data past jute.maxbuffer.
    for m in [-1, 7, 100] {
        assert_eq!(kv.fails(c(create_mode("/m", m))), code::BAD_ARGUMENTS);
    }
    let big = ZkCreate {
        data: Bytes::from(vec![0u8; ZNODE_DATA_MAX + 1]),
        ..create("/big")
    };
    assert_eq!(kv.fails(c(big)), code::BAD_ARGUMENTS);
    let fits = ZkCreate {
        data: Bytes::from(vec![0u8; ZNODE_DATA_MAX]),
        ..create("/big")
    };
    assert_eq!(kv.ok(c(fits)).data_length as usize, ZNODE_DATA_MAX);
    // An op without a body is a bad request too.
    assert_eq!(kv.fails(ZkOp { op: None }), code::BAD_ARGUMENTS);
    // Names ZooKeeper allows.
    for fine in ["/a.b", "/..a", "/é", "/zookeeper2"] {
        assert_eq!(kv.ok(c(create(fine))).path, fine);
    }
}

#[test]
fn ephemerals_have_no_children_but_containers_and_ttl_nodes_may() {
    let mut kv = Zk::new();
    kv.open(7);
    kv.run_as(7, &[], c(create_mode("/e", mode::EPHEMERAL)))
        .unwrap();
    let seq = kv
        .run_as(7, &[], c(create_mode("/s-", mode::EPHEMERAL_SEQUENTIAL)))
        .unwrap();
    for parent in ["/e", seq.path.as_str()] {
        let child = format!("{parent}/c");
        assert_eq!(
            kv.fails_as(7, &[], c(create(&child))),
            code::NO_CHILDREN_FOR_EPHEMERALS
        );
        assert_eq!(
            kv.fails_as(7, &[], c(create_mode(&child, mode::EPHEMERAL))),
            code::NO_CHILDREN_FOR_EPHEMERALS
        );
    }
    // NODE_EXISTS is decided first, as ZooKeeper does.
    assert_eq!(kv.fails_as(7, &[], c(create("/e"))), code::NODE_EXISTS);
    kv.ok(c(create_mode("/box", mode::CONTAINER)));
    kv.ok(c(ZkCreate {
        ttl_ms: 60_000,
        ..create_mode("/ttl", mode::PERSISTENT_WITH_TTL)
    }));
    kv.ok(c(create("/box/child")));
    kv.ok(c(create("/ttl/child")));
}

#[test]
fn sequential_names_count_from_the_parent_cversion_before_the_create() {
    let mut kv = Zk::new();
    kv.ok(c(create("/q")));
    let seq = |kv: &mut Zk, p: &str, m: i32| kv.ok(c(create_mode(p, m))).path;
    assert_eq!(
        seq(&mut kv, "/q/n-", mode::PERSISTENT_SEQUENTIAL),
        "/q/n-0000000000"
    );
    assert_eq!(
        seq(&mut kv, "/q/n-", mode::PERSISTENT_SEQUENTIAL),
        "/q/n-0000000001"
    );
    // Any create moves the counter, sequential or not.
    kv.ok(c(create("/q/plain")));
    assert_eq!(
        seq(&mut kv, "/q/x", mode::PERSISTENT_SEQUENTIAL),
        "/q/x0000000003"
    );
    // A path ending in a slash names the child by the number alone.
    assert_eq!(
        seq(&mut kv, "/q/", mode::PERSISTENT_SEQUENTIAL),
        "/q/0000000004"
    );
    // After deletes, the name is still the cversion the parent had.
    kv.ok(del("/q/n-0000000001", -1));
    kv.ok(del("/q/plain", -1));
    let cversion = kv.node("/q").cversion;
    assert_eq!(
        seq(&mut kv, "/q/n-", mode::PERSISTENT_SEQUENTIAL),
        format!("/q/n-{cversion:010}")
    );
    assert_eq!(kv.node("/q").cversion, cversion + 1);
    // Ephemeral and TTL sequential nodes number the same way.
    kv.open(9);
    let before = kv.node("/q").cversion;
    let e = kv
        .run_as(9, &[], c(create_mode("/q/e-", mode::EPHEMERAL_SEQUENTIAL)))
        .unwrap();
    assert_eq!(e.path, format!("/q/e-{before:010}"));
    let t = kv.ok(c(ZkCreate {
        ttl_ms: 10,
        ..create_mode("/q/t-", mode::PERSISTENT_SEQUENTIAL_WITH_TTL)
    }));
    assert_eq!(t.path, format!("/q/t-{:010}", before + 1));
    // Inside a multi each create sees the counter the previous one left.
    let n = kv.node("/q").cversion;
    let a = kv.write(multi(vec![
        c(create_mode("/q/m-", mode::PERSISTENT_SEQUENTIAL)),
        c(create_mode("/q/m-", mode::PERSISTENT_SEQUENTIAL)),
    ]));
    let paths: Vec<String> = results(&a).into_iter().map(|r| r.path).collect();
    assert_eq!(
        paths,
        vec![format!("/q/m-{n:010}"), format!("/q/m-{:010}", n + 1)]
    );
    // A failed multi does not use up a number (ZooKeeper's
    // verifyMultiSequential_NoSideEffect).
    let n = kv.node("/q").cversion;
    kv.refused(multi(vec![
        c(create_mode("/q/m-", mode::PERSISTENT_SEQUENTIAL)),
        del("/nonexistent", -1),
    ]));
    assert_eq!(
        seq(&mut kv, "/q/m-", mode::PERSISTENT_SEQUENTIAL),
        format!("/q/m-{n:010}")
    );
}

#[test]
fn sequential_names_go_negative_when_the_counter_overflows() {
    // ZooKeeper's programmer's guide: past 2147483647 the counter
    // overflows and names read "<path>-2147483648".
    let mut kv = Zk::new();
    kv.ok(c(create("/q")));
    let mut snapshot = kv.store.snapshot();
    let q = snapshot
        .znodes
        .iter_mut()
        .find(|n| n.path == "/q")
        .expect("/q is in the snapshot");
    q.cversion = i32::MAX;
    let mut kv = Zk::from_store(KvStore::restore(snapshot).expect("restores"));
    let a = kv.ok(c(create_mode("/q/n", mode::PERSISTENT_SEQUENTIAL)));
    assert_eq!(a.path, "/q/n2147483647");
    let b = kv.ok(c(create_mode("/q/n", mode::PERSISTENT_SEQUENTIAL)));
    assert_eq!(b.path, "/q/n-2147483648");
}

#[test]
fn deleting_a_child_leaves_the_parent_cversion_as_zookeeper_does() {
    // PrepRequestProcessor (OpCode.delete) and DataTree.deleteNode set the
    // parent's pzxid and never its cversion; only creates increment it.
    let mut kv = Zk::new();
    kv.ok(c(create("/q")));
    kv.ok(c(create_mode("/q/n-", mode::PERSISTENT_SEQUENTIAL)));
    kv.ok(c(create_mode("/q/n-", mode::PERSISTENT_SEQUENTIAL)));
    kv.ok(del("/q/n-0000000001", -1));
    let q = kv.node("/q");
    assert_eq!(
        q.pzxid,
        kv.store.revision(),
        "a delete sets the parent's pzxid"
    );
    assert_eq!(q.cversion, 2, "a delete leaves the parent's cversion");
    assert_eq!(
        kv.ok(c(create_mode("/q/n-", mode::PERSISTENT_SEQUENTIAL)))
            .path,
        "/q/n-0000000002"
    );
}

#[test]
fn ephemerals_need_a_live_session() {
    let mut kv = Zk::new();
    let eph = || c(create_mode("/e", mode::EPHEMERAL));
    assert_eq!(kv.fails_as(0, &[], eph()), code::SESSION_EXPIRED);
    assert_eq!(kv.fails_as(-5, &[], eph()), code::SESSION_EXPIRED);
    assert_eq!(
        kv.fails_as(55, &[], eph()),
        code::SESSION_EXPIRED,
        "never opened"
    );
    kv.open(55);
    let r = kv.run_as(55, &[], eph()).unwrap();
    assert_eq!(r.stat.unwrap().ephemeral_owner, 55);
    assert_eq!(
        kv.tree().ephemerals(55).cloned().collect::<Vec<_>>(),
        vec!["/e".to_string()]
    );
    // A persistent node created in a session is nobody's.
    let p = kv.run_as(55, &[], c(create("/p"))).unwrap();
    assert_eq!(p.stat.unwrap().ephemeral_owner, 0);
    kv.close(55);
    assert!(kv.tree().get("/e").is_none());
    assert_eq!(
        kv.fails_as(55, &[], c(create_mode("/e2", mode::EPHEMERAL_SEQUENTIAL))),
        code::SESSION_EXPIRED,
        "closed"
    );
}

#[test]
fn an_etcd_lease_is_not_a_zookeeper_session() {
    // An etcd client may pick its lease id, e.g. the id of a ZooKeeper
    // session that just expired (ids are visible as ephemeralOwner).
    let mut kv = Zk::new();
    let grant = kv.apply(Op::LeaseGrant(LeaseGrantRequest { id: 77, ttl: 60 }));
    assert!(matches!(
        grant.outcome.result,
        Some(outcome::Result::LeaseGrant(_))
    ));
    let command = kv.command(Op::Zk(ZkWrite {
        session: 77,
        time_ms: 1,
        ..w(vec![c(create_mode("/e", mode::EPHEMERAL))])
    }));
    // Straight to the store: the harness would stop at the invariant check.
    let a = kv.store.apply(&command);
    assert_eq!(errs(&a), vec![code::SESSION_EXPIRED]);
    assert!(kv.store.zk().get("/e").is_none());
    kv.store.check_invariants();
    KvStore::restore(kv.store.snapshot()).expect("the snapshot restores");
}

#[test]
fn containers_and_ttl_nodes_carry_zookeeper_owner_markers() {
    let mut kv = Zk::new();
    let box_ = kv.ok(c(create_mode("/box", mode::CONTAINER)));
    assert_eq!(box_.stat.unwrap().ephemeral_owner, CONTAINER_OWNER);
    assert_eq!(CONTAINER_OWNER, i64::MIN);
    let ttl = |p: &str, m: i32, ms: i64| {
        c(ZkCreate {
            ttl_ms: ms,
            ..create_mode(p, m)
        })
    };
    let t = kv.ok(ttl("/t", mode::PERSISTENT_WITH_TTL, 5_000));
    let stat = t.stat.unwrap();
    assert_eq!(stat.ephemeral_owner, 0xff00_0000_0000_1388u64 as i64);
    assert_eq!(stat.ephemeral_owner, TTL_OWNER_BITS | 5_000);
    assert_eq!(stat.ttl_ms, 5_000);
    let s = kv.ok(ttl("/s-", mode::PERSISTENT_SEQUENTIAL_WITH_TTL, 1));
    assert!(s.path.starts_with("/s-") && s.path.len() == "/s-".len() + 10);
    assert_eq!(s.stat.unwrap().ephemeral_owner, TTL_OWNER_BITS | 1);
    let max = kv.ok(ttl("/max", mode::PERSISTENT_WITH_TTL, TTL_MAX_MS));
    assert_eq!(
        max.stat.unwrap().ephemeral_owner,
        TTL_OWNER_BITS | TTL_MAX_MS
    );
    assert_eq!(TTL_MAX_MS, 0x00ff_ffff_ffff, "EphemeralType.TTL.maxValue()");
    // A TTL mode needs a TTL in 1..=TTL_MAX_MS.
    for m in [
        mode::PERSISTENT_WITH_TTL,
        mode::PERSISTENT_SEQUENTIAL_WITH_TTL,
    ] {
        for bad in [0, -1, TTL_MAX_MS + 1, i64::MAX, i64::MIN] {
            assert_eq!(
                kv.fails(ttl("/bad", m, bad)),
                code::BAD_ARGUMENTS,
                "{m} {bad}"
            );
        }
    }
    // Other modes keep no TTL.
    let plain = kv.ok(ttl("/plain", mode::PERSISTENT, 5_000)).stat.unwrap();
    assert_eq!((plain.ephemeral_owner, plain.ttl_ms), (0, 0));
}

// ---------------------------------------------------------------------
// Delete, setData, setACL, check
// ---------------------------------------------------------------------

#[test]
fn delete_checks_the_path_the_version_and_the_children() {
    let mut kv = Zk::new();
    kv.ok(c(create("/a")));
    kv.ok(c(create("/a/b")));
    kv.ok(set("/a/b", "1", 0));
    assert_eq!(kv.fails(del("/a", -1)), code::NOT_EMPTY);
    // The version is checked before the children, as ZooKeeper does.
    assert_eq!(kv.fails(del("/a", 3)), code::BAD_VERSION);
    assert_eq!(kv.fails(del("/a/b", 0)), code::BAD_VERSION);
    assert_eq!(kv.fails(del("/a/b", 2)), code::BAD_VERSION);
    assert_eq!(kv.fails(del("/nope", -1)), code::NO_NODE);
    assert_eq!(kv.fails(del("/a/nope", -1)), code::NO_NODE);
    for bad in ["/", "", "a", "/a/", "/a/../b"] {
        assert_eq!(kv.fails(del(bad, -1)), code::BAD_ARGUMENTS, "{bad:?}");
    }
    for fixed in ZK_FIXED_PATHS {
        assert_eq!(kv.fails(del(fixed, -1)), code::BAD_ARGUMENTS, "{fixed}");
    }
    let parent_before = kv.node("/a");
    let rev = kv.store.revision() + 1;
    let a = kv.write(w(vec![del("/a/b", 1)]));
    assert_eq!(errs(&a), vec![code::OK]);
    assert_eq!(a.revision, rev);
    assert!(kv.tree().get("/a/b").is_none());
    let parent = kv.node("/a");
    assert_eq!(parent.pzxid, rev);
    assert_eq!(parent.mzxid, parent_before.mzxid);
    assert!(kv.children("/a").is_empty());
    assert_eq!(
        a.zk_events,
        vec![ev(Deleted, "/a/b", rev), ev(ChildrenChanged, "/a", rev)]
    );
    kv.ok(del("/a", 0));
    assert_eq!(client_paths(kv.tree()), Vec::<String>::new());
    // A deleted node comes back new: version 0, a fresh czxid.
    let again = kv.ok(c(create("/a"))).stat.unwrap();
    assert_eq!((again.version, again.czxid), (0, kv.store.revision()));
}

#[test]
fn set_data_moves_version_mzxid_and_mtime_only() {
    let mut kv = Zk::new();
    kv.now = 10;
    kv.ok(c(create("/a")));
    kv.ok(c(create("/a/kid")));
    let before = kv.node("/a");
    kv.put("etcd", 0);
    kv.now = 20;
    let rev = kv.store.revision() + 1;
    let a = kv.write(w(vec![set("/a", "hello", 0)]));
    let r = &results(&a)[0];
    assert_eq!(r.err, code::OK);
    assert_eq!((r.data_length, r.num_children), (5, 1));
    let after = kv.node("/a");
    assert_eq!(after.data, b("hello"));
    assert_eq!(r.stat.clone().unwrap(), stat_of(&after));
    assert_eq!(
        after,
        ZNode {
            data: b("hello"),
            version: 1,
            mzxid: rev,
            mtime: 20,
            ..before.clone()
        },
        "nothing else moves: czxid, ctime, pzxid, cversion, aversion, ACL"
    );
    assert_eq!(a.zk_events, vec![ev(DataChanged, "/a", rev)]);
    assert_eq!(kv.fails(set("/a", "x", 0)), code::BAD_VERSION);
    assert_eq!(kv.fails(set("/a", "x", 2)), code::BAD_VERSION);
    assert_eq!(kv.ok(set("/a", "x", 1)).stat.unwrap().version, 2);
    assert_eq!(kv.ok(set("/a", "", -1)).stat.unwrap().version, 3);
    assert_eq!(kv.fails(set("/nope", "x", -1)), code::NO_NODE);
    assert_eq!(kv.fails(set("a", "x", -1)), code::BAD_ARGUMENTS);
    assert_eq!(kv.fails(set("/zookeeper", "x", -1)), code::BAD_ARGUMENTS);
    let big = ZkOp {
        op: Some(ZkOpKind::SetData(ZkSetData {
            path: "/a".into(),
            data: Bytes::from(vec![1u8; ZNODE_DATA_MAX + 1]),
            version: -1,
        })),
    };
    assert_eq!(kv.fails(big), code::BAD_ARGUMENTS);
    // The root's data may be set.
    assert_eq!(kv.ok(set("/", "r", -1)).stat.unwrap().version, 1);
}

#[test]
fn set_acl_moves_the_aversion_only_and_checks_it() {
    let mut kv = Zk::new();
    kv.ok(c(create("/a")));
    let before = kv.node("/a");
    let rev = kv.store.revision();
    let a = kv.write(w(vec![set_acl(
        "/a",
        world(acl::perms::READ | acl::perms::ADMIN),
        0,
    )]));
    let r = &results(&a)[0];
    assert_eq!(r.err, code::OK);
    assert_eq!(a.revision, rev + 1, "setACL is a write: it takes a zxid");
    assert!(
        a.zk_events.is_empty(),
        "ZooKeeper has no event for an ACL change"
    );
    let after = kv.node("/a");
    assert_eq!(
        after,
        ZNode {
            acl: world(acl::perms::READ | acl::perms::ADMIN),
            aversion: 1,
            ..before
        },
        "mzxid and version stay"
    );
    assert_eq!(r.stat.clone().unwrap(), stat_of(&after));
    assert_eq!(kv.fails(set_acl("/a", acl::open(), 0)), code::BAD_VERSION);
    assert_eq!(
        kv.ok(set_acl("/a", acl::open(), 1)).stat.unwrap().aversion,
        2
    );
    assert_eq!(
        kv.ok(set_acl("/a", acl::open(), -1)).stat.unwrap().aversion,
        3
    );
    assert_eq!(kv.fails(set_acl("/nope", acl::open(), -1)), code::NO_NODE);
    assert_eq!(
        kv.fails(set_acl("/a/", acl::open(), -1)),
        code::BAD_ARGUMENTS
    );
    assert_eq!(
        kv.fails(set_acl("/zookeeper/quota", acl::open(), -1)),
        code::BAD_ARGUMENTS
    );
}

#[test]
fn check_compares_the_data_version_and_writes_nothing() {
    let mut kv = Zk::new();
    kv.ok(c(create("/a")));
    kv.ok(set("/a", "x", -1));
    let rev = kv.store.revision();
    let a = kv.write(w(vec![check("/a", 1)]));
    assert_eq!(errs(&a), vec![code::OK]);
    assert_eq!(a.revision, rev, "a check alone takes no revision");
    assert!(a.zk_events.is_empty());
    kv.ok(check("/a", -1));
    kv.ok(check("/zookeeper", 0));
    assert_eq!(kv.fails(check("/a", 0)), code::BAD_VERSION);
    assert_eq!(kv.fails(check("/nope", -1)), code::NO_NODE);
    assert_eq!(kv.fails(check("nope", -1)), code::BAD_ARGUMENTS);
    assert_eq!(kv.store.revision(), rev);
}

// ---------------------------------------------------------------------
// ACLs
// ---------------------------------------------------------------------

fn bob() -> ZkId {
    id("digest", "bob:hash")
}

#[test]
fn create_needs_create_on_the_parent() {
    let mut kv = Zk::new();
    kv.ok(c(ZkCreate {
        acl: vec![entry(acl::perms::ALL, "digest", "bob:hash")],
        ..create("/bobs")
    }));
    let child = || c(create("/bobs/c"));
    assert_eq!(kv.fails(child()), code::NO_AUTH);
    assert_eq!(
        kv.fails_as(0, &[id("digest", "eve:hash")], child()),
        code::NO_AUTH
    );
    kv.run_as(0, &[bob()], child()).unwrap();
    // The child's own ACL does not matter for creating it.
    kv.ok(c(ZkCreate {
        acl: world(acl::perms::READ),
        ..create("/ro")
    }));
    assert_eq!(kv.fails(c(create("/ro/c"))), code::NO_AUTH);
    kv.ok(c(ZkCreate {
        acl: world(acl::perms::ALL & !acl::perms::CREATE),
        ..create("/nocreate")
    }));
    assert_eq!(kv.fails(c(create("/nocreate/c"))), code::NO_AUTH);
    kv.ok(c(ZkCreate {
        acl: world(acl::perms::CREATE),
        ..create("/createonly")
    }));
    kv.ok(c(create("/createonly/c")));
    // NO_AUTH comes before NODE_EXISTS: the caller learns nothing.
    assert_eq!(kv.fails(c(create("/bobs/c"))), code::NO_AUTH);
}

#[test]
fn delete_needs_delete_on_the_parent_not_on_the_node() {
    let mut kv = Zk::new();
    kv.ok(c(ZkCreate {
        acl: world(acl::perms::ALL & !acl::perms::DELETE),
        ..create("/keep")
    }));
    kv.ok(c(create("/keep/c")));
    assert_eq!(kv.fails(del("/keep/c", -1)), code::NO_AUTH);
    kv.ok(c(create("/open")));
    kv.ok(c(ZkCreate {
        acl: world(acl::perms::READ),
        ..create("/open/locked")
    }));
    kv.ok(del("/open/locked", -1));
    // DELETE on the parent is enough.
    kv.ok(c(ZkCreate {
        acl: vec![
            entry(acl::perms::DELETE, "ip", "10.0.0.0/8"),
            entry(acl::perms::CREATE, "world", "anyone"),
        ],
        ..create("/ipdel")
    }));
    kv.ok(c(create("/ipdel/c")));
    assert_eq!(
        kv.fails_as(0, &[id("ip", "11.0.0.1")], del("/ipdel/c", -1)),
        code::NO_AUTH
    );
    kv.run_as(0, &[id("ip", "10.200.0.9")], del("/ipdel/c", -1))
        .unwrap();
}

#[test]
fn set_data_needs_write_set_acl_needs_admin_and_check_needs_read() {
    let mut kv = Zk::new();
    kv.ok(c(ZkCreate {
        acl: world(acl::perms::READ),
        ..create("/r")
    }));
    assert_eq!(kv.fails(set("/r", "x", -1)), code::NO_AUTH);
    assert_eq!(kv.fails(set_acl("/r", acl::open(), -1)), code::NO_AUTH);
    kv.ok(check("/r", 0));
    kv.ok(c(ZkCreate {
        acl: world(acl::perms::WRITE),
        ..create("/w")
    }));
    kv.ok(set("/w", "x", -1));
    assert_eq!(kv.fails(check("/w", -1)), code::NO_AUTH);
    assert_eq!(kv.fails(set_acl("/w", acl::open(), -1)), code::NO_AUTH);
    // NO_AUTH comes before BAD_VERSION.
    assert_eq!(kv.fails(set("/r", "x", 9)), code::NO_AUTH);
    kv.ok(c(ZkCreate {
        acl: vec![entry(acl::perms::ADMIN, "ip", "10.0.0.0/8")],
        ..create("/adm")
    }));
    assert_eq!(
        kv.fails_as(0, &[id("ip", "11.0.0.1")], set_acl("/adm", acl::open(), -1)),
        code::NO_AUTH
    );
    kv.run_as(0, &[id("ip", "10.1.2.3")], set_acl("/adm", acl::open(), -1))
        .unwrap();
    assert_eq!(kv.node("/adm").acl, acl::open());
}

#[test]
fn a_super_identity_passes_every_check() {
    let mut kv = Zk::new();
    kv.ok(c(ZkCreate {
        acl: vec![entry(acl::perms::READ, "digest", "bob:hash")],
        ..create("/locked")
    }));
    kv.ok(c(ZkCreate {
        acl: vec![entry(acl::perms::READ, "digest", "bob:hash")],
        ..create("/locked2")
    }));
    let root = [id(acl::SUPER, "")];
    assert_eq!(kv.fails(c(create("/locked/c"))), code::NO_AUTH);
    kv.run_as(0, &root, c(create("/locked/c"))).unwrap();
    kv.run_as(0, &root, set("/locked", "x", -1)).unwrap();
    kv.run_as(0, &root, check("/locked", 1)).unwrap();
    kv.run_as(0, &root, del("/locked/c", -1)).unwrap();
    kv.run_as(0, &root, set_acl("/locked", world(acl::perms::READ), -1))
        .unwrap();
    assert_eq!(kv.node("/locked").aversion, 1);
    // Super with any other identity still passes.
    kv.run_as(0, &[bob(), id(acl::SUPER, "x")], set("/locked2", "y", -1))
        .unwrap();
}

#[test]
fn auth_entries_expand_to_the_callers_identities() {
    let mut kv = Zk::new();
    let me = [id("ip", "127.0.0.1"), bob(), id("digest", "alice:h2")];
    let r = kv.run_as(
        0,
        &me,
        c(ZkCreate {
            acl: vec![entry(acl::perms::ALL, "auth", "")],
            ..create("/mine")
        }),
    );
    r.unwrap();
    assert_eq!(
        kv.node("/mine").acl,
        vec![
            entry(acl::perms::ALL, "digest", "bob:hash"),
            entry(acl::perms::ALL, "digest", "alice:h2"),
        ],
        "ip identities are not authenticated ones"
    );
    // Only the caller's identities can use the node now.
    assert_eq!(kv.fails(set("/mine", "x", -1)), code::NO_AUTH);
    kv.run_as(0, &[bob()], set("/mine", "x", -1)).unwrap();
    // With no identity to expand to, `auth` is invalid.
    let auth_acl = vec![entry(acl::perms::ALL, "auth", "")];
    assert_eq!(
        kv.fails_as(
            0,
            &[id("ip", "1.2.3.4")],
            c(ZkCreate {
                acl: auth_acl.clone(),
                ..create("/nobody")
            })
        ),
        code::INVALID_ACL
    );
    // (A super identity, which has ADMIN, is not expanded either.)
    assert_eq!(
        kv.fails_as(
            0,
            &[id("ip", "1.2.3.4"), id(acl::SUPER, "")],
            set_acl("/mine", auth_acl.clone(), -1)
        ),
        code::INVALID_ACL
    );
    kv.run_as(
        0,
        &[id(acl::SUPER, "")],
        set_acl("/mine", world(acl::perms::ALL), -1),
    )
    .unwrap();
    kv.run_as(0, &[bob()], set_acl("/mine", auth_acl, -1))
        .unwrap();
    assert_eq!(
        kv.node("/mine").acl,
        vec![entry(acl::perms::ALL, "digest", "bob:hash")]
    );
}

#[test]
fn malformed_acls_are_invalid() {
    let mut kv = Zk::new();
    kv.ok(c(create("/a")));
    let bad: Vec<Vec<ZkAcl>> = vec![
        vec![],
        vec![entry(acl::perms::ALL, "world", "someone")],
        vec![entry(acl::perms::ALL, "digest", "nocolon")],
        vec![entry(acl::perms::ALL, "ip", "not-an-address")],
        vec![entry(acl::perms::ALL, "ip", "10.0.0.0/33")],
        vec![entry(acl::perms::ALL, "ip", "::1/129")],
        vec![entry(acl::perms::ALL, "kerberos", "x")],
        vec![ZkAcl {
            perms: acl::perms::ALL,
            id: None,
        }],
        vec![
            entry(acl::perms::ALL, "world", "anyone"),
            entry(acl::perms::READ, "nope", "x"),
        ],
    ];
    for acl in bad {
        assert_eq!(
            kv.fails(c(ZkCreate {
                acl: acl.clone(),
                ..create("/b")
            })),
            code::INVALID_ACL,
            "create {acl:?}"
        );
        assert_eq!(
            kv.fails(set_acl("/a", acl.clone(), -1)),
            code::INVALID_ACL,
            "setACL {acl:?}"
        );
    }
    // Well-formed ones of each scheme.
    for (i, good) in [
        entry(acl::perms::ALL, "ip", "10.0.0.0/8"),
        entry(acl::perms::ALL, "ip", "::1"),
        entry(acl::perms::ALL, "ip", "192.168.0.1"),
        entry(acl::perms::ALL, "digest", "bob:hash"),
    ]
    .into_iter()
    .enumerate()
    {
        let path = format!("/ok{i}");
        kv.ok(c(ZkCreate {
            acl: vec![good.clone()],
            ..create(&path)
        }));
        assert_eq!(kv.node(&path).acl, vec![good]);
    }
}

#[test]
fn errors_are_reported_in_zookeepers_order() {
    let mut kv = Zk::new();
    kv.ok(c(create("/a")));
    let invalid = vec![entry(acl::perms::ALL, "world", "someone")];
    // PrepRequestProcessor.pRequest2TxnCreate runs fixupACL before it
    // looks up the parent or the node.
    assert_eq!(
        kv.fails(c(ZkCreate {
            acl: invalid.clone(),
            ..create("/missing/x")
        })),
        code::INVALID_ACL
    );
    assert_eq!(
        kv.fails(c(ZkCreate {
            acl: invalid.clone(),
            ..create("/a")
        })),
        code::INVALID_ACL
    );
    // OpCode.setACL: fixupACL before getRecordForPath.
    assert_eq!(
        kv.fails(set_acl("/missing", invalid, -1)),
        code::INVALID_ACL
    );
    // OpCode.delete: the parent's DELETE permission before the node lookup.
    kv.ok(c(ZkCreate {
        acl: world(acl::perms::READ),
        ..create("/ro")
    }));
    assert_eq!(kv.fails(del("/ro/missing", -1)), code::NO_AUTH);
}

// ---------------------------------------------------------------------
// Multi
// ---------------------------------------------------------------------

#[test]
fn a_multi_applies_every_op_at_one_revision() {
    let mut kv = Zk::new();
    kv.ok(c(create("/old")));
    kv.now = 5_000;
    let rev = kv.store.revision() + 1;
    let a = kv.write(multi(vec![
        c(create("/m")),
        c(create("/m/a")),
        set("/m", "data", 0),
        check("/m", 1),
        del("/m/a", 0),
        del("/old", -1),
    ]));
    let rs = results(&a);
    assert_eq!(errs(&a), vec![code::OK; 6]);
    assert_eq!(a.revision, rev, "one revision for the whole multi");
    assert_eq!(kv.store.revision(), rev);
    assert_eq!(rs[0].path, "/m");
    assert_eq!(
        rs[0].stat.as_ref().unwrap().version,
        0,
        "each op's own stat"
    );
    assert_eq!(rs[1].path, "/m/a");
    assert_eq!(rs[2].stat.as_ref().unwrap().version, 1);
    let m = kv.node("/m");
    assert_eq!((m.czxid, m.mzxid, m.pzxid), (rev, rev, rev));
    assert_eq!((m.version, m.ctime, m.mtime), (1, 5_000, 5_000));
    assert!(kv.tree().get("/m/a").is_none() && kv.tree().get("/old").is_none());
    assert_eq!(
        a.zk_events,
        vec![
            ev(Created, "/m", rev),
            ev(ChildrenChanged, "/", rev),
            ev(Created, "/m/a", rev),
            ev(ChildrenChanged, "/m", rev),
            ev(DataChanged, "/m", rev),
            ev(Deleted, "/m/a", rev),
            ev(ChildrenChanged, "/m", rev),
            ev(Deleted, "/old", rev),
            ev(ChildrenChanged, "/", rev),
        ]
    );
}

#[test]
fn a_failed_multi_reports_each_op_and_changes_nothing() {
    let mut kv = Zk::new();
    kv.open(3);
    kv.ok(c(create("/a")));
    kv.ok(c(create("/a/b")));
    kv.ok(c(create("/c")));
    kv.run_as(3, &[], c(create_mode("/e", mode::EPHEMERAL)))
        .unwrap();
    let before = kv.store.zk().clone();
    // The ops before the failure say 0, the failing one its code, the
    // rest RUNTIME_INCONSISTENCY; every change before the failure (a
    // create under a new node, a setData, deletes of a leaf, of its
    // parent and of an ephemeral) is undone.
    let codes = kv.refused(ZkWrite {
        session: 3,
        ..multi(vec![
            c(create("/x")),
            c(create_mode("/x/y", mode::PERSISTENT_SEQUENTIAL)),
            set("/c", "new", -1),
            del("/a/b", -1),
            del("/a", -1),
            del("/e", -1),
            c(create_mode("/e2", mode::EPHEMERAL)),
            check("/c", 0),
            set("/c", "again", -1),
        ])
    });
    assert_eq!(
        codes,
        vec![
            code::OK,
            code::OK,
            code::OK,
            code::OK,
            code::OK,
            code::OK,
            code::OK,
            code::BAD_VERSION,
            code::RUNTIME_INCONSISTENCY,
        ]
    );
    assert_eq!(kv.store.zk(), &before);
    assert_eq!(
        kv.tree().ephemerals(3).cloned().collect::<Vec<_>>(),
        vec!["/e".to_string()],
        "the ephemerals index is put back"
    );
    // A failure at the first op.
    assert_eq!(
        kv.refused(multi(vec![c(create("/a")), c(create("/z"))])),
        vec![code::NODE_EXISTS, code::RUNTIME_INCONSISTENCY]
    );
    // ... and at the last.
    assert_eq!(
        kv.refused(multi(vec![c(create("/z")), del("/z", -1), del("/z", -1)])),
        vec![code::OK, code::OK, code::NO_NODE]
    );
    assert_eq!(kv.store.zk(), &before);
    // The store rebuilt from its rows still equals the live one.
    assert_eq!(kv.load().unwrap(), kv.store);
}

#[test]
fn a_multi_refuses_set_acl_reap_and_session_ops() {
    let mut kv = Zk::new();
    kv.ok(c(create("/a")));
    assert_eq!(
        kv.refused(multi(vec![check("/a", 0), set_acl("/a", acl::open(), -1)])),
        vec![code::OK, code::BAD_ARGUMENTS]
    );
    assert_eq!(
        kv.refused(multi(vec![reap(&["/a"]), check("/a", 0)])),
        vec![code::BAD_ARGUMENTS, code::RUNTIME_INCONSISTENCY]
    );
    // Session ops travel alone: a multi or a batch holding one is refused.
    let open = ZkOp {
        op: Some(ZkOpKind::OpenSession(ZkOpenSession {
            id: 5,
            timeout_ms: 1_000,
            password: Bytes::new(),
        })),
    };
    let close = ZkOp {
        op: Some(ZkOpKind::CloseSession(ZkCloseSession { id: 5 })),
    };
    for zw in [
        multi(vec![open.clone()]),
        w(vec![open.clone(), check("/a", 0)]),
        multi(vec![close.clone()]),
        w(vec![close, check("/a", 0)]),
    ] {
        let rev = kv.store.revision();
        let a = kv.write(zw);
        assert!(matches!(refusal(&a), KvError::InvalidArgument(_)));
        assert_eq!(kv.store.revision(), rev);
        assert!(kv.tree().session(5).is_none() && !kv.store.leases().contains(5));
    }
    // A multi of checks only succeeds without a revision.
    let rev = kv.store.revision();
    let a = kv.write(multi(vec![check("/a", 0), check("/", -1)]));
    assert_eq!(errs(&a), vec![code::OK, code::OK]);
    assert_eq!(a.revision, rev);
    assert!(a.zk_events.is_empty());
    // An empty multi too.
    let a = kv.write(multi(vec![]));
    assert!(errs(&a).is_empty());
    assert_eq!(a.revision, rev);
}

// ---------------------------------------------------------------------
// Sessions
// ---------------------------------------------------------------------

#[test]
fn opening_a_session_grants_its_lease_and_checks_the_request() {
    let mut kv = Zk::new();
    let rev = kv.store.revision();
    let a = kv.open(11);
    assert_eq!(errs(&a), vec![code::OK]);
    assert_eq!(a.revision, rev, "opening a session writes no revision");
    assert_eq!(
        kv.tree().session(11),
        Some(&ZkSession {
            id: 11,
            timeout_ms: 4_000,
            password: b("secret"),
        })
    );
    assert_eq!(
        kv.store.leases().get(11).unwrap().ttl,
        4,
        "timeout rounded up to seconds"
    );
    let open = |id: i64, timeout_ms: i32, password: usize| {
        Op::Zk(w(vec![ZkOp {
            op: Some(ZkOpKind::OpenSession(ZkOpenSession {
                id,
                timeout_ms,
                password: Bytes::from(vec![7u8; password]),
            })),
        }]))
    };
    let a = kv.apply(open(12, 1, 16));
    assert_eq!(errs(&a), vec![code::OK]);
    assert_eq!(
        kv.store.leases().get(12).unwrap().ttl,
        synod_kv::LEASE_TTL_MIN_S,
        "at least the lessor's minimum"
    );
    let sessions = kv.tree().sessions().count();
    for (id, timeout, pw) in [
        (0, 1_000, 0),
        (-3, 1_000, 0),
        (13, 0, 0),
        (13, -1, 0),
        (13, 1_000, 65),
        (11, 1_000, 0),
    ] {
        let a = kv.apply(open(id, timeout, pw));
        assert!(
            matches!(refusal(&a), KvError::InvalidArgument(_)),
            "{id} {timeout} {pw}"
        );
    }
    // An etcd lease's id is taken too.
    kv.apply(Op::LeaseGrant(LeaseGrantRequest { id: 14, ttl: 10 }));
    assert!(matches!(
        refusal(&kv.apply(open(14, 1_000, 0))),
        KvError::InvalidArgument(_)
    ));
    assert_eq!(kv.tree().sessions().count(), sessions);
    assert_eq!(errs(&kv.apply(open(15, 1_000, 64))), vec![code::OK]);
}

#[test]
fn closing_a_session_deletes_its_ephemerals_at_one_revision() {
    let mut kv = Zk::new();
    kv.open(7);
    kv.open(8);
    kv.ok(c(create("/app")));
    kv.run_as(7, &[], c(create_mode("/app/e1", mode::EPHEMERAL)))
        .unwrap();
    kv.put("between", 0);
    let seq = kv
        .run_as(
            7,
            &[],
            c(create_mode("/app/s-", mode::EPHEMERAL_SEQUENTIAL)),
        )
        .unwrap()
        .path;
    kv.run_as(7, &[], c(create_mode("/top", mode::EPHEMERAL)))
        .unwrap();
    kv.run_as(8, &[], c(create_mode("/app/other", mode::EPHEMERAL)))
        .unwrap();
    kv.run_as(7, &[], c(create("/app/persistent"))).unwrap();
    assert_eq!(kv.tree().ephemerals(7).count(), 3);
    let other = kv.node("/app/other");
    let rev = kv.store.revision() + 1;
    let a = kv.close(7);
    assert_eq!(errs(&a), vec![code::OK]);
    assert_eq!(a.revision, rev, "all of them at one revision");
    assert_eq!(kv.store.revision(), rev);
    let mut expected = vec![
        ev(Deleted, "/app/e1", rev),
        ev(ChildrenChanged, "/app", rev),
        ev(Deleted, &seq, rev),
        ev(ChildrenChanged, "/app", rev),
        ev(Deleted, "/top", rev),
        ev(ChildrenChanged, "/", rev),
    ];
    let mut got = a.zk_events.clone();
    expected.sort_by(|x, y| (&x.path, x.kind).cmp(&(&y.path, y.kind)));
    got.sort_by(|x, y| (&x.path, x.kind).cmp(&(&y.path, y.kind)));
    assert_eq!(got, expected);
    for p in ["/app/e1", seq.as_str(), "/top"] {
        assert!(kv.tree().get(p).is_none(), "{p}");
    }
    assert_eq!(kv.node("/app").pzxid, rev);
    assert_eq!(kv.node("/app/other"), other, "another session's node stays");
    assert!(kv.tree().get("/app/persistent").is_some());
    assert!(kv.tree().session(7).is_none(), "the session record goes");
    assert_eq!(kv.tree().ephemerals(7).count(), 0);
    assert!(!kv.store.leases().contains(7), "and its lease");
    assert!(kv.tree().session(8).is_some());
    // No row of the session is left.
    let mut session_row = vec![b'y'];
    session_row.extend_from_slice(&7u64.to_be_bytes());
    assert!(kv.zk_rows().iter().all(|(k, _)| *k != session_row));
    assert_eq!(kv.load().unwrap(), kv.store);

    // Closing again, or a session that owns nothing, takes no revision.
    let rev = kv.store.revision();
    let a = kv.close(7);
    assert_eq!(errs(&a), vec![code::OK]);
    assert!(a.zk_events.is_empty());
    kv.open(9);
    let a = kv.close(9);
    assert!(a.zk_events.is_empty());
    assert_eq!(kv.store.revision(), rev);
    assert!(kv.tree().session(9).is_none());
}

#[test]
fn an_expired_or_revoked_lease_ends_its_session() {
    let mut kv = Zk::new();
    kv.open(21);
    kv.open(22);
    kv.run_as(21, &[], c(create_mode("/e21", mode::EPHEMERAL)))
        .unwrap();
    kv.run_as(22, &[], c(create_mode("/e22", mode::EPHEMERAL)))
        .unwrap();
    // The session's lease also holds an etcd key: the key goes at one
    // revision, the ephemerals at the next.
    kv.put("k", 21);
    let rev = kv.store.revision();
    let a = kv.apply(Op::LeaseExpire(LeaseExpire { ids: vec![21] }));
    assert_eq!(a.events.len(), 1);
    assert_eq!(a.events[0].kv.as_ref().unwrap().mod_revision, rev + 1);
    assert_eq!(
        a.zk_events,
        vec![
            ev(Deleted, "/e21", rev + 2),
            ev(ChildrenChanged, "/", rev + 2)
        ]
    );
    assert_eq!(kv.store.revision(), rev + 2);
    assert!(kv.tree().session(21).is_none() && kv.tree().get("/e21").is_none());
    assert!(kv.tree().get("/e22").is_some());
    // etcd's LeaseRevoke of a session's lease ends it too.
    let a = kv.apply(Op::LeaseRevoke(LeaseRevokeRequest { id: 22 }));
    assert_eq!(
        a.zk_events,
        vec![
            ev(Deleted, "/e22", rev + 3),
            ev(ChildrenChanged, "/", rev + 3)
        ]
    );
    assert!(kv.tree().session(22).is_none());
    assert_eq!(client_paths(kv.tree()), Vec::<String>::new());
    assert_eq!(kv.load().unwrap(), kv.store);
}

#[test]
fn closing_an_unknown_session_leaves_etcd_leases_alone() {
    let mut kv = Zk::new();
    kv.apply(Op::LeaseGrant(LeaseGrantRequest { id: 31, ttl: 60 }));
    kv.put("held", 31);
    let rev = kv.store.revision();
    let a = kv.close(31);
    assert_eq!(errs(&a), vec![code::OK]);
    assert!(
        kv.store.leases().contains(31),
        "ZkCloseSession of an id with no ZooKeeper session revokes the etcd lease"
    );
    assert_eq!(kv.store.revision(), rev);
}

// ---------------------------------------------------------------------
// Reaping containers and TTL nodes
// ---------------------------------------------------------------------

#[test]
fn reap_deletes_a_container_only_once_it_had_a_child_and_is_empty() {
    let mut kv = Zk::new();
    kv.ok(c(create_mode("/box", mode::CONTAINER)));
    kv.ok(c(create("/plain")));
    let nothing = |kv: &mut Zk, paths: &[&str]| {
        let tree = kv.store.zk().clone();
        let rev = kv.store.revision();
        let a = kv.write(w(vec![reap(paths)]));
        assert_eq!(errs(&a), vec![code::OK]);
        assert_eq!(
            a.revision, rev,
            "a reap that deletes nothing takes no revision"
        );
        assert!(a.zk_events.is_empty());
        assert_eq!(kv.store.zk(), &tree);
    };
    // Never had a child; a plain node; missing and invalid paths.
    assert!(kv.tree().reap_candidates(i64::MAX, 10).is_empty());
    nothing(
        &mut kv,
        &["/box", "/plain", "/missing", "bad", "/", "/zookeeper"],
    );
    kv.ok(c(create("/box/kid")));
    nothing(&mut kv, &["/box"]);
    kv.ok(del("/box/kid", -1));
    assert_eq!(kv.tree().reap_candidates(0, 10), vec!["/box".to_string()]);
    let rev = kv.store.revision() + 1;
    let a = kv.write(w(vec![reap(&["/plain", "/box"])]));
    assert_eq!(errs(&a), vec![code::OK]);
    assert_eq!(a.revision, rev);
    assert_eq!(
        a.zk_events,
        vec![ev(Deleted, "/box", rev), ev(ChildrenChanged, "/", rev)]
    );
    assert_eq!(client_paths(kv.tree()), vec!["/plain".to_string()]);
}

#[test]
fn reap_deletes_a_ttl_node_once_unmodified_past_its_ttl_and_childless() {
    let mut kv = Zk::new();
    kv.now = 10_000;
    kv.ok(c(ZkCreate {
        ttl_ms: 1_000,
        ..create_mode("/t", mode::PERSISTENT_WITH_TTL)
    }));
    let reap_at = |kv: &mut Zk, now: i64| {
        kv.now = now;
        let a = kv.write(w(vec![reap(&["/t"])]));
        assert_eq!(errs(&a), vec![code::OK]);
        a
    };
    // Exactly the TTL elapsed is not past it (ZooKeeper: elapsed > ttl).
    assert!(kv.tree().reap_candidates(11_000, 10).is_empty());
    assert!(reap_at(&mut kv, 11_000).zk_events.is_empty());
    assert!(kv.tree().get("/t").is_some());
    // A setData restarts the clock.
    kv.now = 10_500;
    kv.ok(set("/t", "x", -1));
    assert!(reap_at(&mut kv, 11_400).zk_events.is_empty());
    assert!(kv.tree().get("/t").is_some());
    // A child keeps it, however old.
    kv.ok(c(create("/t/kid")));
    assert!(kv.tree().reap_candidates(50_000, 10).is_empty());
    assert!(reap_at(&mut kv, 50_000).zk_events.is_empty());
    // Deleting the child does not touch its mtime: it goes now.
    kv.ok(del("/t/kid", -1));
    assert_eq!(kv.node("/t").mtime, 10_500);
    assert_eq!(
        kv.tree().reap_candidates(50_000, 10),
        vec!["/t".to_string()]
    );
    let rev = kv.store.revision() + 1;
    let a = reap_at(&mut kv, 50_000);
    assert_eq!(
        a.zk_events,
        vec![ev(Deleted, "/t", rev), ev(ChildrenChanged, "/", rev)]
    );
    assert!(kv.tree().get("/t").is_none());
}

#[test]
fn reap_candidates_are_bounded_and_in_path_order() {
    let mut kv = Zk::new();
    for p in ["/c", "/a", "/b"] {
        kv.ok(c(ZkCreate {
            ttl_ms: 1,
            ..create_mode(p, mode::PERSISTENT_WITH_TTL)
        }));
    }
    let now = kv.now + 2;
    assert_eq!(
        kv.tree().reap_candidates(now, 2),
        vec!["/a".to_string(), "/b".to_string()]
    );
    assert_eq!(kv.tree().reap_candidates(now, 10).len(), 3);
    kv.now = now;
    let a = kv.write(w(vec![reap(&["/a", "/b", "/c"])]));
    assert_eq!(a.zk_events.len(), 6);
    assert!(a.zk_events.iter().all(|e| e.zxid == a.revision));
    assert_eq!(client_paths(kv.tree()), Vec::<String>::new());
}

// ---------------------------------------------------------------------
// Revisions, events, retries, NOSPACE
// ---------------------------------------------------------------------

#[test]
fn etcd_and_zookeeper_writes_share_one_revision() {
    let mut kv = Zk::new();
    let r0 = kv.store.revision();
    let a = kv.write(w(vec![c(create("/a"))]));
    assert_eq!(a.revision, r0 + 1);
    let put = kv.put("k", 0);
    assert_eq!(put.revision, r0 + 2);
    let b_ = kv.ok(c(create("/b"))).stat.unwrap();
    assert_eq!(b_.czxid, r0 + 3, "the zxid follows the etcd write");
    let s = kv.ok(set("/a", "x", -1)).stat.unwrap();
    assert_eq!((s.czxid, s.mzxid), (r0 + 1, r0 + 4));
    // Revisions reserved for the timestamp oracle are skipped too.
    kv.apply(Op::ReserveRevisions(ReserveRevisions { count: 10 }));
    let d = kv.ok(c(create("/d"))).stat.unwrap();
    assert_eq!(d.czxid, r0 + 15);
    assert_eq!(kv.put("k", 0).revision, r0 + 16);
    assert_eq!(kv.node("/").pzxid, r0 + 15);
}

#[test]
fn every_change_reports_its_events_at_its_revision() {
    let mut kv = Zk::new();
    let a = kv.write(w(vec![c(create("/a"))]));
    assert_eq!(
        a.zk_events,
        vec![
            ev(Created, "/a", a.revision),
            ev(ChildrenChanged, "/", a.revision)
        ]
    );
    let a = kv.write(w(vec![c(create("/a/b"))]));
    assert_eq!(
        a.zk_events,
        vec![
            ev(Created, "/a/b", a.revision),
            ev(ChildrenChanged, "/a", a.revision)
        ]
    );
    let a = kv.write(w(vec![set("/a/b", "x", -1)]));
    assert_eq!(a.zk_events, vec![ev(DataChanged, "/a/b", a.revision)]);
    let a = kv.write(w(vec![del("/a/b", -1)]));
    assert_eq!(
        a.zk_events,
        vec![
            ev(Deleted, "/a/b", a.revision),
            ev(ChildrenChanged, "/a", a.revision)
        ]
    );
    // etcd writes carry no tree events, and tree writes no etcd events.
    let put = kv.put("k", 0);
    assert!(put.zk_events.is_empty());
    assert!(kv.write(w(vec![set("/a", "x", -1)])).events.is_empty());
}

#[test]
fn a_retried_zookeeper_write_applies_once() {
    let mut kv = Zk::new();
    let command = kv.command(Op::Zk(ZkWrite {
        time_ms: 1,
        ..w(vec![c(create_mode("/s-", mode::PERSISTENT_SEQUENTIAL))])
    }));
    let first = kv.apply_command(&command);
    let tree = kv.store.zk().clone();
    let again = kv.apply_command(&command);
    assert!(again.duplicate);
    assert_eq!(again.outcome, first.outcome, "the first answer comes back");
    assert!(again.zk_events.is_empty());
    assert_eq!(again.revision, first.revision);
    assert_eq!(kv.store.zk(), &tree, "no second sequential node");
}

#[test]
fn nospace_refuses_writes_that_add_data_but_not_deletes() {
    let mut kv = Zk::new();
    kv.ok(c(create("/a")));
    kv.open(40);
    kv.run_as(40, &[], c(create_mode("/e", mode::EPHEMERAL)))
        .unwrap();
    kv.apply(Op::Alarm(AlarmRequest {
        action: AlarmAction::Activate as i32,
        member_id: 1,
        alarm: AlarmType::Nospace as i32,
    }));
    let rev = kv.store.revision();
    let tree = kv.store.zk().clone();
    for zw in [
        w(vec![c(create("/b"))]),
        w(vec![set("/a", "x", -1)]),
        multi(vec![check("/a", -1), c(create("/b"))]),
    ] {
        assert_eq!(refusal(&kv.write(zw)), KvError::NoSpace);
    }
    assert_eq!(refusal(&kv.open(41)), KvError::NoSpace);
    assert_eq!((kv.store.revision(), kv.store.zk()), (rev, &tree));
    kv.ok(del("/a", -1));
    kv.ok(check("/", -1));
    kv.ok(set_acl("/", acl::open(), -1));
    assert_eq!(kv.close(40).zk_events.len(), 2, "closing frees space");
}

// ---------------------------------------------------------------------
// Persistence: rows and snapshots
// ---------------------------------------------------------------------

/// A store that has been through every kind of tree write.
fn busy() -> Zk {
    let mut kv = Zk::new();
    kv.open(1);
    kv.open(2);
    kv.ok(c(ZkCreate {
        data: b("config"),
        ..create("/app")
    }));
    kv.ok(c(create_mode("/app/box", mode::CONTAINER)));
    kv.ok(c(create("/app/box/kid")));
    kv.ok(c(ZkCreate {
        ttl_ms: 500,
        ..create_mode("/app/t-", mode::PERSISTENT_SEQUENTIAL_WITH_TTL)
    }));
    kv.run_as(
        1,
        &[],
        c(create_mode("/app/lock-", mode::EPHEMERAL_SEQUENTIAL)),
    )
    .unwrap();
    kv.run_as(
        2,
        &[],
        c(create_mode("/app/lock-", mode::EPHEMERAL_SEQUENTIAL)),
    )
    .unwrap();
    kv.run_as(
        2,
        &[bob()],
        c(ZkCreate {
            acl: vec![entry(acl::perms::ALL, "auth", "")],
            ..create("/private")
        }),
    )
    .unwrap();
    kv.put("etcd/key", 0);
    kv.write(multi(vec![
        set("/app", "v2", 0),
        c(create("/app/m")),
        del("/app/box/kid", -1),
    ]));
    kv.ok(set_acl(
        "/app/m",
        world(acl::perms::READ | acl::perms::ADMIN),
        0,
    ));
    kv.ok(set("/", "root", -1));
    kv.open(3);
    kv.run_as(3, &[], c(create_mode("/gone", mode::EPHEMERAL)))
        .unwrap();
    kv.close(3);
    kv
}

#[test]
fn the_rows_rebuild_an_equal_store() {
    let kv = busy();
    let loaded = kv.load().expect("the rows load");
    loaded.check_invariants();
    assert_eq!(loaded, kv.store);
    assert_eq!(loaded.zk(), kv.store.zk());
    assert_eq!(client_paths(loaded.zk()), client_paths(kv.tree()));
    // One row per client znode, keyed by its path; none for ZooKeeper's own
    // nodes or for deleted ones; one row per open session.
    let rows = kv.zk_rows();
    let mut znodes = Vec::new();
    let mut sessions = Vec::new();
    for (key, value) in &rows {
        match key[0] {
            b'z' => {
                let n = ZNode::decode(value.clone()).expect("a znode row decodes");
                assert_eq!(n.path.as_bytes(), &key[1..]);
                assert_eq!(&n, &kv.node(&n.path));
                znodes.push(n.path);
            }
            _ => {
                let s = ZkSession::decode(value.clone()).expect("a session row decodes");
                assert_eq!(&key[1..], &(s.id as u64).to_be_bytes());
                sessions.push(s.id);
            }
        }
    }
    let mut expected = client_paths(kv.tree());
    expected.push("/".into());
    expected.sort();
    assert_eq!(znodes, expected);
    assert_eq!(sessions, vec![1, 2]);
    for fixed in ZK_FIXED_PATHS {
        assert!(
            loaded.zk().get(fixed).is_some(),
            "{fixed} is rebuilt, not stored"
        );
    }
    // The loaded store goes on as the live one does.
    let mut live = kv;
    let mut other = Zk {
        store: loaded,
        rows: live.rows.clone(),
        client: live.client,
        seq: live.seq,
        now: live.now,
    };
    for zk in [&mut live, &mut other] {
        zk.now = 99_000;
    }
    let command = live.command(Op::Zk(ZkWrite {
        session: 1,
        time_ms: 99_000,
        ..multi(vec![
            c(create_mode("/app/lock-", mode::EPHEMERAL_SEQUENTIAL)),
            set("/app", "v3", 1),
        ])
    }));
    let a = live.store.apply(&command);
    let b_ = other.store.apply(&command);
    assert_eq!(a, b_);
    assert_eq!(live.store, other.store);
}

#[test]
fn a_snapshot_restores_an_equal_store() {
    let kv = busy();
    let snapshot = kv.store.snapshot();
    assert!(snapshot
        .znodes
        .iter()
        .all(|n| !n.path.starts_with("/zookeeper")));
    assert_eq!(snapshot.zk_sessions.len(), 2);
    let restored = KvStore::restore(snapshot.clone()).expect("its own snapshot restores");
    restored.check_invariants();
    assert_eq!(restored, kv.store);
    let decoded = KvStore::decode_snapshot(Bytes::from(snapshot.encode_to_vec())).unwrap();
    assert_eq!(decoded, kv.store);
    // A store replaced by the snapshot rewrites its rows, which load back.
    let mut kv = kv;
    kv.store.replace(restored);
    kv.flush();
    assert_eq!(kv.load().unwrap(), kv.store);
    assert_eq!(kv.tree().ephemerals(1).count(), 1);
    assert_eq!(kv.tree().ephemerals(2).count(), 1);
}

#[test]
fn store_equality_ignores_the_zookeeper_journal() {
    // A store not on disk (as a shadow replica or a test has it).
    let mut store = KvStore::default();
    let write = |store: &mut KvStore, seq: u64, zw: ZkWrite| {
        store.apply(&Command {
            stamp: 0,
            client: 1,
            seq,
            answered_below: seq,
            op: Some(Op::Zk(zw)),
            caller: None,
            live_leases: Vec::new(),
            auth_fence: None,
        })
    };
    write(&mut store, 1, w(vec![c(create("/a"))]));
    let restored = KvStore::restore(store.snapshot()).unwrap();
    assert_eq!(restored, store, "a store equals its own restored snapshot");
    // A failed multi leaves the tree as it was.
    let before = store.zk().clone();
    write(
        &mut store,
        2,
        multi(vec![c(create("/b")), del("/nope", -1)]),
    );
    assert_eq!(store.zk(), &before);
}

#[test]
fn damaged_znode_and_session_rows_are_refused() {
    let kv = busy();
    let node = |path: &str| ZNode {
        path: path.into(),
        acl: acl::open(),
        ..ZNode::default()
    };
    let put = |key: Vec<u8>, value: Vec<u8>| StateOp::Put {
        key,
        value: Bytes::from(value),
    };
    let mut session_row = vec![b'y'];
    session_row.extend_from_slice(&1u64.to_be_bytes());
    let mut lease_row = vec![b'l'];
    lease_row.extend_from_slice(&1u64.to_be_bytes());
    let cases: Vec<(&str, Vec<StateOp>)> = vec![
        (
            "a row whose record names another path",
            vec![put(znode_row("/app"), node("/other").encode_to_vec())],
        ),
        (
            "a node without its parent",
            vec![put(znode_row("/x/y"), node("/x/y").encode_to_vec())],
        ),
        (
            "a parent row deleted under its children",
            vec![StateOp::Delete {
                key: znode_row("/app"),
            }],
        ),
        (
            "a row that does not decode",
            vec![put(znode_row("/junk"), vec![0xff; 7])],
        ),
        (
            "an invalid path",
            vec![put(znode_row("/bad/"), node("/bad/").encode_to_vec())],
        ),
        (
            "a row for ZooKeeper's own nodes",
            vec![put(
                znode_row("/zookeeper/quota"),
                node("/zookeeper/quota").encode_to_vec(),
            )],
        ),
        (
            "a child under an ephemeral",
            vec![{
                let lock = client_paths(kv.tree())
                    .into_iter()
                    .find(|p| p.starts_with("/app/lock-"))
                    .unwrap();
                let child = format!("{lock}/c");
                put(znode_row(&child), node(&child).encode_to_vec())
            }],
        ),
        (
            "an ephemeral whose session row is gone",
            vec![StateOp::Delete {
                key: session_row.clone(),
            }],
        ),
        (
            "a session row under another id",
            vec![put(
                session_row.clone(),
                ZkSession {
                    id: 5,
                    timeout_ms: 1,
                    password: Bytes::new(),
                }
                .encode_to_vec(),
            )],
        ),
        (
            "a session without its lease",
            vec![StateOp::Delete { key: lease_row }],
        ),
        (
            "a session row that does not decode",
            vec![put(session_row, vec![0xff; 3])],
        ),
    ];
    for (what, damage) in cases {
        let rows = damaged(&kv.rows, damage);
        let err = KvStore::load(rows).expect_err(what);
        assert!(err.contains("malformed"), "{what}: {err}");
    }
    // The undamaged copy loads.
    assert_eq!(
        KvStore::load(damaged(&kv.rows, vec![])).unwrap().unwrap(),
        kv.store
    );
}

#[test]
fn damaged_snapshots_are_refused() {
    let kv = busy();
    let good = kv.store.snapshot();
    type Damage = fn(&mut Snapshot);
    let cases: Vec<(&str, Damage)> = vec![
        ("a repeated znode", |s| {
            let first = s.znodes[1].clone();
            s.znodes.push(first);
        }),
        ("a node without its parent", |s| {
            s.znodes.retain(|n| n.path != "/app");
        }),
        ("a znode with an invalid path", |s| {
            s.znodes[1].path = "nope".into()
        }),
        ("ZooKeeper's own node", |s| {
            s.znodes.push(ZNode {
                path: "/zookeeper".into(),
                ..ZNode::default()
            })
        }),
        ("an ephemeral without its session", |s| {
            s.zk_sessions.retain(|z| z.id != 1);
        }),
        ("a repeated session", |s| {
            let first = s.zk_sessions[0].clone();
            s.zk_sessions.push(first);
        }),
        ("a session id that is not positive", |s| {
            s.zk_sessions.push(ZkSession {
                id: 0,
                ..ZkSession::default()
            })
        }),
        ("a session without its lease", |s| {
            s.leases.retain(|l| l.id != 2);
        }),
    ];
    for (what, damage) in cases {
        let mut s = good.clone();
        damage(&mut s);
        let err = KvStore::restore(s).expect_err(what);
        assert!(err.contains("malformed"), "{what}: {err}");
    }
    assert!(KvStore::restore(good).is_ok());
}

// ---------------------------------------------------------------------
// Random sequences
// ---------------------------------------------------------------------

/// Paths over a two-letter alphabet, up to three deep.
const PATHS: [&str; 14] = [
    "/a", "/b", "/a/a", "/a/b", "/b/a", "/b/b", "/a/a/a", "/a/a/b", "/a/b/a", "/a/b/b", "/b/a/a",
    "/b/a/b", "/b/b/a", "/b/b/b",
];
/// ZooKeeper sessions the steps may open, use and end.
const SESSIONS: [i64; 2] = [101, 102];

/// Which node an op names: one of `PATHS`, or (to reach sequential
/// names) the n-th node the tree holds.
#[derive(Clone, Debug)]
enum Target {
    Named(u8),
    Existing(u8),
}

#[derive(Clone, Debug)]
enum TreeOp {
    /// A create at the target (or below an existing node).
    Create {
        at: Target,
        mode: i32,
        ttl_ms: i64,
        bad_acl: bool,
    },
    Delete(Target, i32),
    SetData(Target, u8, i32),
    Check(Target, i32),
}

#[derive(Clone, Debug)]
enum Step {
    /// A write as session `who` (0: none); a multi, or one op.
    Write {
        who: u8,
        multi: bool,
        ops: Vec<TreeOp>,
    },
    Open(u8),
    Close(u8),
    Expire(u8),
    Reap,
    Tick(u16),
    Put(u8),
    Reload,
    Restore,
}

fn target() -> impl Strategy<Value = Target> {
    prop_oneof![
        // Shallow names most: deep ones need their parents first.
        3 => (0u8..2).prop_map(Target::Named),
        1 => (2u8..14).prop_map(Target::Named),
        4 => any::<u8>().prop_map(Target::Existing),
    ]
}

/// A node to delete, set or check: mostly one that exists.
fn node_target() -> impl Strategy<Value = Target> {
    prop_oneof![
        4 => any::<u8>().prop_map(Target::Existing),
        1 => (0u8..14).prop_map(Target::Named),
    ]
}

/// The writer: no session (0) or one of `SESSIONS`.
fn who() -> impl Strategy<Value = u8> {
    prop_oneof![1 => Just(0u8), 2 => Just(1u8), 2 => Just(2u8)]
}

fn version() -> impl Strategy<Value = i32> {
    prop_oneof![4 => Just(-1), 1 => 0i32..3]
}

fn create_mode_strategy() -> impl Strategy<Value = i32> {
    prop_oneof![
        4 => Just(mode::PERSISTENT),
        3 => Just(mode::EPHEMERAL),
        2 => Just(mode::PERSISTENT_SEQUENTIAL),
        2 => Just(mode::EPHEMERAL_SEQUENTIAL),
        3 => Just(mode::CONTAINER),
        2 => Just(mode::PERSISTENT_WITH_TTL),
        1 => Just(mode::PERSISTENT_SEQUENTIAL_WITH_TTL),
    ]
}

fn tree_op() -> impl Strategy<Value = TreeOp> {
    prop_oneof![
        6 => (target(), create_mode_strategy(), 1i64..3_000, prop::bool::weighted(0.03)).prop_map(
            |(at, mode, ttl_ms, bad_acl)| TreeOp::Create { at, mode, ttl_ms, bad_acl }
        ),
        3 => (node_target(), version()).prop_map(|(t, v)| TreeOp::Delete(t, v)),
        2 => (node_target(), any::<u8>(), version()).prop_map(|(t, d, v)| TreeOp::SetData(t, d, v)),
        1 => (node_target(), version()).prop_map(|(t, v)| TreeOp::Check(t, v)),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        12 => (who(), tree_op()).prop_map(|(who, op)| Step::Write { who, multi: false, ops: vec![op] }),
        4 => (who(), prop::collection::vec(tree_op(), 1..4))
            .prop_map(|(who, ops)| Step::Write { who, multi: true, ops }),
        4 => (0u8..2).prop_map(Step::Open),
        1 => (0u8..2).prop_map(Step::Close),
        1 => (0u8..2).prop_map(Step::Expire),
        2 => Just(Step::Reap),
        2 => (0u16..4_000).prop_map(Step::Tick),
        1 => any::<u8>().prop_map(Step::Put),
        1 => Just(Step::Reload),
        1 => Just(Step::Restore),
    ]
}

/// The path a target names; for a create, an existing target names a
/// child `s` of an existing node (the root included).
fn resolve(tree: &ZkTree, t: &Target, for_create: bool) -> String {
    match t {
        Target::Named(i) => PATHS[*i as usize % PATHS.len()].to_string(),
        Target::Existing(i) => {
            let mut paths = client_paths(tree);
            if for_create {
                paths.insert(0, String::new());
            }
            let p = if paths.is_empty() {
                PATHS[*i as usize % 2].to_string()
            } else {
                paths[*i as usize % paths.len()].clone()
            };
            if for_create {
                format!("{p}/s")
            } else {
                p
            }
        }
    }
}

fn to_op(tree: &ZkTree, op: &TreeOp) -> ZkOp {
    match op {
        TreeOp::Create {
            at,
            mode: m,
            ttl_ms,
            bad_acl,
        } => c(ZkCreate {
            data: b("d"),
            acl: if *bad_acl {
                vec![entry(acl::perms::ALL, "world", "nobody")]
            } else {
                acl::open()
            },
            mode: *m,
            ttl_ms: *ttl_ms,
            path: resolve(tree, at, true),
        }),
        TreeOp::Delete(t, v) => del(&resolve(tree, t, false), *v),
        TreeOp::SetData(t, d, v) => set(&resolve(tree, t, false), &d.to_string(), *v),
        TreeOp::Check(t, v) => check(&resolve(tree, t, false), *v),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]
    #[test]
    fn random_writes_keep_the_invariants_and_failures_change_nothing(
        steps in prop::collection::vec(step(), 1..80)
    ) {
        let mut kv = Zk::new();
        for s in &steps {
            match s {
                Step::Write { who, multi: is_multi, ops } => {
                    let session = if *who == 0 { 0 } else { SESSIONS[*who as usize - 1] };
                    let zops: Vec<ZkOp> = ops.iter().map(|o| to_op(kv.tree(), o)).collect();
                    let tree = kv.store.zk().clone();
                    let rows = kv.zk_rows();
                    let rev = kv.store.revision();
                    let a = kv.write(ZkWrite { session, multi: *is_multi, ..w(zops.clone()) });
                    let rs = results(&a);
                    prop_assert_eq!(rs.len(), zops.len());
                    let codes: Vec<i32> = rs.iter().map(|r| r.err).collect();
                    if let Some(at) = codes.iter().position(|&e| e != code::OK) {
                        // [0.., err, -2..] and nothing changed.
                        prop_assert!(codes[at] != code::RUNTIME_INCONSISTENCY);
                        prop_assert!(codes[at + 1..].iter().all(|&e| e == code::RUNTIME_INCONSISTENCY));
                        prop_assert_eq!(a.revision, rev);
                        prop_assert!(a.zk_events.is_empty());
                        prop_assert_eq!(kv.store.zk(), &tree);
                        prop_assert_eq!(kv.zk_rows(), rows);
                    } else if a.revision == rev {
                        // Only checks: nothing written.
                        prop_assert!(zops.iter().all(|o| matches!(o.op, Some(ZkOpKind::Check(_)))));
                        prop_assert!(a.zk_events.is_empty());
                        prop_assert_eq!(kv.store.zk(), &tree);
                    } else {
                        prop_assert_eq!(a.revision, rev + 1);
                        prop_assert!(!a.zk_events.is_empty());
                        prop_assert!(a.zk_events.iter().all(|e| e.zxid == a.revision));
                        if zops.len() == 1 {
                            if let Some(ZkOpKind::Create(cr)) = &zops[0].op {
                                let created = kv.node(&rs[0].path);
                                prop_assert_eq!(created.czxid, a.revision);
                                let parent = match cr.path.rsplit_once('/') {
                                    Some(("", _)) | None => "/".to_string(),
                                    Some((p, _)) => p.to_string(),
                                };
                                let before = tree.get(&parent).unwrap().cversion;
                                if matches!(
                                    cr.mode,
                                    mode::PERSISTENT_SEQUENTIAL
                                        | mode::EPHEMERAL_SEQUENTIAL
                                        | mode::PERSISTENT_SEQUENTIAL_WITH_TTL
                                ) {
                                    prop_assert_eq!(&rs[0].path, &format!("{}{:010}", cr.path, before));
                                }
                                prop_assert_eq!(kv.node(&parent).cversion, before + 1);
                            }
                        }
                    }
                }
                Step::Open(i) => {
                    kv.open(SESSIONS[*i as usize]);
                }
                Step::Close(i) | Step::Expire(i) => {
                    let id = SESSIONS[*i as usize];
                    let owned: Vec<String> = kv.tree().ephemerals(id).cloned().collect();
                    let rev = kv.store.revision();
                    let a = if matches!(s, Step::Close(_)) {
                        kv.close(id)
                    } else {
                        kv.apply(Op::LeaseExpire(LeaseExpire { ids: vec![id] }))
                    };
                    prop_assert!(kv.tree().session(id).is_none());
                    prop_assert!(!kv.store.leases().contains(id));
                    prop_assert_eq!(kv.tree().ephemerals(id).count(), 0);
                    prop_assert_eq!(a.zk_events.len(), 2 * owned.len());
                    prop_assert_eq!(a.revision, if owned.is_empty() { rev } else { rev + 1 });
                    prop_assert!(a.zk_events.iter().all(|e| e.zxid == a.revision));
                    for p in owned {
                        prop_assert!(kv.tree().get(&p).is_none());
                    }
                }
                Step::Reap => {
                    let candidates = kv.tree().reap_candidates(kv.now, 16);
                    let count = kv.tree().len();
                    let mut paths: Vec<&str> = candidates.iter().map(String::as_str).collect();
                    // Plain nodes listed too are never reaped.
                    paths.extend(PATHS.iter().copied().filter(|p| {
                        kv.tree().get(p).is_some_and(|n| n.kind == 0)
                    }));
                    let a = kv.write(w(vec![reap(&paths)]));
                    prop_assert_eq!(errs(&a), vec![code::OK]);
                    for p in &candidates {
                        prop_assert!(kv.tree().get(p).is_none());
                    }
                    prop_assert_eq!(kv.tree().len(), count - candidates.len());
                    prop_assert_eq!(a.zk_events.len(), 2 * candidates.len());
                }
                Step::Tick(ms) => kv.now += *ms as i64,
                Step::Put(k) => {
                    let rev = kv.store.revision();
                    prop_assert_eq!(kv.put(&format!("k{}", k % 4), 0).revision, rev + 1);
                }
                Step::Reload => {
                    let loaded = kv.load().expect("the rows load");
                    loaded.check_invariants();
                    prop_assert_eq!(&loaded, &kv.store);
                    kv.store = loaded;
                }
                Step::Restore => {
                    let restored = KvStore::restore(kv.store.snapshot()).expect("restores");
                    prop_assert_eq!(&restored, &kv.store);
                    kv.store.replace(restored);
                    kv.flush();
                }
            }
        }
        let loaded = kv.load().expect("the rows load");
        prop_assert_eq!(&loaded, &kv.store);
        let restored = KvStore::restore(kv.store.snapshot()).expect("restores");
        prop_assert_eq!(&restored, &kv.store);
        // Every set named by the ephemerals index is owned by an open session.
        let sessions: BTreeSet<i64> = kv.tree().sessions().map(|s| s.id).collect();
        for (owner, paths) in kv.tree().all_ephemerals() {
            prop_assert!(sessions.contains(&owner));
            prop_assert!(!paths.is_empty());
        }
    }
}
