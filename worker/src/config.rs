//! `config.json` of a Hugging Face BERT directory, deserialised as is.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Why a `config.json` could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file is missing or unreadable.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The `config.json` that was asked for.
        path: PathBuf,
        /// The underlying I/O error.
        source: std::io::Error,
    },
    /// The file is not valid JSON or lacks a required field.
    #[error("{path}: not a valid BERT config: {source}")]
    Parse {
        /// The offending `config.json`.
        path: PathBuf,
        /// What serde objected to.
        source: serde_json::Error,
    },
    /// The checkpoint is another architecture (RoBERTa, GPT-2, ...).
    #[error("{path}: {what}; only BERT checkpoints (model_type \"bert\") are supported")]
    NotBert {
        /// The offending `config.json`.
        path: PathBuf,
        /// What gave it away.
        what: String,
    },
    /// The numbers do not describe a usable BERT (e.g. hidden size not divisible by heads).
    #[error("{path}: {reason}")]
    Invalid {
        /// The offending `config.json`.
        path: PathBuf,
        /// What is inconsistent.
        reason: String,
    },
}

/// The fields of a Hugging Face `BertConfig` that the model needs; unknown fields are kept
/// in `extra` so an exported `config.json` loses nothing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BertConfig {
    /// Must be "bert"; anything else is rejected.
    pub model_type: String,
    /// Hugging Face class names the checkpoint was saved from (BertModel, BertForMaskedLM...).
    #[serde(default)]
    pub architectures: Option<Vec<String>>,
    /// Number of rows of the word-embedding matrix.
    pub vocab_size: i64,
    /// Width of every hidden state.
    pub hidden_size: i64,
    /// Number of encoder layers.
    pub num_hidden_layers: i64,
    /// Attention heads per layer; `hidden_size` must be a multiple of it.
    pub num_attention_heads: i64,
    /// Width of the feed-forward block.
    pub intermediate_size: i64,
    /// Activation of the feed-forward block ("gelu" is exact erf GELU, as in transformers).
    #[serde(default = "default_hidden_act")]
    pub hidden_act: String,
    /// Dropout after embeddings, attention output and feed-forward output.
    #[serde(default = "default_dropout")]
    pub hidden_dropout_prob: f64,
    /// Dropout on attention probabilities.
    #[serde(default = "default_dropout")]
    pub attention_probs_dropout_prob: f64,
    /// Dropout before the classifier; `None` means `hidden_dropout_prob` (as transformers).
    #[serde(default)]
    pub classifier_dropout: Option<f64>,
    /// Rows of the position-embedding matrix: the longest sequence the model accepts.
    pub max_position_embeddings: i64,
    /// Rows of the token-type (segment) embedding matrix.
    #[serde(default = "default_type_vocab_size")]
    pub type_vocab_size: i64,
    /// Standard deviation of the normal initialisation of new weights (the classifier).
    #[serde(default = "default_initializer_range")]
    pub initializer_range: f64,
    /// Epsilon of every LayerNorm.
    #[serde(default = "default_layer_norm_eps")]
    pub layer_norm_eps: f64,
    /// Token id of `[PAD]`, used for padding batches.
    #[serde(default)]
    pub pad_token_id: i64,
    /// Only "absolute" is supported.
    #[serde(default)]
    pub position_embedding_type: Option<String>,
    /// Class names by index, if the checkpoint is already a classifier.
    #[serde(default)]
    pub id2label: Option<BTreeMap<String, String>>,
    /// Class indices by name, if the checkpoint is already a classifier.
    #[serde(default)]
    pub label2id: Option<BTreeMap<String, i64>>,
    /// Every other field of the file, kept verbatim for export.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

fn default_hidden_act() -> String {
    "gelu".to_owned()
}
fn default_dropout() -> f64 {
    0.1
}
fn default_type_vocab_size() -> i64 {
    2
}
fn default_initializer_range() -> f64 {
    0.02
}
fn default_layer_norm_eps() -> f64 {
    1e-12
}

/// Activations accepted in `hidden_act`.
pub(crate) const SUPPORTED_ACTIVATIONS: &[&str] = &["gelu", "gelu_new", "gelu_pytorch_tanh", "gelu_fast", "relu"];

impl BertConfig {
    /// Reads and validates `<dir>/config.json`.
    pub fn from_dir(dir: &Path) -> Result<Self, ConfigError> {
        Self::from_file(&dir.join("config.json"))
    }

