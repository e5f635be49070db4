//! Content-addressed blobs on disk, shared by the coordinator's store and the worker's cache:
//!
//! ```text
//! <root>/sha256/<first 2 hex>/<64 hex>   one file per blob, named by its content's sha256
//! <root>/tmp/                            uploads and downloads in flight
//! ```
//!
//! A blob is written to `tmp/`, hashed as it arrives, and renamed into place only when digest and
//! size match, so a reader never sees a half-written blob: a process killed mid-transfer leaves
//! at most a file in `tmp/`.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rand::Rng;
use tokio::io::AsyncWriteExt;

use crate::digest::{hash_file, Hasher};
use crate::manifest::{Manifest, ManifestError};
use crate::Digest;

/// A directory of blobs.
#[derive(Debug, Clone)]
pub struct BlobDir {
    root: PathBuf,
}

/// Why a blob could not be written.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The disk refused.
    #[error("writing {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// More bytes arrived than announced.
    #[error("more than the announced {expected} bytes arrived")]
    TooLong {
        /// Announced size.
        expected: u64,
    },
    /// The content does not hash to the announced digest (or has another size).
    #[error("content does not match: expected sha256 {expected} ({expected_size} bytes), got {actual} ({actual_size} bytes)")]
    Mismatch {
        /// Announced digest.
        expected: Digest,
        /// Announced size.
        expected_size: u64,
        /// What arrived.
        actual: Digest,
        /// How many bytes arrived.
        actual_size: u64,
    },
}

impl BlobDir {
    /// Opens (creating) a blob directory.
    pub fn open(root: impl Into<PathBuf>) -> std::io::Result<Self> {
        let root = root.into();
        std::fs::create_dir_all(root.join("sha256"))?;
        std::fs::create_dir_all(root.join("tmp"))?;
        Ok(BlobDir { root })
    }

    /// The directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where the blob lives (whether or not it is there).
    pub fn path(&self, d: &Digest) -> PathBuf {
        let hex = d.to_string();
        self.root.join("sha256").join(&hex[..2]).join(hex)
    }

    /// Whether the blob is present (not verified).
    pub fn contains(&self, d: &Digest) -> bool {
        self.path(d).is_file()
    }

    /// Marks a present blob as just used (its modification time becomes now), so a sweep of
    /// old unreferenced blobs spares it for a grace period; false when it is missing.
    pub fn touch(&self, d: &Digest) -> bool {
        std::fs::File::options()
            .write(true)
            .open(self.path(d))
            .and_then(|f| f.set_modified(std::time::SystemTime::now()))
            .is_ok()
    }

    /// Size of a present blob.
    pub fn size(&self, d: &Digest) -> Option<u64> {
        std::fs::metadata(self.path(d)).ok().filter(|m| m.is_file()).map(|m| m.len())
    }

    /// Re-hashes a present blob (blocking); false when missing or corrupted.
    pub fn verify(&self, d: &Digest) -> bool {
        matches!(hash_file(&self.path(d)), Ok((actual, _)) if actual == *d)
    }

