//! etcd's auth store as replicated state: users with bcrypt password
//! hashes, roles with key-range permissions, the enabled flag and the auth
//! revision. Pure and deterministic like the rest of the state machine:
//! hashing and checking passwords (slow, salted) and tokens are the front
//! end's; this module only decides who may do what.
//!
//! Permissions are checked where the command applies (see
//! [`KvStore::apply`](crate::KvStore::apply)), against the roles of that
//! moment: a role revoked before a write is ordered before it is never
//! bypassed, wherever either was proposed.

use bytes::Bytes;
use std::collections::BTreeMap;
use std::fmt;
use synod_proto::authpb::{permission::Type as PermType, Permission, Role, User};
use synod_proto::synodpb::{auth_write::Op as AuthOp, AuthState, AuthWrite};

/// The user and role with every permission. AuthEnable needs the root
/// user holding the root role, so an operator cannot lock everyone out.
pub const ROOT: &str = "root";

/// Length of the key simple tokens are signed with.
pub const TOKEN_KEY_LEN: usize = 32;

/// Why an auth request or a permission check failed; etcd's errors, with
/// etcd's messages and gRPC codes (client libraries match on both).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum AuthError {
    /// AuthEnable without a root user.
    RootUserNotExist,
    /// AuthEnable while the root user lacks the root role.
    RootRoleNotExist,
    /// UserAdd of a name taken.
    UserAlreadyExist,
    /// An empty user name, or a request without a user while auth is on.
    UserEmpty,
    /// No such user.
    UserNotFound,
    /// RoleAdd of a name taken.
    RoleAlreadyExist,
    /// No such role.
    RoleNotFound,
    /// An empty role name.
    RoleEmpty,
    /// Wrong user or password (one error for both, so as not to tell
    /// which names exist).
    AuthFailed,
    /// RoleGrantPermission without a permission.
    PermissionNotGiven,
    /// The user's roles do not allow the operation.
    PermissionDenied,
    /// UserRevokeRole of a role the user does not hold.
    RoleNotGranted,
    /// RoleRevokePermission of a permission the role does not hold.
    PermissionNotGranted,
    /// Authenticate while auth is off.
    AuthNotEnabled,
    /// A token that does not verify, expired, or names a changed user.
    InvalidAuthToken,
    /// A change that would lock the root user out, or a malformed one.
    InvalidAuthMgmt,
    /// A JWT minted before the last auth change: the client
    /// re-authenticates (etcd's clients do so on this error).
    AuthOldRevision,
}

/// The gRPC status code an [`AuthError`] travels with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthCode {
    /// `INVALID_ARGUMENT`.
    InvalidArgument,
    /// `FAILED_PRECONDITION`.
    FailedPrecondition,
    /// `PERMISSION_DENIED`.
    PermissionDenied,
    /// `UNAUTHENTICATED`.
    Unauthenticated,
}

const ALL_ERRORS: [AuthError; 17] = [
    AuthError::RootUserNotExist,
    AuthError::RootRoleNotExist,
    AuthError::UserAlreadyExist,
    AuthError::UserEmpty,
    AuthError::UserNotFound,
    AuthError::RoleAlreadyExist,
    AuthError::RoleNotFound,
    AuthError::RoleEmpty,
    AuthError::AuthFailed,
    AuthError::PermissionNotGiven,
    AuthError::PermissionDenied,
    AuthError::RoleNotGranted,
    AuthError::PermissionNotGranted,
    AuthError::AuthNotEnabled,
    AuthError::InvalidAuthToken,
    AuthError::InvalidAuthMgmt,
    AuthError::AuthOldRevision,
];

