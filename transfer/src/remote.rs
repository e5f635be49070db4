//! Uploading to and downloading from a coordinator's blob store over gRPC.
//!
//! Uploads send only what the coordinator lacks (FindMissingBlobs), in [`crate::CHUNK_BYTES`]
//! chunks; downloads land in a [`BlobDir`] through a verifying writer and resume from the last
//! byte received after a dropped connection. Transient failures (coordinator unreachable or
//! restarting) are retried with backoff for [`Remote::patience`]; anything else is an error
//! saying what to do.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bertsweep_proto::v1 as pb;
use bertsweep_proto::Client;
use futures::StreamExt;
use tokio::io::AsyncReadExt;
use tonic::{Code, Status};
use tracing::warn;

use crate::blob_dir::{BlobDir, WriteError};
use crate::manifest::{Manifest, ManifestError};
use crate::{human_bytes, Digest, CHUNK_BYTES};

/// Why a transfer failed.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    /// The coordinator does not have a blob a reference names.
    #[error("blob {0:?} is missing on the coordinator (its data directory was lost or changed); create the study again from the original files")]
    Missing(Digest),
    /// The coordinator's copy of a blob did not match its digest (it quarantined it).
    #[error("blob {0:?} is corrupted on the coordinator (it was quarantined); run `bertsweep study create` again with the original files to repair it")]
    Corrupted(Digest),
    /// A file is over the coordinator's size limit.
    #[error("{path} is {} but the coordinator accepts files up to {} (serve --max-blob-size); put it on storage every worker reads and name it worker:/path, or name a Hub model as hf:org/name", human_bytes(*.size), human_bytes(*.limit))]
    TooLarge {
        /// The file.
        path: String,
        /// Its size.
        size: u64,
        /// The coordinator's limit.
        limit: u64,
    },
    /// The coordinator refused (a reason retrying cannot fix).
    #[error("{what}: {message}")]
    Refused {
        /// Which transfer.
        what: String,
        /// The coordinator's message.
        message: String,
    },
    /// The coordinator stayed unreachable for the whole patience.
    #[error("{what}: the coordinator stayed unavailable ({message})")]
    Unavailable {
        /// Which transfer.
        what: String,
        /// The last transport error.
        message: String,
    },
    /// A local file could not be read or hashed.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// A downloaded blob could not be written, or did not verify.
    #[error("blob {digest:?}: {source}")]
    Write {
        /// The blob.
        digest: Digest,
        /// Why.
        source: WriteError,
    },
    /// Reading a file to upload, or laying files out, failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

impl RemoteError {
    /// Whether trying the whole transfer again later may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            RemoteError::Unavailable { .. }
                | RemoteError::Write { .. }
                | RemoteError::Io { .. }
                | RemoteError::Corrupted(_)
        )
    }
}

/// Transient statuses: the coordinator is unreachable or restarting.
fn transient(status: &Status) -> bool {
    matches!(
        status.code(),
        Code::Unavailable | Code::Unknown | Code::DeadlineExceeded | Code::Aborted | Code::Cancelled
    )
}

/// What an upload produced.
#[derive(Debug, Clone)]
pub struct Uploaded {
    /// The manifest's digest: the reference is `blob:sha256:<digest>`.
    pub digest: Digest,
    /// The manifest.
    pub manifest: Manifest,
    /// Bytes actually sent (0 when the coordinator had everything).
    pub bytes_sent: u64,
}

/// A coordinator's blob store, seen from a client.
#[derive(Clone)]
pub struct Remote {
    client: Client,
    /// How long transient failures are retried before giving up.
    pub patience: Duration,
}

impl Remote {
    /// Wraps a connected client; transient failures are retried for two minutes.
    pub fn new(client: Client) -> Self {
        Remote { client, patience: Duration::from_secs(120) }
    }

