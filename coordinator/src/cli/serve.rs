//! `bertsweep serve`: the flags turned into a [`ServerConfig`], secure by default (no token on
//! a reachable address is refused), listeners bound before anything starts, SIGHUP reloading
//! the token file and TLS files, SIGINT/SIGTERM shutting down after the writer flushes.

use super::*;

/// A listener on `addr` whose accept queue holds a burst as large as a port's connection cap
/// (the default backlog of 1,024 overflows under thousands of connections at once).
pub(super) fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(crate::connections::DEFAULT_MAX_CONNECTIONS as u32)
}

/// The tokens `serve` requires: `--token` (one admin token) or the `--token-file` (either form).
pub(super) fn serve_tokens(global: &GlobalArgs) -> Result<Option<TokenSet>> {
    match (&global.connection.token, &global.connection.token_file) {
        (Some(_), Some(_)) => Err(bertsweep_proto::connect::TokenError::Both.into()),
        (Some(token), None) => {
            Ok(Some(TokenSet::admin(token).map_err(|_| anyhow::anyhow!("the token is empty; set a non-empty secret"))?))
        }
        (None, Some(path)) => {
            warn_if_shared(path);
            let set = crate::reload::read_token_file(path).map_err(anyhow::Error::msg)?;
            if set.looks_like_mistyped_role() {
                tracing::warn!(
                    "the token file {} holds one line whose prefix is no role, so the whole line is one admin token; \
                     the roles are worker, viewer and admin (`role:token`)",
                    path.display()
                );
            }
            if set.counts().admin == 0 {
                tracing::warn!(
                    "the token file {} has no admin token: nobody can create or stop studies until one is added \
                     (then send SIGHUP)",
                    path.display()
                );
            }
            Ok(Some(set))
        }
        (None, None) => Ok(None),
    }
}

/// Warns when the token file can be read by its group or by others.
pub(super) fn warn_if_shared(path: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path) {
        let mode = meta.permissions().mode();
        if mode & 0o077 != 0 {
            tracing::warn!(
                "the token file {} is readable by its group or others (mode {:o}); `chmod 600 {}`",
                path.display(),
                mode & 0o777,
                path.display()
            );
        }
    }
}

/// Refuses tokens too short to resist guessing on a reachable address (warns on loopback).
pub(super) fn check_token_strength(tokens: &TokenSet, public: bool) -> Result<()> {
    let Some(weak) = tokens.weakness() else { return Ok(()) };
    let how = "make one with `openssl rand -hex 32 > token && chmod 600 token` and pass --token-file token";
    if public {
        bail!("{weak}; on an address others can reach it needs at least {MIN_TOKEN_BYTES}: {how}");
    }
    tracing::warn!("{weak}; fine on loopback, but {how} before listening elsewhere");
    Ok(())
}

/// Reads a PEM file named by a `serve` flag.
pub(super) fn read_pem(flag: &str, path: &std::path::Path) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read {flag} {}", path.display()))
}

