//! The two building blocks etcd's lock and election services share, built
//! from the KV API and watches exactly as etcd's `concurrency` package
//! does: a key per contender, created under the contender's lease, and
//! waiting for every older contender's key to be deleted.

use crate::{status, EtcdApi};
use bytes::Bytes;
use synod_kv::KeyRange;
use synod_proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use synod_proto::etcdserverpb::range_request::{SortOrder, SortTarget};
use synod_proto::etcdserverpb::request_op::Request;
use synod_proto::etcdserverpb::response_op::Response as OpResponse;
use synod_proto::etcdserverpb::{
    Compare, DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest,
};
use synod_proto::mvccpb::{event::EventType, KeyValue};
use synod_proto::synodpb::{command::Op, outcome};
use synod_server::WatchSpec;
use tonic::Status;

/// The first key after every key starting with `prefix` (etcd's
/// `GetPrefixRangeEnd`).
pub(crate) fn prefix_end(prefix: &[u8]) -> Bytes {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Bytes::from(end);
        }
    }
    Bytes::from_static(&[0])
}

/// A contender's key: `name/` then its lease id in hex.
pub(crate) fn contender_key(name: &[u8], lease: i64) -> Bytes {
    let mut key = name.to_vec();
    key.push(b'/');
    key.extend_from_slice(format!("{lease:x}").as_bytes());
    Bytes::from(key)
}

/// The compare "`key` was created at `rev`" (0: does not exist).
pub(crate) fn created_at(key: &Bytes, rev: i64) -> Compare {
    Compare {
        result: CompareResult::Equal as i32,
        target: CompareTarget::Create as i32,
        key: key.clone(),
        range_end: Bytes::new(),
        target_union: Some(TargetUnion::CreateRevision(rev)),
    }
}

pub(crate) fn put_op(key: &Bytes, value: Bytes, lease: i64) -> RequestOp {
    RequestOp {
        request: Some(Request::RequestPut(PutRequest {
            key: key.clone(),
            value,
            lease,
            ..PutRequest::default()
        })),
    }
}

pub(crate) fn delete_op(key: &Bytes) -> RequestOp {
    RequestOp {
        request: Some(Request::RequestDeleteRange(DeleteRangeRequest {
            key: key.clone(),
            ..DeleteRangeRequest::default()
        })),
    }
}

/// The oldest key under `prefix` (the current holder or leader).
fn oldest(prefix: &Bytes) -> RangeRequest {
    RangeRequest {
        key: prefix.clone(),
        range_end: prefix_end(prefix),
        limit: 1,
        sort_order: SortOrder::Ascend as i32,
        sort_target: SortTarget::Create as i32,
        ..RangeRequest::default()
    }
}

fn range_op(key: &Bytes) -> RequestOp {
    RequestOp {
        request: Some(Request::RequestRange(RangeRequest {
            key: key.clone(),
            ..RangeRequest::default()
        })),
    }
}

impl EtcdApi {
    /// Runs a txn and returns whether it succeeded and its responses.
    pub(crate) async fn txn(&self, r: TxnRequest) -> Result<(bool, Vec<OpResponse>, i64), Status> {
        let outcome::Result::Txn(t) = self.write(Op::Txn(r), &self.acting).await? else {
            return Err(Status::internal("outcome does not match the request"));
        };
        let revision = t.header.map_or(0, |h| h.revision);
        let responses = t.responses.into_iter().filter_map(|r| r.response).collect();
        Ok((t.succeeded, responses, revision))
    }

    /// Creates `key` with `value` under `lease` unless it exists, and reads
    /// the oldest contender under `prefix`, in one transaction. Returns the
    /// key's create revision, its value now, and whether it is the oldest
    /// (the lock or leadership is then held at once).
    pub(crate) async fn create_or_get(
        &self,
        prefix: &Bytes,
        key: &Bytes,
        value: Bytes,
        lease: i64,
    ) -> Result<(i64, Bytes, bool), Status> {
        let owner = RequestOp {
            request: Some(Request::RequestRange(oldest(prefix))),
        };
        let (created, responses, revision) = self
            .txn(TxnRequest {
                compare: vec![created_at(key, 0)],
                success: vec![put_op(key, value.clone(), lease), owner.clone()],
                failure: vec![range_op(key), owner],
            })
            .await?;
        let mut responses = responses.into_iter();
        let (my_rev, value) = if created {
            responses.next();
            (revision, value)
        } else {
            match responses.next() {
                Some(OpResponse::ResponseRange(r)) if !r.kvs.is_empty() => {
                    (r.kvs[0].create_revision, r.kvs[0].value.clone())
                }
                _ => return Err(Status::internal("contender key vanished")),
            }
        };
        let first = match responses.next() {
            Some(OpResponse::ResponseRange(r)) => r.kvs.first().map(|kv| kv.create_revision),
            _ => None,
        };
        Ok((my_rev, value, first == Some(my_rev)))
    }

