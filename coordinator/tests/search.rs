//! Adaptive search over real gRPC: TPE hands 64 concurrent workers distinct configurations,
//! and ASHA prunes bad trials of a real study through ReportProgress.

mod common;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bertsweep_proto::v1 as pb;
use bertsweep_testkit::StudyToml;
use common::*;

/// A study over 8 learning rates × 4 batch sizes × 3 epoch counts (96 configurations).
fn search_toml(name: &str, sampler: &str, budget: &str, extra: &str) -> String {
    StudyToml::new(name)
        .sampler(sampler)
        .seed(7)
        .budget(budget)
        .parameters(
            "[parameters.learning_rate]
values = [1e-5, 1.5e-5, 2e-5, 2.5e-5, 3e-5, 4e-5, 5e-5, 6e-5]
[parameters.per_device_train_batch_size]
values = [8, 16, 32, 64]
[parameters.num_train_epochs]
values = [2, 3, 4]",
        )
        .section(extra)
        .to_string()
}

fn lr(a: &pb::Assignment) -> f64 {
    match a.params["learning_rate"].kind {
        Some(pb::param_value::Kind::FloatValue(f)) => f,
        _ => panic!("learning_rate is not a float"),
    }
}

/// Synthetic accuracy peaking at lr = 3e-5, improving with epochs.
fn accuracy(a: &pb::Assignment, epoch: u32) -> f64 {
    0.9 - 2000.0 * (lr(a) - 3e-5).abs() - 0.05 / epoch as f64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tpe_never_hands_out_the_same_configuration_twice_to_64_concurrent_workers() {
    let server = TestServer::start(Duration::from_secs(30)).await;
    let mut c = server.client().await;
    // 96 configurations, 64 trials, all 64 may run at once.
    create(&mut c, &search_toml("tpe64", "tpe", "max_trials = 64\nparallel_trials = 64", "")).await;
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let mut tasks = Vec::new();
    for _ in 0..64 {
        let url = server.url.clone();
        let seen = seen.clone();
        tasks.push(tokio::spawn(async move {
            let mut c = Client::connect(url).await.unwrap();
            let w = register(&mut c).await;
            while let Some(a) = acquire(&mut c, &w, 1000).await {
                seen.lock().unwrap().push(param_key(&a.params));
                for epoch in 1..=2 {
                    report(&mut c, &a, epoch, accuracy(&a, epoch)).await.unwrap();
                }
                complete(&mut c, &a, accuracy(&a, 2)).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 64);
    let distinct: HashSet<&String> = seen.iter().collect();
    assert_eq!(distinct.len(), 64, "duplicate configurations handed out");
    assert_eq!(study(&mut c, "tpe64").await.state, pb::StudyState::Completed as i32);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asha_study_prunes_bad_trials_end_to_end() {
    let server = TestServer::start(Duration::from_secs(30)).await;
    let mut c = server.client().await;
    create(
        &mut c,
        &search_toml(
            "asha",
            "random",
            "max_trials = 24\nparallel_trials = 4",
            "[early_stopping]\ntype = \"asha\"\nmin_epochs = 1\nreduction_factor = 3\n",
        ),
    )
    .await;
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let url = server.url.clone();
        tasks.push(tokio::spawn(async move {
            let mut c = Client::connect(url).await.unwrap();
            let w = register(&mut c).await;
            let mut epochs = 0;
            while let Some(a) = acquire(&mut c, &w, 1000).await {
                let planned = match a.params["num_train_epochs"].kind {
                    Some(pb::param_value::Kind::IntValue(n)) => n as u32,
                    _ => panic!(),
                };
                let mut stopped = false;
                for epoch in 1..=planned {
                    epochs += 1;
                    let r = report(&mut c, &a, epoch, accuracy(&a, epoch)).await.unwrap();
                    if r.decision == pb::Decision::Stop as i32 {
                        stopped = true;
                        break;
                    }
                }
                if !stopped {
                    complete(&mut c, &a, accuracy(&a, planned)).await.unwrap();
                }
            }
            epochs
        }));
    }
    let mut spent = 0;
    for t in tasks {
        spent += t.await.unwrap();
    }
    let trials = trials(&mut c, "asha").await;
    let pruned: Vec<&pb::Trial> = trials.iter().filter(|t| t.state == pb::TrialState::Pruned as i32).collect();
    assert!(!pruned.is_empty(), "ASHA pruned nothing");
    for t in &pruned {
        // Pruned trials keep the metrics of the epoch they stopped at.
        let last = t.intermediate.iter().map(|e| e.epoch).max().unwrap();
        assert_eq!(t.value, t.intermediate.iter().find(|e| e.epoch == last).map(|e| e.metrics["eval_accuracy"]));
    }
    let full: u32 = trials
        .iter()
        .map(|t| match t.params["num_train_epochs"].kind {
            Some(pb::param_value::Kind::IntValue(n)) => n as u32,
            _ => 0,
        })
        .sum();
    assert!(spent < full, "ASHA saved no epochs ({spent} of {full})");
    let s = study(&mut c, "asha").await;
    assert_eq!(s.state, pb::StudyState::Completed as i32);
    assert_eq!(
        s.counts.unwrap().pruned as usize + s.counts.unwrap().completed as usize,
        24,
        "pruned trials count toward the budget"
    );
    server.shutdown().await;
}
