//! etcd's Maintenance service: Status now; the rest arrive with the issue
//! that completes the etcd API and answer `Unimplemented` until then.

use crate::EtcdApi;
use synod_proto::etcdserverpb::maintenance_server::Maintenance;
use synod_proto::etcdserverpb::*;
use tonic::{Request, Response, Status};

/// The etcd version synod speaks; etcdctl prints it and clients gate
/// features on it.
pub const ETCD_VERSION: &str = "3.5.0";

type SnapshotStream = tokio_stream::wrappers::ReceiverStream<Result<SnapshotResponse, Status>>;

fn not_yet(what: &str) -> Status {
    Status::unimplemented(format!("synod does not serve {what} yet"))
}

#[tonic::async_trait]
impl Maintenance for EtcdApi {
    async fn alarm(&self, _: Request<AlarmRequest>) -> Result<Response<AlarmResponse>, Status> {
        Ok(Response::new(AlarmResponse {
            header: self.header(0),
            alarms: Vec::new(),
        }))
    }

    async fn status(&self, _: Request<StatusRequest>) -> Result<Response<StatusResponse>, Status> {
        let s = self.node.status();
        let size = self.node.db_size();
        Ok(Response::new(StatusResponse {
            header: self.header(0),
            version: ETCD_VERSION.to_string(),
            db_size: size,
            leader: s.leader.map_or(0, |l| l.0),
            raft_index: s.commit,
            raft_term: s.round,
            raft_applied_index: s.applied,
            errors: Vec::new(),
            db_size_in_use: size,
            is_learner: false,
            storage_version: String::new(),
            db_size_quota: 0,
            downgrade_info: None,
        }))
    }

    async fn defragment(
        &self,
        _: Request<DefragmentRequest>,
    ) -> Result<Response<DefragmentResponse>, Status> {
        Ok(Response::new(DefragmentResponse {
            header: self.header(0),
        }))
    }

    async fn hash(&self, _: Request<HashRequest>) -> Result<Response<HashResponse>, Status> {
        Err(not_yet("Hash"))
    }

    async fn hash_kv(&self, _: Request<HashKvRequest>) -> Result<Response<HashKvResponse>, Status> {
        Err(not_yet("HashKV"))
    }

    type SnapshotStream = SnapshotStream;

    async fn snapshot(
        &self,
        _: Request<SnapshotRequest>,
    ) -> Result<Response<Self::SnapshotStream>, Status> {
        Err(not_yet("Snapshot"))
    }

    async fn move_leader(
        &self,
        _: Request<MoveLeaderRequest>,
    ) -> Result<Response<MoveLeaderResponse>, Status> {
        Err(not_yet("MoveLeader"))
    }

    async fn downgrade(
        &self,
        _: Request<DowngradeRequest>,
    ) -> Result<Response<DowngradeResponse>, Status> {
        Err(not_yet("Downgrade"))
    }
}
