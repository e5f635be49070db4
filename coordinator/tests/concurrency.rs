//! 200 concurrent fake workers: parallel_trials is never exceeded and every grid point is
//! handed out exactly once.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bertsweep_proto::v1 as pb;
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_workers_respect_parallel_trials_and_see_each_point_once() {
    const WORKERS: usize = 200;
    const PARALLEL: usize = 16;
    let server = TestServer::start(Duration::from_secs(30)).await;
    let mut c = server.client().await;
    // 150 learning rates × 2 batch sizes = 300 grid points.
    let created =
        create(&mut c, &study_toml("crowd", &format!("parallel_trials = {PARALLEL}"), &grid_params(150))).await;
    assert_eq!(created.max_trials, 300);

    let holding = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let seen: Arc<Mutex<HashMap<String, u32>>> = Arc::default();
    let mut tasks = Vec::new();
    for _ in 0..WORKERS {
        let url = server.url.clone();
        let (holding, peak, seen) = (holding.clone(), peak.clone(), seen.clone());
        tasks.push(tokio::spawn(async move {
            // Each fake worker has its own connection, as real workers do.
            let mut c = bertsweep_proto::v1::coordinator_client::CoordinatorClient::connect(url).await.unwrap();
            let w = register(&mut c).await;
            let mut done = 0;
            while let Some(a) = acquire(&mut c, &w, 2000).await {
                let now = holding.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(now, Ordering::SeqCst);
                *seen.lock().unwrap().entry(param_key(&a.params)).or_default() += 1;
                report(&mut c, &a, 1, 0.5).await.unwrap();
                tokio::task::yield_now().await;
                holding.fetch_sub(1, Ordering::SeqCst);
                complete(&mut c, &a, 0.6).await.unwrap();
                done += 1;
            }
            done
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    assert_eq!(total, 300);
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 300, "every grid point handed out");
    assert!(seen.values().all(|&n| n == 1), "no grid point handed out twice");
    let peak = peak.load(Ordering::SeqCst);
    assert!(peak <= PARALLEL, "peak concurrency {peak} exceeds parallel_trials {PARALLEL}");
    let s = study(&mut c, "crowd").await;
    assert_eq!(s.state, pb::StudyState::Completed as i32);
    assert_eq!(s.counts.unwrap().completed, 300);
    server.shutdown().await;
}
