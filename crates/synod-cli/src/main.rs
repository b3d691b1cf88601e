//! `synod`: start a local cluster (`synod dev`) or one node of a real
//! cluster (`synod server`), or measure one (`synod bench`).

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use synod_paxos::NodeId;
use synod_server::{
    Member, Node, NodeConfig, QUOTA_BYTES_DEFAULT, SNAPSHOT_CHUNK_BYTES_DEFAULT,
    WATCH_PROGRESS_MS_DEFAULT,
};

mod bench;
mod lab;
mod server_config;
mod shards;

/// The allocator: glibc's malloc took a fifth of a put's server CPU
/// (docs/perf/README.md); mimalloc's thread-local free lists cost less for
/// the many short-lived buffers of a request.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// synod: a distributed key-value and coordination service that speaks the
/// etcd v3 API, replicated by Multi-Paxos.
#[derive(Parser, Debug)]
#[command(name = "synod", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Start a local cluster in this process: the etcd API on 127.0.0.1:2379,
    /// 22379, 32379 (etcd's local-cluster convention), ZooKeeper on 2181,
    /// 22181, 32181, peers on 2380, 22380, 32380, metrics and the dashboard
    /// on http://127.0.0.1:2381/, 22381, 32381. Ctrl-C stops it; running
    /// it again resumes the data.
    #[command(
        after_help = "Examples:\n  synod dev\n  synod dev --data-dir /tmp/synod --nodes 5\n  \
        then: etcdctl --endpoints=127.0.0.1:2379 put k v; zkCli.sh -server 127.0.0.1:2181; \
        open http://127.0.0.1:2381/ (dashboard)"
    )]
    Dev {
        /// Where each node keeps its data (one subdirectory per node).
        #[arg(long, default_value = "synod-data")]
        data_dir: PathBuf,
        /// Number of nodes (1 to 9).
        #[arg(long, default_value_t = 3)]
        nodes: u64,
        /// Raise etcd's NOSPACE alarm once a node's database outgrows this
        /// many bytes (0: never), as `synod server` does.
        #[arg(long, default_value_t = QUOTA_BYTES_DEFAULT)]
        quota_backend_bytes: u64,
        /// Save the allocator state with every durable write, so a restart
        /// after a crash is fast (see `synod server --help`).
        #[arg(long)]
        quick_repair: bool,
        /// Rounds between writes of the state machine's rows (see `synod
        /// server --help`; 1: every round).
        #[arg(long, value_name = "ROUNDS", default_value_t = synod_server::STATE_FLUSH_ROUNDS)]
        backend_batch_rounds: u64,
        /// A ZooKeeper superuser: user:base64(sha1(user:password)), as
        /// ZooKeeper's `DigestAuthenticationProvider.superDigest`.
        #[arg(long)]
        zk_super_digest: Option<String>,
        /// Cut the etcd key space into shards at these keys, each its own
        /// Paxos group (see `synod server --help`).
        #[arg(long, value_name = "KEY,KEY,...")]
        split_at: Option<String>,
        /// `auto`: shard the etcd key space, starting from one shard (or
        /// those of --split-at) that split by themselves as they grow.
        #[arg(long, value_name = "auto")]
        shards: Option<String>,
        /// A shard splits in two near its middle once its data passes
        /// this many bytes (0: never by size).
        #[arg(long, value_name = "BYTES", default_value_t = server_config::SPLIT_SIZE_DEFAULT)]
        split_size: u64,
        /// A shard whose leader applies this many writes a second splits
        /// in two at the middle of the keys written (0: never by load;
        /// see `synod server --help`).
        #[arg(long, value_name = "WRITES_PER_S", default_value_t = 0)]
        split_load: u64,
    },
    /// Run one node of a cluster (settings from flags and/or --config).
    #[command(
        after_help = "Example (node 1 of 3; run the same on each host with its own --id and addresses):\n  \
        synod server --id 1 --data-dir /var/lib/synod --client-addr 10.0.0.1:2379 \\\n    \
        --peer-addr 10.0.0.1:2380 --peers 1=10.0.0.1:2380,2=10.0.0.2:2380,3=10.0.0.3:2380 \\\n    \
        --zk-addr 10.0.0.1:2181 --metrics-addr 10.0.0.1:2381\n  \
        synod server --config node1.toml   (the same settings as TOML keys: id = 1, peer-addr = ...)"
    )]
    Server(Box<server_config::ServerArgs>),
    /// Load-test any etcd v3 endpoint (synod or etcd) with closed-loop
    /// clients and report throughput, latency percentiles and errors.
    #[command(after_help = "Examples:\n  \
        synod bench --workload put --clients 64 --duration 10s\n  \
        synod bench --workload get --endpoints 127.0.0.1:2379 --serializable\n  \
        synod bench --workload zk-set --endpoints 127.0.0.1:2181,127.0.0.1:22181,127.0.0.1:32181")]
    Bench(bench::BenchArgs),
    /// Build a node's data dir from a snapshot file (`etcdctl snapshot
    /// save`). Run it for every member of the new cluster with the same
    /// file and --peers, then start each with `synod server`.
    #[command(after_help = "Example:\n  \
        etcdctl --endpoints=127.0.0.1:2379 snapshot save backup.db\n  \
        synod restore backup.db --data-dir /var/lib/synod --id 1 --peers 1=10.0.0.1:2380,2=10.0.0.2:2380,3=10.0.0.3:2380")]
    Restore(RestoreArgs),
    /// Run a textbook protocol (Paxos, Multi-Paxos, leader leases, NWR
    /// quorums, 2PC, 3PC) in a deterministic simulator under scripted
    /// faults; print each scenario's message timeline and verdict.
    #[command(after_help = "Examples:\n  \
        synod lab paxos                                 every scenario of seed 000's road to Paxos\n  \
        synod lab paxos --list                          the scenarios and what each shows\n  \
        synod lab paxos --scenario design3-chosen --replay-ms 300\n  \
        synod lab 2pc --scenario textbook-crash --json\n\
        Protocols: paxos, multipaxos, lease, quorum, 2pc, 3pc (docs/lab.md).")]
    Lab(lab::LabArgs),
    /// Basic Paxos's propose(var, V) => <ok, f> on a running cluster (synod
    /// or etcd): sets VAR to VALUE unless it was ever set, and prints
    /// <ok, f> with f the value VAR holds (VALUE if this proposal won).
    #[command(after_help = "Example:\n  \
        synod propose x A     prints <ok, A>\n  \
        synod propose x B     prints <ok, A>: x was already chosen\n  \
        synod propose x A --endpoints 127.0.0.1:2379,127.0.0.1:22379")]
    Propose(lab::ProposeArgs),
    /// List the key space's shards as a node sees them: each shard's keys,
    /// its group, leader, revision and replicas (from the node's HTTP
    /// endpoint, --metrics-addr).
    #[command(after_help = "Examples:\n  \
        synod shards                              the first node of `synod dev`\n  \
        synod shards --endpoint 10.0.0.1:2381 --json")]
    Shards(shards::ShardsArgs),
    /// Split the shard holding KEY at KEY: the keys from there on become a
    /// new shard, its own Paxos group on the same nodes (sharded clusters
    /// only; shards also split by themselves past --split-size).
    #[command(after_help = "Examples:\n  \
        synod split user/5000                     through the first node of `synod dev`\n  \
        synod split m --endpoint 10.0.0.1:2381")]
    Split(shards::SplitArgs),
}

