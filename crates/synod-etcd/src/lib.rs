//! The etcd v3 gRPC front end. Each handler validates the request with
//! etcd's rules, calls the node facade, fills the response header, and maps
//! errors to gRPC statuses in one place (`status`), with etcd's codes and
//! messages so client libraries react as they do against etcd.

mod auth;
mod cluster;
mod election;
mod kv;
mod lease;
mod lock;
mod maintenance;
mod metrics;
mod recipes;
pub mod token;
mod watch;

use std::net::SocketAddr;
use std::sync::Arc;
use synod_kv::{AuthError, AuthStore, KvError};
use synod_proto::etcdserverpb::auth_server::AuthServer;
use synod_proto::etcdserverpb::{
    cluster_server::ClusterServer, kv_server::KvServer, lease_server::LeaseServer,
    maintenance_server::MaintenanceServer, watch_server::WatchServer, ResponseHeader,
};
use synod_proto::synodpb::Caller;
use synod_proto::v3electionpb::election_server::ElectionServer;
use synod_proto::v3lockpb::lock_server::LockServer;
use synod_server::{Node, RequestError};
use tonic::{Request, Status};

/// The handlers' shared view of the node.
#[derive(Clone)]
pub struct EtcdApi {
    node: Arc<Node>,
    tokens: Arc<token::Tokens>,
    /// Whose behalf the lock and election recipes write on (their
    /// client's): the state machine checks its permissions.
    acting: Sender,
}

/// Who sent a request: the credentials it presented and the user they
/// name, judged against this member's auth store at `revision`.
#[derive(Clone, Debug, Default)]
pub(crate) struct Sender {
    pub(crate) token: Option<String>,
    common_name: Option<String>,
    /// The user (empty: nobody).
    pub(crate) user: String,
    revision: u64,
    /// Auth was on when the credentials were judged.
    pub(crate) auth_on: bool,
}

impl Sender {
    /// What the state machine checks where the write applies.
    fn caller(&self) -> Caller {
        Caller {
            user: self.user.clone(),
            auth_revision: self.revision,
        }
    }
}

impl EtcdApi {
    /// Serves the etcd API of `node`. Fails when the node's
    /// `auth_token` setting is malformed or names keys that do not load.
    pub fn new(node: Arc<Node>) -> Result<EtcdApi, String> {
        let tokens = tokens_of(node.config())?;
        Ok(EtcdApi {
            node,
            tokens: Arc::new(tokens),
            acting: Sender::default(),
        })
    }

    /// This API acting for `request`'s sender (the lock and election
    /// recipes, whose writes are checked as the client's own).
    fn acting_for<T>(&self, request: &Request<T>) -> Result<EtcdApi, Status> {
        Ok(EtcdApi {
            acting: self.caller(request)?,
            ..self.clone()
        })
    }

    /// Whether the acting user may read `[key, range_end)`.
    async fn authorize_read(&self, key: &[u8], range_end: &[u8]) -> Result<(), Status> {
        let user = &self.acting.user;
        self.authorize(|auth| auth.check(user, synod_kv::Access::Read, key, range_end))
            .await
    }

    /// Who sent `request`: the user its `token` metadata names (checked
    /// against this member's auth store), else the common name of its
    /// verified client certificate (`--client-cert-auth`), else nobody
    /// (an empty user, which every permission check refuses while auth is
    /// on). While auth is off nobody is asked.
    fn caller<T>(&self, request: &Request<T>) -> Result<Sender, Status> {
        let token = request
            .metadata()
            .get("token")
            .or_else(|| request.metadata().get("authorization"))
            .map(|t| t.to_str().map(str::to_string))
            .transpose()
            .map_err(|_| auth_status(AuthError::InvalidAuthToken))?;
        let common_name = request
            .peer_certs()
            .and_then(|certs| certs.first().and_then(|c| common_name(c.as_ref())));
        self.resolve(token, common_name)
    }

