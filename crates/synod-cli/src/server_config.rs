//! `synod server` settings: from flags, from a TOML file (`--config`), or
//! both — a flag wins over the file. Every missing or malformed setting is
//! reported by name.

use anyhow::{bail, Context, Result};
use clap::Args;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Log slots between snapshots unless `--snapshot-count` says otherwise.
pub const SNAPSHOT_COUNT_DEFAULT: u64 = 10_000;

/// Flags of `synod server`.
#[derive(Args, Debug, Default)]
pub struct ServerArgs {
    /// A TOML file with any of the settings below (kebab-case keys, e.g.
    /// `data-dir = "/var/lib/synod"`); flags given on the command line win.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// This node's id, as listed in --peers.
    #[arg(long)]
    pub id: Option<u64>,
    /// Where this node keeps its data.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Address for etcd clients, e.g. 10.0.0.1:2379.
    #[arg(long)]
    pub client_addr: Option<SocketAddr>,
    /// Address for other nodes, e.g. 10.0.0.1:2380.
    #[arg(long)]
    pub peer_addr: Option<SocketAddr>,
    /// Every member's peer address, this node included:
    /// 1=10.0.0.1:2380,2=10.0.0.2:2380,3=10.0.0.3:2380
    #[arg(long)]
    pub peers: Option<String>,
    /// Every member's client address, for `member list` (optional):
    /// 1=10.0.0.1:2379,2=10.0.0.2:2379,3=10.0.0.3:2379
    #[arg(long)]
    pub clients: Option<String>,
    /// Database size in bytes past which the NOSPACE alarm refuses writes
    /// that add data (default 2 GiB; 0 turns the check off).
    #[arg(long)]
    pub quota_backend_bytes: Option<u64>,
    /// `new` to start a new cluster (the default), `existing` to join a
    /// running one after `etcdctl member add` (etcd's flag): the node then
    /// starts empty and catches up from the leader.
    #[arg(long, value_parser = ["new", "existing"])]
    pub initial_cluster_state: Option<String>,
    /// The cluster id in hex, as `etcdctl member add` prints it ("added to
    /// cluster ..."). Needed with `--initial-cluster-state existing`: by
    /// default the id is derived from --peers, which a joining node lists
    /// differently.
    #[arg(long)]
    pub cluster_id: Option<String>,
    /// Applied log slots between state-machine snapshots; each snapshot
    /// lets the log before it be dropped (etcd's flag; default 10000).
    #[arg(long)]
    pub snapshot_count: Option<u64>,
    /// Make restarts after a crash fast: every durable write also saves
    /// the file's allocator state (two-phase commit), so reopening does
    /// not walk the whole database (seconds per GB). Costs write
    /// throughput on large databases; off by default.
    #[arg(long)]
    pub quick_repair: bool,
    /// Rounds that applied commands between two writes of the state
    /// machine's rows (like etcd's --backend-batch-limit). The Paxos log
    /// is written every round either way, so nothing acknowledged is
    /// lost; a restart replays the log above the rows. 1 writes the rows
    /// every round (more storage CPU per write); default 32.
    #[arg(long, value_name = "ROUNDS")]
    pub backend_batch_rounds: Option<u64>,
    /// Address for ZooKeeper clients, e.g. 10.0.0.1:2181 (off when not
    /// given): zkCli, kazoo, Curator and other ZooKeeper clients talk to
    /// the same cluster as etcd clients, in a namespace of their own.
    #[arg(long)]
    pub zk_addr: Option<SocketAddr>,
    /// Address for ZooKeeper clients over TLS, e.g. 10.0.0.1:2281
    /// (ZooKeeper's secureClientPort; beside --zk-addr or alone). Serves
    /// the certificate of --cert-file and --key-file, and with
    /// --trusted-ca-file and --client-cert-auth requires client
    /// certificates, as for etcd clients.
    #[arg(long)]
    pub zk_secure_addr: Option<SocketAddr>,
    /// A ZooKeeper superuser, as ZooKeeper's
    /// `DigestAuthenticationProvider.superDigest`: user:base64(sha1(user:password)).
    /// A client that does `addauth digest user:password` passes every ACL.
    #[arg(long)]
    pub zk_super_digest: Option<String>,
    /// Allow ZooKeeper TTL nodes (ZooKeeper's `extendedTypesEnabled`).
    #[arg(long)]
    pub zk_extended_types: bool,
    /// The largest ZooKeeper request in bytes (ZooKeeper's `jute.maxbuffer`,
    /// default 1 MiB).
    #[arg(long)]
    pub zk_max_buffer: Option<usize>,
    /// Connections one client address may hold open to this node at once
    /// (ZooKeeper's `maxClientCnxns`, default 60; 0 for no limit). More are
    /// closed at once and logged.
    #[arg(long)]
    pub zk_max_client_cnxns: Option<u32>,
    /// Bytes of watch events a ZooKeeper connection may have waiting
    /// because its client does not read them (default 64 MiB); past it the
    /// connection is closed, and the client's session and watches survive
    /// its reconnect.
    #[arg(long)]
    pub zk_max_backlog_bytes: Option<usize>,
    /// Address for the node's HTTP endpoint, e.g. 10.0.0.1:2381 (off when
    /// not given): Prometheus metrics at /metrics (etcd's names included),
    /// etcd's /health, /livez and /readyz, and the live dashboard at /.
    #[arg(long)]
    pub metrics_addr: Option<SocketAddr>,
    /// The largest etcd write request in bytes (etcd's
    /// `--max-request-bytes`, default 1.5 MiB); larger ones are refused with
    /// "etcdserver: request is too large".
    #[arg(long)]
    pub max_request_bytes: Option<usize>,
    /// etcd's auth token provider: `simple` (the default; tokens signed
    /// with a key the cluster keeps, valid on every member) or
    /// `jwt,pub-key=PATH,priv-key=PATH,sign-method=RS256,ttl=10m` (JWTs
    /// as etcd issues them; RS*, PS*, ES256/384, EdDSA or HS* with the
    /// secret in priv-key).
    #[arg(long, value_name = "SPEC")]
    pub auth_token: Option<String>,
    /// Seconds a simple token lives after its last use (etcd's
    /// `--auth-token-ttl`, default 300).
    #[arg(long, value_name = "SECONDS")]
    pub auth_token_ttl: Option<u64>,
    /// bcrypt cost of password hashes, 4 to 31 (etcd's `--bcrypt-cost`,
    /// default 10: each Authenticate then spends ~50 ms of CPU).
    #[arg(long)]
    pub bcrypt_cost: Option<u32>,
    /// A file holding the cluster's peer secret (at least 16 bytes; the
    /// same file on every member): every peer call then proves it, and a
    /// node without it cannot talk to the cluster. Without TLS this keeps
    /// out foreign nodes, not an attacker who can read peer traffic.
    #[arg(long)]
    pub peer_secret_file: Option<PathBuf>,
    /// The etcd API's TLS certificate (PEM chain, leaf first): clients
    /// then connect with https:// (etcdctl --cacert). Also served on
    /// --zk-secure-addr. Reloaded when the file changes.
    #[arg(long)]
    pub cert_file: Option<PathBuf>,
    /// The private key of --cert-file (PEM).
    #[arg(long)]
    pub key_file: Option<PathBuf>,
    /// CAs whose client certificates are accepted (PEM).
    #[arg(long)]
    pub trusted_ca_file: Option<PathBuf>,
    /// Refuse etcd clients, and ZooKeeper clients on --zk-secure-addr,
    /// without a certificate signed by --trusted-ca-file (etcdctl
    /// --cert/--key).
    #[arg(long)]
    pub client_cert_auth: bool,
    /// The peer port's TLS certificate (PEM), also presented when this
    /// node calls its peers; with it, peers talk over TLS.
    #[arg(long)]
    pub peer_cert_file: Option<PathBuf>,
    /// The private key of --peer-cert-file (PEM).
    #[arg(long)]
    pub peer_key_file: Option<PathBuf>,
    /// CAs that sign the members' peer certificates (PEM); needed with
    /// peer TLS.
    #[arg(long)]
    pub peer_trusted_ca_file: Option<PathBuf>,
    /// Refuse peers without a certificate signed by
    /// --peer-trusted-ca-file, before any of their messages reach the
    /// core.
    #[arg(long)]
    pub peer_client_cert_auth: bool,
    /// Cut the etcd key space into shards at these keys, each shard its
    /// own Paxos group with revisions from one timestamp oracle (e.g.
    /// `/registry/m,/registry/s` makes three shards). Every member must
    /// give the same list, and a data dir keeps the list it was made
    /// with. Not yet: transactions over several shards (issue 11) and
    /// membership changes (issue 10).
    #[arg(long, value_name = "KEY,KEY,...")]
    pub split_at: Option<String>,
    /// `auto`: shard the etcd key space, starting from one shard (or
    /// those of --split-at) that split by themselves as they grow past
    /// --split-size. Every member must give the same.
    #[arg(long, value_name = "auto")]
    pub shards: Option<String>,
    /// A shard whose data (keys, values and their history) passes this
    /// many bytes splits in two near its middle (at a key directory's
    /// start, the key up to its last `/`, when one is near); 0: never by
    /// size.
    #[arg(long, value_name = "BYTES")]
    pub split_size: Option<u64>,
    /// A shard whose leader applies this many writes a second (or more,
    /// over a second) splits in two at the middle of the keys written;
    /// 0 (the default): never by load. Every shard is replicated by every
    /// node for now, so more shards spread leaders, not replicas.
    #[arg(long, value_name = "WRITES_PER_S")]
    pub split_load: Option<u64>,
}

