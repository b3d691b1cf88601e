//! ZooKeeper's watches on one node: who waits for which change, and the
//! listener the core thread calls with each round's tree changes.
//!
//! Ordering (ZooKeeper's guarantee that a client sees a watch event
//! before any reply showing the change): the core calls
//! [`Watches::deliver`] with a round's changes before it answers any
//! request of that round, and ZooKeeper reads run after it (see
//! `Node::zk_query`). `deliver` queues each notification on its
//! connection's channel at once, and a connection drains that channel
//! before it writes any reply, so the event always goes out first.
//! Registrations happen in the same core-thread closure as the read they
//! go with, so no change falls between the read and the watch.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use synod_kv::zk::{path, ZkEvent, ZkEventKind};
use tokio::sync::mpsc::UnboundedSender;
use tokio::sync::Notify;

/// A connection, as the registry knows it.
pub type ConnId = u64;

/// One event for one client: ZooKeeper's `WatcherEvent` fields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notification {
    /// ZooKeeper's event type number.
    pub kind: i32,
    /// The node.
    pub path: String,
    /// The zxid of the change.
    pub zxid: i64,
}

impl Notification {
    /// About what the event costs while it waits: its frame on the wire
    /// (header, type, state, path) plus the queue's own bookkeeping.
    pub fn cost(&self) -> usize {
        self.path.len() + 64
    }
}

/// The events a connection has been handed but not yet written to its
/// client, counted in bytes. A client that stops reading (its socket
/// buffer full) would otherwise make the node queue every later event for
/// it without bound; past the limit the connection is cut off instead. The
/// session survives: the client reconnects, sends setWatches with the
/// last zxid it saw, and every change since fires again, so no event is
/// lost to the client, only the connection.
#[derive(Debug)]
pub struct Backlog {
    queued: AtomicUsize,
    limit: usize,
    over: AtomicBool,
    cut: Notify,
}

impl Backlog {
    /// A backlog that may hold `limit` bytes of events.
    pub fn new(limit: usize) -> Arc<Backlog> {
        Arc::new(Backlog {
            queued: AtomicUsize::new(0),
            limit,
            over: AtomicBool::new(false),
            cut: Notify::new(),
        })
    }

    /// Counts `bytes` more; false (and the connection is cut off) when
    /// that passes the limit.
    fn add(&self, bytes: usize) -> bool {
        let queued = self.queued.fetch_add(bytes, Ordering::Relaxed) + bytes;
        if queued > self.limit {
            self.over.store(true, Ordering::Relaxed);
            // A stored permit: the connection sees it even if it is not
            // waiting right now.
            self.cut.notify_one();
            return false;
        }
        true
    }

    /// The connection took `bytes` of events off its queue (they are in
    /// its write buffer now; a blocked write is what [`cut`](Backlog::cut)
    /// interrupts).
    pub fn taken(&self, bytes: usize) {
        let _ = self
            .queued
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |q| {
                Some(q.saturating_sub(bytes))
            });
    }

    /// True once the limit was passed.
    pub fn is_over(&self) -> bool {
        self.over.load(Ordering::Relaxed)
    }

    /// The bytes of events waiting now.
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }

    /// Resolves once the limit is passed.
    pub async fn cut(&self) {
        while !self.is_over() {
            self.cut.notified().await;
        }
    }
}

/// Where one connection's events go: its queue and the queue's count.
pub struct Sink {
    tx: UnboundedSender<Notification>,
    backlog: Arc<Backlog>,
}

impl Sink {
    /// Events to `tx`, counted against `backlog`.
    pub fn new(tx: UnboundedSender<Notification>, backlog: Arc<Backlog>) -> Sink {
        Sink { tx, backlog }
    }

    /// Queues `n`; false when the connection is over its limit (or gone)
    /// and should get nothing more.
    fn send(&self, n: Notification) -> bool {
        self.backlog.add(n.cost()) && self.tx.send(n).is_ok()
    }
}

/// ZooKeeper's event type numbers.
pub mod event {
    /// NodeCreated.
    pub const CREATED: i32 = 1;
    /// NodeDeleted.
    pub const DELETED: i32 = 2;
    /// NodeDataChanged.
    pub const DATA_CHANGED: i32 = 3;
    /// NodeChildrenChanged.
    pub const CHILDREN_CHANGED: i32 = 4;
}

/// The kinds of watch a client can hold on a path.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// One-shot, set by getData or exists on an existing node.
    Data,
    /// One-shot, set by exists on a missing node.
    Exist,
    /// One-shot, set by getChildren.
    Child,
    /// Stays; fires for the node's data, creation, deletion and children.
    Persistent,
    /// Stays; fires for the node and everything below, except child
    /// lists.
    Recursive,
}

