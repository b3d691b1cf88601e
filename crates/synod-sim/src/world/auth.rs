//! etcd auth under faults (design 0014). An agent sets up a root user and
//! role, a user `u` with a role `r`, and enables auth, one step after the
//! other; then, every few hundred milliseconds, it sends a burst at once
//! through random members, without waiting for answers: a few puts of
//! `auth/<n>` as `u` and, mostly, a flip of `r`'s read-write permission
//! on the prefix `auth/` (granted, revoked, granted, ...; as the node
//! itself or as root). They race each other to the log. A command from a
//! client carries the auth revision its credentials were judged at (here:
//! its node's), and one ordered after a later auth change is refused
//! (`AuthOldRevision`); a quarter of the puts carry a revision no change
//! outdates, so that the permission check alone decides them. The state
//! machine checks where each command applies, so this drives the real
//! code: the order of auth changes and writes in the log, the auth row
//! across crashes, the auth store in snapshots.
//!
//! The oracle replays the log in order, once, as slots are first applied
//! anywhere (every replica applies the same sequence: the apply checker
//! sees to it), with a model of its own of the auth rules the agent
//! touches, read from the commands' bytes. Checked:
//! - **every replica's auth store** (enabled flag, revision, token key,
//!   users, roles, permissions) is the model's at the replica's applied
//!   slot, after every round, restart and snapshot install;
//! - **each put's outcome follows the log**, on every replica, after the
//!   round that applied it (or a snapshot that holds it) and on the
//!   furthest replica at the end: written when the model allows it where
//!   it ran, `PermissionDenied` when `r` was revoked there (after a
//!   revoke and before the re-grant), `AuthOldRevision` when an auth
//!   change came between its judging and its slot; both its recorded
//!   outcome and whether its key exists;
//! - **answers**: a put acknowledged OK ran where the model allows it,
//!   one refused ran where the model refuses it, for the same reason;
//! - the convergence check compares whole stores, the auth store with
//!   them.
//!
//! A command may appear in the log more than once (a node forwards it
//! again when it does not apply soon): the state machine runs its first
//! copy and answers later ones from the session's record, or refuses a
//! copy its node gave up on (`answered_below`). The model keeps the same
//! sessions, so it knows which copy ran; a session's expiry is not
//! modelled: by design no copy of an expired session's commands is left
//! to apply (and if one did, the checks would say so).

mod shards;

use super::{Event, World};
use crate::checker::Violation;
use crate::config::{Micros, MS};
use crate::node::Waiting;
use bytes::Bytes;
use rand::Rng;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use synod_group::{Answer, Request};
use synod_kv::{outcome_error, AuthError, KvError, KvStore};
use synod_paxos::{Slot, Value};
use synod_proto::authpb::{permission::Type as PermType, Permission};
use synod_proto::etcdserverpb::{
    AuthEnableRequest, AuthRoleAddRequest, AuthRoleGrantPermissionRequest,
    AuthRoleRevokePermissionRequest, AuthUserAddRequest, AuthUserGrantRoleRequest, PutRequest,
    RangeRequest,
};
use synod_proto::synodpb::auth_write::Op as AuthOp;
use synod_proto::synodpb::command::Op;
use synod_proto::synodpb::outcome::Result as OutcomeResult;
use synod_proto::synodpb::{AuthWrite, Caller, Outcome};

/// How often the agent retries its setup, then sends a burst.
const SETUP_EVERY: Micros = 50 * MS;
const BURST_EVERY: Micros = 600 * MS;
/// A setup step unanswered this long is sent again (its node may hold it
/// forever: a partitioned node whose writes never time out).
const SETUP_PATIENCE: Micros = 300 * MS;
/// The most puts in one burst, and the chance that a burst flips.
const PUTS_PER_BURST_MAX: u32 = 2;
const FLIP_CHANCE: f64 = 0.9;
/// The user whose puts are checked, and its role.
const USER: &str = "u";
const ROLE: &str = "r";
const ROOT: &str = synod_kv::auth::ROOT;
/// The prefix `r` is granted and revoked on: `[auth/, auth0)`.
const PREFIX: &[u8] = b"auth/";
const PREFIX_END: &[u8] = b"auth0";
/// AuthEnable's signing key length.
const TOKEN_KEY_LEN: usize = synod_kv::auth::TOKEN_KEY_LEN;

/// The setup, in order; each step is sent once the one before succeeded.
const SETUP_STEPS: usize = 7;

