//! Time-bounded fuzzing of the study-file parser and of every RPC's validation, with zero
//! panics allowed.
//!
//! `BERTSWEEP_FUZZ_SECS` sets how long each target runs (default 5; `.ci/run` uses 60), and
//! `BERTSWEEP_FUZZ_SEED` replays a run (the seed is printed when a case fails). Inputs are
//! mutations of the project's own study files and of well-formed requests, salted with the
//! values that broke earlier versions (tiny steps, huge budgets, unsafe names, long strings,
//! non-finite numbers, out-of-range epochs).
//!
//! The RPC target also drives the blob RPCs (FindMissingBlobs, UploadBlob, DownloadBlob,
//! OfferArtifact) and reports checkpoint and artifact references of every shape (blob digests,
//! object URLs and `worker:` paths, inside and outside a trial's own place, with traversal),
//! and peak device memory of every size (0, plausible, the 2^50 cap, just over it, u64::MAX).
//!
//! What must hold for every input:
//! - the parser never panics; an accepted study is runnable (its first trial can be leased) and
//!   obeys the name and budget rules; a refusal is one bounded line;
//! - every RPC answers OK or a caller's code (INVALID_ARGUMENT, NOT_FOUND, ALREADY_EXISTS,
//!   FAILED_PRECONDITION, RESOURCE_EXHAUSTED) with a bounded message, never INTERNAL, UNKNOWN
//!   or a dropped connection; the registry's counts stay consistent, `parallel_trials` holds,
//!   and no trial keeps a peak over the cap.

mod common;

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

use bertsweep_coordinator::registry::{LeaseConfig, Registry};
use bertsweep_coordinator::spec::{parse_study, SamplerKind};
use bertsweep_coordinator::text::is_study_name;
use bertsweep_proto::v1 as pb;
use common::*;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tonic::Code;

