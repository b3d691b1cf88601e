//! One client connection: the handshake that opens or resumes a session,
//! then requests answered in arrival order (ZooKeeper's FIFO order per
//! session), with watch events written ahead of any reply that could show
//! their change. A pipelining client's consecutive plain reads are answered
//! together, in one visit to the core thread; writes, syncs and session
//! requests one at a time.

use crate::auth;
use crate::jute::{frame_len, JuteError, Reader};
use crate::proto::{
    self, encode_connect_response, encode_event, encode_reply, err, op, Acl, ClientInfo,
    ConnectRequest, ConnectResponse, Id, MultiOp, OpResult, ReplyHeader, Request, RequestHeader,
    Response, Stat, WatcherEvent,
};
use crate::server::Shared;
use crate::watches::{event, Backlog, ConnId, Kind, Notification, Sink};
use bytes::Bytes;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use synod_kv::zk::{acl, mode, path, ZkTree};
use synod_kv::KvStore;
use synod_proto::etcdserverpb::RangeRequest;
use synod_proto::synodpb::command::Op;
use synod_proto::synodpb::outcome::Result as OutcomeResult;
use synod_proto::synodpb::zk_op::Op as ZkOpKind;
use synod_proto::synodpb::{
    ZNode, ZkAcl, ZkCheck, ZkCloseSession, ZkCreate, ZkDelete, ZkId, ZkOp, ZkOpenSession, ZkResult,
    ZkSetAcl, ZkSetData, ZkWrite,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

/// ZooKeeper's keeper state for a connected client.
const SYNC_CONNECTED: i32 = 3;
/// Batches of frames read ahead of the one being answered (with
/// `BATCH_BYTES`, what a connection buffers is bounded by about
/// `READ_AHEAD` × (`BATCH_BYTES` + `jute.maxbuffer`)).
const READ_AHEAD: usize = 8;
/// Frames one batch holds at most.
const FRAMES_PER_BATCH: usize = 128;
/// A batch takes no more frames once it holds this many bytes.
const BATCH_BYTES: usize = 1 << 20;
/// The read buffer of a connection: the frames a pipelining client sent
/// are found whole in it.
const READ_BUFFER: usize = 64 << 10;
/// How long a new connection may take to send its ConnectRequest (or a
/// four-letter word): an idle socket would otherwise hold one of its
/// address's `maxClientCnxns` and a task forever.
const HANDSHAKE_LIMIT: Duration = Duration::from_secs(10);
/// How long a closing connection may take to say so (a TLS close_notify
/// to a client that reads nothing more must not hold the task).
const CLOSE_LIMIT: Duration = Duration::from_secs(1);

/// The wall clock in milliseconds (ctime, mtime and TTLs).
pub fn wall_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Serves one connection until it closes; logs why it ended. The stream
/// is a TCP connection or a TLS session over one: nothing past the
/// handshake depends on which.
pub(crate) async fn serve<S>(
    shared: Arc<Shared>,
    stream: S,
    peer: SocketAddr,
    stopped: tokio::sync::watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let _slot = match shared.admit(peer.ip()) {
        Ok(slot) => slot,
        Err(max) => {
            // ZooKeeper closes such a connection without a word, too.
            tracing::warn!(%peer, max, "ZooKeeper connection refused: too many connections from this address (--zk-max-client-cnxns)");
            let mut stream = stream;
            let _ = tokio::time::timeout(CLOSE_LIMIT, stream.shutdown()).await;
            return;
        }
    };
    let conn = shared.conn_id();
    shared.stats.connections.fetch_add(1, Ordering::Relaxed);
    shared.node.metrics().zk_connections_add(1);
    let (rd, wr) = tokio::io::split(stream);
    let mut c = Conn {
        shared: Arc::clone(&shared),
        conn,
        wr,
        session: 0,
        timeout_ms: 0,
        auth: vec![ZkId {
            scheme: "ip".into(),
            id: peer.ip().to_string(),
        }],
        zxid: 0,
        renewed: Instant::now(),
        out: Vec::new(),
        backlog: Backlog::new(shared.config.max_backlog_bytes),
        read_only: false,
    };
    let ended = c.run(rd, stopped).await;
    // The stream stays open while either half lives (the reading task is
    // aborted but may not be dropped yet): shutting this half down tells
    // the client at once, a TLS client with a close_notify first.
    let _ = tokio::time::timeout(CLOSE_LIMIT, c.wr.shutdown()).await;
    let cut_off = c.backlog.is_over();
    drop(c);
    match ended {
        Ok(()) => tracing::debug!(%peer, conn, "ZooKeeper connection closed"),
        // A client cut off for not reading is the operator's business
        // (a hung process, a watch on too much); other ends are routine.
        Err(why) if cut_off => {
            tracing::warn!(%peer, conn, %why, "ZooKeeper connection closed")
        }
        Err(why) => tracing::info!(%peer, conn, %why, "ZooKeeper connection closed"),
    }
    shared.watches.disconnect(conn);
    shared.stats.connections.fetch_sub(1, Ordering::Relaxed);
    shared.node.metrics().zk_connections_add(-1);
}

/// What answering one request leads to.
enum Next {
    /// Write this reply and go on.
    Reply(i32, Response),
    /// Write this reply, then close the connection.
    ReplyAndClose(i32, Response, &'static str),
}

struct Conn<W> {
    shared: Arc<Shared>,
    conn: ConnId,
    wr: W,
    session: i64,
    timeout_ms: i32,
    /// Who the client authenticated as (its address first).
    auth: Vec<ZkId>,
    /// The last zxid this connection reported.
    zxid: i64,
    /// When the session's lease was last renewed from here.
    renewed: Instant,
    /// Frames to write, in order.
    out: Vec<u8>,
    /// Watch events queued for this connection and not yet taken into
    /// `out`: past its limit the connection is cut off.
    backlog: Arc<Backlog>,
    /// A read-only session (ZooKeeper's read-only mode): served from this
    /// node's state while it knows no leader; writes are refused.
    read_only: bool,
}

async fn read_frame(
    rd: &mut (impl AsyncRead + Unpin),
    max: usize,
) -> Result<Option<Vec<u8>>, String> {
    let mut head = [0u8; 4];
    match rd.read_exact(&mut head).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(format!("read failed: {e}")),
    }
    let len = frame_len(head, max).map_err(|e| format!("bad frame: {e}"))?;
    let mut body = vec![0u8; len];
    rd.read_exact(&mut body)
        .await
        .map_err(|e| format!("read failed mid-frame: {e}"))?;
    Ok(Some(body))
}

/// Reads frames into `tx` until the client closes or sends garbage. The
/// frames a pipelining client already sent (whole in the read buffer)
/// travel together, so the reads among them are answered in one visit to
/// the core thread.
async fn read_frames(
    rd: impl AsyncRead + Unpin,
    max: usize,
    tx: mpsc::Sender<Result<Vec<Vec<u8>>, String>>,
) {
    let mut rd = tokio::io::BufReader::with_capacity(READ_BUFFER, rd);
    loop {
        let mut frames = match read_frame(&mut rd, max).await {
            Ok(Some(f)) => vec![f],
            Ok(None) => return,
            Err(e) => {
                let _ = tx.send(Err(e)).await;
                return;
            }
        };
        let mut bytes = frames[0].len();
        while frames.len() < FRAMES_PER_BATCH
            && bytes < BATCH_BYTES
            && whole_frame_buffered(rd.buffer(), max)
        {
            match read_frame(&mut rd, max).await {
                Ok(Some(f)) => {
                    bytes += f.len();
                    frames.push(f);
                }
                // Cannot happen for a frame already buffered; the next
                // read reports whatever is wrong.
                _ => break,
            }
        }
        if tx.send(Ok(frames)).await.is_err() {
            return;
        }
    }
}

/// True when `buf` starts with a whole frame of an acceptable length (a
/// bad length is left for `read_frame` to refuse).
fn whole_frame_buffered(buf: &[u8], max: usize) -> bool {
    let Some(head) = buf.get(..4) else {
        return false;
    };
    match frame_len(head.try_into().expect("four bytes"), max) {
        Ok(len) => buf.len() >= 4 + len,
        Err(_) => false,
    }
}

/// Ends the task reading a connection's frames when the connection ends:
/// its read half keeps the stream open until it is dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Resolves once the front end stops (the guard `wait_for` returns is
/// not held across an await).
pub(crate) async fn until_stopped(stopped: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = stopped.wait_for(|s| *s).await.map(|_| ());
}

/// Why a connection whose client stopped reading its events was closed.
fn too_slow(backlog: &Backlog) -> String {
    format!(
        "client is not reading: over {} bytes of watch events queued (its session lives on; \
         on reconnect, setWatches fires what it missed)",
        backlog.queued()
    )
}

fn decode_error(e: JuteError) -> String {
    format!("malformed request: {e}")
}

impl<W: AsyncWrite + Unpin + Send> Conn<W> {
    async fn run(
        &mut self,
        mut rd: impl AsyncRead + Unpin + Send + 'static,
        mut stopped: tokio::sync::watch::Receiver<bool>,
    ) -> Result<(), String> {
        let max = self.shared.config.max_buffer;
        let mut head = [0u8; 4];
        tokio::time::timeout(HANDSHAKE_LIMIT, rd.read_exact(&mut head))
            .await
            .map_err(|_| format!("no handshake within {HANDSHAKE_LIMIT:?}"))?
            .map_err(|e| format!("no handshake: {e}"))?;
        if let Some(word) = crate::words::parse(&head) {
            if self.shared.config.four_letter_words {
                let text = crate::words::answer(&self.shared, word).await;
                let _ = self.wr.write_all(text.as_bytes()).await;
            }
            let _ = self.wr.shutdown().await;
            return Ok(());
        }
        let len = frame_len(head, max).map_err(|e| format!("bad handshake frame: {e}"))?;
        let mut body = vec![0u8; len];
        tokio::time::timeout(HANDSHAKE_LIMIT, rd.read_exact(&mut body))
            .await
            .map_err(|_| format!("handshake not finished within {HANDSHAKE_LIMIT:?}"))?
            .map_err(|e| format!("handshake cut short: {e}"))?;
        let request = ConnectRequest::read(&mut Reader::new(&body)).map_err(decode_error)?;
        if !self.handshake(&request).await? {
            return Ok(());
        }
        let (ntx, mut notes) = mpsc::unbounded_channel();
        self.shared
            .watches
            .connect(self.conn, Sink::new(ntx, Arc::clone(&self.backlog)));
        let backlog = Arc::clone(&self.backlog);
        let (ftx, mut frames) = mpsc::channel(READ_AHEAD);
        let _reader = AbortOnDrop(tokio::spawn(read_frames(rd, max, ftx)));
        let mut mode = self.shared.read_only_changes();
        loop {
            // A client pings every third of its timeout; silence past the
            // whole timeout means it is gone (its session expires on the
            // leader's clock unless it reconnects elsewhere).
            let idle = Duration::from_millis(self.timeout_ms.max(1) as u64);
            tokio::select! {
                biased;
                _ = until_stopped(&mut stopped) => return Ok(()),
                _ = backlog.cut() => return Err(too_slow(&backlog)),
                Ok(()) = mode.changed(), if self.read_only => {
                    if !*mode.borrow_and_update() {
                        self.flush().await?;
                        return Err("a leader is known again: reconnect for a read-write session".into());
                    }
                }
                n = notes.recv() => match n {
                    Some(n) => self.push_event(&n),
                    None if backlog.is_over() => return Err(too_slow(&backlog)),
                    None => {
                        self.flush().await?;
                        return Err("the node installed a snapshot: reconnect and re-register watches".into());
                    }
                },
                frame = frames.recv() => match frame {
                    None => return Ok(()),
                    Some(Err(e)) => return Err(e),
                    Some(Ok(batch)) => {
                        if let Some(why) = self.answer_batch(batch, &mut notes).await? {
                            self.flush().await?;
                            return Err(why.into());
                        }
                    }
                },
                _ = tokio::time::sleep(idle) => return Err("client silent past its session timeout".into()),
            }
            if !self.out.is_empty() && frames.is_empty() {
                self.flush().await?;
            }
        }
    }

    /// Answers the frames of one batch in order; why the connection must
    /// close, if it must. A run of plain reads is answered in one visit to
    /// the core thread at one state, which is what answering them one by
    /// one with no write of this session between them could give; every
    /// other request is answered alone, after the ones before it
    /// (ZooKeeper's FIFO order per session).
    async fn answer_batch(
        &mut self,
        batch: Vec<Vec<u8>>,
        notes: &mut mpsc::UnboundedReceiver<Notification>,
    ) -> Result<Option<&'static str>, String> {
        let mut reads: Vec<Option<(RequestHeader, Request)>> = if batch.len() > 1 {
            batch.iter().map(|f| decode_read(f)).collect()
        } else {
            vec![None]
        };
        let mut i = 0;
        while i < batch.len() {
            let started = Instant::now();
            let run = reads[i..].iter().take_while(|r| r.is_some()).count();
            let (replies, close) = if run > 1 {
                let decoded = reads[i..i + run]
                    .iter_mut()
                    .filter_map(Option::take)
                    .collect();
                i += run;
                (self.reads(decoded).await?, None)
            } else {
                let (reply, close, op, code) = self.request(&batch[i]).await?;
                i += 1;
                (vec![(reply, op, code)], close)
            };
            // The events of changes the replies show go first
            // (ZooKeeper's ordering guarantee); those of later changes,
            // queued while the requests were answered, go after them. A
            // client registers a watch when the reply that set it arrives
            // (kazoo does): an event ahead of that reply would find no
            // watcher and be lost, and the one-shot watch with it.
            let shown = self.zxid;
            let mut later = Vec::new();
            while let Ok(n) = notes.try_recv() {
                if n.zxid <= shown {
                    self.push_event(&n);
                } else {
                    later.push(n);
                }
            }
            for (reply, op, code) in replies {
                self.out.extend_from_slice(&reply);
                self.record(started, (op, code));
            }
            for n in &later {
                self.push_event(n);
            }
            if close.is_some() {
                return Ok(close);
            }
        }
        Ok(None)
    }

    /// Answers a run of plain reads: their encoded replies with their
    /// opcodes and result codes (for metrics).
    async fn reads(
        &mut self,
        reads: Vec<(RequestHeader, Request)>,
    ) -> Result<Vec<(Vec<u8>, i32, i32)>, String> {
        if !self.renew().await {
            return Err("session expired".into());
        }
        let headers: Vec<RequestHeader> = reads.iter().map(|(h, _)| h.clone()).collect();
        let jobs = reads
            .into_iter()
            .map(|(_, r)| self.read_job(r).expect("decode_read keeps plain reads"))
            .collect();
        let answers = self.run_reads(jobs).await?;
        Ok(headers
            .into_iter()
            .zip(answers)
            .map(|(header, next)| {
                let Next::Reply(code, response) = next else {
                    unreachable!("a read never closes the connection")
                };
                let reply = ReplyHeader {
                    xid: header.xid,
                    zxid: self.zxid,
                    err: code,
                };
                (encode_reply(&reply, &response), header.op, code)
            })
            .collect())
    }

    fn record(&self, started: Instant, (op, code): (i32, i32)) {
        let stats = &self.shared.stats;
        let took = started.elapsed();
        let us = took.as_micros() as u64;
        self.shared.node.metrics().observe_request(
            "zookeeper",
            crate::proto::op_name(op),
            crate::proto::err_name(code),
            took.as_secs_f64(),
        );
        stats.received.fetch_add(1, Ordering::Relaxed);
        stats.sent.fetch_add(1, Ordering::Relaxed);
        stats.latency_us.fetch_add(us, Ordering::Relaxed);
        stats.latency_max_us.fetch_max(us, Ordering::Relaxed);
    }

    /// Writes out what is buffered. A client that does not read blocks
    /// the write; the events queued meanwhile pass the backlog's limit,
    /// and the connection is cut off instead of waiting on.
    async fn flush(&mut self) -> Result<(), String> {
        let out = std::mem::take(&mut self.out);
        let backlog = Arc::clone(&self.backlog);
        tokio::select! {
            sent = self.send(&out) => sent,
            _ = backlog.cut() => Err(too_slow(&backlog)),
        }
    }

    /// Writes `bytes` through to the client: a TLS stream may hold
    /// written bytes back until it is flushed.
    async fn send(&mut self, bytes: &[u8]) -> Result<(), String> {
        let written = match self.wr.write_all(bytes).await {
            Ok(()) => self.wr.flush().await,
            Err(e) => Err(e),
        };
        written.map_err(|e| format!("write failed: {e}"))
    }

    fn push_event(&mut self, n: &Notification) {
        self.backlog.taken(n.cost());
        self.zxid = self.zxid.max(n.zxid);
        let frame = encode_event(
            n.zxid,
            &WatcherEvent {
                kind: n.kind,
                state: SYNC_CONNECTED,
                path: n.path.clone(),
            },
        );
        self.out.extend_from_slice(&frame);
        self.shared.stats.sent.fetch_add(1, Ordering::Relaxed);
    }

    /// Opens or resumes the session; false when the connection must end
    /// (the reply, if any, was written).
    async fn handshake(&mut self, r: &ConnectRequest) -> Result<bool, String> {
        let tick = self.shared.config.tick_ms;
        let timeout = r.time_out.clamp(2 * tick, 20 * tick);
        if self.shared.is_read_only() {
            if r.read_only != Some(true) {
                // As ZooKeeper: only clients that can live read-only are
                // served; the others try another server.
                return Err("this node knows no leader (read-only mode) and the client \
                            did not ask for a read-only session"
                    .into());
            }
            return self.read_only_session(r, timeout).await;
        }
        let node = Arc::clone(&self.shared.node);
        let (session, password, timeout) = if r.session_id == 0 {
            let id = node.fresh_id();
            let mut password = [0u8; 16];
            getrandom::getrandom(&mut password).map_err(|e| format!("no randomness: {e}"))?;
            let open = ZkWrite {
                time_ms: wall_ms(),
                ops: vec![ZkOp {
                    op: Some(ZkOpKind::OpenSession(ZkOpenSession {
                        id,
                        timeout_ms: timeout,
                        password: Bytes::copy_from_slice(&password),
                    })),
                }],
                ..ZkWrite::default()
            };
            match node.write(Op::Zk(open)).await {
                Ok(o) if matches!(o.result, Some(OutcomeResult::Zk(_))) => {}
                Ok(o) => return Err(format!("session not opened: {:?}", o.result)),
                Err(e) => return Err(format!("session not opened: {e}")),
            }
            (id, Bytes::copy_from_slice(&password), timeout)
        } else {
            // See every session opened or closed before this request.
            self.barrier().await?;
            let id = r.session_id;
            let found = node
                .zk_query(move |kv| kv.zk().session(id).cloned())
                .await
                .map_err(|e| format!("session lookup failed: {e}"))?;
            match found {
                Some(s) if s.password == r.passwd => {
                    if node.lease_keep_alive(id).await.ok().flatten().is_none() {
                        return self.expired().await;
                    }
                    (id, s.password, s.timeout_ms)
                }
                _ => return self.expired().await,
            }
        };
        self.connected(r, session, password, timeout, false).await
    }

    /// Ends a handshake that found its session: refuses a client that saw
    /// more than this node has (ZooKeeper's rule: it must try another
    /// server), else takes the session on and answers the ConnectRequest.
    async fn connected(
        &mut self,
        r: &ConnectRequest,
        session: i64,
        password: Bytes,
        timeout: i32,
        read_only: bool,
    ) -> Result<bool, String> {
        let revision = self.shared.node.status().revision;
        if r.last_zxid_seen > revision {
            return Err(format!(
                "client has seen zxid {:#x}, this node only {revision:#x}",
                r.last_zxid_seen
            ));
        }
        self.read_only = read_only;
        self.session = session;
        self.timeout_ms = timeout;
        self.zxid = revision;
        self.renewed = Instant::now();
        let frame = encode_connect_response(&ConnectResponse {
            protocol_version: 0,
            time_out: timeout,
            session_id: session,
            passwd: password,
            read_only,
        });
        self.send(&frame).await?;
        Ok(true)
    }

    /// Opens a read-only session (ZooKeeper's read-only mode): a new one
    /// is this node's alone, never replicated; an existing one is resumed
    /// if this node's state holds it with the client's password. Either
    /// way nothing is written and the lease is not renewed.
    async fn read_only_session(
        &mut self,
        r: &ConnectRequest,
        timeout: i32,
    ) -> Result<bool, String> {
        let node = Arc::clone(&self.shared.node);
        let (session, password) = if r.session_id == 0 {
            let mut password = [0u8; 16];
            getrandom::getrandom(&mut password).map_err(|e| format!("no randomness: {e}"))?;
            (node.fresh_id(), Bytes::copy_from_slice(&password))
        } else {
            let id = r.session_id;
            let found = node
                .zk_query(move |kv| kv.zk().session(id).cloned())
                .await
                .map_err(|e| format!("session lookup failed: {e}"))?;
            match found {
                Some(s) if s.password == r.passwd => (id, s.password),
                _ => return self.expired().await,
            }
        };
        self.connected(r, session, password, timeout, true).await
    }

    /// Tells the client its session is gone, as ZooKeeper does: a
    /// handshake answer with timeout 0.
    async fn expired(&mut self) -> Result<bool, String> {
        let frame = encode_connect_response(&ConnectResponse {
            protocol_version: 0,
            time_out: 0,
            session_id: 0,
            passwd: Bytes::from_static(&[0u8; 16]),
            read_only: false,
        });
        let _ = self.send(&frame).await;
        Ok(false)
    }

    /// Waits until this node applied every write committed before now.
    async fn barrier(&self) -> Result<(), String> {
        let probe = RangeRequest {
            key: Bytes::from_static(b"\0"),
            limit: 1,
            count_only: true,
            ..RangeRequest::default()
        };
        self.shared
            .node
            .range(probe, false)
            .await
            .map(|_| ())
            .map_err(|e| format!("sync failed: {e}"))
    }

    /// Keeps the session's lease alive: at most every third of its
    /// timeout. False when the session is gone.
    async fn renew(&mut self) -> bool {
        if self.read_only {
            // No leader to renew with: the session lives on this node's
            // connection alone.
            return true;
        }
        let every = Duration::from_millis((self.timeout_ms / 3).max(1) as u64);
        if self.renewed.elapsed() < every {
            return true;
        }
        self.renewed = Instant::now();
        match self.shared.node.lease_keep_alive(self.session).await {
            Ok(Some(_)) => true,
            Ok(None) => false,
            // Unknown (no leader): the client's next ping retries.
            Err(_) => true,
        }
    }

    /// Answers one request frame: the reply frame and, when the
    /// connection must close, why.
    /// Answers one request frame: the encoded reply, a reason to close
    /// after it, and the request's opcode and result code (for metrics).
    async fn request(
        &mut self,
        frame: &[u8],
    ) -> Result<(Vec<u8>, Option<&'static str>, i32, i32), String> {
        let mut r = Reader::new(frame);
        let header = RequestHeader::read(&mut r).map_err(decode_error)?;
        if !self.renew().await {
            return Err("session expired".into());
        }
        let next = match proto::decode_request(header.op, r.rest()) {
            Ok(request) => self.answer(request).await?,
            Err(JuteError::Unimplemented(_)) => Next::Reply(err::UNIMPLEMENTED, Response::Empty),
            Err(e) => return Err(decode_error(e)),
        };
        let (code, response, close) = match next {
            Next::Reply(code, response) => (code, response, None),
            Next::ReplyAndClose(code, response, why) => (code, response, Some(why)),
        };
        let reply = ReplyHeader {
            xid: header.xid,
            zxid: self.zxid,
            err: code,
        };
        Ok((encode_reply(&reply, &response), close, header.op, code))
    }

    fn zk_auth(&self) -> Vec<ZkId> {
        self.auth.clone()
    }

    async fn answer(&mut self, request: Request) -> Result<Next, String> {
        if self.read_only {
            match &request {
                Request::Create { .. }
                | Request::CreateTtl { .. }
                | Request::Delete { .. }
                | Request::SetData { .. }
                | Request::SetAcl { .. }
                | Request::Check { .. }
                | Request::Multi(_)
                | Request::Sync { .. } => {
                    return Ok(Next::Reply(err::NOT_READ_ONLY, Response::Empty));
                }
                Request::CloseSession => {
                    return Ok(Next::ReplyAndClose(
                        err::OK,
                        Response::Empty,
                        "read-only session closed by the client",
                    ));
                }
                _ => {}
            }
        }
        Ok(match request {
            Request::Ping => Next::Reply(err::OK, Response::Empty),
            Request::Create {
                kind,
                path,
                data,
                acl,
                flags,
            } => self.create(kind, path, data, acl, flags, 0).await,
            Request::CreateTtl {
                path,
                data,
                acl,
                flags,
                ttl,
            } => {
                if !self.shared.config.extended_types {
                    Next::Reply(err::UNIMPLEMENTED, Response::Empty)
                } else {
                    self.create(op::CREATE_TTL, path, data, acl, flags, ttl)
                        .await
                }
            }
            Request::Delete { path, version } => {
                let op = ZkOpKind::Delete(ZkDelete { path, version });
                self.write_one(op, |_| Response::Empty).await
            }
            Request::SetData {
                path,
                data,
                version,
            } => {
                let op = ZkOpKind::SetData(ZkSetData {
                    path,
                    data,
                    version,
                });
                self.write_one(op, |r| Response::Stat(stat_of(r))).await
            }
            Request::SetAcl { path, acl, version } => {
                let op = ZkOpKind::SetAcl(ZkSetAcl {
                    path,
                    acl: acl.iter().map(to_zk_acl).collect(),
                    version,
                });
                self.write_one(op, |r| Response::Stat(stat_of(r))).await
            }
            Request::Check { path, version } => {
                let op = ZkOpKind::Check(ZkCheck { path, version });
                self.write_one(op, |_| Response::Empty).await
            }
            Request::Multi(ops) => self.multi(ops).await,
            Request::MultiRead(ops) => self.multi_read(ops).await?,
            read @ (Request::Exists { .. }
            | Request::GetData { .. }
            | Request::GetChildren { .. }
            | Request::GetChildren2 { .. }
            | Request::GetAcl { .. }
            | Request::GetAllChildrenNumber { .. }) => {
                let job = self.read_job(read).expect("a plain read");
                let mut answers = self.run_reads(vec![job]).await?;
                answers.pop().expect("one answer per read")
            }
            Request::GetEphemerals { prefix } => {
                let session = self.session;
                let (list, zxid) = self
                    .shared
                    .node
                    .zk_query(move |kv| {
                        let list: Vec<String> = kv
                            .zk()
                            .ephemerals(session)
                            .filter(|p| p.starts_with(&prefix))
                            .cloned()
                            .collect();
                        (list, kv.revision())
                    })
                    .await
                    .map_err(|e| format!("read failed: {e}"))?;
                self.zxid = self.zxid.max(zxid);
                Next::Reply(err::OK, Response::Ephemerals(list))
            }
            Request::Sync { path } => match self.barrier().await {
                Ok(()) => {
                    self.zxid = self.zxid.max(self.shared.node.status().revision);
                    Next::Reply(err::OK, Response::Sync { path })
                }
                Err(_) => Next::ReplyAndClose(
                    err::CONNECTION_LOSS,
                    Response::Empty,
                    "sync could not reach a leader",
                ),
            },
            Request::Auth { scheme, auth, .. } => self.authenticate(&scheme, &auth),
            Request::SetWatches {
                relative_zxid,
                data,
                exist,
                child,
            } => {
                self.set_watches(relative_zxid, data, exist, child, Vec::new(), Vec::new())
                    .await?
            }
            Request::SetWatches2 {
                relative_zxid,
                data,
                exist,
                child,
                persistent,
                persistent_recursive,
            } => {
                self.set_watches(
                    relative_zxid,
                    data,
                    exist,
                    child,
                    persistent,
                    persistent_recursive,
                )
                .await?
            }
            Request::AddWatch { path, mode } => {
                if path::validate(&path).is_err() {
                    return Ok(Next::Reply(err::BAD_ARGUMENTS, Response::Empty));
                }
                let kind = if mode == proto::add_watch_mode::PERSISTENT_RECURSIVE {
                    Kind::Recursive
                } else {
                    Kind::Persistent
                };
                self.shared.watches.add(self.conn, kind, &path);
                Next::Reply(err::OK, Response::AddWatch)
            }
            Request::RemoveWatches { path, kind } => self.remove_watches(&path, kind, false),
            Request::CheckWatches { path, kind } => self.remove_watches(&path, kind, true),
            Request::WhoAmI => Next::Reply(
                err::OK,
                Response::WhoAmI(
                    self.auth
                        .iter()
                        .filter(|a| a.scheme != acl::SUPER)
                        .map(|a| ClientInfo {
                            auth_scheme: a.scheme.clone(),
                            // ZooKeeper's getUserName: a digest id's user
                            // part, never its hash.
                            user: match a.scheme.as_str() {
                                "digest" => a.id.split(':').next().unwrap_or("").to_string(),
                                _ => a.id.clone(),
                            },
                        })
                        .collect(),
                ),
            ),
            Request::CloseSession => {
                let close = ZkWrite {
                    time_ms: wall_ms(),
                    ops: vec![ZkOp {
                        op: Some(ZkOpKind::CloseSession(ZkCloseSession { id: self.session })),
                    }],
                    ..ZkWrite::default()
                };
                let _ = self.shared.node.write(Op::Zk(close)).await;
                self.zxid = self.zxid.max(self.shared.node.status().revision);
                Next::ReplyAndClose(err::OK, Response::Empty, "session closed by the client")
            }
        })
    }

    /// The work of a plain read (one that changes nothing and needs no
    /// round trip beyond this node), as a closure for the core thread;
    /// `None` for any other request. Reads are local, as in ZooKeeper.
    fn read_job(&self, request: Request) -> Option<ReadJob> {
        let (conn, watches, auth) = (self.conn, Arc::clone(&self.shared.watches), self.zk_auth());
        let (p, f): (String, ReadFn) = match request {
            Request::Exists { path, watch } => (
                path,
                Box::new(move |kv, p| match kv.zk().get(p) {
                    Some(n) => {
                        if watch {
                            watches.add(conn, Kind::Data, p);
                        }
                        Ok(Response::Stat(stat(kv.zk(), n)))
                    }
                    None => {
                        if watch {
                            watches.add(conn, Kind::Exist, p);
                        }
                        Err(err::NO_NODE)
                    }
                }),
            ),
            Request::GetData { path, watch } => (
                path,
                Box::new(move |kv, p| {
                    let n = readable(kv.zk(), p, &auth)?;
                    if watch {
                        watches.add(conn, Kind::Data, p);
                    }
                    Ok(Response::GetData {
                        data: n.data.clone(),
                        stat: stat(kv.zk(), n),
                    })
                }),
            ),
            Request::GetChildren { path, watch } => {
                (path, children_fn(conn, watches, auth, watch, false))
            }
            Request::GetChildren2 { path, watch } => {
                (path, children_fn(conn, watches, auth, watch, true))
            }
            Request::GetAcl { path } => (
                path,
                Box::new(move |kv, p| {
                    let n = kv.zk().get(p).ok_or(err::NO_NODE)?;
                    if !acl::allowed(&n.acl, acl::perms::READ | acl::perms::ADMIN, &auth) {
                        return Err(err::NO_AUTH);
                    }
                    Ok(Response::GetAcl {
                        acl: n.acl.iter().map(from_zk_acl).collect(),
                        stat: stat(kv.zk(), n),
                    })
                }),
            ),
            Request::GetAllChildrenNumber { path } => (
                path,
                Box::new(move |kv, p| {
                    readable(kv.zk(), p, &auth)?;
                    Ok(Response::AllChildrenNumber(kv.zk().descendants(p) as i32))
                }),
            ),
            _ => return None,
        };
        Some(if path::validate(&p).is_err() {
            ReadJob::Refused(err::BAD_ARGUMENTS)
        } else {
            ReadJob::Run(p, f)
        })
    }

    /// Runs reads in one visit to the core thread, in order, at one state
    /// of the tree (after the changes they show were handed to the watch
    /// registry); their answers in the same order.
    async fn run_reads(&mut self, jobs: Vec<ReadJob>) -> Result<Vec<Next>, String> {
        let (answers, zxid) = self
            .shared
            .node
            .zk_query(move |kv| {
                let answers: Vec<Result<Response, i32>> = jobs
                    .into_iter()
                    .map(|job| match job {
                        ReadJob::Refused(code) => Err(code),
                        ReadJob::Run(p, f) => f(kv, &p),
                    })
                    .collect();
                (answers, kv.revision())
            })
            .await
            .map_err(|e| format!("read failed: {e}"))?;
        self.zxid = self.zxid.max(zxid);
        Ok(answers
            .into_iter()
            .map(|answer| match answer {
                Ok(response) => Next::Reply(err::OK, response),
                Err(code) => Next::Reply(code, Response::Empty),
            })
            .collect())
    }

    #[allow(clippy::too_many_arguments)]
    async fn create(
        &mut self,
        opcode: i32,
        path: String,
        data: Bytes,
        acl: Vec<Acl>,
        flags: i32,
        ttl: i64,
    ) -> Next {
        let create = create_op(opcode, path, data, &acl, flags, ttl);
        let two = opcode != op::CREATE;
        self.write_one(create, move |r| {
            if two {
                Response::Create2 {
                    path: r.path.clone(),
                    stat: stat_of(r),
                }
            } else {
                Response::Create {
                    path: r.path.clone(),
                }
            }
        })
        .await
    }

    fn zk_write(&self, multi: bool, ops: Vec<ZkOpKind>) -> ZkWrite {
        ZkWrite {
            time_ms: wall_ms(),
            session: self.session,
            auth: self.zk_auth(),
            multi,
            ops: ops.into_iter().map(|op| ZkOp { op: Some(op) }).collect(),
        }
    }

    /// Proposes a write; its results, or the reply that ends the
    /// connection when the cluster could not take it.
    async fn propose(&mut self, w: ZkWrite) -> Result<Vec<ZkResult>, Next> {
        let lost = |why| Next::ReplyAndClose(err::CONNECTION_LOSS, Response::Empty, why);
        match self.shared.node.write(Op::Zk(w)).await {
            Ok(outcome) => match outcome.result {
                Some(OutcomeResult::Zk(z)) => {
                    for r in &z.results {
                        if let Some(s) = &r.stat {
                            self.zxid = self.zxid.max(s.mzxid).max(s.pzxid);
                        }
                    }
                    self.zxid = self.zxid.max(self.shared.node.status().revision);
                    Ok(z.results)
                }
                _ => Err(lost(
                    "the write was refused (no leader, overloaded or timed out)",
                )),
            },
            Err(_) => Err(lost("the write could not be replicated")),
        }
    }

    async fn write_one(&mut self, op: ZkOpKind, reply: impl FnOnce(&ZkResult) -> Response) -> Next {
        let w = self.zk_write(false, vec![op]);
        match self.propose(w).await {
            Ok(results) => match results.first() {
                Some(r) if r.err == err::OK => Next::Reply(err::OK, reply(r)),
                Some(r) => Next::Reply(r.err, Response::Empty),
                None => Next::Reply(err::SYSTEM_ERROR, Response::Empty),
            },
            Err(next) => next,
        }
    }

    async fn multi(&mut self, ops: Vec<MultiOp>) -> Next {
        let mut kinds = Vec::with_capacity(ops.len());
        let mut zk_ops = Vec::with_capacity(ops.len());
        for o in ops {
            let (kind, op) = match o {
                MultiOp::Create {
                    kind,
                    path,
                    data,
                    acl,
                    flags,
                } => (kind, create_op(kind, path, data, &acl, flags, 0)),
                MultiOp::CreateTtl {
                    path,
                    data,
                    acl,
                    flags,
                    ttl,
                } => {
                    if !self.shared.config.extended_types {
                        return Next::Reply(err::UNIMPLEMENTED, Response::Empty);
                    }
                    (
                        op::CREATE_TTL,
                        create_op(op::CREATE_TTL, path, data, &acl, flags, ttl),
                    )
                }
                MultiOp::Delete { path, version } => {
                    (op::DELETE, ZkOpKind::Delete(ZkDelete { path, version }))
                }
                MultiOp::SetData {
                    path,
                    data,
                    version,
                } => (
                    op::SET_DATA,
                    ZkOpKind::SetData(ZkSetData {
                        path,
                        data,
                        version,
                    }),
                ),
                MultiOp::Check { path, version } => {
                    (op::CHECK, ZkOpKind::Check(ZkCheck { path, version }))
                }
                _ => return Next::Reply(err::BAD_ARGUMENTS, Response::Empty),
            };
            kinds.push(kind);
            zk_ops.push(op);
        }
        if zk_ops.is_empty() {
            return Next::Reply(err::OK, Response::Multi(Vec::new()));
        }
        let w = self.zk_write(true, zk_ops);
        let results = match self.propose(w).await {
            Ok(results) => results,
            Err(next) => return next,
        };
        let failed = results.iter().any(|r| r.err != err::OK);
        let out = results
            .iter()
            .zip(&kinds)
            .map(|(r, kind)| {
                if failed {
                    return OpResult::Error(r.err);
                }
                match *kind {
                    op::CREATE => OpResult::Create {
                        path: r.path.clone(),
                    },
                    op::CREATE2 | op::CREATE_CONTAINER | op::CREATE_TTL => OpResult::Create2 {
                        path: r.path.clone(),
                        stat: stat_of(r),
                    },
                    op::DELETE => OpResult::Delete,
                    op::SET_DATA => OpResult::SetData { stat: stat_of(r) },
                    _ => OpResult::Check,
                }
            })
            .collect();
        Next::Reply(err::OK, Response::Multi(out))
    }

    /// ZooKeeper's multiRead: each read answered on its own (an error is
    /// that op's result, not the whole request's), all at one state.
    async fn multi_read(&mut self, ops: Vec<MultiOp>) -> Result<Next, String> {
        let auth = self.zk_auth();
        let (results, zxid) = self
            .shared
            .node
            .zk_query(move |kv| {
                let results: Vec<OpResult> = ops
                    .iter()
                    .map(|o| match o {
                        MultiOp::GetData { path, .. } => {
                            match path::validate(path)
                                .map_err(|_| err::BAD_ARGUMENTS)
                                .and_then(|_| readable(kv.zk(), path, &auth))
                            {
                                Ok(n) => OpResult::GetData {
                                    data: n.data.clone(),
                                    stat: stat(kv.zk(), n),
                                },
                                Err(e) => OpResult::Error(e),
                            }
                        }
                        MultiOp::GetChildren { path, .. } => {
                            match path::validate(path)
                                .map_err(|_| err::BAD_ARGUMENTS)
                                .and_then(|_| readable(kv.zk(), path, &auth))
                            {
                                Ok(_) => OpResult::GetChildren {
                                    children: kv
                                        .zk()
                                        .children(path)
                                        .into_iter()
                                        .flatten()
                                        .cloned()
                                        .collect(),
                                },
                                Err(e) => OpResult::Error(e),
                            }
                        }
                        _ => OpResult::Error(err::BAD_ARGUMENTS),
                    })
                    .collect();
                (results, kv.revision())
            })
            .await
            .map_err(|e| format!("read failed: {e}"))?;
        self.zxid = self.zxid.max(zxid);
        Ok(Next::Reply(err::OK, Response::Multi(results)))
    }

    fn authenticate(&mut self, scheme: &str, credentials: &[u8]) -> Next {
        let id = match (
            scheme,
            std::str::from_utf8(credentials)
                .ok()
                .and_then(auth::digest_id),
        ) {
            ("digest", Some(id)) => id,
            _ => {
                return Next::ReplyAndClose(
                    err::AUTH_FAILED,
                    Response::Empty,
                    "authentication failed",
                )
            }
        };
        if self.shared.config.super_digest.as_deref() == Some(id.as_str()) {
            self.auth.push(ZkId {
                scheme: acl::SUPER.into(),
                id: id.clone(),
            });
        }
        let id = ZkId {
            scheme: "digest".into(),
            id,
        };
        if !self.auth.contains(&id) {
            self.auth.push(id);
        }
        Next::Reply(err::OK, Response::Empty)
    }

    /// Re-registers a reconnecting client's watches: any change newer
    /// than `rel` fires at once (queued before the reply), the rest wait.
    async fn set_watches(
        &mut self,
        rel: i64,
        data: Vec<String>,
        exist: Vec<String>,
        child: Vec<String>,
        persistent: Vec<String>,
        recursive: Vec<String>,
    ) -> Result<Next, String> {
        let (conn, watches) = (self.conn, Arc::clone(&self.shared.watches));
        let zxid = self
            .shared
            .node
            .zk_query(move |kv| {
                let tree = kv.zk();
                let fire = |kind: i32, p: &str, zxid: i64| {
                    watches.notify(
                        conn,
                        Notification {
                            kind,
                            path: p.to_string(),
                            zxid,
                        },
                    )
                };
                let now = kv.revision();
                for p in data.iter().filter(|p| path::validate(p).is_ok()) {
                    match tree.get(p) {
                        None => fire(event::DELETED, p, now),
                        Some(n) if n.mzxid > rel => fire(event::DATA_CHANGED, p, n.mzxid),
                        Some(_) => watches.add(conn, Kind::Data, p),
                    }
                }
                for p in exist.iter().filter(|p| path::validate(p).is_ok()) {
                    match tree.get(p) {
                        Some(n) => fire(event::CREATED, p, n.czxid),
                        None => watches.add(conn, Kind::Exist, p),
                    }
                }
                for p in child.iter().filter(|p| path::validate(p).is_ok()) {
                    match tree.get(p) {
                        None => fire(event::DELETED, p, now),
                        Some(n) if n.pzxid > rel => fire(event::CHILDREN_CHANGED, p, n.pzxid),
                        Some(_) => watches.add(conn, Kind::Child, p),
                    }
                }
                for p in persistent.iter().filter(|p| path::validate(p).is_ok()) {
                    watches.add(conn, Kind::Persistent, p);
                }
                for p in recursive.iter().filter(|p| path::validate(p).is_ok()) {
                    watches.add(conn, Kind::Recursive, p);
                }
                now
            })
            .await
            .map_err(|e| format!("setWatches failed: {e}"))?;
        self.zxid = self.zxid.max(zxid);
        Ok(Next::Reply(err::OK, Response::Empty))
    }

    fn remove_watches(&mut self, p: &str, kind: i32, dry_run: bool) -> Next {
        let kinds: &[Kind] = match kind {
            proto::watcher_type::CHILDREN => &[Kind::Child],
            proto::watcher_type::DATA => &[Kind::Data, Kind::Exist],
            proto::watcher_type::PERSISTENT => &[Kind::Persistent],
            proto::watcher_type::PERSISTENT_RECURSIVE => &[Kind::Recursive],
            _ => &[
                Kind::Child,
                Kind::Data,
                Kind::Exist,
                Kind::Persistent,
                Kind::Recursive,
            ],
        };
        if self.shared.watches.remove(self.conn, kinds, p, dry_run) {
            Next::Reply(err::OK, Response::Empty)
        } else {
            Next::Reply(err::NO_WATCHER, Response::Empty)
        }
    }
}

