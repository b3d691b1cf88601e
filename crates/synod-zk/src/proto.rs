//! ZooKeeper 3.8 client protocol messages: the records of `zookeeper.jute`,
//! requests as the server decodes them, and replies as it encodes them.
//!
//! Field orders follow `zookeeper.jute`; the multi encodings follow
//! `MultiOperationRecord` and `MultiResponse` byte for byte. Decoders accept
//! anything a stock client sends (including trailing bytes, which ZooKeeper
//! ignores) and turn every malformed input into a [`JuteError`].
//!
//! Frames on the wire: the first client frame is a [`ConnectRequest`]; every
//! later one is a [`RequestHeader`] followed by the body for its opcode
//! ([`decode_request`]). The server answers the connect with
//! [`encode_connect_response`], requests with [`encode_reply`] (replies must
//! go out in request order: the Java client drops the connection on an
//! out-of-order xid), and watches with [`encode_event`].

use bytes::Bytes;

use crate::jute::{JuteError, Reader, Result, Writer};

/// ZooKeeper's name of an opcode (its `OpCode` constant without the
/// prefix), for metrics labels; unknown codes are `unknown`.
pub fn op_name(code: i32) -> &'static str {
    match code {
        op::CREATE => "create",
        op::DELETE => "delete",
        op::EXISTS => "exists",
        op::GET_DATA => "getData",
        op::SET_DATA => "setData",
        op::GET_ACL => "getACL",
        op::SET_ACL => "setACL",
        op::GET_CHILDREN => "getChildren",
        op::SYNC => "sync",
        op::PING => "ping",
        op::GET_CHILDREN2 => "getChildren2",
        op::CHECK => "check",
        op::MULTI => "multi",
        op::CREATE2 => "create2",
        op::RECONFIG => "reconfig",
        op::CHECK_WATCHES => "checkWatches",
        op::REMOVE_WATCHES => "removeWatches",
        op::CREATE_CONTAINER => "createContainer",
        op::DELETE_CONTAINER => "deleteContainer",
        op::CREATE_TTL => "createTTL",
        op::MULTI_READ => "multiRead",
        op::AUTH => "auth",
        op::SET_WATCHES => "setWatches",
        op::SASL => "sasl",
        op::GET_EPHEMERALS => "getEphemerals",
        op::GET_ALL_CHILDREN_NUMBER => "getAllChildrenNumber",
        op::SET_WATCHES2 => "setWatches2",
        op::ADD_WATCH => "addWatch",
        op::WHO_AM_I => "whoAmI",
        op::CREATE_SESSION => "createSession",
        op::CLOSE_SESSION => "closeSession",
        _ => "unknown",
    }
}

/// ZooKeeper's name of a reply's error code (`KeeperException.Code`),
/// for metrics labels.
pub fn err_name(code: i32) -> &'static str {
    match code {
        err::OK => "OK",
        err::SYSTEM_ERROR => "SYSTEMERROR",
        err::RUNTIME_INCONSISTENCY => "RUNTIMEINCONSISTENCY",
        err::DATA_INCONSISTENCY => "DATAINCONSISTENCY",
        err::CONNECTION_LOSS => "CONNECTIONLOSS",
        err::MARSHALLING_ERROR => "MARSHALLINGERROR",
        err::UNIMPLEMENTED => "UNIMPLEMENTED",
        err::OPERATION_TIMEOUT => "OPERATIONTIMEOUT",
        err::BAD_ARGUMENTS => "BADARGUMENTS",
        err::UNKNOWN_SESSION => "UNKNOWNSESSION",
        err::API_ERROR => "APIERROR",
        err::NO_NODE => "NONODE",
        err::NO_AUTH => "NOAUTH",
        err::BAD_VERSION => "BADVERSION",
        err::NO_CHILDREN_FOR_EPHEMERALS => "NOCHILDRENFOREPHEMERALS",
        err::NODE_EXISTS => "NODEEXISTS",
        err::NOT_EMPTY => "NOTEMPTY",
        err::SESSION_EXPIRED => "SESSIONEXPIRED",
        err::INVALID_ACL => "INVALIDACL",
        err::AUTH_FAILED => "AUTHFAILED",
        err::SESSION_MOVED => "SESSIONMOVED",
        err::NOT_READ_ONLY => "NOTREADONLY",
        err::NO_WATCHER => "NOWATCHER",
        _ => "OTHER",
    }
}

/// Request opcodes (`ZooDefs.OpCode`), carried in [`RequestHeader::op`] and
/// [`MultiHeader::kind`].
pub mod op {
    /// Reserved; never sent by clients.
    pub const NOTIFICATION: i32 = 0;
    /// Create a znode; replies with its path only.
    pub const CREATE: i32 = 1;
    /// Delete a znode.
    pub const DELETE: i32 = 2;
    /// Stat a znode, optionally leaving an exists watch.
    pub const EXISTS: i32 = 3;
    /// Read a znode's data and stat.
    pub const GET_DATA: i32 = 4;
    /// Replace a znode's data.
    pub const SET_DATA: i32 = 5;
    /// Read a znode's ACL.
    pub const GET_ACL: i32 = 6;
    /// Replace a znode's ACL.
    pub const SET_ACL: i32 = 7;
    /// List children (no stat).
    pub const GET_CHILDREN: i32 = 8;
    /// Wait until this server has caught up with the leader.
    pub const SYNC: i32 = 9;
    /// Keep-alive (sent with [`super::xid::PING`]).
    pub const PING: i32 = 11;
    /// List children with the parent's stat.
    pub const GET_CHILDREN2: i32 = 12;
    /// Version check, on its own or inside a multi.
    pub const CHECK: i32 = 13;
    /// Atomic multi-operation transaction.
    pub const MULTI: i32 = 14;
    /// Create a znode; replies with path and stat.
    pub const CREATE2: i32 = 15;
    /// Dynamic reconfiguration (not served).
    pub const RECONFIG: i32 = 16;
    /// Ask whether a watch is registered.
    pub const CHECK_WATCHES: i32 = 17;
    /// Remove registered watches.
    pub const REMOVE_WATCHES: i32 = 18;
    /// Create a container znode; replies like [`CREATE2`].
    pub const CREATE_CONTAINER: i32 = 19;
    /// Server-internal container cleanup (never sent by clients).
    pub const DELETE_CONTAINER: i32 = 20;
    /// Create a znode with a TTL; replies like [`CREATE2`].
    pub const CREATE_TTL: i32 = 21;
    /// Several reads in one round trip (not atomic).
    pub const MULTI_READ: i32 = 22;
    /// Add authentication (sent with [`super::xid::AUTH`]).
    pub const AUTH: i32 = 100;
    /// Re-register watches after reconnecting (xid [`super::xid::SET_WATCHES`]).
    pub const SET_WATCHES: i32 = 101;
    /// SASL token exchange (not served).
    pub const SASL: i32 = 102;
    /// List the session's ephemeral znodes.
    pub const GET_EPHEMERALS: i32 = 103;
    /// Count all descendants of a znode.
    pub const GET_ALL_CHILDREN_NUMBER: i32 = 104;
    /// [`SET_WATCHES`] including persistent watches.
    pub const SET_WATCHES2: i32 = 105;
    /// Add a persistent (optionally recursive) watch.
    pub const ADD_WATCH: i32 = 106;
    /// List the session's authenticated identities.
    pub const WHO_AM_I: i32 = 107;
    /// Server-internal session creation (the connect handshake is separate).
    pub const CREATE_SESSION: i32 = -10;
    /// Close the session and its ephemerals.
    pub const CLOSE_SESSION: i32 = -11;
    /// Error marker, used as the type of failed operations in multi replies.
    pub const ERROR: i32 = -1;
}

/// Reserved xids: replies with these are routed by the client outside its
/// queue of pending requests.
pub mod xid {
    /// Watch notifications (see [`super::encode_event`]).
    pub const NOTIFICATION: i32 = -1;
    /// Ping requests and their replies.
    pub const PING: i32 = -2;
    /// Auth requests and their replies (err `AUTH_FAILED` ends the session).
    pub const AUTH: i32 = -4;
    /// SetWatches requests sent on reconnect.
    pub const SET_WATCHES: i32 = -8;
}

/// `KeeperException.Code` values, sent in [`ReplyHeader::err`] and multi
/// error results.
pub mod err {
    /// Success.
    pub const OK: i32 = 0;
    /// Generic server failure.
    pub const SYSTEM_ERROR: i32 = -1;
    /// Sent for multi operations after the one that failed.
    pub const RUNTIME_INCONSISTENCY: i32 = -2;
    /// Replicas disagree.
    pub const DATA_INCONSISTENCY: i32 = -3;
    /// Client-side only: the connection dropped.
    pub const CONNECTION_LOSS: i32 = -4;
    /// The request could not be decoded.
    pub const MARSHALLING_ERROR: i32 = -5;
    /// The opcode is not supported.
    pub const UNIMPLEMENTED: i32 = -6;
    /// The operation timed out.
    pub const OPERATION_TIMEOUT: i32 = -7;
    /// Invalid arguments (e.g. bad path or create mode).
    pub const BAD_ARGUMENTS: i32 = -8;
    /// The session id is unknown.
    pub const UNKNOWN_SESSION: i32 = -12;
    /// A reconfiguration lacks a quorum.
    pub const NEW_CONFIG_NO_QUORUM: i32 = -13;
    /// Another reconfiguration is running.
    pub const RECONFIG_IN_PROGRESS: i32 = -14;
    /// Generic API error.
    pub const API_ERROR: i32 = -100;
    /// The znode does not exist.
    pub const NO_NODE: i32 = -101;
    /// The ACL denies the operation.
    pub const NO_AUTH: i32 = -102;
    /// The expected version did not match.
    pub const BAD_VERSION: i32 = -103;
    /// Ephemeral znodes cannot have children.
    pub const NO_CHILDREN_FOR_EPHEMERALS: i32 = -108;
    /// The znode already exists.
    pub const NODE_EXISTS: i32 = -110;
    /// The znode has children.
    pub const NOT_EMPTY: i32 = -111;
    /// The session expired.
    pub const SESSION_EXPIRED: i32 = -112;
    /// Invalid callback.
    pub const INVALID_CALLBACK: i32 = -113;
    /// The ACL is invalid (e.g. empty).
    pub const INVALID_ACL: i32 = -114;
    /// Authentication failed.
    pub const AUTH_FAILED: i32 = -115;
    /// The session moved to another server.
    pub const SESSION_MOVED: i32 = -118;
    /// A write reached a read-only server.
    pub const NOT_READ_ONLY: i32 = -119;
    /// Ephemerals need a global session.
    pub const EPHEMERAL_ON_LOCAL_SESSION: i32 = -120;
    /// The watch to check or remove is not registered.
    pub const NO_WATCHER: i32 = -121;
    /// The request timed out.
    pub const REQUEST_TIMEOUT: i32 = -122;
    /// Reconfiguration is disabled.
    pub const RECONFIG_DISABLED: i32 = -123;
    /// The session was closed because SASL auth is required.
    pub const SESSION_CLOSED_REQUIRE_SASL_AUTH: i32 = -124;
    /// A hard quota was exceeded.
    pub const QUOTA_EXCEEDED: i32 = -125;
    /// The server throttled the request.
    pub const THROTTLED: i32 = -127;
}