#[derive(Default)]
struct Inner {
    by_path: BTreeMap<(Kind, String), BTreeSet<ConnId>>,
    by_conn: BTreeMap<ConnId, BTreeSet<(Kind, String)>>,
    sinks: BTreeMap<ConnId, Sink>,
    /// Paths with a recursive watch (to walk ancestors cheaply).
    recursive: BTreeMap<String, usize>,
}

/// Every watch of one node's ZooKeeper connections.
#[derive(Default)]
pub struct Watches {
    inner: Mutex<Inner>,
}

impl Watches {
    /// A connection's events go to `sink` from now on.
    pub fn connect(&self, conn: ConnId, sink: Sink) {
        self.lock().sinks.insert(conn, sink);
    }

    /// Drops a connection and its watches.
    pub fn disconnect(&self, conn: ConnId) {
        let mut inner = self.lock();
        inner.sinks.remove(&conn);
        for (kind, p) in inner.by_conn.remove(&conn).unwrap_or_default() {
            inner.unlink(conn, kind, &p);
        }
    }

    /// Adds a watch (idempotent).
    pub fn add(&self, conn: ConnId, kind: Kind, p: &str) {
        let mut inner = self.lock();
        if !inner.sinks.contains_key(&conn) {
            return;
        }
        if inner
            .by_path
            .entry((kind, p.to_string()))
            .or_default()
            .insert(conn)
        {
            inner
                .by_conn
                .entry(conn)
                .or_default()
                .insert((kind, p.to_string()));
            if kind == Kind::Recursive {
                *inner.recursive.entry(p.to_string()).or_default() += 1;
            }
        }
    }

    /// Removes a connection's watches of the given kinds on `p`; false
    /// when it had none (ZooKeeper's NOWATCHER).
    pub fn remove(&self, conn: ConnId, kinds: &[Kind], p: &str, dry_run: bool) -> bool {
        let mut inner = self.lock();
        let held: Vec<Kind> = kinds
            .iter()
            .copied()
            .filter(|k| {
                inner
                    .by_conn
                    .get(&conn)
                    .is_some_and(|s| s.contains(&(*k, p.to_string())))
            })
            .collect();
        if !dry_run {
            for k in &held {
                inner.unlink(conn, *k, p);
                if let Some(set) = inner.by_conn.get_mut(&conn) {
                    set.remove(&(*k, p.to_string()));
                }
            }
        }
        !held.is_empty()
    }

    /// The watches of every connection, for `wchs`/`wchc`: (paths, watches).
    pub fn summary(&self) -> (usize, usize, usize) {
        let inner = self.lock();
        let paths: BTreeSet<&String> = inner.by_path.keys().map(|(_, p)| p).collect();
        let watches = inner.by_path.values().map(|s| s.len()).sum();
        (inner.by_conn.len(), paths.len(), watches)
    }

    /// Forgets every watch and drops every connection's channel: the
    /// state jumped (a snapshot was installed), so the connections close
    /// and their clients reconnect and re-register with setWatches, which
    /// fires whatever changed meanwhile.
    pub fn reset(&self) {
        *self.lock() = Inner::default();
    }

    /// Queues one notification for one connection (a re-registered watch
    /// whose change happened while the client was away).
    pub fn notify(&self, conn: ConnId, n: Notification) {
        let mut inner = self.lock();
        if let Some(sink) = inner.sinks.get(&conn) {
            if !sink.send(n) {
                inner.sinks.remove(&conn);
            }
        }
    }

