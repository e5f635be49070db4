//! The coordinator's blob store: study inputs and kept trial models, content-addressed under a
//! data directory next to the database (`<db>.data/` unless `serve --data-dir` says otherwise;
//! layout in [`bertsweep_transfer::blob_dir`]).
//!
//! A blob stays as long as something refers to it: a study's `blob:` input, or a trial's kept
//! model — through the manifest that lists it. [`BlobStore::collect`] deletes the rest: at
//! start-up and then periodically (blobs older than a grace period, so an upload whose study
//! is not yet created survives), and at once for the blobs of models pushed out of a study's
//! top K.
//!
//! Collection fails closed: a pass that cannot read every root's manifest deletes nothing
//! (logged, counted in `bertsweep_blob_collections_refused_total`), and roots are read under
//! the same lock that deletes, while the handlers that check a blob and then commit a reference
//! to it hold that lock shared ([`BlobStore::referencing`]).
//!
//! Stored blobs are verified before they are vouched for: `FindMissingBlobs` and a duplicate
//! upload re-hash a blob unless it was verified at its current modification time, and
//! `DownloadBlob` hashes what it streams. A blob that does not match its digest is moved to
//! `<data dir>/quarantine/` and reads as missing from then on, so the next upload repairs it.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bertsweep_transfer::blob_dir::BlobDir;
use bertsweep_transfer::{human_bytes, Digest, Manifest, ManifestKind};
use tracing::{info, warn};

use crate::error::CoordinatorError;

/// Largest blob accepted when `serve --max-blob-size` is not given.
pub const DEFAULT_MAX_BLOB_BYTES: u64 = 4 << 30;

/// `serve --min-free-space` when not given: 1 GiB, or 5 % of a smaller data disk.
pub const DEFAULT_MIN_FREE_BYTES: u64 = 1 << 30;

/// How long an unreferenced blob is kept (an upload whose study or completion is on its way).
pub const ORPHAN_GRACE: Duration = Duration::from_secs(3600);

/// Blobs on the coordinator's disk.
pub struct BlobStore {
    dir: BlobDir,
    /// Uploads larger than this are refused.
    pub max_blob_bytes: u64,
    /// Collections hold it exclusively while they read the roots and delete; handlers hold it
    /// shared from checking that a blob is here to committing their reference to it.
    refs: tokio::sync::RwLock<()>,
    /// Blobs known to match their digest, with the modification time they had then: one that
    /// changed since is hashed again before it is vouched for.
    verified: std::sync::Mutex<HashMap<Digest, SystemTime>>,
    /// Free space an upload may not take the data disk below (the database shares the disk
    /// and must still commit).
    min_free_bytes: u64,
    /// Bytes promised to uploads in flight, not yet on disk.
    reserved: std::sync::atomic::AtomicU64,
    /// Roots kept from every collection while a backup's caller downloads them, by pin.
    pins: Arc<std::sync::Mutex<Pins>>,
}

/// The pinned roots, by pin id.
#[derive(Default)]
struct Pins {
    next: u64,
    roots: HashMap<u64, Vec<Digest>>,
}

/// Keeps roots (and what their manifests list) from garbage collection until dropped.
pub struct Pin {
    pins: Arc<std::sync::Mutex<Pins>>,
    id: u64,
}

impl Drop for Pin {
    fn drop(&mut self) {
        lock_pins(&self.pins).roots.remove(&self.id);
    }
}

fn lock_pins(pins: &std::sync::Mutex<Pins>) -> std::sync::MutexGuard<'_, Pins> {
    pins.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The blobs a set of roots reaches, for a backup's list.
#[derive(Debug, Default)]
pub struct Referenced {
    /// Present blobs (manifests and the files they list) with their sizes, in digest order.
    pub present: Vec<(Digest, u64)>,
    /// Referenced but not here (a manifest or listed file missing, or unreadable).
    pub missing: Vec<Digest>,
}

/// Space promised to one upload until it ends.
pub struct SpaceReservation<'a> {
    store: &'a BlobStore,
    bytes: u64,
}