/// A create op as the state machine takes it. A TTL mode outside
/// `createTTL`, or a TTL op without a TTL mode, gets a mode the tree
/// refuses (BADARGUMENTS), as ZooKeeper refuses it.
/// A plain read's work on the core thread: the node's store and the
/// (validated) path in, the answer or ZooKeeper's error code out.
type ReadFn = Box<dyn FnOnce(&KvStore, &str) -> Result<Response, i32> + Send>;

/// One plain read, ready for [`Conn::run_reads`].
enum ReadJob {
    /// Refused before reading (a malformed path).
    Refused(i32),
    /// Read at the path.
    Run(String, ReadFn),
}

/// getChildren (`two`: getChildren2, with the parent's stat).
fn children_fn(
    conn: ConnId,
    watches: Arc<crate::watches::Watches>,
    auth: Vec<ZkId>,
    watch: bool,
    two: bool,
) -> ReadFn {
    Box::new(move |kv, p| {
        let n = readable(kv.zk(), p, &auth)?;
        if watch {
            watches.add(conn, Kind::Child, p);
        }
        let children: Vec<String> = kv.zk().children(p).into_iter().flatten().cloned().collect();
        Ok(if two {
            Response::GetChildren2 {
                children,
                stat: stat(kv.zk(), n),
            }
        } else {
            Response::GetChildren { children }
        })
    })
}

