//! Where a trial's inputs come from, on this worker:
//!
//! - `blob:sha256:…` — downloaded once from the coordinator into the cache (`--cache-dir`):
//!
//!   ```text
//!   <cache>/blobs/sha256/<2 hex>/<64 hex>   verified blobs (see bertsweep_transfer::blob_dir)
//!   <cache>/trees/<manifest hex>/…          the file or directory laid out (hard links to blobs)
//!   <cache>/leases/<manifest hex>            in use while locked; last used = its mtime
//!   <cache>/staging/…                        models exported here before they are uploaded
//!   ```
//!
//!   Device slots share the cache (one download per blob, behind a per-blob lock); every entry
//!   is re-hashed the first time this process uses it, and a corrupted one is downloaded again.
//!   With a size limit (`--cache-max-size`), least recently used trees that no trial holds
//!   go after each download ([`super::cache_prune`]).
//! - `worker:/path` and plain paths — opened here as they are.
//! - `hf:org/name[@rev]` — resolved through the Hugging Face cache ([`crate::hub`]).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bertsweep_transfer::blob_dir::BlobDir;
use bertsweep_transfer::remote::{materialize, Remote, RemoteError};
use bertsweep_transfer::{Digest, InputRef, Manifest, ManifestKind};
use tracing::{info, warn};

use super::cache_prune::{self, Pruned, TreeLease};
use crate::hub::{HubEnv, HubError};
use crate::train::TrialConfig;

/// Why an input could not be made available.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    /// Downloading from the coordinator failed.
    #[error("{field} = {reference}: {source}")]
    Transfer {
        /// Which task field.
        field: &'static str,
        /// Its reference.
        reference: String,
        /// Why.
        source: RemoteError,
    },
    /// A Hub model could not be resolved.
    #[error("{field}: {source}")]
    Hub {
        /// Which task field.
        field: &'static str,
        /// Why.
        source: HubError,
    },
    /// The reference is malformed or of the wrong kind.
    #[error("{field} = {reference}: {message}")]
    Invalid {
        /// Which task field.
        field: &'static str,
        /// Its reference.
        reference: String,
        /// What is wrong.
        message: String,
    },
    /// The cache directory failed.
    #[error("the input cache: {0}")]
    Cache(String),
}

impl InputError {
    /// Whether another attempt (here or on another worker) may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            InputError::Transfer { source, .. } => source.is_retryable(),
            InputError::Hub { source, .. } => matches!(source, HubError::Network { .. }),
            InputError::Invalid { .. } => false,
            InputError::Cache(_) => true,
        }
    }
}

/// The worker's input cache, shared by its device slots.
pub struct Inputs {
    blobs: BlobDir,
    trees: PathBuf,
    leases: PathBuf,
    staging: PathBuf,
    hub: HubEnv,
    /// Most bytes of blobs to keep (`--cache-max-size`); `None` keeps everything.
    max_bytes: Option<u64>,
    /// Manifests whose trees this process has verified (re-hashing them once per process).
    verified: Mutex<HashSet<Digest>>,
    /// One lock per manifest: slots wanting the same input wait for one download.
    locks: Mutex<HashMap<Digest, Arc<tokio::sync::Mutex<()>>>>,
}

/// `$XDG_CACHE_HOME/bertsweep`, else `~/.cache/bertsweep`.
pub fn default_cache_dir() -> PathBuf {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").filter(|v| !v.is_empty()).map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from(".cache"));
    base.join("bertsweep")
}

impl Inputs {
    /// Opens (creating) the cache; transfers a killed worker left behind an hour ago go.
    pub fn open(cache_dir: &Path, hub: HubEnv) -> std::io::Result<Self> {
        let blobs = BlobDir::open(cache_dir.join("blobs"))?;
        let _ = blobs.clear_tmp(Duration::from_secs(3600));
        let trees = cache_dir.join("trees");
        let leases = cache_prune::leases_dir(cache_dir);
        let staging = cache_dir.join("staging");
        std::fs::create_dir_all(&trees)?;
        std::fs::create_dir_all(&leases)?;
        std::fs::create_dir_all(&staging)?;
        Ok(Inputs {
            blobs,
            trees,
            leases,
            staging,
            hub,
            max_bytes: None,
            verified: Mutex::new(HashSet::new()),
            locks: Mutex::new(HashMap::new()),
        })
    }

