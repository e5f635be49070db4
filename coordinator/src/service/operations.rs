//! Operating the coordinator: deleting a study with what only it referred to, and online
//! backups (a consistent database copy plus the blobs it refers to, pinned while the caller
//! downloads them).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bertsweep_proto::v1 as pb;
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use super::convert::study_to_proto;
use super::transfer;
use super::Shared;

/// The backup stream's message type.
pub type BackupStream =
    std::pin::Pin<Box<dyn futures::Stream<Item = Result<pb::BackupChunk, Status>> + Send + 'static>>;

/// Longest a finished backup keeps its blobs pinned while the caller downloads them.
pub const BACKUP_PIN: Duration = Duration::from_secs(6 * 3600);

/// Database bytes per backup message.
const CHUNK_BYTES: usize = 1 << 20;

/// Blob entries per backup message (each about 80 bytes: far below the message limit).
const BLOBS_PER_MESSAGE: usize = 10_000;

/// Where backups are copied before they are streamed: beside the blobs, never a path a client
/// names. Emptied at start-up (no backup survives a restart).
pub fn backup_dir(shared: &Shared) -> PathBuf {
    shared.blobs.dir().root().join("backups")
}

/// Deletes the copies an earlier run left behind (it stopped mid-backup).
pub fn clear_backups(root: &std::path::Path) -> std::io::Result<()> {
    let dir = root.join("backups");
    match std::fs::remove_dir_all(&dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    std::fs::create_dir_all(&dir)
}

/// `DeleteStudy`: commits the deletion, then deletes the blobs and checkpoints nothing else
/// refers to.
pub async fn delete_study(shared: &Shared, name: &str, force: bool) -> Result<pb::DeleteStudyResponse, Status> {
    let deleted = shared.apply(|reg, now| reg.delete_study(name, force, now)).await?;
    // Blob checkpoints are among `deleted.blobs`; the others live in object storage or on a
    // shared path.
    let elsewhere: Vec<String> =
        deleted.checkpoints.into_iter().filter(|c| crate::registry::blob_of(c).is_none()).collect();
    // Object-store checkpoints, as far as this coordinator's credentials reach.
    transfer::delete_checkpoints(shared, elsewhere).await;
    let removed = shared.blobs.collect_only(|| shared.lock().blob_roots(), deleted.blobs).await;
    tracing::info!(study = %name, blobs = removed, "deleted the study's blobs nothing else refers to");
    Ok(pb::DeleteStudyResponse {
        study: Some(study_to_proto(&deleted.summary)),
        blobs_deleted: u32::try_from(removed).unwrap_or(u32::MAX),
    })
}

/// `Backup`: one at a time. Under the registry lock the blob roots are read and pinned and the
/// copy is queued behind every change made so far, so the copy and its blob list describe the
/// same moment; the copy is streamed, then the list, then the stream stays open (blobs pinned)
/// until the caller hangs up or [`BACKUP_PIN`] passes.
pub async fn backup(shared: &Arc<Shared>) -> Result<BackupStream, Status> {
    let permit = shared.backups.clone().try_acquire_owned().map_err(|_| {
        Status::resource_exhausted("another backup is running on this coordinator; wait for it to finish")
    })?;
    if let Some(why) = shared.writer.failing() {
        return Err(Status::unavailable(crate::store::StoreError::Unwritable(why).to_string()));
    }
    let dir = backup_dir(shared);
    std::fs::create_dir_all(&dir).map_err(|e| Status::unavailable(format!("cannot use {}: {e}", dir.display())))?;
    let path = dir.join(format!("backup-{}.db", uuid::Uuid::new_v4()));
    let room = match shared.blobs.disk_space() {
        Ok((free, _)) => free.saturating_sub(shared.blobs.min_free_bytes()),
        Err(_) => u64::MAX,
    };
    let (roots, pin, copied) = {
        let registry = shared.lock();
        let roots = registry.blob_roots();
        let pin = shared.blobs.pin(roots.clone());
        let copied = shared.writer.backup(path.clone(), room);
        drop(registry);
        (roots, pin, copied)
    };
    let removal = RemoveOnDrop(path.clone());
    let size = copied.await.map_err(|e| Status::unavailable(e.to_string()))?;
    let file = tokio::fs::File::open(&path).await.map_err(|e| Status::unavailable(format!("reading the copy: {e}")))?;
    // The open file keeps the bytes; nothing is left behind if the stream is abandoned.
    drop(removal);
    let listed = {
        let (shared, roots) = (shared.clone(), roots.clone());
        tokio::task::spawn_blocking(move || shared.blobs.referenced(&roots))
            .await
            .map_err(|e| Status::internal(format!("listing the backup's blobs: {e}")))?
    };
    if !listed.missing.is_empty() {
        tracing::warn!(missing = listed.missing.len(), "the backup refers to blobs missing on this coordinator");
    }
    let (tx, rx) = mpsc::channel(4);
    let shared = shared.clone();
    tokio::spawn(async move {
        let _permit = permit;
        if send_backup(file, size, listed, &tx).await.is_ok() {
            tokio::select! {
                _ = tx.closed() => {}
                _ = tokio::time::sleep(BACKUP_PIN) => {}
            }
        }
        drop(pin);
        // What the pin alone kept (a study deleted, a model evicted meanwhile) goes now.
        shared.blobs.collect_only(|| shared.lock().blob_roots(), roots).await;
        tracing::info!("backup finished; its blobs are no longer pinned");
    });
    Ok(Box::pin(ReceiverStream::new(rx)))
}

/// Streams the copy (hashing it), then the blob list; Err once the caller is gone.
async fn send_backup(
    mut file: tokio::fs::File,
    size: u64,
    listed: crate::blobs::Referenced,
    tx: &mpsc::Sender<Result<pb::BackupChunk, Status>>,
) -> Result<(), ()> {
    let mut hasher = bertsweep_transfer::digest::Hasher::default();
    let mut first = true;
    loop {
        let mut buf = vec![0u8; CHUNK_BYTES];
        let n = match file.read(&mut buf).await {
            Ok(n) => n,
            Err(e) => {
                let _ = tx.send(Err(Status::unavailable(format!("reading the database copy: {e}")))).await;
                return Err(());
            }
        };
        if n == 0 && !first {
            break;
        }
        buf.truncate(n);
        hasher.update(&buf);
        let chunk = pb::BackupChunk { data: buf, database_size: if first { size } else { 0 }, ..Default::default() };
        first = false;
        tx.send(Ok(chunk)).await.map_err(|_| ())?;
        if n == 0 {
            break;
        }
    }
    let (digest, sent) = hasher.finish();
    if sent != size {
        let _ = tx
            .send(Err(Status::internal(format!("the copy changed while it was sent ({sent} of {size} bytes)"))))
            .await;
        return Err(());
    }
    let blobs: Vec<pb::BackupBlob> =
        listed.present.iter().map(|(d, size)| pb::BackupBlob { digest: d.to_string(), size: *size }).collect();
    let mut batches: Vec<Vec<pb::BackupBlob>> = blobs.chunks(BLOBS_PER_MESSAGE).map(<[_]>::to_vec).collect();
    let last = batches.pop().unwrap_or_default();
    for batch in batches {
        tx.send(Ok(pb::BackupChunk { blobs: batch, ..Default::default() })).await.map_err(|_| ())?;
    }
    let missing = listed.missing.iter().map(ToString::to_string).collect();
    let done =
        pb::BackupChunk { blobs: last, database_sha256: digest.to_string(), done: true, missing, ..Default::default() };
    tx.send(Ok(done)).await.map_err(|_| ())
}

/// Deletes a file when dropped (a copy that failed half-way, or once it is open for reading).
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
