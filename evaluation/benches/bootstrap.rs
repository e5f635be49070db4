//! What an interval and a paired comparison cost the coordinator, next to the same 1,000
//! resamples done the usual Python way (numpy draws, scikit-learn metrics) on the same data.
//!
//! Prints one JSON line per case: `{"case", "examples", "classes", "metric", "bertsweep_ms",
//! "reference_ms"}`. The data are synthetic (seeded) sets of SST-2's dev size (872 × 2) and
//! MNLI-matched's (9,815 × 3); the reference runs when `BENCH_PYTHON` (default `.venv/bin/python`)
//! has numpy and scikit-learn, else `reference_ms` is null.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Instant;

use bertsweep_evaluation::{confidence_interval, paired_comparison, Predictions, Run};

/// A seeded set: labels uniform over the classes (drawn from `label_seed`), probabilities
/// leaning to the label (from `seed`).
fn synthetic(n: usize, classes: usize, skill: f32, seed: u64) -> Predictions {
    synthetic_on(n, classes, skill, 1, seed)
}

/// A seeded xorshift stream of uniform values in [0, 1).
fn uniform(seed: u64) -> impl FnMut() -> f32 {
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 40) as f32 / (1u64 << 24) as f32
    }
}

fn synthetic_on(n: usize, classes: usize, skill: f32, label_seed: u64, seed: u64) -> Predictions {
    let (mut next_label, mut next) = (uniform(label_seed), uniform(seed));
    let mut labels = Vec::with_capacity(n);
    let mut probabilities = Vec::with_capacity(n * classes);
    for _ in 0..n {
        let y = ((next_label() * classes as f32) as usize).min(classes - 1);
        let row: Vec<f32> = (0..classes).map(|k| next() + if k == y { skill } else { 0.0 }).collect();
        let total: f32 = row.iter().sum();
        probabilities.extend(row.iter().map(|p| p / total));
        labels.push(y as u32);
    }
    Predictions::new(classes, labels, probabilities, vec![]).expect("valid synthetic set")
}

fn millis(f: impl FnOnce()) -> f64 {
    let started = Instant::now();
    f();
    started.elapsed().as_secs_f64() * 1e3
}

/// The same 1,000 resamples in numpy + scikit-learn, timed inside Python.
fn reference(p: &Predictions, metric: &str) -> Option<f64> {
    let python = std::env::var("BENCH_PYTHON").unwrap_or_else(|_| ".venv/bin/python".into());
    let script = r#"
import sys, time, json
import numpy as np
from sklearn.metrics import accuracy_score, roc_auc_score
d = json.load(sys.stdin)
y = np.array(d["labels"]); p = np.array(d["probabilities"], dtype=np.float64).reshape(len(y), d["classes"])
rng = np.random.default_rng(0)
start = time.perf_counter()
for _ in range(1000):
    i = rng.integers(0, len(y), len(y))
    if d["metric"] == "eval_accuracy":
        accuracy_score(y[i], p[i].argmax(axis=1))
    elif d["classes"] == 2:
        roc_auc_score(y[i], p[i][:, 1])
    else:
        roc_auc_score(y[i], p[i], multi_class="ovr", average="macro")
print((time.perf_counter() - start) * 1e3)
"#;
    let mut child = Command::new(python)
        .args(["-c", script])
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let input = format!(
        "{{\"classes\": {}, \"metric\": \"{metric}\", \"labels\": {:?}, \"probabilities\": {:?}}}",
        p.classes(),
        p.labels(),
        p.probabilities()
    );
    child.stdin.take()?.write_all(input.as_bytes()).ok()?;
    let out = child.wait_with_output().ok()?;
    String::from_utf8(out.stdout).ok()?.trim().parse().ok()
}

fn main() {
    for (case, n, classes) in [("sst2-dev", 872, 2), ("mnli-matched-dev", 9815, 3)] {
        let p = synthetic(n, classes, 0.6, 1);
        for metric in ["eval_accuracy", "eval_roc_auc"] {
            let ms = millis(|| {
                confidence_interval(&p, metric, 7).unwrap();
            });
            let line = serde_like(&[
                ("case", format!("\"interval {case}\"")),
                ("examples", n.to_string()),
                ("classes", classes.to_string()),
                ("metric", format!("\"{metric}\"")),
                ("bertsweep_ms", format!("{ms:.1}")),
                ("reference_ms", reference(&p, metric).map_or("null".into(), |r| format!("{r:.1}"))),
            ]);
            println!("{line}");
        }
        // best vs runner-up with three seeds each, paired by seed.
        let sets: Vec<Predictions> =
            (0..6).map(|s| synthetic_on(n, classes, if s < 3 { 0.62 } else { 0.6 }, 1, 2 + s)).collect();
        let runs = |range: std::ops::Range<usize>| -> Vec<Run<'_>> {
            range.map(|i| Run { fold: 0, seed: (i % 3) as u64, predictions: &sets[i] }).collect()
        };
        let (best, runner_up) = (runs(0..3), runs(3..6));
        let ms = millis(|| {
            paired_comparison(&best, &runner_up, "eval_accuracy", true, 7).unwrap();
        });
        println!(
            "{}",
            serde_like(&[
                ("case", format!("\"paired 3 seeds {case}\"")),
                ("examples", n.to_string()),
                ("classes", classes.to_string()),
                ("metric", "\"eval_accuracy\"".into()),
                ("bertsweep_ms", format!("{ms:.1}")),
                ("reference_ms", "null".into()),
            ])
        );
    }
}

fn serde_like(fields: &[(&str, String)]) -> String {
    let body: Vec<String> = fields.iter().map(|(k, v)| format!("\"{k}\": {v}")).collect();
    format!("{{{}}}", body.join(", "))
}
