//! etcd's Cluster service: membership changes through the log as joint
//! configurations. Only the leader changes membership; any other node
//! forwards the request to it, as etcd does.
//!
//! A change is two replicated steps: the member table (names and
//! addresses, in the state machine, so every node can reach and list every
//! member) and the Paxos configuration (who votes, who only learns). An
//! added member is in the table before the configuration includes it, so
//! the leader can reach it as soon as it must; a removed member leaves the
//! configuration first and the table after.

use crate::Sender;
use crate::{status, EtcdApi};
use synod_proto::etcdserverpb::cluster_client::ClusterClient;
use synod_proto::etcdserverpb::cluster_server::Cluster;
use synod_proto::etcdserverpb::*;
use synod_proto::synodpb::{command::Op, MemberTable};
use synod_server::{Membership, NodeId};
use tonic::{Request, Response, Status};

fn member_not_found() -> Status {
    Status::not_found("etcdserver: member not found")
}

/// Where the request must go.
enum Route {
    /// This node leads: serve here.
    Here,
    /// Forward to the leader's client address.
    Leader(String),
}

impl EtcdApi {
    fn route(&self) -> Result<Route, Status> {
        let s = self.node.status();
        if s.is_leader {
            return Ok(Route::Here);
        }
        let leader = s
            .leader
            .ok_or_else(|| Status::unavailable("etcdserver: no leader"))?;
        let url = s
            .members
            .iter()
            .find(|m| m.id == leader.0)
            .and_then(|m| m.client_ur_ls.first().cloned())
            .ok_or_else(|| Status::unavailable("etcdserver: leader's address unknown"))?;
        let url = if url.starts_with("http") {
            url
        } else {
            format!("http://{url}")
        };
        Ok(Route::Leader(url))
    }

    /// A request sent on to the leader as its sender: with the sender's
    /// token, or, for a user its client certificate named, a token this
    /// member issues for that user (the leader cannot see the
    /// certificate), so that the leader judges the same user.
    fn forwarded<T>(&self, message: T, sender: &Sender) -> Result<Request<T>, Status> {
        let mut request = Request::new(message);
        let token = match &sender.token {
            Some(t) => Some(t.clone()),
            None if sender.auth_on && !sender.user.is_empty() => Some(
                self.tokens
                    .issue(&self.node.auth(), &sender.user)
                    .map_err(crate::auth_status)?,
            ),
            None => None,
        };
        if let Some(token) = token {
            let value = token
                .parse()
                .map_err(|_| Status::internal("a token that is not valid metadata"))?;
            request.metadata_mut().insert("token", value);
        }
        Ok(request)
    }

    /// A client of the leader's etcd API, over TLS when this member
    /// serves TLS (presenting its own certificate, which the leader asks
    /// for under `--client-cert-auth`).
    async fn leader_client(
        &self,
        url: String,
    ) -> Result<ClusterClient<tonic::transport::Channel>, Status> {
        let unreachable = |e: &dyn std::fmt::Display| {
            Status::unavailable(format!("cannot reach the leader: {e}"))
        };
        let mut endpoint =
            tonic::transport::Endpoint::from_shared(url).map_err(|e| unreachable(&e))?;
        if let Some(files) = &self.node.config().client_tls_files {
            let read = |p: &std::path::Path| {
                std::fs::read(p).map_err(|e| unreachable(&format!("{}: {e}", p.display())))
            };
            let cert = read(&files.cert)?;
            let ca = match &files.trusted_ca {
                Some(ca) => read(ca)?,
                None => cert.clone(),
            };
            let tls = tonic::transport::ClientTlsConfig::new()
                .ca_certificate(tonic::transport::Certificate::from_pem(ca))
                .identity(tonic::transport::Identity::from_pem(
                    cert,
                    read(&files.key)?,
                ));
            endpoint = endpoint.tls_config(tls).map_err(|e| unreachable(&e))?;
        }
        let channel = endpoint.connect().await.map_err(|e| unreachable(&e))?;
        Ok(ClusterClient::new(channel))
    }

    /// The configuration a change starts from; refused while another
    /// change is under way.
    fn stable_membership(&self) -> Result<Membership, Status> {
        let s = self.node.status();
        match &s.membership {
            Some(c) if !c.is_joint() && !s.membership_changing => Ok(c.target().clone()),
            _ => Err(Status::failed_precondition(
                "etcdserver: a membership change is already in progress",
            )),
        }
    }

    /// Replicates changes to the member table.
    async fn write_table(
        &self,
        members: Vec<Member>,
        removed: Vec<u64>,
        caller: Sender,
    ) -> Result<(), Status> {
        self.write(Op::MemberTable(MemberTable { members, removed }), &caller)
            .await?;
        Ok(())
    }

    async fn change(&self, target: Membership) -> Result<(), Status> {
        self.node
            .change_membership(target)
            .await
            .map_err(|e| match e {
                synod_server::RequestError::Refused(m) => {
                    Status::failed_precondition(format!("etcdserver: {m}"))
                }
                other => status(other),
            })
    }
}

fn with(members: &[NodeId], id: NodeId) -> Vec<NodeId> {
    let mut v = members.to_vec();
    if !v.contains(&id) {
        v.push(id);
        v.sort();
    }
    v
}

fn without(members: &[NodeId], id: NodeId) -> Vec<NodeId> {
    members.iter().copied().filter(|m| *m != id).collect()
}

