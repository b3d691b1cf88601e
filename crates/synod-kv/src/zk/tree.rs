//! The znodes, their sessions, and the ops that change them.
//!
//! Invariants (checked by [`ZkTree::check_invariants`]):
//! - **Z1** every znode but `/` has its parent in the tree, and a parent's
//!   child set names exactly the znodes whose parent it is;
//! - **Z2** a znode owned by a session (`ephemeralOwner > 0`) has no
//!   children, and its session exists; the ephemerals index lists exactly
//!   the znodes each session owns;
//! - **Z3** a write that fails changes nothing: every znode it touched is
//!   put back as it was, and it takes no revision.

use super::{acl, code, mode, path, CONTAINER_OWNER, TTL_MAX_MS, TTL_OWNER_BITS};
use std::collections::{BTreeMap, BTreeSet};
use synod_proto::synodpb::zk_op::Op as ZkOpKind;
use synod_proto::synodpb::{ZNode, ZkCreate, ZkId, ZkOutcome, ZkResult, ZkSession, ZkWrite};

/// The largest znode data the tree accepts (ZooKeeper's default
/// `jute.maxbuffer`): the front end refuses larger requests first.
pub const ZNODE_DATA_MAX: usize = 1024 * 1024;

/// Znodes every tree has and no client may change: ZooKeeper's own
/// subtree, which tools list and read.
pub const ZK_FIXED_PATHS: [&str; 3] = ["/zookeeper", "/zookeeper/config", "/zookeeper/quota"];

const KIND_PLAIN: i32 = 0;
const KIND_CONTAINER: i32 = 1;
const KIND_TTL: i32 = 2;

/// What a watcher of a path learns: ZooKeeper's event types.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum ZkEventKind {
    /// The node was created.
    Created,
    /// The node was deleted.
    Deleted,
    /// The node's data was set.
    DataChanged,
    /// A child was created or deleted.
    ChildrenChanged,
}

/// One change to the tree, in apply order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ZkEvent {
    /// What happened.
    pub kind: ZkEventKind,
    /// To which node.
    pub path: String,
    /// The revision (zxid) of the write.
    pub zxid: i64,
}

#[derive(Clone, Debug, PartialEq)]
struct Node {
    record: ZNode,
    children: BTreeSet<String>,
}

/// The tree of znodes and the ZooKeeper sessions.
#[derive(Clone, Debug)]
pub struct ZkTree {
    nodes: BTreeMap<String, Node>,
    sessions: BTreeMap<i64, ZkSession>,
    /// Session → the znodes it owns.
    ephemerals: BTreeMap<i64, BTreeSet<String>>,
    dirty_nodes: BTreeSet<String>,
    dirty_sessions: BTreeSet<i64>,
}

/// Equal trees and sessions; the journal (what is not yet written) does
/// not count.
impl PartialEq for ZkTree {
    fn eq(&self, other: &ZkTree) -> bool {
        self.nodes == other.nodes
            && self.sessions == other.sessions
            && self.ephemerals == other.ephemerals
    }
}

impl Default for ZkTree {
    fn default() -> ZkTree {
        let mut tree = ZkTree {
            nodes: BTreeMap::new(),
            sessions: BTreeMap::new(),
            ephemerals: BTreeMap::new(),
            dirty_nodes: BTreeSet::new(),
            dirty_sessions: BTreeSet::new(),
        };
        tree.nodes.insert("/".into(), Node::fresh("/"));
        for fixed in ZK_FIXED_PATHS {
            tree.nodes.insert(fixed.into(), Node::fresh(fixed));
            let parent = path::parent(fixed).to_string();
            let parent = tree.nodes.get_mut(&parent).expect("fixed parents first");
            parent.children.insert(path::name(fixed).into());
        }
        tree
    }
}

impl Node {
    fn fresh(p: &str) -> Node {
        Node {
            record: ZNode {
                path: p.into(),
                acl: acl::open(),
                ..ZNode::default()
            },
            children: BTreeSet::new(),
        }
    }
}

/// A write in progress: every step it took, so a failure takes them
/// back in reverse (Z3). Steps name records and child names, never whole
/// child sets: a parent with a million children costs no more to change
/// than a leaf.
#[derive(Default)]
struct Undo {
    steps: Vec<Step>,
}

enum Step {
    /// The record at a path before it was replaced, created or removed.
    Record(String, Option<ZNode>),
    /// A child name added to a parent.
    ChildAdded(String, String),
    /// A child name removed from a parent.
    ChildRemoved(String, String),
}

