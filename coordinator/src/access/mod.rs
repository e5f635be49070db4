//! Who may call what: tokens with roles, and the one table of what each gRPC method needs.
//!
//! A coordinator started with a token file gives every token one [`Role`]:
//! - `worker`: what `bertsweep-worker` calls (register, lease, heartbeat, report, complete or
//!   fail trials, offer and upload models and checkpoints, download inputs, read a study);
//! - `viewer`: reading (studies, trials, configurations, the best trial, watching a study,
//!   downloading models, server reflection, the dashboard);
//! - `admin`: everything, including creating, stopping and deleting studies and backups.
//!
//! The file holds one `role:token` per line (blank lines and `#` comments are skipped); a file
//! whose only line has no `role:` prefix is the older single-token form, and that token is an
//! admin's, as is `--token`/`BERTSWEEP_TOKEN`. [`TokenSet::parse`] refuses a file it cannot
//! read unambiguously with one line naming the line number, never the token.
//!
//! [`required`] is the table by gRPC method path; a method it does not name needs admin, so a
//! new RPC is closed until someone opens it here. [`AuthLayer`] enforces it in front of every
//! service of the gRPC port: no token or a wrong one is UNAUTHENTICATED (and counts towards the
//! per-address [`AuthThrottle`]); a right token whose role is too small is PERMISSION_DENIED,
//! saying which role the method needs. The dashboard asks the same [`Tokens`].

use std::fmt;
use std::future::{ready, Ready};
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};

use futures::future::Either;
use tonic::Status;

use crate::auth_throttle::AuthThrottle;
use crate::clock::now_ms;

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// A training worker: leases, reports, uploads of models and checkpoints.
    Worker,
    /// Reads studies and trials, downloads models, uses the dashboard.
    Viewer,
    /// Everything, creating and stopping studies included.
    Admin,
}

impl Role {
    /// Every role, in the order messages list them.
    pub const ALL: [Role; 3] = [Role::Worker, Role::Viewer, Role::Admin];

    /// The role's name in token files and messages.
    pub fn name(self) -> &'static str {
        match self {
            Role::Worker => "worker",
            Role::Viewer => "viewer",
            Role::Admin => "admin",
        }
    }

    /// The role named `name` (ASCII case ignored).
    pub fn from_name(name: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.name().eq_ignore_ascii_case(name))
    }

    /// A small non-zero number per role, for the constant-time lookup.
    fn code(self) -> u8 {
        match self {
            Role::Worker => 1,
            Role::Viewer => 2,
            Role::Admin => 3,
        }
    }

    fn from_code(code: u8) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.code() == code)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Shortest token `serve` accepts on an address others can reach.
pub const MIN_TOKEN_BYTES: usize = 16;

/// One token of a [`TokenSet`].
#[derive(Clone)]
struct Entry {
    token: Box<str>,
    role: Role,
    /// Its line in the token file (1-based; 0 for `--token`).
    line: usize,
}

/// The tokens a coordinator accepts, each with its role. `Debug` never shows a token.
#[derive(Clone)]
pub struct TokenSet {
    entries: Vec<Entry>,
    /// Read from the single-token form (a bare token: admin).
    single: bool,
}

impl fmt::Debug for TokenSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TokenSet({})", self.counts())
    }
}

/// How many tokens each role has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RoleCounts {
    /// Admin tokens.
    pub admin: usize,
    /// Worker tokens.
    pub worker: usize,
    /// Viewer tokens.
    pub viewer: usize,
}

impl fmt::Display for RoleCounts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} admin, {} worker, {} viewer", self.admin, self.worker, self.viewer)
    }
}

/// Why a token file (or `--token`) cannot be used. One line each; none quotes a token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenFileError {
    /// Nothing but blank lines and comments.
    #[error(
        "it is empty; write one `role:token` per line (roles worker, viewer, admin), or a single token for an admin"
    )]
    Empty,
    /// `something:token` where `something` is not a role.
    #[error("line {line}: unknown role; write `role:token` with the role worker, viewer or admin")]
    UnknownRole {
        /// 1-based line number.
        line: usize,
    },
    /// A bare token in a file of several lines.
    #[error("line {line}: no role; in a file of several tokens write each as `role:token` (worker, viewer or admin)")]
    MissingRole {
        /// 1-based line number.
        line: usize,
    },
    /// `role:` with nothing after it.
    #[error("line {line}: the {role} token is empty; put the secret after `{role}:`")]
    EmptyToken {
        /// 1-based line number.
        line: usize,
        /// The role the line names.
        role: Role,
    },
    /// A token that also appears on an earlier line.
    #[error("line {line}: the same token as line {first}; give every line a token of its own (one role per token)")]
    Duplicate {
        /// 1-based line number of the repeat.
        line: usize,
        /// 1-based line number where it appeared first.
        first: usize,
    },
    /// Whitespace or characters an `authorization` header cannot carry.
    #[error(
        "line {line}: the token holds spaces or characters outside printable ASCII, which a header cannot carry; make one with `openssl rand -hex 32`"
    )]
    BadCharacters {
        /// 1-based line number.
        line: usize,
    },
}

