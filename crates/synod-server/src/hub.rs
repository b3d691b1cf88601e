//! The watch hub: one per node, fed by the core loop with every applied
//! event in revision order, fanning each event out to the watchers whose
//! range holds its key.
//!
//! ```text
//!   core loop ── Events{revision, events} ──► hub ──► stream sinks (one per gRPC stream)
//!      ▲                                       │
//!      └── Input::Watch (history from the store) ◄─ resync of slow or jumped watchers
//! ```
//!
//! Cost: an event costs one hash lookup for single-key watchers plus one
//! range test per range watcher, then one response per watcher it matched;
//! idle watchers cost nothing.
//!
//! A watcher never misses an event and never sees one twice:
//! - it starts from history computed by the core at revision `R` and is
//!   registered through the same FIFO channel as the core's events, so the
//!   hub delivers exactly the live events above `R`;
//! - a stream whose client reads too slowly is parked instead of growing
//!   without bound: its watchers are re-registered from the first revision
//!   they did not get, and the store's history fills the gap (etcd's
//!   "unsynced" watchers);
//! - when the store jumps (a snapshot installed from the leader), every
//!   watcher is re-registered the same way.

use crate::core::Input;
use bytes::Bytes;
use prost::Message as _;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use synod_kv::KeyRange;
use synod_proto::etcdserverpb::{ResponseHeader, WatchResponse};
use synod_proto::mvccpb::{event::EventType, Event};
use synod_storage::GroupId;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

/// Names one client watch stream on this node.
pub type StreamId = u64;

/// Responses a stream may have queued before its watchers are parked.
const QUEUED_MAX: usize = 4096;
/// A parked stream resumes once its queue is below this.
const QUEUED_RESUME: usize = QUEUED_MAX / 4;
/// Largest watch response before `fragment` splits it (etcd's default
/// request size limit, 1.5 MiB).
const FRAGMENT_BYTES: usize = 3 << 19;
/// How often the hub looks at parked streams and progress timers.
const HUB_TICK: Duration = Duration::from_millis(50);

/// What a client asked to watch (etcd's `WatchCreateRequest`, decoded).
#[derive(Clone, Debug)]
pub struct WatchSpec {
    /// The id the client chose, or `None` for the hub to pick one.
    pub watch_id: Option<i64>,
    /// The keys watched.
    pub range: KeyRange,
    /// First revision to report; `<= 0` means "from now on".
    pub start_revision: i64,
    /// Send each event's previous version.
    pub prev_kv: bool,
    /// Leave out puts.
    pub no_put: bool,
    /// Leave out deletes.
    pub no_delete: bool,
    /// Send empty responses with the current revision when idle.
    pub progress_notify: bool,
    /// Split responses larger than 1.5 MiB.
    pub fragment: bool,
    /// The etcd user that opened it (while auth is on): when roles change,
    /// a watcher its user may no longer read is cancelled.
    pub user: Option<String>,
    /// The groups whose events it follows, in key order: the node sets
    /// them when it routes the watch (front ends leave them empty).
    pub groups: Vec<GroupId>,
}

/// Where a stream's responses go; counts what is queued so a slow reader
/// can be detected without blocking the hub.
#[derive(Clone)]
pub struct StreamSink {
    tx: UnboundedSender<WatchResponse>,
    queued: Arc<AtomicUsize>,
}

impl StreamSink {
    fn send(&self, r: WatchResponse) -> bool {
        self.queued.fetch_add(1, Ordering::Relaxed);
        self.tx.send(r).is_ok()
    }

    fn queued(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }
}

/// The receiving end of a watch stream: what the front end streams to its
/// client.
pub struct WatchReceiver {
    rx: UnboundedReceiver<WatchResponse>,
    queued: Arc<AtomicUsize>,
}

impl WatchReceiver {
    /// The next response, or `None` once the hub dropped the stream.
    pub async fn recv(&mut self) -> Option<WatchResponse> {
        let r = self.rx.recv().await;
        if r.is_some() {
            self.queued.fetch_sub(1, Ordering::Relaxed);
        }
        r
    }
}

