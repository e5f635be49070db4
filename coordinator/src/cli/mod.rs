//! The `bertsweep` command line: `serve` runs the coordinator; every other verb is a gRPC
//! client of a running one.

mod backup;
mod client;
mod download;
mod inputs;
mod output;
mod serve;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use bertsweep_proto::v1 as pb;
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::access::TokenSet;
use crate::reload::{ReloadSources, Reloader, TlsFiles};
use crate::server::{self, ServerConfig, ServerTls};
use client::Client;
use serve::{serve, serve_tokens};

/// Distributed hyperparameter search for fine-tuning BERT text classifiers.
#[derive(Debug, Parser)]
#[command(name = "bertsweep", version, about)]
pub struct Cli {
    /// The verb to run.
    #[command(subcommand)]
    pub command: Command,
    /// Connection and authentication flags, shared by every verb.
    #[command(flatten)]
    pub global: GlobalArgs,
}

/// Flags every verb accepts.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Log lines on stderr as `text` or `json` (one object per line, for log pipelines).
    #[arg(long, global = true, env = "BERTSWEEP_LOG_FORMAT", default_value = "text")]
    pub log_format: bertsweep_telemetry::logs::LogFormat,
    /// Where the coordinator is and how to reach it (shared with `bertsweep-worker`).
    #[command(flatten)]
    pub connection: bertsweep_proto::connect::ConnectionArgs,
}

impl GlobalArgs {
    /// The token from --token or --token-file.
    fn token(&self) -> Result<Option<String>> {
        Ok(self.connection.token()?)
    }

    /// A connected client for the client verbs.
    async fn client(&self) -> Result<Client> {
        Client::connect(&self.connection.coordinator, self.token()?.as_deref(), &self.connection.tls()).await
    }
}
/// The verbs: `serve` runs the coordinator, the others are its gRPC clients.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the coordinator (gRPC server over a SQLite database).
    Serve(Box<ServeArgs>),
    /// Create, list, show or stop studies.
    #[command(subcommand)]
    Study(StudyCommand),
    /// List a study's trials.
    Trials(TrialsArgs),
    /// Show a study's best completed trial.
    Best(BestArgs),
    /// Fetch a trial's exported model (the best one unless --trial) into DIR, verified.
    Download(DownloadArgs),
    /// How much each searched parameter mattered (fANOVA over the completed trials).
    Importance(ImportanceArgs),
    /// Copy a running coordinator's database to FILE (consistent, online) and list the blobs
    /// it refers to in FILE.blobs; with --blobs DIR, also fetch those blobs into DIR.
    Backup(backup::BackupArgs),
    /// Rebuild a coordinator's database and data directory from a backup (offline: the new
    /// coordinator is started on them afterwards).
    Restore(backup::RestoreArgs),
    /// Check that the coordinator answers grpc.health.v1 with SERVING (exit 0), else say why
    /// on one line (exit 1): for container health checks and scripts.
    Health,
}

/// Flags of `download`.
#[derive(Debug, Args)]
pub struct DownloadArgs {
    /// The study.
    pub study: String,
    /// Where to put the model (must not exist, or be empty).
    pub dir: PathBuf,
    /// This trial instead of the best one.
    #[arg(long)]
    pub trial: Option<u32>,
}

