//! `bertsweep backup FILE [--blobs DIR]` takes an online, consistent copy of a running
//! coordinator's database and the list of blobs it refers to (FILE.blobs), fetching those blobs
//! into DIR (a blob directory, laid out as the coordinator's data directory) while the
//! coordinator keeps them pinned. `bertsweep restore FILE --db NEW [--blobs DIR]` rebuilds a
//! database and data directory from that, offline, checking every byte before the database
//! appears.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use bertsweep_transfer::blob_dir::BlobDir;
use bertsweep_transfer::remote::{Remote, Size};
use bertsweep_transfer::{human_bytes, Digest};
use clap::Args;

use super::client::Client;
use super::inputs::shown;

/// Flags of `backup`.
#[derive(Debug, Args)]
pub struct BackupArgs {
    /// Where the database copy goes (must not exist); its blob list goes to FILE.blobs. An
    /// existing directory gets a new `bertsweep-<UTC time>.db` in it (scheduled backups).
    pub file: PathBuf,
    /// Also fetch every blob the copy refers to (inputs, kept models, checkpoints) into this
    /// blob directory; blobs already there are not fetched again, so one DIR serves many
    /// backups.
    #[arg(long)]
    pub blobs: Option<PathBuf>,
    /// With FILE a directory: keep only the newest N backups in it, and with --blobs only the
    /// blobs their lists name (nothing is pruned if any list cannot be read).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub keep: Option<u32>,
}

/// Name prefix of the backups `backup DIR` creates (and `--keep` prunes).
const DATED_PREFIX: &str = "bertsweep-";

/// Flags of `restore`.
#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// The database copy `bertsweep backup` wrote (FILE.blobs must sit beside it).
    pub backup: PathBuf,
    /// The database to create (must not exist); serve it with `bertsweep serve --db`.
    #[arg(long)]
    pub db: PathBuf,
    /// The new data directory (default: `<db>.data`, as `serve` uses).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// The blob directory `backup --blobs` filled.
    #[arg(long)]
    pub blobs: Option<PathBuf>,
}

/// The list file beside a backup.
fn list_path(file: &Path) -> PathBuf {
    with_suffix(file, ".blobs")
}

/// `path` with `suffix` appended to its name.
fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// A backup's list: the database's size and sha256, then every blob with its size.
#[derive(Debug, PartialEq)]
struct BlobList {
    database_size: u64,
    database_sha256: Digest,
    blobs: Vec<(Digest, u64)>,
}

impl BlobList {
    fn render(&self, source: &str) -> String {
        let mut text =
            format!("# bertsweep backup of {source}\n# database {} {}\n", self.database_size, self.database_sha256);
        for (digest, size) in &self.blobs {
            text.push_str(&format!("{digest} {size}\n"));
        }
        text
    }

    fn parse(text: &str, path: &Path) -> Result<BlobList> {
        let bad =
            |line: usize, why: &str| anyhow!("{} line {line}: {why}; is it a `bertsweep backup` list?", shown(path));
        let mut database = None;
        let mut blobs = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let number = i + 1;
            if let Some(rest) = line.strip_prefix("# database ") {
                let (size, sha) = rest.split_once(' ').ok_or_else(|| bad(number, "the database line is incomplete"))?;
                let size = size.parse().map_err(|_| bad(number, "the database size is not a number"))?;
                let sha = sha.parse().map_err(|_| bad(number, "the database sha256 is malformed"))?;
                database = Some((size, sha));
                continue;
            }
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            let (digest, size) = line.split_once(' ').ok_or_else(|| bad(number, "expected `<sha256> <size>`"))?;
            let digest = digest.parse().map_err(|_| bad(number, "the sha256 is malformed"))?;
            let size = size.parse().map_err(|_| bad(number, "the size is not a number"))?;
            blobs.push((digest, size));
        }
        let (database_size, database_sha256) = database.ok_or_else(|| bad(1, "the `# database` line is missing"))?;
        Ok(BlobList { database_size, database_sha256, blobs })
    }
}

/// Removes a temporary file unless it was kept.
struct Partial(Option<PathBuf>);

impl Partial {
    fn keep(mut self) {
        self.0 = None;
    }
}