type OpResult = Result<ZkResult, i32>;

/// One op's context: the revision it writes at and who asks.
struct Ctx<'a> {
    zxid: i64,
    time_ms: i64,
    session: i64,
    auth: &'a [ZkId],
    session_alive: &'a dyn Fn(i64) -> bool,
}

fn version_ok(expected: i32, actual: i32) -> bool {
    expected == -1 || expected == actual
}

fn fixed(p: &str) -> bool {
    path::is_within(p, "/zookeeper")
}

impl ZkTree {
    /// The node at `path`, without its children.
    pub fn get(&self, path: &str) -> Option<&ZNode> {
        self.nodes.get(path).map(|n| &n.record)
    }

    /// The names of `path`'s children, in order.
    pub fn children(&self, path: &str) -> Option<&BTreeSet<String>> {
        self.nodes.get(path).map(|n| &n.children)
    }

    /// How many nodes lie below `path` (ZooKeeper's getAllChildrenNumber).
    pub fn descendants(&self, p: &str) -> usize {
        if p == "/" {
            return self.nodes.len() - 1;
        }
        let from = format!("{p}/");
        self.nodes
            .range(from.clone()..)
            .take_while(|(k, _)| k.starts_with(&from))
            .count()
    }

    /// Number of znodes (ZooKeeper's `zk_znode_count`).
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Always false: the root exists.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// A session's record, if it is open.
    pub fn session(&self, id: i64) -> Option<&ZkSession> {
        self.sessions.get(&id)
    }

    /// Open sessions.
    pub fn sessions(&self) -> impl Iterator<Item = &ZkSession> {
        self.sessions.values()
    }

    /// How many sessions are open (the cluster's, not one node's).
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// The znodes `session` owns, in path order.
    pub fn ephemerals(&self, session: i64) -> impl Iterator<Item = &String> {
        self.ephemerals.get(&session).into_iter().flatten()
    }

    /// Every session's ephemerals (ZooKeeper's `dump`).
    pub fn all_ephemerals(&self) -> impl Iterator<Item = (i64, &BTreeSet<String>)> {
        self.ephemerals.iter().map(|(s, p)| (*s, p))
    }

    /// Nodes the leader should reap at `now_ms`: empty containers that
    /// once had children, and childless TTL nodes unmodified past their
    /// TTL. The reap re-checks each when it applies.
    pub fn reap_candidates(&self, now_ms: i64, max: usize) -> Vec<String> {
        self.nodes
            .iter()
            .filter(|(_, n)| reapable(n, now_ms))
            .map(|(p, _)| p.clone())
            .take(max)
            .collect()
    }

    pub(crate) fn open_session(&mut self, s: ZkSession) {
        self.dirty_sessions.insert(s.id);
        self.sessions.insert(s.id, s);
    }

    /// Forgets a session and deletes its ephemerals at `zxid`; the events
    /// are empty when it owned none (and then `zxid` is not taken).
    pub(crate) fn end_session(&mut self, id: i64, zxid: i64) -> Vec<ZkEvent> {
        if self.sessions.remove(&id).is_some() {
            self.dirty_sessions.insert(id);
        }
        let owned: Vec<String> = self.ephemerals(id).cloned().collect();
        let mut events = Vec::new();
        let mut undo = Undo::default();
        for p in owned {
            self.remove(&p, zxid, &mut undo, &mut events);
        }
        events
    }

