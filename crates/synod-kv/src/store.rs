//! The replicated state machine as a whole: the versioned keys, the
//! per-client record of the last command applied (so a retried write takes
//! effect once), and snapshots of both.

use crate::apply::{self, WriteTxn};
use crate::auth::{Access, AuthError, AuthStore};
use crate::error::KvError;
use crate::lease::{Leases, LEASE_TTL_MAX};
use crate::mvcc::Mvcc;
use crate::range::KeyRange;
use crate::read;
use crate::revoking::Covered;
use crate::shard::Shard;
use crate::state::{
    self, StateChanges, StateSource, TAG_AUTH, TAG_LEASE, TAG_META, TAG_REVOKING, TAG_SESSION,
    TAG_ZK_SESSION, TAG_ZNODE,
};
use crate::zk::{ZkEvent, ZkTree};
use bytes::Bytes;
use prost::Message as _;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::sync::Arc;
use synod_proto::etcdserverpb::alarm_request::AlarmAction;
use synod_proto::etcdserverpb::request_op::Request;
use synod_proto::etcdserverpb::{
    AlarmMember, AlarmRequest, AlarmResponse, AlarmType, DeleteRangeRequest, LeaseGrantRequest,
    LeaseGrantResponse, LeaseRevokeResponse, Member, RangeRequest, RangeResponse, RequestOp,
    ResponseHeader, TxnRequest,
};
use synod_proto::mvccpb::Event;
use synod_proto::synodpb::zk_op::Op as ZkOpKind;
use synod_proto::synodpb::{
    command::Op, error::Kind, outcome, AuthDone, AuthFence, AuthState, Caller, Command, Error,
    KeyHistory, Lease, LeaseDetached, MemberTable, Outcome, Reserved, Revoking, Session,
    SessionExpire, SessionOutcome, Snapshot, SplitShard, ZNode, ZkOutcome, ZkResult, ZkSession,
    ZkWrite,
};

/// Sessions remembered; the least recently active is forgotten first. A
/// session is a node incarnation (its writes, barriers and own commands),
/// so this many are only reached after as many restarts; the sessions of
/// long-dead incarnations are the ones that go.
pub const SESSIONS_MAX: usize = 65_536;
/// Outcomes one session keeps: its writes not yet known answered. A node
/// holds at most `PENDING_WRITES_MAX` (16,384) writes in flight; past this
/// bound the oldest outcome is forgotten and its seq counts as answered,
/// so a later copy of it is refused, never applied twice.
pub const SESSION_OUTCOMES_MAX: usize = 65_536;
/// The most revisions one `ReserveRevisions` may take: a leader reserves
/// in batches far smaller, so a larger count is a bug or hostile.
pub const RESERVE_REVISIONS_MAX: u64 = 1 << 20;

/// What applying one command produced.
#[derive(Clone, Debug, PartialEq)]
pub struct Applied {
    /// The answer for the client (a response or a refusal).
    pub outcome: Outcome,
    /// Changes for watchers, in order; empty when nothing changed.
    pub events: Vec<Event>,
    /// The store's revision after the command.
    pub revision: i64,
    /// The command was a retry of one already applied; nothing changed.
    pub duplicate: bool,
    /// Changes to the ZooKeeper tree, in order, for its watchers.
    pub zk_events: Vec<ZkEvent>,
}

/// What the state machine remembers of one client session.
///
/// Invariant: every key of `outcomes` is `>= below`; a seq below `below`
/// was answered (its client said so, or its outcome was pushed out by
/// `SESSION_OUTCOMES_MAX`) and is never applied again.
#[derive(Clone, Debug, Default, PartialEq)]
struct SessionEntry {
    below: u64,
    outcomes: BTreeMap<u64, Outcome>,
    /// The revision of its last applied command, for recency.
    revision: i64,
}

/// What changed since the last [`take_changes`](KvStore::take_changes)
/// beyond the versions (which journal themselves).
#[derive(Clone, Debug, Default)]
struct Dirty {
    meta: bool,
    /// Sessions changed: each is rewritten once per round, with its
    /// window of outcomes.
    sessions: BTreeSet<u64>,
    leases: BTreeSet<i64>,
    revoking: BTreeSet<i64>,
    auth: bool,
}

/// etcd's key-value store, deterministic: the same commands in the same
/// order give the same state, responses and events on every replica.
#[derive(Clone, Debug, Default)]
pub struct KvStore {
    mvcc: Mvcc,
    leases: Leases,
    /// Raised alarms: `(member, alarm type)`.
    alarms: BTreeSet<(u64, i32)>,
    /// The member table since the first membership change (empty before:
    /// the members are then the ones the cluster was started with).
    members: Vec<Member>,
    sessions: BTreeMap<u64, SessionEntry>,
    /// `(last revision, client)`, to forget the least recently active.
    session_order: BTreeSet<(i64, u64)>,
    dirty: Dirty,
    /// Long values of journaled batches not yet written, oldest first.
    flushing: VecDeque<Vec<(Bytes, i64)>>,
    /// Events carry the previous version's value; without it they carry
    /// its metadata only (no disk read per overwrite).
    prev_values_off: bool,
    /// ZooKeeper's tree and sessions (design 0012).
    zk: ZkTree,
    /// Tree events of the command being applied.
    zk_events: Vec<ZkEvent>,
    /// Users, roles and whether they are enforced.
    auth: AuthStore,
    /// The keys this store holds, when it is a shard (design 0016);
    /// `None`: every key (an unsharded cluster's group, the meta group).
    shard: Option<Shard>,
    /// The meta group of a sharded cluster (design 0017): leases live
    /// here, their keys in the shards, so a revocation is recorded in
    /// `revoking` until every shard deleted the lease's keys.
    lease_keys_in_shards: bool,
    /// Revoked leases whose keys some shard may still hold.
    revoking: BTreeMap<i64, Covered>,
    /// What the last split command cut off: the new group's id and store,
    /// for the runtime to take (`take_split`).
    split_off: Option<Box<(u64, KvStore)>>,
    /// Negative control: a shard keeps taking the keys a split gave away.
    #[cfg(feature = "mutations")]
    unfenced: bool,
    /// Negative control: a shard applies client writes whatever their
    /// auth fence says (design 0018).
    #[cfg(feature = "mutations")]
    auth_unfenced: bool,
}

/// Equal state: the journal and where values are kept do not count.
impl PartialEq for KvStore {
    fn eq(&self, other: &KvStore) -> bool {
        self.mvcc == other.mvcc
            && self.leases == other.leases
            && self.alarms == other.alarms
            && self.members == other.members
            && self.sessions == other.sessions
            && self.session_order == other.session_order
            && self.zk == other.zk
            && self.auth == other.auth
            && self.shard == other.shard
            && self.lease_keys_in_shards == other.lease_keys_in_shards
            && self.revoking == other.revoking
    }
}

impl KvStore {
    /// The keys this store holds, when it is a shard (`None`: every key).
    pub fn shard(&self) -> Option<&Shard> {
        self.shard.as_ref()
    }

    /// Records the range of a shard the cluster was started with (its
    /// split points are the cluster's, the same on every replica); a
    /// range the store recorded already, by a split, stays.
    pub fn set_shard_if_unset(&mut self, shard: Shard) {
        if self.shard.is_none() {
            self.shard = Some(shard);
            self.dirty.meta = true;
        }
    }

    /// Makes this store the meta group of a sharded cluster, whose
    /// leases' keys live in the shards (design 0017); kept on disk.
    pub fn set_lease_keys_in_shards(&mut self) {
        if !self.lease_keys_in_shards {
            self.lease_keys_in_shards = true;
            self.dirty.meta = true;
        }
    }

    /// Revoked leases whose keys some shard may still hold, with the
    /// ranges known clean: the work of whoever drives revocations.
    pub fn revoking(&self) -> &BTreeMap<i64, Covered> {
        &self.revoking
    }

    /// Whether lease `id` may still have keys attached in some shard:
    /// a client's revocation is answered once it is not.
    pub fn is_revoking(&self, id: i64) -> bool {
        self.revoking.contains_key(&id)
    }

    /// The leases of `asked` a stamped write may attach keys to now: those
    /// granted and not revoked (a ZooKeeper session's lease is not one:
    /// its end deletes no shard's keys).
    pub fn live_leases(&self, asked: &[i64]) -> Vec<i64> {
        asked
            .iter()
            .copied()
            .filter(|id| self.leases.contains(*id) && self.zk.session(*id).is_none())
            .collect()
    }

    /// The auth store as a shard's stamped writes are fenced by (design
    /// 0018): whether it is on and its revision, now.
    pub fn auth_fence(&self) -> AuthFence {
        AuthFence {
            enabled: self.auth.enabled(),
            revision: self.auth.revision(),
        }
    }

    /// Whether leases here are stubs: a shard lists the keys attached to
    /// each lease it holds keys of, the lease itself lives in the meta
    /// group.
    fn lease_stubs(&self) -> bool {
        self.shard.is_some()
    }

    /// The new group and store the last applied split cut off, once: the
    /// runtime hosts it from the same write as the split's slot.
    pub fn take_split(&mut self) -> Option<(u64, KvStore)> {
        self.split_off.take().map(|b| *b)
    }