impl tokio_stream::Stream for WatchReceiver {
    type Item = WatchResponse;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Self::Item>> {
        let r = self.rx.poll_recv(cx);
        if let Poll::Ready(Some(_)) = &r {
            self.queued.fetch_sub(1, Ordering::Relaxed);
        }
        r
    }
}

/// A new stream's two ends.
pub(crate) fn stream_channel() -> (StreamSink, WatchReceiver) {
    let (tx, rx) = unbounded_channel();
    let queued = Arc::new(AtomicUsize::new(0));
    (
        StreamSink {
            tx,
            queued: queued.clone(),
        },
        WatchReceiver { rx, queued },
    )
}

/// Work for the hub.
pub(crate) enum HubInput {
    /// A client opened a watch stream.
    Open { stream: StreamId, sink: StreamSink },
    /// The client's stream ended: drop its watchers.
    Close { stream: StreamId },
    /// Events applied by `group`, its store now at `revision`.
    Events {
        group: GroupId,
        revision: i64,
        events: Vec<Event>,
    },
    /// A watch create the node refused (answered created and cancelled,
    /// with the reason, as etcd answers a refused create).
    Refuse { stream: StreamId, reason: String },
    /// A watcher with its history, computed by the core.
    Register {
        stream: StreamId,
        spec: WatchSpec,
        /// Per group: live events above this revision are the watcher's.
        seen: BTreeMap<GroupId, i64>,
        /// Past events, or the compaction point that made them unavailable.
        history: Result<Vec<Event>, i64>,
        /// A client's create (answer `created`), not a resync.
        announce: bool,
    },
    /// The client cancelled a watcher.
    Cancel { stream: StreamId, watch_id: i64 },
    /// The client asked for the current revision.
    Progress { stream: StreamId },
    /// `group`'s store jumped to `revision` (snapshot install): resync
    /// everyone.
    Jump { group: GroupId, revision: i64 },
    /// Shard `parent` split: `child` holds part of its keys from
    /// `revision` on, and every watcher of the parent follows it too.
    Split {
        parent: GroupId,
        child: GroupId,
        revision: i64,
    },
    /// Users or roles changed: cancel the watchers their users may no
    /// longer read.
    Auth(std::sync::Arc<synod_kv::AuthStore>),
    /// Stop the hub thread.
    Shutdown,
}

enum State {
    /// Receives live events.
    Live,
    /// Re-registration from `after + 1` is on its way through the core.
    Resyncing,
}

struct Watcher {
    spec: WatchSpec,
    /// Every event at or below this revision has been delivered (or did
    /// not concern the watcher): a resync starts above it.
    after: i64,
    /// Per group: live events at or below this revision came with the
    /// history (or before it), so they are not the watcher's.
    seen: BTreeMap<GroupId, i64>,
    /// Events held until every group the watcher follows has passed their
    /// revision (design 0015): a watch over several shards receives them
    /// in revision order. A watcher of one group releases at once.
    pending: Vec<Event>,
    state: State,
    last_sent: Instant,
}

struct Stream {
    sink: StreamSink,
    watchers: BTreeMap<i64, Watcher>,
    next_id: i64,
    parked: bool,
}

/// How long a group's fence may be outstanding before the hub asks again.
const FENCE_AGAIN: Duration = Duration::from_millis(200);

/// The hub's state; runs on its own thread.
pub(crate) struct Hub {
    /// Each key-holding group's revision as its last events left it.
    revisions: BTreeMap<GroupId, i64>,
    streams: HashMap<StreamId, Stream>,
    exact: HashMap<Bytes, Vec<(StreamId, i64)>>,
    spans: Vec<(StreamId, i64)>,
    /// Watchers holding events for a group that has not passed them.
    held: std::collections::BTreeSet<(StreamId, i64)>,
    /// Groups asked to move on: when, and their revision then.
    fences: BTreeMap<GroupId, (Instant, i64)>,
    core: Sender<Input>,
    progress_every: Duration,
    metrics: std::sync::Arc<crate::metrics::Metrics>,
}

