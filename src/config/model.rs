//! The validated configuration. Everything the rest of the program sees is
//! here: addresses resolved, JMESPath compiled (policies once per
//! organization, with `{{orgId}}` substituted), durations parsed, TLS files
//! checked. A `Config` only exists when the whole file was valid.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;

use super::error::Problem;
pub use super::file::{ClaimsSource, LogFormat};

/// A compiled JMESPath expression with the text it came from (for logs and
/// `explain`).
#[derive(Clone)]
pub struct Expr {
    pub text: String,
    pub compiled: Arc<jmespath::Expression<'static>>,
}

impl std::fmt::Debug for Expr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Expr({:?})", self.text)
    }
}

impl Expr {
    pub fn compile(text: &str) -> Result<Expr, String> {
        jmespath::compile(text)
            .map(|compiled| Expr {
                text: text.to_string(),
                compiled: Arc::new(compiled),
            })
            .map_err(|e| format!("invalid JMESPath expression {text:?}: {}", e.reason))
    }

    /// Evaluates against data already converted to JMESPath's form.
    /// `Expression::search` would copy `data` whole first (without the
    /// crate's nightly-only `specialized` feature, even an `Rcvar` goes
    /// through serde), which made every organization's policy pay for the
    /// full claims at each login.
    pub fn search(&self, data: &jmespath::Rcvar) -> jmespath::SearchResult {
        let mut ctx = jmespath::Context::new(&self.text, &jmespath::DEFAULT_RUNTIME);
        jmespath::interpret(data, self.compiled.as_ast(), &mut ctx)
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    /// The file this came from, for reload.
    pub source: PathBuf,
    pub server: Server,
    pub admin: Option<Admin>,
    /// SCIM feeds, one per IdP at most (SPEC 4b).
    pub scim: Vec<Arc<ScimFeed>>,
    pub store: Store,
    pub session: Session,
    pub identity_providers: Vec<Arc<IdentityProvider>>,
    pub organizations: Vec<Arc<Organization>>,
    pub routes: Vec<Arc<Route>>,
    pub identity_headers: IdentityHeaders,
    pub log: Log,
    /// Things that are allowed but probably not what the operator meant.
    pub warnings: Vec<Problem>,
}

#[derive(Debug, Clone)]
pub struct Server {
    pub listen: Option<SocketAddr>,
    pub tls: Option<Tls>,
    pub public_url: url::Url,
    pub trusted_proxies: Vec<IpNet>,
    pub grace_period: Duration,
    /// Proxy threads (one runtime each).
    pub threads: usize,
    /// Idle time allowed on a client connection between requests.
    pub keepalive_timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct Tls {
    pub listen: SocketAddr,
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone)]
pub struct Admin {
    pub listen: SocketAddr,
    pub tokens: Vec<BearerToken>,
    /// Serve the operator console at `/console/`.
    pub console: bool,
}

/// A bearer token as configured (`admin.tokens`, `scim[].tokens`). Plain
/// tokens are hashed at load so that the comparison is always between
/// SHA-256 digests.
#[derive(Clone, PartialEq, Eq)]
pub struct BearerToken {
    pub sha256: [u8; 32],
}

impl std::fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BearerToken(sha256:{}…)", &hex::encode(self.sha256)[..8])
    }
}

impl BearerToken {
    /// Which of `tokens` the `Authorization: Bearer …` value presents, in
    /// constant time: every token is compared, so timing says nothing of
    /// which matched or how much of one.
    pub fn matching(tokens: &[BearerToken], authorization: Option<&str>) -> Option<usize> {
        let digest = authorization
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| crate::util::sha256(token.trim().as_bytes()))?;
        let mut matched = None;
        for (i, t) in tokens.iter().enumerate() {
            if bool::from(subtle::ConstantTimeEq::ct_eq(&digest[..], &t.sha256[..])) {
                matched = Some(i);
            }
        }
        matched
    }
}

/// A SCIM feed: the directory of one IdP pushing users and groups.
#[derive(Debug, Clone)]
pub struct ScimFeed {
    pub idp: String,
    pub tokens: Vec<BearerToken>,
    /// The claim whose value is the SCIM `externalId`.
    pub match_claim: Expr,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreKind {
    Sqlite,
    Postgres,
}

#[derive(Debug, Clone)]
pub struct Store {
    pub url: String,
    pub kind: StoreKind,
    pub cache_ttl: Duration,
}

#[derive(Clone)]
pub struct Session {
    pub secret: Vec<u8>,
    pub cookie_name: String,
    pub cookie_domain: Option<String>,
    pub lifetime: Duration,
    pub idle_timeout: Duration,
    /// Zero: sessions are never refreshed.
    pub refresh_interval: Duration,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("secret", &"<redacted>")
            .field("cookie_name", &self.cookie_name)
            .field("cookie_domain", &self.cookie_domain)
            .field("lifetime", &self.lifetime)
            .field("idle_timeout", &self.idle_timeout)
            .field("refresh_interval", &self.refresh_interval)
            .finish()
    }
}

