//! Labelled text data: reading TSV/CSV/JSONL files, tokenizing once per process, and
//! turning examples into padded batches.
//!
//! - [`read`]: rows of one file (text, the second text of a pair, raw label), with
//!   file:line errors.
//! - [`encode`]: token ids of a file, cached in-process so later trials reuse them.
//! - [`batch`]: batch order (seeded shuffle, optional length grouping) and dynamic padding.
//! - [`folds`]: stratified, seeded K-fold splits of the training file.

pub mod batch;
pub mod encode;
pub mod folds;
pub mod read;

use std::path::PathBuf;
use std::sync::Arc;

pub use batch::{batch_order, eval_batch_order, Batch};
pub use encode::{encode_file, EncodedFile};
pub use folds::FoldSpec;
pub use read::Columns;

use crate::tokenizer::{BertTokenizer, TokenizerError};

/// Why a data file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The file could not be opened or read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The data file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The extension says nothing about the format.
    #[error("{path}: unknown data format (expected .tsv, .csv, .jsonl or .json)")]
    UnknownFormat {
        /// The data file.
        path: PathBuf,
    },
    /// A header lacks the configured column.
    #[error("{path}:{line}: no column {column:?} (columns: {available})")]
    MissingColumn {
        /// The data file.
        path: PathBuf,
        /// 1-based line of the header (or of the JSON object).
        line: u64,
        /// The configured column name.
        column: String,
        /// The columns present, comma separated.
        available: String,
    },
    /// A row cannot be parsed or lacks a value.
    #[error("{path}:{line}: {reason}")]
    BadRow {
        /// The data file.
        path: PathBuf,
        /// 1-based line number.
        line: u64,
        /// What is wrong with it.
        reason: String,
    },
    /// The file has a header but no example.
    #[error("{path}: no examples")]
    Empty {
        /// The data file.
        path: PathBuf,
    },
    /// Training needs at least two classes.
    #[error("{path}: only one label value ({label:?}) in train + validation; need at least two classes")]
    SingleClass {
        /// The training file.
        path: PathBuf,
        /// The only label.
        label: String,
    },
    /// Tokenizing failed.
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
}

/// Where examples are and how to read them: the data part of a trial.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DataSpec {
    /// Training file (.tsv with header, .csv, .jsonl).
    pub train_file: PathBuf,
    /// Validation file, same formats.
    pub validation_file: PathBuf,
    /// Held-out test file, same formats; scored once after training, never to choose.
    pub test_file: Option<PathBuf>,
    /// Cross-validation: the validation split is this fold of the training file (the rest is
    /// trained on) and `validation_file` is not read.
    pub folds: Option<FoldSpec>,
    /// Column holding the text.
    pub text_column: String,
    /// Column holding each example's second text (sentence pairs); `None` = single sentences.
    pub text_pair_column: Option<String>,
    /// Column holding the label (integer or string).
    pub label_column: String,
    /// Use only the first N training rows.
    pub max_train_samples: Option<usize>,
}

/// One tokenized split with labels mapped to class ids.
#[derive(Debug, Clone)]
pub struct Split {
    /// Token ids per example (shared with the cache).
    pub encoded: Arc<EncodedFile>,
    /// Class id per example, index into [`ClassificationData::labels`].
    pub label_ids: Vec<i64>,
}

impl Split {
    /// Number of examples.
    pub fn len(&self) -> usize {
        self.label_ids.len()
    }

    /// True when there are no examples.
    pub fn is_empty(&self) -> bool {
        self.label_ids.is_empty()
    }

    /// Token count per example.
    pub fn lengths(&self) -> Vec<usize> {
        self.encoded.ids.iter().map(Vec::len).collect()
    }
}

/// Training and validation examples of one task.
#[derive(Debug, Clone)]
pub struct ClassificationData {
    /// Training split.
    pub train: Split,
    /// Validation split.
    pub validation: Split,
    /// Test split (only with [`DataSpec::test_file`]); its labels must be among the others'.
    pub test: Option<Split>,
    /// Class names; the index is the class id. Sorted union of train and validation labels
    /// (numerically when all labels are integers), as transformers' run_classification does.
    pub labels: Vec<String>,
}

impl DataSpec {
    /// The columns an example is read from.
    pub fn columns(&self) -> Columns<'_> {
        Columns { text: &self.text_column, text_pair: self.text_pair_column.as_deref(), label: &self.label_column }
    }
}

