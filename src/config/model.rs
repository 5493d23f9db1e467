//! The validated configuration. Everything the rest of the program sees is
//! here: addresses resolved, JMESPath compiled (policies once per
//! organization, with `{{orgId}}` substituted), durations parsed, TLS files
//! checked. A `Config` only exists when the whole file was valid.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use serde_yaml::Value;

use super::error::{ConfigError, Problem};
use super::file::{self, FileConfig};
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
    pub tokens: Vec<AdminToken>,
}

/// An admin token as configured. Plain tokens are hashed at load so that the
/// comparison is always between SHA-256 digests.
#[derive(Clone, PartialEq, Eq)]
pub struct AdminToken {
    pub sha256: [u8; 32],
}

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AdminToken(sha256:{}…)", &hex::encode(self.sha256)[..8])
    }
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
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("secret", &"<redacted>")
            .field("cookie_name", &self.cookie_name)
            .field("cookie_domain", &self.cookie_domain)
            .field("lifetime", &self.lifetime)
            .field("idle_timeout", &self.idle_timeout)
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

    /// Reads, substitutes `${VAR}`, parses and validates `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            file: file.clone(),
            source,
        })?;
        Self::from_yaml(&text, path, &Environment::system())
    }

    /// Parses and validates YAML text against `env`.
    pub fn from_yaml(text: &str, source: &Path, env: &Environment) -> Result<Config, ConfigError> {
        let file = source.display().to_string();
        let mut value: Value = serde_yaml::from_str(text).map_err(|e| {
            let (line, column) = e
                .location()
                .map(|l| (l.line(), l.column()))
                .unwrap_or((0, 0));
            ConfigError::Syntax {
                file: file.clone(),
                line,
                column,
                message: strip_location(&e.to_string()),
            }
        })?;
        if value.is_null() {
            return Err(ConfigError::Invalid {
                file,
                problems: vec![Problem::new("", "the file is empty")],
            });
        }
        let mut problems = Vec::new();
        substitute_env(&mut value, &mut String::new(), env.var, &mut problems);
        if !problems.is_empty() {
            return Err(ConfigError::Invalid { file, problems });
        }
        let raw: FileConfig = serde_path_to_error::deserialize(value).map_err(|e| {
            let path = e.path().to_string();
            let path = if path == "." { String::new() } else { path };
            ConfigError::Invalid {
                file: file.clone(),
                problems: vec![Problem::new(path, strip_location(&e.inner().to_string()))],
            }
        })?;
        let mut v = Validator {
            problems: Vec::new(),
            warnings: Vec::new(),
            resolve: env.resolve,
        };
        let config = v.config(raw, source);
        match config {
            Some(c) if v.problems.is_empty() => Ok(c),
            _ => Err(ConfigError::Invalid {
                file,
                problems: v.problems,
            }),
        }
    }
}

/// serde_yaml appends " at line L column C" to messages; the location is
/// reported separately.
fn strip_location(message: &str) -> String {
    match message.find(" at line ") {
        Some(i) => message[..i].to_string(),
        None => message.to_string(),
    }
}

/// Replaces `${VAR}` in every string of the document; `$${` stays a
/// literal `${`. A missing variable is a problem at the string's path.
fn substitute_env(
    value: &mut Value,
    path: &mut String,
    env: &dyn Fn(&str) -> Option<String>,
    problems: &mut Vec<Problem>,
) {
    match value {
        Value::String(s) if s.contains("${") => match expand(s, env) {
            Ok(expanded) => *s = expanded,
            Err(message) => problems.push(Problem::new(path.clone(), message)),
        },
        Value::Sequence(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                substitute_env(item, path, env, problems);
                path.truncate(len);
            }
        }
        Value::Mapping(map) => {
            for (key, item) in map.iter_mut() {
                let len = path.len();
                let key = match key {
                    Value::String(k) => k.clone(),
                    other => serde_yaml::to_string(other)
                        .unwrap_or_default()
                        .trim()
                        .to_string(),
                };
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(&key);
                substitute_env(item, path, env, problems);
                path.truncate(len);
            }
        }
        Value::Tagged(tagged) => substitute_env(&mut tagged.value, path, env, problems),
        _ => {}
    }
}