impl AuthError {
    /// etcd's message, word for word.
    pub fn etcd_message(self) -> &'static str {
        match self {
            AuthError::RootUserNotExist => "etcdserver: root user does not exist",
            AuthError::RootRoleNotExist => "etcdserver: root user does not have root role",
            AuthError::UserAlreadyExist => "etcdserver: user name already exists",
            AuthError::UserEmpty => "etcdserver: user name is empty",
            AuthError::UserNotFound => "etcdserver: user name not found",
            AuthError::RoleAlreadyExist => "etcdserver: role name already exists",
            AuthError::RoleNotFound => "etcdserver: role name not found",
            AuthError::RoleEmpty => "etcdserver: role name is empty",
            AuthError::AuthFailed => {
                "etcdserver: authentication failed, invalid user ID or password"
            }
            AuthError::PermissionNotGiven => "etcdserver: permission not given",
            AuthError::PermissionDenied => "etcdserver: permission denied",
            AuthError::RoleNotGranted => "etcdserver: role is not granted to the user",
            AuthError::PermissionNotGranted => "etcdserver: permission is not granted to the role",
            AuthError::AuthNotEnabled => "etcdserver: authentication is not enabled",
            AuthError::InvalidAuthToken => "etcdserver: invalid auth token",
            AuthError::InvalidAuthMgmt => "etcdserver: invalid auth management",
            AuthError::AuthOldRevision => "etcdserver: revision of auth store is old",
        }
    }

    /// etcd's gRPC code for it.
    pub fn code(self) -> AuthCode {
        match self {
            AuthError::UserEmpty
            | AuthError::RoleEmpty
            | AuthError::AuthFailed
            | AuthError::PermissionNotGiven
            | AuthError::InvalidAuthMgmt
            | AuthError::AuthOldRevision => AuthCode::InvalidArgument,
            AuthError::PermissionDenied => AuthCode::PermissionDenied,
            AuthError::InvalidAuthToken => AuthCode::Unauthenticated,
            _ => AuthCode::FailedPrecondition,
        }
    }

    /// The number an outcome records it by (stable: outcomes are stored).
    pub fn number(self) -> i64 {
        ALL_ERRORS
            .iter()
            .position(|e| *e == self)
            .expect("every error is listed") as i64
            + 1
    }

    /// The error a recorded number names; `None` for an unknown number
    /// (a newer version's error).
    pub fn from_number(n: i64) -> Option<AuthError> {
        usize::try_from(n - 1)
            .ok()
            .and_then(|i| ALL_ERRORS.get(i))
            .copied()
    }
}

impl fmt::Display for AuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.etcd_message())
    }
}

/// What an operation needs on a key range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Range, watch, compare, `prev_kv`.
    Read,
    /// Put, delete.
    Write,
}

/// Users, roles and whether they are enforced.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AuthStore {
    enabled: bool,
    revision: u64,
    users: BTreeMap<String, User>,
    roles: BTreeMap<String, Role>,
    token_key: Bytes,
}

impl AuthStore {
    /// Whether permissions are enforced.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Bumped by every change; shown as etcd's `authRevision`.
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// The key simple tokens are signed with (empty before the first
    /// AuthEnable).
    pub fn token_key(&self) -> &Bytes {
        &self.token_key
    }

    /// A user, if it exists.
    pub fn user(&self, name: &str) -> Option<&User> {
        self.users.get(name)
    }

    /// Every user name, sorted.
    pub fn user_names(&self) -> Vec<String> {
        self.users.keys().cloned().collect()
    }

    /// Every role name, sorted.
    pub fn role_names(&self) -> Vec<String> {
        self.roles.keys().cloned().collect()
    }

    /// A role's permissions as etcd lists them (the root role: every key,
    /// read and write).
    pub fn role_permissions(&self, name: &str) -> Result<Vec<Permission>, AuthError> {
        let role = self.roles.get(name).ok_or(AuthError::RoleNotFound)?;
        if name == ROOT {
            return Ok(vec![Permission {
                perm_type: PermType::Readwrite as i32,
                key: Bytes::new(),
                range_end: Bytes::from_static(&[0]),
            }]);
        }
        Ok(role.key_permission.clone())
    }

    /// Whether `user` holds `role`.
    pub fn has_role(&self, user: &str, role: &str) -> bool {
        self.users
            .get(user)
            .is_some_and(|u| u.roles.iter().any(|r| r == role))
    }

    /// Admin operations (auth management, membership, defragment,
    /// snapshot, hashes): the root role only, while auth is on.
    pub fn check_admin(&self, user: &str) -> Result<(), AuthError> {
        if !self.enabled {
            return Ok(());
        }
        if user.is_empty() {
            return Err(AuthError::UserEmpty);
        }
        let u = self.users.get(user).ok_or(AuthError::UserNotFound)?;
        if u.roles.iter().any(|r| r == ROOT) {
            Ok(())
        } else {
            Err(AuthError::PermissionDenied)
        }
    }

