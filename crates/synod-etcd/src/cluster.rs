//! etcd's Cluster service: MemberList now; membership changes arrive with
//! joint configurations and answer `Unimplemented` until then.

use crate::EtcdApi;
use synod_proto::etcdserverpb::cluster_server::Cluster;
use synod_proto::etcdserverpb::*;
use tonic::{Request, Response, Status};

impl EtcdApi {
    fn member_list(&self) -> Vec<Member> {
        self.node
            .members()
            .into_iter()
            .map(|m| Member {
                id: m.id.0,
                name: format!("synod-{}", m.id.0),
                peer_ur_ls: vec![format!("http://{}", m.peer_addr)],
                client_ur_ls: vec![format!("http://{}", m.client_addr)],
                is_learner: false,
            })
            .collect()
    }
}

fn not_yet(what: &str) -> Status {
    Status::unimplemented(format!("synod does not serve {what} yet"))
}

#[tonic::async_trait]
impl Cluster for EtcdApi {
    async fn member_add(
        &self,
        _: Request<MemberAddRequest>,
    ) -> Result<Response<MemberAddResponse>, Status> {
        Err(not_yet("MemberAdd"))
    }

    async fn member_remove(
        &self,
        _: Request<MemberRemoveRequest>,
    ) -> Result<Response<MemberRemoveResponse>, Status> {
        Err(not_yet("MemberRemove"))
    }

    async fn member_update(
        &self,
        _: Request<MemberUpdateRequest>,
    ) -> Result<Response<MemberUpdateResponse>, Status> {
        Err(not_yet("MemberUpdate"))
    }

    async fn member_list(
        &self,
        _: Request<MemberListRequest>,
    ) -> Result<Response<MemberListResponse>, Status> {
        Ok(Response::new(MemberListResponse {
            header: self.header(0),
            members: self.member_list(),
        }))
    }

    async fn member_promote(
        &self,
        _: Request<MemberPromoteRequest>,
    ) -> Result<Response<MemberPromoteResponse>, Status> {
        Err(not_yet("MemberPromote"))
    }
}
