//! etcd's election service (v3election): like a lock, the oldest
//! contender's key under the election's prefix leads; its value is what the
//! leader proclaims, and observers follow that value.

use crate::recipes::{contender_key, created_at, delete_op, prefix_end, put_op};
use crate::EtcdApi;
use bytes::Bytes;
use std::pin::Pin;
use synod_kv::KeyRange;
use synod_proto::etcdserverpb::TxnRequest;
use synod_proto::mvccpb::event::EventType;
use synod_proto::v3electionpb::election_server::Election;
use synod_proto::v3electionpb::*;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

/// The response stream of one Observe call.
pub type ObserveStream = Pin<Box<dyn Stream<Item = Result<LeaderResponse, Status>> + Send>>;

fn not_leader() -> Status {
    Status::failed_precondition("election: not leader")
}

fn prefix_of(name: &[u8]) -> Bytes {
    let mut p = name.to_vec();
    p.push(b'/');
    Bytes::from(p)
}

#[tonic::async_trait]
impl Election for EtcdApi {
    async fn campaign(
        &self,
        request: Request<CampaignRequest>,
    ) -> Result<Response<CampaignResponse>, Status> {
        let this = &self.acting_for(&request)?;
        let r = request.into_inner();
        let prefix = prefix_of(&r.name);
        let key = contender_key(&r.name, r.lease);
        let (my_rev, value, held) = this
            .create_or_get(&prefix, &key, r.value.clone(), r.lease)
            .await?;
        if value != r.value {
            // Campaigning again with a new value proclaims it.
            this.txn(TxnRequest {
                compare: vec![created_at(&key, my_rev)],
                success: vec![put_op(&key, r.value.clone(), r.lease)],
                failure: Vec::new(),
            })
            .await?;
        }
        let mut revision = my_rev;
        if !held {
            this.wait_deletes(&prefix, my_rev).await?;
            match this.still_mine(&key, my_rev).await? {
                Some(read_at) => revision = read_at,
                None => return Err(Status::unknown("election: session expired")),
            }
        }
        Ok(Response::new(CampaignResponse {
            header: this.header(revision),
            leader: Some(LeaderKey {
                name: r.name,
                key,
                rev: my_rev,
                lease: r.lease,
            }),
        }))
    }

    async fn proclaim(
        &self,
        request: Request<ProclaimRequest>,
    ) -> Result<Response<ProclaimResponse>, Status> {
        let this = &self.acting_for(&request)?;
        let r = request.into_inner();
        let leader = r
            .leader
            .ok_or_else(|| Status::invalid_argument("\"leader\" field must be provided"))?;
        let (ok, _, revision) = this
            .txn(TxnRequest {
                compare: vec![created_at(&leader.key, leader.rev)],
                success: vec![put_op(&leader.key, r.value, leader.lease)],
                failure: Vec::new(),
            })
            .await?;
        if !ok {
            return Err(not_leader());
        }
        Ok(Response::new(ProclaimResponse {
            header: this.header(revision),
        }))
    }

    async fn leader(
        &self,
        request: Request<LeaderRequest>,
    ) -> Result<Response<LeaderResponse>, Status> {
        let this = &self.acting_for(&request)?;
        let name = request.into_inner().name;
        let prefix = prefix_of(&name);
        this.authorize_read(&prefix, &prefix_end(&prefix)).await?;
        let (kv, revision) = this.contender_now(&prefix).await?;
        let kv = kv.ok_or_else(|| Status::unknown("election: no leader"))?;
        Ok(Response::new(LeaderResponse {
            header: this.header(revision),
            kv: Some(kv),
        }))
    }

    type ObserveStream = ObserveStream;

    async fn observe(
        &self,
        request: Request<LeaderRequest>,
    ) -> Result<Response<Self::ObserveStream>, Status> {
        let this = &self.acting_for(&request)?;
        let prefix = prefix_of(&request.into_inner().name);
        this.authorize_read(&prefix, &prefix_end(&prefix)).await?;
        let api = this.clone();
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        tokio::spawn(async move {
            let send = |kv, revision| LeaderResponse {
                header: api.header(revision),
                kv: Some(kv),
            };
            loop {
                let (leader, revision) = match api.contender_now(&prefix).await {
                    Ok(x) => x,
                    Err(e) => {
                        let _ = tx.send(Err(e)).await;
                        return;
                    }
                };
                let Some(leader) = leader else {
                    // Nobody leads: wait for the first contender.
                    let range = KeyRange::from_etcd(&prefix, &prefix_end(&prefix));
                    if api
                        .wait_for_range(range, revision + 1, |t| t == EventType::Put)
                        .await
                        .is_err()
                    {
                        return;
                    }
                    continue;
                };
                if tx.send(Ok(send(leader.clone(), revision))).await.is_err() {
                    return;
                }
                // Follow the leader's value until its key goes away.
                let mut from = revision + 1;
                loop {
                    match api.wait_for(&leader.key, from, |_| true).await {
                        Ok(kv) if kv.version > 0 => {
                            from = kv.mod_revision + 1;
                            let rev = kv.mod_revision;
                            if tx.send(Ok(send(kv, rev))).await.is_err() {
                                return;
                            }
                        }
                        Ok(_) => break,
                        Err(_) => return,
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn resign(
        &self,
        request: Request<ResignRequest>,
    ) -> Result<Response<ResignResponse>, Status> {
        let this = &self.acting_for(&request)?;
        let leader = request
            .into_inner()
            .leader
            .ok_or_else(|| Status::invalid_argument("\"leader\" field must be provided"))?;
        let (_, _, revision) = this
            .txn(TxnRequest {
                compare: vec![created_at(&leader.key, leader.rev)],
                success: vec![delete_op(&leader.key)],
                failure: Vec::new(),
            })
            .await?;
        Ok(Response::new(ResignResponse {
            header: this.header(revision),
        }))
    }
}