impl Drop for Partial {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

fn refuse_existing(path: &Path) -> Result<()> {
    if path.exists() {
        bail!("{} already exists; name a new file (backups are never overwritten)", shown(path));
    }
    Ok(())
}

/// Runs `bertsweep backup`.
pub async fn backup(client: &mut Client, args: &BackupArgs) -> Result<()> {
    let dated_dir = args.file.is_dir().then(|| args.file.clone());
    if args.keep.is_some() && dated_dir.is_none() {
        bail!("--keep needs FILE to be a directory of dated backups (`bertsweep backup DIR --keep N`)");
    }
    let file = match &dated_dir {
        Some(dir) => {
            let stamp =
                humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string().replace([':', '-'], "");
            dir.join(format!("{DATED_PREFIX}{stamp}.db"))
        }
        None => args.file.clone(),
    };
    take_backup(client, &file, args.blobs.as_deref()).await?;
    if let (Some(dir), Some(keep)) = (&dated_dir, args.keep) {
        prune(dir, keep as usize, args.blobs.as_deref())?;
    }
    Ok(())
}

/// Deletes all but the newest `keep` dated backups in `dir`, then the blobs in `blobs` no
/// remaining list names. Fails closed: a list it cannot read stops the blob pruning.
fn prune(dir: &Path, keep: usize, blobs: Option<&Path>) -> Result<()> {
    let mut dated: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot list {}", shown(dir)))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            name.starts_with(DATED_PREFIX) && name.ends_with(".db") && list_path(p).is_file()
        })
        .collect();
    dated.sort();
    let old = dated.len().saturating_sub(keep);
    for path in dated.drain(..old) {
        std::fs::remove_file(&path).with_context(|| format!("cannot delete {}", shown(&path)))?;
        std::fs::remove_file(list_path(&path)).with_context(|| format!("cannot delete {}.blobs", shown(&path)))?;
        println!("deleted old backup {}", shown(&path));
    }
    let Some(blobs) = blobs else { return Ok(()) };
    let mut wanted = std::collections::HashSet::new();
    for path in &dated {
        let list = list_path(path);
        let text = std::fs::read_to_string(&list)
            .with_context(|| format!("cannot read {}; no blob was pruned", shown(&list)))?;
        let parsed = BlobList::parse(&text, &list).context("no blob was pruned")?;
        wanted.extend(parsed.blobs.into_iter().map(|(d, _)| d));
    }
    let store = BlobDir::open(blobs).with_context(|| format!("cannot use {}", shown(blobs)))?;
    let (mut deleted, mut freed) = (0usize, 0u64);
    for (digest, _) in store.list().with_context(|| format!("cannot list {}", shown(blobs)))? {
        if !wanted.contains(&digest) {
            freed += store.size(&digest).unwrap_or(0);
            store
                .remove(&digest)
                .with_context(|| format!("cannot delete blob {} in {}", digest.short(), shown(blobs)))?;
            deleted += 1;
        }
    }
    if deleted > 0 {
        println!("deleted {deleted} blobs ({}) no kept backup names", human_bytes(freed));
    }
    Ok(())
}

