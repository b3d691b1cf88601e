//! Helpers the state machine's property tests share.

#![allow(dead_code)]

use bytes::Bytes;
use synod_kv::{KvStore, INLINE_VALUE_MAX};
use synod_proto::etcdserverpb::RangeRequest;

/// A value of a few bytes, or one just past the inline limit (kept in its
/// own row, read back from the rows).
pub fn value(long: bool, v: u8) -> Bytes {
    let len = if long {
        INLINE_VALUE_MAX + 1 + v as usize
    } else {
        1 + v as usize % 8
    };
    Bytes::from(vec![v; len])
}

/// Every key with its value, create and mod revision and version at
/// `revision` (0: now) in `[start, end)` (`None`: no end).
pub fn read_at(
    store: &KvStore,
    start: &[u8],
    end: Option<&[u8]>,
    revision: i64,
) -> Vec<(Bytes, Bytes, i64, i64, i64)> {
    let r = RangeRequest {
        key: Bytes::copy_from_slice(start),
        range_end: Bytes::copy_from_slice(end.unwrap_or(b"\0")),
        revision,
        ..Default::default()
    };
    let resp = store.range(&r).expect("a retained revision");
    resp.kvs
        .into_iter()
        .map(|kv| {
            (
                kv.key,
                kv.value,
                kv.create_revision,
                kv.mod_revision,
                kv.version,
            )
        })
        .collect()
}
