//! Token ids of a data file, computed once per process.
//!
//! Trials of a study share the data set and usually the tokenizer and `max_seq_length`, so
//! the worker tokenizes a file once and later trials reuse it. The cache key includes the
//! file's modification time and size, so an edited file is read again.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::SystemTime;

use super::read::{read_rows, Columns};
use super::DataError;
use crate::tokenizer::BertTokenizer;

/// Files kept in the cache; beyond that the oldest entries are dropped.
const CACHE_CAPACITY: usize = 8;

/// A tokenized data file.
#[derive(Debug)]
pub struct EncodedFile {
    /// The file, for error messages.
    pub path: PathBuf,
    /// Token ids per example ([CLS] … [SEP], or [CLS] a [SEP] b [SEP] for pairs; truncated).
    pub ids: Vec<Vec<i64>>,
    /// Sentence pairs only: where each example's second text starts (the length of
    /// `[CLS] a [SEP]`). Tokens before it have token type 0, the rest type 1. `None` for
    /// single sentences (every token type 0).
    pub pair_starts: Option<Vec<usize>>,
    /// Raw label per example.
    pub labels: Vec<String>,
    /// 1-based line per example.
    pub lines: Vec<u64>,
}

impl EncodedFile {
    /// The examples at `rows` (in that order), as a file of their own (cross-validation
    /// folds); lines keep pointing into the original file.
    pub fn subset(&self, rows: &[usize]) -> EncodedFile {
        EncodedFile {
            path: self.path.clone(),
            ids: rows.iter().map(|&i| self.ids[i].clone()).collect(),
            pair_starts: self.pair_starts.as_ref().map(|p| rows.iter().map(|&i| p[i]).collect()),
            labels: rows.iter().map(|&i| self.labels[i].clone()).collect(),
            lines: rows.iter().map(|&i| self.lines[i]).collect(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct CacheKey {
    path: PathBuf,
    modified: Option<SystemTime>,
    size: u64,
    tokenizer: String,
    text_column: String,
    text_pair_column: Option<String>,
    label_column: String,
    max_rows: Option<usize>,
}

#[derive(Default)]
struct Cache {
    entries: HashMap<CacheKey, (u64, Arc<EncodedFile>)>,
    clock: u64,
}

fn cache() -> &'static Mutex<Cache> {
    static CACHE: OnceLock<Mutex<Cache>> = OnceLock::new();
    CACHE.get_or_init(Default::default)
}

/// Reads and tokenizes `path` (first `max_rows` rows), or returns the cached result.
pub fn encode_file(
    path: &Path,
    columns: Columns<'_>,
    max_rows: Option<usize>,
    tokenizer: &BertTokenizer,
) -> Result<Arc<EncodedFile>, DataError> {
    let meta = std::fs::metadata(path).map_err(|source| DataError::Io { path: path.to_owned(), source })?;
    let key = CacheKey {
        path: path.canonicalize().unwrap_or_else(|_| path.to_owned()),
        modified: meta.modified().ok(),
        size: meta.len(),
        tokenizer: tokenizer.fingerprint.clone(),
        text_column: columns.text.to_owned(),
        text_pair_column: columns.text_pair.map(str::to_owned),
        label_column: columns.label.to_owned(),
        max_rows,
    };
    {
        let mut cache = cache().lock().unwrap_or_else(|p| p.into_inner());
        cache.clock += 1;
        let clock = cache.clock;
        if let Some((used, file)) = cache.entries.get_mut(&key) {
            *used = clock;
            return Ok(file.clone());
        }
    }
    // Tokenize outside the lock: another trial thread may read another file meanwhile.
    let rows = read_rows(path, columns, max_rows)?;
    let mut lines = Vec::with_capacity(rows.len());
    let mut labels = Vec::with_capacity(rows.len());
    let mut texts = Vec::with_capacity(rows.len());
    let mut pairs = Vec::with_capacity(if columns.text_pair.is_some() { rows.len() } else { 0 });
    for row in rows {
        lines.push(row.line);
        labels.push(row.label);
        match row.text_pair {
            Some(second) => pairs.push((row.text, second)),
            None => texts.push(row.text),
        }
    }
    let (ids, pair_starts) = if columns.text_pair.is_some() {
        let encoded = tokenizer.encode_pair_batch(pairs)?;
        let (ids, starts) = encoded.into_iter().unzip();
        (ids, Some(starts))
    } else {
        (tokenizer.encode_batch(texts)?, None)
    };
    let file = Arc::new(EncodedFile { path: path.to_owned(), ids, pair_starts, labels, lines });
    let mut cache = cache().lock().unwrap_or_else(|p| p.into_inner());
    if cache.entries.len() >= CACHE_CAPACITY {
        if let Some(oldest) = cache.entries.iter().min_by_key(|(_, (used, _))| *used).map(|(k, _)| k.clone()) {
            cache.entries.remove(&oldest);
        }
    }
    let clock = cache.clock;
    cache.entries.insert(key, (clock, file.clone()));
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_read_is_cached_until_the_file_changes() {
        let dir = tempfile::tempdir().unwrap();
        let vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "good", "bad"];
        std::fs::write(dir.path().join("vocab.txt"), vocab.join("\n")).unwrap();
        let tok = BertTokenizer::from_dir(dir.path(), 8).unwrap();
        let data = dir.path().join("d.tsv");
        std::fs::write(&data, "sentence\tlabel\ngood\t1\nbad\t0\n").unwrap();
        let a = encode_file(&data, Columns::single("sentence", "label"), None, &tok).unwrap();
        let b = encode_file(&data, Columns::single("sentence", "label"), None, &tok).unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(a.ids, vec![vec![2, 5, 3], vec![2, 6, 3]]);
        let limited = encode_file(&data, Columns::single("sentence", "label"), Some(1), &tok).unwrap();
        assert_eq!(limited.ids.len(), 1);
        std::fs::write(&data, "sentence\tlabel\ngood bad\t1\nbad\t0\nbad\t0\n").unwrap();
        let c = encode_file(&data, Columns::single("sentence", "label"), None, &tok).unwrap();
        assert!(!Arc::ptr_eq(&a, &c));
        assert_eq!(c.ids[0], vec![2, 5, 6, 3]);
        assert!(c.pair_starts.is_none());
    }

    #[test]
    fn pairs_are_encoded_together_and_cached_apart_from_single_texts() {
        let dir = tempfile::tempdir().unwrap();
        let vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "good", "bad"];
        std::fs::write(dir.path().join("vocab.txt"), vocab.join("\n")).unwrap();
        let tok = BertTokenizer::from_dir(dir.path(), 6).unwrap();
        let data = dir.path().join("p.tsv");
        std::fs::write(&data, "a\tb\tlabel\ngood\tbad\t1\ngood good good\tbad bad\t0\n").unwrap();
        let pairs =
            encode_file(&data, Columns { text: "a", text_pair: Some("b"), label: "label" }, None, &tok).unwrap();
        // 6 - 3 specials leaves 3 tokens for 3 + 2: longest_first keeps 2 of the longer, 1 of the other.
        assert_eq!(pairs.ids, vec![vec![2, 5, 3, 6, 3], vec![2, 5, 5, 3, 6, 3]]);
        assert_eq!(pairs.pair_starts.as_deref(), Some(&[3, 4][..]));
        let single = encode_file(&data, Columns::single("a", "label"), None, &tok).unwrap();
        assert!(!Arc::ptr_eq(&pairs, &single));
        assert_eq!(single.ids[1], vec![2, 5, 5, 5, 3]);
    }
}
