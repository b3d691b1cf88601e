//! The one error type of the storage layer.
//!
//! Every variant says what happened and what an operator should do, because
//! these errors end up printed by the CLI when a node refuses to start. A
//! storage error while a node runs is fail-stop: the runtime stops the
//! replica rather than retrying a write whose outcome it cannot know.

use crate::types::Identity;
use std::path::PathBuf;

/// Why a storage operation failed. Every failed operation leaves the durable
/// state as it was (a batch that failed is rolled back whole).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    /// The data dir could not be created or read.
    #[error(
        "cannot use data dir {path}: {source}; check that it exists and is writable by this user"
    )]
    Io {
        /// The path that failed.
        path: PathBuf,
        /// The operating system's reason.
        #[source]
        source: std::io::Error,
    },

    /// Another process (or another `Storage` in this one) holds the file lock.
    #[error(
        "{file} is locked: is another synod using this data dir? \
         Stop it, or give this node its own data dir"
    )]
    Locked {
        /// The database file.
        file: PathBuf,
    },

    /// The data dir was created by a different node or cluster.
    #[error(
        "data dir {dir} belongs to {stored}, not {requested} ({which} differs); \
         point this node at its own data dir or fix its cluster/node id"
    )]
    IdentityMismatch {
        /// The data dir.
        dir: PathBuf,
        /// The identity recorded in the data dir.
        stored: Identity,
        /// The identity this node was started with.
        requested: Identity,
        /// Which part differs: "cluster id", "node id" or "cluster id and node id".
        which: &'static str,
    },

    /// The database was written in an on-disk format this build cannot read.
    #[error(
        "{file} uses storage format version {found}, but this synod reads only version {supported}; \
         run the synod release that wrote it"
    )]
    UnsupportedFormat {
        /// The database file.
        file: PathBuf,
        /// The version recorded in the file.
        found: u32,
        /// The version this build reads and writes.
        supported: u32,
    },

    /// A stored value failed its checksum or does not decode. The data on this
    /// node cannot be trusted, so the replica must stop rather than vote with it.
    #[error(
        "corrupt data in {file}, table {table}, key {key}: {reason}; \
         this replica must stop: do not edit the file, replace this node's data from its peers"
    )]
    Corrupt {
        /// The database file.
        file: PathBuf,
        /// The table holding the bad value.
        table: &'static str,
        /// The key of the bad value, readable (e.g. "group 3 slot 17").
        key: String,
        /// What is wrong with it.
        reason: String,
    },

    /// An earlier call on this batch failed, so the batch was rolled back and
    /// nothing in it will be written.
    #[error("an earlier write in this batch to {file} failed; the whole batch was rolled back")]
    BatchFailed {
        /// The database file.
        file: PathBuf,
    },

    /// redb reported an error (I/O failure, full disk, damaged file).
    #[error("database {file}: {source}; the node must stop: check the disk (full, read-only or failing?)")]
    Database {
        /// The database file.
        file: PathBuf,
        /// redb's error (boxed: it is several times larger than every other
        /// variant, and would make every `Result` of this crate that large).
        #[source]
        source: Box<redb::Error>,
    },
}

impl StorageError {
    /// Wraps a redb error, singling out the lock conflict because it has a
    /// different remedy from a failing disk.
    pub(crate) fn redb(file: &std::path::Path, error: impl Into<redb::Error>) -> StorageError {
        match error.into() {
            redb::Error::DatabaseAlreadyOpen => StorageError::Locked {
                file: file.to_path_buf(),
            },
            source => StorageError::Database {
                file: file.to_path_buf(),
                source: Box::new(source),
            },
        }
    }
}
