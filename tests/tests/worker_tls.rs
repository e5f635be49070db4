//! A worker reaches a coordinator over mutual TLS with a private CA, a client certificate and a
//! token file (all through the environment, as a Kubernetes Secret or systemd credential would
//! provide them), and leases its trials; a worker given the wrong CA stops at once with one
//! line naming the problem instead of retrying forever.

use std::path::Path;
use std::time::{Duration, Instant};

use bertsweep_tests::*;
use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair};

/// Writes ca.pem, server.pem/key (127.0.0.1), client.pem/key, other-ca.pem and token.
fn write_pki(dir: &Path) {
    let write = |name: &str, text: String| std::fs::write(dir.join(name), text).unwrap();
    let ca = |cn: &str| {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, cn);
        (params.self_signed(&key).unwrap(), key)
    };
    let (ca_cert, ca_key) = ca("test CA");
    write("ca.pem", ca_cert.pem());
    write("other-ca.pem", ca("other CA").0.pem());
    for (name, san, usage) in [
        ("server", "127.0.0.1", ExtendedKeyUsagePurpose::ServerAuth),
        ("client", "worker", ExtendedKeyUsagePurpose::ClientAuth),
    ] {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec![san.to_string()]).unwrap();
        params.extended_key_usages = vec![usage];
        write(&format!("{name}.pem"), params.signed_by(&key, &ca_cert, &ca_key).unwrap().pem());
        write(&format!("{name}.key"), key.serialize_pem());
    }
    write("token", "worker-s3cret-0123456789\n".into());
}

#[test]
fn a_worker_leases_trials_over_mutual_tls_and_a_wrong_ca_stops_it_at_once() {
    let dir = tempfile::tempdir().unwrap();
    write_pki(dir.path());
    let p = |name: &str| dir.path().join(name).display().to_string();
    let mut coordinator = Coordinator::start_with(
        "127.0.0.1:0",
        &dir.path().join("tls.db"),
        "30s",
        &[
            "--tls-cert",
            &p("server.pem"),
            "--tls-key",
            &p("server.key"),
            "--tls-client-ca",
            &p("ca.pem"),
            "--token-file",
            &p("token"),
        ],
    );
    assert!(coordinator.url.starts_with("https://"));
    coordinator.client_env = vec![
        ("BERTSWEEP_CA_CERT".into(), p("ca.pem")),
        ("BERTSWEEP_CLIENT_CERT".into(), p("client.pem")),
        ("BERTSWEEP_CLIENT_KEY".into(), p("client.key")),
        ("BERTSWEEP_TOKEN_FILE".into(), p("token")),
    ];
    // A study whose model is missing: a worker that leases the trial fails it at once.
    let study = unrunnable_study(dir.path(), "tls");
    let created = coordinator.cli(&["study", "create", study.to_str().unwrap()]);
    assert!(created.status.success(), "{}", String::from_utf8_lossy(&created.stderr));

    let mut worker = coordinator.worker("tls", &dir.path().join("artifacts"), &dir.path().join("worker.log"));
    let t = eventually("the worker to lease the trial over TLS", Duration::from_secs(120), || {
        coordinator.trials("tls").into_iter().next().filter(|t| t["attempt"].as_u64() >= Some(1))
    });
    assert!(!t["worker_id"].is_null(), "{t}");
    assert!(worker.wait().unwrap().success(), "the worker exits once its study has ended");

    // The wrong CA: one line, and an exit instead of endless retries.
    coordinator.client_env[0].1 = p("other-ca.pem");
    let mut wrong = coordinator.worker("tls", &dir.path().join("artifacts"), &dir.path().join("wrong.log"));
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = wrong.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "a worker with the wrong CA kept running");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(!status.success());
    let err = std::fs::read_to_string(dir.path().join("wrong.err")).unwrap();
    let last = err.trim_end().lines().last().unwrap_or_default();
    assert!(last.contains("does not trust") && last.contains("--ca-cert"), "{err}");
}
