//! Portcullis: an identity-aware reverse proxy on Pingora.
//!
//! The modules that the binary, the integration tests, the benches or the
//! fuzz targets use are public; the rest are private to the crate, so the
//! compiler reports what nothing calls.
#![forbid(unsafe_code)]

// The crate's own name, so that the config builder shared with the
// integration tests and benches (`tests/support/yaml.rs`) resolves inside
// the crate's unit tests too.
extern crate self as portcullis;
#[cfg(test)]
#[path = "../tests/support/yaml.rs"]
mod test_yaml;

pub(crate) mod admin;
pub mod app;
pub mod assertion;
pub mod authz;
pub mod config;
pub mod demo;
#[doc(hidden)]
pub mod fuzzing;
pub(crate) mod listen;
pub mod login;
pub(crate) mod metrics;
pub mod oidc;
pub(crate) mod page;
pub(crate) mod paths;
pub mod preview;
pub mod provision;
pub mod proxy;
pub(crate) mod request;
pub mod scim;
pub(crate) mod sealed;
pub mod session;
pub(crate) mod state;
pub mod store;
pub mod telemetry;
pub(crate) mod upstream;
pub mod util;
