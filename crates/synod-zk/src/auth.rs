//! ZooKeeper's digest authentication: the identity `addauth digest
//! user:password` gives, and the superuser check.

use base64::Engine as _;
use sha1::{Digest, Sha1};

/// The digest identity of `user:password`: `user:base64(sha1(user:password))`,
/// as ZooKeeper's `DigestAuthenticationProvider.generateDigest` makes it.
/// `None` when the credentials have no colon.
pub fn digest_id(credentials: &str) -> Option<String> {
    let (user, _) = credentials.split_once(':')?;
    let hash = Sha1::digest(credentials.as_bytes());
    let encoded = base64::engine::general_purpose::STANDARD.encode(hash);
    Some(format!("{user}:{encoded}"))
}

/// Checks a `user:HASH` superuser setting: refused with the reason when
/// it is not of that shape.
pub fn check_super_digest(value: &str) -> Result<(), String> {
    match value.split_once(':') {
        Some((user, hash)) if !user.is_empty() && !hash.is_empty() => Ok(()),
        _ => Err(format!(
            "super digest {value:?} must be user:base64(sha1(user:password))"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_matches_zookeeper() {
        // ZooKeeper's own documentation example (super:test).
        assert_eq!(
            digest_id("super:test").as_deref(),
            Some("super:D/InIHSb7yEEbrWz8b9l71RjZJU=")
        );
        assert_eq!(digest_id("nocolon"), None);
        assert!(check_super_digest("super:D/InIHSb7yEEbrWz8b9l71RjZJU=").is_ok());
        assert!(check_super_digest("super").is_err());
    }
}
