//! How clients (the CLI and the worker) reach a coordinator: the URL, TLS (system roots or a
//! given CA, optionally a client certificate for mutual TLS), the bearer token (from a flag or
//! a file), and one-line explanations of why a connection failed.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

/// The connection flags every client of the coordinator takes (the `bertsweep` CLI's verbs and
/// `bertsweep-worker`), declared once: each also reads its `BERTSWEEP_*` variable. `global`
/// makes them valid after any subcommand.
#[derive(Debug, Clone, clap::Args)]
pub struct ConnectionArgs {
    /// Coordinator URL (https:// for TLS).
    #[arg(long, global = true, env = "BERTSWEEP_COORDINATOR", default_value = "http://127.0.0.1:50051")]
    pub coordinator: String,
    /// Bearer token of a coordinator started with tokens (prefer --token-file: a command line
    /// is visible to every local user). For `bertsweep serve`: the one token to require (an
    /// admin's).
    #[arg(long, global = true, env = "BERTSWEEP_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// File holding the bearer token (a Kubernetes Secret, a systemd credential, …). For
    /// `bertsweep serve`: one token (an admin's), or one `role:token` per line with the roles
    /// worker, viewer and admin; `serve` re-reads it on SIGHUP.
    #[arg(long, global = true, env = "BERTSWEEP_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// PEM CA bundle to trust for an https:// coordinator (default: the system roots).
    #[arg(long, global = true, env = "BERTSWEEP_CA_CERT")]
    pub ca_cert: Option<PathBuf>,
    /// PEM client certificate, for a coordinator that requires one (mutual TLS).
    #[arg(long, global = true, env = "BERTSWEEP_CLIENT_CERT")]
    pub client_cert: Option<PathBuf>,
    /// PEM private key of --client-cert.
    #[arg(long, global = true, env = "BERTSWEEP_CLIENT_KEY")]
    pub client_key: Option<PathBuf>,
}

impl ConnectionArgs {
    /// The token from --token or --token-file (a file's whitespace trimmed; see [`resolve_token`]).
    pub fn token(&self) -> Result<Option<String>, TokenError> {
        resolve_token(self.token.clone(), self.token_file.as_deref())
    }

    /// The TLS files named by --ca-cert, --client-cert and --client-key.
    pub fn tls(&self) -> ClientTls {
        ClientTls {
            ca_cert: self.ca_cert.clone(),
            client_cert: self.client_cert.clone(),
            client_key: self.client_key.clone(),
        }
    }
}

/// TLS material a client may be given (`--ca-cert`, `--client-cert`, `--client-key`).
#[derive(Debug, Clone, Default)]
pub struct ClientTls {
    /// PEM CA bundle to trust instead of the system roots (a private CA).
    pub ca_cert: Option<PathBuf>,
    /// PEM certificate presented to a coordinator that requires client certificates.
    pub client_cert: Option<PathBuf>,
    /// PEM private key of `client_cert`.
    pub client_key: Option<PathBuf>,
}

/// Why a client could not be set up (before any connection is tried).
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The --coordinator value is not a URL.
    #[error("--coordinator {0:?} is not a valid URL; use e.g. https://coordinator:50051 or http://127.0.0.1:50051")]
    BadUrl(String),
    /// A file named by a flag cannot be read.
    #[error("cannot read {what} {path}: {source}")]
    Read {
        /// Which flag.
        what: &'static str,
        /// The path given.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// Only one of --client-cert / --client-key was given.
    #[error("--client-cert and --client-key go together; give both or neither")]
    HalfIdentity,
    /// TLS flags with an http:// URL.
    #[error("--ca-cert/--client-cert apply to https:// coordinators; {0} is plaintext (use https://)")]
    TlsOnPlaintext(String),
    /// tonic refused the TLS settings.
    #[error("invalid TLS settings: {0}")]
    Tls(String),
}

