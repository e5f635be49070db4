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

mod deploy;

use bertsweep_tests::*;
use deploy::*;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

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
