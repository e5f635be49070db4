//! Model directories in a real S3-compatible server (moto's, from the project's .venv, started
//! by the test): upload, verified download, and refusals for an incomplete or tampered upload.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bertsweep_transfer::object::{download_dir, upload_dir, MANIFEST_NAME};
use object_store::ObjectStore;

struct Moto(Child);

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn venv_bin(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin").join(name)
}

/// Starts moto_server on a free port; returns it and its URL.
fn start_moto() -> (Moto, String) {
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let bin = venv_bin("moto_server");
    assert!(bin.exists(), "{} is missing: run `make setup` (it installs moto[server])", bin.display());
    let child = Command::new(bin)
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start moto_server");
    let moto = Moto(child);
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "moto_server did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    (moto, format!("http://127.0.0.1:{port}"))
}

/// Creates a bucket with a path-style PUT (object_store does not create buckets).
fn create_bucket(endpoint: &str, bucket: &str) {
    let status = Command::new(venv_bin("python"))
        .args(["-c", "import sys, urllib.request as u; u.urlopen(u.Request(sys.argv[1], method='PUT')).read()"])
        .arg(format!("{endpoint}/{bucket}"))
        .status()
        .unwrap();
    assert!(status.success(), "creating bucket {bucket}");
}

#[tokio::test]
async fn a_model_directory_round_trips_through_s3_and_tampering_is_refused() {
    let (_moto, endpoint) = start_moto();
    // This test binary holds this one test: the process environment is its own.
    for (k, v) in [
        ("AWS_ENDPOINT", endpoint.as_str()),
        ("AWS_ALLOW_HTTP", "true"),
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_REGION", "us-east-1"),
        ("AWS_VIRTUAL_HOSTED_STYLE_REQUEST", "false"),
    ] {
        std::env::set_var(k, v);
    }
    create_bucket(&endpoint, "models");
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("model");
    std::fs::create_dir_all(model.join("sub")).unwrap();
    std::fs::write(model.join("config.json"), b"{\"model_type\": \"bert\"}").unwrap();
    let weights: Vec<u8> = (0..12_000_000u32).map(|i| (i.wrapping_mul(2654435761) >> 11) as u8).collect();
    std::fs::write(model.join("model.safetensors"), &weights).unwrap();
    std::fs::write(model.join("sub/vocab.txt"), b"[PAD]\n").unwrap();

    let url = "s3://models/sweeps/study/3";
    let manifest = upload_dir(&model, url, "test:/model".into()).await.unwrap();
    assert_eq!(manifest.files.len(), 3);
    let (files, bytes) = download_dir(url, &tmp.path().join("back")).await.unwrap();
    assert_eq!((files, bytes), (3, manifest.total_size()));
    for f in ["config.json", "model.safetensors", "sub/vocab.txt"] {
        assert_eq!(std::fs::read(tmp.path().join("back").join(f)).unwrap(), std::fs::read(model.join(f)).unwrap());
    }

    // Tampered weights: refused, and the destination never appears.
    let store = object_store::aws::AmazonS3Builder::from_env().with_url("s3://models").build().unwrap();
    let weights_path = object_store::path::Path::from("sweeps/study/3/model.safetensors");
    store.put(&weights_path, b"tampered".to_vec().into()).await.unwrap();
    let e = download_dir(url, &tmp.path().join("tampered")).await.unwrap_err().to_string();
    assert!(e.contains("does not match") && !e.contains('\n'), "{e}");
    assert!(!tmp.path().join("tampered").exists());

    // An upload that never wrote its manifest is incomplete.
    store.delete(&object_store::path::Path::from(format!("sweeps/study/3/{MANIFEST_NAME}"))).await.unwrap();
    let e = download_dir(url, &tmp.path().join("partial")).await.unwrap_err().to_string();
    assert!(e.contains("never finished"), "{e}");
    // A URL of an unknown scheme is one line.
    let e = download_dir("ftp://x/y", &tmp.path().join("x")).await.unwrap_err().to_string();
    assert!(!e.contains('\n'), "{e}");
}