impl TokenSet {
    /// The `--token` form: one admin token (surrounding whitespace removed).
    pub fn admin(token: &str) -> Result<Self, TokenFileError> {
        let token = token.trim();
        if token.is_empty() {
            return Err(TokenFileError::Empty);
        }
        Ok(TokenSet { entries: vec![Entry { token: token.into(), role: Role::Admin, line: 0 }], single: true })
    }

    /// Parses a token file: `role:token` lines, or a single bare token (an admin's).
    pub fn parse(text: &str) -> Result<Self, TokenFileError> {
        let lines: Vec<(usize, &str)> = text
            .lines()
            .enumerate()
            .map(|(i, l)| (i + 1, l.trim()))
            .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'))
            .collect();
        match lines.as_slice() {
            [] => return Err(TokenFileError::Empty),
            // The single-token form: the whole line is the token (as before roles existed).
            [(line, only)] if role_prefix(only).is_none() => {
                return Ok(TokenSet {
                    entries: vec![Entry { token: (*only).into(), role: Role::Admin, line: *line }],
                    single: true,
                })
            }
            _ => {}
        }
        let mut entries: Vec<Entry> = Vec::with_capacity(lines.len());
        for (line, text) in lines {
            let (role, token) = match role_prefix(text) {
                Some(parsed) => parsed,
                None if text.contains(':') => return Err(TokenFileError::UnknownRole { line }),
                None => return Err(TokenFileError::MissingRole { line }),
            };
            if token.is_empty() {
                return Err(TokenFileError::EmptyToken { line, role });
            }
            if !token.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(TokenFileError::BadCharacters { line });
            }
            if let Some(first) = entries.iter().find(|e| *e.token == *token) {
                return Err(TokenFileError::Duplicate { line, first: first.line });
            }
            entries.push(Entry { token: token.into(), role, line });
        }
        Ok(TokenSet { entries, single: false })
    }

    /// The role of `given`, comparing it with every token in time that depends only on the
    /// tokens held (no early exit on a match or on the first differing byte).
    pub fn role_of(&self, given: &str) -> Option<Role> {
        let mut found = 0u8;
        for entry in &self.entries {
            let matched = u8::from(constant_time_eq(given.as_bytes(), entry.token.as_bytes()));
            found |= std::hint::black_box(matched.wrapping_neg()) & entry.role.code();
        }
        Role::from_code(found)
    }

    /// How many tokens each role has.
    pub fn counts(&self) -> RoleCounts {
        let mut counts = RoleCounts::default();
        for entry in &self.entries {
            match entry.role {
                Role::Admin => counts.admin += 1,
                Role::Worker => counts.worker += 1,
                Role::Viewer => counts.viewer += 1,
            }
        }
        counts
    }

    /// Whether it came in the single-token form (one admin token).
    pub fn is_single(&self) -> bool {
        self.single
    }

    /// The single-token form whose token reads like a mistyped `role:token` line (a word, a
    /// colon, the rest): worth a warning, since it is taken whole as an admin token.
    pub fn looks_like_mistyped_role(&self) -> bool {
        self.single
            && self.entries.iter().any(|e| {
                e.token.split_once(':').is_some_and(|(word, rest)| {
                    !rest.is_empty() && (1..=16).contains(&word.len()) && word.bytes().all(|b| b.is_ascii_alphabetic())
                })
            })
    }

    /// Where the tokens shorter than [`MIN_TOKEN_BYTES`] are, in one line that names lines and
    /// lengths but never a token (`None` when every token is long enough).
    pub fn weakness(&self) -> Option<String> {
        let weak: Vec<&Entry> = self.entries.iter().filter(|e| e.token.len() < MIN_TOKEN_BYTES).collect();
        let first = weak.first()?;
        let more = match weak.len() {
            1 => String::new(),
            n => format!(" (and {} more)", n - 1),
        };
        Some(if self.single {
            format!("the token is {} bytes", first.token.len())
        } else {
            format!("the {} token on line {} is {} bytes{more}", first.role, first.line, first.token.len())
        })
    }
}