/// The same settings as they appear in a config file.
#[derive(Deserialize, Debug, Default)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct FileConfig {
    id: Option<u64>,
    data_dir: Option<PathBuf>,
    client_addr: Option<SocketAddr>,
    peer_addr: Option<SocketAddr>,
    peers: Option<String>,
    clients: Option<String>,
    quota_backend_bytes: Option<u64>,
    initial_cluster_state: Option<String>,
    cluster_id: Option<String>,
    snapshot_count: Option<u64>,
    quick_repair: Option<bool>,
    backend_batch_rounds: Option<u64>,
    zk_addr: Option<SocketAddr>,
    zk_secure_addr: Option<SocketAddr>,
    zk_super_digest: Option<String>,
    zk_extended_types: Option<bool>,
    zk_max_buffer: Option<usize>,
    zk_max_client_cnxns: Option<u32>,
    zk_max_backlog_bytes: Option<usize>,
    metrics_addr: Option<SocketAddr>,
    max_request_bytes: Option<usize>,
    auth_token: Option<String>,
    auth_token_ttl: Option<u64>,
    bcrypt_cost: Option<u32>,
    peer_secret_file: Option<PathBuf>,
    cert_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
    trusted_ca_file: Option<PathBuf>,
    client_cert_auth: Option<bool>,
    peer_cert_file: Option<PathBuf>,
    peer_key_file: Option<PathBuf>,
    peer_trusted_ca_file: Option<PathBuf>,
    peer_client_cert_auth: Option<bool>,
    split_at: Option<String>,
    shards: Option<String>,
    split_size: Option<u64>,
    split_load: Option<u64>,
}

