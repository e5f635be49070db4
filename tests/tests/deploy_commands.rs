//! The command lines `deploy/` runs, run here for real, so that a renamed or removed flag, a
//! mistyped secret path or a broken job script fails the build.
//!
//! Each coordinator variant starts from its exact command line: the systemd unit (ExecStart
//! with %d, %S and its EnvironmentFile), Compose's `command:`, the Kubernetes StatefulSet's
//! `args:`, the image's ENTRYPOINT + CMD and the Slurm job script (run by bash with a stand-in
//! `srun`). Only paths, listen addresses and devices are substituted. Each serves TLS with a
//! token file, metrics and the dashboard (its API answers with the token and refuses without),
//! and passes its deployment's health check (Compose's `healthcheck`, the image's HEALTHCHECK,
//! the kubelet's plaintext gRPC probe); the Slurm one refuses to start without an explicit state
//! directory. Against the systemd one: workers from the Kubernetes Job and the Slurm array (each
//! pinned to a one-trial study) train and exit 0 when their study ends; the same two, stopped by
//! SIGTERM mid-trial, hand the trial back and exit 75 (the Job's podFailurePolicy retries it, the
//! Slurm script requeues its task through a stand-in scontrol); the KEDA ScaledJob's worker
//! leaves when idle; workers from the systemd template and Compose (a standing pool) share a
//! two-trial study, then stop on SIGTERM with 75. /metrics is scraped from the coordinator and
//! from a worker, and the best model is downloaded.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bertsweep_tests::*;
use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair};

/// How long a coordinator may take to print its addresses.
const STARTUP: Duration = Duration::from_secs(60);
/// How long a tiny study may take on a loaded 2-core machine.
const STUDY: Duration = Duration::from_secs(900);

/// Variables the test's own environment must not lend to the processes it starts.
const NOT_INHERITED: [&str; 12] = [
    "BERTSWEEP_COORDINATOR",
    "BERTSWEEP_TOKEN",
    "BERTSWEEP_TOKEN_FILE",
    "BERTSWEEP_CA_CERT",
    "BERTSWEEP_CLIENT_CERT",
    "BERTSWEEP_CLIENT_KEY",
    "BERTSWEEP_ARTIFACTS",
    "BERTSWEEP_CACHE_DIR",
    "BERTSWEEP_METRICS_LISTEN",
    "BERTSWEEP_HTTP_LISTEN",
    "BERTSWEEP_EXIT_WHEN_IDLE",
    "XDG_CACHE_HOME",
];

fn clean(command: &mut Command) -> &mut Command {
    for var in NOT_INHERITED {
        command.env_remove(var);
    }
    command
}

fn deploy_file(path: &str) -> String {
    let file = workspace_root().join("deploy").join(path);
    std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()))
}

/// The file with backslash-continued lines joined (Dockerfiles, units).
fn joined(text: &str) -> String {
    text.replace("\\\n", " ")
}

/// The one-line JSON-style array on the first line of `text` that starts with `key`.
fn array_after(text: &str, key: &str) -> Vec<String> {
    let line = text
        .lines()
        .map(str::trim_start)
        .find(|l| l.starts_with(key))
        .unwrap_or_else(|| panic!("no line starting with {key:?} in:\n{text}"));
    let (Some(start), Some(end)) = (line.find('['), line.rfind(']')) else {
        panic!("{line}: expected a one-line [\"…\", …] array");
    };
    serde_json::from_str(&line[start..=end]).unwrap_or_else(|e| panic!("{line}: {e} (keep it a one-line JSON array)"))
}

/// The bare words of a one-line YAML flow list (`secrets: [token, tls.crt]`).
fn flow_list(text: &str, key: &str) -> Vec<String> {
    let line = text.lines().map(str::trim_start).find(|l| l.starts_with(key)).unwrap_or_else(|| panic!("no {key}"));
    let inner = line.split_once('[').and_then(|(_, rest)| rest.split_once(']')).map(|(inner, _)| inner);
    inner.unwrap_or_default().split(',').map(|w| w.trim().to_string()).filter(|w| !w.is_empty()).collect()
}

/// The part of `text` after `from`, up to `to` (or the end).
fn between<'a>(text: &'a str, from: &str, to: &str) -> &'a str {
    let start = text.find(from).unwrap_or_else(|| panic!("no {from:?} in the file")) + from.len();
    let rest = &text[start..];
    &rest[..rest.find(to).unwrap_or(rest.len())]
}

/// The value of the flag `flag` in `argv`.
fn flag_value<'a>(argv: &'a [String], flag: &str) -> &'a str {
    let i = argv.iter().position(|a| a == flag).unwrap_or_else(|| panic!("{flag} is missing from {argv:?}"));
    argv.get(i + 1).map(String::as_str).unwrap_or_else(|| panic!("{flag} has no value in {argv:?}"))
}

/// The built binary a deploy file names by its installed path (`/usr/local/bin/bertsweep`).
fn program(path: &str) -> PathBuf {
    let name = Path::new(path).file_name().and_then(|n| n.to_str()).unwrap_or_default();
    assert!(name == "bertsweep" || name == "bertsweep-worker", "a deploy file runs {path:?}");
    binary(name)
}

/// KEY=VALUE lines (EnvironmentFile=, .env), comments and blanks skipped.
fn parse_env(text: &str) -> Vec<(String, String)> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().trim_matches('"').to_string()))
        .collect()
}