/// Takes one backup into `file` (and its list), fetching the blobs into `blobs_dir`.
async fn take_backup(client: &mut Client, file: &Path, blobs_dir: Option<&Path>) -> Result<()> {
    let list_file = list_path(file);
    refuse_existing(file)?;
    refuse_existing(&list_file)?;
    let partial_path = with_suffix(file, ".partial");
    let mut out =
        std::fs::File::create(&partial_path).with_context(|| format!("cannot write {}", shown(&partial_path)))?;
    let partial = Partial(Some(partial_path.clone()));
    let blob_dir = match blobs_dir {
        Some(dir) => Some(BlobDir::open(dir).with_context(|| format!("cannot use {} for blobs", shown(dir)))?),
        None => None,
    };

    // The stream stays open (the coordinator keeps the blobs pinned) until the blobs are here.
    let mut stream = client.backup().await?;
    let mut hasher = bertsweep_transfer::digest::Hasher::default();
    let mut database_size = None;
    let mut blobs = Vec::new();
    let (database_sha256, missing) = loop {
        let chunk = stream
            .message()
            .await
            .map_err(|s| super::client::status_error(client.url(), s))?
            .ok_or_else(|| anyhow!("the coordinator ended the backup before it was complete; nothing was kept"))?;
        if database_size.is_none() {
            database_size = Some(chunk.database_size);
        }
        if !chunk.data.is_empty() {
            if hasher.len() + chunk.data.len() as u64 > database_size.unwrap_or(0) {
                bail!("the coordinator sent more database bytes than it announced; nothing was kept");
            }
            hasher.update(&chunk.data);
            out.write_all(&chunk.data).with_context(|| format!("writing {}", shown(&partial_path)))?;
        }
        for blob in chunk.blobs {
            let digest: Digest =
                blob.digest.parse().map_err(|_| anyhow!("the coordinator listed a malformed blob digest"))?;
            blobs.push((digest, blob.size));
        }
        if chunk.done {
            break (chunk.database_sha256, chunk.missing);
        }
    };
    let (actual, size) = hasher.finish();
    if Some(size) != database_size || actual.to_string() != database_sha256 {
        bail!("the database copy arrived damaged (sha256 or size differ); nothing was kept, run the backup again");
    }
    out.sync_all().with_context(|| format!("writing {}", shown(&partial_path)))?;
    drop(out);

    let (mut fetched, mut present) = (0usize, 0usize);
    let total: u64 = blobs.iter().map(|(_, size)| size).sum();
    if let Some(dir) = &blob_dir {
        let remote = Remote::new(client.raw());
        for (digest, size) in &blobs {
            if dir.size(digest) == Some(*size) {
                present += 1;
                continue;
            }
            remote.fetch_blob_sized(dir, *digest, Size::Exactly(*size)).await.map_err(|e| {
                anyhow!(
                    "fetching blob {}: {e}; nothing was kept, run the backup again (blobs already fetched stay)",
                    digest.short()
                )
            })?;
            fetched += 1;
        }
    }
    drop(stream);

    let list = BlobList { database_size: size, database_sha256: actual, blobs };
    let list_partial = with_suffix(&list_file, ".partial");
    let list_guard = Partial(Some(list_partial.clone()));
    write_synced(&list_partial, list.render(client.url()).as_bytes())?;
    std::fs::rename(&partial_path, file).with_context(|| format!("cannot create {}", shown(file)))?;
    partial.keep();
    std::fs::rename(&list_partial, &list_file).with_context(|| format!("cannot create {}", shown(&list_file)))?;
    list_guard.keep();

    println!(
        "backup {}: database {} (sha256 {}), {} blobs ({}) listed in {}",
        shown(file),
        human_bytes(size),
        list.database_sha256.short(),
        list.blobs.len(),
        human_bytes(total),
        shown(&list_file)
    );
    if let Some(dir) = blobs_dir {
        println!("blobs in {}: {fetched} fetched, {present} already there", shown(dir));
    } else if !list.blobs.is_empty() {
        println!("blobs not fetched: pass --blobs DIR to copy them too (a restore needs them)");
    }
    if !missing.is_empty() {
        eprintln!(
            "warning: {} blobs the database refers to are missing on the coordinator (first {}); a restore lacks them too",
            missing.len(),
            missing[0].chars().take(12).collect::<String>()
        );
    }
    Ok(())
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut file = std::fs::File::create(path).with_context(|| format!("cannot write {}", shown(path)))?;
    file.write_all(bytes).and_then(|()| file.sync_all()).with_context(|| format!("writing {}", shown(path)))
}