/// Flags of `synod restore`.
#[derive(clap::Args, Debug)]
struct RestoreArgs {
    /// The snapshot file.
    snapshot: PathBuf,
    /// The new, empty data dir for this node.
    #[arg(long)]
    data_dir: PathBuf,
    /// This node's id in the new cluster.
    #[arg(long)]
    id: u64,
    /// Every member's peer address in the new cluster, as for `synod server`:
    /// 1=10.0.0.1:2380,2=10.0.0.2:2380,3=10.0.0.3:2380
    #[arg(long)]
    peers: String,
}

/// Ports of the n-th node of `synod dev`: 2379/2380, 22379/22380, 32379/32380, ...
fn dev_ports(i: u64) -> (u16, u16) {
    let base = if i == 0 {
        2379
    } else {
        (i + 1) * 10_000 + 2379
    };
    (base as u16, base as u16 + 1)
}

/// Every node of one cluster agrees on its id without configuration: it is
/// derived from the member list.
fn cluster_id(members: &BTreeMap<NodeId, Member>) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for (id, m) in members {
        for b in format!("{}={};", id.0, m.peer_addr).bytes() {
            h = (h ^ b as u64).wrapping_mul(0x100_0000_01b3);
        }
    }
    h
}

fn node_config(
    id: NodeId,
    data_dir: PathBuf,
    members: BTreeMap<NodeId, Member>,
    quota_bytes: u64,
) -> NodeConfig {
    NodeConfig {
        id,
        cluster_id: cluster_id(&members),
        cluster_id_derived: true,
        join: false,
        groups: Vec::new(),
        shards: None,
        split_bytes: 0,
        split_writes_per_s: 0,
        data_dir,
        members,
        tick_ms: 10,
        request_timeout_ms: 5000,
        snapshot_every: server_config::SNAPSHOT_COUNT_DEFAULT,
        quota_bytes,
        watch_progress_ms: WATCH_PROGRESS_MS_DEFAULT,
        snapshot_chunk_bytes: SNAPSHOT_CHUNK_BYTES_DEFAULT,
        quick_repair: false,
        state_flush_rounds: synod_server::STATE_FLUSH_ROUNDS,
        max_request_bytes: synod_server::MAX_REQUEST_BYTES_DEFAULT,
        peer_secret: None,
        peer_tls: None,
        client_tls: false,
        client_tls_files: None,
        auth_token: "simple".into(),
        auth_token_ttl_s: synod_server::AUTH_TOKEN_TTL_S_DEFAULT,
        bcrypt_cost: synod_server::BCRYPT_COST_DEFAULT,
    }
}

