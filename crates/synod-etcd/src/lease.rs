//! etcd's Lease service. Grants and revocations go through the log;
//! keep-alives and time-to-live questions go to the leader, whose clock
//! alone decides when a lease expires.

use crate::{kv_status, status, EtcdApi};
use std::pin::Pin;
use synod_kv::outcome_error;
use synod_proto::etcdserverpb::lease_server::Lease;
use synod_proto::etcdserverpb::*;
use synod_proto::synodpb::{command::Op, outcome, Outcome};
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

/// The response stream of one LeaseKeepAlive call.
pub type KeepAliveStream =
    Pin<Box<dyn Stream<Item = Result<LeaseKeepAliveResponse, Status>> + Send>>;

/// Keep-alives answered concurrently per stream: clients multiplex every
/// lease on one stream, and each answer waits for a leadership check.
const KEEPALIVES_IN_FLIGHT: usize = 256;

fn result(o: Outcome) -> Result<outcome::Result, Status> {
    match o.result {
        Some(outcome::Result::Error(e)) => Err(kv_status(&outcome_error(&e))),
        Some(r) => Ok(r),
        None => Err(Status::internal("empty outcome")),
    }
}

fn unexpected() -> Status {
    Status::internal("outcome does not match the request")
}

#[tonic::async_trait]
impl Lease for EtcdApi {
    async fn lease_grant(
        &self,
        request: Request<LeaseGrantRequest>,
    ) -> Result<Response<LeaseGrantResponse>, Status> {
        let r = request.into_inner();
        let o = self.node.lease_grant(r.id, r.ttl).await.map_err(status)?;
        let outcome::Result::LeaseGrant(mut resp) = result(o)? else {
            return Err(unexpected());
        };
        resp.header = self.header(resp.header.map_or(0, |h| h.revision));
        Ok(Response::new(resp))
    }

    async fn lease_revoke(
        &self,
        request: Request<LeaseRevokeRequest>,
    ) -> Result<Response<LeaseRevokeResponse>, Status> {
        // Revoking deletes the lease's keys: the sender must be able to
        // write each (checked where it applies).
        let caller = self.caller(&request)?;
        let r = request.into_inner();
        let id = r.id;
        let o = self.propose(Op::LeaseRevoke(r), &caller).await?;
        // In a sharded cluster the shards delete the lease's keys after
        // the meta group revoked it (design 0017): answered once they
        // have, as etcd answers once the keys are gone. A retry of a
        // revocation still under way waits for it too.
        let not_found = matches!(&o.result, Some(outcome::Result::Error(e))
            if matches!(outcome_error(e), synod_kv::KvError::LeaseNotFound(_)));
        let waited = self.node.await_revocation(id).await.map_err(status)?;
        if not_found && waited {
            return Ok(Response::new(LeaseRevokeResponse {
                header: self.header(0),
            }));
        }
        let outcome::Result::LeaseRevoke(mut resp) = result(o)? else {
            return Err(unexpected());
        };
        resp.header = self.header(resp.header.map_or(0, |h| h.revision));
        Ok(Response::new(resp))
    }

    type LeaseKeepAliveStream = KeepAliveStream;

    async fn lease_keep_alive(
        &self,
        request: Request<Streaming<LeaseKeepAliveRequest>>,
    ) -> Result<Response<Self::LeaseKeepAliveStream>, Status> {
        let inbound = request.into_inner();
        let api = self.clone();
        let out = inbound
            .take_while(|r| r.is_ok())
            .filter_map(|r| r.ok())
            .map(move |r| {
                let api = api.clone();
                async move {
                    // A lease that does not exist (or ran out) answers TTL 0,
                    // as etcd does; a request that could not be answered in
                    // time gets no answer, and the client's next keep-alive
                    // tries again.
                    let answer = api.node.lease_keep_alive(r.id).await.ok()?;
                    Some(Ok(LeaseKeepAliveResponse {
                        header: api.header(0),
                        id: r.id,
                        ttl: answer.map_or(0, |(ttl, _)| ttl),
                    }))
                }
            });
        let out = futures_buffered(out);
        Ok(Response::new(Box::pin(out)))
    }

    async fn lease_time_to_live(
        &self,
        request: Request<LeaseTimeToLiveRequest>,
    ) -> Result<Response<LeaseTimeToLiveResponse>, Status> {
        let caller = self.caller(&request)?;
        let r = request.into_inner();
        let answer = self.node.lease_time_to_live(r.id).await.map_err(status)?;
        let Some((ttl, granted_ttl)) = answer else {
            return Ok(Response::new(LeaseTimeToLiveResponse {
                header: self.header(0),
                id: r.id,
                ttl: -1,
                granted_ttl: 0,
                keys: Vec::new(),
            }));
        };
        let keys = if r.keys {
            self.node.lease_keys(r.id).await.map_err(status)?
        } else {
            Vec::new()
        };
        // Listing the keys reads them, as in etcd: a user sees the keys
        // only if it may read every one (admins may).
        if !keys.is_empty() {
            let user = caller.user;
            self.authorize(|auth| {
                auth.check_admin(&user).or_else(|_| {
                    keys.iter()
                        .try_for_each(|k| auth.check(&user, synod_kv::Access::Read, k, &[]))
                })
            })
            .await?;
        }
        Ok(Response::new(LeaseTimeToLiveResponse {
            header: self.header(0),
            id: r.id,
            ttl,
            granted_ttl,
            keys,
        }))
    }

    async fn lease_leases(
        &self,
        _: Request<LeaseLeasesRequest>,
    ) -> Result<Response<LeaseLeasesResponse>, Status> {
        let leases = self
            .node
            .query(|kv| {
                kv.leases()
                    .iter()
                    .map(|(id, _)| LeaseStatus { id })
                    .collect()
            })
            .await
            .map_err(status)?;
        Ok(Response::new(LeaseLeasesResponse {
            header: self.header(0),
            leases,
        }))
    }
}

/// Runs up to `KEEPALIVES_IN_FLIGHT` keep-alives of one stream at once and
/// streams their answers as they come.
fn futures_buffered<S, F>(s: S) -> impl Stream<Item = Result<LeaseKeepAliveResponse, Status>>
where
    S: Stream<Item = F> + Send + 'static,
    F: std::future::Future<Output = Option<Result<LeaseKeepAliveResponse, Status>>>
        + Send
        + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(KEEPALIVES_IN_FLIGHT);
    let permits = std::sync::Arc::new(tokio::sync::Semaphore::new(KEEPALIVES_IN_FLIGHT));
    tokio::spawn(async move {
        tokio::pin!(s);
        while let Some(f) = s.next().await {
            let Ok(permit) = permits.clone().acquire_owned().await else {
                break;
            };
            let tx = tx.clone();
            tokio::spawn(async move {
                if let Some(r) = f.await {
                    let _ = tx.send(r).await;
                }
                drop(permit);
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}
