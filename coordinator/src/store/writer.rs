//! The group-commit writer: one task drains every queued batch into one transaction, answers
//! each batch once it is durable, publishes committed changes, and takes backup copies between
//! two commits.

use std::path::Path;
use std::time::Duration;

use sqlx::SqlitePool;
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tracing::error;

use super::commit::commit;
use super::{CommittedChange, Store, StoreError};
use crate::ops::WriteOp;

impl Store {
    /// Starts the group-commit writer; committed trial changes are published on `events`.
    pub fn spawn_writer(self, events: broadcast::Sender<CommittedChange>) -> Writer {
        let (tx, rx) = mpsc::unbounded_channel();
        let (status, _) = watch::channel(None);
        let task = tokio::spawn(write_loop(self.pool, rx, events, status.clone()));
        Writer { tx, task: std::sync::Arc::new(std::sync::Mutex::new(Some(task))), status }
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
