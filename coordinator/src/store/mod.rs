//! SQLite persistence through sqlx: migrations, the start-up load, and the group-commit writer.
//!
//! The coordinator is the only process that opens the file (it holds SQLite's exclusive lock,
//! so a second `bertsweep serve` on the same file fails fast). The database runs in WAL mode
//! with `synchronous = NORMAL`: a committed transaction survives a crash of the process
//! (SIGKILL); only a power loss could drop the last commits.
//!
//! Writes go through one [`Writer`] task that drains every queued batch into a single
//! transaction (group commit) and answers each batch once the commit is done. Many concurrent
//! workers thus cost one fsync-free commit per round instead of one each.

use std::collections::HashMap;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteLockingMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};
use tracing::warn;

use crate::model::{Metrics, PastEpoch, StudyRecord, StudyState, Trial, TrialState, WorkerRecord};
use crate::ops::Snapshot;

mod commit;
#[cfg(test)]
mod tests;
mod writer;

pub use writer::{Commit, Writer};

/// Why the database could not be opened, read or written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The file could not be opened or created.
    #[error("cannot open database {url}: {source}")]
    Open {
        /// The `--db` URL.
        url: String,
        /// sqlx's reason.
        source: sqlx::Error,
    },
    /// Another process holds SQLite's exclusive lock: one coordinator per database.
    #[error("database {url} is in use by another process (another `bertsweep serve`?); stop it or use another --db")]
    Locked {
        /// The `--db` URL.
        url: String,
    },
    /// A migration in `migrations/` failed (or the database is newer than this binary).
    #[error("cannot migrate database {url}: {source}")]
    Migrate {
        /// The `--db` URL.
        url: String,
        /// sqlx's reason.
        source: sqlx::migrate::MigrateError,
    },
    /// A query failed.
    #[error("{0}")]
    Sql(#[from] sqlx::Error),
    /// Commits are failing (a full disk, a lost file): nothing new is accepted until they
    /// succeed again.
    #[error("the coordinator cannot write its database ({0}); it retries by itself, so retry the call later")]
    Unwritable(String),
    /// A row the start-up load cannot turn back into a domain value.
    #[error("corrupt row in {table}: {message}")]
    Corrupt {
        /// The table it came from.
        table: &'static str,
        /// What is wrong with it.
        message: String,
    },
    /// A backup copy could not be taken (the disk has no room, the copy failed).
    #[error("the database could not be copied: {0}")]
    Backup(String),
    /// The writer task ended (a commit failed, or shutdown began), so nothing more is durable.
    #[error("the storage writer has shut down")]
    WriterGone,
}

/// A change that has been committed, for WatchStudy streams.
#[derive(Debug, Clone)]
pub enum CommittedChange {
    /// A trial changed.
    Trial {
        /// The trial as committed.
        trial: Box<Trial>,
        /// Its study's state at that moment (a watcher ends after a terminal one).
        study_state: StudyState,
    },
    /// A study changed state.
    Study(StudyRecord),
}

/// The opened database.
pub struct Store {
    pool: SqlitePool,
}

