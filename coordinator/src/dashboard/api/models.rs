//! A kept model over HTTP: its files one by one, or the whole model as one ustar archive
//! streamed as it is read, every file checked against its digest first.

use super::*;

/// The manifest of the model the coordinator keeps for `trial`, or None (no `blob:` artifact,
/// or its manifest is gone).
pub(super) fn kept_manifest(app: &AppState, trial: &Trial) -> Option<bertsweep_transfer::Manifest> {
    app.shared.blobs.dir().read_manifest(&blob_of(&trial.artifact)?).ok()
}

/// Checks (off the runtime) that every file of a kept model matches its digest before any of
/// it is served: a corrupt blob is quarantined and the download refused in one line.
pub(super) async fn check_model_intact(app: &Arc<AppState>, digests: Vec<bertsweep_transfer::Digest>) -> ApiResult<()> {
    let shared = app.shared.clone();
    let bad = tokio::task::spawn_blocking(move || {
        digests.into_iter().find(|d| shared.blobs.check_stored(d) != crate::blobs::Stored::Intact)
    })
    .await
    .map_err(internal)?;
    match bad {
        None => Ok(()),
        Some(d) => Err(ApiError(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!(
                "blob {} of this model is missing or corrupted on the coordinator (a corrupt copy is quarantined); the model cannot be served whole",
                d.short()
            ),
        )),
    }
}

/// The files of a trial's model kept on the coordinator, or None.
pub(super) fn model_files(app: &AppState, name: &str, trial: &Trial) -> Option<Vec<Value>> {
    let manifest = kept_manifest(app, trial)?;
    Some(
        manifest
            .files
            .iter()
            .map(|f| {
                let url = format!(
                    "/api/studies/{name}/trials/{}/model/{}",
                    trial.number,
                    f.path.split('/').map(percent_encode).collect::<Vec<_>>().join("/")
                );
                json!({ "path": f.path, "size": f.size, "url": url })
            })
            .collect(),
    )
}

/// Percent-encodes one path segment (file names in a model directory).
pub(super) fn percent_encode(segment: &str) -> String {
    segment
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

pub(super) fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
}

/// `GET /api/studies/{name}/trials/{number}/model/{path}`: one file of a kept model.
pub async fn model_file(
    State(app): State<Arc<AppState>>,
    Path((name, number, path)): Path<(String, String, String)>,
) -> ApiResult<Response> {
    let (_, trial) = one_trial(&app, &name, &number)?;
    let missing = || {
        ApiError(
            StatusCode::NOT_FOUND,
            format!("trial {} of study {} has no kept model file {}", trial.number, quote(&name), quote(&path)),
        )
    };
    let manifest = kept_manifest(&app, &trial).ok_or_else(missing)?;
    let entry = manifest.files.iter().find(|f| f.path == path).ok_or_else(missing)?;
    check_model_intact(&app, vec![entry.digest()]).await?;
    let file = tokio::fs::File::open(app.shared.blobs.dir().path(&entry.digest())).await.map_err(|_| missing())?;
    let base = path.rsplit('/').next().unwrap_or("model");
    let safe: String =
        base.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') { c } else { '_' }).collect();
    let body = Body::from_stream(tokio_util::io::ReaderStream::new(file));
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (header::CONTENT_LENGTH, entry.size.to_string()),
            (header::CONTENT_DISPOSITION, format!("attachment; filename=\"{safe}\"")),
        ],
        body,
    )
        .into_response())
}

/// The header of one regular file in the archive: a ustar block, preceded by a pax extended
/// header (POSIX.1-2001, read by GNU tar, bsdtar and Python's `tarfile`) when the path is not
/// ASCII or does not fit ustar's name fields, or the size needs more than 11 octal digits.
pub(super) fn tar_entry_header(path: &str, size: u64, mtime: u64) -> Vec<u8> {
    let split = if path.is_ascii() { ustar_split(path) } else { None };
    let big = size >= 8u64.pow(11);
    let mut out = Vec::with_capacity(1536);
    if split.is_none() || big {
        let mut records = Vec::new();
        if split.is_none() {
            records.extend(pax_record("path", path));
        }
        if big {
            records.extend(pax_record("size", &size.to_string()));
        }
        out.extend(ustar_block("", "PaxHeader", records.len() as u64, mtime, b'x'));
        let padded = records.len().div_ceil(512) * 512;
        records.resize(padded, 0);
        out.extend(records);
    }
    let fallback;
    let (prefix, name) = match split {
        Some(parts) => parts,
        None => {
            // Readers use the pax path; this is only what a ustar-only reader would show.
            fallback = ascii_tail(path, 100);
            ("", fallback.as_str())
        }
    };
    out.extend(ustar_block(prefix, name, if big { 0 } else { size }, mtime, b'0'));
    out
}

/// ustar's (prefix, name) for an ASCII path: the name alone when it fits 100 bytes, else split
/// at a `/` into a prefix of at most 155 bytes and a name of at most 100.
pub(super) fn ustar_split(path: &str) -> Option<(&str, &str)> {
    if path.len() <= 100 {
        return Some(("", path));
    }
    path.match_indices('/')
        .map(|(i, _)| (&path[..i], &path[i + 1..]))
        .find(|(prefix, name)| prefix.len() <= 155 && !name.is_empty() && name.len() <= 100)
}