/// The revision a watcher has every event of: the lowest of its groups'
/// revisions (no event at or below it can still come from any of them).
fn floor(revisions: &BTreeMap<GroupId, i64>, groups: &[GroupId]) -> i64 {
    groups
        .iter()
        .map(|g| revisions.get(g).copied().unwrap_or(0))
        .min()
        .unwrap_or(0)
}

impl Hub {
    pub(crate) fn new(
        revisions: BTreeMap<GroupId, i64>,
        core: Sender<Input>,
        progress_every: Duration,
        metrics: std::sync::Arc<crate::metrics::Metrics>,
    ) -> Hub {
        Hub {
            revisions,
            streams: HashMap::new(),
            exact: HashMap::new(),
            spans: Vec::new(),
            held: std::collections::BTreeSet::new(),
            fences: BTreeMap::new(),
            core,
            progress_every,
            metrics,
        }
    }

    /// A stream's progress: what every one of its watchers has seen (the
    /// lowest floor; the newest revision when it has none).
    fn progress(&self, s: &Stream) -> i64 {
        s.watchers
            .values()
            .map(|w| floor(&self.revisions, &w.spec.groups))
            .min()
            .unwrap_or_else(|| self.revisions.values().copied().max().unwrap_or(0))
    }

    /// Streams, watchers and the slowest watcher's lag, for the metrics: a
    /// watcher is behind while its stream is parked (its client reads
    /// slower than events come), it is being resynced, or it holds events
    /// for a shard that has not passed them.
    fn observe(&self) {
        let mut watchers = 0;
        let mut lag = 0;
        for s in self.streams.values() {
            watchers += s.watchers.len();
            for w in s.watchers.values() {
                if s.parked || matches!(w.state, State::Resyncing) || !w.pending.is_empty() {
                    lag = lag.max(floor(&self.revisions, &w.spec.groups) - w.after);
                }
            }
        }
        self.metrics.watch_streams.set(self.streams.len() as i64);
        self.metrics.watchers.set(watchers as i64);
        self.metrics.watch_lag.set(lag.max(0));
    }

    /// Runs until `Shutdown` or until every sender is gone.
    pub(crate) fn run(mut self, inputs: Receiver<HubInput>) {
        let mut last_tick = Instant::now();
        loop {
            match inputs.recv_timeout(HUB_TICK) {
                Ok(HubInput::Shutdown) | Err(RecvTimeoutError::Disconnected) => return,
                Ok(input) => self.handle(input),
                Err(RecvTimeoutError::Timeout) => {}
            }
            if last_tick.elapsed() >= HUB_TICK {
                last_tick = Instant::now();
                self.tick();
            }
        }
    }

    fn handle(&mut self, input: HubInput) {
        match input {
            HubInput::Open { stream, sink } => {
                self.streams.insert(
                    stream,
                    Stream {
                        sink,
                        watchers: BTreeMap::new(),
                        next_id: 0,
                        parked: false,
                    },
                );
            }
            HubInput::Close { stream } => self.close(stream),
            HubInput::Events {
                group,
                revision,
                events,
            } => self.dispatch(group, revision, events),
            HubInput::Refuse { stream, reason } => {
                if let Some(s) = self.streams.get(&stream) {
                    s.sink.send(WatchResponse {
                        header: header(self.progress(s)),
                        watch_id: -1,
                        created: true,
                        canceled: true,
                        cancel_reason: reason,
                        ..WatchResponse::default()
                    });
                }
            }
            HubInput::Register {
                stream,
                spec,
                seen,
                history,
                announce,
            } => self.register(stream, spec, seen, history, announce),
            HubInput::Cancel { stream, watch_id } => self.cancel(stream, watch_id),
            HubInput::Progress { stream } => {
                if let Some(s) = self.streams.get(&stream) {
                    s.sink.send(WatchResponse {
                        header: header(self.progress(s)),
                        watch_id: -1,
                        ..WatchResponse::default()
                    });
                }
            }
            HubInput::Jump { group, revision } => {
                let streams: Vec<StreamId> = self.streams.keys().copied().collect();
                for s in streams {
                    self.resync_stream(s);
                }
                self.revisions.insert(group, revision);
            }
            HubInput::Split {
                parent,
                child,
                revision,
            } => self.split(parent, child, revision),
            HubInput::Auth(auth) => self.recheck(&auth),
            HubInput::Shutdown => {}
        }
    }