/// Settings after merging, all present and checked.
#[derive(Debug, PartialEq, Eq)]
pub struct ServerSettings {
    /// This node.
    pub id: u64,
    /// Its data dir.
    pub data_dir: PathBuf,
    /// etcd API address.
    pub client_addr: SocketAddr,
    /// Peer address.
    pub peer_addr: SocketAddr,
    /// Every member's peer address.
    pub peers: BTreeMap<u64, SocketAddr>,
    /// Client addresses known for other members.
    pub clients: BTreeMap<u64, SocketAddr>,
    /// The space quota in bytes (0: none).
    pub quota_bytes: u64,
    /// Join a running cluster instead of starting a new one.
    pub join: bool,
    /// The cluster id, when given.
    pub cluster_id: Option<u64>,
    /// Save the allocator state with every durable write.
    pub quick_repair: bool,
    /// Rounds between writes of the state machine's rows.
    pub backend_batch_rounds: u64,
    /// Slots between snapshots.
    pub snapshot_count: u64,
    /// ZooKeeper's address, when it is served.
    pub zk_addr: Option<SocketAddr>,
    /// ZooKeeper's TLS address (with `client_tls`'s files), when it is
    /// served.
    pub zk_secure_addr: Option<SocketAddr>,
    /// ZooKeeper front end settings.
    pub zk: synod_zk::ZkConfig,
    /// The HTTP endpoint's address, when it is served.
    pub metrics_addr: Option<SocketAddr>,
    /// The largest etcd write request in bytes.
    pub max_request_bytes: usize,
    /// The key space's shards (`None`: one group holds it).
    pub shards: Option<synod_server::shards::ShardMap>,
    /// Split a shard past this many bytes (0: never by size).
    pub split_bytes: u64,
    /// Split a shard past this many writes a second (0: never by load).
    pub split_writes_per_s: u64,
    /// etcd's `--auth-token`, `--auth-token-ttl` and `--bcrypt-cost`.
    pub auth: AuthSettings,
    /// The cluster's peer secret, read from its file.
    pub peer_secret: Option<Vec<u8>>,
    /// TLS for the etcd API, when it is on.
    pub client_tls: Option<synod_server::tls::TlsFiles>,
    /// TLS between peers, when it is on.
    pub peer_tls: Option<synod_server::tls::TlsFiles>,
}

