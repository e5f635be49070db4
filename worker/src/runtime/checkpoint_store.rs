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
use bertsweep_transfer::object::ObjectError;
use bertsweep_transfer::remote::{materialize, Remote, RemoteError};
use bertsweep_transfer::{human_bytes, Digest, InputRef, Manifest, ManifestKind};
use tracing::{info, warn};

use super::coordinator::Assignment;
use super::paths::UnsafePath;
use super::ArtifactSink;
use crate::training_checkpoint::{ResumeState, FILES, STATE_FILE, TENSORS_FILE};

/// Why a checkpoint could not be stored or fetched: the trial goes on (a retry would resume
/// from the previous checkpoint), or starts from epoch 1.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A local file or directory could not be read, written, copied or moved.
    #[error("{}: {error}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// The state file does not parse as a checkpoint's.
    #[error("{} is not a checkpoint state: {message}", path.display())]
    NotAState {
        /// The state file.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// The state file's record of the tensors' sha256 is not a digest.
    #[error("{}: {message}", path.display())]
    BadDigest {
        /// The state file.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// The trial's place on the shared filesystem cannot be built from its study name.
    #[error(transparent)]
    Path(#[from] UnsafePath),
    /// The coordinator's blob store failed.
    #[error("{0}")]
    Remote(RemoteError),
    /// Object storage failed.
    #[error("{0}")]
    Object(ObjectError),
    /// The reference is neither a blob, an object storage URL nor a shared path.
    #[error("{0:?} is neither a blob: reference nor an object storage URL")]
    NotAReference(String),
    /// A coordinator blob, and this worker stores its checkpoints elsewhere.
    #[error("a coordinator-stored checkpoint, and this worker keeps artifacts elsewhere")]
    ElsewhereStored,
    /// The blob names a single file, not a checkpoint directory.
    #[error("not a checkpoint directory")]
    NotADirectory,
}

/// `map_err` adapter: an I/O error on `path`.
fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |error| StoreError::Io { path: path.to_path_buf(), error }
}

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
    pub async fn put(&self, a: &Assignment, epoch: usize, dir: &Path) -> Result<String, StoreError> {
        let started = Instant::now();
        let source = format!("{}:trial {} epoch {epoch}", bertsweep_transfer::manifest::this_host(), a.label());
        let (reference, bytes) = match self {
            CheckpointStore::Coordinator(remote) => {
                let manifest = checkpoint_manifest(dir, source)?;
                let up = remote.upload_manifest(dir, manifest).await.map_err(StoreError::Remote)?;
                (format!("blob:sha256:{}", up.digest), up.manifest.total_size())
            }
            CheckpointStore::Object(base) => {
                let url = format!("{}/e{epoch}-{}", trial_prefix(base, a), a.lease.token);
                let manifest = checkpoint_manifest(dir, source)?;
                let manifest =
                    bertsweep_transfer::object::upload_dir_as(dir, &url, manifest).await.map_err(StoreError::Object)?;
                (url, manifest.total_size())
            }
            CheckpointStore::Local(base) => {
                let target = local_trial_dir(base, a)?.join(format!("e{epoch}-{}", a.lease.token));
                // Its manifest travels with it: deleting it later removes what this lists, only.
                let manifest = checkpoint_manifest(dir, source)?;
                let bytes = move_dir(dir, &target, &manifest).map_err(io(&target))?;
                (format!("worker:{}", target.display()), bytes)
            }
        };
        info!(trial = %a.label(), epoch, "checkpoint stored: {} in {:.2?} ({reference})", human_bytes(bytes), started.elapsed());
        Ok(reference)
    }

    /// Downloads `reference` into `dest` (which must not exist).
    pub async fn fetch(&self, reference: &str, dest: &Path) -> Result<(), StoreError> {
        if let Ok(InputRef::Worker(path)) = InputRef::parse(reference) {
            // On a shared filesystem: copied, so a deletion meanwhile cannot tear it.
            std::fs::create_dir_all(dest).map_err(io(dest))?;
            for name in FILES {
                let from = Path::new(&path).join(name);
                std::fs::copy(&from, dest.join(name)).map_err(io(&from))?;
            }
            return Ok(());
        }
        if bertsweep_transfer::object::is_object_url(reference) {
            bertsweep_transfer::object::download_dir(reference, dest).await.map_err(StoreError::Object)?;
            return Ok(());
        }
        let digest = match InputRef::parse(reference) {
            Ok(InputRef::Blob(d)) => d,
            _ => return Err(StoreError::NotAReference(reference.to_string())),
        };
        let remote = match self {
            CheckpointStore::Coordinator(remote) => remote,
            CheckpointStore::Object(_) | CheckpointStore::Local(_) => return Err(StoreError::ElsewhereStored),
        };
        let blobs_dir = dest.with_extension("blobs");
        let result = async {
            let blobs = BlobDir::open(&blobs_dir).map_err(io(&blobs_dir))?;
            let manifest = remote.fetch_manifest(&blobs, digest).await.map_err(StoreError::Remote)?;
            if manifest.kind != ManifestKind::Dir {
                return Err(StoreError::NotADirectory);
            }
            remote.fetch_files(&blobs, &manifest).await.map_err(StoreError::Remote)?;
            materialize(&blobs, &manifest, dest).map_err(StoreError::Remote)
        }
        .await;
        let _ = std::fs::remove_dir_all(&blobs_dir);
        result
    }

    /// Deletes a checkpoint of `a`'s trial this worker no longer needs from object storage or
    /// the shared filesystem (the coordinator deletes blobs itself): only a reference under
    /// this worker's own place for the trial, and only the files its manifest lists. Failures
    /// are logged only.
    pub async fn discard(&self, a: &Assignment, reference: &str) {
        match self {
            CheckpointStore::Object(base)
                if reference
                    .strip_prefix(&format!("{}/", trial_prefix(base, a)))
                    .is_some_and(|rest| is_checkpoint_dir_name(rest.trim_end_matches('/'))) =>
            {
                if let Err(e) = bertsweep_transfer::object::delete_dir(reference).await {
                    warn!("could not delete checkpoint {reference}: {e}");
                }
            }
            CheckpointStore::Local(base) => match (InputRef::parse(reference), local_trial_dir(base, a)) {
                (Ok(InputRef::Worker(path)), Ok(own))
                    if Path::new(&path).parent() == Some(own.as_path())
                        && Path::new(&path)
                            .file_name()
                            .and_then(|n| n.to_str())
                            .is_some_and(is_checkpoint_dir_name) =>
                {
                    remove_listed(Path::new(&path));
                }
                _ => warn!("checkpoint {reference} is not under this worker's {}; left alone", base.display()),
            },
            _ => {}
        }
    }

    /// Deletes every checkpoint of an ended trial from object storage or the shared filesystem,
    /// those a killed worker left behind included (the coordinator deletes blobs itself): each
    /// `e<epoch>-<lease>` directory under the trial's own place, by its manifest. Failures and
    /// directories without a manifest (an upload cut short) are logged only.
    pub async fn discard_trial(&self, a: &Assignment) {
        match self {
            CheckpointStore::Object(base) => {
                let prefix = trial_prefix(base, a);
                let dirs = match bertsweep_transfer::object::list_dirs(&prefix, MAX_CHECKPOINT_DIRS).await {
                    Ok(dirs) => dirs,
                    Err(e) => return warn!("could not list the checkpoints under {prefix}: {e}"),
                };
                for url in dirs.iter().filter(|u| is_checkpoint_dir_name(u.rsplit('/').next().unwrap_or(""))) {
                    if let Err(e) = bertsweep_transfer::object::delete_dir(url).await {
                        warn!("could not delete checkpoint {url}: {e}");
                    }
                }
            }
            CheckpointStore::Local(base) => {
                let Ok(dir) = local_trial_dir(base, a) else { return };
                let Ok(entries) = std::fs::read_dir(&dir) else { return };
                for entry in entries.flatten().take(MAX_CHECKPOINT_DIRS) {
                    let name = entry.file_name();
                    if name.to_str().is_some_and(is_checkpoint_dir_name) && entry.path().is_dir() {
                        remove_listed(&entry.path());
                    }
                }
                // Gone if now empty; never recursively.
                let _ = std::fs::remove_dir(&dir);
            }
            CheckpointStore::Coordinator(_) => {}
        }
    }
}

