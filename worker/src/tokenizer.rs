//! The checkpoint's tokenizer: `tokenizer.json` if present, else a BERT WordPiece tokenizer
//! built from `vocab.txt` (lower-casing per `tokenizer_config.json`, as `BertTokenizer` does).

use std::path::{Path, PathBuf};

use tokenizers::models::wordpiece::WordPiece;
use tokenizers::normalizers::BertNormalizer;
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use tokenizers::processors::bert::BertProcessing;
use tokenizers::{AddedToken, Tokenizer, TruncationParams};

/// Files a Hugging Face BERT directory may carry for its tokenizer; export copies them.
pub const TOKENIZER_FILES: &[&str] =
    &["tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json"];

/// Why the tokenizer could not be loaded or used.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    /// Neither `tokenizer.json` nor `vocab.txt` is in the model directory.
    #[error("{dir}: no tokenizer.json or vocab.txt in the model directory")]
    Missing {
        /// The model directory.
        dir: PathBuf,
    },
    /// A tokenizer file exists but could not be parsed.
    #[error("{path}: cannot load tokenizer: {message}")]
    Load {
        /// The tokenizer file.
        path: PathBuf,
        /// What the tokenizers library said.
        message: String,
    },
    /// The vocabulary lacks a token BERT needs ([CLS], [SEP], [PAD]).
    #[error("{path}: the vocabulary has no {token} token")]
    MissingToken {
        /// The tokenizer file.
        path: PathBuf,
        /// The token that was looked for.
        token: String,
    },
    /// Encoding text failed.
    #[error("tokenizing failed: {0}")]
    Encode(String),
}

/// A tokenizer that truncates to a maximum length and never pads (batches pad dynamically).
pub struct BertTokenizer {
    inner: Tokenizer,
    /// Id of the `[PAD]` token, used when batches are padded.
    pub pad_id: i64,
    /// Longest encoding it returns, special tokens included.
    pub max_length: usize,
    /// Identifies the tokenizer file and settings, for the dataset cache.
    pub fingerprint: String,
}

impl std::fmt::Debug for BertTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BertTokenizer")
            .field("fingerprint", &self.fingerprint)
            .field("pad_id", &self.pad_id)
            .field("max_length", &self.max_length)
            .finish()
    }
}

impl BertTokenizer {
    /// Loads the tokenizer of the model directory `dir`, truncating to `max_length` tokens.
    pub fn from_dir(dir: &Path, max_length: usize) -> Result<Self, TokenizerError> {
        let json = dir.join("tokenizer.json");
        let vocab = dir.join("vocab.txt");
        let (mut inner, source, lowercase) = if json.is_file() {
            let inner = Tokenizer::from_file(&json)
                .map_err(|e| TokenizerError::Load { path: json.clone(), message: e.to_string() })?;
            (inner, json, None)
        } else if vocab.is_file() {
            let lowercase = lowercase_setting(dir)?;
            (wordpiece_from_vocab(&vocab, lowercase)?, vocab, Some(lowercase))
        } else {
            return Err(TokenizerError::Missing { dir: dir.to_owned() });
        };
        inner.with_padding(None);
        inner
            .with_truncation(Some(TruncationParams { max_length, ..Default::default() }))
            .map_err(|e| TokenizerError::Load { path: source.clone(), message: e.to_string() })?;
        let pad_id = inner
            .token_to_id("[PAD]")
            .ok_or_else(|| TokenizerError::MissingToken { path: source.clone(), token: "[PAD]".into() })?;
        Ok(BertTokenizer {
            inner,
            pad_id: i64::from(pad_id),
            max_length,
            fingerprint: fingerprint(&source, lowercase, max_length),
        })
    }

    /// Token ids of each text, with [CLS]/[SEP], truncated to `max_length`.
    pub fn encode_batch(&self, texts: Vec<String>) -> Result<Vec<Vec<i64>>, TokenizerError> {
        let encodings = self.inner.encode_batch_fast(texts, true).map_err(|e| TokenizerError::Encode(e.to_string()))?;
        Ok(encodings.iter().map(|e| e.get_ids().iter().map(|&id| i64::from(id)).collect()).collect())
    }

    /// Each pair of texts as one BERT input, `[CLS] a [SEP] b [SEP]`, truncated to
    /// `max_length` with `longest_first` (the tokenizers library's own pair truncation, as
    /// transformers' `tokenizer(a, b, truncation=True)`): the token ids, and how many tokens
    /// have token type 0 (`[CLS] a [SEP]`; the rest, `b [SEP]`, have type 1).
    pub fn encode_pair_batch(&self, pairs: Vec<(String, String)>) -> Result<Vec<(Vec<i64>, usize)>, TokenizerError> {
        let encodings = self.inner.encode_batch_fast(pairs, true).map_err(|e| TokenizerError::Encode(e.to_string()))?;
        encodings
            .iter()
            .map(|e| {
                let types = e.get_type_ids();
                let first = types.iter().take_while(|&&t| t == 0).count();
                if types[first..].iter().any(|&t| t != 1) {
                    return Err(TokenizerError::Encode(format!(
                        "the tokenizer's pair template gives token types {types:?}; expected 0s then 1s, as BERT's"
                    )));
                }
                Ok((e.get_ids().iter().map(|&id| i64::from(id)).collect(), first))
            })
            .collect()
    }
}

