//! Who may look and who may act. When the coordinator has a token, every page and API call
//! needs either `Authorization: Bearer TOKEN` (scripts, curl) or a session cookie that the
//! login form sets after checking the token (browsers). The cookie is a random session id, not
//! the token: HttpOnly (scripts cannot read it), SameSite=Strict (other sites cannot ride on
//! it), Secure under TLS, and forgotten when the coordinator restarts. Without a token the
//! dashboard is open, like the gRPC API on loopback.
//!
//! The session only reads: stopping a study takes the token itself in a bearer header on that
//! request (see `api::stop`), so a stolen or forged cookie can never change a study.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::{Form, Json};
use rand::RngCore;
use serde::Deserialize;

use super::{pages, AppState};
use crate::auth_throttle::{AuthThrottle, PeerAddr};
use crate::clock::now_ms;
use crate::server::constant_time_eq;

/// The session cookie's name.
pub const COOKIE: &str = "bertsweep_session";

/// How long a login lasts.
const SESSION_TTL_MS: i64 = 12 * 3600 * 1000;

/// Sessions kept at once; the oldest go first beyond this.
const MAX_SESSIONS: usize = 10_000;

/// A wrong token waits this long before the answer, slowing guessing down.
const WRONG_TOKEN_DELAY: Duration = Duration::from_millis(300);

/// The token and the live sessions.
pub struct Gate {
    token: Option<Arc<str>>,
    /// Session id → expiry (wall-clock ms).
    sessions: Mutex<HashMap<String, i64>>,
    /// Mark the cookie Secure (the dashboard is served over TLS).
    secure: bool,
    /// Wrong tokens per peer address (login form and bearer headers).
    pub throttle: AuthThrottle,
}

/// What a request's credentials amount to.
#[derive(Debug, PartialEq, Eq)]
pub enum Credentials {
    /// No token is configured, or a valid bearer token or session came with it.
    Valid,
    /// A bearer token came, and it is wrong.
    WrongToken,
    /// Nothing usable came (no header, no or an expired session).
    Missing,
}

impl Gate {
    /// A gate for `token` (None: open dashboard).
    pub fn new(token: Option<&str>, secure: bool) -> Self {
        Gate {
            token: token.map(Arc::from),
            sessions: Mutex::new(HashMap::new()),
            secure,
            throttle: AuthThrottle::default(),
        }
    }

    /// `true` when the coordinator has a token.
    pub fn required(&self) -> bool {
        self.token.is_some()
    }

    /// `true` when `given` is the token (constant time).
    pub fn token_matches(&self, given: &str) -> bool {
        self.token.as_deref().is_some_and(|t| constant_time_eq(given.as_bytes(), t.as_bytes()))
    }

    /// The bearer token in `headers`, if any.
    pub fn bearer(headers: &HeaderMap) -> Option<&str> {
        headers.get(header::AUTHORIZATION)?.to_str().ok()?.strip_prefix("Bearer ").map(str::trim)
    }

    /// Checks a request's bearer header or session cookie.
    pub fn check(&self, headers: &HeaderMap) -> Credentials {
        if !self.required() {
            return Credentials::Valid;
        }
        if let Some(token) = Self::bearer(headers) {
            return if self.token_matches(token) { Credentials::Valid } else { Credentials::WrongToken };
        }
        match session_id(headers) {
            Some(id) if self.session_valid(id) => Credentials::Valid,
            _ => Credentials::Missing,
        }
    }

    fn sessions(&self) -> std::sync::MutexGuard<'_, HashMap<String, i64>> {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn session_valid(&self, id: &str) -> bool {
        let now = now_ms();
        let mut sessions = self.sessions();
        match sessions.get(id) {
            Some(&expires) if expires > now => true,
            Some(_) => {
                sessions.remove(id);
                false
            }
            None => false,
        }
    }

    /// Starts a session; returns its id.
    fn open_session(&self) -> String {
        let mut bytes = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        let id: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let now = now_ms();
        let mut sessions = self.sessions();
        sessions.retain(|_, &mut expires| expires > now);
        if sessions.len() >= MAX_SESSIONS {
            if let Some(oldest) = sessions.iter().min_by_key(|(_, &e)| e).map(|(k, _)| k.clone()) {
                sessions.remove(&oldest);
            }
        }
        sessions.insert(id.clone(), now + SESSION_TTL_MS);
        id
    }

    fn close_session(&self, headers: &HeaderMap) {
        if let Some(id) = session_id(headers) {
            self.sessions().remove(id);
        }
    }

    /// The Set-Cookie value for session `id` (empty id: delete the cookie).
    fn cookie(&self, id: &str) -> String {
        let max_age = if id.is_empty() { 0 } else { SESSION_TTL_MS / 1000 };
        let secure = if self.secure { "; Secure" } else { "" };
        format!("{COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}")
    }
}