    /// Turns this store into the broken variant that keeps taking writes
    /// of keys it split off (the simulator's negative control); kept
    /// across snapshots installed into it.
    #[cfg(feature = "mutations")]
    pub fn set_unfenced(&mut self, on: bool) {
        self.unfenced = on;
    }

    /// Turns this shard into the broken variant that applies a client's
    /// write whatever the auth store did since its node judged it (the
    /// simulator's negative control); kept across snapshots.
    #[cfg(feature = "mutations")]
    pub fn set_auth_unfenced(&mut self, on: bool) {
        self.auth_unfenced = on;
    }

    fn is_unfenced(&self) -> bool {
        #[cfg(feature = "mutations")]
        return self.unfenced;
        #[cfg(not(feature = "mutations"))]
        false
    }

    /// Refuses a read of keys outside this shard (it split since the
    /// node routed the read).
    fn check_shard(&self, r: &RangeRequest) -> Result<(), KvError> {
        match &self.shard {
            Some(s) if !s.holds(&KeyRange::from_etcd(&r.key, &r.range_end)) => {
                Err(KvError::WrongShard)
            }
            _ => Ok(()),
        }
    }

    /// Cuts this shard at `s.at`: the keys from there on, with every
    /// version, become the store of new group `s.child`, which starts at
    /// this store's revision and compaction point (K1, K2 in `shard`).
    fn split(&mut self, s: &SplitShard) -> Result<outcome::Result, KvError> {
        let Some(shard) = &self.shard else {
            return Err(KvError::InvalidArgument(crate::validate::SPLIT_NOT_SHARD));
        };
        if s.child == 0 || !shard.may_split_at(&s.at) {
            return Err(KvError::InvalidArgument(crate::validate::SPLIT_OUTSIDE));
        }
        let moving = KeyRange::Span {
            start: s.at.clone(),
            end: shard.end.clone(),
        };
        // The stubs of the leases with keys that move go with them.
        let moved_leased: Vec<(i64, Bytes)> = self
            .mvcc
            .scan(&moving, self.mvcc.revision())
            .filter(|(_, v)| v.lease != 0)
            .map(|(k, v)| (v.lease, k.clone()))
            .collect();
        let (left, right) = shard.split(s.at.clone(), s.child);
        let moved = self.mvcc.split_off(&s.at);
        let mvcc = Mvcc::from_parts(moved, self.mvcc.revision(), self.mvcc.compact_revision())
            .expect("a shard's own versions are well formed");
        let mut child = KvStore {
            mvcc,
            shard: Some(right),
            ..KvStore::default()
        };
        for (lease, key) in &moved_leased {
            self.leases.detach(*lease, key);
            child.leases.attach(*lease, key, true);
        }
        let done = left.to_proto();
        self.shard = Some(left);
        self.split_off = Some(Box::new((s.child, child)));
        Ok(outcome::Result::Split(done))
    }

    /// The revision of the last write.
    pub fn revision(&self) -> i64 {
        self.mvcc.revision()
    }

    /// Reads below this revision fail with `Compacted`.
    pub fn compact_revision(&self) -> i64 {
        self.mvcc.compact_revision()
    }

    /// ZooKeeper's tree (read-only).
    pub fn zk(&self) -> &ZkTree {
        &self.zk
    }

    /// Users, roles and whether they are enforced (read-only).
    pub fn auth(&self) -> &AuthStore {
        &self.auth
    }

    /// The versioned keys (read-only).
    pub fn mvcc(&self) -> &Mvcc {
        &self.mvcc
    }

    /// Granted leases and their keys (read-only).
    pub fn leases(&self) -> &Leases {
        &self.leases
    }

    /// Raised alarms, in (member, type) order.
    pub fn alarms(&self) -> Vec<AlarmMember> {
        self.alarms
            .iter()
            .map(|&(member_id, alarm)| AlarmMember { member_id, alarm })
            .collect()
    }

    /// The replicated member table; empty until the first membership
    /// change.
    pub fn members(&self) -> &[Member] {
        &self.members
    }

    /// True while the NOSPACE alarm is raised by any member.
    pub fn out_of_space(&self) -> bool {
        self.alarms
            .iter()
            .any(|&(_, a)| a == AlarmType::Nospace as i32)
    }

    /// Every change to `range` since revision `from` (see
    /// the history function of the read module): the past part of a watch.
    pub fn history(&self, range: &KeyRange, from: i64) -> Result<Vec<Event>, KvError> {
        read::history(&self.mvcc, range, from)
    }

    /// Checks the store's invariants (MVCC's, and that lease attachments
    /// match the live keys); panics naming the broken one.
    pub fn check_invariants(&self) {
        self.mvcc.check_invariants();
        if let Err(broken) = self.check_shard_keys() {
            panic!("shard invariant K1 broken: {broken}");
        }
        let mut attached: BTreeMap<i64, BTreeSet<Bytes>> = BTreeMap::new();
        for (key, v) in self.mvcc.scan(&KeyRange::all(), self.mvcc.revision()) {
            if v.lease != 0 {
                assert!(
                    self.leases.contains(v.lease),
                    "key {key:?} names missing lease {:x}",
                    v.lease
                );
                attached.entry(v.lease).or_default().insert(key.clone());
            }
        }
        for (id, lease) in self.leases.iter() {
            let expected = attached.remove(&id).unwrap_or_default();
            assert_eq!(lease.keys, expected, "lease {id:x} key set drifted");
        }
        self.zk.check_invariants();
        for s in self.zk.sessions() {
            assert!(
                self.leases.contains(s.id),
                "ZooKeeper session {:x} has no lease",
                s.id
            );
        }
    }

    /// etcd's HashKV: a CRC-32 over every retained version at or below
    /// `revision` (the current one when 0). Replicas that applied the same
    /// log agree on it, so differing hashes at one revision reveal
    /// divergence. Returns `(hash, revision hashed, compaction point)`.
    pub fn hash_kv(&self, revision: i64) -> Result<(u32, i64, i64), KvError> {
        let mut h = crc32fast::Hasher::new();
        let (rev, compact) = self.hash_kv_into(revision, &mut h)?;
        Ok((h.finalize(), rev, compact))
    }

    /// [`hash_kv`](KvStore::hash_kv) of the key space `shards` hold
    /// together, given in key order and each applied at least through
    /// `revision` (> 0): every shard's versions feed one hash, so it is
    /// the hash an unsharded store of the same versions gives, whatever
    /// the split points. Returns the hash, `revision` and the highest
    /// compaction revision.
    pub fn hash_kv_shards(shards: &[&KvStore], revision: i64) -> Result<(u32, i64, i64), KvError> {
        let mut h = crc32fast::Hasher::new();
        let mut compact = 0;
        for kv in shards {
            compact = compact.max(kv.hash_kv_into(revision, &mut h)?.1);
        }
        Ok((h.finalize(), revision, compact))
    }

    /// Feeds `hasher` what [`hash_kv`](KvStore::hash_kv) hashes, in key
    /// order; returns the revision hashed at and the compaction revision.
    fn hash_kv_into(
        &self,
        revision: i64,
        h: &mut crc32fast::Hasher,
    ) -> Result<(i64, i64), KvError> {
        let current = self.mvcc.revision();
        let rev = if revision > 0 { revision } else { current };
        if rev > current {
            return Err(KvError::FutureRevision {
                requested: rev,
                current,
            });
        }
        let compact = self.mvcc.compact_revision();
        if revision > 0 && rev < compact {
            return Err(KvError::Compacted {
                requested: rev,
                compact_revision: compact,
            });
        }
        for (key, versions) in self.mvcc.versions(&KeyRange::all()) {
            for v in versions.iter().filter(|v| v.mod_revision <= rev) {
                h.update(key);
                h.update(&v.mod_revision.to_be_bytes());
                h.update(&v.create_revision.to_be_bytes());
                h.update(&v.version.to_be_bytes());
                h.update(&v.lease.to_be_bytes());
                h.update(&self.mvcc.value(key, v));
            }
        }
        Ok((rev, compact))
    }

    /// The recorded outcome of `(client, seq)`, if that command was the
    /// client's last one applied: how a node answers a write that reached
    /// it inside an installed snapshot rather than through the log.
    pub fn session_outcome(&self, client: u64, seq: u64) -> Option<&Outcome> {
        self.sessions.get(&client)?.outcomes.get(&seq)
    }

