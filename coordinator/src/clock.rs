//! The wall clock, read only here and at the edges (services, reaper, dashboard); the core's
//! decisions take `now` as an argument.

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}
