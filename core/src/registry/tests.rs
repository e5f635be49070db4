use super::*;
use crate::params::{config_key, ParamValue};
use crate::spec::parse_study;

const TTL: u32 = 1000;

fn registry_with(text: &str) -> (Registry, String) {
    let mut reg = Registry::new(LeaseConfig { ttl_ms: TTL });
    let spec = parse_study(text).unwrap();
    reg.create_study(spec, text.into(), 0).unwrap();
    let worker = reg.register_worker("h".into(), vec![], "t".into(), 0).value;
    (reg, worker)
}

fn metrics(acc: f64) -> Metrics {
    [("eval_accuracy".to_string(), acc)].into_iter().collect()
}

#[test]
fn full_lifecycle_completes_the_study() {
    let (mut reg, w) = registry_with(crate::spec::test_support::SMALL_GRID);
    for i in 0..4 {
        let a = reg.acquire(&w, None, 1).unwrap().value.unwrap();
        assert_eq!(a.number, i);
        assert_eq!(
            reg.report_progress(a.trial_id, a.lease_token, 1, metrics(0.5), String::new(), 0, 2).unwrap().value,
            Decision::Continue
        );
        reg.complete(a.trial_id, a.lease_token, metrics(0.6 + i as f64 / 100.0), String::new(), 0, 3).unwrap();
    }
    assert!(reg.acquire(&w, None, 4).unwrap().value.is_none());
    let s = reg.study("small").unwrap();
    assert_eq!(s.record.state, StudyState::Completed);
    assert_eq!(reg.best_trial("small").unwrap().unwrap().number, 3);
}

fn ckpt(n: u8) -> String {
    format!("blob:sha256:{}", format!("{n:02x}").repeat(32))
}

#[test]
fn deleting_a_study_refuses_a_running_one_unless_forced_and_leaves_the_others_working() {
    let (mut reg, w) = registry_with(crate::spec::test_support::SMALL_GRID);
    let other = crate::spec::test_support::SMALL_GRID.replace("name = \"small\"", "name = \"other\"");
    reg.create_study(parse_study(&other).unwrap(), other.clone(), 0).unwrap();
    let a = reg.acquire(&w, Some("small"), 1).unwrap().value.unwrap();
    reg.report_progress(a.trial_id, a.lease_token, 1, metrics(0.5), ckpt(1), 0, 2).unwrap();
    let b = reg.acquire(&w, Some("other"), 1).unwrap().value.unwrap();

    let e = reg.delete_study("small", false, 3).unwrap_err().to_string();
    assert!(e.contains("running") && e.contains("--force"), "{e}");
    assert!(reg.study("small").is_ok(), "a refused delete changes nothing");

    let deleted = reg.delete_study("small", true, 4).unwrap();
    assert_eq!(deleted.value.summary.record.state, StudyState::Stopped, "forced: stopped first");
    assert_eq!(deleted.value.checkpoints, [ckpt(1)]);
    assert!(matches!(deleted.ops.first(), Some(WriteOp::Study(r)) if r.state == StudyState::Stopped));
    assert!(
        matches!(deleted.ops.last(), Some(WriteOp::DeleteStudy { trial_ids, .. }) if trial_ids.contains(&a.trial_id))
    );
    assert!(reg.study("small").is_err() && reg.heartbeat(a.trial_id, a.lease_token, 5).is_err());
    assert!(!reg.blob_roots().contains(&blob_of(&ckpt(1)).unwrap()));

    // The study after it moved down one place: its lease and listing still work.
    assert!(!reg.heartbeat(b.trial_id, b.lease_token, 5).unwrap().value.stop);
    let (page, _) = reg.studies_page(0, 10, None);
    assert_eq!(page.iter().map(|s| s.record.name.as_str()).collect::<Vec<_>>(), ["other"]);
    assert!(reg.studies_page(0, 10, Some(StudyState::Stopped)).0.is_empty());
    reg.complete(b.trial_id, b.lease_token, metrics(0.7), String::new(), 0, 6).unwrap();

    // The name is free again; a stopped study deletes without --force.
    let small = crate::spec::test_support::SMALL_GRID;
    reg.create_study(parse_study(small).unwrap(), small.into(), 7).unwrap();
    reg.stop_study("small", 8).unwrap();
    assert!(reg.delete_study("small", false, 9).is_ok());
    assert!(reg.delete_study("small", false, 9).is_err(), "gone");
}

const GB: u64 = 1_000_000_000;