/// `do_lower_case` from `tokenizer_config.json`; `BertTokenizer` defaults to true.
fn lowercase_setting(dir: &Path) -> Result<bool, TokenizerError> {
    let path = dir.join("tokenizer_config.json");
    let Ok(text) = std::fs::read_to_string(&path) else {
        return Ok(true);
    };
    let value: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| TokenizerError::Load { path: path.clone(), message: e.to_string() })?;
    Ok(value.get("do_lower_case").and_then(|v| v.as_bool()).unwrap_or(true))
}

fn wordpiece_from_vocab(vocab: &Path, lowercase: bool) -> Result<Tokenizer, TokenizerError> {
    let load_err = |message: String| TokenizerError::Load { path: vocab.to_owned(), message };
    let vocab_str = vocab.to_str().ok_or_else(|| load_err("path is not UTF-8".into()))?;
    let model =
        WordPiece::from_file(vocab_str).unk_token("[UNK]".into()).build().map_err(|e| load_err(e.to_string()))?;
    let mut tokenizer = Tokenizer::new(model);
    let id = |token: &str| {
        tokenizer
            .token_to_id(token)
            .ok_or_else(|| TokenizerError::MissingToken { path: vocab.to_owned(), token: token.to_owned() })
    };
    let (cls, sep) = (id("[CLS]")?, id("[SEP]")?);
    // strip_accents None = follow lowercase, as BertTokenizer does.
    tokenizer.with_normalizer(Some(BertNormalizer::new(true, true, None, lowercase)));
    tokenizer.with_pre_tokenizer(Some(BertPreTokenizer));
    tokenizer.with_post_processor(Some(BertProcessing::new(("[SEP]".into(), sep), ("[CLS]".into(), cls))));
    let specials: Vec<AddedToken> = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
        .iter()
        .filter(|t| tokenizer.token_to_id(t).is_some())
        .map(|t| AddedToken::from(*t, true))
        .collect();
    tokenizer.add_special_tokens(&specials);
    Ok(tokenizer)
}

fn fingerprint(source: &Path, lowercase: Option<bool>, max_length: usize) -> String {
    let modified = std::fs::metadata(source)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let source = source.canonicalize().unwrap_or_else(|_| source.to_owned());
    format!("{}@{modified}:lower={lowercase:?}:max={max_length}", source.display())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vocab_dir() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "cat", "sat", "##s", "on"];
        std::fs::write(dir.path().join("vocab.txt"), vocab.join("\n") + "\n").unwrap();
        dir
    }

    #[test]
    fn vocab_fallback_lowercases_and_adds_specials() {
        let dir = vocab_dir();
        let tok = BertTokenizer::from_dir(dir.path(), 16).unwrap();
        let ids = tok.encode_batch(vec!["The CATS sat on zebra".into()]).unwrap();
        assert_eq!(ids, vec![vec![2, 5, 6, 8, 7, 9, 1, 3]]);
        assert_eq!(tok.pad_id, 0);
    }

    #[test]
    fn truncates_to_max_length_keeping_sep() {
        let dir = vocab_dir();
        let tok = BertTokenizer::from_dir(dir.path(), 4).unwrap();
        let ids = tok.encode_batch(vec!["the cat sat on the cat".into()]).unwrap();
        assert_eq!(ids, vec![vec![2, 5, 6, 3]]);
    }

    #[test]
    fn pairs_get_type_ids_and_longest_first_truncation() {
        let dir = vocab_dir();
        let tok = BertTokenizer::from_dir(dir.path(), 9).unwrap();
        let pairs = vec![
            ("the cat".to_string(), "sat on".to_string()),
            // 6 + 2 tokens over 9 - 3 = 6: only the longer (first) text is cut, to 4.
            ("the cat sat on the cat".to_string(), "cats".to_string()),
            // 4 + 5 over 6: both cut, to 6 / 2 = 3 each.
            ("the cat sat on".to_string(), "on the cat sat the".to_string()),
        ];
        let encoded = tok.encode_pair_batch(pairs).unwrap();
        assert_eq!(encoded[0], (vec![2, 5, 6, 3, 7, 9, 3], 4));
        assert_eq!(encoded[1], (vec![2, 5, 6, 7, 9, 3, 6, 8, 3], 6));
        assert_eq!(encoded[2], (vec![2, 5, 6, 7, 3, 9, 5, 6, 3], 5));
    }

    #[test]
    fn cased_vocab_is_respected() {
        let dir = vocab_dir();
        std::fs::write(dir.path().join("tokenizer_config.json"), r#"{"do_lower_case": false}"#).unwrap();
        let tok = BertTokenizer::from_dir(dir.path(), 16).unwrap();
        let ids = tok.encode_batch(vec!["The cat".into()]).unwrap();
        assert_eq!(ids, vec![vec![2, 1, 6, 3]]);
    }

    #[test]
    fn missing_tokenizer_names_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        let err = BertTokenizer::from_dir(dir.path(), 8).unwrap_err().to_string();
        assert!(err.contains("no tokenizer.json or vocab.txt"), "{err}");
    }
}
