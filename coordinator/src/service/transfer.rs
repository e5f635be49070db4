//! Blob RPCs: FindMissingBlobs, UploadBlob (client stream) and DownloadBlob (server stream),
//! plus the checks that a study's inputs and a trial's model are really here.

use std::pin::Pin;
use std::sync::Arc;

use bertsweep_proto::v1 as pb;
use bertsweep_transfer::blob_dir::WriteError;
use bertsweep_transfer::{ArtifactRef, Digest, InputRef, ManifestKind, CHUNK_BYTES};
use futures::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Status, Streaming};

use super::Shared;
use crate::blobs::Stored;
use crate::spec::StudySpec;

/// Most digests one FindMissingBlobs may ask about.
const MAX_DIGESTS: usize = 100_000;

/// The DownloadBlob stream.
pub type ChunkStream = Pin<Box<dyn Stream<Item = Result<pb::BlobChunk, Status>> + Send + 'static>>;

fn digest(field: &str, text: &str) -> Result<Digest, Status> {
    text.parse().map_err(|e| Status::invalid_argument(format!("{field}: {e}")))
}

/// Runs `check` (reading and validating manifests: CPU and disk work that grows with the
/// number of files) on a blocking thread, off the async runtime that serves heartbeats.
pub async fn off_runtime<T: Send + 'static>(
    shared: &Arc<Shared>,
    check: impl FnOnce(&Shared) -> Result<T, Status> + Send + 'static,
) -> Result<T, Status> {
    let owned = shared.clone();
    tokio::task::spawn_blocking(move || check(&owned))
        .await
        .map_err(|e| Status::internal(format!("checking blobs failed: {e}")))?
}

/// Checks a trial's reference (`check` reads manifests, so it runs off the runtime) and
/// returns it with the collection lock held shared, to be released once the registry holds the
/// reference ([`Shared::apply_referencing`]). A reference that names no blob needs neither the
/// lock nor a blocking thread: `check` runs in place.
pub async fn checked_reference<'a>(
    shared: &'a Arc<Shared>,
    reference: String,
    check: impl Fn(&Shared, &str) -> Result<(), Status> + Send + 'static,
) -> Result<(Option<tokio::sync::RwLockReadGuard<'a, ()>>, String), Status> {
    if crate::registry::blob_of(&reference).is_none() {
        check(shared, &reference)?;
        return Ok((None, reference));
    }
    let refs = shared.blobs.referencing().await;
    let reference = off_runtime(shared, move |shared| {
        check(shared, &reference)?;
        Ok(reference)
    })
    .await?;
    Ok((Some(refs), reference))
}

/// Every `blob:` input of a new study must be here, complete and of the right kind.
pub fn check_inputs(shared: &Shared, spec: &StudySpec) -> Result<(), Status> {
    let task = &spec.task;
    for input in task.inputs() {
        if let Ok(InputRef::Blob(d)) = InputRef::parse(input.reference) {
            let kind = if input.is_dir { ManifestKind::Dir } else { ManifestKind::File };
            shared.blobs.check_tree(&format!("task.{}", input.key), &d, kind).map_err(super::convert::status)?;
        }
    }
    Ok(())
}

/// A `blob:` artifact must be a complete directory here before a trial may complete with it.
/// (A repeated completion is not checked: its model may have been pushed out and deleted since.)
pub fn check_artifact(shared: &Shared, trial_id: u64, token: u64, artifact: &str) -> Result<(), Status> {
    if let Some(d) = crate::registry::blob_of(artifact) {
        if shared.lock().is_running(trial_id, token) {
            shared.blobs.check_tree("artifact", &d, ManifestKind::Dir).map_err(super::convert::status)?;
        }
    }
    Ok(())
}

/// A reported checkpoint must be a `blob:` directory complete here, an object storage URL or a
/// `worker:/` path (the registry then checks that it is the trial's own place).
pub fn check_checkpoint(shared: &Shared, trial_id: u64, token: u64, checkpoint: &str) -> Result<(), Status> {
    if checkpoint.is_empty() {
        return Ok(());
    }
    if checkpoint.len() > 4096 {
        return Err(Status::invalid_argument("checkpoint is longer than 4096 bytes"));
    }
    match ArtifactRef::parse(checkpoint) {
        Ok(ArtifactRef::Blob(d)) => {
            if shared.lock().is_running(trial_id, token) {
                shared.blobs.check_tree("checkpoint", &d, ManifestKind::Dir).map_err(super::convert::status)?;
            }
            return Ok(());
        }
        Ok(ArtifactRef::Object(_)) => return Ok(()),
        // A directory on a filesystem the workers share (`--local-checkpoints`).
        Ok(ArtifactRef::Worker(p)) if checkpoint.starts_with("worker:") && p.starts_with('/') => return Ok(()),
        _ => {}
    }
    Err(Status::invalid_argument(format!(
        "checkpoint {} is neither blob:sha256:<manifest> (uploaded here first), an s3://, gs:// or az:// URL, nor worker:/absolute/path",
        crate::text::quote(checkpoint)
    )))
}

