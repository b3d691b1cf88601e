//! Building a data dir from a snapshot file (`etcdctl snapshot save`'s
//! output): the way to recover a cluster from a backup, or to start a new
//! cluster with an old one's data.

use crate::core::GROUP;
use sha2::{Digest, Sha256};
use synod_paxos::Slot;
use synod_storage::{Identity, Storage};

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
    /// The data dir could not be written.
    #[error(transparent)]
    Storage(#[from] synod_storage::StorageError),
}

/// A snapshot file's first bytes.
const MAGIC: &[u8; 8] = b"SYNODSNP";
/// etcd's tools expect the body before the checksum to be whole 512-byte
/// pages (a bbolt file); ours is padded to match, so `etcdctl snapshot
/// save` accepts it.
const PAGE: usize = 512;

/// A snapshot file: `MAGIC`, the state's length (u64, little endian), the
/// encoded state, zero padding to a whole page, then the SHA-256 of all
/// that.
pub fn seal_snapshot(data: &[u8]) -> Vec<u8> {
    let body = MAGIC.len() + 8 + data.len();
    let padded = body.div_ceil(PAGE) * PAGE;
    let mut file = Vec::with_capacity(padded + SNAPSHOT_HASH_BYTES);
    file.extend_from_slice(MAGIC);
    file.extend_from_slice(&(data.len() as u64).to_le_bytes());
    file.extend_from_slice(data);
    file.resize(padded, 0);
    let hash = Sha256::digest(&file);
    file.extend_from_slice(&hash);
    file
}

/// Checks a snapshot file's framing and checksum and returns the state
/// machine it holds (still encoded) and its revision.
pub fn open_snapshot(file: &[u8]) -> Result<(&[u8], i64), RestoreError> {
    let data = snapshot_body(file)?;
    Ok((data, decode(data)?.revision()))
}

/// The encoded state machine in a snapshot file whose framing and
/// checksum hold.
fn snapshot_body(file: &[u8]) -> Result<&[u8], RestoreError> {
    let corrupt = |m: &str| RestoreError::Corrupt(m.to_string());
    if file.len() < MAGIC.len() + 8 + SNAPSHOT_HASH_BYTES {
        return Err(corrupt("too short to be a synod snapshot"));
    }
    let (body, hash) = file.split_at(file.len() - SNAPSHOT_HASH_BYTES);
    if Sha256::digest(body).as_slice() != hash {
        return Err(corrupt(
            "SHA-256 does not match: the file is damaged or truncated",
        ));
    }
    if &body[..MAGIC.len()] != MAGIC {
        return Err(corrupt("not a synod snapshot (bad magic)"));
    }
    let mut len = [0u8; 8];
    len.copy_from_slice(&body[MAGIC.len()..MAGIC.len() + 8]);
    let len = u64::from_le_bytes(len) as usize;
    let start = MAGIC.len() + 8;
    body.get(start..start.saturating_add(len))
        .ok_or_else(|| corrupt("length field exceeds the file"))
}

/// Decodes and validates the state machine of a snapshot file.
fn decode(data: &[u8]) -> Result<synod_kv::KvStore, RestoreError> {
    synod_kv::KvStore::decode_snapshot(bytes::Bytes::copy_from_slice(data))
        .map_err(RestoreError::Corrupt)
}

/// Writes `file`'s state into a new data dir for node `identity`, as the
/// state before the first slot of a fresh log. Every member of the new
/// cluster restores the same file, so they start identical.
pub fn restore_snapshot(
    dir: &std::path::Path,
    identity: Identity,
    file: &[u8],
) -> Result<i64, RestoreError> {
    let mut kv = decode(snapshot_body(file)?)?;
    let revision = kv.revision();
    if dir.join(synod_storage::format::FILE_NAME).exists() {
        return Err(RestoreError::NotEmpty(dir.to_path_buf()));
    }
    let storage = Storage::open(dir, identity)?;
    kv.attach(storage.state(GROUP), true);
    let mut batch = storage.batch()?;
    batch.write_state(GROUP, &kv.take_changes())?;
    batch.set_applied(GROUP, Slot(0))?;
    batch.require_sync();
    batch.commit()?;
    Ok(revision)
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message as _;

    #[test]
    fn sealed_files_open_and_damage_is_caught() {
        let data = synod_kv::KvStore::default().snapshot().encode_to_vec();
        let file = seal_snapshot(&data);
        assert_eq!((file.len() - SNAPSHOT_HASH_BYTES) % PAGE, 0);
        let (opened, revision) = open_snapshot(&file).unwrap();
        assert_eq!(opened, &data[..]);
        assert_eq!(revision, 1);
        let mut bad = file.clone();
        bad[20] ^= 1;
        assert!(open_snapshot(&bad).is_err());
        assert!(open_snapshot(&file[..file.len() - 1]).is_err());
        assert!(open_snapshot(b"short").is_err());
    }
}