/// `role:token` with a recognised role: the role and the trimmed token.
fn role_prefix(line: &str) -> Option<(Role, &str)> {
    let (role, token) = line.split_once(':')?;
    Some((Role::from_name(role.trim())?, token.trim()))
}

/// Compares a presented token with an expected one in time that depends only on the expected
/// token's length (no early exit on the first differing byte or on a length mismatch).
pub fn constant_time_eq(given: &[u8], expected: &[u8]) -> bool {
    let mut diff = u8::from(given.len() != expected.len());
    for (i, e) in expected.iter().enumerate() {
        diff |= given.get(i).copied().unwrap_or(0) ^ e;
    }
    diff == 0
}

/// The tokens in force, shared by the gRPC port, the dashboard and the reloader, which swaps
/// them as a whole (a request sees the old set or the new one, never a mixture).
#[derive(Clone, Default)]
pub struct Tokens {
    current: Arc<RwLock<Option<Arc<TokenSet>>>>,
}

impl fmt::Debug for Tokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.current() {
            Some(set) => write!(f, "Tokens({})", set.counts()),
            None => f.write_str("Tokens(none: open)"),
        }
    }
}

/// What a presented token amounts to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// No token is configured: everything is open.
    Open,
    /// A token of this role.
    Role(Role),
    /// A token that is none of them.
    Wrong,
}

impl Tokens {
    /// `set` in force (None: no token, everything open).
    pub fn new(set: Option<TokenSet>) -> Self {
        Tokens { current: Arc::new(RwLock::new(set.map(Arc::new))) }
    }

    /// The set in force now.
    pub fn current(&self) -> Option<Arc<TokenSet>> {
        self.current.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Puts `set` in force for every request from now on.
    pub fn replace(&self, set: TokenSet) {
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(set));
    }

    /// Whether a token is needed at all.
    pub fn required(&self) -> bool {
        self.current().is_some()
    }

    /// What `given` is worth now.
    pub fn lookup(&self, given: &str) -> Lookup {
        match self.current() {
            None => Lookup::Open,
            Some(set) => set.role_of(given).map_or(Lookup::Wrong, Lookup::Role),
        }
    }
}

/// What a gRPC method needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// No token at all (grpc.health.v1: probes carry none).
    Open,
    /// A token with one of these roles (admin is always among them).
    Roles(&'static [Role]),
}

impl Access {
    /// Whether `role` may call it.
    pub fn allows(self, role: Role) -> bool {
        match self {
            Access::Open => true,
            Access::Roles(roles) => roles.contains(&role),
        }
    }

    /// The roles that may, as `viewer or admin`.
    pub fn roles_text(self) -> String {
        match self {
            Access::Open => "no token".into(),
            Access::Roles(roles) => roles.iter().map(|r| r.name()).collect::<Vec<_>>().join(" or "),
        }
    }
}

const ADMIN: &[Role] = &[Role::Admin];
const WORKER: &[Role] = &[Role::Worker, Role::Admin];
const VIEWER: &[Role] = &[Role::Viewer, Role::Admin];
const ANY_ROLE: &[Role] = &[Role::Worker, Role::Viewer, Role::Admin];

/// The gRPC service every method below belongs to.
pub const COORDINATOR_SERVICE: &str = "bertsweep.v1.Coordinator";

/// Who may call each method of [`COORDINATOR_SERVICE`]. Admin may call everything; a method
/// missing here needs admin.
pub const COORDINATOR_METHODS: &[(&str, &[Role])] = &[
    // Studies: reading is for viewers; workers read one study (has it ended?).
    ("GetStudy", ANY_ROLE),
    ("ListStudies", VIEWER),
    ("ListTrials", VIEWER),
    ("ListConfigurations", VIEWER),
    ("GetBestTrial", VIEWER),
    ("WatchStudy", VIEWER),
    // Changing studies is for admins only.
    ("CreateStudy", ADMIN),
    ("StopStudy", ADMIN),
    ("DeleteStudy", ADMIN),
    ("Backup", ADMIN),
    // The worker's loop.
    ("RegisterWorker", WORKER),
    ("AcquireTrial", WORKER),
    ("Heartbeat", WORKER),
    ("ReportProgress", WORKER),
    ("CompleteTrial", WORKER),
    ("FailTrial", WORKER),
    ("OfferArtifact", WORKER),
    // Blobs: workers upload models and checkpoints, the CLI (admin) a study's inputs before
    // CreateStudy; workers download inputs and checkpoints, viewers models.
    ("FindMissingBlobs", WORKER),
    ("UploadBlob", WORKER),
    ("DownloadBlob", ANY_ROLE),
];