/// Deletes checkpoints no trial needs any more (replaced, or their trial ended): blobs here
/// once nothing refers to them; objects in object storage in the background, as far as this
/// coordinator's credentials allow (the workers delete theirs too).
pub async fn delete_checkpoints(shared: &Shared, dropped: Vec<String>) {
    let blobs: Vec<Digest> = dropped.iter().filter_map(|c| crate::registry::blob_of(c)).collect();
    if !blobs.is_empty() {
        shared.blobs.collect_only(|| shared.lock().blob_roots(), blobs).await;
    }
    let objects: Vec<String> =
        dropped.into_iter().filter(|c| matches!(ArtifactRef::parse(c), Ok(ArtifactRef::Object(_)))).collect();
    if !objects.is_empty() {
        tokio::spawn(async move {
            for url in objects {
                // Only the files its manifest lists; a directory without one is left alone.
                if let Err(e) = bertsweep_transfer::object::delete_dir(&url).await {
                    tracing::info!("checkpoint {url} not deleted here (its worker deletes it): {e}");
                }
            }
        });
    }
}

/// Deletes the blobs of models pushed out of a top K (in the background; nothing waits).
pub fn collect_evicted(shared: &Arc<Shared>, evicted: Vec<Digest>) {
    if evicted.is_empty() {
        return;
    }
    let shared = shared.clone();
    tokio::spawn(async move {
        // Only blobs nothing refers to any more (the roots read under the collection's lock);
        // an upload in flight that shares one of them finds it missing when it completes and
        // sends it again.
        shared.blobs.collect_only(|| shared.lock().blob_roots(), evicted).await;
    });
}

pub async fn find_missing(
    shared: &Arc<Shared>,
    r: pb::FindMissingBlobsRequest,
) -> Result<pb::FindMissingBlobsResponse, Status> {
    if r.digests.len() > MAX_DIGESTS {
        return Err(Status::invalid_argument(format!("at most {MAX_DIGESTS} digests per call")));
    }
    let digests = r.digests.iter().map(|text| digest("digests", text)).collect::<Result<Vec<_>, _>>()?;
    let owned = shared.clone();
    // Hashing a blob not verified since it last changed is CPU and disk work: off the runtime.
    let present = tokio::task::spawn_blocking(move || {
        digests
            .iter()
            .map(|d| {
                // A blob reported present is about to be referenced (the caller skips uploading
                // it): touching it spares it from the sweep of old unreferenced blobs meanwhile.
                owned.blobs.check_stored(d) == Stored::Intact && owned.blobs.touch(d)
            })
            .collect::<Vec<bool>>()
    })
    .await
    .map_err(|e| Status::internal(format!("checking blobs failed: {e}")))?;
    let missing = r.digests.into_iter().zip(present).filter(|(_, here)| !here).map(|(text, _)| text).collect();
    Ok(pb::FindMissingBlobsResponse { missing, max_blob_bytes: shared.blobs.max_blob_bytes })
}