/// The peak a trial op carries for trial `number` (the last such op in `ops`).
fn peak_in(ops: &[WriteOp], number: u32) -> Option<u64> {
    ops.iter().rev().find_map(|op| match op {
        WriteOp::Trial { trial, .. } if trial.number == number => Some(trial.peak_device_memory_bytes),
        _ => None,
    })
}

#[test]
fn a_trials_peak_only_rises_and_new_leases_expect_the_peak_of_their_shape() {
    // Grid order: (3e-5, 16), (3e-5, 32), (5e-5, 16), (5e-5, 32).
    let (mut reg, w) = registry_with(crate::spec::test_support::SMALL_GRID);
    let a = reg.acquire(&w, None, 0).unwrap().value.unwrap();
    let b = reg.acquire(&w, None, 0).unwrap().value.unwrap();
    assert_eq!((a.expected_peak_bytes, b.expected_peak_bytes), (0, 0), "nothing reported yet");
    let peak = |reg: &Registry, n: u32| reg.trials("small").unwrap()[n as usize].peak_device_memory_bytes;

    let out = reg.report_progress(a.trial_id, a.lease_token, 1, metrics(0.5), String::new(), 3 * GB, 1).unwrap();
    assert_eq!((peak(&reg, 0), peak_in(&out.ops, 0)), (3 * GB, Some(3 * GB)), "persisted with the trial row");
    reg.report_progress(a.trial_id, a.lease_token, 2, metrics(0.6), String::new(), 2 * GB, 2).unwrap();
    assert_eq!(peak(&reg, 0), 3 * GB, "a lower peak never lowers it");
    // A retried report with a larger peak raises it (and says so to the store).
    let out = reg.report_progress(a.trial_id, a.lease_token, 2, metrics(0.6), String::new(), 3 * GB + 1, 3).unwrap();
    assert_eq!(peak_in(&out.ops, 0), Some(3 * GB + 1));
    let out = reg.complete(a.trial_id, a.lease_token, metrics(0.6), String::new(), 0, 4).unwrap();
    assert_eq!((peak(&reg, 0), peak_in(&out.ops, 0)), (3 * GB + 1, Some(3 * GB + 1)), "0 is not measured");
    reg.complete(b.trial_id, b.lease_token, metrics(0.7), String::new(), 0, 5).unwrap();
    assert_eq!(peak(&reg, 1), 0);

    // Trial 2 has trial 0's batch size; trial 3 has trial 1's, which reported nothing.
    let c = reg.acquire(&w, None, 6).unwrap().value.unwrap();
    let d = reg.acquire(&w, None, 6).unwrap().value.unwrap();
    assert_eq!((c.number, c.expected_peak_bytes), (2, 3 * GB + 1));
    assert_eq!((d.number, d.expected_peak_bytes), (3, 0));
    // Trial 3 completes with a peak: it is its shape's now, not trial 2's.
    reg.complete(d.trial_id, d.lease_token, metrics(0.7), String::new(), 5 * GB, 7).unwrap();
    assert_eq!(peak(&reg, 3), 5 * GB);
}

#[test]
fn a_retried_trial_expects_its_own_earlier_attempts_peak() {
    let (mut reg, w) = registry_with(crate::spec::test_support::SMALL_GRID);
    let a = reg.acquire(&w, None, 0).unwrap().value.unwrap();
    reg.report_progress(a.trial_id, a.lease_token, 1, metrics(0.5), String::new(), 4 * GB, 1).unwrap();
    assert_eq!(reg.reap(1 + TTL as i64 + 1).value, 1);
    let again = reg.acquire(&w, None, 5000).unwrap().value.unwrap();
    assert_eq!((again.number, again.attempt, again.expected_peak_bytes), (a.number, 2, 4 * GB));
    // The new attempt's lower peak leaves the trial's.
    reg.report_progress(again.trial_id, again.lease_token, 1, metrics(0.5), String::new(), GB, 5001).unwrap();
    assert_eq!(reg.trials("small").unwrap()[0].peak_device_memory_bytes, 4 * GB);
}

