//! Pre-trained weights of a Hugging Face BERT directory, under the names the model uses.
//!
//! Both `BertModel` names (`embeddings.…`, `encoder.layer.N.…`, `pooler.…`) and
//! `BertForSequenceClassification` / `BertForPreTraining` names (`bert.…`, `classifier.…`,
//! `cls.…`) are accepted; everything is normalised to the `bert.`/`classifier.` form, which is
//! exactly the variable naming of [`crate::bert`], so loading is a 1:1 copy.
//!
//! "Checkpoint" here means a Hugging Face pre-trained checkpoint (where every trial starts);
//! the checkpoints a trial writes after its epochs, to resume from, are
//! [`crate::training_checkpoint`]'s.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use tch::{nn, Kind, Tensor};

/// Why weights could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum PretrainedError {
    /// No weight file in the model directory.
    #[error("{dir}: no model.safetensors, model.safetensors.index.json or pytorch_model.bin")]
    Missing {
        /// The model directory.
        dir: PathBuf,
    },
    /// The weight file could not be read or parsed.
    #[error("{path}: cannot read weights: {message}")]
    Read {
        /// The weight file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// A tensor has a dtype the model cannot use.
    #[error("{path}: tensor {key} has unsupported dtype {dtype}")]
    Dtype {
        /// The weight file.
        path: PathBuf,
        /// The checkpoint key.
        key: String,
        /// The dtype found.
        dtype: String,
    },
    /// A tensor the model needs is not in the checkpoint.
    #[error("{path}: missing tensor {key} (expected shape {expected:?})")]
    MissingTensor {
        /// The weight file.
        path: PathBuf,
        /// The key, in `bert.`/`classifier.` form.
        key: String,
        /// The shape the model expects.
        expected: Vec<i64>,
    },
    /// A tensor has another shape than `config.json` implies.
    #[error("{path}: tensor {key} has shape {found:?}, config.json implies {expected:?}")]
    Shape {
        /// The weight file.
        path: PathBuf,
        /// The key, in `bert.`/`classifier.` form.
        key: String,
        /// The shape the model expects.
        expected: Vec<i64>,
        /// The shape in the checkpoint.
        found: Vec<i64>,
    },
    /// Copying into the model failed inside torch.
    #[error("copying {key} into the model: {source}")]
    Torch {
        /// The variable being written.
        key: String,
        /// The torch error.
        source: tch::TchError,
    },
}

/// Float tensors of a pre-trained checkpoint on the CPU, keyed by normalised name.
pub struct Weights {
    /// Tensors by `bert.`/`classifier.` name.
    pub tensors: HashMap<String, Tensor>,
    /// The file they came from (the index file for sharded checkpoints), for error messages.
    pub source: PathBuf,
}

/// What [`Weights::load_into`] did besides copying.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct LoadReport {
    /// Variables absent from the checkpoint (or of another shape, for the classifier) that
    /// keep their fresh initialisation: the classifier, and the pooler if missing.
    pub initialized: Vec<String>,
    /// Checkpoint tensors the model does not use.
    pub unused: Vec<String>,
}

impl Weights {
    /// Reads the weights of the model directory `dir`: `model.safetensors`, a sharded
    /// `model.safetensors.index.json`, or `pytorch_model.bin`, in that order of preference.
    pub fn from_dir(dir: &Path) -> Result<Self, PretrainedError> {
        let single = dir.join("model.safetensors");
        let index = dir.join("model.safetensors.index.json");
        let bin = dir.join("pytorch_model.bin");
        if single.is_file() {
            let mut tensors = HashMap::new();
            read_safetensors(&single, &mut tensors)?;
            Ok(Weights { tensors, source: single })
        } else if index.is_file() {
            let mut tensors = HashMap::new();
            for shard in shard_files(&index)? {
                read_safetensors(&dir.join(shard), &mut tensors)?;
            }
            Ok(Weights { tensors, source: index })
        } else if bin.is_file() {
            Ok(Weights { tensors: read_pytorch_bin(&bin)?, source: bin })
        } else {
            Err(PretrainedError::Missing { dir: dir.to_owned() })
        }
    }

    /// Copies every variable of `vs` from the checkpoint, checking names and shapes.
    ///
    /// Variables under `classifier.` and `bert.pooler.` may be missing (a `BertModel`
    /// checkpoint has no classifier; some have no pooler); they keep their initialisation, as
    /// transformers does. A classifier of another shape (other number of labels) is likewise
    /// re-initialised. Any other missing or mis-shaped tensor is an error naming the key.
    pub fn load_into(&self, vs: &nn::VarStore) -> Result<LoadReport, PretrainedError> {
        let mut report = LoadReport::default();
        let mut variables: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
        variables.sort_by(|a, b| a.0.cmp(&b.0));
        let mut used = BTreeSet::new();
        for (name, mut var) in variables {
            let expected = var.size();
            let may_initialize = name.starts_with("classifier.") || name.starts_with("bert.pooler.");
            match self.tensors.get(&name) {
                Some(value) if value.size() == expected => {
                    tch::no_grad(|| var.f_copy_(value))
                        .map_err(|source| PretrainedError::Torch { key: name.clone(), source })?;
                    used.insert(name);
                }
                Some(_) if name.starts_with("classifier.") => {
                    used.insert(name.clone());
                    report.initialized.push(name);
                }
                Some(value) => {
                    return Err(PretrainedError::Shape {
                        path: self.source.clone(),
                        key: name,
                        expected,
                        found: value.size(),
                    })
                }
                None if may_initialize => report.initialized.push(name),
                None => return Err(PretrainedError::MissingTensor { path: self.source.clone(), key: name, expected }),
            }
        }
        report.unused = self.tensors.keys().filter(|k| !used.contains(*k)).cloned().collect();
        report.unused.sort();
        Ok(report)
    }
}

