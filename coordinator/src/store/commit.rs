//! One transaction for a round of queued ops: the last version of each row wins, a deleted
//! study's rows go first, and rows are written with multi-row statements.

use std::collections::HashMap;

use sqlx::{QueryBuilder, Sqlite, SqlitePool};

use crate::model::{Metrics, StudyRecord, Trial, WorkerRecord};
use crate::ops::WriteOp;

/// Rows per multi-row statement (19 columns × 1000 stays under SQLite's variable limit, 32,766).
const CHUNK: usize = 1000;

pub(super) async fn commit(pool: &SqlitePool, ops: &[&WriteOp]) -> Result<(), sqlx::Error> {
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
