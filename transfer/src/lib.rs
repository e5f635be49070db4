//! Moving files between the machines of a sweep, verified end to end.
//!
//! - [`digest`]: sha256 digests ([`Digest`]) and hashing files.
//! - [`reference`]: the input reference forms a study names (`blob:sha256:…`, `worker:/path`,
//!   `hf:org/name[@rev]`, a local path).
//! - [`manifest`]: a file or directory as a list of (relative path, sha256, size): what a
//!   `blob:sha256:…` reference points at.
//! - [`blob_dir`]: the on-disk layout of content-addressed blobs (coordinator store and worker
//!   cache alike): write to a temporary file, verify, rename into place.
//! - [`checkpoint_location`]: the one place a trial's checkpoint may live outside the
//!   coordinator (and so the only thing its deletion may touch).
//! - [`object`]: model directories in object storage (s3://, gs://, az://).
//! - [`remote`]: uploading a path to a coordinator and fetching a manifest's files from it
//!   (chunked gRPC streams, resume, retries on transient errors).

#[cfg(feature = "io")]
pub mod blob_dir;
pub mod checkpoint_location;
pub mod digest;
pub mod manifest;
#[cfg(feature = "io")]
pub mod object;
pub mod reference;
#[cfg(feature = "io")]
pub mod remote;

pub use digest::Digest;
pub use manifest::{Manifest, ManifestKind};
pub use reference::{ArtifactRef, InputRef};

/// Bytes per streamed chunk (well under gRPC's default 4 MiB message limit).
pub const CHUNK_BYTES: usize = 1 << 20;

/// Renders a byte count for people (`12.3 MB`).
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut x = n as f64;
    let mut unit = 0;
    while x >= 1000.0 && unit + 1 < UNITS.len() {
        x /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{x:.1} {}", UNITS[unit])
    }
}

/// Parses a size as people write it: bytes, or a number with kB/MB/GB/TB (powers of 1000) or
/// KiB/MiB/GiB/TiB (powers of 1024); the error says what is wrong and how to write one.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let n: f64 = number.parse().map_err(|_| format!("{text:?} is not a size; write e.g. 500MB or 4GiB"))?;
    let scale: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "tib" => 1 << 40,
        _ => return Err(format!("{text:?}: unknown unit {unit:?}; use B, kB, MB, GB, TB, KiB, MiB, GiB or TiB")),
    };
    Ok((n * scale as f64) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_in_both_unit_families_and_errors_say_how_to_write_one() {
        assert_eq!(parse_size("500MB"), Ok(500_000_000));
        assert_eq!(parse_size("4GiB"), Ok(4 << 30));
        assert_eq!(parse_size(" 1.5 TB "), Ok(1_500_000_000_000));
        assert_eq!(parse_size("123"), Ok(123));
        assert!(parse_size("lots").unwrap_err().contains("write e.g. 500MB"));
        assert!(parse_size("5 parsecs").unwrap_err().contains("unknown unit"));
    }
}
