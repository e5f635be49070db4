//! Where a trial's resumable checkpoints go and come from: the coordinator's blob store (the
//! default artifact store), object storage (`--artifacts s3://…`), or, with
//! `--artifacts DIR --local-checkpoints`, `DIR` itself (named `worker:<path>`, for a directory
//! every worker mounts). Otherwise a worker with local artifacts, or none (`--no-export`),
//! writes no checkpoints: no other machine could read them.
//!
//! The training thread writes each checkpoint into a staging directory; [`CheckpointStore::put`]
//! uploads it and returns the reference the epoch's report carries. [`CheckpointStore::fetch`]
//! brings an assignment's checkpoint back into a staging directory before training starts.

use std::path::{Path, PathBuf};
use std::time::Instant;

use bertsweep_transfer::blob_dir::BlobDir;
use bertsweep_transfer::manifest::{self, Entry};
use bertsweep_transfer::remote::{materialize, Remote};
use bertsweep_transfer::{human_bytes, Digest, InputRef, Manifest, ManifestKind};
use tracing::{info, warn};

use super::coordinator::Assignment;
use super::ArtifactSink;

/// The shared store a worker keeps checkpoints in.
#[derive(Clone)]
pub enum CheckpointStore {
    /// Blobs on the coordinator, named `blob:sha256:<manifest>`.
    Coordinator(Remote),
    /// `<base>/<study>/<number>/checkpoints/e<epoch>-<lease>/` in object storage.
    Object(String),
    /// `<dir>/<study>/<number>/checkpoints/e<epoch>-<lease>/` on a filesystem the workers
    /// share, named `worker:<path>`.
    Local(PathBuf),
}

impl CheckpointStore {
    /// The store for `sink`, if checkpoints can be shared through it.
    pub fn for_sink(sink: &ArtifactSink, local_checkpoints: bool, remote: Remote) -> Option<Self> {
        match sink {
            ArtifactSink::Coordinator => Some(CheckpointStore::Coordinator(remote)),
            ArtifactSink::Object(base) => Some(CheckpointStore::Object(base.clone())),
            ArtifactSink::Local(dir) if local_checkpoints => {
                Some(CheckpointStore::Local(std::path::absolute(dir).unwrap_or_else(|_| dir.clone())))
            }
            ArtifactSink::Local(_) | ArtifactSink::None => None,
        }
    }

    /// Uploads the checkpoint in `dir` (written after `epoch`) and returns its reference.
    pub async fn put(&self, a: &Assignment, epoch: usize, dir: &Path) -> Result<String, String> {
        let started = Instant::now();
        let source = format!("{}:trial {} epoch {epoch}", bertsweep_transfer::manifest::this_host(), a.label());
        let (reference, bytes) = match self {
            CheckpointStore::Coordinator(remote) => {
                let manifest = checkpoint_manifest(dir, source)?;
                let up = remote.upload_manifest(dir, manifest).await.map_err(|e| e.to_string())?;
                (format!("blob:sha256:{}", up.digest), up.manifest.total_size())
            }
            CheckpointStore::Object(base) => {
                let url = format!("{}/e{epoch}-{}", trial_prefix(base, a), a.lease.token);
                let manifest = checkpoint_manifest(dir, source)?;
                let manifest =
                    bertsweep_transfer::object::upload_dir_as(dir, &url, manifest).await.map_err(|e| e.to_string())?;
                (url, manifest.total_size())
            }
            CheckpointStore::Local(base) => {
                let target = local_trial_dir(base, a)?.join(format!("e{epoch}-{}", a.lease.token));
                let bytes = move_dir(dir, &target).map_err(|e| format!("{}: {e}", target.display()))?;
                (format!("worker:{}", target.display()), bytes)
            }
        };
        info!(trial = %a.label(), epoch, "checkpoint stored: {} in {:.2?} ({reference})", human_bytes(bytes), started.elapsed());
        Ok(reference)
    }

