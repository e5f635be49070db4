//! The coordinator's blob store: study inputs and kept trial models, content-addressed under a
//! data directory next to the database (`<db>.data/` unless `serve --data-dir` says otherwise;
//! layout in [`bertsweep_transfer::blob_dir`]).
//!
//! A blob stays as long as something refers to it: a study's `blob:` input, or a trial's kept
//! model — through the manifest that lists it. [`BlobStore::collect`] deletes the rest: at
//! start-up and then periodically (blobs older than a grace period, so an upload whose study
//! is not yet created survives), and at once for the blobs of models pushed out of a study's
//! top K.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use bertsweep_transfer::blob_dir::BlobDir;
use bertsweep_transfer::{human_bytes, Digest, Manifest, ManifestKind};
use tracing::{info, warn};

use crate::error::CoordinatorError;

/// Largest blob accepted when `serve --max-blob-size` is not given.
pub const DEFAULT_MAX_BLOB_BYTES: u64 = 4 << 30;

/// How long an unreferenced blob is kept (an upload whose study or completion is on its way).
pub const ORPHAN_GRACE: Duration = Duration::from_secs(3600);

/// Blobs on the coordinator's disk.
pub struct BlobStore {
    dir: BlobDir,
    /// Uploads larger than this are refused.
    pub max_blob_bytes: u64,
    /// Serialises collections (each reads the whole directory).
    collecting: tokio::sync::Mutex<()>,
}

/// The data directory for a database URL: `<db file>.data` beside it; a temporary directory
/// for an in-memory database.
pub fn default_data_dir(db_url: &str) -> PathBuf {
    let path = db_url.strip_prefix("sqlite://").or_else(|| db_url.strip_prefix("sqlite:")).unwrap_or(db_url);
    let path = path.split('?').next().unwrap_or(path);
    if path.is_empty() || path.starts_with(":memory:") {
        return std::env::temp_dir().join(format!("bertsweep-{}-memory.data", std::process::id()));
    }
    PathBuf::from(format!("{path}.data"))
}

impl BlobStore {
    /// Opens (creating) the store and deletes transfers a previous run left unfinished.
    pub fn open(root: &Path, max_blob_bytes: u64) -> std::io::Result<Self> {
        let dir = BlobDir::open(root)?;
        let stale = dir.clear_tmp(Duration::ZERO)?;
        if stale > 0 {
            info!(files = stale, "deleted unfinished uploads of an earlier run");
        }
        Ok(BlobStore { dir, max_blob_bytes, collecting: tokio::sync::Mutex::new(()) })
    }

    /// The blob directory.
    pub fn dir(&self) -> &BlobDir {
        &self.dir
    }

    /// The one-line refusal for a blob over the limit.
    pub fn too_large(&self, size: u64) -> String {
        format!(
            "a file of {} is over this coordinator's limit of {} (serve --max-blob-size); put it on storage every worker reads and name it worker:/path, or name a Hub model as hf:org/name",
            human_bytes(size),
            human_bytes(self.max_blob_bytes)
        )
    }

    /// Checks that a manifest and every file it lists are here, and that it is of `kind`.
    pub fn check_tree(&self, what: &str, digest: &Digest, kind: ManifestKind) -> Result<Manifest, CoordinatorError> {
        let reference = format!("blob:sha256:{digest}");
        let manifest = self.dir.read_manifest(digest).map_err(|e| {
            CoordinatorError::FailedPrecondition(format!(
                "{what} {reference} is not on this coordinator ({e}); {}",
                if what == "artifact" {
                    "upload the model before completing the trial"
                } else if what == "checkpoint" {
                    "upload the checkpoint before reporting it"
                } else {
                    "upload it with `bertsweep study create` from the machine that has the files"
                }
            ))
        })?;
        if manifest.kind != kind {
            let want = if kind == ManifestKind::Dir { "a directory" } else { "a single file" };
            return Err(CoordinatorError::InvalidArgument(format!("{what} {reference} is not {want}")));
        }
        if let Some(f) = manifest.files.iter().find(|f| self.dir.size(&f.digest()) != Some(f.size)) {
            return Err(CoordinatorError::FailedPrecondition(format!(
                "{what} {reference}: its file {:?} is missing on this coordinator; upload it again",
                f.path
            )));
        }
        Ok(manifest)
    }