    /// Whether `user` may read or write every key of `[key, range_end)`
    /// (etcd's range forms: `range_end` empty for `key` alone, `"\0"` for
    /// every key from `key` on). The union of the user's roles' ranges
    /// must cover the whole range; the root role covers everything.
    pub fn check(
        &self,
        user: &str,
        access: Access,
        key: &[u8],
        range_end: &[u8],
    ) -> Result<(), AuthError> {
        if !self.enabled {
            return Ok(());
        }
        if user.is_empty() {
            return Err(AuthError::UserEmpty);
        }
        let u = self.users.get(user).ok_or(AuthError::PermissionDenied)?;
        if u.roles.iter().any(|r| r == ROOT) {
            return Ok(());
        }
        let mut granted: Vec<Interval> = u
            .roles
            .iter()
            .filter_map(|r| self.roles.get(r))
            .flat_map(|r| &r.key_permission)
            .filter(|p| allows(p.perm_type, access))
            .map(|p| Interval::of(&p.key, &p.range_end))
            .collect();
        if covers(&mut granted, &Interval::of(key, range_end)) {
            Ok(())
        } else {
            Err(AuthError::PermissionDenied)
        }
    }

    /// [`check`](Self::check) for a [`KeyRange`](crate::KeyRange).
    pub fn check_range(
        &self,
        user: &str,
        access: Access,
        range: &crate::KeyRange,
    ) -> Result<(), AuthError> {
        match range {
            crate::KeyRange::Single(k) => self.check(user, access, k, &[]),
            crate::KeyRange::Span { start, end: None } => self.check(user, access, start, &[0]),
            crate::KeyRange::Span {
                start,
                end: Some(end),
            } => self.check(user, access, start, end),
        }
    }

    /// Applies one change, with etcd's rules and errors; the revision
    /// moves only when something changed.
    pub fn apply(&mut self, w: &AuthWrite) -> Result<(), AuthError> {
        let changed = match &w.op {
            Some(AuthOp::Enable(_)) => {
                if self.enabled {
                    false
                } else {
                    let root = self.users.get(ROOT).ok_or(AuthError::RootUserNotExist)?;
                    if !root.roles.iter().any(|r| r == ROOT) {
                        return Err(AuthError::RootRoleNotExist);
                    }
                    if w.token_key.len() != TOKEN_KEY_LEN {
                        return Err(AuthError::InvalidAuthMgmt);
                    }
                    self.enabled = true;
                    self.token_key = w.token_key.clone();
                    true
                }
            }
            Some(AuthOp::Disable(_)) => std::mem::replace(&mut self.enabled, false),
            Some(AuthOp::UserAdd(r)) => {
                if r.name.is_empty() {
                    return Err(AuthError::UserEmpty);
                }
                if self.users.contains_key(&r.name) {
                    return Err(AuthError::UserAlreadyExist);
                }
                let no_password = r.options.as_ref().is_some_and(|o| o.no_password);
                let password = if no_password {
                    Bytes::new()
                } else {
                    Bytes::from(r.hashed_password.clone().into_bytes())
                };
                let user = User {
                    name: Bytes::from(r.name.clone().into_bytes()),
                    password,
                    roles: Vec::new(),
                    options: r.options,
                };
                self.users.insert(r.name.clone(), user);
                true
            }
            Some(AuthOp::UserDelete(r)) => {
                if self.enabled && r.name == ROOT {
                    return Err(AuthError::InvalidAuthMgmt);
                }
                self.users.remove(&r.name).ok_or(AuthError::UserNotFound)?;
                true
            }
            Some(AuthOp::UserChangePassword(r)) => {
                let u = self.users.get_mut(&r.name).ok_or(AuthError::UserNotFound)?;
                u.password = Bytes::from(r.hashed_password.clone().into_bytes());
                true
            }
            Some(AuthOp::UserGrantRole(r)) => {
                if r.role != ROOT && !self.roles.contains_key(&r.role) {
                    // Checked after the user, as etcd does.
                    if !self.users.contains_key(&r.user) {
                        return Err(AuthError::UserNotFound);
                    }
                    return Err(AuthError::RoleNotFound);
                }
                let u = self.users.get_mut(&r.user).ok_or(AuthError::UserNotFound)?;
                match u.roles.binary_search(&r.role) {
                    Ok(_) => false,
                    Err(i) => {
                        u.roles.insert(i, r.role.clone());
                        true
                    }
                }
            }
            Some(AuthOp::UserRevokeRole(r)) => {
                if self.enabled && r.name == ROOT && r.role == ROOT {
                    return Err(AuthError::InvalidAuthMgmt);
                }
                let u = self.users.get_mut(&r.name).ok_or(AuthError::UserNotFound)?;
                let i = u
                    .roles
                    .binary_search(&r.role)
                    .map_err(|_| AuthError::RoleNotGranted)?;
                u.roles.remove(i);
                true
            }
            Some(AuthOp::RoleAdd(r)) => {
                if r.name.is_empty() {
                    return Err(AuthError::RoleEmpty);
                }
                if self.roles.contains_key(&r.name) {
                    return Err(AuthError::RoleAlreadyExist);
                }
                let role = Role {
                    name: Bytes::from(r.name.clone().into_bytes()),
                    key_permission: Vec::new(),
                };
                self.roles.insert(r.name.clone(), role);
                true
            }
            Some(AuthOp::RoleDelete(r)) => {
                if self.enabled && r.role == ROOT {
                    return Err(AuthError::InvalidAuthMgmt);
                }
                self.roles.remove(&r.role).ok_or(AuthError::RoleNotFound)?;
                for u in self.users.values_mut() {
                    u.roles.retain(|x| *x != r.role);
                }
                true
            }
            Some(AuthOp::RoleGrantPermission(r)) => {
                let perm = r.perm.as_ref().ok_or(AuthError::PermissionNotGiven)?;
                if PermType::try_from(perm.perm_type).is_err()
                    || !valid_range(&perm.key, &perm.range_end)
                {
                    return Err(AuthError::InvalidAuthMgmt);
                }
                let role = self.roles.get_mut(&r.name).ok_or(AuthError::RoleNotFound)?;
                let perms = &mut role.key_permission;
                let at = (&perm.key, &perm.range_end);
                match perms.binary_search_by(|p| (&p.key, &p.range_end).cmp(&at)) {
                    Ok(i) => perms[i].perm_type = perm.perm_type,
                    Err(i) => perms.insert(i, perm.clone()),
                }
                true
            }
            Some(AuthOp::RoleRevokePermission(r)) => {
                let role = self.roles.get_mut(&r.role).ok_or(AuthError::RoleNotFound)?;
                let before = role.key_permission.len();
                role.key_permission
                    .retain(|p| !(p.key == r.key && p.range_end == r.range_end));
                if role.key_permission.len() == before {
                    return Err(AuthError::PermissionNotGranted);
                }
                true
            }
            None => return Err(AuthError::InvalidAuthMgmt),
        };
        if changed {
            self.revision += 1;
        }
        Ok(())
    }