#[test]
fn a_peak_over_the_cap_is_refused_and_changes_nothing() {
    let (mut reg, w) = registry_with(crate::spec::test_support::SMALL_GRID);
    let a = reg.acquire(&w, None, 0).unwrap().value.unwrap();
    let cap = crate::model::MAX_PEAK_DEVICE_MEMORY_BYTES;
    for bad in [cap + 1, u64::MAX] {
        let e = reg.report_progress(a.trial_id, a.lease_token, 1, metrics(0.5), String::new(), bad, 1).unwrap_err();
        assert!(matches!(e, CoordinatorError::InvalidArgument(_)) && e.to_string().contains("2^50"), "{e}");
        let e = reg.complete(a.trial_id, a.lease_token, metrics(0.5), String::new(), bad, 1).unwrap_err();
        assert!(matches!(e, CoordinatorError::InvalidArgument(_)), "{e}");
        let t = &reg.trials("small").unwrap()[0];
        assert!(t.intermediate.is_empty() && t.state == TrialState::Running && t.peak_device_memory_bytes == 0);
    }
    reg.report_progress(a.trial_id, a.lease_token, 1, metrics(0.5), String::new(), cap, 1).unwrap();
    assert_eq!(reg.trials("small").unwrap()[0].peak_device_memory_bytes, cap, "the cap itself is accepted");
}

#[test]
fn a_restored_registry_keeps_peaks_and_their_shapes() {
    let (mut reg, w) = registry_with(crate::spec::test_support::SMALL_GRID);
    let a = reg.acquire(&w, None, 0).unwrap().value.unwrap();
    reg.complete(a.trial_id, a.lease_token, metrics(0.5), String::new(), 3 * GB, 1).unwrap();
    let snapshot = Snapshot {
        studies: vec![reg.study("small").unwrap().record],
        trials: reg.trials("small").unwrap(),
        workers: vec![],
        lease_tokens_from: 100,
    };
    let mut restored = Registry::restore(snapshot, LeaseConfig { ttl_ms: TTL }, 2).unwrap();
    assert_eq!(restored.trials("small").unwrap()[0].peak_device_memory_bytes, 3 * GB);
    let w = restored.register_worker("h".into(), vec![], "t".into(), 2).value;
    let b = restored.acquire(&w, None, 3).unwrap().value.unwrap();
    let c = restored.acquire(&w, None, 3).unwrap().value.unwrap();
    assert_eq!((b.number, b.expected_peak_bytes), (1, 0));
    assert_eq!((c.number, c.expected_peak_bytes), (2, 3 * GB));
}

#[test]
fn idle_workers_expire_unless_they_hold_a_trial() {
    let (mut reg, busy) = registry_with(crate::spec::test_support::SMALL_GRID);
    let idle = reg.register_worker("h2".into(), vec![], "t".into(), 0).value;
    let fresh = reg.register_worker("h3".into(), vec![], "t".into(), 0).value;
    reg.acquire(&busy, None, 10).unwrap();
    reg.acquire(&fresh, None, 5000).unwrap();
    let out = reg.expire_workers(1000);
    assert_eq!(out.value, 1, "only the idle worker without a trial");
    assert!(matches!(out.ops.as_slice(), [WriteOp::ForgetWorker(id)] if *id == idle));
    let e = reg.acquire(&idle, None, 6000).unwrap_err();
    assert!(matches!(e, CoordinatorError::NotFound(_)) && e.to_string().contains("RegisterWorker"), "{e}");
    assert!(reg.acquire(&fresh, None, 6000).is_ok());
}

#[test]
fn a_checkpoint_outside_the_trials_own_place_is_refused_and_changes_nothing() {
    let (mut reg, w) = registry_with(crate::spec::test_support::SMALL_GRID);
    let a = reg.acquire(&w, None, 0).unwrap().value.unwrap();
    let own = |epoch: u32| format!("s3://bucket/base/small/{}/checkpoints/e{epoch}-{}", a.number, a.lease_token);
    for bad in [
        "s3://bucket/".to_string(),
        "s3://bucket".to_string(),
        "s3://bucket/some-prefix".to_string(),
        format!("s3://bucket/base/other/{}/checkpoints/e1-{}", a.number, a.lease_token),
        format!("s3://bucket/base/small/{}/checkpoints/e1-{}", a.number + 1, a.lease_token),
        format!("s3://bucket/base/small/{}/checkpoints/e1-{}", a.number, a.lease_token + 1),
        own(2),
        "worker:/".to_string(),
        "worker:/etc".to_string(),
        format!("worker:/x/../small/{}/checkpoints/e1-{}", a.number, a.lease_token),
    ] {
        let e = reg.report_progress(a.trial_id, a.lease_token, 1, metrics(0.5), bad.clone(), 0, 1).unwrap_err();
        assert!(matches!(e, CoordinatorError::InvalidArgument(_)), "{bad}: {e}");
        let t = &reg.trials("small").unwrap()[a.number as usize];
        assert!(t.intermediate.is_empty() && t.checkpoint.is_empty(), "{bad} changed the trial");
    }
    reg.report_progress(a.trial_id, a.lease_token, 1, metrics(0.5), own(1), 0, 1).unwrap();
    let local = format!("worker:/shared/small/{}/checkpoints/e2-{}", a.number, a.lease_token);
    reg.report_progress(a.trial_id, a.lease_token, 2, metrics(0.6), local, 0, 2).unwrap();
    assert_eq!(reg.take_dropped_checkpoints(), [own(1)]);
}