    /// Downloads `reference` into `dest` (which must not exist).
    pub async fn fetch(&self, reference: &str, dest: &Path) -> Result<(), String> {
        if let Ok(InputRef::Worker(path)) = InputRef::parse(reference) {
            // On a shared filesystem: copied, so a deletion meanwhile cannot tear it.
            std::fs::create_dir_all(dest).map_err(|e| e.to_string())?;
            for name in crate::resume::FILES {
                std::fs::copy(Path::new(&path).join(name), dest.join(name))
                    .map_err(|e| format!("{path}/{name}: {e}"))?;
            }
            return Ok(());
        }
        if bertsweep_transfer::object::is_object_url(reference) {
            bertsweep_transfer::object::download_dir(reference, dest).await.map_err(|e| e.to_string())?;
            return Ok(());
        }
        let digest = match InputRef::parse(reference) {
            Ok(InputRef::Blob(d)) => d,
            _ => return Err(format!("{reference:?} is neither a blob: reference nor an object storage URL")),
        };
        let remote = match self {
            CheckpointStore::Coordinator(remote) => remote,
            CheckpointStore::Object(_) | CheckpointStore::Local(_) => {
                return Err("a coordinator-stored checkpoint, and this worker keeps artifacts elsewhere".into())
            }
        };
        let blobs_dir = dest.with_extension("blobs");
        let result = async {
            let blobs = BlobDir::open(&blobs_dir).map_err(|e| e.to_string())?;
            let manifest = remote.fetch_manifest(&blobs, digest).await.map_err(|e| e.to_string())?;
            if manifest.kind != ManifestKind::Dir {
                return Err("not a checkpoint directory".to_string());
            }
            remote.fetch_files(&blobs, &manifest).await.map_err(|e| e.to_string())?;
            materialize(&blobs, &manifest, dest).map_err(|e| e.to_string())
        }
        .await;
        let _ = std::fs::remove_dir_all(&blobs_dir);
        result
    }

    /// Deletes a checkpoint this worker no longer needs from object storage (the coordinator
    /// deletes blobs itself). Failures are logged only.
    pub async fn discard(&self, reference: &str) {
        match self {
            CheckpointStore::Object(_) if bertsweep_transfer::object::is_object_url(reference) => {
                if let Err(e) = bertsweep_transfer::object::delete_dir(reference).await {
                    warn!("could not delete checkpoint {reference}: {e}");
                }
            }
            CheckpointStore::Local(_) => {
                if let Ok(InputRef::Worker(path)) = InputRef::parse(reference) {
                    remove_dir(Path::new(&path));
                }
            }
            _ => {}
        }
    }

    /// Deletes every checkpoint of an ended trial from object storage, those a killed worker
    /// left behind included (the coordinator deletes blobs itself). Failures are logged only.
    pub async fn discard_trial(&self, a: &Assignment) {
        match self {
            CheckpointStore::Object(base) => {
                let url = trial_prefix(base, a);
                if let Err(e) = bertsweep_transfer::object::delete_dir(&url).await {
                    warn!("could not delete the checkpoints under {url}: {e}");
                }
            }
            CheckpointStore::Local(base) => {
                if let Ok(dir) = local_trial_dir(base, a) {
                    remove_dir(&dir);
                }
            }
            CheckpointStore::Coordinator(_) => {}
        }
    }
}

/// `<base>/<study>/<number>/checkpoints`, built from plain path components only.
fn local_trial_dir(base: &Path, a: &Assignment) -> Result<PathBuf, String> {
    super::paths::join_inside(base, &[&a.study, &a.number.to_string(), "checkpoints"]).map_err(|e| e.to_string())
}

/// The manifest of the checkpoint in `dir` without reading its tensors again: `state.json`
/// records their sha256 (computed as they were written), so only the small state file is
/// hashed here. The coordinator checks every blob's digest as it receives it, so a wrong
/// record is refused, never stored.
fn checkpoint_manifest(dir: &Path, source: String) -> Result<Manifest, String> {
    let state_path = dir.join(crate::resume::STATE_FILE);
    let state_bytes = std::fs::read(&state_path).map_err(|e| format!("{}: {e}", state_path.display()))?;
    let state: crate::resume::ResumeState = serde_json::from_slice(&state_bytes)
        .map_err(|e| format!("{} is not a checkpoint state: {e}", state_path.display()))?;
    let tensors_sha256: Digest = state.tensors_sha256.parse().map_err(|e| format!("{}: {e}", state_path.display()))?;
    let tensors_path = dir.join(crate::resume::TENSORS_FILE);
    let tensors_size = std::fs::metadata(&tensors_path).map_err(|e| format!("{}: {e}", tensors_path.display()))?.len();
    let mut files = vec![
        Entry {
            path: crate::resume::STATE_FILE.to_owned(),
            sha256: Digest::of(&state_bytes).to_string(),
            size: state_bytes.len() as u64,
        },
        Entry { path: crate::resume::TENSORS_FILE.to_owned(), sha256: tensors_sha256.to_string(), size: tensors_size },
    ];
    files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(Manifest { format: manifest::FORMAT, kind: ManifestKind::Dir, source, files })
}