fn expand(s: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix("${") {
            out.push_str("${");
            rest = tail;
        } else if let Some(tail) = after.strip_prefix('{') {
            let end = tail
                .find('}')
                .ok_or_else(|| "unterminated ${ in string".to_string())?;
            let name = &tail[..end];
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(format!("invalid environment variable name ${{{name}}}"));
            }
            match env(name) {
                Some(v) => out.push_str(&v),
                None => return Err(format!("environment variable {name} is not set")),
            }
            rest = &tail[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

pub(crate) fn valid_id(id: &str) -> bool {
    let b = id.as_bytes();
    !b.is_empty()
        && b.len() <= 64
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b[1..]
            .iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || b"._-".contains(c))
}

/// A DNS name with at least one dot: labels of letters, digits and `-`.
pub fn valid_domain(domain: &str) -> bool {
    domain.len() <= 128
        && domain.contains('.')
        && domain.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim())
        .map_err(|e| format!("invalid duration {s:?} ({e}); use e.g. 30s, 15m, 12h, 7d"))
}

/// What a config is checked against besides its text: environment
/// variables for `${VAR}`, and name resolution for addresses.
pub struct Environment<'a> {
    pub var: &'a dyn Fn(&str) -> Option<String>,
    pub resolve: &'a dyn Fn(&str) -> std::io::Result<Vec<SocketAddr>>,
}

impl Environment<'static> {
    /// The process environment and the system resolver.
    pub fn system() -> Environment<'static> {
        Environment {
            var: &|name| std::env::var(name).ok(),
            resolve: &|addr| addr.to_socket_addrs().map(|a| a.collect()),
        }
    }
}

struct Validator<'a> {
    problems: Vec<Problem>,
    warnings: Vec<Problem>,
    resolve: &'a dyn Fn(&str) -> std::io::Result<Vec<SocketAddr>>,
}