/// The session id in the request's cookies.
fn session_id(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value)
        .filter(|v| !v.is_empty())
}

/// A local path to return to after login: `/…`, never another origin (`//host`, `/\host`).
pub fn safe_next(next: &str) -> &str {
    let local = next.starts_with('/')
        && !next.starts_with("//")
        && !next.contains('\\')
        && !next.chars().any(char::is_control)
        && next.len() <= 2048;
    if local {
        next
    } else {
        "/"
    }
}

/// `true` when the request's `Host` is an IP address or `localhost` (with or without a port):
/// a name the browser did not look up in DNS, so a web page elsewhere cannot rebind its own
/// name to this address and read an open dashboard through the user's browser.
pub fn host_is_literal(headers: &HeaderMap) -> bool {
    let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else { return true };
    let name = match host.strip_prefix('[') {
        Some(rest) => return rest.split(']').next().is_some_and(|ip| ip.parse::<std::net::Ipv6Addr>().is_ok()),
        None => {
            host.rsplit_once(':').map_or(host, |(name, port)| if port.parse::<u16>().is_ok() { name } else { host })
        }
    };
    name.eq_ignore_ascii_case("localhost") || name.parse::<std::net::IpAddr>().is_ok()
}

/// The middleware in front of every page and API call.
pub async fn gate(State(app): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    if !app.gate.required() && !host_is_literal(request.headers()) {
        let why = "this dashboard has no token, so it answers only to an IP address or localhost in the address (a defence against DNS rebinding); open http://IP:PORT/, or start the coordinator with --token-file";
        if request.uri().path().starts_with("/api/") {
            return (StatusCode::FORBIDDEN, Json(serde_json::json!({ "error": why }))).into_response();
        }
        return (StatusCode::FORBIDDEN, pages::message_html("Refused", why)).into_response();
    }
    let peer = request.extensions().get::<PeerAddr>().map(|p| p.0);
    let checked = app.gate.check(request.headers());
    if checked == Credentials::WrongToken {
        if let Some(refused) = throttled(&app, peer) {
            return refused;
        }
    }
    let why = match checked {
        Credentials::Valid => {
            if let (Some(peer), true) = (peer, Gate::bearer(request.headers()).is_some()) {
                app.gate.throttle.succeeded(peer);
            }
            return next.run(request).await;
        }
        Credentials::WrongToken => {
            if let Some(peer) = peer {
                app.gate.throttle.failed(peer, "http", now_ms());
            }
            "wrong token; use the token the coordinator was started with (--token-file)"
        }
        Credentials::Missing => {
            "this dashboard needs the coordinator's token: log in at /login, or send Authorization: Bearer TOKEN"
        }
    };
    let uri = request.uri();
    if uri.path().starts_with("/api/") {
        return (StatusCode::UNAUTHORIZED, Json(serde_json::json!({ "error": why }))).into_response();
    }
    let here = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    (StatusCode::UNAUTHORIZED, pages::login_html(safe_next(here), None)).into_response()
}

/// 429 with the wait when `peer` sent too many wrong tokens lately.
fn throttled(app: &AppState, peer: Option<std::net::IpAddr>) -> Option<Response> {
    let wait = app.gate.throttle.wait(peer?, now_ms())?;
    let why = AuthThrottle::refusal(wait);
    let mut response = (StatusCode::TOO_MANY_REQUESTS, Json(serde_json::json!({ "error": why }))).into_response();
    if let Ok(v) = HeaderValue::from_str(&wait.as_secs().max(1).to_string()) {
        response.headers_mut().insert(header::RETRY_AFTER, v);
    }
    Some(response)
}

/// `?next=` of the login page.
#[derive(Debug, Deserialize)]
pub struct NextQuery {
    /// Where to go after logging in.
    #[serde(default)]
    next: String,
}

/// `GET /login`: the form (straight to `next` when no token is needed).
pub async fn login_page(State(app): State<Arc<AppState>>, Query(q): Query<NextQuery>) -> Response {
    let next = safe_next(&q.next);
    if !app.gate.required() {
        return see_other(next, None);
    }
    pages::login_html(next, None).into_response()
}

/// The login form's fields.
#[derive(Debug, Deserialize)]
pub struct LoginForm {
    /// The token typed in.
    #[serde(default)]
    token: String,
    /// Where to go afterwards.
    #[serde(default)]
    next: String,
}

