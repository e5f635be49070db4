//! Shared by `deploy_commands.rs`: reading deploy files (JSON-style arrays, flow lists,
//! systemd units and env files), secrets and certificates, making container paths and
//! addresses local (`Site`), starting coordinators from their command lines and waiting for
//! their banners, health checks, scrapes, worker processes and a stand-in Slurm.

use bertsweep_tests::*;
use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long a coordinator may take to print its addresses.
pub const STARTUP: Duration = Duration::from_secs(60);

/// How long a tiny study may take on a loaded 2-core machine.
pub const STUDY: Duration = Duration::from_secs(900);

/// Variables the test's own environment must not lend to the processes it starts.
pub const NOT_INHERITED: [&str; 12] = [
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

pub fn clean(command: &mut Command) -> &mut Command {
    for var in NOT_INHERITED {
        command.env_remove(var);
    }
    command
}

pub fn deploy_file(path: &str) -> String {
    let file = workspace_root().join("deploy").join(path);
    std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()))
}

/// The file with backslash-continued lines joined (Dockerfiles, units).
pub fn joined(text: &str) -> String {
    text.replace("\\\n", " ")
}

/// The one-line JSON-style array on the first line of `text` that starts with `key`.
pub fn array_after(text: &str, key: &str) -> Vec<String> {
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
pub fn flow_list(text: &str, key: &str) -> Vec<String> {
    let line = text.lines().map(str::trim_start).find(|l| l.starts_with(key)).unwrap_or_else(|| panic!("no {key}"));
    let inner = line.split_once('[').and_then(|(_, rest)| rest.split_once(']')).map(|(inner, _)| inner);
    inner.unwrap_or_default().split(',').map(|w| w.trim().to_string()).filter(|w| !w.is_empty()).collect()
}

/// The part of `text` after `from`, up to `to` (or the end).
pub fn between<'a>(text: &'a str, from: &str, to: &str) -> &'a str {
    let start = text.find(from).unwrap_or_else(|| panic!("no {from:?} in the file")) + from.len();
    let rest = &text[start..];
    &rest[..rest.find(to).unwrap_or(rest.len())]
}

/// The value of the flag `flag` in `argv`.
pub fn flag_value<'a>(argv: &'a [String], flag: &str) -> &'a str {
    let i = argv.iter().position(|a| a == flag).unwrap_or_else(|| panic!("{flag} is missing from {argv:?}"));
    argv.get(i + 1).map(String::as_str).unwrap_or_else(|| panic!("{flag} has no value in {argv:?}"))
}

/// The built binary a deploy file names by its installed path (`/usr/local/bin/bertsweep`).
pub fn program(path: &str) -> PathBuf {
    let name = Path::new(path).file_name().and_then(|n| n.to_str()).unwrap_or_default();
    assert!(name == "bertsweep" || name == "bertsweep-worker", "a deploy file runs {path:?}");
    binary(name)
}

