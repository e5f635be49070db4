//! Model directories in a real S3-compatible server (moto's, from the project's .venv, started
//! by the test): upload, verified download, and refusals for an incomplete or tampered upload;
//! deletion by the directory's own manifest only.

use bertsweep_tests::Moto;
use bertsweep_transfer::object::{delete_dir, download_dir, list_dirs, upload_dir, MANIFEST_NAME};
use object_store::ObjectStore;

#[tokio::test]
async fn a_model_directory_round_trips_through_s3_and_tampering_is_refused() {
    let moto = Moto::start();
    // This test binary holds this one test: the process environment is its own.
    for (k, v) in moto.env() {
        std::env::set_var(k, v);
    }
    moto.create_bucket("models");
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

    // Deleting a directory removes the files its manifest lists and the manifest; objects
    // under it that it does not list (another directory nested in it) and its neighbours stay.
    // Without a readable manifest nothing at all is deleted.
    let small = tmp.path().join("small");
    std::fs::create_dir_all(&small).unwrap();
    std::fs::write(small.join("state.json"), b"{}").unwrap();
    upload_dir(&small, "s3://models/ckpt", "t".into()).await.unwrap();
    upload_dir(&small, "s3://models/ckpt/nested", "t".into()).await.unwrap();
    upload_dir(&small, "s3://models/ckpt-neighbour", "t".into()).await.unwrap();
    let e = delete_dir("s3://models/").await.unwrap_err().to_string();
    assert!(e.contains("left alone") && !e.contains('\n'), "{e}");
    store.put(&object_store::path::Path::from(format!("garbled/{MANIFEST_NAME}")), b"{".to_vec().into()).await.unwrap();
    store.put(&object_store::path::Path::from("garbled/keep.bin"), b"k".to_vec().into()).await.unwrap();
    assert!(delete_dir("s3://models/garbled").await.unwrap_err().to_string().contains("unreadable"));
    assert_eq!(delete_dir("s3://models/ckpt").await.unwrap(), 2, "state.json and the manifest");
    for kept in ["s3://models/ckpt/nested", "s3://models/ckpt-neighbour"] {
        download_dir(kept, &tmp.path().join(kept.replace('/', "_"))).await.unwrap_or_else(|e| panic!("{kept}: {e}"));
    }
    assert!(store.head(&object_store::path::Path::from("garbled/keep.bin")).await.is_ok());
    assert_eq!(list_dirs("s3://models/ckpt", 10).await.unwrap(), ["s3://models/ckpt/nested"]);
}