/// ACL permission bits (`ZooDefs.Perms`), OR-ed in [`Acl::perms`].
pub mod perms {
    /// Read data and list children.
    pub const READ: i32 = 1;
    /// Set data.
    pub const WRITE: i32 = 2;
    /// Create children.
    pub const CREATE: i32 = 4;
    /// Delete children.
    pub const DELETE: i32 = 8;
    /// Set the ACL.
    pub const ADMIN: i32 = 16;
    /// Everything.
    pub const ALL: i32 = READ | WRITE | CREATE | DELETE | ADMIN;
}

/// `Watcher.Event.EventType` values for [`WatcherEvent::kind`].
pub mod event_type {
    /// Session state change only (no znode).
    pub const NONE: i32 = -1;
    /// A watched znode was created.
    pub const NODE_CREATED: i32 = 1;
    /// A watched znode was deleted.
    pub const NODE_DELETED: i32 = 2;
    /// A watched znode's data changed.
    pub const NODE_DATA_CHANGED: i32 = 3;
    /// A watched znode's children changed.
    pub const NODE_CHILDREN_CHANGED: i32 = 4;
    /// A data watch was removed.
    pub const DATA_WATCH_REMOVED: i32 = 5;
    /// A child watch was removed.
    pub const CHILD_WATCH_REMOVED: i32 = 6;
    /// A persistent watch was removed.
    pub const PERSISTENT_WATCH_REMOVED: i32 = 7;
}

/// `Watcher.Event.KeeperState` values for [`WatcherEvent::state`].
pub mod keeper_state {
    /// Not connected.
    pub const DISCONNECTED: i32 = 0;
    /// Connected; the state every server-sent event carries.
    pub const SYNC_CONNECTED: i32 = 3;
    /// Authentication failed.
    pub const AUTH_FAILED: i32 = 4;
    /// Connected to a read-only server.
    pub const CONNECTED_READ_ONLY: i32 = 5;
    /// SASL authentication succeeded.
    pub const SASL_AUTHENTICATED: i32 = 6;
    /// The session expired.
    pub const EXPIRED: i32 = -112;
    /// The client closed the session.
    pub const CLOSED: i32 = 7;
}

/// `CreateMode` flag values for create requests' `flags`.
pub mod create_mode {
    /// Plain znode.
    pub const PERSISTENT: i32 = 0;
    /// Deleted when the session ends.
    pub const EPHEMERAL: i32 = 1;
    /// Name gets a 10-digit sequence suffix.
    pub const PERSISTENT_SEQUENTIAL: i32 = 2;
    /// Ephemeral with a sequence suffix.
    pub const EPHEMERAL_SEQUENTIAL: i32 = 3;
    /// Deleted once its last child goes.
    pub const CONTAINER: i32 = 4;
    /// Deleted after the TTL when childless.
    pub const PERSISTENT_WITH_TTL: i32 = 5;
    /// TTL znode with a sequence suffix.
    pub const PERSISTENT_SEQUENTIAL_WITH_TTL: i32 = 6;
}

/// `AddWatchMode` values for [`Request::AddWatch`].
pub mod add_watch_mode {
    /// Fires on every change of the znode, without being consumed.
    pub const PERSISTENT: i32 = 0;
    /// Like [`PERSISTENT`], for the whole subtree.
    pub const PERSISTENT_RECURSIVE: i32 = 1;
}

/// `WatcherType` values for [`Request::RemoveWatches`] and
/// [`Request::CheckWatches`].
pub mod watcher_type {
    /// Child watches.
    pub const CHILDREN: i32 = 1;
    /// Data and exists watches.
    pub const DATA: i32 = 2;
    /// Every kind.
    pub const ANY: i32 = 3;
    /// Persistent watches.
    pub const PERSISTENT: i32 = 4;
    /// Persistent recursive watches.
    pub const PERSISTENT_RECURSIVE: i32 = 5;
}

/// A znode's metadata as clients see it (`data.Stat`).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Stat {
    /// Zxid of the create.
    pub czxid: i64,
    /// Zxid of the last data change.
    pub mzxid: i64,
    /// Creation time, ms since the epoch.
    pub ctime: i64,
    /// Last modification time, ms since the epoch.
    pub mtime: i64,
    /// Data version.
    pub version: i32,
    /// Children version.
    pub cversion: i32,
    /// ACL version.
    pub aversion: i32,
    /// Owning session for ephemerals, else 0.
    pub ephemeral_owner: i64,
    /// Length of the data.
    pub data_length: i32,
    /// Number of children.
    pub num_children: i32,
    /// Zxid of the last change to the children.
    pub pzxid: i64,
}

impl Stat {
    /// Decodes in `zookeeper.jute` field order.
    pub fn read(r: &mut Reader) -> Result<Self> {
        Ok(Stat {
            czxid: r.long()?,
            mzxid: r.long()?,
            ctime: r.long()?,
            mtime: r.long()?,
            version: r.int()?,
            cversion: r.int()?,
            aversion: r.int()?,
            ephemeral_owner: r.long()?,
            data_length: r.int()?,
            num_children: r.int()?,
            pzxid: r.long()?,
        })
    }

    /// Encodes in `zookeeper.jute` field order (68 bytes).
    pub fn write(&self, w: &mut Writer) {
        w.long(self.czxid);
        w.long(self.mzxid);
        w.long(self.ctime);
        w.long(self.mtime);
        w.int(self.version);
        w.int(self.cversion);
        w.int(self.aversion);
        w.long(self.ephemeral_owner);
        w.int(self.data_length);
        w.int(self.num_children);
        w.long(self.pzxid);
    }
}

/// An identity an ACL entry applies to (`data.Id`), e.g. `world:anyone`.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Id {
    /// Auth scheme: `world`, `digest`, `ip`, `sasl`, ...
    pub scheme: String,
    /// Scheme-specific identity.
    pub id: String,
}

impl Id {
    /// Decodes in `zookeeper.jute` field order.
    pub fn read(r: &mut Reader) -> Result<Self> {
        Ok(Id {
            scheme: r.ustring()?,
            id: r.ustring()?,
        })
    }

    /// Encodes in `zookeeper.jute` field order.
    pub fn write(&self, w: &mut Writer) {
        w.ustring(&self.scheme);
        w.ustring(&self.id);
    }
}

/// One ACL entry (`data.ACL`).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Acl {
    /// Bits from [`perms`].
    pub perms: i32,
    /// Who gets them.
    pub id: Id,
}

impl Acl {
    /// Decodes in `zookeeper.jute` field order.
    pub fn read(r: &mut Reader) -> Result<Self> {
        Ok(Acl {
            perms: r.int()?,
            id: Id::read(r)?,
        })
    }

    /// Encodes in `zookeeper.jute` field order.
    pub fn write(&self, w: &mut Writer) {
        w.int(self.perms);
        self.id.write(w);
    }
}

/// Precedes every request body after the handshake.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct RequestHeader {
    /// Client-chosen id echoed in the reply (or one of [`xid`]).
    pub xid: i32,
    /// Opcode from [`op`], selecting the body's layout.
    pub op: i32,
}

impl RequestHeader {
    /// Decodes in `zookeeper.jute` field order.
    pub fn read(r: &mut Reader) -> Result<Self> {
        Ok(RequestHeader {
            xid: r.int()?,
            op: r.int()?,
        })
    }

    /// Encodes in `zookeeper.jute` field order.
    pub fn write(&self, w: &mut Writer) {
        w.int(self.xid);
        w.int(self.op);
    }
}

/// Precedes every reply and notification.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct ReplyHeader {
    /// The request's xid (or one of [`xid`]).
    pub xid: i32,
    /// The server's last processed zxid; clients track the maximum.
    pub zxid: i64,
    /// An [`err`] code; nonzero means no body follows (except for multi).
    pub err: i32,
}

impl ReplyHeader {
    /// Decodes in `zookeeper.jute` field order.
    pub fn read(r: &mut Reader) -> Result<Self> {
        Ok(ReplyHeader {
            xid: r.int()?,
            zxid: r.long()?,
            err: r.int()?,
        })
    }

    /// Encodes in `zookeeper.jute` field order (16 bytes).
    pub fn write(&self, w: &mut Writer) {
        w.int(self.xid);
        w.long(self.zxid);
        w.int(self.err);
    }
}

/// A watch notification's body (`proto.WatcherEvent`).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct WatcherEvent {
    /// An [`event_type`] value.
    pub kind: i32,
    /// A [`keeper_state`] value (servers send `SYNC_CONNECTED`).
    pub state: i32,
    /// The znode path, unchrooted (the client strips its chroot).
    pub path: String,
}

impl WatcherEvent {
    /// Decodes in `zookeeper.jute` field order.
    pub fn read(r: &mut Reader) -> Result<Self> {
        Ok(WatcherEvent {
            kind: r.int()?,
            state: r.int()?,
            path: r.ustring()?,
        })
    }

    /// Encodes in `zookeeper.jute` field order.
    pub fn write(&self, w: &mut Writer) {
        w.int(self.kind);
        w.int(self.state);
        w.ustring(&self.path);
    }
}

/// The client's first frame (no [`RequestHeader`]): new session or resume.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct ConnectRequest {
    /// Always 0 in practice.
    pub protocol_version: i32,
    /// Highest zxid the client has seen; a server behind it must refuse.
    pub last_zxid_seen: i64,
    /// Requested session timeout in ms, to be clamped by the server.
    pub time_out: i32,
    /// 0 for a new session, else the session to resume.
    pub session_id: i64,
    /// Session password (16 bytes; zeros for a new session).
    pub passwd: Bytes,
    /// Whether the client accepts a read-only server; `None` when an old
    /// (pre-3.4) client omitted the trailing byte.
    pub read_only: Option<bool>,
}

