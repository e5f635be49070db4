//! Writes a trained classifier as a Hugging Face directory that
//! `AutoModelForSequenceClassification.from_pretrained` loads as is.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use safetensors::tensor::{Dtype, TensorView};
use tch::{Kind, Tensor};

use crate::config::BertConfig;
use crate::tokenizer::TOKENIZER_FILES;

/// Why an export failed.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// Creating the directory or writing or copying a file failed.
    #[error("exporting to {path}: {source}")]
    Io {
        /// The file or directory being written.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Serialising `config.json` or `model.safetensors` failed.
    #[error("exporting to {path}: {message}")]
    Serialize {
        /// The file being written.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
}

/// Writes `config.json` (BertForSequenceClassification, `id2label`/`label2id` from `labels`),
/// `model.safetensors` (`weights` by `bert.`/`classifier.` name, fp32, metadata
/// `{"format":"pt"}`) and copies the tokenizer files of `model_dir` into `dir`.
/// Returns `dir`.
pub fn export_classifier(
    dir: &Path,
    config: &BertConfig,
    labels: &[String],
    weights: &HashMap<String, Tensor>,
    model_dir: &Path,
) -> Result<PathBuf, ExportError> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| ExportError::Io { path, source }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;

    let config_path = dir.join("config.json");
    let json = serde_json::to_string_pretty(&config.for_sequence_classification(labels))
        .map_err(|e| ExportError::Serialize { path: config_path.clone(), message: e.to_string() })?;
    std::fs::write(&config_path, json + "\n").map_err(io(&config_path))?;

    let model_path = dir.join("model.safetensors");
    write_safetensors(&model_path, weights)?;

    for name in TOKENIZER_FILES {
        let source = model_dir.join(name);
        if source.is_file() {
            let target = dir.join(name);
            std::fs::copy(&source, &target).map_err(io(&target))?;
        }
    }
    Ok(dir.to_owned())
}

/// Writes `tensors` as fp32 safetensors with `{"format":"pt"}` metadata (transformers
/// refuses files without it).
pub fn write_safetensors(path: &Path, tensors: &HashMap<String, Tensor>) -> Result<(), ExportError> {
    let serialize = |message: String| ExportError::Serialize { path: path.to_owned(), message };
    let mut names: Vec<&String> = tensors.keys().collect();
    names.sort();
    let mut buffers = Vec::with_capacity(names.len());
    for name in &names {
        let tensor = &tensors[*name];
        let values = tensor
            .f_to_kind(Kind::Float)
            .and_then(|t| t.f_contiguous())
            .and_then(|t| t.f_view(-1))
            .and_then(|t| Vec::<f32>::try_from(&t))
            .map_err(|e| serialize(format!("{name}: {e}")))?;
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        let shape: Vec<usize> = tensor.size().iter().map(|&d| d as usize).collect();
        buffers.push((name.as_str(), shape, bytes));
    }
    let views = buffers
        .iter()
        .map(|(name, shape, bytes)| {
            TensorView::new(Dtype::F32, shape.clone(), bytes).map(|view| (name.to_string(), view))
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| serialize(e.to_string()))?;
    let metadata = HashMap::from([("format".to_owned(), "pt".to_owned())]);
    safetensors::serialize_to_file(views, Some(metadata), path).map_err(|e| serialize(e.to_string()))
}
