//! Backups (`etcdctl snapshot save`): the node's state as a snapshot
//! file, read off the core thread (design 0020); and HashKV, which fences
//! the shards at one revision the same way.
//!
//! ```text
//!  unsharded: the meta group's rows, from one storage read transaction
//!  sharded:   T ◄── a linearizable read of the whole key space (every
//!                   shard fenced at one oracle timestamp T)
//!             wait until every shard here applied T
//!             open a read transaction per group; no split in between
//!             meta group's rows │ each shard's rows cut at T
//! ```
//!
//! Every shard has applied each write stamped at or below T once it
//! applied T (stale stamps are refused), so cutting its rows at T
//! (`synod_kv::cut`) leaves the key space exactly as a read at T sees it,
//! whatever was written while the file was read.

use super::{Node, RequestError};
use crate::core::GROUP;
use crate::shard_view::ShardView;
use bytes::Bytes;
use std::sync::Arc;
use std::time::{Duration, Instant};
use synod_kv::cut::{cut_row, CutRow};
use synod_proto::etcdserverpb::RangeRequest;
use synod_storage::stream::{for_each_row, push_row};
use synod_storage::{GroupId, SnapshotReader, Storage};
use tokio::sync::{mpsc, oneshot};

/// Tries at a sharded backup before giving up because shards keep
/// splitting while it starts.
const BACKUP_TRIES: usize = 3;
/// How often the node looks again whether its shards applied the cut.
const APPLIED_POLL: Duration = Duration::from_millis(10);

/// Which groups go into a file, and where each is cut.
struct Plan {
    /// The meta group first (never cut), then every shard cut at T.
    groups: Vec<(GroupId, Option<i64>)>,
    /// The shard map's version the groups were read from; the file is
    /// good only if it still holds once every read transaction is open.
    view: Option<(Arc<ShardView>, u64)>,
    /// The data dir's `shards` file (sharded only).
    shards_text: Option<String>,
}

/// Why a thread could not open its read transactions.
enum Opening {
    /// A shard split meanwhile: plan again.
    Split,
    Failed(String),
}

impl Node {
    /// The node's state as a snapshot file (see `SnapshotFileWriter`), in
    /// pieces of about `piece_bytes`, read by a thread of its own so the
    /// core goes on and memory holds a few pieces at a time. The file ends
    /// early with an error if reading fails; the receiver going away
    /// stops it.
    pub async fn snapshot_file(
        &self,
        piece_bytes: usize,
    ) -> Result<mpsc::Receiver<Result<Bytes, String>>, RequestError> {
        let Some(storage) = self.storage.get() else {
            return Err(RequestError::Stopped);
        };
        for _ in 0..BACKUP_TRIES {
            let plan = match &self.shard_view {
                None => Plan {
                    groups: vec![(GROUP, None)],
                    view: None,
                    shards_text: None,
                },
                Some(view) => self.plan_sharded(view).await?,
            };
            // The file is read from the rows on disk, which groups write
            // every few rounds: have them written as applied now.
            let (reply, written) = oneshot::channel();
            self.input(crate::core::Input::WriteRows { reply })?;
            self.wait(written).await?;
            let (opened, is_open) = oneshot::channel();
            let (tx, rx) = mpsc::channel(4);
            let storage = storage.clone();
            std::thread::Builder::new()
                .name("synod-snapshot-file".into())
                .spawn(move || write_file(&storage, plan, piece_bytes, opened, &tx))
                .map_err(|e| RequestError::Refused(format!("cannot start a thread: {e}")))?;
            match is_open.await {
                Ok(Ok(())) => return Ok(rx),
                Ok(Err(Opening::Split)) => continue,
                Ok(Err(Opening::Failed(why))) => return Err(RequestError::Refused(why)),
                Err(_) => return Err(RequestError::Stopped),
            }
        }
        Err(RequestError::Refused(
            "etcdserver: shards kept splitting while the snapshot started; try again".into(),
        ))
    }

    /// Fences every shard at one timestamp T and waits until this node's
    /// replicas applied it.
    async fn plan_sharded(&self, view: &Arc<ShardView>) -> Result<Plan, RequestError> {
        let (at, shards, version) = self.fence_here(view).await?;
        let groups = std::iter::once((GROUP, None))
            .chain(shards.into_iter().map(|g| (g, Some(at))))
            .collect();
        Ok(Plan {
            groups,
            view: Some((Arc::clone(view), version)),
            shards_text: Some(super::shards_text(self.config.shards.as_ref())),
        })
    }

    /// etcd's HashKV of the key space at `revision` (0: now). Sharded,
    /// the shards are fenced at one timestamp T first, as for a backup,
    /// and hashed together in key order at `revision` or T: two members
    /// that hold the same versions answer the same hash at the same
    /// revision, as etcd's members do, which is what `etcdctl endpoint
    /// hashkv` compares.
    pub async fn hash_kv(&self, revision: i64) -> Result<(u32, i64, i64), RequestError> {
        let Some(view) = &self.shard_view else {
            return self
                .query(move |kv| kv.hash_kv(revision))
                .await?
                .map_err(RequestError::Kv);
        };
        for _ in 0..BACKUP_TRIES {
            let (at, shards, version) = self.fence_here(view).await?;
            if revision > at {
                return Err(RequestError::Kv(synod_kv::KvError::FutureRevision {
                    requested: revision,
                    current: at,
                }));
            }
            let rev = if revision > 0 { revision } else { at };
            let (reply, rx) = oneshot::channel();
            self.input(crate::core::Input::QueryAll(Box::new(move |stores| {
                let in_order: Option<Vec<&synod_kv::KvStore>> = shards
                    .iter()
                    .map(|g| stores.iter().find(|(id, _)| id == g).map(|(_, kv)| *kv))
                    .collect();
                let _ = reply.send(in_order.map(|s| synod_kv::KvStore::hash_kv_shards(&s, rev)));
            })))?;
            let hashed = self.wait(rx).await?;
            // A split in between moved keys between the shards listed.
            if view.version() != version {
                continue;
            }
            if let Some(hashed) = hashed {
                return hashed.map_err(RequestError::Kv);
            }
        }
        Err(RequestError::Refused(
            "etcdserver: shards kept splitting while hashing; try again".into(),
        ))
    }

