//! Keeps the input cache under `--cache-max-size`: least recently used trees go first, never
//! one a trial (in this process or another sharing the cache) is using.
//!
//! Every laid-out tree has a lease file, `<cache>/leases/<manifest hex>`. A trial holds a
//! shared `flock` on it from before the manifest is fetched until the trial ends, and each
//! use sets the file's modification time, which orders trees by last use. Eviction takes the
//! lock exclusively without waiting (a held lease means "in use": skip it), deletes the tree
//! and then the lease file while still holding it. Blobs go when no remaining lease's manifest
//! names them; if some lease's manifest is not readable yet (its download is starting), no
//! blob is deleted in that pass.

use std::collections::HashSet;
use std::fs::{File, OpenOptions, TryLockError};
use std::io;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use bertsweep_transfer::blob_dir::BlobDir;
use bertsweep_transfer::Digest;

/// A trial's claim on one cached tree: held (shared) until dropped.
#[derive(Debug)]
pub struct TreeLease {
    _file: File,
}

/// Takes the shared lease on tree `d` (waiting while an eviction of it finishes) and marks
/// it used now.
pub fn lease(leases: &Path, d: &Digest) -> io::Result<TreeLease> {
    let path = leases.join(d.to_string());
    loop {
        let file = OpenOptions::new().create(true).truncate(false).write(true).open(&path)?;
        file.lock_shared()?;
        // An evictor may have deleted the file between our open and lock: then the lock is on
        // an orphaned inode, and the tree is gone; take a fresh file.
        if same_file(&file, &path) {
            file.set_modified(SystemTime::now())?;
            return Ok(TreeLease { _file: file });
        }
    }
}

fn same_file(file: &File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (file.metadata(), std::fs::metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// What one pruning pass did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Pruned {
    /// Trees deleted (least recently used first).
    pub trees: usize,
    /// Blobs deleted.
    pub blobs: usize,
    /// Bytes of blobs before the pass.
    pub bytes_before: u64,
    /// Bytes of blobs left.
    pub bytes_after: u64,
    /// Trees that would have gone but were in use.
    pub in_use: usize,
}

/// The cache's three places, as `inputs::Inputs` lays them out.
pub struct Layout<'a> {
    /// Verified blobs.
    pub blobs: &'a BlobDir,
    /// `trees/<manifest hex>/…`.
    pub trees: &'a Path,
    /// `leases/<manifest hex>`.
    pub leases: &'a Path,
}

/// Deletes least recently used trees not in use, and the blobs no remaining tree needs, until
/// the blobs take at most `max_bytes` (or nothing more can go).
pub fn prune(layout: &Layout<'_>, max_bytes: u64) -> io::Result<Pruned> {
    let sizes = blob_sizes(layout.blobs)?;
    let bytes_before: u64 = sizes.iter().map(|(_, size)| size).sum();
    let mut pruned = Pruned { bytes_before, bytes_after: bytes_before, ..Pruned::default() };
    if bytes_before <= max_bytes {
        return Ok(pruned);
    }
    adopt_unleased_trees(layout)?;
    // Oldest use first.
    let mut leases = lease_files(layout.leases)?;
    leases.sort_by_key(|(_, used)| *used);
    // What evicting each tree would free, as an estimate to stop early: its files' bytes.
    let mut estimate = bytes_before;
    for (d, _) in &leases {
        if estimate <= max_bytes {
            break;
        }
        match evict(layout, d)? {
            Eviction::Evicted(freed) => {
                pruned.trees += 1;
                estimate = estimate.saturating_sub(freed);
            }
            Eviction::InUse => pruned.in_use += 1,
            Eviction::Gone => {}
        }
    }
    // Blobs: keep what any remaining lease's manifest names.
    let mut keep = HashSet::new();
    for (d, _) in lease_files(layout.leases)? {
        match layout.blobs.read_manifest(&d) {
            Ok(manifest) => {
                keep.insert(d);
                keep.extend(manifest.files.iter().map(|f| f.digest()));
            }
            // A download is starting (lease taken, manifest not there yet): its files may be
            // among the blobs already present, so delete none this time.
            Err(_) => return Ok(pruned),
        }
    }
    let mut left = bytes_before;
    for (d, size) in sizes {
        if !keep.contains(&d) && layout.blobs.remove(&d).is_ok() {
            pruned.blobs += 1;
            left -= size;
        }
    }
    pruned.bytes_after = left;
    Ok(pruned)
}

enum Eviction {
    /// Deleted; the bytes its manifest lists.
    Evicted(u64),
    /// Someone holds its lease.
    InUse,
    /// Another pruning pass deleted it first.
    Gone,
}

fn evict(layout: &Layout<'_>, d: &Digest) -> io::Result<Eviction> {
    let path = layout.leases.join(d.to_string());
    let file = match OpenOptions::new().write(true).open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Eviction::Gone),
        Err(e) => return Err(e),
    };
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => return Ok(Eviction::InUse),
        Err(TryLockError::Error(e)) => return Err(e),
    }
    if !same_file(&file, &path) {
        return Ok(Eviction::Gone);
    }
    let freed = layout.blobs.read_manifest(d).map(|m| m.total_size()).unwrap_or(0);
    match std::fs::remove_dir_all(layout.trees.join(d.to_string())) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    std::fs::remove_file(&path)?;
    Ok(Eviction::Evicted(freed))
}

/// Trees laid out before leases existed get one, dated by the tree's own modification time.
fn adopt_unleased_trees(layout: &Layout<'_>) -> io::Result<()> {
    for item in std::fs::read_dir(layout.trees)? {
        let item = item?;
        let Some(d) = item.file_name().to_str().and_then(|n| n.parse::<Digest>().ok()) else { continue };
        let lease = layout.leases.join(d.to_string());
        if lease.exists() {
            continue;
        }
        let made = item.metadata()?.modified()?;
        OpenOptions::new().create(true).truncate(false).write(true).open(&lease)?.set_modified(made)?;
    }
    Ok(())
}

/// Every lease file and when its tree was last used.
fn lease_files(dir: &Path) -> io::Result<Vec<(Digest, SystemTime)>> {
    let mut out = Vec::new();
    for item in std::fs::read_dir(dir)? {
        let item = item?;
        if let Some(d) = item.file_name().to_str().and_then(|n| n.parse::<Digest>().ok()) {
            match item.metadata().and_then(|m| m.modified()) {
                Ok(used) => out.push((d, used)),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {} // evicted meanwhile
                Err(e) => return Err(e),
            }
        }
    }
    Ok(out)
}

/// Every blob and its size.
fn blob_sizes(blobs: &BlobDir) -> io::Result<Vec<(Digest, u64)>> {
    Ok(blobs.list()?.into_iter().filter_map(|(d, _)| blobs.size(&d).map(|size| (d, size))).collect())
}

/// `<cache>/leases`.
pub fn leases_dir(cache_dir: &Path) -> PathBuf {
    cache_dir.join("leases")
}
