//! Blob RPCs: FindMissingBlobs, UploadBlob (client stream) and DownloadBlob (server stream),
//! plus the checks that a study's inputs and a trial's model are really here.

use std::pin::Pin;
use std::sync::Arc;

use bertsweep_proto::v1 as pb;
use bertsweep_transfer::blob_dir::WriteError;
use bertsweep_transfer::{Digest, InputRef, ManifestKind, CHUNK_BYTES};
use futures::Stream;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Status, Streaming};

use super::Shared;
use crate::spec::StudySpec;

/// Most digests one FindMissingBlobs may ask about.
const MAX_DIGESTS: usize = 100_000;

/// The DownloadBlob stream.
pub type ChunkStream = Pin<Box<dyn Stream<Item = Result<pb::BlobChunk, Status>> + Send + 'static>>;

fn digest(field: &str, text: &str) -> Result<Digest, Status> {
    text.parse().map_err(|e| Status::invalid_argument(format!("{field}: {e}")))
}

/// Every `blob:` input of a new study must be here, complete and of the right kind.
pub fn check_inputs(shared: &Shared, spec: &StudySpec) -> Result<(), Status> {
    let task = &spec.task;
    for (field, text, kind) in [
        ("task.model", &task.model, ManifestKind::Dir),
        ("task.train_file", &task.train_file, ManifestKind::File),
        ("task.validation_file", &task.validation_file, ManifestKind::File),
    ] {
        if let Ok(InputRef::Blob(d)) = InputRef::parse(text) {
            shared.blobs.check_tree(field, &d, kind)?;
        }
    }
    Ok(())
}

/// A `blob:` artifact must be a complete directory here before a trial may complete with it.
/// (A repeated completion is not checked: its model may have been pushed out and deleted since.)
pub fn check_artifact(shared: &Shared, trial_id: u64, token: u64, artifact: &str) -> Result<(), Status> {
    if let Some(d) = crate::registry::blob_of(artifact) {
        if shared.lock().is_running(trial_id, token) {
            shared.blobs.check_tree("artifact", &d, ManifestKind::Dir)?;
        }
    }
    Ok(())
}

/// A reported checkpoint must be a `blob:` directory complete here or an object storage URL.
pub fn check_checkpoint(shared: &Shared, trial_id: u64, token: u64, checkpoint: &str) -> Result<(), Status> {
    if checkpoint.is_empty() {
        return Ok(());
    }
    if checkpoint.len() > 4096 {
        return Err(Status::invalid_argument("checkpoint is longer than 4096 bytes"));
    }
    if let Some(d) = crate::registry::blob_of(checkpoint) {
        if shared.lock().is_running(trial_id, token) {
            shared.blobs.check_tree("checkpoint", &d, ManifestKind::Dir)?;
        }
        return Ok(());
    }
    if bertsweep_transfer::object::is_object_url(checkpoint) {
        return Ok(());
    }
    // A directory on a filesystem the workers share (`--local-checkpoints`).
    if matches!(InputRef::parse(checkpoint), Ok(InputRef::Worker(p)) if p.starts_with('/')) {
        return Ok(());
    }
    Err(Status::invalid_argument(format!(
        "checkpoint {checkpoint:?} is neither blob:sha256:<manifest> (uploaded here first), an s3://, gs:// or az:// URL, nor worker:/absolute/path"
    )))
}

/// Deletes checkpoints no trial needs any more (replaced, or their trial ended): blobs here
/// once nothing refers to them; objects in object storage in the background, as far as this
/// coordinator's credentials allow (the workers delete theirs too).
pub async fn delete_checkpoints(shared: &Shared, dropped: Vec<String>) {
    let blobs: Vec<Digest> = dropped.iter().filter_map(|c| crate::registry::blob_of(c)).collect();
    if !blobs.is_empty() {
        let roots = shared.lock().blob_roots();
        shared.blobs.collect_only(roots, blobs).await;
    }
    let objects: Vec<String> = dropped.into_iter().filter(|c| bertsweep_transfer::object::is_object_url(c)).collect();
    if !objects.is_empty() {
        tokio::spawn(async move {
            for url in objects {
                if let Err(e) = bertsweep_transfer::object::delete_dir(&url).await {
                    tracing::debug!("checkpoint {url} not deleted here (its worker deletes it): {e}");
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
        let roots = shared.lock().blob_roots();
        // Only blobs nothing refers to any more; an upload in flight that shares one of them
        // finds it missing when it completes and sends it again.
        shared.blobs.collect_only(roots, evicted).await;
    });
}

pub fn find_missing(shared: &Shared, r: pb::FindMissingBlobsRequest) -> Result<pb::FindMissingBlobsResponse, Status> {
    if r.digests.len() > MAX_DIGESTS {
        return Err(Status::invalid_argument(format!("at most {MAX_DIGESTS} digests per call")));
    }
    let mut missing = Vec::new();
    for text in r.digests {
        // A blob reported present is about to be referenced (the caller skips uploading
        // it): touching it spares it from the sweep of old unreferenced blobs meanwhile.
        if !shared.blobs.dir().touch(&digest("digests", &text)?) {
            missing.push(text);
        }
    }
    Ok(pb::FindMissingBlobsResponse { missing, max_blob_bytes: shared.blobs.max_blob_bytes })
}

pub async fn upload(
    shared: &Shared,
    mut stream: Streaming<pb::UploadBlobRequest>,
) -> Result<pb::UploadBlobResponse, Status> {
    let first = stream.message().await?.ok_or_else(|| Status::invalid_argument("the upload sent no message"))?;
    let d = digest("digest", &first.digest)?;
    let size = first.size;
    if size > shared.blobs.max_blob_bytes {
        return Err(Status::invalid_argument(shared.blobs.too_large(size)));
    }
    if shared.blobs.dir().size(&d) == Some(size) && shared.blobs.dir().touch(&d) {
        return Ok(pb::UploadBlobResponse { digest: first.digest, size, stored: false });
    }
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
    Ok(pb::UploadBlobResponse { digest: first.digest, size, stored: true })
}

pub async fn download(shared: &Shared, r: pb::DownloadBlobRequest) -> Result<ChunkStream, Status> {
    let d = digest("digest", &r.digest)?;
    let path = shared.blobs.dir().path(&d);
    let mut file = match tokio::fs::File::open(&path).await {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Status::not_found(format!("blob {} is not on this coordinator", d.short())))
        }
        Err(e) => return Err(Status::unavailable(format!("cannot read blob {}: {e}", d.short()))),
    };
    let size = file.metadata().await.map_err(|e| Status::unavailable(e.to_string()))?.len();
    if r.offset > size {
        return Err(Status::invalid_argument(format!("offset {} is past the blob's {size} bytes", r.offset)));
    }
    file.seek(std::io::SeekFrom::Start(r.offset)).await.map_err(|e| Status::unavailable(e.to_string()))?;
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tokio::spawn(async move {
        let mut first = true;
        let mut left = size - r.offset;
        loop {
            let mut buf = vec![0u8; CHUNK_BYTES.min(left as usize)];
            if let Err(e) = file.read_exact(&mut buf).await {
                let _ = tx.send(Err(Status::unavailable(format!("reading the blob: {e}")))).await;
                return;
            }
            left -= buf.len() as u64;
            let chunk = pb::BlobChunk { data: buf, size: if first { size } else { 0 } };
            first = false;
            if tx.send(Ok(chunk)).await.is_err() || left == 0 {
                return;
            }
        }
    });
    Ok(Box::pin(ReceiverStream::new(rx)))
}