/// ca.crt (also as ca.pem), tls.crt + tls.key for `localhost` and 127.0.0.1 (the names the
/// in-container health checks dial) and token: the names every deploy path gives them. The key
/// and the token are readable by their owner only, as the Slurm scripts demand.
fn write_secrets(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let ca_key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, "deploy CA");
    let ca = params.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
    for (name, text, mode) in [
        ("ca.crt", ca.pem(), 0o644),
        ("ca.pem", ca.pem(), 0o644),
        ("tls.crt", cert.pem(), 0o644),
        ("tls.key", key.serialize_pem(), 0o600),
        ("token", "deploy-s3cret-0123456789abcdef\n".to_string(), 0o600),
    ] {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }
}

/// A unit's ExecStart as systemd would run it, and what it sets up around it.
struct Unit {
    argv: Vec<String>,
    /// EnvironmentFile= and Environment= variables (exported to the process too).
    env: Vec<(String, String)>,
    /// LoadCredential= names (files systemd copies into %d).
    credentials: Vec<String>,
    /// StateDirectory= and CacheDirectory= names (systemd creates them under %S and %C).
    state_dirs: Vec<String>,
    cache_dirs: Vec<String>,
}

fn settings<'a>(text: &'a str, key: &'a str) -> impl Iterator<Item = &'a str> + 'a {
    text.lines().filter_map(move |l| l.strip_prefix(key)).map(str::trim)
}

/// Reads deploy/systemd/`name` with deploy/systemd/`env_file` as its EnvironmentFile, expands
/// the `specifiers` (%d, %S, %C, %i) and the variables (`${X}` in place, `$X` as a word split on
/// whitespace), as systemd.service(5) describes.
fn unit(name: &str, env_file: &str, specifiers: &[(char, String)]) -> Unit {
    let text = joined(&deploy_file(&format!("systemd/{name}")));
    let expand = |s: &str| -> String {
        let mut out = String::new();
        let mut chars = s.chars();
        while let Some(c) = chars.next() {
            if c != '%' {
                out.push(c);
                continue;
            }
            match chars.next() {
                Some('%') => out.push('%'),
                Some(spec) => {
                    let value = specifiers.iter().find(|(k, _)| *k == spec);
                    out.push_str(&value.unwrap_or_else(|| panic!("{name}: %{spec} is not substituted here")).1);
                }
                None => panic!("{name}: a lone % in {s:?}"),
            }
        }
        out
    };
    let mut env = parse_env(&deploy_file(&format!("systemd/{env_file}")));
    for assignment in settings(&text, "Environment=") {
        let (k, v) = assignment.split_once('=').unwrap_or_else(|| panic!("{name}: Environment={assignment}"));
        env.push((k.to_string(), expand(v)));
    }
    let lookup = |var: &str| -> String {
        let value = env.iter().find(|(k, _)| k == var).map(|(_, v)| v.clone());
        value.unwrap_or_else(|| panic!("{name}: ${var} is set neither in {env_file} nor by Environment="))
    };
    let exec = settings(&text, "ExecStart=").next().unwrap_or_else(|| panic!("{name} has no ExecStart="));
    let mut argv = Vec::new();
    for word in exec.trim_start_matches(|c: char| "-@:+!".contains(c)).split_whitespace() {
        let mut word = expand(word);
        if let Some(var) = word.strip_prefix('$').filter(|v| !v.starts_with('{')) {
            argv.extend(lookup(var).split_whitespace().map(String::from));
            continue;
        }
        while let Some(start) = word.find("${") {
            let end = start + word[start..].find('}').unwrap_or_else(|| panic!("{name}: unclosed ${{ in {word}"));
            let value = lookup(&word[start + 2..end]);
            word.replace_range(start..=end, &value);
        }
        argv.push(word);
    }
    let names = |key: &str| settings(&text, key).flat_map(str::split_whitespace).map(String::from).collect::<Vec<_>>();
    let credentials =
        settings(&text, "LoadCredential=").map(|c| c.split(':').next().unwrap_or(c).to_string()).collect();
    Unit { argv, credentials, state_dirs: names("StateDirectory="), cache_dirs: names("CacheDirectory="), env }
}

/// What systemd's LoadCredential= does: the named secrets, copied into `dir`.
fn load_credentials(dir: &Path, names: &[String], secrets: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    for name in names {
        let from = secrets.join(name);
        assert!(from.exists(), "the units load a credential {name:?} this test does not make");
        std::fs::copy(from, dir.join(name)).unwrap();
    }
}

/// Where a deploy file's paths and addresses lead on this machine.
struct Site {
    /// Holds token, tls.crt, tls.key, ca.crt (the container's /run/secrets and Secret mounts).
    secrets: PathBuf,
    /// The container's /var/lib/bertsweep.
    state: PathBuf,
    /// The container's /var/cache/bertsweep.
    cache: PathBuf,
    /// The coordinator's port, for --coordinator URLs.
    port: u16,
    /// A worker's --metrics-listen port (0 for a coordinator, which prints what it bound).
    metrics_port: u16,
    /// What `$(BERTSWEEP_STUDY)` (Kubernetes' expansion) stands for.
    study: String,
}

impl Site {
    fn path(&self, text: &str) -> String {
        let mut text = text.to_string();
        for (container, here) in [
            ("/run/secrets", &self.secrets),
            ("/etc/bertsweep/token", &self.secrets),
            ("/etc/bertsweep/tls", &self.secrets),
            ("/var/lib/bertsweep", &self.state),
            ("/var/cache/bertsweep", &self.cache),
        ] {
            text = text.replace(container, &here.display().to_string());
        }
        text
    }

    /// A --coordinator URL: the same scheme, `localhost` kept (the certificate names it), any
    /// other host (a Service or Compose name, coord.example.org) becomes 127.0.0.1.
    fn url(&self, url: &str) -> String {
        let (scheme, rest) = url.split_once("://").unwrap_or_else(|| panic!("{url} is not a URL"));
        let host = rest.rsplit_once(':').map_or(rest, |(host, _)| host);
        let host = if host == "localhost" { "localhost" } else { "127.0.0.1" };
        format!("{scheme}://{host}:{}", self.port)
    }

