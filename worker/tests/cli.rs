//! The `bertsweep-worker train` command line on a tiny random BERT: JSON lines per epoch,
//! an exported directory, a sentence-pair task, and one-line errors with exit status 1.

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

/// A sentence-pair task for the tiny BERT (`sentence1`, `sentence2`, `label` CSV): the label is
/// the polarity of the second text's opinion word; the first text carries an independent one,
/// so a model must tell the segments apart.
fn write_tiny_pair_task(dir: &std::path::Path, n_train: usize, n_dev: usize) -> (String, String) {
    const WORDS: &[(&str, u8)] = &[("good", 1), ("great", 1), ("fun", 1), ("bad", 0), ("awful", 0), ("boring", 0)];
    let write = |name: &str, range: std::ops::Range<usize>| {
        let mut text = String::from("sentence1,sentence2,label\n");
        for i in range {
            let (first, _) = WORDS[(i * 7 / 3) % WORDS.len()];
            let (second, label) = WORDS[i % WORDS.len()];
            let subject = ["the movie", "the film", "the plot", "the acting"][(i / 6) % 4];
            text.push_str(&format!("{subject} was {first} .,\"but the film is {second} , and\",{label}\n"));
        }
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    };
    (write("pairs-train.csv", 0..n_train), write("pairs-dev.csv", 1000..1000 + n_dev))
}

#[test]
fn train_learns_a_sentence_pair_task() {
    let dir = tempfile::tempdir().unwrap();
    let model = write_tiny_bert(&dir.path().join("model"), 2).unwrap().display().to_string();
    let (train, dev) = write_tiny_pair_task(dir.path(), 96, 36);
    let mut args = tiny_args(&model, &train, &dev);
    args.extend(["--text-column", "sentence1", "--text-pair-column", "sentence2", "--max-seq-length", "12"]);
    args.extend(["--epochs", "6", "--batch-size", "8", "--warmup-ratio", "0.1", "--seed", "1", "--json"]);
    let output = worker(&args);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let stdout = String::from_utf8(output.stdout).unwrap();
    let epochs: Vec<serde_json::Value> = stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let accuracy = epochs[5]["eval_accuracy"].as_f64().unwrap();
    assert!(accuracy >= 0.9, "{stdout}");

    // A pair column the file lacks: one line naming the file and the column.
    let mut args = tiny_args(&model, &train, &dev);
    args.extend(["--text-column", "sentence1", "--text-pair-column", "question"]);
    let output = worker(&args);
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("pairs-train.csv:1: no column \"question\""), "{stderr}");
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
