//! A file or a directory as content: every file's relative path, sha256 and size. The manifest
//! is itself stored as a blob; its digest is what `blob:sha256:…` references name.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::digest::hash_file;
use crate::Digest;

/// The manifest format this build writes and reads.
pub const FORMAT: u32 = 1;

/// The manifest's name inside a directory kept outside the blob store (a model or checkpoint
/// in object storage, a checkpoint on a shared filesystem).
pub const MANIFEST_NAME: &str = "bertsweep-manifest.json";

/// Most files one manifest may list: a 100,000-file data set is far beyond any model
/// directory, and the cap bounds what one validation costs.
pub const MAX_ENTRIES: usize = 100_000;

/// Largest manifest accepted, in bytes (100,000 entries with long paths fit).
pub const MAX_MANIFEST_BYTES: usize = 64 << 20;

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
        if bytes.len() > MAX_MANIFEST_BYTES {
            return Err(ManifestError::Invalid(format!(
                "{} bytes, over the limit of {MAX_MANIFEST_BYTES}; split the input into fewer files (an archive)",
                bytes.len()
            )));
        }
        let m: Manifest = serde_json::from_slice(bytes).map_err(|e| ManifestError::Invalid(e.to_string()))?;
        if m.format != FORMAT {
            return Err(ManifestError::Invalid(format!("format {} (this build reads {FORMAT}); upgrade", m.format)));
        }
        m.check()?;
        Ok(m)
    }

    /// Validates the entries: at most [`MAX_ENTRIES`], safe unique paths, valid digests, one
    /// entry for a file, and no path that is also a directory of another. Linear in the total
    /// length of the paths (a set of paths, and each path's parent directories looked up in it).
    pub fn check(&self) -> Result<(), ManifestError> {
        if self.files.len() > MAX_ENTRIES {
            return Err(ManifestError::Invalid(format!(
                "{} files, over the limit of {MAX_ENTRIES}; pack the input into fewer files (an archive)",
                self.files.len()
            )));
        }
        if self.kind == ManifestKind::File && self.files.len() != 1 {
            return Err(ManifestError::Invalid("a file manifest lists exactly one file".into()));
        }
        let mut paths = std::collections::HashSet::with_capacity(self.files.len());
        for f in &self.files {
            if !is_safe_relative(&f.path) {
                return Err(ManifestError::Invalid(format!("unsafe path {:?}", shorten(&f.path))));
            }
            if f.sha256.parse::<Digest>().is_err() {
                return Err(ManifestError::Invalid(format!("bad digest for {:?}", shorten(&f.path))));
            }
            if !paths.insert(f.path.as_str()) {
                return Err(ManifestError::Invalid(format!("path {:?} listed twice", shorten(&f.path))));
            }
        }
        // A path that is also a directory of another path cannot be laid out.
        for f in &self.files {
            for (i, _) in f.path.match_indices('/') {
                if paths.contains(&f.path[..i]) {
                    return Err(ManifestError::Invalid(format!(
                        "path {:?} is listed both as a file and as a directory",
                        shorten(&f.path[..i])
                    )));
                }
            }
        }
        Ok(())
    }
}

/// At most 64 characters of a path, for error lines.
fn shorten(path: &str) -> String {
    path.chars().take(64).collect()
}

/// Deletes the directory `dir` on a local filesystem as its own manifest ([`MANIFEST_NAME`]
/// inside it) describes it: the listed files, then the manifest, then the directories they
/// leave empty, `dir` included. Nothing unlisted is touched; a directory without a readable
/// manifest is left alone (the error says why, for the caller to log). Returns the files
/// deleted; a `dir` that does not exist is `Ok(0)`.
pub fn remove_listed(dir: &Path) -> Result<usize, ManifestError> {
    let manifest_path = dir.join(MANIFEST_NAME);
    let bytes = match std::fs::read(&manifest_path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !dir.exists() => return Ok(0),
        Err(source) => return Err(ManifestError::Io { path: manifest_path, source }),
    };
    let manifest = Manifest::parse(&bytes)?;
    let mut removed = 0;
    for f in &manifest.files {
        let path = dir.join(&f.path);
        match std::fs::remove_file(&path) {
            Ok(()) => removed += 1,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(ManifestError::Io { path, source }),
        }
        // Parent directories the entry had, deepest first, if now empty.
        let mut parent = Path::new(&f.path).parent();
        while let Some(p) = parent.filter(|p| !p.as_os_str().is_empty()) {
            let _ = std::fs::remove_dir(dir.join(p));
            parent = p.parent();
        }
    }
    std::fs::remove_file(&manifest_path).map_err(|source| ManifestError::Io { path: manifest_path, source })?;
    let _ = std::fs::remove_dir(dir);
    Ok(removed + 1)
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
    fn removing_a_listed_directory_touches_only_its_listed_files() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("e1-5");
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::fs::write(dir.join("state.json"), b"{}").unwrap();
        std::fs::write(dir.join("sub/w.bin"), b"w").unwrap();
        let m = Manifest::of_path(&dir, "h".into()).unwrap();
        std::fs::write(dir.join(MANIFEST_NAME), m.to_bytes()).unwrap();
        std::fs::write(dir.join("unlisted"), b"keep me").unwrap();
        assert_eq!(remove_listed(&dir).unwrap(), 3);
        assert_eq!(std::fs::read(dir.join("unlisted")).unwrap(), b"keep me");
        assert!(!dir.join("sub").exists() && !dir.join(MANIFEST_NAME).exists());

        // No manifest, or an unreadable one: nothing goes.
        let bare = root.path().join("bare");
        std::fs::create_dir_all(&bare).unwrap();
        std::fs::write(bare.join("x"), b"x").unwrap();
        assert!(remove_listed(&bare).is_err());
        std::fs::write(bare.join(MANIFEST_NAME), b"garbage").unwrap();
        assert!(remove_listed(&bare).is_err());
        assert!(bare.join("x").exists() && bare.join(MANIFEST_NAME).exists());
        assert_eq!(remove_listed(&root.path().join("gone")).unwrap(), 0);
    }

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
        let nested = |paths: &[&str]| Manifest {
            format: FORMAT,
            kind: ManifestKind::Dir,
            source: String::new(),
            files: paths.iter().map(|p| Entry { path: (*p).into(), sha256: d.clone(), size: 0 }).collect(),
        };
        assert!(Manifest::parse(&nested(&["a", "a/b"]).to_bytes()).is_err(), "a file and a directory");
        assert!(Manifest::parse(&nested(&["a/b/c", "a/b"]).to_bytes()).is_err(), "either order");
        assert!(Manifest::parse(&nested(&["a", "a"]).to_bytes()).is_err(), "twice");
        assert!(Manifest::parse(&nested(&["a", "a-b/c", "ab/c", "a.b"]).to_bytes()).is_ok(), "prefixes, not dirs");
        let too_many: Vec<String> = (0..=MAX_ENTRIES).map(|i| format!("f{i}")).collect();
        let refs: Vec<&str> = too_many.iter().map(String::as_str).collect();
        let e = Manifest::parse(&nested(&refs).to_bytes()).unwrap_err().to_string();
        assert!(e.contains("over the limit") && !e.contains('\n'), "{e}");
        let empty = tempfile::tempdir().unwrap();
        assert!(matches!(Manifest::of_path(empty.path(), String::new()), Err(ManifestError::Empty(_))));
    }
}