    /// Every session: its client and the revision its last applied
    /// command left (what a [`SessionExpire`] names).
    pub fn sessions(&self) -> impl Iterator<Item = (u64, i64)> + '_ {
        self.sessions.iter().map(|(c, s)| (*c, s.revision))
    }

    /// Forgets each named session whose last command is still the one
    /// named: the leader saw it idle long past any retry of its commands.
    fn expire_sessions(&mut self, r: &SessionExpire) -> Result<outcome::Result, KvError> {
        if r.clients.len() != r.revisions.len() {
            return Err(KvError::InvalidArgument(
                "etcdserver: session expiry lists differ in length",
            ));
        }
        let mut expired = SessionExpire::default();
        for (&client, &revision) in r.clients.iter().zip(&r.revisions) {
            if self
                .sessions
                .get(&client)
                .is_some_and(|s| s.revision == revision)
            {
                self.sessions.remove(&client);
                self.session_order.remove(&(revision, client));
                self.dirty.sessions.insert(client);
                expired.clients.push(client);
                expired.revisions.push(revision);
            }
        }
        Ok(outcome::Result::SessionExpire(expired))
    }

    /// Serves a range read at the store's current state.
    pub fn range(&self, r: &RangeRequest) -> Result<RangeResponse, KvError> {
        self.check_shard(r)?;
        read::range(&self.mvcc, r, self.mvcc.revision())
    }

    /// Serves a range read at the store's current state, leaving the long
    /// values that are only on disk to [`RangeAnswer::fill`], which may
    /// run on another thread while this store applies on: it reads from a
    /// view of the disk pinned now.
    pub fn range_deferred(&self, r: &RangeRequest) -> Result<RangeAnswer, KvError> {
        self.check_shard(r)?;
        let (response, fetch) = read::range_deferred(&self.mvcc, r, self.mvcc.revision())?;
        let source = if fetch.is_empty() {
            None
        } else {
            let source = self.mvcc.source().expect("values on disk have a source");
            Some(source.pin().unwrap_or(source))
        };
        Ok(RangeAnswer {
            response,
            fetch,
            source,
        })
    }

    /// Applies one chosen command. Never fails: a refused command yields an
    /// error outcome and leaves the store unchanged.
    pub fn apply(&mut self, command: &Command) -> Applied {
        if let Some(s) = self.sessions.get(&command.client) {
            let known = s.outcomes.get(&command.seq);
            if known.is_some() || command.seq < s.below {
                // A retry of a command already applied, or a late copy of
                // one its client no longer waits for.
                let outcome = match known {
                    Some(outcome) => outcome.clone(),
                    None => error_outcome(&KvError::InvalidArgument(
                        "etcdserver: request is a stale retry",
                    )),
                };
                return Applied {
                    outcome,
                    events: Vec::new(),
                    revision: self.mvcc.revision(),
                    duplicate: true,
                    zk_events: Vec::new(),
                };
            }
        }
        let op = command.op.as_ref();
        if let (Some(shard), Some(op)) = (&self.shard, op) {
            if !shard.holds_op(op) && !self.is_unfenced() {
                // Routed before a split: refused unremembered, the node
                // routes it again (design 0016).
                return self.refuse_stale(KvError::WrongShard);
            }
        }
        let stamp = match Stamp::of(command, self.mvcc.revision()) {
            Ok(stamp) => stamp,
            Err(refused) => return self.refuse_stale(refused),
        };
        let (outcome, events) = match self.permitted(command, op) {
            Ok(()) => self.execute(op, stamp, &command.live_leases),
            Err(e) => (error_outcome(&e), Vec::new()),
        };
        if let Stamp::Above(s) = stamp {
            // The fence: whatever the command did, no stamp at or below
            // its own applies after it (design 0011).
            self.mvcc.set_revision(s);
        }
        self.dirty.meta = true;
        let revision = self.mvcc.revision();
        self.remember(command, revision, &outcome);
        Applied {
            outcome,
            events,
            revision,
            duplicate: false,
            zk_events: std::mem::take(&mut self.zk_events),
        }
    }

    /// Whether the command's sender may run it, judged by the users and
    /// roles as they are now (etcd's checks, made where the command is
    /// ordered). The node's own commands carry no caller and pass.
    ///
    /// A shard holds no users or roles: its node judged the command by the
    /// meta group's (`judge_routed`), and the stamp's auth fence says
    /// whether they changed since (design 0018).
    fn permitted(&self, command: &Command, op: Option<&Op>) -> Result<(), KvError> {
        let Some(caller) = command.caller.as_ref() else {
            return Ok(());
        };
        if self.shard.is_some() {
            #[cfg(feature = "mutations")]
            if self.auth_unfenced {
                return Ok(());
            }
            return match &command.auth_fence {
                None => Err(KvError::InvalidArgument(crate::validate::AUTH_UNFENCED)),
                Some(f) if f.enabled && caller.auth_revision < f.revision => {
                    Err(AuthError::AuthOldRevision.into())
                }
                Some(_) => Ok(()),
            };
        }
        let auth = &self.auth;
        if !auth.enabled() {
            return Ok(());
        }
        if caller.auth_revision < auth.revision() {
            return Err(AuthError::AuthOldRevision.into());
        }
        // A lease's keys are written by whoever revokes it or attaches
        // to it: every one of them must be writable (admins pass).
        let lease_keys = |id: i64| -> Vec<Bytes> {
            self.leases
                .get(id)
                .map(|l| l.keys.iter().cloned().collect())
                .unwrap_or_default()
        };
        check_access(auth, &caller.user, op, &lease_keys)
    }

    /// A stamped command that may not apply any more: changes nothing and
    /// is not remembered, so its node can stamp it again under the same
    /// `(client, seq)`; every copy with the old stamp is refused alike.
    fn refuse_stale(&self, e: KvError) -> Applied {
        Applied {
            outcome: error_outcome(&e),
            events: Vec::new(),
            revision: self.mvcc.revision(),
            duplicate: true,
            zk_events: Vec::new(),
        }
    }

    fn execute(&mut self, op: Option<&Op>, stamp: Stamp, live: &[i64]) -> (Outcome, Vec<Event>) {
        match stamp {
            Stamp::None => {}
            _ if !op.is_some_and(takes_stamp) => {
                return (
                    error_outcome(&KvError::InvalidArgument(crate::validate::STAMP_NOT_KV)),
                    Vec::new(),
                )
            }
            Stamp::ReadAt(s) if s < self.mvcc.compact_revision() => {
                let e = KvError::Compacted {
                    requested: s,
                    compact_revision: self.mvcc.compact_revision(),
                };
                return (error_outcome(&e), Vec::new());
            }
            // A compaction may name any revision up to its own stamp.
            Stamp::Above(s) if matches!(op, Some(Op::Compact(_))) => self.mvcc.set_revision(s),
            _ => {}
        }
        if self.out_of_space() && adds_data(op) {
            return (error_outcome(&KvError::NoSpace), Vec::new());
        }
        let result = match op {
            Some(Op::LeaseGrant(r)) => self.grant(r).map(outcome::Result::LeaseGrant),
            Some(Op::LeaseRevoke(r)) => {
                if !self.leases.contains(r.id) {
                    Err(KvError::LeaseNotFound(r.id))
                } else {
                    let events = self.revoke(r.id);
                    let header = self.header();
                    let response = LeaseRevokeResponse { header };
                    return (ok(outcome::Result::LeaseRevoke(response)), events);
                }
            }
            Some(Op::LeaseExpire(r)) => {
                let mut events = Vec::new();
                for &id in &r.ids {
                    if self.leases.contains(id) {
                        events.extend(self.revoke(id));
                    }
                }
                let header = self.header();
                let response = LeaseRevokeResponse { header };
                return (ok(outcome::Result::LeaseRevoke(response)), events);
            }
            Some(Op::SessionExpire(r)) => self.expire_sessions(r),
            Some(Op::Zk(w)) => return self.zk_write(w),
            Some(Op::Auth(w)) => match self.auth.apply(w) {
                Ok(()) => {
                    self.dirty.auth = true;
                    Ok(outcome::Result::Auth(AuthDone {
                        revision: self.auth.revision(),
                    }))
                }
                Err(e) => Err(e.into()),
            },
            Some(Op::ReserveRevisions(r)) => self.reserve_revisions(r.count),
            Some(Op::LeaseDetach(d)) => {
                let Some(shard) = &self.shard else {
                    return (
                        error_outcome(&KvError::InvalidArgument(crate::validate::DETACH_NOT_SHARD)),
                        Vec::new(),
                    );
                };
                if d.ids.len() > crate::revoking::DETACH_IDS_MAX {
                    let e = KvError::InvalidArgument(crate::validate::DETACH_TOO_MANY);
                    return (error_outcome(&e), Vec::new());
                }
                let range = shard.to_proto();
                let events = self.delete_lease_keys(&d.ids, stamp);
                return (ok(outcome::Result::Detached(range)), events);
            }
            Some(Op::LeaseDetached(d)) => self.lease_detached(d),
            Some(Op::Split(r)) => self.split(r),
            Some(Op::Alarm(r)) => Ok(outcome::Result::Alarm(self.alarm(r))),
            Some(Op::MemberTable(t)) => {
                for m in &t.members {
                    match self.members.binary_search_by_key(&m.id, |x| x.id) {
                        Ok(i) => self.members[i] = m.clone(),
                        Err(i) => self.members.insert(i, m.clone()),
                    }
                }
                self.members.retain(|m| !t.removed.contains(&m.id));
                Ok(outcome::Result::MemberTable(MemberTable {
                    members: self.members.clone(),
                    removed: Vec::new(),
                }))
            }
            _ => return self.write(op, stamp, live),
        };
        match result {
            Ok(r) => (ok(r), Vec::new()),
            Err(e) => (error_outcome(&e), Vec::new()),
        }
    }

    /// Takes `count` revisions for the leader's timestamp oracle: the
    /// revision jumps, nothing else changes (design 0011).
    fn reserve_revisions(&mut self, count: u64) -> Result<outcome::Result, KvError> {
        if count == 0 || count > RESERVE_REVISIONS_MAX {
            return Err(KvError::InvalidArgument(
                "etcdserver: a reservation takes 1 to 2^20 revisions",
            ));
        }
        let first = self.mvcc.revision() + 1;
        let last = self.mvcc.revision() + count as i64;
        self.mvcc.set_revision(last);
        Ok(outcome::Result::Reserved(Reserved { first, last }))
    }

    fn header(&self) -> Option<ResponseHeader> {
        Some(ResponseHeader {
            revision: self.mvcc.revision(),
            ..ResponseHeader::default()
        })
    }

    fn grant(&mut self, r: &LeaseGrantRequest) -> Result<LeaseGrantResponse, KvError> {
        if r.id <= 0 {
            return Err(KvError::InvalidArgument(
                "etcdserver: lease id must be picked before proposing",
            ));
        }
        if self.lease_stubs() {
            return Err(KvError::InvalidArgument(crate::validate::LEASE_IN_SHARD));
        }
        if self.leases.contains(r.id) || self.revoking.contains_key(&r.id) {
            // A lease whose keys the shards are still deleting cannot be
            // granted again yet: a put checked against the new grant
            // could be deleted as the old one's.
            return Err(KvError::LeaseExists);
        }
        if r.ttl > LEASE_TTL_MAX {
            return Err(KvError::LeaseTtlTooLarge);
        }
        self.leases.grant(r.id, r.ttl);
        self.dirty.leases.insert(r.id);
        Ok(LeaseGrantResponse {
            header: self.header(),
            id: r.id,
            ttl: r.ttl,
            error: String::new(),
        })
    }

    /// Deletes every key attached to lease `id` at one new revision, then
    /// forgets the lease; the meta group of a sharded cluster records it
    /// as revoking until the shards deleted its keys there.
    fn revoke(&mut self, id: i64) -> Vec<Event> {
        let events = self.delete_lease_keys(&[id], Stamp::None);
        let gone = self.leases.remove(id).expect("revoked lease exists");
        self.dirty.leases.insert(id);
        assert!(gone.keys.is_empty(), "lease {id:x} keys left after revoke");
        // A ZooKeeper session is a lease: its ephemerals go with it, at
        // one revision of their own.
        let zk_session = self.zk.session(id).is_some();
        let zxid = self.mvcc.revision() + 1;
        let zk_events = self.zk.end_session(id, zxid);
        if !zk_events.is_empty() {
            self.mvcc.set_revision(zxid);
        }
        self.zk_events.extend(zk_events);
        if self.lease_keys_in_shards && !zk_session {
            self.revoking.insert(id, Covered::default());
            self.dirty.revoking.insert(id);
        }
        events
    }

    /// A shard recorded that its range holds no key of the revoked leases
    /// `d.ids`: once such ranges cover the key space, a revocation is
    /// complete (design 0017).
    fn lease_detached(&mut self, d: &LeaseDetached) -> Result<outcome::Result, KvError> {
        if !self.lease_keys_in_shards {
            return Err(KvError::InvalidArgument(crate::validate::DETACHED_NOT_META));
        }
        let range = d
            .range
            .as_ref()
            .and_then(|r| Shard::from_proto(r).ok())
            .ok_or(KvError::InvalidArgument(crate::validate::DETACHED_RANGE))?;
        if d.ids.len() > crate::revoking::DETACH_IDS_MAX {
            return Err(KvError::InvalidArgument(crate::validate::DETACH_TOO_MANY));
        }
        for id in &d.ids {
            if let Some(covered) = self.revoking.get_mut(id) {
                covered.add(range.start.clone(), range.end.clone());
                if covered.is_full() {
                    self.revoking.remove(id);
                }
                self.dirty.revoking.insert(*id);
            }
        }
        Ok(outcome::Result::Detached(range.to_proto()))
    }

    /// Deletes every key attached to the leases `ids` here at one
    /// revision (the stamp's, when stamped); a stub is forgotten with its
    /// last key.
    fn delete_lease_keys(&mut self, ids: &[i64], stamp: Stamp) -> Vec<Event> {
        let keys: Vec<Bytes> = ids
            .iter()
            .filter_map(|id| self.leases.get(*id))
            .flat_map(|l| l.keys.iter().cloned())
            .collect();
        let deletes: Vec<RequestOp> = keys
            .into_iter()
            .map(|key| RequestOp {
                request: Some(Request::RequestDeleteRange(DeleteRangeRequest {
                    key,
                    ..DeleteRangeRequest::default()
                })),
            })
            .collect();
        let txn = TxnRequest {
            success: deletes,
            ..TxnRequest::default()
        };
        let (outcome, events) = self.write(Some(&Op::Txn(txn)), stamp, &[]);
        assert!(
            !matches!(outcome.result, Some(outcome::Result::Error(_))),
            "deleting a lease's keys cannot fail"
        );
        for id in ids {
            assert!(
                self.leases.get(*id).is_none_or(|l| l.keys.is_empty()),
                "lease {id:x} keys left after deleting them"
            );
        }
        events
    }

    /// A ZooKeeper write: a session opened or closed, or ops on the tree
    /// (one revision if they change anything, nothing if one fails).
    fn zk_write(&mut self, w: &ZkWrite) -> (Outcome, Vec<Event>) {
        let zk_ok = |results| ok(outcome::Result::Zk(ZkOutcome { results }));
        let single = w.ops.len() == 1 && !w.multi;
        match w.ops.first().and_then(|o| o.op.as_ref()) {
            Some(ZkOpKind::OpenSession(s)) if single => {
                if s.id <= 0
                    || s.timeout_ms <= 0
                    || s.password.len() > 64
                    || self.leases.contains(s.id)
                {
                    return (
                        error_outcome(&KvError::InvalidArgument(
                            "synod: a ZooKeeper session id must be new and positive",
                        )),
                        Vec::new(),
                    );
                }
                let ttl_s = (i64::from(s.timeout_ms) + 999) / 1000;
                self.leases.grant(s.id, ttl_s.max(crate::LEASE_TTL_MIN_S));
                self.dirty.leases.insert(s.id);
                self.zk.open_session(ZkSession {
                    id: s.id,
                    timeout_ms: s.timeout_ms,
                    password: s.password.clone(),
                });
                return (zk_ok(vec![ZkResult::default()]), Vec::new());
            }
            Some(ZkOpKind::CloseSession(s)) if single => {
                // Only a ZooKeeper session's lease: an etcd lease with the
                // same number is not the client's to revoke.
                let events = if self.zk.session(s.id).is_some() && self.leases.contains(s.id) {
                    self.revoke(s.id)
                } else {
                    Vec::new()
                };
                return (zk_ok(vec![ZkResult::default()]), events);
            }
            Some(ZkOpKind::OpenSession(_)) | Some(ZkOpKind::CloseSession(_)) => {
                return (
                    error_outcome(&KvError::InvalidArgument(
                        "synod: a ZooKeeper session op travels alone",
                    )),
                    Vec::new(),
                );
            }
            _ => {}
        }
        let zxid = self.mvcc.revision() + 1;
        // Only a ZooKeeper session (with its lease) owns ephemerals: an
        // etcd lease with the same number is not one.
        let session = w.session;
        let live =
            session > 0 && self.zk.session(session).is_some() && self.leases.contains(session);
        let alive = move |id: i64| live && id == session;
        let (outcome, events, wrote) = self.zk.write(w, zxid, &alive);
        if wrote {
            self.mvcc.set_revision(zxid);
        }
        self.zk_events.extend(events);
        (zk_ok(outcome.results), Vec::new())
    }

    fn alarm(&mut self, r: &AlarmRequest) -> AlarmResponse {
        let pairs = |set: &mut dyn Iterator<Item = (u64, i32)>| -> Vec<AlarmMember> {
            set.map(|(member_id, alarm)| AlarmMember { member_id, alarm })
                .collect()
        };
        let alarms = match AlarmAction::try_from(r.action) {
            Ok(AlarmAction::Activate) if r.alarm != AlarmType::None as i32 => {
                let fresh = self.alarms.insert((r.member_id, r.alarm));
                pairs(&mut fresh.then_some((r.member_id, r.alarm)).into_iter())
            }
            Ok(AlarmAction::Deactivate) => {
                let matching: Vec<(u64, i32)> = self
                    .alarms
                    .iter()
                    .filter(|&&(m, a)| {
                        (r.member_id == 0 || m == r.member_id)
                            && (r.alarm == AlarmType::None as i32 || a == r.alarm)
                    })
                    .copied()
                    .collect();
                for pair in &matching {
                    self.alarms.remove(pair);
                }
                pairs(&mut matching.into_iter())
            }
            _ => self.alarms(),
        };
        AlarmResponse {
            header: self.header(),
            alarms,
        }
    }

    /// Runs a key-value write (put, delete, txn, compact) as one write
    /// transaction: one new revision if it changes anything, nothing if it
    /// fails.
    ///
    /// A shard (design 0017) attaches keys only to the leases in `live`,
    /// those the timestamp oracle found live when it stamped the command.
    fn write(&mut self, op: Option<&Op>, stamp: Stamp, live: &[i64]) -> (Outcome, Vec<Event>) {
        // What reads before the first write see, and what writes carry.
        let (base, rev) = match stamp {
            Stamp::None => (self.mvcc.revision(), self.mvcc.revision() + 1),
            // Nothing lies between the store's revision and the stamp.
            Stamp::Above(s) => (s, s),
            // Read-only (checked by `Stamp::of`): `rev` is never written.
            Stamp::ReadAt(s) => (s, s + 1),
        };
        let leases = &self.leases;
        let stubs = self.lease_stubs();
        let exists = |id: i64| {
            if stubs {
                live.contains(&id)
            } else {
                leases.contains(id)
            }
        };
        let mark = self.mvcc.journal.mark();
        let mut txn = WriteTxn {
            mvcc: &mut self.mvcc,
            base,
            rev,
            wrote: false,
            events: Vec::new(),
            leases: &exists,
            prev_values: !self.prev_values_off,
        };
        let result = match op {
            Some(Op::Put(r)) => txn.put(r).map(outcome::Result::Put),
            Some(Op::DeleteRange(r)) => Ok(outcome::Result::DeleteRange(txn.delete_range(r))),
            Some(Op::Txn(r)) => txn.txn(r).map(outcome::Result::Txn),
            Some(Op::Compact(r)) => apply::compact(txn.mvcc, r).map(outcome::Result::Compact),
            _ => Err(KvError::InvalidArgument("etcdserver: empty command")),
        };
        let (wrote, events) = (txn.wrote, std::mem::take(&mut txn.events));
        assert!(
            !(wrote && matches!(stamp, Stamp::ReadAt(_))),
            "a read at a past stamp wrote"
        );
        match result {
            Ok(r) => {
                if wrote {
                    self.mvcc.set_revision(rev);
                }
                self.leases.follow(&events, stubs);
                (ok(r), events)
            }
            Err(e) => {
                self.rollback(rev, &events);
                self.mvcc.journal.rollback(mark);
                (error_outcome(&e), Vec::new())
            }
        }
    }

    /// Undoes a failed write transaction: every version it wrote carries
    /// `rev`, above anything that existed before.
    fn rollback(&mut self, rev: i64, events: &[Event]) {
        let keys: BTreeSet<&Bytes> = events
            .iter()
            .filter_map(|e| e.kv.as_ref().map(|kv| &kv.key))
            .collect();
        for key in keys {
            self.mvcc.undo(key, rev);
        }
    }

    fn remember(&mut self, command: &Command, revision: i64, outcome: &Outcome) {
        let client = command.client;
        let mut session = match self.sessions.remove(&client) {
            Some(old) => {
                self.session_order.remove(&(old.revision, client));
                old
            }
            None => SessionEntry::default(),
        };
        self.dirty.sessions.insert(client);
        session.revision = revision;
        session.outcomes.insert(command.seq, outcome.clone());
        if command.answered_below > session.below {
            session.below = command.answered_below;
            session.outcomes = session.outcomes.split_off(&session.below);
        }
        while session.outcomes.len() > SESSION_OUTCOMES_MAX {
            let (oldest, _) = session.outcomes.pop_first().expect("over the bound");
            session.below = oldest + 1;
        }
        self.sessions.insert(client, session);
        self.session_order.insert((revision, client));
        while self.sessions.len() > SESSIONS_MAX {
            let (_, oldest) = self
                .session_order
                .pop_first()
                .expect("orders every session");
            self.sessions.remove(&oldest);
            self.dirty.sessions.insert(oldest);
        }
    }

    /// The whole state, for a replica that must catch up or a backup.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            revision: self.mvcc.revision(),
            compact_revision: self.mvcc.compact_revision(),
            keys: self
                .mvcc
                .versions(&KeyRange::all())
                .map(|(k, versions)| KeyHistory {
                    key: k.clone(),
                    versions: versions.iter().map(|v| self.mvcc.key_value(k, v)).collect(),
                })
                .collect(),
            sessions: self
                .sessions
                .iter()
                .map(|(client, s)| Session {
                    client: *client,
                    revision: s.revision,
                    below: s.below,
                    outcomes: s
                        .outcomes
                        .iter()
                        .map(|(seq, outcome)| SessionOutcome {
                            seq: *seq,
                            outcome: Some(outcome.clone()),
                        })
                        .collect(),
                    ..Session::default()
                })
                .collect(),
            // A shard's stubs follow from its keys.
            leases: if self.lease_stubs() {
                Vec::new()
            } else {
                self.leases
                    .iter()
                    .map(|(id, l)| Lease { id, ttl: l.ttl })
                    .collect()
            },
            revoking: self.revoking_records(),
            lease_keys_in_shards: self.lease_keys_in_shards,
            alarms: self.alarms(),
            members: self.members.clone(),
            znodes: self.zk.records().0,
            zk_sessions: self.zk.records().1,
            auth: Some(self.auth.to_state()),
            shard: self.shard.as_ref().map(Shard::to_proto),
        }
    }

    /// Rebuilds a store from a snapshot, checking it is well formed: a
    /// snapshot comes from a peer or a file, so a broken one is refused
    /// with the reason, never a panic.
    pub fn restore(snapshot: Snapshot) -> Result<KvStore, String> {
        let bad = |what: &str| format!("snapshot is malformed: {what}");
        let mut keys = BTreeMap::new();
        for h in snapshot.keys {
            if let Some(old) = keys.insert(h.key, h.versions) {
                return Err(bad(&format!(
                    "a key appears twice ({} versions)",
                    old.len()
                )));
            }
        }
        if snapshot.revision < 1 {
            return Err(bad(&format!("revision {}", snapshot.revision)));
        }
        let mut store = KvStore {
            mvcc: Mvcc::from_parts(keys, snapshot.revision, snapshot.compact_revision)
                .map_err(|broken| bad(&broken))?,
            ..KvStore::default()
        };
        store.shard = snapshot
            .shard
            .as_ref()
            .map(Shard::from_proto)
            .transpose()
            .map_err(|e| bad(&e))?;
        if store.lease_stubs() && !snapshot.leases.is_empty() {
            return Err(bad("a shard lists leases (they live in the meta group)"));
        }
        for l in &snapshot.leases {
            if l.id <= 0 || store.leases.contains(l.id) {
                return Err(bad(&format!("lease {} is invalid or repeated", l.id)));
            }
            store.leases.grant(l.id, l.ttl);
        }
        store.attach_lease_keys().map_err(|e| bad(&e))?;
        store.lease_keys_in_shards = snapshot.lease_keys_in_shards;
        for r in &snapshot.revoking {
            store.restore_revoking(r).map_err(|e| bad(&e))?;
        }
        store.check_shard_keys().map_err(|e| bad(&e))?;
        store.members = snapshot.members;
        store.members.sort_by_key(|m| m.id);
        store.alarms = snapshot
            .alarms
            .iter()
            .map(|a| (a.member_id, a.alarm))
            .collect();
        store.zk =
            ZkTree::from_records(snapshot.znodes, snapshot.zk_sessions).map_err(|e| bad(&e))?;
        store.check_zk_leases().map_err(|e| bad(&e))?;
        store.auth =
            AuthStore::from_state(snapshot.auth.unwrap_or_default()).map_err(|e| bad(&e))?;
        for s in snapshot.sessions {
            let entry = restore_session(&s).map_err(|why| bad(&why))?;
            store.session_order.insert((s.revision, s.client));
            if store.sessions.insert(s.client, entry).is_some() {
                return Err(bad(&format!("session {:x} appears twice", s.client)));
            }
        }
        Ok(store)
    }

    /// Decodes and restores an encoded snapshot (from a peer, a file or an
    /// older version's data dir), refusing a malformed one with the reason.
    pub fn decode_snapshot(data: Bytes) -> Result<KvStore, String> {
        let snapshot =
            Snapshot::decode(data).map_err(|e| format!("snapshot does not decode: {e}"))?;
        KvStore::restore(snapshot)
    }

    /// Refuses a store holding keys outside its own shard (K1).
    fn check_shard_keys(&self) -> Result<(), String> {
        let Some(shard) = &self.shard else {
            return Ok(());
        };
        match self
            .mvcc
            .versions(&KeyRange::all())
            .find(|(k, _)| !shard.holds_key(k))
        {
            Some((k, _)) => Err(format!("key {k:?} lies outside its shard")),
            None => Ok(()),
        }
    }

    /// Refuses ZooKeeper sessions without their lease.
    fn check_zk_leases(&self) -> Result<(), String> {
        match self.zk.sessions().find(|s| !self.leases.contains(s.id)) {
            Some(s) => Err(format!("ZooKeeper session {:x} has no lease", s.id)),
            None => Ok(()),
        }
    }

    /// Revoking leases as recorded in the state and snapshots.
    fn revoking_records(&self) -> Vec<Revoking> {
        self.revoking
            .iter()
            .map(|(id, c)| revoking_record(*id, c))
            .collect()
    }

    /// One revoking lease from a row or a peer's snapshot, checked: only
    /// a sharded cluster's meta group has any, never a live lease.
    fn restore_revoking(&mut self, r: &Revoking) -> Result<(), String> {
        if !self.lease_keys_in_shards || r.id <= 0 || self.leases.contains(r.id) {
            return Err(format!("revoking lease {:x} where none can be", r.id));
        }
        let covered = Covered::from_proto(&r.covered)?;
        if covered.is_full() || self.revoking.insert(r.id, covered).is_some() {
            return Err(format!("revoking lease {:x} is done or repeated", r.id));
        }
        Ok(())
    }

    /// Attaches every live key to its lease, refusing a key that names a
    /// lease that does not exist (a shard makes stubs instead).
    fn attach_lease_keys(&mut self) -> Result<(), String> {
        let live: Vec<(i64, Bytes)> = self
            .mvcc
            .scan(&KeyRange::all(), self.mvcc.revision())
            .filter(|(_, v)| v.lease != 0)
            .map(|(key, v)| (v.lease, key.clone()))
            .collect();
        let stubs = self.lease_stubs();
        for (lease, key) in live {
            if !stubs && !self.leases.contains(lease) {
                return Err(format!("key {key:?} names missing lease {lease:x}"));
            }
            self.leases.attach(lease, &key, stubs);
        }
        Ok(())
    }

    /// Rebuilds the store from its rows on disk (see [`state`](crate::state)):
    /// `None` when the disk holds no store yet. The index is read, long
    /// values stay on disk. Rows are checked like a peer's snapshot: a
    /// damaged file is refused with the reason.
    pub fn load(source: Arc<dyn StateSource>) -> Result<Option<KvStore>, String> {
        let bad = |what: String| format!("state on disk is malformed: {what}");
        let Some(meta) = source.get(&[TAG_META]) else {
            return Ok(None);
        };
        let meta = Snapshot::decode(meta).map_err(|e| bad(format!("meta row: {e}")))?;
        if meta.revision < 1 {
            return Err(bad(format!("revision {}", meta.revision)));
        }
        let mvcc =
            Mvcc::load(Arc::clone(&source), meta.revision, meta.compact_revision).map_err(bad)?;
        let mut store = KvStore {
            mvcc,
            ..KvStore::default()
        };
        let mut broken = None;
        source.scan(&[TAG_LEASE], &mut |row, value| match (
            state::be_u64(&row[1..], 0),
            state::be_u64(value, 0),
        ) {
            (Some(id), Some(ttl)) if row.len() == 9 && (id as i64) > 0 => {
                store.leases.grant(id as i64, ttl as i64)
            }
            _ => broken = Some(format!("lease row {row:?}")),
        });
        source.scan(&[TAG_SESSION], &mut |row, value| match (
            state::be_u64(&row[1..], 0),
            decode_session(value),
        ) {
            (Some(client), Ok(entry)) if row.len() == 9 => {
                store.session_order.insert((entry.revision, client));
                store.sessions.insert(client, entry);
            }
            (_, Err(e)) => broken = Some(format!("session row {row:?}: {e}")),
            _ => broken = Some(format!("session row {row:?}")),
        });
        let mut znodes = Vec::new();
        source.scan(&[TAG_ZNODE], &mut |row, value| match ZNode::decode(value) {
            Ok(n) if n.path.as_bytes() == &row[1..] => znodes.push(n),
            _ => broken = Some(format!("znode row {row:?}")),
        });
        let mut zk_sessions = Vec::new();
        source.scan(
            &[TAG_ZK_SESSION],
            &mut |row, value| match ZkSession::decode(value) {
                Ok(s) if row.len() == 9 && state::be_u64(&row[1..], 0) == Some(s.id as u64) => {
                    zk_sessions.push(s)
                }
                _ => broken = Some(format!("ZooKeeper session row {row:?}")),
            },
        );
        if let Some(e) = broken.take() {
            return Err(bad(e));
        }
        if let Some(row) = source.get(&[TAG_AUTH]) {
            let state = AuthState::decode(row).map_err(|e| bad(format!("auth row: {e}")))?;
            store.auth = AuthStore::from_state(state).map_err(|e| bad(format!("auth row: {e}")))?;
        }
        store.zk = ZkTree::from_records(znodes, zk_sessions).map_err(bad)?;
        store.check_zk_leases().map_err(bad)?;
        store.shard = meta
            .shard
            .as_ref()
            .map(Shard::from_proto)
            .transpose()
            .map_err(|e| bad(format!("meta row: {e}")))?;
        if store.lease_stubs() && !store.leases.is_empty() {
            return Err(bad(
                "a shard has lease rows (they live in the meta group)".into()
            ));
        }
        store.attach_lease_keys().map_err(bad)?;
        store.lease_keys_in_shards = meta.lease_keys_in_shards;
        let mut revoking = Vec::new();
        source.scan(
            &[TAG_REVOKING],
            &mut |row, value| match Revoking::decode(value) {
                Ok(r) if row.len() == 9 && state::be_u64(&row[1..], 0) == Some(r.id as u64) => {
                    revoking.push(r)
                }
                _ => broken = Some(format!("revoking row {row:?}")),
            },
        );
        if let Some(e) = broken.take() {
            return Err(bad(e));
        }
        for r in &revoking {
            store.restore_revoking(r).map_err(bad)?;
        }
        store.check_shard_keys().map_err(bad)?;
        store.members = meta.members;
        store.members.sort_by_key(|m| m.id);
        store.alarms = meta.alarms.iter().map(|a| (a.member_id, a.alarm)).collect();
        store.mvcc.journal.on = true;
        Ok(Some(store))
    }

    /// Puts the store on disk: from now on every change is journaled for
    /// [`take_changes`](KvStore::take_changes) and long values are read
    /// back through `source` once written. With `rewrite`, the next
    /// changes replace every row on disk with this store (a store restored
    /// from a snapshot, or from a file written before rows existed).
    pub fn attach(&mut self, source: Arc<dyn StateSource>, rewrite: bool) {
        self.mvcc.attach(source, rewrite);
        if rewrite {
            self.dirty.meta = true;
            self.dirty.auth = true;
            self.dirty.sessions.extend(self.sessions.keys().copied());
            if !self.lease_stubs() {
                self.dirty
                    .leases
                    .extend(self.leases.iter().map(|(id, _)| id));
            }
            self.dirty.revoking.extend(self.revoking.keys().copied());
            self.zk.dirty_all();
        }
    }

    /// Where long values are read from, when the store is on disk.
    pub fn source(&self) -> Option<Arc<dyn StateSource>> {
        self.mvcc.source()
    }

    /// Replaces this store with `new` (restored from a leader's snapshot),
    /// keeping it on the same disk: `new`'s rows replace every row.
    pub fn replace(&mut self, mut new: KvStore) {
        if let Some(source) = self.source() {
            new.attach(source, true);
        }
        // Batches journaled before still land first; they concern the old
        // store and must not release the new store's values.
        new.flushing = self.flushing.iter().map(|_| Vec::new()).collect();
        new.prev_values_off = self.prev_values_off;
        #[cfg(feature = "mutations")]
        {
            new.unfenced = self.unfenced;
            new.auth_unfenced = self.auth_unfenced;
        }
        *self = new;
    }

    /// Replaces this store with `new`, loaded from rows already on disk
    /// (a snapshot received into a stage): `new` keeps its own source and
    /// rewrites nothing.
    pub fn install(&mut self, mut new: KvStore) {
        new.flushing = self.flushing.iter().map(|_| Vec::new()).collect();
        new.prev_values_off = self.prev_values_off;
        #[cfg(feature = "mutations")]
        {
            new.unfenced = self.unfenced;
            new.auth_unfenced = self.auth_unfenced;
        }
        *self = new;
    }

    /// Whether watch events carry the previous version's value (the
    /// default) or only its metadata, which spares a disk read per
    /// overwrite of a long value when no watcher asks for `prev_kv`.
    pub fn set_prev_values_in_events(&mut self, on: bool) {
        self.prev_values_off = !on;
    }

    /// The row writes since the last call, to write in the same batch as
    /// the group's log and applied slot. Call
    /// [`changes_written`](KvStore::changes_written) once that batch is
    /// committed (in the order the changes were taken).
    pub fn take_changes(&mut self) -> StateChanges {
        if !self.mvcc.journal.on {
            // Nothing to write to: forget what changed.
            let _ = self.zk.take_dirty();
            return StateChanges::default();
        }
        let dirty = std::mem::take(&mut self.dirty);
        let meta = dirty.meta.then(|| Snapshot {
            revision: self.mvcc.revision(),
            compact_revision: self.mvcc.compact_revision(),
            alarms: self
                .alarms
                .iter()
                .map(|&(member_id, alarm)| AlarmMember { member_id, alarm })
                .collect(),
            members: self.members.clone(),
            shard: self.shard.as_ref().map(Shard::to_proto),
            lease_keys_in_shards: self.lease_keys_in_shards,
            ..Snapshot::default()
        });
        let journal = &mut self.mvcc.journal;
        if let Some(meta) = meta {
            journal.put(vec![TAG_META], Bytes::from(meta.encode_to_vec()));
        }
        for client in dirty.sessions {
            let row = state::numbered_row(TAG_SESSION, client, None);
            match self.sessions.get(&client) {
                Some(s) => journal.put(row, encode_session(s)),
                None => journal.delete(row),
            }
        }
        for id in dirty.revoking {
            let row = state::numbered_row(TAG_REVOKING, id as u64, None);
            match self.revoking.get(&id) {
                Some(c) => {
                    let record = revoking_record(id, c);
                    journal.put(row, Bytes::from(record.encode_to_vec()))
                }
                None => journal.delete(row),
            }
        }
        for id in dirty.leases {
            let row = state::numbered_row(TAG_LEASE, id as u64, None);
            match self.leases.get(id) {
                Some(l) => journal.put(row, Bytes::copy_from_slice(&l.ttl.to_be_bytes())),
                None => journal.delete(row),
            }
        }
        if dirty.auth {
            journal.put(
                vec![TAG_AUTH],
                Bytes::from(self.auth.to_state().encode_to_vec()),
            );
        }
        let (znodes, zk_sessions) = self.zk.take_dirty();
        for (path, record) in znodes {
            let mut row = Vec::with_capacity(1 + path.len());
            row.push(TAG_ZNODE);
            row.extend_from_slice(path.as_bytes());
            match record {
                Some(r) => journal.put(row, Bytes::from(r.encode_to_vec())),
                None => journal.delete(row),
            }
        }
        for (id, record) in zk_sessions {
            let row = state::numbered_row(TAG_ZK_SESSION, id as u64, None);
            match record {
                Some(r) => journal.put(row, Bytes::from(r.encode_to_vec())),
                None => journal.delete(row),
            }
        }
        let changes = journal.take();
        let large = self.mvcc.take_large();
        self.flushing.push_back(large);
        changes
    }

    /// Bytes of rows journaled and not yet taken: what waits in memory
    /// for the group's next write of its rows.
    pub fn unwritten_bytes(&self) -> u64 {
        self.mvcc.journal.bytes
    }

    /// The changes not yet taken replace every row (a store restored or
    /// cut off by a split): they must be written in this round.
    pub fn unwritten_clear(&self) -> bool {
        self.mvcc.journal.changes.clear
    }

    /// The oldest changes taken are committed: the long values they wrote
    /// are read from disk from now on, not kept in memory.
    pub fn changes_written(&mut self) {
        if let Some(large) = self.flushing.pop_front() {
            if let Some(source) = self.mvcc.source() {
                // The values about to be read from disk must be visible.
                source.refresh();
            }
            self.mvcc.written(large);
        }
    }
}

