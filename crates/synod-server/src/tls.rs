//! TLS for a listener (etcd's `--cert-file`, `--key-file`,
//! `--trusted-ca-file`, `--client-cert-auth`), with rustls.
//!
//! The files are read at start (a bad file stops the node with the
//! reason) and checked again every few seconds: when one changes, the
//! configuration is rebuilt and new connections use it, so certificates
//! are renewed without a restart. A file that fails to load later keeps
//! the working configuration and logs why. Connections already open keep
//! the certificate they were opened with, as in etcd.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::ServerConfig;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// How often the files are looked at for changes.
pub const RELOAD_CHECK: Duration = Duration::from_secs(2);
/// A handshake that takes longer than this is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Where a listener's certificate, key and trusted CAs live.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate chain (PEM), leaf first.
    pub cert: PathBuf,
    /// Its private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// CAs whose client certificates are accepted (PEM).
    pub trusted_ca: Option<PathBuf>,
    /// Refuse clients without a certificate signed by `trusted_ca`.
    pub client_cert_auth: bool,
}

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {why}")]
pub struct TlsError {
    file: String,
    why: String,
}

fn error(file: &Path, why: impl std::fmt::Display) -> TlsError {
    TlsError {
        file: file.display().to_string(),
        why: why.to_string(),
    }
}

fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|e| error(path, e))?
        .collect::<Result<_, _>>()
        .map_err(|e| error(path, e))?;
    if certs.is_empty() {
        return Err(error(path, "no PEM certificate in the file"));
    }
    Ok(certs)
}

/// Builds a server configuration from the files, offering the `alpn`
/// protocols (none: the client's offer is ignored).
fn build(files: &TlsFiles, alpn: &[&[u8]]) -> Result<ServerConfig, TlsError> {
    // ring, not aws-lc-rs: it builds with the Rust toolchain alone (no C
    // toolchain or cmake on a fresh machine). rustls 0.23.48 deprecates
    // ring's provider for lacking post-quantum key exchange; the classical
    // suites it offers are what etcd's Go TLS stack negotiates too.
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = certificates(&files.cert)?;
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| error(&files.key, e))?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| error(&files.cert, e))?;
    let builder = match &files.trusted_ca {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in certificates(ca)? {
                roots.add(c).map_err(|e| error(ca, e))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let verifier = if files.client_cert_auth {
                verifier.build()
            } else {
                verifier.allow_unauthenticated().build()
            };
            builder.with_client_cert_verifier(verifier.map_err(|e| error(ca, e))?)
        }
        None if files.client_cert_auth => {
            return Err(error(
                &files.cert,
                "client-cert-auth needs a trusted CA file",
            ))
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(chain, key).map_err(|e| {
        error(
            &files.key,
            format!("the key does not fit the certificate: {e}"),
        )
    })?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}

fn stamps(files: &TlsFiles) -> Vec<Option<SystemTime>> {
    [
        Some(&files.cert),
        Some(&files.key),
        files.trusted_ca.as_ref(),
    ]
    .into_iter()
    .flatten()
    .map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
    .collect()
}

/// A listener's TLS configuration, reloaded when its files change.
#[derive(Clone)]
pub struct ServerTls {
    files: TlsFiles,
    alpn: Vec<&'static [u8]>,
    current: Arc<RwLock<Arc<ServerConfig>>>,
}

impl ServerTls {
    /// Loads the files for a gRPC listener (ALPN `h2`); an error names
    /// the file and what is wrong with it.
    pub fn grpc(files: TlsFiles) -> Result<ServerTls, TlsError> {
        ServerTls::load(files, vec![b"h2"])
    }

    /// Loads the files for a listener whose protocol is not negotiated
    /// by ALPN (ZooKeeper's secure client port: its clients offer none).
    pub fn plain(files: TlsFiles) -> Result<ServerTls, TlsError> {
        ServerTls::load(files, Vec::new())
    }

    fn load(files: TlsFiles, alpn: Vec<&'static [u8]>) -> Result<ServerTls, TlsError> {
        let config = build(&files, &alpn)?;
        Ok(ServerTls {
            files,
            alpn,
            current: Arc::new(RwLock::new(Arc::new(config))),
        })
    }

    fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(Arc::clone(&self.current.read().expect("tls lock")))
    }

    /// Rebuilds the configuration whenever a file changes, until `stop`
    /// resolves.
    async fn reload(self, stop: impl std::future::Future<Output = ()>) {
        let mut seen = stamps(&self.files);
        let watch = async {
            loop {
                tokio::time::sleep(RELOAD_CHECK).await;
                let now = stamps(&self.files);
                if now == seen {
                    continue;
                }
                seen = now;
                match build(&self.files, &self.alpn) {
                    Ok(config) => {
                        *self.current.write().expect("tls lock") = Arc::new(config);
                        tracing::info!(cert = %self.files.cert.display(), "TLS files reloaded");
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "TLS files changed but do not load; the previous ones stay in use")
                    }
                }
            }
        };
        tokio::select! {
            _ = stop => {}
            _ = watch => {}
        }
    }

    /// Accepts connections on `listener` and completes their handshakes
    /// (each on its own task, so one slow client holds up no other); the
    /// stream ends when `stop` resolves. Failed handshakes are logged and
    /// dropped.
    pub fn incoming(
        self,
        listener: TcpListener,
        stop: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> impl futures::Stream<Item = std::io::Result<TlsStream<TcpStream>>> {
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        let reloader = self.clone();
        tokio::spawn(async move {
            let accept = async {
                loop {
                    let (tcp, peer) = match listener.accept().await {
                        Ok(c) => c,
                        Err(e) => {
                            tracing::warn!(error = %e, "accept failed");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    };
                    let _ = tcp.set_nodelay(true);
                    let acceptor = self.acceptor();
                    let tx = tx.clone();
                    tokio::spawn(async move {
                        match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                            Ok(Ok(tls)) => {
                                let _ = tx.send(Ok(tls)).await;
                            }
                            Ok(Err(e)) => tracing::info!(%peer, error = %e, "TLS handshake failed"),
                            Err(_) => tracing::info!(%peer, "TLS handshake timed out"),
                        }
                    });
                }
            };
            tokio::select! {
                _ = reloader.reload(stop) => {}
                _ = accept => {}
            }
        });
        tokio_stream::wrappers::ReceiverStream::new(rx)
    }
}