/// Flags of `serve`, turned into a [`ServerConfig`] by [`run`].
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on (port 0 picks a free port; the bound address is printed).
    #[arg(long, default_value = "127.0.0.1:50051")]
    pub listen: SocketAddr,
    /// SQLite database (`sqlite://path` or a path); created if missing.
    #[arg(long, default_value = "sqlite://bertsweep.db")]
    pub db: String,
    /// How long a trial lease lives without a heartbeat (e.g. 30s, 500ms, 2m).
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub lease_ttl: Duration,
    /// Default AcquireTrial long-poll.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub long_poll: Duration,
    /// PEM certificate chain: serve gRPC over TLS (with --tls-key).
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// PEM CA: require client certificates it signed (mutual TLS).
    #[arg(long, requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,
    /// Directory for uploaded study inputs and kept models (default: `<db file>.data` beside
    /// the database).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Largest file an upload may carry (e.g. 500MB, 4GiB); larger inputs must be named
    /// worker:/path or hf:org/name.
    #[arg(long, default_value = "4GiB", value_parser = bertsweep_transfer::parse_size)]
    pub max_blob_size: u64,
    /// How long an upload nothing refers to (yet) is kept before it is deleted, and how often
    /// the data directory is swept for them (e.g. 1h, 30m).
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    pub orphan_grace: Duration,
    /// Free space uploads must leave on the data disk, for the database to keep committing
    /// (e.g. 2GiB; default 1 GiB, or 5 % of a smaller disk).
    #[arg(long, value_parser = bertsweep_transfer::parse_size)]
    pub min_free_space: Option<u64>,
    /// Re-hash every stored blob at start-up (in the background), quarantining those that do
    /// not match their sha256.
    #[arg(long)]
    pub verify_blobs: bool,
    /// Forget workers that neither asked for work nor heartbeated for this long and hold no
    /// trial (e.g. 7d, 12h).
    #[arg(long, default_value = "7d", value_parser = parse_duration)]
    pub worker_expiry: Duration,
    /// Connections each port holds at once; a full port closes its longest-idle connection
    /// for a newcomer.
    #[arg(long, default_value_t = crate::connections::DEFAULT_MAX_CONNECTIONS)]
    pub max_connections: usize,
    /// A connection that sends nothing (or does not finish its TLS handshake) this long after
    /// it was accepted is closed.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub handshake_timeout: Duration,
    /// A connection with no call in flight this long is closed (keep it above --long-poll).
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    pub idle_timeout: Duration,
    /// Listen on a non-loopback address without a token (anyone who reaches the port can then
    /// create, stop and read studies).
    #[arg(long)]
    pub insecure: bool,
    /// Serve Prometheus metrics at http://ADDR/metrics (plain HTTP without a token: bind it
    /// where only the scraper reaches; off unless set).
    #[arg(long, env = "BERTSWEEP_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// Also serve grpc.health.v1, and nothing else, in plaintext on ADDR: for probes that
    /// cannot speak TLS or send a token (Kubernetes' native gRPC probes).
    #[arg(long)]
    pub health_listen: Option<SocketAddr>,
    /// Serve the web dashboard on ADDR: studies, curves, importance and trials, live. It takes
    /// the same token (a login form sets a session cookie) and, with --tls-cert, HTTPS.
    #[arg(long, env = "BERTSWEEP_HTTP_LISTEN")]
    pub http: Option<SocketAddr>,
}

/// The `study` verbs.
#[derive(Debug, Subcommand)]
pub enum StudyCommand {
    /// Create a study from a TOML study file.
    Create {
        /// The study file; plain-path inputs it names are uploaded first.
        file: PathBuf,
    },
    /// List studies.
    List {
        /// How to print the list.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
        /// Only studies in this state.
        #[arg(long, value_enum)]
        state: Option<StateFilter>,
    },
    /// Show one study.
    Show {
        /// The study.
        name: String,
        /// How to print the study.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Stop a study: running trials are told to stop, pending ones are dropped.
    Stop {
        /// The study.
        name: String,
    },
    /// Delete a study, its trials, and every blob and checkpoint nothing else refers to
    /// (kept models included; download them first). Refused while it runs unless --force.
    Delete {
        /// The study.
        name: String,
        /// Stop the study first if it is running (its workers drop their trials).
        #[arg(long)]
        force: bool,
    },
}

/// `study list --state`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum StateFilter {
    /// Still running.
    Running,
    /// Ended with its budget spent.
    Completed,
    /// Ended by an error.
    Failed,
    /// Ended by `study stop`.
    Stopped,
}

impl From<StateFilter> for bertsweep_proto::v1::StudyState {
    fn from(state: StateFilter) -> Self {
        use bertsweep_proto::v1::StudyState;
        match state {
            StateFilter::Running => StudyState::Running,
            StateFilter::Completed => StudyState::Completed,
            StateFilter::Failed => StudyState::Failed,
            StateFilter::Stopped => StudyState::Stopped,
        }
    }
}

/// Flags of `trials`.
#[derive(Debug, Args)]
pub struct TrialsArgs {
    /// The study.
    pub name: String,
    /// How to print the trials.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// Keep printing trial changes until the study ends.
    #[arg(long)]
    pub follow: bool,
}

