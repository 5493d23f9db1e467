//! Validation of the file's sections into the model, one file per
//! section as the YAML has them (`server`, `session`,
//! `identity_providers`, `organizations`, `routes`, `identity_headers`),
//! with the helpers they share here. Every problem names its YAML path.

mod identity_headers;
mod identity_providers;
mod organizations;
mod routes;
mod server;
mod session;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;

use super::error::Problem;
use super::file::{self, FileConfig};
use super::model::*;

pub(super) struct Validator<'a> {
    pub(super) problems: Vec<Problem>,
    pub(super) warnings: Vec<Problem>,
    pub(super) resolve: &'a dyn Fn(&str) -> std::io::Result<Vec<SocketAddr>>,
}

impl Validator<'_> {
    fn err(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.problems.push(Problem::new(path, message));
    }

    fn warn(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.warnings.push(Problem::new(path, message));
    }

    /// The duration written at `path`; `None` when absent, or unreadable
    /// (then an error names it).
    fn parsed_duration(&mut self, path: &str, value: Option<&str>) -> Option<Duration> {
        match parse_duration(value?) {
            Ok(d) => Some(d),
            Err(e) => {
                self.err(path, e);
                None
            }
        }
    }

    fn duration(&mut self, path: &str, value: Option<&str>, default: Duration) -> Duration {
        match self.parsed_duration(path, value) {
            Some(d) if d.is_zero() => {
                self.err(path, "must be longer than zero");
                default
            }
            Some(d) => d,
            None => default,
        }
    }

    /// A duration where zero means "off".
    fn duration_or_off(&mut self, path: &str, value: Option<&str>, default: Duration) -> Duration {
        self.parsed_duration(path, value).unwrap_or(default)
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

    pub(super) fn config(&mut self, raw: FileConfig, source: &Path) -> Option<Config> {
        let server = self.server(&raw.server);
        let admin = raw.admin.as_ref().and_then(|a| self.admin(a));
        let store = self.store(&raw.store);
        let session = self.session(&raw.session, server.as_ref());
        let organizations = self.organizations(&raw.organizations);
        let mut identity_providers =
            self.identity_providers(&raw.identity_providers, &organizations);
        let scim = self.scim(&raw.scim, &mut identity_providers);
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
            scim,
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