#[test]
fn a_requeued_trial_resumes_from_its_last_checkpoint_with_one_curve() {
    let (mut reg, w) = registry_with(crate::spec::test_support::SMALL_GRID);
    let a = reg.acquire(&w, None, 0).unwrap().value.unwrap();
    assert!(a.checkpoints && a.resume_checkpoint.is_empty() && a.resume_epoch == 0);
    reg.report_progress(a.trial_id, a.lease_token, 1, metrics(0.5), ckpt(1), 0, 1).unwrap();
    assert!(reg.take_dropped_checkpoints().is_empty());
    reg.report_progress(a.trial_id, a.lease_token, 2, metrics(0.6), ckpt(2), 0, 2).unwrap();
    assert_eq!(reg.take_dropped_checkpoints(), [ckpt(1)], "only the latest is kept");
    assert!(reg.blob_roots().contains(&blob_of(&ckpt(2)).unwrap()));

    // The worker dies: the lease expires, the checkpoint stays with the requeued trial.
    assert_eq!(reg.reap(2 + TTL as i64 + 1).value, 1);
    assert!(reg.take_dropped_checkpoints().is_empty());
    let b = reg.acquire(&w, None, 5000).unwrap().value.unwrap();
    assert_eq!((b.number, b.attempt), (a.number, 2));
    assert_eq!((b.resume_checkpoint.as_str(), b.resume_epoch), (ckpt(2).as_str(), 2));
    reg.report_progress(b.trial_id, b.lease_token, 3, metrics(0.7), String::new(), 0, 5001).unwrap();
    let t = &reg.trials("small").unwrap()[a.number as usize];
    assert_eq!(t.intermediate.keys().copied().collect::<Vec<_>>(), [1, 2, 3], "one continuous curve");
    assert_eq!(t.intermediate[&2], metrics(0.6));
    assert_eq!(t.earlier_attempts.len(), 2, "the first attempt's record stays");

    reg.complete(b.trial_id, b.lease_token, metrics(0.7), String::new(), 0, 5002).unwrap();
    assert_eq!(reg.take_dropped_checkpoints(), [ckpt(2)], "a terminal trial's checkpoint goes");
    let t = &reg.trials("small").unwrap()[a.number as usize];
    assert!(t.checkpoint.is_empty() && t.checkpoint_epoch == 0);
    assert!(!reg.blob_roots().contains(&blob_of(&ckpt(2)).unwrap()));
}

#[test]
fn a_resumed_attempt_may_restart_from_epoch_one_and_studies_may_turn_checkpoints_off() {
    let (mut reg, w) = registry_with(crate::spec::test_support::SMALL_GRID);
    let a = reg.acquire(&w, None, 0).unwrap().value.unwrap();
    reg.report_progress(a.trial_id, a.lease_token, 1, metrics(0.5), ckpt(1), 0, 1).unwrap();
    reg.fail(a.trial_id, a.lease_token, "SIGTERM".into(), FailureKind::Released, 2).unwrap();
    let b = reg.acquire(&w, None, 3).unwrap().value.unwrap();
    assert_eq!(b.resume_epoch, 1);
    // The checkpoint was unusable: the worker starts over and reports epoch 1.
    reg.report_progress(b.trial_id, b.lease_token, 1, metrics(0.4), String::new(), 0, 4).unwrap();
    let t = &reg.trials("small").unwrap()[a.number as usize];
    assert_eq!(t.intermediate, [(1, metrics(0.4))].into_iter().collect());
    // Pruned, failed or stopped trials drop theirs too.
    reg.stop_study("small", 5).unwrap();
    assert_eq!(reg.take_dropped_checkpoints(), [ckpt(1)]);

    let off = crate::spec::test_support::SMALL_GRID
        .replace("parallel_trials = 2", "parallel_trials = 2\ncheckpoints = false");
    let (mut reg, w) = registry_with(&off);
    let a = reg.acquire(&w, None, 0).unwrap().value.unwrap();
    assert!(!a.checkpoints);
    reg.report_progress(a.trial_id, a.lease_token, 1, metrics(0.5), ckpt(1), 0, 1).unwrap();
    reg.fail(a.trial_id, a.lease_token, "SIGTERM".into(), FailureKind::Released, 2).unwrap();
    let b = reg.acquire(&w, None, 3).unwrap().value.unwrap();
    assert!(b.resume_checkpoint.is_empty() && b.resume_epoch == 0);
}