/// Reads a peer secret file: its bytes without a trailing newline, at
/// least `PEER_SECRET_MIN_BYTES` of them.
fn read_peer_secret(path: &std::path::Path) -> Result<Vec<u8>> {
    let mut secret = std::fs::read(path)
        .with_context(|| format!("cannot read the peer secret file {}", path.display()))?;
    while secret.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        secret.pop();
    }
    if secret.len() < synod_server::PEER_SECRET_MIN_BYTES {
        bail!(
            "the peer secret in {} is {} bytes; use at least {} (e.g. `head -c 32 /dev/urandom | base64 > FILE`)",
            path.display(),
            secret.len(),
            synod_server::PEER_SECRET_MIN_BYTES
        );
    }
    Ok(secret)
}

/// Parses `1=IP:PORT,2=IP:PORT`.
pub fn parse_map(s: &str, what: &str) -> Result<BTreeMap<u64, SocketAddr>> {
    let mut out = BTreeMap::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (id, addr) = part
            .split_once('=')
            .with_context(|| format!("{what}: expected ID=IP:PORT, got {part:?}"))?;
        let id: u64 = id
            .trim()
            .parse()
            .with_context(|| format!("{what}: bad node id {id:?}"))?;
        let addr: SocketAddr = addr
            .trim()
            .parse()
            .with_context(|| format!("{what}: bad address {addr:?}"))?;
        if id == 0 {
            bail!("{what}: node ids start at 1");
        }
        if out.insert(id, addr).is_some() {
            bail!("{what}: node {id} listed twice");
        }
    }
    Ok(out)
}

