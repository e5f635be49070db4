//! Hugging Face Hub models: turns a repo id and revision (what a study names as
//! `hf:org/name@revision`) into a local model directory — `config.json`, the tokenizer files and
//! the weights — that [`crate::config`], [`crate::tokenizer`] and [`crate::pretrained`] load.
//!
//! The cache is the Hub's own layout, shared with Python's `huggingface_hub`:
//! `<cache>/models--{org}--{name}/refs/{revision}` holds a commit hash,
//! `snapshots/{commit}/{file}` links to `../../blobs/{etag}`. Offline, only that cache is read;
//! online, missing files are downloaded into it with the blocking `hf-hub` (ureq) client.

use std::path::{Path, PathBuf};

use hf_hub::api::sync::{ApiBuilder, ApiRepo};
use hf_hub::{Cache, Repo, RepoType};

use crate::tokenizer::TOKENIZER_FILES;

const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// Hub settings read from the environment once (HF_HOME, HF_HUB_CACHE, HF_ENDPOINT, HF_TOKEN,
/// HF_HUB_OFFLINE), so that resolution itself never reads the environment and tests can build
/// one directly.
#[derive(Debug, Clone)]
pub struct HubEnv {
    /// Hub cache: `$HF_HUB_CACHE`, else `$HF_HOME/hub`, else `~/.cache/huggingface/hub`.
    pub cache_dir: PathBuf,
    /// Hub URL (`$HF_ENDPOINT`, default `https://huggingface.co`), for mirrors and proxies.
    pub endpoint: String,
    /// Token for private or gated repos: `$HF_TOKEN`, else the `token` file of `huggingface-cli login`.
    pub token: Option<String>,
    /// `$HF_HUB_OFFLINE` is 1/true/yes/on: resolve from the cache only, never the network.
    pub offline: bool,
}

impl HubEnv {
    /// Reads the settings from the process environment (empty variables count as unset).
    pub fn from_env() -> Self {
        let var = |key: &str| std::env::var(key).ok().map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
        let home = var("HOME").or_else(|| var("USERPROFILE")).unwrap_or_else(|| ".".into());
        let hf_home = var("HF_HOME").map(PathBuf::from).unwrap_or_else(|| Path::new(&home).join(".cache/huggingface"));
        let cache_dir = var("HF_HUB_CACHE").map(PathBuf::from).unwrap_or_else(|| hf_home.join("hub"));
        let token = var("HF_TOKEN").or_else(|| {
            let text = std::fs::read_to_string(hf_home.join("token")).ok()?;
            Some(text.trim().to_owned()).filter(|t| !t.is_empty())
        });
        let offline = var("HF_HUB_OFFLINE")
            .is_some_and(|v| matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "on"));
        let endpoint = var("HF_ENDPOINT").unwrap_or_else(|| DEFAULT_ENDPOINT.into()).trim_end_matches('/').to_owned();
        HubEnv { cache_dir, endpoint, token, offline }
    }
}

