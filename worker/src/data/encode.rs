//! Token ids of a data file, computed once per process.
//!
//! Trials of a study share the data set and usually the tokenizer and `max_seq_length`, so
//! the worker tokenizes a file once and later trials reuse it. The cache key includes the
//! file's modification time and size, so an edited file is read again.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::SystemTime;

use super::read::read_rows;
use super::DataError;
use crate::tokenizer::BertTokenizer;

/// Files kept in the cache; beyond that the oldest entries are dropped.
const CACHE_CAPACITY: usize = 8;

/// A tokenized data file.
#[derive(Debug)]
pub struct EncodedFile {
    /// The file, for error messages.
    pub path: PathBuf,
    /// Token ids per example ([CLS] … [SEP], truncated).
    pub ids: Vec<Vec<i64>>,
    /// Raw label per example.
    pub labels: Vec<String>,
    /// 1-based line per example.
    pub lines: Vec<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct CacheKey {
    path: PathBuf,
    modified: Option<SystemTime>,
    size: u64,
    tokenizer: String,
    text_column: String,
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
    text_column: &str,
    label_column: &str,
    max_rows: Option<usize>,
    tokenizer: &BertTokenizer,
) -> Result<Arc<EncodedFile>, DataError> {
    let meta = std::fs::metadata(path).map_err(|source| DataError::Io { path: path.to_owned(), source })?;
    let key = CacheKey {
        path: path.canonicalize().unwrap_or_else(|_| path.to_owned()),
        modified: meta.modified().ok(),
        size: meta.len(),
        tokenizer: tokenizer.fingerprint.clone(),
        text_column: text_column.to_owned(),
        label_column: label_column.to_owned(),
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
    let rows = read_rows(path, text_column, label_column, max_rows)?;
    let mut lines = Vec::with_capacity(rows.len());
    let mut labels = Vec::with_capacity(rows.len());
    let mut texts = Vec::with_capacity(rows.len());
    for row in rows {
        lines.push(row.line);
        labels.push(row.label);
        texts.push(row.text);
    }
    let ids = tokenizer.encode_batch(texts)?;
    let file = Arc::new(EncodedFile { path: path.to_owned(), ids, labels, lines });
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
        let a = encode_file(&data, "sentence", "label", None, &tok).unwrap();
        let b = encode_file(&data, "sentence", "label", None, &tok).unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(a.ids, vec![vec![2, 5, 3], vec![2, 6, 3]]);
        let limited = encode_file(&data, "sentence", "label", Some(1), &tok).unwrap();
        assert_eq!(limited.ids.len(), 1);
        std::fs::write(&data, "sentence\tlabel\ngood bad\t1\nbad\t0\nbad\t0\n").unwrap();
        let c = encode_file(&data, "sentence", "label", None, &tok).unwrap();
        assert!(!Arc::ptr_eq(&a, &c));
        assert_eq!(c.ids[0], vec![2, 5, 6, 3]);
    }
}
