//! Route matching and route policy. Pure: no I/O, no pingora types.

pub mod policy;
pub mod redirect;
pub mod routes;

pub use crate::request::{PathError, Target, normalize_host, parse_target, under_prefix};
pub use policy::{Denied, Roles, authorize};
pub use redirect::safe_redirect;
pub use routes::RouteTable;

use std::sync::Arc;

use crate::config::Route;

/// Whether a request needs a session at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// `public: true`, or the path is under one of `public_paths`.
    Public,
    /// A valid session (or bearer token) and the route's policy are needed.
    Protected,
}

/// Which route serves a request and whether it needs a session: the
/// route for `host` and the target's path, judged on every view of the
/// path that a server behind may take (as written, and as a servlet
/// container reads it without `;parameters`). Both views must name the
/// same route, and the request is public only if both are.
#[derive(Debug)]
pub struct Judged {
    pub route: Arc<Route>,
    pub access: Access,
}

/// The views of one path name different routes: refused with 400.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the path's ;parameters make it name two different routes")]
pub struct AmbiguousPath;

pub fn judge(
    table: &RouteTable,
    host: &str,
    target: &Target,
) -> Result<Option<Judged>, AmbiguousPath> {
    let route = table.lookup(host, &target.path);
    let Some(servlet) = target.servlet_path.as_deref() else {
        return Ok(route.map(|r| Judged {
            access: access(r, &target.path),
            route: r.clone(),
        }));
    };
    let other = table.lookup(host, servlet);
    match (route, other) {
        (None, None) => Ok(None),
        (Some(a), Some(b)) if Arc::ptr_eq(a, b) => {
            let both_public =
                access(a, &target.path) == Access::Public && access(a, servlet) == Access::Public;
            Ok(Some(Judged {
                route: a.clone(),
                access: if both_public {
                    Access::Public
                } else {
                    Access::Protected
                },
            }))
        }
        _ => Err(AmbiguousPath),
    }
}

pub fn access(route: &Route, normalized_path: &str) -> Access {
    if route.public
        || route
            .public_paths
            .iter()
            .any(|p| under_prefix(normalized_path, p))
    {
        Access::Public
    } else {
        Access::Protected
    }
}