/// Most checkpoint directories one ended trial's clean-up looks at.
const MAX_CHECKPOINT_DIRS: usize = 1000;

/// `e<epoch>-<lease>`, the only directory names a trial's checkpoints have.
fn is_checkpoint_dir_name(name: &str) -> bool {
    name.strip_prefix('e').and_then(|rest| rest.split_once('-')).is_some_and(|(epoch, lease)| {
        !epoch.is_empty()
            && !lease.is_empty()
            && epoch.bytes().all(|b| b.is_ascii_digit())
            && lease.bytes().all(|b| b.is_ascii_digit())
    })
}

/// `<base>/<study>/<number>/checkpoints`, built from plain path components only.
fn local_trial_dir(base: &Path, a: &Assignment) -> Result<PathBuf, UnsafePath> {
    super::paths::join_inside(base, &[&a.study, &a.number.to_string(), "checkpoints"])
}

/// The manifest of the checkpoint in `dir` without reading its tensors again: `state.json`
/// records their sha256 (computed as they were written), so only the small state file is
/// hashed here. The coordinator checks every blob's digest as it receives it, so a wrong
/// record is refused, never stored.
fn checkpoint_manifest(dir: &Path, source: String) -> Result<Manifest, StoreError> {
    let state_path = dir.join(STATE_FILE);
    let state_bytes = std::fs::read(&state_path).map_err(io(&state_path))?;
    let state: ResumeState = serde_json::from_slice(&state_bytes)
        .map_err(|e| StoreError::NotAState { path: state_path.clone(), message: e.to_string() })?;
    let tensors_sha256: Digest = state
        .tensors_sha256
        .parse()
        .map_err(|e| StoreError::BadDigest { path: state_path.clone(), message: format!("{e}") })?;
    let tensors_path = dir.join(TENSORS_FILE);
    let tensors_size = std::fs::metadata(&tensors_path).map_err(io(&tensors_path))?.len();
    let mut files = vec![
        Entry {
            path: STATE_FILE.to_owned(),
            sha256: Digest::of(&state_bytes).to_string(),
            size: state_bytes.len() as u64,
        },
        Entry { path: TENSORS_FILE.to_owned(), sha256: tensors_sha256.to_string(), size: tensors_size },
    ];
    files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(Manifest { format: manifest::FORMAT, kind: ManifestKind::Dir, source, files })
}

