//! The `bertsweep` CLI against a live coordinator: output formats, bad input, auth.

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use common::*;

fn bertsweep(url: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_bertsweep"))
        .env_remove("BERTSWEEP_TOKEN")
        .env("BERTSWEEP_COORDINATOR", url)
        .env("RUST_LOG", "off")
        .args(args)
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Asserts a failure with exactly one line on stderr containing `needle`.
fn assert_one_line_error(o: &Output, needle: &str) {
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "expected failure, got success: {}", stdout(o));
    assert_eq!(err.trim_end().lines().count(), 1, "one-line error expected, got: {err}");
    assert!(err.starts_with("error: "), "{err}");
    assert!(err.contains(needle), "expected {needle:?} in {err:?}");
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn formats_against_a_live_server() {
    let server = TestServer::start(Duration::from_secs(30)).await;
    let url = server.url.clone();
    let file = write(server.dir.path(), "s.toml", &study_toml("fmt", "parallel_trials = 2", &grid_params(2)));
    let out = bertsweep(&url, &["study", "create", &file]);
    assert!(out.status.success(), "{out:?}");
    assert!(stdout(&out).starts_with("created study fmt (grid sampler, 4 trials, 2 in parallel"), "{}", stdout(&out));

    // No completed trial yet: `best` says so and fails.
    assert_one_line_error(&bertsweep(&url, &["best", "fmt"]), "has no completed trial yet");

    // Follow the study in the background while fake workers run it.
    let follower = {
        let url = url.clone();
        tokio::task::spawn_blocking(move || bertsweep(&url, &["trials", "fmt", "--follow", "--format", "json"]))
    };
    let mut c = server.client().await;
    let w = register(&mut c).await;
    for acc in [0.7, 0.9, 0.8, 0.6] {
        let a = acquire(&mut c, &w, 1000).await.unwrap();
        report(&mut c, &a, 1, acc - 0.05).await.unwrap();
        complete(&mut c, &a, acc).await.unwrap();
    }
    let followed = tokio::time::timeout(Duration::from_secs(20), follower).await.unwrap().unwrap();
    assert!(followed.status.success());
    let lines: Vec<serde_json::Value> = stdout(&followed).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.last().unwrap()["study_state"], "COMPLETED");
    assert!(lines.iter().filter(|l| l["state"] == "COMPLETED").count() >= 4);

    // Table: aligned columns, one row per trial.
    let table = stdout(&bertsweep(&url, &["trials", "fmt"]));
    let rows: Vec<&str> = table.lines().collect();
    assert_eq!(rows.len(), 5, "{table}");
    assert!(rows[0].starts_with("#  STATE      learning_rate  per_device_train_batch_size  VALUE"), "{table}");
    let value_col = rows[0].find("VALUE").unwrap();
    assert_eq!(&rows[2][value_col..value_col + 6], "0.9000", "{table}");

    // JSON: stable fields for scripts.
    let json: serde_json::Value =
        serde_json::from_str(&stdout(&bertsweep(&url, &["trials", "fmt", "--format", "json"]))).unwrap();
    let trials = json.as_array().unwrap();
    assert_eq!(trials.len(), 4);
    assert_eq!(trials[1]["params"]["per_device_train_batch_size"], 32);
    assert_eq!(trials[1]["value"], 0.9);
    assert_eq!(trials[1]["epochs"][0]["epoch"], 1);

    // CSV: header and one row per trial.
    let csv = stdout(&bertsweep(&url, &["trials", "fmt", "--format", "csv"]));
    let mut csv_lines = csv.lines();
    assert_eq!(
        csv_lines.next().unwrap(),
        "number,state,learning_rate,per_device_train_batch_size,value,value_ci_low,value_ci_high,eval_accuracy,eval_loss,last_epoch,attempt,peak_device_memory_bytes,artifact,error"
    );
    // No interval: the test worker sent no dev-set predictions.
    assert!(csv_lines.next().unwrap().starts_with("0,COMPLETED,1e-5,16,0.7,,,0.7,"), "{csv}");

    // best --format json has the documented fields.
    let best: serde_json::Value =
        serde_json::from_str(&stdout(&bertsweep(&url, &["best", "fmt", "--format", "json"]))).unwrap();
    for field in ["study", "number", "state", "params", "value", "metrics", "artifact"] {
        assert!(best.get(field).is_some(), "best json lacks {field}: {best}");
    }
    assert_eq!(
        (best["study"].as_str(), best["number"].as_u64(), best["value"].as_f64()),
        (Some("fmt"), Some(1), Some(0.9))
    );
    assert!(best["artifact"].is_null());
    let best_table = stdout(&bertsweep(&url, &["best", "fmt"]));
    assert!(
        best_table.contains("value                        0.9000")
            || best_table.lines().any(|l| l.starts_with("value") && l.ends_with("0.9000")),
        "{best_table}"
    );

    let list = stdout(&bertsweep(&url, &["study", "list"]));
    assert!(list.lines().nth(1).unwrap().starts_with("fmt   COMPLETED  grid     4/4"), "{list}");
    let show = stdout(&bertsweep(&url, &["study", "show", "fmt"]));
    assert!(show.contains("completed        4"), "{show}");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_one_line_and_changes_nothing() {
    let server = TestServer::start(Duration::from_secs(30)).await;
    let url = server.url.clone();
    let dir = server.dir.path();
    let good = study_toml("good", "parallel_trials = 2", &grid_params(2));
    let cases: Vec<(String, &str)> = vec![
        (good.replace("parallel_trials", "paralel_trials"), "unknown field `paralel_trials`"),
        (good.replace("parallel_trials = 2", "parallel_trials = \"two\""), "invalid type"),
        (good.replace("min = 1e-5\nmax = 5e-5", "min = 5e-5\nmax = 1e-5"), "empty or inverted"),
        (
            good.replace("[parameters.learning_rate]", "[parameters.warmup_ratio]")
                .replace("min = 1e-5", "min = 0.0")
                .replace("max = 5e-5", "max = 0.3"),
            "log_uniform needs min > 0",
        ),
        (good.replace("[parameters.per_device_train_batch_size]", "[parameters.batch_size]"), "unknown parameter"),
        (good.replace("grid_points = 2", "grid_points = 60000"), "more than the limit of 100000"),
        (good.replace("name = \"good\"", "name = \"bad name!\""), "use 1-64 characters"),
        ("name = [".into(), "line 1"),
        // Inputs: a path missing on this machine, a file where a directory belongs, bad forms.
        (good.replace("\"worker:/data/train.tsv\"", "\"/no/such/train.tsv\""), "does not exist on this machine"),
        (good.replace("\"worker:/models/m\"", "\"/etc/hostname\""), "is not a directory"),
        (good.replace("\"worker:/data/dev.tsv\"", "\"hf:org/model\""), "names a Hub model, not a data file"),
        (good.replace("\"worker:/models/m\"", "\"hf:a/b/c\""), "is not a Hub model"),
        (good.replace("\"worker:/models/m\"", "\"blob:sha256:abc\""), "is not a blob reference"),
        (
            good.replace("\"worker:/models/m\"", &format!("\"blob:sha256:{}\"", "0".repeat(64))),
            "is not on this coordinator",
        ),
    ];
    for (i, (text, needle)) in cases.iter().enumerate() {
        let file = write(dir, &format!("bad{i}.toml"), text);
        assert_one_line_error(&bertsweep(&url, &["study", "create", &file]), needle);
    }
    assert_one_line_error(
        &bertsweep(&url, &["study", "create", "/no/such/file.toml"]),
        "cannot read /no/such/file.toml",
    );
    // Nothing was created by any of them.
    assert!(stdout(&bertsweep(&url, &["study", "list"])).starts_with("no studies yet"));

    let file = write(dir, "good.toml", &good);
    assert!(bertsweep(&url, &["study", "create", &file]).status.success());
    assert_one_line_error(&bertsweep(&url, &["study", "create", &file]), "already exists");
    assert_one_line_error(&bertsweep(&url, &["study", "show", "nope"]), "unknown study \"nope\"");
    assert_one_line_error(&bertsweep(&url, &["trials", "nope"]), "unknown study");
    assert_one_line_error(&bertsweep(&url, &["best", "nope"]), "unknown study");
    assert_one_line_error(&bertsweep(&url, &["study", "stop", "nope"]), "unknown study");
    assert_one_line_error(
        &bertsweep("http://127.0.0.1:1", &["study", "list"]),
        "cannot reach the coordinator at http://127.0.0.1:1",
    );
    assert_one_line_error(&bertsweep("not a url", &["study", "list"]), "not a valid URL");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_token_on_and_off() {
    let server = TestServer::start_with(Duration::from_secs(30), Some("s3cret")).await;
    let url = server.url.clone();
    assert_one_line_error(&bertsweep(&url, &["study", "list"]), "requires a token");
    assert_one_line_error(&bertsweep(&url, &["--token", "nope", "study", "list"]), "wrong token");
    let ok = bertsweep(&url, &["--token", "s3cret", "study", "list"]);
    assert!(ok.status.success(), "{ok:?}");
    let via_env = Command::new(env!("CARGO_BIN_EXE_bertsweep"))
        .env("BERTSWEEP_TOKEN", "s3cret")
        .args(["--coordinator", &url, "study", "list"])
        .output()
        .unwrap();
    assert!(via_env.status.success());
    // Health needs no token.
    let channel = tonic::transport::Endpoint::from_shared(url.clone()).unwrap().connect().await.unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let status =
        health.check(tonic_health::pb::HealthCheckRequest { service: String::new() }).await.unwrap().into_inner();
    assert_eq!(status.status, tonic_health::pb::health_check_response::ServingStatus::Serving as i32);
    // gRPC worker calls are refused without the token too.
    let mut c = server.client().await;
    let err = c.register_worker(bertsweep_proto::v1::RegisterWorkerRequest::default()).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated);
    server.shutdown().await;

    // Without --token the same calls need no credentials.
    let open = TestServer::start(Duration::from_secs(30)).await;
    assert!(bertsweep(&open.url, &["study", "list"]).status.success());
    open.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeats_rank_configurations_and_pruned_trials_show_their_epoch() {
    let server = TestServer::start(Duration::from_secs(30)).await;
    let url = server.url.clone();
    let text = study_toml("rep", "parallel_trials = 4", &grid_params(2))
        .replace("sampler = \"grid\"", "sampler = \"grid\"\nrepeats = 2")
        + "[parameters.num_train_epochs]\nvalue = 3\n[early_stopping]\ntype = \"asha\"\nreduction_factor = 2\n";
    let file = write(server.dir.path(), "rep.toml", &text);
    let created = bertsweep(&url, &["study", "create", &file]);
    assert!(created.status.success(), "{created:?}");
    let mut c = server.client().await;
    let w = register(&mut c).await;
    // 4 configurations × 2 seeds, one trial at a time. Epoch-1 values rise with the trial
    // number except trial 1, the only one below the median of its rung: ASHA (top half) stops it.
    let epoch1 = [0.70, 0.40, 0.72, 0.74, 0.76, 0.78, 0.80, 0.82];
    for (i, acc) in epoch1.iter().enumerate() {
        let a = acquire(&mut c, &w, 1000).await.unwrap();
        assert_eq!(a.number as usize, i);
        let r = report(&mut c, &a, 1, *acc).await.unwrap();
        if r.decision == bertsweep_proto::v1::Decision::Stop as i32 {
            continue;
        }
        complete(&mut c, &a, acc + 0.05).await.unwrap();
    }
    let table = stdout(&bertsweep(&url, &["trials", "rep"]));
    let row1 = table.lines().nth(2).unwrap();
    assert!(row1.starts_with("1  PRUNED") && row1.ends_with("pruned at epoch 1"), "{table}");
    assert!(table.contains("configurations ranked by mean over seeds and folds:"), "{table}");
    let ranked: Vec<&str> = table.lines().skip_while(|l| !l.starts_with("RANK")).collect();
    assert!(ranked[0].contains("MEAN") && ranked[0].contains("STD"), "{table}");
    assert!(ranked[1].starts_with("1 ") && ranked[1].contains("0.8600") && ranked[1].ends_with("6,7"), "{table}");
    let best: serde_json::Value =
        serde_json::from_str(&stdout(&bertsweep(&url, &["best", "rep", "--format", "json"]))).unwrap();
    assert_eq!(best["number"], 7);
    assert!((best["config"]["mean"].as_f64().unwrap() - 0.86).abs() < 1e-9, "{best}");
    assert_eq!(best["config"]["trials"], serde_json::json!([6, 7]));
    let csv = stdout(&bertsweep(&url, &["trials", "rep", "--format", "csv"]));
    assert!(csv.lines().next().unwrap().ends_with(",config_mean,config_std"), "{csv}");
    server.shutdown().await;
}

/// `bertsweep importance`: fANOVA over completed trials through the CLI. The objective
/// follows the learning rate only, so it ranks first; the numbers repeat for a seed; a study
/// without enough completed trials gets one line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn importance_ranks_the_parameter_that_matters() {
    let server = TestServer::start(Duration::from_secs(30)).await;
    let url = server.url.clone();
    let params = "[parameters.learning_rate]\ndistribution = \"log_uniform\"\nmin = 1e-5\nmax = 1e-3\n\
                  [parameters.per_device_train_batch_size]\nvalues = [16, 32]\n";
    let text = bertsweep_testkit::StudyToml::new("imp")
        .sampler("random")
        .seed(3)
        .budget("max_trials = 30\nparallel_trials = 1")
        .parameters(params)
        .to_string();
    let file = write(server.dir.path(), "imp.toml", &text);
    assert!(bertsweep(&url, &["study", "create", &file]).status.success());
    assert_one_line_error(&bertsweep(&url, &["importance", "imp"]), "0 completed trial(s)");

    let mut c = server.client().await;
    let w = register(&mut c).await;
    for _ in 0..30 {
        let a = acquire(&mut c, &w, 1000).await.unwrap();
        let lr = match a.params["learning_rate"].kind {
            Some(bertsweep_proto::v1::param_value::Kind::FloatValue(f)) => f,
            ref other => panic!("learning_rate is {other:?}"),
        };
        // Best at 1e-4, worse the further away in log space; batch size does not matter.
        complete(&mut c, &a, 0.9 - 0.1 * (lr.log10() + 4.0).powi(2)).await.unwrap();
    }
    let json_out = bertsweep(&url, &["importance", "imp", "--format", "json", "--seed", "1"]);
    assert!(json_out.status.success(), "{json_out:?}");
    let rows: serde_json::Value = serde_json::from_slice(&json_out.stdout).unwrap();
    assert_eq!(rows[0]["parameter"], "learning_rate", "{rows}");
    assert!(rows[0]["importance"].as_f64().unwrap() > 0.8, "{rows}");
    assert_eq!(rows.as_array().unwrap().len(), 2, "{rows}");
    let again = bertsweep(&url, &["importance", "imp", "--format", "json", "--seed", "1"]);
    assert_eq!(json_out.stdout, again.stdout, "the same seed gives the same numbers");
    let table = stdout(&bertsweep(&url, &["importance", "imp"]));
    assert!(table.starts_with("parameter"), "{table}");
    assert!(table.lines().nth(1).unwrap().starts_with("learning_rate"), "{table}");
    assert_one_line_error(&bertsweep(&url, &["importance", "nope"]), "unknown study");
}

#[test]
fn log_format_json_writes_one_object_per_line() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("logs.db").display());
    let mut child = Command::new(env!("CARGO_BIN_EXE_bertsweep"))
        .args(["--log-format", "json", "serve", "--listen", "127.0.0.1:0", "--db", &db])
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    stderr.read_line(&mut line).unwrap();
    let _ = child.kill();
    let _ = child.wait();
    let object: serde_json::Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
    assert_eq!(object["level"], "INFO", "{object}");
    assert!(object["message"].is_string() && object["timestamp"].is_string(), "{object}");
    // A format it does not know is refused in one line, before anything starts.
    let refused =
        Command::new(env!("CARGO_BIN_EXE_bertsweep")).args(["--log-format", "yaml", "health"]).output().unwrap();
    assert_eq!(refused.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("use text or json"));
}