/// Which policy an expression came from, for `explain`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PolicySource {
    Organization,
    Fallback,
}

/// The policy that applies to one organization at one IdP, with each field
/// already resolved to the org-specific or the fallback expression.
#[derive(Debug, Clone)]
pub struct OrgPolicy {
    /// Index into `Config::organizations`.
    pub org: usize,
    pub org_id: String,
    /// Whether the org has a policy of its own at this IdP.
    pub source: PolicySource,
    /// `None`: neither policy has `org`, so the org matches.
    pub org_expr: Option<(Expr, PolicySource)>,
    /// `None`: no role expression, so the org is never provisioned by policy.
    pub roles_expr: Option<(Expr, PolicySource)>,
}

#[derive(Debug, Clone)]
pub struct IdentityProvider {
    pub id: String,
    pub display_name: String,
    pub issuer: String,
    pub client_id: String,
    pub client_secret: Option<String>,
    pub scopes: Vec<String>,
    pub claims: ClaimsSource,
    pub identifier: Expr,
    pub email: Expr,
    pub name: Expr,
    pub auto_provision: bool,
    pub bearer_audiences: Vec<String>,
    /// One entry per evaluated organization, in the order of `organizations`.
    pub policies: Vec<OrgPolicy>,
    /// The `match` claim of this IdP's SCIM feed, when it has one: a
    /// login is matched to a directory user by it.
    pub directory_match: Option<Expr>,
}

#[derive(Debug, Clone)]
pub struct Role {
    pub name: String,
    pub description: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct Jit {
    /// Lower-case.
    pub email_domains: Vec<String>,
    pub sso_connectors: Vec<String>,
    pub default_roles: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct Organization {
    pub id: String,
    pub name: String,
    pub roles: Vec<Role>,
    pub jit: Jit,
}

impl Organization {
    pub fn has_role(&self, name: &str) -> bool {
        self.roles.iter().any(|r| r.name == name)
    }
}

/// A host pattern of a route, lower-case, without a trailing dot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    Exact(String),
    /// `*.example.com`, stored as `.example.com`: matches any name below it.
    Wildcard(String),
}

#[derive(Debug, Clone)]
pub struct Upstream {
    pub addr: SocketAddr,
    /// Host name given in the file (for SNI and the log).
    pub host: String,
}

#[derive(Debug, Clone)]
pub struct Route {
    pub index: usize,
    pub name: String,
    pub hosts: Vec<HostPattern>,
    pub path_prefix: String,
    pub upstreams: Vec<Upstream>,
    pub upstream_tls: bool,
    pub org: Option<String>,
    pub allow_roles: Vec<String>,
    pub allow_if: Option<Expr>,
    pub public: bool,
    pub public_paths: Vec<String>,
    pub pass_cookie: bool,
    pub accept_bearer: bool,
    pub websockets: bool,
    pub claim_headers: Vec<(http::HeaderName, Expr)>,
    pub step_up: Option<StepUp>,
}

/// What a route asks of the sign-in itself (SPEC 3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepUp {
    /// The ID token's `acr` must be one of these; empty: any.
    pub acr_values: Vec<String>,
    /// The ID token's `auth_time` at most this old.
    pub max_age: Option<Duration>,
}

impl StepUp {
    /// Whether a sign-in with `acr` at `auth_time` meets it at `now`.
    pub fn met_by(&self, acr: Option<&str>, auth_time: Option<i64>, now: i64) -> bool {
        let acr_ok = self.acr_values.is_empty()
            || acr.is_some_and(|a| self.acr_values.iter().any(|v| v == a));
        let fresh = match self.max_age {
            None => true,
            Some(max) => auth_time.is_some_and(|t| now - t <= max.as_secs() as i64),
        };
        acr_ok && fresh
    }
}

#[derive(Debug, Clone)]
pub struct IdentityHeaders {
    pub user_id: http::HeaderName,
    pub subject: http::HeaderName,
    pub idp: http::HeaderName,
    pub email: http::HeaderName,
    pub name: http::HeaderName,
    pub org: http::HeaderName,
    pub roles: http::HeaderName,
    pub assertion: http::HeaderName,
}

impl IdentityHeaders {
    pub fn all(&self) -> [&http::HeaderName; 8] {
        [
            &self.user_id,
            &self.subject,
            &self.idp,
            &self.email,
            &self.name,
            &self.org,
            &self.roles,
            &self.assertion,
        ]
    }
}

#[derive(Debug, Clone)]
pub struct Log {
    pub format: LogFormat,
    pub level: String,
}

impl Config {
    pub fn organization(&self, id: &str) -> Option<&Arc<Organization>> {
        self.organizations.iter().find(|o| o.id == id)
    }

    pub fn identity_provider(&self, id: &str) -> Option<&Arc<IdentityProvider>> {
        self.identity_providers.iter().find(|i| i.id == id)
    }

    pub fn scim_feed(&self, idp: &str) -> Option<&Arc<ScimFeed>> {
        self.scim.iter().find(|f| f.idp == idp)
    }
}