/// Members as `--peers` names them (client addresses unknown: peers').
fn members_of(peers: &BTreeMap<u64, SocketAddr>) -> BTreeMap<NodeId, Member> {
    peers
        .iter()
        .map(|(&id, &addr)| {
            (
                NodeId(id),
                Member {
                    id: NodeId(id),
                    peer_addr: addr,
                    client_addr: addr,
                },
            )
        })
        .collect()
}

fn restore(args: RestoreArgs) -> Result<()> {
    let peers = server_config::parse_map(&args.peers, "--peers")?;
    if !peers.contains_key(&args.id) {
        bail!("--peers must list this node ({})", args.id);
    }
    let identity = synod_server::Identity {
        cluster_id: cluster_id(&members_of(&peers)),
        node_id: args.id,
    };
    let mut shown = std::time::Instant::now();
    let mut progress = |read: u64, total: u64| {
        if shown.elapsed() >= std::time::Duration::from_secs(1) {
            shown = std::time::Instant::now();
            let mib = |b: u64| b as f64 / (1 << 20) as f64;
            eprintln!(
                "restoring: {:.0} of {:.0} MiB ({:.0}%)",
                mib(read),
                mib(total),
                read as f64 * 100.0 / total.max(1) as f64
            );
        }
    };
    let restored = synod_server::restore_snapshot_with_progress(
        &args.data_dir,
        identity,
        &args.snapshot,
        &mut progress,
    )
    .with_context(|| format!("cannot restore {}", args.snapshot.display()))?;
    println!(
        "restored {} (revision {}) into {} for node {}",
        args.snapshot.display(),
        restored.revision,
        args.data_dir.display(),
        args.id
    );
    match &restored.split_points {
        Some(points) if points.is_empty() => println!(
            "the backup is of a sharded cluster ({} shards): start every member with --shards auto",
            restored.groups - 1
        ),
        Some(points) => println!(
            "the backup is of a sharded cluster ({} shards): start every member with --split-at {}",
            restored.groups - 1,
            points.join(",")
        ),
        None => {}
    }
    Ok(())
}

