//! Snapshot streams between nodes, off the core thread. The core only
//! decides (a group's `ready.snapshots`) and opens a storage read
//! transaction; a thread reads the rows in chunks and a task streams them
//! on a connection of their own (`Peer.Snapshot`), so gigabytes of rows
//! neither stall the core nor queue ahead of Paxos messages. The receiving
//! side writes each chunk into a storage stage as it arrives (TCP
//! back-pressure paces the sender), loads the finished stage and hands it
//! to the core, which installs it (`Group::install_staged`) or discards it.
//!
//! ```text
//!  core: ready.snapshots ─► snapshot_reader (read txn) ─► thread: next_chunk
//!        ─► task: Peer.Snapshot stream ════════► PeerService::snapshot
//!                         receive_chunk ─► stage ─► load_staged ─► Input::Staged
//!                         core: install_staged ─► ready.installed ─► batch
//! ```

use crate::codec;
use crate::core::Input;
use crate::inbox::{Inbox, Refused};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use synod_paxos::{Configuration, Slot};
use synod_proto::peerpb::{peer_client::PeerClient, SnapshotChunk};
use synod_storage::{GroupId, Received, Storage, StorageError, StreamChunk};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use tonic::Status;

/// The node's storage for work off the core thread (received snapshots,
/// snapshot files), until the node stops: then the handle lets go, so
/// the database closes with the core and a restart can open it.
#[derive(Clone, Debug, Default)]
pub(crate) struct StorageHandle(Arc<std::sync::Mutex<Option<Storage>>>);

impl StorageHandle {
    pub(crate) fn new(storage: Storage) -> StorageHandle {
        StorageHandle(Arc::new(std::sync::Mutex::new(Some(storage))))
    }

    /// The storage, unless the node stopped.
    pub(crate) fn get(&self) -> Option<Storage> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The node stops: no new work gets the storage.
    pub(crate) fn close(&self) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).take();
    }
}

/// Chunks read ahead of the connection: the reader thread waits beyond
/// this (its read transaction stays open meanwhile).
const CHUNKS_AHEAD: usize = 4;

/// Who sends, for the receiver's checks, and where the sender counts
/// what it sent.
#[derive(Clone)]
pub(crate) struct Sender {
    pub(crate) node: u64,
    pub(crate) cluster_id: u64,
    pub(crate) metrics: Arc<crate::metrics::Metrics>,
    pub(crate) auth: crate::peer_auth::PeerAuth,
}

/// A stream under way; `done` once it ended (sent, failed or refused).
#[derive(Clone, Debug, Default)]
pub(crate) struct Outgoing {
    done: Arc<AtomicBool>,
}

impl Outgoing {
    /// True while the stream is still sending.
    pub(crate) fn running(&self) -> bool {
        !self.done.load(Ordering::Acquire)
    }
}

/// Starts streaming `group`'s rows as committed now to the node at
/// `addr`; returns the slot they hold and the stream's handle.
/// `membership` is asked for the configuration in effect at that slot.
pub(crate) fn start(
    storage: &Storage,
    runtime: &tokio::runtime::Handle,
    from: Sender,
    group: GroupId,
    addr: SocketAddr,
    chunk_bytes: usize,
    membership: impl FnOnce(Slot) -> Option<Configuration>,
) -> Result<(Slot, Outgoing), StorageError> {
    let mut reader = storage.snapshot_reader(group)?;
    let slot = reader.slot();
    let membership = membership(slot).as_ref().map(codec::configuration);
    let outgoing = Outgoing::default();
    let (tx, rx) = tokio::sync::mpsc::channel::<SnapshotChunk>(CHUNKS_AHEAD);
    let done = Arc::clone(&outgoing.done);
    let auth = from.auth.clone();
    runtime.spawn(async move {
        if let Err(e) = send(addr, rx, auth).await {
            tracing::warn!(%group, %addr, %slot, error = %e, "snapshot stream ended early");
        }
        done.store(true, Ordering::Release);
    });
    let thread = std::thread::Builder::new()
        .name(format!("synod-snapshot-{}", group.0))
        .spawn(move || {
            let started = std::time::Instant::now();
            let (mut bytes, mut chunks) = (0u64, 0u64);
            loop {
                let chunk = match reader.next_chunk(chunk_bytes.max(1)) {
                    Ok(Some(c)) => c,
                    Ok(None) => break,
                    Err(e) => {
                        tracing::error!(%group, error = %e, "reading a snapshot failed");
                        return;
                    }
                };
                bytes += chunk.data.len() as u64;
                chunks += 1;
                let message = SnapshotChunk {
                    from: from.node,
                    cluster_id: from.cluster_id,
                    group: group.0,
                    slot: slot.0,
                    index: chunk.index,
                    last: chunk.last,
                    data: chunk.data,
                    membership: membership.clone(),
                };
                // The connection is gone: the stream ends.
                if tx.blocking_send(message).is_err() {
                    return;
                }
            }
            from.metrics.snapshot_sent_bytes.inc_by(bytes);
            from.metrics
                .snapshot_send_seconds
                .observe(started.elapsed().as_secs_f64());
            tracing::info!(
                %group,
                %slot,
                bytes,
                chunks,
                ms = started.elapsed().as_millis() as u64,
                "snapshot read and queued"
            );
        });
    if let Err(e) = thread {
        tracing::error!(%group, error = %e, "cannot start a snapshot reader thread");
    }
    Ok((slot, outgoing))
}