/// Why a Hub model could not be resolved; each message is one line saying what to do.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    /// The repo id is not `org/name` or `name` made of `[A-Za-z0-9._-]`.
    #[error("invalid Hugging Face repo id {repo:?}: {reason}; write it as org/name or name, using letters, digits, '.', '_' and '-'")]
    InvalidRepo {
        /// The repo id as given.
        repo: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The revision is empty, absolute or climbs out of the cache with `..`.
    #[error("invalid revision in {model:?}: {reason}; use a branch, tag or 40-hex commit hash")]
    InvalidRevision {
        /// `hf:org/name@revision`.
        model: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Offline, and the revision has no snapshot in the cache.
    #[error("{model} is not in the Hugging Face cache at {} and HF_HUB_OFFLINE is set; download it there first ({download}) or unset HF_HUB_OFFLINE", cache.display())]
    NotCached {
        /// `hf:org/name@revision`.
        model: String,
        /// The cache directory searched.
        cache: PathBuf,
        /// The `huggingface-cli download` command that would fill the cache.
        download: String,
    },
    /// The cached snapshot lacks a file the worker needs.
    #[error("{model}: the cached snapshot {} lacks {missing}; download it again ({download}) with HF_HUB_OFFLINE unset", snapshot.display())]
    MissingFiles {
        /// `hf:org/name@revision`.
        model: String,
        /// The snapshot directory.
        snapshot: PathBuf,
        /// The missing file(s).
        missing: String,
        /// The `huggingface-cli download` command that would complete the snapshot.
        download: String,
    },
    /// The repo on the Hub does not hold a loadable BERT directory.
    #[error("{model} on {endpoint} has no {missing}; choose a checkpoint with config.json, tokenizer.json or vocab.txt, and model.safetensors or pytorch_model.bin")]
    Incomplete {
        /// `hf:org/name@revision`.
        model: String,
        /// The Hub URL.
        endpoint: String,
        /// What the repo lacks.
        missing: String,
    },
    /// The Hub could not be reached or refused the request.
    #[error("cannot fetch {what} of {model} from {endpoint}: {message}; check the repo id, revision, HF_TOKEN (private or gated repos), HF_ENDPOINT and network access, or set HF_HUB_OFFLINE=1 to use the cache")]
    Network {
        /// `hf:org/name@revision`.
        model: String,
        /// The Hub URL.
        endpoint: String,
        /// The file or listing being fetched.
        what: String,
        /// The client's error, on one line.
        message: String,
    },
}

/// Resolves `repo` at `revision` (default `main`) to its snapshot directory in `env.cache_dir`,
/// downloading missing files unless `env.offline`, so that trials load Hub models like local ones.
/// The directory may hold symlinks into `blobs/`; the loaders follow them.
pub fn resolve(env: &HubEnv, repo: &str, revision: Option<&str>) -> Result<PathBuf, HubError> {
    let revision = revision.unwrap_or("main");
    check_repo(repo)?;
    check_revision(repo, revision)?;
    let at = Target { env, repo, revision, model: format!("hf:{repo}@{revision}") };
    if env.offline {
        return at.cached();
    }
    if is_commit(revision) {
        if let Ok(dir) = at.cached() {
            return Ok(dir); // a commit's snapshot never changes: no need to ask the Hub
        }
    }
    at.download()
}

/// One resolution: the settings, the repo and revision, and `hf:repo@revision` for messages.
struct Target<'a> {
    env: &'a HubEnv,
    repo: &'a str,
    revision: &'a str,
    model: String,
}

