//! Route matching and route policy. Pure: no I/O, no pingora types.

pub mod path;
pub mod policy;
pub mod redirect;
pub mod routes;

pub use path::{PathError, Target, parse_target, under_prefix};
pub use policy::{Denied, authorize};
pub use redirect::safe_redirect;
pub use routes::{RouteTable, normalize_host};

use crate::config::Route;

/// Whether a request needs a session at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// `public: true`, or the path is under one of `public_paths`.
    Public,
    /// A valid session (or bearer token) and the route's policy are needed.
    Protected,
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
