//! The exported model to where `--artifacts` says: a local path as it is, or — once the
//! coordinator says it will keep the model — uploaded to the coordinator's blob store or to
//! object storage.

use std::path::PathBuf;

use bertsweep_transfer::object::ObjectError;
use bertsweep_transfer::remote::RemoteError;
use tracing::info;

use super::coordinator::{Assignment, CallError};
use super::{ArtifactSink, Context};

/// Why an exported model could not be published (the trial is retried).
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The coordinator did not answer whether it keeps the model.
    #[error(transparent)]
    Offer(#[from] CallError),
    /// The upload to object storage failed.
    #[error("uploading the model to {url}: {error}")]
    Object {
        /// Where the model was going.
        url: String,
        /// Why.
        error: ObjectError,
    },
    /// The upload to the coordinator failed.
    #[error("uploading the model to the coordinator: {0}")]
    Coordinator(RemoteError),
}

/// Puts the exported model where `--artifacts` says and returns what to complete with: a
/// local path, or (while the coordinator wants it) a `blob:` reference or an object URL.
/// Err is why publishing failed (the trial is retried).
pub(super) async fn publish(
    ctx: &Context,
    a: &Assignment,
    exported: Option<PathBuf>,
    value: f64,
) -> Result<Option<String>, PublishError> {
    let Some(dir) = exported else { return Ok(None) };
    let sink = &ctx.options.artifacts;
    if let ArtifactSink::Local(_) = sink {
        return Ok(Some(std::path::absolute(&dir).unwrap_or(dir).display().to_string()));
    }
    let (wanted, why) = ctx.coordinator.offer_artifact(&a.lease, value).await?;
    if !wanted {
        info!(trial = %a.label(), "model not kept: {why}");
        return Ok(None);
    }
    let source = format!("{}:trial {}", bertsweep_transfer::manifest::this_host(), a.label());
    let started = std::time::Instant::now();
    let artifact = match sink {
        ArtifactSink::Object(base) => {
            let url = format!("{base}/{}/{}", a.study, a.number);
            if let Err(error) = bertsweep_transfer::object::upload_dir(&dir, &url, source).await {
                return Err(PublishError::Object { url, error });
            }
            url
        }
        _ => {
            let up = ctx.coordinator.remote().upload_path(&dir, source).await.map_err(PublishError::Coordinator)?;
            format!("blob:sha256:{}", up.digest)
        }
    };
    info!(trial = %a.label(), "model kept ({why}): {artifact} in {:.1?}", started.elapsed());
    Ok(Some(artifact))
}

/// Removes a staged export, if any (it is uploaded or of no use).
pub(super) fn remove_staging(dir: Option<PathBuf>) {
    if let Some(dir) = dir {
        let _ = std::fs::remove_dir_all(dir);
    }
}
