//! How `synod bench` reaches the cluster: plain or TLS channels, and the
//! auth token every request carries when `--user` is given, as etcd's
//! clients send it (the `token` metadata).

use super::{BenchArgs, CONNECT_TIMEOUT, REQUEST_TIMEOUT};
use anyhow::{Context, Result};
use synod_proto::etcdserverpb::auth_client::AuthClient;
use synod_proto::etcdserverpb::AuthenticateRequest;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

/// A connection that adds the run's token to every request.
pub(crate) type Channel = InterceptedService<tonic::transport::Channel, WithToken>;

/// Adds the token, when there is one.
#[derive(Clone)]
pub(crate) struct WithToken(Option<MetadataValue<Ascii>>);

impl tonic::service::Interceptor for WithToken {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(token) = &self.0 {
            request.metadata_mut().insert("token", token.clone());
        }
        Ok(request)
    }
}

/// TLS and credentials of a run.
pub(crate) struct Access {
    tls: Option<ClientTlsConfig>,
    user: Option<(String, String)>,
}

impl Access {
    /// Reads `--cacert`, `--cert`, `--key` and `--user`.
    pub(crate) fn from_args(args: &BenchArgs) -> Result<Access> {
        let read = |p: &std::path::Path| {
            std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))
        };
        let tls = match &args.cacert {
            None => None,
            Some(ca) => {
                let mut tls =
                    ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read(ca)?));
                if let (Some(cert), Some(key)) = (&args.cert, &args.key) {
                    tls = tls.identity(Identity::from_pem(read(cert)?, read(key)?));
                }
                Some(tls)
            }
        };
        let user = match &args.user {
            None => None,
            Some(u) => {
                let (name, password) = u.split_once(':').context("--user takes NAME:PASSWORD")?;
                Some((name.to_string(), password.to_string()))
            }
        };
        Ok(Access { tls, user })
    }

    async fn connect(&self, endpoint: &str) -> Result<tonic::transport::Channel> {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let mut e = Endpoint::from_shared(format!("{scheme}://{endpoint}"))
            .with_context(|| format!("bad endpoint {endpoint}"))?
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .tcp_nodelay(true);
        if let Some(tls) = &self.tls {
            e = e.tls_config(tls.clone()).context("bad TLS settings")?;
        }
        e.connect()
            .await
            .with_context(|| format!("cannot connect to {endpoint} (is the server running?)"))
    }

    /// Opens `conns` channels round-robin over the endpoints, after
    /// authenticating once (the token is valid on every member).
    pub(crate) async fn open(&self, endpoints: &[String], conns: u32) -> Result<Vec<Channel>> {
        let mut plain = Vec::with_capacity(conns as usize);
        for i in 0..conns as usize {
            plain.push(self.connect(&endpoints[i % endpoints.len()]).await?);
        }
        let token = match (&self.user, plain.first()) {
            (Some((name, password)), Some(first)) => {
                let token = AuthClient::new(first.clone())
                    .authenticate(AuthenticateRequest {
                        name: name.clone(),
                        password: password.clone(),
                    })
                    .await
                    .with_context(|| format!("cannot authenticate as {name}"))?
                    .into_inner()
                    .token;
                Some(
                    MetadataValue::try_from(token.as_str())
                        .context("the server's token is not valid metadata")?,
                )
            }
            _ => None,
        };
        Ok(plain
            .into_iter()
            .map(|c| InterceptedService::new(c, WithToken(token.clone())))
            .collect())
    }
}
