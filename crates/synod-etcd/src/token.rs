//! Auth tokens: what `Authenticate` hands out and every later request
//! carries in its `token` metadata, as etcd's two providers do.
//!
//! - **simple** (the default): `user.expiry.mac`, an HMAC-SHA256 over the
//!   user, the expiry and the user's password hash, keyed with the token
//!   key the cluster drew at AuthEnable (replicated state). Any member
//!   checks any member's token without a round of consensus per
//!   Authenticate (etcd replicates every simple token), a changed password
//!   or a deleted user voids the user's tokens at once, and a new
//!   AuthEnable voids all. Like etcd's, a token lives `--auth-token-ttl`
//!   seconds from its last use on the member it is used on.
//! - **jwt** (`--auth-token jwt,pub-key=...,priv-key=...,sign-method=RS256,ttl=10m`):
//!   signed claims `username`, `revision` (the auth revision) and `exp`,
//!   which etcd's JWT provider issues and other tools can check. A token
//!   minted before the last auth change is refused with "revision of auth
//!   store is old"; etcd's clients then authenticate again.

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use synod_kv::{AuthError, AuthStore};

/// etcd's default `--auth-token-ttl`.
pub const DEFAULT_TTL: Duration = Duration::from_secs(300);

/// Tokens used recently enough to outlive their stamped expiry, at most
/// this many per member (the oldest are forgotten first when full).
const SLIDING_MAX: usize = 100_000;

/// How tokens are made and checked on this member.
pub struct Tokens {
    kind: Kind,
    ttl: Duration,
    /// Simple tokens seen lately, by the first 8 bytes of their MAC →
    /// when last used (ms), for etcd's sliding expiry.
    recent: Mutex<HashMap<u64, u64>>,
}