    /// Retries `call` on transient failures for [`Remote::patience`].
    async fn retry<T, F, Fut>(&self, what: &str, mut call: F) -> Result<T, RemoteError>
    where
        F: FnMut(Client) -> Fut,
        Fut: std::future::Future<Output = Result<T, Status>>,
    {
        let started = tokio::time::Instant::now();
        let mut delay = Duration::from_millis(200);
        loop {
            match call(self.client.clone()).await {
                Ok(v) => return Ok(v),
                Err(s) if s.code() == Code::NotFound => {
                    return Err(RemoteError::Refused {
                        what: what.into(),
                        message: format!("NOT_FOUND {}", s.message()),
                    })
                }
                Err(s) if transient(&s) && started.elapsed() < self.patience => {
                    warn!("{what}: {} ({:?}); retrying in {delay:?}", s.message(), s.code());
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
                Err(s) if transient(&s) => {
                    return Err(RemoteError::Unavailable { what: what.into(), message: s.message().into() })
                }
                Err(s) => return Err(RemoteError::Refused { what: what.into(), message: s.message().into() }),
            }
        }
    }

    /// Which of `digests` the coordinator lacks, and its size limit.
    pub async fn find_missing(&self, digests: &[Digest]) -> Result<(Vec<Digest>, u64), RemoteError> {
        let request = pb::FindMissingBlobsRequest { digests: digests.iter().map(|d| d.to_string()).collect() };
        let reply = self
            .retry("checking blobs", |mut c| {
                let request = request.clone();
                async move { c.find_missing_blobs(request).await }
            })
            .await?
            .into_inner();
        let missing = reply.missing.iter().filter_map(|m| m.parse().ok()).collect();
        Ok((missing, reply.max_blob_bytes))
    }

    /// Uploads a file or directory (hashing it first), sending only the blobs the coordinator
    /// lacks; `source` is recorded in the manifest for people.
    pub async fn upload_path(&self, path: &Path, source: String) -> Result<Uploaded, RemoteError> {
        let owned = path.to_path_buf();
        let manifest = tokio::task::spawn_blocking(move || Manifest::of_path(&owned, source))
            .await
            .map_err(|e| RemoteError::Io { path: path.into(), source: std::io::Error::other(e) })??;
        self.upload_manifest(path, manifest).await
    }

    /// Uploads the files of `manifest` (found under `root`, or `root` itself for a file) and then
    /// the manifest.
    pub async fn upload_manifest(&self, root: &Path, manifest: Manifest) -> Result<Uploaded, RemoteError> {
        let bytes = manifest.to_bytes();
        let digest = Digest::of(&bytes);
        let mut wanted: Vec<Digest> = manifest.files.iter().map(|f| f.digest()).collect();
        wanted.push(digest);
        let (missing, limit) = self.find_missing(&wanted).await?;
        let local =
            |rel: &str| if manifest.kind == crate::ManifestKind::File { root.to_path_buf() } else { root.join(rel) };
        for f in &manifest.files {
            if limit > 0 && f.size > limit && missing.contains(&f.digest()) {
                return Err(RemoteError::TooLarge { path: local(&f.path).display().to_string(), size: f.size, limit });
            }
        }
        let mut sent = 0;
        let mut done = std::collections::HashSet::new();
        for f in &manifest.files {
            let d = f.digest();
            if missing.contains(&d) && done.insert(d) {
                self.upload_file(&local(&f.path), d, f.size).await?;
                sent += f.size;
            }
        }
        if missing.contains(&digest) {
            self.upload_bytes(digest, bytes.clone()).await?;
            sent += bytes.len() as u64;
        }
        Ok(Uploaded { digest, manifest, bytes_sent: sent })
    }

    async fn upload_file(&self, path: &Path, digest: Digest, size: u64) -> Result<(), RemoteError> {
        let what = format!("uploading {}", path.display());
        self.retry(&what, |mut c| {
            let path = path.to_path_buf();
            async move {
                let file =
                    tokio::fs::File::open(&path).await.map_err(|e| Status::failed_precondition(e.to_string()))?;
                let chunks = futures::stream::unfold((file, true), move |(mut file, first)| async move {
                    let mut buf = vec![0u8; CHUNK_BYTES];
                    let n = match file.read(&mut buf).await {
                        Ok(n) => n,
                        Err(_) => return None,
                    };
                    if n == 0 && !first {
                        return None;
                    }
                    buf.truncate(n);
                    let msg = if first {
                        pb::UploadBlobRequest { digest: digest.to_string(), size, data: buf }
                    } else {
                        pb::UploadBlobRequest { data: buf, ..Default::default() }
                    };
                    Some((msg, (file, false)))
                });
                c.upload_blob(chunks).await
            }
        })
        .await
        .map_err(|e| match e {
            RemoteError::Refused { what, message } if message.contains("does not match") => RemoteError::Refused {
                what,
                message: format!("{message}; the file changed while it was uploaded, try again"),
            },
            other => other,
        })?;
        Ok(())
    }

    async fn upload_bytes(&self, digest: Digest, bytes: Vec<u8>) -> Result<(), RemoteError> {
        self.retry("uploading a manifest", |mut c| {
            // Chunked like files: a manifest of tens of thousands of files passes 4 MiB.
            let size = bytes.len() as u64;
            let mut messages: Vec<pb::UploadBlobRequest> = bytes
                .chunks(CHUNK_BYTES)
                .map(|c| pb::UploadBlobRequest { data: c.to_vec(), ..Default::default() })
                .collect();
            if messages.is_empty() {
                messages.push(pb::UploadBlobRequest::default());
            }
            messages[0].digest = digest.to_string();
            messages[0].size = size;
            async move { c.upload_blob(futures::stream::iter(messages)).await }
        })
        .await?;
        Ok(())
    }

    /// Downloads a blob into `dir` (nothing to do when present), resuming after dropped
    /// connections; the blob appears only once it verified.
    pub async fn fetch_blob(&self, dir: &BlobDir, digest: Digest) -> Result<PathBuf, RemoteError> {
        self.fetch_blob_sized(dir, digest, Size::Any).await
    }

    /// [`Remote::fetch_blob`] that refuses a blob whose announced size is not `size` (the size
    /// a verified manifest gives, or a cap), so a coordinator cannot make it write more.
    pub async fn fetch_blob_sized(&self, dir: &BlobDir, digest: Digest, size: Size) -> Result<PathBuf, RemoteError> {
        if dir.contains(&digest) {
            return Ok(dir.path(&digest));
        }
        let started = tokio::time::Instant::now();
        let mut delay = Duration::from_millis(200);
        let mut writer = None;
        loop {
            let offset = writer.as_ref().map_or(0, |w: &crate::blob_dir::BlobWriter| w.written());
            let result = self.download_into(dir, digest, size, offset, &mut writer).await;
            match result {
                Ok(()) => break,
                // Local trouble (disk full, a short write): this machine's, worth another try
                // (perhaps on another worker), not the coordinator's.
                Err(Fetch::Local(source)) => {
                    return Err(RemoteError::Io {
                        path: dir.root().to_path_buf(),
                        source: std::io::Error::other(source),
                    })
                }
                Err(Fetch::Remote(s)) if s.code() == Code::NotFound => return Err(RemoteError::Missing(digest)),
                Err(Fetch::Remote(s)) if s.code() == Code::DataLoss => return Err(RemoteError::Corrupted(digest)),
                Err(Fetch::Remote(s)) if transient(&s) && started.elapsed() < self.patience => {
                    warn!("downloading blob {}: {}; resuming in {delay:?}", digest.short(), s.message());
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
                Err(Fetch::Remote(s)) if transient(&s) => {
                    return Err(RemoteError::Unavailable {
                        what: format!("downloading blob {}", digest.short()),
                        message: s.message().into(),
                    })
                }
                Err(Fetch::Remote(s)) => {
                    return Err(RemoteError::Refused {
                        what: format!("downloading blob {}", digest.short()),
                        message: s.message().into(),
                    })
                }
            }
        }
        let writer = writer.expect("a finished download has a writer");
        writer.finish().await.map_err(|source| RemoteError::Write { digest, source })
    }

    /// One DownloadBlob stream from `offset` into `writer` (created from the first chunk's size,
    /// once that size is what `expected` allows).
    async fn download_into(
        &self,
        dir: &BlobDir,
        digest: Digest,
        expected: Size,
        offset: u64,
        writer: &mut Option<crate::blob_dir::BlobWriter>,
    ) -> Result<(), Fetch> {
        let mut stream = self
            .client
            .clone()
            .download_blob(pb::DownloadBlobRequest { digest: digest.to_string(), offset })
            .await
            .map_err(Fetch::Remote)?
            .into_inner();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(Fetch::Remote)?;
            if writer.is_none() {
                let refused = match expected {
                    Size::Exactly(n) if chunk.size != n => Some(format!("its manifest says {n} bytes")),
                    Size::AtMost(n) if chunk.size > n => Some(format!("the limit is {n} bytes")),
                    _ => None,
                };
                if let Some(why) = refused {
                    return Err(Fetch::Remote(Status::invalid_argument(format!(
                        "the coordinator announced {} bytes for blob {}, but {why}",
                        chunk.size,
                        digest.short()
                    ))));
                }
                let w = dir.writer(digest, chunk.size).await.map_err(|e| Fetch::Local(e.to_string()))?;
                *writer = Some(w);
            }
            let w = writer.as_mut().expect("just set");
            // Local trouble (disk full), or more bytes than announced: not worth resuming.
            w.write(&chunk.data).await.map_err(|e| Fetch::Local(e.to_string()))?;
        }
        if writer.is_none() {
            // An empty blob sends one empty chunk; no chunk at all means a cut stream.
            return Err(Fetch::Remote(Status::unavailable("the download ended before it began")));
        }
        Ok(())
    }

    /// Downloads and validates a manifest blob.
    pub async fn fetch_manifest(&self, dir: &BlobDir, digest: Digest) -> Result<Manifest, RemoteError> {
        self.fetch_blob_sized(dir, digest, Size::AtMost(crate::manifest::MAX_MANIFEST_BYTES as u64)).await?;
        match dir.read_manifest(&digest) {
            Ok(m) => Ok(m),
            Err(e) => {
                let _ = dir.remove(&digest);
                Err(e.into())
            }
        }
    }

    /// Downloads every file of `manifest` into `dir`.
    pub async fn fetch_files(&self, dir: &BlobDir, manifest: &Manifest) -> Result<(), RemoteError> {
        for f in &manifest.files {
            self.fetch_blob_sized(dir, f.digest(), Size::Exactly(f.size)).await?;
        }
        Ok(())
    }
}

/// What a downloaded blob's size may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Size {
    /// Whatever the coordinator announces (the digest still has to match).
    Any,
    /// Exactly this many bytes (from a verified manifest).
    Exactly(u64),
    /// No more than this many bytes.
    AtMost(u64),
}

