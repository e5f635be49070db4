//! Training parity with PyTorch + transformers, step by step: the real MiniLM checkpoint, the
//! same initial classifier, dropout 0, the same 30 explicit batches; AdamW with Trainer's decay
//! groups, weight decay, gradient clipping and the linear warm-up/decay schedule on both sides.
//! Per-step loss and gradient norm must agree to relative 1e-4 and every parameter's update
//! after step 1 and step 30 to relative 1e-3. The same comparison run against references with
//! one planted mistake each (no schedule, decay on every parameter, no clipping, no bias
//! correction) must fail, so the test would catch any of them in the worker.

mod common;

use std::collections::HashMap;
use std::path::Path;

use bertsweep_worker::config::BertConfig;
use bertsweep_worker::data::Batch;
use bertsweep_worker::tokenizer::BertTokenizer;
use bertsweep_worker::train::StepTrainer;
use bertsweep_worker::TrialConfig;
use tch::{Device, Kind, Tensor};

const STEPS: usize = 30;
const BATCH: usize = 8;
const LEARNING_RATE: f64 = 5e-5;
const WEIGHT_DECAY: f64 = 0.1;
const WARMUP_RATIO: f64 = 0.2;

/// How far one run is from another.
#[derive(Debug, Clone)]
struct Divergence {
    /// Largest relative difference of a step's loss.
    loss: f64,
    /// Largest relative difference of a step's gradient norm (before clipping).
    grad_norm: f64,
    /// Largest ‖ours − theirs‖ / ‖theirs − initial‖ over parameters, after step 1 and the last.
    update: f64,
    /// Where that largest update difference is.
    worst: String,
    /// Largest ‖ours − theirs‖ / ‖initial‖ after step 1 (the warm-up's first learning rate is
    /// 0, so neither side may have moved yet).
    step1: f64,
}

impl Divergence {
    fn within_parity(&self) -> bool {
        self.loss <= 1e-4 && self.grad_norm <= 1e-4 && self.update <= 1e-3 && self.step1 <= 1e-6
    }
}

/// The 30 batches: the first 240 demo reviews, 8 per batch, padded to each batch's longest.
fn batches(dir: &Path) -> Vec<(Tensor, Tensor, Tensor)> {
    let text = std::fs::read_to_string(common::workspace_root().join("examples/data/reviews-train.tsv")).unwrap();
    let rows: Vec<(String, i64)> = text
        .lines()
        .skip(1)
        .take(STEPS * BATCH)
        .map(|l| {
            let (s, label) = l.rsplit_once('\t').unwrap();
            (s.to_string(), label.parse().unwrap())
        })
        .collect();
    let tokenizer = BertTokenizer::from_dir(dir, 64).unwrap();
    rows.chunks(BATCH)
        .map(|chunk| {
            let ids = tokenizer.encode_batch(chunk.iter().map(|(s, _)| s.clone()).collect()).unwrap();
            let longest = ids.iter().map(Vec::len).max().unwrap();
            let mut flat = Vec::new();
            let mut mask = Vec::new();
            for row in &ids {
                flat.extend(row.iter().copied().chain(std::iter::repeat(tokenizer.pad_id)).take(longest));
                mask.extend((0..longest).map(|i| i64::from(i < row.len())));
            }
            let shape = [ids.len() as i64, longest as i64];
            let labels: Vec<i64> = chunk.iter().map(|(_, l)| *l).collect();
            (Tensor::from_slice(&flat).view(shape), Tensor::from_slice(&mask).view(shape), Tensor::from_slice(&labels))
        })
        .collect()
}

fn copy_all(vars: &HashMap<String, Tensor>) -> HashMap<String, Tensor> {
    vars.iter().map(|(n, t)| (n.clone(), t.detach().to_kind(Kind::Float).copy())).collect()
}

/// Our run: (initial, after step 1, after the last step) parameters and per-step loss/norm.
struct OurRun {
    initial: HashMap<String, Tensor>,
    step1: HashMap<String, Tensor>,
    last: HashMap<String, Tensor>,
    loss: Vec<f64>,
    grad_norm: Vec<f64>,
}