pub(super) async fn serve(args: ServeArgs, token: Option<TokenSet>, token_file: Option<PathBuf>) -> Result<()> {
    // Secure by default: a token is required wherever someone else could connect.
    if token.is_none() && !args.listen.ip().is_loopback() && !args.insecure {
        bail!(
            "refusing to listen on {} without a token: anyone who can reach it could create, stop and read studies; set --token-file (or --token), or pass --insecure to accept that",
            args.listen
        );
    }
    if let Some(http) = args.http {
        if token.is_none() && !http.ip().is_loopback() && !args.insecure {
            bail!(
                "refusing to serve the dashboard on {http} without a token: anyone who can reach it could read every study; set --token-file (or --token), or pass --insecure to accept that"
            );
        }
    }
    let public = !args.listen.ip().is_loopback() || args.http.is_some_and(|h| !h.ip().is_loopback());
    if let Some(token) = &token {
        check_token_strength(token, public)?;
    }
    if args.max_connections == 0 {
        bail!("--max-connections must be at least 1");
    }
    if args.idle_timeout <= args.long_poll {
        bail!(
            "--idle-timeout ({:?}) must be longer than --long-poll ({:?}): a worker waiting for work would be cut off",
            args.idle_timeout,
            args.long_poll
        );
    }
    if args.max_blob_size == 0 {
        bail!("--max-blob-size must be more than 0; name inputs as worker:/path to upload nothing");
    }
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(ServerTls {
            cert_pem: read_pem("--tls-cert", cert)?,
            key_pem: read_pem("--tls-key", key)?,
            client_ca_pem: args.tls_client_ca.as_deref().map(|ca| read_pem("--tls-client-ca", ca)).transpose()?,
        }),
        _ => None,
    };
    let listener = bind(args.listen).with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener.local_addr()?;
    let bind_sidecar = |flag: &'static str, addr: Option<SocketAddr>| async move {
        match addr {
            Some(addr) => bind(addr).map(Some).with_context(|| format!("cannot listen on {flag} {addr}")),
            None => Ok(None),
        }
    };
    let sidecars = server::Sidecars {
        metrics: bind_sidecar("--metrics-listen", args.metrics_listen).await?,
        health: bind_sidecar("--health-listen", args.health_listen).await?,
        http: bind_sidecar("--http", args.http).await?,
    };
    let metrics_addr = sidecars.metrics.as_ref().map(|l| l.local_addr()).transpose()?;
    let health_addr = sidecars.health.as_ref().map(|l| l.local_addr()).transpose()?;
    let http_addr = sidecars.http.as_ref().map(|l| l.local_addr()).transpose()?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    // SIGHUP re-reads the token file and the TLS files; without either, SIGHUP keeps its
    // default (the process ends, as when its terminal goes away).
    let reloader = Reloader::new(ReloadSources {
        token_file: token_file.filter(|_| token.is_some()),
        strong_tokens: public,
        tls: match (&args.tls_cert, &args.tls_key) {
            (Some(cert), Some(key)) => {
                Some(TlsFiles { cert: cert.clone(), key: key.clone(), client_ca: args.tls_client_ca.clone() })
            }
            _ => None,
        },
    });
    let on_hangup = if reloader.sources().is_empty() { None } else { Some(reload_on_hangup(reloader.clone())?) };
    let config = ServerConfig {
        db_url: args.db.clone(),
        token: None,
        tokens: token,
        reloader: Some(reloader),
        lease_ttl: args.lease_ttl,
        long_poll: args.long_poll,
        tls,
        data_dir: args.data_dir.clone(),
        max_blob_bytes: args.max_blob_size,
        orphan_grace: args.orphan_grace,
        min_free_bytes: args.min_free_space,
        verify_blobs: args.verify_blobs,
        worker_expiry: args.worker_expiry,
        connection_limits: crate::connections::ConnectionLimits {
            max_connections: args.max_connections,
            handshake_timeout: args.handshake_timeout,
            idle_timeout: args.idle_timeout,
        },
    };
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<()>();
    let shutdown = async {
        shutdown_signal().await;
        tracing::info!("shutting down");
    };
    // Announce the address once the store is open and the server is about to accept.
    let announce = tokio::spawn(async move {
        if ready_rx.await.is_ok() {
            println!("bertsweep coordinator listening on {addr} (db {}, {scheme})", args.db);
            if let Some(metrics) = metrics_addr {
                println!("metrics at http://{metrics}/metrics");
            }
            if let Some(health) = health_addr {
                println!("plaintext health checks on {health}");
            }
            if let Some(http) = http_addr {
                println!("dashboard at {scheme}://{http}/");
            }
        }
    });
    let result = server::run_with_sidecars(listener, sidecars, config, shutdown, ready_tx).await;
    announce.abort();
    if let Some(task) = on_hangup {
        task.abort();
    }
    result.map_err(anyhow::Error::from)
}

/// Reloads on every SIGHUP (the handler is installed at once, so an early SIGHUP is not fatal).
pub(super) fn reload_on_hangup(reloader: Reloader) -> Result<tokio::task::JoinHandle<()>> {
    let mut hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .context("cannot install the SIGHUP handler")?;
    Ok(tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            tracing::info!("SIGHUP: reloading the token file and TLS files");
            let reloader = reloader.clone();
            let _ = tokio::task::spawn_blocking(move || reloader.reload()).await;
        }
    }))
}

pub(super) async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