fn setup_op(step: usize, token_key: &Bytes) -> AuthWrite {
    let user_add = |name: &str| {
        AuthOp::UserAdd(AuthUserAddRequest {
            name: name.into(),
            hashed_password: format!("sim-hash-{name}"),
            ..AuthUserAddRequest::default()
        })
    };
    let role_add = |name: &str| AuthOp::RoleAdd(AuthRoleAddRequest { name: name.into() });
    let grant_role = |user: &str, role: &str| {
        AuthOp::UserGrantRole(AuthUserGrantRoleRequest {
            user: user.into(),
            role: role.into(),
        })
    };
    let op = match step {
        0 => user_add(ROOT),
        1 => role_add(ROOT),
        2 => grant_role(ROOT, ROOT),
        3 => user_add(USER),
        4 => role_add(ROLE),
        5 => grant_role(USER, ROLE),
        _ => AuthOp::Enable(AuthEnableRequest {}),
    };
    AuthWrite {
        op: Some(op),
        token_key: if step == SETUP_STEPS - 1 {
            token_key.clone()
        } else {
            Bytes::new()
        },
    }
}

fn flip_op(grant: bool) -> AuthWrite {
    let op = if grant {
        AuthOp::RoleGrantPermission(AuthRoleGrantPermissionRequest {
            name: ROLE.into(),
            perm: Some(Permission {
                perm_type: PermType::Readwrite as i32,
                key: Bytes::from_static(PREFIX),
                range_end: Bytes::from_static(PREFIX_END),
            }),
        })
    } else {
        AuthOp::RoleRevokePermission(AuthRoleRevokePermissionRequest {
            role: ROLE.into(),
            key: Bytes::from_static(PREFIX),
            range_end: Bytes::from_static(PREFIX_END),
        })
    };
    AuthWrite {
        op: Some(op),
        token_key: Bytes::new(),
    }
}

fn put_key(n: u64) -> Bytes {
    Bytes::from(format!("auth/{n}"))
}

/// The agent's view, and the oracle's model of the log.
#[derive(Default)]
pub(super) struct AuthAgent {
    /// The next setup step; `SETUP_STEPS` once auth is on.
    step: usize,
    /// When the current step was last sent, while it waits.
    step_sent: Option<Micros>,
    token_key: Bytes,
    /// The next flip revokes (else grants; the first grants).
    revoke_next: bool,
    /// Puts sent.
    sent: u64,
    /// Puts acknowledged OK, refused (PermissionDenied) and refused for
    /// credentials older than an auth change, for the report.
    pub(super) puts_ok: u64,
    pub(super) denied: u64,
    pub(super) old_revision: u64,
    model: LogModel,
    /// The puts sent to shards, in a sharded run.
    shard_puts: shards::ShardPuts,
    /// Per node index: what its auth store was last compared at
    /// (incarnation, model state index, its auth revision).
    compared: Vec<Option<(u64, usize, u64)>>,
}

impl AuthAgent {
    /// Flips that changed `r`'s permission in log order, for the report.
    pub(super) fn flips(&self) -> u64 {
        self.model.flips
    }
}

/// The auth store as the model keeps it (and as a replica's is read for
/// comparison): only what the agent's commands touch, all of that.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct AuthView {
    enabled: bool,
    revision: u64,
    token_key: Bytes,
    /// User → its password hash and roles (sorted).
    users: BTreeMap<String, (Bytes, Vec<String>)>,
    /// Role → its permissions `(type, key, range_end)`, sorted.
    roles: BTreeMap<String, Vec<(i32, Bytes, Bytes)>>,
}

impl AuthView {
    fn of(kv: &KvStore) -> AuthView {
        let s = kv.auth().to_state();
        let name = |b: &Bytes| String::from_utf8_lossy(b).into_owned();
        AuthView {
            enabled: s.enabled,
            revision: s.revision,
            token_key: s.token_key,
            users: s
                .users
                .into_iter()
                .map(|u| (name(&u.name), (u.password, u.roles)))
                .collect(),
            roles: s
                .roles
                .into_iter()
                .map(|r| {
                    let perms = r.key_permission.into_iter();
                    let perms = perms.map(|p| (p.perm_type, p.key, p.range_end));
                    (name(&r.name), perms.collect())
                })
                .collect(),
        }
    }

    fn is_root(&self, user: &str) -> bool {
        self.users
            .get(user)
            .is_some_and(|(_, roles)| roles.iter().any(|r| r == ROOT))
    }

