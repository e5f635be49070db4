use super::*;

#[test]
fn data_dir_sits_next_to_the_database() {
    assert_eq!(default_data_dir("sqlite://runs/x.db"), PathBuf::from("runs/x.db.data"));
    assert_eq!(default_data_dir("sqlite:x.db?mode=rwc"), PathBuf::from("x.db.data"));
    assert!(default_data_dir("sqlite::memory:").starts_with(std::env::temp_dir()));
}

#[tokio::test]
async fn collection_keeps_what_roots_reach() {
    let tmp = tempfile::tempdir().unwrap();
    let store = BlobStore::open(tmp.path(), 1 << 20).unwrap();
    let kept_file = store.dir().put_bytes(b"kept").await.unwrap();
    let orphan = store.dir().put_bytes(b"orphan").await.unwrap();
    let manifest = Manifest {
        format: bertsweep_transfer::manifest::FORMAT,
        kind: ManifestKind::File,
        source: "test".into(),
        files: vec![bertsweep_transfer::manifest::Entry { path: "k".into(), sha256: kept_file.to_string(), size: 4 }],
    };
    let root = store.dir().put_bytes(&manifest.to_bytes()).await.unwrap();
    assert_eq!(store.collect(|| vec![root], Duration::from_secs(3600)).await, 0, "young orphans survive");
    assert_eq!(store.collect(|| vec![root], Duration::ZERO).await, 1);
    assert!(store.dir().contains(&kept_file) && store.dir().contains(&root) && !store.dir().contains(&orphan));
    assert!(store.check_tree("task.train_file", &root, ManifestKind::File).is_ok());
    assert!(store.check_tree("task.model", &root, ManifestKind::Dir).is_err());
    store.dir().remove(&kept_file).unwrap();
    let e = store.check_tree("task.train_file", &root, ManifestKind::File).unwrap_err().to_string();
    assert!(e.contains("missing") && !e.contains('\n'), "{e}");
}

#[tokio::test]
async fn a_pinned_root_and_its_files_survive_collections_until_the_pin_goes() {
    let tmp = tempfile::tempdir().unwrap();
    let store = BlobStore::open(tmp.path(), 1 << 20).unwrap();
    let file = store.dir().put_bytes(b"model weights").await.unwrap();
    let manifest = Manifest {
        format: bertsweep_transfer::manifest::FORMAT,
        kind: ManifestKind::File,
        source: "test".into(),
        files: vec![bertsweep_transfer::manifest::Entry { path: "w".into(), sha256: file.to_string(), size: 13 }],
    };
    let root = store.dir().put_bytes(&manifest.to_bytes()).await.unwrap();
    let absent = Digest::of(b"never stored");
    let pin = store.pin(vec![root, absent]);
    let listed = store.referenced(&[root, absent]);
    let mut expected = vec![(root, manifest.to_bytes().len() as u64), (file, 13)];
    expected.sort_unstable_by_key(|(d, _)| d.to_string());
    assert_eq!(listed.present, expected);
    assert_eq!(listed.missing, [absent]);
    // Unreferenced by the registry, evicted by name: still kept (and the missing pinned
    // root does not stop the pass).
    assert_eq!(store.collect(Vec::new, Duration::ZERO).await, 0);
    assert_eq!(store.collect_only(Vec::new, vec![root]).await, 0);
    assert!(store.dir().contains(&root) && store.dir().contains(&file));
    drop(pin);
    assert_eq!(store.collect(Vec::new, Duration::ZERO).await, 2);
    assert!(!store.dir().contains(&root) && !store.dir().contains(&file));
}

async fn store_with_one_root() -> (tempfile::TempDir, BlobStore, Digest, Digest) {
    let tmp = tempfile::tempdir().unwrap();
    let store = BlobStore::open(tmp.path(), 1 << 20).unwrap();
    let file = store.dir().put_bytes(b"weights").await.unwrap();
    let manifest = Manifest {
        format: bertsweep_transfer::manifest::FORMAT,
        kind: ManifestKind::Dir,
        source: "test".into(),
        files: vec![bertsweep_transfer::manifest::Entry { path: "w".into(), sha256: file.to_string(), size: 7 }],
    };
    let root = store.dir().put_bytes(&manifest.to_bytes()).await.unwrap();
    (tmp, store, root, file)
}

