//! etcd's Maintenance service: status, alarms, consistency hashes,
//! snapshots, leader moves.

use crate::{kv_status, status, EtcdApi};
use synod_kv::outcome_error;
use synod_proto::etcdserverpb::alarm_request::AlarmAction;
use synod_proto::etcdserverpb::maintenance_server::Maintenance;
use synod_proto::etcdserverpb::*;
use synod_proto::synodpb::{command::Op, outcome};
use tonic::{Request, Response, Status};

/// Bytes per snapshot message.
const SNAPSHOT_CHUNK: usize = 1 << 20;

/// The etcd version synod speaks; etcdctl prints it and clients gate
/// features on it.
pub const ETCD_VERSION: &str = "3.5.0";

type SnapshotStream = tokio_stream::wrappers::ReceiverStream<Result<SnapshotResponse, Status>>;

fn not_yet(what: &str) -> Status {
    Status::unimplemented(format!("synod does not serve {what} yet"))
}

#[tonic::async_trait]
impl Maintenance for EtcdApi {
    async fn alarm(
        &self,
        request: Request<AlarmRequest>,
    ) -> Result<Response<AlarmResponse>, Status> {
        let caller = self.caller(&request)?;
        let r = request.into_inner();
        if AlarmAction::try_from(r.action) == Ok(AlarmAction::Get) {
            let alarms = self.node.query(|kv| kv.alarms()).await.map_err(status)?;
            return Ok(Response::new(AlarmResponse {
                header: self.header(0),
                alarms,
            }));
        }
        // Raising or clearing an alarm is the root role's (checked where
        // it applies).
        let o = self.propose(Op::Alarm(r), &caller).await?;
        match o.result {
            Some(outcome::Result::Alarm(mut resp)) => {
                resp.header = self.header(0);
                Ok(Response::new(resp))
            }
            Some(outcome::Result::Error(e)) => Err(kv_status(&outcome_error(&e))),
            _ => Err(Status::internal("outcome does not match the request")),
        }
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
            errors: s
                .alarms
                .iter()
                .map(|(member, alarm)| {
                    let name = AlarmType::try_from(*alarm).map_or("UNKNOWN", |a| a.as_str_name());
                    format!("memberID:{member} alarm:{name}")
                })
                .collect(),
            db_size_in_use: size,
            is_learner: s
                .membership
                .as_ref()
                .is_some_and(|c| !c.is_voter(self.node.config().id)),
            storage_version: String::new(),
            db_size_quota: self.node.config().quota_bytes as i64,
            downgrade_info: None,
        }))
    }

    async fn defragment(
        &self,
        request: Request<DefragmentRequest>,
    ) -> Result<Response<DefragmentResponse>, Status> {
        self.authorize_admin(&request).await?;
        // etcd answers a defragment with an empty response (no header);
        // redb needs no defragmenting, so there is nothing else to say.
        Ok(Response::new(DefragmentResponse { header: None }))
    }

    async fn hash(&self, request: Request<HashRequest>) -> Result<Response<HashResponse>, Status> {
        self.authorize_admin(&request).await?;
        let (hash, _, _) = self.node.hash_kv(0).await.map_err(retry_status)?;
        Ok(Response::new(HashResponse {
            header: self.header(0),
            hash,
        }))
    }

    async fn hash_kv(
        &self,
        request: Request<HashKvRequest>,
    ) -> Result<Response<HashKvResponse>, Status> {
        self.authorize_admin(&request).await?;
        let revision = request.into_inner().revision;
        let (hash, rev, compact_revision) =
            self.node.hash_kv(revision).await.map_err(retry_status)?;
        Ok(Response::new(HashKvResponse {
            header: self.header(rev),
            hash,
            compact_revision,
            hash_revision: rev,
        }))
    }

    type SnapshotStream = SnapshotStream;

    /// Streams the state machine as committed at one point (one storage
    /// read transaction, read off the core thread; in a sharded cluster
    /// every shard cut at one revision, design 0020), ending with its
    /// SHA-256 as etcd does, so the saved file checks itself on restore.
    /// The size is not known ahead: `remaining_bytes` is 0 but on the
    /// pieces before the last, where it is 1 (etcd's clients only copy
    /// the blobs).
    async fn snapshot(
        &self,
        request: Request<SnapshotRequest>,
    ) -> Result<Response<Self::SnapshotStream>, Status> {
        self.authorize_admin(&request).await?;
        let mut pieces = self
            .node
            .snapshot_file(SNAPSHOT_CHUNK)
            .await
            .map_err(retry_status)?;
        let header = self.header(0);
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tokio::spawn(async move {
            let mut next = pieces.recv().await;
            while let Some(piece) = next.take() {
                let after = pieces.recv().await;
                let message = piece
                    .map(|blob| SnapshotResponse {
                        header,
                        remaining_bytes: u64::from(after.is_some()),
                        blob,
                        version: String::new(),
                    })
                    .map_err(|e| Status::internal(format!("snapshot failed: {e}")));
                let failed = message.is_err();
                if tx.send(message).await.is_err() || failed {
                    return;
                }
                next = after;
            }
        });
        Ok(Response::new(tokio_stream::wrappers::ReceiverStream::new(
            rx,
        )))
    }

    /// Hands leadership to another voter. Like etcd, only the leader takes
    /// the request (`etcdctl move-leader` finds it among the endpoints).
    async fn move_leader(
        &self,
        request: Request<MoveLeaderRequest>,
    ) -> Result<Response<MoveLeaderResponse>, Status> {
        self.authorize_admin(&request).await?;
        let target = request.into_inner().target_id;
        let s = self.node.status();
        if !s.is_leader {
            return Err(Status::failed_precondition("etcdserver: not leader"));
        }
        let voter = s
            .membership
            .as_ref()
            .is_some_and(|c| c.is_voter(synod_server::NodeId(target)));
        if !voter || target == self.node.config().id.0 {
            return Err(Status::failed_precondition(
                "etcdserver: bad leader transferee",
            ));
        }
        self.node
            .transfer_leadership(synod_server::NodeId(target))
            .await
            .map_err(|e| match e {
                synod_server::RequestError::Refused(m) => {
                    Status::failed_precondition(format!("etcdserver: {m}"))
                }
                other => status(other),
            })?;
        Ok(Response::new(MoveLeaderResponse {
            header: self.header(0),
        }))
    }

    async fn downgrade(
        &self,
        request: Request<DowngradeRequest>,
    ) -> Result<Response<DowngradeResponse>, Status> {
        self.authorize_admin(&request).await?;
        Err(not_yet("Downgrade"))
    }
}

/// The status of a backup's or a hash's failure: a shard behind on this
/// member, or splitting, is worth a retry.
fn retry_status(e: synod_server::RequestError) -> Status {
    match e {
        synod_server::RequestError::Refused(m) => Status::unavailable(m),
        other => status(other),
    }
}
