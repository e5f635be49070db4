//! Shared by the fuzz targets (`fuzz_study_file.rs`, `fuzz_rpc.rs`): the time budget and seed
//! (`BERTSWEEP_FUZZ_SECS`, `BERTSWEEP_FUZZ_SEED`), the corpus of study files and its mutations,
//! the study-file invariants, and random request fields (names, ids, digests, references,
//! peaks, predictions, metrics).

use super::*;
use bertsweep_coordinator::registry::{LeaseConfig, Registry};
use bertsweep_coordinator::spec::{parse_study, SamplerKind};
use bertsweep_coordinator::text::is_study_name;
use bertsweep_proto::v1 as pb;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Duration;

pub fn budget() -> Duration {
    let secs = std::env::var("BERTSWEEP_FUZZ_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(5.0f64);
    Duration::from_secs_f64(secs.max(0.1))
}

pub fn rng() -> (ChaCha8Rng, u64) {
    let seed = std::env::var("BERTSWEEP_FUZZ_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(rand::random);
    (ChaCha8Rng::seed_from_u64(seed), seed)
}

/// The project's study files: the seed corpus.
pub fn corpus() -> Vec<String> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let mut files: Vec<String> = std::fs::read_dir(&root)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "toml"))
        .map(|e| std::fs::read_to_string(e.path()).unwrap())
        .collect();
    files.push(study_toml("corpus", "parallel_trials = 2", &grid_params(3)));
    files.sort();
    files
}

/// Tokens that have broken parsers before, and the schema's own words.
pub const DICTIONARY: &[&str] = &[
    "1e-300",
    "1e-18",
    "1e308",
    "-1",
    "0",
    "0.0",
    "-0.0",
    "nan",
    "inf",
    "-inf",
    "4294967296",
    "9223372036854775807",
    "\"..\"",
    "\".\"",
    "\"-rf\"",
    "\"--help\"",
    "\"\"",
    "\"a/b\"",
    "[]",
    "[1, 1]",
    "{}",
    "true",
    "\"grid\"",
    "\"random\"",
    "\"tpe\"",
    "\"asha\"",
    "\"median\"",
    "\"log_uniform\"",
    "\"int_uniform\"",
    "\"uniform\"",
    "name",
    "step",
    "grid_points",
    "max_trials",
    "parallel_trials",
    "max_failed_trials",
    "max_attempts",
    "repeats",
    "min_epochs",
    "reduction_factor",
    "values",
    "value",
    "min",
    "max",
    "distribution",
    "[parameters.seed]",
    "[parameters.num_train_epochs]",
    "[early_stopping]",
    "[budget]",
    "=",
    "\n",
    "[",
    "]",
    "\"",
    "'",
    "#",
    ".",
    ",",
];

pub fn mutate(rng: &mut ChaCha8Rng, text: &str) -> String {
    let mut lines: Vec<String> = text.lines().map(String::from).collect();
    for _ in 0..rng.gen_range(1..=4) {
        if lines.is_empty() {
            lines.push(String::new());
        }
        let i = rng.gen_range(0..lines.len());
        match rng.gen_range(0..8) {
            // Replace the value of a `key = value` line.
            0 | 1 => {
                if let Some((key, _)) = lines[i].split_once('=') {
                    lines[i] = format!("{key}= {}", DICTIONARY.choose(rng).unwrap());
                }
            }
            2 => lines.insert(i, format!("{} = {}", DICTIONARY.choose(rng).unwrap(), DICTIONARY.choose(rng).unwrap())),
            3 => {
                lines.remove(i);
            }
            4 => {
                let copy = lines[i].clone();
                lines.insert(rng.gen_range(0..=lines.len()), copy);
            }
            5 => {
                let j = rng.gen_range(0..lines.len());
                lines.swap(i, j);
            }
            // A long value: the kind of input that once came back whole in errors.
            6 => {
                if let Some((key, _)) = lines[i].split_once('=') {
                    let long = "x".repeat(rng.gen_range(65..20_000));
                    lines[i] = format!("{key}= \"{long}\"");
                }
            }
            _ => {
                let mut bytes = lines[i].clone().into_bytes();
                if !bytes.is_empty() {
                    let k = rng.gen_range(0..bytes.len());
                    bytes[k] = rng.gen_range(0x20..0x7f);
                }
                lines[i] = String::from_utf8_lossy(&bytes).into_owned();
            }
        }
    }
    lines.join("\n")
}

