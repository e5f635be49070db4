//! Our BERT against PyTorch + transformers on the real MiniLM-L6 checkpoint: same
//! tokenization, same logits (1e-4), for single sentences and for sentence pairs (token type
//! ids, `longest_first` truncation), and an exported directory transformers loads as is.
//! Skipped, with the reason printed, when the reference Python or the checkpoint is absent.

mod common;

use std::path::Path;
use std::sync::Arc;

use bertsweep_worker::bert::BertForSequenceClassification;
use bertsweep_worker::config::BertConfig;
use bertsweep_worker::data::{encode_file, Batch, Columns, Split};
use bertsweep_worker::pretrained::Weights;
use bertsweep_worker::testing::{write_tiny_bert, write_tiny_task};
use bertsweep_worker::tokenizer::BertTokenizer;
use bertsweep_worker::{run_trial, RunToEnd, TrialConfig};
use tch::{nn, Device, Kind, Tensor};

const TEXTS: &[&str] = &[
    "a gorgeous , witty , seductive movie .",
    "The plot is nothing but boilerplate clichés!",
    "it 's a charming and often affecting journey .",
    "Unflinchingly bleak and desperate",
];

/// Sentence pairs (MRPC / QNLI style) for the pair test: at [`PAIR_MAX_LEN`] the first pair
/// fits, the others are truncated `longest_first`, cutting the second text only, the first
/// only, or both (an odd budget: 21 tokens for two long texts), and the last is tiny.
const PAIRS: &[(&str, &str)] = &[
    ("The cat sat on the mat.", "A cat was sitting on a mat."),
    (
        "How many moons does Mars have?",
        "Mars has two small moons, Phobos and Deimos, discovered in 1877 by the astronomer Asaph Hall.",
    ),
    (
        "Unflinchingly bleak and desperate, the film drags its audience through two hours of misery without relief.",
        "It's grim.",
    ),
    (
        "The committee approved the budget after a long debate that lasted well into the night on Thursday.",
        "After hours of argument stretching past midnight, the panel finally signed off on the spending plan.",
    ),
    ("Yes.", "No!"),
];

/// Tokens per pair, [CLS] and both [SEP]s included, in the pair test.
const PAIR_MAX_LEN: usize = 24;

/// Pads `ids` into `[batch, longest]` input ids and attention mask.
fn padded(ids: &[Vec<i64>], pad_id: i64) -> (Tensor, Tensor) {
    let longest = ids.iter().map(Vec::len).max().unwrap();
    let mut flat = Vec::new();
    let mut mask = Vec::new();
    for row in ids {
        flat.extend(row.iter().copied().chain(std::iter::repeat(pad_id)).take(longest));
        mask.extend((0..longest).map(|i| i64::from(i < row.len())));
    }
    let shape = [ids.len() as i64, longest as i64];
    (Tensor::from_slice(&flat).view(shape), Tensor::from_slice(&mask).view(shape))
}

/// Our logits for the model in `dir`, optionally with the classifier from `classifier`.
fn our_logits(dir: &Path, num_labels: i64, classifier: Option<&Path>, input_ids: &Tensor, mask: &Tensor) -> Tensor {
    let config = BertConfig::from_dir(dir).unwrap();
    let vs = nn::VarStore::new(Device::Cpu);
    let model = BertForSequenceClassification::new(&vs.root(), &config, num_labels, 0, Kind::Float);
    Weights::from_dir(dir).unwrap().load_into(&vs).unwrap();
    if let Some(path) = classifier {
        let variables = vs.variables();
        for (name, value) in Tensor::read_safetensors(path).unwrap() {
            tch::no_grad(|| variables[&name].shallow_clone().copy_(&value));
        }
    }
    tch::no_grad(|| model.forward_t(input_ids, Some(mask), false)).unwrap()
}

/// transformers' logits for the model in `dir` on the same inputs.
fn reference_logits(
    python: &Path,
    dir: &Path,
    num_labels: i64,
    classifier: Option<&Path>,
    input_ids: &Tensor,
    mask: &Tensor,
) -> Tensor {
    let tmp = tempfile::tempdir().unwrap();
    let inputs = tmp.path().join("inputs.safetensors");
    let out = tmp.path().join("logits.safetensors");
    Tensor::write_safetensors(&[("input_ids", input_ids), ("attention_mask", mask)], &inputs).unwrap();
    let mut args = vec![
        "logits".to_owned(),
        dir.display().to_string(),
        inputs.display().to_string(),
        out.display().to_string(),
        num_labels.to_string(),
    ];
    args.extend(classifier.map(|c| c.display().to_string()));
    common::run_reference(python, &args.iter().map(String::as_str).collect::<Vec<_>>());
    Tensor::read_safetensors(&out).unwrap().remove(0).1
}

