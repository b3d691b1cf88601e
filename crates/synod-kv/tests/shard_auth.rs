//! Auth in a sharded cluster (design 0018), as the pure code sees it: a
//! node judges a client's write to a shard by the meta group's users and
//! roles at exactly the caller's auth revision (`judge_routed`), and the
//! shard refuses the write when the stamp's auth fence says the store
//! changed since, or when it carries no fence at all.

use bytes::Bytes;
use synod_kv::auth::{ROOT, TOKEN_KEY_LEN};
use synod_kv::{judge_routed, leases_named, AuthError, AuthStore, KvError, KvStore, Shard};
use synod_proto::authpb::{permission::Type as PermType, Permission};
use synod_proto::etcdserverpb::request_op::Request;
use synod_proto::etcdserverpb::{
    AuthEnableRequest, AuthRoleAddRequest, AuthRoleGrantPermissionRequest,
    AuthRoleRevokePermissionRequest, AuthUserAddRequest, AuthUserGrantRoleRequest,
    CompactionRequest, DeleteRangeRequest, LeaseRevokeRequest, PutRequest, RequestOp, TxnRequest,
};
use synod_proto::synodpb::auth_write::Op as AuthOp;
use synod_proto::synodpb::{command::Op, outcome, AuthFence, AuthWrite, Caller, Command, Outcome};

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

fn w(op: AuthOp) -> AuthWrite {
    AuthWrite {
        op: Some(op),
        token_key: Bytes::from(vec![7; TOKEN_KEY_LEN]),
    }
}

fn grant_perm(role: &str, key: &str, end: &str) -> AuthWrite {
    w(AuthOp::RoleGrantPermission(
        AuthRoleGrantPermissionRequest {
            name: role.into(),
            perm: Some(Permission {
                perm_type: PermType::Readwrite as i32,
                key: b(key),
                range_end: b(end),
            }),
        },
    ))
}

/// Root, and `alice` with role `r` allowed to write `[a/, a0)`; auth on.
fn meta_auth() -> AuthStore {
    let user = |name: &str| {
        w(AuthOp::UserAdd(AuthUserAddRequest {
            name: name.into(),
            hashed_password: "$2b$hash".into(),
            ..Default::default()
        }))
    };
    let role = |name: &str| w(AuthOp::RoleAdd(AuthRoleAddRequest { name: name.into() }));
    let grant = |user: &str, role: &str| {
        w(AuthOp::UserGrantRole(AuthUserGrantRoleRequest {
            user: user.into(),
            role: role.into(),
        }))
    };
    let mut s = AuthStore::default();
    for c in [
        user(ROOT),
        role(ROOT),
        grant(ROOT, ROOT),
        user("alice"),
        role("r"),
        grant("alice", "r"),
        grant_perm("r", "a/", "a0"),
        w(AuthOp::Enable(AuthEnableRequest {})),
    ] {
        s.apply(&c).unwrap();
    }
    s
}

fn put(key: &str, lease: i64) -> Op {
    Op::Put(PutRequest {
        key: b(key),
        value: b("v"),
        lease,
        ..Default::default()
    })
}

fn caller(user: &str, auth_revision: u64) -> Caller {
    Caller {
        user: user.into(),
        auth_revision,
    }
}

fn no_keys(_: i64) -> Vec<Bytes> {
    Vec::new()
}

fn refusal(o: &Outcome) -> Option<KvError> {
    match &o.result {
        Some(outcome::Result::Error(e)) => Some(synod_kv::outcome_error(e)),
        _ => None,
    }
}

#[test]
fn a_node_judges_a_shards_write_at_the_callers_exact_revision() {
    let auth = meta_auth();
    let now = auth.revision();
    let alice = caller("alice", now);
    assert_eq!(
        judge_routed(&auth, &alice, &put("a/1", 0), &no_keys),
        Ok(())
    );
    assert_eq!(
        judge_routed(&auth, &alice, &put("b/1", 0), &no_keys),
        Err(AuthError::PermissionDenied.into())
    );
    // Nobody (no token) is refused while auth is on; root passes.
    assert_eq!(
        judge_routed(&auth, &caller("", now), &put("a/1", 0), &no_keys),
        Err(AuthError::UserEmpty.into())
    );
    assert_eq!(
        judge_routed(&auth, &caller(ROOT, now), &put("b/1", 0), &no_keys),
        Ok(())
    );
    // Credentials judged at another revision than this replica's: older
    // ones are outdated, newer ones mean the replica lags; both are
    // judged again after the front end caught up.
    for other in [now - 1, now + 1] {
        assert_eq!(
            judge_routed(&auth, &caller("alice", other), &put("a/1", 0), &no_keys),
            Err(AuthError::AuthOldRevision.into())
        );
    }
    // Deletes and txns are judged by every key they touch.
    let delete = Op::DeleteRange(DeleteRangeRequest {
        key: b("a/"),
        range_end: b("b"),
        ..Default::default()
    });
    assert_eq!(
        judge_routed(&auth, &alice, &delete, &no_keys),
        Err(AuthError::PermissionDenied.into())
    );
    let txn = Op::Txn(TxnRequest {
        success: vec![RequestOp {
            request: Some(Request::RequestPut(PutRequest {
                key: b("c"),
                ..Default::default()
            })),
        }],
        ..Default::default()
    });
    assert_eq!(
        judge_routed(&auth, &alice, &txn, &no_keys),
        Err(AuthError::PermissionDenied.into())
    );
    // Compaction needs no permission (etcd's rule).
    let compact = Op::Compact(CompactionRequest {
        revision: 1,
        ..Default::default()
    });
    assert_eq!(judge_routed(&auth, &alice, &compact, &no_keys), Ok(()));
}