enum Kind {
    Simple,
    Jwt {
        algorithm: jsonwebtoken::Algorithm,
        encoding: Option<jsonwebtoken::EncodingKey>,
        decoding: jsonwebtoken::DecodingKey,
    },
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Claims {
    username: String,
    revision: u64,
    exp: u64,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Tokens {
    /// Parses etcd's `--auth-token` value (`simple`, or `jwt,` followed
    /// by `pub-key=`, `priv-key=`, `sign-method=` and `ttl=`) and loads
    /// the keys it names. `ttl` is `--auth-token-ttl` (simple tokens).
    /// The error says what is wrong, for the operator.
    pub fn from_spec(spec: &str, ttl: Duration) -> Result<Tokens, String> {
        let mut parts = spec.split(',');
        let kind = match parts.next().unwrap_or("") {
            "" | "simple" => {
                if let Some(extra) = parts.next() {
                    return Err(format!(
                        "--auth-token simple takes no options (got {extra:?})"
                    ));
                }
                Kind::Simple
            }
            "jwt" => return Tokens::jwt(parts),
            other => {
                return Err(format!(
                    "--auth-token: unknown provider {other:?} (simple or jwt)"
                ))
            }
        };
        Ok(Tokens {
            kind,
            ttl,
            recent: Mutex::new(HashMap::new()),
        })
    }

    fn jwt<'a>(options: impl Iterator<Item = &'a str>) -> Result<Tokens, String> {
        let (mut public, mut private, mut method, mut ttl) = (None, None, None, DEFAULT_TTL);
        for option in options {
            let (name, value) = option
                .split_once('=')
                .ok_or_else(|| format!("--auth-token jwt: {option:?} is not name=value"))?;
            match name {
                "pub-key" => public = Some(value.to_string()),
                "priv-key" => private = Some(value.to_string()),
                "sign-method" => method = Some(value.to_string()),
                "ttl" => ttl = parse_duration(value)?,
                _ => return Err(format!("--auth-token jwt: unknown option {name:?}")),
            }
        }
        let method = method.ok_or("--auth-token jwt needs sign-method=")?;
        let algorithm: jsonwebtoken::Algorithm = method
            .parse()
            .map_err(|_| format!("--auth-token jwt: unknown sign-method {method:?}"))?;
        let read = |path: &str| {
            std::fs::read(path).map_err(|e| format!("--auth-token jwt: cannot read {path}: {e}"))
        };
        use jsonwebtoken::{Algorithm as A, DecodingKey, EncodingKey};
        let bad = |path: &str, e: jsonwebtoken::errors::Error| {
            format!("--auth-token jwt: {path} is not a {method} key: {e}")
        };
        let (encoding, decoding) = match algorithm {
            A::HS256 | A::HS384 | A::HS512 => {
                // etcd's HMAC methods take the secret from priv-key.
                let path = private.ok_or("--auth-token jwt: HS methods need priv-key=")?;
                let secret = read(&path)?;
                (
                    Some(EncodingKey::from_secret(&secret)),
                    DecodingKey::from_secret(&secret),
                )
            }
            _ => {
                let path = public.ok_or("--auth-token jwt needs pub-key=")?;
                let pem = read(&path)?;
                let decoding = match algorithm {
                    A::ES256 | A::ES384 => DecodingKey::from_ec_pem(&pem),
                    A::EdDSA => DecodingKey::from_ed_pem(&pem),
                    _ => DecodingKey::from_rsa_pem(&pem),
                }
                .map_err(|e| bad(&path, e))?;
                let encoding = match private {
                    // A member without the private key checks tokens but
                    // cannot issue them, as in etcd.
                    None => None,
                    Some(path) => {
                        let pem = read(&path)?;
                        Some(
                            match algorithm {
                                A::ES256 | A::ES384 => EncodingKey::from_ec_pem(&pem),
                                A::EdDSA => EncodingKey::from_ed_pem(&pem),
                                _ => EncodingKey::from_rsa_pem(&pem),
                            }
                            .map_err(|e| bad(&path, e))?,
                        )
                    }
                };
                (encoding, decoding)
            }
        };
        Ok(Tokens {
            kind: Kind::Jwt {
                algorithm,
                encoding,
                decoding,
            },
            ttl,
            recent: Mutex::new(HashMap::new()),
        })
    }

    /// A token for `user`, who just proved its password.
    pub fn issue(&self, auth: &AuthStore, user: &str) -> Result<String, AuthError> {
        let u = auth.user(user).ok_or(AuthError::AuthFailed)?;
        let expiry = now_ms() + self.ttl.as_millis() as u64;
        match &self.kind {
            Kind::Simple => {
                let mac = simple_mac(auth, user, expiry, &u.password);
                Ok(format!("{}.{expiry}.{}", B64.encode(user), B64.encode(mac)))
            }
            Kind::Jwt {
                algorithm,
                encoding,
                ..
            } => {
                let key = encoding.as_ref().ok_or(AuthError::InvalidAuthMgmt)?;
                let claims = Claims {
                    username: user.to_string(),
                    revision: auth.revision(),
                    exp: expiry / 1000,
                };
                jsonwebtoken::encode(&jsonwebtoken::Header::new(*algorithm), &claims, key).map_err(
                    |e| {
                        tracing::warn!(error = %e, "signing a JWT failed");
                        AuthError::InvalidAuthMgmt
                    },
                )
            }
        }
    }

    /// The user a token names, if it is valid now against `auth`, and
    /// the auth revision it stands for (a JWT's claim; `auth`'s own for a
    /// simple token).
    pub fn verify(&self, auth: &AuthStore, token: &str) -> Result<(String, u64), AuthError> {
        match &self.kind {
            Kind::Simple => Ok((self.verify_simple(auth, token)?, auth.revision())),
            Kind::Jwt {
                algorithm,
                decoding,
                ..
            } => {
                let mut validation = jsonwebtoken::Validation::new(*algorithm);
                validation.leeway = 0;
                validation.set_required_spec_claims(&["exp"]);
                let data = jsonwebtoken::decode::<Claims>(token, decoding, &validation)
                    .map_err(|_| AuthError::InvalidAuthToken)?;
                let claims = data.claims;
                if auth.user(&claims.username).is_none() {
                    return Err(AuthError::InvalidAuthToken);
                }
                if claims.revision < auth.revision() {
                    return Err(AuthError::AuthOldRevision);
                }
                Ok((claims.username, claims.revision))
            }
        }
    }

    fn verify_simple(&self, auth: &AuthStore, token: &str) -> Result<String, AuthError> {
        let invalid = AuthError::InvalidAuthToken;
        let mut parts = token.splitn(3, '.');
        let (Some(user), Some(expiry), Some(mac)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(invalid);
        };
        let user = B64
            .decode(user)
            .ok()
            .and_then(|u| String::from_utf8(u).ok())
            .ok_or(invalid)?;
        let expiry: u64 = expiry.parse().map_err(|_| invalid)?;
        let mac = B64.decode(mac).map_err(|_| invalid)?;
        let u = auth.user(&user).ok_or(invalid)?;
        let key = auth.token_key();
        if key.is_empty() {
            return Err(invalid);
        }
        let mut check = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
        feed(&mut check, &user, expiry, &u.password);
        check.verify_slice(&mac).map_err(|_| invalid)?;
        let id = u64::from_be_bytes(mac[..8].try_into().expect("a verified MAC is 32 bytes"));
        let now = now_ms();
        let ttl = self.ttl.as_millis() as u64;
        let mut recent = self.recent.lock().expect("token lock");
        let alive = now < expiry || recent.get(&id).is_some_and(|&used| now < used + ttl);
        if !alive {
            recent.remove(&id);
            return Err(invalid);
        }
        if recent.len() >= SLIDING_MAX {
            recent.retain(|_, used| now < *used + ttl);
            if recent.len() >= SLIDING_MAX {
                recent.clear();
            }
        }
        recent.insert(id, now);
        Ok(user)
    }
}

fn feed(mac: &mut Hmac<Sha256>, user: &str, expiry: u64, password_hash: &[u8]) {
    // Length-prefixed, so no two (user, expiry) pairs feed the same bytes.
    mac.update(&(user.len() as u64).to_be_bytes());
    mac.update(user.as_bytes());
    mac.update(&expiry.to_be_bytes());
    mac.update(password_hash);
}

fn simple_mac(auth: &AuthStore, user: &str, expiry: u64, password_hash: &[u8]) -> Vec<u8> {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(auth.token_key()).expect("HMAC takes any key length");
    feed(&mut mac, user, expiry, password_hash);
    mac.finalize().into_bytes().to_vec()
}

/// Go-style durations as etcd's flags take them: `300s`, `10m`, `1h`,
/// or plain seconds.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("--auth-token jwt: ttl {s:?} is not a duration such as 10m");
    let (number, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: u64 = number.parse().map_err(|_| bad())?;
    let secs = match unit {
        "ms" => return Ok(Duration::from_millis(n)),
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        _ => return Err(bad()),
    };
    Ok(Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use synod_proto::etcdserverpb::{
        AuthEnableRequest, AuthRoleAddRequest, AuthUserAddRequest, AuthUserChangePasswordRequest,
        AuthUserGrantRoleRequest,
    };
    use synod_proto::synodpb::{auth_write::Op, AuthWrite};

    fn store() -> AuthStore {
        let mut s = AuthStore::default();
        let w = |op| AuthWrite {
            op: Some(op),
            token_key: Bytes::from(vec![3; 32]),
        };
        for op in [
            Op::UserAdd(AuthUserAddRequest {
                name: "root".into(),
                hashed_password: "h1".into(),
                ..Default::default()
            }),
            Op::RoleAdd(AuthRoleAddRequest {
                name: "root".into(),
            }),
            Op::UserGrantRole(AuthUserGrantRoleRequest {
                user: "root".into(),
                role: "root".into(),
            }),
            Op::Enable(AuthEnableRequest {}),
        ] {
            s.apply(&w(op)).unwrap();
        }
        s
    }

    #[test]
    fn simple_tokens_verify_and_die_with_the_password() {
        let tokens = Tokens::from_spec("simple", DEFAULT_TTL).unwrap();
        let mut auth = store();
        let t = tokens.issue(&auth, "root").unwrap();
        assert_eq!(tokens.verify(&auth, &t).unwrap().0, "root");
        // Tampering is caught.
        let forged = t.replacen(&B64.encode("root"), &B64.encode("rooo"), 1);
        assert_eq!(
            tokens.verify(&auth, &forged),
            Err(AuthError::InvalidAuthToken)
        );
        assert_eq!(
            tokens.verify(&auth, "x.y"),
            Err(AuthError::InvalidAuthToken)
        );
        auth.apply(&AuthWrite {
            op: Some(Op::UserChangePassword(AuthUserChangePasswordRequest {
                name: "root".into(),
                hashed_password: "h2".into(),
                ..Default::default()
            })),
            token_key: Bytes::new(),
        })
        .unwrap();
        assert_eq!(tokens.verify(&auth, &t), Err(AuthError::InvalidAuthToken));
    }

    #[test]
    fn expired_simple_tokens_are_refused() {
        let tokens = Tokens::from_spec("simple", Duration::from_millis(0)).unwrap();
        let auth = store();
        let t = tokens.issue(&auth, "root").unwrap();
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(tokens.verify(&auth, &t), Err(AuthError::InvalidAuthToken));
    }

    #[test]
    fn bad_specs_say_why() {
        assert!(Tokens::from_spec("opaque", DEFAULT_TTL)
            .err()
            .unwrap()
            .contains("unknown provider"));
        assert!(
            Tokens::from_spec("jwt,pub-key=/nonexistent,sign-method=RS256", DEFAULT_TTL)
                .err()
                .unwrap()
                .contains("cannot read")
        );
        assert!(Tokens::from_spec("jwt,ttl=10m", DEFAULT_TTL)
            .err()
            .unwrap()
            .contains("sign-method"));
        assert_eq!(parse_duration("10m").unwrap(), Duration::from_secs(600));
        assert!(parse_duration("ten").is_err());
    }

    #[test]
    fn jwt_tokens_carry_the_auth_revision() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("secret");
        std::fs::write(&secret, b"a shared secret of some length").unwrap();
        let spec = format!("jwt,priv-key={},sign-method=HS256,ttl=5m", secret.display());
        let tokens = Tokens::from_spec(&spec, DEFAULT_TTL).unwrap();
        let mut auth = store();
        let t = tokens.issue(&auth, "root").unwrap();
        assert_eq!(tokens.verify(&auth, &t).unwrap().0, "root");
        auth.apply(&AuthWrite {
            op: Some(Op::RoleAdd(AuthRoleAddRequest { name: "r".into() })),
            token_key: Bytes::new(),
        })
        .unwrap();
        assert_eq!(tokens.verify(&auth, &t), Err(AuthError::AuthOldRevision));
        assert_eq!(
            tokens.verify(&auth, "not.a.jwt"),
            Err(AuthError::InvalidAuthToken)
        );
    }
}