    /// Fences every shard at one timestamp T (a linearizable read of the
    /// whole key space) and waits until this node's replica of each
    /// applied it. Returns T, the shards in key order and the version of
    /// the map they were listed from.
    async fn fence_here(
        &self,
        view: &Arc<ShardView>,
    ) -> Result<(i64, Vec<GroupId>, u64), RequestError> {
        let everything = RangeRequest {
            key: Bytes::from_static(b"\0"),
            range_end: Bytes::from_static(b"\0"),
            count_only: true,
            ..RangeRequest::default()
        };
        let at = self
            .range(everything, false)
            .await?
            .header
            .map_or(0, |h| h.revision);
        let deadline = Instant::now() + Duration::from_millis(self.config.request_timeout_ms);
        loop {
            let version = view.version();
            let shards: Vec<GroupId> = view.get().groups().map(GroupId).collect();
            let (reply, rx) = oneshot::channel();
            let wanted = shards.clone();
            self.input(crate::core::Input::QueryAll(Box::new(move |stores| {
                let behind: Vec<GroupId> = wanted
                    .iter()
                    .filter(|id| {
                        !stores
                            .iter()
                            .any(|(g, kv)| g == *id && kv.shard().is_some() && kv.revision() >= at)
                    })
                    .copied()
                    .collect();
                let _ = reply.send(behind);
            })))?;
            let behind = self.wait(rx).await?;
            if behind.is_empty() {
                return Ok((at, shards, version));
            }
            if Instant::now() >= deadline {
                return Err(RequestError::Refused(format!(
                    "etcdserver: shards {behind:?} on this member have not applied revision {at} \
                     yet; ask another member or try again"
                )));
            }
            tokio::time::sleep(APPLIED_POLL).await;
        }
    }
}

/// The file thread: opens a read transaction per group, says whether
/// that worked, then streams the file.
fn write_file(
    storage: &Storage,
    plan: Plan,
    piece_bytes: usize,
    opened: oneshot::Sender<Result<(), Opening>>,
    tx: &mpsc::Sender<Result<Bytes, String>>,
) {
    let mut readers: Vec<(GroupId, Option<i64>, SnapshotReader)> = Vec::new();
    for (group, cut) in &plan.groups {
        match storage.snapshot_reader(*group) {
            Ok(r) => readers.push((*group, *cut, r)),
            Err(e) => {
                let _ = opened.send(Err(Opening::Failed(e.to_string())));
                return;
            }
        }
    }
    // A split that applied after the groups were listed may have moved
    // keys out of a shard before its transaction opened (the map changes
    // before the split's write commits).
    if let Some((view, version)) = &plan.view {
        if view.version() != *version {
            let _ = opened.send(Err(Opening::Split));
            return;
        }
    }
    if opened.send(Ok(())).is_err() {
        return;
    }
    if let Err(e) = stream_file(readers, plan.shards_text.as_deref(), piece_bytes, tx) {
        let _ = tx.blocking_send(Err(e));
    }
}

/// Streams the file's records; `Ok` also when the receiver went away.
fn stream_file(
    readers: Vec<(GroupId, Option<i64>, SnapshotReader)>,
    shards_text: Option<&str>,
    piece_bytes: usize,
    tx: &mpsc::Sender<Result<Bytes, String>>,
) -> Result<(), String> {
    let send = |piece: Vec<u8>| tx.blocking_send(Ok(piece.into())).is_ok();
    let (mut writer, mut head) = crate::SnapshotFileWriter::new();
    if let Some(text) = shards_text {
        head.extend(writer.shards(text));
    }
    if !send(head) {
        return Ok(());
    }
    for (group, cut, mut reader) in readers {
        if shards_text.is_some() && !send(writer.group(group)) {
            return Ok(());
        }
        let mut met_meta = false;
        while let Some(chunk) = reader.next_chunk(piece_bytes).map_err(|e| e.to_string())? {
            let rows = match cut {
                None => chunk.data,
                Some(at) => cut_chunk(&chunk.data, at, &mut met_meta)
                    .map_err(|e| format!("etcdserver: cutting {group} at revision {at}: {e}"))?,
            };
            if !rows.is_empty() && !send(writer.rows(&rows)) {
                return Ok(());
            }
        }
        if cut.is_some() && !met_meta {
            return Err(format!("etcdserver: {group} holds no state on this member"));
        }
    }
    send(writer.finish());
    Ok(())
}

/// One chunk of a shard's rows, cut at revision `at`.
fn cut_chunk(data: &[u8], at: i64, met_meta: &mut bool) -> Result<Bytes, String> {
    let mut out = Vec::with_capacity(data.len());
    let mut failed = None;
    for_each_row(data, |key, value| {
        if failed.is_some() {
            return;
        }
        match cut_row(key, value, at) {
            Ok(CutRow::Keep) => push_row(&mut out, key, value),
            Ok(CutRow::Drop) => {}
            Ok(CutRow::Replace(v)) => {
                *met_meta = true;
                push_row(&mut out, key, &v);
            }
            Err(e) => failed = Some(e),
        }
    })?;
    match failed {
        Some(e) => Err(e),
        None => Ok(out.into()),
    }
}
