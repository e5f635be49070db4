//! A file or a directory as content: every file's relative path, sha256 and size. The manifest
//! is itself stored as a blob; its digest is what `blob:sha256:…` references name.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::digest::hash_file;
use crate::Digest;

/// The manifest format this build writes and reads.
pub const FORMAT: u32 = 1;

/// Whether the reference names one file or a directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ManifestKind {
    /// One file (a data set): the manifest has exactly one entry.
    File,
    /// A directory (a model): every regular file under it.
    Dir,
}

/// One file of a manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Relative path with `/` separators; never absolute, never `..`.
    pub path: String,
    /// sha256 of the content, hex.
    pub sha256: String,
    /// Size in bytes.
    pub size: u64,
}

impl Entry {
    /// The parsed digest (validated when the manifest was parsed or built).
    pub fn digest(&self) -> Digest {
        self.sha256.parse().expect("validated digest")
    }
}

/// What a manifest blob holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// [`FORMAT`].
    pub format: u32,
    /// File or directory.
    pub kind: ManifestKind,
    /// Where it came from (`host:/path`), for people reading a study.
    pub source: String,
    /// The files, sorted by path.
    pub files: Vec<Entry>,
}

/// Why a path cannot become a manifest, or bytes are not a valid one.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// Reading the file system failed.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The path being read.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Neither a file nor a directory (a socket, a dangling link, …).
    #[error("{0} is neither a regular file nor a directory")]
    NotFileOrDir(PathBuf),
    /// A directory without a single file.
    #[error("{0} holds no files")]
    Empty(PathBuf),
    /// A file name that cannot be sent as UTF-8.
    #[error("{0} has a name that is not UTF-8; rename it")]
    NotUtf8(PathBuf),
    /// The bytes are not a manifest this build understands.
    #[error("not a valid manifest: {0}")]
    Invalid(String),
}

/// This machine's name, for a manifest's `source` (where the files came from).
pub fn this_host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// Whether `p` is a safe relative path: `/`-separated normal components only.
pub fn is_safe_relative(p: &str) -> bool {
    !p.is_empty()
        && p.len() <= 1024
        && !p.starts_with('/')
        && p.split('/').all(|c| !c.is_empty() && c != "." && c != ".." && !c.contains(['\\', '\0']))
}

impl Manifest {
    /// Hashes `path` (a file, or every non-hidden regular file under a directory, following
    /// links). Blocking: run it on a blocking thread.
    pub fn of_path(path: &Path, source: String) -> Result<Self, ManifestError> {
        let meta = std::fs::metadata(path).map_err(io(path))?;
        let (kind, mut files) = if meta.is_file() {
            let name = path.file_name().and_then(|n| n.to_str()).ok_or_else(|| ManifestError::NotUtf8(path.into()))?;
            let (digest, size) = hash_file(path).map_err(io(path))?;
            (ManifestKind::File, vec![Entry { path: name.into(), sha256: digest.to_string(), size }])
        } else if meta.is_dir() {
            let mut files = Vec::new();
            walk(path, "", &mut files)?;
            if files.is_empty() {
                return Err(ManifestError::Empty(path.into()));
            }
            (ManifestKind::Dir, files)
        } else {
            return Err(ManifestError::NotFileOrDir(path.into()));
        };
        files.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(Manifest { format: FORMAT, kind, source, files })
    }

    /// The manifest's own bytes (what is stored and hashed).
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).expect("a manifest serialises")
    }

    /// The digest of [`Manifest::to_bytes`].
    pub fn digest(&self) -> Digest {
        Digest::of(&self.to_bytes())
    }

    /// Total bytes of the files.
    pub fn total_size(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }

    /// Parses and validates manifest bytes: known format, safe unique paths, valid digests, one
    /// entry for a file.
    pub fn parse(bytes: &[u8]) -> Result<Self, ManifestError> {
        let m: Manifest = serde_json::from_slice(bytes).map_err(|e| ManifestError::Invalid(e.to_string()))?;
        if m.format != FORMAT {
            return Err(ManifestError::Invalid(format!("format {} (this build reads {FORMAT}); upgrade", m.format)));
        }
        if m.kind == ManifestKind::File && m.files.len() != 1 {
            return Err(ManifestError::Invalid("a file manifest lists exactly one file".into()));
        }
        let mut seen = std::collections::HashSet::new();
        for f in &m.files {
            if !is_safe_relative(&f.path) {
                return Err(ManifestError::Invalid(format!("unsafe path {:?}", f.path)));
            }
            if f.sha256.parse::<Digest>().is_err() {
                return Err(ManifestError::Invalid(format!("bad digest for {:?}", f.path)));
            }
            // A path that is also a directory of another path cannot be laid out.
            if !seen.insert(f.path.as_str()) || m.files.iter().any(|g| g.path.starts_with(&format!("{}/", f.path))) {
                return Err(ManifestError::Invalid(format!("path {:?} listed twice or as a directory", f.path)));
            }
        }
        Ok(m)
    }
}

fn walk(dir: &Path, prefix: &str, out: &mut Vec<Entry>) -> Result<(), ManifestError> {
    for item in std::fs::read_dir(dir).map_err(io(dir))? {
        let item = item.map_err(io(dir))?;
        let path = item.path();
        let name = item.file_name().into_string().map_err(|_| ManifestError::NotUtf8(path.clone()))?;
        if name.starts_with('.') {
            continue;
        }
        let rel = if prefix.is_empty() { name } else { format!("{prefix}/{name}") };
        let meta = std::fs::metadata(&path).map_err(io(&path))?;
        if meta.is_dir() {
            walk(&path, &rel, out)?;
        } else if meta.is_file() {
            let (digest, size) = hash_file(&path).map_err(io(&path))?;
            out.push(Entry { path: rel, sha256: digest.to_string(), size });
        } else {
            return Err(ManifestError::NotFileOrDir(path));
        }
    }
    Ok(())
}

fn io(p: &Path) -> impl FnOnce(std::io::Error) -> ManifestError {
    let path = p.to_path_buf();
    move |source| ManifestError::Io { path, source }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_round_trips_and_skips_hidden_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("config.json"), b"{}").unwrap();
        std::fs::write(dir.path().join("sub/w.bin"), b"weights").unwrap();
        std::fs::write(dir.path().join(".lock"), b"x").unwrap();
        let m = Manifest::of_path(dir.path(), "h:/m".into()).unwrap();
        assert_eq!(m.kind, ManifestKind::Dir);
        assert_eq!(m.files.iter().map(|f| f.path.as_str()).collect::<Vec<_>>(), ["config.json", "sub/w.bin"]);
        assert_eq!(Manifest::parse(&m.to_bytes()).unwrap(), m);
        assert_eq!(m.total_size(), 9);
    }

    #[test]
    fn refuses_unsafe_manifests() {
        let d = Digest::of(b"").to_string();
        for path in ["../x", "/etc/passwd", "a//b", "a/./b", ""] {
            let m = Manifest {
                format: FORMAT,
                kind: ManifestKind::Dir,
                source: String::new(),
                files: vec![Entry { path: path.into(), sha256: d.clone(), size: 0 }],
            };
            assert!(Manifest::parse(&m.to_bytes()).is_err(), "{path}");
        }
        assert!(Manifest::parse(b"not json").is_err());
        let empty = tempfile::tempdir().unwrap();
        assert!(matches!(Manifest::of_path(empty.path(), String::new()), Err(ManifestError::Empty(_))));
    }
}