/// The header and body of a frame that is a plain read (see
/// [`Conn::read_job`]), decoded; `None` for anything else, malformed
/// frames included (they are answered, or refused, one at a time).
fn decode_read(frame: &[u8]) -> Option<(RequestHeader, Request)> {
    let mut r = Reader::new(frame);
    let header = RequestHeader::read(&mut r).ok()?;
    if !matches!(
        header.op,
        op::EXISTS
            | op::GET_DATA
            | op::GET_ACL
            | op::GET_CHILDREN
            | op::GET_CHILDREN2
            | op::GET_ALL_CHILDREN_NUMBER
    ) {
        return None;
    }
    let request = proto::decode_request(header.op, r.rest()).ok()?;
    Some((header, request))
}

fn create_op(
    opcode: i32,
    path: String,
    data: Bytes,
    acl: &[Acl],
    flags: i32,
    ttl: i64,
) -> ZkOpKind {
    let mut mode = if opcode == op::CREATE_CONTAINER {
        mode::CONTAINER
    } else {
        flags
    };
    let ttl_mode = matches!(
        mode,
        mode::PERSISTENT_WITH_TTL | mode::PERSISTENT_SEQUENTIAL_WITH_TTL
    );
    if ttl_mode != (opcode == op::CREATE_TTL) {
        mode = -1;
    }
    ZkOpKind::Create(ZkCreate {
        path,
        data,
        acl: acl.iter().map(to_zk_acl).collect(),
        mode,
        ttl_ms: ttl,
    })
}