fn budget() -> Duration {
    let secs = std::env::var("BERTSWEEP_FUZZ_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(5.0f64);
    Duration::from_secs_f64(secs.max(0.1))
}

fn rng() -> (ChaCha8Rng, u64) {
    let seed = std::env::var("BERTSWEEP_FUZZ_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(rand::random);
    (ChaCha8Rng::seed_from_u64(seed), seed)
}

/// The project's study files: the seed corpus.
fn corpus() -> Vec<String> {
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
const DICTIONARY: &[&str] = &[
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

fn mutate(rng: &mut ChaCha8Rng, text: &str) -> String {
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
fn check_study_file(text: &str) -> Result<(), String> {
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

#[test]
fn study_file_parser_never_panics_and_accepts_only_runnable_studies() {
    let (mut rng, seed) = rng();
    let corpus = corpus();
    let deadline = Instant::now() + budget();
    let mut cases = 0u64;
    // Quiet the default hook: panics are caught and reported with their input instead.
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let mut failure = None;
    while Instant::now() < deadline && failure.is_none() {
        let base = corpus.choose(&mut rng).unwrap();
        let mut text = mutate(&mut rng, base);
        if rng.gen_bool(0.2) {
            text = mutate(&mut rng, &text);
        }
        if let Err(why) = check_study_file(&text) {
            failure = Some((why, text));
        }
        cases += 1;
    }
    std::panic::set_hook(hook);
    if let Some((why, text)) = failure {
        panic!("study-file fuzz (BERTSWEEP_FUZZ_SEED={seed}) after {cases} cases: {why}\n--- input ---\n{text}");
    }
    eprintln!("study-file fuzz: {cases} cases, seed {seed}, no panics");
}

/// A string from the shapes that matter: real names, empty, long, unicode, path tricks.
fn name(rng: &mut ChaCha8Rng, real: &[String]) -> String {
    match rng.gen_range(0..8) {
        0..=2 if !real.is_empty() => real.choose(rng).unwrap().clone(),
        3 => String::new(),
        4 => "n".repeat(rng.gen_range(60..70_000)),
        5 => ["..", ".", "-rf", "é", "a/b", " ", "\u{0}"].choose(rng).unwrap().to_string(),
        _ => format!("w{}", rng.gen_range(0..1000)),
    }
}

fn number(rng: &mut ChaCha8Rng, real: &[u64]) -> u64 {
    match rng.gen_range(0..6) {
        0..=2 if !real.is_empty() => *real.choose(rng).unwrap(),
        3 => 0,
        4 => u64::MAX,
        _ => rng.gen_range(1..10_000),
    }
}

/// A digest's text: real ones uploaded earlier, well-formed unknown ones, and malformed ones.
fn digest_text(rng: &mut ChaCha8Rng, real: &[String]) -> String {
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
fn reference(rng: &mut ChaCha8Rng, digests: &[String], own: Option<(&str, u32, u32, u64)>) -> String {
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
fn peak(rng: &mut ChaCha8Rng) -> u64 {
    match rng.gen_range(0..8) {
        0..=2 => 0,
        3 => 1 << 50,
        4 => (1 << 50) + 1,
        5 => u64::MAX,
        _ => rng.gen_range(1..100_000_000_000),
    }
}

/// None, valid, or broken dev-set predictions (sizes, labels, probabilities, names).
fn random_predictions(rng: &mut ChaCha8Rng) -> Option<pb::DevPredictions> {
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

fn random_metrics(rng: &mut ChaCha8Rng) -> HashMap<String, f64> {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rpc_answers_invalid_input_with_a_callers_code_and_keeps_its_invariants() {
    let (mut rng, seed) = rng();
    let server = TestServer::start(Duration::from_millis(400)).await;
    let channel = tonic::transport::Endpoint::from_shared(server.url.clone()).unwrap().connect().await.unwrap();
    let mut c = pb::coordinator_client::CoordinatorClient::new(channel.clone());
    let corpus = corpus();
    let mut studies: Vec<String> = Vec::new();
    let mut workers: Vec<String> = Vec::new();
    let mut trial_ids: Vec<u64> = Vec::new();
    let mut tokens: Vec<u64> = Vec::new();
    // Leases handed out, with their study and trial number (for references in their own place).
    let mut leases: Vec<(String, u32, u64, u64)> = Vec::new();
    let mut digests: Vec<String> = Vec::new();
    let deadline = Instant::now() + budget();
    let mut calls = 0u64;
    const METHODS: &[&str] = &[
        "CreateStudy",
        "GetStudy",
        "ListStudies",
        "StopStudy",
        "DeleteStudy",
        "ListTrials",
        "ListConfigurations",
        "GetBestTrial",
        "RegisterWorker",
        "AcquireTrial",
        "Heartbeat",
        "ReportProgress",
        "CompleteTrial",
        "FailTrial",
        "FindMissingBlobs",
        "UploadBlob",
        "DownloadBlob",
        "OfferArtifact",
    ];
    while Instant::now() < deadline {
        calls += 1;
        let what = rng.gen_range(0..23);
        let result: Result<(), tonic::Status> = match what {
            0 | 1 => {
                let base = corpus.choose(&mut rng).unwrap();
                let text = if rng.gen_bool(0.3) {
                    // A fresh valid study now and then, so leases and reports have something to hit.
                    study_toml(
                        &format!("f{calls}"),
                        "parallel_trials = 2\nmax_attempts = 2",
                        &grid_params(rng.gen_range(2..4)),
                    )
                } else {
                    mutate(&mut rng, base)
                };
                c.create_study(pb::CreateStudyRequest { spec_toml: text })
                    .await
                    .map(|r| studies.push(r.into_inner().name))
            }
            2 => c.get_study(pb::GetStudyRequest { name: name(&mut rng, &studies) }).await.map(drop),
            3 => {
                let page_token = if rng.gen_bool(0.5) { String::new() } else { name(&mut rng, &[]) };
                c.list_studies(pb::ListStudiesRequest { page_size: rng.gen(), page_token, state: rng.gen_range(0..6) })
                    .await
                    .map(drop)
            }
            4 => c.stop_study(pb::StopStudyRequest { name: name(&mut rng, &studies) }).await.map(drop),
            5 => {
                let page_token = if rng.gen_bool(0.5) { String::new() } else { rng.gen::<u32>().to_string() };
                let request =
                    pb::ListTrialsRequest { study: name(&mut rng, &studies), page_size: rng.gen(), page_token };
                c.list_trials(request).await.map(drop)
            }
            6 => c.get_best_trial(pb::GetBestTrialRequest { study: name(&mut rng, &studies) }).await.map(drop),
            7 => {
                let request = pb::RegisterWorkerRequest {
                    hostname: name(&mut rng, &[]),
                    devices: (0..rng.gen_range(0..80)).map(|i| format!("cuda:{i}")).collect(),
                    version: name(&mut rng, &[]),
                };
                c.register_worker(request).await.map(|r| workers.push(r.into_inner().worker_id))
            }
            8 | 9 => {
                let study = if rng.gen_bool(0.5) { String::new() } else { name(&mut rng, &studies) };
                let wait_ms = *[1u32, 20, 0, 60_001, u32::MAX].choose(&mut rng).unwrap();
                let wait_ms = if wait_ms == 0 { 1 } else { wait_ms };
                let request = pb::AcquireTrialRequest { worker_id: name(&mut rng, &workers), study, wait_ms };
                c.acquire_trial(request).await.map(|r| {
                    if let Some(a) = r.into_inner().assignment {
                        trial_ids.push(a.trial_id);
                        tokens.push(a.lease_token);
                        leases.push((a.study, a.number, a.trial_id, a.lease_token));
                    }
                })
            }
            10 => {
                let request = pb::HeartbeatRequest {
                    trial_id: number(&mut rng, &trial_ids),
                    lease_token: number(&mut rng, &tokens),
                };
                c.heartbeat(request).await.map(drop)
            }
            11 | 12 => {
                let epoch = *[0u32, 1, 2, 3, 4, u32::MAX].choose(&mut rng).unwrap();
                let request = pb::ReportProgressRequest {
                    trial_id: number(&mut rng, &trial_ids),
                    lease_token: number(&mut rng, &tokens),
                    epoch,
                    metrics: random_metrics(&mut rng),
                    checkpoint: String::new(),
                    peak_device_memory_bytes: peak(&mut rng),
                };
                c.report_progress(request).await.map(drop)
            }
            13 => {
                let request = pb::CompleteTrialRequest {
                    trial_id: number(&mut rng, &trial_ids),
                    lease_token: number(&mut rng, &tokens),
                    metrics: random_metrics(&mut rng),
                    artifact: if rng.gen_bool(0.7) { String::new() } else { reference(&mut rng, &digests, None) },
                    peak_device_memory_bytes: peak(&mut rng),
                    predictions: random_predictions(&mut rng),
                    test_metrics: random_metrics(&mut rng).into_iter().map(|(k, v)| (format!("test_{k}"), v)).collect(),
                };
                c.complete_trial(request).await.map(drop)
            }
            14 => {
                let request = pb::FailTrialRequest {
                    trial_id: number(&mut rng, &trial_ids),
                    lease_token: number(&mut rng, &tokens),
                    error: name(&mut rng, &[]),
                    kind: rng.gen_range(-1..5),
                };
                c.fail_trial(request).await.map(drop)
            }
            15 => {
                let request = pb::DeleteStudyRequest { name: name(&mut rng, &studies), force: rng.gen_bool(0.5) };
                let deleted = request.name.clone();
                c.delete_study(request).await.map(|_| studies.retain(|s| *s != deleted))
            }
            16 => {
                let n = *[0usize, 1, 3, 100, 100_001].choose(&mut rng).unwrap();
                let digests = (0..n).map(|_| digest_text(&mut rng, &digests)).collect();
                c.find_missing_blobs(pb::FindMissingBlobsRequest { digests }).await.map(drop)
            }
            17 => {
                // Content that matches its announced digest and size, or not in one way or another.
                let data: Vec<u8> = (0..rng.gen_range(0..3000)).map(|_| rng.gen()).collect();
                let real = bertsweep_transfer::Digest::of(&data).to_string();
                let (digest, size) = match rng.gen_range(0..6) {
                    0..=2 => (real.clone(), data.len() as u64),
                    3 => (real.clone(), data.len() as u64 + 1),
                    4 => (real.clone(), u64::MAX),
                    _ => (digest_text(&mut rng, &digests), data.len() as u64),
                };
                let split = rng.gen_range(0..=data.len());
                let mut messages = vec![pb::UploadBlobRequest { digest, size, data: data[..split].to_vec() }];
                if rng.gen_bool(0.5) {
                    messages.push(pb::UploadBlobRequest { data: data[split..].to_vec(), ..Default::default() });
                }
                c.upload_blob(futures::stream::iter(messages)).await.map(|r| {
                    digests.push(r.into_inner().digest);
                })
            }
            18 => {
                let offset = *[0u64, 1, 100, u64::MAX].choose(&mut rng).unwrap();
                let request = pb::DownloadBlobRequest { digest: digest_text(&mut rng, &digests), offset };
                match c.download_blob(request).await {
                    Ok(response) => {
                        let mut stream = response.into_inner();
                        let mut outcome = Ok(());
                        while let Some(item) = futures::StreamExt::next(&mut stream).await {
                            if let Err(status) = item {
                                outcome = Err(status);
                                break;
                            }
                        }
                        outcome
                    }
                    Err(status) => Err(status),
                }
            }
            19 => {
                let value = *[0.5, f64::NAN, f64::INFINITY, -1.0].choose(&mut rng).unwrap();
                let request = pb::OfferArtifactRequest {
                    trial_id: number(&mut rng, &trial_ids),
                    lease_token: number(&mut rng, &tokens),
                    value,
                };
                c.offer_artifact(request).await.map(drop)
            }
            20 | 21 if !leases.is_empty() => {
                // A live-looking lease reporting a checkpoint of every shape.
                let (study, number, trial_id, lease_token) = leases.choose(&mut rng).unwrap().clone();
                let epoch = rng.gen_range(1..4);
                let own = Some((study.as_str(), number, epoch, lease_token));
                let request = pb::ReportProgressRequest {
                    trial_id,
                    lease_token,
                    epoch,
                    metrics: [("eval_accuracy".to_string(), rng.gen_range(0.0..1.0))].into_iter().collect(),
                    checkpoint: reference(&mut rng, &digests, own),
                    // Plausible, so the reference is what is judged.
                    peak_device_memory_bytes: rng.gen_range(0..100_000_000_000),
                };
                c.report_progress(request).await.map(drop)
            }
            _ => {
                // Bytes that are not the method's message (or are, by chance).
                let method = METHODS.choose(&mut rng).unwrap();
                let body: Vec<u8> = (0..rng.gen_range(0..64)).map(|_| rng.gen()).collect();
                let status = raw_call_on(channel.clone(), method, body).await;
                if status.code() == Code::Ok {
                    Ok(())
                } else {
                    Err(status)
                }
            }
        };
        if let Err(status) = result {
            let allowed = [
                Code::InvalidArgument,
                Code::NotFound,
                Code::AlreadyExists,
                Code::FailedPrecondition,
                Code::ResourceExhausted,
            ];
            assert!(
                allowed.contains(&status.code()),
                "call kind {what} (BERTSWEEP_FUZZ_SEED={seed}, call {calls}) answered {:?}: {}",
                status.code(),
                status.message()
            );
            assert!(
                status.message().len() <= 800,
                "call kind {what} (seed {seed}): a {}-byte message",
                status.message().len()
            );
        }
    }
    // Invariants: every study's counts add up and parallel_trials holds.
    for name in &studies {
        let s = study(&mut c, name).await;
        let counts = s.counts.unwrap_or_default();
        let listed = trials(&mut c, name).await;
        let sum = counts.pending + counts.running + counts.completed + counts.pruned + counts.failed + counts.stopped;
        assert_eq!(
            sum as usize,
            listed.len(),
            "study {name} (seed {seed}): counts {counts:?} vs {} trials",
            listed.len()
        );
        assert!(
            counts.running <= s.parallel_trials,
            "study {name} (seed {seed}): {} running > {}",
            counts.running,
            s.parallel_trials
        );
        assert!(listed.len() as u32 <= s.max_trials);
        for t in &listed {
            assert!(
                t.peak_device_memory_bytes <= 1 << 50,
                "study {name} (seed {seed}): trial {} kept a peak of {} bytes",
                t.number,
                t.peak_device_memory_bytes
            );
        }
    }
    // Every blob stored matches its digest: no upload, however malformed, left a wrong one.
    let blobs = bertsweep_transfer::blob_dir::BlobDir::open(server.dir.path().join("test.db.data")).unwrap();
    let stored = blobs.list().unwrap();
    for (d, _) in &stored {
        assert!(blobs.verify(d), "blob {d} does not match its digest (seed {seed})");
    }
    eprintln!("rpc fuzz: {calls} calls, {} studies, {} blobs, seed {seed}", studies.len(), stored.len());
    server.shutdown().await;
}
