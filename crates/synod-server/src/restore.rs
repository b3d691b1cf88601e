//! Snapshot files (`etcdctl snapshot save`'s output) and building a data
//! dir from one: the way to recover a cluster from a backup, or to start a
//! new cluster with an old one's data.
//!
//! A file is written as it is read from storage read transactions, chunk
//! by chunk, and restored the same way (through storage stages, made live
//! only once the checksum holds), so neither side holds the data set in
//! memory:
//!
//! ```text
//!  "SYNODSN2" │ [shards: split points] │ ([group id] (rows) …) … │ end │
//!  zeros to a whole 512-byte page │ SHA-256 of everything before
//!
//!  record: kind u8, len u64 LE, payload
//!    0 end (len 0)   1 rows   2 group id (u64 LE)   3 the data dir's
//!    `shards` file (a sharded cluster's split points)
//! ```
//!
//! A file of one group has no group record: its rows are the meta group's.
//! A sharded cluster's file holds the meta group's rows, then every
//! shard's cut at one revision (design 0020), each behind its group
//! record.
//!
//! Files from earlier versions (`SYNODSNP`: one encoded `synodpb.Snapshot`)
//! still restore.

use crate::core::GROUP;
use crate::shards::ShardMap;
use sha2::{Digest, Sha256};
use std::collections::BTreeSet;
use std::io::Read;
use std::path::Path;
use synod_paxos::Slot;
use synod_storage::{GroupId, Identity, Received, Storage, StreamChunk};

/// Length of the SHA-256 that ends a snapshot file.
pub const SNAPSHOT_HASH_BYTES: usize = 32;
/// Why a snapshot could not be restored.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RestoreError {
    /// The file is damaged, truncated or not a synod snapshot.
    #[error("snapshot file is corrupt: {0}")]
    Corrupt(String),
    /// The data dir already holds a node's data.
    #[error("data dir {0} already holds data; restore needs an empty one")]
    NotEmpty(std::path::PathBuf),
    /// The file could not be read.
    #[error("cannot read the snapshot file: {0}")]
    Io(#[from] std::io::Error),
    /// The data dir could not be written.
    #[error(transparent)]
    Storage(#[from] synod_storage::StorageError),
}

/// The first bytes of a file from an earlier version.
const MAGIC_V1: &[u8; 8] = b"SYNODSNP";
/// The first bytes of a snapshot file.
const MAGIC: &[u8; 8] = b"SYNODSN2";
/// etcd's tools expect the body before the checksum to be whole 512-byte
/// pages (a bbolt file); ours is padded to match, so `etcdctl snapshot
/// save` accepts it.
const PAGE: usize = 512;
const KIND_END: u8 = 0;
const KIND_ROWS: u8 = 1;
const KIND_GROUP: u8 = 2;
const KIND_SHARDS: u8 = 3;
/// The longest `shards` record accepted (split points of a cluster's
/// first shards; the data dir's file is far smaller).
const SHARDS_RECORD_MAX: u64 = 1 << 20;

/// What a restore built.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Restored {
    /// The revision the key space was restored at: the one every shard
    /// was cut at in a sharded file, the meta group's otherwise.
    pub revision: i64,
    /// The groups restored: 1 unsharded, the meta group and every shard
    /// otherwise.
    pub groups: usize,
    /// A sharded cluster's split points, as `--split-at` takes them (empty
    /// for one started with `--shards auto`): every member of the new
    /// cluster starts with them. `None` unsharded.
    pub split_points: Option<Vec<String>>,
}

/// Writes a snapshot file piece by piece, hashing as it goes.
#[derive(Debug)]
pub struct SnapshotFileWriter {
    hash: Sha256,
    written: u64,
}

impl SnapshotFileWriter {
    /// A writer and the file's first bytes.
    pub fn new() -> (SnapshotFileWriter, Vec<u8>) {
        let mut writer = SnapshotFileWriter {
            hash: Sha256::new(),
            written: 0,
        };
        let head = writer.account(MAGIC.to_vec());
        (writer, head)
    }

    /// The bytes of one chunk of rows.
    pub fn rows(&mut self, rows: &[u8]) -> Vec<u8> {
        self.record(KIND_ROWS, rows)
    }

    /// The bytes that say the rows after them are group `id`'s (a
    /// sharded cluster's file; every group's rows follow its record).
    pub fn group(&mut self, id: GroupId) -> Vec<u8> {
        self.record(KIND_GROUP, &id.0.to_le_bytes())
    }

