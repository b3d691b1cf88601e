//! Routing etcd requests to the shards that own their keys (issue 10,
//! design 0015). Without a shard map everything goes to `GROUP`, as
//! before.
//!
//! ```text
//!   Put / DeleteRange / Txn ── keys in one shard ──► that shard's group (stamped there)
//!                           └─ several: DeleteRange piece by piece; Txn refused
//!   Range ── one shard ──► its group
//!         └─ several ──► one timestamp T from the oracle ──► each piece read at T ──► merged
//!   Compact ──► every shard     leases, auth, members ──► the meta group
//!   (a client's write to a shard is judged here by the meta group's users
//!   and roles, and fenced by the auth revision its stamp brings: design 0018)
//!   (a key's lease is checked by the oracle when its write is stamped,
//!   and a revoked lease's keys are deleted shard by shard: design 0017)
//! ```
//!
//! A shard that split after this node routed a request refuses the keys
//! it no longer holds (`WRONG_SHARD`, design 0016): the request is routed
//! again by the map as the node's replicas hold it then, until the
//! request timeout. The client never sees the refusal.
//!
//! A read across shards at T is linearizable: T was handed out after the
//! read began, so it lies above every write acknowledged before; and each
//! piece is a read-only command stamped T in its shard's log, which reads
//! once nothing stamped at or below T can still apply there.

use super::{Node, RequestError};
use crate::core::{Input, GROUP};
use crate::hub::{StreamId, WatchSpec};
use crate::shard_view::ShardView;
use crate::shards::{merge, piece, ShardMap};
use std::time::{Duration, Instant};
use synod_kv::{error_outcome, outcome_error, validate, KeyRange, KvError};
use synod_proto::etcdserverpb::request_op::Request as TxnOp;
use synod_proto::etcdserverpb::response_op::Response;
use synod_proto::etcdserverpb::{
    CompactionRequest, DeleteRangeRequest, DeleteRangeResponse, RangeRequest, RangeResponse,
    RequestOp, ResponseHeader, TxnRequest,
};
use synod_proto::synodpb::{command::Op, outcome, Caller, Outcome};
use synod_storage::GroupId;
use tokio::sync::oneshot;

/// How long a request refused for a shard that moved waits before it is
/// routed again, when the node's map has not changed yet (its replica of
/// the shard has not applied the split, or waits for a snapshot).
const REROUTE_WAIT: Duration = Duration::from_millis(10);

/// Whether an answer says the shard no longer holds the keys.
fn wrong_shard<T>(result: &Result<T, RequestError>, outcome: impl Fn(&T) -> bool) -> bool {
    match result {
        Err(RequestError::Kv(KvError::WrongShard)) => true,
        Ok(t) => outcome(t),
        Err(_) => false,
    }
}

fn outcome_wrong_shard(o: &Outcome) -> bool {
    matches!(&o.result, Some(outcome::Result::Error(e)) if matches!(outcome_error(e), KvError::WrongShard))
}

impl Node {
    /// The shard map as this node's replicas hold it, when the key space
    /// is sharded.
    pub fn shards(&self) -> Option<std::sync::Arc<ShardMap>> {
        self.shard_view.as_ref().map(|v| v.get())
    }

