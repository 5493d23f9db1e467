//! The request as the client wrote it, read strictly: the request target
//! (path normalization, the servlet view of `;` parameters), the host, and
//! the original request a proxy in front describes to forward-auth. Pure,
//! the lowest layer: nothing here knows a route, a session or Pingora.

pub mod forwarded;
pub mod host;
pub mod path;

pub use host::normalize_host;
pub use path::{PathError, Target, parse_target, under_prefix};
