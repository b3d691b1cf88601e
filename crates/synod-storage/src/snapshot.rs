//! State-machine snapshots: per group, the latest snapshot of the state
//! machine and the slot it covers, written in the same transaction as the
//! applied slot (`Batch::put_snapshot`). A node restarts from it and replays
//! only the log after it, and ships it to replicas behind the log start.
//!
//! Value layout (table `kv_snapshot`, key = group id, 8 bytes big-endian):
//! `[version 1][b'S'][slot u64 LE][len u64 LE][data; len][crc32 LE over all
//! before]`.

use crate::types::GroupId;
use bytes::Bytes;
use redb::TableDefinition;
use synod_paxos::Slot;

/// Name of the snapshot table.
pub const SNAPSHOT_TABLE_NAME: &str = "kv_snapshot";
/// Per group: the latest state-machine snapshot.
pub const SNAPSHOT_TABLE: TableDefinition<&[u8; 8], &[u8]> =
    TableDefinition::new(SNAPSHOT_TABLE_NAME);

const VERSION: u8 = 1;
const KIND: u8 = b'S';
const HEADER: usize = 2 + 8 + 8;

/// Encodes a snapshot value (public for tests that build old or damaged
/// files by hand).
pub fn encode(slot: Slot, data: &[u8], buf: &mut Vec<u8>) {
    buf.clear();
    buf.push(VERSION);
    buf.push(KIND);
    buf.extend_from_slice(&slot.0.to_le_bytes());
    buf.extend_from_slice(&(data.len() as u64).to_le_bytes());
    buf.extend_from_slice(data);
    let crc = crc32fast::hash(buf);
    buf.extend_from_slice(&crc.to_le_bytes());
}

/// Decodes a snapshot value; every malformation is an error message.
pub(crate) fn decode(value: &[u8]) -> Result<(Slot, Bytes), String> {
    let (slot, data) = check(value)?;
    Ok((slot, Bytes::copy_from_slice(data)))
}

/// The slot a snapshot value covers, after the same checks as `decode`.
pub(crate) fn decode_slot(value: &[u8]) -> Result<Slot, String> {
    check(value).map(|(slot, _)| slot)
}

/// Checks a snapshot value and borrows its slot and data.
fn check(value: &[u8]) -> Result<(Slot, &[u8]), String> {
    if value.len() < HEADER + 4 {
        return Err(format!("{} bytes is too short for a snapshot", value.len()));
    }
    let (body, crc) = value.split_at(value.len() - 4);
    let stored = u32::from_le_bytes(crc.try_into().expect("4 bytes"));
    if crc32fast::hash(body) != stored {
        return Err("checksum mismatch".to_string());
    }
    if body[0] != VERSION || body[1] != KIND {
        return Err(format!("unknown snapshot encoding {}/{}", body[0], body[1]));
    }
    let slot = u64::from_le_bytes(body[2..10].try_into().expect("8 bytes"));
    let len = u64::from_le_bytes(body[10..18].try_into().expect("8 bytes"));
    if len != (body.len() - HEADER) as u64 {
        return Err(format!(
            "length {len} does not match {} stored bytes",
            body.len() - HEADER
        ));
    }
    Ok((Slot(slot), &body[HEADER..]))
}

/// The snapshot table's key for `group`.
pub fn key(group: GroupId) -> [u8; 8] {
    group.0.to_be_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_every_flip_detected() {
        let mut buf = Vec::new();
        encode(Slot(9), b"state", &mut buf);
        assert_eq!(
            decode(&buf).unwrap(),
            (Slot(9), Bytes::from_static(b"state"))
        );
        for i in 0..buf.len() {
            let mut bad = buf.clone();
            bad[i] ^= 0x40;
            assert!(decode(&bad).is_err(), "flip at {i} undetected");
        }
        assert!(decode(&buf[..buf.len() - 1]).is_err());
    }
}