impl Store {
    /// Opens (creating if needed) and migrates the database at `url` (`sqlite://path` or a path).
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        let normalized = if url.starts_with("sqlite:") { url.to_string() } else { format!("sqlite://{url}") };
        let options = SqliteConnectOptions::from_str(&normalized)
            .map_err(|source| StoreError::Open { url: url.into(), source })?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .locking_mode(SqliteLockingMode::Exclusive)
            .busy_timeout(Duration::from_secs(2))
            .foreign_keys(true);
        if let Some(parent) = Path::new(options.get_filename()).parent() {
            if !parent.as_os_str().is_empty() && !parent.exists() {
                let e = std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    format!("directory {} does not exist", parent.display()),
                );
                return Err(StoreError::Open { url: url.into(), source: sqlx::Error::Io(e) });
            }
        }
        // One connection: the registry in memory serves reads, so the database only sees the
        // start-up load and the writer.
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .connect_with(options)
            .await
            .map_err(|source| classify_open_error(url, source))?;
        // Take the exclusive lock now, not at the first write.
        sqlx::query("BEGIN IMMEDIATE; COMMIT;")
            .execute(&pool)
            .await
            .map_err(|source| classify_open_error(url, source))?;
        sqlx::migrate!("./migrations")
            .run(&pool)
            .await
            .map_err(|source| StoreError::Migrate { url: url.into(), source })?;
        Ok(Store { pool })
    }

    /// Closes the database (and its lock) without starting a writer (`bertsweep restore`).
    pub async fn close(self) {
        self.pool.close().await;
    }

    /// Reads every study, trial (with epochs) and worker.
    pub async fn load(&self) -> Result<Snapshot, StoreError> {
        let studies =
            sqlx::query("SELECT id, name, state, spec_toml, reason, created_ms, finished_ms FROM studies ORDER BY id")
                .fetch_all(&self.pool)
                .await?
                .into_iter()
                .map(|r| {
                    Ok(StudyRecord {
                        id: r.get::<i64, _>("id") as u64,
                        name: r.get("name"),
                        state: r.get::<String, _>("state").parse().map_err(|m| corrupt("studies", m))?,
                        spec_toml: r.get("spec_toml"),
                        reason: r.get("reason"),
                        created_ms: r.get("created_ms"),
                        finished_ms: r.get("finished_ms"),
                    })
                })
                .collect::<Result<Vec<_>, StoreError>>()?;

        let mut epochs: HashMap<u64, Vec<StoredEpoch>> = HashMap::new();
        for r in sqlx::query(
            "SELECT trial_id, lease_token, attempt, epoch, metrics_json FROM trial_epochs ORDER BY trial_id, lease_token, epoch",
        )
        .fetch_all(&self.pool)
        .await?
        {
            let metrics: Metrics = serde_json::from_str(&r.get::<String, _>("metrics_json"))
                .map_err(|e| corrupt("trial_epochs", e.to_string()))?;
            epochs.entry(r.get::<i64, _>("trial_id") as u64).or_default().push(StoredEpoch {
                lease_token: r.get::<i64, _>("lease_token") as u64,
                attempt: r.get::<i64, _>("attempt") as u32,
                epoch: r.get::<i64, _>("epoch") as u32,
                metrics,
            });
        }

        let trials = sqlx::query(
            "SELECT id, study_id, number, state, params_json, value, metrics_json, attempt, worker_id, lease_token, \
             lease_expires_ms, artifact, checkpoint, checkpoint_epoch, peak_device_memory_bytes, error, created_ms, \
             started_ms, finished_ms, evaluation, objective_ci_low, objective_ci_high, test_metrics_json FROM trials \
             ORDER BY study_id, number",
        )
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .map(|r| {
            let id = r.get::<i64, _>("id") as u64;
            let mut trial = Trial {
                id,
                study_id: r.get::<i64, _>("study_id") as u64,
                study: String::new(),
                number: r.get::<i64, _>("number") as u32,
                state: r.get::<String, _>("state").parse::<TrialState>().map_err(|m| corrupt("trials", m))?,
                params: serde_json::from_str(&r.get::<String, _>("params_json"))
                    .map_err(|e| corrupt("trials", e.to_string()))?,
                value: r.get("value"),
                metrics: serde_json::from_str(&r.get::<String, _>("metrics_json"))
                    .map_err(|e| corrupt("trials", e.to_string()))?,
                intermediate: Default::default(),
                earlier_attempts: Vec::new(),
                attempt: r.get::<i64, _>("attempt") as u32,
                worker_id: r.get("worker_id"),
                lease_token: r.get::<i64, _>("lease_token") as u64,
                lease_expires_ms: r.get("lease_expires_ms"),
                artifact: r.get("artifact"),
                checkpoint: r.get("checkpoint"),
                checkpoint_epoch: r.get::<i64, _>("checkpoint_epoch") as u32,
                peak_device_memory_bytes: r.get::<i64, _>("peak_device_memory_bytes").max(0) as u64,
                error: r.get("error"),
                evaluation: load_evaluation(&r)?,
                test_metrics: serde_json::from_str(&r.get::<String, _>("test_metrics_json"))
                    .map_err(|e| corrupt("trials", e.to_string()))?,
                created_ms: r.get("created_ms"),
                started_ms: r.get("started_ms"),
                finished_ms: r.get("finished_ms"),
            };
            split_epochs(&mut trial, epochs.remove(&id).unwrap_or_default());
            Ok(trial)
        })
        .collect::<Result<Vec<_>, StoreError>>()?;

        let workers = sqlx::query("SELECT id, hostname, devices, version, registered_ms FROM workers")
            .fetch_all(&self.pool)
            .await?
            .into_iter()
            .map(|r| WorkerRecord {
                id: r.get("id"),
                hostname: r.get("hostname"),
                devices: r.get::<String, _>("devices").split(',').filter(|s| !s.is_empty()).map(String::from).collect(),
                version: r.get("version"),
                registered_ms: r.get("registered_ms"),
            })
            .collect();
        let lease_tokens_from = self.reserve_lease_tokens(&trials).await?;
        Ok(Snapshot { studies, trials, workers, lease_tokens_from })
    }
}

