//! A store's rows as they were at one revision: what a backup of a
//! sharded cluster keeps of each shard (design 0020).
//!
//! A backup of a sharded cluster fences every shard at one timestamp `T`
//! from the oracle and then reads each shard's rows, one shard after the
//! other, while writes go on. Each shard has then applied every write
//! stamped at or below `T` (a shard refuses stale stamps), and may hold
//! some above. Cutting the rows at `T` leaves exactly the writes at or
//! below `T` in every shard: the whole key space as one read at `T`
//! would see it, never part of a later state.
//!
//! The cut works row by row (the rows stream through in chunks, and a
//! backup of gigabytes is never held in memory):
//!
//! | row | at or below `T` | above `T` |
//! |-----|-----------------|-----------|
//! | `k`/`d` version and value rows, keyed by revision | kept | dropped: the version before it is the key's latest again |
//! | `m` meta | revision set to `T` (refused if the store has not reached `T`, or compacted past it) | |
//! | `s` sessions | dropped: they answer retries of a cluster the restore does not continue | |
//! | anything else | kept | |

use crate::state::{be_u64, TAG_META, TAG_SESSION, TAG_VALUE, TAG_VERSION};
use prost::Message;
use synod_proto::synodpb::Snapshot;

/// What becomes of one row in a cut.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CutRow {
    /// The row as it is.
    Keep,
    /// Not in the store at the cut.
    Drop,
    /// This value instead (the meta row).
    Replace(Vec<u8>),
}

/// The fate of row `key` (holding `value`) when the store is cut at
/// revision `at`; an error says why the store cannot be cut there.
pub fn cut_row(key: &[u8], value: &[u8], at: i64) -> Result<CutRow, String> {
    match key.first() {
        Some(&TAG_VERSION) | Some(&TAG_VALUE) => {
            let Some(revision) = be_u64(&key[1..], 0) else {
                return Err(format!("a row key of {} bytes", key.len()));
            };
            Ok(if revision as i64 > at {
                CutRow::Drop
            } else {
                CutRow::Keep
            })
        }
        Some(&TAG_META) if key.len() == 1 => {
            let mut meta =
                Snapshot::decode(value).map_err(|e| format!("the meta row is malformed: {e}"))?;
            if meta.revision < at {
                return Err(format!(
                    "the store is at revision {}, below the cut at {at}",
                    meta.revision
                ));
            }
            if meta.compact_revision > at {
                return Err(format!(
                    "the store was compacted at revision {}, past the cut at {at}",
                    meta.compact_revision
                ));
            }
            meta.revision = at;
            Ok(CutRow::Replace(meta.encode_to_vec()))
        }
        Some(&TAG_SESSION) => Ok(CutRow::Drop),
        _ => Ok(CutRow::Keep),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_meta_row_refuses_a_cut_it_cannot_make() {
        let meta = |revision, compact_revision| {
            Snapshot {
                revision,
                compact_revision,
                ..Snapshot::default()
            }
            .encode_to_vec()
        };
        let e = cut_row(b"m", &meta(5, 1), 6).unwrap_err();
        assert!(e.contains("below the cut"), "{e}");
        let e = cut_row(b"m", &meta(9, 7), 6).unwrap_err();
        assert!(e.contains("compacted"), "{e}");
        let CutRow::Replace(cut) = cut_row(b"m", &meta(9, 3), 6).unwrap() else {
            panic!("the meta row is rewritten");
        };
        assert_eq!(Snapshot::decode(&cut[..]).unwrap().revision, 6);
        assert!(cut_row(b"m", b"\xff\xff", 6).is_err());
        assert!(cut_row(b"k\0\0", b"", 6).is_err());
    }
}