    /// A shard split: the new group's events above `revision` (the
    /// parent's revision at the split) go to the parent's watchers, and
    /// their floor waits for it too (design 0016).
    fn split(&mut self, parent: GroupId, child: GroupId, revision: i64) {
        self.revisions.insert(child, revision);
        for s in self.streams.values_mut() {
            for w in s.watchers.values_mut() {
                if w.spec.groups.contains(&parent) && !w.spec.groups.contains(&child) {
                    w.spec.groups.push(child);
                    w.seen.insert(child, revision);
                }
            }
        }
    }

    /// Cancels, with etcd's "permission denied", every watcher whose user
    /// may no longer read its range: a revoked permission ends the events
    /// at once, not at the client's next request.
    fn recheck(&mut self, auth: &synod_kv::AuthStore) {
        let mut denied = Vec::new();
        for (stream, s) in &self.streams {
            for (id, w) in &s.watchers {
                if let Some(user) = &w.spec.user {
                    if auth
                        .check_range(user, synod_kv::Access::Read, &w.spec.range)
                        .is_err()
                    {
                        denied.push((*stream, *id));
                    }
                }
            }
        }
        for (stream, watch_id) in denied {
            self.cancel_with(stream, watch_id, "etcdserver: permission denied");
        }
    }

    fn close(&mut self, stream: StreamId) {
        if let Some(s) = self.streams.remove(&stream) {
            for (id, w) in s.watchers {
                self.unindex(stream, id, &w.spec.range);
            }
        }
    }

    fn index(&mut self, stream: StreamId, id: i64, range: &KeyRange) {
        match range {
            KeyRange::Single(k) => self.exact.entry(k.clone()).or_default().push((stream, id)),
            KeyRange::Span { .. } => self.spans.push((stream, id)),
        }
    }

    fn unindex(&mut self, stream: StreamId, id: i64, range: &KeyRange) {
        self.held.remove(&(stream, id));
        match range {
            KeyRange::Single(k) => {
                if let Some(v) = self.exact.get_mut(k) {
                    v.retain(|x| *x != (stream, id));
                    if v.is_empty() {
                        self.exact.remove(k);
                    }
                }
            }
            KeyRange::Span { .. } => self.spans.retain(|x| *x != (stream, id)),
        }
    }

    /// A watcher from the core: its history (every group's, merged in
    /// revision order) and, per group, the revision live events start
    /// above.
    fn register(
        &mut self,
        stream: StreamId,
        spec: WatchSpec,
        seen: BTreeMap<GroupId, i64>,
        history: Result<Vec<Event>, i64>,
        announce: bool,
    ) {
        let now_floor = floor(&self.revisions, &spec.groups);
        let Some(s) = self.streams.get_mut(&stream) else {
            return;
        };
        let id = if announce {
            let id = match spec.watch_id {
                Some(id) => id,
                None => {
                    while s.watchers.contains_key(&s.next_id) {
                        s.next_id += 1;
                    }
                    s.next_id
                }
            };
            if s.watchers.contains_key(&id) {
                s.sink.send(WatchResponse {
                    header: header(now_floor),
                    watch_id: id,
                    created: true,
                    canceled: true,
                    cancel_reason: "mvcc: duplicate watch ID provided on the WatchStream"
                        .to_string(),
                    ..WatchResponse::default()
                });
                return;
            }
            s.sink.send(WatchResponse {
                header: header(now_floor),
                watch_id: id,
                created: true,
                ..WatchResponse::default()
            });
            id
        } else {
            // A resync: the watcher must still be waiting for it (the
            // client may have cancelled it meanwhile).
            let Some(id) = spec.watch_id else { return };
            match s.watchers.get(&id) {
                Some(w) if matches!(w.state, State::Resyncing) => {}
                _ => return,
            }
            id
        };
        let history = match history {
            Ok(h) => h,
            Err(compact_revision) => {
                s.watchers.remove(&id);
                s.sink.send(WatchResponse {
                    header: header(now_floor),
                    watch_id: id,
                    canceled: true,
                    compact_revision,
                    cancel_reason: "etcdserver: mvcc: required revision has been compacted"
                        .to_string(),
                    ..WatchResponse::default()
                });
                return;
            }
        };
        let range = spec.range.clone();
        let after = if spec.start_revision > 0 {
            spec.start_revision - 1
        } else {
            seen.values().copied().min().unwrap_or(0)
        };
        let mut w = Watcher {
            spec: WatchSpec {
                watch_id: Some(id),
                ..spec
            },
            after,
            seen,
            pending: Vec::new(),
            state: State::Live,
            last_sent: Instant::now(),
        };
        w.pending = history.into_iter().filter_map(|e| w.admit(&e)).collect();
        s.watchers.insert(id, w);
        self.index(stream, id, &range);
        self.release(stream, id);
    }