    /// Waits before routing a refused request again: until the map
    /// changes from `version`, at most `REROUTE_WAIT`. False once the
    /// request timeout has passed.
    async fn reroute(&self, version: u64, deadline: Instant) -> bool {
        let Some(view) = &self.shard_view else {
            return false;
        };
        if Instant::now() >= deadline {
            return false;
        }
        let waited = Instant::now();
        while view.version() == version && waited.elapsed() < REROUTE_WAIT {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        self.metrics.rerouted.inc();
        true
    }

    /// Runs `attempt` with the map as it is now, again (with the map as it
    /// is then) while its answer says the shard no longer holds the keys
    /// (`refused`), until the request timeout: the client never sees a
    /// route that went stale.
    async fn rerouted<T, F, Fut>(
        &self,
        view: &ShardView,
        refused: impl Fn(&T) -> bool,
        mut attempt: F,
    ) -> Result<T, RequestError>
    where
        F: FnMut(std::sync::Arc<ShardMap>) -> Fut,
        Fut: std::future::Future<Output = Result<T, RequestError>>,
    {
        let deadline = Instant::now() + Duration::from_millis(self.config.request_timeout_ms);
        loop {
            let version = view.version();
            let result = attempt(view.get()).await;
            if !wrong_shard(&result, &refused) || !self.reroute(version, deadline).await {
                return result;
            }
        }
    }

    /// Splits the shard holding `at` there: the keys from `at` on become a
    /// new shard (design 0016). Answered with the range of the shard that
    /// stayed, once the split applied on this node; routed again while
    /// the shard moves.
    pub async fn split(&self, at: bytes::Bytes) -> Result<Outcome, RequestError> {
        let Some(view) = self.shard_view.as_ref() else {
            return Ok(error_outcome(&KvError::InvalidArgument(
                validate::SPLIT_NOT_SHARD,
            )));
        };
        self.rerouted(view, outcome_wrong_shard, |_| async {
            let (reply, rx) = oneshot::channel();
            self.input(Input::Split {
                at: at.clone(),
                reply,
            })?;
            self.wait(rx).await
        })
        .await
    }

    /// Judges a client's write as its shard cannot: by the users and
    /// roles of this node's meta group replica, at the auth revision the
    /// caller was judged at (design 0018; the stamp's auth fence refuses
    /// it in the shard if they change before it is ordered). A lease the
    /// write attaches to or revokes is judged by the keys this node's
    /// shards hold of it. Writes the meta group orders (leases, auth,
    /// members) are judged there as well, where they apply.
    async fn judge(&self, caller: &Caller, op: &Op) -> Result<(), KvError> {
        let auth = self.auth();
        let mut keys = std::collections::BTreeMap::new();
        if auth.enabled() && auth.check_admin(&caller.user).is_err() {
            for id in synod_kv::leases_named(op) {
                let held = self.lease_keys(id).await.map_err(|_| KvError::TimedOut)?;
                keys.insert(id, held);
            }
        }
        let lease_keys = |id: i64| keys.get(&id).cloned().unwrap_or_default();
        synod_kv::judge_routed(&auth, caller, op, &lease_keys)
    }

    /// A write to the group owning its keys; one over several shards is
    /// applied piece by piece (DeleteRange) or refused (Txn). Routed again
    /// while the shard refuses it as moved.
    pub(super) async fn route_write(
        &self,
        op: Op,
        caller: Option<Caller>,
    ) -> Result<Outcome, RequestError> {
        let Some(view) = self.shard_view.as_ref() else {
            return self.write_to(GROUP, op, caller).await;
        };
        if let Some(caller) = &caller {
            if let Err(e) = self.judge(caller, &op).await {
                return Ok(error_outcome(&e));
            }
        }
        self.rerouted(view, outcome_wrong_shard, |map| {
            let (op, caller) = (op.clone(), caller.clone());
            async move { self.route_write_by(&map, op, caller).await }
        })
        .await
    }

    async fn route_write_by(
        &self,
        map: &ShardMap,
        op: Op,
        caller: Option<Caller>,
    ) -> Result<Outcome, RequestError> {
        match op {
            Op::Put(_) | Op::DeleteRange(_) | Op::Txn(_) => match (map.owner(&op), op) {
                (Some(group), op) => self.write_to(GroupId(group), op, caller).await,
                (None, Op::DeleteRange(r)) => self.delete_across(map, r, caller).await,
                (None, _) => Ok(error_outcome(&KvError::InvalidArgument(
                    validate::SHARDED_TXN,
                ))),
            },
            Op::Compact(r) => self.compact_all(map, r, caller).await,
            op => self.write_to(GROUP, op, caller).await,
        }
    }

    /// One write to one group.
    pub(super) async fn write_to(
        &self,
        group: GroupId,
        op: Op,
        caller: Option<Caller>,
    ) -> Result<Outcome, RequestError> {
        let (reply, rx) = oneshot::channel();
        self.input(Input::Write {
            group,
            op,
            caller,
            reply,
        })?;
        self.wait(rx).await
    }

    /// A DeleteRange over several shards: each shard deletes its piece
    /// at a revision of its own (not one revision for all, as etcd would:
    /// that waits for cross-shard transactions). Answered with the sum.
    async fn delete_across(
        &self,
        map: &ShardMap,
        r: DeleteRangeRequest,
        caller: Option<Caller>,
    ) -> Result<Outcome, RequestError> {
        let pieces = map.cut(&KeyRange::from_etcd(&r.key, &r.range_end));
        let writes = pieces.into_iter().map(|(group, keys)| {
            let (key, range_end) = crate::shards::to_etcd(&keys);
            let op = Op::DeleteRange(DeleteRangeRequest {
                key,
                range_end,
                ..r.clone()
            });
            self.write_to(GroupId(group), op, caller.clone())
        });
        let mut total = DeleteRangeResponse {
            header: Some(ResponseHeader::default()),
            ..DeleteRangeResponse::default()
        };
        for outcome in futures::future::join_all(writes).await {
            match outcome?.result {
                Some(outcome::Result::DeleteRange(d)) => {
                    let revision = d.header.map_or(0, |h| h.revision);
                    let header = total.header.get_or_insert_with(Default::default);
                    header.revision = header.revision.max(revision);
                    total.deleted += d.deleted;
                    total.prev_kvs.extend(d.prev_kvs);
                }
                Some(outcome::Result::Error(e)) => return Err(outcome_error(&e).into()),
                _ => {
                    return Err(RequestError::Refused(
                        "a delete came back as another answer".into(),
                    ))
                }
            }
        }
        Ok(Outcome {
            result: Some(outcome::Result::DeleteRange(total)),
        })
    }

    /// A compaction of every shard at one revision (each shard keeps what
    /// it holds at that revision). Answered like the first shard's.
    async fn compact_all(
        &self,
        map: &ShardMap,
        r: CompactionRequest,
        caller: Option<Caller>,
    ) -> Result<Outcome, RequestError> {
        let writes = map
            .groups()
            .map(|group| self.write_to(GroupId(group), Op::Compact(r), caller.clone()));
        let mut first = None;
        for outcome in futures::future::join_all(writes).await {
            let outcome = outcome?;
            if matches!(outcome.result, Some(outcome::Result::Error(_))) {
                return Ok(outcome);
            }
            first.get_or_insert(outcome);
        }
        Ok(first.expect("at least one shard"))
    }

    /// A range read from the shards that hold its keys, routed again while
    /// a shard refuses it as moved.
    pub(super) async fn route_range(
        &self,
        request: RangeRequest,
        serializable: bool,
    ) -> Result<RangeResponse, RequestError> {
        let Some(view) = self.shard_view.as_ref() else {
            return self.range_in(GROUP, request, serializable).await;
        };
        self.rerouted(
            view,
            |_| false,
            |map| {
                let request = request.clone();
                async move { self.range_by(&map, request, serializable).await }
            },
        )
        .await
    }

    async fn range_by(
        &self,
        map: &ShardMap,
        request: RangeRequest,
        serializable: bool,
    ) -> Result<RangeResponse, RequestError> {
        let mut pieces = map.cut(&KeyRange::from_etcd(&request.key, &request.range_end));
        if pieces.len() == 1 {
            let (group, _) = pieces.remove(0);
            return self.range_in(GroupId(group), request, serializable).await;
        }
        if serializable {
            // Each shard as this node has it: no common revision, as
            // serializable reads promise none.
            let reads = pieces
                .iter()
                .map(|(group, keys)| self.range_in(GroupId(*group), piece(&request, keys), true));
            let parts = futures::future::join_all(reads)
                .await
                .into_iter()
                .collect::<Result<Vec<_>, _>>()?;
            let revision = parts
                .iter()
                .filter_map(|p| p.header.as_ref().map(|h| h.revision))
                .max()
                .unwrap_or(0);
            return Ok(merge(&request, parts, revision));
        }
        let stamp = self.timestamp().await?;
        let reads = pieces
            .iter()
            .map(|(group, keys)| self.read_at(GroupId(*group), piece(&request, keys), stamp));
        let parts = futures::future::join_all(reads)
            .await
            .into_iter()
            .collect::<Result<Vec<_>, _>>()?;
        Ok(merge(&request, parts, stamp))
    }

    /// One timestamp from the meta group's oracle, asked again while no
    /// leader can hand one out, until the request timeout.
    async fn timestamp(&self) -> Result<i64, RequestError> {
        let deadline = Instant::now() + Duration::from_millis(self.config.request_timeout_ms);
        loop {
            let (reply, rx) = oneshot::channel();
            self.input(Input::Timestamps { count: 1, reply })?;
            if let Some((first, _)) = self.wait(rx).await? {
                return Ok(first);
            }
            if Instant::now() >= deadline {
                return Err(RequestError::Timeout);
            }
            tokio::time::sleep(Duration::from_millis(self.config.tick_ms.max(1) * 5)).await;
        }
    }

    /// `request` read in `group` at `stamp`, through its log.
    async fn read_at(
        &self,
        group: GroupId,
        request: RangeRequest,
        stamp: i64,
    ) -> Result<RangeResponse, RequestError> {
        let op = Op::Txn(TxnRequest {
            success: vec![RequestOp {
                request: Some(TxnOp::RequestRange(request)),
            }],
            ..TxnRequest::default()
        });
        let (reply, rx) = oneshot::channel();
        self.input(Input::WriteStamped {
            group,
            op,
            stamp,
            reply,
        })?;
        match self.wait(rx).await?.result {
            Some(outcome::Result::Txn(mut t)) => match t.responses.pop().and_then(|r| r.response) {
                Some(Response::ResponseRange(r)) => Ok(r),
                _ => Err(RequestError::Refused(
                    "a read came back without its range".into(),
                )),
            },
            Some(outcome::Result::Error(e)) => Err(outcome_error(&e).into()),
            _ => Err(RequestError::Refused(
                "a read came back as another answer".into(),
            )),
        }
    }

    /// Sets the groups a watch follows: `GROUP` unsharded, else every
    /// shard its range touches (their events merged in revision order).
    pub(super) fn route_watch(
        &self,
        stream: StreamId,
        mut spec: WatchSpec,
    ) -> Result<(), RequestError> {
        spec.groups = match self.shards() {
            None => vec![GROUP],
            Some(map) => map
                .cut(&spec.range)
                .into_iter()
                .map(|(g, _)| GroupId(g))
                .collect(),
        };
        self.input(Input::Watch {
            stream,
            spec,
            announce: true,
        })
    }
}