/// Checks one input against the parser's contract; returns a description of a violation.
pub fn check_study_file(text: &str) -> Result<(), String> {
    let parsed = catch_unwind(|| parse_study(text)).map_err(|_| "parse_study panicked".to_string())?;
    let spec = match parsed {
        Err(e) => {
            let message = e.to_string();
            if message.contains('\n') || message.chars().count() > 700 {
                return Err(format!("refusal is not one bounded line ({} chars)", message.chars().count()));
            }
            return Ok(());
        }
        Ok(spec) => spec,
    };
    if !is_study_name(&spec.name) {
        return Err(format!("accepted an unsafe name {:?}", spec.name));
    }
    if spec.budget.max_trials == 0 || spec.budget.parallel_trials == 0 {
        return Err("accepted a zero budget".into());
    }
    if spec.sampler == SamplerKind::Grid {
        let whole = spec.grid_size().saturating_mul(spec.repeats as u64);
        if whole == 0 || spec.budget.max_trials as u64 > whole {
            return Err(format!("grid of {whole} trials accepted with max_trials {}", spec.budget.max_trials));
        }
    }
    // Accepted means runnable: the first trial can be leased.
    let runnable = catch_unwind(AssertUnwindSafe(|| {
        let mut registry = Registry::new(LeaseConfig { ttl_ms: 1000 });
        registry.create_study(spec.clone(), text.to_string(), 0).ok()?;
        let worker = registry.register_worker("fuzz".into(), vec![], "fuzz".into(), 0).value;
        registry.acquire(&worker, Some(&spec.name), 1).ok()?.value
    }))
    .map_err(|_| "creating or leasing from an accepted study panicked".to_string())?;
    if runnable.is_none() {
        return Err("accepted a study whose first trial cannot be leased".into());
    }
    Ok(())
}

/// A string from the shapes that matter: real names, empty, long, unicode, path tricks.
pub fn name(rng: &mut ChaCha8Rng, real: &[String]) -> String {
    match rng.gen_range(0..8) {
        0..=2 if !real.is_empty() => real.choose(rng).unwrap().clone(),
        3 => String::new(),
        4 => "n".repeat(rng.gen_range(60..70_000)),
        5 => ["..", ".", "-rf", "é", "a/b", " ", "\u{0}"].choose(rng).unwrap().to_string(),
        _ => format!("w{}", rng.gen_range(0..1000)),
    }
}

pub fn number(rng: &mut ChaCha8Rng, real: &[u64]) -> u64 {
    match rng.gen_range(0..6) {
        0..=2 if !real.is_empty() => *real.choose(rng).unwrap(),
        3 => 0,
        4 => u64::MAX,
        _ => rng.gen_range(1..10_000),
    }
}

/// A digest's text: real ones uploaded earlier, well-formed unknown ones, and malformed ones.
pub fn digest_text(rng: &mut ChaCha8Rng, real: &[String]) -> String {
    match rng.gen_range(0..7) {
        0..=2 if !real.is_empty() => real.choose(rng).unwrap().clone(),
        3 => format!("{:064x}", rng.gen::<u128>()),
        4 => "g".repeat(64),
        5 => format!("{:063x}", rng.gen::<u64>()),
        _ => name(rng, &[]),
    }
}