/// The ZooKeeper port of the n-th node of `synod dev`: 2181, 22181, 32181, ...
fn dev_zk_port(i: u64) -> u16 {
    if i == 0 {
        2181
    } else {
        ((i + 1) * 10_000 + 2181) as u16
    }
}

/// Serves ZooKeeper clients where `listen` says, beside the node's etcd
/// API.
async fn start_zk(
    node: Arc<Node>,
    listen: synod_zk::ZkListen,
    config: synod_zk::ZkConfig,
) -> Result<synod_zk::ZkServer> {
    let addrs: Vec<String> = listen
        .addr
        .iter()
        .chain(listen.secure.as_ref().map(|(a, _)| a))
        .map(|a| a.to_string())
        .collect();
    synod_zk::ZkServer::start_on(node, listen, config)
        .await
        .with_context(|| {
            format!(
                "cannot listen for ZooKeeper clients on {} (is another process using the port?)",
                addrs.join(" and ")
            )
        })
}

/// The HTTP port of the n-th node of `synod dev`: 2381, 22381, 32381, ...
/// (the etcd API's port + 2, as etcd's metrics port conventionally is).
fn dev_http_port(i: u64) -> u16 {
    dev_ports(i).0 + 2
}

/// Serves the node's HTTP endpoint (metrics, health, dashboard) on `addr`.
async fn start_http(node: Arc<Node>, addr: SocketAddr) -> Result<SocketAddr> {
    let listener = synod_http::bind(addr).await.with_context(|| {
        format!("cannot listen for HTTP (metrics, dashboard) on {addr} (is another process using the port?)")
    })?;
    let local = listener.local_addr()?;
    tokio::spawn(async move {
        if let Err(e) = synod_http::serve(node, listener).await {
            tracing::error!(error = %e, "HTTP endpoint stopped");
        }
    });
    Ok(local)
}

async fn start(config: NodeConfig, tls: Option<synod_server::tls::ServerTls>) -> Result<Arc<Node>> {
    let client_addr = config.me().client_addr;
    let listener = synod_etcd::bind(client_addr).await.with_context(|| {
        format!("cannot listen for clients on {client_addr} (is another process using the port?)")
    })?;
    let node = Node::start(config).await?;
    let api = node.clone();
    tokio::spawn(async move {
        if let Err(e) = synod_etcd::serve_tls(api, listener, tls).await {
            tracing::error!(error = %e, "etcd API stopped");
        }
    });
    Ok(node)
}

/// When a shard splits by itself (`--split-size`, `--split-load`).
struct SplitLimits {
    bytes: u64,
    writes_per_s: u64,
}

/// How `synod dev`'s nodes write to disk (`--quick-repair`,
/// `--backend-batch-rounds`).
struct DiskSettings {
    quick_repair: bool,
    backend_batch_rounds: u64,
}