impl ServerArgs {
    /// Merges flags over the config file and checks the result.
    pub fn resolve(self) -> Result<ServerSettings> {
        let file = match &self.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read --config {}", path.display()))?;
                toml::from_str::<FileConfig>(&text)
                    .with_context(|| format!("invalid config file {}", path.display()))?
            }
            None => FileConfig::default(),
        };
        let missing =
            |name: &str| format!("--{name} is required (as a flag or in the --config file)");
        let id = self.id.or(file.id).with_context(|| missing("id"))?;
        let data_dir = self
            .data_dir
            .or(file.data_dir)
            .with_context(|| missing("data-dir"))?;
        let client_addr = self
            .client_addr
            .or(file.client_addr)
            .with_context(|| missing("client-addr"))?;
        let peer_addr = self
            .peer_addr
            .or(file.peer_addr)
            .with_context(|| missing("peer-addr"))?;
        let peers = parse_map(
            &self
                .peers
                .or(file.peers)
                .with_context(|| missing("peers"))?,
            "--peers",
        )?;
        let clients = match self.clients.or(file.clients) {
            Some(c) => parse_map(&c, "--clients")?,
            None => BTreeMap::new(),
        };
        match peers.get(&id) {
            Some(a) if *a == peer_addr => {}
            Some(a) => bail!("--peers lists node {id} at {a}, but --peer-addr is {peer_addr}"),
            None => bail!("--peers must list this node ({id})"),
        }
        let quota_bytes = self
            .quota_backend_bytes
            .or(file.quota_backend_bytes)
            .unwrap_or(synod_server::QUOTA_BYTES_DEFAULT);
        let join = match self
            .initial_cluster_state
            .or(file.initial_cluster_state)
            .as_deref()
        {
            None | Some("new") => false,
            Some("existing") => true,
            Some(other) => bail!("--initial-cluster-state must be new or existing, not {other:?}"),
        };
        let cluster_id = match self.cluster_id.or(file.cluster_id) {
            Some(hex) => Some(
                u64::from_str_radix(hex.trim_start_matches("0x"), 16)
                    .with_context(|| format!("--cluster-id: {hex:?} is not a hex number"))?,
            ),
            None => None,
        };
        if join && cluster_id.is_none() {
            bail!(
                "--initial-cluster-state existing needs --cluster-id (etcdctl member add prints it)"
            );
        }
        let snapshot_count = self
            .snapshot_count
            .or(file.snapshot_count)
            .unwrap_or(SNAPSHOT_COUNT_DEFAULT);
        if snapshot_count == 0 {
            bail!("--snapshot-count must be at least 1");
        }
        let quick_repair = self.quick_repair || file.quick_repair.unwrap_or(false);
        let backend_batch_rounds = self
            .backend_batch_rounds
            .or(file.backend_batch_rounds)
            .unwrap_or(synod_server::STATE_FLUSH_ROUNDS);
        if !(1..=BACKEND_BATCH_ROUNDS_MAX).contains(&backend_batch_rounds) {
            bail!("--backend-batch-rounds must be between 1 and {BACKEND_BATCH_ROUNDS_MAX}");
        }
        let max_request_bytes = self
            .max_request_bytes
            .or(file.max_request_bytes)
            .unwrap_or(synod_server::MAX_REQUEST_BYTES_DEFAULT);
        if !(1024..=64 << 20).contains(&max_request_bytes) {
            bail!("--max-request-bytes must be between 1 KiB and 64 MiB");
        }
        let auth = AuthSettings {
            token: self
                .auth_token
                .or(file.auth_token)
                .unwrap_or_else(|| "simple".into()),
            token_ttl_s: self
                .auth_token_ttl
                .or(file.auth_token_ttl)
                .unwrap_or(synod_server::AUTH_TOKEN_TTL_S_DEFAULT),
            bcrypt_cost: self
                .bcrypt_cost
                .or(file.bcrypt_cost)
                .unwrap_or(synod_server::BCRYPT_COST_DEFAULT),
        };
        if auth.token_ttl_s == 0 {
            bail!("--auth-token-ttl must be at least 1 second");
        }
        let trusted_ca = self.trusted_ca_file.or(file.trusted_ca_file);
        let client_tls = match (
            self.cert_file.or(file.cert_file),
            self.key_file.or(file.key_file),
        ) {
            (Some(cert), Some(key)) => Some(synod_server::tls::TlsFiles {
                cert,
                key,
                trusted_ca: trusted_ca.clone(),
                client_cert_auth: self.client_cert_auth || file.client_cert_auth.unwrap_or(false),
            }),
            (None, None) if trusted_ca.is_some() => {
                bail!("--trusted-ca-file needs --cert-file and --key-file (TLS for the etcd API)")
            }
            (None, None) => None,
            _ => bail!("--cert-file and --key-file go together"),
        };
        if let Some(t) = &client_tls {
            if t.client_cert_auth && t.trusted_ca.is_none() {
                bail!("--client-cert-auth needs --trusted-ca-file (the CAs whose client certificates to accept)");
            }
        }
        let zk_secure_addr = self.zk_secure_addr.or(file.zk_secure_addr);
        if zk_secure_addr.is_some() && client_tls.is_none() {
            bail!("--zk-secure-addr needs --cert-file and --key-file (the certificate served to ZooKeeper clients, as to etcd clients)");
        }
        let peer_tls = match (
            self.peer_cert_file.or(file.peer_cert_file),
            self.peer_key_file.or(file.peer_key_file),
            self.peer_trusted_ca_file.or(file.peer_trusted_ca_file),
        ) {
            (Some(cert), Some(key), Some(ca)) => Some(synod_server::tls::TlsFiles {
                cert,
                key,
                trusted_ca: Some(ca),
                client_cert_auth: self.peer_client_cert_auth
                    || file.peer_client_cert_auth.unwrap_or(false),
            }),
            (None, None, None) if !self.peer_client_cert_auth => None,
            _ => bail!(
                "peer TLS needs --peer-cert-file, --peer-key-file and --peer-trusted-ca-file together"
            ),
        };
        let peer_secret = match self.peer_secret_file.or(file.peer_secret_file) {
            Some(path) => Some(read_peer_secret(&path)?),
            None => None,
        };
        let zk = synod_zk::ZkConfig {
            super_digest: self.zk_super_digest.or(file.zk_super_digest),
            extended_types: self.zk_extended_types || file.zk_extended_types.unwrap_or(false),
            max_buffer: self
                .zk_max_buffer
                .or(file.zk_max_buffer)
                .unwrap_or(synod_zk::jute::MAX_BUFFER_DEFAULT),
            max_client_cnxns: self
                .zk_max_client_cnxns
                .or(file.zk_max_client_cnxns)
                .unwrap_or(synod_zk::MAX_CLIENT_CNXNS_DEFAULT),
            max_backlog_bytes: self
                .zk_max_backlog_bytes
                .or(file.zk_max_backlog_bytes)
                .unwrap_or(synod_zk::MAX_BACKLOG_BYTES_DEFAULT),
            ..synod_zk::ZkConfig::default()
        };
        if zk.max_backlog_bytes < 64 << 10 {
            bail!("--zk-max-backlog-bytes must be at least 64 KiB");
        }
        if let Some(d) = &zk.super_digest {
            synod_zk::auth::check_super_digest(d).map_err(anyhow::Error::msg)?;
        }
        if !(1024..=64 << 20).contains(&zk.max_buffer) {
            bail!("--zk-max-buffer must be between 1 KiB and 64 MiB");
        }
        let shards = parse_shards(
            self.shards.as_deref().or(file.shards.as_deref()),
            self.split_at.as_deref().or(file.split_at.as_deref()),
        )?;
        let split_bytes = self
            .split_size
            .or(file.split_size)
            .unwrap_or(SPLIT_SIZE_DEFAULT);
        let split_writes_per_s = self.split_load.or(file.split_load).unwrap_or(0);
        Ok(ServerSettings {
            shards,
            split_bytes,
            split_writes_per_s,
            zk_addr: self.zk_addr.or(file.zk_addr),
            zk_secure_addr,
            metrics_addr: self.metrics_addr.or(file.metrics_addr),
            max_request_bytes,
            auth,
            peer_secret,
            client_tls,
            peer_tls,
            zk,
            quick_repair,
            backend_batch_rounds,
            id,
            data_dir,
            client_addr,
            peer_addr,
            peers,
            clients,
            quota_bytes,
            join,
            cluster_id,
            snapshot_count,
        })
    }
}