/// A range read's answer whose long values may still be on disk.
#[derive(Clone)]
pub struct RangeAnswer {
    response: RangeResponse,
    fetch: Vec<(usize, crate::mvcc::ValueRow)>,
    source: Option<Arc<dyn StateSource>>,
}

impl RangeAnswer {
    /// An answer with nothing left to read.
    pub fn ready(response: RangeResponse) -> RangeAnswer {
        RangeAnswer {
            response,
            fetch: Vec::new(),
            source: None,
        }
    }

    /// True when values are still to be read from disk ([`fill`](Self::fill)
    /// does I/O).
    pub fn needs_disk(&self) -> bool {
        !self.fetch.is_empty()
    }

    /// The whole response, reading the values left on disk.
    ///
    /// Panics when a value row is missing (S2 broken: the disk lost a
    /// committed row); continuing would answer wrong data.
    pub fn fill(self) -> RangeResponse {
        let RangeAnswer {
            mut response,
            fetch,
            source,
        } = self;
        if let Some(source) = source {
            for (i, row) in fetch {
                response.kvs[i].value = row.read(source.as_ref());
            }
        }
        response
    }
}

impl PartialEq for RangeAnswer {
    fn eq(&self, other: &Self) -> bool {
        self.response == other.response && self.fetch == other.fetch
    }
}

