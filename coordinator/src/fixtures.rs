//! Study files, databases and servers for tests and benchmarks.
//!
//! [`StudyToml`] builds every study file the coordinator's tests and benchmarks create, so a
//! change to the study format is made once. [`populate`] builds large databases in-process
//! through the real registry and store (the same operations and rows a running coordinator
//! makes), in seconds instead of the minutes 100,000 trial lifecycles take over gRPC.
//! [`ServeProcess`] runs the real `bertsweep` binary.

use std::fmt;

use tokio::sync::broadcast;

use crate::model::Metrics;
use crate::registry::{LeaseConfig, Registry, WriteOp};
use crate::spec::parse_study;
use crate::store::{Store, StoreError};

/// A study file built from the parts tests vary; everything else is the smallest valid study.
///
/// Defaults: the grid sampler without a seed, `objective.metric = "eval_accuracy"`, an empty
/// `[budget]` (so its defaults), inputs the workers open themselves (`worker:/models/m`,
/// `worker:/data/train.tsv`, `worker:/data/dev.tsv`) and no parameters; a study needs at least
/// one, so add some with [`StudyToml::parameters`]. `Display` renders the TOML.
#[derive(Debug, Clone)]
pub struct StudyToml {
    name: String,
    sampler: String,
    seed: Option<u64>,
    repeats: Option<u32>,
    budget: String,
    inputs: [String; 3],
    task: String,
    parameters: String,
    sections: String,
}

impl StudyToml {
    /// A grid study named `name` with the defaults above.
    pub fn new(name: &str) -> Self {
        StudyToml {
            name: name.to_string(),
            sampler: "grid".into(),
            seed: None,
            repeats: None,
            budget: String::new(),
            inputs: ["worker:/models/m".into(), "worker:/data/train.tsv".into(), "worker:/data/dev.tsv".into()],
            task: String::new(),
            parameters: String::new(),
            sections: String::new(),
        }
    }

    /// `algorithm.sampler`: `grid`, `random` or `tpe`.
    pub fn sampler(mut self, sampler: &str) -> Self {
        self.sampler = sampler.to_string();
        self
    }

    /// `algorithm.seed`.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// `algorithm.repeats`: each configuration runs with seeds 0..n.
    pub fn repeats(mut self, n: u32) -> Self {
        self.repeats = Some(n);
        self
    }

    /// Lines of the `[budget]` table, e.g. `"max_trials = 8\nparallel_trials = 2"`.
    pub fn budget(mut self, lines: &str) -> Self {
        self.budget = lines.trim_end().to_string();
        self
    }

    /// `task.model`, `task.train_file` and `task.validation_file`.
    pub fn inputs(mut self, model: &str, train_file: &str, validation_file: &str) -> Self {
        self.inputs = [model.to_string(), train_file.to_string(), validation_file.to_string()];
        self
    }

    /// Further lines of the `[task]` table, e.g. `"max_seq_length = 64"`.
    pub fn task(mut self, lines: &str) -> Self {
        self.task = lines.trim_end().to_string();
        self
    }

    /// Appends `[parameters.NAME]` tables.
    pub fn parameters(mut self, tables: &str) -> Self {
        self.parameters.push_str(tables.trim_end());
        self.parameters.push('\n');
        self
    }

    /// Appends other tables, e.g. `[early_stopping]`.
    pub fn section(mut self, tables: &str) -> Self {
        self.sections.push_str(tables.trim_end());
        self.sections.push('\n');
        self
    }
}

impl fmt::Display for StudyToml {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [model, train, validation] = &self.inputs;
        writeln!(f, "name = \"{}\"", self.name)?;
        writeln!(f, "[objective]\nmetric = \"eval_accuracy\"")?;
        writeln!(f, "[algorithm]\nsampler = \"{}\"", self.sampler)?;
        if let Some(seed) = self.seed {
            writeln!(f, "seed = {seed}")?;
        }
        if let Some(repeats) = self.repeats {
            writeln!(f, "repeats = {repeats}")?;
        }
        writeln!(f, "[budget]")?;
        if !self.budget.is_empty() {
            writeln!(f, "{}", self.budget)?;
        }
        writeln!(f, "[task]\nmodel = \"{model}\"\ntrain_file = \"{train}\"\nvalidation_file = \"{validation}\"")?;
        if !self.task.is_empty() {
            writeln!(f, "{}", self.task)?;
        }
        write!(f, "{}{}", self.parameters, self.sections)
    }
}

/// A random-search study file named `name` allowing `max_trials` trials of `epochs` epochs.
pub fn random_study(name: &str, max_trials: u32, epochs: u32) -> String {
    StudyToml::new(name)
        .sampler("random")
        .seed(0)
        .budget(&format!("max_trials = {max_trials}\nparallel_trials = {max_trials}"))
        .inputs("/models/minilm", "train.tsv", "dev.tsv")
        .parameters(SEARCH_SPACE)
        .parameters(&format!("[parameters.num_train_epochs]\nvalue = {epochs}"))
        .to_string()
}

/// Learning rate (log-uniform 1e-5–5e-5) × batch size {16, 32}: the README's example space.
pub const SEARCH_SPACE: &str = "[parameters.learning_rate]
distribution = \"log_uniform\"
min = 1e-5
max = 5e-5
[parameters.per_device_train_batch_size]
values = [16, 32]
";

