//! Applying a chosen command: the deterministic function every replica runs
//! in slot order. A write transaction gets one new revision if, and only
//! if, it changes something; every key it writes carries that revision.

use crate::error::KvError;
use crate::mvcc::Mvcc;
use crate::range::KeyRange;
use crate::read;
use bytes::Bytes;
use synod_proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use synod_proto::etcdserverpb::request_op::Request;
use synod_proto::etcdserverpb::response_op::Response;
use synod_proto::etcdserverpb::{
    CompactionRequest, CompactionResponse, Compare, DeleteRangeRequest, DeleteRangeResponse,
    PutRequest, PutResponse, RequestOp, ResponseHeader, ResponseOp, TxnRequest, TxnResponse,
};
use synod_proto::mvccpb::{event::EventType, Event, KeyValue};

/// One write transaction in progress: the revision its writes get, whether
/// it wrote yet, and the events it produced.
pub(crate) struct WriteTxn<'a> {
    pub(crate) mvcc: &'a mut Mvcc,
    /// The revision reads see before the transaction writes.
    pub(crate) base: i64,
    pub(crate) rev: i64,
    pub(crate) wrote: bool,
    pub(crate) events: Vec<Event>,
    pub(crate) leases: &'a dyn Fn(i64) -> bool,
    /// Events carry the previous version's value (not only its metadata).
    pub(crate) prev_values: bool,
}

fn header(revision: i64) -> Option<ResponseHeader> {
    Some(ResponseHeader {
        revision,
        ..ResponseHeader::default()
    })
}

impl WriteTxn<'_> {
    /// The revision reads inside the transaction see: its own writes count.
    fn current(&self) -> i64 {
        if self.wrote {
            self.rev
        } else {
            self.base
        }
    }

    pub(crate) fn put(&mut self, r: &PutRequest) -> Result<PutResponse, KvError> {
        let current = self.current();
        let existing = self.mvcc.get_version(&r.key, current);
        if (r.ignore_value || r.ignore_lease) && existing.is_none() {
            return Err(KvError::KeyNotFound);
        }
        let value = match existing {
            Some(e) if r.ignore_value => self.mvcc.value(&r.key, e),
            _ => r.value.clone(),
        };
        let lease = match existing {
            Some(e) if r.ignore_lease => e.lease,
            _ => r.lease,
        };
        // A kept lease (`ignore_lease`) is the key's own: it exists, or
        // in a shard its revocation deletes the key with the rest of its
        // keys (design 0017). Only a lease the request names is checked.
        if lease != 0 && !r.ignore_lease && !(self.leases)(lease) {
            return Err(KvError::LeaseNotFound(lease));
        }
        let prev_value = r.prev_kv || self.prev_values;
        let (kv, prev) = self.mvcc.put(&r.key, value, lease, self.rev, prev_value);
        self.wrote = true;
        let answer = if r.prev_kv { prev.clone() } else { None };
        self.events.push(Event {
            r#type: EventType::Put as i32,
            kv: Some(kv),
            prev_kv: prev,
        });
        Ok(PutResponse {
            header: header(self.rev),
            prev_kv: answer,
        })
    }

    pub(crate) fn delete_range(&mut self, r: &DeleteRangeRequest) -> DeleteRangeResponse {
        let keys = KeyRange::from_etcd(&r.key, &r.range_end);
        let doomed: Vec<Bytes> = self
            .mvcc
            .scan(&keys, self.current())
            .map(|(key, _)| key.clone())
            .collect();
        let prev_value = r.prev_kv || self.prev_values;
        let mut prev_kvs = Vec::new();
        for key in &doomed {
            let prev = self
                .mvcc
                .delete(key, self.rev, prev_value)
                .expect("scanned key is live");
            self.wrote = true;
            self.events.push(Event {
                r#type: EventType::Delete as i32,
                kv: Some(KeyValue {
                    key: key.clone(),
                    mod_revision: self.rev,
                    ..KeyValue::default()
                }),
                prev_kv: Some(prev.clone()),
            });
            if r.prev_kv {
                prev_kvs.push(prev);
            }
        }
        DeleteRangeResponse {
            header: header(self.current()),
            deleted: doomed.len() as i64,
            prev_kvs,
        }
    }

    pub(crate) fn txn(&mut self, r: &TxnRequest) -> Result<TxnResponse, KvError> {
        let succeeded = r.compare.iter().all(|c| self.compare(c));
        let ops = if succeeded { &r.success } else { &r.failure };
        let mut responses = Vec::with_capacity(ops.len());
        for op in ops {
            responses.push(self.op(op)?);
        }
        Ok(TxnResponse {
            header: header(self.current()),
            succeeded,
            responses,
        })
    }

    fn op(&mut self, op: &RequestOp) -> Result<ResponseOp, KvError> {
        let response = match &op.request {
            Some(Request::RequestRange(r)) => {
                Response::ResponseRange(read::range(self.mvcc, r, self.current())?)
            }
            Some(Request::RequestPut(r)) => Response::ResponsePut(self.put(r)?),
            Some(Request::RequestDeleteRange(r)) => {
                Response::ResponseDeleteRange(self.delete_range(r))
            }
            Some(Request::RequestTxn(r)) => Response::ResponseTxn(self.txn(r)?),
            None => return Err(KvError::InvalidArgument("etcdserver: request op is empty")),
        };
        Ok(ResponseOp {
            response: Some(response),
        })
    }

    /// etcd's compare: over a range, every key must match; a missing key
    /// compares as all-zero fields, except that a value compare fails.
    fn compare(&self, c: &Compare) -> bool {
        let keys = KeyRange::from_etcd(&c.key, &c.range_end);
        let current = self.current();
        let target = CompareTarget::try_from(c.target).unwrap_or(CompareTarget::Version);
        let mut any = false;
        for (key, v) in self.mvcc.scan(&keys, current) {
            any = true;
            // Only a value compare reads the value (perhaps from disk).
            let kv = if target == CompareTarget::Value {
                self.mvcc.key_value(key, v)
            } else {
                v.meta(key)
            };
            if !compare_one(c, &kv) {
                return false;
            }
        }
        if any {
            return true;
        }
        target != CompareTarget::Value && compare_one(c, &KeyValue::default())
    }
}

