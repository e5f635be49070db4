//! Giving memory back to the operating system after a burst.
//!
//! glibc's allocator keeps freed memory in its per-thread arenas, so a coordinator whose
//! watchers have left would keep their peak as resident memory indefinitely. When a
//! WatchStudy stream ends, [`release_freed_memory`] schedules one `malloc_trim` shortly after
//! (at most one pending at a time, so a hundred streams ending together trim once).

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// A trim is scheduled and has not run yet.
static TRIM_PENDING: AtomicBool = AtomicBool::new(false);

/// How long to let other streams finish before trimming.
const SETTLE: Duration = Duration::from_millis(200);

/// Schedules a trim of the allocator's free memory (no-op off glibc).
pub fn release_freed_memory() {
    if TRIM_PENDING.swap(true, Ordering::AcqRel) {
        return;
    }
    tokio::spawn(async {
        tokio::time::sleep(SETTLE).await;
        TRIM_PENDING.store(false, Ordering::Release);
        let _ = tokio::task::spawn_blocking(trim).await;
    });
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)] // FFI into glibc; the only unsafe code in the coordinator
fn trim() {
    // SAFETY: malloc_trim only walks the allocator's own free lists; it has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim() {}
