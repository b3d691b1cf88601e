//! Range reads with etcd's options: revision, limit, sort, keys/count only,
//! and create/mod revision filters.

use crate::error::KvError;
use crate::mvcc::{Mvcc, ValueRow, Version};
use crate::range::KeyRange;
use std::cmp::Ordering;
use synod_proto::etcdserverpb::range_request::{SortOrder, SortTarget};
use synod_proto::etcdserverpb::{RangeRequest, RangeResponse, ResponseHeader};
use synod_proto::mvccpb::{event::EventType, Event, KeyValue};

/// Which revision a read at `requested` means: `<= 0` is `current`.
pub fn read_revision(mvcc: &Mvcc, requested: i64, current: i64) -> Result<i64, KvError> {
    if requested <= 0 {
        return Ok(current);
    }
    if requested > current {
        return Err(KvError::FutureRevision { requested, current });
    }
    if requested < mvcc.compact_revision() {
        return Err(KvError::Compacted {
            requested,
            compact_revision: mvcc.compact_revision(),
        });
    }
    Ok(requested)
}

fn passes_filters(kv: &KeyValue, r: &RangeRequest) -> bool {
    let within = |v: i64, min: i64, max: i64| (min <= 0 || v >= min) && (max <= 0 || v <= max);
    within(kv.mod_revision, r.min_mod_revision, r.max_mod_revision)
        && within(
            kv.create_revision,
            r.min_create_revision,
            r.max_create_revision,
        )
}

fn compare_by(target: SortTarget) -> impl Fn(&KeyValue, &KeyValue) -> Ordering {
    move |a, b| match target {
        SortTarget::Key => a.key.cmp(&b.key),
        SortTarget::Version => a.version.cmp(&b.version),
        SortTarget::Create => a.create_revision.cmp(&b.create_revision),
        SortTarget::Mod => a.mod_revision.cmp(&b.mod_revision),
        SortTarget::Value => a.value.cmp(&b.value),
    }
}

/// Serves a range request against the store as of revision `current` (the
/// store's revision, or a write transaction's revision for reads inside it).
pub fn range(mvcc: &Mvcc, r: &RangeRequest, current: i64) -> Result<RangeResponse, KvError> {
    let (mut response, fetch) = range_deferred(mvcc, r, current)?;
    if !fetch.is_empty() {
        let source = mvcc.source().expect("values on disk have a source");
        for (i, row) in fetch {
            response.kvs[i].value = row.read(source.as_ref());
        }
    }
    Ok(response)
}

/// Like [`range`], but values that are only on disk are left empty and
/// listed (index in `kvs`, where to read them), to be read elsewhere.
pub fn range_deferred(
    mvcc: &Mvcc,
    r: &RangeRequest,
    current: i64,
) -> Result<(RangeResponse, Vec<(usize, ValueRow)>), KvError> {
    let rev = read_revision(mvcc, r.revision, current)?;
    let keys = KeyRange::from_etcd(&r.key, &r.range_end);
    let mut count = 0i64;
    let mut kvs = Vec::new();
    let order = SortOrder::try_from(r.sort_order).unwrap_or(SortOrder::None);
    let target = SortTarget::try_from(r.sort_target).unwrap_or(SortTarget::Key);
    // Key order is the scan order: with no other sort, stop once past limit.
    let natural = target == SortTarget::Key && matches!(order, SortOrder::None | SortOrder::Ascend);
    let limit = usize::try_from(r.limit).unwrap_or(0);
    for (key, v) in mvcc.scan(&keys, rev) {
        count += 1;
        if r.count_only {
            continue;
        }
        let meta = v.meta(key);
        if !passes_filters(&meta, r) {
            continue;
        }
        if natural && limit > 0 && kvs.len() > limit {
            continue; // keep counting, stop collecting
        }
        kvs.push((meta, v));
    }
    if !r.count_only {
        sort(&mut kvs, order, target, mvcc);
    }
    let more = limit > 0 && kvs.len() > limit;
    let mut kvs = kvs;
    kvs.truncate(if limit > 0 { limit } else { kvs.len() });
    // Values are read (perhaps from disk) only for what is returned.
    let values_read = target == SortTarget::Value && !r.count_only;
    let mut fetch = Vec::new();
    let kvs: Vec<KeyValue> = kvs
        .into_iter()
        .enumerate()
        .map(|(i, (meta, v))| {
            if r.keys_only {
                KeyValue {
                    value: bytes::Bytes::new(),
                    ..meta
                }
            } else if values_read {
                meta
            } else {
                match mvcc.value_or_row(&meta.key, v) {
                    Ok(value) => KeyValue { value, ..meta },
                    Err(row) => {
                        fetch.push((i, row));
                        meta
                    }
                }
            }
        })
        .collect();
    let response = RangeResponse {
        header: Some(ResponseHeader {
            revision: current,
            ..ResponseHeader::default()
        }),
        kvs,
        more,
        count,
    };
    Ok((response, fetch))
}