    fn cancel(&mut self, stream: StreamId, watch_id: i64) {
        self.cancel_with(stream, watch_id, "");
    }

    fn cancel_with(&mut self, stream: StreamId, watch_id: i64, reason: &str) {
        let revisions = &self.revisions;
        let Some(s) = self.streams.get_mut(&stream) else {
            return;
        };
        let Some(w) = s.watchers.remove(&watch_id) else {
            return;
        };
        s.sink.send(WatchResponse {
            header: header(floor(revisions, &w.spec.groups)),
            watch_id,
            canceled: true,
            cancel_reason: reason.to_string(),
            ..WatchResponse::default()
        });
        let range = w.spec.range;
        if matches!(w.state, State::Live) {
            self.unindex(stream, watch_id, &range);
        }
    }

    /// Fans one batch of `group`'s applied events out: each watcher whose
    /// range holds a key takes the event, and delivers what its floor
    /// allows.
    fn dispatch(&mut self, group: GroupId, revision: i64, events: Vec<Event>) {
        let before = self.revisions.insert(group, revision).unwrap_or(0);
        if self.streams.is_empty() {
            return;
        }
        let mut out: BTreeMap<(StreamId, i64), Vec<Event>> = BTreeMap::new();
        for e in &events {
            let Some(kv) = &e.kv else { continue };
            let exact = self.exact.get(&kv.key).into_iter().flatten();
            let spans = self.spans.iter();
            for &(stream, id) in exact.chain(spans) {
                let Some(s) = self.streams.get(&stream) else {
                    continue;
                };
                if s.parked {
                    continue;
                }
                let Some(w) = s.watchers.get(&id) else {
                    continue;
                };
                if !w.spec.range.contains(&kv.key)
                    || kv.mod_revision <= w.seen.get(&group).copied().unwrap_or(0)
                {
                    continue;
                }
                if let Some(e) = w.admit(e) {
                    out.entry((stream, id)).or_default().push(e);
                }
            }
        }
        // Watchers that waited for this group may deliver now too.
        let mut touched: Vec<(StreamId, i64)> = self.held.iter().copied().collect();
        for ((stream, id), events) in out {
            let Some(s) = self.streams.get(&stream) else {
                continue;
            };
            if s.parked {
                continue;
            }
            if s.sink.queued() >= QUEUED_MAX {
                // Nothing of this batch reached the stream: its watchers
                // resume from what they were last given.
                self.park(stream, group, before);
                continue;
            }
            let s = self.streams.get_mut(&stream).expect("looked up above");
            if let Some(w) = s.watchers.get_mut(&id) {
                w.pending.extend(events);
                touched.push((stream, id));
            }
        }
        touched.sort_unstable();
        touched.dedup();
        for (stream, id) in touched {
            self.release(stream, id);
        }
    }