/// Moves the (flat) checkpoint directory `from` to `to`: a rename, or a copy across
/// filesystems, the state file last; then writes `manifest` beside the files. Returns the
/// bytes moved.
fn move_dir(from: &Path, to: &Path, manifest: &Manifest) -> std::io::Result<u64> {
    if let Some(parent) = to.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let bytes =
        FILES.iter().map(|name| std::fs::metadata(from.join(name)).map(|m| m.len())).sum::<std::io::Result<u64>>()?;
    if std::fs::rename(from, to).is_err() {
        std::fs::create_dir_all(to)?;
        for name in FILES {
            std::fs::copy(from.join(name), to.join(name))?;
        }
    }
    std::fs::write(to.join(manifest::MANIFEST_NAME), manifest.to_bytes())?;
    Ok(bytes)
}

/// Deletes a local checkpoint directory by its manifest (see [`manifest::remove_listed`]).
fn remove_listed(dir: &Path) {
    if let Err(e) = manifest::remove_listed(dir) {
        warn!("checkpoint {} left alone: {e}", dir.display());
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
    // A location outside the trial's own place is neither read nor, later, deleted.
    if !reference.starts_with("blob:") {
        if let Err(e) =
            bertsweep_transfer::checkpoint_location::check(&reference, &a.study, a.number, epoch as u32, None)
        {
            warn!(trial = %a.label(), "{e}; starting from epoch 1");
            return None;
        }
    }
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

    fn write_checkpoint(dir: &Path, tensors: &[u8], recorded: &str) {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join(TENSORS_FILE), tensors).unwrap();
        let state = ResumeState {
            format: crate::training_checkpoint::FORMAT,
            fingerprint: "f".into(),
            epoch: 1,
            steps: 3,
            best_epoch: 1,
            best_value: 0.5,
            best_metrics: Default::default(),
            best_predictions: None,
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

    fn with_manifest(dir: &Path, files: &[(&str, &[u8])]) {
        std::fs::create_dir_all(dir).unwrap();
        for (name, bytes) in files {
            std::fs::write(dir.join(name), bytes).unwrap();
        }
        let m = Manifest::of_path(dir, "t".into()).unwrap();
        std::fs::write(dir.join(manifest::MANIFEST_NAME), m.to_bytes()).unwrap();
    }

    /// On a shared filesystem a worker deletes only its trial's own `e<epoch>-<lease>`
    /// directories, and of those only what their manifests list; a location outside the
    /// trial's own place is neither resumed from nor deleted.
    #[tokio::test]
    async fn a_worker_deletes_only_its_trials_own_checkpoints_by_their_manifests() {
        let root = tempfile::tempdir().unwrap();
        let base = root.path().join("shared");
        let store = CheckpointStore::Local(base.clone());
        let a = Assignment::for_test("s", 3, 77, None);
        let staging = root.path().join("staging");
        let tensors = b"tensors".to_vec();
        write_checkpoint(&staging, &tensors, &Digest::of(&tensors).to_string());
        let own = store.put(&a, 1, &staging).await.unwrap();
        let own_dir = base.join("s/3/checkpoints/e1-77");
        assert_eq!(own, format!("worker:{}", own_dir.display()));
        assert!(own_dir.join(manifest::MANIFEST_NAME).is_file(), "a local checkpoint carries its manifest");

        let trial_dir = base.join("s/3/checkpoints");
        with_manifest(&trial_dir.join("e2-5"), &[("state.json", b"{}")]);
        std::fs::create_dir_all(trial_dir.join("e3-9")).unwrap();
        std::fs::write(trial_dir.join("e3-9/state.json"), b"no manifest").unwrap();
        std::fs::write(trial_dir.join("notes.txt"), b"not a checkpoint").unwrap();
        let victim = root.path().join("etc");
        with_manifest(&victim, &[("passwd", b"root"), ("hosts", b"localhost")]);
        let other_trial = base.join("s/4/checkpoints/e1-77");
        with_manifest(&other_trial, &[("state.json", b"{}")]);

        for outside in [
            format!("worker:{}", victim.display()),
            "worker:/".to_string(),
            format!("worker:{}", other_trial.display()),
            format!("worker:{}/../../4/checkpoints/e1-77", own_dir.display()),
        ] {
            store.discard(&a, &outside).await;
            let resumed = Assignment::for_test("s", 3, 78, Some((outside.as_str(), 1)));
            assert!(fetch_resume(Some(&store), &resumed, &root.path().join("r")).await.is_none(), "{outside}");
        }
        assert_eq!(std::fs::read(victim.join("passwd")).unwrap(), b"root");
        assert!(other_trial.join("state.json").is_file());

        // Its own checkpoint is resumable, then deleted by its manifest.
        let resumed = Assignment::for_test("s", 3, 78, Some((own.as_str(), 1)));
        assert!(fetch_resume(Some(&store), &resumed, &root.path().join("r2")).await.is_some());
        store.discard(&a, &own).await;
        assert!(!own_dir.exists());
        store.discard_trial(&a).await;
        assert!(!trial_dir.join("e2-5").exists(), "a killed attempt's checkpoint, by its manifest");
        assert!(trial_dir.join("e3-9/state.json").is_file(), "no manifest: left alone");
        assert!(trial_dir.join("notes.txt").is_file(), "not a checkpoint directory: left alone");
        assert_eq!(std::fs::read(victim.join("hosts")).unwrap(), b"localhost");
        assert!(other_trial.join("state.json").is_file());
    }

    #[test]
    fn only_epoch_lease_names_are_checkpoint_directories() {
        for good in ["e1-5", "e12-123456789"] {
            assert!(is_checkpoint_dir_name(good), "{good}");
        }
        for bad in ["", "e", "e1", "e1-", "e-5", "x1-5", "e1-5x", "e1-5/..", ".."] {
            assert!(!is_checkpoint_dir_name(bad), "{bad}");
        }
    }

    #[test]
    fn a_checkpoint_without_a_usable_state_has_no_manifest() {
        let dir = tempfile::tempdir().unwrap();
        write_checkpoint(dir.path(), b"x", "not a digest");
        let err = checkpoint_manifest(dir.path(), "here".into()).unwrap_err().to_string();
        assert!(err.contains(STATE_FILE) && !err.contains('\n'), "{err}");
        std::fs::remove_file(dir.path().join(STATE_FILE)).unwrap();
        assert!(checkpoint_manifest(dir.path(), "here".into()).unwrap_err().to_string().contains(STATE_FILE));
    }
}
