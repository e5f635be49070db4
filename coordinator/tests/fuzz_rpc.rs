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

use bertsweep_proto::v1 as pb;
use common::fuzzing::*;
use common::*;
use rand::seq::SliceRandom;
use rand::Rng;
use std::time::{Duration, Instant};
use tonic::Code;

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