/// Four trials of 4 epochs, asha promotion with η = 2 from epoch 1, all in parallel.
const PROMOTING: &str = r#"
name = "promo"
[objective]
metric = "eval_accuracy"
[algorithm]
sampler = "grid"
[budget]
parallel_trials = 4
[early_stopping]
type = "asha"
mode = "promotion"
reduction_factor = 2
[task]
model = "m"
train_file = "t.tsv"
validation_file = "v.tsv"
[parameters.learning_rate]
values = [1e-5, 2e-5, 3e-5, 4e-5]
[parameters.num_train_epochs]
value = 4
"#;

#[test]
fn promotion_mode_pauses_at_a_rung_and_promotes_once_the_trial_ranks() {
    let (mut reg, w) = registry_with(PROMOTING);
    let a: Vec<Assignment> = (0..3).map(|_| reg.acquire(&w, None, 0).unwrap().value.unwrap()).collect();
    let report = |reg: &mut Registry, a: &Assignment, epoch: u32, acc: f64, ck: String| {
        reg.report_progress(a.trial_id, a.lease_token, epoch, metrics(acc), ck, 0, 1).unwrap().value
    };
    // Alone at the rung: nothing ranks yet (⌊1/2⌋ = 0 kept), so it pauses.
    assert!(matches!(report(&mut reg, &a[0], 1, 0.6, ckpt(1)), Decision::Pause(_)));
    // Second of two, and the better: continues at once.
    assert_eq!(report(&mut reg, &a[1], 1, 0.7, ckpt(2)), Decision::Continue);
    // Without a checkpoint a trial cannot pause: the stop-based rule judges it (pruned).
    assert!(matches!(report(&mut reg, &a[2], 1, 0.1, String::new()), Decision::Stop(_)));
    let t = &reg.trials("promo").unwrap()[0];
    assert_eq!((t.state, t.checkpoint.as_str()), (TrialState::Paused, ckpt(1).as_str()), "checkpoint kept");
    assert_eq!(reg.study("promo").unwrap().counts.paused, 1);
    // A heartbeat of the paused lease says stop, paused.
    let hb = reg.heartbeat(a[0].trial_id, a[0].lease_token, 2).unwrap().value;
    assert!(hb.stop && hb.paused);

    // Trial 0 ranks 2nd of 3 at rung 1: not yet (⌊3/2⌋ = 1). A new trial is sampled instead.
    let d = reg.acquire(&w, None, 3).unwrap().value.unwrap();
    assert_eq!(d.number, 3);
    assert!(matches!(report(&mut reg, &d, 1, 0.5, ckpt(4)), Decision::Pause(_)));
    // Four results at rung 1 keep two: 0.7 (running) and 0.6 (trial 0, paused) → promoted.
    let p = reg.acquire(&w, None, 4).unwrap().value.unwrap();
    assert_eq!((p.number, p.attempt), (0, 1), "a promotion is the same attempt");
    assert_eq!((p.resume_checkpoint.as_str(), p.resume_epoch), (ckpt(1).as_str(), 1));
    // Rung 2: alone there, it pauses again; trial 1 arrives second and worse, and pauses too.
    assert!(matches!(report(&mut reg, &p, 2, 0.8, ckpt(5)), Decision::Pause(_)));
    let t = &reg.trials("promo").unwrap()[0];
    assert_eq!(t.intermediate.keys().copied().collect::<Vec<_>>(), [1, 2], "one curve across the pause");
    assert_eq!(reg.take_dropped_checkpoints(), [ckpt(1)], "the rung-1 checkpoint was replaced");
    assert!(matches!(report(&mut reg, &a[1], 2, 0.7, ckpt(6)), Decision::Pause(_)));
    // The highest rung goes first: trial 0 (best of 2 at epoch 2) is promoted and finishes.
    let q = reg.acquire(&w, None, 5).unwrap().value.unwrap();
    assert_eq!((q.number, q.resume_epoch), (0, 2));
    assert_eq!(report(&mut reg, &q, 3, 0.85, ckpt(7)), Decision::Continue);
    assert_eq!(report(&mut reg, &q, 4, 0.9, String::new()), Decision::Continue);
    reg.complete(q.trial_id, q.lease_token, metrics(0.9), String::new(), 0, 6).unwrap();
    // Trials 1 and 3 can never rank now: they are pruned and the study completes.
    assert!(reg.acquire(&w, None, 7).unwrap().value.is_none());
    for n in [1, 3] {
        let t = &reg.trials("promo").unwrap()[n];
        assert_eq!(t.state, TrialState::Pruned, "{t:?}");
        assert!(t.checkpoint.is_empty() && t.value.is_some());
    }
    assert_eq!(reg.study("promo").unwrap().record.state, StudyState::Completed);
}