impl fmt::Debug for RangeAnswer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RangeAnswer")
            .field("response", &self.response)
            .field("fetch", &self.fetch.len())
            .finish()
    }
}

/// A session row: below(8) revision(8), then each outcome of the window
/// as seq(8) length(4) `synodpb.Outcome`. The window is what the
/// session's node still waits on, so the row stays small; it is
/// rewritten once per round the session changes in, not once per command.
fn encode_session(s: &SessionEntry) -> Bytes {
    let mut row = Vec::with_capacity(16 + s.outcomes.len() * 24);
    row.extend_from_slice(&s.below.to_be_bytes());
    row.extend_from_slice(&(s.revision as u64).to_be_bytes());
    for (seq, outcome) in &s.outcomes {
        row.extend_from_slice(&seq.to_be_bytes());
        row.extend_from_slice(&(outcome.encoded_len() as u32).to_be_bytes());
        outcome
            .encode(&mut row)
            .expect("a Vec grows to hold any outcome");
    }
    Bytes::from(row)
}

/// Reads a session row back, checking the window invariant.
fn decode_session(row: &[u8]) -> Result<SessionEntry, String> {
    let (Some(below), Some(revision)) = (state::be_u64(row, 0), state::be_u64(row, 1)) else {
        return Err(format!("{} bytes", row.len()));
    };
    let mut entry = SessionEntry {
        below,
        outcomes: BTreeMap::new(),
        revision: revision as i64,
    };
    let mut rest = &row[16..];
    while !rest.is_empty() {
        let seq = state::be_u64(rest, 0).ok_or("truncated outcome")?;
        let len = rest
            .get(8..12)
            .map(|b| u32::from_be_bytes(b.try_into().expect("4 bytes")) as usize)
            .ok_or("truncated outcome")?;
        let body = rest
            .get(12..12usize.saturating_add(len))
            .ok_or("outcome past the row")?;
        let outcome = Outcome::decode(body).map_err(|e| e.to_string())?;
        if seq < below || entry.outcomes.insert(seq, outcome).is_some() {
            return Err(format!("seq {seq} below the window or repeated"));
        }
        rest = &rest[12 + len..];
    }
    if entry.outcomes.len() > SESSION_OUTCOMES_MAX {
        return Err(format!("{} outcomes", entry.outcomes.len()));
    }
    Ok(entry)
}