/// etcd sorts ascending when a target other than the key is named without
/// an order. Sorting by value reads the values.
fn sort(kvs: &mut [(KeyValue, &Version)], order: SortOrder, target: SortTarget, mvcc: &Mvcc) {
    let order = match (order, target) {
        (SortOrder::None, SortTarget::Key) => return,
        (SortOrder::None, _) => SortOrder::Ascend,
        (o, _) => o,
    };
    if target == SortTarget::Value {
        for (kv, v) in kvs.iter_mut() {
            kv.value = mvcc.value(&kv.key, v);
        }
    }
    let cmp = compare_by(target);
    match order {
        SortOrder::Descend => kvs.sort_by(|a, b| cmp(&b.0, &a.0)),
        _ => kvs.sort_by(|a, b| cmp(&a.0, &b.0)),
    }
}

/// Sorts key-values in key order (as each store answers) into the order
/// `r` asks for, as `range` does: how a read over several shards puts
/// their answers together. The sort is stable, so ties keep key order.
pub fn sort_as_requested(kvs: &mut [KeyValue], r: &RangeRequest) {
    let order = SortOrder::try_from(r.sort_order).unwrap_or(SortOrder::None);
    let target = SortTarget::try_from(r.sort_target).unwrap_or(SortTarget::Key);
    let cmp = compare_by(target);
    match (order, target) {
        (SortOrder::None, SortTarget::Key) => {}
        (SortOrder::Descend, _) => kvs.sort_by(|a, b| cmp(b, a)),
        _ => kvs.sort_by(|a, b| cmp(a, b)),
    }
}

/// Every change to keys in `range` from revision `from` through the store's
/// current revision, in revision order (key order within one revision), each
/// with the version it replaced: what a watcher that starts in the past must
/// see before live events. `from` below the compaction point is refused
/// (the history is gone); at the compaction point it is served, as etcd
/// does.
pub fn history(mvcc: &Mvcc, range: &KeyRange, from: i64) -> Result<Vec<Event>, KvError> {
    if from < mvcc.compact_revision() {
        return Err(KvError::Compacted {
            requested: from,
            compact_revision: mvcc.compact_revision(),
        });
    }
    let mut events = Vec::new();
    if range.is_empty() {
        return Ok(events);
    }
    for (key, versions) in mvcc.versions(range) {
        let first = versions.partition_point(|v| v.mod_revision < from);
        for i in first..versions.len() {
            let v = &versions[i];
            let prev = i
                .checked_sub(1)
                .map(|p| &versions[p])
                .filter(|p| !p.is_tombstone())
                .map(|p| mvcc.key_value(key, p));
            let r#type = if v.is_tombstone() {
                EventType::Delete
            } else {
                EventType::Put
            };
            events.push(Event {
                r#type: r#type as i32,
                kv: Some(mvcc.key_value(key, v)),
                prev_kv: prev,
            });
        }
    }
    events.sort_by_key(|e| e.kv.as_ref().map_or(0, |kv| kv.mod_revision));
    Ok(events)
}