impl ConnectRequest {
    /// Decodes in `zookeeper.jute` field order; the readOnly byte is read
    /// only if present, as ZooKeeper does.
    pub fn read(r: &mut Reader) -> Result<Self> {
        Ok(ConnectRequest {
            protocol_version: r.int()?,
            last_zxid_seen: r.long()?,
            time_out: r.int()?,
            session_id: r.long()?,
            passwd: r.buffer()?,
            read_only: if r.is_empty() {
                None
            } else {
                Some(r.boolean()?)
            },
        })
    }

    /// Encodes in `zookeeper.jute` field order, with the readOnly byte only
    /// when it is `Some`.
    pub fn write(&self, w: &mut Writer) {
        w.int(self.protocol_version);
        w.long(self.last_zxid_seen);
        w.int(self.time_out);
        w.long(self.session_id);
        w.buffer(&self.passwd);
        if let Some(ro) = self.read_only {
            w.boolean(ro);
        }
    }
}

/// The server's answer to a [`ConnectRequest`].
///
/// A refused or expired session is signalled by `time_out` 0, `session_id`
/// 0 and a zeroed 16-byte password, after which the server closes.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct ConnectResponse {
    /// Always 0.
    pub protocol_version: i32,
    /// Negotiated session timeout in ms (≤ 0 means expired).
    pub time_out: i32,
    /// The session id.
    pub session_id: i64,
    /// The session password the client must present to resume.
    pub passwd: Bytes,
    /// Whether this server is read-only.
    pub read_only: bool,
}

impl ConnectResponse {
    /// Decodes in `zookeeper.jute` field order; a missing readOnly byte (old
    /// server) reads as false.
    pub fn read(r: &mut Reader) -> Result<Self> {
        Ok(ConnectResponse {
            protocol_version: r.int()?,
            time_out: r.int()?,
            session_id: r.long()?,
            passwd: r.buffer()?,
            read_only: if r.is_empty() { false } else { r.boolean()? },
        })
    }

    /// Encodes in `zookeeper.jute` field order, always with the readOnly byte
    /// (3.x clients read it when present).
    pub fn write(&self, w: &mut Writer) {
        w.int(self.protocol_version);
        w.int(self.time_out);
        w.long(self.session_id);
        w.buffer(&self.passwd);
        w.boolean(self.read_only);
    }
}

/// Precedes each operation or result inside a multi body, and ends it.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct MultiHeader {
    /// Opcode of what follows ([`op::ERROR`] for an error result).
    pub kind: i32,
    /// True on the terminator, after which nothing follows.
    pub done: bool,
    /// Clients send -1; in results, 0 or the error code.
    pub err: i32,
}

impl MultiHeader {
    /// The terminator both directions end with: `{-1, true, -1}`.
    pub const END: MultiHeader = MultiHeader {
        kind: -1,
        done: true,
        err: -1,
    };

    /// Decodes in `zookeeper.jute` field order.
    pub fn read(r: &mut Reader) -> Result<Self> {
        Ok(MultiHeader {
            kind: r.int()?,
            done: r.boolean()?,
            err: r.int()?,
        })
    }

    /// Encodes in `zookeeper.jute` field order (9 bytes).
    pub fn write(&self, w: &mut Writer) {
        w.int(self.kind);
        w.boolean(self.done);
        w.int(self.err);
    }
}

/// One identity of the session, for [`Response::WhoAmI`].
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct ClientInfo {
    /// The auth scheme (`ip`, `digest`, ...).
    pub auth_scheme: String,
    /// The user or other id within that scheme.
    pub user: String,
}

impl ClientInfo {
    /// Decodes in `zookeeper.jute` field order.
    pub fn read(r: &mut Reader) -> Result<Self> {
        Ok(ClientInfo {
            auth_scheme: r.ustring()?,
            user: r.ustring()?,
        })
    }

    /// Encodes in `zookeeper.jute` field order.
    pub fn write(&self, w: &mut Writer) {
        w.ustring(&self.auth_scheme);
        w.ustring(&self.user);
    }
}

fn read_acls(r: &mut Reader) -> Result<Vec<Acl>> {
    r.vector(Acl::read)
}

fn write_acls(w: &mut Writer, acl: &[Acl]) {
    w.vector(acl, |w, a| a.write(w));
}

fn read_strings(r: &mut Reader) -> Result<Vec<String>> {
    r.vector(Reader::ustring)
}

fn write_strings(w: &mut Writer, v: &[String]) {
    w.vector(v, |w, s| w.ustring(s));
}

/// An operation inside [`Request::Multi`] or [`Request::MultiRead`].
///
/// Multi operations reuse [`Request`] so the server can run them through the
/// same code as standalone requests. [`decode_request`] only ever puts the
/// allowed variants in a multi: `Create` (any of its opcodes), `CreateTtl`,
/// `Delete`, `SetData` and `Check` in `Multi`; `GetData` and `GetChildren`
/// in `MultiRead` (whose `watch` flag ZooKeeper ignores).
pub type MultiOp = Request;

/// A client request after its [`RequestHeader`], one variant per opcode
/// family.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// `CREATE`, `CREATE2` or `CREATE_CONTAINER` (`CreateRequest`).
    Create {
        /// Which of the three opcodes, since each replies differently.
        kind: i32,
        /// Path (or prefix, for sequential modes).
        path: String,
        /// Initial data.
        data: Bytes,
        /// Initial ACL.
        acl: Vec<Acl>,
        /// A [`create_mode`] value.
        flags: i32,
    },
    /// `CREATE_TTL` (`CreateTTLRequest`).
    CreateTtl {
        /// Path (or prefix, for sequential modes).
        path: String,
        /// Initial data.
        data: Bytes,
        /// Initial ACL.
        acl: Vec<Acl>,
        /// A [`create_mode`] TTL value.
        flags: i32,
        /// Time to live in ms.
        ttl: i64,
    },
    /// `DELETE`.
    Delete {
        /// The znode.
        path: String,
        /// Expected version, -1 for any.
        version: i32,
    },
    /// `EXISTS`.
    Exists {
        /// The znode.
        path: String,
        /// Leave a data/exists watch.
        watch: bool,
    },
    /// `GET_DATA` (also inside `MultiRead`).
    GetData {
        /// The znode.
        path: String,
        /// Leave a data watch.
        watch: bool,
    },
    /// `SET_DATA`.
    SetData {
        /// The znode.
        path: String,
        /// New data.
        data: Bytes,
        /// Expected version, -1 for any.
        version: i32,
    },
    /// `GET_ACL`.
    GetAcl {
        /// The znode.
        path: String,
    },
    /// `SET_ACL`.
    SetAcl {
        /// The znode.
        path: String,
        /// New ACL.
        acl: Vec<Acl>,
        /// Expected ACL version, -1 for any.
        version: i32,
    },
    /// `GET_CHILDREN` (also inside `MultiRead`).
    GetChildren {
        /// The znode.
        path: String,
        /// Leave a child watch.
        watch: bool,
    },
    /// `GET_CHILDREN2`.
    GetChildren2 {
        /// The znode.
        path: String,
        /// Leave a child watch.
        watch: bool,
    },
    /// `GET_ALL_CHILDREN_NUMBER`.
    GetAllChildrenNumber {
        /// The subtree root.
        path: String,
    },
    /// `GET_EPHEMERALS`.
    GetEphemerals {
        /// Path prefix filter; "" or "/" means all.
        prefix: String,
    },
    /// `CHECK` (normally inside `Multi`).
    Check {
        /// The znode.
        path: String,
        /// Expected version.
        version: i32,
    },
    /// `MULTI`: atomic writes.
    Multi(Vec<MultiOp>),
    /// `MULTI_READ`: independent reads.
    MultiRead(Vec<MultiOp>),
    /// `SYNC`.
    Sync {
        /// Echoed back in the reply.
        path: String,
    },
    /// `AUTH` (`AuthPacket`).
    Auth {
        /// Always 0 in practice.
        kind: i32,
        /// Auth scheme, e.g. `digest`.
        scheme: String,
        /// Scheme-specific credentials.
        auth: Bytes,
    },
    /// `SET_WATCHES`: re-register watches after reconnecting.
    SetWatches {
        /// Fire watches for changes after this zxid.
        relative_zxid: i64,
        /// Data watch paths.
        data: Vec<String>,
        /// Exists watch paths.
        exist: Vec<String>,
        /// Child watch paths.
        child: Vec<String>,
    },
    /// `SET_WATCHES2`: `SetWatches` plus persistent watches.
    SetWatches2 {
        /// Fire watches for changes after this zxid.
        relative_zxid: i64,
        /// Data watch paths.
        data: Vec<String>,
        /// Exists watch paths.
        exist: Vec<String>,
        /// Child watch paths.
        child: Vec<String>,
        /// Persistent watch paths.
        persistent: Vec<String>,
        /// Persistent recursive watch paths.
        persistent_recursive: Vec<String>,
    },
    /// `ADD_WATCH`.
    AddWatch {
        /// The znode.
        path: String,
        /// An [`add_watch_mode`] value.
        mode: i32,
    },
    /// `REMOVE_WATCHES`.
    RemoveWatches {
        /// The znode.
        path: String,
        /// A [`watcher_type`] value.
        kind: i32,
    },
    /// `CHECK_WATCHES`.
    CheckWatches {
        /// The znode.
        path: String,
        /// A [`watcher_type`] value.
        kind: i32,
    },
    /// `WHO_AM_I` (no body).
    WhoAmI,
    /// `CLOSE_SESSION` (no body).
    CloseSession,
    /// `PING` (no body).
    Ping,
}

