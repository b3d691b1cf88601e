//! The ZooKeeper listeners of one node (the plain client port, the TLS
//! one, or both): accepts connections, answers four-letter words, and runs
//! the leader's reaper of containers and TTL nodes.

use crate::conn;
use crate::watches::Watches;
use futures::StreamExt;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use synod_proto::synodpb::command::Op;
use synod_proto::synodpb::zk_op::Op as ZkOpKind;
use synod_proto::synodpb::{ZkOp, ZkReap, ZkWrite};
use synod_server::tls::ServerTls;
use synod_server::{Node, ZkFeed};
use tokio::net::TcpListener;

/// How a node's ZooKeeper front end behaves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ZkConfig {
    /// The largest request frame accepted (ZooKeeper's `jute.maxbuffer`).
    pub max_buffer: usize,
    /// `user:HASH` whose digest identity passes every ACL check
    /// (ZooKeeper's `DigestAuthenticationProvider.superDigest`).
    pub super_digest: Option<String>,
    /// TTL nodes allowed (ZooKeeper's `extendedTypesEnabled`).
    pub extended_types: bool,
    /// Four-letter words answered on the client ports (plain and TLS).
    pub four_letter_words: bool,
    /// ZooKeeper's tick: session timeouts are clamped to 2 to 20 ticks.
    pub tick_ms: i32,
    /// Connections one client address may hold open to this node at once
    /// (ZooKeeper's `maxClientCnxns`, default 60; 0: no limit). A client
    /// that leaks connections is refused past it instead of exhausting
    /// the node's sockets and memory.
    pub max_client_cnxns: u32,
    /// Bytes of watch events one connection may have waiting because its
    /// client is not reading them; past this the connection is closed
    /// (its session and watches survive a reconnect). ZooKeeper queues
    /// without bound.
    pub max_backlog_bytes: usize,
}

/// ZooKeeper's default `maxClientCnxns`.
pub const MAX_CLIENT_CNXNS_DEFAULT: u32 = 60;
/// The default limit of a connection's unsent watch events: 64 MiB, about
/// 700,000 events on 30-byte paths.
pub const MAX_BACKLOG_BYTES_DEFAULT: usize = 64 << 20;

impl Default for ZkConfig {
    fn default() -> ZkConfig {
        ZkConfig {
            max_buffer: crate::jute::MAX_BUFFER_DEFAULT,
            super_digest: None,
            extended_types: false,
            four_letter_words: true,
            tick_ms: 2000,
            max_client_cnxns: MAX_CLIENT_CNXNS_DEFAULT,
            max_backlog_bytes: MAX_BACKLOG_BYTES_DEFAULT,
        }
    }
}

/// Counters for `srvr`, `stat` and `mntr`.
#[derive(Default)]
pub struct Stats {
    /// Requests received.
    pub received: AtomicU64,
    /// Replies and events sent.
    pub sent: AtomicU64,
    /// Connections open now.
    pub connections: AtomicU64,
    /// Sum of request latencies, in microseconds.
    pub latency_us: AtomicU64,
    /// The longest request latency, in microseconds.
    pub latency_max_us: AtomicU64,
}

/// What every connection of a node shares.
pub struct Shared {
    /// The node the tree lives on.
    pub node: Arc<Node>,
    /// The watches of every connection.
    pub watches: Arc<Watches>,
    /// Settings.
    pub config: ZkConfig,
    /// Counters.
    pub stats: Stats,
    /// When the front end started.
    pub started: Instant,
    /// The plain port clients connect to (ZooKeeper's `clientPort`).
    pub port: Option<u16>,
    /// The TLS port (ZooKeeper's `secureClientPort`).
    pub secure_port: Option<u16>,
    next_conn: AtomicU64,
    /// Open connections per client address (both ports).
    per_address: Mutex<HashMap<IpAddr, u32>>,
    /// True while this node serves read-only (ZooKeeper's read-only mode:
    /// it has known no leader for `READ_ONLY_AFTER`); read-only
    /// connections close when it turns false.
    read_only: tokio::sync::watch::Sender<bool>,
}

impl Shared {
    /// A fresh connection id.
    pub fn conn_id(&self) -> u64 {
        self.next_conn.fetch_add(1, Ordering::Relaxed)
    }

    /// Counts a new connection from `ip`, or refuses it when that address
    /// already holds `max_client_cnxns`; the count drops with the slot.
    pub fn admit(self: &Arc<Shared>, ip: IpAddr) -> Result<AddressSlot, u32> {
        let max = self.config.max_client_cnxns;
        let mut open = self.per_address.lock().unwrap_or_else(|p| p.into_inner());
        let n = open.entry(ip).or_default();
        if max > 0 && *n >= max {
            return Err(max);
        }
        *n += 1;
        Ok(AddressSlot {
            shared: Arc::clone(self),
            ip,
        })
    }