impl Target<'_> {
    fn repo_dir(&self) -> PathBuf {
        self.env.cache_dir.join(format!("models--{}", self.repo.replace('/', "--")))
    }

    fn download_command(&self) -> String {
        match self.revision {
            "main" => format!("huggingface-cli download {}", self.repo),
            rev => format!("huggingface-cli download {} --revision {rev}", self.repo),
        }
    }

    /// The complete cached snapshot of the revision, without the network.
    fn cached(&self) -> Result<PathBuf, HubError> {
        let not_cached = || HubError::NotCached {
            model: self.model.clone(),
            cache: self.env.cache_dir.clone(),
            download: self.download_command(),
        };
        let commit = if is_commit(self.revision) {
            self.revision.to_owned()
        } else {
            let text =
                std::fs::read_to_string(self.repo_dir().join("refs").join(self.revision)).map_err(|_| not_cached())?;
            Some(text.trim().to_owned()).filter(|c| is_commit(c)).ok_or_else(not_cached)?
        };
        let snapshot = self.repo_dir().join("snapshots").join(commit);
        if !snapshot.is_dir() {
            return Err(not_cached());
        }
        self.complete(snapshot)
    }

    /// `snapshot` if it holds everything the worker loads, else which files it lacks.
    fn complete(&self, snapshot: PathBuf) -> Result<PathBuf, HubError> {
        let missing = missing_files(&snapshot);
        if missing.is_empty() {
            return Ok(snapshot);
        }
        let (model, download, missing) = (self.model.clone(), self.download_command(), missing.join(", "));
        Err(HubError::MissingFiles { model, snapshot, missing, download })
    }

    /// Lists the revision on the Hub and downloads the needed files missing from the cache.
    fn download(&self) -> Result<PathBuf, HubError> {
        let api = ApiBuilder::from_cache(Cache::new(self.env.cache_dir.clone()))
            .with_endpoint(self.env.endpoint.clone())
            .with_token(self.env.token.clone())
            .with_progress(false)
            .with_retries(2)
            .build()
            .map_err(|e| self.network("a client", &e))?;
        let hub = api.repo(Repo::with_revision(self.repo.into(), RepoType::Model, self.revision.into()));
        let info = match hub.info() {
            Ok(info) => info,
            Err(e) => {
                let Ok(dir) = self.cached() else { return Err(self.network("the file list", &e)) };
                tracing::warn!(model = %self.model, error = %one_line(&e), "Hub unreachable; using the cached snapshot");
                return Ok(dir);
            }
        };
        if !is_commit(&info.sha) {
            return Err(self.network("the file list", &format!("the Hub answered commit {:?}", info.sha)));
        }
        let listed: Vec<&str> = info.siblings.iter().map(|s| s.rfilename.as_str()).collect();
        let has = |f: &str| listed.contains(&f);
        let incomplete = |missing: &str| HubError::Incomplete {
            model: self.model.clone(),
            endpoint: self.env.endpoint.clone(),
            missing: missing.into(),
        };
        if !has("config.json") {
            return Err(incomplete("config.json"));
        }
        if !has("tokenizer.json") && !has("vocab.txt") {
            return Err(incomplete("tokenizer.json or vocab.txt"));
        }
        let weights = ["model.safetensors", "pytorch_model.bin"].into_iter().find(|f| has(f));
        let weights = weights.ok_or_else(|| incomplete("model.safetensors or pytorch_model.bin"))?;
        let snapshot = self.repo_dir().join("snapshots").join(&info.sha);
        let wanted = TOKENIZER_FILES.iter().copied().filter(|f| has(f)).chain(["config.json", weights]);
        for file in wanted {
            self.fetch(&hub, &snapshot, file)?;
        }
        // hf-hub writes refs/<revision> only when it downloads; later offline runs need it too.
        let path = self.repo_dir().join("refs").join(self.revision);
        if !is_commit(self.revision) {
            let dir = path.parent().unwrap_or(&path);
            if let Err(e) = std::fs::create_dir_all(dir).and_then(|()| std::fs::write(&path, &info.sha)) {
                tracing::warn!(path = %path.display(), error = %e, "cannot record the revision's commit in the cache");
            }
        }
        self.complete(snapshot)
    }

    /// Downloads `file` of the listed commit unless its snapshot already has it.
    fn fetch(&self, hub: &ApiRepo, snapshot: &Path, file: &str) -> Result<(), HubError> {
        if snapshot.join(file).is_file() {
            return Ok(());
        }
        tracing::info!(model = %self.model, file, "downloading from the Hugging Face Hub");
        let path = hub.download(file).map_err(|e| self.network(file, &e))?;
        if path != snapshot.join(file) {
            let moved = format!("the revision moved to another commit during the download ({})", path.display());
            return Err(self.network(file, &moved));
        }
        Ok(())
    }

    fn network(&self, what: &str, error: &dyn std::fmt::Display) -> HubError {
        let (model, endpoint) = (self.model.clone(), self.env.endpoint.clone());
        HubError::Network { model, endpoint, what: what.into(), message: one_line(error) }
    }
}

/// What `dir` lacks of config, tokenizer and weights, as the loaders look for them.
fn missing_files(dir: &Path) -> Vec<String> {
    let mut missing = Vec::new();
    if !dir.join("config.json").is_file() {
        missing.push("config.json".to_owned());
    }
    if !dir.join("tokenizer.json").is_file() && !dir.join("vocab.txt").is_file() {
        missing.push("tokenizer.json or vocab.txt".to_owned());
    }
    if !dir.join("model.safetensors").is_file() && !dir.join("pytorch_model.bin").is_file() {
        missing.push("model.safetensors or pytorch_model.bin".to_owned());
    }
    missing
}