/// The most rounds between writes of the rows: a restart replays at most
/// this many rounds of the log.
pub const BACKEND_BATCH_ROUNDS_MAX: u64 = 10_000;

/// A shard splits past this many bytes unless told otherwise (the size
/// the issue and TiKV's region split both start from).
pub const SPLIT_SIZE_DEFAULT: u64 = 64 << 20;

/// `--shards` and `--split-at`: sharded with `--shards auto` (one shard
/// to start, or the split points given) or with split points; else one
/// group holds the whole key space.
pub fn parse_shards(
    mode: Option<&str>,
    split_at: Option<&str>,
) -> Result<Option<synod_server::shards::ShardMap>> {
    match mode {
        None | Some("off") => parse_split_at(split_at),
        Some("auto") => Ok(Some(parse_split_at(split_at)?.unwrap_or_else(|| {
            synod_server::shards::ShardMap::new(Vec::new()).expect("no split points")
        }))),
        Some(other) => bail!("--shards takes `auto` or `off`, not {other:?}"),
    }
}

/// `--split-at`: keys separated by commas (none, or an empty list: one
/// group holds the whole key space).
pub fn parse_split_at(text: Option<&str>) -> Result<Option<synod_server::shards::ShardMap>> {
    let Some(text) = text.filter(|t| !t.is_empty()) else {
        return Ok(None);
    };
    let splits = text
        .split(',')
        .map(|k| bytes::Bytes::copy_from_slice(k.as_bytes()))
        .collect();
    synod_server::shards::ShardMap::new(splits)
        .map(Some)
        .context("--split-at")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(text: &str) -> tempfile::NamedTempFile {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), text).unwrap();
        f
    }

    /// The flags of node `id` of a one-node cluster (node 1).
    fn one_node(id: u64) -> ServerArgs {
        ServerArgs {
            id: Some(id),
            data_dir: Some("/d".into()),
            client_addr: Some("127.0.0.1:1".parse().unwrap()),
            peer_addr: Some("127.0.0.1:2".parse().unwrap()),
            peers: Some("1=127.0.0.1:2".into()),
            ..Default::default()
        }
    }

    #[test]
    fn flags_win_over_the_file() {
        let f = file(
            r#"
id = 1
data-dir = "/data/a"
client-addr = "127.0.0.1:2379"
peer-addr = "127.0.0.1:2380"
peers = "1=127.0.0.1:2380,2=127.0.0.1:22380"
"#,
        );
        let args = ServerArgs {
            config: Some(f.path().into()),
            data_dir: Some("/data/b".into()),
            ..Default::default()
        };
        let s = args.resolve().unwrap();
        assert_eq!(s.id, 1);
        assert_eq!(s.data_dir, PathBuf::from("/data/b"));
        assert_eq!(s.peers.len(), 2);
    }

    #[test]
    fn errors_name_the_setting() {
        let e = ServerArgs::default().resolve().unwrap_err().to_string();
        assert!(e.contains("--id is required"), "{e}");
        let f = file("id = 1\nbogus = 3\n");
        let e = format!(
            "{:#}",
            ServerArgs {
                config: Some(f.path().into()),
                ..Default::default()
            }
            .resolve()
            .unwrap_err()
        );
        assert!(e.contains("bogus"), "{e}");
        assert!(parse_map("1=nope", "--peers").is_err());
        assert!(parse_map("0=127.0.0.1:1", "--peers").is_err());
        assert!(parse_map("1=127.0.0.1:1,1=127.0.0.1:2", "--peers").is_err());
    }

    #[test]
    fn zk_secure_addr_needs_the_certificate_flags() {
        let args = || one_node(1);
        let e = ServerArgs {
            zk_secure_addr: Some("127.0.0.1:2281".parse().unwrap()),
            ..args()
        }
        .resolve()
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("--zk-secure-addr needs --cert-file and --key-file"),
            "{e}"
        );
        let f = file(
            "zk-secure-addr = \"127.0.0.1:2281\"\ncert-file = \"/c.pem\"\nkey-file = \"/k.pem\"\n",
        );
        let s = ServerArgs {
            config: Some(f.path().into()),
            ..args()
        }
        .resolve()
        .unwrap();
        assert_eq!(s.zk_secure_addr, Some("127.0.0.1:2281".parse().unwrap()));
        assert!(s.client_tls.is_some());
    }

    #[test]
    fn backend_batch_rounds_default_file_and_bounds() {
        let args = || one_node(1);
        let s = args().resolve().unwrap();
        assert_eq!(s.backend_batch_rounds, synod_server::STATE_FLUSH_ROUNDS);
        let f = file("backend-batch-rounds = 1\n");
        let s = ServerArgs {
            config: Some(f.path().into()),
            ..args()
        }
        .resolve()
        .unwrap();
        assert_eq!(s.backend_batch_rounds, 1);
        for bad in [0, BACKEND_BATCH_ROUNDS_MAX + 1] {
            let e = ServerArgs {
                backend_batch_rounds: Some(bad),
                ..args()
            }
            .resolve()
            .unwrap_err()
            .to_string();
            assert!(
                e.contains("--backend-batch-rounds must be between 1"),
                "{e}"
            );
        }
    }

    #[test]
    fn this_node_must_be_among_the_peers() {
        let args = one_node(3);
        assert!(args
            .resolve()
            .unwrap_err()
            .to_string()
            .contains("must list this node"));
    }
}

/// etcd's authentication settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthSettings {
    /// `--auth-token`.
    pub token: String,
    /// `--auth-token-ttl`, in seconds.
    pub token_ttl_s: u64,
    /// `--bcrypt-cost`.
    pub bcrypt_cost: u32,
}
