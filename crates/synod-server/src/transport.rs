//! Peer transport: one gRPC stream per (sender, receiver) pair. The
//! receiving side hands batches to the core loop; the sending side is one
//! task per peer that (re)connects and streams whatever the core queued.

use crate::core::Input;
use crate::inbox::{Inbox, Refused};
use std::net::SocketAddr;
use std::time::Duration;
use synod_proto::peerpb::peer_server::Peer;
use synod_proto::peerpb::{peer_client::PeerClient, Ack, Batch};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};

/// Batches queued per peer before new ones are dropped.
pub const PEER_QUEUE_MAX: usize = 1024;
/// Wait before reconnecting to a peer that refused or dropped us.
const RECONNECT_MS: u64 = 100;

/// The receiving side of the peer service.
pub struct PeerService {
    inputs: Inbox,
    storage: crate::streams::StorageHandle,
    cluster_id: u64,
    reporter: crate::report::Reporter,
    auth: crate::peer_auth::PeerAuth,
}

impl PeerService {
    /// Forwards every received batch to the core loop; writes received
    /// snapshot streams into `storage` for the core to install.
    pub(crate) fn new(
        inputs: Inbox,
        storage: crate::streams::StorageHandle,
        cluster_id: u64,
        reporter: crate::report::Reporter,
        auth: crate::peer_auth::PeerAuth,
    ) -> PeerService {
        PeerService {
            inputs,
            storage,
            cluster_id,
            reporter,
            auth,
        }
    }
}

#[tonic::async_trait]
impl Peer for PeerService {
    async fn stream(&self, request: Request<Streaming<Batch>>) -> Result<Response<Ack>, Status> {
        let sender = self.auth.verify(&request)?;
        let mut stream = request.into_inner();
        while let Some(batch) = stream.next().await {
            let batch = batch?;
            // An authenticated stream speaks for its sender only, in
            // every group's batch it carries.
            let claimed = std::iter::once(batch.from).chain(batch.more.iter().map(|b| b.from));
            if let Some(other) = sender.and_then(|s| claimed.into_iter().find(|&f| f != s)) {
                return Err(Status::permission_denied(format!(
                    "a batch from node {} on node {}'s stream",
                    other,
                    sender.unwrap_or_default()
                )));
            }
            match self.inputs.send(Input::Peer(batch)) {
                Ok(()) => {}
                // The core is behind: drop the batch, Paxos retransmits
                // what mattered in it.
                Err(Refused::Full) => {
                    tracing::debug!("core input queue full: peer batch dropped");
                }
                Err(Refused::Stopped) => {
                    return Err(Status::unavailable("node is shutting down"));
                }
            }
        }
        Ok(Response::new(Ack {}))
    }

    async fn snapshot(
        &self,
        request: Request<Streaming<synod_proto::peerpb::SnapshotChunk>>,
    ) -> Result<Response<Ack>, Status> {
        self.auth.verify(&request)?;
        crate::streams::receive(
            &self.storage,
            &self.inputs,
            self.cluster_id,
            request.into_inner(),
        )
        .await?;
        Ok(Response::new(Ack {}))
    }

    async fn report(
        &self,
        request: Request<synod_proto::peerpb::ReportRequest>,
    ) -> Result<Response<synod_proto::peerpb::NodeReport>, Status> {
        self.auth.verify(&request)?;
        if request.get_ref().cluster_id != self.cluster_id {
            return Err(Status::permission_denied(format!(
                "this node belongs to cluster {:x}, not {:x}",
                self.cluster_id,
                request.get_ref().cluster_id
            )));
        }
        Ok(Response::new(self.reporter.report()))
    }
}

/// Streams batches from `queue` to the peer at `addr`, reconnecting as
/// needed; batches queued while disconnected are dropped (Paxos resends).
pub async fn run_sender(
    addr: SocketAddr,
    mut queue: mpsc::Receiver<Batch>,
    auth: crate::peer_auth::PeerAuth,
) {
    loop {
        let endpoint = match auth.endpoint(addr) {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(%addr, error = %e, "cannot set up a peer connection");
                while queue.try_recv().is_ok() {}
                tokio::time::sleep(Duration::from_secs(1)).await;
                if queue.is_closed() {
                    return;
                }
                continue;
            }
        };
        let client = match endpoint.connect().await.map(PeerClient::new) {
            Ok(c) => c,
            Err(_) => {
                // Drain what piled up while the peer was unreachable.
                while queue.try_recv().is_ok() {}
                tokio::time::sleep(Duration::from_millis(RECONNECT_MS)).await;
                if queue.is_closed() {
                    return;
                }
                continue;
            }
        };
        let (tx, rx) = mpsc::channel::<Batch>(PEER_QUEUE_MAX);
        let mut client = client
            .max_encoding_message_size(1 << 30)
            .max_decoding_message_size(1 << 30);
        let mut request = Request::new(ReceiverStream::new(rx));
        auth.sign(&mut request);
        let call = tokio::spawn(async move { client.stream(request).await });
        loop {
            let Some(batch) = queue.recv().await else {
                return;
            };
            if tx.send(batch).await.is_err() || call.is_finished() {
                break;
            }
        }
        call.abort();
        tokio::time::sleep(Duration::from_millis(RECONNECT_MS)).await;
    }
}