    /// Applies a write (not a session op) at revision `zxid`. Returns the
    /// outcome, the events and whether it changed anything (and so took
    /// `zxid`).
    pub(crate) fn write(
        &mut self,
        w: &ZkWrite,
        zxid: i64,
        session_alive: &dyn Fn(i64) -> bool,
    ) -> (ZkOutcome, Vec<ZkEvent>, bool) {
        let ctx = Ctx {
            zxid,
            time_ms: w.time_ms,
            session: w.session,
            auth: &w.auth,
            session_alive,
        };
        let mut undo = Undo::default();
        let mut events = Vec::new();
        let mut results = Vec::with_capacity(w.ops.len());
        let mut failed = None;
        for (i, op) in w.ops.iter().enumerate() {
            let result = match &op.op {
                Some(ZkOpKind::Create(c)) => self.create(c, &ctx, &mut undo, &mut events),
                Some(ZkOpKind::Delete(d)) => {
                    self.delete(&d.path, d.version, &ctx, &mut undo, &mut events)
                }
                Some(ZkOpKind::SetData(s)) => {
                    self.set_data(&s.path, &s.data, s.version, &ctx, &mut undo, &mut events)
                }
                Some(ZkOpKind::Check(c)) => self.check(&c.path, c.version, &ctx),
                Some(ZkOpKind::SetAcl(s)) if !w.multi => {
                    self.set_acl(&s.path, &s.acl, s.version, &ctx, &mut undo)
                }
                Some(ZkOpKind::Reap(r)) if !w.multi => {
                    for p in &r.paths {
                        if self.nodes.get(p).is_some_and(|n| reapable(n, w.time_ms)) {
                            self.remove(p, zxid, &mut undo, &mut events);
                        }
                    }
                    Ok(ZkResult::default())
                }
                _ => Err(code::BAD_ARGUMENTS),
            };
            match result {
                Ok(r) => results.push(r),
                Err(err) => {
                    failed = Some((i, err));
                    break;
                }
            }
        }
        if let Some((at, err)) = failed {
            for step in undo.steps.into_iter().rev() {
                match step {
                    Step::Record(p, before) => {
                        self.replace_record(&p, before);
                    }
                    Step::ChildAdded(parent, name) => {
                        self.children_mut(&parent).remove(&name);
                    }
                    Step::ChildRemoved(parent, name) => {
                        self.children_mut(&parent).insert(name);
                    }
                }
            }
            let results = (0..w.ops.len())
                .map(|i| ZkResult {
                    err: match i.cmp(&at) {
                        std::cmp::Ordering::Less => code::OK,
                        std::cmp::Ordering::Equal => err,
                        std::cmp::Ordering::Greater => code::RUNTIME_INCONSISTENCY,
                    },
                    ..ZkResult::default()
                })
                .collect();
            return (ZkOutcome { results }, Vec::new(), false);
        }
        let wrote = !undo.steps.is_empty();
        (ZkOutcome { results }, events, wrote)
    }

    fn result(&self, p: &str) -> ZkResult {
        let n = &self.nodes[p];
        ZkResult {
            err: code::OK,
            path: p.to_string(),
            stat: Some(ZNode {
                data: Default::default(),
                acl: Vec::new(),
                ..n.record.clone()
            }),
            data_length: n.record.data.len() as i32,
            num_children: n.children.len() as i32,
        }
    }

    fn create(
        &mut self,
        c: &ZkCreate,
        ctx: &Ctx,
        undo: &mut Undo,
        events: &mut Vec<ZkEvent>,
    ) -> OpResult {
        let sequential = matches!(
            c.mode,
            mode::PERSISTENT_SEQUENTIAL
                | mode::EPHEMERAL_SEQUENTIAL
                | mode::PERSISTENT_SEQUENTIAL_WITH_TTL
        );
        let ttl = matches!(
            c.mode,
            mode::PERSISTENT_WITH_TTL | mode::PERSISTENT_SEQUENTIAL_WITH_TTL
        );
        if !(mode::PERSISTENT..=mode::PERSISTENT_SEQUENTIAL_WITH_TTL).contains(&c.mode)
            || (ttl && !(1..=TTL_MAX_MS).contains(&c.ttl_ms))
            || c.data.len() > ZNODE_DATA_MAX
        {
            return Err(code::BAD_ARGUMENTS);
        }
        let probe = if sequential {
            format!("{}1", c.path)
        } else {
            c.path.clone()
        };
        if path::validate(&probe).is_err() {
            return Err(code::BAD_ARGUMENTS);
        }
        if c.path == "/" {
            return Err(code::NODE_EXISTS);
        }
        // ZooKeeper's order: the ACL is checked before any lookup.
        let node_acl = acl::fixup(&c.acl, ctx.auth).ok_or(code::INVALID_ACL)?;
        let parent_path = path::parent(&probe).to_string();
        let parent = self.nodes.get(&parent_path).ok_or(code::NO_NODE)?;
        if !acl::allowed(&parent.record.acl, acl::perms::CREATE, ctx.auth) {
            return Err(code::NO_AUTH);
        }
        let full = if sequential {
            format!("{}{:010}", c.path, parent.record.cversion)
        } else {
            c.path.clone()
        };
        if path::validate(&full).is_err() {
            return Err(code::BAD_ARGUMENTS);
        }
        if self.nodes.contains_key(&full) {
            return Err(code::NODE_EXISTS);
        }
        if fixed(&full) {
            return Err(code::BAD_ARGUMENTS);
        }
        if parent.record.ephemeral_owner > 0 {
            return Err(code::NO_CHILDREN_FOR_EPHEMERALS);
        }
        let (owner, kind) = match c.mode {
            mode::EPHEMERAL | mode::EPHEMERAL_SEQUENTIAL => {
                if ctx.session <= 0 || !(ctx.session_alive)(ctx.session) {
                    return Err(code::SESSION_EXPIRED);
                }
                (ctx.session, KIND_PLAIN)
            }
            mode::CONTAINER => (CONTAINER_OWNER, KIND_CONTAINER),
            _ if ttl => (TTL_OWNER_BITS | c.ttl_ms, KIND_TTL),
            _ => (0, KIND_PLAIN),
        };
        let record = ZNode {
            path: full.clone(),
            data: c.data.clone(),
            acl: node_acl,
            czxid: ctx.zxid,
            mzxid: ctx.zxid,
            pzxid: ctx.zxid,
            ctime: ctx.time_ms,
            mtime: ctx.time_ms,
            version: 0,
            cversion: 0,
            aversion: 0,
            ephemeral_owner: owner,
            kind,
            ttl_ms: if ttl { c.ttl_ms } else { 0 },
        };
        self.child_changed(&parent_path, ctx.zxid, undo);
        self.add_child(&parent_path, path::name(&full), undo);
        self.put_record(&full, Some(record), undo);
        events.push(event(ZkEventKind::Created, &full, ctx.zxid));
        events.push(event(ZkEventKind::ChildrenChanged, &parent_path, ctx.zxid));
        Ok(self.result(&full))
    }

