//! The `bertsweep-worker train` command line on a tiny random BERT: JSON lines per epoch,
//! an exported directory, and one-line errors with exit status 1.

use std::process::{Command, Output};

use bertsweep_worker::testing::{write_tiny_bert, write_tiny_task};

fn worker(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_bertsweep-worker")).args(args).output().expect("run the worker binary")
}

fn tiny_args<'a>(model: &'a str, train: &'a str, dev: &'a str) -> Vec<&'a str> {
    vec![
        "train",
        "--model",
        model,
        "--train-file",
        train,
        "--validation-file",
        dev,
        "--learning-rate",
        "3e-3",
        "--threads",
        "1",
    ]
}

#[test]
fn train_prints_json_lines_and_exports() {
    let dir = tempfile::tempdir().unwrap();
    let model = write_tiny_bert(&dir.path().join("model"), 2).unwrap();
    let (train, dev) = write_tiny_task(dir.path(), 32, 8).unwrap();
    let out = dir.path().join("out");
    let (model, train, dev, out_s) = (
        model.display().to_string(),
        train.display().to_string(),
        dev.display().to_string(),
        out.display().to_string(),
    );
    let mut args = tiny_args(&model, &train, &dev);
    args.extend(["--epochs", "2", "--batch-size", "8", "--json", "--output", &out_s, "--group-by-length"]);
    let output = worker(&args);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let stdout = String::from_utf8(output.stdout).unwrap();
    let lines: Vec<serde_json::Value> = stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 3, "{stdout}");
    assert_eq!(lines[0]["epoch"], 1.0);
    assert!(lines[1]["eval_accuracy"].is_number() && lines[1]["train_samples_per_second"].is_number());
    assert_eq!(lines[2]["artifact"], out_s.as_str());
    assert!(out.join("model.safetensors").is_file() && out.join("config.json").is_file());
}

#[test]
fn errors_are_one_line_with_exit_status_1() {
    let dir = tempfile::tempdir().unwrap();
    let model = write_tiny_bert(&dir.path().join("model"), 2).unwrap();
    let (train, dev) = write_tiny_task(dir.path(), 8, 4).unwrap();
    let (model, train, dev) = (model.display().to_string(), train.display().to_string(), dev.display().to_string());

    let missing = dir.path().join("missing.tsv").display().to_string();
    let output = worker(&tiny_args(&model, &missing, &dev));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("error: fine-tuning") && stderr.contains("missing.tsv"), "{stderr}");

    if !tch::Cuda::is_available() {
        let mut args = tiny_args(&model, &train, &dev);
        args.extend(["--device", "cuda"]);
        let output = worker(&args);
        let stderr = String::from_utf8(output.stderr).unwrap();
        assert_eq!(output.status.code(), Some(1));
        assert_eq!(
            stderr.trim(),
            "error: --device cuda: CUDA is not available on this machine (torch reports 0 devices); use --device cpu"
        );
    }

    // Local checkpoints need a local artifact directory; refused before connecting anywhere.
    let output = worker(&["--coordinator", "http://127.0.0.1:9", "--local-checkpoints"]);
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("--local-checkpoints needs --artifacts DIR"), "{stderr}");

    let output = worker(&["frobnicate"]);
    assert_eq!(output.status.code(), Some(2), "clap usage errors exit 2");
}