impl Request {
    /// The opcode this request is sent with, for headers and replies.
    pub fn op(&self) -> i32 {
        match self {
            Request::Create { kind, .. } => *kind,
            Request::CreateTtl { .. } => op::CREATE_TTL,
            Request::Delete { .. } => op::DELETE,
            Request::Exists { .. } => op::EXISTS,
            Request::GetData { .. } => op::GET_DATA,
            Request::SetData { .. } => op::SET_DATA,
            Request::GetAcl { .. } => op::GET_ACL,
            Request::SetAcl { .. } => op::SET_ACL,
            Request::GetChildren { .. } => op::GET_CHILDREN,
            Request::GetChildren2 { .. } => op::GET_CHILDREN2,
            Request::GetAllChildrenNumber { .. } => op::GET_ALL_CHILDREN_NUMBER,
            Request::GetEphemerals { .. } => op::GET_EPHEMERALS,
            Request::Check { .. } => op::CHECK,
            Request::Multi(_) => op::MULTI,
            Request::MultiRead(_) => op::MULTI_READ,
            Request::Sync { .. } => op::SYNC,
            Request::Auth { .. } => op::AUTH,
            Request::SetWatches { .. } => op::SET_WATCHES,
            Request::SetWatches2 { .. } => op::SET_WATCHES2,
            Request::AddWatch { .. } => op::ADD_WATCH,
            Request::RemoveWatches { .. } => op::REMOVE_WATCHES,
            Request::CheckWatches { .. } => op::CHECK_WATCHES,
            Request::WhoAmI => op::WHO_AM_I,
            Request::CloseSession => op::CLOSE_SESSION,
            Request::Ping => op::PING,
        }
    }

    /// Encodes the body (without header), as a client would; multi
    /// operations get `MultiHeader{op, false, -1}` like the Java client's.
    pub fn write(&self, w: &mut Writer) {
        match self {
            Request::Create {
                path,
                data,
                acl,
                flags,
                ..
            } => {
                w.ustring(path);
                w.buffer(data);
                write_acls(w, acl);
                w.int(*flags);
            }
            Request::CreateTtl {
                path,
                data,
                acl,
                flags,
                ttl,
            } => {
                w.ustring(path);
                w.buffer(data);
                write_acls(w, acl);
                w.int(*flags);
                w.long(*ttl);
            }
            Request::Delete { path, version } | Request::Check { path, version } => {
                w.ustring(path);
                w.int(*version);
            }
            Request::Exists { path, watch }
            | Request::GetData { path, watch }
            | Request::GetChildren { path, watch }
            | Request::GetChildren2 { path, watch } => {
                w.ustring(path);
                w.boolean(*watch);
            }
            Request::SetData {
                path,
                data,
                version,
            } => {
                w.ustring(path);
                w.buffer(data);
                w.int(*version);
            }
            Request::GetAcl { path }
            | Request::GetAllChildrenNumber { path }
            | Request::Sync { path }
            | Request::GetEphemerals { prefix: path } => w.ustring(path),
            Request::SetAcl { path, acl, version } => {
                w.ustring(path);
                write_acls(w, acl);
                w.int(*version);
            }
            Request::Multi(ops) | Request::MultiRead(ops) => {
                for o in ops {
                    MultiHeader {
                        kind: o.op(),
                        done: false,
                        err: -1,
                    }
                    .write(w);
                    o.write(w);
                }
                MultiHeader::END.write(w);
            }
            Request::Auth { kind, scheme, auth } => {
                w.int(*kind);
                w.ustring(scheme);
                w.buffer(auth);
            }
            Request::SetWatches {
                relative_zxid,
                data,
                exist,
                child,
            } => {
                w.long(*relative_zxid);
                write_strings(w, data);
                write_strings(w, exist);
                write_strings(w, child);
            }
            Request::SetWatches2 {
                relative_zxid,
                data,
                exist,
                child,
                persistent,
                persistent_recursive,
            } => {
                w.long(*relative_zxid);
                write_strings(w, data);
                write_strings(w, exist);
                write_strings(w, child);
                write_strings(w, persistent);
                write_strings(w, persistent_recursive);
            }
            Request::AddWatch { path, mode } => {
                w.ustring(path);
                w.int(*mode);
            }
            Request::RemoveWatches { path, kind } | Request::CheckWatches { path, kind } => {
                w.ustring(path);
                w.int(*kind);
            }
            Request::WhoAmI | Request::CloseSession | Request::Ping => {}
        }
    }
}

/// Decodes a request body (the bytes after its [`RequestHeader`]).
///
/// Unknown opcodes and those this server does not serve (SASL, reconfig,
/// deleteContainer, createSession, ...) give [`JuteError::Unimplemented`], to
/// be answered with `err::UNIMPLEMENTED`; other errors deserve
/// `err::MARSHALLING_ERROR` or closing the connection. Trailing bytes are
/// ignored, as ZooKeeper does. Multi bodies are bounded by their size: every
/// operation consumes at least its 9-byte header, and multis do not nest.
pub fn decode_request(op: i32, body: &[u8]) -> Result<Request> {
    let mut r = Reader::new(body);
    match op {
        op::MULTI | op::MULTI_READ => decode_multi(op, &mut r),
        _ => decode_single(op, &mut r),
    }
}

/// Whether `kind` may appear inside a multi of opcode `multi`.
fn multi_allows(multi: i32, kind: i32) -> bool {
    match multi {
        op::MULTI => matches!(
            kind,
            op::CREATE
                | op::CREATE2
                | op::CREATE_CONTAINER
                | op::CREATE_TTL
                | op::DELETE
                | op::SET_DATA
                | op::CHECK
        ),
        op::MULTI_READ => matches!(kind, op::GET_CHILDREN | op::GET_DATA),
        _ => false,
    }
}

fn decode_multi(multi: i32, r: &mut Reader) -> Result<Request> {
    let mut ops = Vec::new();
    loop {
        let h = MultiHeader::read(r)?;
        if h.done {
            break;
        }
        if !multi_allows(multi, h.kind) {
            return Err(JuteError::BadMultiOp { multi, op: h.kind });
        }
        ops.push(decode_single(h.kind, r)?);
    }
    Ok(if multi == op::MULTI {
        Request::Multi(ops)
    } else {
        Request::MultiRead(ops)
    })
}

/// Decodes every non-multi request body.
fn decode_single(op: i32, r: &mut Reader) -> Result<Request> {
    Ok(match op {
        op::CREATE | op::CREATE2 | op::CREATE_CONTAINER => Request::Create {
            kind: op,
            path: r.ustring()?,
            data: r.buffer()?,
            acl: read_acls(r)?,
            flags: r.int()?,
        },
        op::CREATE_TTL => Request::CreateTtl {
            path: r.ustring()?,
            data: r.buffer()?,
            acl: read_acls(r)?,
            flags: r.int()?,
            ttl: r.long()?,
        },
        op::DELETE => Request::Delete {
            path: r.ustring()?,
            version: r.int()?,
        },
        op::EXISTS => Request::Exists {
            path: r.ustring()?,
            watch: r.boolean()?,
        },
        op::GET_DATA => Request::GetData {
            path: r.ustring()?,
            watch: r.boolean()?,
        },
        op::SET_DATA => Request::SetData {
            path: r.ustring()?,
            data: r.buffer()?,
            version: r.int()?,
        },
        op::GET_ACL => Request::GetAcl { path: r.ustring()? },
        op::SET_ACL => Request::SetAcl {
            path: r.ustring()?,
            acl: read_acls(r)?,
            version: r.int()?,
        },
        op::GET_CHILDREN => Request::GetChildren {
            path: r.ustring()?,
            watch: r.boolean()?,
        },
        op::GET_CHILDREN2 => Request::GetChildren2 {
            path: r.ustring()?,
            watch: r.boolean()?,
        },
        op::GET_ALL_CHILDREN_NUMBER => Request::GetAllChildrenNumber { path: r.ustring()? },
        op::GET_EPHEMERALS => Request::GetEphemerals {
            prefix: r.ustring()?,
        },
        op::CHECK => Request::Check {
            path: r.ustring()?,
            version: r.int()?,
        },
        op::SYNC => Request::Sync { path: r.ustring()? },
        op::AUTH => Request::Auth {
            kind: r.int()?,
            scheme: r.ustring()?,
            auth: r.buffer()?,
        },
        op::SET_WATCHES => Request::SetWatches {
            relative_zxid: r.long()?,
            data: read_strings(r)?,
            exist: read_strings(r)?,
            child: read_strings(r)?,
        },
        op::SET_WATCHES2 => Request::SetWatches2 {
            relative_zxid: r.long()?,
            data: read_strings(r)?,
            exist: read_strings(r)?,
            child: read_strings(r)?,
            persistent: read_strings(r)?,
            persistent_recursive: read_strings(r)?,
        },
        op::ADD_WATCH => Request::AddWatch {
            path: r.ustring()?,
            mode: r.int()?,
        },
        op::REMOVE_WATCHES => Request::RemoveWatches {
            path: r.ustring()?,
            kind: r.int()?,
        },
        op::CHECK_WATCHES => Request::CheckWatches {
            path: r.ustring()?,
            kind: r.int()?,
        },
        op::WHO_AM_I => Request::WhoAmI,
        op::CLOSE_SESSION => Request::CloseSession,
        op::PING => Request::Ping,
        _ => return Err(JuteError::Unimplemented(op)),
    })
}

/// Encodes a whole request frame (header and body), as a client would.
///
/// For tests and clients: ZooKeeper clients use [`xid::PING`],
/// [`xid::AUTH`] and [`xid::SET_WATCHES`] for those requests.
pub fn encode_request(xid: i32, request: &Request) -> Vec<u8> {
    let mut w = Writer::framed();
    RequestHeader {
        xid,
        op: request.op(),
    }
    .write(&mut w);
    request.write(&mut w);
    w.into_frame()
}

/// Encodes a whole connect frame, as a client would.
pub fn encode_connect_request(request: &ConnectRequest) -> Vec<u8> {
    let mut w = Writer::framed();
    request.write(&mut w);
    w.into_frame()
}

/// The outcome of one operation of a multi or multiRead.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OpResult {
    /// A `CREATE` succeeded.
    Create {
        /// The created path (with any sequence suffix).
        path: String,
    },
    /// A `CREATE2`, `CREATE_CONTAINER` or `CREATE_TTL` succeeded (ZooKeeper
    /// tags all three with type `CREATE2`).
    Create2 {
        /// The created path (with any sequence suffix).
        path: String,
        /// The new znode's stat.
        stat: Stat,
    },
    /// A delete succeeded (no body).
    Delete,
    /// A setData succeeded.
    SetData {
        /// The znode's new stat.
        stat: Stat,
    },
    /// A check succeeded (no body).
    Check,
    /// A multiRead getData.
    GetData {
        /// The data.
        data: Bytes,
        /// The znode's stat.
        stat: Stat,
    },
    /// A multiRead getChildren.
    GetChildren {
        /// Child names.
        children: Vec<String>,
    },
    /// A failed (or, in a failed multi, rolled-back) operation.
    Error(i32),
}