    /// True while the node serves only read-only clients (`isro` says
    /// `ro`).
    pub fn is_read_only(&self) -> bool {
        *self.read_only.borrow()
    }

    /// Changes of the read-only mode, for a read-only connection to close
    /// when a leader is back.
    pub fn read_only_changes(&self) -> tokio::sync::watch::Receiver<bool> {
        self.read_only.subscribe()
    }

    /// The connections `ip` holds open now.
    pub fn open_from(&self, ip: IpAddr) -> u32 {
        let open = self.per_address.lock().unwrap_or_else(|p| p.into_inner());
        open.get(&ip).copied().unwrap_or(0)
    }
}

/// One counted connection of a client address (see [`Shared::admit`]).
pub struct AddressSlot {
    shared: Arc<Shared>,
    ip: IpAddr,
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut open = self
            .shared
            .per_address
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(n) = open.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// Where a node serves ZooKeeper clients. One front end serves both
/// ports: a node feeds its watch events to a single listener, and the
/// sessions, watches and counters are the same whichever port a client
/// came in by.
#[derive(Clone, Default)]
pub struct ZkListen {
    /// The plain client port (ZooKeeper's `clientPort`).
    pub addr: Option<SocketAddr>,
    /// The TLS client port and its certificate (ZooKeeper's
    /// `secureClientPort`); four-letter words are answered there too.
    pub secure: Option<(SocketAddr, ServerTls)>,
}

/// A running ZooKeeper front end.
pub struct ZkServer {
    addr: Option<SocketAddr>,
    secure_addr: Option<SocketAddr>,
    stop: tokio::sync::watch::Sender<bool>,
}

impl ZkServer {
    /// Binds `addr`, plugs the watch listener into `node` and serves until
    /// [`stop`](ZkServer::stop) or the node stops.
    pub async fn start(
        node: Arc<Node>,
        addr: SocketAddr,
        config: ZkConfig,
    ) -> std::io::Result<ZkServer> {
        let listen = ZkListen {
            addr: Some(addr),
            secure: None,
        };
        ZkServer::start_on(node, listen, config).await
    }

    /// [`start`](ZkServer::start) on the plain port, the TLS port, or
    /// both; both are bound before anything is served, so a busy port
    /// fails the whole start.
    pub async fn start_on(
        node: Arc<Node>,
        listen: ZkListen,
        config: ZkConfig,
    ) -> std::io::Result<ZkServer> {
        let invalid = |e: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, e);
        if let Some(d) = &config.super_digest {
            crate::auth::check_super_digest(d).map_err(|e| invalid(e.to_string()))?;
        }
        if listen.addr.is_none() && listen.secure.is_none() {
            return Err(invalid("no ZooKeeper address to listen on".into()));
        }
        let plain = match listen.addr {
            Some(addr) => Some(TcpListener::bind(addr).await?),
            None => None,
        };
        let secure = match listen.secure {
            Some((addr, tls)) => Some((TcpListener::bind(addr).await?, tls)),
            None => None,
        };
        let addr = plain.as_ref().map(|l| l.local_addr()).transpose()?;
        let secure_addr = secure.as_ref().map(|(l, _)| l.local_addr()).transpose()?;
        let watches = Arc::new(Watches::default());
        let feed = Arc::clone(&watches);
        node.zk_listen(Arc::new(move |update: ZkFeed<'_>| match update {
            ZkFeed::Events(events, _) => feed.deliver(events),
            ZkFeed::Reset => feed.reset(),
        }));
        let shared = Arc::new(Shared {
            node,
            watches,
            config,
            stats: Stats::default(),
            started: Instant::now(),
            port: addr.map(|a| a.port()),
            secure_port: secure_addr.map(|a| a.port()),
            next_conn: AtomicU64::new(1),
            per_address: Mutex::default(),
            read_only: tokio::sync::watch::channel(false).0,
        });
        let (stop, stopped) = tokio::sync::watch::channel(false);
        tokio::spawn(reaper(Arc::clone(&shared), stop.subscribe()));
        tokio::spawn(quorum_watch(Arc::clone(&shared), stop.subscribe()));
        if let (Some(listener), Some(addr)) = (plain, addr) {
            tokio::spawn(accept_plain(Arc::clone(&shared), listener, stopped.clone()));
            tracing::info!(%addr, "ZooKeeper protocol listening");
        }
        if let (Some((listener, tls)), Some(addr)) = (secure, secure_addr) {
            tokio::spawn(accept_tls(Arc::clone(&shared), listener, tls, stopped));
            tracing::info!(%addr, "ZooKeeper protocol listening over TLS");
        }
        Ok(ZkServer {
            addr,
            secure_addr,
            stop,
        })
    }

    /// Where plain-text clients connect, if they may.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.addr
    }

    /// Where TLS clients connect, if they may.
    pub fn secure_addr(&self) -> Option<SocketAddr> {
        self.secure_addr
    }

    /// Stops accepting and closes every connection.
    pub fn stop(&self) {
        let _ = self.stop.send(true);
    }
}