/// The node at `p` if `auth` may read it.
fn readable<'a>(tree: &'a ZkTree, p: &str, auth: &[ZkId]) -> Result<&'a ZNode, i32> {
    let n = tree.get(p).ok_or(err::NO_NODE)?;
    if !acl::allowed(&n.acl, acl::perms::READ, auth) {
        return Err(err::NO_AUTH);
    }
    Ok(n)
}

fn stat(tree: &ZkTree, n: &ZNode) -> Stat {
    let children = tree.children(&n.path).map_or(0, |c| c.len());
    to_stat(n, n.data.len() as i32, children as i32)
}

fn stat_of(r: &ZkResult) -> Stat {
    match &r.stat {
        Some(n) => to_stat(n, r.data_length, r.num_children),
        None => Stat::default(),
    }
}

fn to_stat(n: &ZNode, data_length: i32, num_children: i32) -> Stat {
    Stat {
        czxid: n.czxid,
        mzxid: n.mzxid,
        ctime: n.ctime,
        mtime: n.mtime,
        version: n.version,
        cversion: n.cversion,
        aversion: n.aversion,
        ephemeral_owner: n.ephemeral_owner,
        data_length,
        num_children,
        pzxid: n.pzxid,
    }
}

fn to_zk_acl(a: &Acl) -> ZkAcl {
    ZkAcl {
        perms: a.perms,
        id: Some(ZkId {
            scheme: a.id.scheme.clone(),
            id: a.id.id.clone(),
        }),
    }
}

fn from_zk_acl(a: &ZkAcl) -> Acl {
    let id = a.id.clone().unwrap_or_default();
    Acl {
        perms: a.perms,
        id: Id {
            scheme: id.scheme,
            id: id.id,
        },
    }
}