impl OpResult {
    /// The type its `MultiHeader` carries.
    pub fn op(&self) -> i32 {
        match self {
            OpResult::Create { .. } => op::CREATE,
            OpResult::Create2 { .. } => op::CREATE2,
            OpResult::Delete => op::DELETE,
            OpResult::SetData { .. } => op::SET_DATA,
            OpResult::Check => op::CHECK,
            OpResult::GetData { .. } => op::GET_DATA,
            OpResult::GetChildren { .. } => op::GET_CHILDREN,
            OpResult::Error(_) => op::ERROR,
        }
    }

    /// Encodes header and body as `MultiResponse.serialize` does.
    pub fn write(&self, w: &mut Writer) {
        let err = match self {
            OpResult::Error(e) => *e,
            _ => 0,
        };
        MultiHeader {
            kind: self.op(),
            done: false,
            err,
        }
        .write(w);
        match self {
            OpResult::Create { path } => w.ustring(path),
            OpResult::Create2 { path, stat } => {
                w.ustring(path);
                stat.write(w);
            }
            OpResult::Delete | OpResult::Check => {}
            OpResult::SetData { stat } => stat.write(w),
            OpResult::GetData { data, stat } => {
                w.buffer(data);
                stat.write(w);
            }
            OpResult::GetChildren { children } => write_strings(w, children),
            OpResult::Error(e) => w.int(*e),
        }
    }

    /// Decodes the body after `header` (which must not be the terminator),
    /// as `MultiResponse.deserialize` does: an error's code comes from its
    /// body, not the header.
    fn read_body(multi: i32, header: &MultiHeader, r: &mut Reader) -> Result<Self> {
        Ok(match header.kind {
            op::CREATE => OpResult::Create { path: r.ustring()? },
            op::CREATE2 => OpResult::Create2 {
                path: r.ustring()?,
                stat: Stat::read(r)?,
            },
            op::DELETE => OpResult::Delete,
            op::SET_DATA => OpResult::SetData {
                stat: Stat::read(r)?,
            },
            op::CHECK => OpResult::Check,
            op::GET_DATA => OpResult::GetData {
                data: r.buffer()?,
                stat: Stat::read(r)?,
            },
            op::GET_CHILDREN => OpResult::GetChildren {
                children: read_strings(r)?,
            },
            op::ERROR => OpResult::Error(r.int()?),
            kind => return Err(JuteError::BadMultiOp { multi, op: kind }),
        })
    }
}

/// A reply body, chosen by the request's opcode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Response {
    /// `CREATE`.
    Create {
        /// The created path.
        path: String,
    },
    /// `CREATE2`, `CREATE_CONTAINER` and `CREATE_TTL`.
    Create2 {
        /// The created path.
        path: String,
        /// The new znode's stat.
        stat: Stat,
    },
    /// `EXISTS`, `SET_DATA`, `SET_ACL`.
    Stat(Stat),
    /// `GET_DATA`.
    GetData {
        /// The data.
        data: Bytes,
        /// The znode's stat.
        stat: Stat,
    },
    /// `GET_ACL`.
    GetAcl {
        /// The ACL.
        acl: Vec<Acl>,
        /// The znode's stat.
        stat: Stat,
    },
    /// `GET_CHILDREN`.
    GetChildren {
        /// Child names.
        children: Vec<String>,
    },
    /// `GET_CHILDREN2`.
    GetChildren2 {
        /// Child names.
        children: Vec<String>,
        /// The parent's stat.
        stat: Stat,
    },
    /// `GET_ALL_CHILDREN_NUMBER`.
    AllChildrenNumber(i32),
    /// `GET_EPHEMERALS`.
    Ephemerals(Vec<String>),
    /// `MULTI` and `MULTI_READ`.
    Multi(Vec<OpResult>),
    /// `SYNC`.
    Sync {
        /// The request's path, echoed.
        path: String,
    },
    /// `WHO_AM_I`.
    WhoAmI(Vec<ClientInfo>),
    /// `ADD_WATCH`: ZooKeeper sends an `ErrorResponse{0}` body (one int) and
    /// the Java client reads it, so a header-only reply breaks the connection.
    AddWatch,
    /// Header only: delete, check, setWatches(2), auth, ping, closeSession,
    /// removeWatches, checkWatches, and every error reply.
    Empty,
}

impl Response {
    /// Encodes the body (without header).
    pub fn write(&self, w: &mut Writer) {
        match self {
            Response::Create { path } | Response::Sync { path } => w.ustring(path),
            Response::Create2 { path, stat } => {
                w.ustring(path);
                stat.write(w);
            }
            Response::Stat(stat) => stat.write(w),
            Response::GetData { data, stat } => {
                w.buffer(data);
                stat.write(w);
            }
            Response::GetAcl { acl, stat } => {
                write_acls(w, acl);
                stat.write(w);
            }
            Response::GetChildren { children } | Response::Ephemerals(children) => {
                write_strings(w, children);
            }
            Response::GetChildren2 { children, stat } => {
                write_strings(w, children);
                stat.write(w);
            }
            Response::AllChildrenNumber(n) => w.int(*n),
            Response::Multi(results) => {
                for result in results {
                    result.write(w);
                }
                MultiHeader::END.write(w);
            }
            Response::WhoAmI(infos) => w.vector(infos, |w, i| i.write(w)),
            Response::AddWatch => w.int(err::OK),
            Response::Empty => {}
        }
    }

    /// Decodes the body of a successful reply to a request of opcode `op`,
    /// as a client would.
    pub fn read(op: i32, r: &mut Reader) -> Result<Self> {
        Ok(match op {
            op::CREATE => Response::Create { path: r.ustring()? },
            op::CREATE2 | op::CREATE_CONTAINER | op::CREATE_TTL => Response::Create2 {
                path: r.ustring()?,
                stat: Stat::read(r)?,
            },
            op::EXISTS | op::SET_DATA | op::SET_ACL => Response::Stat(Stat::read(r)?),
            op::GET_DATA => Response::GetData {
                data: r.buffer()?,
                stat: Stat::read(r)?,
            },
            op::GET_ACL => Response::GetAcl {
                acl: read_acls(r)?,
                stat: Stat::read(r)?,
            },
            op::GET_CHILDREN => Response::GetChildren {
                children: read_strings(r)?,
            },
            op::GET_CHILDREN2 => Response::GetChildren2 {
                children: read_strings(r)?,
                stat: Stat::read(r)?,
            },
            op::GET_ALL_CHILDREN_NUMBER => Response::AllChildrenNumber(r.int()?),
            op::GET_EPHEMERALS => Response::Ephemerals(read_strings(r)?),
            op::MULTI | op::MULTI_READ => {
                let mut results = Vec::new();
                loop {
                    let h = MultiHeader::read(r)?;
                    if h.done {
                        break;
                    }
                    results.push(OpResult::read_body(op, &h, r)?);
                }
                Response::Multi(results)
            }
            op::SYNC => Response::Sync { path: r.ustring()? },
            op::WHO_AM_I => Response::WhoAmI(r.vector(ClientInfo::read)?),
            op::ADD_WATCH => {
                r.int()?;
                Response::AddWatch
            }
            op::DELETE
            | op::CHECK
            | op::SET_WATCHES
            | op::SET_WATCHES2
            | op::AUTH
            | op::PING
            | op::CLOSE_SESSION
            | op::REMOVE_WATCHES
            | op::CHECK_WATCHES => Response::Empty,
            _ => return Err(JuteError::Unimplemented(op)),
        })
    }
}

/// Encodes a whole reply frame: length prefix, header, body.
///
/// When `header.err` is nonzero only the header is written, as ZooKeeper
/// does and clients expect — except for [`Response::Multi`], whose body is
/// always written: the caller decides. ZooKeeper 3.8 answers a failed multi
/// with `err` 0 and per-operation [`OpResult::Error`]s (0 for operations
/// before the failing one, its code for it, `RUNTIME_INCONSISTENCY` after);
/// to send a bare error header for a multi, pass [`Response::Empty`].
pub fn encode_reply(header: &ReplyHeader, response: &Response) -> Vec<u8> {
    let mut w = Writer::framed();
    header.write(&mut w);
    if header.err == err::OK || matches!(response, Response::Multi(_)) {
        response.write(&mut w);
    }
    w.into_frame()
}

/// Decodes a reply frame body (after the length prefix) to a request of
/// opcode `op`, as a client would; the inverse of [`encode_reply`].
///
/// An error header yields [`Response::Empty`], unless `op` is a multi with a
/// body present. Trailing bytes are ignored.
pub fn decode_reply(op: i32, body: &[u8]) -> Result<(ReplyHeader, Response)> {
    let mut r = Reader::new(body);
    let header = ReplyHeader::read(&mut r)?;
    let has_body =
        header.err == err::OK || (matches!(op, op::MULTI | op::MULTI_READ) && !r.is_empty());
    let response = if has_body {
        Response::read(op, &mut r)?
    } else {
        Response::Empty
    };
    Ok((header, response))
}

/// Encodes a whole watch notification frame: header with
/// [`xid::NOTIFICATION`], `zxid` and err 0, then the event.
///
/// ZooKeeper 3.8 sends zxid -1 here; clients ignore it (they only track
/// positive zxids).
pub fn encode_event(zxid: i64, event: &WatcherEvent) -> Vec<u8> {
    let mut w = Writer::framed();
    ReplyHeader {
        xid: xid::NOTIFICATION,
        zxid,
        err: err::OK,
    }
    .write(&mut w);
    event.write(&mut w);
    w.into_frame()
}

/// Decodes a notification frame body (after the length prefix), as a client
/// would; the inverse of [`encode_event`].
pub fn decode_event(body: &[u8]) -> Result<(ReplyHeader, WatcherEvent)> {
    let mut r = Reader::new(body);
    let header = ReplyHeader::read(&mut r)?;
    Ok((header, WatcherEvent::read(&mut r)?))
}