    /// The newest key under `prefix` created before `rev` (an older
    /// contender still waiting or holding), with the revision of the read.
    ///
    /// Read from this node's own state, not linearizably, and still exact
    /// for what the recipes ask: this node already applied the caller's
    /// own key (writes are answered after they apply here) and any event
    /// the caller waited for, and keys older than the caller's can only
    /// disappear, never appear. A stale read can only show an older key
    /// that is already gone, which makes the caller wait for a deletion
    /// the watch then reports at once; it can never show a contender
    /// missing that is there.
    pub(crate) async fn newest_older(
        &self,
        prefix: &Bytes,
        rev: i64,
    ) -> Result<(Option<KeyValue>, i64), Status> {
        let r = RangeRequest {
            sort_order: SortOrder::Descend as i32,
            max_create_revision: rev - 1,
            ..oldest(prefix)
        };
        self.first_of(r, true).await
    }

    /// The oldest key under `prefix` (who holds or leads now), read
    /// linearizably: for callers that report it.
    pub(crate) async fn contender_now(
        &self,
        prefix: &Bytes,
    ) -> Result<(Option<KeyValue>, i64), Status> {
        self.first_of(oldest(prefix), false).await
    }

    /// The first key a range read returns, with the read's revision.
    async fn first_of(
        &self,
        r: RangeRequest,
        serializable: bool,
    ) -> Result<(Option<KeyValue>, i64), Status> {
        let resp = self.node.range(r, serializable).await.map_err(status)?;
        let revision = resp.header.map_or(0, |h| h.revision);
        Ok((resp.kvs.into_iter().next(), revision))
    }

    /// Whether the caller's own `key`, created at `rev`, still exists (its
    /// lease may have expired while it waited), read locally; with the
    /// revision of the read.
    pub(crate) async fn still_mine(&self, key: &Bytes, rev: i64) -> Result<Option<i64>, Status> {
        let r = RangeRequest {
            key: key.clone(),
            ..RangeRequest::default()
        };
        let (kv, revision) = self.first_of(r, true).await?;
        Ok(kv.filter(|kv| kv.create_revision == rev).map(|_| revision))
    }

    /// Waits until no key under `prefix` created before `rev` remains:
    /// watches the newest such key for its deletion, then looks again.
    pub(crate) async fn wait_deletes(&self, prefix: &Bytes, rev: i64) -> Result<(), Status> {
        loop {
            let (older, revision) = self.newest_older(prefix, rev).await?;
            let Some(older) = older else {
                return Ok(());
            };
            self.wait_for(&older.key, revision + 1, |t| t == EventType::Delete)
                .await?;
        }
    }

    /// Waits for the first event on `key` from revision `from` on whose
    /// type `wanted` accepts, and returns its key-value.
    pub(crate) async fn wait_for(
        &self,
        key: &Bytes,
        from: i64,
        wanted: impl Fn(EventType) -> bool,
    ) -> Result<KeyValue, Status> {
        self.wait_for_range(KeyRange::Single(key.clone()), from, wanted)
            .await
    }

    /// `wait_for` over a range of keys.
    pub(crate) async fn wait_for_range(
        &self,
        range: KeyRange,
        from: i64,
        wanted: impl Fn(EventType) -> bool,
    ) -> Result<KeyValue, Status> {
        let (stream, mut rx) = self.node.watch_open();
        let _close = CloseStream(self, stream);
        self.node
            .watch_create(
                stream,
                WatchSpec {
                    watch_id: None,
                    range,
                    start_revision: from,
                    prev_kv: false,
                    no_put: false,
                    no_delete: false,
                    progress_notify: false,
                    fragment: false,
                    user: None,
                    groups: Vec::new(),
                },
            )
            .map_err(status)?;
        while let Some(r) = rx.recv().await {
            if r.canceled {
                return Err(Status::unavailable(
                    "watch canceled: ".to_string() + &r.cancel_reason,
                ));
            }
            for e in r.events {
                let t = EventType::try_from(e.r#type).unwrap_or(EventType::Put);
                if wanted(t) {
                    return e.kv.ok_or_else(|| Status::internal("event without a key"));
                }
            }
        }
        Err(Status::unavailable("etcdserver: server stopped"))
    }
}

/// Closes a watch stream when the waiter is done or dropped.
struct CloseStream<'a>(&'a EtcdApi, synod_server::StreamId);

impl Drop for CloseStream<'_> {
    fn drop(&mut self) {
        self.0.node.watch_close(self.1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_follows_etcd() {
        assert_eq!(prefix_end(b"a/"), Bytes::from_static(b"a0"));
        assert_eq!(prefix_end(b"a\xff"), Bytes::from_static(b"b"));
        assert_eq!(prefix_end(b"\xff\xff"), Bytes::from_static(&[0]));
        assert_eq!(contender_key(b"lock", 0x1f), Bytes::from_static(b"lock/1f"));
    }
}
