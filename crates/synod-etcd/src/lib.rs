//! The etcd v3 gRPC front end. Each handler validates the request with
//! etcd's rules, calls the node facade, fills the response header, and maps
//! errors to gRPC statuses in one place (`status`), with etcd's codes and
//! messages so client libraries react as they do against etcd.

mod cluster;
mod election;
mod kv;
mod lease;
mod lock;
mod maintenance;
mod metrics;
mod recipes;
mod watch;

use std::net::SocketAddr;
use std::sync::Arc;
use synod_kv::KvError;
use synod_proto::etcdserverpb::{
    cluster_server::ClusterServer, kv_server::KvServer, lease_server::LeaseServer,
    maintenance_server::MaintenanceServer, watch_server::WatchServer, ResponseHeader,
};
use synod_proto::v3electionpb::election_server::ElectionServer;
use synod_proto::v3lockpb::lock_server::LockServer;
use synod_server::{Node, RequestError};
use tonic::Status;

/// The handlers' shared view of the node.
#[derive(Clone)]
pub struct EtcdApi {
    node: Arc<Node>,
}

impl EtcdApi {
    /// Serves the etcd API of `node`.
    pub fn new(node: Arc<Node>) -> EtcdApi {
        EtcdApi { node }
    }

    /// A response header at `revision` (the current one when 0).
    fn header(&self, revision: i64) -> Option<ResponseHeader> {
        let s = self.node.status();
        Some(ResponseHeader {
            cluster_id: self.node.config().cluster_id,
            member_id: self.node.config().id.0,
            revision: if revision > 0 { revision } else { s.revision },
            raft_term: s.round,
        })
    }
}

/// Maps every failure to etcd's gRPC code and message.
fn status(e: RequestError) -> Status {
    match e {
        RequestError::Kv(k) => kv_status(&k),
        RequestError::Timeout => Status::unavailable("etcdserver: request timed out"),
        RequestError::Stopped => Status::unavailable("etcdserver: server stopped"),
        RequestError::TooManyRequests => {
            Status::resource_exhausted("etcdserver: too many requests")
        }
        _ => Status::internal(e.to_string()),
    }
}

fn kv_status(e: &KvError) -> Status {
    let m = e.etcd_message();
    match e {
        KvError::Compacted { .. } | KvError::FutureRevision { .. } => Status::out_of_range(m),
        KvError::LeaseNotFound(_) => Status::not_found(m),
        KvError::LeaseExists => Status::failed_precondition(m),
        KvError::LeaseTtlTooLarge => Status::out_of_range(m),
        KvError::NoSpace | KvError::TooManyRequests => Status::resource_exhausted(m),
        KvError::NoLeader | KvError::TimedOut => Status::unavailable(m),
        _ => Status::invalid_argument(m),
    }
}

/// Serves the etcd API on `listener` until the node stops.
pub async fn serve(
    node: Arc<Node>,
    listener: tokio::net::TcpListener,
) -> Result<(), tonic::transport::Error> {
    serve_tls(node, listener, None).await
}

/// Serves the etcd API on `listener` until the node stops, over TLS when
/// `tls` is given (`https://` endpoints; etcdctl's `--cacert`, `--cert`,
/// `--key`).
pub async fn serve_tls(
    node: Arc<Node>,
    listener: tokio::net::TcpListener,
    tls: Option<synod_server::tls::ServerTls>,
) -> Result<(), tonic::transport::Error> {
    let api = EtcdApi::new(node.clone());
    // gRPC's own limit sits above the request limit, as etcd's does
    // (max-request-bytes + 512 KiB), so that a request a little too large
    // gets etcd's "request is too large", not a transport error.
    let decode_max = node.config().max_request_bytes + (512 << 10);
    let router = tonic::transport::Server::builder()
        .layer(metrics::MetricsLayer::new(node.metrics().clone()))
        .add_service(KvServer::new(api.clone()).max_decoding_message_size(decode_max))
        .add_service(MaintenanceServer::new(api.clone()).max_decoding_message_size(decode_max))
        .add_service(WatchServer::new(api.clone()).max_decoding_message_size(decode_max))
        .add_service(LeaseServer::new(api.clone()).max_decoding_message_size(decode_max))
        .add_service(LockServer::new(api.clone()).max_decoding_message_size(decode_max))
        .add_service(ElectionServer::new(api.clone()).max_decoding_message_size(decode_max))
        .add_service(ClusterServer::new(api).max_decoding_message_size(decode_max));
    let stopped = {
        let node = node.clone();
        async move { node.stopped().await }
    };
    match tls {
        Some(tls) => {
            let stop = {
                let node = node.clone();
                async move { node.stopped().await }
            };
            router
                .serve_with_incoming_shutdown(tls.incoming(listener, stop), stopped)
                .await
        }
        None => {
            // Without TCP_NODELAY small responses wait for the client's
            // delayed ACK (~40 ms): the single largest latency cost measured.
            let incoming =
                tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
            router.serve_with_incoming_shutdown(incoming, stopped).await
        }
    }
}

/// Binds the etcd API address, with an error an operator can act on.
pub async fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await
}
