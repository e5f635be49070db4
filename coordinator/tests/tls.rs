//! Secure transport through the real binaries: `bertsweep serve` with TLS (and mutual TLS)
//! from PEM files, CLI clients trusting a private CA, tokens from files, secure defaults, and a
//! one-line error naming the cause for every certificate or TLS problem.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use bertsweep_testkit::ServeProcess;
use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair};

/// A CA and the files of certificates it (or a stranger) issued.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn arg(&self, name: &str) -> String {
        self.path(name).display().to_string()
    }

    /// ca.pem; server.pem/key for 127.0.0.1 and localhost; other-name.pem (for another host);
    /// expired.pem; client.pem/key; a stranger CA's stranger-server.pem and stranger-client.pem.
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: String| std::fs::write(dir.path().join(name), text).unwrap();
        let ca = |cn: &str| {
            let key = KeyPair::generate().unwrap();
            let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.distinguished_name.push(DnType::CommonName, cn);
            let cert = params.self_signed(&key).unwrap();
            (cert, key)
        };
        let (ca_cert, ca_key) = ca("bertsweep test CA");
        let (stranger_cert, stranger_key) = ca("someone else's CA");
        write("ca.pem", ca_cert.pem());
        let leaf = |names: Vec<String>,
                    usage: ExtendedKeyUsagePurpose,
                    expired: bool,
                    issuer: (&rcgen::Certificate, &KeyPair)| {
            let key = KeyPair::generate().unwrap();
            let mut params = CertificateParams::new(names).unwrap();
            params.extended_key_usages = vec![usage];
            if expired {
                params.not_before = rcgen::date_time_ymd(2000, 1, 1);
                params.not_after = rcgen::date_time_ymd(2001, 1, 1);
            }
            let cert = params.signed_by(&key, issuer.0, issuer.1).unwrap();
            (cert.pem(), key.serialize_pem())
        };
        let local = || vec!["127.0.0.1".to_string(), "localhost".to_string()];
        for (name, names, usage, expired, issuer) in [
            ("server", local(), ExtendedKeyUsagePurpose::ServerAuth, false, (&ca_cert, &ca_key)),
            (
                "other-name",
                vec!["coordinator.example".to_string()],
                ExtendedKeyUsagePurpose::ServerAuth,
                false,
                (&ca_cert, &ca_key),
            ),
            ("expired", local(), ExtendedKeyUsagePurpose::ServerAuth, true, (&ca_cert, &ca_key)),
            ("stranger-server", local(), ExtendedKeyUsagePurpose::ServerAuth, false, (&stranger_cert, &stranger_key)),
            ("client", vec!["worker-1".to_string()], ExtendedKeyUsagePurpose::ClientAuth, false, (&ca_cert, &ca_key)),
            (
                "stranger-client",
                vec!["worker-x".to_string()],
                ExtendedKeyUsagePurpose::ClientAuth,
                false,
                (&stranger_cert, &stranger_key),
            ),
        ] {
            let (cert, key) = leaf(names, usage, expired, issuer);
            write(&format!("{name}.pem"), cert);
            write(&format!("{name}.key"), key);
        }
        write("token", "tls-s3cret\n".into());
        Pki { dir }
    }

    /// `bertsweep serve` with the named server certificate (and client CA for mutual TLS).
    fn serve(&self, db: &Path, cert: &str, mutual: bool) -> ServeProcess {
        let (cert, key, ca, token) =
            (self.arg(&format!("{cert}.pem")), self.arg(&format!("{cert}.key")), self.arg("ca.pem"), self.arg("token"));
        let mut extra = vec!["--tls-cert", &cert, "--tls-key", &key, "--token-file", &token];
        if mutual {
            extra.extend(["--tls-client-ca", &ca]);
        }
        ServeProcess::start(env!("CARGO_BIN_EXE_bertsweep"), db, &extra).unwrap()
    }
}

fn bertsweep(url: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_bertsweep"))
        .env_remove("BERTSWEEP_TOKEN")
        .env_remove("BERTSWEEP_TOKEN_FILE")
        .env_remove("BERTSWEEP_CA_CERT")
        .env("BERTSWEEP_COORDINATOR", url)
        .env("RUST_LOG", "off")
        .args(args)
        .output()
        .unwrap()
}

/// Asserts a failure with one line on stderr containing every needle.
fn one_line_error(o: &Output, needles: &[&str]) {
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "expected a failure, got: {}", String::from_utf8_lossy(&o.stdout));
    assert_eq!(err.trim_end().lines().count(), 1, "one line expected: {err}");
    for needle in needles {
        assert!(err.contains(needle), "expected {needle:?} in {err:?}");
    }
}

fn https(serve: &ServeProcess) -> String {
    serve.url.replace("http://", "https://")
}