    /// The user `token` or else `common_name` names now.
    fn resolve(
        &self,
        token: Option<String>,
        common_name: Option<String>,
    ) -> Result<Sender, Status> {
        let auth = self.node.auth();
        let mut sender = Sender {
            revision: auth.revision(),
            auth_on: auth.enabled(),
            ..Sender::default()
        };
        if !auth.enabled() {
            return Ok(sender);
        }
        match &token {
            Some(t) => {
                let (user, revision) = self.tokens.verify(&auth, t).map_err(auth_status)?;
                sender.user = user;
                sender.revision = revision;
            }
            None => sender.user = common_name.clone().unwrap_or_default(),
        }
        sender.token = token;
        sender.common_name = common_name;
        Ok(sender)
    }

    /// Checks `allowed` against this member's auth store. A refusal is
    /// confirmed after this member caught up with the leader: a grant
    /// committed through another member may not have applied here yet,
    /// and nothing the cluster allows is refused.
    async fn authorize(
        &self,
        allowed: impl Fn(&AuthStore) -> Result<(), AuthError>,
    ) -> Result<(), Status> {
        if allowed(&self.node.auth()).is_ok() {
            return Ok(());
        }
        self.catch_up().await?;
        allowed(&self.node.auth()).map_err(auth_status)
    }

    /// Waits until this member's users and roles are as fresh as the
    /// cluster's now: its meta group applied everything committed before
    /// (a linearizable read of nothing).
    async fn catch_up(&self) -> Result<(), Status> {
        self.node.catch_up_meta().await.map_err(status)
    }

    /// Admin operations (membership, defragment, snapshot, hashes, auth
    /// management): the root role, while auth is on.
    async fn authorize_admin<T>(&self, request: &Request<T>) -> Result<Sender, Status> {
        let caller = self.caller(request)?;
        self.authorize(|auth| auth.check_admin(&caller.user))
            .await?;
        Ok(caller)
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

/// etcd's gRPC status for an auth refusal.
fn auth_status(e: AuthError) -> Status {
    let m = e.etcd_message();
    match e.code() {
        synod_kv::auth::AuthCode::InvalidArgument => Status::invalid_argument(m),
        synod_kv::auth::AuthCode::FailedPrecondition => Status::failed_precondition(m),
        synod_kv::auth::AuthCode::PermissionDenied => Status::permission_denied(m),
        synod_kv::auth::AuthCode::Unauthenticated => Status::unauthenticated(m),
    }
}

/// The common name of a DER certificate's subject, if it has one.
fn common_name(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let cn = cert.subject().iter_common_name().next()?;
    cn.as_str().ok().map(str::to_string)
}

/// The token provider `config` names.
fn tokens_of(config: &synod_server::NodeConfig) -> Result<token::Tokens, String> {
    token::Tokens::from_spec(
        &config.auth_token,
        std::time::Duration::from_secs(config.auth_token_ttl_s),
    )
}

/// Checks the auth settings of `config` before a node starts, so that a
/// bad `--auth-token` stops the server with the reason.
pub fn check_auth_config(config: &synod_server::NodeConfig) -> Result<(), String> {
    if !(4..=31).contains(&config.bcrypt_cost) {
        return Err(format!(
            "--bcrypt-cost {} is outside bcrypt's 4 to 31",
            config.bcrypt_cost
        ));
    }
    tokens_of(config).map(drop)
}

fn kv_status(e: &KvError) -> Status {
    let m = e.etcd_message();
    match e {
        KvError::Auth(a) => auth_status(*a),
        KvError::Compacted { .. } | KvError::FutureRevision { .. } => Status::out_of_range(m),
        KvError::LeaseNotFound(_) => Status::not_found(m),
        KvError::LeaseExists => Status::failed_precondition(m),
        KvError::LeaseTtlTooLarge => Status::out_of_range(m),
        KvError::NoSpace | KvError::TooManyRequests => Status::resource_exhausted(m),
        KvError::NoLeader | KvError::TimedOut | KvError::StaleStamp { .. } => {
            Status::unavailable(m)
        }
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
    let api = EtcdApi::new(node.clone()).unwrap_or_else(|e| {
        // Callers check the settings first (check_auth_config).
        panic!("etcd API settings: {e}")
    });
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
        .add_service(ClusterServer::new(api.clone()).max_decoding_message_size(decode_max))
        .add_service(AuthServer::new(api).max_decoding_message_size(decode_max));
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