/// A checkpoint or artifact reference: empty, blob digests, object URLs and `worker:` paths in
/// and out of the trial's own place (`study`/`number`/`epoch`/`token` when known), traversal,
/// encodings and junk.
pub fn reference(rng: &mut ChaCha8Rng, digests: &[String], own: Option<(&str, u32, u32, u64)>) -> String {
    let (study, number, epoch, token) = own.unwrap_or(("s", 0, 1, 1));
    match rng.gen_range(0..14) {
        0 | 1 => String::new(),
        2 => format!("blob:sha256:{}", digest_text(rng, digests)),
        3 => format!("s3://b/base/{study}/{number}/checkpoints/e{epoch}-{token}"),
        4 => format!("worker:/shared/{study}/{number}/checkpoints/e{epoch}-{token}"),
        5 => ["s3://b/", "s3://b", "s3://b/some-prefix", "gs://", "az://x/", "worker:/", "worker:/etc", "worker:rel"]
            .choose(rng)
            .unwrap()
            .to_string(),
        6 => format!("s3://b/{study}/{number}/checkpoints/e{epoch}-{token}/../../../.."),
        7 => format!("s3://b/{study}/{}/checkpoints/e{epoch}-{token}", number.wrapping_add(1)),
        8 => format!("s3://b/%2e%2e/{study}/{number}/checkpoints/e{epoch}-{token}"),
        9 => format!("s3://b/{study}/{number}/checkpoints/e{epoch}-{token}?x=1#y"),
        10 => format!("worker:/a/../{study}/{number}/checkpoints/e{epoch}-{token}"),
        11 => "x".repeat(rng.gen_range(4000..6000)),
        12 => format!("s3://{}/{study}/{number}/checkpoints/e{epoch}-{token}", "\u{0}é"),
        _ => name(rng, &[]),
    }
}

/// A reported peak device memory: mostly none or plausible, sometimes at, over or far over the
/// 2^50-byte cap.
pub fn peak(rng: &mut ChaCha8Rng) -> u64 {
    match rng.gen_range(0..8) {
        0..=2 => 0,
        3 => 1 << 50,
        4 => (1 << 50) + 1,
        5 => u64::MAX,
        _ => rng.gen_range(1..100_000_000_000),
    }
}

/// None, valid, or broken dev-set predictions (sizes, labels, probabilities, names).
pub fn random_predictions(rng: &mut ChaCha8Rng) -> Option<pb::DevPredictions> {
    if rng.gen_bool(0.5) {
        return None;
    }
    let classes: u32 = match rng.gen_range(0..8) {
        0 => rng.gen_range(0..2),
        1 => rng.gen_range(257..100_000),
        _ => rng.gen_range(2..5),
    };
    let n = rng.gen_range(0..200usize);
    let mut labels: Vec<u32> = (0..n).map(|_| rng.gen_range(0..classes.max(1))).collect();
    let values = (n * classes as usize).min(1 << 18);
    let mut probabilities: Vec<f32> = (0..values).map(|_| rng.gen_range(0.0..1.0)).collect();
    match rng.gen_range(0..8) {
        0 => labels.push(classes + 1),
        1 => probabilities.push(0.5),
        2 if !probabilities.is_empty() => probabilities[0] = f32::NAN,
        3 if !probabilities.is_empty() => probabilities[0] = -1.0,
        _ => {}
    }
    let names = classes.min(300) as usize;
    let class_names = match rng.gen_range(0..5) {
        0 => vec!["\u{1b}[31mred".to_string(); names],
        1 => vec!["x".repeat(200); names],
        2 => vec!["a".to_string()],
        _ => Vec::new(),
    };
    let class_weights = if rng.gen_bool(0.2) { vec![rng.gen_range(-1.0f32..2.0); names] } else { vec![] };
    Some(pb::DevPredictions { epoch: rng.gen_range(0..4), classes, labels, probabilities, class_weights, class_names })
}

pub fn random_metrics(rng: &mut ChaCha8Rng) -> HashMap<String, f64> {
    let mut m = HashMap::new();
    if rng.gen_bool(0.8) {
        m.insert("eval_accuracy".to_string(), rng.gen_range(0.0..1.0));
    }
    let extra = match rng.gen_range(0..10) {
        0 => rng.gen_range(60..300),
        _ => rng.gen_range(0..6),
    };
    for i in 0..extra {
        let key = match rng.gen_range(0..6) {
            0 => String::new(),
            1 => "Eval-Acc".into(),
            2 => "m".repeat(rng.gen_range(1..200)),
            _ => format!("metric_{i}"),
        };
        let value = *[0.5, f64::NAN, f64::INFINITY, -1e308, 0.0].choose(rng).unwrap();
        m.insert(key, value);
    }
    m
}
