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
use sqlx::{QueryBuilder, Row, Sqlite, SqlitePool};
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tracing::{error, warn};

use crate::model::{Metrics, PastEpoch, StudyRecord, StudyState, Trial, TrialState, WorkerRecord};
use crate::ops::{Snapshot, WriteOp};

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

    /// Starts the group-commit writer; committed trial changes are published on `events`.
    pub fn spawn_writer(self, events: broadcast::Sender<CommittedChange>) -> Writer {
        let (tx, rx) = mpsc::unbounded_channel();
        let (status, _) = watch::channel(None);
        let task = tokio::spawn(write_loop(self.pool, rx, events, status.clone()));
        Writer { tx, task: std::sync::Arc::new(std::sync::Mutex::new(Some(task))), status }
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

/// A batch of ops and who waits for its commit.
struct Batch {
    ops: Vec<WriteOp>,
    done: Option<oneshot::Sender<()>>,
    /// Commit, then close the database (and its exclusive lock) before answering.
    shutdown: bool,
    /// After committing everything queued before it (and nothing after), copy the database.
    backup: Option<BackupJob>,
}

/// A consistent copy of the database the writer takes between two commits.
struct BackupJob {
    /// Where the copy goes (must not exist); chosen by the coordinator, never by a client.
    path: std::path::PathBuf,
    /// Refused when the copy would need more bytes than this (the data disk's room).
    max_bytes: u64,
    /// The copy's size, or why it could not be taken.
    done: oneshot::Sender<Result<u64, String>>,
}

/// Handle to the group-commit writer.
#[derive(Clone)]
pub struct Writer {
    tx: mpsc::UnboundedSender<Batch>,
    task: std::sync::Arc<std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>>,
    /// Why the last commit failed, while it keeps failing (None once one succeeds): health
    /// turns NOT_SERVING and state-changing calls answer UNAVAILABLE instead of waiting.
    status: watch::Sender<Option<String>>,
}

/// Resolves when a submitted batch is committed.
pub struct Commit(Option<oneshot::Receiver<()>>);

impl Commit {
    /// Waits for the commit.
    pub async fn wait(self) -> Result<(), StoreError> {
        match self.0 {
            None => Ok(()),
            Some(rx) => rx.await.map_err(|_| StoreError::WriterGone),
        }
    }
}

impl Writer {
    /// Why the database cannot commit right now, if it cannot.
    pub fn failing(&self) -> Option<String> {
        self.status.borrow().clone()
    }

    /// Follows [`Writer::failing`] as it changes.
    pub fn watch_failing(&self) -> watch::Receiver<Option<String>> {
        self.status.subscribe()
    }

    /// Waits for `commit`, or answers why not as soon as the database is failing to commit
    /// (the batch stays queued and is committed once the database recovers).
    pub async fn wait(&self, commit: Commit) -> Result<(), StoreError> {
        let mut failing = self.status.subscribe();
        tokio::select! {
            done = commit.wait() => done,
            Ok(why) = failing.wait_for(Option::is_some) => Err(StoreError::Unwritable(why.clone().unwrap_or_default())),
        }
    }

    /// Queues ops without waiting (call under the registry lock to keep the order of changes).
    pub fn submit(&self, ops: Vec<WriteOp>) -> Commit {
        if ops.is_empty() {
            return Commit(None);
        }
        let (done, rx) = oneshot::channel();
        if self.tx.send(Batch { ops, done: Some(done), shutdown: false, backup: None }).is_err() {
            let (_, rx) = oneshot::channel();
            return Commit(Some(rx));
        }
        Commit(Some(rx))
    }

    /// Copies the database into `path` once everything submitted before this call is committed
    /// and before anything submitted after it is (call under the registry lock: the copy is
    /// then exactly the registry's state at that moment). Resolves to the copy's size.
    pub async fn backup(&self, path: std::path::PathBuf, max_bytes: u64) -> Result<u64, StoreError> {
        let (done, rx) = oneshot::channel();
        let job = BackupJob { path, max_bytes, done };
        self.tx
            .send(Batch { ops: Vec::new(), done: None, shutdown: false, backup: Some(job) })
            .map_err(|_| StoreError::WriterGone)?;
        rx.await.map_err(|_| StoreError::WriterGone)?.map_err(StoreError::Backup)
    }

    /// Flushes everything queued, closes the database (releasing its lock) and stops the
    /// writer (graceful shutdown).
    pub async fn close(&self) {
        let (done, rx) = oneshot::channel();
        let _ = self.tx.send(Batch { ops: Vec::new(), done: Some(done), shutdown: true, backup: None });
        let _ = rx.await;
        let task = self.task.lock().ok().and_then(|mut t| t.take());
        if let Some(task) = task {
            task.abort();
        }
    }
}

/// Most ops committed in one transaction (bounds latency under heavy load).
const MAX_OPS_PER_COMMIT: usize = 8192;

async fn write_loop(
    pool: SqlitePool,
    mut rx: mpsc::UnboundedReceiver<Batch>,
    events: broadcast::Sender<CommittedChange>,
    status: watch::Sender<Option<String>>,
) {
    while let Some(first) = rx.recv().await {
        let mut batches = vec![first];
        let mut count = batches[0].ops.len();
        // A backup copies what was queued before it, so nothing queued after it joins this commit.
        while count < MAX_OPS_PER_COMMIT && batches.last().is_some_and(|b| b.backup.is_none()) {
            match rx.try_recv() {
                Ok(b) => {
                    count += b.ops.len();
                    batches.push(b);
                }
                Err(_) => break,
            }
        }
        let ops: Vec<&WriteOp> = batches.iter().flat_map(|b| b.ops.iter()).collect();
        let mut delay = Duration::from_millis(50);
        loop {
            match commit(&pool, &ops).await {
                Ok(()) => {
                    if status.borrow().is_some() {
                        tracing::info!("database writes succeed again");
                        status.send_replace(None);
                    }
                    break;
                }
                Err(e) => {
                    // Nothing is acknowledged until it is durable: the batch is retried until it
                    // commits, while callers are told at once that the database cannot write.
                    error!("database write failed, retrying in {delay:?}: {e}");
                    let why = crate::text::bounded(&e.to_string().replace('\n', " "));
                    status.send_if_modified(|s| {
                        let changed = s.as_deref() != Some(why.as_str());
                        *s = Some(why.clone());
                        changed
                    });
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        }
        let watched = events.receiver_count() > 0;
        for op in ops.iter().filter(|_| watched) {
            match op {
                WriteOp::Trial { trial, study_state } => {
                    let _ = events.send(CommittedChange::Trial { trial: trial.clone(), study_state: *study_state });
                }
                WriteOp::Study(record) => {
                    let _ = events.send(CommittedChange::Study(record.clone()));
                }
                _ => {}
            }
        }
        let shutdown = batches.iter().any(|b| b.shutdown);
        let mut backups = Vec::new();
        for b in batches {
            if let Some(done) = b.done {
                let _ = done.send(());
            }
            backups.extend(b.backup);
        }
        for job in backups {
            let result = copy_database(&pool, &job.path, job.max_bytes).await;
            let _ = job.done.send(result);
        }
        if shutdown {
            pool.close().await;
        }
        if shutdown {
            return;
        }
    }
}

/// `VACUUM INTO path`: a compact, consistent copy taken on the writer's own connection (which
/// holds the database's exclusive lock, so no other connection could read it).
async fn copy_database(pool: &SqlitePool, path: &Path, max_bytes: u64) -> Result<u64, String> {
    let pragma = |name: &'static str| async move {
        sqlx::query_scalar::<_, i64>(&format!("PRAGMA {name}")).fetch_one(pool).await.map_err(|e| e.to_string())
    };
    let used = (pragma("page_count").await? - pragma("freelist_count").await?).max(0) as u64;
    let estimate = used * pragma("page_size").await?.max(0) as u64;
    if estimate > max_bytes {
        return Err(format!(
            "the copy needs about {} but the data disk can spare {}; free space on it first",
            bertsweep_transfer::human_bytes(estimate),
            bertsweep_transfer::human_bytes(max_bytes)
        ));
    }
    let target = path.to_str().ok_or_else(|| format!("{} is not UTF-8", path.display()))?;
    let started = std::time::Instant::now();
    sqlx::query("VACUUM INTO ?").bind(target).execute(pool).await.map_err(|e| e.to_string())?;
    let size = std::fs::metadata(path).map_err(|e| e.to_string())?.len();
    tracing::info!(bytes = size, seconds = started.elapsed().as_secs_f64(), "database copied for a backup");
    Ok(size)
}

/// Rows per multi-row statement (19 columns × 1000 stays under SQLite's variable limit, 32,766).
const CHUNK: usize = 1000;

async fn commit(pool: &SqlitePool, ops: &[&WriteOp]) -> Result<(), sqlx::Error> {
    // Later ops on the same row win: keep the last version of each row, in first-seen order.
    let mut studies: Vec<&StudyRecord> = Vec::new();
    let mut trials: Vec<&Trial> = Vec::new();
    let mut trial_pos: HashMap<u64, usize> = HashMap::new();
    let mut epochs: Vec<(u64, u64, u32, u32, &Metrics)> = Vec::new();
    let mut leases: Vec<(u64, i64)> = Vec::new();
    let mut workers: Vec<&WorkerRecord> = Vec::new();
    let mut forgotten: Vec<&str> = Vec::new();
    // Studies deleted in this commit: their rows go first, and nothing queued for them (the
    // stop that `--force` ends them with, a late epoch) is written back afterwards.
    let mut deleted_studies: Vec<u64> = Vec::new();
    let mut deleted_trials: std::collections::HashSet<u64> = std::collections::HashSet::new();
    for op in ops {
        if let WriteOp::DeleteStudy { study_id, trial_ids } = op {
            deleted_studies.push(*study_id);
            deleted_trials.extend(trial_ids.iter().copied());
        }
    }
    let gone = |study_id: u64| deleted_studies.contains(&study_id);
    for op in ops {
        match op {
            WriteOp::DeleteStudy { .. } => {}
            WriteOp::Study(s) if gone(s.id) => {}
            WriteOp::Trial { trial, .. } if gone(trial.study_id) => {}
            WriteOp::Epoch { trial_id, .. } | WriteOp::Lease { trial_id, .. } if deleted_trials.contains(trial_id) => {}
            WriteOp::Study(s) => studies.push(s),
            WriteOp::Trial { trial, .. } => match trial_pos.get(&trial.id) {
                Some(&i) => trials[i] = trial,
                None => {
                    trial_pos.insert(trial.id, trials.len());
                    trials.push(trial);
                }
            },
            WriteOp::Epoch { trial_id, lease_token, attempt, epoch, metrics } => {
                epochs.push((*trial_id, *lease_token, *attempt, *epoch, metrics))
            }
            WriteOp::Lease { trial_id, expires_ms } => leases.push((*trial_id, *expires_ms)),
            WriteOp::Worker(w) => workers.push(w),
            WriteOp::ForgetWorker(id) => forgotten.push(id.as_str()),
        }
    }
    if studies.is_empty()
        && trials.is_empty()
        && epochs.is_empty()
        && leases.is_empty()
        && workers.is_empty()
        && forgotten.is_empty()
        && deleted_studies.is_empty()
    {
        return Ok(());
    }
    let started = std::time::Instant::now();
    let mut tx = pool.begin().await?;
    for id in &deleted_studies {
        let id = *id as i64;
        sqlx::query("DELETE FROM trial_epochs WHERE trial_id IN (SELECT id FROM trials WHERE study_id = ?)")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM trials WHERE study_id = ?").bind(id).execute(&mut *tx).await?;
        sqlx::query("DELETE FROM studies WHERE id = ?").bind(id).execute(&mut *tx).await?;
    }
    for s in &studies {
        sqlx::query(
            "INSERT INTO studies (id, name, state, spec_toml, reason, created_ms, finished_ms) VALUES (?, ?, ?, ?, ?, ?, ?) \
             ON CONFLICT(id) DO UPDATE SET state = excluded.state, reason = excluded.reason, finished_ms = excluded.finished_ms",
        )
        .bind(s.id as i64)
        .bind(&s.name)
        .bind(s.state.as_str())
        .bind(&s.spec_toml)
        .bind(&s.reason)
        .bind(s.created_ms)
        .bind(s.finished_ms)
        .execute(&mut *tx)
        .await?;
    }
    for w in &workers {
        sqlx::query(
            "INSERT OR REPLACE INTO workers (id, hostname, devices, version, registered_ms) VALUES (?, ?, ?, ?, ?)",
        )
        .bind(&w.id)
        .bind(&w.hostname)
        .bind(w.devices.join(","))
        .bind(&w.version)
        .bind(w.registered_ms)
        .execute(&mut *tx)
        .await?;
    }
    for id in &forgotten {
        sqlx::query("DELETE FROM workers WHERE id = ?").bind(id).execute(&mut *tx).await?;
    }
    for chunk in trials.chunks(CHUNK) {
        let mut qb: QueryBuilder<'_, Sqlite> = QueryBuilder::new(
            "INSERT INTO trials (id, study_id, number, state, params_json, value, metrics_json, attempt, worker_id, \
             lease_token, lease_expires_ms, artifact, checkpoint, checkpoint_epoch, peak_device_memory_bytes, error, \
             created_ms, started_ms, finished_ms, evaluation, objective_ci_low, objective_ci_high, test_metrics_json) ",
        );
        qb.push_values(chunk, |mut b, t| {
            b.push_bind(t.id as i64)
                .push_bind(t.study_id as i64)
                .push_bind(t.number as i64)
                .push_bind(t.state.as_str())
                .push_bind(serde_json::to_string(&t.params).unwrap_or_default())
                .push_bind(t.value)
                .push_bind(serde_json::to_string(&t.metrics).unwrap_or_default())
                .push_bind(t.attempt as i64)
                .push_bind(t.worker_id.clone())
                .push_bind(t.lease_token as i64)
                .push_bind(t.lease_expires_ms)
                .push_bind(t.artifact.clone())
                .push_bind(t.checkpoint.clone())
                .push_bind(t.checkpoint_epoch as i64)
                .push_bind(t.peak_device_memory_bytes.min(i64::MAX as u64) as i64)
                .push_bind(t.error.clone())
                .push_bind(t.created_ms)
                .push_bind(t.started_ms)
                .push_bind(t.finished_ms)
                .push_bind(t.evaluation.as_deref().map(crate::evaluation::encode))
                .push_bind(t.evaluation.as_ref().and_then(|e| e.interval).map(|i| i.low))
                .push_bind(t.evaluation.as_ref().and_then(|e| e.interval).map(|i| i.high))
                .push_bind(serde_json::to_string(&t.test_metrics).unwrap_or_default());
        });
        qb.push(
            " ON CONFLICT(id) DO UPDATE SET state = excluded.state, value = excluded.value, metrics_json = excluded.metrics_json, \
             attempt = excluded.attempt, worker_id = excluded.worker_id, lease_token = excluded.lease_token, \
             lease_expires_ms = excluded.lease_expires_ms, artifact = excluded.artifact, checkpoint = excluded.checkpoint, \
             checkpoint_epoch = excluded.checkpoint_epoch, \
             peak_device_memory_bytes = excluded.peak_device_memory_bytes, error = excluded.error, \
             started_ms = excluded.started_ms, finished_ms = excluded.finished_ms, \
             evaluation = excluded.evaluation, objective_ci_low = excluded.objective_ci_low, \
             objective_ci_high = excluded.objective_ci_high, test_metrics_json = excluded.test_metrics_json",
        );
        qb.build().execute(&mut *tx).await?;
    }
    for chunk in epochs.chunks(CHUNK) {
        let mut qb: QueryBuilder<'_, Sqlite> = QueryBuilder::new(
            "INSERT OR REPLACE INTO trial_epochs (trial_id, lease_token, attempt, epoch, metrics_json) ",
        );
        qb.push_values(chunk, |mut b, (trial_id, lease_token, attempt, epoch, metrics)| {
            b.push_bind(*trial_id as i64)
                .push_bind(*lease_token as i64)
                .push_bind(*attempt as i64)
                .push_bind(*epoch as i64)
                .push_bind(serde_json::to_string(metrics).unwrap_or_default());
        });
        qb.build().execute(&mut *tx).await?;
    }
    for (trial_id, expires_ms) in &leases {
        // Leases only move forward, so MAX keeps a heartbeat that raced a row rewrite.
        sqlx::query("UPDATE trials SET lease_expires_ms = MAX(lease_expires_ms, ?) WHERE id = ?")
            .bind(expires_ms)
            .bind(*trial_id as i64)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    crate::telemetry::db_commit(started.elapsed().as_secs_f64());
    Ok(())
}

/// Logs a lagging watcher (it will resynchronise from a snapshot).
pub fn warn_lagged(skipped: u64) {
    warn!("a WatchStudy stream fell {skipped} events behind; sending it a fresh snapshot");
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Tokens handed out whose commits never reached the disk (a power loss under
    /// `synchronous = NORMAL`) are still never issued again: each start reserves a new range
    /// durably, above the last one.
    #[tokio::test]
    async fn every_start_issues_tokens_above_every_earlier_reservation() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let store = Store::open(&url).await.unwrap();
        let first = store.load().await.unwrap().lease_tokens_from;
        // The run issues tokens first.. first+1000 and none of them is ever committed.
        store.pool.close().await;
        drop(store);
        let store = Store::open(&url).await.unwrap();
        let second = store.load().await.unwrap().lease_tokens_from;
        assert!(second >= first + LEASE_TOKENS_PER_RUN, "{first} then {second}");
        let reserved: i64 =
            sqlx::query_scalar("SELECT reserved_below FROM lease_token_ranges").fetch_one(&store.pool).await.unwrap();
        assert_eq!(reserved as u64, second + LEASE_TOKENS_PER_RUN);
        let synchronous: i64 = sqlx::query_scalar("PRAGMA synchronous").fetch_one(&store.pool).await.unwrap();
        assert_eq!(synchronous, 1, "back to NORMAL for the writer");
    }

    /// A trial's peak device memory is written with its row and read back at start-up.
    #[tokio::test]
    async fn a_trials_peak_memory_and_evaluation_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let store = Store::open(&url).await.unwrap();
        store.load().await.unwrap();
        let writer = store.spawn_writer(broadcast::channel(4).0);
        let study = StudyRecord {
            id: 1,
            name: "s".into(),
            state: StudyState::Running,
            spec_toml: String::new(),
            reason: String::new(),
            created_ms: 0,
            finished_ms: None,
        };
        let mut trial = crate::model::test_trial(0, Default::default(), TrialState::Running);
        trial.peak_device_memory_bytes = 3_000_000_000;
        let sent = bertsweep_proto::v1::DevPredictions {
            epoch: 2,
            classes: 2,
            labels: vec![0, 1, 1],
            probabilities: vec![0.75, 0.25, 0.5, 0.5, 0.125, 0.875],
            class_weights: vec![1.0, 2.0],
            class_names: vec!["neg".into(), "pos".into()],
        };
        let evaluation = std::sync::Arc::new(crate::evaluation::evaluate(sent, "eval_accuracy", 5).unwrap());
        trial.evaluation = Some(evaluation.clone());
        let ops =
            vec![WriteOp::Study(study), WriteOp::Trial { trial: Box::new(trial), study_state: StudyState::Running }];
        writer.wait(writer.submit(ops)).await.unwrap();
        writer.close().await;

        let loaded = Store::open(&url).await.unwrap().load().await.unwrap();
        assert_eq!(loaded.trials.len(), 1);
        assert_eq!(loaded.trials[0].peak_device_memory_bytes, 3_000_000_000);
        assert_eq!(loaded.trials[0].evaluation.as_deref(), Some(&*evaluation), "predictions and interval");
    }
}