impl Drop for SpaceReservation<'_> {
    fn drop(&mut self) {
        self.store.reserved.fetch_sub(self.bytes, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Whether a stored blob can be vouched for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    /// Present and matching its digest.
    Intact,
    /// Not here (or just quarantined because it did not match).
    Missing,
}

/// A root whose manifest could not be read: the collection that met it deleted nothing.
#[derive(Debug)]
struct UnreadableRoot {
    digest: Digest,
    why: String,
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
        let min_free_bytes = match disk_space(root) {
            Ok((_, total)) => DEFAULT_MIN_FREE_BYTES.min(total / 20),
            Err(_) => DEFAULT_MIN_FREE_BYTES,
        };
        Ok(BlobStore {
            dir,
            max_blob_bytes,
            refs: tokio::sync::RwLock::new(()),
            verified: std::sync::Mutex::new(HashMap::new()),
            min_free_bytes,
            reserved: std::sync::atomic::AtomicU64::new(0),
            pins: Arc::default(),
        })
    }

    /// Keeps `roots` (manifests and the files they list) from every collection until the
    /// returned pin is dropped: a backup's blobs stay while its caller downloads them.
    pub fn pin(&self, roots: Vec<Digest>) -> Pin {
        let mut pins = lock_pins(&self.pins);
        pins.next += 1;
        let id = pins.next;
        pins.roots.insert(id, roots);
        Pin { pins: self.pins.clone(), id }
    }

    /// Every pinned root still here (a missing one would stop a collection's pass).
    fn pinned(&self) -> Vec<Digest> {
        let roots: Vec<Digest> = lock_pins(&self.pins).roots.values().flatten().copied().collect();
        roots.into_iter().filter(|d| self.dir.contains(d)).collect()
    }

    /// The blobs `roots` reach (blocking: reads manifests), present ones with their sizes.
    pub fn referenced(&self, roots: &[Digest]) -> Referenced {
        let mut seen = HashSet::new();
        let mut out = Referenced::default();
        let mut note = |d: Digest, out: &mut Referenced| {
            if seen.insert(d) {
                match self.dir.size(&d) {
                    Some(size) => out.present.push((d, size)),
                    None => out.missing.push(d),
                }
            }
        };
        for root in roots {
            note(*root, &mut out);
            if let Ok(manifest) = self.dir.read_manifest(root) {
                for file in &manifest.files {
                    note(file.digest(), &mut out);
                }
            }
        }
        out.present.sort_unstable_by_key(|(d, _)| d.to_string());
        out.missing.sort_unstable_by_key(|d| d.to_string());
        out
    }

    /// Sets the free space uploads must leave on the data disk (`serve --min-free-space`).
    pub fn with_min_free_space(mut self, bytes: u64) -> Self {
        self.min_free_bytes = bytes;
        self
    }

    /// (free, total) bytes of the data disk, as the coordinator's user may use them.
    pub fn disk_space(&self) -> std::io::Result<(u64, u64)> {
        disk_space(self.dir.root())
    }

    /// The free space uploads must leave on the data disk.
    pub fn min_free_bytes(&self) -> u64 {
        self.min_free_bytes
    }

    /// Promises `size` bytes to an upload, or says in one line why the disk cannot take them
    /// (what is free, what must stay free, and what to do).
    pub fn reserve(&self, size: u64) -> Result<SpaceReservation<'_>, String> {
        use std::sync::atomic::Ordering;
        let (free, _) = disk_space(self.dir.root())
            .map_err(|e| format!("cannot read the free space of {}: {e}", self.dir.root().display()))?;
        let promised = self.reserved.fetch_add(size, Ordering::SeqCst) + size;
        let reservation = SpaceReservation { store: self, bytes: size };
        if free.saturating_sub(promised - size) < size.saturating_add(self.min_free_bytes) {
            return Err(format!(
                "the coordinator's data disk has {} free ({} promised to uploads in flight) and must keep {} free (serve --min-free-space) for its database; this upload of {} would go below that: free space on the coordinator or delete studies' inputs there",
                human_bytes(free),
                human_bytes(promised - size),
                human_bytes(self.min_free_bytes),
                human_bytes(size)
            ));
        }
        Ok(reservation)
    }

    /// Held (shared) from checking that blobs are here to committing a reference to them, so
    /// no collection reads the roots and deletes in between.
    pub async fn referencing(&self) -> tokio::sync::RwLockReadGuard<'_, ()> {
        self.refs.read().await
    }

    fn verified(&self) -> std::sync::MutexGuard<'_, HashMap<Digest, SystemTime>> {
        self.verified.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records that the blob `d` matches its digest as it is on disk now.
    pub fn mark_verified(&self, d: &Digest) {
        if let Ok(modified) = std::fs::metadata(self.dir.path(d)).and_then(|m| m.modified()) {
            self.verified().insert(*d, modified);
        }
    }

    /// Whether the blob `d` is here and matches its digest (blocking: it may hash the file).
    /// One that does not match is quarantined and reads as missing from then on.
    pub fn check_stored(&self, d: &Digest) -> Stored {
        let Ok(modified) = std::fs::metadata(self.dir.path(d)).and_then(|m| m.modified()) else {
            self.verified().remove(d);
            return Stored::Missing;
        };
        if self.verified().get(d) == Some(&modified) {
            return Stored::Intact;
        }
        if self.dir.verify(d) {
            self.verified().insert(*d, modified);
            return Stored::Intact;
        }
        if self.dir.contains(d) {
            self.quarantine(d, "it does not match its sha256");
        }
        Stored::Missing
    }

    /// Moves a blob that does not match its digest out of the store (to `quarantine/`, one
    /// copy per digest), logs it and counts it; it reads as missing from then on.
    pub fn quarantine(&self, d: &Digest, why: &str) {
        self.verified().remove(d);
        match self.dir.quarantine(d) {
            Ok(Some(to)) => {
                warn!(blob = %d, "blob quarantined ({why}): moved to {}; the next upload of it repairs it", to.display())
            }
            Ok(None) => {}
            Err(e) => warn!(blob = %d, "blob {why}, and quarantining it failed: {e}"),
        }
        crate::telemetry::blob_corrupt();
    }

    /// Marks a present blob as just used (see [`BlobDir::touch`]), keeping what is known of
    /// its integrity; false when it is missing.
    pub fn touch(&self, d: &Digest) -> bool {
        let before = std::fs::metadata(self.dir.path(d)).and_then(|m| m.modified()).ok();
        if !self.dir.touch(d) {
            return false;
        }
        let mut verified = self.verified();
        if before.is_some() && verified.get(d) == before.as_ref() {
            if let Ok(now) = std::fs::metadata(self.dir.path(d)).and_then(|m| m.modified()) {
                verified.insert(*d, now);
            }
        }
        true
    }

    /// Re-hashes every stored blob, quarantining those that do not match (blocking; `serve
    /// --verify-blobs` runs it at start-up). Returns (blobs checked, blobs quarantined).
    pub fn verify_all(&self) -> std::io::Result<(usize, usize)> {
        let mut bad = 0;
        let all = self.dir.list()?;
        for (d, _) in &all {
            if self.check_stored(d) == Stored::Missing {
                bad += 1;
            }
        }
        Ok((all.len(), bad))
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

    /// Deletes those of `candidates` (manifests, with the files they list) that the roots no
    /// longer reach, whatever their age: the models a study just pushed out of its top K.
    /// `roots` is read under the collection lock; a root that cannot be read stops the pass.
    pub async fn collect_only(&self, roots: impl FnOnce() -> Vec<Digest>, candidates: Vec<Digest>) -> usize {
        let _exclusive = self.refs.write().await;
        let dir = self.dir.clone();
        let mut roots = roots();
        roots.extend(self.pinned());
        let run = tokio::task::spawn_blocking(move || -> std::io::Result<Result<usize, UnreadableRoot>> {
            let live = match reachable(&dir, roots) {
                Ok(live) => live,
                Err(unreadable) => return Ok(Err(unreadable)),
            };
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
            Ok(Ok(deleted))
        });
        match run.await {
            Ok(Ok(Ok(n))) => {
                info!(blobs = n, "deleted the blobs of models no longer kept");
                n
            }
            Ok(Ok(Err(unreadable))) => {
                refused(&unreadable);
                0
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

    /// Deletes every blob not reachable from the roots (manifests and the files they list)
    /// whose last change is older than `grace`; returns how many were deleted. `roots` is read
    /// under the collection lock; a root that cannot be read stops the pass (nothing deleted).
    pub async fn collect(&self, roots: impl FnOnce() -> Vec<Digest>, grace: Duration) -> usize {
        let _exclusive = self.refs.write().await;
        let dir = self.dir.clone();
        let mut roots = roots();
        roots.extend(self.pinned());
        let run = tokio::task::spawn_blocking(move || -> std::io::Result<Result<(usize, u64), UnreadableRoot>> {
            let live = match reachable(&dir, roots) {
                Ok(live) => live,
                Err(unreadable) => return Ok(Err(unreadable)),
            };
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
            Ok(Ok((deleted, freed)))
        });
        match run.await {
            Ok(Ok(Ok((deleted, freed)))) => {
                if deleted > 0 {
                    info!(blobs = deleted, "deleted unreferenced blobs ({})", human_bytes(freed));
                }
                deleted
            }
            Ok(Ok(Err(unreadable))) => {
                refused(&unreadable);
                0
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

/// (free, total) bytes of the filesystem holding `path`, as an unprivileged user may use them.
fn disk_space(path: &Path) -> std::io::Result<(u64, u64)> {
    let st = rustix::fs::statvfs(path)?;
    Ok((st.f_bavail.saturating_mul(st.f_frsize), st.f_blocks.saturating_mul(st.f_frsize)))
}

/// A collection met a root it cannot read: logged and counted; it deleted nothing.
fn refused(unreadable: &UnreadableRoot) {
    warn!(
        blob = %unreadable.digest,
        "blob collection deleted nothing: the manifest of referenced blob {} cannot be read ({}); the next pass proceeds once it can (upload it again to repair it)",
        unreadable.digest.short(),
        unreadable.why
    );
    crate::telemetry::collection_refused();
}

/// The roots and every file their manifests list; the first root whose manifest cannot be
/// read or parsed ends it (the caller then deletes nothing).
fn reachable(dir: &BlobDir, roots: Vec<Digest>) -> Result<HashSet<Digest>, UnreadableRoot> {
    let mut live = HashSet::new();
    for root in roots {
        if live.insert(root) {
            let m = dir.read_manifest(&root).map_err(|e| UnreadableRoot { digest: root, why: e.to_string() })?;
            live.extend(m.files.iter().map(|f| f.digest()));
        }
    }
    Ok(live)
}

#[cfg(test)]
mod tests;