    /// Whether `caller` may change users and roles: the node itself, or
    /// anyone while auth is off, or root with credentials judged at the
    /// current auth revision.
    fn admin(&self, caller: Option<&CallerModel>) -> bool {
        match caller {
            None => true,
            Some(_) if !self.enabled => true,
            Some(c) => c.revision >= self.revision && self.is_root(&c.user),
        }
    }

    /// How `caller`'s write of `key` ends: written while auth is off;
    /// refused when its credentials were judged before the last auth
    /// change; else written when a role of the user holds a write
    /// permission whose range contains the key.
    fn put_verdict(&self, caller: &CallerModel, key: &[u8]) -> Verdict {
        if !self.enabled {
            return Verdict::Written;
        }
        if caller.revision < self.revision {
            return Verdict::OldRevision;
        }
        if self.may_write(&caller.user, key) {
            Verdict::Written
        } else {
            Verdict::Denied
        }
    }

    fn may_write(&self, user: &str, key: &[u8]) -> bool {
        let Some((_, roles)) = self.users.get(user) else {
            return false;
        };
        if self.is_root(user) {
            return true;
        }
        let writes = [PermType::Write as i32, PermType::Readwrite as i32];
        roles
            .iter()
            .filter_map(|r| self.roles.get(r))
            .flatten()
            .any(|(t, from, end)| {
                writes.contains(t)
                    && key >= from.as_ref()
                    && match end.as_ref() {
                        [] => key == from.as_ref(),
                        [0] => true,
                        end => key < end,
                    }
            })
    }

    /// Applies one change of the kinds the agent makes; true when it
    /// changed something (the revision moves then, and only then).
    fn change(&mut self, c: &AuthChange) -> bool {
        let changed = match c {
            AuthChange::Enable { token_key } => {
                let ready = self.is_root(ROOT) && token_key.len() == TOKEN_KEY_LEN;
                if !self.enabled && ready {
                    self.enabled = true;
                    self.token_key = token_key.clone();
                    true
                } else {
                    false
                }
            }
            AuthChange::UserAdd { name, password } => {
                !name.is_empty()
                    && !self.users.contains_key(name)
                    && self
                        .users
                        .insert(name.clone(), (password.clone(), Vec::new()))
                        .is_none()
            }
            AuthChange::RoleAdd { name } => {
                !name.is_empty()
                    && !self.roles.contains_key(name)
                    && self.roles.insert(name.clone(), Vec::new()).is_none()
            }
            AuthChange::GrantRole { user, role } => {
                let known = role == ROOT || self.roles.contains_key(role);
                match self.users.get_mut(user) {
                    Some((_, roles)) if known && !roles.contains(role) => {
                        roles.push(role.clone());
                        roles.sort();
                        true
                    }
                    _ => false,
                }
            }
            AuthChange::GrantPermission { role, perm } => match self.roles.get_mut(role) {
                Some(perms) => {
                    perms.retain(|p| (&p.1, &p.2) != (&perm.1, &perm.2));
                    perms.push(perm.clone());
                    perms.sort_by(|a, b| (&a.1, &a.2).cmp(&(&b.1, &b.2)));
                    true
                }
                None => false,
            },
            AuthChange::RevokePermission {
                role,
                key,
                range_end,
            } => match self.roles.get_mut(role) {
                Some(perms) => {
                    let before = perms.len();
                    perms.retain(|p| (&p.1, &p.2) != (key, range_end));
                    perms.len() != before
                }
                None => false,
            },
        };
        if changed {
            self.revision += 1;
        }
        changed
    }

    /// Whether `r` holds the agent's permission.
    fn granted(&self) -> bool {
        self.roles.get(ROLE).is_some_and(|p| {
            p.iter()
                .any(|(_, k, e)| k.as_ref() == PREFIX && e.as_ref() == PREFIX_END)
        })
    }
}

impl fmt::Display for AuthView {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "enabled={} revision={} users={:?} role {ROLE} granted={}",
            self.enabled,
            self.revision,
            self.users
                .iter()
                .map(|(u, (_, r))| (u, r))
                .collect::<Vec<_>>(),
            self.granted()
        )
    }
}

/// An auth change of the kinds the agent makes, read from the log.
#[derive(Debug)]
enum AuthChange {
    Enable {
        token_key: Bytes,
    },
    UserAdd {
        name: String,
        password: Bytes,
    },
    RoleAdd {
        name: String,
    },
    GrantRole {
        user: String,
        role: String,
    },
    GrantPermission {
        role: String,
        perm: (i32, Bytes, Bytes),
    },
    RevokePermission {
        role: String,
        key: Bytes,
        range_end: Bytes,
    },
}

