//! Models in object storage (`--artifacts s3://…`, `gs://…`, `az://…`) through the
//! `object_store` crate, with the standard credential variables of each cloud (`AWS_*`,
//! `GOOGLE_*`, `AZURE_*`; `AWS_ENDPOINT` and `AWS_ALLOW_HTTP=true` for S3-compatible servers).
//!
//! A model directory at `<url>/` is its files plus `bertsweep-manifest.json` (a
//! [`Manifest`]), written last: a directory without the manifest is incomplete, and
//! [`download_dir`] verifies every file against it before the destination appears.

use std::path::Path;
use std::sync::Arc;

use futures::StreamExt;
use object_store::path::Path as ObjectPath;
use object_store::ObjectStore;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::digest::Hasher;
use crate::manifest::{Manifest, ManifestKind};
use crate::CHUNK_BYTES;

pub use crate::manifest::MANIFEST_NAME;

/// Why an object storage transfer failed.
#[derive(Debug, thiserror::Error)]
pub enum ObjectError {
    /// Not an s3://, gs:// or az:// URL, or the store refused its settings.
    #[error("{url}: {message}")]
    Config {
        /// The URL.
        url: String,
        /// Why.
        message: String,
    },
    /// The store failed a request.
    #[error("{url}: {source}")]
    Store {
        /// The object.
        url: String,
        /// Why.
        source: object_store::Error,
    },
    /// A local file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The model directory is incomplete or corrupted.
    #[error("{url}: {message}")]
    Invalid {
        /// The directory.
        url: String,
        /// What is wrong.
        message: String,
    },
}

pub use crate::reference::is_object_url;

/// The store and the path inside it for `url`.
fn open(url: &str) -> Result<(Arc<dyn ObjectStore>, ObjectPath), ObjectError> {
    let config = |message: String| ObjectError::Config { url: url.into(), message };
    let parsed = url::Url::parse(url).map_err(|e| config(format!("not a URL ({e})")))?;
    let store: Arc<dyn ObjectStore> = match parsed.scheme() {
        "s3" | "s3a" => Arc::new(
            object_store::aws::AmazonS3Builder::from_env().with_url(url).build().map_err(|e| config(e.to_string()))?,
        ),
        "gs" => Arc::new(
            object_store::gcp::GoogleCloudStorageBuilder::from_env()
                .with_url(url)
                .build()
                .map_err(|e| config(e.to_string()))?,
        ),
        "az" | "abfs" | "abfss" => Arc::new(
            object_store::azure::MicrosoftAzureBuilder::from_env()
                .with_url(url)
                .build()
                .map_err(|e| config(e.to_string()))?,
        ),
        other => return Err(config(format!("unknown scheme {other:?}; use s3://, gs:// or az://"))),
    };
    let path = ObjectPath::from_url_path(parsed.path()).map_err(|e| config(e.to_string()))?;
    Ok((store, path))
}

fn child(base: &ObjectPath, rel: &str) -> ObjectPath {
    rel.split('/').fold(base.clone(), |p, part| p.child(part))
}

/// Uploads a local directory to `url` (files, then the manifest); returns the manifest.
pub async fn upload_dir(dir: &Path, url: &str, source: String) -> Result<Manifest, ObjectError> {
    let owned = dir.to_path_buf();
    let manifest = tokio::task::spawn_blocking(move || Manifest::of_path(&owned, source))
        .await
        .map_err(|e| ObjectError::Io { path: dir.display().to_string(), source: std::io::Error::other(e) })?
        .map_err(|e| ObjectError::Io { path: dir.display().to_string(), source: std::io::Error::other(e) })?;
    upload_dir_as(dir, url, manifest).await
}

/// [`upload_dir`] with the manifest already known (the caller hashed the files as it wrote
/// them): the files `manifest` lists, under `dir`, then the manifest.
pub async fn upload_dir_as(dir: &Path, url: &str, manifest: Manifest) -> Result<Manifest, ObjectError> {
    let io = |p: &Path| {
        let path = p.display().to_string();
        move |source| ObjectError::Io { path, source }
    };
    let (store, base) = open(url)?;
    for f in &manifest.files {
        let local = dir.join(&f.path);
        let mut file = tokio::fs::File::open(&local).await.map_err(io(&local))?;
        let mut writer = object_store::buffered::BufWriter::new(store.clone(), child(&base, &f.path));
        let mut buf = vec![0u8; CHUNK_BYTES];
        loop {
            let n = file.read(&mut buf).await.map_err(io(&local))?;
            if n == 0 {
                break;
            }
            writer
                .write_all(&buf[..n])
                .await
                .map_err(|source| ObjectError::Io { path: format!("{url}/{}", f.path), source })?;
        }
        writer.shutdown().await.map_err(|source| ObjectError::Io { path: format!("{url}/{}", f.path), source })?;
    }
    store
        .put(&child(&base, MANIFEST_NAME), manifest.to_bytes().into())
        .await
        .map_err(|source| ObjectError::Store { url: format!("{url}/{MANIFEST_NAME}"), source })?;
    Ok(manifest)
}