#[test]
fn parallel_limit_and_stale_tokens() {
    let (mut reg, w) = registry_with(crate::spec::test_support::SMALL_GRID);
    let a = reg.acquire(&w, None, 0).unwrap().value.unwrap();
    let _b = reg.acquire(&w, None, 0).unwrap().value.unwrap();
    assert!(reg.acquire(&w, None, 0).unwrap().value.is_none(), "parallel_trials = 2");
    // Expire a's lease: requeued with the same params, the old token is refused.
    reg.heartbeat(a.trial_id, a.lease_token, 500).unwrap();
    let reaped = reg.reap(500 + TTL as i64 + 1);
    assert_eq!(reaped.value, 2);
    let err = reg.complete(a.trial_id, a.lease_token, metrics(0.9), String::new(), 0, 2000).unwrap_err();
    assert!(matches!(err, CoordinatorError::FailedPrecondition(_)), "{err}");
    let again = reg.acquire(&w, None, 2000).unwrap().value.unwrap();
    assert_eq!(again.number, a.number, "requeued trials go out first");
    assert_eq!(again.params, a.params);
    assert_eq!(again.attempt, 2);
    assert!(again.lease_token > a.lease_token);
    assert!(reg.heartbeat(a.trial_id, a.lease_token, 2000).is_err());
}

#[test]
fn attempts_run_out_and_failures_fail_the_study() {
    let text = crate::spec::test_support::SMALL_GRID
        .replace("parallel_trials = 2", "parallel_trials = 2\nmax_attempts = 2\nmax_failed_trials = 2");
    let (mut reg, w) = registry_with(&text);
    let a = reg.acquire(&w, None, 0).unwrap().value.unwrap();
    assert_eq!(
        reg.fail(a.trial_id, a.lease_token, "boom".into(), FailureKind::Retryable, 1).unwrap().value,
        TrialState::Pending
    );
    let a2 = reg.acquire(&w, None, 2).unwrap().value.unwrap();
    assert_eq!(
        reg.fail(a2.trial_id, a2.lease_token, "boom".into(), FailureKind::Retryable, 3).unwrap().value,
        TrialState::Failed
    );
    let b = reg.acquire(&w, None, 4).unwrap().value.unwrap();
    let c = reg.acquire(&w, None, 4).unwrap().value.unwrap();
    assert_eq!(
        reg.fail(b.trial_id, b.lease_token, "oom".into(), FailureKind::Infeasible, 5).unwrap().value,
        TrialState::Failed
    );
    let s = reg.study("small").unwrap();
    assert_eq!(s.record.state, StudyState::Failed);
    assert!(s.record.reason.contains("2 trials failed"));
    let hb = reg.heartbeat(c.trial_id, c.lease_token, 6).unwrap().value;
    assert!(hb.stop);
}

#[test]
fn released_trials_do_not_use_an_attempt_and_bad_reports_change_nothing() {
    let (mut reg, w) = registry_with(crate::spec::test_support::SMALL_GRID);
    let a = reg.acquire(&w, None, 0).unwrap().value.unwrap();
    assert!(reg.report_progress(a.trial_id, a.lease_token, 0, metrics(0.5), String::new(), 0, 1).is_err());
    let nan = metrics(f64::NAN);
    assert!(reg.report_progress(a.trial_id, a.lease_token, 1, nan, String::new(), 0, 1).is_err());
    assert!(reg.trials("small").unwrap()[0].intermediate.is_empty());
    reg.fail(a.trial_id, a.lease_token, "SIGTERM".into(), FailureKind::Released, 1).unwrap();
    let again = reg.acquire(&w, None, 2).unwrap().value.unwrap();
    assert_eq!((again.number, again.attempt), (0, 1));
}

