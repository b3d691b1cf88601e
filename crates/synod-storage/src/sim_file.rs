//! An in-memory file that loses what was not synced: the disk a simulation
//! (or a crash test) runs the real storage code on.
//!
//! Writes and length changes go to the live image at once, and the ranges
//! they touched are remembered; `sync_data` copies those ranges of the live
//! image onto the durable one (everything written before a sync is durable
//! after it, so the newest bytes are the right ones). A crash keeps only
//! the durable image, as a power cut keeps only what the last fsync made
//! durable (unsynced writes are lost whole, never torn: redb's own crash
//! tests model the same).

use crate::error::StorageError;
use crate::types::Identity;
use crate::Storage;
use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

#[derive(Debug, Default)]
struct Images {
    live: Vec<u8>,
    durable: Vec<u8>,
    /// Byte ranges written since the last sync.
    dirty: Vec<(usize, usize)>,
    syncs: u64,
    /// The process that had this file open died: every later call fails,
    /// so a database dropped after the crash gives up at once instead of
    /// writing its shutdown state into a file nobody will read.
    dead: bool,
}

/// An in-memory file with a durable image; clones share the file.
#[derive(Debug, Clone, Default)]
pub struct SimulatedFile(Arc<Mutex<Images>>);

fn out_of_range() -> io::Error {
    io::Error::new(io::ErrorKind::UnexpectedEof, "access past the end")
}

impl SimulatedFile {
    /// An empty file.
    pub fn new() -> SimulatedFile {
        SimulatedFile::default()
    }

    /// Fsyncs so far.
    pub fn syncs(&self) -> u64 {
        self.images().syncs
    }

    /// The process died: a new file holding only the durable image. The
    /// old handle (and a database still open on it) writes into nothing
    /// that survives.
    pub fn crash(&self) -> SimulatedFile {
        let survivor = self.durable_copy();
        self.images().dead = true;
        survivor
    }

    /// What a crash now would leave, as a new file, while this one goes on
    /// (a test looks at the durable image between writes).
    pub fn durable_copy(&self) -> SimulatedFile {
        let durable = self.images().durable.clone();
        SimulatedFile(Arc::new(Mutex::new(Images {
            live: durable.clone(),
            durable,
            ..Images::default()
        })))
    }

    /// Opens synod's storage on this file, with the identity and format
    /// checks of [`Storage::open`].
    pub fn open(&self, identity: Identity) -> Result<Storage, StorageError> {
        let name = PathBuf::from("simulated.redb");
        let db = redb::Builder::new()
            .create_with_backend(self.clone())
            .map_err(|e| StorageError::redb(&name, e))?;
        Storage::from_database(db, name, identity)
    }

    fn images(&self) -> std::sync::MutexGuard<'_, Images> {
        self.0.lock().expect("simulated file lock")
    }

    /// The images, unless the file's process died.
    fn alive(&self) -> io::Result<std::sync::MutexGuard<'_, Images>> {
        let images = self.images();
        if images.dead {
            return Err(io::Error::other(
                "the process that opened this file crashed",
            ));
        }
        Ok(images)
    }
}

impl redb::StorageBackend for SimulatedFile {
    fn len(&self) -> io::Result<u64> {
        Ok(self.alive()?.live.len() as u64)
    }

    fn read(&self, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        let images = self.alive()?;
        let start = usize::try_from(offset).map_err(|_| out_of_range())?;
        let end = start.checked_add(len).ok_or_else(out_of_range)?;
        Ok(images
            .live
            .get(start..end)
            .ok_or_else(out_of_range)?
            .to_vec())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        let mut images = self.alive()?;
        let n = usize::try_from(len).map_err(|_| out_of_range())?;
        images.live.resize(n, 0);
        Ok(())
    }

    fn sync_data(&self, _eventual: bool) -> io::Result<()> {
        let images = &mut *self.alive()?;
        let len = images.live.len();
        images.durable.resize(len, 0);
        for (start, end) in images.dirty.drain(..) {
            let end = end.min(len);
            if start < end {
                images.durable[start..end].copy_from_slice(&images.live[start..end]);
            }
        }
        images.syncs += 1;
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        let mut images = self.alive()?;
        let start = usize::try_from(offset).map_err(|_| out_of_range())?;
        let end = start.checked_add(data.len()).ok_or_else(out_of_range)?;
        images
            .live
            .get_mut(start..end)
            .ok_or_else(out_of_range)?
            .copy_from_slice(data);
        images.dirty.push((start, end));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use redb::StorageBackend;

    #[test]
    fn a_crash_keeps_exactly_what_was_synced() {
        let f = SimulatedFile::new();
        f.set_len(8).unwrap();
        f.write(0, b"abcd").unwrap();
        f.sync_data(false).unwrap();
        f.write(4, b"efgh").unwrap();
        f.set_len(16).unwrap();
        assert_eq!(f.read(0, 8).unwrap(), b"abcdefgh");
        let after = f.crash();
        assert_eq!(after.len().unwrap(), 8);
        assert_eq!(after.read(0, 8).unwrap(), b"abcd\0\0\0\0");
        assert!(after.read(4, 8).is_err(), "past the durable end");
        assert!(f.read(0, 1).is_err(), "the dead process's handle fails");
    }
}