async fn dev(
    data_dir: PathBuf,
    nodes: u64,
    quota_bytes: u64,
    disk: DiskSettings,
    zk_super_digest: Option<String>,
    shards: Option<synod_server::shards::ShardMap>,
    limits: SplitLimits,
) -> Result<()> {
    if !(1..=9).contains(&nodes) {
        bail!("--nodes must be between 1 and 9");
    }
    if !(1..=server_config::BACKEND_BATCH_ROUNDS_MAX).contains(&disk.backend_batch_rounds) {
        bail!(
            "--backend-batch-rounds must be between 1 and {}",
            server_config::BACKEND_BATCH_ROUNDS_MAX
        );
    }
    let mut members = BTreeMap::new();
    for i in 0..nodes {
        let (client, peer) = dev_ports(i);
        let id = NodeId(i + 1);
        members.insert(
            id,
            Member {
                id,
                peer_addr: SocketAddr::from(([127, 0, 0, 1], peer)),
                client_addr: SocketAddr::from(([127, 0, 0, 1], client)),
            },
        );
    }
    // Started side by side: after a crash each node's open walks its file.
    let mut starting = Vec::new();
    for id in members.keys() {
        let dir = data_dir.join(format!("node{}", id.0));
        let mut config = node_config(*id, dir, members.clone(), quota_bytes);
        config.quick_repair = disk.quick_repair;
        config.state_flush_rounds = disk.backend_batch_rounds;
        config.shards = shards.clone();
        config.split_bytes = limits.bytes;
        config.split_writes_per_s = limits.writes_per_s;
        starting.push(tokio::spawn(start(config, None)));
    }
    let mut running = Vec::new();
    for handle in starting {
        running.push(handle.await.context("a node's start panicked")??);
    }
    let zk_config = synod_zk::ZkConfig {
        super_digest: zk_super_digest,
        extended_types: true,
        ..synod_zk::ZkConfig::default()
    };
    let mut zk_servers = Vec::new();
    let mut http = Vec::new();
    for (i, node) in running.iter().enumerate() {
        let listen = synod_zk::ZkListen {
            addr: Some(SocketAddr::from(([127, 0, 0, 1], dev_zk_port(i as u64)))),
            secure: None,
        };
        zk_servers.push(start_zk(node.clone(), listen, zk_config.clone()).await?);
        let addr = SocketAddr::from(([127, 0, 0, 1], dev_http_port(i as u64)));
        http.push(start_http(node.clone(), addr).await?);
    }
    let endpoints: Vec<String> = members
        .values()
        .map(|m| m.client_addr.to_string())
        .collect();
    println!(
        "synod dev cluster: {nodes} nodes, data in {}",
        data_dir.display()
    );
    if let Some(map) = &shards {
        let points: Vec<String> = map
            .splits()
            .iter()
            .map(|s| s.escape_ascii().to_string())
            .collect();
        let mut why = Vec::new();
        if limits.bytes > 0 {
            why.push(format!("past {} bytes each", limits.bytes));
        }
        if limits.writes_per_s > 0 {
            why.push(format!("past {} writes a second each", limits.writes_per_s));
        }
        why.push("by `synod split`".to_string());
        let size = why.join(", ");
        println!(
            "  {} shard(s){}; they split {size} (group 1 is the meta group; `synod shards` lists them)",
            map.len(),
            if points.is_empty() {
                String::new()
            } else {
                format!(", split at {}", points.join(", "))
            },
        );
    }
    for ((m, zk), h) in members.values().zip(&zk_servers).zip(&http) {
        println!(
            "  node {}: etcd API {}  ZooKeeper {}  peers {}  dashboard http://{h}/",
            m.id.0,
            m.client_addr,
            zk.local_addr().map_or_else(String::new, |a| a.to_string()),
            m.peer_addr
        );
    }
    let zk_connect: Vec<String> = zk_servers
        .iter()
        .filter_map(|z| z.local_addr())
        .map(|a| a.to_string())
        .collect();
    println!(
        "try: etcdctl --endpoints={} put greeting hello",
        endpoints.join(",")
    );
    println!("     zkCli.sh -server {}", zk_connect.join(","));
    println!(
        "     curl http://{}/metrics    (Prometheus; /health, /readyz as etcd)",
        http[0]
    );
    println!("Ctrl-C to stop");
    tokio::signal::ctrl_c().await?;
    println!("stopping");
    for node in running {
        node.stop();
    }
    Ok(())
}

