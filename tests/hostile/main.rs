//! The hostile-input suite: one table per advisory class, each row an
//! input, the status it must get, and what must not reach the upstream.
//! Every row asserts no pass and no crash (the gateway still answers its
//! health check after each table).

#[path = "../support/mod.rs"]
mod support;

mod api_ids;
mod email_domains;
mod forwarded;
mod headers;
mod hosts;
mod malformed;
mod paths;
mod redirects;
mod smuggling;
mod tokens;
mod world;