/// A command's sender as the log holds it.
struct CallerModel {
    user: String,
    /// The auth revision its credentials were judged at.
    revision: u64,
}

/// How one of the agent's puts ended where it ran.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Verdict {
    /// Written.
    Written,
    /// Refused: `PermissionDenied`.
    Denied,
    /// Refused: its credentials predate an auth change (`AuthOldRevision`).
    OldRevision,
}

/// One of the agent's puts as the log holds it.
#[derive(Clone, Debug)]
struct PutRecord {
    /// Its command's `(client, seq)`.
    client: u64,
    seq: u64,
    /// The slot of its first copy.
    first: Slot,
    /// The slot where it ran (its first copy, unless that came after its
    /// node gave up on it), and how the model says it ended there.
    ran: Option<(Slot, Verdict)>,
}

impl PutRecord {
    /// How it ended on a replica that applied through `applied` (`None`:
    /// it has not run there).
    fn ran_by(&self, applied: Slot) -> Option<Verdict> {
        self.ran
            .filter(|(slot, _)| *slot <= applied)
            .map(|(_, verdict)| verdict)
    }
}

/// What the state machine remembers of a client session, as far as
/// deciding which copy of a command runs goes.
#[derive(Default)]
struct SessionModel {
    /// Seqs below this were answered or given up: copies are refused.
    below: u64,
    /// Seqs at or above `below` that ran: copies are answered from the
    /// record.
    ran: BTreeSet<u64>,
}

/// The log replayed in order, once.
#[derive(Default)]
struct LogModel {
    /// The next slot to replay.
    next: u64,
    /// The auth state after each slot that changed it, in slot order
    /// (the first is the empty store, before slot 1).
    views: Vec<(Slot, AuthView)>,
    /// The agent's puts, by number.
    puts: BTreeMap<u64, PutRecord>,
    /// Slots holding the agent's puts.
    put_slots: BTreeMap<Slot, Vec<u64>>,
    /// Changes of `r`'s permission (granted to revoked or back).
    flips: u64,
    /// Every client's session.
    sessions: BTreeMap<u64, SessionModel>,
}

impl LogModel {
    fn current(&self) -> &AuthView {
        &self.views.last().expect("starts with the empty store").1
    }

    /// The index of the auth state at `applied`.
    fn index_at(&self, applied: Slot) -> usize {
        self.views.partition_point(|(s, _)| *s <= applied) - 1
    }

    /// A slot applied somewhere: replayed if it is the first time.
    fn on_apply(&mut self, slot: Slot, value: &Value<Bytes>) {
        if self.views.is_empty() {
            self.views.push((Slot(0), AuthView::default()));
            self.next = 1;
        }
        if slot.0 < self.next {
            return;
        }
        assert_eq!(
            slot.0, self.next,
            "slot {slot} applied before slot {} was applied anywhere",
            self.next
        );
        self.next += 1;
        if let Value::Batch(commands) = value {
            for command in commands.iter() {
                self.replay(slot, command);
            }
        }
    }

    /// One command of the log, in order: whether it runs (its session
    /// decides), then auth changes change the model and the agent's puts
    /// are judged by it.
    fn replay(&mut self, slot: Slot, command: &[u8]) {
        let (mut client, mut seq, mut answered_below) = (0, 0, 0);
        let (mut put, mut auth, mut caller) = (None, None, None);
        for (field, value) in wire::Fields(command) {
            match (field, value) {
                (1, wire::Field::Varint(v)) => client = v,
                (2, wire::Field::Varint(v)) => seq = v,
                (12, wire::Field::Varint(v)) => answered_below = v,
                (3, wire::Field::Bytes(b)) => put = Some(b),
                (16, wire::Field::Bytes(b)) => auth = Some(b),
                (17, wire::Field::Bytes(b)) => {
                    caller = Some(CallerModel {
                        user: wire::string_field(b, 1),
                        revision: wire::varint_field(b, 2),
                    })
                }
                _ => {}
            }
        }
        let session = self.sessions.entry(client).or_default();
        let runs = seq >= session.below && session.ran.insert(seq);
        if runs && answered_below > session.below {
            session.below = answered_below;
            session.ran = session.ran.split_off(&answered_below);
        }
        if let (Some(b), true) = (auth, runs) {
            let change = wire::auth_change(b);
            let mut view = self.current().clone();
            if view.admin(caller.as_ref()) && view.change(&change) {
                if view.granted() != self.current().granted() {
                    self.flips += 1;
                }
                self.views.push((slot, view));
            }
        }
        if let (Some(b), Some(caller)) = (put, caller) {
            let key = wire::bytes_field(b, 1);
            let n = key
                .strip_prefix(PREFIX)
                .and_then(|d| std::str::from_utf8(d).ok()?.parse::<u64>().ok());
            if let Some(n) = n {
                let verdict = self.current().put_verdict(&caller, key);
                let record = self.puts.entry(n).or_insert(PutRecord {
                    client,
                    seq,
                    first: slot,
                    ran: None,
                });
                if runs {
                    assert!(record.ran.is_none(), "put {n} ran twice in the model");
                    record.ran = Some((slot, verdict));
                }
                self.put_slots.entry(slot).or_default().push(n);
            }
        }
    }
}