/// Why a token cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// Both --token and --token-file.
    #[error("give --token or --token-file, not both")]
    Both,
    /// The token file cannot be read.
    #[error("cannot read --token-file {path}: {source}")]
    Read {
        /// The path given.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// Empty or whitespace only.
    #[error("the token{from} is empty; set a non-empty secret")]
    Empty {
        /// " in FILE" when it came from a file.
        from: String,
    },
}

/// The token from `--token` or `--token-file` (file contents with surrounding whitespace,
/// such as a trailing newline, removed). An empty token is refused: it would read as "auth
/// on" while authenticating nothing.
pub fn resolve_token(token: Option<String>, token_file: Option<&Path>) -> Result<Option<String>, TokenError> {
    match (token, token_file) {
        (Some(_), Some(_)) => Err(TokenError::Both),
        (Some(t), None) if t.trim().is_empty() => Err(TokenError::Empty { from: String::new() }),
        (Some(t), None) => Ok(Some(t)),
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path)
                .map_err(|source| TokenError::Read { path: path.display().to_string(), source })?;
            let t = text.trim();
            if t.is_empty() {
                return Err(TokenError::Empty { from: format!(" in {}", path.display()) });
            }
            Ok(Some(t.to_string()))
        }
        (None, None) => Ok(None),
    }
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, ConnectError> {
    std::fs::read(path).map_err(|source| ConnectError::Read { what, path: path.display().to_string(), source })
}

/// `url` with a scheme (a bare host:port means http://).
pub fn normalize_url(url: &str) -> String {
    if url.contains("://") {
        url.to_string()
    } else {
        format!("http://{url}")
    }
}

/// An endpoint for `url`: TLS for https:// (the given CA, else the system roots; a client
/// identity when given), plaintext for http://.
pub fn endpoint(url: &str, tls: &ClientTls) -> Result<Endpoint, ConnectError> {
    let url = normalize_url(url);
    let mut endpoint = Endpoint::from_shared(url.clone())
        .map_err(|_| ConnectError::BadUrl(url.clone()))?
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(20))
        .keep_alive_while_idle(true);
    let secure = url.starts_with("https://");
    let identity = match (&tls.client_cert, &tls.client_key) {
        (Some(cert), Some(key)) => Some(Identity::from_pem(read("--client-cert", cert)?, read("--client-key", key)?)),
        (None, None) => None,
        _ => return Err(ConnectError::HalfIdentity),
    };
    if !secure {
        if tls.ca_cert.is_some() || identity.is_some() {
            return Err(ConnectError::TlsOnPlaintext(url));
        }
        return Ok(endpoint);
    }
    let mut config = ClientTlsConfig::new();
    config = match &tls.ca_cert {
        Some(ca) => config.ca_certificate(Certificate::from_pem(read("--ca-cert", ca)?)),
        None => config.with_native_roots(),
    };
    if let Some(identity) = identity {
        config = config.identity(identity);
    }
    endpoint = endpoint.tls_config(config).map_err(|e| ConnectError::Tls(innermost(&e)))?;
    Ok(endpoint)
}

