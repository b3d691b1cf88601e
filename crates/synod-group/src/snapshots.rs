//! State-machine snapshots between replicas: sent in chunks to a replica
//! behind the leader's log start, reassembled and checked by the receiver,
//! installed with the log jump in one durable write.
//!
//! ```text
//!   leader: ready.snapshots ─► chunks of `snapshot_chunk_bytes` ─► peer
//!   follower: check each chunk ─► reassemble ─► decode + validate ─► install
//!             (state machine, replica jump, rows and compaction in the next ready)
//! ```

use crate::group::{Group, Incoming};
use crate::types::{Compaction, PeerItem, SnapshotChunk};
use bytes::Bytes;
use prost::Message as _;
use std::collections::BTreeMap;
use synod_kv::KvStore;
use synod_paxos::{Configuration, NodeId, Slot};

/// The largest state-machine snapshot a peer may send: reassembly keeps it
/// in memory, so a sender claiming more is refused before any byte is
/// buffered.
pub const SNAPSHOT_BYTES_MAX: u64 = 16 << 30;
/// The largest snapshot chunk accepted from a peer.
pub const SNAPSHOT_CHUNK_BYTES_MAX: usize = 64 << 20;
/// Bytes reserved up front for a snapshot being received; it grows with
/// the chunks that actually arrive, never with what the sender claims.
const REASSEMBLY_RESERVE_MAX: u64 = 64 << 20;

impl Group {
    /// Sends a snapshot to `to` in chunks: the last one built while it is
    /// not older than the log start (a resend must not change under the
    /// receiver), else one of the state now.
    pub(crate) fn send_snapshot(&mut self, to: NodeId) {
        let fresh = self
            .shipped
            .as_ref()
            .is_none_or(|(slot, _)| *slot < self.compacted);
        if fresh {
            let data = Bytes::from(self.kv.snapshot().encode_to_vec());
            self.shipped = Some((self.applied, data));
        }
        let Some((slot, data)) = self.shipped.clone() else {
            return;
        };
        let membership = self.replica.membership_at(slot);
        let total = data.len();
        let step = self.config.snapshot_chunk_bytes.max(1);
        let mut offset = 0;
        loop {
            let end = (offset + step).min(total);
            let chunk = SnapshotChunk {
                slot,
                offset: offset as u64,
                total: total as u64,
                data: data.slice(offset..end),
                membership: membership.clone(),
            };
            self.sends.push((to, PeerItem::Snapshot(chunk)));
            offset = end;
            if offset >= total {
                return;
            }
        }
    }

    /// Reassembles a snapshot from its chunks, in whatever order they
    /// arrive: chunks ahead of the assembled prefix wait (at most the
    /// announced total, itself bounded), duplicates are skipped, and a
    /// chunk of another snapshot starts over. A resent snapshot (the leader
    /// resends until the replica catches up) fills what was lost.
    pub(crate) fn on_snapshot_chunk(&mut self, chunk: SnapshotChunk) {
        let slot = chunk.slot;
        if !self.replica.wants_snapshot(slot) {
            self.incoming = None;
            return;
        }
        if let Err(why) = check_chunk(&chunk.data, chunk.offset, chunk.total) {
            tracing::warn!(%slot, "snapshot chunk refused: {why}");
            self.incoming = None;
            return;
        }
        let fresh = self
            .incoming
            .as_ref()
            .is_none_or(|i| i.slot != slot || i.total != chunk.total);
        if fresh {
            self.incoming = Some(Incoming {
                slot,
                total: chunk.total,
                data: Vec::with_capacity(chunk.total.min(REASSEMBLY_RESERVE_MAX) as usize),
                ahead: BTreeMap::new(),
                membership: chunk.membership,
            });
        }
        let incoming = self.incoming.as_mut().expect("set above");
        let have = incoming.data.len() as u64;
        if chunk.offset > have {
            // Overlapping chunks ahead could add up to more than the
            // total: refuse to hold more than the snapshot can be.
            let held: u64 = incoming.ahead.values().map(|d| d.len() as u64).sum();
            if have + held + chunk.data.len() as u64 > incoming.total {
                tracing::warn!(%slot, "overlapping snapshot chunks: starting over");
                self.incoming = None;
                return;
            }
            incoming.ahead.insert(chunk.offset, chunk.data);
            return;
        }
        append(&mut incoming.data, chunk.offset, &chunk.data);
        while let Some(entry) = incoming.ahead.first_entry() {
            if *entry.key() > incoming.data.len() as u64 {
                break;
            }
            let (offset, data) = entry.remove_entry();
            append(&mut incoming.data, offset, &data);
        }
        if incoming.data.len() as u64 == incoming.total {
            let done = self.incoming.take().expect("checked above");
            self.install_snapshot(done.slot, Bytes::from(done.data), done.membership);
        }
    }