/// How a put ended on a replica (`None`: in no way a put that ran ends).
fn verdict(outcome: &Outcome) -> Option<Verdict> {
    match &outcome.result {
        Some(OutcomeResult::Put(_)) => Some(Verdict::Written),
        Some(OutcomeResult::Error(e)) => match outcome_error(e) {
            KvError::Auth(AuthError::PermissionDenied) => Some(Verdict::Denied),
            KvError::Auth(AuthError::AuthOldRevision) => Some(Verdict::OldRevision),
            _ => None,
        },
        _ => None,
    }
}

impl World {
    /// The agent's periodic step: the setup step due (sent again when its
    /// answer is overdue), or a burst.
    pub(super) fn on_auth_agent(&mut self) -> Result<(), Violation> {
        if self.healed_at.is_some() {
            return Ok(());
        }
        let agent = &self.auth_agent;
        if agent.step < SETUP_STEPS {
            let due = agent
                .step_sent
                .is_none_or(|sent| self.now >= sent + SETUP_PATIENCE);
            self.schedule(SETUP_EVERY, Event::AuthAgent);
            if due {
                self.send_setup();
            }
            return Ok(());
        }
        self.schedule(BURST_EVERY, Event::AuthAgent);
        // A burst: a few puts and, mostly, a flip among them, sent at once
        // through random members: they race each other to the log.
        let puts = self.rng.gen_range(1..=PUTS_PER_BURST_MAX);
        let flip_at = self
            .rng
            .gen_bool(FLIP_CHANCE)
            .then(|| self.rng.gen_range(0..=puts));
        for k in 0..=puts {
            if flip_at == Some(k) {
                self.send_flip();
            }
            if k < puts {
                self.send_put()?;
            }
        }
        Ok(())
    }

    /// Grants or revokes `r`'s permission (the opposite of the last flip
    /// sent), as the node itself or as root.
    fn send_flip(&mut self) {
        let Some(i) = self.auth_contact() else {
            return;
        };
        let grant = !self.auth_agent.revoke_next;
        self.auth_agent.revoke_next = grant;
        let op = Op::Auth(flip_op(grant));
        let request = if self.rng.gen_bool(0.5) {
            Request::Write(op)
        } else {
            let caller = Caller {
                user: ROOT.into(),
                auth_revision: self.auth_revision_at(i),
            };
            Request::WriteAs { op, caller }
        };
        let id = self.nodes[i].id;
        self.note(|| format!("auth agent: grant={grant} through {id}"));
        self.agent_send(i, Waiting::AuthFlip, request);
    }

    /// Puts the next `auth/<n>` as `u` (in a sharded run, to its shard).
    fn send_put(&mut self) -> Result<(), Violation> {
        let Some(i) = self.auth_contact() else {
            return Ok(());
        };
        self.auth_agent.sent += 1;
        let n = self.auth_agent.sent;
        let op = Op::Put(PutRequest {
            key: put_key(n),
            value: Bytes::from(n.to_be_bytes().to_vec()),
            ..PutRequest::default()
        });
        if self.cfg.shard_map.is_some() {
            return self.send_shard_put(i, n, op);
        }
        // Most carry the revision the node judges credentials at now (a
        // change ordered before the put refuses it); a quarter carry one
        // no change outdates, so that the permission check alone decides
        // them, under every race of flips and puts.
        let auth_revision = if self.rng.gen_bool(0.25) {
            u64::MAX
        } else {
            self.auth_revision_at(i)
        };
        let caller = Caller {
            user: USER.into(),
            auth_revision,
        };
        let request = Request::WriteAs { op, caller };
        self.agent_send(i, Waiting::AuthPut(n), request);
        Ok(())
    }

