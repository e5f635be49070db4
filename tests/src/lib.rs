//! Helpers shared by the end-to-end tests in `tests/tests/`: locating the built binaries, the
//! MiniLM checkpoint and the SST-2 files, starting `bertsweep serve` and workers as real
//! processes, and polling with deadlines.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The workspace root (this crate lives in `<root>/tests`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_path_buf()
}

/// A binary built by `cargo test --workspace` next to this test executable.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is not built; run `cargo test --workspace` (or `cargo build -p bertsweep-coordinator -p bertsweep-worker`) first",
        path.display()
    );
    path
}

/// The MiniLM checkpoint: $BERTSWEEP_MODEL_DIR, else `.venv/minilm` (made by `make setup`).
pub fn minilm_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("BERTSWEEP_MODEL_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join(".venv/minilm"));
    dir.join("config.json").exists().then_some(dir)
}

/// The SST-2 directory from $SST2_DIR (set by .ci/run and the Makefile).
pub fn sst2_dir() -> Option<PathBuf> {
    let dir = PathBuf::from(std::env::var_os("SST2_DIR")?);
    dir.join("train.tsv").exists().then_some(dir)
}

/// A running `bertsweep serve`, killed on drop.
pub struct Coordinator {
    /// The `bertsweep serve` process; public so tests can SIGKILL it or wait for its exit.
    pub child: Child,
    /// `http://ADDR`, or `https://ADDR` when started with TLS.
    pub url: String,
    /// Environment the CLI and workers started through this value get (CA, token file, …).
    pub client_env: Vec<(String, String)>,
    /// Command prefix the coordinator and the CLI run under (e.g. `ip netns exec NS`).
    pub prefix: Vec<String>,
}

/// `program`, run under `prefix` (its first word becomes the program when there is one).
pub fn command_in(prefix: &[String], program: &Path) -> Command {
    match prefix.split_first() {
        None => Command::new(program),
        Some((first, rest)) => {
            let mut c = Command::new(first);
            c.args(rest).arg(program);
            c
        }
    }
}

impl Coordinator {
    /// Starts a coordinator on a free port over `db`.
    pub fn start(db: &Path, lease_ttl: &str) -> Self {
        Self::start_on("127.0.0.1:0", db, lease_ttl)
    }

    /// Starts a coordinator on `listen` over `db` (appending to `<db>.log`).
    pub fn start_on(listen: &str, db: &Path, lease_ttl: &str) -> Self {
        Self::start_with(listen, db, lease_ttl, &[])
    }

    /// [`Coordinator::start_on`] with extra `serve` flags (`--tls-cert …` makes the URL https).
    pub fn start_with(listen: &str, db: &Path, lease_ttl: &str, extra: &[&str]) -> Self {
        Self::start_in(&[], listen, db, lease_ttl, extra)
    }

    /// [`Coordinator::start_with`] under a command prefix (another network namespace).
    pub fn start_in(prefix: &[String], listen: &str, db: &Path, lease_ttl: &str, extra: &[&str]) -> Self {
        let log =
            std::fs::OpenOptions::new().create(true).append(true).open(db.with_extension("log")).expect("log file");
        let mut child = command_in(prefix, &binary("bertsweep"))
            .args(["serve", "--listen", listen, "--lease-ttl", lease_ttl])
            .args(extra)
            .arg("--db")
            .arg(db)
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("start bertsweep serve");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("banner");
        let addr = line.split_whitespace().nth(4).unwrap_or_else(|| panic!("unexpected banner {line:?}")).to_string();
        let scheme = if extra.contains(&"--tls-cert") { "https" } else { "http" };
        Coordinator { child, url: format!("{scheme}://{addr}"), client_env: Vec::new(), prefix: prefix.to_vec() }
    }

    /// Runs a CLI verb against this coordinator.
    pub fn cli(&self, args: &[&str]) -> Output {
        self.cli_in(None, args)
    }

    /// Runs a CLI verb from `dir` (None: the current directory).
    pub fn cli_in(&self, dir: Option<&Path>, args: &[&str]) -> Output {
        let mut command = command_in(&self.prefix, &binary("bertsweep"));
        if let Some(dir) = dir {
            command.current_dir(dir);
        }
        command
            .env("BERTSWEEP_COORDINATOR", &self.url)
            .env_remove("BERTSWEEP_TOKEN")
            .env("RUST_LOG", "off")
            .envs(self.client_env.iter().map(|(k, v)| (k, v)))
            .args(args)
            .output()
            .expect("run bertsweep")
    }

