//! `study create`: the study's local inputs travel with it. Every plain path the study file
//! names (train and validation files, a local model directory) is checked, uploaded to the
//! coordinator's blob store (only what it lacks), and replaced in the text sent by its
//! `blob:sha256:…` reference, with the original path kept as a comment.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use bertsweep_transfer::remote::Remote;
use bertsweep_transfer::{human_bytes, InputRef};

use crate::spec::StudySpec;

/// One input to upload.
struct Upload {
    key: &'static str,
    path: PathBuf,
}

/// Checks every local input before anything is sent: a missing or unreadable one is one line
/// and nothing is uploaded or created.
fn local_inputs(spec: &StudySpec) -> Result<Vec<Upload>> {
    let task = &spec.task;
    let mut uploads = Vec::new();
    for input in task.inputs() {
        let (key, text, want_dir) = (input.key, input.reference, input.is_dir);
        let Ok(InputRef::Path(p)) = InputRef::parse(text) else { continue };
        let path = std::path::absolute(&p).unwrap_or_else(|_| PathBuf::from(&p));
        let meta = match std::fs::metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
                "task.{key} = {p:?} does not exist on this machine (looked for {}); give an existing path to upload it, or worker:/path for one every worker opens itself",
                path.display()
            ),
            Err(e) => bail!("task.{key} = {p:?}: cannot read {}: {e}", path.display()),
        };
        match (want_dir, meta.is_dir()) {
            (true, false) => bail!("task.model = {p:?} is not a directory; name the model's directory (config.json, tokenizer, weights) or a Hub model as hf:org/name"),
            (false, true) => bail!("task.{key} = {p:?} is a directory; name the data file itself"),
            _ => {}
        }
        // Readable now, so the upload does not fail half way for a permission problem.
        if !want_dir {
            std::fs::File::open(&path)
                .with_context(|| format!("task.{key} = {p:?}: cannot read {}", path.display()))?;
        }
        uploads.push(Upload { key, path });
    }
    Ok(uploads)
}

/// Uploads the study's local inputs and returns the study file text to send.
pub async fn upload_inputs(remote: &Remote, spec: &StudySpec, text: &str) -> Result<String> {
    let uploads = local_inputs(spec)?;
    if uploads.is_empty() {
        return Ok(text.to_string());
    }
    let mut doc: toml_edit::DocumentMut = text.parse().context("the study file is not valid TOML")?;
    let host = bertsweep_transfer::manifest::this_host();
    for u in uploads {
        let source = format!("{host}:{}", u.path.display());
        let up =
            remote.upload_path(&u.path, source.clone()).await.map_err(|e| anyhow::anyhow!("task.{}: {e}", u.key))?;
        eprintln!(
            "uploaded task.{} ({}: {} file{}, {}; {} sent)",
            u.key,
            u.path.display(),
            up.manifest.files.len(),
            if up.manifest.files.len() == 1 { "" } else { "s" },
            human_bytes(up.manifest.total_size()),
            human_bytes(up.bytes_sent)
        );
        let mut value = toml_edit::Value::from(format!("blob:sha256:{}", up.digest));
        value.decor_mut().set_suffix(format!(" # uploaded from {}", source.replace('\n', " ")));
        doc["task"][u.key] = toml_edit::Item::Value(value);
    }
    Ok(doc.to_string())
}

/// Where a relative path given to `download` lands, for the message.
pub fn shown(path: &Path) -> String {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf()).display().to_string()
}
