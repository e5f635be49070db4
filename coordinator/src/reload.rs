//! Re-reading the token file and the TLS files while the coordinator runs (`serve` does it on
//! SIGHUP), without dropping a connection, a stream or a running trial.
//!
//! A [`Reloader`] knows the files ([`ReloadSources`]); the server hands it the live tokens and
//! TLS configurations when it starts ([`Reloader::attach`]). [`Reloader::reload`] reads
//! everything first and swaps only what is valid: a token file that does not parse (or holds a
//! token too short for a reachable address) is refused with an error log and the tokens in
//! force stay; so do certificates that do not load. New tokens apply to the next request on
//! any connection (open dashboard sessions of removed tokens end); new certificates to
//! connections accepted from then on, on the gRPC port and the dashboard alike.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use crate::access::{RoleCounts, TokenSet, Tokens};
use crate::server::ServerTls;
use crate::tls::LiveTls;

/// The TLS files to re-read.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// `--tls-cert`.
    pub cert: PathBuf,
    /// `--tls-key`.
    pub key: PathBuf,
    /// `--tls-client-ca` (mutual TLS).
    pub client_ca: Option<PathBuf>,
}

impl TlsFiles {
    /// Reads the three files (one line naming the file that cannot be read).
    pub fn read(&self) -> Result<ServerTls, String> {
        let read = |flag: &str, path: &PathBuf| {
            std::fs::read(path).map_err(|e| format!("cannot read {flag} {}: {e}", path.display()))
        };
        Ok(ServerTls {
            cert_pem: read("--tls-cert", &self.cert)?,
            key_pem: read("--tls-key", &self.key)?,
            client_ca_pem: self.client_ca.as_ref().map(|ca| read("--tls-client-ca", ca)).transpose()?,
        })
    }
}

/// What a reload re-reads.
#[derive(Debug, Clone, Default)]
pub struct ReloadSources {
    /// The token file (`--token-file`), either form; None: the tokens stay as started.
    pub token_file: Option<PathBuf>,
    /// Refuse a reloaded file with a token shorter than [`crate::access::MIN_TOKEN_BYTES`] (the
    /// coordinator listens where others can reach it); otherwise such a token is only warned
    /// about.
    pub strong_tokens: bool,
    /// The TLS files; None: TLS stays as started (or off).
    pub tls: Option<TlsFiles>,
}

impl ReloadSources {
    /// Whether a reload would re-read anything.
    pub fn is_empty(&self) -> bool {
        self.token_file.is_none() && self.tls.is_none()
    }
}

/// What the server serves with, as the reloader swaps it.
#[derive(Debug, Clone)]
pub(crate) struct Live {
    pub(crate) tokens: Tokens,
    pub(crate) tls: Option<LiveTls>,
}

/// Re-reads the [`ReloadSources`] into the running server. Cheap to clone (shared); pass a
/// clone in [`crate::server::ServerConfig::reloader`] and keep one to call [`Reloader::reload`].
#[derive(Debug, Clone)]
pub struct Reloader {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    sources: ReloadSources,
    live: Mutex<Option<Live>>,
}

/// What one reload did: for each part it re-read, the new state or why the old one stays.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reloaded {
    /// The tokens now in force by role, or why the file was refused (None: no token file).
    pub tokens: Option<Result<RoleCounts, String>>,
    /// Whether new TLS material is in force, or why not (None: no TLS files).
    pub tls: Option<Result<(), String>>,
}

impl Reloader {
    /// A reloader of `sources`, idle until a server attaches to it.
    pub fn new(sources: ReloadSources) -> Self {
        Reloader { inner: Arc::new(Inner { sources, live: Mutex::new(None) }) }
    }

    /// What it re-reads.
    pub fn sources(&self) -> &ReloadSources {
        &self.inner.sources
    }

    /// Called by the server once it serves with `live` (a later server replaces an earlier one).
    pub(crate) fn attach(&self, live: Live) {
        *self.inner.live.lock().unwrap_or_else(|p| p.into_inner()) = Some(live);
    }

    /// Re-reads the sources and puts what is valid in force (see the module docs); logs the
    /// outcome of each part. Reads files: call it off the async threads in a busy server.
    pub fn reload(&self) -> Reloaded {
        let live = self.inner.live.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let Some(live) = live else {
            tracing::warn!("reload requested before the server started; nothing reloaded");
            return Reloaded { tokens: None, tls: None };
        };
        let sources = &self.inner.sources;
        if sources.is_empty() {
            tracing::info!("reload: nothing to re-read (no --token-file, no --tls-cert)");
        }
        let tokens = sources.token_file.as_ref().map(|path| {
            let outcome = reread_token_file(path, sources.strong_tokens).map(|set| {
                let counts = set.counts();
                live.tokens.replace(set);
                counts
            });
            match &outcome {
                Ok(counts) => tracing::info!(
                    admin = counts.admin,
                    worker = counts.worker,
                    viewer = counts.viewer,
                    "reloaded tokens ({counts})"
                ),
                Err(why) => tracing::error!("the token file was not reloaded, the tokens in force stay: {why}"),
            }
            outcome
        });
        let tls = sources.tls.as_ref().map(|files| {
            let outcome = match &live.tls {
                None => Err("this coordinator was started without TLS; restart it to turn TLS on".to_string()),
                Some(current) => files.read().and_then(|tls| current.replace(&tls).map_err(|e| e.to_string())),
            };
            match &outcome {
                Ok(()) => tracing::info!("reloaded TLS certificate"),
                Err(why) => tracing::error!("the TLS files were not reloaded, the certificate in force stays: {why}"),
            }
            outcome
        });
        Reloaded { tokens, tls }
    }
}

/// Reads and parses a token file as `serve` does (one line naming the file and the problem).
pub fn read_token_file(path: &std::path::Path) -> Result<TokenSet, String> {
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("cannot read --token-file {}: {e}", path.display()))?;
    TokenSet::parse(&text).map_err(|e| format!("the token file {}: {e}", path.display()))
}

/// [`read_token_file`], refusing a token too short for a reachable address when `strong`
/// (warning about it otherwise).
fn reread_token_file(path: &std::path::Path, strong: bool) -> Result<TokenSet, String> {
    let set = read_token_file(path)?;
    if let Some(weak) = set.weakness() {
        if strong {
            return Err(format!(
                "the token file {}: {weak}; on an address others can reach every token needs at least {} bytes",
                path.display(),
                crate::access::MIN_TOKEN_BYTES
            ));
        }
        tracing::warn!("the token file {}: {weak}; fine on loopback only", path.display());
    }
    Ok(set)
}