    /// Keeps the downloaded inputs under `max_bytes` (least recently used trees not in use go).
    pub fn with_size_limit(mut self, max_bytes: Option<u64>) -> Self {
        self.max_bytes = max_bytes;
        self
    }

    /// Enforces the size limit, if any: deletes least recently used trees that no trial
    /// holds and the blobs no remaining tree needs. `None` when there is no limit.
    pub async fn prune(&self) -> Option<std::io::Result<Pruned>> {
        let max = self.max_bytes?;
        let (blobs, trees, leases) = (self.blobs.clone(), self.trees.clone(), self.leases.clone());
        let layout =
            move || cache_prune::prune(&cache_prune::Layout { blobs: &blobs, trees: &trees, leases: &leases }, max);
        Some(tokio::task::spawn_blocking(layout).await.unwrap_or_else(|e| Err(std::io::Error::other(e))))
    }

    /// A fresh directory path for exporting a model before it is uploaded.
    pub fn staging_dir(&self, label: &str) -> PathBuf {
        let tag: u64 = rand::random();
        self.staging.join(format!("{label}.{tag:016x}"))
    }

    fn lock_for(&self, d: Digest) -> Arc<tokio::sync::Mutex<()>> {
        self.locks.lock().unwrap_or_else(|p| p.into_inner()).entry(d).or_default().clone()
    }

    /// Makes `reference` (the value of task field `field`) available here and returns its
    /// path, with the cache lease that keeps it there while the result is held.
    pub async fn resolve(&self, remote: &Remote, field: &'static str, reference: &str) -> Result<Resolved, InputError> {
        let invalid = |message: String| InputError::Invalid { field, reference: reference.into(), message };
        let unleased = |path: PathBuf| Resolved { path, _lease: None };
        match InputRef::parse(reference).map_err(|e| invalid(e.to_string()))? {
            InputRef::Worker(p) | InputRef::Path(p) => Ok(unleased(PathBuf::from(p))),
            InputRef::Hub { repo, revision } => {
                let env = self.hub.clone();
                tokio::task::spawn_blocking(move || crate::hub::resolve(&env, &repo, revision.as_deref()))
                    .await
                    .map_err(|e| InputError::Cache(e.to_string()))?
                    .map_err(|source| InputError::Hub { field, source })
                    .map(unleased)
            }
            InputRef::Blob(d) => {
                let transfer = |source| InputError::Transfer { field, reference: reference.into(), source };
                let want = if field == "task.model" { ManifestKind::Dir } else { ManifestKind::File };
                let leases = self.leases.clone();
                let lease = tokio::task::spawn_blocking(move || cache_prune::lease(&leases, &d))
                    .await
                    .map_err(|e| InputError::Cache(e.to_string()))?
                    .map_err(|e| InputError::Cache(format!("leasing {}: {e}", d.short())))?;
                let (tree, manifest) = self.tree(remote, d).await.map_err(transfer)?;
                if manifest.kind != want {
                    return Err(invalid(format!("names a {:?} where a {want:?} is needed", manifest.kind)));
                }
                let path = match manifest.kind {
                    ManifestKind::File => tree.join(&manifest.files[0].path),
                    ManifestKind::Dir => tree,
                };
                Ok(Resolved { path, _lease: Some(lease) })
            }
        }
    }

