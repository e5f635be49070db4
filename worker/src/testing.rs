//! Fixtures for tests, here and in other crates: a tiny random BERT directory and a small
//! sentiment task it can learn in seconds on a CPU.

use std::path::{Path, PathBuf};

use tch::{nn, Device, Kind};

use crate::bert::BertForSequenceClassification;
use crate::config::BertConfig;
use crate::export::write_safetensors;

/// Vocabulary of the tiny model (uncased WordPiece; ids are line numbers).
pub const TINY_VOCAB: &[&str] = &[
    "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "a", "movie", "film", "is", "was", "very", "not", "good",
    "great", "fun", "bad", "awful", "boring", "plot", "acting", "and", "but", "##s", ".", ",",
];

/// `config.json` of the tiny model: 2 layers, hidden 32, 2 heads, saved as a `BertModel`.
pub fn tiny_config() -> BertConfig {
    let json = serde_json::json!({
        "model_type": "bert",
        "architectures": ["BertModel"],
        "vocab_size": TINY_VOCAB.len(),
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 64,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1,
        "attention_probs_dropout_prob": 0.1,
        "max_position_embeddings": 128,
        "type_vocab_size": 2,
        "initializer_range": 0.02,
        "layer_norm_eps": 1e-12,
        "pad_token_id": 0,
        "position_embedding_type": "absolute",
    });
    serde_json::from_value(json).expect("tiny config is valid")
}

/// Writes a randomly initialised tiny BERT to `dir` as Hugging Face writes a `BertModel`:
/// config.json, model.safetensors (keys without `bert.`, with a `position_ids` buffer to be
/// ignored), vocab.txt and tokenizer_config.json. Returns `dir`.
pub fn write_tiny_bert(dir: &Path, seed: i64) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let config = tiny_config();
    std::fs::write(dir.join("config.json"), serde_json::to_string_pretty(&config)?)?;
    std::fs::write(dir.join("vocab.txt"), TINY_VOCAB.join("\n") + "\n")?;
    std::fs::write(
        dir.join("tokenizer_config.json"),
        r#"{"do_lower_case": true, "tokenizer_class": "BertTokenizer"}"#,
    )?;
    tch::manual_seed(seed);
    let vs = nn::VarStore::new(Device::Cpu);
    let _model = BertForSequenceClassification::new(&vs.root(), &config, 2, 0, Kind::Float);
    let mut tensors: std::collections::HashMap<_, _> = vs
        .variables()
        .into_iter()
        .filter_map(|(name, t)| name.strip_prefix("bert.").map(|n| (n.to_owned(), t.detach())))
        .collect();
    tensors.insert(
        "embeddings.position_ids".to_owned(),
        tch::Tensor::arange(config.max_position_embeddings, (Kind::Float, Device::Cpu)).unsqueeze(0),
    );
    write_safetensors(&dir.join("model.safetensors"), &tensors).map_err(std::io::Error::other)?;
    Ok(dir.to_owned())
}

/// Writes `train.tsv` (`n_train` rows) and `dev.tsv` (`n_dev` rows) of a keyword sentiment
/// task (label 1 for good/great/fun, 0 for bad/awful/boring) to `dir`; returns both paths.
pub fn write_tiny_task(dir: &Path, n_train: usize, n_dev: usize) -> std::io::Result<(PathBuf, PathBuf)> {
    const POSITIVE: &[&str] = &["good", "great", "fun"];
    const NEGATIVE: &[&str] = &["bad", "awful", "boring"];
    const SUBJECTS: &[&str] = &["the movie", "the film", "the plot", "the acting", "a film"];
    const FILLERS: &[&str] = &["", " very", " not very", " , and the plot was", " but"];
    let sentence = |i: usize| {
        let label = i % 2;
        let words = if label == 1 { POSITIVE } else { NEGATIVE };
        let subject = SUBJECTS[(i / 2) % SUBJECTS.len()];
        let filler = FILLERS[(i / 7) % FILLERS.len()];
        let verb = if i.is_multiple_of(3) { "is" } else { "was" };
        (format!("{subject} {verb}{filler} {} .", words[(i / 3) % words.len()]), label)
    };
    let write = |path: &Path, range: std::ops::Range<usize>| -> std::io::Result<()> {
        let mut text = String::from("sentence\tlabel\n");
        for i in range {
            let (s, l) = sentence(i);
            text.push_str(&format!("{s}\t{l}\n"));
        }
        std::fs::write(path, text)
    };
    let (train, dev) = (dir.join("train.tsv"), dir.join("dev.tsv"));
    write(&train, 0..n_train)?;
    write(&dev, 10_000..10_000 + n_dev)?;
    Ok((train, dev))
}

/// Torch's random generator is process-wide: unit tests that train (and so seed it) take turns
/// through this, so a test comparing two trainings sees only its own draws.
pub fn torch_turn() -> std::sync::MutexGuard<'static, ()> {
    static TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());
    TURN.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