fn our_run(dir: &Path, batches: &[(Tensor, Tensor, Tensor)], class_weights: Option<&[f64]>) -> OurRun {
    let mut config = BertConfig::from_dir(dir).unwrap();
    config.hidden_dropout_prob = 0.0;
    config.attention_probs_dropout_prob = 0.0;
    let cfg = TrialConfig {
        model_dir: dir.to_path_buf(),
        learning_rate: LEARNING_RATE,
        weight_decay: WEIGHT_DECAY,
        warmup_ratio: WARMUP_RATIO,
        seed: 7,
        ..TrialConfig::default()
    };
    let mut trainer = StepTrainer::new(&cfg, &config, 2, STEPS, Device::Cpu).unwrap();
    if let Some(weights) = class_weights {
        trainer.set_class_weights(weights).unwrap();
    }
    let initial = copy_all(&trainer.variables());
    let (mut step1, mut loss, mut grad_norm) = (HashMap::new(), Vec::new(), Vec::new());
    for (k, (ids, mask, labels)) in batches.iter().enumerate() {
        let batch = Batch {
            input_ids: ids.shallow_clone(),
            token_type_ids: None,
            attention_mask: Some(mask.shallow_clone()),
            tokens: None,
            labels: labels.shallow_clone(),
            size: labels.size()[0] as usize,
        };
        let stats = trainer.step(&batch).unwrap();
        loss.push(f64::try_from(&stats.loss).unwrap());
        grad_norm.push(f64::try_from(&stats.grad_norm).unwrap());
        if k == 0 {
            step1 = copy_all(&trainer.variables());
        }
    }
    OurRun { initial, step1, last: copy_all(&trainer.variables()), loss, grad_norm }
}

/// The reference run (with `mistake` planted, or "none").
fn reference(python: &Path, dir: &Path, tmp: &Path, ours: &OurRun, mistake: &str) -> HashMap<String, Tensor> {
    reference_on(python, dir, tmp, "batches", ours, mistake, "none")
}

/// The reference run on `tmp/<batches>.safetensors`, with `class_weights` ("none" or "balanced").
fn reference_on(
    python: &Path,
    dir: &Path,
    tmp: &Path,
    batches: &str,
    ours: &OurRun,
    mistake: &str,
    class_weights: &str,
) -> HashMap<String, Tensor> {
    let out = tmp.join(format!("reference-{batches}-{mistake}-{class_weights}.safetensors"));
    let args = [
        "train_steps".to_string(),
        dir.display().to_string(),
        tmp.join(format!("{batches}.safetensors")).display().to_string(),
        tmp.join("classifier.safetensors").display().to_string(),
        out.display().to_string(),
        LEARNING_RATE.to_string(),
        WEIGHT_DECAY.to_string(),
        WARMUP_RATIO.to_string(),
        STEPS.to_string(),
        mistake.to_string(),
        class_weights.to_string(),
    ];
    let _ = ours;
    common::run_reference(python, &args.iter().map(String::as_str).collect::<Vec<_>>());
    Tensor::read_safetensors(&out).unwrap().into_iter().collect()
}

fn relative(a: f64, b: f64) -> f64 {
    (a - b).abs() / b.abs().max(1e-12)
}

fn divergence(ours: &OurRun, theirs: &HashMap<String, Tensor>) -> Divergence {
    let series = |name: &str| Vec::<f64>::try_from(&theirs[name]).unwrap();
    let worst = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| relative(*x, *y)).fold(0.0, f64::max);
    let mut update: f64 = 0.0;
    let mut step1: f64 = 0.0;
    let mut worst_at = String::new();
    let mut compared = 0;
    for (name, initial) in &ours.initial {
        let (Some(first), Some(reference)) =
            (theirs.get(&format!("step1.{name}")), theirs.get(&format!("last.{name}")))
        else {
            continue;
        };
        let size = f64::try_from(initial.norm()).unwrap().max(1.0);
        step1 = step1.max(f64::try_from((&ours.step1[name] - first).norm()).unwrap() / size);
        // The key bias adds q·b to every score of a query: softmax ignores it, so its true
        // gradient is 0 and both sides step on rounding noise (Adam normalises it to lr).
        if name.ends_with("attention.self.key.bias") {
            continue;
        }
        let moved = f64::try_from((reference - initial).norm()).unwrap();
        let apart = f64::try_from((&ours.last[name] - reference).norm()).unwrap();
        if moved > 0.0 {
            if apart / moved > update {
                update = apart / moved;
                worst_at = format!("{name} (moved {moved:.3e}, apart {apart:.3e})");
            }
            compared += 1;
        }
    }
    assert!(compared >= 90, "only {compared} parameters compared: names differ?");
    Divergence {
        loss: worst(&ours.loss, &series("loss")),
        grad_norm: worst(&ours.grad_norm, &series("grad_norm")),
        update,
        worst: worst_at,
        step1,
    }
}

