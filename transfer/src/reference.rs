//! The forms a study's `model`, `train_file` and `validation_file` take.

use std::fmt;

use crate::Digest;

/// Where an input comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InputRef {
    /// `blob:sha256:<hex>`: a manifest blob on the coordinator (written by `study create`).
    Blob(Digest),
    /// `worker:/path`: a path each worker opens itself (shared storage, pre-staged data).
    Worker(String),
    /// `hf:org/name[@revision]`: a Hugging Face Hub model, resolved by the worker.
    Hub {
        /// `org/name` (or `name`).
        repo: String,
        /// A branch, tag or commit; None means `main`.
        revision: Option<String>,
    },
    /// Any other text: a path. `study create` uploads it from the caller's machine; a worker
    /// given one (a study created before uploads existed) opens it itself.
    Path(String),
}

/// A reference that names a form but gets it wrong.
#[derive(Debug, thiserror::Error)]
pub enum RefError {
    /// `blob:` without a valid sha256.
    #[error("{0:?} is not a blob reference; blob references are written by `bertsweep study create` as blob:sha256:<64 hex digits>")]
    Blob(String),
    /// `worker:` with an empty or relative path.
    #[error("{0:?}: worker: needs an absolute path the workers can open, e.g. worker:/data/train.tsv")]
    Worker(String),
    /// A malformed `hf:` reference.
    #[error("{0:?} is not a Hub model; write hf:org/name or hf:org/name@revision")]
    Hub(String),
}

/// Where a trial's kept model or resumable checkpoint is, as the wire and the database spell
/// it (`blob:sha256:<hex>`, an object storage URL, a path on the worker, or "" for none). Every
/// place that needs to know which decodes it with [`ArtifactRef::parse`], nowhere else.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArtifactRef {
    /// Nothing kept ("").
    None,
    /// A manifest blob on the coordinator.
    Blob(Digest),
    /// A directory in object storage (`s3://`, `gs://`, `az://`, …).
    Object(String),
    /// A path on the worker that wrote it (`worker:/abs/path`, or a bare path from
    /// `--artifacts DIR`).
    Worker(String),
}

impl ArtifactRef {
    /// Decodes a stored or reported reference; a malformed `blob:` is an error.
    pub fn parse(text: &str) -> Result<Self, RefError> {
        if text.is_empty() {
            return Ok(ArtifactRef::None);
        }
        if is_object_url(text) {
            return Ok(ArtifactRef::Object(text.into()));
        }
        match InputRef::parse(text)? {
            InputRef::Blob(d) => Ok(ArtifactRef::Blob(d)),
            InputRef::Worker(p) => Ok(ArtifactRef::Worker(p)),
            InputRef::Hub { .. } | InputRef::Path(_) => Ok(ArtifactRef::Worker(text.into())),
        }
    }

    /// The blob it names, if it is one (malformed text names none).
    pub fn blob_of(text: &str) -> Option<Digest> {
        match ArtifactRef::parse(text) {
            Ok(ArtifactRef::Blob(d)) => Some(d),
            _ => None,
        }
    }
}

/// Whether `text` names object storage.
pub fn is_object_url(text: &str) -> bool {
    ["s3://", "s3a://", "gs://", "az://", "abfs://", "abfss://"].iter().any(|p| text.starts_with(p))
}