pub async fn upload(
    shared: &Arc<Shared>,
    mut stream: Streaming<pb::UploadBlobRequest>,
) -> Result<pb::UploadBlobResponse, Status> {
    let first = stream.message().await?.ok_or_else(|| Status::invalid_argument("the upload sent no message"))?;
    let d = digest("digest", &first.digest)?;
    let size = first.size;
    if size > shared.blobs.max_blob_bytes {
        return Err(Status::invalid_argument(shared.blobs.too_large(size)));
    }
    if shared.blobs.dir().size(&d) == Some(size) {
        // Skipped only if the stored copy really is this content; a corrupted one is
        // quarantined by the check and replaced by this upload.
        let owned = shared.clone();
        let intact = tokio::task::spawn_blocking(move || {
            owned.blobs.check_stored(&d) == Stored::Intact && owned.blobs.touch(&d)
        })
        .await
        .map_err(|e| Status::internal(format!("checking blob {}: {e}", d.short())))?;
        if intact {
            return Ok(pb::UploadBlobResponse { digest: first.digest, size, stored: false });
        }
    }
    // Never below the free space the database needs (a full disk would stop every commit).
    let _space = shared.blobs.reserve(size).map_err(Status::resource_exhausted)?;
    let refuse = |e: WriteError| match e {
        WriteError::Io { .. } => Status::unavailable(format!("the coordinator cannot store the upload: {e}")),
        other => Status::invalid_argument(format!("upload of blob {}: {other}", d.short())),
    };
    let mut writer = shared.blobs.dir().writer(d, size).await.map_err(refuse)?;
    writer.write(&first.data).await.map_err(refuse)?;
    while let Some(message) = stream.message().await? {
        writer.write(&message.data).await.map_err(refuse)?;
    }
    writer.finish().await.map_err(refuse)?;
    shared.blobs.mark_verified(&d);
    Ok(pb::UploadBlobResponse { digest: first.digest, size, stored: true })
}

/// Streams a blob from `offset`, hashing the whole file as it goes (the part before `offset`
/// is read but not sent) and holding back the last chunk until the digest is known: a blob
/// that does not match is never served whole; it is quarantined and the stream ends with
/// DATA_LOSS. Reading and hashing run on a blocking thread, off the runtime that answers
/// heartbeats.
pub async fn download(shared: &Arc<Shared>, r: pb::DownloadBlobRequest) -> Result<ChunkStream, Status> {
    let d = digest("digest", &r.digest)?;
    let path = shared.blobs.dir().path(&d);
    let file = match std::fs::File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Status::not_found(format!("blob {} is not on this coordinator", d.short())))
        }
        Err(e) => return Err(Status::unavailable(format!("cannot read blob {}: {e}", d.short()))),
    };
    let size = file.metadata().map_err(|e| Status::unavailable(e.to_string()))?.len();
    if r.offset > size {
        return Err(Status::invalid_argument(format!("offset {} is past the blob's {size} bytes", r.offset)));
    }
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let shared = shared.clone();
    tokio::task::spawn_blocking(move || stream_verified(&shared, d, file, size, r.offset, &tx));
    Ok(Box::pin(ReceiverStream::new(rx)))
}

/// The body of [`download`], on a blocking thread: sends chunks into `tx` until the end, the
/// receiver goes, or the digest does not match.
fn stream_verified(
    shared: &Shared,
    d: Digest,
    mut file: std::fs::File,
    size: u64,
    offset: u64,
    tx: &tokio::sync::mpsc::Sender<Result<pb::BlobChunk, Status>>,
) {
    use std::io::Read;
    let mut hasher = bertsweep_transfer::digest::Hasher::default();
    let mut position = 0u64;
    let mut held: Option<pb::BlobChunk> = None;
    let mut first = true;
    while position < size {
        // Up to a chunk, never across `offset`, so sent chunks start exactly there.
        let end = if position < offset { offset } else { size };
        let mut buf = vec![0u8; CHUNK_BYTES.min((end - position) as usize)];
        if let Err(e) = file.read_exact(&mut buf) {
            let _ = tx.blocking_send(Err(Status::unavailable(format!("reading blob {}: {e}", d.short()))));
            return;
        }
        hasher.update(&buf);
        position += buf.len() as u64;
        if position <= offset {
            continue;
        }
        let chunk = pb::BlobChunk { data: buf, size: if first { size } else { 0 } };
        first = false;
        if let Some(ready) = held.replace(chunk) {
            if tx.blocking_send(Ok(ready)).is_err() {
                return;
            }
        }
    }
    let (actual, _) = hasher.finish();
    if actual != d {
        shared.blobs.quarantine(&d, "it does not match its sha256");
        let _ = tx.blocking_send(Err(Status::data_loss(format!(
            "blob {} is corrupted on this coordinator and was quarantined; upload it again (`bertsweep study create` repairs a study's inputs)",
            d.short()
        ))));
        return;
    }
    shared.blobs.mark_verified(&d);
    // An empty blob (or an offset at its end) still answers one chunk with its size.
    let last = held.unwrap_or(pb::BlobChunk { data: Vec::new(), size: if first { size } else { 0 } });
    let _ = tx.blocking_send(Ok(last));
}