/// One session from a snapshot, checked: outcomes present, none below the
/// window, at most `SESSION_OUTCOMES_MAX`. A session written by an older
/// version (one `seq` and its `outcome`) becomes a window holding it.
fn restore_session(s: &Session) -> Result<SessionEntry, String> {
    let mut entry = SessionEntry {
        below: s.below,
        outcomes: BTreeMap::new(),
        revision: s.revision,
    };
    if let Some(outcome) = &s.outcome {
        entry.outcomes.insert(s.seq, outcome.clone());
    }
    for o in &s.outcomes {
        let outcome = o
            .outcome
            .clone()
            .ok_or_else(|| format!("session {:x} seq {} without an outcome", s.client, o.seq))?;
        if o.seq < s.below || entry.outcomes.insert(o.seq, outcome).is_some() {
            return Err(format!(
                "session {:x} seq {} is below its window or repeated",
                s.client, o.seq
            ));
        }
    }
    if entry.outcomes.len() > SESSION_OUTCOMES_MAX {
        return Err(format!(
            "session {:x} holds {} outcomes",
            s.client,
            entry.outcomes.len()
        ));
    }
    Ok(entry)
}

fn ok(r: outcome::Result) -> Outcome {
    Outcome { result: Some(r) }
}

/// Whether `user` may run `op` by the users and roles of `auth` (etcd's
/// rules; the caller's auth revision is not looked at here). `lease_keys`
/// names a lease's keys: attaching to a lease or revoking it writes
/// every one of them, so each must be writable (admins pass).
pub fn check_access(
    auth: &AuthStore,
    user: &str,
    op: Option<&Op>,
    lease_keys: &dyn Fn(i64) -> Vec<Bytes>,
) -> Result<(), KvError> {
    let leased = |id: i64| -> Result<(), KvError> {
        if id == 0 || auth.check_admin(user).is_ok() {
            return Ok(());
        }
        for key in lease_keys(id) {
            auth.check(user, Access::Write, &key, &[])?;
        }
        Ok(())
    };
    match op {
        Some(Op::Put(r)) => {
            auth.check(user, Access::Write, &r.key, &[])?;
            if r.prev_kv {
                auth.check(user, Access::Read, &r.key, &[])?;
            }
            leased(r.lease)
        }
        Some(Op::DeleteRange(r)) => {
            auth.check(user, Access::Write, &r.key, &r.range_end)?;
            if r.prev_kv {
                auth.check(user, Access::Read, &r.key, &r.range_end)?;
            }
            Ok(())
        }
        Some(Op::Txn(t)) => check_txn(auth, user, t, &leased),
        Some(Op::LeaseRevoke(r)) => leased(r.id),
        Some(Op::Auth(_)) | Some(Op::MemberTable(_)) => Ok(auth.check_admin(user)?),
        Some(Op::Alarm(r)) if r.action != AlarmAction::Get as i32 => Ok(auth.check_admin(user)?),
        // Compaction and lease grants need no permission in etcd; the
        // rest are the node's own commands.
        _ => Ok(()),
    }
}

