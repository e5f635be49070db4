//! End to end on real data: `bertsweep serve` + 2 CPU workers run a 4-trial grid
//! (learning_rate {3e-5, 5e-5} × batch {16, 32}, 2 epochs) with MiniLM on the first 1,000
//! SST-2 training sentences and the full dev set. Every trial completes, the best reaches
//! eval_accuracy > 0.75 (PyTorch + transformers: 0.78–0.79 on exactly this), and `best`
//! prints it with its bootstrap interval, per-class scores, confusion matrix, the verdict
//! against the runner-up, and its held-out test scores (the dev file doubles as the test file,
//! so they must match the dev scores exactly). Skipped with a reason when SST2_DIR or the checkpoint is missing.

use std::time::Duration;

use bertsweep_tests::*;

#[test]
fn four_trial_grid_on_sst2_with_two_workers() {
    let Some(sst2) = sst2_dir() else {
        return skip("SST2_DIR is not set or has no train.tsv (.ci/run and `make test` set it)");
    };
    let Some(model) = minilm_dir() else { return skip("no MiniLM checkpoint; run `make setup`") };
    let dir = tempfile::tempdir().unwrap();
    let coordinator = Coordinator::start(&dir.path().join("sweep.db"), "30s");
    let path = |file: &str| sst2.join(file).display().to_string();
    let file = StudyFile::reviews("sst2-e2e", &model)
        .inputs(&model.display().to_string(), &path("train.tsv"), &path("dev.tsv"))
        .budget("parallel_trials = 2")
        .budget("max_attempts = 2")
        .task("max_seq_length = 128")
        .task(&format!("max_train_samples = 1000\ntest_file = \"{}\"", path("dev.tsv")))
        .parameter("learning_rate", "values = [3e-5, 5e-5]")
        .parameter("per_device_train_batch_size", "values = [16, 32]")
        .parameter("num_train_epochs", "value = 2")
        .write_in(dir.path());
    let created = coordinator.cli(&["study", "create", file.to_str().unwrap()]);
    assert!(created.status.success(), "{}", String::from_utf8_lossy(&created.stderr));

    let artifacts = dir.path().join("artifacts");
    let mut workers: Vec<_> =
        (1..=2).map(|i| coordinator.worker("sst2-e2e", &artifacts, &dir.path().join(format!("w{i}.log")))).collect();
    let state = eventually("the study to end", Duration::from_secs(1500), || {
        let s = coordinator.study_state("sst2-e2e");
        (s != "RUNNING").then_some(s)
    });
    for w in &mut workers {
        let status = w.wait().unwrap();
        assert!(status.success(), "workers exit cleanly once their study has ended");
    }
    assert_eq!(state, "COMPLETED");
    let trials = coordinator.trials("sst2-e2e");
    assert_eq!(trials.len(), 4);
    for t in &trials {
        assert_eq!(t["state"], "COMPLETED", "{t}");
        assert_eq!(t["epochs"].as_array().unwrap().len(), 2, "one report per epoch: {t}");
        for m in [
            "eval_accuracy",
            "eval_f1",
            "eval_precision",
            "eval_recall",
            "eval_loss",
            "train_loss",
            "train_samples_per_second",
        ] {
            assert!(t["epochs"][0]["metrics"].get(m).is_some(), "epoch metrics lack {m}: {t}");
        }
        // The best epoch's dev-set predictions reached the coordinator: an interval around
        // the value, per-class scores and a confusion matrix over all 872 dev sentences.
        let e = &t["evaluation"];
        assert_eq!(e["examples"], 872, "{t}");
        let value = t["value"].as_f64().unwrap();
        let (low, high) = (e["value_interval"]["low"].as_f64().unwrap(), e["value_interval"]["high"].as_f64().unwrap());
        assert!(low <= value && value <= high && high - low < 0.1, "{value} in [{low}, {high}]");
        assert_eq!(e["classes"].as_array().unwrap().len(), 2, "{e}");
        let cells: Vec<u64> = e["confusion_matrix"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|r| r.as_array().unwrap().iter().map(|c| c.as_u64().unwrap()))
            .collect();
        assert_eq!(cells.iter().sum::<u64>(), 872);
        assert!(((cells[0] + cells[3]) as f64 / 872.0 - t["metrics"]["eval_accuracy"].as_f64().unwrap()).abs() < 1e-9);
        // The dev file doubles as the test file here: a kept model's test scores are then its
        // best epoch's dev scores exactly (the test file was uploaded, fetched and scored).
        if let Some(test) = t["test_metrics"].as_object() {
            for (name, value) in test {
                let dev = &t["metrics"][name.replacen("test_", "eval_", 1)];
                assert_eq!(value, dev, "{name} of trial {}", t["number"]);
            }
        }
        let artifact = t["artifact"].as_str().expect("artifact path");
        assert!(std::path::Path::new(artifact).join("model.safetensors").exists(), "{artifact}");
        assert!(std::path::Path::new(artifact).join("config.json").exists());
    }
    let tested = trials.iter().filter(|t| t["test_metrics"].is_object()).count();
    assert!(tested >= 3, "the kept models (budget.keep_artifacts = 3) are scored on the test file: {tested}");
    let best = coordinator.cli(&["best", "sst2-e2e", "--format", "json"]);
    assert!(best.status.success());
    let best: serde_json::Value = serde_json::from_slice(&best.stdout).unwrap();
    let accuracy = best["metrics"]["eval_accuracy"].as_f64().unwrap();
    eprintln!("best trial {} eval_accuracy {accuracy:.4} params {}", best["number"], best["params"]);
    assert!(accuracy > 0.75, "best eval_accuracy {accuracy} <= 0.75");
    let table = String::from_utf8_lossy(&coordinator.cli(&["best", "sst2-e2e"]).stdout).to_string();
    assert!(table.contains("metric eval_accuracy") && table.contains(&format!("{accuracy:.4}")), "{table}");
    // Best against the runner-up: a paired bootstrap verdict, in words.
    let verdict = best["comparison"]["verdict"].as_str().expect("a comparison");
    assert!(["better", "tied within noise"].contains(&verdict), "{best}");
    assert_eq!(best["selection_optimism"]["accuracy"], 0.0, "dev and test are the same file here: {best}");
    assert!(
        table.contains("held-out test set")
            && table.contains("vs runner-up")
            && table.contains("confusion matrix")
            && table.contains("value 95% CI"),
        "{table}"
    );
}