    /// The store as one record (its row on disk, and in snapshots).
    pub fn to_state(&self) -> AuthState {
        AuthState {
            enabled: self.enabled,
            revision: self.revision,
            users: self.users.values().cloned().collect(),
            roles: self.roles.values().cloned().collect(),
            token_key: self.token_key.clone(),
        }
    }

    /// Rebuilds the store from its record, refusing a malformed one (it
    /// comes from a disk or a peer): names that are not UTF-8, empty or
    /// repeated, unsorted role lists, invalid permissions, auth enabled
    /// without root or a signing key.
    pub fn from_state(s: AuthState) -> Result<AuthStore, String> {
        let mut store = AuthStore {
            enabled: s.enabled,
            revision: s.revision,
            token_key: s.token_key,
            ..AuthStore::default()
        };
        for u in s.users {
            let name = String::from_utf8(u.name.to_vec())
                .map_err(|_| "a user name is not UTF-8".to_string())?;
            if name.is_empty() || !u.roles.windows(2).all(|w| w[0] < w[1]) {
                return Err(format!("user {name:?} is malformed"));
            }
            if store.users.insert(name.clone(), u).is_some() {
                return Err(format!("user {name:?} appears twice"));
            }
        }
        for r in s.roles {
            let name = String::from_utf8(r.name.to_vec())
                .map_err(|_| "a role name is not UTF-8".to_string())?;
            let sorted = r
                .key_permission
                .windows(2)
                .all(|w| (&w[0].key, &w[0].range_end) < (&w[1].key, &w[1].range_end));
            let valid = r.key_permission.iter().all(|p| {
                PermType::try_from(p.perm_type).is_ok() && valid_range(&p.key, &p.range_end)
            });
            if name.is_empty() || !sorted || !valid {
                return Err(format!("role {name:?} is malformed"));
            }
            if store.roles.insert(name.clone(), r).is_some() {
                return Err(format!("role {name:?} appears twice"));
            }
        }
        if store.enabled {
            if !store.has_role(ROOT, ROOT) {
                return Err("auth is enabled without a root user holding the root role".into());
            }
            if store.token_key.len() != TOKEN_KEY_LEN {
                return Err("auth is enabled without a token key".into());
            }
        }
        Ok(store)
    }
}