/// The leases `op` attaches keys to or revokes (for `check_access`'s
/// `lease_keys`, where the keys must be gathered first).
pub fn leases_named(op: &Op) -> Vec<i64> {
    fn txn(t: &TxnRequest, out: &mut Vec<i64>) {
        for op in t.success.iter().chain(&t.failure) {
            match &op.request {
                Some(Request::RequestPut(r)) if r.lease != 0 => out.push(r.lease),
                Some(Request::RequestTxn(t)) => txn(t, out),
                _ => {}
            }
        }
    }
    let mut out = Vec::new();
    match op {
        Op::Put(r) if r.lease != 0 => out.push(r.lease),
        Op::Txn(t) => txn(t, &mut out),
        Op::LeaseRevoke(r) => out.push(r.id),
        _ => {}
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// How a node judges a client's write before it sends it to a shard
/// (design 0018), with `auth` its replica of the meta group's store. A
/// shard cannot check roles where the write applies, so the node checks
/// them here, at exactly the auth revision the caller was judged at; the
/// stamp's auth fence then refuses the write in the shard if the store
/// changed before the write was ordered. Credentials judged at another
/// revision than this replica's are `AuthOldRevision` (the front end
/// catches up and judges them again). While auth is off nothing is
/// checked: if it is turned on before the write is stamped, the fence
/// refuses it.
pub fn judge_routed(
    auth: &AuthStore,
    caller: &Caller,
    op: &Op,
    lease_keys: &dyn Fn(i64) -> Vec<Bytes>,
) -> Result<(), KvError> {
    if !auth.enabled() {
        return Ok(());
    }
    if caller.auth_revision != auth.revision() {
        return Err(AuthError::AuthOldRevision.into());
    }
    check_access(auth, &caller.user, Some(op), lease_keys)
}

/// A revoking lease as its row and snapshots record it.
fn revoking_record(id: i64, covered: &Covered) -> Revoking {
    Revoking {
        id,
        covered: covered.to_proto(),
    }
}

/// A txn's checks: its compares read, its branches' ops as they would
/// alone, nested txns included.
fn check_txn(
    auth: &AuthStore,
    user: &str,
    t: &TxnRequest,
    lease_keys: &dyn Fn(i64) -> Result<(), KvError>,
) -> Result<(), KvError> {
    for c in &t.compare {
        auth.check(user, Access::Read, &c.key, &c.range_end)?;
    }
    for op in t.success.iter().chain(&t.failure) {
        match &op.request {
            Some(Request::RequestRange(r)) => {
                auth.check(user, Access::Read, &r.key, &r.range_end)?
            }
            Some(Request::RequestPut(r)) => {
                auth.check(user, Access::Write, &r.key, &[])?;
                if r.prev_kv {
                    auth.check(user, Access::Read, &r.key, &[])?;
                }
                lease_keys(r.lease)?;
            }
            Some(Request::RequestDeleteRange(r)) => {
                auth.check(user, Access::Write, &r.key, &r.range_end)?;
                if r.prev_kv {
                    auth.check(user, Access::Read, &r.key, &r.range_end)?;
                }
            }
            Some(Request::RequestTxn(t)) => check_txn(auth, user, t, lease_keys)?,
            None => {}
        }
    }
    Ok(())
}

/// Writes refused while the NOSPACE alarm is raised: those that can add
/// data. Deletes, compaction, revocation and reads still run, which is how
/// an operator frees space.
fn adds_data(op: Option<&Op>) -> bool {
    let txn_puts = |t: &TxnRequest| txn_requests(t).any(|r| matches!(r, Request::RequestPut(_)));
    match op {
        Some(Op::Put(_)) | Some(Op::LeaseGrant(_)) => true,
        Some(Op::Zk(w)) => w.ops.iter().any(|o| {
            matches!(
                o.op,
                Some(ZkOpKind::Create(_) | ZkOpKind::SetData(_) | ZkOpKind::OpenSession(_))
            )
        }),
        Some(Op::Txn(t)) => txn_puts(t),
        _ => false,
    }
}

/// Encodes a refusal for the client and for the session record.
pub fn error_outcome(e: &KvError) -> Outcome {
    let (kind, a, b) = match *e {
        KvError::Compacted {
            requested,
            compact_revision,
        } => (Kind::Compacted, requested, compact_revision),
        KvError::FutureRevision { requested, current } => {
            (Kind::FutureRevision, requested, current)
        }
        KvError::KeyNotFound => (Kind::KeyNotFound, 0, 0),
        KvError::LeaseNotFound(id) => (Kind::LeaseNotFound, id, 0),
        KvError::LeaseExists => (Kind::LeaseExists, 0, 0),
        KvError::LeaseTtlTooLarge => (Kind::LeaseTtlTooLarge, 0, 0),
        KvError::NoSpace => (Kind::NoSpace, 0, 0),
        KvError::InvalidArgument(_) => (Kind::InvalidArgument, 0, 0),
        KvError::TooManyRequests => (Kind::TooManyRequests, 0, 0),
        KvError::NoLeader => (Kind::NoLeader, 0, 0),
        KvError::TimedOut => (Kind::TimedOut, 0, 0),
        KvError::Auth(e) => (Kind::Auth, e.number(), 0),
        KvError::StaleStamp { stamp, revision } => (Kind::StaleStamp, stamp, revision),
        KvError::WrongShard => (Kind::WrongShard, 0, 0),
    };
    Outcome {
        result: Some(outcome::Result::Error(Error {
            kind: kind as i32,
            a,
            b,
            message: e.etcd_message().to_string(),
        })),
    }
}

/// Decodes a refusal recorded in an outcome.
pub fn outcome_error(e: &Error) -> KvError {
    match Kind::try_from(e.kind) {
        Ok(Kind::Compacted) => KvError::Compacted {
            requested: e.a,
            compact_revision: e.b,
        },
        Ok(Kind::FutureRevision) => KvError::FutureRevision {
            requested: e.a,
            current: e.b,
        },
        Ok(Kind::KeyNotFound) => KvError::KeyNotFound,
        Ok(Kind::LeaseNotFound) => KvError::LeaseNotFound(e.a),
        Ok(Kind::LeaseExists) => KvError::LeaseExists,
        Ok(Kind::LeaseTtlTooLarge) => KvError::LeaseTtlTooLarge,
        Ok(Kind::NoSpace) => KvError::NoSpace,
        Ok(Kind::TooManyRequests) => KvError::TooManyRequests,
        Ok(Kind::NoLeader) => KvError::NoLeader,
        Ok(Kind::TimedOut) => KvError::TimedOut,
        Ok(Kind::StaleStamp) => KvError::StaleStamp {
            stamp: e.a,
            revision: e.b,
        },
        Ok(Kind::WrongShard) => KvError::WrongShard,
        Ok(Kind::Auth) => match crate::auth::AuthError::from_number(e.a) {
            Some(a) => KvError::Auth(a),
            None => KvError::InvalidArgument(invalid_message(&e.message)),
        },
        _ => KvError::InvalidArgument(invalid_message(&e.message)),
    }
}

/// Maps a recorded message back to its static form (messages are a closed set).
fn invalid_message(m: &str) -> &'static str {
    crate::validate::MESSAGES
        .iter()
        .copied()
        .find(|s| *s == m)
        .unwrap_or("etcdserver: invalid request")
}

/// How a command's stamp (design 0011) decides the revision it applies at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stamp {
    /// Unstamped: the store numbers it (revision + 1 if it writes).
    None,
    /// Above the store's revision: it writes at the stamp, and the store's
    /// revision becomes the stamp whatever it did.
    Above(i64),
    /// At or below the store's revision, read-only: it reads at the stamp
    /// (every stamp at or below it that will ever apply here has).
    ReadAt(i64),
}