    /// A running, unpaused member of the newest configuration, at random
    /// (as a client picks an endpoint); any running node when none is.
    fn auth_contact(&mut self) -> Option<usize> {
        let members: Vec<usize> = self
            .current_members()
            .into_iter()
            .map(|id| self.node_index(id))
            .filter(|&i| self.nodes[i].is_up() && self.nodes[i].paused_until <= self.now)
            .collect();
        if members.is_empty() {
            return self.random_running_node();
        }
        Some(members[self.rng.gen_range(0..members.len())])
    }

    fn send_setup(&mut self) {
        let Some(i) = self.auth_contact() else {
            return;
        };
        let agent = &mut self.auth_agent;
        if agent.token_key.is_empty() {
            let key: Vec<u8> = (0..TOKEN_KEY_LEN).map(|_| self.rng.gen()).collect();
            self.auth_agent.token_key = Bytes::from(key);
        }
        let step = self.auth_agent.step;
        self.auth_agent.step_sent = Some(self.now);
        let op = Op::Auth(setup_op(step, &self.auth_agent.token_key));
        self.agent_send(i, Waiting::AuthSetup(step), Request::Write(op));
    }

    /// The auth revision node `i` judges credentials at: its own store's.
    fn auth_revision_at(&self, i: usize) -> u64 {
        self.nodes[i]
            .group
            .as_ref()
            .map_or(0, |g| g.kv().auth().revision())
    }

    fn agent_send(&mut self, i: usize, waiting: Waiting, request: Request) {
        let now = self.nodes[i].local_time(self.now);
        let node = &mut self.nodes[i];
        let ticket = node.ticket(waiting);
        node.group().request(ticket, request, now);
    }

    /// A setup step answered: on to the next once it took effect (or had
    /// already: an earlier copy applied).
    pub(super) fn on_auth_setup_answer(&mut self, step: usize, answer: Option<Answer>) {
        if step != self.auth_agent.step {
            return;
        }
        let done = match &answer {
            Some(Answer::Write(o)) => match &o.result {
                Some(OutcomeResult::Auth(_)) => true,
                Some(OutcomeResult::Error(e)) => matches!(
                    outcome_error(e),
                    KvError::Auth(AuthError::UserAlreadyExist | AuthError::RoleAlreadyExist)
                ),
                _ => false,
            },
            _ => false,
        };
        self.auth_agent.step_sent = None;
        if done {
            self.auth_agent.step += 1;
            self.note(|| format!("auth agent: setup step {step} done"));
            if self.auth_agent.step < SETUP_STEPS && self.healed_at.is_none() {
                self.send_setup();
            }
        }
    }

    /// A put answered: an acknowledged outcome must be the one the log
    /// gives it.
    pub(super) fn on_auth_put_answer(
        &mut self,
        n: u64,
        answer: Option<Answer>,
    ) -> Result<(), Violation> {
        let Some(Answer::Write(outcome)) = answer else {
            return Ok(());
        };
        let Some(answered) = verdict(&outcome) else {
            return Ok(());
        };
        if self.cfg.shard_map.is_some() {
            return self.on_shard_put_answer(n, answered);
        }
        let model = &self.auth_agent.model;
        let Some(record) = model.puts.get(&n) else {
            return Err(Violation {
                invariant: "an answered put of the auth agent is in the log",
                detail: format!("put {n} answered {outcome:?}, never applied"),
            });
        };
        if record.ran.map(|(_, v)| v) != Some(answered) {
            let at = record.ran.map_or(record.first, |(slot, _)| slot);
            let view = &model.views[model.index_at(at)].1;
            return Err(Violation {
                invariant: match answered {
                    Verdict::Written => "a put acknowledged OK applied while permitted",
                    Verdict::Denied => "a put refused PermissionDenied applied while revoked",
                    Verdict::OldRevision => {
                        "a put refused AuthOldRevision applied after an auth change"
                    }
                },
                detail: format!("put auth/{n} ({record:?}); auth at slot {at}: {view}"),
            });
        }
        match answered {
            Verdict::Written => self.auth_agent.puts_ok += 1,
            Verdict::Denied => self.auth_agent.denied += 1,
            Verdict::OldRevision => self.auth_agent.old_revision += 1,
        }
        Ok(())
    }

    /// A node applied `slot`: the model replays it if no node had.
    pub(super) fn auth_on_apply(&mut self, slot: Slot, value: &Value<Bytes>) {
        if self.cfg.options.auth {
            self.auth_agent.model.on_apply(slot, value);
        }
    }

