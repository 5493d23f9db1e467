//! The YAML file as written by the operator. Deserialize only; every
//! struct denies unknown keys so that a typo is an error, not a silent
//! default. Nothing outside `config/` looks at these types: `model.rs`
//! turns them into the validated [`crate::config::Config`].

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Deserialize;

/// Root of `portcullis.yaml`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub server: ServerSection,
    #[serde(default)]
    pub admin: Option<AdminSection>,
    #[serde(default)]
    pub scim: Vec<ScimSection>,
    #[serde(default)]
    pub store: StoreSection,
    pub session: SessionSection,
    #[serde(default)]
    pub identity_providers: Vec<IdpSection>,
    #[serde(default)]
    pub organizations: Vec<OrgSection>,
    #[serde(default)]
    pub routes: Vec<RouteSection>,
    #[serde(default)]
    pub identity_headers: IdentityHeadersSection,
    #[serde(default)]
    pub log: LogSection,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ServerSection {
    /// Plain HTTP listener, `host:port`. Required unless `tls` is set.
    #[serde(default)]
    pub listen: Option<String>,
    #[serde(default)]
    pub tls: Option<TlsSection>,
    /// Where `/_portcullis/callback` is reached, e.g. `https://auth.example.com`.
    pub public_url: String,
    /// CIDRs or addresses whose `X-Forwarded-*` headers are trusted.
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    /// How long in-flight requests may take to finish on SIGTERM (default `10s`).
    #[serde(default)]
    pub grace_period: Option<String>,
    /// Proxy threads, each with its own runtime (default: one per core).
    #[serde(default)]
    pub threads: Option<usize>,
    /// How long an idle client connection is kept open between requests
    /// (default `60s`).
    #[serde(default)]
    pub keepalive_timeout: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    pub listen: String,
    /// PEM certificate chain.
    pub cert: String,
    /// PEM private key.
    pub key: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AdminSection {
    /// Management API, `/metrics`, `/healthz`, `/readyz`.
    pub listen: String,
    /// Bearer tokens: plain, or `sha256:<hex>` as printed by `portcullis hash-token`.
    #[serde(default)]
    pub tokens: Vec<String>,
    /// The operator console at `/console/` (default `true`).
    #[serde(default)]
    pub console: Option<bool>,
}

/// A SCIM 2.0 feed from one IdP's directory (SPEC 4b).
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ScimSection {
    /// The identity provider whose users this feed describes.
    pub idp: String,
    /// Bearer tokens for `{public_url}/_portcullis/scim/v2/{idp}/`: plain,
    /// or `sha256:<hex>` as printed by `portcullis hash-token`.
    #[serde(default)]
    pub tokens: Vec<String>,
    /// The claim (JMESPath) at that IdP whose value is the SCIM
    /// `externalId` (default `sub`).
    #[serde(default, rename = "match")]
    pub match_claim: Option<String>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StoreSection {
    /// `sqlite://path` (default `sqlite://portcullis.db`) or `postgres://user:pass@host/db`.
    #[serde(default)]
    pub url: Option<String>,
    /// How stale a replica's cached session or membership may be (default `30s`).
    #[serde(default)]
    pub cache_ttl: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SessionSection {
    /// At least 32 bytes; keys the login-state cookie.
    pub secret: String,
    #[serde(default)]
    pub cookie_name: Option<String>,
    #[serde(default)]
    pub cookie_domain: Option<String>,
    /// Absolute session lifetime (default `12h`).
    #[serde(default)]
    pub lifetime: Option<String>,
    /// Session ends after this long without a request (default `1h`).
    #[serde(default)]
    pub idle_timeout: Option<String>,
    /// Re-validate each session at its IdP this often, with its refresh
    /// token (default `15m`; `0s`: never).
    #[serde(default)]
    pub refresh_interval: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ClaimsSource {
    /// Only the ID token's claims.
    IdToken,
    /// ID token claims, plus userinfo claims for keys the ID token lacks.
    #[default]
    Merged,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IdpSection {
    /// `[a-z0-9][a-z0-9._-]{0,63}`
    pub id: String,
    #[serde(default)]
    pub display_name: Option<String>,
    /// Discovery at `{issuer}/.well-known/openid-configuration`.
    pub issuer: String,
    pub client_id: String,
    #[serde(default)]
    pub client_secret: Option<String>,
    #[serde(default)]
    pub scopes: Option<Vec<String>>,
    #[serde(default)]
    pub claims: ClaimsSource,
    /// JMESPath over the claims: the user's key at this IdP (default `sub`).
    #[serde(default)]
    pub identifier: Option<String>,
    /// JMESPath (default `email`).
    #[serde(default)]
    pub email: Option<String>,
    /// JMESPath (default `name`).
    #[serde(default)]
    pub name: Option<String>,
    /// `false`: only users created beforehand may log in (default `true`).
    #[serde(default)]
    pub auto_provision: Option<bool>,
    /// Extra `aud` values accepted for bearer JWTs.
    #[serde(default)]
    pub bearer_audiences: Vec<String>,
    #[serde(default)]
    pub provisioning: Option<ProvisioningSection>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProvisioningSection {
    /// Fallback policy for organizations without one of their own.
    #[serde(default)]
    pub default: Option<PolicySection>,
    /// Organization-specific policies, keyed by organization id.
    #[serde(default)]
    pub organizations: BTreeMap<String, PolicySection>,
}

#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PolicySection {
    /// JMESPath; matches when the result is `true` or the organization id.
    /// `{{orgId}}` is replaced by the organization id.
    #[serde(default)]
    pub org: Option<String>,
    /// JMESPath giving a role name or an array of role names.
    #[serde(default)]
    pub roles: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OrgSection {
    /// `[a-z0-9][a-z0-9._-]{0,63}`
    pub id: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub roles: Vec<RoleSection>,
    #[serde(default)]
    pub jit: Option<JitSection>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RoleSection {
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JitSection {
    #[serde(default)]
    pub email_domains: Vec<String>,
    /// IdP ids.
    #[serde(default)]
    pub sso_connectors: Vec<String>,
    #[serde(default)]
    pub default_roles: Vec<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteSection {
    pub name: String,
    /// Exact host names, or `*.example.com`.
    pub hosts: Vec<String>,
    /// Longest matching prefix wins (default `/`).
    #[serde(default)]
    pub path_prefix: Option<String>,
    /// `host:port`, resolved when the config is loaded; round robin.
    #[serde(default)]
    pub upstreams: Vec<String>,
    #[serde(default)]
    pub upstream_tls: bool,
    #[serde(default)]
    pub org: Option<String>,
    #[serde(default)]
    pub allow_roles: Vec<String>,
    /// JMESPath over the session's claims; must be `true`.
    #[serde(default)]
    pub allow_if: Option<String>,
    #[serde(default)]
    pub public: bool,
    #[serde(default)]
    pub public_paths: Vec<String>,
    #[serde(default)]
    pub pass_cookie: bool,
    #[serde(default)]
    pub accept_bearer: bool,
    /// Upgrade requests pass after the same checks (default `true`).
    #[serde(default)]
    pub websockets: Option<bool>,
    /// Header name to JMESPath over the claims.
    #[serde(default)]
    pub claim_headers: BTreeMap<String, String>,
    /// A stronger or fresher sign-in for this route.
    #[serde(default)]
    pub step_up: Option<StepUpSection>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StepUpSection {
    /// The ID token's `acr` must be one of these (asked for in this order).
    #[serde(default)]
    pub acr_values: Vec<String>,
    /// The ID token's `auth_time` must be at most this old.
    #[serde(default)]
    pub max_age: Option<String>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IdentityHeadersSection {
    #[serde(default)]
    pub user_id: Option<String>,
    #[serde(default)]
    pub subject: Option<String>,
    #[serde(default)]
    pub idp: Option<String>,
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub org: Option<String>,
    #[serde(default)]
    pub roles: Option<String>,
    #[serde(default)]
    pub assertion: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    #[default]
    Json,
    Text,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LogSection {
    #[serde(default)]
    pub format: LogFormat,
    /// `error`, `warn`, `info`, `debug`, `trace`, or a tracing filter directive.
    #[serde(default)]
    pub level: Option<String>,
}
