//! Where a trial's resumable checkpoint may live outside the coordinator: the one place the
//! protocol gives that trial and lease, `<base>/<study>/<trial>/checkpoints/e<epoch>-<lease>`,
//! in object storage (`s3://…`) or on a filesystem the workers share (`worker:/…`).
//!
//! Checkpoints get deleted when their trial ends, so a location is a deletion target: the
//! coordinator refuses a report naming anything else (a bucket root, another prefix, another
//! study's or trial's checkpoint, `worker:/etc`), and a worker refuses such a location in an
//! assignment. The check is pure string work: no store is asked.

/// The last four path parts of the checkpoint `study`'s trial `number` writes after `epoch`
/// under the lease `token`.
pub fn tail(study: &str, number: u32, epoch: u32, token: u64) -> [String; 4] {
    [study.to_owned(), number.to_string(), "checkpoints".to_owned(), format!("e{epoch}-{token}")]
}

/// Why a checkpoint location is refused (one line, quoting at most 64 characters of it).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("checkpoint {shown} {why}")]
pub struct LocationError {
    shown: String,
    why: String,
}

/// Whether `reference` (an object storage URL or `worker:/path`) is the checkpoint location of
/// `study`'s trial `number` after `epoch`. `token` is the lease that wrote it when known (the
/// coordinator checking a report); `None` accepts any lease (a worker resuming an earlier
/// attempt's checkpoint).
pub fn check(reference: &str, study: &str, number: u32, epoch: u32, token: Option<u64>) -> Result<(), LocationError> {
    let refuse = |why: String| {
        let head: String = reference.chars().take(64).collect();
        let shown = if head.len() < reference.len() { format!("{head:?}…") } else { format!("{head:?}") };
        LocationError { shown, why }
    };
    let path = if let Some(path) = reference.strip_prefix("worker:") {
        if !path.starts_with('/') {
            return Err(refuse("is not worker:/absolute/path".into()));
        }
        path
    } else if crate::reference::is_object_url(reference) {
        let url = url::Url::parse(reference).map_err(|e| refuse(format!("is not a URL ({e})")))?;
        if url.query().is_some() || url.fragment().is_some() || !url.username().is_empty() || url.password().is_some() {
            return Err(refuse("carries a query, fragment or credentials".into()));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(refuse("names no bucket".into()));
        }
        // The path as written (after the scheme and bucket): `Url` would not normalise `..`
        // inside an opaque path, so the parts are checked as they stand.
        let after_scheme = &reference[reference.find("://").map_or(0, |i| i + 3)..];
        match after_scheme.find('/') {
            Some(i) => &after_scheme[i..],
            None => "",
        }
    } else {
        return Err(refuse("is neither an s3://, gs:// or az:// URL nor worker:/path".into()));
    };
    let path = path.strip_suffix('/').unwrap_or(path);
    let parts: Vec<&str> = path.split('/').skip(1).collect();
    if parts.iter().any(|p| p.is_empty() || *p == "." || *p == ".." || p.contains(['%', '\\', '\0'])) {
        return Err(refuse("has an empty, `.`, `..` or encoded path part".into()));
    }
    let expected = tail(study, number, epoch, 0);
    let place = format!("…/{}/{}/checkpoints/e{epoch}-<lease>", expected[0], expected[1]);
    if parts.len() < 4 {
        return Err(refuse(format!("is not a trial's checkpoint directory; this trial's is {place}")));
    }
    let got = &parts[parts.len() - 4..];
    let last_ok = match token {
        Some(token) => got[3] == format!("e{epoch}-{token}"),
        None => got[3]
            .strip_prefix(&format!("e{epoch}-"))
            .is_some_and(|lease| !lease.is_empty() && lease.bytes().all(|b| b.is_ascii_digit())),
    };
    if got[0] != expected[0] || got[1] != expected[1] || got[2] != expected[2] || !last_ok {
        return Err(refuse(format!("is not this trial's checkpoint location {place}")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_trials_own_place_is_accepted() {
        for good in [
            "s3://bucket/study/3/checkpoints/e2-77",
            "s3://bucket/base/deeper/study/3/checkpoints/e2-77/",
            "gs://b/study/3/checkpoints/e2-77",
            "worker:/shared/ckpt/study/3/checkpoints/e2-77",
        ] {
            assert_eq!(check(good, "study", 3, 2, Some(77)), Ok(()), "{good}");
            assert_eq!(check(good, "study", 3, 2, None), Ok(()), "{good}");
        }
        for bad in [
            "s3://bucket/",
            "s3://bucket",
            "s3://bucket/some-prefix",
            "s3://bucket/other/3/checkpoints/e2-77",
            "s3://bucket/study/4/checkpoints/e2-77",
            "s3://bucket/study/3/checkpoints/e1-77",
            "s3://bucket/study/3/checkpoints/e2-78",
            "s3://bucket/study/3/checkpoints/e2-77/extra",
            "s3://bucket/x/../study/3/checkpoints/e2-77",
            "s3://bucket/x//study/3/checkpoints/e2-77",
            "s3://bucket/study/3/checkpoints/e2-77?versionId=1",
            "s3://bucket/st%75dy/3/checkpoints/e2-77",
            "worker:/",
            "worker:/etc",
            "worker:relative/study/3/checkpoints/e2-77",
            "worker:/a/../study/3/checkpoints/e2-77",
            "/study/3/checkpoints/e2-77",
            "http://host/study/3/checkpoints/e2-77",
        ] {
            let e = check(bad, "study", 3, 2, Some(77)).unwrap_err().to_string();
            assert!(!e.contains('\n') && e.len() < 300, "{e}");
        }
        assert!(check("s3://b/study/3/checkpoints/e2-x", "study", 3, 2, None).is_err());
        assert!(check("s3://b/study/3/checkpoints/e2-", "study", 3, 2, None).is_err());
    }
}