    /// `argv` with only paths, listen addresses, the device and URLs made local.
    fn localize(&self, argv: &[String]) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for arg in argv {
            let local = match out.last().map(String::as_str) {
                Some("--listen" | "--health-listen" | "--http") => "127.0.0.1:0".to_string(),
                Some("--metrics-listen") => format!("127.0.0.1:{}", self.metrics_port),
                Some("--device") => "cpu".to_string(),
                Some("--coordinator") => self.url(arg),
                _ => self.path(arg).replace("$(BERTSWEEP_STUDY)", &self.study),
            };
            out.push(local);
        }
        out
    }

    /// Environment values made local the same way (URLs, paths, listen addresses).
    fn localize_env(&self, env: &[(String, String)]) -> Vec<(String, String)> {
        env.iter()
            .map(|(k, v)| {
                let local = if v.starts_with("http://") || v.starts_with("https://") {
                    self.url(v)
                } else if k.ends_with("_LISTEN") {
                    "127.0.0.1:0".to_string()
                } else {
                    self.path(v)
                };
                (k.clone(), local)
            })
            .collect()
    }
}

/// Free loopback port (for a worker's /metrics, whose bound address is not printed).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Lines a child prints on stdout, read by a thread, awaited with a deadline.
struct Lines(mpsc::Receiver<String>);

impl Lines {
    fn of(child: &mut Child) -> Lines {
        let stdout = child.stdout.take().expect("stdout is piped");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Lines(rx)
    }

    /// The rest of the next line starting with `prefix`; `log` explains a failure.
    fn next_starting(&self, prefix: &str, log: &Path) -> String {
        let deadline = Instant::now() + STARTUP;
        loop {
            match self.0.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(line) => {
                    if let Some(rest) = line.strip_prefix(prefix) {
                        return rest.to_string();
                    }
                }
                Err(_) => panic!(
                    "no line starting {prefix:?} (exited or timed out); its log:\n{}",
                    std::fs::read_to_string(log).unwrap_or_default()
                ),
            }
        }
    }
}

/// A coordinator started from a deploy file, with the addresses it printed.
struct Served {
    coordinator: Coordinator,
    port: u16,
    /// ADDR of http://ADDR/metrics.
    metrics: String,
    /// ADDR of the plaintext grpc.health.v1 server (--health-listen).
    health: Option<String>,
}

/// Starts `command` (a coordinator), waits for its banner and the sidecar lines.
fn serve(mut command: Command, log: &Path, secrets: &Path, with_health: bool) -> Served {
    let stderr = std::fs::File::create(log).unwrap();
    let mut child = command.stdout(Stdio::piped()).stderr(stderr).spawn().expect("start a coordinator");
    let lines = Lines::of(&mut child);
    let client_env = vec![
        ("BERTSWEEP_CA_CERT".to_string(), secrets.join("ca.crt").display().to_string()),
        ("BERTSWEEP_TOKEN_FILE".to_string(), secrets.join("token").display().to_string()),
    ];
    // Owned by the Coordinator at once, so a failure below still kills the process.
    let mut coordinator = Coordinator { child, url: String::new(), client_env, prefix: Vec::new() };
    let banner = lines.next_starting("bertsweep coordinator listening on ", log);
    assert!(banner.ends_with("https)"), "every deploy path serves TLS: {banner}");
    let addr = banner.split_whitespace().next().unwrap_or_default().to_string();
    let port: u16 = addr.rsplit(':').next().and_then(|p| p.parse().ok()).expect("a port in the banner");
    coordinator.url = format!("https://127.0.0.1:{port}");
    let metrics = lines.next_starting("metrics at http://", log).trim_end_matches("/metrics").to_string();
    let health = with_health.then(|| lines.next_starting("plaintext health checks on ", log));
    // Every deploy path serves the dashboard too, over TLS and behind the token.
    let dashboard = lines.next_starting("dashboard at ", log);
    assert!(dashboard.starts_with("https://"), "the dashboard speaks TLS like gRPC: {dashboard}");
    dashboard_answers(&dashboard, secrets);
    Served { coordinator, port, metrics, health }
}

