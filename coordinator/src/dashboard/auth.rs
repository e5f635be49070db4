//! Who may look and who may act. When the coordinator has tokens, every page and API call
//! needs either `Authorization: Bearer TOKEN` (scripts, curl) or a session cookie that the
//! login form sets after checking the token (browsers), and the token's role must be viewer or
//! admin: a worker's token is refused (403) with one line saying so, on the login form too.
//! The cookie is a random session id, not the token: HttpOnly (scripts cannot read it),
//! SameSite=Strict (other sites cannot ride on it), Secure under TLS, and forgotten when the
//! coordinator restarts. A session remembers the role it was opened with, and ends when a
//! reload removes its token or gives it another role. Without tokens the dashboard is open,
//! like the gRPC API on loopback.
//!
//! The session only reads: stopping a study takes an admin's token itself in a bearer header
//! on that request (see `api::stop`), so a stolen or forged cookie can never change a study.

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
use crate::access::{Lookup, Role, Tokens};
use crate::auth_throttle::{AuthThrottle, PeerAddr};
use crate::clock::now_ms;

/// The session cookie's name.
pub const COOKIE: &str = "bertsweep_session";

/// How long a login lasts.
const SESSION_TTL_MS: i64 = 12 * 3600 * 1000;

/// Sessions kept at once; the oldest go first beyond this.
const MAX_SESSIONS: usize = 10_000;

/// A wrong token waits this long before the answer, slowing guessing down.
const WRONG_TOKEN_DELAY: Duration = Duration::from_millis(300);

/// The tokens and the live sessions.
pub struct Gate {
    tokens: Tokens,
    /// Session id → the session.
    sessions: Mutex<HashMap<String, Session>>,
    /// Mark the cookie Secure (the dashboard is served over TLS).
    secure: bool,
    /// Wrong tokens per peer address (login form and bearer headers).
    pub throttle: AuthThrottle,
}

/// One login.
struct Session {
    /// Expiry (wall-clock ms).
    expires: i64,
    /// The token it was opened with: a reload that removes it (or changes its role) ends it.
    token: Arc<str>,
    /// The role it was opened with.
    role: Role,
}

/// The role a request's credentials carry (None: the dashboard is open), a request extension
/// the gate sets for the handlers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallerRole(pub Option<Role>);

/// What a request's credentials amount to.
#[derive(Debug, PartialEq, Eq)]
pub enum Credentials {
    /// A valid bearer token or session came with it, of this role (None: no token is
    /// configured, everything is open).
    Valid(Option<Role>),
    /// A bearer token came, and it is wrong.
    WrongToken,
    /// Nothing usable came (no header, no or an expired session).
    Missing,
}

impl Gate {
    /// A gate asking `tokens` (none in force: open dashboard).
    pub fn new(tokens: Tokens, secure: bool) -> Self {
        Gate { tokens, sessions: Mutex::new(HashMap::new()), secure, throttle: AuthThrottle::default() }
    }

    /// `true` when the coordinator has tokens.
    pub fn required(&self) -> bool {
        self.tokens.required()
    }

    /// What `given` is worth (compared with every token in constant time).
    pub fn lookup(&self, given: &str) -> Lookup {
        self.tokens.lookup(given)
    }

    /// The bearer token in `headers`, if any.
    pub fn bearer(headers: &HeaderMap) -> Option<&str> {
        headers.get(header::AUTHORIZATION)?.to_str().ok()?.strip_prefix("Bearer ").map(str::trim)
    }

    /// Checks a request's bearer header or session cookie.
    pub fn check(&self, headers: &HeaderMap) -> Credentials {
        if !self.required() {
            return Credentials::Valid(None);
        }
        if let Some(token) = Self::bearer(headers) {
            return match self.lookup(token) {
                Lookup::Role(role) => Credentials::Valid(Some(role)),
                Lookup::Open => Credentials::Valid(None),
                Lookup::Wrong => Credentials::WrongToken,
            };
        }
        match session_id(headers).and_then(|id| self.session_role(id)) {
            Some(role) => Credentials::Valid(Some(role)),
            None => Credentials::Missing,
        }
    }