#[test]
fn thirty_adamw_steps_match_transformers_and_planted_mistakes_do_not() {
    let (Some(python), Some(dir)) = (common::python(), common::minilm_dir()) else {
        panic!("the reference Python or the MiniLM checkpoint is missing: run `make setup`");
    };
    tch::set_num_threads(2);
    let tmp = tempfile::tempdir().unwrap();
    let batches = batches(&dir);
    assert_eq!(batches.len(), STEPS);
    let mut named: Vec<(String, Tensor)> = Vec::new();
    for (k, (ids, mask, labels)) in batches.iter().enumerate() {
        named.push((format!("input_ids_{k}"), ids.shallow_clone()));
        named.push((format!("attention_mask_{k}"), mask.shallow_clone()));
        named.push((format!("labels_{k}"), labels.shallow_clone()));
    }
    Tensor::write_safetensors(&named, tmp.path().join("batches.safetensors")).unwrap();

    let ours = our_run(&dir, &batches, None);
    let head = [
        ("classifier.weight", &ours.initial["classifier.weight"]),
        ("classifier.bias", &ours.initial["classifier.bias"]),
    ];
    Tensor::write_safetensors(&head, tmp.path().join("classifier.safetensors")).unwrap();

    let parity = divergence(&ours, &reference(&python, &dir, tmp.path(), &ours, "none"));
    println!("worker vs transformers: {parity:?} (largest update difference: {})", parity.worst);
    assert!(parity.within_parity(), "the worker's training drifts from transformers: {parity:?}");
    for mistake in ["schedule", "decay", "clip", "bias"] {
        let d = divergence(&ours, &reference(&python, &dir, tmp.path(), &ours, mistake));
        println!("worker vs transformers with a {mistake} mistake: {d:?}");
        assert!(!d.within_parity(), "a {mistake} mistake would go unnoticed: {d:?}");
    }
}

/// `class_weights = "balanced"`: the same 30 steps on labels made imbalanced (one positive in
/// four) match transformers with `CrossEntropyLoss(weight=compute_class_weight("balanced"))`,
/// and would not match an unweighted loss.
#[test]
fn balanced_class_weights_match_a_weighted_cross_entropy() {
    let (Some(python), Some(dir)) = (common::python(), common::minilm_dir()) else {
        panic!("the reference Python or the MiniLM checkpoint is missing: run `make setup`");
    };
    tch::set_num_threads(2);
    let tmp = tempfile::tempdir().unwrap();
    let mut counter = 0i64;
    let batches: Vec<(Tensor, Tensor, Tensor)> = batches(&dir)
        .into_iter()
        .map(|(ids, mask, labels)| {
            let n = labels.size()[0];
            let skewed: Vec<i64> = (0..n)
                .map(|_| {
                    counter += 1;
                    i64::from(counter % 4 == 0)
                })
                .collect();
            (ids, mask, Tensor::from_slice(&skewed))
        })
        .collect();
    let mut named: Vec<(String, Tensor)> = Vec::new();
    let mut every = Vec::new();
    for (k, (ids, mask, labels)) in batches.iter().enumerate() {
        named.push((format!("input_ids_{k}"), ids.shallow_clone()));
        named.push((format!("attention_mask_{k}"), mask.shallow_clone()));
        named.push((format!("labels_{k}"), labels.shallow_clone()));
        every.extend(Vec::<i64>::try_from(labels).unwrap());
    }
    Tensor::write_safetensors(&named, tmp.path().join("skewed.safetensors")).unwrap();
    let weights = bertsweep_worker::data::balanced_class_weights(&every, &["0".to_string(), "1".to_string()]).unwrap();
    assert!((weights[1] / weights[0] - 3.0).abs() < 1e-12, "one positive in four: {weights:?}");

    let ours = our_run(&dir, &batches, Some(&weights));
    let head = [
        ("classifier.weight", &ours.initial["classifier.weight"]),
        ("classifier.bias", &ours.initial["classifier.bias"]),
    ];
    Tensor::write_safetensors(&head, tmp.path().join("classifier.safetensors")).unwrap();
    let parity = divergence(&ours, &reference_on(&python, &dir, tmp.path(), "skewed", &ours, "none", "balanced"));
    println!("weighted: worker vs transformers: {parity:?}");
    assert!(parity.within_parity(), "weighted training drifts from transformers: {parity:?}");
    let unweighted = divergence(&ours, &reference_on(&python, &dir, tmp.path(), "skewed", &ours, "none", "none"));
    assert!(!unweighted.within_parity(), "an unweighted loss would go unnoticed: {unweighted:?}");
}