fn compare_one(c: &Compare, kv: &KeyValue) -> bool {
    use std::cmp::Ordering;
    let ordering = match &c.target_union {
        Some(TargetUnion::Version(v)) => kv.version.cmp(v),
        Some(TargetUnion::CreateRevision(v)) => kv.create_revision.cmp(v),
        Some(TargetUnion::ModRevision(v)) => kv.mod_revision.cmp(v),
        Some(TargetUnion::Value(v)) => kv.value.as_ref().cmp(v.as_ref()),
        Some(TargetUnion::Lease(v)) => kv.lease.cmp(v),
        None => return false,
    };
    match CompareResult::try_from(c.result) {
        Ok(CompareResult::Equal) => ordering == Ordering::Equal,
        Ok(CompareResult::NotEqual) => ordering != Ordering::Equal,
        Ok(CompareResult::Greater) => ordering == Ordering::Greater,
        Ok(CompareResult::Less) => ordering == Ordering::Less,
        Err(_) => false,
    }
}

/// Compaction: refuses a revision already compacted or not yet written.
pub(crate) fn compact(
    mvcc: &mut Mvcc,
    r: &CompactionRequest,
) -> Result<CompactionResponse, KvError> {
    if r.revision <= mvcc.compact_revision() {
        return Err(KvError::Compacted {
            requested: r.revision,
            compact_revision: mvcc.compact_revision(),
        });
    }
    if r.revision > mvcc.revision() {
        return Err(KvError::FutureRevision {
            requested: r.revision,
            current: mvcc.revision(),
        });
    }
    mvcc.compact(r.revision);
    Ok(CompactionResponse {
        header: header(mvcc.revision()),
    })
}