    /// Queues the notifications a round of changes fires (see the module
    /// comment for why this happens on the core thread).
    pub fn deliver(&self, events: &[ZkEvent]) {
        let mut inner = self.lock();
        for e in events {
            inner.fire(e);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Inner {
    fn unlink(&mut self, conn: ConnId, kind: Kind, p: &str) {
        let key = (kind, p.to_string());
        if let Some(set) = self.by_path.get_mut(&key) {
            if set.remove(&conn) && kind == Kind::Recursive {
                if let Some(n) = self.recursive.get_mut(p) {
                    *n -= 1;
                    if *n == 0 {
                        self.recursive.remove(p);
                    }
                }
            }
            if set.is_empty() {
                self.by_path.remove(&key);
            }
        }
    }

    /// Takes the one-shot watches of `kind` on `p`.
    fn take(&mut self, kind: Kind, p: &str) -> BTreeSet<ConnId> {
        let conns = self
            .by_path
            .remove(&(kind, p.to_string()))
            .unwrap_or_default();
        for c in &conns {
            if let Some(set) = self.by_conn.get_mut(c) {
                set.remove(&(kind, p.to_string()));
            }
        }
        conns
    }

    fn holders(&self, kind: Kind, p: &str) -> impl Iterator<Item = ConnId> + '_ {
        self.by_path
            .get(&(kind, p.to_string()))
            .into_iter()
            .flatten()
            .copied()
    }

    fn fire(&mut self, e: &ZkEvent) {
        let mut to: BTreeSet<ConnId> = BTreeSet::new();
        let kind = match e.kind {
            ZkEventKind::Created => {
                to.extend(self.take(Kind::Exist, &e.path));
                to.extend(self.take(Kind::Data, &e.path));
                event::CREATED
            }
            ZkEventKind::Deleted => {
                to.extend(self.take(Kind::Data, &e.path));
                to.extend(self.take(Kind::Exist, &e.path));
                to.extend(self.take(Kind::Child, &e.path));
                event::DELETED
            }
            ZkEventKind::DataChanged => {
                to.extend(self.take(Kind::Data, &e.path));
                to.extend(self.take(Kind::Exist, &e.path));
                event::DATA_CHANGED
            }
            ZkEventKind::ChildrenChanged => {
                to.extend(self.take(Kind::Child, &e.path));
                event::CHILDREN_CHANGED
            }
        };
        to.extend(self.holders(Kind::Persistent, &e.path));
        if e.kind != ZkEventKind::ChildrenChanged && !self.recursive.is_empty() {
            let mut at = e.path.as_str();
            loop {
                if self.recursive.contains_key(at) {
                    to.extend(self.holders(Kind::Recursive, at));
                }
                if at == "/" {
                    break;
                }
                at = path::parent(at);
            }
        }
        for conn in to {
            if let Some(sink) = self.sinks.get(&conn) {
                let sent = sink.send(Notification {
                    kind,
                    path: e.path.clone(),
                    zxid: e.zxid,
                });
                if !sent {
                    // Over its limit: nothing more is queued for it (its
                    // connection is being cut off).
                    self.sinks.remove(&conn);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::mpsc::unbounded_channel;

    fn ev(kind: ZkEventKind, p: &str) -> ZkEvent {
        ZkEvent {
            kind,
            path: p.into(),
            zxid: 7,
        }
    }

    #[test]
    fn one_shot_fire_once_persistent_stay() {
        let w = Watches::default();
        let (tx, mut rx) = unbounded_channel();
        w.connect(1, Sink::new(tx, Backlog::new(usize::MAX)));
        w.add(1, Kind::Data, "/a");
        w.add(1, Kind::Child, "/");
        w.add(1, Kind::Recursive, "/a");
        w.deliver(&[ev(ZkEventKind::DataChanged, "/a")]);
        w.deliver(&[ev(ZkEventKind::DataChanged, "/a")]);
        w.deliver(&[
            ev(ZkEventKind::Created, "/a/b"),
            ev(ZkEventKind::ChildrenChanged, "/a"),
            ev(ZkEventKind::ChildrenChanged, "/"),
        ]);
        let got: Vec<(i32, String)> = std::iter::from_fn(|| rx.try_recv().ok())
            .map(|n| (n.kind, n.path))
            .collect();
        assert_eq!(
            got,
            vec![
                (event::DATA_CHANGED, "/a".into()),
                (event::DATA_CHANGED, "/a".into()),
                (event::CREATED, "/a/b".into()),
                (event::CHILDREN_CHANGED, "/".into()),
            ]
        );
        assert!(w.remove(1, &[Kind::Recursive], "/a", false));
        assert!(!w.remove(1, &[Kind::Recursive], "/a", false));
        w.disconnect(1);
        assert_eq!(w.summary(), (0, 0, 0));
    }

    /// A connection that does not take its events off its queue is cut
    /// off at its limit: nothing more is queued for it, its connection is
    /// told, and other connections still get theirs.
    #[test]
    fn a_backlog_past_its_limit_cuts_the_connection_off() {
        let w = Watches::default();
        let (slow_tx, mut slow_rx) = unbounded_channel();
        let slow = Backlog::new(10 * 70);
        w.connect(1, Sink::new(slow_tx, slow.clone()));
        let (tx, mut rx) = unbounded_channel();
        let fine = Backlog::new(usize::MAX);
        w.connect(2, Sink::new(tx, fine.clone()));
        for c in [1, 2] {
            w.add(c, Kind::Recursive, "/");
        }
        for _ in 0..20 {
            w.deliver(&[ev(ZkEventKind::DataChanged, "/a")]);
        }
        assert!(slow.is_over());
        assert!(!fine.is_over());
        // Ten fit (66 bytes each), the eleventh passes the limit.
        let got = std::iter::from_fn(|| slow_rx.try_recv().ok()).count();
        assert_eq!(got, 10);
        assert!(slow_rx.try_recv().is_err(), "the queue is closed");
        assert_eq!(std::iter::from_fn(|| rx.try_recv().ok()).count(), 20);
        // The cut is seen by a connection that starts waiting later.
        futures::executor::block_on(slow.cut());
        // Taking events off the queue lowers the count.
        fine.taken(fine.queued());
        assert_eq!(fine.queued(), 0);
    }
}