    /// Stops delivering to `stream` until its client drained its queue;
    /// `group` was at `before` when the batch that overfilled it came.
    fn park(&mut self, stream: StreamId, group: GroupId, before: i64) {
        let mut revisions = self.revisions.clone();
        revisions.insert(group, before);
        let Some(s) = self.streams.get_mut(&stream) else {
            return;
        };
        s.parked = true;
        for (id, w) in s.watchers.iter_mut() {
            // Everything up to its floor before this batch was delivered
            // (a watcher releases all it may at each batch).
            if w.pending.iter().all(|e| {
                e.kv.as_ref()
                    .is_some_and(|kv| kv.mod_revision > floor(&revisions, &w.spec.groups))
            }) {
                w.after = w.after.max(floor(&revisions, &w.spec.groups));
            }
            w.pending.clear();
            self.held.remove(&(stream, *id));
        }
    }

    /// Delivers a watcher's held events up to its floor, in revision
    /// order; asks the groups behind its newest held event to move on.
    fn release(&mut self, stream: StreamId, id: i64) {
        let revisions = &self.revisions;
        let Some(s) = self.streams.get_mut(&stream) else {
            return;
        };
        if s.parked {
            return;
        }
        let Some(w) = s.watchers.get_mut(&id) else {
            return;
        };
        let floor = floor(revisions, &w.spec.groups);
        if !w.pending.is_empty() {
            // Stable: one group's events keep their order within a revision.
            w.pending
                .sort_by_key(|e| e.kv.as_ref().map_or(0, |kv| kv.mod_revision));
            let due = w
                .pending
                .partition_point(|e| e.kv.as_ref().is_some_and(|kv| kv.mod_revision <= floor));
            if due > 0 {
                let events: Vec<Event> = w.pending.drain(..due).collect();
                w.last_sent = Instant::now();
                if !respond(&s.sink, id, floor, events, w.spec.fragment) {
                    s.parked = true;
                }
            }
        }
        if w.pending.is_empty() {
            w.after = w.after.max(floor);
            self.held.remove(&(stream, id));
            return;
        }
        self.held.insert((stream, id));
        let newest = w
            .pending
            .last()
            .and_then(|e| e.kv.as_ref())
            .map_or(0, |kv| kv.mod_revision);
        let behind: Vec<GroupId> = w
            .spec
            .groups
            .iter()
            .copied()
            .filter(|g| revisions.get(g).copied().unwrap_or(0) < newest)
            .collect();
        for group in behind {
            self.fence(group);
        }
    }

    /// Asks the core to move `group` past every revision handed out so
    /// far (a stamped no-op), unless it was asked a moment ago.
    fn fence(&mut self, group: GroupId) {
        let now = Instant::now();
        let revision = self.revisions.get(&group).copied().unwrap_or(0);
        // One fence at a time per group: until the group moved, or for a
        // while if the fence was lost (no oracle, a leader change).
        if self
            .fences
            .get(&group)
            .is_some_and(|(at, from)| *from == revision && now.duration_since(*at) < FENCE_AGAIN)
        {
            return;
        }
        self.fences.insert(group, (now, revision));
        let _ = self.core.send(Input::Fence { group });
    }

    /// Resumes parked streams that drained, asks again for fences that
    /// held watchers still wait on, and sends progress notices.
    fn tick(&mut self) {
        self.observe();
        let resumable: Vec<StreamId> = self
            .streams
            .iter()
            .filter(|(_, s)| s.parked && s.sink.queued() < QUEUED_RESUME)
            .map(|(id, _)| *id)
            .collect();
        for stream in resumable {
            self.resync_stream(stream);
        }
        let gone: Vec<StreamId> = self
            .streams
            .iter()
            .filter(|(_, s)| s.sink.tx.is_closed())
            .map(|(id, _)| *id)
            .collect();
        for stream in gone {
            self.close(stream);
        }
        let held: Vec<(StreamId, i64)> = self.held.iter().copied().collect();
        for (stream, id) in held {
            self.release(stream, id);
        }
        let now = Instant::now();
        let revisions = &self.revisions;
        for s in self.streams.values_mut() {
            if s.parked {
                continue;
            }
            for (id, w) in s.watchers.iter_mut() {
                if w.spec.progress_notify
                    && matches!(w.state, State::Live)
                    && w.pending.is_empty()
                    && now.duration_since(w.last_sent) >= self.progress_every
                {
                    w.last_sent = now;
                    s.sink.send(WatchResponse {
                        header: header(floor(revisions, &w.spec.groups)),
                        watch_id: *id,
                        ..WatchResponse::default()
                    });
                }
            }
        }
    }

