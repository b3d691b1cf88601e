//! etcd's lock service (v3lock): a lock is a key prefix; each contender
//! creates `name/<lease>` under its lease and holds the lock once every
//! older contender's key is gone. A contender whose lease expires loses its
//! key, so a crashed holder releases the lock by itself.

use crate::recipes::{contender_key, delete_op};
use crate::EtcdApi;
use bytes::Bytes;
use synod_proto::etcdserverpb::TxnRequest;
use synod_proto::v3lockpb::lock_server::Lock;
use synod_proto::v3lockpb::{LockRequest, LockResponse, UnlockRequest, UnlockResponse};
use tonic::{Request, Response, Status};

/// Deletes a contender's key if the Lock call ends without the lock (the
/// client gave up or an error): a queued key would block everyone after it
/// until its lease expired.
struct Abandon {
    api: EtcdApi,
    key: Option<Bytes>,
}

impl Drop for Abandon {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            let api = self.api.clone();
            tokio::spawn(async move {
                let _ = api
                    .txn(TxnRequest {
                        success: vec![delete_op(&key)],
                        ..TxnRequest::default()
                    })
                    .await;
            });
        }
    }
}

#[tonic::async_trait]
impl Lock for EtcdApi {
    async fn lock(&self, request: Request<LockRequest>) -> Result<Response<LockResponse>, Status> {
        let this = &self.acting_for(&request)?;
        let r = request.into_inner();
        let mut prefix = r.name.to_vec();
        prefix.push(b'/');
        let prefix = Bytes::from(prefix);
        let key = contender_key(&r.name, r.lease);
        let (my_rev, _, held) = this
            .create_or_get(&prefix, &key, Bytes::new(), r.lease)
            .await?;
        let mut guard = Abandon {
            api: this.clone(),
            key: Some(key.clone()),
        };
        let mut revision = my_rev;
        if !held {
            this.wait_deletes(&prefix, my_rev).await?;
            // The lease may have expired while we waited: then the key is
            // gone and the lock is not ours.
            match this.still_mine(&key, my_rev).await? {
                Some(read_at) => revision = read_at,
                None => return Err(Status::unknown("mutex: session is expired")),
            }
        }
        guard.key = None;
        Ok(Response::new(LockResponse {
            header: this.header(revision),
            key,
        }))
    }

    async fn unlock(
        &self,
        request: Request<UnlockRequest>,
    ) -> Result<Response<UnlockResponse>, Status> {
        let this = &self.acting_for(&request)?;
        let r = request.into_inner();
        let (_, _, revision) = this
            .txn(TxnRequest {
                success: vec![delete_op(&r.key)],
                ..TxnRequest::default()
            })
            .await?;
        Ok(Response::new(UnlockResponse {
            header: this.header(revision),
        }))
    }
}