async fn server(settings: server_config::ServerSettings) -> Result<()> {
    let server_config::ServerSettings {
        id,
        data_dir,
        client_addr,
        peer_addr,
        peers,
        clients,
        quota_bytes,
        join,
        cluster_id: given_cluster_id,
        snapshot_count,
        quick_repair,
        backend_batch_rounds,
        zk_addr,
        zk_secure_addr,
        zk,
        metrics_addr,
        max_request_bytes,
        auth,
        peer_secret,
        client_tls,
        peer_tls,
        shards,
        split_bytes,
        split_writes_per_s,
    } = settings;
    let members = peers
        .iter()
        .map(|(&pid, &paddr)| {
            let caddr = if pid == id {
                client_addr
            } else {
                clients.get(&pid).copied().unwrap_or(paddr)
            };
            (
                NodeId(pid),
                Member {
                    id: NodeId(pid),
                    peer_addr: paddr,
                    client_addr: caddr,
                },
            )
        })
        .collect();
    let mut config = node_config(NodeId(id), data_dir, members, quota_bytes);
    config.join = join;
    config.snapshot_every = snapshot_count;
    config.quick_repair = quick_repair;
    config.state_flush_rounds = backend_batch_rounds;
    config.shards = shards;
    config.split_bytes = split_bytes;
    config.split_writes_per_s = split_writes_per_s;
    config.max_request_bytes = max_request_bytes;
    config.auth_token = auth.token;
    config.auth_token_ttl_s = auth.token_ttl_s;
    config.bcrypt_cost = auth.bcrypt_cost;
    synod_etcd::check_auth_config(&config).map_err(anyhow::Error::msg)?;
    config.peer_secret = peer_secret;
    config.peer_tls = peer_tls;
    config.client_tls = client_tls.is_some();
    config.client_tls_files = client_tls.clone();
    if let Some(c) = given_cluster_id {
        config.cluster_id = c;
        config.cluster_id_derived = false;
    }
    let tls = match &client_tls {
        Some(files) => Some(
            synod_server::tls::ServerTls::grpc(files.clone())
                .context("cannot set up TLS for the etcd API")?,
        ),
        None => None,
    };
    // The same files as the etcd API's, loaded (and reloaded) for a
    // listener without ALPN.
    let zk_secure = match (zk_secure_addr, client_tls) {
        (Some(addr), Some(files)) => Some((
            addr,
            synod_server::tls::ServerTls::plain(files)
                .context("cannot set up TLS for ZooKeeper clients")?,
        )),
        _ => None,
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    let node = start(config, tls).await?;
    let _zk = if zk_addr.is_some() || zk_secure.is_some() {
        let listen = synod_zk::ZkListen {
            addr: zk_addr,
            secure: zk_secure,
        };
        let server = start_zk(node.clone(), listen, zk).await?;
        if let Some(addr) = server.local_addr() {
            println!("synod node {id}: ZooKeeper {addr}");
        }
        if let Some(addr) = server.secure_addr() {
            println!("synod node {id}: ZooKeeper over TLS {addr}");
        }
        Some(server)
    } else {
        None
    };
    if let Some(addr) = metrics_addr {
        let local = start_http(node.clone(), addr).await?;
        println!("synod node {id}: metrics and dashboard http://{local}/");
    }
    println!("synod node {id}: etcd API {scheme}://{client_addr}, peers {peer_addr}");
    tokio::signal::ctrl_c().await?;
    node.stop();
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    match Cli::parse().command {
        Command::Dev {
            data_dir,
            nodes,
            quota_backend_bytes,
            quick_repair,
            backend_batch_rounds,
            zk_super_digest,
            split_at,
            shards,
            split_size,
            split_load,
        } => {
            let shards = server_config::parse_shards(shards.as_deref(), split_at.as_deref())?;
            let limits = SplitLimits {
                bytes: split_size,
                writes_per_s: split_load,
            };
            dev(
                data_dir,
                nodes,
                quota_backend_bytes,
                DiskSettings {
                    quick_repair,
                    backend_batch_rounds,
                },
                zk_super_digest,
                shards,
                limits,
            )
            .await
        }
        Command::Bench(args) => bench::run(args).await,
        Command::Server(args) => server(args.resolve()?).await,
        Command::Restore(args) => restore(args),
        Command::Lab(args) => lab::lab(args).await,
        Command::Propose(args) => lab::propose(args).await,
        Command::Shards(args) => shards::run(args).await,
        Command::Split(args) => shards::split(args).await,
    }
}
