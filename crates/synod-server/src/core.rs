//! The core loop: one thread that owns the replica, the state machine and
//! the store, and turns inputs into durable, replicated, applied effects.
//!
//! ```text
//!   inputs (peer messages, client writes and reads) ──► step / propose / read
//!   every round:  tick ─► ready ─► send ─► persist (one fsync) ─► apply ─► answer
//! ```
//!
//! Nothing here blocks on the network: outgoing batches go to per-peer
//! sender tasks through bounded queues, and a full queue drops the batch
//! (Paxos retransmits).

use crate::codec;
use bytes::Bytes;
use prost::Message as _;
use std::collections::{BTreeMap, VecDeque};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use synod_kv::{error_outcome, KvError, KvStore};
use synod_paxos::{NodeId, ProposeError, ReadId, Ready, Replica, RoleKind, Slot, Time, Value};
use synod_proto::etcdserverpb::{RangeRequest, RangeResponse};
use synod_proto::peerpb;
use synod_proto::synodpb::{Command, Outcome};
use synod_storage::{GroupId, Storage};
use tokio::sync::{mpsc, oneshot};

/// The single Paxos group of an unsharded cluster.
pub const GROUP: GroupId = GroupId(1);
/// Inputs handled per round before the runtime loop runs: a bound on
/// latency under load, and the unit of batching.
const INPUTS_PER_ROUND_MAX: usize = 4096;
/// A forwarded command not yet applied is forwarded again after this long.
const REFORWARD_MS: u64 = 300;

/// Work for the core loop.
pub enum Input {
    /// Messages from a peer.
    Peer(peerpb::Batch),
    /// A client write; answered when it applies here.
    Write {
        /// The command (client, seq, op).
        command: Command,
        /// Where the outcome goes.
        reply: oneshot::Sender<Outcome>,
    },
    /// A client read.
    Read {
        /// The request.
        request: RangeRequest,
        /// Serve from local state without a linearizability check.
        serializable: bool,
        /// Where the answer goes.
        reply: oneshot::Sender<Result<RangeResponse, KvError>>,
    },
    /// Stop the loop.
    Shutdown,
}

/// What the loop publishes for status calls.
#[derive(Clone, Debug, Default)]
pub struct Published {
    /// Believed leader.
    pub leader: Option<NodeId>,
    /// This node leads.
    pub is_leader: bool,
    /// Ballot round (etcd's raft term).
    pub round: u64,
    /// Commit point.
    pub commit: u64,
    /// Applied slot.
    pub applied: u64,
    /// State machine revision.
    pub revision: i64,
    /// Compaction point.
    pub compact_revision: i64,
    /// Slot of the latest state-machine snapshot.
    pub snapshot_slot: u64,
    /// Snapshots received from a leader and installed since start.
    pub snapshots_installed: u64,
}

struct PendingWrite {
    command: Bytes,
    forwarded_at: Option<Instant>,
}

/// A linearizable read waiting for its slot to be applied.
struct WaitingRead {
    request: RangeRequest,
    reply: oneshot::Sender<Result<RangeResponse, KvError>>,
}

/// What the loop starts from.
pub struct CoreParts {
    /// This node.
    pub id: NodeId,
    /// Checked on every peer batch.
    pub cluster_id: u64,
    /// Restored from storage.
    pub replica: Replica<Bytes>,
    /// Restored from the latest snapshot (or empty).
    pub kv: KvStore,
    /// The latest snapshot: what `kv` was restored from.
    pub snapshot: Option<(Slot, Bytes)>,
    /// The node's database.
    pub storage: Storage,
    /// Where inputs arrive.
    pub inputs: Receiver<Input>,
    /// Per-peer send queues.
    pub peers: BTreeMap<NodeId, mpsc::Sender<peerpb::Batch>>,
    /// Timer period.
    pub tick: Duration,
    /// Status shared with the facade.
    pub published: Arc<Mutex<Published>>,
    /// The local clock's origin.
    pub started: Instant,
    /// Applied slots between snapshots.
    pub snapshot_every: u64,
}