/// The metrics a worker reports for an epoch (the Hugging Face names, realistic sizes).
pub fn epoch_metrics(trial: u32, epoch: u32) -> Metrics {
    let acc = 0.5 + ((trial * 7919 + epoch * 104_729) % 4000) as f64 / 10_000.0;
    [
        ("eval_accuracy", acc),
        ("eval_f1", acc - 0.01),
        ("eval_precision", acc + 0.01),
        ("eval_recall", acc - 0.02),
        ("eval_loss", 1.0 - acc),
        ("train_loss", 0.9 - acc / 2.0),
        ("epoch", epoch as f64),
        ("train_samples_per_second", 120.0),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// What to put in the database.
#[derive(Debug, Clone, Copy)]
pub struct Population {
    /// Studies with one completed trial each (named `s00000`, `s00001`, …).
    pub small_studies: u32,
    /// A study named `big` with this many completed trials (none when 0).
    pub big_trials: u32,
    /// Epochs each trial of `big` reports before completing.
    pub epochs: u32,
}

/// Creates (or extends) the database at `db_url` with `population`, through the registry's
/// own operations and the store's writer.
pub async fn populate(db_url: &str, population: Population) -> Result<(), StoreError> {
    let store = Store::open(db_url).await?;
    let snapshot = store.load().await?;
    let lease = LeaseConfig { ttl_ms: 3_600_000 };
    let mut registry = Registry::restore(snapshot, lease, 0)
        .map_err(|e| StoreError::Corrupt { table: "fixture", message: e.to_string() })?;
    let (events, _) = broadcast::channel(16);
    let writer = store.spawn_writer(events);
    let fixture = |e: crate::error::CoordinatorError| StoreError::Corrupt { table: "fixture", message: e.to_string() };
    let worker = registry.register_worker("fixture".into(), vec!["cpu".into()], "fixture".into(), 0);
    let mut ops: Vec<WriteOp> = worker.ops;
    let worker = worker.value;
    let mut pending = Vec::new();
    let mut flush = |ops: &mut Vec<WriteOp>, force: bool| {
        if force || ops.len() >= 50_000 {
            pending.push(writer.submit(std::mem::take(ops)));
        }
    };
    let mut run_study = |registry: &mut Registry,
                         ops: &mut Vec<WriteOp>,
                         name: &str,
                         trials: u32,
                         epochs: u32|
     -> Result<(), StoreError> {
        let text = random_study(name, trials, epochs.max(1));
        let spec = parse_study(&text).map_err(|e| fixture(e.into()))?;
        ops.extend(registry.create_study(spec, text, 1).map_err(fixture)?.ops);
        for n in 0..trials {
            let now = 2 + i64::from(n);
            let acquired = registry.acquire(&worker, Some(name), now).map_err(fixture)?;
            ops.extend(acquired.ops);
            let a = acquired
                .value
                .ok_or_else(|| fixture(crate::error::CoordinatorError::NotFound("no trial to lease".into())))?;
            for epoch in 1..=epochs {
                ops.extend(
                    registry
                        .report_progress(a.trial_id, a.lease_token, epoch, epoch_metrics(n, epoch), now)
                        .map_err(fixture)?
                        .ops,
                );
            }
            let last = epoch_metrics(n, epochs.max(1));
            ops.extend(registry.complete(a.trial_id, a.lease_token, last, String::new(), now).map_err(fixture)?.ops);
            flush(ops, false);
        }
        Ok(())
    };
    for i in 0..population.small_studies {
        run_study(&mut registry, &mut ops, &format!("s{i:05}"), 1, 1)?;
    }
    if population.big_trials > 0 {
        run_study(&mut registry, &mut ops, "big", population.big_trials, population.epochs)?;
    }
    flush(&mut ops, true);
    for commit in pending {
        commit.wait().await?;
    }
    writer.close().await;
    Ok(())
}

/// A `bertsweep serve` process on a free loopback port, killed (SIGKILL) on drop.
///
/// `RUST_LOG` of the process is `$BERTSWEEP_SERVE_LOG`, `warn` by default.
pub struct ServeProcess {
    /// The process.
    pub child: std::process::Child,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
}

impl ServeProcess {
    /// Starts `bin serve --listen 127.0.0.1:0 --db DB EXTRA…` and waits for its banner.
    /// Tests and benchmarks pass `env!("CARGO_BIN_EXE_bertsweep")` as `bin`.
    pub fn start(bin: &str, db: &std::path::Path, extra: &[&str]) -> std::io::Result<Self> {
        use std::io::BufRead;
        let mut child = std::process::Command::new(bin)
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(extra)
            .arg("--db")
            .arg(db)
            .env("RUST_LOG", std::env::var("BERTSWEEP_SERVE_LOG").unwrap_or_else(|_| "warn".into()))
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()?;
        let stdout = child.stdout.take().ok_or_else(|| std::io::Error::other("no stdout"))?;
        let mut line = String::new();
        std::io::BufReader::new(stdout).read_line(&mut line)?;
        // "bertsweep coordinator listening on ADDR (db …)"
        let addr = line
            .split_whitespace()
            .nth(4)
            .ok_or_else(|| std::io::Error::other(format!("unexpected banner {line:?}")))?;
        Ok(ServeProcess { url: format!("http://{addr}"), child })
    }

    /// Resident memory of the process in MiB (0 when it cannot be read).
    pub fn rss_mib(&self) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
            / 1024.0
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_study_files_parse() {
        let spec = parse_study(&random_study("r", 10, 2)).unwrap();
        assert_eq!((spec.budget.max_trials, spec.parameters.len()), (10, 3));
        let text = StudyToml::new("g")
            .budget("max_trials = 2")
            .task("max_seq_length = 64")
            .parameters("[parameters.per_device_train_batch_size]\nvalues = [8, 16]")
            .section("[early_stopping]\ntype = \"median\"")
            .to_string();
        let spec = parse_study(&text).unwrap();
        assert_eq!((spec.task.max_seq_length, spec.task.model.as_str()), (64, "worker:/models/m"));
        assert_eq!(spec.early_stopping.as_str(), "median");
    }
}