    /// `trials NAME --format json`, parsed.
    pub fn trials(&self, study: &str) -> Vec<serde_json::Value> {
        let out = self.cli(&["trials", study, "--format", "json"]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice::<serde_json::Value>(&out.stdout).expect("json").as_array().cloned().unwrap_or_default()
    }

    /// The study's state from `study show --format json`.
    pub fn study_state(&self, study: &str) -> String {
        let out = self.cli(&["study", "show", study, "--format", "json"]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        v["state"].as_str().unwrap_or_default().to_string()
    }

    /// Starts a CPU worker for `study`, logging to `log`.
    pub fn worker(&self, study: &str, artifacts: &Path, log: &Path) -> Child {
        self.worker_with(&["--study", study], artifacts, log)
    }

    /// Starts a CPU worker with extra flags (`--study NAME`, `--max-trials N`, …).
    pub fn worker_with(&self, extra: &[&str], artifacts: &Path, log: &Path) -> Child {
        Command::new(binary("bertsweep-worker"))
            .envs(self.client_env.iter().map(|(k, v)| (k, v)))
            .args(["--coordinator", &self.url, "--device", "cpu", "--threads", "1"])
            .args(extra)
            .arg("--artifacts")
            .arg(artifacts)
            .arg("--cache-dir")
            .arg(artifacts.with_file_name("worker-cache"))
            .current_dir(workspace_root())
            .stdout(std::fs::File::create(log).expect("log"))
            .stderr(std::fs::File::create(log.with_extension("err")).expect("log"))
            .spawn()
            .expect("start bertsweep-worker")
    }
}

impl Drop for Coordinator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `check` every 100 ms until it returns Some or `timeout` passes.
pub fn eventually<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A running `moto_server` (the S3-compatible server from the project's .venv), killed on drop.
pub struct Moto {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
}

/// Whether an HTTP server answers `GET /` on `port` with a 2xx status (a listening port alone
/// could be another process's).
fn answers_http(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else { return false };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    if stream.write_all(b"GET / HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.") && head[9] == b'2'
}

impl Moto {
    /// Starts moto_server on a free port and waits until it answers HTTP. The port is picked
    /// by binding port 0 and releasing it, so another process may take it first: a server that
    /// exits while starting is started again on another port.
    pub fn start() -> Moto {
        let bin = workspace_root().join(".venv/bin/moto_server");
        assert!(bin.exists(), "{} is missing: run `make setup` (it installs moto[server])", bin.display());
        for _ in 0..3 {
            let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
            let child = Command::new(&bin)
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start moto_server");
            let mut moto = Moto { child, endpoint: format!("http://127.0.0.1:{port}") };
            let up = eventually("moto_server to start or exit", Duration::from_secs(60), || {
                if let Ok(Some(_)) = moto.child.try_wait() {
                    return Some(false);
                }
                answers_http(port).then_some(true)
            });
            if up {
                return moto;
            }
        }
        panic!("moto_server exited while starting, three times");
    }

    /// Creates a bucket (path-style PUT; object_store does not create buckets), retrying for
    /// a while: moto may still be setting up when it first answers.
    pub fn create_bucket(&self, bucket: &str) {
        eventually(&format!("creating bucket {bucket}"), Duration::from_secs(30), || {
            Command::new(workspace_root().join(".venv/bin/python"))
                .args(["-c", "import sys, urllib.request as u; u.urlopen(u.Request(sys.argv[1], method='PUT')).read()"])
                .arg(format!("{}/{bucket}", self.endpoint))
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
                .then_some(())
        });
    }

    /// The variables an S3 client needs to use this server.
    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("AWS_ENDPOINT", self.endpoint.as_str()),
            ("AWS_ALLOW_HTTP", "true"),
            ("AWS_ACCESS_KEY_ID", "testing"),
            ("AWS_SECRET_ACCESS_KEY", "testing"),
            ("AWS_REGION", "us-east-1"),
            ("AWS_VIRTUAL_HOSTED_STYLE_REQUEST", "false"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Prints why a test is skipped (visible with --nocapture and in CI logs).
pub fn skip(reason: &str) {
    eprintln!("SKIPPED: {reason}");
}

/// A one-trial study named `name` whose model does not exist, so any worker that leases the
/// trial fails it at once (max_attempts = 1). Returns the study file written in `dir`.
pub fn unrunnable_study(dir: &Path, name: &str) -> PathBuf {
    let file = dir.join(format!("{name}.toml"));
    let text = format!(
        "name = \"{name}\"\n[objective]\nmetric = \"eval_accuracy\"\n[budget]\nmax_attempts = 1\n[task]\nmodel = \"worker:{missing}\"\ntrain_file = \"worker:/t.tsv\"\nvalidation_file = \"worker:/d.tsv\"\n[parameters.learning_rate]\nvalue = 3e-5\n",
        missing = dir.join("no-such-model").display()
    );
    std::fs::write(&file, text).expect("write study file");
    file
}

/// A grid study file for the end-to-end tests, built from its varying parts; everything not
/// set is the tests' common ground (objective eval_accuracy, grid sampler).
#[derive(Debug, Clone)]
pub struct StudyFile {
    name: String,
    budget: Vec<String>,
    inputs: [String; 3],
    task: Vec<String>,
    parameters: Vec<String>,
}

impl StudyFile {
    /// A study named `name` on the project's demo reviews with model `model`.
    pub fn reviews(name: &str, model: &Path) -> Self {
        let root = workspace_root();
        let data = |file: &str| root.join("examples/data").join(file).display().to_string();
        StudyFile {
            name: name.to_string(),
            budget: Vec::new(),
            inputs: [model.display().to_string(), data("reviews-train.tsv"), data("reviews-dev.tsv")],
            task: Vec::new(),
            parameters: Vec::new(),
        }
    }

    /// `task.model`, `task.train_file` and `task.validation_file` as written.
    pub fn inputs(mut self, model: &str, train_file: &str, validation_file: &str) -> Self {
        self.inputs = [model.to_string(), train_file.to_string(), validation_file.to_string()];
        self
    }

    /// One `[budget]` line, e.g. `"parallel_trials = 2"`.
    pub fn budget(mut self, line: &str) -> Self {
        self.budget.push(line.to_string());
        self
    }

    /// One further `[task]` line, e.g. `"max_seq_length = 32"`.
    pub fn task(mut self, line: &str) -> Self {
        self.task.push(line.to_string());
        self
    }

    /// A searched or fixed parameter: `value` is the body line, e.g. `"values = [16, 32]"`.
    pub fn parameter(mut self, name: &str, value: &str) -> Self {
        self.parameters.push(format!("[parameters.{name}]\n{value}"));
        self
    }

    /// Writes the study as `dir/<name>.toml` and returns its path.
    pub fn write_in(&self, dir: &Path) -> PathBuf {
        let file = dir.join(format!("{}.toml", self.name));
        std::fs::write(&file, self.to_string()).expect("write study file");
        file
    }
}

impl std::fmt::Display for StudyFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let [model, train, dev] = &self.inputs;
        writeln!(
            f,
            "name = \"{}\"\n[objective]\nmetric = \"eval_accuracy\"\n[algorithm]\nsampler = \"grid\"",
            self.name
        )?;
        writeln!(f, "[budget]")?;
        self.budget.iter().try_for_each(|line| writeln!(f, "{line}"))?;
        writeln!(f, "[task]\nmodel = \"{model}\"\ntrain_file = \"{train}\"\nvalidation_file = \"{dev}\"")?;
        self.task.iter().try_for_each(|line| writeln!(f, "{line}"))?;
        self.parameters.iter().try_for_each(|table| writeln!(f, "{table}"))
    }
}

/// A one-trial study named `name` on the project's demo reviews: MiniLM, 160 training rows,
/// 3 epochs (time enough to interrupt it mid-way). Returns the study file written in `dir`.
pub fn one_trial_review_study(dir: &Path, name: &str, model: &Path, max_attempts: u32) -> PathBuf {
    StudyFile::reviews(name, model)
        .budget("parallel_trials = 1")
        .budget(&format!("max_attempts = {max_attempts}"))
        .task("max_seq_length = 64")
        .task("max_train_samples = 160")
        .parameter("learning_rate", "value = 5e-5")
        .parameter("per_device_train_batch_size", "value = 16")
        .parameter("num_train_epochs", "value = 3")
        .write_in(dir)
}
