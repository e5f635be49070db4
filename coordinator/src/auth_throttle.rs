//! Slows down token guessing: after a few wrong tokens from one peer address, every further
//! attempt from it is refused without being checked until a back-off has passed, doubling with
//! each failure (up to [`MAX_BACKOFF`]). A right token resets the peer. Both the gRPC port and
//! the dashboard use one [`AuthThrottle`]; refusals and failures are counted in
//! `bertsweep_auth_failures_total{port}`.
//!
//! The table is bounded ([`MAX_PEERS`]): when full, the peer seen longest ago goes.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

/// Wrong tokens a peer may send before it has to wait.
pub const FREE_FAILURES: u32 = 5;

/// The first wait after [`FREE_FAILURES`]; each further failure doubles it.
pub const FIRST_BACKOFF: Duration = Duration::from_millis(500);

/// The longest wait.
pub const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// Peers remembered at once.
pub const MAX_PEERS: usize = 10_000;

/// Failed authentications, by port (`grpc`, `http`) (counter).
pub const AUTH_FAILURES: &str = "bertsweep_auth_failures_total";

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    /// Wall-clock ms before which the peer is refused unchecked.
    blocked_until_ms: i64,
    last_ms: i64,
}

/// The address a dashboard request came from (a request extension set per connection).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerAddr(pub IpAddr);

/// Wrong-token counts per peer address.
#[derive(Debug, Default)]
pub struct AuthThrottle {
    peers: Mutex<HashMap<IpAddr, Failures>>,
}

impl AuthThrottle {
    fn peers(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, Failures>> {
        self.peers.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How long `peer` must still wait before its next attempt is checked, if it must.
    pub fn wait(&self, peer: IpAddr, now_ms: i64) -> Option<Duration> {
        let f = *self.peers().get(&peer)?;
        (f.blocked_until_ms > now_ms).then(|| Duration::from_millis((f.blocked_until_ms - now_ms) as u64))
    }

    /// Records a wrong (or missing, where one is required) token from `peer` on `port`.
    pub fn failed(&self, peer: IpAddr, port: &'static str, now_ms: i64) {
        metrics::counter!(AUTH_FAILURES, "port" => port).increment(1);
        let mut peers = self.peers();
        if peers.len() >= MAX_PEERS && !peers.contains_key(&peer) {
            if let Some(oldest) = peers.iter().min_by_key(|(_, f)| f.last_ms).map(|(ip, _)| *ip) {
                peers.remove(&oldest);
            }
        }
        let f = peers.entry(peer).or_insert(Failures { count: 0, blocked_until_ms: 0, last_ms: now_ms });
        f.count = f.count.saturating_add(1);
        f.last_ms = now_ms;
        if f.count >= FREE_FAILURES {
            let doublings = (f.count - FREE_FAILURES).min(16);
            let backoff = FIRST_BACKOFF.saturating_mul(1 << doublings).min(MAX_BACKOFF);
            f.blocked_until_ms = now_ms + backoff.as_millis() as i64;
        }
    }

    /// A right token from `peer`: it starts afresh.
    pub fn succeeded(&self, peer: IpAddr) {
        let mut peers = self.peers();
        if !peers.is_empty() {
            peers.remove(&peer);
        }
    }

    /// The one-line refusal for a peer that must wait.
    pub fn refusal(wait: Duration) -> String {
        format!(
            "too many wrong tokens from this address; wait {} s before trying again (check --token-file)",
            wait.as_secs().max(1)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_guessing_peer_waits_longer_and_longer_and_others_do_not() {
        let t = AuthThrottle::default();
        let (guesser, other): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        for _ in 1..FREE_FAILURES {
            t.failed(guesser, "grpc", 0);
            assert_eq!(t.wait(guesser, 0), None, "a few mistakes are free");
        }
        t.failed(guesser, "grpc", 0);
        assert_eq!(t.wait(guesser, 0), Some(FIRST_BACKOFF));
        t.failed(guesser, "grpc", 0);
        assert_eq!(t.wait(guesser, 0), Some(FIRST_BACKOFF * 2), "doubling");
        assert_eq!(t.wait(other, 0), None, "another address is not slowed down");
        assert_eq!(t.wait(guesser, 10_000), None, "the wait passes");
        for _ in 0..40 {
            t.failed(guesser, "http", 0);
        }
        assert_eq!(t.wait(guesser, 0), Some(MAX_BACKOFF), "capped");
        t.succeeded(guesser);
        assert_eq!(t.wait(guesser, 0), None, "a right token resets");
        let e = AuthThrottle::refusal(Duration::from_millis(1500));
        assert!(e.contains("wait 1 s") && !e.contains('\n'), "{e}");
    }

    #[test]
    fn the_table_is_bounded() {
        let t = AuthThrottle::default();
        for i in 0..(MAX_PEERS as u32 + 10) {
            t.failed(IpAddr::from(i.to_be_bytes()), "grpc", i64::from(i));
        }
        assert_eq!(t.peers().len(), MAX_PEERS);
        assert!(!t.peers().contains_key(&IpAddr::from(0u32.to_be_bytes())), "the oldest went");
    }
}