/// The model's name for a checkpoint key, or `None` for keys the classifier never uses
/// (`position_ids` buffers, pre-training heads).
pub fn normalize_key(key: &str) -> Option<String> {
    if key.ends_with("position_ids") || key.ends_with("embeddings.token_type_ids") {
        return None;
    }
    let key = if key.starts_with("bert.") || key.starts_with("classifier.") {
        key.to_owned()
    } else if ["embeddings.", "encoder.", "pooler."].iter().any(|p| key.starts_with(p)) {
        format!("bert.{key}")
    } else {
        return None;
    };
    // Checkpoints converted from TensorFlow name LayerNorm parameters gamma/beta.
    let key = match key.rsplit_once('.') {
        Some((stem, "gamma")) => format!("{stem}.weight"),
        Some((stem, "beta")) => format!("{stem}.bias"),
        _ => key,
    };
    Some(key)
}

fn read_error(path: &Path, message: impl ToString) -> PretrainedError {
    PretrainedError::Read { path: path.to_owned(), message: message.to_string() }
}

fn read_safetensors(path: &Path, out: &mut HashMap<String, Tensor>) -> Result<(), PretrainedError> {
    use safetensors::Dtype;
    let bytes = std::fs::read(path).map_err(|e| read_error(path, e))?;
    let file = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| read_error(path, e))?;
    for (key, view) in file.tensors() {
        let Some(name) = normalize_key(&key) else {
            continue;
        };
        let kind = match view.dtype() {
            Dtype::F32 => Kind::Float,
            Dtype::F16 => Kind::Half,
            Dtype::BF16 => Kind::BFloat16,
            Dtype::F64 => Kind::Double,
            other => return Err(PretrainedError::Dtype { path: path.to_owned(), key, dtype: format!("{other:?}") }),
        };
        let shape: Vec<i64> = view.shape().iter().map(|&d| d as i64).collect();
        let tensor = Tensor::f_from_data_size(view.data(), &shape, kind)
            .and_then(|t| t.f_to_kind(Kind::Float))
            .map_err(|e| read_error(path, format!("tensor {key}: {e}")))?;
        out.insert(name, tensor);
    }
    Ok(())
}

fn shard_files(index: &Path) -> Result<BTreeSet<String>, PretrainedError> {
    let text = std::fs::read_to_string(index).map_err(|e| read_error(index, e))?;
    let value: serde_json::Value = serde_json::from_str(&text).map_err(|e| read_error(index, e))?;
    let map =
        value.get("weight_map").and_then(|m| m.as_object()).ok_or_else(|| read_error(index, "no weight_map object"))?;
    Ok(map.values().filter_map(|v| v.as_str().map(str::to_owned)).collect())
}

fn read_pytorch_bin(path: &Path) -> Result<HashMap<String, Tensor>, PretrainedError> {
    let named = Tensor::loadz_multi(path).map_err(|e| {
        read_error(path, format!("{e} (convert it to model.safetensors with transformers' save_pretrained)"))
    })?;
    let mut out = HashMap::new();
    for (key, tensor) in named {
        let Some(name) = normalize_key(&key) else {
            continue;
        };
        if !tensor.is_floating_point() {
            return Err(PretrainedError::Dtype { path: path.to_owned(), key, dtype: format!("{:?}", tensor.kind()) });
        }
        let tensor = tensor.f_to_kind(Kind::Float).map_err(|e| read_error(path, e))?;
        out.insert(name, tensor);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_every_known_naming() {
        assert_eq!(
            normalize_key("embeddings.word_embeddings.weight").unwrap(),
            "bert.embeddings.word_embeddings.weight"
        );
        assert_eq!(
            normalize_key("encoder.layer.3.attention.self.query.weight").unwrap(),
            "bert.encoder.layer.3.attention.self.query.weight"
        );
        assert_eq!(normalize_key("bert.pooler.dense.bias").unwrap(), "bert.pooler.dense.bias");
        assert_eq!(normalize_key("classifier.weight").unwrap(), "classifier.weight");
        assert_eq!(normalize_key("bert.embeddings.LayerNorm.gamma").unwrap(), "bert.embeddings.LayerNorm.weight");
        assert_eq!(normalize_key("embeddings.LayerNorm.beta").unwrap(), "bert.embeddings.LayerNorm.bias");
        assert!(normalize_key("embeddings.position_ids").is_none());
        assert!(normalize_key("bert.embeddings.position_ids").is_none());
        assert!(normalize_key("cls.predictions.bias").is_none());
    }

    #[test]
    fn missing_weights_name_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        let err = Weights::from_dir(dir.path()).err().unwrap().to_string();
        assert!(err.contains("no model.safetensors"), "{err}");
    }
}