/// The innermost cause of an error chain (the part that names the problem).
pub fn innermost(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cause: &dyn std::error::Error = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

/// One line saying why talking to the coordinator at `url` failed, from the innermost cause
/// of a transport error or the message of an UNAVAILABLE status: a certificate problem by
/// name, TLS against plaintext either way round, or "unreachable".
pub fn explain_failure(url: &str, cause: &str) -> String {
    let url = normalize_url(url);
    let has = |needles: &[&str]| needles.iter().any(|n| cause.contains(n));
    if has(&["UnknownIssuer", "unknown issuer", "UnknownCA"]) && !has(&["alert"]) {
        return format!(
            "the coordinator's certificate at {url} is signed by a CA this client does not trust; pass that CA with --ca-cert (or BERTSWEEP_CA_CERT) ({cause})"
        );
    }
    if has(&["NotValidForName", "not valid for name"]) {
        return format!("the coordinator's certificate does not hold the name in {url}; connect with a name the certificate was issued for ({cause})");
    }
    if has(&["Expired", "expired", "NotValidYet", "not valid yet"]) {
        return format!("the coordinator's certificate at {url} has expired or is not valid yet; renew it ({cause})");
    }
    if has(&[
        "CertificateRequired",
        "certificate required",
        "BadCertificate",
        "bad certificate",
        "UnknownCA",
        "unknown ca",
    ]) {
        return format!(
            "the coordinator at {url} refused this client's certificate (or its lack of one); pass one it trusts with --client-cert and --client-key ({cause})"
        );
    }
    if url.starts_with("https://")
        && has(&["InvalidContentType", "corrupt message", "CorruptMessage", "wrong version number"])
    {
        return format!("the coordinator at {url} does not speak TLS; use http:// (or start it with --tls-cert/--tls-key) ({cause})");
    }
    let closed = [
        "connection reset",
        "Connection reset",
        "broken pipe",
        "Broken pipe",
        "stream closed",
        "connection closed",
        "unexpected end",
        "operation was canceled",
    ];
    if url.starts_with("http://")
        && (has(&closed)
            || has(&["h2 protocol error", "http2 error", "frame with invalid size", "error reading a body"]))
    {
        return format!(
            "the coordinator at {url} closed a plaintext connection; if it runs with TLS, use https:// ({cause})"
        );
    }
    if url.starts_with("https://") && has(&closed) {
        return format!(
            "the coordinator at {url} closed the TLS connection; if it requires client certificates, pass one it trusts with --client-cert and --client-key ({cause})"
        );
    }
    format!("cannot reach the coordinator at {url}: {cause} (is `bertsweep serve` running? set --coordinator or BERTSWEEP_COORDINATOR)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_from_flags_and_files_and_empty_ones_refused() {
        assert_eq!(resolve_token(None, None).unwrap(), None);
        assert_eq!(resolve_token(Some("s3cret".into()), None).unwrap().as_deref(), Some("s3cret"));
        assert!(matches!(resolve_token(Some("  ".into()), None), Err(TokenError::Empty { .. })));
        let dir = std::env::temp_dir().join(format!("bertsweep-token-{}", std::process::id()));
        std::fs::write(&dir, "from-file\n").unwrap();
        assert_eq!(resolve_token(None, Some(&dir)).unwrap().as_deref(), Some("from-file"));
        std::fs::write(&dir, "\n").unwrap();
        assert!(resolve_token(None, Some(&dir)).unwrap_err().to_string().contains("is empty"));
        assert!(matches!(resolve_token(Some("a".into()), Some(&dir)), Err(TokenError::Both)));
        std::fs::remove_file(&dir).unwrap();
        assert!(resolve_token(None, Some(&dir)).unwrap_err().to_string().starts_with("cannot read --token-file"));
    }

    #[test]
    fn failures_are_explained_by_cause() {
        let e = explain_failure("https://c:1", "invalid peer certificate: UnknownIssuer");
        assert!(e.contains("--ca-cert"), "{e}");
        let e = explain_failure("https://c:1", "invalid peer certificate: NotValidForName");
        assert!(e.contains("name"), "{e}");
        let e = explain_failure("http://c:1", "connection reset by peer");
        assert!(e.contains("https://"), "{e}");
        let e = explain_failure("c:1", "Connection refused (os error 111)");
        assert!(e.starts_with("cannot reach the coordinator at http://c:1"), "{e}");
    }

    #[test]
    fn tls_flags_need_https_and_both_halves() {
        let tls = ClientTls { ca_cert: Some("ca.pem".into()), ..Default::default() };
        assert!(matches!(endpoint("http://127.0.0.1:1", &tls), Err(ConnectError::TlsOnPlaintext(_))));
        let half = ClientTls { client_cert: Some("c.pem".into()), ..Default::default() };
        assert!(matches!(endpoint("https://127.0.0.1:1", &half), Err(ConnectError::HalfIdentity)));
        assert!(matches!(endpoint("https://127.0.0.1:1", &tls), Err(ConnectError::Read { .. })));
        assert!(endpoint("127.0.0.1:1", &ClientTls::default()).is_ok());
    }
}