/// The loop's state.
pub struct Core {
    id: NodeId,
    replica: Replica<Bytes>,
    kv: KvStore,
    storage: Storage,
    started: Instant,
    inputs: Receiver<Input>,
    peers: BTreeMap<NodeId, mpsc::Sender<peerpb::Batch>>,
    cluster_id: u64,
    tick: Duration,
    applied: Slot,
    /// Writes waiting for their (client, seq) to apply here.
    writes: BTreeMap<(u64, u64), (oneshot::Sender<Outcome>, PendingWrite)>,
    /// Linearizable reads registered with the replica.
    reads: BTreeMap<ReadId, WaitingRead>,
    /// Reads released by the replica, waiting for `applied` to reach a slot.
    reads_at: VecDeque<(Slot, WaitingRead)>,
    /// Reads on a follower, waiting for a barrier command to apply.
    barrier_reads: BTreeMap<(u64, u64), WaitingRead>,
    next_read: u64,
    next_barrier: u64,
    /// The client id of this incarnation's barrier commands.
    barrier_client: u64,
    published: Arc<Mutex<Published>>,
    snapshot_every: u64,
    /// The latest snapshot written, shipped to replicas behind the log start.
    snapshot: Option<(Slot, Bytes)>,
    snapshots_installed: u64,
}

impl Core {
    /// Builds the loop from a restored replica, the state machine restored
    /// from the latest snapshot (`snapshot`), and the store.
    pub fn new(parts: CoreParts) -> Core {
        let applied = parts.snapshot.as_ref().map_or(Slot(0), |(s, _)| *s);
        Core {
            id: parts.id,
            replica: parts.replica,
            kv: parts.kv,
            storage: parts.storage,
            started: parts.started,
            inputs: parts.inputs,
            peers: parts.peers,
            cluster_id: parts.cluster_id,
            tick: parts.tick,
            applied,
            writes: BTreeMap::new(),
            reads: BTreeMap::new(),
            reads_at: VecDeque::new(),
            barrier_reads: BTreeMap::new(),
            next_read: 1,
            next_barrier: 1,
            barrier_client: crate::node::incarnation_base(parts.id.0, 1),
            published: parts.published,
            snapshot_every: parts.snapshot_every.max(1),
            snapshot: parts.snapshot,
            snapshots_installed: 0,
        }
    }

    fn now(&self) -> Time {
        Time(self.started.elapsed().as_millis() as u64)
    }