    /// After a round of node `i` that applied `slots` (after an install:
    /// every slot through the round's end): the agent's puts among them
    /// ended on this replica as the log says.
    pub(super) fn auth_check_puts(
        &self,
        i: usize,
        slots: std::ops::RangeInclusive<Slot>,
    ) -> Result<(), Violation> {
        if !self.cfg.options.auth {
            return Ok(());
        }
        for ns in self
            .auth_agent
            .model
            .put_slots
            .range(slots)
            .map(|(_, ns)| ns)
        {
            for &n in ns {
                self.auth_check_put(i, n)?;
            }
        }
        Ok(())
    }

    /// Put `n` on node `i`: its recorded outcome (while the replica still
    /// remembers it) and whether its key exists are what the log allows.
    fn auth_check_put(&self, i: usize, n: u64) -> Result<(), Violation> {
        let node = &self.nodes[i];
        let Some(group) = node.group.as_ref() else {
            return Ok(());
        };
        let applied = group.applied();
        let record = &self.auth_agent.model.puts[&n];
        let kv = group.kv();
        let violation = |what: String| {
            let model = &self.auth_agent.model;
            let at = record.ran.map_or(record.first, |(slot, _)| slot);
            let view = &model.views[model.index_at(at)].1;
            Err(Violation {
                invariant: "each put's outcome follows the auth state in log order",
                detail: format!(
                    "{} (applied {applied}): put auth/{n} {what}; {record:?}; auth at slot {at}: {view}",
                    node.id
                ),
            })
        };
        let expected = record.ran_by(applied);
        if let Some(o) = kv.session_outcome(record.client, record.seq) {
            if expected.is_none() || verdict(o) != expected {
                return violation(format!("ended {o:?}"));
            }
        }
        let range = RangeRequest {
            key: put_key(n),
            count_only: true,
            ..RangeRequest::default()
        };
        let present = kv.range(&range).map(|r| r.count > 0).unwrap_or(false);
        if present != (expected == Some(Verdict::Written)) {
            return violation(format!("present={present}"));
        }
        Ok(())
    }

    /// Node `i` installed a snapshot: its auth store is compared in full
    /// after the round.
    pub(super) fn auth_installed(&mut self, i: usize) {
        if let Some(c) = self.auth_agent.compared.get_mut(i) {
            *c = None;
        }
    }

    /// Node `i` restarted (or installed a snapshot) since its auth store
    /// was last compared.
    pub(super) fn auth_unchecked(&self, i: usize) -> bool {
        let node = &self.nodes[i];
        self.cfg.options.auth
            && self
                .auth_agent
                .compared
                .get(i)
                .copied()
                .flatten()
                .is_none_or(|c| c.0 != node.incarnation)
    }

    /// After node `i`'s rounds (or its restart): its auth store is the
    /// model's at its applied slot. Compared again only when either side
    /// may have changed.
    pub(super) fn auth_check_replica(&mut self, i: usize) -> Result<(), Violation> {
        if !self.cfg.options.auth {
            return Ok(());
        }
        let node = &self.nodes[i];
        let Some(group) = node.group.as_ref() else {
            return Ok(());
        };
        let model = &self.auth_agent.model;
        if model.views.is_empty() {
            return Ok(());
        }
        let applied = group.applied();
        let index = model.index_at(applied);
        let key = (node.incarnation, index, group.kv().auth().revision());
        if self.auth_agent.compared.get(i) == Some(&Some(key)) {
            return Ok(());
        }
        let expected = &model.views[index].1;
        let actual = AuthView::of(group.kv());
        if actual != *expected {
            return Err(Violation {
                invariant: "every replica's auth store follows the log",
                detail: format!(
                    "{} applied through {applied} holds {actual} (token key {} bytes), \
                     the log gives {expected} (token key {} bytes) as of slot {}",
                    node.id,
                    actual.token_key.len(),
                    expected.token_key.len(),
                    model.views[index].0
                ),
            });
        }
        let compared = &mut self.auth_agent.compared;
        if compared.len() <= i {
            compared.resize(i + 1, None);
        }
        compared[i] = Some(key);
        Ok(())
    }

    /// After convergence: on the furthest member, every put is as the log
    /// says, every acknowledged one present, every refused one absent.
    pub(super) fn auth_final_check(&self) -> Result<(), Violation> {
        if !self.cfg.options.auth {
            return Ok(());
        }
        let Some(i) = (0..self.nodes.len())
            .filter(|&i| self.nodes[i].is_up())
            .max_by_key(|&i| (self.nodes[i].applied(), std::cmp::Reverse(i)))
        else {
            return Ok(());
        };
        for &n in self.auth_agent.model.puts.keys() {
            self.auth_check_put(i, n)?;
        }
        // Every answer matched the log (checked as it came), and every
        // put is on this replica as the log says: every acknowledged put
        // is here and no refused one.
        Ok(())
    }
}

