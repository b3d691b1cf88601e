//! A node's settings: who it is, where it listens, who its peers are.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use synod_paxos::NodeId;

/// One member of the cluster as every node knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    /// Node id (also the Paxos replica id).
    pub id: NodeId,
    /// Where its peers reach it.
    pub peer_addr: SocketAddr,
    /// Where clients reach it (etcd API).
    pub client_addr: SocketAddr,
}

/// Everything a node needs to start.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// This node.
    pub id: NodeId,
    /// Shared by every member; a data dir of another cluster is refused.
    pub cluster_id: u64,
    /// `cluster_id` was derived from the member list rather than given:
    /// an existing data dir's own cluster id then wins (the list changes
    /// with membership, the cluster's id does not).
    pub cluster_id_derived: bool,
    /// Where the node's database lives.
    pub data_dir: PathBuf,
    /// Every member, this node included.
    pub members: BTreeMap<NodeId, Member>,
    /// How often the replica's timers run.
    pub tick_ms: u64,
    /// A client request that is not answered within this long fails with
    /// etcd's "request timed out".
    pub request_timeout_ms: u64,
    /// Applied slots between state-machine snapshots; each snapshot lets
    /// the log before it be dropped (etcd's `--snapshot-count`).
    pub snapshot_every: u64,
    /// The database may grow to this many bytes; past it the NOSPACE alarm
    /// refuses writes that add data (etcd's `--quota-backend-bytes`). 0
    /// turns the check off.
    pub quota_bytes: u64,
    /// Idle watchers that asked for progress notices get one this often.
    pub watch_progress_ms: u64,
    /// Bytes of snapshot per peer message: a large snapshot travels as many
    /// messages, so neither side needs one huge message, and a resent
    /// snapshot resumes where the receiver stopped.
    pub snapshot_chunk_bytes: usize,
    /// This node joins an existing cluster (etcd's
    /// `--initial-cluster-state existing`): it starts empty, never
    /// campaigns, and learns its configuration from the leader once a
    /// `member add` included it.
    pub join: bool,
    /// Paxos groups the node hosts besides group 1 (the etcd key space),
    /// replicated by the same members. Shards will place groups; until
    /// then this is how a node is made to host several.
    pub groups: Vec<u64>,
    /// The etcd key space cut into shards, each its own group (`None`:
    /// one group, group 1, holds it all). Fixed when the data dir is made:
    /// a node refuses to start with other split points than it was made
    /// with.
    pub shards: Option<crate::shards::ShardMap>,
    /// A shard whose data passes this many bytes is split in two by its
    /// leader, near its middle (design 0016); 0: never by size. Only
    /// with `shards`.
    pub split_bytes: u64,
    /// A shard whose leader applies at least this many writes a second is
    /// split in two by it, at the middle of the keys written; 0: never
    /// by load. Only with `shards`.
    pub split_writes_per_s: u64,
    /// Every durable write also saves the database's allocator state, so a
    /// restart after a crash skips redb's full repair (seconds per GB) at
    /// some cost in write throughput.
    pub quick_repair: bool,
    /// Rounds that applied commands between two writes of a group's
    /// state-machine rows (`synod_group::STATE_FLUSH_ROUNDS` by default;
    /// 1 writes them every round). The log above the rows is kept, so a
    /// restart replays what was not written.
    pub state_flush_rounds: u64,
    /// The largest client write, in bytes of the encoded request: a larger
    /// one is refused before it reaches the log (etcd's
    /// `--max-request-bytes`, "etcdserver: request is too large").
    pub max_request_bytes: usize,
    /// The cluster's peer secret: every peer call must prove it (see
    /// `peer_auth`). The same on every member; `None` checks only the
    /// cluster id and membership.
    pub peer_secret: Option<Vec<u8>>,
    /// TLS on the peer port (etcd's `--peer-cert-file` and friends): this
    /// node serves and presents this certificate, and with
    /// `client_cert_auth` accepts only peers whose certificate its trusted
    /// CAs signed.
    pub peer_tls: Option<crate::tls::TlsFiles>,
    /// The etcd API is served over TLS (the member list says `https://`).
    pub client_tls: bool,
    /// The etcd API's certificate files, when TLS is on: a member that
    /// sends a client's request on to the leader connects with them
    /// (trusting `trusted_ca`, else the certificate's own chain).
    pub client_tls_files: Option<crate::tls::TlsFiles>,
    /// etcd's `--auth-token`: `simple` (the default) or
    /// `jwt,pub-key=PATH,priv-key=PATH,sign-method=RS256,ttl=10m`.
    pub auth_token: String,
    /// etcd's `--auth-token-ttl`: how long a simple token lives after its
    /// last use, in seconds (300).
    pub auth_token_ttl_s: u64,
    /// etcd's `--bcrypt-cost` for password hashes (10; 4 to 31).
    pub bcrypt_cost: u32,
}

/// etcd's default `--bcrypt-cost`.
pub const BCRYPT_COST_DEFAULT: u32 = 10;
/// etcd's default `--auth-token-ttl`, in seconds.
pub const AUTH_TOKEN_TTL_S_DEFAULT: u64 = 300;

/// Snapshot chunk size of a real cluster: 1 MiB.
pub const SNAPSHOT_CHUNK_BYTES_DEFAULT: usize = 1 << 20;

/// etcd's default request limit: 1.5 MiB.
pub const MAX_REQUEST_BYTES_DEFAULT: usize = 3 << 19;

/// etcd's default space quota: 2 GiB.
pub const QUOTA_BYTES_DEFAULT: u64 = 2 << 30;
/// etcd's default progress-notify interval: 10 minutes.
pub const WATCH_PROGRESS_MS_DEFAULT: u64 = 600_000;

impl NodeConfig {
    /// This node's own entry.
    pub fn me(&self) -> &Member {
        &self.members[&self.id]
    }
}

/// The peer address in a member's first peer URL (`http://IP:PORT` or
/// `IP:PORT`).
pub fn peer_addr_of(m: &synod_proto::etcdserverpb::Member) -> Option<SocketAddr> {
    let url = m.peer_ur_ls.first()?;
    let host_port = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .unwrap_or(url);
    host_port.trim_end_matches('/').parse().ok()
}

impl Member {
    /// This member as etcd lists it, with `https://` URLs where TLS is on
    /// (clients that sync their endpoints from the member list, as
    /// clientv3's auto-sync does, connect with the right scheme).
    pub fn info(&self, client_tls: bool, peer_tls: bool) -> synod_proto::etcdserverpb::Member {
        let scheme = |tls: bool| if tls { "https" } else { "http" };
        synod_proto::etcdserverpb::Member {
            id: self.id.0,
            name: format!("synod-{}", self.id.0),
            peer_ur_ls: vec![format!("{}://{}", scheme(peer_tls), self.peer_addr)],
            client_ur_ls: vec![format!("{}://{}", scheme(client_tls), self.client_addr)],
            is_learner: false,
        }
    }
}