/// Streams the chunks from `rx` to `addr` on a new connection.
async fn send(
    addr: SocketAddr,
    rx: tokio::sync::mpsc::Receiver<SnapshotChunk>,
    auth: crate::peer_auth::PeerAuth,
) -> Result<(), String> {
    let endpoint = auth.endpoint(addr)?;
    let channel = endpoint.connect().await.map_err(|e| e.to_string())?;
    let mut client = PeerClient::new(channel)
        .max_encoding_message_size(crate::node::PEER_MESSAGE_MAX)
        .max_decoding_message_size(crate::node::PEER_MESSAGE_MAX);
    let mut request = tonic::Request::new(ReceiverStream::new(rx));
    auth.sign(&mut request);
    client
        .snapshot(request)
        .await
        .map(|_| ())
        .map_err(|s| s.message().to_string())
}

/// Receives one snapshot stream into storage; once whole, hands the
/// loaded store to the core. Any refusal ends the stream with the reason
/// (the sender starts over later).
pub(crate) async fn receive(
    storage: &StorageHandle,
    inputs: &Inbox,
    cluster_id: u64,
    mut stream: tonic::Streaming<SnapshotChunk>,
) -> Result<(), Status> {
    let started = std::time::Instant::now();
    let (mut bytes, mut chunks) = (0u64, 0u64);
    while let Some(message) = stream.next().await {
        let message = message?;
        if message.cluster_id != cluster_id {
            tracing::warn!(from = message.from, "snapshot from another cluster refused");
            return Err(Status::permission_denied("another cluster"));
        }
        let (group, slot) = (GroupId(message.group), Slot(message.slot));
        let membership = message
            .membership
            .map(codec::get_configuration)
            .transpose()
            .map_err(|e| refuse(group, format!("configuration: {e}")))?;
        bytes += message.data.len() as u64;
        chunks += 1;
        let chunk = StreamChunk {
            index: message.index,
            last: message.last,
            data: message.data,
        };
        let stopped = || Status::unavailable("node is shutting down");
        let s = storage.get().ok_or_else(stopped)?;
        let received = tokio::task::spawn_blocking(move || s.receive_chunk(group, slot, &chunk))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(|e| Status::internal(e.to_string()))?;
        let stage = match received {
            Received::Partial => continue,
            Received::Refused(why) => return Err(refuse(group, why)),
            Received::Complete { stage } => stage,
        };
        let s = storage.get().ok_or_else(stopped)?;
        let loaded = tokio::task::spawn_blocking(move || s.load_staged(group, stage))
            .await
            .map_err(|e| Status::internal(e.to_string()))?;
        let kv = match loaded {
            Ok(kv) => kv,
            Err(e) => {
                let s = storage.get().ok_or_else(stopped)?;
                let _ = tokio::task::spawn_blocking(move || {
                    let mut batch = s.batch()?;
                    batch.discard_stage(group, stage)?;
                    batch.commit()
                })
                .await;
                return Err(refuse(group, e.to_string()));
            }
        };
        tracing::info!(
            %group,
            %slot,
            from = message.from,
            bytes,
            chunks,
            ms = started.elapsed().as_millis() as u64,
            "snapshot received and loaded"
        );
        let input = Input::Staged {
            group,
            slot,
            membership,
            stage,
            kv: Box::new(kv),
        };
        if let Err(Refused::Stopped) = inputs.send(input) {
            return Err(Status::unavailable("node is shutting down"));
        }
    }
    Ok(())
}

fn refuse(group: GroupId, why: String) -> Status {
    tracing::warn!(%group, "snapshot chunk refused: {why}");
    Status::failed_precondition(why)
}