impl ClassificationData {
    /// Reads and tokenizes both files (or takes them from the cache) and maps labels to ids.
    pub fn load(spec: &DataSpec, tokenizer: &BertTokenizer) -> Result<Self, DataError> {
        let train = encode_file(&spec.train_file, spec.columns(), spec.max_train_samples, tokenizer)?;
        let validation = match spec.folds {
            None => encode_file(&spec.validation_file, spec.columns(), None, tokenizer)?,
            // The labels come from the whole training file; the split comes once they are ids.
            Some(_) => train.clone(),
        };
        let labels = label_list(&train, &validation)?;
        if labels.len() < 2 {
            return Err(DataError::SingleClass {
                path: spec.train_file.clone(),
                label: labels.first().cloned().unwrap_or_default(),
            });
        }
        let index = |file: &EncodedFile| -> Vec<i64> {
            file.labels
                .iter()
                .map(|l| labels.binary_search_by(|x| compare_labels(x, l)).expect("label in list") as i64)
                .collect()
        };
        // The test file is read now, so that a bad one fails the trial before it trains.
        let test = match &spec.test_file {
            Some(path) => {
                let test = encode_file(path, spec.columns(), None, tokenizer)?;
                let unknown =
                    test.labels.iter().position(|l| labels.binary_search_by(|x| compare_labels(x, l)).is_err());
                if let Some(row) = unknown {
                    return Err(DataError::BadRow {
                        path: test.path.clone(),
                        line: test.lines[row],
                        reason: format!(
                            "test label {:?} is in neither the training nor the validation file, so no model can predict it; fix the label or leave test_file out",
                            test.labels[row]
                        ),
                    });
                }
                Some(Split { label_ids: index(&test), encoded: test })
            }
            None => None,
        };
        let (train, validation) = match spec.folds {
            None => (
                Split { label_ids: index(&train), encoded: train },
                Split { label_ids: index(&validation), encoded: validation },
            ),
            Some(fold) => split_fold(&train, index(&train), fold)?,
        };
        Ok(ClassificationData { train, validation, test, labels })
    }
}

/// The training file cut into (the other folds, fold `fold.index`), both in file order.
fn split_fold(file: &EncodedFile, label_ids: Vec<i64>, fold: FoldSpec) -> Result<(Split, Split), DataError> {
    if label_ids.len() < fold.count {
        return Err(DataError::BadRow {
            path: file.path.clone(),
            line: file.lines.last().copied().unwrap_or(1),
            reason: format!(
                "{} training examples cannot make {} folds; use fewer folds or more data",
                label_ids.len(),
                fold.count
            ),
        });
    }
    let folds = folds::assign_folds(&label_ids, fold.count, fold.seed);
    let (held, kept): (Vec<usize>, Vec<usize>) = (0..label_ids.len()).partition(|&i| folds[i] == fold.index);
    let split = |rows: &[usize]| Split {
        encoded: Arc::new(file.subset(rows)),
        label_ids: rows.iter().map(|&i| label_ids[i]).collect(),
    };
    Ok((split(&kept), split(&held)))
}

/// Integers compare numerically, anything else as text (integers first).
fn compare_labels(a: &str, b: &str) -> std::cmp::Ordering {
    match (a.parse::<i64>(), b.parse::<i64>()) {
        (Ok(x), Ok(y)) => x.cmp(&y),
        (Ok(_), Err(_)) => std::cmp::Ordering::Less,
        (Err(_), Ok(_)) => std::cmp::Ordering::Greater,
        (Err(_), Err(_)) => a.cmp(b),
    }
}

/// Sorted union of labels; integer and non-integer labels may not be mixed (a non-integer
/// label among integers is almost always a shifted column or a stray header).
fn label_list(train: &EncodedFile, validation: &EncodedFile) -> Result<Vec<String>, DataError> {
    let first_int = [train, validation]
        .iter()
        .find_map(|f| f.labels.iter().position(|l| l.parse::<i64>().is_ok()).map(|i| (*f, i)));
    let first_text = [train, validation]
        .iter()
        .find_map(|f| f.labels.iter().position(|l| l.parse::<i64>().is_err()).map(|i| (*f, i)));
    if let (Some((int_file, int_row)), Some((file, row))) = (first_int, first_text) {
        return Err(DataError::BadRow {
            path: file.path.clone(),
            line: file.lines[row],
            reason: format!(
                "label {:?} is not an integer, but {}:{} has integer label {:?}",
                file.labels[row],
                int_file.path.display(),
                int_file.lines[int_row],
                int_file.labels[int_row]
            ),
        });
    }
    let mut labels: Vec<String> = train.labels.iter().chain(&validation.labels).cloned().collect();
    labels.sort_by(|a, b| compare_labels(a, b));
    labels.dedup();
    Ok(labels)
}