/// Flags of `importance`.
#[derive(Debug, Args)]
pub struct ImportanceArgs {
    /// The study.
    pub name: String,
    /// How to print the importances.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// Seed of the random forest (the same seed gives the same numbers).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

/// Flags of `best`.
#[derive(Debug, Args)]
pub struct BestArgs {
    /// The study.
    pub name: String,
    /// How to print the trial.
    #[arg(long, value_enum, default_value_t = BestFormat::Table)]
    pub format: BestFormat,
}

/// Output formats: aligned tables for people, json/csv for scripts.
// The variant names say it all; doc comments on them would become clap help text and turn
// every `--help` with a `--format` into clap's long, one-flag-per-paragraph form.
#[allow(missing_docs)]
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum Format {
    Table,
    Json,
    Csv,
}

/// Output formats of `best` (one trial has no use for csv).
#[allow(missing_docs)] // as for `Format`
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum BestFormat {
    Table,
    Json,
}

/// Parses `30s`, `500ms`, `2m`, `1h` or plain seconds (shared with the worker).
pub use bertsweep_proto::values::parse_duration;

/// Runs the parsed command line.
pub async fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Serve(args) => {
            let tokens = serve_tokens(&cli.global)?;
            serve(*args, tokens, cli.global.connection.token_file.clone()).await
        }
        Command::Study(cmd) => {
            let mut client = cli.global.client().await?;
            match cmd {
                StudyCommand::Create { file } => {
                    let text =
                        std::fs::read_to_string(&file).with_context(|| format!("cannot read {}", file.display()))?;
                    // Validate locally first so the message can name the file.
                    let spec = match crate::spec::parse_study(&text) {
                        Ok(spec) => spec,
                        Err(e) => bail!("{}: {}", file.display(), crate::text::bounded(&e.to_string())),
                    };
                    // A taken name is refused before anything is uploaded.
                    if client.get_study(&spec.name).await.is_ok() {
                        bail!("a study named {:?} already exists; choose another name", spec.name);
                    }
                    let remote = bertsweep_transfer::remote::Remote::new(client.raw());
                    let text = inputs::upload_inputs(&remote, &spec, &text)
                        .await
                        .map_err(|e| anyhow::anyhow!("{}: {e:#}", file.display()))?;
                    let study = client.create_study(text).await?;
                    println!("{}", output::created_line(&study));
                }
                StudyCommand::List { format, state } => {
                    let studies = client.list_studies(state.map(Into::into)).await?;
                    print!("{}", output::studies(&studies, format)?);
                }
                StudyCommand::Show { name, format } => {
                    let study = client.get_study(&name).await?;
                    print!("{}", output::study(&study, format)?);
                }
                StudyCommand::Stop { name } => {
                    let study = client.stop_study(&name).await?;
                    println!(
                        "stopped study {} ({} trials stopped)",
                        study.name,
                        study.counts.unwrap_or_default().stopped
                    );
                }
                StudyCommand::Delete { name, force } => {
                    let deleted = client.delete_study(&name, force).await?;
                    let trials = deleted.study.and_then(|s| s.counts).map_or(0, |c| {
                        c.pending + c.running + c.completed + c.pruned + c.failed + c.stopped + c.paused
                    });
                    println!(
                        "deleted study {name} ({trials} trials, {} blobs nothing else referred to)",
                        deleted.blobs_deleted
                    );
                }
            }
            Ok(())
        }
        Command::Trials(args) => {
            let mut client = cli.global.client().await?;
            if args.follow {
                return follow(&mut client, &args.name, args.format).await;
            }
            let study = client.get_study(&args.name).await?;
            let trials = client.list_trials(&args.name).await?;
            // Configurations only mean something with seed repeats.
            let configurations = if study.repeats > 1 || study.folds > 1 {
                client.list_configurations(&args.name).await?
            } else {
                Vec::new()
            };
            print!("{}", output::trials(&trials, &configurations, args.format)?);
            Ok(())
        }
        Command::Download(args) => {
            let mut client = cli.global.client().await?;
            println!("{}", download::run(&mut client, &args.study, args.trial, &args.dir).await?);
            Ok(())
        }
        Command::Importance(args) => {
            let mut client = cli.global.client().await?;
            let study = client.get_study(&args.name).await?;
            let spec = crate::spec::parse_stored_study(&study.spec_toml)
                .map_err(|e| anyhow::anyhow!("the study's stored text does not parse here: {e}"))?;
            let trials = client.list_trials(&args.name).await?;
            let completed: Vec<(crate::params::Params, f64)> = trials
                .iter()
                .filter(|t| t.state == pb::TrialState::Completed as i32)
                .filter_map(|t| Some((output::params_of(t), t.value?)))
                .collect();
            let list = crate::importance::importances(&spec, completed.iter().map(|(p, v)| (p, *v)), args.seed)?;
            print!("{}", output::importances(&list, args.format)?);
            Ok(())
        }
        Command::Backup(args) => {
            let mut client = cli.global.client().await?;
            backup::backup(&mut client, &args).await
        }
        Command::Restore(args) => backup::restore(&args).await,
        Command::Health => {
            let tls = cli.global.connection.tls();
            let state = client::health(&cli.global.connection.coordinator, &tls).await?;
            println!("{state}");
            Ok(())
        }
        Command::Best(args) => {
            let mut client = cli.global.client().await?;
            let best = client.best_trial(&args.name).await?;
            print!("{}", output::best(&best, args.format)?);
            Ok(())
        }
    }
}

/// Shortest token `serve` accepts on an address others can reach.
pub use crate::access::MIN_TOKEN_BYTES;

async fn follow(client: &mut Client, name: &str, format: Format) -> Result<()> {
    let mut stream = client.watch(name).await?;
    let mut printer = output::FollowPrinter::new(format);
    while let Some(event) = stream.message().await.map_err(|s| client::status_error(client.url(), s))? {
        if let Some(line) = printer.event(&event)? {
            println!("{line}");
        }
        if event.trial.is_none() && event.study_state != pb::StudyState::Running as i32 {
            break;
        }
    }
    Ok(())
}