/// Encodes the whole frame answering a [`ConnectRequest`].
pub fn encode_connect_response(response: &ConnectResponse) -> Vec<u8> {
    let mut w = Writer::framed();
    response.write(&mut w);
    w.into_frame()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jute::{frame_len, MAX_BUFFER_DEFAULT};
    use proptest::collection::vec;
    use proptest::prelude::*;

    /// Every opcode constant plus a few unknown ones, for fuzzing.
    const ALL_OPS: &[i32] = &[
        op::NOTIFICATION,
        op::CREATE,
        op::DELETE,
        op::EXISTS,
        op::GET_DATA,
        op::SET_DATA,
        op::GET_ACL,
        op::SET_ACL,
        op::GET_CHILDREN,
        op::SYNC,
        op::PING,
        op::GET_CHILDREN2,
        op::CHECK,
        op::MULTI,
        op::CREATE2,
        op::RECONFIG,
        op::CHECK_WATCHES,
        op::REMOVE_WATCHES,
        op::CREATE_CONTAINER,
        op::DELETE_CONTAINER,
        op::CREATE_TTL,
        op::MULTI_READ,
        op::AUTH,
        op::SET_WATCHES,
        op::SASL,
        op::GET_EPHEMERALS,
        op::GET_ALL_CHILDREN_NUMBER,
        op::SET_WATCHES2,
        op::ADD_WATCH,
        op::WHO_AM_I,
        op::CREATE_SESSION,
        op::CLOSE_SESSION,
        op::ERROR,
        10,
        23,
        99,
        108,
        i32::MIN,
        i32::MAX,
    ];

    /// Splits a frame into its checked length and body.
    fn unframe(frame: &[u8]) -> &[u8] {
        let len = frame_len([frame[0], frame[1], frame[2], frame[3]], MAX_BUFFER_DEFAULT).unwrap();
        assert_eq!(len, frame.len() - 4);
        &frame[4..]
    }

    fn stat(seed: i64) -> Stat {
        Stat {
            czxid: seed,
            mzxid: seed + 1,
            ctime: seed + 2,
            mtime: seed + 3,
            version: 4,
            cversion: 5,
            aversion: 6,
            ephemeral_owner: seed + 7,
            data_length: 8,
            num_children: 9,
            pzxid: seed + 10,
        }
    }

    fn world_acl() -> Vec<Acl> {
        vec![Acl {
            perms: perms::ALL,
            id: Id {
                scheme: "world".into(),
                id: "anyone".into(),
            },
        }]
    }

    fn round_trip_request(xid: i32, req: &Request) {
        let frame = encode_request(xid, req);
        let mut r = Reader::new(unframe(&frame));
        let header = RequestHeader::read(&mut r).unwrap();
        assert_eq!(header, RequestHeader { xid, op: req.op() });
        assert_eq!(decode_request(header.op, r.rest()).as_ref(), Ok(req));
    }

    fn round_trip_reply(op: i32, header: &ReplyHeader, resp: &Response) {
        let frame = encode_reply(header, resp);
        let (h, got) = decode_reply(op, unframe(&frame)).unwrap();
        assert_eq!(&h, header);
        assert_eq!(&got, resp);
    }

    fn sample_requests() -> Vec<Request> {
        let path = || "/a/b".to_owned();
        let data = || Bytes::from_static(b"data");
        vec![
            Request::Create {
                kind: op::CREATE,
                path: path(),
                data: data(),
                acl: world_acl(),
                flags: create_mode::EPHEMERAL_SEQUENTIAL,
            },
            Request::Create {
                kind: op::CREATE2,
                path: path(),
                data: Bytes::new(),
                acl: vec![],
                flags: create_mode::PERSISTENT,
            },
            Request::Create {
                kind: op::CREATE_CONTAINER,
                path: path(),
                data: data(),
                acl: world_acl(),
                flags: create_mode::CONTAINER,
            },
            Request::CreateTtl {
                path: path(),
                data: data(),
                acl: world_acl(),
                flags: create_mode::PERSISTENT_WITH_TTL,
                ttl: 60_000,
            },
            Request::Delete {
                path: path(),
                version: -1,
            },
            Request::Exists {
                path: path(),
                watch: true,
            },
            Request::GetData {
                path: path(),
                watch: false,
            },
            Request::SetData {
                path: path(),
                data: data(),
                version: 3,
            },
            Request::GetAcl { path: path() },
            Request::SetAcl {
                path: path(),
                acl: world_acl(),
                version: 0,
            },
            Request::GetChildren {
                path: path(),
                watch: true,
            },
            Request::GetChildren2 {
                path: path(),
                watch: false,
            },
            Request::GetAllChildrenNumber { path: path() },
            Request::GetEphemerals { prefix: "/".into() },
            Request::Check {
                path: path(),
                version: 7,
            },
            Request::Multi(vec![
                Request::Create {
                    kind: op::CREATE,
                    path: path(),
                    data: data(),
                    acl: world_acl(),
                    flags: 0,
                },
                Request::Create {
                    kind: op::CREATE2,
                    path: path(),
                    data: data(),
                    acl: world_acl(),
                    flags: 0,
                },
                Request::Create {
                    kind: op::CREATE_CONTAINER,
                    path: path(),
                    data: data(),
                    acl: world_acl(),
                    flags: 4,
                },
                Request::CreateTtl {
                    path: path(),
                    data: data(),
                    acl: world_acl(),
                    flags: 5,
                    ttl: 1,
                },
                Request::Delete {
                    path: path(),
                    version: 1,
                },
                Request::SetData {
                    path: path(),
                    data: data(),
                    version: 2,
                },
                Request::Check {
                    path: path(),
                    version: 3,
                },
            ]),
            Request::Multi(vec![]),
            Request::MultiRead(vec![
                Request::GetData {
                    path: path(),
                    watch: false,
                },
                Request::GetChildren {
                    path: path(),
                    watch: true,
                },
            ]),
            Request::Sync { path: path() },
            Request::Auth {
                kind: 0,
                scheme: "digest".into(),
                auth: Bytes::from_static(b"user:pw"),
            },
            Request::SetWatches {
                relative_zxid: 42,
                data: vec!["/d".into()],
                exist: vec![],
                child: vec!["/c1".into(), "/c2".into()],
            },
            Request::SetWatches2 {
                relative_zxid: 43,
                data: vec!["/d".into()],
                exist: vec!["/e".into()],
                child: vec![],
                persistent: vec!["/p".into()],
                persistent_recursive: vec!["/r".into()],
            },
            Request::AddWatch {
                path: path(),
                mode: add_watch_mode::PERSISTENT_RECURSIVE,
            },
            Request::RemoveWatches {
                path: path(),
                kind: watcher_type::ANY,
            },
            Request::CheckWatches {
                path: path(),
                kind: watcher_type::DATA,
            },
            Request::WhoAmI,
            Request::CloseSession,
            Request::Ping,
        ]
    }

    #[test]
    fn every_request_kind_round_trips() {
        let samples = sample_requests();
        assert_eq!(samples.len(), 28);
        for (i, req) in samples.iter().enumerate() {
            round_trip_request(i as i32 + 1, req);
        }
    }

    #[test]
    fn every_record_round_trips() {
        fn check<T: PartialEq + std::fmt::Debug>(
            v: &T,
            write: impl Fn(&T, &mut Writer),
            read: impl Fn(&mut Reader) -> Result<T>,
        ) {
            let mut w = Writer::new();
            write(v, &mut w);
            let bytes = w.into_inner();
            let mut r = Reader::new(&bytes);
            assert_eq!(&read(&mut r).unwrap(), v);
            assert_eq!(r.finish(), Ok(()));
        }
        check(&stat(100), Stat::write, Stat::read);
        check(&world_acl()[0].id, Id::write, Id::read);
        check(&world_acl()[0], Acl::write, Acl::read);
        check(
            &RequestHeader {
                xid: 9,
                op: op::GET_DATA,
            },
            RequestHeader::write,
            RequestHeader::read,
        );
        check(
            &ReplyHeader {
                xid: 9,
                zxid: 1 << 40,
                err: err::NO_NODE,
            },
            ReplyHeader::write,
            ReplyHeader::read,
        );
        check(
            &WatcherEvent {
                kind: event_type::NODE_DATA_CHANGED,
                state: keeper_state::SYNC_CONNECTED,
                path: "/x".into(),
            },
            WatcherEvent::write,
            WatcherEvent::read,
        );
        for read_only in [None, Some(false), Some(true)] {
            check(
                &ConnectRequest {
                    protocol_version: 0,
                    last_zxid_seen: 77,
                    time_out: 30_000,
                    session_id: 0x1234,
                    passwd: Bytes::from_static(&[7; 16]),
                    read_only,
                },
                ConnectRequest::write,
                ConnectRequest::read,
            );
        }
        for read_only in [false, true] {
            check(
                &ConnectResponse {
                    protocol_version: 0,
                    time_out: 10_000,
                    session_id: 0x5678,
                    passwd: Bytes::from_static(&[9; 16]),
                    read_only,
                },
                ConnectResponse::write,
                ConnectResponse::read,
            );
        }
        check(&MultiHeader::END, MultiHeader::write, MultiHeader::read);
        check(
            &ClientInfo {
                auth_scheme: "ip".into(),
                user: "127.0.0.1".into(),
            },
            ClientInfo::write,
            ClientInfo::read,
        );
        for r in sample_results() {
            check(&r, OpResult::write, |rd: &mut Reader| {
                let h = MultiHeader::read(rd)?;
                OpResult::read_body(op::MULTI, &h, rd)
            });
        }
    }

    fn sample_results() -> Vec<OpResult> {
        vec![
            OpResult::Create { path: "/a".into() },
            OpResult::Create2 {
                path: "/b".into(),
                stat: stat(1),
            },
            OpResult::Delete,
            OpResult::SetData { stat: stat(2) },
            OpResult::Check,
            OpResult::GetData {
                data: Bytes::from_static(b"x"),
                stat: stat(3),
            },
            OpResult::GetChildren {
                children: vec!["c".into()],
            },
            OpResult::Error(err::NO_NODE),
        ]
    }

    #[test]
    fn every_response_kind_round_trips() {
        let ok = |xid| ReplyHeader {
            xid,
            zxid: 0x1_0000_0005,
            err: 0,
        };
        let cases = vec![
            (
                op::CREATE,
                Response::Create {
                    path: "/a0000000001".into(),
                },
            ),
            (
                op::CREATE2,
                Response::Create2 {
                    path: "/a".into(),
                    stat: stat(1),
                },
            ),
            (
                op::CREATE_CONTAINER,
                Response::Create2 {
                    path: "/a".into(),
                    stat: stat(1),
                },
            ),
            (
                op::CREATE_TTL,
                Response::Create2 {
                    path: "/a".into(),
                    stat: stat(1),
                },
            ),
            (op::EXISTS, Response::Stat(stat(2))),
            (op::SET_DATA, Response::Stat(stat(3))),
            (op::SET_ACL, Response::Stat(stat(4))),
            (
                op::GET_DATA,
                Response::GetData {
                    data: Bytes::from_static(b"hello"),
                    stat: stat(5),
                },
            ),
            (
                op::GET_ACL,
                Response::GetAcl {
                    acl: world_acl(),
                    stat: stat(6),
                },
            ),
            (
                op::GET_CHILDREN,
                Response::GetChildren {
                    children: vec!["x".into(), "y".into()],
                },
            ),
            (
                op::GET_CHILDREN2,
                Response::GetChildren2 {
                    children: vec![],
                    stat: stat(7),
                },
            ),
            (op::GET_ALL_CHILDREN_NUMBER, Response::AllChildrenNumber(12)),
            (op::GET_EPHEMERALS, Response::Ephemerals(vec!["/e".into()])),
            (op::MULTI, Response::Multi(sample_results())),
            (op::MULTI_READ, Response::Multi(vec![])),
            (op::SYNC, Response::Sync { path: "/s".into() }),
            (
                op::WHO_AM_I,
                Response::WhoAmI(vec![ClientInfo {
                    auth_scheme: "digest".into(),
                    user: "bob".into(),
                }]),
            ),
            (op::ADD_WATCH, Response::AddWatch),
            (op::DELETE, Response::Empty),
            (op::CHECK, Response::Empty),
            (op::SET_WATCHES, Response::Empty),
            (op::SET_WATCHES2, Response::Empty),
            (op::AUTH, Response::Empty),
            (op::PING, Response::Empty),
            (op::CLOSE_SESSION, Response::Empty),
            (op::REMOVE_WATCHES, Response::Empty),
            (op::CHECK_WATCHES, Response::Empty),
        ];
        for (i, (op, resp)) in cases.iter().enumerate() {
            round_trip_reply(*op, &ok(i as i32), resp);
        }
    }

    #[test]
    fn error_replies_are_header_only_except_multi() {
        let header = ReplyHeader {
            xid: 3,
            zxid: 9,
            err: err::NO_NODE,
        };
        let frame = encode_reply(
            &header,
            &Response::GetData {
                data: Bytes::from_static(b"ignored"),
                stat: stat(1),
            },
        );
        assert_eq!(frame.len(), 4 + 16);
        assert_eq!(
            decode_reply(op::GET_DATA, unframe(&frame)),
            Ok((header.clone(), Response::Empty))
        );
        // Multi bodies are written whatever the header says.
        let multi = Response::Multi(vec![OpResult::Error(err::NO_NODE)]);
        round_trip_reply(op::MULTI, &header, &multi);
        // A bare error header for a multi decodes as Empty.
        round_trip_reply(op::MULTI, &header, &Response::Empty);
    }

    #[test]
    fn connect_request_exact_bytes() {
        let mut req = ConnectRequest {
            protocol_version: 0,
            last_zxid_seen: 0,
            time_out: 30_000,
            session_id: 0,
            passwd: Bytes::from_static(&[0; 16]),
            read_only: Some(false),
        };
        let mut expected = vec![0, 0, 0, 45]; // frame length
        expected.extend_from_slice(&[0, 0, 0, 0]); // protocolVersion
        expected.extend_from_slice(&[0; 8]); // lastZxidSeen
        expected.extend_from_slice(&[0, 0, 0x75, 0x30]); // timeOut 30000
        expected.extend_from_slice(&[0; 8]); // sessionId
        expected.extend_from_slice(&[0, 0, 0, 16]); // passwd length
        expected.extend_from_slice(&[0; 16]); // passwd
        expected.push(0); // readOnly
        assert_eq!(encode_connect_request(&req), expected);
        assert_eq!(
            ConnectRequest::read(&mut Reader::new(&expected[4..])),
            Ok(req.clone())
        );

        // Old clients omit readOnly: a 44-byte body.
        req.read_only = None;
        expected.pop();
        expected[3] = 44;
        assert_eq!(encode_connect_request(&req), expected);
        assert_eq!(
            ConnectRequest::read(&mut Reader::new(&expected[4..])),
            Ok(req)
        );
    }

    #[test]
    fn connect_response_exact_bytes() {
        let rsp = ConnectResponse {
            protocol_version: 0,
            time_out: 4000,
            session_id: 0x0100_0000_0000_0002,
            passwd: Bytes::from_static(&[0xab; 16]),
            read_only: false,
        };
        let frame = encode_connect_response(&rsp);
        let mut expected = vec![0, 0, 0, 37];
        expected.extend_from_slice(&[0, 0, 0, 0]);
        expected.extend_from_slice(&[0, 0, 0x0f, 0xa0]);
        expected.extend_from_slice(&[1, 0, 0, 0, 0, 0, 0, 2]);
        expected.extend_from_slice(&[0, 0, 0, 16]);
        expected.extend_from_slice(&[0xab; 16]);
        expected.push(0);
        assert_eq!(frame, expected);
        // An old server's reply without the flag still decodes.
        assert_eq!(
            ConnectResponse::read(&mut Reader::new(&expected[4..expected.len() - 1])),
            Ok(rsp)
        );
    }

    #[test]
    fn multi_error_reply_exact_bytes() {
        // A failed multi as ZooKeeper 3.8 reports it: header err 0, the op
        // before the failure OK, the failure, then the rolled-back rest.
        let header = ReplyHeader {
            xid: 5,
            zxid: 0x10,
            err: 0,
        };
        let frame = encode_reply(
            &header,
            &Response::Multi(vec![
                OpResult::Error(err::OK),
                OpResult::Error(err::NO_NODE),
                OpResult::Error(err::RUNTIME_INCONSISTENCY),
            ]),
        );
        let expected: Vec<u8> = [
            &[0, 0, 0, 16 + 3 * 13 + 9][..],
            &[0, 0, 0, 5, 0, 0, 0, 0, 0, 0, 0, 0x10, 0, 0, 0, 0],
            &[0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            &[0xff, 0xff, 0xff, 0xff, 0, 0xff, 0xff, 0xff, 0x9b],
            &[0xff, 0xff, 0xff, 0x9b],
            &[0xff, 0xff, 0xff, 0xff, 0, 0xff, 0xff, 0xff, 0xfe],
            &[0xff, 0xff, 0xff, 0xfe],
            &[0xff, 0xff, 0xff, 0xff, 1, 0xff, 0xff, 0xff, 0xff],
        ]
        .concat();
        assert_eq!(frame, expected);
    }

    #[test]
    fn multi_request_exact_bytes() {
        let frame = encode_request(
            7,
            &Request::Multi(vec![Request::Check {
                path: "/a".into(),
                version: 3,
            }]),
        );
        let expected: Vec<u8> = [
            &[0, 0, 0, 8 + 9 + 10 + 9][..],
            &[0, 0, 0, 7, 0, 0, 0, 14],
            &[0, 0, 0, 13, 0, 0xff, 0xff, 0xff, 0xff],
            &[0, 0, 0, 2, b'/', b'a', 0, 0, 0, 3],
            &[0xff, 0xff, 0xff, 0xff, 1, 0xff, 0xff, 0xff, 0xff],
        ]
        .concat();
        assert_eq!(frame, expected);
    }

    #[test]
    fn ping_and_event_exact_bytes() {
        let ping = encode_reply(
            &ReplyHeader {
                xid: xid::PING,
                zxid: 1,
                err: 0,
            },
            &Response::Empty,
        );
        assert_eq!(
            ping,
            [0, 0, 0, 16, 0xff, 0xff, 0xff, 0xfe, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0]
        );
        let event = WatcherEvent {
            kind: event_type::NODE_CREATED,
            state: keeper_state::SYNC_CONNECTED,
            path: "/n".into(),
        };
        let frame = encode_event(-1, &event);
        let expected: Vec<u8> = [
            &[0, 0, 0, 16 + 14][..],
            &[0xff; 12],
            &[0, 0, 0, 0],
            &[0, 0, 0, 1, 0, 0, 0, 3, 0, 0, 0, 2, b'/', b'n'],
        ]
        .concat();
        assert_eq!(frame, expected);
        let (h, e) = decode_event(unframe(&frame)).unwrap();
        assert_eq!(h.xid, xid::NOTIFICATION);
        assert_eq!(h.zxid, -1);
        assert_eq!(e, event);
    }

    #[test]
    fn add_watch_reply_carries_an_int() {
        let frame = encode_reply(&ReplyHeader::default(), &Response::AddWatch);
        assert_eq!(&frame[4 + 16..], &[0, 0, 0, 0]);
    }

    #[test]
    fn unimplemented_and_bad_multi_ops() {
        for op in [
            op::SASL,
            op::RECONFIG,
            op::DELETE_CONTAINER,
            op::CREATE_SESSION,
            0,
            99,
            -1,
        ] {
            assert_eq!(decode_request(op, &[]), Err(JuteError::Unimplemented(op)));
        }
        // A read inside a write multi.
        let mut w = Writer::new();
        MultiHeader {
            kind: op::GET_DATA,
            done: false,
            err: -1,
        }
        .write(&mut w);
        let body = w.into_inner();
        assert_eq!(
            decode_request(op::MULTI, &body),
            Err(JuteError::BadMultiOp {
                multi: op::MULTI,
                op: op::GET_DATA
            })
        );
        // A write, or a nested multi, inside a multiRead.
        for kind in [op::CREATE, op::MULTI, op::MULTI_READ] {
            let mut w = Writer::new();
            MultiHeader {
                kind,
                done: false,
                err: -1,
            }
            .write(&mut w);
            assert_eq!(
                decode_request(op::MULTI_READ, &w.into_inner()),
                Err(JuteError::BadMultiOp {
                    multi: op::MULTI_READ,
                    op: kind
                })
            );
        }
        // Unknown result type in a multi reply.
        let mut w = Writer::new();
        ReplyHeader::default().write(&mut w);
        MultiHeader {
            kind: op::EXISTS,
            done: false,
            err: 0,
        }
        .write(&mut w);
        assert_eq!(
            decode_reply(op::MULTI, &w.into_inner()),
            Err(JuteError::BadMultiOp {
                multi: op::MULTI,
                op: op::EXISTS
            })
        );
    }

    #[test]
    fn multi_without_terminator_is_truncated() {
        let mut w = Writer::new();
        for _ in 0..3 {
            MultiHeader {
                kind: op::DELETE,
                done: false,
                err: -1,
            }
            .write(&mut w);
            w.ustring("/x");
            w.int(0);
        }
        assert_eq!(
            decode_request(op::MULTI, &w.into_inner()),
            Err(JuteError::Truncated)
        );
        assert_eq!(decode_request(op::MULTI, &[]), Err(JuteError::Truncated));
    }

    #[test]
    fn terminator_ends_multi_whatever_its_type() {
        // Java stops at done=true without looking at type or err.
        let body = [0, 0, 0, 1, 1, 0, 0, 0, 0];
        assert_eq!(decode_request(op::MULTI, &body), Ok(Request::Multi(vec![])));
    }

    #[test]
    fn trailing_bytes_are_tolerated() {
        let mut w = Writer::new();
        Request::Sync { path: "/".into() }.write(&mut w);
        w.int(12345);
        assert_eq!(
            decode_request(op::SYNC, &w.into_inner()),
            Ok(Request::Sync { path: "/".into() })
        );
        assert_eq!(decode_request(op::PING, &[1, 2, 3]), Ok(Request::Ping));
    }

    #[test]
    fn null_fields_decode_as_empty() {
        // Create with null data, null ACL vector.
        let mut w = Writer::new();
        w.ustring("/n");
        w.int(-1);
        w.int(-1);
        w.int(0);
        assert_eq!(
            decode_request(op::CREATE, &w.into_inner()),
            Ok(Request::Create {
                kind: op::CREATE,
                path: "/n".into(),
                data: Bytes::new(),
                acl: vec![],
                flags: 0,
            })
        );
    }

    #[test]
    fn huge_counts_are_refused_without_allocating() {
        // SetWatches claiming 2^31-1 paths in a 12-byte body.
        let mut w = Writer::new();
        w.long(0);
        w.int(i32::MAX);
        assert_eq!(
            decode_request(op::SET_WATCHES, &w.into_inner()),
            Err(JuteError::Truncated)
        );
        let mut w = Writer::new();
        w.ustring("/p");
        w.int(0x7fff_0000);
        assert_eq!(
            decode_request(op::SET_ACL, &w.into_inner()),
            Err(JuteError::Truncated)
        );
    }

    fn arb_string() -> impl Strategy<Value = String> {
        prop_oneof!["[a-z/]{0,10}", "\\PC{0,6}"]
    }

    fn arb_bytes() -> impl Strategy<Value = Bytes> {
        vec(any::<u8>(), 0..24).prop_map(Bytes::from)
    }

    fn arb_strings() -> impl Strategy<Value = Vec<String>> {
        vec(arb_string(), 0..4)
    }

    fn arb_stat() -> impl Strategy<Value = Stat> {
        (any::<[i64; 6]>(), any::<[i32; 5]>()).prop_map(|(l, i)| Stat {
            czxid: l[0],
            mzxid: l[1],
            ctime: l[2],
            mtime: l[3],
            version: i[0],
            cversion: i[1],
            aversion: i[2],
            ephemeral_owner: l[4],
            data_length: i[3],
            num_children: i[4],
            pzxid: l[5],
        })
    }

    fn arb_acls() -> impl Strategy<Value = Vec<Acl>> {
        vec(
            (any::<i32>(), arb_string(), arb_string()).prop_map(|(perms, scheme, id)| Acl {
                perms,
                id: Id { scheme, id },
            }),
            0..3,
        )
    }

    fn arb_write_op() -> BoxedStrategy<Request> {
        prop_oneof![
            (
                prop_oneof![
                    Just(op::CREATE),
                    Just(op::CREATE2),
                    Just(op::CREATE_CONTAINER)
                ],
                arb_string(),
                arb_bytes(),
                arb_acls(),
                any::<i32>()
            )
                .prop_map(|(kind, path, data, acl, flags)| Request::Create {
                    kind,
                    path,
                    data,
                    acl,
                    flags
                }),
            (
                arb_string(),
                arb_bytes(),
                arb_acls(),
                any::<i32>(),
                any::<i64>()
            )
                .prop_map(|(path, data, acl, flags, ttl)| Request::CreateTtl {
                    path,
                    data,
                    acl,
                    flags,
                    ttl
                }),
            (arb_string(), any::<i32>())
                .prop_map(|(path, version)| Request::Delete { path, version }),
            (arb_string(), arb_bytes(), any::<i32>()).prop_map(|(path, data, version)| {
                Request::SetData {
                    path,
                    data,
                    version,
                }
            }),
            (arb_string(), any::<i32>())
                .prop_map(|(path, version)| Request::Check { path, version }),
        ]
        .boxed()
    }

    fn arb_read_op() -> BoxedStrategy<Request> {
        prop_oneof![
            (arb_string(), any::<bool>())
                .prop_map(|(path, watch)| Request::GetData { path, watch }),
            (arb_string(), any::<bool>())
                .prop_map(|(path, watch)| Request::GetChildren { path, watch }),
        ]
        .boxed()
    }

    fn arb_other_request() -> BoxedStrategy<Request> {
        prop_oneof![
            (arb_string(), any::<bool>()).prop_map(|(path, watch)| Request::Exists { path, watch }),
            (arb_string(), any::<bool>())
                .prop_map(|(path, watch)| Request::GetChildren2 { path, watch }),
            arb_string().prop_map(|path| Request::GetAcl { path }),
            (arb_string(), arb_acls(), any::<i32>())
                .prop_map(|(path, acl, version)| Request::SetAcl { path, acl, version }),
            arb_string().prop_map(|path| Request::GetAllChildrenNumber { path }),
            arb_string().prop_map(|prefix| Request::GetEphemerals { prefix }),
            arb_string().prop_map(|path| Request::Sync { path }),
            (any::<i32>(), arb_string(), arb_bytes())
                .prop_map(|(kind, scheme, auth)| Request::Auth { kind, scheme, auth }),
            (any::<i64>(), arb_strings(), arb_strings(), arb_strings()).prop_map(
                |(relative_zxid, data, exist, child)| Request::SetWatches {
                    relative_zxid,
                    data,
                    exist,
                    child
                }
            ),
            (
                any::<i64>(),
                arb_strings(),
                arb_strings(),
                arb_strings(),
                arb_strings(),
                arb_strings()
            )
                .prop_map(
                    |(relative_zxid, data, exist, child, persistent, persistent_recursive)| {
                        Request::SetWatches2 {
                            relative_zxid,
                            data,
                            exist,
                            child,
                            persistent,
                            persistent_recursive,
                        }
                    }
                ),
        ]
        .boxed()
    }

    fn arb_misc_request() -> BoxedStrategy<Request> {
        prop_oneof![
            (arb_string(), any::<i32>()).prop_map(|(path, mode)| Request::AddWatch { path, mode }),
            (arb_string(), any::<i32>())
                .prop_map(|(path, kind)| Request::RemoveWatches { path, kind }),
            (arb_string(), any::<i32>())
                .prop_map(|(path, kind)| Request::CheckWatches { path, kind }),
            Just(Request::WhoAmI),
            Just(Request::CloseSession),
            Just(Request::Ping),
            vec(arb_write_op(), 0..5).prop_map(Request::Multi),
            vec(arb_read_op(), 0..5).prop_map(Request::MultiRead),
        ]
        .boxed()
    }

    fn arb_request() -> impl Strategy<Value = Request> {
        prop_oneof![
            arb_write_op(),
            arb_read_op(),
            arb_other_request(),
            arb_misc_request()
        ]
    }

    fn arb_op_result() -> impl Strategy<Value = OpResult> {
        prop_oneof![
            arb_string().prop_map(|path| OpResult::Create { path }),
            (arb_string(), arb_stat()).prop_map(|(path, stat)| OpResult::Create2 { path, stat }),
            Just(OpResult::Delete),
            arb_stat().prop_map(|stat| OpResult::SetData { stat }),
            Just(OpResult::Check),
            (arb_bytes(), arb_stat()).prop_map(|(data, stat)| OpResult::GetData { data, stat }),
            arb_strings().prop_map(|children| OpResult::GetChildren { children }),
            any::<i32>().prop_map(OpResult::Error),
        ]
    }

    proptest! {
        #[test]
        fn generated_requests_round_trip(xid in any::<i32>(), req in arb_request()) {
            let frame = encode_request(xid, &req);
            let mut r = Reader::new(unframe(&frame));
            let header = RequestHeader::read(&mut r).unwrap();
            prop_assert_eq!(header.xid, xid);
            prop_assert_eq!(decode_request(header.op, r.rest()), Ok(req));
        }

        #[test]
        fn generated_multi_replies_round_trip(
            results in vec(arb_op_result(), 0..6),
            xid in any::<i32>(),
            zxid in any::<i64>(),
        ) {
            let header = ReplyHeader { xid, zxid, err: 0 };
            let resp = Response::Multi(results);
            let frame = encode_reply(&header, &resp);
            prop_assert_eq!(decode_reply(op::MULTI, unframe(&frame)), Ok((header, resp)));
        }

        #[test]
        fn decode_request_never_panics(
            op_index in 0..ALL_OPS.len(),
            bytes in vec(any::<u8>(), 0..256),
        ) {
            let op = ALL_OPS[op_index];
            if let Ok(req) = decode_request(op, &bytes) {
                // A decoded request re-encodes no larger than its input.
                let mut w = Writer::new();
                req.write(&mut w);
                prop_assert!(w.len() <= bytes.len());
            }
            let _ = decode_reply(op, &bytes);
        }

        #[test]
        fn mutated_requests_never_panic(
            req in arb_request(),
            cut in any::<prop::sample::Index>(),
            flip in any::<prop::sample::Index>(),
            byte in any::<u8>(),
        ) {
            let mut w = Writer::new();
            req.write(&mut w);
            let mut bytes = w.into_inner();
            if !bytes.is_empty() {
                let i = flip.index(bytes.len());
                bytes[i] = byte;
                bytes.truncate(cut.index(bytes.len() + 1));
            }
            let _ = decode_request(req.op(), &bytes);
        }

        #[test]
        fn connect_request_read_never_panics(bytes in vec(any::<u8>(), 0..96)) {
            let mut r = Reader::new(&bytes);
            if let Ok(req) = ConnectRequest::read(&mut r) {
                prop_assert!(req.passwd.len() <= bytes.len());
                prop_assert!(r.is_empty() || req.read_only.is_some());
            }
            let _ = ConnectResponse::read(&mut Reader::new(&bytes));
            let _ = decode_event(&bytes);
        }
    }
}
