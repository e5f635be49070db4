//! Paths the worker builds from coordinator data (study names, trial numbers) stay inside the
//! root they are joined to: each part must be one plain path component.

use std::path::{Component, Path, PathBuf};

/// A part that would leave its root (or is not a usable directory name).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{part} cannot be a directory name under {root}: a path part must be one plain name (not empty, `.`, `..`, or containing / or \\)")]
pub struct UnsafePath {
    /// The offending part, quoted and shortened.
    pub part: String,
    /// The root it was to be joined to.
    pub root: String,
}

pub use bertsweep_proto::contract::is_study_name;

/// `root/part0/part1/…`, refusing any part that is not exactly one normal component.
pub fn join_inside(root: &Path, parts: &[&str]) -> Result<PathBuf, UnsafePath> {
    let mut path = root.to_path_buf();
    for part in parts {
        let mut components = Path::new(part).components();
        let plain = matches!((components.next(), components.next()), (Some(Component::Normal(c)), None) if c == *part)
            && !part.contains(['/', '\\', '\0']);
        if !plain {
            let shown: String = part.chars().take(64).collect();
            return Err(UnsafePath { part: format!("{shown:?}"), root: root.display().to_string() });
        }
        path.push(part);
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn study_names_from_the_coordinator_are_checked() {
        for good in ["sst2", "a.b_c-d", "X"] {
            assert!(is_study_name(good), "{good}");
        }
        for bad in ["", ".", "..", "../etc", "-rf", "a/b", "a b", &"x".repeat(65), "é"] {
            assert!(!is_study_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn plain_names_join_and_escapes_are_refused() {
        let root = Path::new("artifacts");
        assert_eq!(join_inside(root, &["sst2-minilm", "3"]).unwrap(), Path::new("artifacts/sst2-minilm/3"));
        assert_eq!(join_inside(root, &["-rf", "0"]).unwrap(), Path::new("artifacts/-rf/0"), "odd but inside the root");
        for bad in ["", ".", "..", "../x", "a/b", "/etc", "a\\b", "x\0"] {
            assert!(join_inside(root, &[bad, "0"]).is_err(), "{bad:?}");
        }
    }
}