    /// Moves a blob out of the store into `<root>/quarantine/<hex>` (replacing an earlier
    /// quarantined copy of the same digest, so the folder holds at most one file per digest);
    /// `None` when it was not there.
    pub fn quarantine(&self, d: &Digest) -> std::io::Result<Option<PathBuf>> {
        let folder = self.root.join("quarantine");
        std::fs::create_dir_all(&folder)?;
        let to = folder.join(d.to_string());
        match std::fs::rename(self.path(d), &to) {
            Ok(()) => Ok(Some(to)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Deletes a blob (missing is fine).
    pub fn remove(&self, d: &Digest) -> std::io::Result<()> {
        match std::fs::remove_file(self.path(d)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// A fresh path under `tmp/`.
    pub fn temp_path(&self, what: &str) -> PathBuf {
        let tag: u64 = rand::thread_rng().gen();
        self.root.join("tmp").join(format!("{what}.{}.{tag:016x}.part", std::process::id()))
    }

    /// Starts writing a blob that should hash to `digest` and be `size` bytes long.
    pub async fn writer(&self, digest: Digest, size: u64) -> Result<BlobWriter, WriteError> {
        let path = self.temp_path(&digest.short());
        let file =
            tokio::fs::File::create(&path).await.map_err(|source| WriteError::Io { path: path.clone(), source })?;
        Ok(BlobWriter { dir: self.clone(), path, file: Some(file), hasher: Hasher::default(), digest, size })
    }

    /// Stores bytes already in memory (manifests); returns their digest.
    pub async fn put_bytes(&self, bytes: &[u8]) -> Result<Digest, WriteError> {
        let digest = Digest::of(bytes);
        if !self.contains(&digest) {
            let mut w = self.writer(digest, bytes.len() as u64).await?;
            w.write(bytes).await?;
            w.finish().await?;
        }
        Ok(digest)
    }

    /// Reads and validates a manifest blob.
    pub fn read_manifest(&self, d: &Digest) -> Result<Manifest, ManifestError> {
        let path = self.path(d);
        let bytes = std::fs::read(&path).map_err(|source| ManifestError::Io { path, source })?;
        if Digest::of(&bytes) != *d {
            return Err(ManifestError::Invalid(format!("blob {} is corrupted", d.short())));
        }
        Manifest::parse(&bytes)
    }

    /// Every blob present and when it was last modified.
    pub fn list(&self) -> std::io::Result<Vec<(Digest, SystemTime)>> {
        let mut out = Vec::new();
        for shard in std::fs::read_dir(self.root.join("sha256"))? {
            let shard = shard?;
            if !shard.file_type()?.is_dir() {
                continue;
            }
            for item in std::fs::read_dir(shard.path())? {
                let item = item?;
                if let Some(d) = item.file_name().to_str().and_then(|n| n.parse::<Digest>().ok()) {
                    out.push((d, item.metadata()?.modified()?));
                }
            }
        }
        Ok(out)
    }

    /// Deletes the transfer files in `tmp/` ([`BlobDir::temp_path`]'s names, nothing else: a
    /// data directory pointed at a shared folder must not empty it) older than `age`
    /// (transfers a killed process left behind).
    pub fn clear_tmp(&self, age: Duration) -> std::io::Result<usize> {
        let mut removed = 0;
        let now = SystemTime::now();
        for item in std::fs::read_dir(self.root.join("tmp"))? {
            let item = item?;
            if !item.file_name().to_str().is_some_and(is_transfer_name) || !item.file_type()?.is_file() {
                continue;
            }
            let old = item.metadata()?.modified().map(|m| now.duration_since(m).unwrap_or_default() >= age)?;
            if old && std::fs::remove_file(item.path()).is_ok() {
                removed += 1;
            }
        }
        Ok(removed)
    }
}

/// Whether `name` is one [`BlobDir::temp_path`] makes for a blob: `<12 hex>.<pid>.<16 hex>.part`.
fn is_transfer_name(name: &str) -> bool {
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    let Some(stem) = name.strip_suffix(".part") else { return false };
    let parts: Vec<&str> = stem.split('.').collect();
    matches!(parts.as_slice(), [short, pid, tag]
        if hex(short, 12) && !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()) && hex(tag, 16))
}

/// A blob being written: hashed as it arrives, renamed into place by [`BlobWriter::finish`] only
/// when it matches. Dropped unfinished, its temporary file is deleted.
pub struct BlobWriter {
    dir: BlobDir,
    path: PathBuf,
    file: Option<tokio::fs::File>,
    hasher: Hasher,
    digest: Digest,
    size: u64,
}

impl BlobWriter {
    /// Bytes written so far (where a resumed download starts).
    pub fn written(&self) -> u64 {
        self.hasher.len()
    }

    /// Appends a chunk.
    pub async fn write(&mut self, bytes: &[u8]) -> Result<(), WriteError> {
        if self.hasher.len() + bytes.len() as u64 > self.size {
            return Err(WriteError::TooLong { expected: self.size });
        }
        self.hasher.update(bytes);
        let file = self.file.as_mut().expect("open until finished");
        file.write_all(bytes).await.map_err(|source| WriteError::Io { path: self.path.clone(), source })
    }

    /// Verifies digest and size, syncs, and renames the blob into place.
    pub async fn finish(mut self) -> Result<PathBuf, WriteError> {
        let (actual, actual_size) = std::mem::take(&mut self.hasher).finish();
        if actual != self.digest || actual_size != self.size {
            return Err(WriteError::Mismatch { expected: self.digest, expected_size: self.size, actual, actual_size });
        }
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| WriteError::Io { path, source }
        };
        let mut file = self.file.take().expect("open until finished");
        file.flush().await.map_err(io(&self.path))?;
        file.sync_all().await.map_err(io(&self.path))?;
        drop(file);
        let target = self.dir.path(&self.digest);
        if let Some(parent) = target.parent() {
            tokio::fs::create_dir_all(parent).await.map_err(io(parent))?;
        }
        tokio::fs::rename(&self.path, &target).await.map_err(io(&target))?;
        Ok(target)
    }
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        // Unfinished (or failed): never leave the partial file where it could be used.
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn only_matching_content_is_kept() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = BlobDir::open(tmp.path()).unwrap();
        let d = Digest::of(b"hello world");
        let mut w = dir.writer(d, 11).await.unwrap();
        w.write(b"hello ").await.unwrap();
        w.write(b"world").await.unwrap();
        let path = w.finish().await.unwrap();
        assert_eq!(std::fs::read(path).unwrap(), b"hello world");
        assert!(dir.contains(&d) && dir.verify(&d));

        let other = Digest::of(b"other");
        let mut w = dir.writer(other, 5).await.unwrap();
        w.write(b"OTHER").await.unwrap();
        assert!(matches!(w.finish().await, Err(WriteError::Mismatch { .. })));
        let mut w = dir.writer(other, 5).await.unwrap();
        assert!(matches!(w.write(b"toolong").await, Err(WriteError::TooLong { .. })));
        drop(w);
        assert!(!dir.contains(&other));
        assert_eq!(std::fs::read_dir(tmp.path().join("tmp")).unwrap().count(), 0, "no partial file left");
        assert_eq!(dir.list().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn clearing_tmp_removes_only_its_own_transfer_files() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = BlobDir::open(tmp.path()).unwrap();
        let ours = dir.temp_path(&Digest::of(b"x").short());
        std::fs::write(&ours, b"partial").unwrap();
        let theirs = tmp.path().join("tmp").join("someone-elses.txt");
        std::fs::write(&theirs, b"keep").unwrap();
        std::fs::create_dir(tmp.path().join("tmp").join("a-socket-dir")).unwrap();
        assert_eq!(dir.clear_tmp(Duration::ZERO).unwrap(), 1);
        assert!(!ours.exists() && theirs.exists() && tmp.path().join("tmp/a-socket-dir").exists());
        assert!(!is_transfer_name("0123456789ab.1.0123456789abcdef.part.x"));
    }
}
