//! etcd's KV service: Range, Put, DeleteRange, Txn, Compact.

use crate::{kv_status, status, EtcdApi};
use synod_kv::{outcome_error, validate};
use synod_proto::etcdserverpb::kv_server::Kv;
use synod_proto::etcdserverpb::{
    CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse, PutRequest,
    PutResponse, RangeRequest, RangeResponse, TxnRequest, TxnResponse,
};
use synod_proto::synodpb::{command::Op, outcome, Outcome};
use tonic::{Request, Response, Status};

impl EtcdApi {
    pub(crate) async fn write(&self, op: Op) -> Result<outcome::Result, Status> {
        // etcd measures the request it would propose; so does synod.
        if op.encoded_len() > self.node.config().max_request_bytes {
            return Err(Status::invalid_argument("etcdserver: request is too large"));
        }
        match self.node.write(op).await.map_err(status)? {
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
        let r = request.into_inner();
        validate::range(&r).map_err(|e| kv_status(&e))?;
        let serializable = r.serializable;
        let mut resp = self.node.range(r, serializable).await.map_err(status)?;
        let revision = resp.header.as_ref().map_or(0, |h| h.revision);
        resp.header = self.header(revision);
        Ok(Response::new(resp))
    }

    async fn put(&self, request: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        let r = request.into_inner();
        validate::put(&r).map_err(|e| kv_status(&e))?;
        let outcome::Result::Put(mut resp) = self.write(Op::Put(r)).await? else {
            return Err(unexpected());
        };
        resp.header = self.header(resp.header.map_or(0, |h| h.revision));
        Ok(Response::new(resp))
    }

    async fn delete_range(
        &self,
        request: Request<DeleteRangeRequest>,
    ) -> Result<Response<DeleteRangeResponse>, Status> {
        let r = request.into_inner();
        validate::delete_range(&r).map_err(|e| kv_status(&e))?;
        let outcome::Result::DeleteRange(mut resp) = self.write(Op::DeleteRange(r)).await? else {
            return Err(unexpected());
        };
        resp.header = self.header(resp.header.map_or(0, |h| h.revision));
        Ok(Response::new(resp))
    }

    async fn txn(&self, request: Request<TxnRequest>) -> Result<Response<TxnResponse>, Status> {
        let r = request.into_inner();
        validate::txn(&r).map_err(|e| kv_status(&e))?;
        let outcome::Result::Txn(mut resp) = self.write(Op::Txn(r)).await? else {
            return Err(unexpected());
        };
        resp.header = self.header(resp.header.map_or(0, |h| h.revision));
        Ok(Response::new(resp))
    }

    async fn compact(
        &self,
        request: Request<CompactionRequest>,
    ) -> Result<Response<CompactionResponse>, Status> {
        let r = request.into_inner();
        let outcome::Result::Compact(mut resp) = self.write(Op::Compact(r)).await? else {
            return Err(unexpected());
        };
        resp.header = self.header(resp.header.map_or(0, |h| h.revision));
        Ok(Response::new(resp))
    }
}