/// etcd's valid permission ranges: a key (non-empty) alone, a key to a
/// larger end, or from a key on (`"\0"`, where an empty key means every
/// key).
fn valid_range(key: &[u8], range_end: &[u8]) -> bool {
    match range_end {
        [] => !key.is_empty(),
        [0] => true,
        end => !key.is_empty() && key < end,
    }
}

fn allows(perm_type: i32, access: Access) -> bool {
    matches!(
        (PermType::try_from(perm_type), access),
        (Ok(PermType::Readwrite), _)
            | (Ok(PermType::Read), Access::Read)
            | (Ok(PermType::Write), Access::Write)
    )
}

/// A half-open key interval; `end == None` runs past every key.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Interval {
    start: Vec<u8>,
    end: Option<Vec<u8>>,
}

impl Interval {
    /// etcd's range forms: one key, `[key, range_end)`, or from `key` on.
    fn of(key: &[u8], range_end: &[u8]) -> Interval {
        match range_end {
            [] => {
                let mut next = key.to_vec();
                next.push(0);
                Interval {
                    start: key.to_vec(),
                    end: Some(next),
                }
            }
            [0] => Interval {
                start: key.to_vec(),
                end: None,
            },
            end => Interval {
                start: key.to_vec(),
                end: Some(end.to_vec()),
            },
        }
    }
}

