//! Moving files between the machines of a sweep, verified end to end.
//!
//! - [`digest`]: sha256 digests ([`Digest`]) and hashing files.
//! - [`reference`]: the input reference forms a study names (`blob:sha256:…`, `worker:/path`,
//!   `hf:org/name[@rev]`, a local path).
//! - [`manifest`]: a file or directory as a list of (relative path, sha256, size): what a
//!   `blob:sha256:…` reference points at.
//! - [`blob_dir`]: the on-disk layout of content-addressed blobs (coordinator store and worker
//!   cache alike): write to a temporary file, verify, rename into place.
//! - [`object`]: model directories in object storage (s3://, gs://, az://).
//! - [`remote`]: uploading a path to a coordinator and fetching a manifest's files from it
//!   (chunked gRPC streams, resume, retries on transient errors).

pub mod blob_dir;
pub mod digest;
pub mod manifest;
pub mod object;
pub mod reference;
pub mod remote;

pub use digest::Digest;
pub use manifest::{Manifest, ManifestKind};
pub use reference::InputRef;

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