/// Tokenizes TEXTS with the tokenizer in `dir`, asserting transformers gives the same ids.
fn tokenize_like_transformers(python: &Path, dir: &Path) -> (Vec<Vec<i64>>, i64) {
    let tokenizer = BertTokenizer::from_dir(dir, 128).unwrap();
    let ids = tokenizer.encode_batch(TEXTS.iter().map(|t| t.to_string()).collect()).unwrap();
    assert_eq!(ids, reference_ids(python, dir, 128), "tokenization differs for {}", dir.display());
    (ids, tokenizer.pad_id)
}

/// Asserts our logits for the model in `dir` are within 1e-4 of transformers'.
fn assert_logits_match(
    python: &Path,
    dir: &Path,
    num_labels: i64,
    classifier: Option<&Path>,
    input_ids: &Tensor,
    mask: &Tensor,
) {
    let ours = our_logits(dir, num_labels, classifier, input_ids, mask);
    let theirs = reference_logits(python, dir, num_labels, classifier, input_ids, mask);
    let diff = max_abs_diff(&ours, &theirs);
    println!("{}: max |ours - transformers| = {diff:.2e}", dir.display());
    assert!(diff < 1e-4, "logits differ by {diff}\nours {ours}\ntransformers {theirs}");
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.size(), b.size());
    f64::try_from((a - b).abs().max()).unwrap()
}

