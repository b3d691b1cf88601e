//! Snapshot files (`etcdctl snapshot save`'s output) and building a data
//! dir from one: the way to recover a cluster from a backup, or to start a
//! new cluster with an old one's data.
//!
//! A file is written as it is read from a storage read transaction, chunk
//! by chunk, and restored the same way (through a storage stage, made live
//! only once the checksum holds), so neither side holds the data set in
//! memory:
//!
//! ```text
//!  "SYNODSN2" │ (kind 1, len u64 LE, rows) … │ (kind 0, len 0) │ zeros to a
//!  whole 512-byte page │ SHA-256 of everything before
//! ```
//!
//! Files from earlier versions (`SYNODSNP`: one encoded `synodpb.Snapshot`)
//! still restore.

use crate::core::GROUP;
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::Path;
use synod_paxos::Slot;
use synod_storage::{Identity, Received, Storage, StreamChunk};

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
        let mut out = Vec::with_capacity(9 + rows.len());
        out.push(KIND_ROWS);
        out.extend_from_slice(&(rows.len() as u64).to_le_bytes());
        out.extend_from_slice(rows);
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
/// `identity`, as the state before the first slot of a fresh log, and
/// returns its revision. Every member of the new cluster restores the
/// same file, so they start identical. Nothing is made live unless the
/// whole file checks out.
pub fn restore_snapshot(dir: &Path, identity: Identity, path: &Path) -> Result<i64, RestoreError> {
    restore_snapshot_with_progress(dir, identity, path, &mut |_, _| {})
}

/// [`restore_snapshot`], telling `progress(bytes read, file size)` after
/// each record, so that restoring gigabytes shows it is moving.
pub fn restore_snapshot_with_progress(
    dir: &Path,
    identity: Identity,
    path: &Path,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<i64, RestoreError> {
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
    let result = restore_rows(&storage, file, len, progress);
    if result.is_err() {
        // Leave the dir as it was: nothing of a bad file is kept.
        drop(storage);
        let _ = std::fs::remove_file(dir.join(synod_storage::format::FILE_NAME));
    }
    result
}

/// Reads the records after the magic into a stage, checks the padding and
/// the checksum, then installs the stage.
fn restore_rows(
    storage: &Storage,
    file: std::fs::File,
    len: u64,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<i64, RestoreError> {
    let body = len
        .checked_sub(SNAPSHOT_HASH_BYTES as u64)
        .filter(|b| *b >= MAGIC.len() as u64)
        .ok_or_else(|| corrupt("too short to be a synod snapshot"))?;
    let mut hash = Sha256::new();
    hash.update(MAGIC);
    let mut input = std::io::BufReader::new(file).take(body - MAGIC.len() as u64);
    let mut held: Option<Vec<u8>> = None;
    let mut index = 0;
    let mut stage = None;
    loop {
        let mut head = [0u8; 9];
        input
            .read_exact(&mut head)
            .map_err(|_| corrupt("the file ends inside a record"))?;
        hash.update(head);
        let size = u64::from_le_bytes(head[1..].try_into().expect("8 bytes"));
        let last = head[0] == KIND_END;
        match (head[0], size) {
            (KIND_END, 0) => {}
            // A length the rest of the file cannot hold is refused before
            // its buffer is allocated.
            (KIND_ROWS, n) if n > input.limit() => {
                return Err(corrupt("the file ends inside a record"))
            }
            (KIND_ROWS, n) if n as usize <= synod_storage::stream::CHUNK_BYTES_MAX => {}
            (kind, n) => return Err(corrupt(&format!("a record of kind {kind} and {n} bytes"))),
        }
        if let Some(rows) = held.take() {
            let chunk = StreamChunk {
                index,
                last,
                data: rows.into(),
            };
            index += 1;
            match storage.receive_chunk(GROUP, Slot(0), &chunk)? {
                Received::Refused(why) => return Err(corrupt(&why)),
                Received::Partial => {}
                Received::Complete { stage: s } => stage = Some(s),
            }
        }
        if last {
            break;
        }
        let mut rows = vec![0u8; size as usize];
        input
            .read_exact(&mut rows)
            .map_err(|_| corrupt("the file ends inside a record"))?;
        hash.update(&rows);
        held = Some(rows);
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
    let stage = stage.ok_or_else(|| corrupt("no rows"))?;
    let kv = storage
        .load_staged(GROUP, stage)
        .map_err(|e| corrupt(&e.to_string()))?;
    let mut batch = storage.batch()?;
    batch.install_staged(GROUP, stage)?;
    batch.set_applied(GROUP, Slot(0))?;
    batch.require_sync();
    batch.commit()?;
    Ok(kv.revision())
}

/// Restores a file from an earlier version: one encoded state machine.
fn restore_v1(dir: &Path, identity: Identity, file: &[u8]) -> Result<i64, RestoreError> {
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
    Ok(revision)
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

    fn restore(file: &[u8]) -> Result<i64, RestoreError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("snap.db");
        std::fs::write(&path, file).unwrap();
        restore_snapshot(&dir.path().join("data"), identity(), &path)
    }

    #[test]
    fn files_restore_and_damage_is_caught() {
        let file = file_of_one_key();
        assert_eq!((file.len() - SNAPSHOT_HASH_BYTES) % PAGE, 0);
        assert_eq!(restore(&file).unwrap(), 2);
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