/// Moves the (flat) checkpoint directory `from` to `to`: a rename, or a copy across
/// filesystems, the state file last. Returns the bytes moved.
fn move_dir(from: &Path, to: &Path) -> std::io::Result<u64> {
    if let Some(parent) = to.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let bytes = crate::resume::FILES
        .iter()
        .map(|name| std::fs::metadata(from.join(name)).map(|m| m.len()))
        .sum::<std::io::Result<u64>>()?;
    if std::fs::rename(from, to).is_ok() {
        return Ok(bytes);
    }
    std::fs::create_dir_all(to)?;
    for name in crate::resume::FILES {
        std::fs::copy(from.join(name), to.join(name))?;
    }
    Ok(bytes)
}

fn remove_dir(dir: &Path) {
    if let Err(e) = std::fs::remove_dir_all(dir) {
        if e.kind() != std::io::ErrorKind::NotFound {
            warn!("could not delete checkpoint {}: {e}", dir.display());
        }
    }
}

/// `<base>/<study>/<number>/checkpoints`: where a trial's checkpoints go in object storage.
fn trial_prefix(base: &str, a: &Assignment) -> String {
    format!("{base}/{}/{}/checkpoints", a.study, a.number)
}

/// Fetches an assignment's checkpoint, if it has one, into `staging/resume`; `None` (with a
/// warning) when it cannot be had, so the trial starts from epoch 1.
pub async fn fetch_resume(store: Option<&CheckpointStore>, a: &Assignment, staging: &Path) -> Option<PathBuf> {
    let (reference, epoch) = a.resume()?;
    let Some(store) = store else {
        warn!(trial = %a.label(), "the trial has a checkpoint after epoch {epoch}, but this worker keeps no shared artifacts; starting from epoch 1");
        return None;
    };
    let dest = staging.join("resume");
    let started = Instant::now();
    match store.fetch(&reference, &dest).await {
        Ok(()) => {
            info!(trial = %a.label(), "checkpoint after epoch {epoch} fetched in {:.2?}", started.elapsed());
            Some(dest)
        }
        Err(e) => {
            warn!(trial = %a.label(), "cannot fetch the checkpoint after epoch {epoch} ({reference}): {e}; starting from epoch 1");
            let _ = std::fs::remove_dir_all(&dest);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resume::{ResumeState, STATE_FILE, TENSORS_FILE};

    fn write_checkpoint(dir: &Path, tensors: &[u8], recorded: &str) {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join(TENSORS_FILE), tensors).unwrap();
        let state = ResumeState {
            format: crate::resume::FORMAT,
            fingerprint: "f".into(),
            epoch: 1,
            steps: 3,
            best_epoch: 1,
            best_value: 0.5,
            best_metrics: Default::default(),
            last_metrics: Default::default(),
            has_best_weights: false,
            tensors_sha256: recorded.to_owned(),
        };
        std::fs::write(dir.join(STATE_FILE), serde_json::to_vec_pretty(&state).unwrap()).unwrap();
    }

    #[test]
    fn the_manifest_from_the_recorded_digest_is_the_hashed_one() {
        let dir = tempfile::tempdir().unwrap();
        let tensors = b"not really safetensors, but bytes all the same".to_vec();
        write_checkpoint(dir.path(), &tensors, &Digest::of(&tensors).to_string());
        let ours = checkpoint_manifest(dir.path(), "here".into()).unwrap();
        let hashed = Manifest::of_path(dir.path(), "here".into()).unwrap();
        assert_eq!(ours, hashed);
        assert_eq!(ours.digest(), hashed.digest(), "the same blob name either way");
    }

    #[test]
    fn a_checkpoint_without_a_usable_state_has_no_manifest() {
        let dir = tempfile::tempdir().unwrap();
        write_checkpoint(dir.path(), b"x", "not a digest");
        let err = checkpoint_manifest(dir.path(), "here".into()).unwrap_err();
        assert!(err.contains(STATE_FILE) && !err.contains('\n'), "{err}");
        std::fs::remove_file(dir.path().join(STATE_FILE)).unwrap();
        assert!(checkpoint_manifest(dir.path(), "here".into()).unwrap_err().contains(STATE_FILE));
    }
}