/// The dashboard at `url` (https://127.0.0.1:PORT/) answers its API with the token (200) and
/// refuses it without (401), checked with curl against the test CA under the name `localhost`.
fn dashboard_answers(url: &str, secrets: &Path) {
    let port = url.trim_end_matches('/').rsplit(':').next().unwrap_or_default();
    let token = std::fs::read_to_string(secrets.join("token")).unwrap();
    let status = |with_token: bool| -> String {
        let mut curl = Command::new("curl");
        curl.args(["--silent", "--output", "/dev/null", "--write-out", "%{http_code}", "--max-time", "10"])
            .arg("--cacert")
            .arg(secrets.join("ca.crt"))
            .args(["--resolve", &format!("localhost:{port}:127.0.0.1")]);
        if with_token {
            curl.args(["-H", &format!("Authorization: Bearer {}", token.trim())]);
        }
        let out = curl.arg(format!("https://localhost:{port}/api/studies")).output().expect("run curl");
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    assert_eq!(status(true), "200", "GET {url}api/studies with the token");
    assert_eq!(status(false), "401", "GET {url}api/studies without the token");
}

/// `bertsweep ARGS` (a health check) with `env`; it must exit 0.
fn health_check(args: &[String], env: &[(String, String)], what: &str) {
    let out = clean(&mut Command::new(binary("bertsweep")))
        .env("RUST_LOG", "off")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .args(args)
        .output()
        .expect("run bertsweep health");
    assert!(
        out.status.success(),
        "{what}: `bertsweep {}` failed: {}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// GET http://ADDR/metrics; the response must be 200 and name bertsweep metrics.
fn scrape(addr: &str) -> String {
    let mut stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(stream, "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read /metrics");
    assert!(response.starts_with("HTTP/1.1 200"), "GET http://{addr}/metrics: {response}");
    assert!(response.contains("bertsweep_"), "no bertsweep_ metric at http://{addr}/metrics:\n{response}");
    response
}

/// A worker or a stand-in Slurm job, killed on drop.
struct Running {
    child: Child,
    log: PathBuf,
}

impl Running {
    fn spawn(mut command: Command, log: &Path) -> Running {
        let child = command
            .stdout(std::fs::File::create(log.with_extension("out")).unwrap())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .expect("start a worker");
        Running { child, log: log.to_path_buf() }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn wait_registered(&mut self) {
        let deadline = Instant::now() + STARTUP;
        while !self.log().contains("registered") {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("{} exited ({status}) before registering:\n{}", self.log.display(), self.log());
            }
            assert!(Instant::now() < deadline, "{} did not register:\n{}", self.log.display(), self.log());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn exit_within(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "{} still runs after {limit:?}:\n{}", self.log.display(), self.log());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn terminate(&self) {
        let status = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().unwrap();
        assert!(status.success());
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// CPUs this process may run on (`Cpus_allowed_list`).
fn allowed_cpus() -> Vec<usize> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let list = status.lines().find_map(|l| l.strip_prefix("Cpus_allowed_list:")).unwrap_or_default().trim().to_string();
    let mut cpus = Vec::new();
    for part in list.split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                if let (Ok(a), Ok(b)) = (a.parse::<usize>(), b.parse::<usize>()) {
                    cpus.extend(a..=b);
                }
            }
            None => cpus.extend(part.parse::<usize>().ok()),
        }
    }
    cpus
}

/// A `taskset` prefix giving the n-th of two concurrent workers a CPU of its own, as a cgroup
/// would on a real node (the worker sizes its threads by the CPUs it may use); none when that
/// cannot be done here.
fn own_cpu(n: usize) -> Vec<String> {
    let cpus = allowed_cpus();
    let taskset = Path::new("/usr/bin/taskset");
    if cpus.len() < 2 || !taskset.exists() {
        return Vec::new();
    }
    vec![taskset.display().to_string(), "-c".into(), cpus[n % cpus.len()].to_string()]
}

/// A directory with a stand-in `srun` (drops its options, runs the rest) and the binaries
/// under the names the job scripts call.
fn stand_in_slurm(dir: &Path) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let srun = dir.join("srun");
    std::fs::write(
        &srun,
        "#!/bin/sh\nwhile [ $# -gt 0 ]; do case \"$1\" in -*) shift ;; *) break ;; esac; done\nexec \"$@\"\n",
    )
    .unwrap();
    std::fs::set_permissions(srun, std::fs::Permissions::from_mode(0o755)).unwrap();
    for name in ["bertsweep", "bertsweep-worker"] {
        std::os::unix::fs::symlink(binary(name), dir.join(name)).unwrap();
    }
    dir.to_path_buf()
}

/// bash running deploy/slurm/`script` with the stand-in Slurm first on PATH.
fn slurm_job(script: &str, prefix: &[String], slurm: &Path, home: &Path, env: &[(&str, String)]) -> Command {
    std::fs::create_dir_all(home).unwrap();
    let path = format!("{}:{}", slurm.display(), std::env::var("PATH").unwrap_or_default());
    let mut command = command_in(prefix, Path::new("bash"));
    clean(&mut command)
        .arg(workspace_root().join("deploy/slurm").join(script))
        .current_dir(home)
        .env("PATH", path)
        .env("HOME", home)
        .env("XDG_CONFIG_HOME", home.join(".config"))
        .env_remove("XDG_STATE_HOME")
        .env_remove("BERTSWEEP_BIN")
        .envs(env.iter().map(|(k, v)| (*k, v)));
    command
}

/// A worker from a deploy file's argv (the program is the image's ENTRYPOINT or the unit's).
fn worker_command(prefix: &[String], argv: &[String], home: &Path, env: &[(String, String)]) -> Command {
    std::fs::create_dir_all(home).unwrap();
    let mut command = command_in(prefix, &program(&argv[0]));
    // HOME first: a unit's own Environment=HOME= wins, as under systemd.
    clean(&mut command).args(&argv[1..]).env("HOME", home).envs(env.iter().map(|(k, v)| (k, v))).current_dir(home);
    command
}

/// A grid study over `learning_rates` (one trial each): MiniLM, 32 reviews, 1 epoch.
fn tiny_study(dir: &Path, name: &str, model: &Path, learning_rates: &str) -> PathBuf {
    StudyFile::reviews(name, model)
        .budget("parallel_trials = 2")
        .budget("max_attempts = 2")
        .budget("keep_artifacts = 1")
        .task("max_seq_length = 32")
        .task("max_train_samples = 32")
        .parameter("learning_rate", &format!("values = [{learning_rates}]"))
        .parameter("per_device_train_batch_size", "value = 16")
        .parameter("num_train_epochs", "value = 1")
        .write_in(dir)
}

fn create_study(coordinator: &Coordinator, file: &Path) {
    let out = coordinator.cli(&["study", "create", file.to_str().unwrap()]);
    assert!(out.status.success(), "study create: {}", String::from_utf8_lossy(&out.stderr));
}

fn wait_completed(coordinator: &Coordinator, study: &str, workers: &[&Running]) {
    let state = eventually(&format!("study {study} to end"), STUDY, || {
        let s = coordinator.study_state(study);
        (s != "RUNNING" && !s.is_empty()).then_some(s)
    });
    let logs: Vec<String> = workers.iter().map(|w| format!("{}:\n{}", w.log.display(), w.log())).collect();
    assert_eq!(state, "COMPLETED", "{}", logs.join("\n"));
}

#[test]
fn every_deploy_command_line_serves_and_trains() {
    let Some(model) = minilm_dir() else { return skip("no MiniLM checkpoint; run `make setup`") };
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name);
    let secrets = p("secrets");
    write_secrets(&secrets);
    let slurm = stand_in_slurm(&p("slurm-bin"));
    let site = |state: &str, cache: &str, port: u16, metrics_port: u16, study: &str| Site {
        secrets: secrets.clone(),
        state: p(state),
        cache: p(cache),
        port,
        metrics_port,
        study: study.to_string(),
    };

    // The images: the coordinator's ENTRYPOINT + CMD and HEALTHCHECK, the worker's ENTRYPOINT.
    let coordinator_image = joined(&deploy_file("docker/coordinator.Dockerfile"));
    let runtime = &coordinator_image[coordinator_image.rfind("\nFROM ").expect("a FROM")..];
    let entrypoint = array_after(runtime, "ENTRYPOINT");
    let image_cmd: Vec<String> = entrypoint.iter().chain(&array_after(runtime, "CMD [")).cloned().collect();
    let image_health = array_after(runtime, "HEALTHCHECK");
    let image_env: Vec<(String, String)> = runtime
        .lines()
        .filter_map(|l| l.strip_prefix("ENV "))
        .flat_map(str::split_whitespace)
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let worker_image = joined(&deploy_file("docker/worker.Dockerfile"));
    let worker_entrypoint = array_after(&worker_image[worker_image.rfind("\nFROM ").expect("a FROM")..], "ENTRYPOINT");

    // 1. The systemd unit's coordinator: every worker below uses this one.
    let creds = p("credentials/coordinator");
    let state_root = p("var-lib");
    let coordinator_unit = unit(
        "bertsweep-coordinator.service",
        "coordinator.env",
        &[('d', creds.display().to_string()), ('S', state_root.display().to_string())],
    );
    load_credentials(&creds, &coordinator_unit.credentials, &secrets);
    for name in &coordinator_unit.state_dirs {
        std::fs::create_dir_all(state_root.join(name)).unwrap();
    }
    let local = site("unused", "unused", 0, 0, "");
    let argv = local.localize(&coordinator_unit.argv);
    let mut command = Command::new(program(&argv[0]));
    clean(&mut command).args(&argv[1..]).envs(local.localize_env(&coordinator_unit.env));
    let main = serve(command, &p("systemd-coordinator.log"), &secrets, false);
    let coordinator = &main.coordinator;
    scrape(&main.metrics);

    // 2. The other coordinator variants: each starts, passes its health check, and stops.
    {
        // Compose: the image's ENTRYPOINT with `command:`; its healthcheck dials localhost.
        let compose = deploy_file("compose/compose.yaml");
        let service = between(&compose, "\n  coordinator:\n", "\n  worker:\n");
        let command_line: Vec<String> = entrypoint.iter().chain(&array_after(service, "command:")).cloned().collect();
        let mounted = flow_list(service, "secrets:");
        for arg in command_line.iter().filter_map(|a| a.strip_prefix("/run/secrets/")) {
            assert!(
                mounted.iter().any(|m| m == arg),
                "compose coordinator reads /run/secrets/{arg} but mounts {mounted:?}"
            );
        }
        std::fs::create_dir_all(p("compose-state")).unwrap();
        let local = site("compose-state", "unused", 0, 0, "");
        let argv = local.localize(&command_line);
        let mut command = Command::new(program(&argv[0]));
        clean(&mut command).args(&argv[1..]);
        let served = serve(command, &p("compose-coordinator.log"), &secrets, false);
        let test = array_after(service, "test:");
        assert_eq!(test[0], "CMD", "{test:?}");
        assert_eq!(program(&test[1]), binary("bertsweep"));
        let local = site("compose-state", "unused", served.port, 0, "");
        health_check(&local.localize(&test[2..]), &[], "compose healthcheck");

        // The image as `docker run` starts it: ENTRYPOINT + CMD, HEALTHCHECK with the image's ENV.
        std::fs::create_dir_all(p("image-state")).unwrap();
        let local = site("image-state", "unused", 0, 0, "");
        let argv = local.localize(&image_cmd);
        let mut command = Command::new(program(&argv[0]));
        clean(&mut command).args(&argv[1..]);
        let served = serve(command, &p("image-coordinator.log"), &secrets, false);
        assert_eq!(program(&image_health[0]), binary("bertsweep"));
        let local = site("image-state", "unused", served.port, 0, "");
        health_check(&local.localize(&image_health[1..]), &local.localize_env(&image_env), "image HEALTHCHECK");

        // Kubernetes: the StatefulSet's args; the kubelet probes --health-listen in plaintext.
        let statefulset = deploy_file("k8s/base/coordinator.yaml");
        let args: Vec<String> = entrypoint.iter().chain(&array_after(&statefulset, "args:")).cloned().collect();
        let health_port = flag_value(&args, "--health-listen").rsplit(':').next().unwrap_or_default().to_string();
        let lines: Vec<&str> = statefulset.lines().map(str::trim).collect();
        let probes: Vec<&str> =
            lines.windows(2).filter(|w| w[0] == "grpc:").filter_map(|w| w[1].strip_prefix("port:")).collect();
        assert_eq!(probes.len(), 3, "startup, readiness and liveness probes use grpc");
        assert!(
            probes.iter().all(|port| port.trim() == health_port),
            "probe ports {probes:?} != --health-listen {health_port}"
        );
        std::fs::create_dir_all(p("k8s-state")).unwrap();
        let local = site("k8s-state", "unused", 0, 0, "");
        let argv = local.localize(&args);
        let mut command = Command::new(program(&argv[0]));
        clean(&mut command).args(&argv[1..]);
        let served = serve(command, &p("k8s-coordinator.log"), &secrets, true);
        let plaintext = format!("http://{}", served.health.as_deref().expect("health address"));
        health_check(&["health".into(), "--coordinator".into(), plaintext], &[], "kubelet gRPC probe");
        scrape(&served.metrics);

        // Slurm: the job script itself, its srun standing in.
        let home = p("slurm-coordinator");
        let env = [
            ("BERTSWEEP_STATE_DIR", home.join("state").display().to_string()),
            ("BERTSWEEP_TOKEN_FILE", secrets.join("token").display().to_string()),
            ("BERTSWEEP_TLS_CERT", secrets.join("tls.crt").display().to_string()),
            ("BERTSWEEP_TLS_KEY", secrets.join("tls.key").display().to_string()),
            ("BERTSWEEP_LISTEN", "127.0.0.1:0".to_string()),
            ("BERTSWEEP_METRICS_LISTEN", "127.0.0.1:0".to_string()),
            ("BERTSWEEP_HTTP_LISTEN", "127.0.0.1:0".to_string()),
        ];
        let served = serve(
            slurm_job("coordinator.sbatch", &[], &slurm, &home, &env),
            &p("slurm-coordinator.log"),
            &secrets,
            false,
        );
        let local = site("unused", "unused", served.port, 0, "");
        health_check(
            &["health".into(), "--coordinator".into(), local.url("https://localhost:1")],
            &served.coordinator.client_env,
            "slurm coordinator",
        );
        let url = std::fs::read_to_string(home.join(".config/bertsweep/coordinator-url")).unwrap_or_default();
        assert!(url.starts_with("https://"), "coordinator.sbatch writes its URL for the workers: {url:?}");
        let targets =
            std::fs::read_to_string(home.join(".config/bertsweep/prometheus-targets.json")).unwrap_or_default();
        let targets: serde_json::Value = serde_json::from_str(&targets).unwrap_or_default();
        assert_eq!(targets[0]["labels"]["job"], "bertsweep-coordinator", "a Prometheus file_sd list: {targets}");
        // The state directory is never a default under $HOME (NFS on most clusters).
        let homeless: Vec<(&str, String)> = env.iter().filter(|(k, _)| *k != "BERTSWEEP_STATE_DIR").cloned().collect();
        let refused = slurm_job("coordinator.sbatch", &[], &slurm, &home, &homeless).output().unwrap();
        let err = String::from_utf8_lossy(&refused.stderr);
        assert!(
            !refused.status.success() && err.contains("set BERTSWEEP_STATE_DIR") && err.trim().lines().count() == 1,
            "coordinator.sbatch without a state directory: {err}"
        );
    }

    // 3. Workers pinned to a study, each on a one-trial study of its own: the Kubernetes Job's
    //    args and the Slurm array's job script. Both exit 0 when their study ends.
    for study in ["deploy-k8s", "deploy-slurm"] {
        create_study(coordinator, &tiny_study(dir.path(), study, &model, "5e-5"));
    }
    let job = deploy_file("k8s/base/workers.yaml");
    let args: Vec<String> = worker_entrypoint.iter().chain(&array_after(&job, "args:")).cloned().collect();
    let k8s_site = site("unused", "k8s-cache", main.port, free_port(), "deploy-k8s");
    let k8s_argv = k8s_site.localize(&args);
    let mut k8s_worker =
        Running::spawn(worker_command(&own_cpu(0), &k8s_argv, &p("k8s-worker"), &[]), &p("k8s-worker.log"));

    let slurm_home = p("slurm-worker");
    let slurm_env = |token: &Path| {
        [
            ("BERTSWEEP_STUDY", "deploy-slurm".to_string()),
            ("BERTSWEEP_COORDINATOR", coordinator.url.clone()),
            ("BERTSWEEP_CA_CERT", secrets.join("ca.crt").display().to_string()),
            ("BERTSWEEP_TOKEN_FILE", token.display().to_string()),
            ("BERTSWEEP_CACHE_DIR", slurm_home.join("cache").display().to_string()),
            ("BERTSWEEP_DEVICE", "cpu".to_string()),
        ]
    };
    // A token others could read is refused in one line, before anything starts.
    let loose = p("loose-token");
    std::fs::copy(secrets.join("token"), &loose).unwrap();
    std::fs::set_permissions(&loose, std::fs::Permissions::from_mode(0o644)).unwrap();
    let refused = slurm_job("worker.sbatch", &[], &slurm, &slurm_home, &slurm_env(&loose)).output().unwrap();
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        refused.status.code() == Some(1) && err.contains("chmod 600") && err.trim().lines().count() == 1,
        "worker.sbatch with a 0644 token: {err}"
    );
    let mut slurm_worker = Running::spawn(
        slurm_job("worker.sbatch", &own_cpu(1), &slurm, &slurm_home, &slurm_env(&secrets.join("token"))),
        &p("slurm-worker.log"),
    );
    for (worker, study) in [(&mut k8s_worker, "deploy-k8s"), (&mut slurm_worker, "deploy-slurm")] {
        wait_completed(coordinator, study, &[&*worker]);
        let status = worker.exit_within(Duration::from_secs(60));
        assert!(
            status.success(),
            "{} exits 0 once its study has ended ({status}):\n{}",
            worker.log.display(),
            worker.log()
        );
    }
    // The kept model came home to the coordinator and downloads, verified.
    let best = coordinator.cli(&["best", "deploy-k8s", "--format", "json"]);
    let best: serde_json::Value = serde_json::from_slice(&best.stdout).unwrap_or_default();
    assert!(best["artifact"].as_str().is_some_and(|a| a.starts_with("blob:sha256:")), "{best}");
    let downloaded = coordinator.cli(&["download", "deploy-k8s", &p("best-model").display().to_string()]);
    assert!(downloaded.status.success(), "download: {}", String::from_utf8_lossy(&downloaded.stderr));
    assert!(p("best-model/config.json").exists() && p("best-model/model.safetensors").exists());

    // 3a. The backup CronJob (components/backup): its command against the running coordinator
    //     writes a dated copy and the blobs beside it, and `bertsweep restore` rebuilds from it.
    let cronjob = deploy_file("k8s/components/backup/backup.yaml");
    let backups = p("backups");
    std::fs::create_dir_all(&backups).unwrap();
    let backup_site = site("unused", "unused", main.port, 0, "");
    let cron_argv: Vec<String> = entrypoint.iter().chain(&array_after(&cronjob, "args:")).cloned().collect();
    let backup_argv: Vec<String> = backup_site
        .localize(&cron_argv)
        .into_iter()
        .map(|a| a.replace("/backups", &backups.display().to_string()))
        .collect();
    let out = clean(&mut Command::new(program(&backup_argv[0]))).args(&backup_argv[1..]).output().unwrap();
    assert!(out.status.success(), "the backup CronJob's command: {}", String::from_utf8_lossy(&out.stderr));
    let dated: Vec<PathBuf> = std::fs::read_dir(&backups)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "db"))
        .collect();
    assert_eq!(dated.len(), 1, "one dated backup: {dated:?}");
    let restored = p("restored/coord.db");
    std::fs::create_dir_all(p("restored")).unwrap();
    let out = clean(&mut Command::new(binary("bertsweep")))
        .arg("restore")
        .arg(&dated[0])
        .arg("--db")
        .arg(&restored)
        .arg("--blobs")
        .arg(backups.join("blobs"))
        .output()
        .unwrap();
    assert!(out.status.success(), "restore: {}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("restored"), "{}", String::from_utf8_lossy(&out.stdout));

    // 3b. Preemption: SIGTERM mid-trial. The Kubernetes Job's command exits 75 (its
    //     podFailurePolicy replaces the pod without counting a failure) with the trial handed
    //     back at once; the Slurm script, signalled as at its time limit (the batch shell,
    //     `--signal=B:TERM`), passes it on and requeues its task through scontrol.
    let preempt = StudyFile::reviews("deploy-preempt", &model)
        .budget("parallel_trials = 1")
        .task("max_seq_length = 32")
        .task("max_train_samples = 32")
        .parameter("learning_rate", "value = 5e-5")
        .parameter("per_device_train_batch_size", "value = 16")
        .parameter("num_train_epochs", "value = 40")
        .write_in(dir.path());
    create_study(coordinator, &preempt);
    assert!(job.contains("values: [75]"), "the Job's podFailurePolicy retries exit 75 without counting it");
    let preempt_site = site("unused", "k8s-cache", main.port, free_port(), "deploy-preempt");
    let mut evicted = Running::spawn(
        worker_command(&own_cpu(0), &preempt_site.localize(&args), &p("k8s-preempt"), &[]),
        &p("k8s-preempt.log"),
    );
    let mid_trial = || {
        eventually("the preempt trial to report an epoch", STUDY, || {
            let t = coordinator.trials("deploy-preempt").first().cloned()?;
            (t["state"] == "RUNNING" && t["last_epoch"].as_u64().unwrap_or(0) >= 1).then_some(())
        })
    };
    mid_trial();
    evicted.terminate();
    let status = evicted.exit_within(Duration::from_secs(60));
    assert_eq!(status.code(), Some(75), "evicted Job worker:\n{}", evicted.log());
    assert_eq!(coordinator.trials("deploy-preempt")[0]["state"], "PENDING", "handed back at once");
    let scontrol_log = p("scontrol.log");
    std::fs::write(slurm.join("scontrol"), format!("#!/bin/sh\necho \"$@\" >> {}\n", scontrol_log.display())).unwrap();
    std::fs::set_permissions(slurm.join("scontrol"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut preempted_env = slurm_env(&secrets.join("token")).to_vec();
    preempted_env[0].1 = "deploy-preempt".into();
    preempted_env.push(("SLURM_JOB_ID", "4242_3".into()));
    let mut preempted = Running::spawn(
        slurm_job("worker.sbatch", &own_cpu(1), &slurm, &slurm_home, &preempted_env),
        &p("slurm-preempt.log"),
    );
    mid_trial();
    preempted.terminate();
    let status = preempted.exit_within(Duration::from_secs(60));
    assert!(status.success(), "the Slurm script requeues and ends cleanly ({status}):\n{}", preempted.log());
    assert_eq!(std::fs::read_to_string(&scontrol_log).unwrap_or_default().trim(), "requeue 4242_3");
    assert_eq!(coordinator.trials("deploy-preempt")[0]["state"], "PENDING", "handed back at once");
    let stopped = coordinator.cli(&["study", "stop", "deploy-preempt"]);
    assert!(stopped.status.success(), "{}", String::from_utf8_lossy(&stopped.stderr));

    // 3c. Demand-following workers (components/keda): the ScaledJob's pods run the Job's
    //     command without --study and with --exit-when-idle, and exit 0 once idle that long.
    let scaled = deploy_file("k8s/components/keda/scaledjob.yaml");
    let scaled_args = array_after(&scaled, "args:");
    let mut expected: Vec<String> = array_after(&job, "args:");
    let at = expected.iter().position(|a| a == "--study").expect("the Job serves one study");
    expected.drain(at..at + 2);
    expected.extend(["--exit-when-idle".to_string(), "5m".to_string()]);
    assert_eq!(scaled_args, expected, "the ScaledJob's worker is the Job's, serving every study, leaving when idle");
    assert!(scaled.contains("values: [75]"), "the ScaledJob's Jobs retry exit 75 without counting it");
    let idle_argv: Vec<String> = worker_entrypoint
        .iter()
        .chain(&scaled_args)
        .map(|a| if a == "5m" { "2s".to_string() } else { a.clone() })
        .collect();
    let idle_site = site("unused", "k8s-cache", main.port, free_port(), "");
    let mut idle = Running::spawn(
        worker_command(&own_cpu(0), &idle_site.localize(&idle_argv), &p("keda-worker"), &[]),
        &p("keda-worker.log"),
    );
    let status = idle.exit_within(Duration::from_secs(60));
    assert!(status.success(), "an idle ScaledJob worker exits 0 ({status}):\n{}", idle.log());
    assert!(idle.log().contains("--exit-when-idle"), "it says why it left:\n{}", idle.log());

    // 4. A standing pool: the systemd template's instance 0 and the Compose worker, both
    //    registered before the study exists, take one trial each, then stop on SIGTERM.
    let creds = p("credentials/worker");
    let cache_root = p("var-cache");
    let worker_unit = unit(
        "bertsweep-worker@.service",
        "worker.env",
        &[('d', creds.display().to_string()), ('C', cache_root.display().to_string()), ('i', "0".to_string())],
    );
    assert_eq!(flag_value(&worker_unit.argv, "--device"), "cuda:0", "instance N trains on GPU N");
    load_credentials(&creds, &worker_unit.credentials, &secrets);
    for name in &worker_unit.cache_dirs {
        std::fs::create_dir_all(cache_root.join(name)).unwrap();
    }
    let local = site("unused", "unused", main.port, 0, "");
    let systemd_argv = local.localize(&worker_unit.argv);
    let systemd_env = local.localize_env(&worker_unit.env);
    let mut systemd_worker = Running::spawn(
        worker_command(&own_cpu(0), &systemd_argv, &p("systemd-worker"), &systemd_env),
        &p("systemd-worker.log"),
    );
    let compose = deploy_file("compose/compose.yaml");
    let service = between(&compose, "\n  worker:\n", "\nvolumes:");
    let command_line: Vec<String> =
        worker_entrypoint.iter().chain(&array_after(service, "command:")).cloned().collect();
    let mounted = flow_list(service, "secrets:");
    for arg in command_line.iter().filter_map(|a| a.strip_prefix("/run/secrets/")) {
        assert!(mounted.iter().any(|m| m == arg), "compose worker reads /run/secrets/{arg} but mounts {mounted:?}");
    }
    let compose_site = site("unused", "compose-cache", main.port, free_port(), "");
    let compose_argv = compose_site.localize(&command_line);
    let mut compose_worker =
        Running::spawn(worker_command(&own_cpu(1), &compose_argv, &p("compose-worker"), &[]), &p("compose-worker.log"));
    systemd_worker.wait_registered();
    compose_worker.wait_registered();
    create_study(coordinator, &tiny_study(dir.path(), "deploy-pool", &model, "3e-5, 5e-5"));
    wait_completed(coordinator, "deploy-pool", &[&systemd_worker, &compose_worker]);
    let trials = coordinator.trials("deploy-pool");
    let mut workers: Vec<&str> = trials.iter().filter_map(|t| t["worker_id"].as_str()).collect();
    workers.sort_unstable();
    workers.dedup();
    assert_eq!(workers.len(), 2, "both pool workers trained a trial: {trials:?}");
    // The worker's own metrics moved with the trial it trained.
    let worker_metrics = scrape(&format!("127.0.0.1:{}", compose_site.metrics_port));
    for needle in ["bertsweep_worker_trials_total{outcome=\"completed\"} 1", "bertsweep_worker_epoch_seconds_count"] {
        assert!(worker_metrics.contains(needle), "{needle} missing from the worker's /metrics:\n{worker_metrics}");
    }
    for worker in [&mut systemd_worker, &mut compose_worker] {
        worker.terminate();
        let status = worker.exit_within(Duration::from_secs(60));
        assert_eq!(status.code(), Some(75), "{} exits 75 on SIGTERM:\n{}", worker.log.display(), worker.log());
    }
    let metrics = scrape(&main.metrics);
    assert!(metrics.contains("deploy-pool"), "/metrics counts trials by study:\n{metrics}");
    // Every metric the alert rules and the Grafana dashboard name exists on a live coordinator
    // or worker (counters from 0, histograms once used), so no panel or alert is silently empty.
    let exposed = format!("{metrics}\n{worker_metrics}");
    for file in ["prometheus/bertsweep-rules.yml", "grafana/bertsweep.json"] {
        let text = deploy_file(file);
        let mut names: Vec<&str> = text
            .match_indices("bertsweep_")
            .map(|(at, _)| {
                let rest = &text[at..];
                &rest[..rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(rest.len())]
            })
            .collect();
        names.sort_unstable();
        names.dedup();
        for name in names {
            let base = ["_bucket", "_count", "_sum"].iter().fold(name, |n, s| n.strip_suffix(s).unwrap_or(n));
            // NVML's GPU memory exists only where a GPU is.
            if base.starts_with("bertsweep_worker_gpu_memory_") {
                continue;
            }
            assert!(exposed.contains(base), "{file} names {name}, which neither /metrics shows");
        }
    }
}