    fn sessions(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The role of live session `id`: unexpired, and its token still has the role it was
    /// opened with (a reload may have removed it); otherwise the session is forgotten.
    fn session_role(&self, id: &str) -> Option<Role> {
        let now = now_ms();
        let mut sessions = self.sessions();
        let session = sessions.get(id)?;
        if session.expires > now && self.tokens.lookup(&session.token) == Lookup::Role(session.role) {
            return Some(session.role);
        }
        sessions.remove(id);
        None
    }

    /// Starts a session for `token` of `role`; returns its id.
    fn open_session(&self, token: &str, role: Role) -> String {
        let mut bytes = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        let id: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let now = now_ms();
        let mut sessions = self.sessions();
        sessions.retain(|_, s| s.expires > now);
        if sessions.len() >= MAX_SESSIONS {
            if let Some(oldest) = sessions.iter().min_by_key(|(_, s)| s.expires).map(|(k, _)| k.clone()) {
                sessions.remove(&oldest);
            }
        }
        sessions.insert(id.clone(), Session { expires: now + SESSION_TTL_MS, token: Arc::from(token), role });
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

/// Why a worker's token cannot open the dashboard.
pub const WORKER_REFUSED: &str =
    "this token has role worker, which the dashboard does not accept; use a viewer or admin token";

/// The middleware in front of every page and API call.
pub async fn gate(State(app): State<Arc<AppState>>, mut request: Request, next: Next) -> Response {
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
        Credentials::Valid(role) => {
            if let (Some(peer), true) = (peer, Gate::bearer(request.headers()).is_some()) {
                app.gate.throttle.succeeded(peer);
            }
            if role == Some(Role::Worker) {
                if request.uri().path().starts_with("/api/") {
                    return (StatusCode::FORBIDDEN, Json(serde_json::json!({ "error": WORKER_REFUSED })))
                        .into_response();
                }
                let here = request.uri().path_and_query().map(|p| p.as_str()).unwrap_or("/");
                return (StatusCode::FORBIDDEN, pages::login_html(safe_next(here), Some(WORKER_MESSAGE)))
                    .into_response();
            }
            request.extensions_mut().insert(CallerRole(role));
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
    let token = form.token.trim();
    match app.gate.lookup(token) {
        Lookup::Role(role) => {
            if let Some(peer) = peer {
                app.gate.throttle.succeeded(peer);
            }
            if role == Role::Worker {
                return (StatusCode::FORBIDDEN, pages::login_html(&next, Some(WORKER_MESSAGE))).into_response();
            }
            let id = app.gate.open_session(token, role);
            return see_other(&next, Some(app.gate.cookie(&id)));
        }
        Lookup::Open => return see_other(&next, None),
        Lookup::Wrong => {}
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

/// The login form's line for a worker's token.
const WORKER_MESSAGE: &str =
    "This is a worker's token, which cannot open the dashboard. Log in with a viewer or admin token.";

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
    use crate::access::TokenSet;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(header::HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn gate(text: Option<&str>) -> Gate {
        Gate::new(Tokens::new(text.map(|t| TokenSet::parse(t).unwrap())), false)
    }

    #[test]
    fn open_gate_lets_everyone_read() {
        let gate = gate(None);
        assert_eq!(gate.check(&HeaderMap::new()), Credentials::Valid(None));
        assert!(!gate.required());
    }

    #[test]
    fn bearer_and_session_are_checked() {
        let gate = gate(Some("s3cret"));
        assert_eq!(gate.check(&HeaderMap::new()), Credentials::Missing);
        assert_eq!(gate.check(&headers(&[("authorization", "Bearer s3cret")])), Credentials::Valid(Some(Role::Admin)));
        assert_eq!(gate.check(&headers(&[("authorization", "Bearer s3cre")])), Credentials::WrongToken);
        assert_eq!(gate.check(&headers(&[("cookie", "bertsweep_session=forged")])), Credentials::Missing);
        let id = gate.open_session("s3cret", Role::Admin);
        let cookie = format!("theme=dark; {COOKIE}={id}");
        assert_eq!(gate.check(&headers(&[("cookie", &cookie)])), Credentials::Valid(Some(Role::Admin)));
        gate.close_session(&headers(&[("cookie", &cookie)]));
        assert_eq!(gate.check(&headers(&[("cookie", &cookie)])), Credentials::Missing);
    }

    #[test]
    fn sessions_keep_their_role_and_end_with_their_token() {
        let gate = gate(Some("viewer:v-token-v-token\nworker:w-token-w-token\nadmin:a-token-a-token\n"));
        let bearer = |t: &str| headers(&[("authorization", &format!("Bearer {t}"))]);
        assert_eq!(gate.check(&bearer("w-token-w-token")), Credentials::Valid(Some(Role::Worker)));
        let viewer = gate.open_session("v-token-v-token", Role::Viewer);
        let admin = gate.open_session("a-token-a-token", Role::Admin);
        let cookie = |id: &str| headers(&[("cookie", &format!("{COOKIE}={id}"))]);
        assert_eq!(gate.check(&cookie(&viewer)), Credentials::Valid(Some(Role::Viewer)));
        assert_eq!(gate.check(&cookie(&admin)), Credentials::Valid(Some(Role::Admin)));
        // A reload drops the viewer's token and makes the admin's a viewer's: both sessions end.
        gate.tokens.replace(TokenSet::parse("viewer:a-token-a-token\nadmin:new-admin-token\n").unwrap());
        assert_eq!(gate.check(&cookie(&viewer)), Credentials::Missing);
        assert_eq!(gate.check(&cookie(&admin)), Credentials::Missing);
        assert_eq!(gate.check(&bearer("a-token-a-token")), Credentials::Valid(Some(Role::Viewer)));
    }

    #[test]
    fn cookie_is_http_only_strict_and_secure_under_tls() {
        let tokens = || Tokens::new(Some(TokenSet::admin("t").unwrap()));
        let cookie = Gate::new(tokens(), true).cookie("abc");
        for part in ["HttpOnly", "SameSite=Strict", "Secure", "Path=/"] {
            assert!(cookie.contains(part), "{cookie}");
        }
        assert!(!Gate::new(tokens(), false).cookie("abc").contains("Secure"));
        assert!(Gate::new(tokens(), false).cookie("").contains("Max-Age=0"));
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