impl Validator<'_> {
    fn err(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.problems.push(Problem::new(path, message));
    }

    /// A `path_prefix` or public path: compared with normalized request
    /// paths, so it must be one itself, and free of `;` (which servers
    /// read as the start of path parameters).
    fn check_request_path(&mut self, place: &str, p: &str) {
        if !p.starts_with('/') {
            self.err(place, "must start with /");
        } else if p.contains(';') {
            self.err(
                place,
                "must not contain ; (servers read it as path parameters)",
            );
        } else {
            match crate::request::path::normalize_path(p.as_bytes()) {
                Ok(n) if n == p || n == format!("{p}/") => {}
                Ok(n) => self.err(place, format!("is not a normalized path; write {n:?}")),
                Err(e) => self.err(place, format!("is not a valid path: {e}")),
            }
        }
    }

    fn warn(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.warnings.push(Problem::new(path, message));
    }

    fn duration(&mut self, path: &str, value: Option<&str>, default: Duration) -> Duration {
        match value {
            None => default,
            Some(s) => match parse_duration(s) {
                Ok(d) if d.is_zero() => {
                    self.err(path, "must be longer than zero");
                    default
                }
                Ok(d) => d,
                Err(e) => {
                    self.err(path, e);
                    default
                }
            },
        }
    }

    fn socket_addr(&mut self, path: &str, value: &str) -> Option<SocketAddr> {
        match value.parse::<SocketAddr>() {
            Ok(a) => Some(a),
            Err(_) => match (self.resolve)(value) {
                Ok(addrs) => match addrs.first().copied() {
                    Some(a) => Some(a),
                    None => {
                        self.err(path, format!("{value:?} resolves to no address"));
                        None
                    }
                },
                Err(e) => {
                    self.err(
                        path,
                        format!("{value:?} is not a host:port that resolves: {e}"),
                    );
                    None
                }
            },
        }
    }

    fn expr(&mut self, path: &str, text: &str) -> Option<Expr> {
        match Expr::compile(text) {
            Ok(e) => Some(e),
            Err(e) => {
                self.err(path, e);
                None
            }
        }
    }

    fn header_name(&mut self, path: &str, name: &str) -> Option<http::HeaderName> {
        match http::HeaderName::from_bytes(name.as_bytes()) {
            Ok(h) => Some(h),
            Err(_) => {
                self.err(path, format!("{name:?} is not a valid HTTP header name"));
                None
            }
        }
    }

    fn config(&mut self, raw: FileConfig, source: &Path) -> Option<Config> {
        let server = self.server(&raw.server);
        let admin = raw.admin.as_ref().and_then(|a| self.admin(a));
        let store = self.store(&raw.store);
        let session = self.session(&raw.session, server.as_ref());
        let organizations = self.organizations(&raw.organizations);
        let identity_providers = self.identity_providers(&raw.identity_providers, &organizations);
        self.jit_references(&raw.organizations, &identity_providers);
        let routes = self.routes(&raw.routes, &organizations);
        let identity_headers = self.identity_headers(&raw.identity_headers);
        let log = self.log(&raw.log);
        if let (Some(server), Some(session)) = (&server, &session) {
            self.cookie_reach(server, session, &routes);
        }
        Some(Config {
            source: source.to_path_buf(),
            server: server?,
            admin,
            store,
            session: session?,
            identity_providers: identity_providers.into_iter().map(Arc::new).collect(),
            organizations: organizations.into_iter().map(Arc::new).collect(),
            routes: routes.into_iter().map(Arc::new).collect(),
            identity_headers: identity_headers?,
            log,
            warnings: std::mem::take(&mut self.warnings),
        })
    }

    /// Warns about protected routes whose host the session cookie cannot
    /// reach: it is set on `public_url`'s host, and on `cookie_domain`.
    fn cookie_reach(&mut self, server: &Server, session: &Session, routes: &[Route]) {
        let public = server
            .public_url
            .host_str()
            .map(|h| h.trim_end_matches('.').to_ascii_lowercase());
        let domain = session
            .cookie_domain
            .as_deref()
            .map(|d| d.trim_start_matches('.').to_ascii_lowercase());
        let within = |name: &str| {
            domain
                .as_deref()
                .is_some_and(|d| name == d || name.ends_with(&format!(".{d}")))
        };
        for route in routes.iter().filter(|r| !r.public) {
            for (j, pattern) in route.hosts.iter().enumerate() {
                let reached = match pattern {
                    HostPattern::Exact(h) => public.as_deref() == Some(h.as_str()) || within(h),
                    HostPattern::Wildcard(suffix) => within(suffix.trim_start_matches('.')),
                };
                if !reached {
                    self.warn(
                        format!("routes[{}].hosts[{j}]", route.index),
                        "the session cookie is set on public_url's host and session.cookie_domain, and neither covers this host: signed-in users will not be recognised here",
                    );
                }
            }
        }
    }

    fn server(&mut self, s: &file::ServerSection) -> Option<Server> {
        let listen = s
            .listen
            .as_deref()
            .and_then(|l| self.socket_addr("server.listen", l));
        let tls = s.tls.as_ref().and_then(|t| {
            let listen = self.socket_addr("server.tls.listen", &t.listen);
            self.pem_file("server.tls.cert", &t.cert, "CERTIFICATE");
            self.pem_file("server.tls.key", &t.key, "PRIVATE KEY");
            Some(Tls {
                listen: listen?,
                cert: PathBuf::from(&t.cert),
                key: PathBuf::from(&t.key),
            })
        });
        if s.listen.is_none() && s.tls.is_none() {
            self.err("server", "needs `listen`, `tls`, or both");
        }
        let public_url = match url::Url::parse(&s.public_url) {
            Ok(u) if (u.scheme() == "http" || u.scheme() == "https") && u.host().is_some() => {
                if u.query().is_some() || u.fragment().is_some() {
                    self.err("server.public_url", "must not have a query or fragment");
                }
                Some(u)
            }
            Ok(_) => {
                self.err(
                    "server.public_url",
                    "must be an absolute http:// or https:// URL",
                );
                None
            }
            Err(e) => {
                self.err("server.public_url", format!("not a URL: {e}"));
                None
            }
        };
        let mut trusted_proxies = Vec::new();
        for (i, p) in s.trusted_proxies.iter().enumerate() {
            let parsed = p
                .parse::<IpNet>()
                .or_else(|_| p.parse::<IpAddr>().map(IpNet::from));
            match parsed {
                Ok(net) => trusted_proxies.push(net),
                Err(_) => self.err(
                    format!("server.trusted_proxies[{i}]"),
                    format!("{p:?} is not an IP address or CIDR"),
                ),
            }
        }
        let grace_period = match s.grace_period.as_deref() {
            None => Duration::from_secs(10),
            Some(g) => match parse_duration(g) {
                Ok(d) => d,
                Err(e) => {
                    self.err("server.grace_period", e);
                    Duration::from_secs(10)
                }
            },
        };
        Some(Server {
            listen,
            tls,
            public_url: public_url?,
            trusted_proxies,
            grace_period,
        })
    }

    fn pem_file(&mut self, path: &str, file: &str, label: &str) {
        match std::fs::read_to_string(file) {
            Ok(text) if text.contains("-----BEGIN ") && text.contains(label) => {}
            Ok(_) => self.err(path, format!("{file}: no PEM {label} found")),
            Err(e) => self.err(path, format!("{file}: cannot read: {e}")),
        }
    }

    fn admin(&mut self, a: &file::AdminSection) -> Option<Admin> {
        let listen = self.socket_addr("admin.listen", &a.listen);
        let mut tokens = Vec::new();
        for (i, t) in a.tokens.iter().enumerate() {
            let path = format!("admin.tokens[{i}]");
            if let Some(hexed) = t.strip_prefix("sha256:") {
                match hex::decode(hexed) {
                    Ok(bytes) if bytes.len() == 32 => {
                        let mut sha256 = [0u8; 32];
                        sha256.copy_from_slice(&bytes);
                        tokens.push(AdminToken { sha256 });
                    }
                    _ => self.err(path, "sha256: must be followed by 64 hex digits"),
                }
            } else if t.trim().is_empty() {
                self.err(path, "is empty");
            } else {
                if t.len() < 16 {
                    self.warn(path, "short token: use at least 16 random characters");
                }
                tokens.push(AdminToken {
                    sha256: crate::util::sha256(t.as_bytes()),
                });
            }
        }
        if a.tokens.is_empty() {
            self.warn(
                "admin.tokens",
                "no tokens: every management API call will be refused",
            );
        }
        Some(Admin {
            listen: listen?,
            tokens,
        })
    }

    fn store(&mut self, s: &file::StoreSection) -> Store {
        let url = s
            .url
            .clone()
            .unwrap_or_else(|| "sqlite://portcullis.db".to_string());
        let kind = if url.starts_with("sqlite:") {
            StoreKind::Sqlite
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            StoreKind::Postgres
        } else {
            self.err(
                "store.url",
                "must start with sqlite:// or postgres:// (or postgresql://)",
            );
            StoreKind::Sqlite
        };
        let cache_ttl = self.duration(
            "store.cache_ttl",
            s.cache_ttl.as_deref(),
            Duration::from_secs(30),
        );
        Store {
            url,
            kind,
            cache_ttl,
        }
    }

    fn session(&mut self, s: &file::SessionSection, server: Option<&Server>) -> Option<Session> {
        if s.secret.len() < 32 {
            self.err(
                "session.secret",
                format!("must be at least 32 bytes (has {})", s.secret.len()),
            );
        }
        let cookie_name = s
            .cookie_name
            .clone()
            .unwrap_or_else(|| "_portcullis".to_string());
        if cookie_name.is_empty()
            || !cookie_name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
        {
            self.err(
                "session.cookie_name",
                format!("{cookie_name:?} is not a valid cookie name"),
            );
        }
        if let Some(domain) = &s.cookie_domain {
            let bare = domain.trim_start_matches('.');
            if !valid_domain(bare) {
                self.err(
                    "session.cookie_domain",
                    format!("{domain:?} is not a domain name"),
                );
            } else if let Some(host) = server.and_then(|s| s.public_url.host_str()) {
                let host = host.to_ascii_lowercase();
                let bare = bare.to_ascii_lowercase();
                if host != bare && !host.ends_with(&format!(".{bare}")) {
                    self.warn(
                        "session.cookie_domain",
                        format!("public_url host {host} is not inside {domain}: browsers will drop the cookie"),
                    );
                }
            }
        }
        let lifetime = self.duration(
            "session.lifetime",
            s.lifetime.as_deref(),
            Duration::from_secs(12 * 3600),
        );
        let idle_timeout = self.duration(
            "session.idle_timeout",
            s.idle_timeout.as_deref(),
            Duration::from_secs(3600),
        );
        Some(Session {
            secret: s.secret.as_bytes().to_vec(),
            cookie_name,
            cookie_domain: s.cookie_domain.clone(),
            lifetime,
            idle_timeout,
        })
    }

    fn organizations(&mut self, orgs: &[file::OrgSection]) -> Vec<Organization> {
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        for (i, o) in orgs.iter().enumerate() {
            let path = format!("organizations[{i}]");
            if !valid_id(&o.id) {
                self.err(
                    format!("{path}.id"),
                    format!("{:?} must match [a-z0-9][a-z0-9._-]{{0,63}}", o.id),
                );
            }
            if !seen.insert(o.id.clone()) {
                self.err(
                    format!("{path}.id"),
                    format!("duplicate organization id {:?}", o.id),
                );
            }
            let mut role_names = HashSet::new();
            let mut roles = Vec::new();
            for (j, r) in o.roles.iter().enumerate() {
                let name = r.name.trim();
                if name.is_empty() || name != r.name {
                    self.err(
                        format!("{path}.roles[{j}].name"),
                        "must be non-empty, without leading or trailing spaces",
                    );
                } else if name.contains(',') {
                    self.err(
                        format!("{path}.roles[{j}].name"),
                        "must not contain a comma (roles are sent comma-separated)",
                    );
                }
                if !role_names.insert(r.name.clone()) {
                    self.err(
                        format!("{path}.roles[{j}].name"),
                        format!("duplicate role {:?}", r.name),
                    );
                }
                roles.push(Role {
                    name: r.name.clone(),
                    description: r.description.clone(),
                });
            }
            if roles.is_empty() {
                self.warn(
                    format!("{path}.roles"),
                    "no roles: nobody can be provisioned into this organization",
                );
            }
            let mut jit = Jit::default();
            if let Some(j) = &o.jit {
                for (k, d) in j.email_domains.iter().enumerate() {
                    let lower = d.to_ascii_lowercase();
                    if !valid_domain(&lower) {
                        self.err(
                            format!("{path}.jit.email_domains[{k}]"),
                            format!("{d:?} is not a domain name"),
                        );
                    }
                    if !jit.email_domains.contains(&lower) {
                        jit.email_domains.push(lower);
                    }
                }
                for (k, r) in j.default_roles.iter().enumerate() {
                    if !role_names.contains(r) {
                        self.err(
                            format!("{path}.jit.default_roles[{k}]"),
                            format!("role {r:?} is not declared in organization {:?}", o.id),
                        );
                    }
                    if !jit.default_roles.contains(r) {
                        jit.default_roles.push(r.clone());
                    }
                }
                for c in &j.sso_connectors {
                    if !jit.sso_connectors.contains(c) {
                        jit.sso_connectors.push(c.clone());
                    }
                }
                if (!jit.email_domains.is_empty() || !jit.sso_connectors.is_empty())
                    && jit.default_roles.is_empty()
                {
                    self.warn(
                        format!("{path}.jit.default_roles"),
                        "empty: just-in-time provisioning cannot add anyone to this organization",
                    );
                }
            }
            out.push(Organization {
                id: o.id.clone(),
                name: o.name.clone().unwrap_or_else(|| o.id.clone()),
                roles,
                jit,
            });
        }
        out
    }

    fn jit_references(&mut self, raw: &[file::OrgSection], idps: &[IdentityProvider]) {
        for (i, o) in raw.iter().enumerate() {
            let Some(j) = &o.jit else { continue };
            for (k, c) in j.sso_connectors.iter().enumerate() {
                if !idps.iter().any(|idp| &idp.id == c) {
                    self.err(
                        format!("organizations[{i}].jit.sso_connectors[{k}]"),
                        format!("{c:?} is not the id of an identity provider"),
                    );
                }
            }
        }
    }

    fn identity_providers(
        &mut self,
        idps: &[file::IdpSection],
        orgs: &[Organization],
    ) -> Vec<IdentityProvider> {
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        for (i, p) in idps.iter().enumerate() {
            let path = format!("identity_providers[{i}]");
            if !valid_id(&p.id) {
                self.err(
                    format!("{path}.id"),
                    format!("{:?} must match [a-z0-9][a-z0-9._-]{{0,63}}", p.id),
                );
            }
            if !seen.insert(p.id.clone()) {
                self.err(
                    format!("{path}.id"),
                    format!("duplicate identity provider id {:?}", p.id),
                );
            }
            match url::Url::parse(&p.issuer) {
                Ok(u) if u.scheme() == "https" => {}
                Ok(u) if u.scheme() == "http" => {
                    let loopback = match u.host() {
                        Some(url::Host::Ipv4(a)) => a.is_loopback(),
                        Some(url::Host::Ipv6(a)) => a.is_loopback(),
                        Some(url::Host::Domain(d)) => d == "localhost",
                        None => false,
                    };
                    if !loopback {
                        self.warn(
                            format!("{path}.issuer"),
                            "plain http issuer: tokens and secrets cross the network unencrypted",
                        );
                    }
                }
                _ => self.err(
                    format!("{path}.issuer"),
                    format!("{:?} is not an http(s) URL", p.issuer),
                ),
            }
            if p.client_id.is_empty() {
                self.err(format!("{path}.client_id"), "is empty");
            }
            let scopes = p
                .scopes
                .clone()
                .unwrap_or_else(|| vec!["openid".into(), "email".into(), "profile".into()]);
            if !scopes.iter().any(|s| s == "openid") {
                self.err(format!("{path}.scopes"), "must include openid");
            }
            let identifier = self.expr(
                &format!("{path}.identifier"),
                p.identifier.as_deref().unwrap_or("sub"),
            );
            let email = self.expr(
                &format!("{path}.email"),
                p.email.as_deref().unwrap_or("email"),
            );
            let name = self.expr(&format!("{path}.name"), p.name.as_deref().unwrap_or("name"));
            if let Some(text) = p.identifier.as_deref().filter(|t| t.trim() != "sub") {
                self.warn(
                    format!("{path}.identifier"),
                    format!(
                        "users are keyed by {text:?}, not the IdP's sub: a value the user or the IdP's admins can change (an email, a name) can hand the account to someone else; an identifier read from an email counts only while that email is verified"
                    ),
                );
            }
            let auto_provision = p.auto_provision.unwrap_or(true);
            let policies = self.policies(&path, p, orgs);
            if auto_provision && policies.is_empty() {
                let jit_orgs = orgs.iter().any(|o| {
                    !o.jit.email_domains.is_empty() || o.jit.sso_connectors.contains(&p.id)
                });
                if !jit_orgs {
                    self.warn(
                        format!("{path}.provisioning"),
                        "no policy and no just-in-time rule can add users from this IdP to an organization",
                    );
                }
            }
            if let (Some(identifier), Some(email), Some(name)) = (identifier, email, name) {
                out.push(IdentityProvider {
                    id: p.id.clone(),
                    display_name: p.display_name.clone().unwrap_or_else(|| p.id.clone()),
                    issuer: p.issuer.clone(),
                    client_id: p.client_id.clone(),
                    client_secret: p.client_secret.clone(),
                    scopes,
                    claims: p.claims,
                    identifier,
                    email,
                    name,
                    auto_provision,
                    bearer_audiences: p.bearer_audiences.clone(),
                    policies,
                });
            }
        }
        out
    }

    /// One `OrgPolicy` per evaluated organization: those with a policy of
    /// their own, and with a fallback policy all the others.
    fn policies(
        &mut self,
        path: &str,
        p: &file::IdpSection,
        orgs: &[Organization],
    ) -> Vec<OrgPolicy> {
        let Some(prov) = &p.provisioning else {
            return Vec::new();
        };
        for org_id in prov.organizations.keys() {
            if !orgs.iter().any(|o| &o.id == org_id) {
                self.err(
                    format!("{path}.provisioning.organizations.{org_id}"),
                    format!("organization {org_id:?} is not declared under organizations"),
                );
            }
        }
        // Compile each distinct expression text once: with a fallback policy
        // and thousands of organizations, most texts differ only by org id,
        // but ones without `{{orgId}}` are shared.
        let mut cache: HashMap<String, Option<Expr>> = HashMap::new();
        let mut out = Vec::new();
        for (index, org) in orgs.iter().enumerate() {
            let own = prov.organizations.get(&org.id);
            let source = match (own, &prov.default) {
                (Some(_), _) => PolicySource::Organization,
                (None, Some(_)) => PolicySource::Fallback,
                (None, None) => continue,
            };
            let pick = |field: fn(&file::PolicySection) -> &Option<String>| {
                own.and_then(|o| field(o).as_ref().map(|t| (t, PolicySource::Organization)))
                    .or_else(|| {
                        prov.default
                            .as_ref()
                            .and_then(|d| field(d).as_ref().map(|t| (t, PolicySource::Fallback)))
                    })
            };
            let mut compile = |text: &String, from: PolicySource, field: &str| {
                let substituted = text.replace("{{orgId}}", &org.id);
                let entry =
                    cache.entry(substituted.clone()).or_insert_with(|| {
                        match Expr::compile(&substituted) {
                            Ok(e) => Some(e),
                            Err(e) => {
                                self.problems.push(Problem::new(
                                    policy_field_path(path, &org.id, from, field),
                                    format!("{e} (for organization {:?})", org.id),
                                ));
                                None
                            }
                        }
                    });
                entry.clone().map(|e| (e, from))
            };
            let org_expr = pick(|p| &p.org).and_then(|(t, from)| compile(t, from, "org"));
            let roles_expr = pick(|p| &p.roles).and_then(|(t, from)| compile(t, from, "roles"));
            if let Some((expr, from)) = &roles_expr {
                // The typo that silently removes users: a role name the
                // organization does not declare.
                let mut literals = Vec::new();
                result_literals(expr.compiled.as_ast(), &mut literals);
                for name in literals {
                    if !org.has_role(name.trim()) && !name.trim().is_empty() {
                        let warning = Problem::new(
                            policy_field_path(path, &org.id, *from, "roles"),
                            format!(
                                "role {name:?} is not declared in organization {:?}: it will be dropped",
                                org.id
                            ),
                        );
                        if !self.warnings.contains(&warning) {
                            self.warnings.push(warning);
                        }
                    }
                }
            }
            out.push(OrgPolicy {
                org: index,
                org_id: org.id.clone(),
                source,
                org_expr,
                roles_expr,
            });
        }
        out
    }

    fn routes(&mut self, routes: &[file::RouteSection], orgs: &[Organization]) -> Vec<Route> {
        let mut names = HashSet::new();
        let mut places: HashMap<(String, String), usize> = HashMap::new();
        let mut out = Vec::new();
        for (i, r) in routes.iter().enumerate() {
            let path = format!("routes[{i}]");
            if r.name.trim().is_empty() {
                self.err(format!("{path}.name"), "is empty");
            }
            if !names.insert(r.name.clone()) {
                self.err(
                    format!("{path}.name"),
                    format!("duplicate route name {:?}", r.name),
                );
            }
            let path_prefix = r.path_prefix.clone().unwrap_or_else(|| "/".to_string());
            self.check_request_path(&format!("{path}.path_prefix"), &path_prefix);
            let mut hosts = Vec::new();
            if r.hosts.is_empty() {
                self.err(format!("{path}.hosts"), "needs at least one host");
            }
            for (j, h) in r.hosts.iter().enumerate() {
                let lower = h.trim_end_matches('.').to_ascii_lowercase();
                let pattern = match lower.strip_prefix("*.") {
                    Some(rest) if valid_domain(rest) => {
                        Some(HostPattern::Wildcard(format!(".{rest}")))
                    }
                    None if (valid_domain(&lower) || valid_host_label(&lower)) => {
                        Some(HostPattern::Exact(lower.clone()))
                    }
                    _ => None,
                };
                match pattern {
                    Some(p) => {
                        let key = (lower.clone(), path_prefix.clone());
                        if let Some(other) = places.insert(key, i) {
                            self.err(
                                format!("{path}.hosts[{j}]"),
                                format!(
                                    "host {h:?} with path_prefix {path_prefix:?} is already served by routes[{other}]"
                                ),
                            );
                        }
                        hosts.push(p);
                    }
                    None => self.err(
                        format!("{path}.hosts[{j}]"),
                        format!("{h:?} is not a host name or *.domain pattern"),
                    ),
                }
            }
            if r.upstreams.is_empty() {
                self.err(format!("{path}.upstreams"), "needs at least one upstream");
            }
            let mut upstreams = Vec::new();
            for (j, u) in r.upstreams.iter().enumerate() {
                let upath = format!("{path}.upstreams[{j}]");
                let host = match u.rsplit_once(':') {
                    Some((h, port)) if port.parse::<u16>().is_ok() => {
                        h.trim_start_matches('[').trim_end_matches(']').to_string()
                    }
                    _ => {
                        self.err(&upath, format!("{u:?} must be host:port"));
                        continue;
                    }
                };
                if let Some(addr) = self.socket_addr(&upath, u) {
                    upstreams.push(Upstream { addr, host });
                }
            }
            let org = r.org.as_ref().and_then(|id| {
                let found = orgs.iter().find(|o| &o.id == id);
                if found.is_none() {
                    self.err(
                        format!("{path}.org"),
                        format!("organization {id:?} is not declared"),
                    );
                }
                found
            });
            if !r.allow_roles.is_empty() && r.org.is_none() {
                self.err(
                    format!("{path}.allow_roles"),
                    "needs `org`: roles belong to an organization",
                );
            }
            if let Some(org) = org {
                for (j, role) in r.allow_roles.iter().enumerate() {
                    if !org.has_role(role) {
                        self.err(
                            format!("{path}.allow_roles[{j}]"),
                            format!("role {role:?} is not declared in organization {:?}", org.id),
                        );
                    }
                }
            }
            let allow_if = r
                .allow_if
                .as_ref()
                .and_then(|t| self.expr(&format!("{path}.allow_if"), t));
            for (j, p) in r.public_paths.iter().enumerate() {
                self.check_request_path(&format!("{path}.public_paths[{j}]"), p);
            }
            if r.public && (r.org.is_some() || !r.allow_roles.is_empty() || r.allow_if.is_some()) {
                self.warn(
                    path.clone(),
                    "public: true, so org, allow_roles and allow_if are never checked",
                );
            }
            let mut claim_headers = Vec::new();
            for (name, text) in &r.claim_headers {
                let hpath = format!("{path}.claim_headers.{name}");
                let header = self.header_name(&hpath, name);
                let expr = self.expr(&hpath, text);
                if let (Some(h), Some(e)) = (header, expr) {
                    claim_headers.push((h, e));
                }
            }
            out.push(Route {
                index: i,
                name: r.name.clone(),
                hosts,
                path_prefix,
                upstreams,
                upstream_tls: r.upstream_tls,
                org: r.org.clone(),
                allow_roles: r.allow_roles.clone(),
                allow_if,
                public: r.public,
                public_paths: r.public_paths.clone(),
                pass_cookie: r.pass_cookie,
                accept_bearer: r.accept_bearer,
                websockets: r.websockets.unwrap_or(true),
                claim_headers,
            });
        }
        out
    }

    fn identity_headers(&mut self, h: &file::IdentityHeadersSection) -> Option<IdentityHeaders> {
        let fields: [(&str, &Option<String>, &str); 8] = [
            ("user_id", &h.user_id, "X-Auth-User-Id"),
            ("subject", &h.subject, "X-Auth-Subject"),
            ("idp", &h.idp, "X-Auth-Idp"),
            ("email", &h.email, "X-Auth-Email"),
            ("name", &h.name, "X-Auth-Name"),
            ("org", &h.org, "X-Auth-Org"),
            ("roles", &h.roles, "X-Auth-Roles"),
            ("assertion", &h.assertion, "X-Auth-Assertion"),
        ];
        let mut seen: BTreeMap<String, &str> = BTreeMap::new();
        let mut names = Vec::new();
        for (field, value, default) in fields {
            let name = value.as_deref().unwrap_or(default);
            let path = format!("identity_headers.{field}");
            let header = self.header_name(&path, name);
            let key = name.to_ascii_lowercase().replace('_', "-");
            if let Some(other) = seen.insert(key, field) {
                self.err(
                    &path,
                    format!("{name:?} is also the header of identity_headers.{other}"),
                );
            }
            if [
                "host",
                "cookie",
                "authorization",
                "content-length",
                "transfer-encoding",
                "connection",
            ]
            .contains(&name.to_ascii_lowercase().as_str())
            {
                self.err(&path, format!("{name:?} is a reserved HTTP header"));
            }
            names.push(header);
        }
        let mut it = names.into_iter();
        let mut next = || it.next().flatten();
        Some(IdentityHeaders {
            user_id: next()?,
            subject: next()?,
            idp: next()?,
            email: next()?,
            name: next()?,
            org: next()?,
            roles: next()?,
            assertion: next()?,
        })
    }

    fn log(&mut self, l: &file::LogSection) -> Log {
        let level = l.level.clone().unwrap_or_else(|| "info".to_string());
        if tracing_subscriber::EnvFilter::try_new(&level).is_err() {
            self.err(
                "log.level",
                format!("{level:?} is not a level (error, warn, info, debug, trace) or filter"),
            );
        }
        Log {
            format: l.format,
            level,
        }
    }
}