/// Deletes the directory at `url` as its own manifest describes it: the files the manifest
/// lists (each inside the directory, as [`Manifest::parse`] guarantees), then the manifest.
/// Nothing else under the prefix is touched, so a wrong `url` can at worst delete another
/// bertsweep directory's listed files, never "everything under a prefix". A directory without
/// a readable manifest is left alone ([`ObjectError::Invalid`], for the caller to log).
/// Returns how many objects went; a directory already gone (no manifest, nothing listed) is
/// reported as invalid too, which callers log at debug level.
pub async fn delete_dir(url: &str) -> Result<usize, ObjectError> {
    let (store, base) = open(url)?;
    let store_error = |source| ObjectError::Store { url: url.into(), source };
    let invalid = |message: String| ObjectError::Invalid { url: url.into(), message };
    let manifest_bytes = match store.get(&child(&base, MANIFEST_NAME)).await {
        Ok(r) => r.bytes().await.map_err(store_error)?,
        Err(object_store::Error::NotFound { .. }) => {
            return Err(invalid(format!(
                "no {MANIFEST_NAME}: nothing says what the directory holds, so it is left alone"
            )))
        }
        Err(source) => return Err(store_error(source)),
    };
    let manifest = Manifest::parse(&manifest_bytes)
        .map_err(|e| invalid(format!("{MANIFEST_NAME} is unreadable ({e}), so the directory is left alone")))?;
    let mut deleted = 0;
    for f in &manifest.files {
        match store.delete(&child(&base, &f.path)).await {
            Ok(()) => deleted += 1,
            Err(object_store::Error::NotFound { .. }) => {}
            Err(source) => return Err(store_error(source)),
        }
    }
    match store.delete(&child(&base, MANIFEST_NAME)).await {
        Ok(()) => deleted += 1,
        Err(object_store::Error::NotFound { .. }) => {}
        Err(source) => return Err(store_error(source)),
    }
    Ok(deleted)
}

/// The URLs of the directories directly under `url` (one level, by `/`), at most `limit`.
pub async fn list_dirs(url: &str, limit: usize) -> Result<Vec<String>, ObjectError> {
    let (store, base) = open(url)?;
    let listing = store
        .list_with_delimiter(Some(&base))
        .await
        .map_err(|source| ObjectError::Store { url: url.into(), source })?;
    let trimmed = url.trim_end_matches('/');
    Ok(listing
        .common_prefixes
        .iter()
        .filter_map(|p| p.filename().map(|name| format!("{trimmed}/{name}")))
        .take(limit)
        .collect())
}

/// Downloads the model directory at `url` into `dest` (which must not exist), verifying every
/// file; returns (files, bytes).
pub async fn download_dir(url: &str, dest: &Path) -> Result<(usize, u64), ObjectError> {
    let (store, base) = open(url)?;
    let invalid = |message: String| ObjectError::Invalid { url: url.into(), message };
    let manifest_bytes = match store.get(&child(&base, MANIFEST_NAME)).await {
        Ok(r) => r.bytes().await.map_err(|source| ObjectError::Store { url: url.into(), source })?,
        Err(object_store::Error::NotFound { .. }) => {
            return Err(invalid(format!("no {MANIFEST_NAME}: the upload never finished; pick another trial")))
        }
        Err(source) => return Err(ObjectError::Store { url: url.into(), source }),
    };
    let manifest = Manifest::parse(&manifest_bytes).map_err(|e| invalid(e.to_string()))?;
    if manifest.kind != ManifestKind::Dir {
        return Err(invalid("not a model directory".into()));
    }
    let parent = dest.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = dest.file_name().and_then(|n| n.to_str()).unwrap_or("model");
    let staging = parent.join(format!(".{name}.{}.partial", std::process::id()));
    let io = |p: &Path| {
        let path = p.display().to_string();
        move |source| ObjectError::Io { path, source }
    };
    let result = async {
        for f in &manifest.files {
            let target = staging.join(&f.path);
            if let Some(p) = target.parent() {
                tokio::fs::create_dir_all(p).await.map_err(io(p))?;
            }
            let object_url = format!("{url}/{}", f.path);
            let got = store
                .get(&child(&base, &f.path))
                .await
                .map_err(|source| ObjectError::Store { url: object_url.clone(), source })?;
            let mut stream = got.into_stream();
            let mut file = tokio::fs::File::create(&target).await.map_err(io(&target))?;
            let mut hasher = Hasher::default();
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(|source| ObjectError::Store { url: object_url.clone(), source })?;
                hasher.update(&chunk);
                file.write_all(&chunk).await.map_err(io(&target))?;
            }
            file.flush().await.map_err(io(&target))?;
            let (digest, size) = hasher.finish();
            if digest != f.digest() || size != f.size {
                return Err(invalid(format!("{} does not match its manifest (corrupted or overwritten)", f.path)));
            }
        }
        tokio::fs::rename(&staging, dest).await.map_err(io(dest))
    }
    .await;
    if result.is_err() {
        let _ = tokio::fs::remove_dir_all(&staging).await;
    }
    result.map(|()| (manifest.files.len(), manifest.total_size()))
}
