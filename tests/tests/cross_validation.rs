//! K-fold cross-validation end to end: `bertsweep serve` + 2 CPU workers run a study with
//! `[evaluation] folds = 3` and no validation file on the first 240 demo reviews (MiniLM, two
//! learning rates, one epoch). Each configuration runs once per fold; every fold validates on
//! its own 80 reviews, the three folds together on all 240 exactly once; configurations are
//! ranked by their mean over folds, and `best` compares them fold by fold and says which fold's
//! model it hands back. Skipped with a reason when the checkpoint is missing.

use std::collections::BTreeMap;
use std::time::Duration;

use bertsweep_tests::*;

#[test]
fn three_folds_validate_every_training_row_once_and_rank_by_the_mean() {
    let Some(model) = minilm_dir() else { return skip("no MiniLM checkpoint; run `make setup`") };
    let dir = tempfile::tempdir().unwrap();
    let coordinator = Coordinator::start(&dir.path().join("cv.db"), "30s");
    let train = workspace_root().join("examples/data/reviews-train.tsv");
    let study = format!(
        "name = \"cv\"\n[objective]\nmetric = \"eval_accuracy\"\n[algorithm]\nsampler = \"grid\"\nseed = 4\n\
         [evaluation]\nfolds = 3\n[budget]\nparallel_trials = 2\n[task]\nmodel = \"{}\"\ntrain_file = \"{}\"\n\
         max_seq_length = 64\nmax_train_samples = 240\n[parameters.learning_rate]\nvalues = [5e-5, 2e-4]\n\
         [parameters.num_train_epochs]\nvalue = 1\n[parameters.per_device_train_batch_size]\nvalue = 16\n",
        model.display(),
        train.display()
    );
    let file = dir.path().join("cv.toml");
    std::fs::write(&file, study).unwrap();
    let created = coordinator.cli(&["study", "create", file.to_str().unwrap()]);
    assert!(created.status.success(), "{}", String::from_utf8_lossy(&created.stderr));

    let artifacts = dir.path().join("artifacts");
    let mut workers: Vec<_> =
        (1..=2).map(|i| coordinator.worker("cv", &artifacts, &dir.path().join(format!("w{i}.log")))).collect();
    let state = eventually("the study to end", Duration::from_secs(900), || {
        let s = coordinator.study_state("cv");
        (s != "RUNNING").then_some(s)
    });
    for w in &mut workers {
        assert!(w.wait().unwrap().success());
    }
    assert_eq!(state, "COMPLETED");

    let trials = coordinator.trials("cv");
    assert_eq!(trials.len(), 6, "2 configurations × 3 folds");
    // Per learning rate: its folds, each fold's dev-set size, and its values.
    let mut by_config: BTreeMap<String, Vec<(i64, u64, f64)>> = BTreeMap::new();
    for t in &trials {
        assert_eq!(t["state"], "COMPLETED", "{t}");
        let fold = t["params"]["fold"].as_i64().expect("a fold parameter");
        let examples = t["evaluation"]["examples"].as_u64().expect("dev-set predictions of the fold");
        by_config.entry(t["params"]["learning_rate"].to_string()).or_default().push((
            fold,
            examples,
            t["value"].as_f64().unwrap(),
        ));
    }
    for (lr, mut runs) in by_config {
        runs.sort_by_key(|r| r.0);
        assert_eq!(runs.iter().map(|r| r.0).collect::<Vec<_>>(), [0, 1, 2], "lr {lr}");
        assert_eq!(runs.iter().map(|r| r.1).collect::<Vec<_>>(), [80, 80, 80], "stratified folds of 240 rows");
    }

    let best = coordinator.cli(&["best", "cv", "--format", "json"]);
    assert!(best.status.success(), "{}", String::from_utf8_lossy(&best.stderr));
    let best: serde_json::Value = serde_json::from_slice(&best.stdout).unwrap();
    let config = &best["config"];
    let folds_of_best: Vec<f64> = trials
        .iter()
        .filter(|t| t["params"]["learning_rate"] == best["params"]["learning_rate"])
        .map(|t| t["value"].as_f64().unwrap())
        .collect();
    let mean = folds_of_best.iter().sum::<f64>() / 3.0;
    assert!((config["mean"].as_f64().unwrap() - mean).abs() < 1e-12, "ranked by the mean over folds: {best}");
    // The two configurations are compared fold by fold (the same 80 reviews on each side).
    let verdict = best["comparison"]["verdict"].as_str().unwrap_or_else(|| panic!("no comparison: {best}"));
    assert!(["better", "tied within noise"].contains(&verdict));
    let table = String::from_utf8_lossy(&coordinator.cli(&["best", "cv"]).stdout).to_string();
    assert!(table.contains("cross-validation") && table.contains("fold"), "{table}");
    let listing = String::from_utf8_lossy(&coordinator.cli(&["trials", "cv"]).stdout).to_string();
    assert!(listing.contains("configurations ranked by mean over seeds and folds"), "{listing}");
}
