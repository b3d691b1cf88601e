//! Who may talk to a node's peer port.
//!
//! Every peer call (the batch stream, snapshot streams, report questions)
//! names its sender in the metadata. With a cluster secret
//! (`--peer-secret-file`), it also carries an HMAC-SHA256 of the cluster
//! id and the sender's id under that secret, and a call without a valid
//! one is refused before anything reaches the core. Without a secret the
//! core still drops batches of another cluster and of nodes that are not
//! members (see `Core::on_peer`).
//!
//! The token is the same on every call of a node, so it keeps out foreign
//! and misconfigured nodes and anyone who does not know the secret, not
//! an attacker who can read peer traffic: that needs mutual TLS on the
//! peer port (`--peer-cert-file` and friends; this type also opens the
//! TLS connections, see [`PeerAuth::with_tls`]).

use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::sync::Arc;
use tonic::metadata::MetadataValue;
use tonic::{Request, Status};

/// Metadata key naming the sending node.
const FROM: &str = "synod-peer-from";
/// Metadata key of the sender's token (hex HMAC-SHA256).
const TOKEN: &str = "synod-peer-token";
/// The shortest secret accepted: 16 bytes.
pub const PEER_SECRET_MIN_BYTES: usize = 16;

/// Signs this node's peer calls and checks the calls it receives.
#[derive(Clone, Default)]
pub struct PeerAuth {
    me: u64,
    cluster_id: u64,
    secret: Option<Arc<[u8]>>,
    /// Peer TLS: this node's certificate (presented to the peers it calls)
    /// and the CAs it trusts for theirs.
    tls: Option<crate::tls::TlsFiles>,
}

impl PeerAuth {
    /// The rules of node `me` in `cluster_id`; `secret` (when given) must
    /// be the same on every member.
    pub fn new(me: u64, cluster_id: u64, secret: Option<&[u8]>) -> PeerAuth {
        PeerAuth {
            me,
            cluster_id,
            secret: secret.map(Arc::from),
            tls: None,
        }
    }

    /// Calls peers over TLS with these files (read again for every new
    /// connection, so renewed files are used without a restart).
    pub fn with_tls(mut self, tls: Option<crate::tls::TlsFiles>) -> PeerAuth {
        self.tls = tls;
        self
    }

    /// An endpoint for the peer at `addr`: `https://` with this node's
    /// certificate when peer TLS is on, `http://` otherwise.
    pub(crate) fn endpoint(
        &self,
        addr: std::net::SocketAddr,
    ) -> Result<tonic::transport::Endpoint, String> {
        let Some(files) = &self.tls else {
            return tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
                .map(|e| e.tcp_nodelay(true))
                .map_err(|e| e.to_string());
        };
        let read =
            |p: &std::path::Path| std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()));
        let mut config = tonic::transport::ClientTlsConfig::new().identity(
            tonic::transport::Identity::from_pem(read(&files.cert)?, read(&files.key)?),
        );
        if let Some(ca) = &files.trusted_ca {
            config = config.ca_certificate(tonic::transport::Certificate::from_pem(read(ca)?));
        }
        tonic::transport::Endpoint::from_shared(format!("https://{addr}"))
            .map_err(|e| e.to_string())?
            .tls_config(config)
            .map(|e| e.tcp_nodelay(true))
            .map_err(|e| e.to_string())
    }

    fn mac(&self, secret: &[u8], from: u64) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
        mac.update(b"synod-peer-v1");
        mac.update(&self.cluster_id.to_le_bytes());
        mac.update(&from.to_le_bytes());
        mac
    }

    /// Names this node on an outgoing call, with its token when the
    /// cluster has a secret.
    pub(crate) fn sign<T>(&self, request: &mut Request<T>) {
        let md = request.metadata_mut();
        md.insert(FROM, MetadataValue::from(self.me));
        if let Some(secret) = &self.secret {
            let token = hex(&self.mac(secret, self.me).finalize().into_bytes());
            md.insert(TOKEN, token.parse().expect("hex is valid metadata"));
        }
    }

    /// Checks an incoming call: `Ok(Some(sender))` when the cluster has a
    /// secret and the call proves it, `Ok(None)` when there is no secret
    /// (the core's checks apply), a refusal otherwise.
    pub(crate) fn verify<T>(&self, request: &Request<T>) -> Result<Option<u64>, Status> {
        let Some(secret) = &self.secret else {
            return Ok(None);
        };
        let refuse =
            |why: &str| Status::unauthenticated(format!("peer authentication failed: {why}"));
        let md = request.metadata();
        let from: u64 = md
            .get(FROM)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| refuse("the call does not name its sender"))?;
        let token = md
            .get(TOKEN)
            .and_then(|v| v.to_str().ok())
            .and_then(unhex)
            .ok_or_else(|| refuse("no token (is --peer-secret-file set on every member?)"))?;
        self.mac(secret, from)
            .verify_slice(&token)
            .map_err(|_| refuse("wrong token (the members' secrets differ)"))?;
        Ok(Some(from))
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || s.len() > 128 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signed_call_passes_and_others_are_refused() {
        let a = PeerAuth::new(1, 42, Some(b"0123456789abcdef"));
        let b = PeerAuth::new(2, 42, Some(b"0123456789abcdef"));
        let mut call = Request::new(());
        a.sign(&mut call);
        assert_eq!(b.verify(&call).unwrap(), Some(1));
        // Another secret, another cluster, no token, a forged sender.
        let other = PeerAuth::new(2, 42, Some(b"fedcba9876543210"));
        assert!(other.verify(&call).is_err());
        let cluster = PeerAuth::new(2, 43, Some(b"0123456789abcdef"));
        assert!(cluster.verify(&call).is_err());
        let mut bare = Request::new(());
        PeerAuth::new(1, 42, None).sign(&mut bare);
        let e = b.verify(&bare).unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unauthenticated);
        let mut forged = Request::new(());
        a.sign(&mut forged);
        forged
            .metadata_mut()
            .insert(FROM, MetadataValue::from(3u64));
        assert!(b.verify(&forged).is_err());
        // Without a secret nothing is checked here.
        assert_eq!(PeerAuth::new(2, 42, None).verify(&bare).unwrap(), None);
    }

    #[test]
    fn hex_round_trips_and_refuses_garbage() {
        assert_eq!(
            unhex(&hex(&[0, 1, 254, 255])).unwrap(),
            vec![0, 1, 254, 255]
        );
        assert!(unhex("abc").is_none());
        assert!(unhex("zz").is_none());
        assert!(unhex(&"a".repeat(200)).is_none());
    }
}