    fn delete(
        &mut self,
        p: &str,
        version: i32,
        ctx: &Ctx,
        undo: &mut Undo,
        events: &mut Vec<ZkEvent>,
    ) -> OpResult {
        if path::validate(p).is_err() || p == "/" || fixed(p) {
            return Err(code::BAD_ARGUMENTS);
        }
        // ZooKeeper's order: the parent and its DELETE permission first.
        let parent = self.nodes.get(path::parent(p)).ok_or(code::NO_NODE)?;
        if !acl::allowed(&parent.record.acl, acl::perms::DELETE, ctx.auth) {
            return Err(code::NO_AUTH);
        }
        let node = self.nodes.get(p).ok_or(code::NO_NODE)?;
        if !version_ok(version, node.record.version) {
            return Err(code::BAD_VERSION);
        }
        if !node.children.is_empty() {
            return Err(code::NOT_EMPTY);
        }
        self.remove(p, ctx.zxid, undo, events);
        Ok(ZkResult::default())
    }

    /// Deletes a childless node and updates its parent.
    fn remove(&mut self, p: &str, zxid: i64, undo: &mut Undo, events: &mut Vec<ZkEvent>) {
        let parent_path = path::parent(p).to_string();
        // ZooKeeper counts creates in cversion, not deletes (sequential
        // names must not skip); a delete moves pzxid only.
        let mut parent = self.nodes[&parent_path].record.clone();
        parent.pzxid = zxid;
        self.put_record(&parent_path, Some(parent), undo);
        if self.children_mut(&parent_path).remove(path::name(p)) {
            undo.steps.push(Step::ChildRemoved(
                parent_path.clone(),
                path::name(p).to_string(),
            ));
        }
        self.put_record(p, None, undo);
        events.push(event(ZkEventKind::Deleted, p, zxid));
        events.push(event(ZkEventKind::ChildrenChanged, &parent_path, zxid));
    }

    fn set_data(
        &mut self,
        p: &str,
        data: &bytes::Bytes,
        version: i32,
        ctx: &Ctx,
        undo: &mut Undo,
        events: &mut Vec<ZkEvent>,
    ) -> OpResult {
        if path::validate(p).is_err() || fixed(p) || data.len() > ZNODE_DATA_MAX {
            return Err(code::BAD_ARGUMENTS);
        }
        let node = self.nodes.get(p).ok_or(code::NO_NODE)?;
        if !acl::allowed(&node.record.acl, acl::perms::WRITE, ctx.auth) {
            return Err(code::NO_AUTH);
        }
        if !version_ok(version, node.record.version) {
            return Err(code::BAD_VERSION);
        }
        let mut record = node.record.clone();
        record.data = data.clone();
        record.version = record.version.wrapping_add(1);
        record.mzxid = ctx.zxid;
        record.mtime = ctx.time_ms;
        self.put_record(p, Some(record), undo);
        events.push(event(ZkEventKind::DataChanged, p, ctx.zxid));
        Ok(self.result(p))
    }