impl Stamp {
    /// The stamp's meaning for `command` in a store at `revision`; a
    /// writing command stamped at or below it is refused.
    fn of(command: &Command, revision: i64) -> Result<Stamp, KvError> {
        let stamp = command.stamp;
        if stamp == 0 {
            return Ok(Stamp::None);
        }
        if stamp > revision {
            return Ok(Stamp::Above(stamp));
        }
        match &command.op {
            Some(Op::Txn(t)) if stamp > 0 && read_only(t) => Ok(Stamp::ReadAt(stamp)),
            _ => Err(KvError::StaleStamp { stamp, revision }),
        }
    }
}

/// A transaction that only reads, whichever branch runs.
fn read_only(t: &TxnRequest) -> bool {
    // A nested txn reads only if its own requests do (walked too).
    txn_requests(t).all(|r| matches!(r, Request::RequestRange(_) | Request::RequestTxn(_)))
}

/// Whether `op` is a command a shard's leader stamps (design 0015): the
/// key-value writes, the only commands that take a revision in a shard.
/// Others belong to the meta group, which numbers its own.
pub fn takes_stamp(op: &Op) -> bool {
    matches!(
        op,
        Op::Put(_) | Op::DeleteRange(_) | Op::Txn(_) | Op::Compact(_) | Op::LeaseDetach(_)
    )
}

/// Every request of `t`'s two branches, nested txns walked into (a nested
/// txn is itself among them, before its own requests).
pub fn txn_requests(t: &TxnRequest) -> Box<dyn Iterator<Item = &Request> + '_> {
    Box::new(
        t.success
            .iter()
            .chain(&t.failure)
            .filter_map(|op| op.request.as_ref())
            .flat_map(|r| {
                let nested = match r {
                    Request::RequestTxn(t) => Some(txn_requests(t)),
                    _ => None,
                };
                std::iter::once(r).chain(nested.into_iter().flatten())
            }),
    )
}
