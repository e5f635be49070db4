//! `bertsweep download STUDY [--trial N] DIR`: brings a trial's exported model (the best one
//! by default) to this machine from wherever it is kept, verifying every file against its
//! sha256 before `DIR` appears.

use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use bertsweep_proto::v1 as pb;
use bertsweep_transfer::blob_dir::BlobDir;
use bertsweep_transfer::remote::{materialize, Remote};
use bertsweep_transfer::{human_bytes, ArtifactRef, ManifestKind};

use super::client::Client;
use super::inputs::shown;

/// `DIR` must be absent or an empty directory (nothing of the user's is overwritten).
fn check_destination(dir: &Path) -> Result<()> {
    match std::fs::read_dir(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => bail!("cannot use {} as the destination: {e}", shown(dir)),
        Ok(mut entries) => {
            if entries.next().is_some() {
                bail!("{} exists and is not empty; name a new directory", shown(dir));
            }
            std::fs::remove_dir(dir).with_context(|| format!("cannot replace the empty {}", shown(dir)))
        }
    }
}

/// Picks the trial: `--trial N`, or the study's best.
async fn pick(client: &mut Client, study: &str, number: Option<u32>) -> Result<pb::Trial> {
    match number {
        None => Ok(client.best_trial(study).await?.trial.expect("best_trial checks")),
        Some(n) => client
            .list_trials(study)
            .await?
            .into_iter()
            .find(|t| t.number == n)
            .ok_or_else(|| anyhow!("study {study:?} has no trial {n}")),
    }
}

/// Runs the verb; returns the line to print.
pub async fn run(client: &mut Client, study: &str, number: Option<u32>, dir: &Path) -> Result<String> {
    let trial = pick(client, study, number).await?;
    let label = format!("trial {} of study {study:?}", trial.number);
    let artifact = ArtifactRef::parse(&trial.artifact).unwrap_or(ArtifactRef::Worker(trial.artifact.clone()));
    if artifact == ArtifactRef::None {
        bail!(
            "{label} has no kept model: only the best budget.keep_artifacts trials keep theirs (see `bertsweep trials {study}` for which), and workers started with --no-export keep none"
        );
    }
    let value = trial.value.map(|v| format!(" ({v:.4})")).unwrap_or_default();
    match artifact {
        ArtifactRef::Blob(digest) => {
            check_destination(dir)?;
            let parent = dir.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
            std::fs::create_dir_all(parent).with_context(|| format!("cannot create {}", shown(parent)))?;
            // Blobs land next to DIR (same file system), verified, then are linked into place.
            let staging = tempfile::Builder::new()
                .prefix(".bertsweep-download-")
                .tempdir_in(parent)
                .with_context(|| format!("cannot write in {}", shown(parent)))?;
            let blobs = BlobDir::open(staging.path())?;
            let remote = Remote::new(client.raw());
            let manifest = remote.fetch_manifest(&blobs, digest).await?;
            if manifest.kind != ManifestKind::Dir {
                bail!("{label}: its artifact is not a model directory");
            }
            remote.fetch_files(&blobs, &manifest).await?;
            materialize(&blobs, &manifest, dir)?;
            Ok(format!(
                "downloaded {label}{value} to {}: {} files, {}",
                shown(dir),
                manifest.files.len(),
                human_bytes(manifest.total_size())
            ))
        }
        ArtifactRef::Object(_) => {
            check_destination(dir)?;
            let (files, bytes) = bertsweep_transfer::object::download_dir(&trial.artifact, dir).await?;
            Ok(format!("downloaded {label}{value} from {} to {}: {files} files, {}", trial.artifact, shown(dir), human_bytes(bytes)))
        }
        _ => bail!(
            "{label}'s model was written to {} on the worker that trained it ({}; it ran with --artifacts DIR); copy it from there, or run workers without --artifacts so models are kept on the coordinator",
            trial.artifact,
            if trial.worker_id.is_empty() { "unknown worker" } else { &trial.worker_id }
        ),
    }
}
