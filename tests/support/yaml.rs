//! The least a configuration needs, for tests and benches that want a
//! `Config` in memory: a listener, `public_url`, the session secret, then
//! whatever the caller adds. Benches include this file by path.
#![allow(dead_code)]

use portcullis::config::{Config, Environment};

pub const PUBLIC_URL: &str = "https://auth.example.com";
pub const SESSION_SECRET: &str = "0123456789abcdef0123456789abcdef";

/// An `identity_providers:` list of one IdP, `main`, whose fallback policy
/// makes every organization named in `groups` a membership, `Admin` for
/// the `admin` group and `Member` otherwise. Followed by `organizations:`.
pub const MAIN_IDP: &str = r#"identity_providers:
  - id: main
    issuer: "https://sso.example.com/"
    client_id: c
    provisioning:
      default:
        org: "contains(groups, '{{orgId}}')"
        roles: "contains(groups, 'admin') && 'Admin' || 'Member'"
"#;

/// The minimal preamble followed by `rest` (YAML at the top level:
/// `identity_providers:`, `organizations:`, `routes:`, …).
pub fn minimal(rest: &str) -> String {
    format!(
        "server:\n  listen: \"127.0.0.1:8080\"\n  public_url: \"{PUBLIC_URL}\"\nsession:\n  secret: \"{SESSION_SECRET}\"\n{rest}"
    )
}

/// [`minimal`] loaded as the gateway would; panics with the errors and
/// the text when it does not validate.
pub fn config(rest: &str) -> Config {
    let yaml = minimal(rest);
    Config::from_yaml(
        &yaml,
        std::path::Path::new("test.yaml"),
        &Environment::system(),
    )
    .unwrap_or_else(|e| panic!("{e}\n{yaml}"))
}