/// What the method at `path` (`/package.Service/Method`) needs, and its name for messages.
pub fn required(path: &str) -> (&str, Access) {
    let Some((service, method)) = path.strip_prefix('/').and_then(|p| p.split_once('/')) else {
        return (path, Access::Roles(ADMIN));
    };
    match service {
        COORDINATOR_SERVICE => {
            let access = COORDINATOR_METHODS.iter().find(|(m, _)| *m == method).map_or(ADMIN, |(_, roles)| *roles);
            (method, Access::Roles(access))
        }
        "grpc.health.v1.Health" => (method, Access::Open),
        "grpc.reflection.v1.ServerReflection" | "grpc.reflection.v1alpha.ServerReflection" => {
            ("server reflection", Access::Roles(VIEWER))
        }
        _ => (path, Access::Roles(ADMIN)),
    }
}

/// Checks every request of the gRPC port against [`required`] (a tower layer; see the module
/// docs).
#[derive(Clone, Debug)]
pub struct AuthLayer {
    tokens: Tokens,
    /// Wrong tokens per peer address: a guessing peer is refused unchecked for a while.
    throttle: Arc<AuthThrottle>,
}

impl AuthLayer {
    /// A layer asking `tokens` (no set in force: everything is open).
    pub fn new(tokens: Tokens) -> Self {
        AuthLayer { tokens, throttle: Arc::default() }
    }
}

impl<S> tower::Layer<S> for AuthLayer {
    type Service = Auth<S>;

    fn layer(&self, inner: S) -> Auth<S> {
        Auth { inner, layer: self.clone() }
    }
}

/// The service [`AuthLayer`] builds.
#[derive(Clone, Debug)]
pub struct Auth<S> {
    inner: S,
    layer: AuthLayer,
}

impl AuthLayer {
    /// `Ok` when the request may go on; otherwise the status to answer with.
    fn check<B>(&self, request: &http::Request<B>) -> Result<(), Status> {
        let (method, access) = required(request.uri().path());
        if access == Access::Open {
            return Ok(());
        }
        let set = match self.tokens.current() {
            Some(set) => set,
            None => return Ok(()),
        };
        let peer = crate::connections::peer_of(request).map(|a| a.ip());
        let given = request
            .headers()
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        let now = now_ms();
        if let (Some(peer), Some(_)) = (peer, given) {
            if let Some(wait) = self.throttle.wait(peer, now) {
                return Err(Status::unauthenticated(AuthThrottle::refusal(wait)));
            }
        }
        let Some(given) = given else {
            return Err(Status::unauthenticated(
                "this coordinator requires a token; pass --token-file (or --token, BERTSWEEP_TOKEN)",
            ));
        };
        let Some(role) = set.role_of(given) else {
            if let Some(peer) = peer {
                self.throttle.failed(peer, "grpc", now);
            }
            return Err(Status::unauthenticated("wrong token; check --token-file / --token / BERTSWEEP_TOKEN"));
        };
        if let Some(peer) = peer {
            self.throttle.succeeded(peer);
        }
        if access.allows(role) {
            Ok(())
        } else {
            Err(Status::permission_denied(format!(
                "this token has role {role}; {method} needs {}",
                access.roles_text()
            )))
        }
    }
}

impl<S, B, R> tower::Service<http::Request<B>> for Auth<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
    R: Default,
{
    type Response = http::Response<R>;
    type Error = S::Error;
    type Future = Either<S::Future, Ready<Result<http::Response<R>, S::Error>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        match self.layer.check(&request) {
            Ok(()) => Either::Left(self.inner.call(request)),
            Err(status) => Either::Right(ready(Ok(status.into_http()))),
        }
    }
}

#[cfg(test)]
mod tests;
