//! etcd authentication and role-based access control, as users meet it:
//! `etcdctl` (3.4) and the `etcd-client` crate against real `synod server`
//! processes.
//!
//! What it proves:
//! - every `etcdctl user`, `role` and `auth` command does what etcd's does,
//!   with etcd's messages for every refusal; a user added through one member
//!   logs in on another at once, and a token from one member is good on
//!   every other; auth state survives the restart of every node;
//! - a user's roles bound every operation: reads, writes, ranges, txns,
//!   watches, leases, locks, elections, and the admin operations
//!   (defragment, snapshot, hashes, membership) that only the root role may
//!   run; read-only and write-only permissions are what they say;
//! - the `etcd-client` crate logs in with `with_user`, is refused with
//!   `PermissionDenied` outside its range, and with
//!   `with_auto_token_refresh` outlives its token's TTL;
//! - revoking a role or a permission cancels the user's open watches at
//!   once and refuses its next write, whichever member either went through;
//! - with `--client-cert-auth`, a client certificate's common name is the
//!   user (no password);
//! - `--auth-token jwt,...` issues ES256 JWTs that every member accepts and
//!   that an auth change outdates; a bad spec stops `synod server` with the
//!   reason.
//!
//! Every server runs with `--bcrypt-cost 4`, so logins are cheap.
//!
//! Membership changes sent to a follower under client TLS reach the leader
//! as their sender, also when a client certificate names it.

mod common;

use common::certs::{arg, write, Ca};
use common::{bounded, etcdctl_output, free_addr, run, Cluster};
use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, LockOptions,
    ProclaimOptions, ResignOptions, Txn, TxnOp, WatchOptions,
};
use std::process::Command;
use std::time::{Duration, Instant};
use synod_proto::etcdserverpb::{
    auth_client::AuthClient, kv_client::KvClient, AuthEnableRequest, AuthRoleAddRequest,
    AuthStatusRequest, AuthUserChangePasswordRequest, AuthenticateRequest, PutRequest,
    RangeRequest,
};
use tonic::Code;

const ROOT: &str = "root:rootpw";
const ALICE: &str = "alice:alicepw";

const DENIED: &str = "etcdserver: permission denied";
const AUTH_FAILED: &str = "etcdserver: authentication failed, invalid user ID or password";
const USER_EMPTY: &str = "etcdserver: user name is empty";
const INVALID_MGMT: &str = "etcdserver: invalid auth management";

/// Flags of every server here: cheap bcrypt.
const FAST_BCRYPT: [&str; 2] = ["--bcrypt-cost", "4"];

/// etcdctl's exit status and what it printed (stdout then stderr), without
/// the client library's JSON log lines.
fn ctl<S: AsRef<str>>(endpoints: &[String], args: &[S], stdin: Option<&str>) -> (bool, String) {
    let args: Vec<&str> = args.iter().map(AsRef::as_ref).collect();
    let out = etcdctl_output(endpoints, &args, stdin);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let text: Vec<&str> = text
        .lines()
        .filter(|l| !l.starts_with("{\"level\""))
        .collect();
    (out.status.success(), text.join("\n"))
}

/// `etcdctl --user USER args` (no `--user` when `user` is empty), which
/// must succeed; returns its output.
#[track_caller]
fn ok(endpoints: &[String], user: &str, args: &[&str]) -> String {
    ok_in(endpoints, user, args, None)
}

#[track_caller]
fn ok_in(endpoints: &[String], user: &str, args: &[&str], stdin: Option<&str>) -> String {
    let all = with_user(user, args);
    let (success, out) = ctl(endpoints, &all, stdin);
    assert!(success, "etcdctl {all:?} failed: {out}");
    out
}

/// `etcdctl --user USER args`, which must fail saying `message`.
#[track_caller]
fn refused(endpoints: &[String], user: &str, args: &[&str], message: &str) {
    refused_in(endpoints, user, args, None, message)
}

#[track_caller]
fn refused_in(endpoints: &[String], user: &str, args: &[&str], stdin: Option<&str>, message: &str) {
    let all = with_user(user, args);
    let (success, out) = ctl(endpoints, &all, stdin);
    assert!(!success, "etcdctl {all:?} succeeded: {out}");
    assert!(
        out.contains(message),
        "etcdctl {all:?}: expected {message:?}, got: {out}"
    );
}

fn with_user<'a>(user: &'a str, args: &[&'a str]) -> Vec<String> {
    let mut all = Vec::new();
    if !user.is_empty() {
        all.push(format!("--user={user}"));
    }
    all.extend(args.iter().map(|s| s.to_string()));
    all
}

/// A long-running etcdctl command (watch, elect) stopped after `secs`:
/// what it printed.
fn ctl_for(endpoints: &[String], secs: u32, user: &str, args: &[&str]) -> String {
    let mut cmd = Command::new("timeout");
    cmd.env("ETCDCTL_API", "3")
        .arg(format!("{secs}s"))
        .arg("etcdctl")
        .arg(format!("--endpoints={}", endpoints.join(",")))
        .args(with_user(user, args));
    let out = run(&mut cmd, Duration::from_secs(secs as u64 + 10));
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// Creates root (holding the root role) and alice (readwrite on `app/`),
/// then enables auth.
fn enable_auth_with_alice(endpoints: &[String]) {
    ok(endpoints, "", &["user", "add", ROOT]);
    ok(endpoints, "", &["role", "add", "root"]);
    ok(endpoints, "", &["user", "grant-role", "root", "root"]);
    ok(endpoints, "", &["user", "add", ALICE]);
    ok(endpoints, "", &["role", "add", "app"]);
    ok(
        endpoints,
        "",
        &[
            "role",
            "grant-permission",
            "app",
            "readwrite",
            "app/",
            "--prefix",
        ],
    );
    ok(endpoints, "", &["user", "grant-role", "alice", "app"]);
    let out = ok(endpoints, "", &["auth", "enable"]);
    assert!(out.contains("Authentication Enabled"), "{out}");
}

/// Starts an `n`-node cluster with `extra` flags (and cheap bcrypt) and
/// waits for its leader.
async fn start(n: u64, extra: &[&str]) -> Cluster {
    let mut flags = FAST_BCRYPT.to_vec();
    flags.extend_from_slice(extra);
    let mut cluster = Cluster::start_with(n, &flags);
    cluster.wait_ready().await;
    cluster
}

/// One member's endpoint as etcdctl takes it.
fn member(cluster: &Cluster, id: u64) -> Vec<String> {
    vec![cluster.addrs(id).client.to_string()]
}

/// The gRPC status of a failed etcd-client call.
#[track_caller]
fn grpc<T>(r: Result<T, etcd_client::Error>) -> tonic::Status {
    match r {
        Err(etcd_client::Error::GRpcStatus(s)) => s,
        Err(e) => panic!("expected a gRPC error status, got {e}"),
        Ok(_) => panic!("expected a gRPC error status, got a success"),
    }
}

#[track_caller]
fn assert_denied<T>(what: &str, r: Result<T, etcd_client::Error>) {
    let s = grpc(r);
    assert_eq!(
        (s.code(), s.message()),
        (Code::PermissionDenied, DENIED),
        "{what}: {s:?}"
    );
}

/// An etcd client logged in as `user:password` to `endpoints`.
async fn login(endpoints: &[String], user: &str, refresh: bool) -> Client {
    let (name, password) = user.split_once(':').expect("name:password");
    let options = ConnectOptions::new()
        .with_user(name, password)
        .with_auto_token_refresh(refresh)
        .with_connect_timeout(Duration::from_secs(1))
        .with_timeout(Duration::from_secs(3));
    Client::connect(endpoints, Some(options))
        .await
        .unwrap_or_else(|e| panic!("log in as {name}: {e}"))
}

/// A token for `user:password` from the member at `endpoint`, by a bare
/// Authenticate call.
async fn token_from(endpoint: &str, user: &str) -> String {
    let (name, password) = user.split_once(':').expect("name:password");
    let mut auth = AuthClient::connect(endpoint.to_string()).await.unwrap();
    auth.authenticate(AuthenticateRequest {
        name: name.into(),
        password: password.into(),
    })
    .await
    .unwrap_or_else(|e| panic!("authenticate {name} at {endpoint}: {e:?}"))
    .into_inner()
    .token
}

fn with_token<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut r = tonic::Request::new(message);
    r.metadata_mut()
        .insert("token", token.parse().expect("ASCII token"));
    r
}