/// A class that `balanced` class weights cannot weigh: it has no training example (its weight
/// would be infinite).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "class_weights = \"balanced\" needs every class in the training data, but class {0:?} (seen in the validation data) has no training example"
)]
pub struct ClassWithoutExamples(pub String);

/// scikit-learn's `compute_class_weight("balanced")`: class `c` weighs
/// `n / (classes × count_c)` over the training labels `label_ids` (ids into `labels`). Err
/// names a class with no training example (its weight would be infinite).
pub fn balanced_class_weights(label_ids: &[i64], labels: &[String]) -> Result<Vec<f64>, ClassWithoutExamples> {
    let mut counts = vec![0usize; labels.len()];
    for &y in label_ids {
        if let Some(c) = counts.get_mut(y as usize) {
            *c += 1;
        }
    }
    if let Some(missing) = counts.iter().position(|&c| c == 0) {
        return Err(ClassWithoutExamples(labels[missing].clone()));
    }
    let (n, classes) = (label_ids.len() as f64, labels.len() as f64);
    Ok(counts.iter().map(|&c| n / (classes * c as f64)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup() -> (tempfile::TempDir, BertTokenizer) {
        let dir = tempfile::tempdir().unwrap();
        let vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "good", "bad"];
        std::fs::write(dir.path().join("vocab.txt"), vocab.join("\n")).unwrap();
        let tokenizer = BertTokenizer::from_dir(dir.path(), 8).unwrap();
        (dir, tokenizer)
    }

    fn spec(train: std::path::PathBuf, validation: std::path::PathBuf, label: &str) -> DataSpec {
        DataSpec {
            train_file: train,
            validation_file: validation,
            test_file: None,
            folds: None,
            text_column: "text".into(),
            text_pair_column: None,
            label_column: label.into(),
            max_train_samples: None,
        }
    }

    #[test]
    fn string_labels_are_the_sorted_union_of_both_splits() {
        let (dir, tok) = setup();
        let train = dir.path().join("train.jsonl");
        std::fs::write(&train, "{\"text\":\"good\",\"y\":\"pos\"}\n{\"text\":\"bad\",\"y\":\"neg\"}\n").unwrap();
        let dev = dir.path().join("dev.csv");
        std::fs::write(&dev, "text,y\ngood,pos\nbad,neutral\n").unwrap();
        let data = ClassificationData::load(&spec(train, dev, "y"), &tok).unwrap();
        assert_eq!(data.labels, ["neg", "neutral", "pos"]);
        assert_eq!(data.train.label_ids, [2, 0]);
        assert_eq!(data.validation.label_ids, [2, 1]);
    }

    #[test]
    fn integer_labels_sort_numerically() {
        let (dir, tok) = setup();
        let train = dir.path().join("train.tsv");
        std::fs::write(&train, "text\tlabel\ngood\t10\nbad\t2\n").unwrap();
        let data = ClassificationData::load(&spec(train.clone(), train, "label"), &tok).unwrap();
        assert_eq!(data.labels, ["2", "10"]);
        assert_eq!(data.train.label_ids, [1, 0]);
    }

    #[test]
    fn mixed_or_single_labels_are_errors_naming_the_row() {
        let (dir, tok) = setup();
        let train = dir.path().join("train.tsv");
        std::fs::write(&train, "text\tlabel\ngood\t1\nbad\t0\n").unwrap();
        let dev = dir.path().join("dev.tsv");
        std::fs::write(&dev, "text\tlabel\ngood\t1\nbad\tlabel\n").unwrap();
        let err = ClassificationData::load(&spec(train.clone(), dev, "label"), &tok).unwrap_err().to_string();
        assert!(err.contains("dev.tsv:3: label \"label\" is not an integer") && err.contains("train.tsv:2"), "{err}");
        let single = dir.path().join("single.tsv");
        std::fs::write(&single, "text\tlabel\ngood\t1\n").unwrap();
        let err = ClassificationData::load(&spec(single.clone(), single, "label"), &tok).unwrap_err().to_string();
        assert!(err.contains("only one label value"), "{err}");
    }

    #[test]
    fn pairs_load_with_their_segments_and_a_missing_column_names_the_file() {
        let (dir, tok) = setup();
        let train = dir.path().join("train.csv");
        std::fs::write(&train, "sentence1,sentence2,label\ngood,bad,0\ngood,good good,1\n").unwrap();
        let dev = dir.path().join("dev.tsv");
        std::fs::write(&dev, "sentence1\tlabel\ngood\t1\n").unwrap();
        let pair = |validation: std::path::PathBuf| DataSpec {
            text_column: "sentence1".into(),
            text_pair_column: Some("sentence2".into()),
            ..spec(train.clone(), validation, "label")
        };
        let data = ClassificationData::load(&pair(train.clone()), &tok).unwrap();
        assert_eq!(data.train.encoded.ids, vec![vec![2, 4, 3, 5, 3], vec![2, 4, 3, 4, 4, 3]]);
        assert_eq!(data.train.encoded.pair_starts.as_deref(), Some(&[3, 3][..]));
        let err = ClassificationData::load(&pair(dev), &tok).unwrap_err().to_string();
        assert!(err.contains("dev.tsv:1: no column \"sentence2\"") && !err.contains('\n'), "{err}");
    }

    #[test]
    fn a_test_file_is_read_with_the_others_and_may_not_bring_new_labels() {
        let (dir, tok) = setup();
        let train = dir.path().join("train.csv");
        std::fs::write(&train, "text,y\ngood,pos\nbad,neg\n").unwrap();
        let test = dir.path().join("test.csv");
        std::fs::write(&test, "text,y\nbad,neg\ngood,pos\ngood,pos\n").unwrap();
        let with_test = DataSpec { test_file: Some(test.clone()), ..spec(train.clone(), train.clone(), "y") };
        let data = ClassificationData::load(&with_test, &tok).unwrap();
        assert_eq!(data.test.as_ref().unwrap().label_ids, [0, 1, 1]);
        assert!(ClassificationData::load(&spec(train.clone(), train.clone(), "y"), &tok).unwrap().test.is_none());
        std::fs::write(&test, "text,y\nbad,neg\ngood,meh\n").unwrap();
        let err = ClassificationData::load(&with_test, &tok).unwrap_err().to_string();
        assert!(err.contains("test.csv:3: test label \"meh\" is in neither") && !err.contains('\n'), "{err}");
    }

    #[test]
    fn folds_split_the_training_file_and_ignore_the_validation_file() {
        let (dir, tok) = setup();
        let train = dir.path().join("train.csv");
        let rows: String =
            (0..20).map(|i| format!("{},{}\n", if i % 2 == 0 { "good" } else { "bad" }, i % 2)).collect();
        std::fs::write(&train, format!("text,y\n{rows}")).unwrap();
        let nowhere = dir.path().join("no-such-dev.csv");
        let fold = |index| DataSpec {
            folds: Some(FoldSpec { index, count: 4, seed: 3 }),
            ..spec(train.clone(), nowhere.clone(), "y")
        };
        let mut seen = Vec::new();
        for k in 0..4 {
            let data = ClassificationData::load(&fold(k), &tok).unwrap();
            assert_eq!(data.labels, ["0", "1"]);
            assert_eq!(data.train.len() + data.validation.len(), 20);
            assert_eq!(data.validation.len(), 5);
            // Stratified: both classes in every validation fold.
            assert!(data.validation.label_ids.contains(&0) && data.validation.label_ids.contains(&1));
            seen.extend(data.validation.encoded.lines.iter().copied());
            // Train and validation never share a row.
            assert!(data.validation.encoded.lines.iter().all(|l| !data.train.encoded.lines.contains(l)));
        }
        seen.sort_unstable();
        assert_eq!(seen, (2..=21).collect::<Vec<u64>>(), "every row validated exactly once");
        let too_many =
            DataSpec { folds: Some(FoldSpec { index: 0, count: 30, seed: 3 }), ..spec(train.clone(), nowhere, "y") };
        let err = ClassificationData::load(&too_many, &tok).unwrap_err().to_string();
        assert!(err.contains("20 training examples cannot make 30 folds"), "{err}");
    }

    #[test]
    fn balanced_class_weights_are_scikit_learns() {
        let labels: Vec<String> = ["neg", "pos", "neu"].iter().map(|s| s.to_string()).collect();
        // compute_class_weight("balanced", classes=[0,1,2], y=[0,0,0,0,1,1,2,2,2,2,2,2]) = [1, 2, 2/3]
        let w = balanced_class_weights(&[0, 0, 0, 0, 1, 1, 2, 2, 2, 2, 2, 2], &labels).unwrap();
        assert_eq!(w, vec![1.0, 2.0, 12.0 / 18.0]);
        let err = balanced_class_weights(&[0, 0, 2], &labels).unwrap_err().to_string();
        assert!(err.contains("\"pos\"") && err.contains("no training example"), "{err}");
    }
}