fn check_repo(repo: &str) -> Result<(), HubError> {
    let bad = |reason: &str| Err(HubError::InvalidRepo { repo: repo.to_owned(), reason: reason.to_owned() });
    let parts: Vec<&str> = repo.split('/').collect();
    if repo.is_empty() {
        bad("it is empty")
    } else if parts.len() > 2 {
        bad("it has more than one '/'")
    } else if parts.iter().any(|p| p.is_empty() || *p == ".") || repo.contains("..") {
        bad("it has an empty or '.' part, or '..'")
    } else if let Some(c) = repo.chars().find(|c| !(c.is_ascii_alphanumeric() || "._-/".contains(*c))) {
        bad(&format!("it contains {c:?}"))
    } else {
        Ok(())
    }
}

fn check_revision(repo: &str, revision: &str) -> Result<(), HubError> {
    let bad = |reason: &str| {
        Err(HubError::InvalidRevision { model: format!("hf:{repo}@{revision}"), reason: reason.to_owned() })
    };
    if revision.is_empty() {
        bad("it is empty")
    } else if revision.starts_with('/') {
        bad("it starts with '/'")
    } else if revision.split('/').any(|p| p.is_empty() || p == "." || p == "..") {
        bad("it has an empty, '.' or '..' part")
    } else if revision.chars().any(|c| c.is_control() || c == '\\') {
        bad("it contains a control character or '\\'")
    } else {
        Ok(())
    }
}