#[test]
fn a_lease_is_judged_by_every_key_it_holds() {
    let auth = meta_auth();
    let alice = caller("alice", auth.revision());
    let held = |id: i64| match id {
        7 => vec![b("a/x"), b("z")],
        8 => vec![b("a/y")],
        _ => Vec::new(),
    };
    assert_eq!(
        judge_routed(&auth, &alice, &put("a/1", 7), &held),
        Err(AuthError::PermissionDenied.into())
    );
    assert_eq!(judge_routed(&auth, &alice, &put("a/1", 8), &held), Ok(()));
    let revoke = |id| Op::LeaseRevoke(LeaseRevokeRequest { id });
    assert_eq!(
        judge_routed(&auth, &alice, &revoke(7), &held),
        Err(AuthError::PermissionDenied.into())
    );
    assert_eq!(leases_named(&revoke(7)), vec![7]);
    assert_eq!(leases_named(&put("a", 3)), vec![3]);
    assert!(leases_named(&put("a", 0)).is_empty());
}

#[test]
fn while_auth_is_off_nothing_is_judged() {
    let mut auth = meta_auth();
    auth.apply(&w(AuthOp::Disable(Default::default()))).unwrap();
    assert_eq!(
        judge_routed(&auth, &caller("", 0), &put("b", 0), &no_keys),
        Ok(())
    );
}

struct Writer {
    seq: u64,
    stamp: i64,
}

impl Writer {
    fn command(&mut self, op: Op, caller: Option<Caller>, fence: Option<AuthFence>) -> Command {
        self.seq += 1;
        self.stamp += 1;
        Command {
            client: 4,
            seq: self.seq,
            op: Some(op),
            stamp: self.stamp,
            caller,
            auth_fence: fence,
            ..Default::default()
        }
    }
}

fn fence(enabled: bool, revision: u64) -> Option<AuthFence> {
    Some(AuthFence { enabled, revision })
}

#[test]
fn a_shard_refuses_a_write_the_auth_store_changed_under() {
    let mut s = KvStore::default();
    s.set_shard_if_unset(Shard::new(Bytes::new(), None));
    let mut c = Writer { seq: 0, stamp: 10 };
    // Judged at revision 9 and stamped while the store was still at 9.
    let ok = s.apply(&c.command(put("a/1", 0), Some(caller("alice", 9)), fence(true, 9)));
    assert_eq!(refusal(&ok.outcome), None);
    // A change (a revoke, say) came between judging and stamping.
    let late = s.apply(&c.command(put("a/2", 0), Some(caller("alice", 9)), fence(true, 10)));
    assert_eq!(
        refusal(&late.outcome),
        Some(AuthError::AuthOldRevision.into())
    );
    assert!(!late.duplicate, "a refusal that ran is remembered");
    // Auth was off when it was stamped: nothing to refuse.
    let off = s.apply(&c.command(put("a/3", 0), Some(caller("", 1)), fence(false, 12)));
    assert_eq!(refusal(&off.outcome), None);
    // A client's write without a fence is refused, not applied unchecked.
    let bare = s.apply(&c.command(put("a/4", 0), Some(caller("alice", 12)), None));
    assert_eq!(
        refusal(&bare.outcome),
        Some(KvError::InvalidArgument(synod_kv::validate::AUTH_UNFENCED))
    );
    // The node's own commands carry no caller and need none.
    let own = s.apply(&c.command(put("a/5", 0), None, None));
    assert_eq!(refusal(&own.outcome), None);
    let keys: Vec<Bytes> = ["a/1", "a/3", "a/5"].into_iter().map(b).collect();
    for key in ["a/1", "a/2", "a/3", "a/4", "a/5"] {
        let r = s
            .range(&synod_proto::etcdserverpb::RangeRequest {
                key: b(key),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(r.kvs.len(), usize::from(keys.contains(&b(key))), "{key}");
    }
}

#[test]
fn the_meta_group_reports_its_auth_store_as_the_fence() {
    let mut meta = KvStore::default();
    assert_eq!(meta.auth_fence(), AuthFence::default());
    let before = meta.auth_fence();
    for c in [
        w(AuthOp::UserAdd(AuthUserAddRequest {
            name: ROOT.into(),
            hashed_password: "$2b$hash".into(),
            ..Default::default()
        })),
        w(AuthOp::RoleRevokePermission(
            AuthRoleRevokePermissionRequest {
                role: "none".into(),
                ..Default::default()
            },
        )),
    ] {
        let command = Command {
            client: 1,
            seq: 1,
            op: Some(Op::Auth(c)),
            ..Default::default()
        };
        meta.apply(&command);
    }
    let after = meta.auth_fence();
    assert!(!after.enabled);
    assert_eq!(after.revision, before.revision + 1, "the user add counts");
}
