//! Models in object storage: a worker started with `--artifacts s3://…` writes the kept model
//! to a real S3-compatible server (moto, started by the test) with the standard AWS variables,
//! the trial names its URL, `bertsweep best` shows it, and `bertsweep download` brings it back
//! verified. A trial outside the study's top K writes nothing there.

use std::time::Duration;

use bertsweep_tests::*;

#[test]
fn a_worker_writes_the_kept_model_to_s3_and_download_fetches_it() {
    let Some(model) = minilm_dir() else { panic!("the MiniLM checkpoint is missing: run `make setup`") };
    let moto = Moto::start();
    moto.create_bucket("models");
    let dir = tempfile::tempdir().unwrap();
    let mut coordinator = Coordinator::start(&dir.path().join("c.db"), "30s");
    coordinator.client_env = moto.env();
    let root = workspace_root();
    let study = dir.path().join("s3.toml");
    std::fs::write(
        &study,
        format!(
            "name = \"s3\"\n[objective]\nmetric = \"eval_accuracy\"\n[algorithm]\nsampler = \"grid\"\n[budget]\nkeep_artifacts = 1\n[task]\nmodel = \"{}\"\ntrain_file = \"{}\"\nvalidation_file = \"{}\"\nmax_seq_length = 32\nmax_train_samples = 32\n[parameters.learning_rate]\nvalues = [1e-7, 5e-5]\n[parameters.num_train_epochs]\nvalue = 1\n",
            model.display(),
            root.join("examples/data/reviews-train.tsv").display(),
            root.join("examples/data/reviews-dev.tsv").display()
        ),
    )
    .unwrap();
    let created = coordinator.cli(&["study", "create", study.to_str().unwrap()]);
    assert!(created.status.success(), "{}", String::from_utf8_lossy(&created.stderr));

    let log = dir.path().join("worker.log");
    let mut worker = std::process::Command::new(binary("bertsweep-worker"))
        .envs(moto.env())
        .args(["--coordinator", &coordinator.url, "--device", "cpu", "--threads", "1", "--study", "s3"])
        .args(["--artifacts", "s3://models/sweeps"])
        .arg("--cache-dir")
        .arg(dir.path().join("cache"))
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::fs::File::create(log.with_extension("err")).unwrap())
        .spawn()
        .unwrap();
    let state = eventually("the study to end", Duration::from_secs(600), || {
        let s = coordinator.study_state("s3");
        (s != "RUNNING" && !s.is_empty()).then_some(s)
    });
    let _ = worker.wait();
    let err = std::fs::read_to_string(log.with_extension("err")).unwrap_or_default();
    assert_eq!(state, "COMPLETED", "{err}");
    let trials = coordinator.trials("s3");
    let urls: Vec<&str> = trials.iter().filter_map(|t| t["artifact"].as_str()).collect();
    // Trial 0 completes first (kept); trial 1 is kept too only if it is at least as good.
    assert!(!urls.is_empty() && urls.iter().all(|u| u.starts_with("s3://models/sweeps/s3/")), "{trials:?}");

    let best = coordinator.cli(&["best", "s3"]);
    assert!(String::from_utf8_lossy(&best.stdout).contains("s3://models/sweeps/s3/"), "{best:?}");
    let target = dir.path().join("best-model");
    let out = coordinator.cli(&["download", "s3", target.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("from s3://models/sweeps/s3/"));
    for f in ["config.json", "model.safetensors", "vocab.txt"] {
        assert!(target.join(f).is_file(), "{f} downloaded");
    }
}