/// Peer URLs must be `http://IP:PORT` (synod listens on addresses, not
/// names).
fn check_urls(urls: &[String]) -> Result<(), Status> {
    let bad = || Status::invalid_argument("etcdserver: given member URLs are invalid");
    if urls.is_empty() {
        return Err(bad());
    }
    for u in urls {
        let probe = Member {
            peer_ur_ls: vec![u.clone()],
            ..Member::default()
        };
        synod_server::config::peer_addr_of(&probe).ok_or_else(bad)?;
    }
    Ok(())
}

#[tonic::async_trait]
impl Cluster for EtcdApi {
    async fn member_add(
        &self,
        request: Request<MemberAddRequest>,
    ) -> Result<Response<MemberAddResponse>, Status> {
        let caller = self.authorize_admin(&request).await?;
        let r = request.into_inner();
        if let Route::Leader(url) = self.route()? {
            return self
                .leader_client(url)
                .await?
                .member_add(self.forwarded(r, &caller)?)
                .await;
        }
        check_urls(&r.peer_ur_ls)?;
        let current = self.stable_membership()?;
        let mut table = self.node.members();
        if table
            .iter()
            .any(|m| m.peer_ur_ls.iter().any(|u| r.peer_ur_ls.contains(u)))
        {
            return Err(Status::failed_precondition(
                "etcdserver: Peer URLs already exists",
            ));
        }
        let known = current.voters.iter().chain(&current.observers).map(|n| n.0);
        let id = table.iter().map(|m| m.id).chain(known).max().unwrap_or(0) + 1;
        let member = Member {
            id,
            name: String::new(),
            peer_ur_ls: r.peer_ur_ls,
            client_ur_ls: Vec::new(),
            is_learner: r.is_learner,
        };
        table.push(member.clone());
        self.write_table(table, Vec::new(), caller).await?;
        let new = NodeId(id);
        let target = if r.is_learner {
            Membership::new(&current.voters, &with(&current.observers, new))
        } else {
            Membership::new(&with(&current.voters, new), &current.observers)
        };
        self.change(target).await?;
        Ok(Response::new(MemberAddResponse {
            header: self.header(0),
            member: Some(member),
            members: self.node.members(),
        }))
    }

    async fn member_remove(
        &self,
        request: Request<MemberRemoveRequest>,
    ) -> Result<Response<MemberRemoveResponse>, Status> {
        let caller = self.authorize_admin(&request).await?;
        let r = request.into_inner();
        if let Route::Leader(url) = self.route()? {
            return self
                .leader_client(url)
                .await?
                .member_remove(self.forwarded(r, &caller)?)
                .await;
        }
        let current = self.stable_membership()?;
        let id = NodeId(r.id);
        if !current.voters.contains(&id) && !current.observers.contains(&id) {
            return Err(member_not_found());
        }
        let target = Membership::new(
            &without(&current.voters, id),
            &without(&current.observers, id),
        );
        self.change(target).await?;
        // The configuration no longer includes the member: the table
        // follows (written through whoever leads now: a removed leader has
        // handed over).
        self.write_table(Vec::new(), vec![r.id], caller).await?;
        Ok(Response::new(MemberRemoveResponse {
            header: self.header(0),
            members: self.node.members(),
        }))
    }

    async fn member_update(
        &self,
        request: Request<MemberUpdateRequest>,
    ) -> Result<Response<MemberUpdateResponse>, Status> {
        let caller = self.authorize_admin(&request).await?;
        let r = request.into_inner();
        if let Route::Leader(url) = self.route()? {
            return self
                .leader_client(url)
                .await?
                .member_update(self.forwarded(r, &caller)?)
                .await;
        }
        check_urls(&r.peer_ur_ls)?;
        let mut table = self.node.members();
        let m = table
            .iter_mut()
            .find(|m| m.id == r.id)
            .ok_or_else(member_not_found)?;
        m.peer_ur_ls = r.peer_ur_ls;
        let updated = m.clone();
        self.write_table(vec![updated], Vec::new(), caller).await?;
        Ok(Response::new(MemberUpdateResponse {
            header: self.header(0),
            members: self.node.members(),
        }))
    }

    async fn member_list(
        &self,
        _: Request<MemberListRequest>,
    ) -> Result<Response<MemberListResponse>, Status> {
        Ok(Response::new(MemberListResponse {
            header: self.header(0),
            members: self.node.members(),
        }))
    }

    async fn member_promote(
        &self,
        request: Request<MemberPromoteRequest>,
    ) -> Result<Response<MemberPromoteResponse>, Status> {
        let caller = self.authorize_admin(&request).await?;
        let r = request.into_inner();
        if let Route::Leader(url) = self.route()? {
            return self
                .leader_client(url)
                .await?
                .member_promote(self.forwarded(r, &caller)?)
                .await;
        }
        let current = self.stable_membership()?;
        let id = NodeId(r.id);
        if current.voters.contains(&id) {
            return Err(Status::failed_precondition(
                "etcdserver: can only promote a learner member",
            ));
        }
        if !current.observers.contains(&id) {
            return Err(member_not_found());
        }
        let target = Membership::new(&with(&current.voters, id), &without(&current.observers, id));
        self.change(target).await?;
        Ok(Response::new(MemberPromoteResponse {
            header: self.header(0),
            members: self.node.members(),
        }))
    }
}
