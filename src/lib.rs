//! Portcullis: an identity-aware reverse proxy on Pingora.
#![forbid(unsafe_code)]

pub mod admin;
pub mod app;
pub mod assertion;
pub mod authz;
pub mod config;
pub mod demo;
#[doc(hidden)]
pub mod fuzzing;
pub mod login;
pub mod metrics;
pub mod oidc;
pub mod page;
pub mod paths;
pub mod provision;
pub mod proxy;
pub mod request;
pub mod sealed;
pub mod session;
pub mod state;
pub mod store;
pub mod telemetry;
pub mod upstream;
pub mod util;