fn hub_part_ok(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 96
        && s != "."
        && s != ".."
        && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

impl InputRef {
    /// Parses a reference; plain text is a path.
    pub fn parse(text: &str) -> Result<Self, RefError> {
        if let Some(rest) = text.strip_prefix("blob:") {
            let hex = rest.strip_prefix("sha256:").ok_or_else(|| RefError::Blob(text.into()))?;
            return hex.parse().map(InputRef::Blob).map_err(|_| RefError::Blob(text.into()));
        }
        if let Some(path) = text.strip_prefix("worker:") {
            if !path.starts_with('/') || path.trim() == "/" {
                return Err(RefError::Worker(text.into()));
            }
            return Ok(InputRef::Worker(path.into()));
        }
        if let Some(rest) = text.strip_prefix("hf:") {
            let (repo, revision) = match rest.split_once('@') {
                Some((repo, rev)) => (repo, Some(rev)),
                None => (rest, None),
            };
            let parts: Vec<&str> = repo.split('/').collect();
            let repo_ok = (1..=2).contains(&parts.len()) && parts.iter().all(|p| hub_part_ok(p));
            let rev_ok = revision.is_none_or(|r| {
                !r.is_empty() && r.len() <= 128 && !r.starts_with('/') && r.split('/').all(hub_part_ok)
            });
            if !repo_ok || !rev_ok {
                return Err(RefError::Hub(text.into()));
            }
            return Ok(InputRef::Hub { repo: repo.into(), revision: revision.map(String::from) });
        }
        Ok(InputRef::Path(text.into()))
    }
}

impl fmt::Display for InputRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InputRef::Blob(d) => write!(f, "blob:sha256:{d}"),
            InputRef::Worker(p) => write!(f, "worker:{p}"),
            InputRef::Hub { repo, revision: None } => write!(f, "hf:{repo}"),
            InputRef::Hub { repo, revision: Some(r) } => write!(f, "hf:{repo}@{r}"),
            InputRef::Path(p) => f.write_str(p),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_artifact_reference_decodes_to_one_of_four_places() {
        let hex = "cd".repeat(32);
        let blob = format!("blob:sha256:{hex}");
        assert_eq!(ArtifactRef::parse("").unwrap(), ArtifactRef::None);
        assert_eq!(ArtifactRef::parse(&blob).unwrap(), ArtifactRef::Blob(hex.parse().unwrap()));
        assert_eq!(ArtifactRef::blob_of(&blob), Some(hex.parse().unwrap()));
        assert_eq!(ArtifactRef::parse("s3://b/k").unwrap(), ArtifactRef::Object("s3://b/k".into()));
        assert_eq!(ArtifactRef::parse("worker:/ckpt/3").unwrap(), ArtifactRef::Worker("/ckpt/3".into()));
        assert_eq!(ArtifactRef::parse("/models/t3").unwrap(), ArtifactRef::Worker("/models/t3".into()));
        assert!(ArtifactRef::parse("blob:sha256:zz").is_err());
        assert_eq!(ArtifactRef::blob_of("blob:sha256:zz"), None);
    }

    #[test]
    fn parses_every_form() {
        let hex = "ab".repeat(32);
        assert_eq!(InputRef::parse(&format!("blob:sha256:{hex}")).unwrap().to_string(), format!("blob:sha256:{hex}"));
        assert_eq!(InputRef::parse("worker:/data/x.tsv").unwrap(), InputRef::Worker("/data/x.tsv".into()));
        assert_eq!(
            InputRef::parse("hf:sentence-transformers/all-MiniLM-L6-v2@main").unwrap(),
            InputRef::Hub { repo: "sentence-transformers/all-MiniLM-L6-v2".into(), revision: Some("main".into()) }
        );
        assert_eq!(InputRef::parse("hf:bert-base-uncased").unwrap().to_string(), "hf:bert-base-uncased");
        assert_eq!(InputRef::parse("data/train.tsv").unwrap(), InputRef::Path("data/train.tsv".into()));
    }

    #[test]
    fn refuses_malformed_forms_in_one_line() {
        for bad in [
            "blob:abc",
            "blob:sha256:xyz",
            "worker:",
            "worker:rel/path",
            "hf:",
            "hf:a/b/c",
            "hf:../x",
            "hf:a@",
            "hf:a@/x",
            "hf:a b",
        ] {
            let e = InputRef::parse(bad).unwrap_err().to_string();
            assert!(!e.contains('\n') && e.contains(bad), "{bad}: {e}");
        }
    }
}