    /// Runs until `Shutdown` or until every input sender is gone.
    pub fn run(mut self) {
        loop {
            match self.inputs.recv_timeout(self.tick) {
                Ok(Input::Shutdown) | Err(RecvTimeoutError::Disconnected) => return,
                Ok(input) => {
                    if !self.handle(input) {
                        return;
                    }
                    for _ in 0..INPUTS_PER_ROUND_MAX {
                        match self.inputs.try_recv() {
                            Ok(input) => {
                                if !self.handle(input) {
                                    return;
                                }
                            }
                            Err(_) => break,
                        }
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
            }
            let now = self.now();
            self.replica.tick(now);
            self.reforward();
            self.drive();
            self.publish();
        }
    }

    /// Returns false on shutdown.
    fn handle(&mut self, input: Input) -> bool {
        match input {
            Input::Shutdown => return false,
            Input::Peer(batch) => self.on_peer(batch),
            Input::Write { command, reply } => self.on_write(command, reply),
            Input::Read {
                request,
                serializable,
                reply,
            } => self.on_read(request, serializable, reply),
        }
        true
    }

    fn on_peer(&mut self, batch: peerpb::Batch) {
        if batch.cluster_id != self.cluster_id {
            tracing::warn!(
                from = batch.from,
                cluster = batch.cluster_id,
                "batch from another cluster dropped"
            );
            return;
        }
        let from = NodeId(batch.from);
        let now = self.now();
        for envelope in batch.messages {
            match codec::decode(envelope) {
                Ok((to, message)) if to == self.id => self.replica.step(from, message, now),
                Ok(_) => tracing::warn!(%from, "message for another node dropped"),
                Err(e) => tracing::warn!(%from, error = %e, "peer message dropped"),
            }
        }
        if let Some(snapshot) = batch.snapshot {
            self.install_snapshot(Slot(snapshot.slot), snapshot.data);
        }
        for command in batch.forwards {
            // Forwarded to us as the leader; if we no longer lead, the
            // sender forwards again to whoever does.
            let _ = self.replica.propose(command);
        }
    }

    fn on_write(&mut self, command: Command, reply: oneshot::Sender<Outcome>) {
        let key = (command.client, command.seq);
        let bytes = Bytes::from(command.encode_to_vec());
        let pending = PendingWrite {
            command: bytes.clone(),
            forwarded_at: None,
        };
        self.writes.insert(key, (reply, pending));
        self.submit(key);
    }

    /// Proposes here when leading, else forwards to the leader.
    fn submit(&mut self, key: (u64, u64)) {
        let Some((_, pending)) = self.writes.get_mut(&key) else {
            return;
        };
        let command = pending.command.clone();
        match self.replica.propose(command.clone()) {
            Ok(()) => pending.forwarded_at = None,
            Err(ProposeError::NotLeader { leader: Some(l) }) if l != self.id => {
                pending.forwarded_at = Some(Instant::now());
                self.send(l, Vec::new(), vec![command]);
            }
            Err(ProposeError::Busy) => {
                if let Some((reply, _)) = self.writes.remove(&key) {
                    let _ = reply.send(error_outcome(&KvError::InvalidArgument(
                        "etcdserver: too many requests",
                    )));
                }
            }
            Err(_) => pending.forwarded_at = Some(Instant::now()),
        }
    }

    /// Submits again every write that may have been lost: forwarded long
    /// ago without an answer, or proposed here while this node led and
    /// leads no more (the new leader may have filled its slot with a
    /// no-op). A write that was chosen after all applies once: the state
    /// machine remembers each (client, seq).
    fn reforward(&mut self) {
        let leading = self.replica.role_kind() == RoleKind::Leader;
        let due: Vec<(u64, u64)> = self
            .writes
            .iter()
            .filter(|(_, (_, p))| match p.forwarded_at {
                Some(t) => t.elapsed() >= Duration::from_millis(REFORWARD_MS),
                None => !leading,
            })
            .map(|(k, _)| *k)
            .collect();
        for key in due {
            self.submit(key);
        }
    }

    fn on_read(
        &mut self,
        request: RangeRequest,
        serializable: bool,
        reply: oneshot::Sender<Result<RangeResponse, KvError>>,
    ) {
        if serializable {
            let _ = reply.send(self.kv.range(&request));
            return;
        }
        let rid = ReadId(self.next_read);
        self.next_read += 1;
        let now = self.now();
        match self.replica.read(rid, now) {
            Ok(()) => {
                self.reads.insert(rid, WaitingRead { request, reply });
            }
            Err(_) => {
                // Not the leader: a barrier command through the log orders
                // this read after every write acknowledged before it.
                let key = (self.barrier_client, self.next_barrier);
                self.next_barrier += 1;
                self.barrier_reads
                    .insert(key, WaitingRead { request, reply });
                let command = Command {
                    client: key.0,
                    seq: key.1,
                    op: None,
                };
                let (tx, _rx) = oneshot::channel();
                self.on_write(command, tx);
            }
        }
    }

    /// The runtime loop: persist, send, apply, answer, until quiet.
    fn drive(&mut self) {
        while self.replica.has_ready() {
            let ready = self.replica.ready();
            self.handle_ready(ready);
        }
    }

    fn handle_ready(&mut self, ready: Ready<Bytes>) {
        let mut by_peer: BTreeMap<NodeId, Vec<peerpb::Envelope>> = BTreeMap::new();
        for e in &ready.messages {
            by_peer
                .entry(e.to)
                .or_default()
                .push(codec::encode(e.to, &e.message));
        }
        for (to, messages) in by_peer {
            self.send(to, messages, Vec::new());
        }
        if !ready.persist.is_empty() {
            let result = self.storage.batch().and_then(|mut batch| {
                batch.persist(GROUP, &ready.persist)?;
                batch.commit()
            });
            // A durable write that fails is fail-stop: continuing could
            // acknowledge state that is not on disk.
            if let Err(e) = result {
                panic!("storage write failed, stopping the node: {e}");
            }
        }
        for apply in &ready.apply {
            self.apply(apply.slot, &apply.value);
        }
        for read in &ready.reads {
            if let Some(w) = self.reads.remove(&read.id) {
                self.reads_at.push_back((read.slot, w));
            }
        }
        for id in &ready.reads_dropped {
            if let Some(w) = self.reads.remove(id) {
                // Retry as a follower read.
                self.on_read(w.request, false, w.reply);
            }
        }
        for command in ready.dropped {
            if let Ok(c) = Command::decode(command.clone()) {
                self.submit((c.client, c.seq));
            }
        }
        for to in ready.snapshots {
            self.send_snapshot(to);
        }
        self.serve_reads();
        self.replica.on_persisted(ready.token);
        self.maybe_snapshot();
    }

    /// Every `snapshot_every` applied slots: write the state machine and its
    /// applied slot in one transaction, then let the core drop the log
    /// prefix the snapshot covers.
    fn maybe_snapshot(&mut self) {
        let last = self.snapshot.as_ref().map_or(0, |(s, _)| s.0);
        if self.applied.0 < last + self.snapshot_every {
            return;
        }
        let data = Bytes::from(self.kv.snapshot().encode_to_vec());
        let slot = self.applied;
        self.write_snapshot(slot, &data);
        self.snapshot = Some((slot, data));
        self.replica.compact(slot);
    }

    /// Makes a snapshot and its applied slot durable in one transaction.
    /// A failed durable write is fail-stop.
    fn write_snapshot(&self, slot: Slot, data: &[u8]) {
        let result = self.storage.batch().and_then(|mut batch| {
            batch.put_snapshot(GROUP, slot, data)?;
            batch.commit()
        });
        if let Err(e) = result {
            panic!("snapshot write failed, stopping the node: {e}");
        }
    }

    fn send_snapshot(&mut self, to: NodeId) {
        if let Some((slot, data)) = self.snapshot.clone() {
            let snapshot = peerpb::Snapshot { slot: slot.0, data };
            self.send_batch(to, Vec::new(), Vec::new(), Some(snapshot));
        }
    }

    /// A snapshot from the leader: install it durably, then jump the
    /// replica and answer writes it already contains.
    fn install_snapshot(&mut self, slot: Slot, data: Bytes) {
        if !self.replica.wants_snapshot(slot) {
            return;
        }
        let kv = match decode_snapshot(&data) {
            Ok(kv) => kv,
            Err(e) => {
                tracing::warn!(%slot, error = %e, "malformed snapshot dropped");
                return;
            }
        };
        self.write_snapshot(slot, &data);
        self.kv = kv;
        self.applied = slot;
        self.snapshot = Some((slot, data));
        self.snapshots_installed += 1;
        assert!(
            self.replica.install_snapshot(slot),
            "wanted snapshot refused"
        );
        let answered: Vec<(u64, u64)> = self
            .writes
            .keys()
            .filter(|(c, q)| self.kv.session_outcome(*c, *q).is_some())
            .copied()
            .collect();
        for key in answered {
            if let (Some((reply, _)), Some(outcome)) = (
                self.writes.remove(&key),
                self.kv.session_outcome(key.0, key.1),
            ) {
                let _ = reply.send(outcome.clone());
            }
        }
        self.serve_reads();
    }

    fn apply(&mut self, slot: Slot, value: &Value<Bytes>) {
        assert_eq!(slot, self.applied.next(), "apply out of order");
        self.applied = slot;
        let Value::Batch(commands) = value else {
            return;
        };
        for bytes in commands.iter() {
            let Ok(command) = Command::decode(bytes.clone()) else {
                tracing::error!(%slot, "undecodable command in the log skipped");
                continue;
            };
            let applied = self.kv.apply(&command);
            let key = (command.client, command.seq);
            if let Some((reply, _)) = self.writes.remove(&key) {
                let _ = reply.send(applied.outcome);
            }
            if let Some(w) = self.barrier_reads.remove(&key) {
                let _ = w.reply.send(self.kv.range(&w.request));
            }
        }
    }

    fn serve_reads(&mut self) {
        while let Some((slot, _)) = self.reads_at.front() {
            if *slot > self.applied {
                break;
            }
            let (_, w) = self.reads_at.pop_front().expect("front exists");
            let _ = w.reply.send(self.kv.range(&w.request));
        }
    }

    fn send(&mut self, to: NodeId, messages: Vec<peerpb::Envelope>, forwards: Vec<Bytes>) {
        self.send_batch(to, messages, forwards, None);
    }

    fn send_batch(
        &mut self,
        to: NodeId,
        messages: Vec<peerpb::Envelope>,
        forwards: Vec<Bytes>,
        snapshot: Option<peerpb::Snapshot>,
    ) {
        let Some(peer) = self.peers.get(&to) else {
            return;
        };
        let batch = peerpb::Batch {
            from: self.id.0,
            cluster_id: self.cluster_id,
            messages,
            forwards,
            snapshot,
        };
        // A full queue means the peer is slow or gone: drop, Paxos resends.
        let _ = peer.try_send(batch);
    }

    fn publish(&self) {
        let status = self.replica.status();
        let mut p = self.published.lock().expect("status lock");
        p.leader = status.leader;
        p.is_leader = status.role == RoleKind::Leader;
        p.round = status.promised.round;
        p.commit = status.commit.0;
        p.applied = self.applied.0;
        p.revision = self.kv.revision();
        p.compact_revision = self.kv.compact_revision();
        p.snapshot_slot = self.snapshot.as_ref().map_or(0, |(s, _)| s.0);
        p.snapshots_installed = self.snapshots_installed;
    }
}

/// Decodes a state-machine snapshot (from disk or from a leader).
pub(crate) fn decode_snapshot(data: &Bytes) -> Result<KvStore, String> {
    let snapshot =
        synod_proto::synodpb::Snapshot::decode(data.clone()).map_err(|e| e.to_string())?;
    KvStore::restore(snapshot).map_err(|e| e.to_string())
}
