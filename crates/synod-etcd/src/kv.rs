//! etcd's KV service: Range, Put, DeleteRange, Txn, Compact.

use crate::Sender;
use crate::{auth_status, kv_status, status, EtcdApi};
use synod_kv::{outcome_error, validate, Access};
use synod_kv::{AuthError, KvError};
use synod_proto::etcdserverpb::kv_server::Kv;
use synod_proto::etcdserverpb::{
    CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse, PutRequest,
    PutResponse, RangeRequest, RangeResponse, TxnRequest, TxnResponse,
};
use synod_proto::synodpb::{command::Op, outcome, Outcome};
use tonic::{Request, Response, Status};

impl EtcdApi {
    /// Proposes a client's write; the state machine checks the sender's
    /// permissions where it applies. Refused there because an auth change
    /// this member had not applied yet came first ("revision of auth
    /// store is old"), it is judged again once this member caught up and
    /// proposed once more: a simple token still valid then goes through,
    /// one that died with the change (an old password) does not, and a
    /// JWT from before the change gets etcd's error.
    pub(crate) async fn propose(&self, op: Op, sender: &Sender) -> Result<Outcome, Status> {
        // etcd measures the request it would propose; so does synod.
        if op.encoded_len() > self.node.config().max_request_bytes {
            return Err(Status::invalid_argument("etcdserver: request is too large"));
        }
        if !sender.auth_on {
            return self
                .node
                .write_as(op, sender.caller())
                .await
                .map_err(status);
        }
        let outcome = self
            .node
            .write_as(op.clone(), sender.caller())
            .await
            .map_err(status)?;
        let old = matches!(&outcome.result, Some(outcome::Result::Error(e))
            if outcome_error(e) == KvError::Auth(AuthError::AuthOldRevision));
        if !old {
            return Ok(outcome);
        }
        self.catch_up().await?;
        let fresh = self.resolve(sender.token.clone(), sender.common_name.clone())?;
        self.node.write_as(op, fresh.caller()).await.map_err(status)
    }

    /// [`propose`](Self::propose), with a refusal as its gRPC status.
    pub(crate) async fn write(&self, op: Op, sender: &Sender) -> Result<outcome::Result, Status> {
        match self.propose(op, sender).await? {
            Outcome {
                result: Some(outcome::Result::Error(e)),
            } => Err(kv_status(&outcome_error(&e))),
            Outcome { result: Some(r) } => Ok(r),
            Outcome { result: None } => Err(Status::internal("empty outcome")),
        }
    }
}

fn unexpected() -> Status {
    Status::internal("outcome does not match the request")
}

#[tonic::async_trait]
impl Kv for EtcdApi {
    async fn range(
        &self,
        request: Request<RangeRequest>,
    ) -> Result<Response<RangeResponse>, Status> {
        let caller = self.caller(&request)?;
        let r = request.into_inner();
        validate::range(&r).map_err(|e| kv_status(&e))?;
        let serializable = r.serializable;
        let (key, range_end) = (r.key.clone(), r.range_end.clone());
        let mut resp = self.node.range(r, serializable).await.map_err(status)?;
        // Judged once the read is served: this member has then applied
        // every auth change committed before the read began.
        self.node
            .auth()
            .check(&caller.user, Access::Read, &key, &range_end)
            .map_err(auth_status)?;
        let revision = resp.header.as_ref().map_or(0, |h| h.revision);
        resp.header = self.header(revision);
        Ok(Response::new(resp))
    }

    async fn put(&self, request: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        let caller = self.caller(&request)?;
        let r = request.into_inner();
        validate::put(&r).map_err(|e| kv_status(&e))?;
        let outcome::Result::Put(mut resp) = self.write(Op::Put(r), &caller).await? else {
            return Err(unexpected());
        };
        resp.header = self.header(resp.header.map_or(0, |h| h.revision));
        Ok(Response::new(resp))
    }

    async fn delete_range(
        &self,
        request: Request<DeleteRangeRequest>,
    ) -> Result<Response<DeleteRangeResponse>, Status> {
        let caller = self.caller(&request)?;
        let r = request.into_inner();
        validate::delete_range(&r).map_err(|e| kv_status(&e))?;
        let outcome::Result::DeleteRange(mut resp) =
            self.write(Op::DeleteRange(r), &caller).await?
        else {
            return Err(unexpected());
        };
        resp.header = self.header(resp.header.map_or(0, |h| h.revision));
        Ok(Response::new(resp))
    }

    async fn txn(&self, request: Request<TxnRequest>) -> Result<Response<TxnResponse>, Status> {
        let caller = self.caller(&request)?;
        let r = request.into_inner();
        validate::txn(&r).map_err(|e| kv_status(&e))?;
        let outcome::Result::Txn(mut resp) = self.write(Op::Txn(r), &caller).await? else {
            return Err(unexpected());
        };
        resp.header = self.header(resp.header.map_or(0, |h| h.revision));
        Ok(Response::new(resp))
    }

    async fn compact(
        &self,
        request: Request<CompactionRequest>,
    ) -> Result<Response<CompactionResponse>, Status> {
        let caller = self.caller(&request)?;
        let r = request.into_inner();
        let outcome::Result::Compact(mut resp) = self.write(Op::Compact(r), &caller).await? else {
            return Err(unexpected());
        };
        resp.header = self.header(resp.header.map_or(0, |h| h.revision));
        Ok(Response::new(resp))
    }
}