#[test]
fn tls_with_a_private_ca_and_a_token_file() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let serve = pki.serve(&dir.path().join("tls.db"), "server", false);
    let url = https(&serve);
    let ok = bertsweep(&url, &["--ca-cert", &pki.arg("ca.pem"), "--token-file", &pki.arg("token"), "study", "list"]);
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    let localhost = url.replace("127.0.0.1", "localhost");
    let ok = bertsweep(&localhost, &["--ca-cert", &pki.arg("ca.pem"), "--token", "tls-s3cret", "study", "list"]);
    assert!(ok.status.success(), "the certificate names localhost too: {}", String::from_utf8_lossy(&ok.stderr));

    // Without the CA (system roots only): an unknown issuer, said as such.
    one_line_error(
        &bertsweep(&url, &["--token-file", &pki.arg("token"), "study", "list"]),
        &["does not trust", "--ca-cert"],
    );
    // Plaintext against TLS.
    let plain = serve.url.clone();
    one_line_error(&bertsweep(&plain, &["--token-file", &pki.arg("token"), "study", "list"]), &["https://"]);
    // The right CA but the wrong token, and an empty token file.
    one_line_error(
        &bertsweep(&url, &["--ca-cert", &pki.arg("ca.pem"), "--token", "nope", "study", "list"]),
        &["wrong token"],
    );
    std::fs::write(pki.path("empty"), "\n").unwrap();
    one_line_error(
        &bertsweep(&url, &["--ca-cert", &pki.arg("ca.pem"), "--token-file", &pki.arg("empty"), "study", "list"]),
        &["is empty"],
    );
    one_line_error(
        &bertsweep(&url, &["--ca-cert", &pki.arg("missing.pem"), "study", "list"]),
        &["cannot read --ca-cert"],
    );
}

#[test]
fn certificate_problems_are_named() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let ca = pki.arg("ca.pem");
    let client = |cert: &str, db: &str| {
        let serve = pki.serve(&dir.path().join(db), cert, false);
        bertsweep(&https(&serve), &["--ca-cert", &ca, "--token-file", &pki.arg("token"), "study", "list"])
    };
    one_line_error(&client("other-name", "a.db"), &["does not hold the name"]);
    one_line_error(&client("expired", "b.db"), &["expired"]);
    one_line_error(&client("stranger-server", "c.db"), &["does not trust"]);
}

#[test]
fn mutual_tls_requires_a_client_certificate_the_coordinator_trusts() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let serve = pki.serve(&dir.path().join("mtls.db"), "server", true);
    let url = https(&serve);
    let base = ["--ca-cert".to_string(), pki.arg("ca.pem"), "--token-file".to_string(), pki.arg("token")];
    let with = |extra: &[String]| {
        let args: Vec<String> =
            base.iter().cloned().chain(extra.iter().cloned()).chain(["study".into(), "list".into()]).collect();
        bertsweep(&url, &args.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let ok = with(&["--client-cert".into(), pki.arg("client.pem"), "--client-key".into(), pki.arg("client.key")]);
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    one_line_error(&with(&[]), &["client", "certificate"]);
    one_line_error(
        &with(&[
            "--client-cert".into(),
            pki.arg("stranger-client.pem"),
            "--client-key".into(),
            pki.arg("stranger-client.key"),
        ]),
        &["certificate"],
    );
    one_line_error(&with(&["--client-cert".into(), pki.arg("client.pem")]), &["--client-key"]);
}

#[test]
fn serve_is_secure_by_default() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("open.db");
    let serve = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_bertsweep"))
            .env_remove("BERTSWEEP_TOKEN")
            .env_remove("BERTSWEEP_TOKEN_FILE")
            .args(["serve", "--db"])
            .arg(&db)
            .args(args)
            .output()
            .unwrap()
    };
    one_line_error(&serve(&["--listen", "0.0.0.0:0"]), &["without a token", "--insecure"]);
    one_line_error(&serve(&["--listen", "127.0.0.1:0", "--token", " "]), &["empty"]);
    // A guessable token on a reachable address (gRPC or dashboard) is refused with how to make one.
    one_line_error(&serve(&["--listen", "0.0.0.0:0", "--token", "x"]), &["at least 16", "openssl rand"]);
    one_line_error(
        &serve(&["--listen", "127.0.0.1:0", "--http", "0.0.0.0:0", "--token", "fifteen-bytes!!"]),
        &["at least 16", "--token-file"],
    );
    one_line_error(&serve(&["--listen", "127.0.0.1:0", "--idle-timeout", "10s"]), &["--idle-timeout", "--long-poll"]);
    one_line_error(
        &serve(&["--listen", "127.0.0.1:0", "--http", "0.0.0.0:0"]),
        &["dashboard", "without a token", "--insecure"],
    );
    one_line_error(
        &serve(&["--listen", "127.0.0.1:0", "--tls-cert", "/nonexistent.pem", "--tls-key", "/nonexistent.key"]),
        &["cannot read --tls-cert"],
    );
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not a certificate").unwrap();
    let g = garbage.display().to_string();
    one_line_error(&serve(&["--listen", "127.0.0.1:0", "--tls-cert", &g, "--tls-key", &g]), &["TLS"]);
    assert!(!db.exists(), "a refused start creates no database");
}