    /// The bytes that carry a sharded cluster's `shards` file (its split
    /// points), before any group.
    pub fn shards(&mut self, text: &str) -> Vec<u8> {
        self.record(KIND_SHARDS, text.as_bytes())
    }

    fn record(&mut self, kind: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(9 + payload.len());
        out.push(kind);
        out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
        out.extend_from_slice(payload);
        self.account(out)
    }

    /// The file's last bytes: the end record, padding and checksum.
    pub fn finish(mut self) -> Vec<u8> {
        let mut out = vec![KIND_END];
        out.extend_from_slice(&0u64.to_le_bytes());
        let body = self.written + out.len() as u64;
        let padded = body.div_ceil(PAGE as u64) * PAGE as u64;
        out.resize(out.len() + (padded - body) as usize, 0);
        let mut out = self.account(out);
        out.extend_from_slice(&self.hash.finalize());
        out
    }

    fn account(&mut self, bytes: Vec<u8>) -> Vec<u8> {
        self.hash.update(&bytes);
        self.written += bytes.len() as u64;
        bytes
    }
}

/// Writes the snapshot file at `path` into a new data dir for node
/// `identity`, every group as the state before the first slot of a fresh
/// log. Every member of the new cluster restores the same file, so they
/// start identical. Nothing is made live unless the whole file checks
/// out.
pub fn restore_snapshot(
    dir: &Path,
    identity: Identity,
    path: &Path,
) -> Result<Restored, RestoreError> {
    restore_snapshot_with_progress(dir, identity, path, &mut |_, _| {})
}

