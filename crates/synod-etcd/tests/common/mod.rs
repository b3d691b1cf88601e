//! The cluster harness the etcd API's integration tests share: real
//! nodes on loopback ports, each with its etcd gRPC server.

#![allow(dead_code)]

use bytes::Bytes;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use synod_paxos::NodeId;
use synod_proto::etcdserverpb::kv_client::KvClient;
use synod_proto::etcdserverpb::*;
use synod_server::{Member, Node, NodeConfig};
use tonic::transport::Channel;

/// A free loopback port below the kernel's ephemeral range: a port from
/// bind(0), released, can be taken by a running node's outgoing connection
/// (its local port) before the new node binds it; neither bind(0) nor
/// connect() picks ports below the range (synod-cli's tests explain more).
pub fn free_addr() -> SocketAddr {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u32>().ok())
        .filter(|low| *low >= 21_000)
        .unwrap_or(32_768);
    // The 10,000 ports under the ones synod-cli's tests use.
    let (span, base) = (10_000, low - 20_000);
    let start = std::process::id() * 104_729 % span;
    for _ in 0..span {
        let port = base + (start + NEXT.fetch_add(1, Ordering::Relaxed)) % span;
        let addr = SocketAddr::from(([127, 0, 0, 1], port as u16));
        if std::net::TcpListener::bind(addr).is_ok() {
            return addr;
        }
    }
    panic!("no free port below {low}");
}

pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub members: BTreeMap<NodeId, Member>,
    pub nodes: BTreeMap<NodeId, Arc<Node>>,
    /// Groups hosted besides the main one.
    pub groups: Vec<u64>,
    /// The key space's split points, when sharded.
    pub shards: Option<synod_server::shards::ShardMap>,
    /// Shards split past this many bytes (0: only when asked).
    pub split_bytes: u64,
    /// Shards split past this many writes a second (0: never by load).
    pub split_load: u64,
}

impl Cluster {
    pub async fn start(n: u64) -> Cluster {
        Cluster::start_with_groups(n, Vec::new()).await
    }

    pub async fn start_sharded(n: u64, splits: &[&str]) -> Cluster {
        let splits = splits.iter().map(|s| b(s)).collect();
        let map = synod_server::shards::ShardMap::new(splits).unwrap();
        Cluster::start_configured(n, Vec::new(), Some(map)).await
    }

    /// A sharded cluster of one shard that splits past `split_bytes`.
    pub async fn start_splitting(n: u64, split_bytes: u64) -> Cluster {
        Cluster::start_splitting_by(n, split_bytes, 0).await
    }

    /// A sharded cluster of one shard that splits past `split_bytes` or
    /// `split_load` writes a second.
    pub async fn start_splitting_by(n: u64, split_bytes: u64, split_load: u64) -> Cluster {
        let map = synod_server::shards::ShardMap::new(Vec::new()).unwrap();
        let mut c = Cluster::start_configured(0, Vec::new(), Some(map)).await;
        c.members = Cluster::members(n);
        c.split_bytes = split_bytes;
        c.split_load = split_load;
        for i in 1..=n {
            c.start_node(NodeId(i)).await;
        }
        c
    }

    pub async fn start_with_groups(n: u64, groups: Vec<u64>) -> Cluster {
        Cluster::start_configured(n, groups, None).await
    }

    pub async fn start_configured(
        n: u64,
        groups: Vec<u64>,
        shards: Option<synod_server::shards::ShardMap>,
    ) -> Cluster {
        let members = Cluster::members(n);
        let mut c = Cluster {
            dir: tempfile::tempdir().unwrap(),
            members,
            nodes: BTreeMap::new(),
            groups,
            shards,
            split_bytes: 0,
            split_load: 0,
        };
        for i in 1..=n {
            c.start_node(NodeId(i)).await;
        }
        c
    }

    fn members(n: u64) -> BTreeMap<NodeId, Member> {
        (1..=n)
            .map(|i| {
                let id = NodeId(i);
                (
                    id,
                    Member {
                        id,
                        peer_addr: free_addr(),
                        client_addr: free_addr(),
                    },
                )
            })
            .collect()
    }

    pub async fn start_node(&mut self, id: NodeId) {
        let config = self.clone_config(id);
        let listener = synod_etcd::bind(self.members[&id].client_addr)
            .await
            .unwrap();
        let node = Node::start(config).await.unwrap();
        let api = node.clone();
        tokio::spawn(async move { synod_etcd::serve(api, listener).await });
        self.nodes.insert(id, node);
    }

    /// Node `id`'s configuration in this cluster.
    pub fn clone_config(&self, id: NodeId) -> NodeConfig {
        NodeConfig {
            id,
            cluster_id: 42,
            data_dir: self.dir.path().join(format!("node{}", id.0)),
            members: self.members.clone(),
            tick_ms: 5,
            request_timeout_ms: 3000,
            snapshot_every: 40,
            quota_bytes: 0,
            watch_progress_ms: 600_000,
            // Tiny chunks: every snapshot shipped in the tests is many messages.
            snapshot_chunk_bytes: 200,
            join: false,
            groups: self.groups.clone(),
            shards: self.shards.clone(),
            split_bytes: self.split_bytes,
            split_writes_per_s: self.split_load,
            cluster_id_derived: false,
            quick_repair: true,
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

    pub fn stop_node(&mut self, id: NodeId) {
        if let Some(n) = self.nodes.remove(&id) {
            n.stop();
        }
    }

    pub async fn client(&self, id: NodeId) -> KvClient<Channel> {
        let addr = self.members[&id].client_addr;
        for _ in 0..100 {
            if let Ok(c) = KvClient::connect(format!("http://{addr}")).await {
                return c;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("cannot connect to {addr}");
    }

    pub async fn leader(&self) -> NodeId {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            for (id, n) in &self.nodes {
                if n.status().is_leader {
                    return *id;
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("no leader elected within 10 s");
    }
}

pub fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

pub async fn put(c: &mut KvClient<Channel>, k: &str, v: &str) -> i64 {
    let r = c
        .put(PutRequest {
            key: b(k),
            value: b(v),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    r.header.unwrap().revision
}

pub async fn get(c: &mut KvClient<Channel>, k: &str) -> Option<String> {
    let r = c
        .range(RangeRequest {
            key: b(k),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    r.kvs
        .first()
        .map(|kv| String::from_utf8(kv.value.to_vec()).unwrap())
}

/// A put retried until it goes through: right after start, each shard
/// and the meta group's oracle elect on their own.
pub async fn put_ready(c: &mut KvClient<Channel>, k: &str, v: &str) -> i64 {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let request = PutRequest {
            key: b(k),
            value: b(v),
            ..Default::default()
        };
        match c.put(request).await {
            Ok(r) => return r.into_inner().header.unwrap().revision,
            Err(e) if Instant::now() < deadline => {
                println!("{k} not taken yet: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("{k} never taken: {e}"),
        }
    }
}

pub fn keys_of(r: &RangeResponse) -> Vec<String> {
    r.kvs
        .iter()
        .map(|kv| String::from_utf8(kv.key.to_vec()).unwrap())
        .collect()
}

pub fn everything() -> RangeRequest {
    RangeRequest {
        key: b("\0"),
        range_end: b("\0"),
        ..Default::default()
    }
}