    /// Makes a trial's inputs local: downloads its `blob:` inputs into the cache, resolves
    /// `hf:` models; paths stay as they are. Returns the config with local paths and the
    /// inputs' cache leases, then brings the cache back under its size limit (this trial's
    /// inputs are spared).
    pub async fn resolve_trial(
        &self,
        remote: &Remote,
        mut cfg: TrialConfig,
    ) -> Result<(TrialConfig, Vec<Resolved>), InputError> {
        let text = |p: &PathBuf| p.to_string_lossy().into_owned();
        let model = self.resolve(remote, "task.model", &text(&cfg.model_dir)).await?;
        let train = self.resolve(remote, "task.train_file", &text(&cfg.train_file)).await?;
        cfg.model_dir = model.path.clone();
        cfg.train_file = train.path.clone();
        let mut resolved = vec![model, train];
        // Under cross-validation the validation split is a fold of the training file.
        if cfg.folds.is_none() {
            let validation = self.resolve(remote, "task.validation_file", &text(&cfg.validation_file)).await?;
            cfg.validation_file = validation.path.clone();
            resolved.push(validation);
        }
        if let Some(test_file) = &cfg.test_file {
            let test = self.resolve(remote, "task.test_file", &text(test_file)).await?;
            cfg.test_file = Some(test.path.clone());
            resolved.push(test);
        }
        match self.prune().await {
            Some(Ok(p)) if p.trees > 0 || p.blobs > 0 => info!(
                trees = p.trees,
                blobs = p.blobs,
                in_use = p.in_use,
                "input cache pruned: {} → {}",
                bertsweep_transfer::human_bytes(p.bytes_before),
                bertsweep_transfer::human_bytes(p.bytes_after)
            ),
            Some(Ok(p)) if p.bytes_after > self.max_bytes.unwrap_or(u64::MAX) => warn!(
                in_use = p.in_use,
                "input cache holds {}, over --cache-max-size: everything left is in use",
                bertsweep_transfer::human_bytes(p.bytes_after)
            ),
            Some(Err(e)) => warn!("pruning the input cache: {e}"),
            _ => {}
        }
        Ok((cfg, resolved))
    }

    /// The laid-out tree of manifest `d`, downloading (or repairing) it as needed. The caller
    /// holds its lease.
    async fn tree(&self, remote: &Remote, d: Digest) -> Result<(PathBuf, Manifest), RemoteError> {
        let lock = self.lock_for(d);
        let _one_download = lock.lock().await;
        let tree = self.trees.join(d.to_string());
        let manifest = match self.blobs.read_manifest(&d) {
            Ok(m) => m,
            Err(_) => {
                // Missing or corrupted: nothing laid out from it can be trusted either.
                let _ = self.blobs.remove(&d);
                let _ = std::fs::remove_dir_all(&tree);
                remote.fetch_manifest(&self.blobs, d).await?
            }
        };
        let seen = self.verified.lock().unwrap_or_else(|p| p.into_inner()).contains(&d);
        if tree.exists() && !seen {
            let (blobs, tree_path, m) = (self.blobs.clone(), tree.clone(), manifest.clone());
            let intact = tokio::task::spawn_blocking(move || check_tree(&blobs, &tree_path, &m)).await.unwrap_or(false);
            if !intact {
                warn!(blob = %d.short(), "corrupted cache entry; downloading it again");
                let _ = std::fs::remove_dir_all(&tree);
            }
        }
        if !tree.exists() {
            let started = std::time::Instant::now();
            // Twice at most: a pruning pass elsewhere may delete a blob this download found
            // present (reused from another tree) before it is linked into this one.
            for attempt in 0..2 {
                remote.fetch_files(&self.blobs, &manifest).await?;
                match materialize(&self.blobs, &manifest, &tree) {
                    Ok(()) => break,
                    // Another worker process sharing the cache may have laid it out first.
                    Err(_) if tree.exists() => break,
                    Err(e) if attempt == 1 => return Err(e),
                    Err(_) => {}
                }
            }
            info!(
                blob = %d.short(),
                files = manifest.files.len(),
                "input ready ({} in {:.1?})",
                bertsweep_transfer::human_bytes(manifest.total_size()),
                started.elapsed()
            );
        }
        self.verified.lock().unwrap_or_else(|p| p.into_inner()).insert(d);
        Ok((tree, manifest))
    }
}

/// A resolved input: where it is, and (for cached `blob:` inputs) the lease that keeps the
/// cache from evicting it while this value lives.
#[derive(Debug)]
pub struct Resolved {
    /// The file or directory.
    pub path: PathBuf,
    _lease: Option<TreeLease>,
}

/// Re-hashes every file of a laid-out tree; a mismatching one is deleted with its blob (they
/// share the inode) so it is downloaded again.
fn check_tree(blobs: &BlobDir, tree: &Path, manifest: &Manifest) -> bool {
    let mut intact = true;
    for f in &manifest.files {
        let path = tree.join(&f.path);
        let ok =
            matches!(bertsweep_transfer::digest::hash_file(&path), Ok((d, size)) if d == f.digest() && size == f.size);
        if !ok {
            intact = false;
            let _ = std::fs::remove_file(&path);
            if !blobs.verify(&f.digest()) {
                let _ = blobs.remove(&f.digest());
            }
        }
    }
    intact
}