/// [`restore_snapshot`], telling `progress(bytes read, file size)` after
/// each record, so that restoring gigabytes shows it is moving.
pub fn restore_snapshot_with_progress(
    dir: &Path,
    identity: Identity,
    path: &Path,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<Restored, RestoreError> {
    if dir.join(synod_storage::format::FILE_NAME).exists() {
        return Err(RestoreError::NotEmpty(dir.to_path_buf()));
    }
    let mut file = std::fs::File::open(path)?;
    let len = file.metadata()?.len();
    let mut magic = [0u8; 8];
    file.read_exact(&mut magic)
        .map_err(|_| corrupt("too short to be a synod snapshot"))?;
    let storage = match &magic {
        m if m == MAGIC_V1 => None,
        m if m == MAGIC => Some(Storage::open(dir, identity)?),
        _ => return Err(corrupt("not a synod snapshot (bad magic)")),
    };
    let Some(storage) = storage else {
        let mut whole = magic.to_vec();
        file.read_to_end(&mut whole)?;
        return restore_v1(dir, identity, &whole);
    };
    let result = restore_rows(&storage, dir, file, len, progress);
    if result.is_err() {
        // Leave the dir as it was: nothing of a bad file is kept.
        drop(storage);
        let _ = std::fs::remove_file(dir.join(synod_storage::format::FILE_NAME));
        let _ = std::fs::remove_file(dir.join(crate::node::SHARDS_FILE));
    }
    result
}

/// The group the file's rows are going to, and how many chunks it got.
struct Incoming {
    group: GroupId,
    chunks: u64,
}

/// Reads the records after the magic into one stage per group, checks
/// the padding and the checksum, then installs every stage in one batch.
fn restore_rows(
    storage: &Storage,
    dir: &Path,
    file: std::fs::File,
    len: u64,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<Restored, RestoreError> {
    let body = len
        .checked_sub(SNAPSHOT_HASH_BYTES as u64)
        .filter(|b| *b >= MAGIC.len() as u64)
        .ok_or_else(|| corrupt("too short to be a synod snapshot"))?;
    let mut hash = Sha256::new();
    hash.update(MAGIC);
    let mut input = std::io::BufReader::new(file).take(body - MAGIC.len() as u64);
    let mut held: Option<Vec<u8>> = None;
    // Rows before any group record are the meta group's (a file of one
    // group has none).
    let mut incoming = Incoming {
        group: GROUP,
        chunks: 0,
    };
    let mut seen = BTreeSet::new();
    let mut staged = Vec::new();
    let mut shards_text: Option<String> = None;
    loop {
        let mut head = [0u8; 9];
        input
            .read_exact(&mut head)
            .map_err(|_| corrupt("the file ends inside a record"))?;
        hash.update(head);
        let size = u64::from_le_bytes(head[1..].try_into().expect("8 bytes"));
        let kind = head[0];
        match (kind, size) {
            (KIND_END, 0) | (KIND_GROUP, 8) => {}
            // A length the rest of the file cannot hold is refused before
            // its buffer is allocated.
            (KIND_ROWS | KIND_SHARDS, n) if n > input.limit() => {
                return Err(corrupt("the file ends inside a record"))
            }
            (KIND_ROWS, n) if n as usize <= synod_storage::stream::CHUNK_BYTES_MAX => {}
            (KIND_SHARDS, n) if n <= SHARDS_RECORD_MAX => {}
            (kind, n) => return Err(corrupt(&format!("a record of kind {kind} and {n} bytes"))),
        }
        // Held rows are their group's last chunk unless more rows follow.
        if let Some(rows) = held.take() {
            let chunk = StreamChunk {
                index: incoming.chunks,
                last: kind != KIND_ROWS,
                data: rows.into(),
            };
            incoming.chunks += 1;
            match storage.receive_chunk(incoming.group, Slot(0), &chunk)? {
                Received::Refused(why) => return Err(corrupt(&why)),
                Received::Partial => {}
                Received::Complete { stage } => staged.push((incoming.group, stage)),
            }
        }
        let mut payload = vec![0u8; size as usize];
        input
            .read_exact(&mut payload)
            .map_err(|_| corrupt("the file ends inside a record"))?;
        hash.update(&payload);
        match kind {
            KIND_END => break,
            KIND_ROWS => {
                if incoming.chunks == 0 && !seen.insert(incoming.group) {
                    return Err(corrupt(&format!("{} appears twice", incoming.group)));
                }
                held = Some(payload);
            }
            KIND_GROUP => {
                let id = GroupId(u64::from_le_bytes(payload[..].try_into().expect("8 bytes")));
                if seen.contains(&id) {
                    return Err(corrupt(&format!("{id} appears twice")));
                }
                incoming = Incoming {
                    group: id,
                    chunks: 0,
                };
            }
            _ => {
                // KIND_SHARDS: the split points, before any group.
                let text = String::from_utf8(payload)
                    .ok()
                    .filter(|t| t.starts_with(crate::node::SHARDS_HEADER))
                    .ok_or_else(|| corrupt("the split points are malformed"))?;
                if shards_text.is_some() || !seen.is_empty() {
                    return Err(corrupt("the split points come after the rows"));
                }
                shards_text = Some(text);
            }
        }
        progress(len - SNAPSHOT_HASH_BYTES as u64 - input.limit(), len);
    }
    let mut padding = Vec::new();
    input.read_to_end(&mut padding)?;
    if padding.len() >= PAGE || padding.iter().any(|b| *b != 0) {
        return Err(corrupt("bytes after the end record"));
    }
    hash.update(&padding);
    let mut stored = [0u8; SNAPSHOT_HASH_BYTES];
    input.into_inner().read_exact(&mut stored)?;
    if hash.finalize().as_slice() != stored {
        return Err(corrupt(
            "SHA-256 does not match: the file is damaged or truncated",
        ));
    }
    if !seen.contains(&GROUP) {
        return Err(corrupt("no rows"));
    }
    let sharded = seen.len() > 1 || shards_text.is_some();
    if sharded && shards_text.is_none() {
        return Err(corrupt("a file of several groups without its split points"));
    }
    let restored = check_staged(storage, &staged, sharded)?;
    if let Some(text) = &shards_text {
        std::fs::write(dir.join(crate::node::SHARDS_FILE), text)?;
    }
    let mut batch = storage.batch()?;
    for (group, stage) in &staged {
        batch.install_staged(*group, *stage)?;
        batch.set_applied(*group, Slot(0))?;
    }
    batch.require_sync();
    batch.commit()?;
    Ok(Restored {
        split_points: shards_text.map(|t| {
            t.trim_start_matches(crate::node::SHARDS_HEADER)
                .lines()
                .map(str::to_string)
                .collect()
        }),
        ..restored
    })
}

/// Loads every stage (each store's invariants are checked as it loads)
/// and, in a sharded file, checks that the shards tile the key space.
fn check_staged(
    storage: &Storage,
    staged: &[(GroupId, u64)],
    sharded: bool,
) -> Result<Restored, RestoreError> {
    let mut revision = 0;
    let mut shards = Vec::new();
    let mut cuts = BTreeSet::new();
    for (group, stage) in staged {
        let kv = storage
            .load_staged(*group, *stage)
            .map_err(|e| corrupt(&e.to_string()))?;
        if *group == GROUP {
            revision = kv.revision();
            continue;
        }
        cuts.insert(kv.revision());
        let shard = kv
            .shard()
            .cloned()
            .ok_or_else(|| corrupt(&format!("{group} holds no shard")))?;
        shards.push((group.0, shard));
    }
    if sharded {
        let replicas = shards.iter().map(|(id, s)| (*id, Some(s)));
        let tiled =
            ShardMap::from_replicas(replicas).is_some_and(|m| m.groups().count() == shards.len());
        if shards.is_empty() || !tiled {
            return Err(corrupt("the shards do not tile the key space"));
        }
        // Every shard was cut at one revision (design 0020).
        match (cuts.first(), cuts.last()) {
            (Some(low), Some(high)) if low == high => revision = *low,
            (low, high) => {
                return Err(corrupt(&format!(
                    "the shards stand at revisions {low:?} to {high:?}, not at one cut"
                )))
            }
        }
    }
    Ok(Restored {
        revision,
        groups: staged.len(),
        split_points: None,
    })
}

/// Restores a file from an earlier version: one encoded state machine.
fn restore_v1(dir: &Path, identity: Identity, file: &[u8]) -> Result<Restored, RestoreError> {
    if file.len() < MAGIC_V1.len() + 8 + SNAPSHOT_HASH_BYTES {
        return Err(corrupt("too short to be a synod snapshot"));
    }
    let (body, hash) = file.split_at(file.len() - SNAPSHOT_HASH_BYTES);
    if Sha256::digest(body).as_slice() != hash {
        return Err(corrupt(
            "SHA-256 does not match: the file is damaged or truncated",
        ));
    }
    let len = u64::from_le_bytes(body[8..16].try_into().expect("8 bytes")) as usize;
    let data = body
        .get(16..16usize.saturating_add(len))
        .ok_or_else(|| corrupt("length field exceeds the file"))?;
    let mut kv = synod_kv::KvStore::decode_snapshot(bytes::Bytes::copy_from_slice(data))
        .map_err(RestoreError::Corrupt)?;
    let revision = kv.revision();
    let storage = Storage::open(dir, identity)?;
    kv.attach(storage.state(GROUP)?, true);
    let mut batch = storage.batch()?;
    batch.write_state(GROUP, &kv.take_changes())?;
    batch.set_applied(GROUP, Slot(0))?;
    batch.require_sync();
    batch.commit()?;
    Ok(Restored {
        revision,
        groups: 1,
        split_points: None,
    })
}

fn corrupt(why: &str) -> RestoreError {
    RestoreError::Corrupt(why.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use synod_storage::stream::push_row;

    fn identity() -> Identity {
        Identity {
            cluster_id: 7,
            node_id: 1,
        }
    }

    /// A file of a store with one key, as the node writes it.
    fn file_of_one_key() -> Vec<u8> {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(dir.path(), identity()).unwrap();
        let mut kv = synod_kv::KvStore::default();
        kv.attach(storage.state(GROUP).unwrap(), true);
        let put = synod_proto::synodpb::Command {
            client: 1,
            seq: 1,
            op: Some(synod_proto::synodpb::command::Op::Put(
                synod_proto::etcdserverpb::PutRequest {
                    key: b"k".to_vec().into(),
                    value: vec![7u8; 300].into(),
                    ..Default::default()
                },
            )),
            ..Default::default()
        };
        kv.apply(&put);
        let mut batch = storage.batch().unwrap();
        batch.write_state(GROUP, &kv.take_changes()).unwrap();
        batch.set_applied(GROUP, Slot(1)).unwrap();
        batch.commit().unwrap();
        let mut reader = storage.snapshot_reader(GROUP).unwrap();
        let (mut writer, mut file) = SnapshotFileWriter::new();
        while let Some(chunk) = reader.next_chunk(64).unwrap() {
            file.extend(writer.rows(&chunk.data));
        }
        file.extend(writer.finish());
        file
    }

    fn restore(file: &[u8]) -> Result<Restored, RestoreError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("snap.db");
        std::fs::write(&path, file).unwrap();
        restore_snapshot(&dir.path().join("data"), identity(), &path)
    }

    /// The rows of a store, as a snapshot reader streams them.
    fn rows_of(storage: &Storage, group: GroupId, kv: &mut synod_kv::KvStore) -> Vec<u8> {
        kv.attach(storage.state(group).unwrap(), true);
        let mut batch = storage.batch().unwrap();
        batch.write_state(group, &kv.take_changes()).unwrap();
        batch.set_applied(group, Slot(1)).unwrap();
        batch.commit().unwrap();
        let mut reader = storage.snapshot_reader(group).unwrap();
        let mut rows = Vec::new();
        while let Some(chunk) = reader.next_chunk(1 << 20).unwrap() {
            rows.extend_from_slice(&chunk.data);
        }
        rows
    }

    /// A sharded cluster's file: the meta group, then shards cut at
    /// `splits` (each a group of its own), with the split points record.
    fn sharded_file(splits: &[&[u8]], points: Option<&str>, extra: Option<GroupId>) -> Vec<u8> {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(dir.path(), identity()).unwrap();
        let (mut writer, mut file) = SnapshotFileWriter::new();
        if let Some(p) = points {
            file.extend(writer.shards(p));
        }
        file.extend(writer.rows(&rows_of(&storage, GROUP, &mut synod_kv::KvStore::default())));
        let mut starts: Vec<bytes::Bytes> = vec![bytes::Bytes::new()];
        starts.extend(splits.iter().map(|s| bytes::Bytes::copy_from_slice(s)));
        let mut groups: Vec<GroupId> = (2..=starts.len() as u64 + 1).map(GroupId).collect();
        groups.extend(extra);
        for (i, id) in groups.iter().enumerate() {
            let i = i.min(starts.len() - 1);
            let mut kv = synod_kv::KvStore::default();
            kv.set_shard_if_unset(synod_kv::Shard::new(
                starts[i].clone(),
                starts.get(i + 1).cloned(),
            ));
            file.extend(writer.group(*id));
            file.extend(writer.rows(&rows_of(&storage, *id, &mut kv)));
        }
        file.extend(writer.finish());
        file
    }

    #[test]
    fn sharded_files_restore_every_shard_or_nothing() {
        let points = format!("{}/g\n/p\n", crate::node::SHARDS_HEADER);
        let good = sharded_file(&[b"/g", b"/p"], Some(&points), None);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("snap.db");
        std::fs::write(&path, &good).unwrap();
        let data = dir.path().join("data");
        let restored = restore_snapshot(&data, identity(), &path).unwrap();
        assert_eq!(restored.groups, 4);
        assert_eq!(
            restored.split_points,
            Some(vec!["/g".to_string(), "/p".to_string()])
        );
        assert_eq!(
            std::fs::read_to_string(data.join(crate::node::SHARDS_FILE)).unwrap(),
            points
        );
        let storage = Storage::open(&data, identity()).unwrap();
        assert_eq!(storage.groups().unwrap().len(), 4);
        for g in 2..=4 {
            assert!(storage.load_store(GroupId(g)).unwrap().shard().is_some());
        }
        drop(storage);
        // A shard missing, two shards over one range, no split points, a
        // group twice: refused, and nothing is left behind.
        let refusals = [
            (
                sharded_file(&[b"/g", b"/p"], None, None),
                "without its split points",
            ),
            (
                sharded_file(&[b"/g", b"/p"], Some(&points), Some(GroupId(9))),
                "tile",
            ),
            (
                sharded_file(&[b"/g", b"/p"], Some(&points), Some(GroupId(3))),
                "twice",
            ),
        ];
        for (file, why) in refusals {
            let e = restore(&file).unwrap_err().to_string();
            assert!(e.contains(why), "{e}");
        }
        // Split points and no rows: nothing is left behind, not even the
        // shards file.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("snap.db");
        let (mut writer, mut file) = SnapshotFileWriter::new();
        file.extend(writer.shards(&points));
        file.extend(writer.finish());
        std::fs::write(&path, &file).unwrap();
        let e = restore_snapshot(&dir.path().join("data"), identity(), &path).unwrap_err();
        assert!(e.to_string().contains("no rows"), "{e}");
        assert!(!dir
            .path()
            .join("data")
            .join(crate::node::SHARDS_FILE)
            .exists());
    }

    #[test]
    fn files_restore_and_damage_is_caught() {
        let file = file_of_one_key();
        assert_eq!((file.len() - SNAPSHOT_HASH_BYTES) % PAGE, 0);
        assert_eq!(restore(&file).unwrap().revision, 2);
        let mut bad = file.clone();
        bad[20] ^= 1;
        assert!(restore(&bad).is_err());
        assert!(restore(&file[..file.len() - 1]).is_err());
        assert!(restore(b"short").is_err());
        let mut rows = Vec::new();
        push_row(&mut rows, b"x", b"y");
        let (mut writer, mut junk) = SnapshotFileWriter::new();
        junk.extend(writer.rows(&rows));
        junk.extend(writer.finish());
        let e = restore(&junk).unwrap_err().to_string();
        assert!(e.contains("meta row"), "{e}");
    }
}
