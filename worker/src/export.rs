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

#[cfg(test)]
mod tests {

    use tch::{nn, Device, Reduction};

    use super::*;
    use crate::bert::BertForSequenceClassification;
    use crate::data::{Batch, ClassificationData, DataSpec};
    use crate::pretrained::Weights;
    use crate::testing::{write_tiny_bert, write_tiny_task};
    use crate::tokenizer::BertTokenizer;
    use crate::train::{run_trial, RunToEnd, TrialConfig};

    /// Mean validation cross-entropy of the model stored in `dir`.
    fn eval_loss(dir: &Path, cfg: &TrialConfig) -> f64 {
        let config = BertConfig::from_dir(dir).unwrap();
        let tokenizer = BertTokenizer::from_dir(dir, cfg.max_seq_length).unwrap();
        let spec = DataSpec { max_train_samples: None, ..cfg.data_spec() };
        let data = ClassificationData::load(&spec, &tokenizer).unwrap();
        let vs = nn::VarStore::new(Device::Cpu);
        let model = BertForSequenceClassification::new(&vs.root(), &config, 2, 0, Kind::Float);
        let report = Weights::from_dir(dir).unwrap().load_into(&vs).unwrap();
        assert!(report.initialized.is_empty() && report.unused.is_empty(), "{report:?}");
        let all: Vec<usize> = (0..data.validation.len()).collect();
        let batch = Batch::new(&data.validation, &all, tokenizer.pad_id, Device::Cpu).unwrap();
        let logits = tch::no_grad(|| model.forward_t(&batch.input_ids, batch.attention_mask.as_ref(), false)).unwrap();
        f64::try_from(logits.cross_entropy_loss::<Tensor>(&batch.labels, None, Reduction::Mean, -100, 0.0)).unwrap()
    }

    #[test]
    fn exports_the_best_epoch_as_a_loadable_hf_directory() {
        let _turn = crate::testing::torch_turn();
        let dir = tempfile::tempdir().unwrap();
        let model_dir = write_tiny_bert(&dir.path().join("model"), 5).unwrap();
        let (train_file, validation_file) = write_tiny_task(dir.path(), 96, 40).unwrap();
        // "Maximise eval_loss" makes an early epoch the best, so exporting the last would show.
        let cfg = TrialConfig {
            model_dir,
            train_file,
            validation_file,
            learning_rate: 3e-3,
            num_train_epochs: 5,
            objective_metric: "eval_loss".into(),
            maximize: true,
            ..TrialConfig::default()
        };
        let out = dir.path().join("export");
        let outcome = run_trial(&cfg, Device::Cpu, &mut RunToEnd, Some(&out)).unwrap();
        assert_eq!(outcome.artifact.as_deref(), Some(out.as_path()));
        assert!(outcome.best_epoch < outcome.epochs_run, "{outcome:?}");
        let exported = eval_loss(&out, &cfg);
        assert!((exported - outcome.best_metrics["eval_loss"]).abs() < 1e-5, "{exported} vs {outcome:?}");

        let config: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
        assert_eq!(config["architectures"][0], "BertForSequenceClassification");
        assert_eq!(config["id2label"]["1"], "1");
        assert_eq!(config["label2id"]["0"], 0);
        assert_eq!(config["num_labels"], 2);
        assert!(out.join("vocab.txt").is_file() && out.join("tokenizer_config.json").is_file());
        let bytes = std::fs::read(out.join("model.safetensors")).unwrap();
        let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
        assert_eq!(meta.metadata().as_ref().unwrap()["format"], "pt");
        assert!(meta.tensors().contains_key("bert.encoder.layer.1.output.LayerNorm.weight"));
    }
}