    fn set_acl(
        &mut self,
        p: &str,
        new: &[synod_proto::synodpb::ZkAcl],
        version: i32,
        ctx: &Ctx,
        undo: &mut Undo,
    ) -> OpResult {
        if path::validate(p).is_err() || fixed(p) {
            return Err(code::BAD_ARGUMENTS);
        }
        let fixed_acl = acl::fixup(new, ctx.auth).ok_or(code::INVALID_ACL)?;
        let node = self.nodes.get(p).ok_or(code::NO_NODE)?;
        if !acl::allowed(&node.record.acl, acl::perms::ADMIN, ctx.auth) {
            return Err(code::NO_AUTH);
        }
        if !version_ok(version, node.record.aversion) {
            return Err(code::BAD_VERSION);
        }
        let mut record = node.record.clone();
        record.acl = fixed_acl;
        record.aversion = record.aversion.wrapping_add(1);
        self.put_record(p, Some(record), undo);
        Ok(self.result(p))
    }

    fn check(&self, p: &str, version: i32, ctx: &Ctx) -> OpResult {
        if path::validate(p).is_err() {
            return Err(code::BAD_ARGUMENTS);
        }
        let node = self.nodes.get(p).ok_or(code::NO_NODE)?;
        if !acl::allowed(&node.record.acl, acl::perms::READ, ctx.auth) {
            return Err(code::NO_AUTH);
        }
        if !version_ok(version, node.record.version) {
            return Err(code::BAD_VERSION);
        }
        Ok(ZkResult::default())
    }

    /// A child of `parent` was created or deleted at `zxid`.
    fn child_changed(&mut self, parent: &str, zxid: i64, undo: &mut Undo) {
        let mut record = self.nodes[parent].record.clone();
        record.cversion = record.cversion.wrapping_add(1);
        record.pzxid = zxid;
        self.put_record(parent, Some(record), undo);
    }

    fn add_child(&mut self, parent: &str, name: &str, undo: &mut Undo) {
        if self.children_mut(parent).insert(name.to_string()) {
            undo.steps
                .push(Step::ChildAdded(parent.to_string(), name.to_string()));
        }
    }

    fn children_mut(&mut self, parent: &str) -> &mut BTreeSet<String> {
        &mut self
            .nodes
            .get_mut(parent)
            .expect("Z1: the parent exists")
            .children
    }

    /// Replaces, creates or removes the record at `p`, remembering the
    /// old one for undo.
    fn put_record(&mut self, p: &str, record: Option<ZNode>, undo: &mut Undo) {
        let before = self.replace_record(p, record);
        undo.steps.push(Step::Record(p.to_string(), before));
    }

    /// Replaces, creates (childless) or removes (it must be childless) the
    /// record at `p`; returns the old one. Keeps the ephemerals index and
    /// the journal in step.
    fn replace_record(&mut self, p: &str, record: Option<ZNode>) -> Option<ZNode> {
        let before = match (record, self.nodes.get_mut(p)) {
            (Some(r), Some(n)) => Some(std::mem::replace(&mut n.record, r)),
            (Some(r), None) => {
                let node = Node {
                    record: r,
                    children: BTreeSet::new(),
                };
                self.nodes.insert(p.to_string(), node);
                None
            }
            (None, Some(_)) => {
                let n = self.nodes.remove(p).expect("just seen");
                assert!(n.children.is_empty(), "Z1: {p} removed with children");
                Some(n.record)
            }
            (None, None) => None,
        };
        self.dirty_nodes.insert(p.to_string());
        let old_owner = before.as_ref().map_or(0, |r| r.ephemeral_owner);
        let new_owner = self.nodes.get(p).map_or(0, |n| n.record.ephemeral_owner);
        if old_owner != new_owner {
            if old_owner > 0 {
                if let Some(set) = self.ephemerals.get_mut(&old_owner) {
                    set.remove(p);
                    if set.is_empty() {
                        self.ephemerals.remove(&old_owner);
                    }
                }
            }
            if new_owner > 0 {
                self.ephemerals
                    .entry(new_owner)
                    .or_default()
                    .insert(p.to_string());
            }
        }
        before
    }

    /// Every node and session as stored: for snapshots.
    pub(crate) fn records(&self) -> (Vec<ZNode>, Vec<ZkSession>) {
        let nodes = self
            .nodes
            .iter()
            .filter(|(p, _)| !fixed(p))
            .map(|(_, n)| n.record.clone())
            .collect();
        (nodes, self.sessions.values().cloned().collect())
    }