impl Drop for ZkServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Serves the plain client port until the front end stops.
async fn accept_plain(
    shared: Arc<Shared>,
    listener: TcpListener,
    mut stopped: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = conn::until_stopped(&mut stopped) => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    tokio::spawn(conn::serve(Arc::clone(&shared), stream, peer, stopped.clone()));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "ZooKeeper accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
}

/// Serves the TLS client port until the front end stops: the same
/// connections as the plain port's once the handshake is done (which
/// [`ServerTls::incoming`] completes, refusing clients without an
/// accepted certificate when client certificates are required).
async fn accept_tls(
    shared: Arc<Shared>,
    listener: TcpListener,
    tls: ServerTls,
    stopped: tokio::sync::watch::Receiver<bool>,
) {
    let mut until = stopped.clone();
    let incoming = tls.incoming(
        listener,
        async move { conn::until_stopped(&mut until).await },
    );
    let mut incoming = std::pin::pin!(incoming);
    while let Some(accepted) = incoming.next().await {
        let Ok(stream) = accepted else { continue };
        let Ok(peer) = stream.get_ref().0.peer_addr() else {
            continue;
        };
        tokio::spawn(conn::serve(
            Arc::clone(&shared),
            stream,
            peer,
            stopped.clone(),
        ));
    }
}

/// How often the leader looks for containers and TTL nodes to delete
/// (ZooKeeper's `znode.container.checkIntervalMs` is a minute; a second
/// costs one scan of the tree's index here).
const REAP_EVERY: Duration = Duration::from_secs(1);
/// Paths one reap command deletes at most.
const REAP_BATCH_MAX: usize = 1000;

/// How long a node must know no leader before it serves read-only clients
/// (a leader change takes less, so an election does not flap the mode).
pub const READ_ONLY_AFTER: Duration = Duration::from_secs(2);
/// How often the node's leader is looked at.
const QUORUM_WATCH_EVERY: Duration = Duration::from_millis(100);

/// ZooKeeper's read-only mode: a node that has known no leader for
/// `READ_ONLY_AFTER` (none believed, or its election timer fired and it
/// has been probing or campaigning since: a minority partition, or a
/// quorum lost) serves
/// clients that asked for read-only sessions, from its own state; once it
/// knows a leader again it closes them, and they reconnect read-write.
async fn quorum_watch(shared: Arc<Shared>, mut stopped: tokio::sync::watch::Receiver<bool>) {
    let mut leaderless_since: Option<Instant> = None;
    loop {
        tokio::select! {
            _ = conn::until_stopped(&mut stopped) => return,
            _ = tokio::time::sleep(QUORUM_WATCH_EVERY) => {}
        }
        let status = shared.node.status();
        let read_only = if status.leader.is_some() && !status.seeking_leader {
            leaderless_since = None;
            false
        } else {
            leaderless_since.get_or_insert_with(Instant::now).elapsed() >= READ_ONLY_AFTER
        };
        let changed = shared.read_only.send_if_modified(|ro| {
            let changed = *ro != read_only;
            *ro = read_only;
            changed
        });
        if changed {
            if read_only {
                tracing::warn!(
                    "no leader for {READ_ONLY_AFTER:?}: ZooKeeper serves read-only clients only"
                );
            } else {
                tracing::info!("a leader is known again: ZooKeeper serves read-write");
            }
        }
    }
}

/// On the leader, proposes the deletion of empty containers and expired
/// TTL nodes; the command re-checks each when it applies, so a node that
/// got a child meanwhile stays.
async fn reaper(shared: Arc<Shared>, mut stopped: tokio::sync::watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = conn::until_stopped(&mut stopped) => return,
            _ = tokio::time::sleep(REAP_EVERY) => {}
        }
        if !shared.node.status().is_leader {
            continue;
        }
        let now = conn::wall_ms();
        let Ok(paths) = shared
            .node
            .zk_query(move |kv| kv.zk().reap_candidates(now, REAP_BATCH_MAX))
            .await
        else {
            continue;
        };
        if paths.is_empty() {
            continue;
        }
        let write = ZkWrite {
            time_ms: now,
            ops: vec![ZkOp {
                op: Some(ZkOpKind::Reap(ZkReap { paths })),
            }],
            ..ZkWrite::default()
        };
        if let Err(e) = shared.node.write(Op::Zk(write)).await {
            tracing::debug!(error = %e, "reaping ZooKeeper nodes failed; will retry");
        }
    }
}