/// The last characters of `path` (at most `max` bytes), non-ASCII ones as `_`.
pub(super) fn ascii_tail(path: &str, max: usize) -> String {
    let ascii: String = path.chars().map(|c| if c.is_ascii() && c != '\0' { c } else { '_' }).collect();
    ascii[ascii.len().saturating_sub(max)..].trim_start_matches('/').to_string()
}

/// One pax record, `<length> <key>=<value>\n`, its length counting its own digits.
pub(super) fn pax_record(key: &str, value: &str) -> Vec<u8> {
    let body = key.len() + value.len() + 3; // space, '=', newline
    let mut length = body + body.to_string().len();
    if (body + length.to_string().len()) != length {
        length = body + length.to_string().len();
    }
    format!("{length} {key}={value}\n").into_bytes()
}

/// One 512-byte ustar header block; `prefix` and `name` must fit (155 and 100 bytes).
pub(super) fn ustar_block(prefix: &str, name: &str, size: u64, mtime: u64, kind: u8) -> [u8; 512] {
    let mut block = [0u8; 512];
    let octal = |field: &mut [u8], value: u64| {
        let text = format!("{value:0width$o}", width = field.len() - 1);
        field[..text.len()].copy_from_slice(text.as_bytes());
    };
    block[..name.len()].copy_from_slice(name.as_bytes());
    octal(&mut block[100..108], 0o644);
    octal(&mut block[108..116], 0);
    octal(&mut block[116..124], 0);
    octal(&mut block[124..136], size);
    octal(&mut block[136..148], mtime);
    block[156] = kind;
    block[257..263].copy_from_slice(b"ustar\0");
    block[263..265].copy_from_slice(b"00");
    block[345..345 + prefix.len()].copy_from_slice(prefix.as_bytes());
    // The checksum is computed with its own field as eight spaces.
    block[148..156].copy_from_slice(b"        ");
    let sum: u32 = block.iter().map(|&b| u32::from(b)).sum();
    let text = format!("{sum:06o}\0 ");
    block[148..156].copy_from_slice(text.as_bytes());
    block
}

/// `GET /api/studies/{name}/trials/{number}/model.tar`: the whole kept model as one tar
/// archive (uncompressed: safetensors weights do not compress), streamed file by file, which
/// `tar -xf` unpacks into the directory `transformers` loads.
pub async fn model_tar(
    State(app): State<Arc<AppState>>,
    Path((name, number)): Path<(String, String)>,
) -> ApiResult<Response> {
    let (_, trial) = one_trial(&app, &name, &number)?;
    let missing = || {
        ApiError(
            StatusCode::NOT_FOUND,
            format!("trial {} of study {} has no model kept on the coordinator", trial.number, quote(&name)),
        )
    };
    let manifest = kept_manifest(&app, &trial).ok_or_else(missing)?;
    let mtime = trial.finished_ms.unwrap_or(0).max(0) as u64 / 1000;
    check_model_intact(&app, manifest.files.iter().map(|f| f.digest()).collect()).await?;
    let mut parts = Vec::with_capacity(manifest.files.len());
    let mut total = 1024u64;
    for f in &manifest.files {
        let header = tar_entry_header(&f.path, f.size, mtime);
        total += header.len() as u64 + f.size.div_ceil(512) * 512;
        parts.push((header, app.shared.blobs.dir().path(&f.digest()), f.size));
    }
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<bytes::Bytes, std::io::Error>>(8);
    tokio::spawn(async move {
        use tokio::io::AsyncReadExt;
        for (header, path, size) in parts {
            if tx.send(Ok(bytes::Bytes::from(header))).await.is_err() {
                return;
            }
            let mut file = match tokio::fs::File::open(&path).await {
                Ok(file) => file.take(size),
                Err(e) => {
                    let _ = tx.send(Err(e)).await;
                    return;
                }
            };
            let mut buf = vec![0u8; 256 * 1024];
            loop {
                match file.read(&mut buf).await {
                    Ok(0) => break,
                    Ok(n) => {
                        if tx.send(Ok(bytes::Bytes::copy_from_slice(&buf[..n]))).await.is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e)).await;
                        return;
                    }
                }
            }
            let pad = (512 - (size % 512) as usize) % 512;
            if pad > 0 && tx.send(Ok(bytes::Bytes::from(vec![0u8; pad]))).await.is_err() {
                return;
            }
        }
        let _ = tx.send(Ok(bytes::Bytes::from(vec![0u8; 1024]))).await;
    });
    let body = Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx));
    Ok((
        [
            (header::CONTENT_TYPE, "application/x-tar".to_string()),
            (header::CONTENT_LENGTH, total.to_string()),
            (header::CONTENT_DISPOSITION, format!("attachment; filename=\"{name}-trial-{}-model.tar\"", trial.number)),
        ],
        body,
    )
        .into_response())
}