/// Whether the union of `granted` covers all of `wanted`.
fn covers(granted: &mut [Interval], wanted: &Interval) -> bool {
    if wanted.end.as_ref().is_some_and(|e| *e <= wanted.start) {
        return true; // empty: nothing to read or write
    }
    granted.sort();
    let mut reached = wanted.start.clone();
    for g in granted.iter() {
        if g.start > reached {
            break; // a gap before this interval
        }
        match &g.end {
            None => return true,
            Some(end) if *end > reached => reached = end.clone(),
            _ => {}
        }
        if wanted.end.as_ref().is_some_and(|e| reached >= *e) {
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use synod_proto::etcdserverpb::{
        AuthEnableRequest, AuthRoleAddRequest, AuthRoleGrantPermissionRequest,
        AuthRoleRevokePermissionRequest, AuthUserAddRequest, AuthUserGrantRoleRequest,
        AuthUserRevokeRoleRequest,
    };

    fn w(op: AuthOp) -> AuthWrite {
        AuthWrite {
            op: Some(op),
            token_key: Bytes::from(vec![7; TOKEN_KEY_LEN]),
        }
    }

    fn user(name: &str) -> AuthWrite {
        w(AuthOp::UserAdd(AuthUserAddRequest {
            name: name.into(),
            hashed_password: "$2b$hash".into(),
            ..Default::default()
        }))
    }

    fn role(name: &str) -> AuthWrite {
        w(AuthOp::RoleAdd(AuthRoleAddRequest { name: name.into() }))
    }

    fn grant(user: &str, role: &str) -> AuthWrite {
        w(AuthOp::UserGrantRole(AuthUserGrantRoleRequest {
            user: user.into(),
            role: role.into(),
        }))
    }

    fn perm(role: &str, t: PermType, key: &[u8], end: &[u8]) -> AuthWrite {
        w(AuthOp::RoleGrantPermission(
            AuthRoleGrantPermissionRequest {
                name: role.into(),
                perm: Some(Permission {
                    perm_type: t as i32,
                    key: Bytes::copy_from_slice(key),
                    range_end: Bytes::copy_from_slice(end),
                }),
            },
        ))
    }

    fn enabled_store() -> AuthStore {
        let mut s = AuthStore::default();
        for c in [user(ROOT), role(ROOT), grant(ROOT, ROOT), user("alice")] {
            s.apply(&c).unwrap();
        }
        s.apply(&w(AuthOp::Enable(AuthEnableRequest {}))).unwrap();
        s
    }

    #[test]
    fn enable_needs_root_with_root_role() {
        let mut s = AuthStore::default();
        let enable = w(AuthOp::Enable(AuthEnableRequest {}));
        assert_eq!(s.apply(&enable), Err(AuthError::RootUserNotExist));
        s.apply(&user(ROOT)).unwrap();
        assert_eq!(s.apply(&enable), Err(AuthError::RootRoleNotExist));
        s.apply(&grant(ROOT, ROOT)).unwrap();
        let rev = s.revision();
        s.apply(&enable).unwrap();
        assert!(s.enabled());
        assert_eq!(s.revision(), rev + 1);
        // Enabling again changes nothing.
        s.apply(&enable).unwrap();
        assert_eq!(s.revision(), rev + 1);
    }

    #[test]
    fn root_cannot_be_locked_out_while_enabled() {
        let mut s = enabled_store();
        let del = w(AuthOp::UserDelete(
            synod_proto::etcdserverpb::AuthUserDeleteRequest { name: ROOT.into() },
        ));
        assert_eq!(s.apply(&del), Err(AuthError::InvalidAuthMgmt));
        let revoke = w(AuthOp::UserRevokeRole(AuthUserRevokeRoleRequest {
            name: ROOT.into(),
            role: ROOT.into(),
        }));
        assert_eq!(s.apply(&revoke), Err(AuthError::InvalidAuthMgmt));
        let drop_role = w(AuthOp::RoleDelete(
            synod_proto::etcdserverpb::AuthRoleDeleteRequest { role: ROOT.into() },
        ));
        assert_eq!(s.apply(&drop_role), Err(AuthError::InvalidAuthMgmt));
    }

    #[test]
    fn ranges_are_covered_by_the_union_of_roles() {
        let mut s = enabled_store();
        for c in [
            role("a"),
            role("b"),
            perm("a", PermType::Read, b"foo", b"fop"),
            perm("b", PermType::Readwrite, b"fop", b"fz"),
            grant("alice", "a"),
        ] {
            s.apply(&c).unwrap();
        }
        assert_eq!(s.check("alice", Access::Read, b"foo1", b""), Ok(()));
        assert_eq!(
            s.check("alice", Access::Write, b"foo1", b""),
            Err(AuthError::PermissionDenied)
        );
        // [foo, fq) needs b too.
        assert_eq!(
            s.check("alice", Access::Read, b"foo", b"fq"),
            Err(AuthError::PermissionDenied)
        );
        s.apply(&grant("alice", "b")).unwrap();
        assert_eq!(s.check("alice", Access::Read, b"foo", b"fq"), Ok(()));
        assert_eq!(
            s.check("alice", Access::Read, b"foo", b"\0"),
            Err(AuthError::PermissionDenied)
        );
        assert_eq!(s.check(ROOT, Access::Write, b"", b"\0"), Ok(()));
        assert_eq!(
            s.check("", Access::Read, b"x", b""),
            Err(AuthError::UserEmpty)
        );
        assert_eq!(
            s.check("mallory", Access::Read, b"foo1", b""),
            Err(AuthError::PermissionDenied)
        );
        // Revoking takes effect on the next check.
        let revoke = w(AuthOp::RoleRevokePermission(
            AuthRoleRevokePermissionRequest {
                role: "a".into(),
                key: Bytes::from_static(b"foo"),
                range_end: Bytes::from_static(b"fop"),
            },
        ));
        s.apply(&revoke).unwrap();
        assert_eq!(
            s.check("alice", Access::Read, b"foo1", b""),
            Err(AuthError::PermissionDenied)
        );
        assert_eq!(s.apply(&revoke), Err(AuthError::PermissionNotGranted));
    }

    #[test]
    fn a_single_key_permission_covers_that_key_only() {
        let mut s = enabled_store();
        for c in [
            role("k"),
            perm("k", PermType::Write, b"key", b""),
            grant("alice", "k"),
        ] {
            s.apply(&c).unwrap();
        }
        assert_eq!(s.check("alice", Access::Write, b"key", b""), Ok(()));
        assert!(s.check("alice", Access::Write, b"key0", b"").is_err());
        assert!(s.check("alice", Access::Write, b"ke", b"").is_err());
        assert!(s.check("alice", Access::Write, b"key", b"kez").is_err());
    }

    #[test]
    fn state_round_trips_and_hostile_state_is_refused() {
        let s = enabled_store();
        assert_eq!(AuthStore::from_state(s.to_state()).unwrap(), s);
        let mut bad = s.to_state();
        bad.token_key = Bytes::new();
        assert!(AuthStore::from_state(bad).is_err());
        let mut bad = s.to_state();
        bad.users.push(bad.users[0].clone());
        assert!(AuthStore::from_state(bad).is_err());
        let mut bad = s.to_state();
        bad.users.retain(|u| u.name != ROOT);
        assert!(AuthStore::from_state(bad).is_err());
    }

    #[test]
    fn error_numbers_round_trip() {
        for e in ALL_ERRORS {
            assert_eq!(AuthError::from_number(e.number()), Some(e));
        }
        assert_eq!(AuthError::from_number(0), None);
        assert_eq!(AuthError::from_number(99), None);
    }
}