#[tokio::test]
async fn a_pass_that_cannot_read_a_root_deletes_nothing_and_the_next_one_proceeds() {
    let (_tmp, store, root, file) = store_with_one_root().await;
    let orphan = store.dir().put_bytes(b"orphan").await.unwrap();
    let good = std::fs::read(store.dir().path(&root)).unwrap();
    // Corrupt the root's manifest on disk: its file must not count as unreferenced.
    std::fs::write(store.dir().path(&root), b"{ not a manifest").unwrap();
    assert_eq!(store.collect(|| vec![root], Duration::ZERO).await, 0);
    assert_eq!(store.collect_only(|| vec![root], vec![file]).await, 0);
    assert!(store.dir().contains(&file) && store.dir().contains(&orphan), "nothing deleted");
    // Unreadable (gone) counts the same.
    std::fs::remove_file(store.dir().path(&root)).unwrap();
    assert_eq!(store.collect(|| vec![root], Duration::ZERO).await, 0);
    assert!(store.dir().contains(&file) && store.dir().contains(&orphan));
    // Readable again: the pass proceeds.
    std::fs::write(store.dir().path(&root), good).unwrap();
    assert_eq!(store.collect(|| vec![root], Duration::ZERO).await, 1);
    assert!(store.dir().contains(&file) && !store.dir().contains(&orphan));
}

#[tokio::test]
async fn roots_are_read_under_the_lock_that_deletes() {
    let (_tmp, store, root, file) = store_with_one_root().await;
    let store = std::sync::Arc::new(store);
    // The registry's roots, which a completion is about to extend.
    let registry = std::sync::Arc::new(std::sync::Mutex::new(Vec::<Digest>::new()));
    // A completion has checked that the model is here and holds the lock until it commits.
    let held = store.referencing().await;
    let collector = {
        let (store, registry) = (store.clone(), registry.clone());
        tokio::spawn(async move { store.collect_only(move || registry.lock().unwrap().clone(), vec![root]).await })
    };
    // Wait until the collection is queued on the lock (readers then wait behind it).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while store.refs.try_read().is_ok() {
        assert!(std::time::Instant::now() < deadline, "the collection never asked for the lock");
        tokio::task::yield_now().await;
    }
    registry.lock().unwrap().push(root);
    drop(held);
    assert_eq!(collector.await.unwrap(), 0, "the committed reference keeps the model");
    assert!(store.dir().contains(&file) && store.dir().contains(&root));
    assert_eq!(store.collect_only(Vec::new, vec![root]).await, 2, "once unreferenced it goes");
}

#[test]
fn uploads_may_not_take_the_disk_below_the_minimum() {
    let tmp = tempfile::tempdir().unwrap();
    let (free, _) = disk_space(tmp.path()).unwrap();
    let store = BlobStore::open(tmp.path(), 1 << 20).unwrap().with_min_free_space(free / 2);
    let first = store.reserve(free / 8).expect("well above the minimum");
    let e = store.reserve(free / 2).err().expect("would go below it").to_string();
    assert!(e.contains("--min-free-space") && !e.contains('\n'), "{e}");
    let second = store.reserve(free / 8).expect("two in flight still fit");
    assert!(store.reserve(free / 4 + free / 16).is_err(), "in-flight uploads count");
    drop((first, second));
    assert_eq!(store.reserved.load(std::sync::atomic::Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_corrupted_blob_is_quarantined_and_reads_missing() {
    let (tmp, store, _root, file) = store_with_one_root().await;
    assert_eq!(store.check_stored(&file), Stored::Intact);
    let path = store.dir().path(&file);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[0] ^= 1;
    std::fs::write(&path, bytes).unwrap();
    // Rewritten at a new modification time: hashed again, found wrong, moved away.
    assert_eq!(store.check_stored(&file), Stored::Missing);
    assert!(!store.dir().contains(&file) && !store.touch(&file));
    assert!(tmp.path().join("quarantine").join(file.to_string()).is_file());
    let (checked, bad) = store.verify_all().unwrap();
    assert_eq!((checked, bad), (1, 0), "only the manifest is left, and it is intact");
}