/// KEY=VALUE lines (EnvironmentFile=, .env), comments and blanks skipped.
pub fn parse_env(text: &str) -> Vec<(String, String)> {
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
pub fn write_secrets(dir: &Path) {
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
pub struct Unit {
    pub argv: Vec<String>,
    /// EnvironmentFile= and Environment= variables (exported to the process too).
    pub env: Vec<(String, String)>,
    /// LoadCredential= names (files systemd copies into %d).
    pub credentials: Vec<String>,
    /// StateDirectory= and CacheDirectory= names (systemd creates them under %S and %C).
    pub state_dirs: Vec<String>,
    pub cache_dirs: Vec<String>,
}

pub fn settings<'a>(text: &'a str, key: &'a str) -> impl Iterator<Item = &'a str> + 'a {
    text.lines().filter_map(move |l| l.strip_prefix(key)).map(str::trim)
}

/// Reads deploy/systemd/`name` with deploy/systemd/`env_file` as its EnvironmentFile, expands
/// the `specifiers` (%d, %S, %C, %i) and the variables (`${X}` in place, `$X` as a word split on
/// whitespace), as systemd.service(5) describes.
pub fn unit(name: &str, env_file: &str, specifiers: &[(char, String)]) -> Unit {
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
pub fn load_credentials(dir: &Path, names: &[String], secrets: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    for name in names {
        let from = secrets.join(name);
        assert!(from.exists(), "the units load a credential {name:?} this test does not make");
        std::fs::copy(from, dir.join(name)).unwrap();
    }
}

/// Where a deploy file's paths and addresses lead on this machine.
pub struct Site {
    /// Holds token, tls.crt, tls.key, ca.crt (the container's /run/secrets and Secret mounts).
    pub secrets: PathBuf,
    /// The container's /var/lib/bertsweep.
    pub state: PathBuf,
    /// The container's /var/cache/bertsweep.
    pub cache: PathBuf,
    /// The coordinator's port, for --coordinator URLs.
    pub port: u16,
    /// A worker's --metrics-listen port (0 for a coordinator, which prints what it bound).
    pub metrics_port: u16,
    /// What `$(BERTSWEEP_STUDY)` (Kubernetes' expansion) stands for.
    pub study: String,
}

impl Site {
    pub fn path(&self, text: &str) -> String {
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
    pub fn url(&self, url: &str) -> String {
        let (scheme, rest) = url.split_once("://").unwrap_or_else(|| panic!("{url} is not a URL"));
        let host = rest.rsplit_once(':').map_or(rest, |(host, _)| host);
        let host = if host == "localhost" { "localhost" } else { "127.0.0.1" };
        format!("{scheme}://{host}:{}", self.port)
    }

    /// `argv` with only paths, listen addresses, the device and URLs made local.
    pub fn localize(&self, argv: &[String]) -> Vec<String> {
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
    pub fn localize_env(&self, env: &[(String, String)]) -> Vec<(String, String)> {
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
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Lines a child prints on stdout, read by a thread, awaited with a deadline.
pub struct Lines(mpsc::Receiver<String>);

impl Lines {
    pub fn of(child: &mut Child) -> Lines {
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
    pub fn next_starting(&self, prefix: &str, log: &Path) -> String {
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
pub struct Served {
    pub coordinator: Coordinator,
    pub port: u16,
    /// ADDR of http://ADDR/metrics.
    pub metrics: String,
    /// ADDR of the plaintext grpc.health.v1 server (--health-listen).
    pub health: Option<String>,
}

/// Starts `command` (a coordinator), waits for its banner and the sidecar lines.
pub fn serve(mut command: Command, log: &Path, secrets: &Path, with_health: bool) -> Served {
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
pub fn dashboard_answers(url: &str, secrets: &Path) {
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
pub fn health_check(args: &[String], env: &[(String, String)], what: &str) {
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
pub fn scrape(addr: &str) -> String {
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
pub struct Running {
    pub child: Child,
    pub log: PathBuf,
}

impl Running {
    pub fn spawn(mut command: Command, log: &Path) -> Running {
        let child = command
            .stdout(std::fs::File::create(log.with_extension("out")).unwrap())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .expect("start a worker");
        Running { child, log: log.to_path_buf() }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn wait_registered(&mut self) {
        let deadline = Instant::now() + STARTUP;
        while !self.log().contains("registered") {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("{} exited ({status}) before registering:\n{}", self.log.display(), self.log());
            }
            assert!(Instant::now() < deadline, "{} did not register:\n{}", self.log.display(), self.log());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn exit_within(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "{} still runs after {limit:?}:\n{}", self.log.display(), self.log());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn terminate(&self) {
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
pub fn allowed_cpus() -> Vec<usize> {
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
pub fn own_cpu(n: usize) -> Vec<String> {
    let cpus = allowed_cpus();
    let taskset = Path::new("/usr/bin/taskset");
    if cpus.len() < 2 || !taskset.exists() {
        return Vec::new();
    }
    vec![taskset.display().to_string(), "-c".into(), cpus[n % cpus.len()].to_string()]
}

/// A directory with a stand-in `srun` (drops its options, runs the rest) and the binaries
/// under the names the job scripts call.
pub fn stand_in_slurm(dir: &Path) -> PathBuf {
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
pub fn slurm_job(script: &str, prefix: &[String], slurm: &Path, home: &Path, env: &[(&str, String)]) -> Command {
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
pub fn worker_command(prefix: &[String], argv: &[String], home: &Path, env: &[(String, String)]) -> Command {
    std::fs::create_dir_all(home).unwrap();
    let mut command = command_in(prefix, &program(&argv[0]));
    // HOME first: a unit's own Environment=HOME= wins, as under systemd.
    clean(&mut command).args(&argv[1..]).env("HOME", home).envs(env.iter().map(|(k, v)| (k, v))).current_dir(home);
    command
}

/// A grid study over `learning_rates` (one trial each): MiniLM, 32 reviews, 1 epoch.
pub fn tiny_study(dir: &Path, name: &str, model: &Path, learning_rates: &str) -> PathBuf {
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

pub fn create_study(coordinator: &Coordinator, file: &Path) {
    let out = coordinator.cli(&["study", "create", file.to_str().unwrap()]);
    assert!(out.status.success(), "study create: {}", String::from_utf8_lossy(&out.stderr));
}

pub fn wait_completed(coordinator: &Coordinator, study: &str, workers: &[&Running]) {
    let state = eventually(&format!("study {study} to end"), STUDY, || {
        let s = coordinator.study_state(study);
        (s != "RUNNING" && !s.is_empty()).then_some(s)
    });
    let logs: Vec<String> = workers.iter().map(|w| format!("{}:\n{}", w.log.display(), w.log())).collect();
    assert_eq!(state, "COMPLETED", "{}", logs.join("\n"));
}