/// A put of `key` sent to `endpoint` with `token`.
async fn put_with_token(endpoint: &str, token: &str, key: &str) -> Result<(), tonic::Status> {
    let mut kv = KvClient::connect(endpoint.to_string()).await.unwrap();
    let put = PutRequest {
        key: key.as_bytes().to_vec().into(),
        value: b"v".to_vec().into(),
        ..PutRequest::default()
    };
    kv.put(with_token(put, token)).await.map(drop)
}

/// A get of `key` sent to `endpoint` with `token`.
async fn get_with_token(endpoint: &str, token: &str, key: &str) -> Result<(), tonic::Status> {
    let mut kv = KvClient::connect(endpoint.to_string()).await.unwrap();
    let get = RangeRequest {
        key: key.as_bytes().to_vec().into(),
        ..RangeRequest::default()
    };
    kv.range(with_token(get, token)).await.map(drop)
}

/// AuthStatus of the member at `endpoint`: (enabled, auth revision).
async fn auth_status(endpoint: &str) -> (bool, u64) {
    let mut auth = AuthClient::connect(endpoint.to_string()).await.unwrap();
    let s = auth
        .auth_status(AuthStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    (s.enabled, s.auth_revision)
}

#[tokio::test(flavor = "multi_thread")]
async fn etcdctl_manages_users_roles_and_auth_across_members_and_restarts() {
    bounded("user and role management", Duration::from_secs(90), async {
        let mut cluster = start(3, &[]).await;
        let all = cluster.host_ports();
        let (m1, m2, m3) = (member(&cluster, 1), member(&cluster, 2), member(&cluster, 3));

        // AuthEnable needs root, holding the root role.
        refused(&all, "", &["auth", "enable"], "etcdserver: root user does not exist");
        let out = ok(&all, "", &["user", "add", ROOT]);
        assert_eq!(out, "User root created");
        // (Asked directly: etcdctl's `auth enable` answers this error by
        // adding the root role and granting it, as etcd's does.)
        let mut auth = AuthClient::connect(cluster.endpoint(2)).await.unwrap();
        let e = auth.auth_enable(AuthEnableRequest {}).await.unwrap_err();
        assert_eq!(
            (e.code(), e.message()),
            (
                Code::FailedPrecondition,
                "etcdserver: root user does not have root role"
            )
        );
        assert_eq!(ok(&all, "", &["role", "add", "root"]), "Role root created");
        assert_eq!(
            ok(&all, "", &["user", "grant-role", "root", "root"]),
            "Role root is granted to user root"
        );

        // Users and roles, every permission form.
        assert_eq!(ok(&all, "", &["user", "add", ALICE]), "User alice created");
        ok(&all, "", &["user", "add", "bob:bobpw"]);
        refused(
            &all,
            "",
            &["user", "add", "alice:again"],
            "etcdserver: user name already exists",
        );
        for role in ["app", "reader", "single", "span", "tail", "spare"] {
            assert_eq!(
                ok(&all, "", &["role", "add", role]),
                format!("Role {role} created")
            );
        }
        refused(
            &all,
            "",
            &["role", "add", "app"],
            "etcdserver: role name already exists",
        );
        for grant in [
            &["app", "readwrite", "app/", "--prefix"][..],
            &["reader", "read", "cfg/", "--prefix"],
            &["reader", "write", "logs/", "--prefix"],
            &["single", "read", "motd"],
            &["span", "readwrite", "k1", "k5"],
            &["tail", "write", "zz", "--from-key"],
        ] {
            let args = [&["role", "grant-permission"][..], grant].concat();
            let out = ok(&all, "", &args);
            assert_eq!(out, format!("Role {} updated", grant[0]));
        }
        refused(
            &all,
            "",
            &["role", "grant-permission", "nosuch", "read", "a"],
            "etcdserver: role name not found",
        );
        assert_eq!(
            ok(&all, "", &["role", "get", "app"]),
            "Role app\nKV Read:\n\t[app/, app0) (prefix app/)\nKV Write:\n\t[app/, app0) (prefix app/)"
        );
        assert_eq!(
            ok(&all, "", &["role", "get", "reader"]),
            "Role reader\nKV Read:\n\t[cfg/, cfg0) (prefix cfg/)\nKV Write:\n\t[logs/, logs0) (prefix logs/)"
        );
        assert_eq!(
            ok(&all, "", &["role", "get", "single"]),
            "Role single\nKV Read:\n\tmotd\nKV Write:"
        );
        assert_eq!(
            ok(&all, "", &["role", "get", "span"]),
            "Role span\nKV Read:\n\t[k1, k5)\nKV Write:\n\t[k1, k5)"
        );
        assert_eq!(
            ok(&all, "", &["role", "get", "tail"]),
            "Role tail\nKV Read:\nKV Write:\n\t[zz, <open ended>"
        );
        assert_eq!(
            ok(&all, "", &["role", "list"]),
            "app\nreader\nroot\nsingle\nspan\nspare\ntail"
        );
        // Revoking each form of permission.
        assert_eq!(
            ok(&all, "", &["role", "revoke-permission", "span", "k1", "k5"]),
            "Permission of range [k1, k5) is revoked from role span"
        );
        assert_eq!(
            ok(&all, "", &["role", "revoke-permission", "single", "motd"]),
            "Permission of key motd is revoked from role single"
        );
        assert_eq!(
            ok(&all, "", &["role", "revoke-permission", "tail", "zz", "--from-key"]),
            "Permission of range [zz, <open ended> is revoked from role tail"
        );
        refused(
            &all,
            "",
            &["role", "revoke-permission", "tail", "zz", "--from-key"],
            "etcdserver: permission is not granted to the role",
        );
        assert_eq!(
            ok(&all, "", &["role", "get", "span"]),
            "Role span\nKV Read:\nKV Write:"
        );

        // Granting and revoking roles.
        assert_eq!(
            ok(&all, "", &["user", "grant-role", "alice", "app"]),
            "Role app is granted to user alice"
        );
        for role in ["reader", "spare"] {
            ok(&all, "", &["user", "grant-role", "bob", role]);
        }
        refused(
            &all,
            "",
            &["user", "grant-role", "alice", "nosuch"],
            "etcdserver: role name not found",
        );
        assert_eq!(
            ok(&all, "", &["user", "revoke-role", "bob", "spare"]),
            "Role spare is revoked from user bob"
        );
        refused(
            &all,
            "",
            &["user", "revoke-role", "bob", "spare"],
            "etcdserver: role is not granted to the user",
        );
        assert_eq!(ok(&all, "", &["user", "get", "bob"]), "User: bob\nRoles: reader");
        assert_eq!(
            ok(&all, "", &["user", "get", "alice", "--detail"]),
            "User: alice\n\nRole app\nKV Read:\n\t[app/, app0) (prefix app/)\nKV Write:\n\t[app/, app0) (prefix app/)"
        );
        refused(
            &all,
            "",
            &["user", "get", "nosuch"],
            "etcdserver: user name not found",
        );
        // A deleted role leaves its users.
        assert_eq!(ok(&all, "", &["role", "delete", "spare"]), "Role spare deleted");
        ok(&all, "", &["user", "grant-role", "bob", "tail"]);
        ok(&all, "", &["role", "delete", "tail"]);
        assert_eq!(ok(&all, "", &["user", "get", "bob"]), "User: bob\nRoles: reader");
        refused(
            &all,
            "",
            &["role", "delete", "tail"],
            "etcdserver: role name not found",
        );
        assert_eq!(ok(&all, "", &["user", "list"]), "alice\nbob\nroot");

        // Enabled: every request needs a user.
        assert_eq!(ok(&m1, "", &["auth", "enable"]), "Authentication Enabled");
        let (enabled, revision) = auth_status(&cluster.endpoint(3)).await;
        assert!(enabled && revision > 0, "AuthStatus on member 3: {enabled} {revision}");
        refused(&all, "", &["put", "app/x", "1"], USER_EMPTY);
        refused(&all, "", &["get", "app/x"], USER_EMPTY);
        refused(&all, "alice:wrong", &["get", "app/x"], AUTH_FAILED);
        refused(&all, "nobody:pw", &["get", "app/x"], AUTH_FAILED);
        assert_eq!(ok(&m1, ALICE, &["put", "app/x", "1"]), "OK");
        assert_eq!(
            ok(&m3, ALICE, &["get", "app/x", "--print-value-only"]),
            "1"
        );
        // Auth management is root's.
        for args in [
            &["user", "list"][..],
            &["user", "add", "eve:evepw"],
            &["user", "get", "bob"],
            &["role", "list"],
            &["role", "add", "mine"],
            &["role", "grant-permission", "app", "readwrite", "", "--from-key"],
            &["user", "grant-role", "alice", "root"],
            &["auth", "disable"],
        ] {
            refused(&all, ALICE, args, DENIED);
        }
        // ...but a user may look at itself and its roles.
        assert_eq!(ok(&all, ALICE, &["user", "get", "alice"]), "User: alice\nRoles: app");
        ok(&all, ALICE, &["role", "get", "app"]);
        // Root cannot be locked out while auth is on.
        refused(&all, ROOT, &["user", "delete", "root"], INVALID_MGMT);
        refused(&all, ROOT, &["role", "delete", "root"], INVALID_MGMT);
        refused(&all, ROOT, &["user", "revoke-role", "root", "root"], INVALID_MGMT);
        // A new password replaces the old one at once.
        let out = ok_in(
            &all,
            ROOT,
            &["user", "passwd", "bob", "--interactive=false"],
            Some("bobpw2\n"),
        );
        assert_eq!(out, "Password updated");
        refused(&all, "bob:bobpw", &["get", "cfg/a"], AUTH_FAILED);
        ok(&all, "bob:bobpw2", &["get", "cfg/a"]);
        assert_eq!(ok(&all, ROOT, &["user", "delete", "bob"]), "User bob deleted");
        refused(&all, "bob:bobpw2", &["get", "cfg/a"], AUTH_FAILED);
        refused(
            &all,
            ROOT,
            &["user", "delete", "bob"],
            "etcdserver: user name not found",
        );

        // A user added through member 2 logs in on member 3 right after.
        ok(&m2, ROOT, &["user", "add", "carol:carolpw"]);
        ok(&m2, ROOT, &["user", "grant-role", "carol", "app"]);
        assert_eq!(ok(&m3, "carol:carolpw", &["put", "app/c", "3"]), "OK");
        // A token from member 1 is good on members 2 and 3.
        let token = token_from(&cluster.endpoint(1), "carol:carolpw").await;
        put_with_token(&cluster.endpoint(3), &token, "app/t").await.unwrap();
        get_with_token(&cluster.endpoint(2), &token, "app/t").await.unwrap();
        let e = put_with_token(&cluster.endpoint(3), &token, "elsewhere")
            .await
            .unwrap_err();
        assert_eq!((e.code(), e.message()), (Code::PermissionDenied, DENIED));
        let e = put_with_token(&cluster.endpoint(2), "forged.0.token", "app/t")
            .await
            .unwrap_err();
        assert_eq!(
            (e.code(), e.message()),
            (Code::Unauthenticated, "etcdserver: invalid auth token")
        );

        // Root's membership changes through a follower reach the leader
        // as root.
        let leader = cluster.wait_ready().await;
        let follower = cluster.ids().into_iter().find(|i| *i != leader).unwrap();
        let via = member(&cluster, follower);
        let peer = format!("--peer-urls=http://{}", free_addr());
        refused(&via, ALICE, &["member", "add", "learner", "--learner", &peer], DENIED);
        let out = ok(&via, ROOT, &["member", "add", "learner", "--learner", &peer]);
        let id = out
            .strip_prefix("Member ")
            .and_then(|s| s.split_whitespace().next())
            .unwrap_or_else(|| panic!("member add printed {out}"))
            .to_string();
        refused(&via, ALICE, &["member", "remove", &id], DENIED);
        let out = ok(&via, ROOT, &["member", "remove", &id]);
        // (etcdctl pads member ids to 16 characters.)
        let words: Vec<&str> = out.split_whitespace().collect();
        assert_eq!(words[..3], ["Member", id.as_str(), "removed"], "{out}");

        // Every node restarts: users, roles, passwords and the enabled
        // flag are all still there.
        let before = auth_status(&cluster.endpoint(1)).await;
        for id in cluster.ids() {
            cluster.kill(id);
        }
        for id in cluster.ids() {
            cluster.spawn(id);
        }
        cluster.wait_ready().await;
        for id in cluster.ids() {
            assert_eq!(auth_status(&cluster.endpoint(id)).await, before, "member {id}");
        }
        refused(&all, "", &["get", "app/x"], USER_EMPTY);
        for id in cluster.ids() {
            let one = member(&cluster, id);
            assert_eq!(ok(&one, ALICE, &["get", "app/c", "--print-value-only"]), "3");
            refused(&one, ALICE, &["put", "elsewhere", "1"], DENIED);
            refused(&one, "alice:wrong", &["get", "app/c"], AUTH_FAILED);
        }
        assert_eq!(ok(&all, ROOT, &["user", "list"]), "alice\ncarol\nroot");
        assert_eq!(
            ok(&all, ROOT, &["role", "list"]),
            "app\nreader\nroot\nsingle\nspan"
        );
        assert_eq!(
            ok(&all, ROOT, &["role", "get", "reader"]),
            "Role reader\nKV Read:\n\t[cfg/, cfg0) (prefix cfg/)\nKV Write:\n\t[logs/, logs0) (prefix logs/)"
        );

        // Disabled: anyone may do anything again; users and roles stay.
        refused(&all, ALICE, &["auth", "disable"], DENIED);
        assert_eq!(ok(&m2, ROOT, &["auth", "disable"]), "Authentication Disabled");
        assert_eq!(ok(&all, "", &["put", "elsewhere", "1"]), "OK");
        assert_eq!(ok(&all, "", &["user", "list"]), "alice\ncarol\nroot");
        assert!(!auth_status(&cluster.endpoint(3)).await.0);
        // Now root may go (it could not while enabled), and enabling needs
        // it again.
        ok(&all, "", &["user", "delete", "root"]);
        refused(&all, "", &["auth", "enable"], "etcdserver: root user does not exist");
        cluster.assert_alive();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_users_roles_bound_every_operation() {
    bounded("permissions", Duration::from_secs(90), async {
        let cluster = start(3, &[]).await;
        let all = cluster.host_ports();
        enable_auth_with_alice(&all);
        // reader reads cfg/, writer writes logs/.
        ok(&all, ROOT, &["user", "add", "reader:readerpw"]);
        ok(&all, ROOT, &["role", "add", "ro"]);
        ok(
            &all,
            ROOT,
            &["role", "grant-permission", "ro", "read", "cfg/", "--prefix"],
        );
        ok(&all, ROOT, &["user", "grant-role", "reader", "ro"]);
        ok(&all, ROOT, &["user", "add", "writer:writerpw"]);
        ok(&all, ROOT, &["role", "add", "wo"]);
        ok(
            &all,
            ROOT,
            &[
                "role",
                "grant-permission",
                "wo",
                "write",
                "logs/",
                "--prefix",
            ],
        );
        ok(&all, ROOT, &["user", "grant-role", "writer", "wo"]);
        for (k, v) in [
            ("b", "outside"),
            ("app/x", "1"),
            ("cfg/a", "A"),
            ("logs/1", "L"),
        ] {
            ok(&all, ROOT, &["put", k, v]);
        }

        // Inside app/: everything works.
        assert_eq!(ok(&all, ALICE, &["put", "app/y", "2"]), "OK");
        assert_eq!(
            ok(&all, ALICE, &["get", "app/", "--prefix", "--keys-only"]),
            "app/x\n\napp/y\n"
        );
        assert_eq!(ok(&all, ALICE, &["get", "app/x", "app/y"]), "app/x\n1");
        assert_eq!(
            ok(&all, ALICE, &["del", "app/y", "--prev-kv"]),
            "1\napp/y\n2"
        );
        let out = ok_in(
            &all,
            ALICE,
            &["txn"],
            Some("value(\"app/x\") = \"1\"\n\nput app/t yes\n\nget app/x\n\n"),
        );
        assert_eq!(out, "SUCCESS\n\nOK");
        let lease = ok(&all, ALICE, &["lease", "grant", "60"]);
        let lease = lease.split_whitespace().nth(1).unwrap().to_string();
        ok(
            &all,
            ALICE,
            &["put", "app/leased", "v", &format!("--lease={lease}")],
        );
        let out = ok(&all, ALICE, &["lease", "timetolive", &lease, "--keys"]);
        assert!(out.contains("attached keys([app/leased])"), "{out}");
        let out = ok(&all, ALICE, &["lease", "revoke", &lease]);
        assert_eq!(out, format!("lease {lease} revoked"));
        assert_eq!(
            ok(&all, ALICE, &["lock", "app/lock", "echo", "held"]),
            "held"
        );
        let out = ctl_for(&all, 2, ALICE, &["watch", "app/", "--prefix", "--rev=1"]);
        assert!(
            out.starts_with("PUT\napp/x\n1\n"),
            "watch inside app/: {out}"
        );
        let out = ctl_for(&all, 2, ALICE, &["elect", "app/e", "me"]);
        assert!(
            out.starts_with("app/e/") && out.ends_with("\nme\n"),
            "elect inside app/: {out}"
        );
        // etcdctl's health check takes a refused read as healthy.
        let out = ok(&all, ALICE, &["endpoint", "health"]);
        assert_eq!(out.matches("is healthy").count(), 3, "{out}");

        // Outside app/: every operation is refused.
        for args in [
            &["put", "b", "1"][..],
            &["get", "b"],
            &["del", "b"],
            // Ranges reaching past app/.
            &["get", "a", "--prefix"],
            &["get", "app", "--prefix"],
            &["get", "app/", "--from-key"],
            &["get", "app/x", "b"],
            &["del", "app/", "--from-key"],
            // Membership and maintenance are the root role's.
            &["endpoint", "hashkv"],
            &["member", "add", "x", "--peer-urls=http://127.0.0.1:1"],
            &["lock", "b", "echo", "held"],
            &["elect", "b", "me"],
        ] {
            refused(&all, ALICE, args, &format!("Error: {DENIED}"));
        }
        let (success, out) = ctl(&all, &with_user(ALICE, &["defrag"]), None);
        let each = format!("] ({DENIED})");
        assert!(!success && out.matches(&each).count() == 3, "defrag: {out}");
        let snapshot = tempfile::tempdir().unwrap();
        let path = snapshot.path().join("s.db");
        // (etcdctl saves a snapshot from one member.)
        let m1 = member(&cluster, 1);
        refused(&m1, ALICE, &["snapshot", "save", &arg(&path)], DENIED);
        assert!(!path.exists(), "a refused snapshot was saved");
        // A txn is refused when any part of it leaves app/: a compare, an
        // op of the branch taken, an op of the branch not taken.
        for txn in [
            "value(\"b\") = \"outside\"\n\nput app/t 1\n\n\n",
            "value(\"app/x\") = \"1\"\n\nput b 1\n\n\n",
            "value(\"app/x\") = \"1\"\n\nput app/t 1\n\nget b\n\n",
            "\ndel b\n\n\n",
        ] {
            refused_in(&all, ALICE, &["txn"], Some(txn), DENIED);
        }
        assert_eq!(
            ok(&all, ROOT, &["get", "b", "--print-value-only"]),
            "outside"
        );
        // A watch outside is cancelled at once with etcd's reason.
        for args in [&["watch", "b"][..], &["watch", "a", "--prefix"]] {
            let (success, out) = ctl(&all, &with_user(ALICE, args), None);
            assert!(!success, "etcdctl {args:?}: {out}");
            assert!(
                out.contains(&format!("watch was canceled ({DENIED})")),
                "etcdctl {args:?}: {out}"
            );
        }
        // A lease holding a key outside app/: alice may not revoke it, nor
        // attach keys to it, nor list its keys.
        let lease = ok(&all, ALICE, &["lease", "grant", "60"]);
        let lease = lease.split_whitespace().nth(1).unwrap().to_string();
        let with_lease = format!("--lease={lease}");
        ok(&all, ROOT, &["put", "b", "leased", &with_lease]);
        refused(&all, ALICE, &["lease", "revoke", &lease], DENIED);
        refused(&all, ALICE, &["put", "app/z", "1", &with_lease], DENIED);
        refused(
            &all,
            ALICE,
            &["lease", "timetolive", &lease, "--keys"],
            DENIED,
        );
        assert_eq!(
            ok(&all, ROOT, &["get", "b", "--print-value-only"]),
            "leased"
        );
        ok(&all, ROOT, &["lease", "revoke", &lease]);

        // Read-only: gets, not puts nor deletes.
        let reader = "reader:readerpw";
        assert_eq!(
            ok(&all, reader, &["get", "cfg/a", "--print-value-only"]),
            "A"
        );
        assert_eq!(
            ok(&all, reader, &["get", "cfg/", "--prefix", "--keys-only"]),
            "cfg/a\n"
        );
        refused(&all, reader, &["put", "cfg/a", "B"], DENIED);
        refused(&all, reader, &["del", "cfg/a"], DENIED);
        refused(&all, reader, &["get", "app/x"], DENIED);
        let out = ctl_for(&all, 2, reader, &["watch", "cfg/", "--prefix", "--rev=1"]);
        assert!(out.starts_with("PUT\ncfg/a\nA\n"), "reader's watch: {out}");
        // Write-only: puts and deletes, not reads, nor anything that
        // returns the previous value.
        let writer = "writer:writerpw";
        assert_eq!(ok(&all, writer, &["put", "logs/2", "x"]), "OK");
        refused(&all, writer, &["get", "logs/2"], DENIED);
        refused(&all, writer, &["put", "logs/2", "y", "--prev-kv"], DENIED);
        refused(&all, writer, &["del", "logs/2", "--prev-kv"], DENIED);
        assert_eq!(ok(&all, writer, &["del", "logs/2"]), "1");
        refused(&all, writer, &["put", "cfg/a", "W"], DENIED);
        assert_eq!(ok(&all, ROOT, &["get", "cfg/a", "--print-value-only"]), "A");

        // Root may do all of it.
        ok(&all, ROOT, &["defrag"]);
        ok(&all, ROOT, &["endpoint", "hashkv"]);
        ok(&m1, ROOT, &["snapshot", "save", &arg(&path)]);
        assert!(path.exists(), "root's snapshot was not saved");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_etcd_client_crate_logs_in_and_is_held_to_its_roles() {
    bounded("etcd-client with a user", Duration::from_secs(60), async {
        // Tokens live 2 s past their last use.
        let cluster = start(3, &["--auth-token-ttl", "2"]).await;
        let all = cluster.host_ports();
        enable_auth_with_alice(&all);
        let endpoints = cluster.endpoints();

        // A wrong password is refused at connect.
        let options = ConnectOptions::new().with_user("alice", "wrong");
        let s = grpc(Client::connect(&endpoints, Some(options)).await);
        assert_eq!(
            (s.code(), s.message()),
            (Code::InvalidArgument, AUTH_FAILED)
        );
        // No user at all: every request is refused.
        let mut anonymous = common::connect(&endpoints).await;
        let s = grpc(anonymous.put("app/k", "v", None).await);
        assert_eq!((s.code(), s.message()), (Code::InvalidArgument, USER_EMPTY));

        // (Refreshing its token, so that a slow moment of the test machine
        // cannot expire it.)
        let mut alice = login(&endpoints, ALICE, true).await;
        alice.put("app/k", "v", None).await.unwrap();
        let r = alice.get("app/k", None).await.unwrap();
        assert_eq!(r.kvs()[0].value(), b"v");
        let r = alice
            .get("app/", Some(GetOptions::new().with_prefix()))
            .await
            .unwrap();
        assert_eq!(r.count(), 1);
        let r = alice
            .txn(
                Txn::new()
                    .when([Compare::value("app/k", CompareOp::Equal, "v")])
                    .and_then([TxnOp::put("app/k2", "v2", None)]),
            )
            .await
            .unwrap();
        assert!(r.succeeded());

        assert_denied("put outside", alice.put("k", "v", None).await);
        assert_denied("get outside", alice.get("k", None).await);
        assert_denied("delete outside", alice.delete("k", None).await);
        assert_denied(
            "get from app/ on",
            alice
                .get("app/", Some(GetOptions::new().with_from_key()))
                .await,
        );
        assert_denied(
            "txn comparing outside",
            alice
                .txn(
                    Txn::new()
                        .when([Compare::version("k", CompareOp::Equal, 0)])
                        .and_then([TxnOp::put("app/k", "v", None)]),
                )
                .await,
        );
        assert_denied("defragment", alice.defragment().await);
        assert_denied("hash", alice.hash_kv(0).await);
        assert_denied(
            "member add",
            alice.member_add(["http://127.0.0.1:1"], None).await,
        );
        assert_denied("user list", alice.user_list().await);

        // A watch outside: created and cancelled in one response, watch id
        // -1, etcd's reason; inside: events.
        let mut refused_watch = alice.watch("k", None).await.unwrap();
        let r = refused_watch.message().await.unwrap().expect("a response");
        assert!(r.created() && r.canceled(), "{r:?}");
        assert_eq!((r.watch_id(), r.cancel_reason()), (-1, DENIED));
        let mut watch = alice
            .watch("app/", Some(WatchOptions::new().with_prefix()))
            .await
            .unwrap();
        let r = watch.message().await.unwrap().expect("a response");
        assert!(r.created() && !r.canceled(), "{r:?}");
        alice.put("app/w", "1", None).await.unwrap();
        let r = watch.message().await.unwrap().expect("an event");
        assert_eq!(r.events()[0].kv().unwrap().key(), b"app/w");

        // Idle past the token's TTL: a client that refreshes its token
        // goes on, one that does not is told its token is invalid.
        let mut refreshing = login(&endpoints, ALICE, true).await;
        let mut plain = login(&endpoints, ALICE, false).await;
        tokio::time::sleep(Duration::from_millis(3500)).await;
        let s = grpc(plain.get("app/k", None).await);
        assert_eq!(
            (s.code(), s.message()),
            (Code::Unauthenticated, "etcdserver: invalid auth token")
        );
        let r = refreshing.get("app/k", None).await.unwrap();
        assert_eq!(r.kvs()[0].value(), b"v");
        assert_denied(
            "put outside, refreshed",
            refreshing.put("k", "v", None).await,
        );
    })
    .await;
}

/// The Lock and Election services (which etcdctl does not use: its
/// `lock` and `elect` run etcd's recipes in the client) write as their
/// caller: allowed inside its range, refused outside it.
#[tokio::test(flavor = "multi_thread")]
async fn the_lock_and_election_services_act_as_their_caller() {
    bounded(
        "lock and election services",
        Duration::from_secs(60),
        async {
            let cluster = start(1, &[]).await;
            let all = cluster.host_ports();
            enable_auth_with_alice(&all);
            let endpoints = cluster.endpoints();
            let mut alice = login(&endpoints, ALICE, false).await;
            let mut root = login(&endpoints, ROOT, false).await;
            let lease = alice.lease_grant(60, None).await.unwrap().id();

            // Inside app/: lock and unlock, campaign, proclaim, resign.
            let lock = alice
                .lock("app/lock", Some(LockOptions::new().with_lease(lease)))
                .await
                .unwrap();
            assert!(lock.key().starts_with(b"app/lock/"));
            alice.unlock(lock.key()).await.unwrap();
            let won = alice.campaign("app/e", "v1", lease).await.unwrap();
            let leader = won.leader().unwrap().clone();
            alice
                .proclaim(
                    "v2",
                    Some(ProclaimOptions::new().with_leader(leader.clone())),
                )
                .await
                .unwrap();
            let r = alice.leader("app/e").await.unwrap();
            assert_eq!(r.kv().unwrap().value(), b"v2");
            alice
                .resign(Some(ResignOptions::new().with_leader(leader)))
                .await
                .unwrap();

            // Outside: refused, nothing written.
            assert_denied(
                "lock outside",
                alice
                    .lock("k", Some(LockOptions::new().with_lease(lease)))
                    .await,
            );
            assert_denied("campaign outside", alice.campaign("e", "v", lease).await);
            assert_denied("leader outside", alice.leader("e").await);
            let r = root
                .get("", Some(GetOptions::new().with_from_key()))
                .await
                .unwrap();
            let keys: Vec<&[u8]> = r.kvs().iter().map(|kv| kv.key()).collect();
            assert!(keys.iter().all(|k| k.starts_with(b"app/")), "{keys:?}");
            // Root may lock anything.
            let lock = root
                .lock("k", Some(LockOptions::new().with_lease(lease)))
                .await
                .unwrap();
            root.unlock(lock.key()).await.unwrap();
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn revoking_access_cancels_open_watches_and_refuses_the_next_write() {
    bounded("revocation", Duration::from_secs(60), async {
        let cluster = start(3, &[]).await;
        let all = cluster.host_ports();
        enable_auth_with_alice(&all);
        let m1 = member(&cluster, 1);
        ok(&all, ROOT, &["role", "add", "cfg"]);
        ok(
            &all,
            ROOT,
            &[
                "role",
                "grant-permission",
                "cfg",
                "read",
                "cfg/",
                "--prefix",
            ],
        );
        ok(&all, ROOT, &["user", "grant-role", "alice", "cfg"]);

        // alice watches app/ and cfg/ on one stream through member 3, and
        // writes through member 2.
        let mut watcher = login(&[cluster.endpoint(3)], ALICE, false).await;
        let mut writer = login(&[cluster.endpoint(2)], ALICE, false).await;
        let mut stream = watcher
            .watch("app/", Some(WatchOptions::new().with_prefix()))
            .await
            .unwrap();
        let app_watch = stream.message().await.unwrap().unwrap();
        assert!(
            app_watch.created() && !app_watch.canceled(),
            "{app_watch:?}"
        );
        stream
            .watch("cfg/", Some(WatchOptions::new().with_prefix()))
            .await
            .unwrap();
        let cfg_watch = stream.message().await.unwrap().unwrap();
        assert!(
            cfg_watch.created() && !cfg_watch.canceled(),
            "{cfg_watch:?}"
        );
        writer.put("app/a", "1", None).await.unwrap();
        let r = stream.message().await.unwrap().unwrap();
        assert_eq!(r.watch_id(), app_watch.watch_id());
        assert_eq!(r.events()[0].kv().unwrap().key(), b"app/a");

        // Root takes app away through member 1: the app/ watch is cancelled
        // within moments, the cfg/ one goes on, and alice's next write
        // through member 2 is refused.
        ok(&m1, ROOT, &["user", "revoke-role", "alice", "app"]);
        let revoked = Instant::now();
        assert_denied("put after the revoke", writer.put("app/a", "2", None).await);
        let r = bounded("the cancel", Duration::from_secs(2), stream.message())
            .await
            .unwrap()
            .expect("a response");
        assert!(r.canceled(), "expected the cancel, got {r:?}");
        assert_eq!(
            (r.watch_id(), r.cancel_reason()),
            (app_watch.watch_id(), DENIED)
        );
        eprintln!("watch cancelled {:?} after the revoke", revoked.elapsed());
        ok(&m1, ROOT, &["put", "cfg/z", "1"]);
        let r = bounded("cfg/ event", Duration::from_secs(5), stream.message())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(r.watch_id(), cfg_watch.watch_id(), "{r:?}");
        assert_eq!(r.events()[0].event_type(), EventType::Put);
        assert_eq!(r.events()[0].kv().unwrap().key(), b"cfg/z");

        // Granted again: alice writes and watches app/ again. Then the
        // permission itself is revoked from the role: the same.
        ok(&m1, ROOT, &["user", "grant-role", "alice", "app"]);
        writer.put("app/a", "3", None).await.unwrap();
        stream
            .watch("app/", Some(WatchOptions::new().with_prefix()))
            .await
            .unwrap();
        let again = stream.message().await.unwrap().unwrap();
        assert!(again.created() && !again.canceled(), "{again:?}");
        ok(
            &m1,
            ROOT,
            &["role", "revoke-permission", "app", "app/", "--prefix"],
        );
        assert_denied(
            "put after revoke-permission",
            writer.put("app/a", "4", None).await,
        );
        let r = bounded(
            "the second cancel",
            Duration::from_secs(2),
            stream.message(),
        )
        .await
        .unwrap()
        .unwrap();
        assert!(r.canceled(), "{r:?}");
        assert_eq!(
            (r.watch_id(), r.cancel_reason()),
            (again.watch_id(), DENIED)
        );
        // A new watch of app/ is refused outright.
        stream
            .watch("app/", Some(WatchOptions::new().with_prefix()))
            .await
            .unwrap();
        let r = stream.message().await.unwrap().unwrap();
        assert!(r.created() && r.canceled(), "{r:?}");
        assert_eq!((r.watch_id(), r.cancel_reason()), (-1, DENIED));
        // Nothing alice tried after the revokes was written.
        let value = ok(&all, ROOT, &["get", "app/a", "--print-value-only"]);
        assert_eq!(value, "3");
    })
    .await;
}

/// Auth on a sharded cluster (design 0018): `app/` spans two shards, and
/// a third holds the rest. A shard cannot check roles where a write
/// applies, so each node judges the write by the meta group's users and
/// roles and the oracle's auth fence refuses it in the shard if they
/// changed before it was ordered; to the user it is etcd's auth.
#[tokio::test(flavor = "multi_thread")]
async fn auth_holds_on_a_sharded_cluster() {
    bounded("sharded auth", Duration::from_secs(90), async {
        let cluster = start(3, &["--split-at", "app/m,b"]).await;
        let all = cluster.host_ports();
        enable_auth_with_alice(&all);
        // alice writes her keys in both of app/'s shards, through every
        // member, and nothing else.
        for (i, key) in ["app/a", "app/z", "app/b"].into_iter().enumerate() {
            let m = member(&cluster, i as u64 + 1);
            ok(&m, ALICE, &["put", key, "1"]);
        }
        for (key, shard) in [("apple", 1), ("b/1", 3), ("zz", 3)] {
            let m = member(&cluster, shard);
            refused(&m, ALICE, &["put", key, "1"], DENIED);
        }
        refused(&all, "", &["put", "app/n", "1"], USER_EMPTY);
        // Reads over both shards, and a txn in one.
        let listed = ok(&all, ALICE, &["get", "app/", "--prefix", "--keys-only"]);
        let keys: Vec<&str> = listed.lines().filter(|l| !l.is_empty()).collect();
        assert_eq!(keys, ["app/a", "app/b", "app/z"]);
        refused(&all, ALICE, &["get", "a", "b"], DENIED);
        let txn = "value(\"app/z\") = \"1\"\n\nput app/z 2\n\nput app/z 3\n\n";
        let out = ok_in(&all, ALICE, &["txn"], Some(txn));
        assert!(out.starts_with("SUCCESS"), "{out}");
        let deleted = ok(&all, ALICE, &["del", "app/", "--prefix"]);
        assert_eq!(deleted.trim(), "3");
        refused(&all, ALICE, &["del", "a", "c"], DENIED);
        // Root writes anywhere; a lease's keys bind who may revoke it.
        ok(&all, ROOT, &["put", "b/root", "1"]);
        let lease = ok(&all, ROOT, &["lease", "grant", "60"]);
        let id = lease
            .split_whitespace()
            .nth(1)
            .expect("lease id")
            .to_string();
        ok(&all, ROOT, &["put", "zz", "1", "--lease", &id]);
        ok(&all, ALICE, &["put", "app/l", "1"]);
        refused(&all, ALICE, &["lease", "revoke", &id], DENIED);
        refused(&all, ALICE, &["put", "app/l", "2", "--lease", &id], DENIED);

        // Revoked through member 1: alice's next write through member 2
        // and 3 is refused, whatever token she holds, and her watch of
        // app/ (both shards) through member 3 is cancelled.
        let mut writer = login(&[cluster.endpoint(2)], ALICE, false).await;
        let mut watcher = login(&[cluster.endpoint(3)], ALICE, false).await;
        let mut stream = watcher
            .watch("app/", Some(WatchOptions::new().with_prefix()))
            .await
            .unwrap();
        let created = stream.message().await.unwrap().unwrap();
        assert!(created.created() && !created.canceled(), "{created:?}");
        writer.put("app/x", "1", None).await.unwrap();
        writer.put("app/zz", "1", None).await.unwrap();
        let mut seen = Vec::new();
        while seen.len() < 2 {
            let r = bounded("app/ events", Duration::from_secs(5), stream.message())
                .await
                .unwrap()
                .unwrap();
            seen.extend(r.events().iter().map(|e| e.kv().unwrap().key().to_vec()));
        }
        assert_eq!(seen, [b"app/x".to_vec(), b"app/zz".to_vec()]);
        ok(
            &member(&cluster, 1),
            ROOT,
            &["role", "revoke-permission", "app", "app/", "--prefix"],
        );
        assert_denied("put after the revoke", writer.put("app/x", "2", None).await);
        let r = bounded("the cancel", Duration::from_secs(2), stream.message())
            .await
            .unwrap()
            .expect("a response");
        assert!(r.canceled(), "expected the cancel, got {r:?}");
        assert_eq!(r.cancel_reason(), DENIED);
        refused(&member(&cluster, 3), ALICE, &["put", "app/y", "1"], DENIED);
        let value = ok(&all, ROOT, &["get", "app/x", "--print-value-only"]);
        assert_eq!(value, "1");
        // A split by hand goes through the HTTP address, which checks no
        // credentials: refused while auth is on, taken once it is off.
        let split = |key: &str| {
            let http = cluster
                .http_url(1)
                .trim_start_matches("http://")
                .to_string();
            let mut cmd = Command::new(common::synod_bin());
            cmd.args(["split", "--endpoint", &http, key]);
            run(&mut cmd, Duration::from_secs(20))
        };
        let refused_split = split("app/q");
        assert!(!refused_split.status.success());
        let said = String::from_utf8_lossy(&refused_split.stderr).to_string();
        assert!(said.contains("auth is on"), "{said}");
        // Auth off: anybody writes any shard again, and splits.
        ok(&all, ROOT, &["auth", "disable"]);
        let split_off = split("app/q");
        assert!(split_off.status.success(), "{split_off:?}");
        ok(&all, "", &["put", "app/y", "1"]);
        ok(&all, "", &["put", "b/2", "1"]);
    })
    .await;
}

/// Files of a server certificate signed by `ca`, written to `dir`, and
/// the `synod server` flags that serve them and require client
/// certificates (with cheap bcrypt).
fn tls_server_flags(dir: &std::path::Path, ca: &Ca) -> Vec<String> {
    let (cert, key) = ca.issue(&["127.0.0.1"], "synod server");
    let mut flags: Vec<String> = FAST_BCRYPT.iter().map(|s| s.to_string()).collect();
    flags.extend([
        "--cert-file".to_string(),
        arg(&write(dir, "server.pem", &cert)),
        "--key-file".to_string(),
        arg(&write(dir, "server-key.pem", &key)),
        "--trusted-ca-file".to_string(),
        arg(&write(dir, "ca.pem", &ca.pem())),
        "--client-cert-auth".to_string(),
    ]);
    flags
}

/// etcdctl's `--cacert`, `--cert` and `--key` for a client certificate
/// with the common name `cn`, signed by `ca`, written to `dir`.
fn client_cert_flags(dir: &std::path::Path, ca: &Ca, cn: &str) -> Vec<String> {
    let (cert, key) = ca.issue(&[], cn);
    vec![
        format!("--cacert={}", arg(&write(dir, "ca.pem", &ca.pem()))),
        format!("--cert={}", arg(&write(dir, &format!("{cn}.pem"), &cert))),
        format!("--key={}", arg(&write(dir, &format!("{cn}-key.pem"), &key))),
    ]
}

/// etcdctl with the certificate flags `cert` then `args`: its status and
/// output.
fn ctl_as(endpoints: &[String], cert: &[String], args: &[&str]) -> (bool, String) {
    let all: Vec<String> = cert
        .iter()
        .cloned()
        .chain(args.iter().map(|s| s.to_string()))
        .collect();
    ctl(endpoints, &all, None)
}

/// Starts 3 nodes with `flags` and waits until they serve `cert`'s
/// etcdctl (their status is over TLS only); returns them and their
/// `https://` endpoints.
async fn start_tls(flags: &[String], cert: &[String]) -> (Cluster, Vec<String>) {
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let mut cluster = Cluster::start_with(3, &flags);
    let https: Vec<String> = cluster
        .host_ports()
        .iter()
        .map(|h| format!("https://{h}"))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !ctl_as(&https, cert, &["get", "x"]).0 {
        cluster.assert_alive();
        assert!(Instant::now() < deadline, "the TLS cluster never served");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    (cluster, https)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_certificates_common_name_is_its_user() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("synod auth test CA");
    let flags = tls_server_flags(dir.path(), &ca);
    let [root, alice, mallory] =
        ["root", "alice", "mallory"].map(|cn| client_cert_flags(dir.path(), &ca, cn));
    bounded(
        "client certificates as users",
        Duration::from_secs(60),
        async {
            let (mut cluster, https) = start_tls(&flags, &root).await;
            let setup = [
                &["user", "add", ROOT][..],
                &["role", "add", "root"],
                &["user", "grant-role", "root", "root"],
                &["user", "add", ALICE],
                &["role", "add", "app"],
                &[
                    "role",
                    "grant-permission",
                    "app",
                    "readwrite",
                    "app/",
                    "--prefix",
                ],
                &["user", "grant-role", "alice", "app"],
                &["auth", "enable"],
            ];
            for args in setup {
                let (success, out) = ctl_as(&https, &root, args);
                assert!(success, "{args:?}: {out}");
            }

            // alice's certificate, no password: alice's range.
            let (success, out) = ctl_as(&https, &alice, &["put", "app/x", "1"]);
            assert!(success && out == "OK", "{out}");
            let (success, out) = ctl_as(&https, &alice, &["get", "app/x", "--print-value-only"]);
            assert!(success && out == "1", "{out}");
            for args in [
                &["put", "b", "1"][..],
                &["get", "b"],
                &["user", "list"],
                &["defrag"],
            ] {
                let (success, out) = ctl_as(&https, &alice, args);
                assert!(!success && out.contains(DENIED), "{args:?}: {out}");
            }
            // A name with no user is nobody.
            let (success, out) = ctl_as(&https, &mallory, &["get", "app/x"]);
            assert!(!success && out.contains(DENIED), "{out}");
            // A token, when given, is who the request is from.
            let (success, out) = ctl_as(
                &https,
                &alice,
                &[&format!("--user={ROOT}"), "put", "b", "1"],
            );
            assert!(success, "{out}");

            // root's certificate: admin operations.
            let (success, out) = ctl_as(&https, &root, &["user", "list"]);
            assert!(success && out == "alice\nroot", "{out}");
            for args in [&["put", "b", "2"][..], &["defrag"], &["endpoint", "hashkv"]] {
                let (success, out) = ctl_as(&https, &root, args);
                assert!(success, "{args:?}: {out}");
            }
            let snapshot = dir.path().join("snapshot.db");
            let (success, out) = ctl_as(&https[..1], &root, &["snapshot", "save", &arg(&snapshot)]);
            assert!(success && snapshot.exists(), "{out}");
            cluster.assert_alive();
        },
    )
    .await;
}

/// A membership change by root's certificate through a follower: the
/// follower forwards it to the leader, where it must still count as root's.
#[tokio::test(flavor = "multi_thread")]

async fn a_client_certificate_changes_membership_through_a_follower() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("synod auth test CA");
    let flags = tls_server_flags(dir.path(), &ca);
    let root = client_cert_flags(dir.path(), &ca, "root");
    bounded(
        "membership by certificate",
        Duration::from_secs(60),
        async {
            let (mut cluster, https) = start_tls(&flags, &root).await;
            for args in [
                &["user", "add", ROOT][..],
                &["role", "add", "root"],
                &["user", "grant-role", "root", "root"],
                &["auth", "enable"],
            ] {
                let (success, out) = ctl_as(&https, &root, args);
                assert!(success, "{args:?}: {out}");
            }
            // Through every member: two of them follow, and forward.
            for (i, one) in https.iter().enumerate() {
                let one = std::slice::from_ref(one);
                let peer = format!("--peer-urls=http://{}", free_addr());
                let (success, out) = ctl_as(
                    one,
                    &root,
                    &["member", "add", "learner", "--learner", &peer],
                );
                assert!(
                    success,
                    "member add through member {} by root's certificate: {out}",
                    i + 1
                );
                let member = out
                    .strip_prefix("Member ")
                    .and_then(|s| s.split_whitespace().next())
                    .unwrap_or_else(|| panic!("member add printed {out}"))
                    .to_string();
                let (success, out) = ctl_as(one, &root, &["member", "remove", &member]);
                assert!(success, "member remove through member {}: {out}", i + 1);
            }
            cluster.assert_alive();
        },
    )
    .await;
}

/// `--auth-token` for ES256 JWTs with a key pair made in `dir`.
fn es256_spec(dir: &std::path::Path) -> String {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let private = write(dir, "jwt.key", &key.serialize_pem());
    let public = write(dir, "jwt.pub", &key.public_key_pem());
    format!(
        "jwt,pub-key={},priv-key={},sign-method=ES256,ttl=10m",
        arg(&public),
        arg(&private)
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn jwt_tokens_signed_with_es256_work_on_every_member() {
    let dir = tempfile::tempdir().unwrap();
    let spec = es256_spec(dir.path());
    bounded("JWT", Duration::from_secs(60), async {
        let cluster = start(3, &["--auth-token", &spec]).await;
        let all = cluster.host_ports();
        enable_auth_with_alice(&all);
        for id in cluster.ids() {
            let one = member(&cluster, id);
            assert_eq!(ok(&one, ALICE, &["put", &format!("app/{id}"), "v"]), "OK");
            assert_eq!(
                ok(
                    &one,
                    ALICE,
                    &["get", &format!("app/{id}"), "--print-value-only"]
                ),
                "v"
            );
            refused(&one, ALICE, &["put", "b", "1"], DENIED);
            refused(&one, "alice:wrong", &["get", "app/1"], AUTH_FAILED);
        }

        // The token is an ES256 JWT naming alice.
        let token = token_from(&cluster.endpoint(1), ALICE).await;
        let parts: Vec<&str> = token.split('.').collect();
        assert_eq!(parts.len(), 3, "not a JWT: {token}");
        use base64::Engine as _;
        let decode = |part: &str| {
            let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(part)
                .unwrap_or_else(|e| panic!("JWT part {part}: {e}"));
            serde_json::from_slice::<serde_json::Value>(&bytes).unwrap()
        };
        let (header, claims) = (decode(parts[0]), decode(parts[1]));
        assert_eq!(header["alg"], "ES256", "{header}");
        assert_eq!(claims["username"], "alice", "{claims}");
        assert!(claims["exp"].as_u64().is_some() && claims["revision"].as_u64().is_some());
        // Issued by member 1, accepted by member 3.
        put_with_token(&cluster.endpoint(3), &token, "app/jwt")
            .await
            .unwrap();
        let e = put_with_token(&cluster.endpoint(2), &token, "b")
            .await
            .unwrap_err();
        assert_eq!((e.code(), e.message()), (Code::PermissionDenied, DENIED));
        // A forged signature is refused.
        let forged = format!(
            "{}.{}.{}",
            parts[0],
            parts[1],
            &parts[2][..parts[2].len() - 4]
        );
        let e = put_with_token(&cluster.endpoint(2), &forged, "app/jwt")
            .await
            .unwrap_err();
        assert_eq!(
            (e.code(), e.message()),
            (Code::Unauthenticated, "etcdserver: invalid auth token")
        );
        // An auth change outdates every JWT issued before it; etcd's
        // clients then log in again, as etcdctl does on each call.
        let root_token = token_from(&cluster.endpoint(1), ROOT).await;
        let mut auth = AuthClient::connect(cluster.endpoint(1)).await.unwrap();
        auth.role_add(with_token(
            AuthRoleAddRequest {
                name: "another".into(),
            },
            &root_token,
        ))
        .await
        .unwrap();
        // (AuthStatus answers once member 2 caught up with the change.)
        assert!(auth_status(&cluster.endpoint(2)).await.0);
        let e = put_with_token(&cluster.endpoint(2), &token, "app/jwt")
            .await
            .unwrap_err();
        assert_eq!(
            (e.code(), e.message()),
            (
                Code::InvalidArgument,
                "etcdserver: revision of auth store is old"
            )
        );
        assert_eq!(ok(&all, ALICE, &["put", "app/jwt", "again"]), "OK");
        let fresh = token_from(&cluster.endpoint(2), ALICE).await;
        put_with_token(&cluster.endpoint(1), &fresh, "app/jwt")
            .await
            .unwrap();
    })
    .await;
}

/// Once an auth change is acknowledged, no member takes a JWT issued
/// before it, not even one that has not applied the change yet: etcd sends
/// the token's auth revision with the request and refuses it where it
/// applies ("revision of auth store is old").
#[tokio::test(flavor = "multi_thread")]
async fn an_outdated_jwt_is_refused_right_after_the_change_on_every_member() {
    let dir = tempfile::tempdir().unwrap();
    let spec = es256_spec(dir.path());
    bounded("outdated JWTs", Duration::from_secs(60), async {
        outdated_tokens_are_refused(&["--auth-token", &spec], Change::AddRole).await;
    })
    .await;
}

/// The same for a simple token after its user's password changed: etcd
/// refuses it on every member once the change is acknowledged.
#[tokio::test(flavor = "multi_thread")]
async fn an_old_passwords_token_is_refused_right_after_the_change_on_every_member() {
    bounded(
        "tokens of an old password",
        Duration::from_secs(60),
        async {
            outdated_tokens_are_refused(&[], Change::AlicesPassword).await;
        },
    )
    .await;
}

/// An auth change that outdates alice's tokens.
#[derive(Clone, Copy)]
enum Change {
    /// Any change (a role added): outdates every JWT.
    AddRole,
    /// alice's password: outdates her tokens.
    AlicesPassword,
}

/// Rounds of: alice logs in, root makes `change` through the leader, and
/// alice's token is at once sent to both followers, which must refuse it.
async fn outdated_tokens_are_refused(extra: &[&str], change: Change) {
    let mut cluster = start(3, extra).await;
    enable_auth_with_alice(&cluster.host_ports());
    // The leader acknowledges the change as soon as it applies it; the
    // followers are asked at once, on connections opened beforehand.
    let leader = cluster.wait_ready().await;
    let leader_url = cluster.endpoint(leader);
    let mut followers = Vec::new();
    for id in cluster.ids().into_iter().filter(|id| *id != leader) {
        followers.push((id, KvClient::connect(cluster.endpoint(id)).await.unwrap()));
    }
    let mut auth = AuthClient::connect(leader_url.clone()).await.unwrap();
    let mut alice = ALICE.to_string();
    for round in 0..20 {
        let token = token_from(&leader_url, &alice).await;
        let root_token = token_from(&leader_url, ROOT).await;
        match change {
            Change::AddRole => {
                let add = AuthRoleAddRequest {
                    name: format!("role{round}"),
                };
                auth.role_add(with_token(add, &root_token)).await.unwrap();
            }
            Change::AlicesPassword => {
                let password = format!("alicepw{round}");
                let change = AuthUserChangePasswordRequest {
                    name: "alice".into(),
                    password: password.clone(),
                    ..AuthUserChangePasswordRequest::default()
                };
                auth.user_change_password(with_token(change, &root_token))
                    .await
                    .unwrap();
                alice = format!("alice:{password}");
            }
        }
        let put = || {
            let put = PutRequest {
                key: b"app/race".to_vec().into(),
                value: b"v".to_vec().into(),
                ..PutRequest::default()
            };
            with_token(put, &token)
        };
        let [(a, kv_a), (b, kv_b)] = &mut followers[..] else {
            unreachable!("two followers")
        };
        let (r_a, r_b) = tokio::join!(kv_a.put(put()), kv_b.put(put()));
        for (id, r) in [(*a, r_a), (*b, r_b)] {
            let e = r.expect_err("an outdated token was taken");
            assert!(
                [
                    "etcdserver: revision of auth store is old",
                    "etcdserver: invalid auth token"
                ]
                .contains(&e.message()),
                "round {round}, member {id}: {e:?}"
            );
        }
    }
}

/// A simple token lives `--auth-token-ttl` past its last use, as etcd's
/// do (each use resets the TTL), also when it was last used early in its
/// life.
#[tokio::test(flavor = "multi_thread")]
async fn a_simple_token_lives_its_ttl_past_its_last_use() {
    bounded("sliding token TTL", Duration::from_secs(60), async {
        let cluster = start(1, &["--auth-token-ttl", "4"]).await;
        enable_auth_with_alice(&cluster.host_ports());
        let endpoint = cluster.endpoint(1);
        let token = token_from(&endpoint, ALICE).await;
        let issued = Instant::now();
        // Used 1 s after its issue: alive until 5 s after it.
        tokio::time::sleep(Duration::from_secs(1)).await;
        get_with_token(&endpoint, &token, "app/k").await.unwrap();
        tokio::time::sleep_until((issued + Duration::from_millis(4500)).into()).await;
        let r = get_with_token(&endpoint, &token, "app/k").await;
        assert!(
            r.is_ok(),
            "4.5 s after issue, 3.5 s after its last use: {r:?}"
        );
    })
    .await;
}

#[test]
fn bad_auth_settings_stop_the_server_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let private = write(dir.path(), "jwt.key", &key.serialize_pem());
    let public = write(dir.path(), "jwt.pub", &key.public_key_pem());
    let missing = dir.path().join("no-such-key.pub");
    let data = dir.path().join("data");
    let fails = |extra: &[&str]| common::start_refusal(&data, extra);
    let spec = format!(
        "jwt,pub-key={},priv-key={},sign-method=ES256",
        arg(&missing),
        arg(&private)
    );
    let e = fails(&["--auth-token", &spec]);
    assert!(
        e.contains(&arg(&missing)) && e.contains("cannot read"),
        "{e}"
    );
    // The private key given as the public one: not a key of that kind.
    let spec = format!(
        "jwt,pub-key={},priv-key={},sign-method=ES256",
        arg(&private),
        arg(&private)
    );
    let e = fails(&["--auth-token", &spec]);
    assert!(e.contains(&arg(&private)), "{e}");
    let spec = format!("jwt,pub-key={},sign-method=XY999", arg(&public));
    let e = fails(&["--auth-token", &spec]);
    assert!(e.contains("unknown sign-method \"XY999\""), "{e}");
    let e = fails(&["--auth-token", "opaque"]);
    assert!(e.contains("unknown provider \"opaque\""), "{e}");
    let e = fails(&["--bcrypt-cost", "3"]);
    assert!(
        e.contains("--bcrypt-cost 3 is outside bcrypt's 4 to 31"),
        "{e}"
    );
}