/// Why one download stream stopped.
enum Fetch {
    /// The coordinator's answer (retried when transient).
    Remote(Status),
    /// This machine's trouble writing it.
    Local(String),
}

/// Lays out `manifest`'s files (present in `dir`) as `dest`: hard links (copies across file
/// systems) into a temporary sibling directory, renamed to `dest` at the end, so `dest` is
/// either complete or absent. `dest` must not exist.
pub fn materialize(dir: &BlobDir, manifest: &Manifest, dest: &Path) -> Result<(), RemoteError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| RemoteError::Io { path, source }
    };
    let parent = dest.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(io(parent))?;
    let name = dest.file_name().and_then(|n| n.to_str()).unwrap_or("tree");
    let staging = parent.join(format!(".{name}.{}.partial", std::process::id()));
    let _ = std::fs::remove_dir_all(&staging);
    let result = (|| {
        for f in &manifest.files {
            let target = staging.join(&f.path);
            if let Some(p) = target.parent() {
                std::fs::create_dir_all(p).map_err(io(p))?;
            }
            let blob = dir.path(&f.digest());
            if std::fs::hard_link(&blob, &target).is_err() {
                std::fs::copy(&blob, &target).map_err(io(&blob))?;
            }
        }
        std::fs::rename(&staging, dest).map_err(io(dest))
    })();
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&staging);
    }
    result
}