#[test]
fn folds_run_each_configuration_on_every_fold_and_keep_the_best_configurations_models() {
    let text = crate::spec::test_support::SMALL_GRID
        .replace("validation_file = \"v.tsv\"\n", "")
        .replace("parallel_trials = 2", "parallel_trials = 8\nkeep_artifacts = 1")
        + "[evaluation]\nfolds = 3\n";
    let (mut reg, w) = registry_with(&text);
    let mut leases = Vec::new();
    for _ in 0..6 {
        leases.push(reg.acquire(&w, None, 0).unwrap().value.unwrap());
    }
    let folds: Vec<_> = leases.iter().map(|a| a.params["fold"].clone()).collect();
    assert_eq!(folds, [0, 1, 2, 0, 1, 2].map(ParamValue::Int));
    assert!(leases.iter().all(|a| (a.folds, a.fold_seed) == (3, 0) && !a.params.contains_key("seed")));
    assert_eq!(config_key(&leases[0].params), config_key(&leases[2].params));
    assert_ne!(config_key(&leases[2].params), config_key(&leases[3].params));
    // Config 0: 0.70, 0.90, 0.80 (mean 0.80); config 1: 0.95, 0.60, 0.70 (mean 0.75).
    for (a, v) in leases.iter().zip([0.70, 0.90, 0.80, 0.95, 0.60, 0.70]) {
        reg.complete(a.trial_id, a.lease_token, metrics(v), format!("blob:sha256:{:064x}", a.number + 1), 0, 1)
            .unwrap();
    }
    let configs = reg.configurations("small").unwrap();
    assert_eq!(configs[0].trials, vec![0, 1, 2]);
    assert!((configs[0].mean.unwrap() - 0.80).abs() < 1e-12);
    // The best configuration by mean, not the single best trial (0.95); and with
    // keep_artifacts = 1, all three of its fold models are kept besides the top trial.
    assert_eq!(reg.best_trial("small").unwrap().unwrap().number, 1);
    let kept: Vec<u32> =
        reg.trials("small").unwrap().iter().filter(|t| !t.artifact.is_empty()).map(|t| t.number).collect();
    assert_eq!(kept, [0, 1, 2, 3]);
}

#[test]
fn early_stopping_compares_trials_of_the_same_fold() {
    let text = crate::spec::test_support::SMALL_GRID
        .replace("validation_file = \"v.tsv\"\n", "")
        .replace("parallel_trials = 2", "parallel_trials = 8")
        .replace("values = [16, 32]", "values = [16, 32]\n[parameters.num_train_epochs]\nvalue = 3")
        + "[evaluation]\nfolds = 2\n[early_stopping]\ntype = \"asha\"\nreduction_factor = 2\n";
    let (mut reg, w) = registry_with(&text);
    let a: Vec<_> = (0..4).map(|_| reg.acquire(&w, None, 0).unwrap().value.unwrap()).collect();
    // Fold 1 is much harder: 0.55 there is a fine score, fold 0's 0.80 a poor one.
    let report = |reg: &mut Registry, t: &Assignment, v: f64| {
        reg.report_progress(t.trial_id, t.lease_token, 1, metrics(v), String::new(), 0, 1).unwrap().value
    };
    assert_eq!(report(&mut reg, &a[0], 0.90), Decision::Continue); // config 0, fold 0
    assert_eq!(report(&mut reg, &a[1], 0.50), Decision::Continue); // config 0, fold 1
                                                                   // Config 1, fold 1 at 0.55 beats fold 1's 0.50: it continues, though every fold-0
                                                                   // score is higher. Config 1, fold 0 at 0.80 is below fold 0's 0.90: stopped.
    assert_eq!(report(&mut reg, &a[3], 0.55), Decision::Continue);
    assert!(matches!(report(&mut reg, &a[2], 0.80), Decision::Stop(_)));
}

