//! TLS on the coordinator's ports, from the PEM files of `--tls-cert`, `--tls-key` and
//! `--tls-client-ca` (mutual TLS): the gRPC port and the dashboard present the same identity.
//!
//! The rustls configurations live in a [`LiveTls`] that a reload replaces as a whole: every
//! new connection takes the configuration in force when it is accepted, and connections
//! already open keep theirs. On the gRPC port, [`incoming`] does the handshakes itself, each
//! in a task of its own bounded by the handshake timeout, so a slow client never holds up
//! the accept loop; tonic gets finished [`TlsStream`]s, whose connect info
//! (`TlsConnectInfo<TcpConnectInfo>`) keeps the peer address and client certificates in every
//! request's extensions.

use std::io;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::Stream;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{RootCertStore, ServerConfig};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use crate::connections::{GuardedStream, Tracker};
use crate::server::ServerTls;

/// Why the TLS material cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file holds nothing usable.
    #[error("{what} holds no usable TLS material: {detail}")]
    Pem {
        /// Which file (flag) it was.
        what: &'static str,
        /// What was wrong with it.
        detail: String,
    },
    /// rustls refused the combination (key does not match the certificate, …).
    #[error("invalid TLS certificate or key: {0}")]
    Config(String),
}

fn certificates(what: &'static str, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem { what, detail: e.to_string() })?;
    if certs.is_empty() {
        return Err(TlsError::Pem { what, detail: "no PEM certificate in it".into() });
    }
    Ok(certs)
}

/// A rustls server configuration for `tls` offering `alpn` (mutual TLS when it has a client CA).
pub fn server_config(tls: &ServerTls, alpn: &[&[u8]]) -> Result<ServerConfig, TlsError> {
    let certs = certificates("--tls-cert", &tls.cert_pem)?;
    let key = PrivateKeyDer::from_pem_slice(&tls.key_pem)
        .map_err(|e| TlsError::Pem { what: "--tls-key", detail: e.to_string() })?;
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let builder = match &tls.client_ca_pem {
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for cert in certificates("--tls-client-ca", ca)? {
                roots.add(cert).map_err(|e| TlsError::Pem { what: "--tls-client-ca", detail: e.to_string() })?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| TlsError::Config(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(certs, key).map_err(|e| TlsError::Config(e.to_string()))?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}

/// The TLS configurations in force on the gRPC port (ALPN `h2`) and the dashboard (`h2`,
/// `http/1.1`), replaceable while the coordinator runs. Cheap to clone (shared).
#[derive(Clone)]
pub struct LiveTls {
    configs: Arc<RwLock<Configs>>,
}

#[derive(Clone)]
struct Configs {
    grpc: Arc<ServerConfig>,
    dashboard: Arc<ServerConfig>,
}

impl std::fmt::Debug for LiveTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LiveTls")
    }
}

impl LiveTls {
    /// Both ports' configurations for `tls`.
    pub fn new(tls: &ServerTls) -> Result<Self, TlsError> {
        Ok(LiveTls { configs: Arc::new(RwLock::new(Self::build(tls)?)) })
    }

    fn build(tls: &ServerTls) -> Result<Configs, TlsError> {
        Ok(Configs {
            grpc: Arc::new(server_config(tls, &[b"h2"])?),
            dashboard: Arc::new(server_config(tls, &[b"h2", b"http/1.1"])?),
        })
    }

    /// Serves `tls` to every connection accepted from now on (both ports); on an error nothing
    /// changes.
    pub fn replace(&self, tls: &ServerTls) -> Result<(), TlsError> {
        let configs = Self::build(tls)?;
        *self.configs.write().unwrap_or_else(|p| p.into_inner()) = configs;
        Ok(())
    }

    fn configs(&self) -> Configs {
        self.configs.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// An acceptor with the gRPC port's configuration in force now.
    pub fn grpc_acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.configs().grpc)
    }

    /// An acceptor with the dashboard's configuration in force now.
    pub fn dashboard_acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.configs().dashboard)
    }
}

/// Connections whose TLS handshake finished, waiting for the server to take them.
const HANDSHAKEN_QUEUE: usize = 64;

/// Accepts from `listener` under `tracker` and yields the connections whose TLS handshake
/// (with the gRPC configuration in force when each was accepted) finished within `timeout`.
/// Each handshake runs in a task of its own; failed and timed-out ones are dropped (logged at
/// debug). The accept loop ends once the returned stream is dropped.
pub fn incoming(
    tracker: &Tracker,
    listener: TcpListener,
    tls: LiveTls,
    timeout: Duration,
) -> impl Stream<Item = io::Result<TlsStream<GuardedStream>>> + Send + 'static {
    let (tx, rx) = tokio::sync::mpsc::channel(HANDSHAKEN_QUEUE);
    let tracker = tracker.clone();
    tokio::spawn(async move {
        loop {
            let tcp = tokio::select! {
                tcp = tracker.accept(&listener) => tcp,
                _ = tx.closed() => return,
            };
            let Some(guarded) = tracker.admit(tcp) else { continue };
            let acceptor = tls.grpc_acceptor();
            let tx = tx.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(timeout, acceptor.accept(guarded)).await {
                    Ok(Ok(stream)) => {
                        let _ = tx.send(Ok(stream)).await;
                    }
                    Ok(Err(e)) => tracing::debug!("gRPC TLS handshake failed: {e}"),
                    Err(_) => tracing::debug!("gRPC TLS handshake timed out"),
                }
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}