    /// Deletes those of `candidates` (manifests, with the files they list) that `roots` no
    /// longer reach, whatever their age: the models a study just pushed out of its top K.
    pub async fn collect_only(&self, roots: Vec<Digest>, candidates: Vec<Digest>) -> usize {
        let _one_at_a_time = self.collecting.lock().await;
        let dir = self.dir.clone();
        let run = tokio::task::spawn_blocking(move || -> std::io::Result<usize> {
            let live = reachable(&dir, roots);
            let mut doomed = Vec::new();
            for c in candidates {
                if let Ok(m) = dir.read_manifest(&c) {
                    doomed.extend(m.files.iter().map(|f| f.digest()));
                }
                doomed.push(c);
            }
            let mut deleted = 0;
            for d in doomed {
                if !live.contains(&d) && dir.contains(&d) {
                    dir.remove(&d)?;
                    deleted += 1;
                }
            }
            Ok(deleted)
        });
        match run.await {
            Ok(Ok(n)) => {
                info!(blobs = n, "deleted the blobs of models no longer kept");
                n
            }
            Ok(Err(e)) => {
                warn!("deleting superseded models failed: {e}");
                0
            }
            Err(e) => {
                warn!("deleting superseded models panicked: {e}");
                0
            }
        }
    }

    /// Deletes unfinished uploads whose last write is older than `age` (a client that died
    /// mid-upload; a live upload writes every chunk).
    pub async fn clear_abandoned_uploads(&self, age: Duration) {
        let dir = self.dir.clone();
        match tokio::task::spawn_blocking(move || dir.clear_tmp(age)).await {
            Ok(Ok(n)) if n > 0 => info!(files = n, "deleted abandoned uploads"),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => warn!("deleting abandoned uploads failed: {e}"),
            Err(e) => warn!("deleting abandoned uploads panicked: {e}"),
        }
    }

    /// Deletes every blob not reachable from `roots` (manifests and the files they list) whose
    /// last change is older than `grace`; returns how many were deleted.
    pub async fn collect(&self, roots: Vec<Digest>, grace: Duration) -> usize {
        let _one_at_a_time = self.collecting.lock().await;
        let dir = self.dir.clone();
        let run = tokio::task::spawn_blocking(move || -> std::io::Result<(usize, u64)> {
            let live = reachable(&dir, roots);
            let now = SystemTime::now();
            let (mut deleted, mut freed) = (0, 0);
            for (digest, modified) in dir.list()? {
                let old = now.duration_since(modified).unwrap_or_default() >= grace;
                if !live.contains(&digest) && old {
                    freed += dir.size(&digest).unwrap_or(0);
                    dir.remove(&digest)?;
                    deleted += 1;
                }
            }
            Ok((deleted, freed))
        });
        match run.await {
            Ok(Ok((deleted, freed))) => {
                if deleted > 0 {
                    info!(blobs = deleted, "deleted unreferenced blobs ({})", human_bytes(freed));
                }
                deleted
            }
            Ok(Err(e)) => {
                warn!("blob collection failed: {e}");
                0
            }
            Err(e) => {
                warn!("blob collection panicked: {e}");
                0
            }
        }
    }
}

/// The roots and every file their manifests list.
fn reachable(dir: &BlobDir, roots: Vec<Digest>) -> HashSet<Digest> {
    let mut live = HashSet::new();
    for root in roots {
        if live.insert(root) {
            if let Ok(m) = dir.read_manifest(&root) {
                live.extend(m.files.iter().map(|f| f.digest()));
            }
        }
    }
    live
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_dir_sits_next_to_the_database() {
        assert_eq!(default_data_dir("sqlite://runs/x.db"), PathBuf::from("runs/x.db.data"));
        assert_eq!(default_data_dir("sqlite:x.db?mode=rwc"), PathBuf::from("x.db.data"));
        assert!(default_data_dir("sqlite::memory:").starts_with(std::env::temp_dir()));
    }

    #[tokio::test]
    async fn collection_keeps_what_roots_reach() {
        let tmp = tempfile::tempdir().unwrap();
        let store = BlobStore::open(tmp.path(), 1 << 20).unwrap();
        let kept_file = store.dir().put_bytes(b"kept").await.unwrap();
        let orphan = store.dir().put_bytes(b"orphan").await.unwrap();
        let manifest = Manifest {
            format: bertsweep_transfer::manifest::FORMAT,
            kind: ManifestKind::File,
            source: "test".into(),
            files: vec![bertsweep_transfer::manifest::Entry {
                path: "k".into(),
                sha256: kept_file.to_string(),
                size: 4,
            }],
        };
        let root = store.dir().put_bytes(&manifest.to_bytes()).await.unwrap();
        assert_eq!(store.collect(vec![root], Duration::from_secs(3600)).await, 0, "young orphans survive");
        assert_eq!(store.collect(vec![root], Duration::ZERO).await, 1);
        assert!(store.dir().contains(&kept_file) && store.dir().contains(&root) && !store.dir().contains(&orphan));
        assert!(store.check_tree("task.train_file", &root, ManifestKind::File).is_ok());
        assert!(store.check_tree("task.model", &root, ManifestKind::Dir).is_err());
        store.dir().remove(&kept_file).unwrap();
        let e = store.check_tree("task.train_file", &root, ManifestKind::File).unwrap_err().to_string();
        assert!(e.contains("missing") && !e.contains('\n'), "{e}");
    }
}
