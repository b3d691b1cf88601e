//! ZooKeeper's access control: which identities an ACL lets do what. The
//! state machine checks writes with it (against the identities the write
//! carries, so a concurrent setACL is never raced) and the front end
//! checks reads with the same code.

use std::net::IpAddr;
use synod_proto::synodpb::{ZkAcl, ZkId};

/// Permission bits, as ZooKeeper numbers them.
pub mod perms {
    /// getData, getChildren, getACL.
    pub const READ: i32 = 1;
    /// setData.
    pub const WRITE: i32 = 2;
    /// Create a child.
    pub const CREATE: i32 = 4;
    /// Delete a child.
    pub const DELETE: i32 = 8;
    /// setACL.
    pub const ADMIN: i32 = 16;
    /// Every permission.
    pub const ALL: i32 = 31;
}

/// The scheme a superuser's identity carries: it passes every check, as
/// ZooKeeper's `super` does.
pub const SUPER: &str = "super";

/// ZooKeeper's open ACL: anyone may do anything.
pub fn open() -> Vec<ZkAcl> {
    vec![ZkAcl {
        perms: perms::ALL,
        id: Some(ZkId {
            scheme: "world".into(),
            id: "anyone".into(),
        }),
    }]
}

/// True when `auth` may do `perm` on a node with `acl`.
pub fn allowed(acl: &[ZkAcl], perm: i32, auth: &[ZkId]) -> bool {
    if auth.iter().any(|a| a.scheme == SUPER) {
        return true;
    }
    acl.iter().filter(|a| a.perms & perm != 0).any(|a| {
        let Some(id) = &a.id else { return false };
        if id.scheme == "world" && id.id == "anyone" {
            return true;
        }
        auth.iter()
            .any(|who| who.scheme == id.scheme && matches(&id.scheme, &id.id, &who.id))
    })
}

fn matches(scheme: &str, acl_id: &str, who: &str) -> bool {
    match scheme {
        "ip" => ip_matches(acl_id, who),
        _ => acl_id == who,
    }
}

/// `who` (an address) lies in `acl_id` (an address or a CIDR block).
fn ip_matches(acl_id: &str, who: &str) -> bool {
    let (net, bits) = match acl_id.split_once('/') {
        Some((net, bits)) => (net, bits.parse::<u32>().ok()),
        None => (acl_id, None),
    };
    let (Ok(net), Ok(who)) = (net.parse::<IpAddr>(), who.parse::<IpAddr>()) else {
        return false;
    };
    match (net, who) {
        (IpAddr::V4(n), IpAddr::V4(w)) => prefix_eq(&n.octets(), &w.octets(), bits.unwrap_or(32)),
        (IpAddr::V6(n), IpAddr::V6(w)) => prefix_eq(&n.octets(), &w.octets(), bits.unwrap_or(128)),
        _ => false,
    }
}

fn prefix_eq(a: &[u8], b: &[u8], bits: u32) -> bool {
    let bits = bits.min(a.len() as u32 * 8) as usize;
    let (whole, rest) = (bits / 8, bits % 8);
    if a[..whole] != b[..whole] {
        return false;
    }
    rest == 0 || {
        let mask = 0xffu8 << (8 - rest);
        a[whole] & mask == b[whole] & mask
    }
}

/// ZooKeeper's `fixupACL`: checks every entry and expands `auth` entries
/// into the client's authenticated identities. `None` is INVALIDACL.
pub fn fixup(acl: &[ZkAcl], auth: &[ZkId]) -> Option<Vec<ZkAcl>> {
    if acl.is_empty() {
        return None;
    }
    // Duplicates go first, over the whole list, as in ZooKeeper.
    let mut unique: Vec<&ZkAcl> = Vec::with_capacity(acl.len());
    for a in acl {
        if !unique.contains(&a) {
            unique.push(a);
        }
    }
    let mut out = Vec::with_capacity(acl.len());
    for a in unique {
        let id = a.id.as_ref()?;
        match id.scheme.as_str() {
            "world" if id.id == "anyone" => out.push(a.clone()),
            "auth" => {
                let mut any = false;
                for who in auth
                    .iter()
                    .filter(|w| w.scheme != "ip" && w.scheme != SUPER)
                {
                    any = true;
                    out.push(ZkAcl {
                        perms: a.perms,
                        id: Some(who.clone()),
                    });
                }
                if !any {
                    return None;
                }
            }
            "digest" if valid_digest(&id.id) => out.push(a.clone()),
            "ip" if valid_ip(&id.id) => out.push(a.clone()),
            _ => return None,
        }
    }
    Some(out)
}

/// ZooKeeper's `DigestAuthenticationProvider.isValid`: `user:hash`, two
/// parts (Java's split drops trailing empty parts, so `bob:` is one).
fn valid_digest(id: &str) -> bool {
    let mut parts: Vec<&str> = id.split(':').collect();
    while parts.last() == Some(&"") {
        parts.pop();
    }
    parts.len() == 2
}

fn valid_ip(id: &str) -> bool {
    let (net, bits) = match id.split_once('/') {
        Some((net, bits)) => (net, Some(bits)),
        None => (id, None),
    };
    let Ok(addr) = net.parse::<IpAddr>() else {
        return false;
    };
    let max = if addr.is_ipv4() { 32 } else { 128 };
    bits.is_none_or(|b| b.parse::<u32>().is_ok_and(|b| b <= max))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(scheme: &str, id: &str) -> ZkId {
        ZkId {
            scheme: scheme.into(),
            id: id.into(),
        }
    }

    fn entry(perms: i32, scheme: &str, i: &str) -> ZkAcl {
        ZkAcl {
            perms,
            id: Some(id(scheme, i)),
        }
    }

    #[test]
    fn world_digest_ip_and_super() {
        assert!(allowed(&open(), perms::WRITE, &[]));
        let acl = vec![
            entry(perms::READ, "digest", "bob:hash"),
            entry(perms::ALL, "ip", "10.1.0.0/16"),
        ];
        assert!(allowed(&acl, perms::READ, &[id("digest", "bob:hash")]));
        assert!(!allowed(&acl, perms::WRITE, &[id("digest", "bob:hash")]));
        assert!(!allowed(&acl, perms::READ, &[id("digest", "eve:hash")]));
        assert!(allowed(&acl, perms::ADMIN, &[id("ip", "10.1.200.3")]));
        assert!(!allowed(&acl, perms::ADMIN, &[id("ip", "10.2.0.3")]));
        assert!(allowed(&acl, perms::ADMIN, &[id(SUPER, "")]));
    }

    #[test]
    fn fixup_expands_auth_and_refuses_nonsense() {
        let who = [id("ip", "127.0.0.1"), id("digest", "bob:h")];
        let fixed = fixup(&[entry(perms::ALL, "auth", "")], &who).unwrap();
        assert_eq!(fixed, vec![entry(perms::ALL, "digest", "bob:h")]);
        assert!(fixup(&[entry(perms::ALL, "auth", "")], &who[..1]).is_none());
        assert!(fixup(&[], &who).is_none());
        assert!(fixup(&[entry(perms::ALL, "world", "someone")], &who).is_none());
        assert!(fixup(&[entry(perms::ALL, "ip", "1.2.3.4/40")], &who).is_none());
        assert!(fixup(&[entry(perms::ALL, "nope", "x")], &who).is_none());
        assert!(fixup(&[entry(perms::ALL, "ip", "::1")], &who).is_some());
    }
}
