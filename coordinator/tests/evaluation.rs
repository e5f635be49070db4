//! Dev-set predictions over real gRPC and SQLite: a completion's predictions give the trial a
//! bootstrap interval, per-class scores and a confusion matrix that survive a restart; bad
//! predictions are refused with one line and change nothing; `GetBestTrial` says whether the
//! best configuration is better than the runner-up or tied within noise.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use bertsweep_proto::v1 as pb;
use common::*;
use tonic::Code;

async fn best(c: &mut Client, study: &str) -> pb::BestTrial {
    c.get_best_trial(pb::GetBestTrialRequest { study: study.into() }).await.unwrap().into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn predictions_give_intervals_per_class_scores_and_a_verdict() {
    let server = TestServer::start(Duration::from_secs(30)).await;
    let db = format!("sqlite://{}", server.dir.path().join("test.db").display());
    let mut c = server.client().await;
    // Two learning rates × two batch sizes: four one-seed configurations.
    create(&mut c, &study_toml("e", "parallel_trials = 4", &grid_params(2))).await;
    let w = register(&mut c).await;
    let mut leases = Vec::new();
    for _ in 0..4 {
        leases.push(acquire(&mut c, &w, 1000).await.unwrap());
    }

    // Refused predictions: one line each, and the trial is untouched.
    let before = trials(&mut c, "e").await;
    let good = predictions(872, 800);
    let bad = [
        (pb::DevPredictions { epoch: 0, ..good.clone() }, "epochs count from 1"),
        (pb::DevPredictions { labels: vec![0; 871], ..good.clone() }, "1744 probabilities for 871 examples"),
        (pb::DevPredictions { classes: 1, ..good.clone() }, "1 classes"),
        (
            pb::DevPredictions { class_names: vec!["\u{1b}[2J".into(), "b".into()], ..good.clone() },
            "control characters",
        ),
        (pb::DevPredictions { class_weights: vec![1.0, -2.0], ..good.clone() }, "class weights"),
    ];
    for (p, expected) in bad {
        let err = complete_with(&mut c, &leases[0], 800.0 / 872.0, 0, Some(p), HashMap::new()).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
        assert!(err.message().contains(expected) && err.message().lines().count() == 1, "{err:?}");
    }
    assert_eq!(trials(&mut c, "e").await, before, "refused completions changed nothing");

    // The best (800/872) against a runner-up two examples behind: tied within noise.
    complete_with(&mut c, &leases[0], 800.0 / 872.0, 0, Some(good), HashMap::new()).await.unwrap();
    let only = best(&mut c, "e").await;
    assert!(only.comparison.is_none());
    assert!(only.comparison_unavailable.contains("no runner-up"), "{}", only.comparison_unavailable);
    complete_with(&mut c, &leases[1], 798.0 / 872.0, 0, Some(predictions(872, 798)), HashMap::new()).await.unwrap();
    // A trial completed without predictions (an older worker) ranks last and is never compared.
    complete(&mut c, &leases[3], 0.1).await.unwrap();
    let b = best(&mut c, "e").await;
    let t = b.trial.as_ref().unwrap();
    assert_eq!(t.number, leases[0].number);
    let e = t.evaluation.as_ref().expect("the best trial's evaluation");
    assert_eq!((e.epoch, e.examples), (1, 872));
    let (low, high) = (e.objective_low.unwrap(), e.objective_high.unwrap());
    assert!(low < 800.0 / 872.0 && 800.0 / 872.0 < high && high - low < 0.06, "[{low}, {high}]");
    assert_eq!(e.classes.iter().map(|k| k.name.as_str()).collect::<Vec<_>>(), ["negative", "positive"]);
    assert_eq!(e.classes.iter().map(|k| k.support).sum::<u64>(), 872);
    assert_eq!(e.confusion.len(), 4);
    assert_eq!(e.confusion[0] + e.confusion[3], 800, "the diagonal counts the right answers");
    let cmp = b.comparison.as_ref().expect("a comparison");
    assert_eq!(cmp.verdict, "tied within noise");
    assert!((cmp.difference - 2.0 / 872.0).abs() < 1e-12);
    assert!(cmp.difference_low <= 0.0 && cmp.difference_high > 0.0);
    assert_eq!(cmp.runner_up.as_ref().unwrap().trials, vec![leases[1].number]);
    assert!(trials(&mut c, "e").await.iter().find(|t| t.number == leases[3].number).unwrap().evaluation.is_none());

    // A clear lead: the new best is better than the old one.
    complete_with(&mut c, &leases[2], 850.0 / 872.0, 0, Some(predictions(872, 850)), HashMap::new()).await.unwrap();
    let b = best(&mut c, "e").await;
    assert_eq!(b.trial.as_ref().unwrap().number, leases[2].number);
    let cmp = b.comparison.as_ref().unwrap();
    assert_eq!(cmp.verdict, "better");
    assert!(cmp.difference_low > 0.0);

    // The same numbers after a restart (kept in SQLite, not recomputed differently).
    let kept = trials(&mut c, "e").await;
    let dir = server.stop_keeping_files().await;
    let server = TestServer::start_on_db(Duration::from_secs(30), &db).await;
    let mut c = server.client().await;
    assert_eq!(trials(&mut c, "e").await, kept, "evaluations survive a restart");
    assert_eq!(best(&mut c, "e").await.comparison, b.comparison, "and so does the verdict");
    server.shutdown().await;
    drop(dir);
}

/// A synthetic accuracy from a trial's learning rate and epoch (peaks near 3e-5).
fn accuracy(a: &pb::Assignment, epoch: u32) -> f64 {
    let lr = match a.params["learning_rate"].kind {
        Some(pb::param_value::Kind::FloatValue(f)) => f,
        _ => panic!("learning_rate is not a float"),
    };
    0.9 - (lr.ln() - 3e-5f64.ln()).powi(2) * 0.1 + f64::from(epoch) * 0.01
}

/// Runs a TPE + ASHA study to its end with one sequential fake worker that reports test scores
/// ranking trials the opposite way from their dev scores; returns its trials.
async fn run_to_end(c: &mut Client, name: &str, test_file: Option<&str>) -> Vec<pb::Trial> {
    let task = test_file.map(|f| format!("test_file = \"{f}\"")).unwrap_or_default();
    let toml = bertsweep_testkit::StudyToml::new(name)
        .sampler("tpe")
        .seed(11)
        .budget("max_trials = 14\nparallel_trials = 1")
        .task(&task)
        .parameters("[parameters.learning_rate]\ndistribution = \"log_uniform\"\nmin = 1e-6\nmax = 1e-3\n[parameters.num_train_epochs]\nvalue = 3")
        .section("[early_stopping]\ntype = \"asha\"\nmin_epochs = 1\nreduction_factor = 2\n")
        .to_string();
    create(c, &toml).await;
    let w = register(c).await;
    while let Some(a) = acquire(c, &w, 200).await {
        let mut stopped = false;
        for epoch in 1..=3 {
            if report(c, &a, epoch, accuracy(&a, epoch)).await.unwrap().decision == pb::Decision::Stop as i32 {
                stopped = true;
                break;
            }
        }
        if !stopped {
            let test = HashMap::from([("test_accuracy".to_string(), 1.0 - accuracy(&a, 3))]);
            let test = if test_file.is_some() { test } else { HashMap::new() };
            complete_with(c, &a, accuracy(&a, 3), 0, None, test).await.unwrap();
        }
    }
    trials(c, name).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_scores_never_change_a_decision() {
    let server = TestServer::start(Duration::from_secs(30)).await;
    let mut c = server.client().await;
    let plain = run_to_end(&mut c, "plain", None).await;
    let tested = run_to_end(&mut c, "tested", Some("worker:/data/test.tsv")).await;
    assert_eq!(plain.len(), 14);
    let decisions = |trials: &[pb::Trial]| -> Vec<(u32, i32, Option<f64>, Vec<u32>)> {
        trials.iter().map(|t| (t.number, t.state, t.value, t.intermediate.iter().map(|e| e.epoch).collect())).collect()
    };
    let params = |trials: &[pb::Trial]| trials.iter().map(|t| param_key(&t.params)).collect::<Vec<_>>();
    assert_eq!(params(&plain), params(&tested), "the sampler proposed the same configurations");
    assert_eq!(decisions(&plain), decisions(&tested), "early stopping and values are the same");
    assert!(plain.iter().any(|t| t.state == pb::TrialState::Pruned as i32), "ASHA took decisions to compare");
    let with_test = tested.iter().filter(|t| !t.test_metrics.is_empty()).count();
    assert!(with_test > 0 && plain.iter().all(|t| t.test_metrics.is_empty()));
    let best_plain = best(&mut c, "plain").await.trial.unwrap().number;
    let best_tested = best(&mut c, "tested").await;
    assert_eq!(best_tested.trial.as_ref().unwrap().number, best_plain, "the same best trial");
    assert!(!best_tested.trial.unwrap().test_metrics.is_empty(), "and its test scores are shown");
    // Test scores must be named test_…: anything else is refused with one line.
    let bad = HashMap::from([("eval_accuracy".to_string(), 0.5)]);
    create(&mut c, &study_toml("bad", "parallel_trials = 1", &grid_params(2))).await;
    let w = register(&mut c).await;
    let a = acquire(&mut c, &w, 1000).await.unwrap();
    let err = complete_with(&mut c, &a, 0.5, 0, None, bad).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("does not start with test_") && err.message().lines().count() == 1, "{err:?}");
    server.shutdown().await;
}