    /// Takes every watcher of `stream` out of the live index and asks the
    /// core to register it again from the first revision it has not
    /// received (history fills the gap).
    fn resync_stream(&mut self, stream: StreamId) {
        let revisions = &self.revisions;
        let Some(s) = self.streams.get_mut(&stream) else {
            return;
        };
        let parked = s.parked;
        s.parked = false;
        let mut requests = Vec::new();
        let mut unindex = Vec::new();
        for (id, w) in s.watchers.iter_mut() {
            if matches!(w.state, State::Resyncing) {
                continue;
            }
            // A live stream was given everything up to its floor, except
            // what it holds.
            if !parked && w.pending.is_empty() {
                w.after = w.after.max(floor(revisions, &w.spec.groups));
            }
            w.pending.clear();
            w.state = State::Resyncing;
            unindex.push((*id, w.spec.range.clone()));
            requests.push(WatchSpec {
                watch_id: Some(*id),
                start_revision: w.after + 1,
                ..w.spec.clone()
            });
        }
        for (id, range) in unindex {
            self.unindex(stream, id, &range);
        }
        for spec in requests {
            let _ = self.core.send(Input::Watch {
                stream,
                spec,
                announce: false,
            });
        }
    }
}

impl Watcher {
    /// The event as this watcher reports it, or `None` when it is filtered
    /// out or already delivered.
    fn admit(&self, e: &Event) -> Option<Event> {
        let kv = e.kv.as_ref()?;
        if kv.mod_revision <= self.after {
            return None;
        }
        let put = e.r#type == EventType::Put as i32;
        if (put && self.spec.no_put) || (!put && self.spec.no_delete) {
            return None;
        }
        Some(Event {
            r#type: e.r#type,
            kv: e.kv.clone(),
            prev_kv: if self.spec.prev_kv {
                e.prev_kv.clone()
            } else {
                None
            },
        })
    }
}

fn header(revision: i64) -> Option<ResponseHeader> {
    Some(ResponseHeader {
        revision,
        ..ResponseHeader::default()
    })
}

