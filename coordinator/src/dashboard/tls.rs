//! HTTPS for the dashboard with the PEM files the gRPC port uses (`--tls-cert`, `--tls-key`,
//! and `--tls-client-ca` for mutual TLS), so the browser sees the same identity as the CLI.

use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{RootCertStore, ServerConfig};
use tokio_rustls::TlsAcceptor;

use crate::server::ServerTls;

/// Why the TLS material cannot serve HTTPS.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file holds nothing usable.
    #[error("{what}: {detail}")]
    Pem {
        /// Which file (flag) it was.
        what: &'static str,
        /// What was wrong with it.
        detail: String,
    },
    /// rustls refused the combination (key does not match the certificate, …).
    #[error("the dashboard cannot use the TLS certificate and key: {0}")]
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

/// The acceptor for `tls`; ALPN offers HTTP/2 and HTTP/1.1.
pub fn acceptor(tls: &ServerTls) -> Result<TlsAcceptor, TlsError> {
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
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}