    /// A whole snapshot from the leader: validate it, replace the state
    /// machine, jump the replica, and write it with the replica's persist
    /// in the next ready (the replica holds every reply that depends on it
    /// until that write is durable).
    fn install_snapshot(&mut self, slot: Slot, data: Bytes, membership: Option<Configuration>) {
        if !self.replica.wants_snapshot(slot) {
            return;
        }
        if let Some(c) = &membership {
            if let Err(e) = c.validate() {
                tracing::warn!(%slot, error = %e, "snapshot with an invalid configuration refused");
                return;
            }
        }
        let kv = match KvStore::decode_snapshot(data.clone()) {
            Ok(kv) => kv,
            Err(e) => {
                tracing::warn!(%slot, error = %e, "malformed snapshot refused");
                return;
            }
        };
        let installed = match membership.clone() {
            Some(configuration) => self
                .replica
                .install_snapshot_with_membership(slot, configuration),
            None => self.replica.install_snapshot(slot),
        };
        assert!(installed, "wanted snapshot refused");
        self.kv.replace(kv);
        self.lessor.reset(&self.kv, self.now.0);
        self.jump = Some(self.kv.revision());
        self.applied = slot;
        self.compacted = slot;
        self.log_bytes = 0;
        self.shipped = Some((slot, data));
        // The rows of the new store replace the old ones in the same write.
        self.compact_out = Some(Compaction { slot, membership });
        self.snapshots_installed += 1;
        self.installed = Some(slot);
        self.members_changed = true;
        self.answer_from_sessions();
        self.serve_reads();
    }
}

/// Appends the part of `bytes` (which start at `offset`, at or before the
/// end of `data`) that `data` does not hold yet.
fn append(data: &mut Vec<u8>, offset: u64, bytes: &[u8]) {
    let skip = (data.len() as u64 - offset) as usize;
    if skip < bytes.len() {
        data.extend_from_slice(&bytes[skip..]);
    }
}

/// Checks a snapshot chunk's claims before any byte of it is buffered: a
/// peer cannot make this node allocate more than `SNAPSHOT_BYTES_MAX`, nor
/// write past the total it announced.
pub(crate) fn check_chunk(data: &[u8], offset: u64, total: u64) -> Result<(), String> {
    if total == 0 || total > SNAPSHOT_BYTES_MAX {
        return Err(format!("total {total} outside 1..={SNAPSHOT_BYTES_MAX}"));
    }
    if data.len() > SNAPSHOT_CHUNK_BYTES_MAX {
        return Err(format!(
            "{} bytes in one chunk, more than {SNAPSHOT_CHUNK_BYTES_MAX}",
            data.len()
        ));
    }
    match offset.checked_add(data.len() as u64) {
        Some(end) if end <= total => Ok(()),
        _ => Err(format!(
            "{} bytes at {offset} run past the total",
            data.len()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_chunks_that_claim_too_much_are_refused() {
        assert!(check_chunk(b"abc", 0, 3).is_ok());
        assert!(check_chunk(b"abc", 7, 10).is_ok());
        assert!(check_chunk(b"abc", 8, 10)
            .unwrap_err()
            .contains("past the total"));
        assert!(check_chunk(b"abc", u64::MAX - 1, 10).is_err());
        assert!(check_chunk(b"", 0, 0).unwrap_err().contains("outside"));
        assert!(check_chunk(b"a", 0, SNAPSHOT_BYTES_MAX + 1).is_err());
        let big = vec![0u8; SNAPSHOT_CHUNK_BYTES_MAX + 1];
        assert!(check_chunk(&big, 0, SNAPSHOT_BYTES_MAX).is_err());
    }
}