/// Sends `events` to one watcher: one response, or with `fragment` as many
/// as keep each under the size limit (all but the last marked `fragment`).
/// Returns false if the stream is gone.
fn respond(sink: &StreamSink, id: i64, revision: i64, events: Vec<Event>, fragment: bool) -> bool {
    let base = WatchResponse {
        header: header(revision),
        watch_id: id,
        ..WatchResponse::default()
    };
    if !fragment {
        return sink.send(WatchResponse { events, ..base });
    }
    let mut chunks: Vec<Vec<Event>> = Vec::new();
    let mut size = 0;
    for e in events {
        let n = e.encoded_len();
        match chunks.last_mut() {
            Some(last) if size + n <= FRAGMENT_BYTES => {
                size += n;
                last.push(e);
            }
            _ => {
                size = n;
                chunks.push(vec![e]);
            }
        }
    }
    let last = chunks.len().saturating_sub(1);
    for (i, events) in chunks.into_iter().enumerate() {
        let ok = sink.send(WatchResponse {
            events,
            fragment: i < last,
            ..base.clone()
        });
        if !ok {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use synod_proto::mvccpb::KeyValue;

    fn put(key: &str, rev: i64, value_len: usize) -> Event {
        Event {
            r#type: EventType::Put as i32,
            kv: Some(KeyValue {
                key: Bytes::copy_from_slice(key.as_bytes()),
                mod_revision: rev,
                create_revision: rev,
                version: 1,
                value: Bytes::from(vec![b'x'; value_len]),
                lease: 0,
            }),
            prev_kv: None,
        }
    }

    fn drain(rx: &mut WatchReceiver) -> Vec<WatchResponse> {
        let mut out = Vec::new();
        while let Ok(r) = rx.rx.try_recv() {
            out.push(r);
        }
        out
    }

    #[test]
    fn large_responses_fragment_only_when_asked() {
        let (sink, mut rx) = stream_channel();
        let events: Vec<Event> = (2..6).map(|r| put("k", r, 700 << 10)).collect();
        assert!(respond(&sink, 7, 5, events.clone(), true));
        let parts = drain(&mut rx);
        assert!(parts.len() >= 2, "2.8 MiB splits into parts");
        assert!(parts[..parts.len() - 1].iter().all(|p| p.fragment));
        assert!(!parts.last().unwrap().fragment);
        let joined: Vec<Event> = parts.into_iter().flat_map(|p| p.events).collect();
        assert_eq!(joined, events, "nothing lost or reordered");
        assert!(respond(&sink, 7, 5, events, false));
        assert_eq!(drain(&mut rx).len(), 1);
    }

    fn spec(range: KeyRange, start: i64) -> WatchSpec {
        WatchSpec {
            watch_id: None,
            range,
            start_revision: start,
            prev_kv: false,
            no_put: false,
            no_delete: false,
            progress_notify: false,
            fragment: false,
            user: None,
            groups: vec![GroupId(1)],
        }
    }

    #[test]
    fn slow_streams_park_and_resync_from_the_first_undelivered_revision() {
        let (core, inputs) = std::sync::mpsc::channel();
        let mut hub = Hub::new(
            BTreeMap::from([(GroupId(1), 1)]),
            core,
            Duration::from_secs(600),
            std::sync::Arc::new(crate::metrics::Metrics::new()),
        );
        let (sink, mut rx) = stream_channel();
        hub.handle(HubInput::Open { stream: 1, sink });
        hub.handle(HubInput::Register {
            stream: 1,
            spec: spec(KeyRange::Single(Bytes::from_static(b"k")), 0),
            seen: BTreeMap::from([(GroupId(1), 1)]),
            history: Ok(Vec::new()),
            announce: true,
        });
        let created = drain(&mut rx);
        assert!(created[0].created && created[0].watch_id == 0);
        // The client reads nothing; the queue fills up.
        let mut rev = 1;
        while hub.streams[&1].sink.queued() < QUEUED_MAX {
            rev += 1;
            hub.handle(HubInput::Events {
                group: GroupId(1),
                revision: rev,
                events: vec![put("k", rev, 1)],
            });
        }
        let parked_at = rev;
        for _ in 0..3 {
            rev += 1;
            hub.handle(HubInput::Events {
                group: GroupId(1),
                revision: rev,
                events: vec![put("k", rev, 1)],
            });
        }
        assert!(hub.streams[&1].parked);
        // Draining lets the hub ask the core for history from the first
        // revision the watcher did not get.
        let delivered: Vec<i64> = std::iter::from_fn(|| rx.rx.try_recv().ok())
            .flat_map(|r| r.events)
            .map(|e| e.kv.unwrap().mod_revision)
            .collect();
        rx.queued.store(0, Ordering::Relaxed);
        assert_eq!(*delivered.last().unwrap(), parked_at);
        hub.tick();
        match inputs.try_recv() {
            Ok(Input::Watch {
                stream: 1,
                spec,
                announce: false,
            }) => assert_eq!(spec.start_revision, parked_at + 1),
            _ => panic!("expected a resync request"),
        }
        // Events while resyncing are not delivered twice: the registration
        // brings history up to its revision, then live events follow.
        hub.handle(HubInput::Register {
            stream: 1,
            spec: WatchSpec {
                watch_id: Some(0),
                ..spec(KeyRange::Single(Bytes::from_static(b"k")), parked_at + 1)
            },
            seen: BTreeMap::from([(GroupId(1), rev)]),
            history: Ok(((parked_at + 1)..=rev).map(|r| put("k", r, 1)).collect()),
            announce: false,
        });
        hub.handle(HubInput::Events {
            group: GroupId(1),
            revision: rev + 1,
            events: vec![put("k", rev + 1, 1)],
        });
        let after: Vec<i64> = drain(&mut rx)
            .into_iter()
            .flat_map(|r| r.events)
            .map(|e| e.kv.unwrap().mod_revision)
            .collect();
        assert_eq!(after, ((parked_at + 1)..=(rev + 1)).collect::<Vec<_>>());
    }
}