/// A single-label host such as `localhost`.
fn valid_host_label(h: &str) -> bool {
    !h.is_empty() && h.len() <= 63 && h.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
}

/// YAML path of a policy field, in the org's own policy or the fallback.
fn policy_field_path(idp_path: &str, org_id: &str, from: PolicySource, field: &str) -> String {
    match from {
        PolicySource::Organization => {
            format!("{idp_path}.provisioning.organizations.{org_id}.{field}")
        }
        PolicySource::Fallback => format!("{idp_path}.provisioning.default.{field}"),
    }
}

/// String literals an expression can give as its result (not those it only
/// compares or passes to functions): the role names a role expression names.
fn result_literals(ast: &jmespath::ast::Ast, out: &mut Vec<String>) {
    use jmespath::ast::Ast;
    match ast {
        Ast::Literal { value, .. } => {
            if let Some(s) = value.as_string() {
                out.push(s.clone());
            } else if let Some(items) = value.as_array() {
                out.extend(items.iter().filter_map(|i| i.as_string().cloned()));
            }
        }
        Ast::And { rhs, .. } => result_literals(rhs, out),
        Ast::Or { lhs, rhs, .. } => {
            result_literals(lhs, out);
            result_literals(rhs, out);
        }
        Ast::Condition { then, .. } => result_literals(then, out),
        Ast::MultiList { elements, .. } => elements.iter().for_each(|e| result_literals(e, out)),
        _ => {}
    }
}