    /// Reads and validates one `config.json`.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
        // Check the architecture before the fields: a RoBERTa or GPT-2 config would otherwise
        // fail with a confusing "missing field" message.
        let raw: serde_json::Value =
            serde_json::from_str(&text).map_err(|source| ConfigError::Parse { path: path.to_owned(), source })?;
        check_is_bert(path, &raw)?;
        let config: BertConfig =
            serde_json::from_value(raw).map_err(|source| ConfigError::Parse { path: path.to_owned(), source })?;
        config.validate(path)?;
        Ok(config)
    }

    fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let invalid = |reason: String| ConfigError::Invalid { path: path.to_owned(), reason };
        let positive = [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("intermediate_size", self.intermediate_size),
            ("max_position_embeddings", self.max_position_embeddings),
            ("type_vocab_size", self.type_vocab_size),
        ];
        for (name, value) in positive {
            if value <= 0 {
                return Err(invalid(format!("{name} must be positive, got {value}")));
            }
        }
        if self.hidden_size % self.num_attention_heads != 0 {
            return Err(invalid(format!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                self.hidden_size, self.num_attention_heads
            )));
        }
        if !SUPPORTED_ACTIVATIONS.contains(&self.hidden_act.as_str()) {
            return Err(invalid(format!(
                "hidden_act {:?} is not supported (expected one of {SUPPORTED_ACTIVATIONS:?})",
                self.hidden_act
            )));
        }
        if let Some(kind) = &self.position_embedding_type {
            if kind != "absolute" {
                return Err(invalid(format!("position_embedding_type {kind:?} is not supported (only \"absolute\")")));
            }
        }
        Ok(())
    }

    /// Width of one attention head.
    pub fn head_dim(&self) -> i64 {
        self.hidden_size / self.num_attention_heads
    }

    /// Dropout applied to the pooled output before the classifier.
    pub fn classifier_dropout_prob(&self) -> f64 {
        self.classifier_dropout.unwrap_or(self.hidden_dropout_prob)
    }

    /// The config of this model turned into a sequence classifier over `labels`
    /// (index = class id), as transformers writes it.
    pub fn for_sequence_classification(&self, labels: &[String]) -> BertConfig {
        let mut config = self.clone();
        config.architectures = Some(vec!["BertForSequenceClassification".to_owned()]);
        config.id2label = Some(labels.iter().enumerate().map(|(i, l)| (i.to_string(), l.clone())).collect());
        config.label2id = Some(labels.iter().enumerate().map(|(i, l)| (l.clone(), i as i64)).collect());
        config.extra.insert("num_labels".to_owned(), labels.len().into());
        config.extra.insert("problem_type".to_owned(), "single_label_classification".into());
        config
    }
}

fn check_is_bert(path: &Path, raw: &serde_json::Value) -> Result<(), ConfigError> {
    let not_bert = |what: String| ConfigError::NotBert { path: path.to_owned(), what };
    match raw.get("model_type").and_then(|v| v.as_str()) {
        Some("bert") => {}
        Some(other) => return Err(not_bert(format!("model_type is {other:?}"))),
        None => return Err(not_bert("model_type is missing".to_owned())),
    }
    if let Some(architectures) = raw.get("architectures").and_then(|v| v.as_array()) {
        for arch in architectures.iter().filter_map(|a| a.as_str()) {
            if !arch.starts_with("Bert") {
                return Err(not_bert(format!("architecture {arch:?} is not a BERT class")));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, json: &str) -> PathBuf {
        let path = dir.join("config.json");
        std::fs::write(&path, json).unwrap();
        path
    }

    const TINY: &str = r#"{"model_type":"bert","architectures":["BertModel"],"vocab_size":10,
        "hidden_size":8,"num_hidden_layers":1,"num_attention_heads":2,"intermediate_size":16,
        "max_position_embeddings":16,"custom_field":42}"#;

    #[test]
    fn reads_defaults_and_keeps_unknown_fields() {
        let dir = tempfile::tempdir().unwrap();
        let config = BertConfig::from_file(&write(dir.path(), TINY)).unwrap();
        assert_eq!(config.layer_norm_eps, 1e-12);
        assert_eq!(config.hidden_act, "gelu");
        assert_eq!(config.head_dim(), 4);
        assert_eq!(config.extra["custom_field"], 42);
        let out = serde_json::to_value(config.for_sequence_classification(&["a".into(), "b".into()])).unwrap();
        assert_eq!(out["custom_field"], 42);
        assert_eq!(out["num_labels"], 2);
        assert_eq!(out["id2label"]["1"], "b");
        assert_eq!(out["architectures"][0], "BertForSequenceClassification");
    }

    #[test]
    fn rejects_other_architectures_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), r#"{"model_type":"roberta","vocab_size":3}"#);
        let err = BertConfig::from_file(&path).unwrap_err().to_string();
        assert!(err.contains("roberta") && err.contains("config.json"), "{err}");
        let path = write(dir.path(), &TINY.replace("BertModel", "RobertaModel"));
        let err = BertConfig::from_file(&path).unwrap_err().to_string();
        assert!(err.contains("RobertaModel"), "{err}");
    }

    #[test]
    fn rejects_inconsistent_shapes_and_missing_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), &TINY.replace("\"num_attention_heads\":2", "\"num_attention_heads\":3"));
        let err = BertConfig::from_file(&path).unwrap_err().to_string();
        assert!(err.contains("not a multiple"), "{err}");
        let err = BertConfig::from_dir(&dir.path().join("nope")).unwrap_err().to_string();
        assert!(err.contains("nope/config.json"), "{err}");
    }
}