/// Just enough of protobuf's wire format to read the commands in the log
/// (the simulator has no protobuf library of its own; reading them by
/// hand also keeps the oracle apart from the code it checks).
mod wire {
    use super::AuthChange;
    use bytes::Bytes;

    pub(super) enum Field<'a> {
        Varint(u64),
        Bytes(&'a [u8]),
        Fixed,
    }

    /// The fields of one message, in order; stops at a malformed one.
    pub(super) struct Fields<'a>(pub(super) &'a [u8]);

    impl<'a> Iterator for Fields<'a> {
        type Item = (u64, Field<'a>);

        fn next(&mut self) -> Option<Self::Item> {
            if self.0.is_empty() {
                return None;
            }
            let tag = varint(&mut self.0)?;
            let value = match tag & 7 {
                0 => Field::Varint(varint(&mut self.0)?),
                1 => {
                    self.0 = self.0.get(8..)?;
                    Field::Fixed
                }
                2 => {
                    let len = usize::try_from(varint(&mut self.0)?).ok()?;
                    let value = self.0.get(..len)?;
                    self.0 = &self.0[len..];
                    Field::Bytes(value)
                }
                5 => {
                    self.0 = self.0.get(4..)?;
                    Field::Fixed
                }
                _ => {
                    self.0 = &[];
                    return None;
                }
            };
            Some((tag >> 3, value))
        }
    }

    fn varint(b: &mut &[u8]) -> Option<u64> {
        let mut x = 0u64;
        for i in 0..10 {
            let (&byte, rest) = b.split_first()?;
            *b = rest;
            x |= u64::from(byte & 0x7f) << (7 * i);
            if byte < 0x80 {
                return Some(x);
            }
        }
        None
    }

    /// The last value of bytes field `n` (empty when absent).
    pub(super) fn bytes_field(msg: &[u8], n: u64) -> &[u8] {
        Fields(msg)
            .filter_map(|(f, v)| match v {
                Field::Bytes(b) if f == n => Some(b),
                _ => None,
            })
            .last()
            .unwrap_or_default()
    }

    pub(super) fn string_field(msg: &[u8], n: u64) -> String {
        String::from_utf8_lossy(bytes_field(msg, n)).into_owned()
    }

    pub(super) fn varint_field(msg: &[u8], n: u64) -> u64 {
        varints(msg, n).last().unwrap_or(0)
    }

    /// Every value of repeated varint field `n`, packed or not.
    fn varints(msg: &[u8], n: u64) -> impl Iterator<Item = u64> + '_ {
        Fields(msg)
            .filter(move |(f, _)| *f == n)
            .flat_map(|(_, v)| {
                let mut values = Vec::new();
                match v {
                    Field::Varint(x) => values.push(x),
                    Field::Bytes(mut packed) => {
                        while let Some(x) = varint(&mut packed) {
                            values.push(x);
                        }
                    }
                    Field::Fixed => {}
                }
                values
            })
    }

    /// An `AuthWrite` of the kinds the agent sends (nothing else in the
    /// simulated world changes users and roles).
    pub(super) fn auth_change(msg: &[u8]) -> AuthChange {
        let token_key = Bytes::copy_from_slice(bytes_field(msg, 12));
        let (op, body) = Fields(msg)
            .filter_map(|(f, v)| match v {
                Field::Bytes(b) if f != 12 => Some((f, b)),
                _ => None,
            })
            .last()
            .expect("an auth change has an op");
        let s = |n| string_field(body, n);
        let b = |n| Bytes::copy_from_slice(bytes_field(body, n));
        match op {
            1 => AuthChange::Enable { token_key },
            3 => AuthChange::UserAdd {
                name: s(1),
                password: b(4),
            },
            6 => AuthChange::GrantRole {
                user: s(1),
                role: s(2),
            },
            8 => AuthChange::RoleAdd { name: s(1) },
            10 => {
                let perm = bytes_field(body, 2);
                let perm_type = varint_field(perm, 1) as i32;
                let key = Bytes::copy_from_slice(bytes_field(perm, 2));
                let end = Bytes::copy_from_slice(bytes_field(perm, 3));
                AuthChange::GrantPermission {
                    role: s(1),
                    perm: (perm_type, key, end),
                }
            }
            11 => AuthChange::RevokePermission {
                role: s(1),
                key: b(2),
                range_end: b(3),
            },
            other => panic!("the auth agent's model does not know auth op {other}"),
        }
    }
}