fn reference_ids(python: &Path, dir: &Path, max_len: usize) -> Vec<Vec<i64>> {
    let mut args = vec!["tokenize".to_owned(), dir.display().to_string(), max_len.to_string()];
    args.extend(TEXTS.iter().map(|t| t.to_string()));
    let out = common::run_reference(python, &args.iter().map(String::as_str).collect::<Vec<_>>());
    out.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[test]
fn minilm_logits_match_transformers() {
    let (Some(python), Some(dir)) = (common::python(), common::minilm_dir()) else {
        return;
    };
    let (ids, pad_id) = tokenize_like_transformers(&python, &dir);
    assert!(ids.iter().map(Vec::len).min() < ids.iter().map(Vec::len).max(), "inputs need padding");
    let (input_ids, mask) = padded(&ids, pad_id);

    // A random 3-way classifier, given to both sides through a file.
    let tmp = tempfile::tempdir().unwrap();
    let classifier = tmp.path().join("classifier.safetensors");
    tch::manual_seed(11);
    let weight = Tensor::randn([3, 384], (Kind::Float, Device::Cpu)) * 0.5;
    let bias = Tensor::randn([3], (Kind::Float, Device::Cpu));
    Tensor::write_safetensors(&[("classifier.weight", &weight), ("classifier.bias", &bias)], &classifier).unwrap();

    assert_logits_match(&python, &dir, 3, Some(&classifier), &input_ids, &mask);
}

#[test]
fn minilm_pair_batches_match_transformers() {
    let (Some(python), Some(dir)) = (common::python(), common::minilm_dir()) else {
        return;
    };
    // Through the worker's own data path: a GLUE-style TSV, encoded and batched.
    let tmp = tempfile::tempdir().unwrap();
    let tsv = tmp.path().join("pairs.tsv");
    let rows: String = PAIRS.iter().map(|(a, b)| format!("{a}\t{b}\t0\n")).collect();
    std::fs::write(&tsv, format!("sentence1\tsentence2\tlabel\n{rows}")).unwrap();
    let tokenizer = BertTokenizer::from_dir(&dir, PAIR_MAX_LEN).unwrap();
    let columns = Columns { text: "sentence1", text_pair: Some("sentence2"), label: "label" };
    let encoded = encode_file(&tsv, columns, None, &tokenizer).unwrap();
    let lengths: Vec<usize> = encoded.ids.iter().map(Vec::len).collect();
    assert_eq!(lengths.iter().filter(|&&n| n == PAIR_MAX_LEN).count(), 3, "three pairs truncated: {lengths:?}");
    let split = Split { encoded: Arc::clone(&encoded), label_ids: vec![0; PAIRS.len()] };
    let all: Vec<usize> = (0..PAIRS.len()).collect();
    let batch = Batch::new(&split, &all, tokenizer.pad_id, Device::Cpu).unwrap();

    let classifier = tmp.path().join("classifier.safetensors");
    tch::manual_seed(12);
    let weight = Tensor::randn([2, 384], (Kind::Float, Device::Cpu)) * 0.5;
    let bias = Tensor::randn([2], (Kind::Float, Device::Cpu));
    Tensor::write_safetensors(&[("classifier.weight", &weight), ("classifier.bias", &bias)], &classifier).unwrap();
    let out = tmp.path().join("reference.safetensors");
    let (tsv_s, max_len, out_s, classifier_s) = (
        tsv.display().to_string(),
        PAIR_MAX_LEN.to_string(),
        out.display().to_string(),
        classifier.display().to_string(),
    );
    let dir_s = dir.display().to_string();
    common::run_reference(&python, &["pairs", &dir_s, &tsv_s, &max_len, &out_s, "2", &classifier_s]);
    let theirs: std::collections::HashMap<String, Tensor> =
        Tensor::read_safetensors(&out).unwrap().into_iter().collect();

    let rows_of = |t: &Tensor| Vec::<Vec<i64>>::try_from(t).unwrap();
    assert_eq!(rows_of(&batch.input_ids), rows_of(&theirs["input_ids"]), "token ids differ");
    let types = batch.token_type_ids.as_ref().expect("pair batches carry token types");
    assert_eq!(rows_of(types), rows_of(&theirs["token_type_ids"]), "token type ids differ");
    let mask = batch.attention_mask.as_ref().expect("the batch is padded");
    assert_eq!(rows_of(mask), rows_of(&theirs["attention_mask"]), "attention masks differ");

    let config = BertConfig::from_dir(&dir).unwrap();
    let vs = nn::VarStore::new(Device::Cpu);
    let model = BertForSequenceClassification::new(&vs.root(), &config, 2, 0, Kind::Float);
    Weights::from_dir(&dir).unwrap().load_into(&vs).unwrap();
    let variables = vs.variables();
    for (name, value) in Tensor::read_safetensors(&classifier).unwrap() {
        tch::no_grad(|| variables[&name].shallow_clone().copy_(&value));
    }
    let ours = tch::no_grad(|| {
        model.forward_unpadded_t(&batch.input_ids, Some(types), Some(mask), batch.tokens.as_ref(), false)
    })
    .unwrap();
    let diff = max_abs_diff(&ours, &theirs["logits"]);
    println!("pairs: max |ours - transformers| = {diff:.2e}");
    assert!(diff < 1e-4, "pair logits differ by {diff}\nours {ours}\ntransformers {}", theirs["logits"]);
    // The type ids matter: all-zero types give other logits (the test has teeth).
    let untyped = tch::no_grad(|| model.forward_t(&batch.input_ids, Some(mask), false)).unwrap();
    assert!(max_abs_diff(&untyped, &theirs["logits"]) > 1e-3);
}

#[test]
fn vocab_txt_fallback_tokenizes_like_tokenizer_json() {
    let Some(dir) = common::minilm_dir() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    for name in ["vocab.txt", "tokenizer_config.json"] {
        std::fs::copy(dir.join(name), tmp.path().join(name)).unwrap();
    }
    let texts: Vec<String> = TEXTS.iter().map(|t| t.to_string()).collect();
    let from_json = BertTokenizer::from_dir(&dir, 16).unwrap().encode_batch(texts.clone()).unwrap();
    let from_vocab = BertTokenizer::from_dir(tmp.path(), 16).unwrap().encode_batch(texts).unwrap();
    assert_eq!(from_json, from_vocab);
    let pairs: Vec<(String, String)> = PAIRS.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect();
    for max_len in [PAIR_MAX_LEN, 128] {
        let from_json = BertTokenizer::from_dir(&dir, max_len).unwrap().encode_pair_batch(pairs.clone()).unwrap();
        let from_vocab =
            BertTokenizer::from_dir(tmp.path(), max_len).unwrap().encode_pair_batch(pairs.clone()).unwrap();
        assert_eq!(from_json, from_vocab, "pairs at max_len {max_len}");
    }
}

#[test]
fn exported_minilm_loads_in_transformers_with_our_logits() {
    let (Some(python), Some(dir)) = (common::python(), common::minilm_dir()) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let (train_file, validation_file) = write_tiny_task(tmp.path(), 16, 8).unwrap();
    let cfg = TrialConfig {
        model_dir: dir.clone(),
        train_file,
        validation_file,
        max_seq_length: 32,
        learning_rate: 5e-5,
        num_train_epochs: 1,
        per_device_train_batch_size: 8,
        ..TrialConfig::default()
    };
    let export = tmp.path().join("export");
    let outcome = run_trial(&cfg, Device::Cpu, &mut RunToEnd, Some(&export)).unwrap();
    assert_eq!(outcome.artifact.as_deref(), Some(export.as_path()));
    assert!(export.join("tokenizer.json").is_file());

    let (ids, pad_id) = tokenize_like_transformers(&python, &export);
    let (input_ids, mask) = padded(&ids, pad_id);
    assert_logits_match(&python, &export, 2, None, &input_ids, &mask);
}

#[test]
fn pytorch_model_bin_loads_like_safetensors() {
    let Some(python) = common::python() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let st_dir = write_tiny_bert(&tmp.path().join("st"), 4).unwrap();
    let bin_dir = tmp.path().join("bin");
    std::fs::create_dir(&bin_dir).unwrap();
    std::fs::copy(st_dir.join("config.json"), bin_dir.join("config.json")).unwrap();
    let (source, target) = (st_dir.join("model.safetensors"), bin_dir.join("pytorch_model.bin"));
    common::run_reference(&python, &["to_bin", &source.display().to_string(), &target.display().to_string()]);
    let from_st = Weights::from_dir(&st_dir).unwrap();
    let from_bin = Weights::from_dir(&bin_dir).unwrap();
    assert_eq!(from_bin.source, target);
    assert_eq!(from_st.tensors.len(), from_bin.tensors.len());
    for (name, tensor) in &from_st.tensors {
        assert!(tensor.equal(&from_bin.tensors[name]), "{name} differs");
    }
}