/// Lease tokens one run of the coordinator may issue; reserved durably at start-up.
pub const LEASE_TOKENS_PER_RUN: u64 = 1 << 32;

impl Store {
    /// Reserves the lease tokens this run may issue, `[from, from + LEASE_TOKENS_PER_RUN)`,
    /// above every token stored or reserved before, with a fully synchronous commit (fsync of
    /// the log), so no later crash or power loss can make a token repeat. Returns `from`.
    async fn reserve_lease_tokens(&self, trials: &[Trial]) -> Result<u64, StoreError> {
        let reserved: Option<i64> = sqlx::query_scalar("SELECT reserved_below FROM lease_token_ranges WHERE id = 1")
            .fetch_optional(&self.pool)
            .await?;
        let stored = trials.iter().map(|t| t.lease_token + 1).max().unwrap_or(1);
        let from = stored.max(reserved.unwrap_or(1).max(1) as u64);
        let below = from.checked_add(LEASE_TOKENS_PER_RUN).filter(|b| *b <= i64::MAX as u64).ok_or_else(|| {
            corrupt("lease_token_ranges", "the lease tokens are exhausted (over 2^63 issued)".to_string())
        })?;
        let mut conn = self.pool.acquire().await?;
        sqlx::query("PRAGMA synchronous = FULL").execute(&mut *conn).await?;
        let written = sqlx::query(
            "INSERT INTO lease_token_ranges (id, reserved_below) VALUES (1, ?) \
             ON CONFLICT(id) DO UPDATE SET reserved_below = excluded.reserved_below",
        )
        .bind(below as i64)
        .execute(&mut *conn)
        .await;
        sqlx::query("PRAGMA synchronous = NORMAL").execute(&mut *conn).await?;
        written?;
        Ok(from)
    }
}

/// One `trial_epochs` row.
struct StoredEpoch {
    lease_token: u64,
    attempt: u32,
    epoch: u32,
    metrics: Metrics,
}

/// The epochs of the trial's current lease are its curve; a PENDING trial has none (its last
/// lease is gone), and every other lease's epochs are earlier attempts, oldest first.
fn split_epochs(trial: &mut Trial, rows: Vec<StoredEpoch>) {
    for row in rows {
        if row.lease_token == trial.lease_token && trial.state != TrialState::Pending {
            trial.intermediate.insert(row.epoch, row.metrics);
        } else {
            trial.earlier_attempts.push(PastEpoch { attempt: row.attempt, epoch: row.epoch, metrics: row.metrics });
        }
    }
}

/// A trial row's evaluation (predictions and interval), `None` when it has none.
fn load_evaluation(
    r: &sqlx::sqlite::SqliteRow,
) -> Result<Option<std::sync::Arc<crate::model::TrialEvaluation>>, StoreError> {
    let Some(bytes) = r.get::<Option<Vec<u8>>, _>("evaluation") else {
        return Ok(None);
    };
    let interval = match (r.get::<Option<f64>, _>("objective_ci_low"), r.get::<Option<f64>, _>("objective_ci_high")) {
        (Some(low), Some(high)) => Some(bertsweep_evaluation::Interval { low, high }),
        _ => None,
    };
    let evaluation = crate::evaluation::decode(&bytes, interval).map_err(|m| corrupt("trials", m))?;
    Ok(Some(std::sync::Arc::new(evaluation)))
}

fn corrupt(table: &'static str, message: impl Into<String>) -> StoreError {
    StoreError::Corrupt { table, message: message.into() }
}

fn classify_open_error(url: &str, source: sqlx::Error) -> StoreError {
    let locked =
        matches!(&source, sqlx::Error::Database(e) if e.message().contains("locked") || e.message().contains("busy"));
    if locked {
        StoreError::Locked { url: url.into() }
    } else {
        StoreError::Open { url: url.into(), source }
    }
}

/// Logs a lagging watcher (it will resynchronise from a snapshot).
pub fn warn_lagged(skipped: u64) {
    warn!("a WatchStudy stream fell {skipped} events behind; sending it a fresh snapshot");
}