#[test]
fn repeats_run_each_configuration_with_every_seed_and_rank_by_mean() {
    let text = crate::spec::test_support::SMALL_GRID.replace("sampler = \"grid\"", "sampler = \"grid\"\nrepeats = 2");
    let (mut reg, w) = registry_with(&text);
    // Config 0 (two seeds: 0.80, 0.70 → mean 0.75); config 1 (0.78, 0.77 → mean 0.775).
    let values = [0.80, 0.70, 0.78, 0.77];
    // The best mean after each completion: read between changes, so the cached
    // configurations must follow every completion.
    let best_means = [0.80, 0.75, 0.78, 0.775];
    let mut seen = Vec::new();
    for (v, best) in values.into_iter().zip(best_means) {
        let a = reg.acquire(&w, None, 0).unwrap().value.unwrap();
        seen.push(a.params.clone());
        assert_eq!(reg.configurations("small").unwrap().iter().map(|c| c.trials.len()).sum::<usize>(), seen.len());
        reg.complete(a.trial_id, a.lease_token, metrics(v), String::new(), 0, 1).unwrap();
        assert!((reg.study("small").unwrap().best_value.unwrap() - best).abs() < 1e-12, "after {v}");
    }
    assert_eq!(seen[0]["seed"], ParamValue::Int(0));
    assert_eq!(seen[1]["seed"], ParamValue::Int(1));
    assert_eq!(config_key(&seen[0]), config_key(&seen[1]));
    assert_ne!(config_key(&seen[1]), config_key(&seen[2]));
    let configs = reg.configurations("small").unwrap();
    assert_eq!(configs[0].trials, vec![2, 3]);
    assert!((configs[0].mean.unwrap() - 0.775).abs() < 1e-12);
    assert!((configs[0].std.unwrap() - (0.00005f64).sqrt()).abs() < 1e-9);
    // The best trial comes from the best configuration, not the single best trial (0.80).
    assert_eq!(reg.best_trial("small").unwrap().unwrap().number, 2);
    assert!((reg.study("small").unwrap().best_value.unwrap() - 0.775).abs() < 1e-12);
}

#[test]
fn asha_prunes_through_report_progress_and_pruned_trials_keep_metrics() {
    let text = crate::spec::test_support::SMALL_GRID.replace("parallel_trials = 2", "parallel_trials = 4")
        + "[parameters.num_train_epochs]\nvalue = 3\n[early_stopping]\ntype = \"asha\"\nreduction_factor = 2\n";
    let (mut reg, w) = registry_with(&text);
    let a: Vec<Assignment> = (0..4).map(|_| reg.acquire(&w, None, 0).unwrap().value.unwrap()).collect();
    assert_eq!(
        reg.report_progress(a[0].trial_id, a[0].lease_token, 1, metrics(0.8), String::new(), 0, 1).unwrap().value,
        Decision::Continue
    );
    let d = reg.report_progress(a[1].trial_id, a[1].lease_token, 1, metrics(0.5), String::new(), 0, 1).unwrap().value;
    assert!(matches!(d, Decision::Stop(_)), "{d:?}");
    let pruned = &reg.trials("small").unwrap()[1];
    assert_eq!(pruned.state, TrialState::Pruned);
    assert_eq!((pruned.value, pruned.last_epoch()), (Some(0.5), 1));
    // A pruned trial is terminal: further reports answer stop, completion is refused.
    assert!(matches!(
        reg.report_progress(a[1].trial_id, a[1].lease_token, 2, metrics(0.9), String::new(), 0, 2).unwrap().value,
        Decision::Stop(_)
    ));
    assert!(reg.complete(a[1].trial_id, a[1].lease_token, metrics(0.9), String::new(), 0, 2).is_err());
    // It counts toward the budget: the grid's 4 trials end the study.
    for t in [&a[0], &a[2], &a[3]] {
        reg.report_progress(t.trial_id, t.lease_token, 2, metrics(0.9), String::new(), 0, 3).unwrap();
        reg.complete(t.trial_id, t.lease_token, metrics(0.9), String::new(), 0, 3).unwrap();
    }
    let s = reg.study("small").unwrap();
    assert_eq!((s.record.state, s.counts.pruned, s.counts.completed), (StudyState::Completed, 1, 3));
}

#[test]
fn stop_study_stops_live_trials() {
    let (mut reg, w) = registry_with(crate::spec::test_support::SMALL_GRID);
    let a = reg.acquire(&w, None, 0).unwrap().value.unwrap();
    reg.stop_study("small", 1).unwrap();
    assert_eq!(
        reg.report_progress(a.trial_id, a.lease_token, 1, metrics(0.5), String::new(), 0, 2).unwrap().value,
        Decision::Stop("study stopped".into())
    );
    assert!(reg.acquire(&w, None, 2).unwrap().value.is_none());
    assert!(reg.stop_study("small", 3).is_err());
}