    /// Rebuilds a tree from stored records, refusing broken ones (rows
    /// and snapshots come from a disk or a peer).
    pub(crate) fn from_records(
        nodes: Vec<ZNode>,
        sessions: Vec<ZkSession>,
    ) -> Result<ZkTree, String> {
        let mut tree = ZkTree::default();
        for s in sessions {
            if s.id <= 0 || tree.sessions.insert(s.id, s).is_some() {
                return Err("a ZooKeeper session is invalid or repeated".into());
            }
        }
        let mut seen = BTreeSet::new();
        for r in nodes {
            if path::validate(&r.path).is_err() || fixed(&r.path) || !seen.insert(r.path.clone()) {
                return Err(format!("znode {:?} is invalid or repeated", r.path));
            }
            let p = r.path.clone();
            tree.replace_record(&p, Some(r));
        }
        let paths: Vec<String> = tree.nodes.keys().filter(|p| *p != "/").cloned().collect();
        for p in paths {
            let parent = path::parent(&p).to_string();
            let Some(parent) = tree.nodes.get_mut(&parent) else {
                return Err(format!("znode {p:?} has no parent"));
            };
            if parent.record.ephemeral_owner > 0 {
                return Err(format!("znode {p:?} is the child of an ephemeral"));
            }
            parent.children.insert(path::name(&p).to_string());
        }
        if let Some(owner) = tree
            .ephemerals
            .keys()
            .find(|o| !tree.sessions.contains_key(o))
        {
            return Err(format!("ephemerals name missing session {owner:x}"));
        }
        tree.dirty_nodes.clear();
        tree.dirty_sessions.clear();
        Ok(tree)
    }

    /// Marks everything for rewriting (a store restored whole).
    pub(crate) fn dirty_all(&mut self) {
        self.dirty_nodes
            .extend(self.nodes.keys().filter(|p| !fixed(p)).cloned());
        self.dirty_sessions.extend(self.sessions.keys().copied());
    }

    /// Takes the nodes and sessions changed since the last call: `(path,
    /// record or None)` and `(id, record or None)`.
    #[allow(clippy::type_complexity)]
    pub(crate) fn take_dirty(
        &mut self,
    ) -> (
        Vec<(String, Option<&ZNode>)>,
        Vec<(i64, Option<&ZkSession>)>,
    ) {
        let nodes = std::mem::take(&mut self.dirty_nodes);
        let sessions = std::mem::take(&mut self.dirty_sessions);
        (
            nodes
                .into_iter()
                .map(|p| {
                    let r = self.nodes.get(&p).map(|n| &n.record);
                    (p, r)
                })
                .collect(),
            sessions
                .into_iter()
                .map(|id| (id, self.sessions.get(&id)))
                .collect(),
        )
    }

    /// Checks Z1 and Z2; panics naming the broken one.
    pub fn check_invariants(&self) {
        for (p, n) in &self.nodes {
            assert_eq!(&n.record.path, p, "Z1: record names another path");
            if p != "/" {
                let parent = self.nodes.get(path::parent(p)).expect("Z1: parent exists");
                assert!(
                    parent.children.contains(path::name(p)),
                    "Z1: {p} not listed"
                );
            }
            for c in &n.children {
                assert!(
                    self.nodes.contains_key(&path::join(p, c)),
                    "Z1: {p}/{c} missing"
                );
            }
            let owner = n.record.ephemeral_owner;
            if owner > 0 {
                assert!(n.children.is_empty(), "Z2: ephemeral {p} has children");
                assert!(self.sessions.contains_key(&owner), "Z2: {p} owner gone");
                assert!(self.ephemerals[&owner].contains(p), "Z2: {p} not indexed");
            }
        }
        for (owner, paths) in &self.ephemerals {
            for p in paths {
                assert_eq!(self.nodes[p].record.ephemeral_owner, *owner, "Z2: index");
            }
        }
    }
}

fn reapable(n: &Node, now_ms: i64) -> bool {
    if !n.children.is_empty() {
        return false;
    }
    match n.record.kind {
        KIND_CONTAINER => n.record.cversion > 0,
        KIND_TTL => now_ms.saturating_sub(n.record.mtime) > n.record.ttl_ms,
        _ => false,
    }
}

fn event(kind: ZkEventKind, p: &str, zxid: i64) -> ZkEvent {
    ZkEvent {
        kind,
        path: p.to_string(),
        zxid,
    }
}