/// A full commit hash: 40 lowercase hex digits.
fn is_commit(revision: &str) -> bool {
    revision.len() == 40 && revision.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn one_line(message: &dyn std::fmt::Display) -> String {
    message.to_string().split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    const REPO: &str = "sentence-transformers/all-MiniLM-L6-v2";
    const COMMIT: &str = "c9745ed1d9f207416be6d2e6f8de32d1f16199bf";

    fn env(cache: &Path, offline: bool) -> HubEnv {
        HubEnv { cache_dir: cache.to_owned(), endpoint: "http://127.0.0.1:9".into(), token: None, offline }
    }

    /// Lays `src` out as the Hub would cache it at `COMMIT`: blobs named by SHA-256, snapshot
    /// files as relative symlinks into `blobs/`, and `refs/main`, `refs/v1`.
    fn hub_cache(src: &Path) -> tempfile::TempDir {
        assert!(src.is_dir(), "MiniLM checkpoint not found at {}; run `make setup` to create it", src.display());
        let cache = tempfile::tempdir().unwrap();
        let repo_dir = cache.path().join("models--sentence-transformers--all-MiniLM-L6-v2");
        let mut stack = vec![PathBuf::new()];
        while let Some(rel) = stack.pop() {
            for entry in std::fs::read_dir(src.join(&rel)).unwrap() {
                let (name, path) = (rel.join(entry.as_ref().unwrap().file_name()), entry.unwrap().path());
                if path.is_dir() {
                    stack.push(name);
                    continue;
                }
                let hex = format!("{:x}", Sha256::digest(std::fs::read(&path).unwrap()));
                let blob = repo_dir.join("blobs").join(&hex);
                std::fs::create_dir_all(blob.parent().unwrap()).unwrap();
                if !blob.exists() && std::fs::hard_link(&path, &blob).is_err() {
                    std::fs::copy(&path, &blob).unwrap();
                }
                let link = repo_dir.join("snapshots").join(COMMIT).join(&name);
                std::fs::create_dir_all(link.parent().unwrap()).unwrap();
                let up = "../".repeat(name.components().count() + 1);
                std::os::unix::fs::symlink(format!("{up}blobs/{hex}"), &link).unwrap();
            }
        }
        std::fs::create_dir_all(repo_dir.join("refs")).unwrap();
        std::fs::write(repo_dir.join("refs/main"), COMMIT).unwrap();
        std::fs::write(repo_dir.join("refs/v1"), format!("{COMMIT}\n")).unwrap();
        cache
    }

    fn minilm() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/minilm")
    }

    fn assert_one_line(message: &str, parts: &[&str]) {
        assert!(!message.contains('\n') && !message.contains('\r'), "not one line: {message}");
        for part in parts {
            assert!(message.contains(part), "{message:?} lacks {part:?}");
        }
    }

    #[test]
    fn offline_resolves_the_hub_cache_layout() {
        let cache = hub_cache(&minilm());
        let snapshot = cache.path().join("models--sentence-transformers--all-MiniLM-L6-v2/snapshots").join(COMMIT);
        // Online with an unreachable Hub: a commit is served from the cache without asking, and a
        // branch falls back to its cached snapshot.
        for (offline, revision) in
            [(true, None), (true, Some(COMMIT)), (true, Some("v1")), (false, Some(COMMIT)), (false, None)]
        {
            let dir = resolve(&env(cache.path(), offline), REPO, revision).unwrap();
            assert_eq!(dir, snapshot, "{revision:?}");
            assert!(std::fs::symlink_metadata(dir.join("config.json")).unwrap().file_type().is_symlink());
            let config = std::fs::read(dir.join("config.json")).unwrap();
            assert_eq!(config, std::fs::read(minilm().join("config.json")).unwrap());
            crate::config::BertConfig::from_dir(&dir).unwrap();
            crate::tokenizer::BertTokenizer::from_dir(&dir, 128).unwrap();
        }
        let err = resolve(&env(cache.path(), true), REPO, Some("v2")).unwrap_err().to_string();
        assert_one_line(&err, &["hf:sentence-transformers/all-MiniLM-L6-v2@v2", "HF_HUB_OFFLINE", "--revision v2"]);
    }

    #[test]
    fn offline_and_not_cached_is_one_line() {
        let cache = tempfile::tempdir().unwrap();
        let err = resolve(&env(cache.path(), true), "nobody/missing", None).unwrap_err().to_string();
        let parts = ["hf:nobody/missing@main", "HF_HUB_OFFLINE", "huggingface-cli download nobody/missing"];
        assert_one_line(&err, &parts);
    }

    #[test]
    fn offline_with_missing_weights_names_the_file() {
        let cache = hub_cache(&minilm());
        let snapshot = cache.path().join("models--sentence-transformers--all-MiniLM-L6-v2/snapshots").join(COMMIT);
        std::fs::remove_file(snapshot.join("model.safetensors")).unwrap();
        let err = resolve(&env(cache.path(), true), REPO, None).unwrap_err();
        assert!(matches!(err, HubError::MissingFiles { .. }), "{err:?}");
        assert_one_line(&err.to_string(), &["model.safetensors", REPO, "HF_HUB_OFFLINE"]);
    }

    #[test]
    fn online_with_unreachable_hub_names_repo_and_endpoint() {
        let cache = tempfile::tempdir().unwrap();
        let err = resolve(&env(cache.path(), false), "nobody/missing", Some("dev")).unwrap_err();
        assert!(matches!(err, HubError::Network { .. }), "{err:?}");
        assert_one_line(&err.to_string(), &["hf:nobody/missing@dev", "http://127.0.0.1:9", "HF_HUB_OFFLINE=1"]);
    }

    #[test]
    fn bad_repo_ids_and_revisions_are_refused() {
        let cache = tempfile::tempdir().unwrap();
        let env = env(cache.path(), true);
        for repo in ["../x", "a/b/c", "", "/x", "a/", "a b", "a/..", "./x"] {
            let err = resolve(&env, repo, None).unwrap_err();
            assert!(matches!(err, HubError::InvalidRepo { .. }), "{repo:?}: {err:?}");
            assert_one_line(&err.to_string(), &["invalid Hugging Face repo id"]);
        }
        for revision in ["", "/etc", "../../x", "a/../b", "a//b", "a\\b"] {
            let err = resolve(&env, "org/name", Some(revision)).unwrap_err();
            assert!(matches!(err, HubError::InvalidRevision { .. }), "{revision:?}: {err:?}");
            assert_one_line(&err.to_string(), &["invalid revision", "org/name"]);
        }
        assert!(is_commit(COMMIT) && !is_commit("main") && !is_commit(&COMMIT.to_uppercase()));
    }
}