/// Runs `bertsweep restore`.
pub async fn restore(args: &RestoreArgs) -> Result<()> {
    let list_file = list_path(&args.backup);
    let text = std::fs::read_to_string(&list_file).with_context(|| {
        format!("cannot read {} (a backup is the database and this list beside it)", shown(&list_file))
    })?;
    let list = BlobList::parse(&text, &list_file)?;
    for path in [args.db.clone(), with_suffix(&args.db, "-wal"), with_suffix(&args.db, "-shm")] {
        if path.exists() {
            bail!("{} already exists; restore into a new database path", shown(&path));
        }
    }
    let (actual, size) = bertsweep_transfer::digest::hash_file(&args.backup)
        .with_context(|| format!("cannot read {}", shown(&args.backup)))?;
    if (actual, size) != (list.database_sha256, list.database_size) {
        bail!(
            "{} does not match the sha256 and size its list records; it is damaged or from another backup",
            shown(&args.backup)
        );
    }
    let db_url = format!("sqlite://{}", args.db.display());
    let data_dir = args.data_dir.clone().unwrap_or_else(|| crate::blobs::default_data_dir(&db_url));

    // Every blob must come from somewhere before anything is written.
    let existing = if data_dir.exists() {
        Some(
            BlobDir::open(&data_dir)
                .with_context(|| format!("cannot use {} as the data directory", shown(&data_dir)))?,
        )
    } else {
        None
    };
    let source = match &args.blobs {
        Some(dir) => Some(BlobDir::open(dir).with_context(|| format!("cannot read blobs from {}", shown(dir)))?),
        None => None,
    };
    let mut to_copy = Vec::new();
    let mut lacking = Vec::new();
    for (digest, size) in &list.blobs {
        if existing.as_ref().is_some_and(|dir| dir.size(digest) == Some(*size)) {
            continue;
        }
        match &source {
            Some(source) if source.size(digest) == Some(*size) => to_copy.push((*digest, *size)),
            _ => lacking.push(*digest),
        }
    }
    if !lacking.is_empty() {
        bail!(
            "{} of the {} blobs the backup refers to are in neither {} nor the data directory (first {}); pass --blobs DIR, the directory `bertsweep backup --blobs` filled",
            lacking.len(),
            list.blobs.len(),
            args.blobs.as_deref().map_or_else(|| "--blobs".to_string(), shown),
            lacking[0].short()
        );
    }

    // The database is checked on a temporary copy: it opens, migrates and loads.
    let staging = with_suffix(&args.db, ".restoring");
    let guard = Partial(Some(staging.clone()));
    std::fs::copy(&args.backup, &staging).with_context(|| format!("cannot write {}", shown(&staging)))?;
    let staging_url = format!("sqlite://{}", staging.display());
    let (studies, trials, running) = {
        let store = crate::store::Store::open(&staging_url).await.context("the backup's database does not open")?;
        let snapshot = store.load().await.context("the backup's database does not load")?;
        let counts = (
            snapshot.studies.len(),
            snapshot.trials.len(),
            snapshot.trials.iter().filter(|t| t.state == crate::model::TrialState::Running).count(),
        );
        crate::registry::Registry::restore(snapshot, crate::registry::LeaseConfig { ttl_ms: 30_000 }, 0)
            .context("the backup's studies do not load")?;
        store.close().await;
        counts
    };

    let target = match existing {
        Some(dir) => dir,
        None => BlobDir::open(&data_dir)
            .with_context(|| format!("cannot create the data directory {}", shown(&data_dir)))?,
    };
    let mut copied_bytes = 0u64;
    for (digest, size) in &to_copy {
        let from = source.as_ref().expect("checked above").path(digest);
        let mut reader = tokio::fs::File::open(&from).await.with_context(|| format!("cannot read {}", shown(&from)))?;
        let mut writer = target.writer(*digest, *size).await.map_err(|e| anyhow!("{e}"))?;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            use tokio::io::AsyncReadExt;
            let n = reader.read(&mut buf).await.with_context(|| format!("reading {}", shown(&from)))?;
            if n == 0 {
                break;
            }
            writer.write(&buf[..n]).await.map_err(|e| anyhow!("{e}"))?;
        }
        writer.finish().await.map_err(|e| anyhow!("blob {} in {}: {e}", digest.short(), shown(&from)))?;
        copied_bytes += size;
    }
    std::fs::rename(&staging, &args.db).with_context(|| format!("cannot create {}", shown(&args.db)))?;
    guard.keep();
    println!(
        "restored {studies} studies ({trials} trials, {running} running: they resume when their workers come back, \
         or are requeued) into {}; data directory {} ({} blobs copied, {})",
        shown(&args.db),
        shown(&data_dir),
        to_copy.len(),
        human_bytes(copied_bytes)
    );
    println!("start it with: bertsweep serve --db {} --data-dir {}", args.db.display(), data_dir.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_blob_list_reads_back_what_was_written() {
        let list = BlobList {
            database_size: 4096,
            database_sha256: Digest::of(b"db"),
            blobs: vec![(Digest::of(b"a"), 1), (Digest::of(b"bb"), 2)],
        };
        let text = list.render("https://coordinator:50051");
        assert_eq!(BlobList::parse(&text, Path::new("x.blobs")).unwrap(), list);
        let e = BlobList::parse("zzz 1\n", Path::new("x.blobs")).unwrap_err().to_string();
        assert!(e.contains("x.blobs line 1") && e.contains("malformed"), "{e}");
        let e = BlobList::parse("", Path::new("x.blobs")).unwrap_err().to_string();
        assert!(e.contains("database"), "{e}");
    }
}