/// `POST /login`: a right token opens a session and goes on to `next`; a wrong one gets the
/// form again, after a pause.
pub async fn login(
    State(app): State<Arc<AppState>>,
    peer: Option<axum::Extension<PeerAddr>>,
    Form(form): Form<LoginForm>,
) -> Response {
    let next = safe_next(&form.next).to_string();
    if !app.gate.required() {
        return see_other(&next, None);
    }
    let peer = peer.map(|p| p.0 .0);
    if let Some(refused) = throttled(&app, peer) {
        return refused;
    }
    if app.gate.token_matches(form.token.trim()) {
        if let Some(peer) = peer {
            app.gate.throttle.succeeded(peer);
        }
        let id = app.gate.open_session();
        return see_other(&next, Some(app.gate.cookie(&id)));
    }
    if let Some(peer) = peer {
        app.gate.throttle.failed(peer, "http", now_ms());
    }
    tokio::time::sleep(WRONG_TOKEN_DELAY).await;
    let message = if form.token.trim().is_empty() {
        "Enter the coordinator's token."
    } else {
        "Wrong token. Use the token the coordinator was started with (--token-file)."
    };
    (StatusCode::UNAUTHORIZED, pages::login_html(&next, Some(message))).into_response()
}

/// `POST /logout`: forgets the session and deletes the cookie.
pub async fn logout(State(app): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    app.gate.close_session(&headers);
    see_other("/login", Some(app.gate.cookie("")))
}

fn see_other(location: &str, cookie: Option<String>) -> Response {
    let mut response = StatusCode::SEE_OTHER.into_response();
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(location) {
        headers.insert(header::LOCATION, value);
    }
    if let Some(value) = cookie.and_then(|c| HeaderValue::from_str(&c).ok()) {
        headers.insert(header::SET_COOKIE, value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(header::HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn open_gate_lets_everyone_read() {
        let gate = Gate::new(None, false);
        assert_eq!(gate.check(&HeaderMap::new()), Credentials::Valid);
        assert!(!gate.token_matches(""));
    }

    #[test]
    fn bearer_and_session_are_checked() {
        let gate = Gate::new(Some("s3cret"), false);
        assert_eq!(gate.check(&HeaderMap::new()), Credentials::Missing);
        assert_eq!(gate.check(&headers(&[("authorization", "Bearer s3cret")])), Credentials::Valid);
        assert_eq!(gate.check(&headers(&[("authorization", "Bearer s3cre")])), Credentials::WrongToken);
        assert_eq!(gate.check(&headers(&[("cookie", "bertsweep_session=forged")])), Credentials::Missing);
        let id = gate.open_session();
        let cookie = format!("theme=dark; {COOKIE}={id}");
        assert_eq!(gate.check(&headers(&[("cookie", &cookie)])), Credentials::Valid);
        gate.close_session(&headers(&[("cookie", &cookie)]));
        assert_eq!(gate.check(&headers(&[("cookie", &cookie)])), Credentials::Missing);
    }

    #[test]
    fn cookie_is_http_only_strict_and_secure_under_tls() {
        let cookie = Gate::new(Some("t"), true).cookie("abc");
        for part in ["HttpOnly", "SameSite=Strict", "Secure", "Path=/"] {
            assert!(cookie.contains(part), "{cookie}");
        }
        assert!(!Gate::new(Some("t"), false).cookie("abc").contains("Secure"));
        assert!(Gate::new(Some("t"), false).cookie("").contains("Max-Age=0"));
    }

    #[test]
    fn open_dashboards_answer_only_to_literal_hosts() {
        for ok in ["127.0.0.1:8080", "localhost:8080", "LOCALHOST", "10.0.0.5", "[::1]:8080", "[fe80::1]"] {
            assert!(host_is_literal(&headers(&[("host", ok)])), "{ok}");
        }
        for bad in ["evil.example", "evil.example:8080", "127.0.0.1.nip.io", "[not-ip]:80", "localhost.evil.example"] {
            assert!(!host_is_literal(&headers(&[("host", bad)])), "{bad}");
        }
    }

    #[test]
    fn next_stays_on_this_site() {
        assert_eq!(safe_next("/studies/a?x=1"), "/studies/a?x=1");
        for bad in ["//evil.example/", "https://evil.example/", "/\\evil.example", "", "javascript:alert(1)", "/a\nb"] {
            assert_eq!(safe_next(bad), "/", "{bad:?}");
        }
    }
}
