//! The gateway's own paths under `/_portcullis/`, reserved on every host
//! and never proxied: one constant each, and no path literal elsewhere.

/// Prefix reserved on every host; never proxied.
pub const RESERVED_PREFIX: &str = "/_portcullis";
pub const HEALTHZ: &str = "/_portcullis/healthz";
pub const JWKS: &str = "/_portcullis/jwks.json";
pub const USERINFO: &str = "/_portcullis/userinfo";
pub const LOGIN: &str = "/_portcullis/login";
pub const CALLBACK: &str = "/_portcullis/callback";
pub const LOGOUT: &str = "/_portcullis/logout";
pub const BACKCHANNEL_LOGOUT: &str = "/_portcullis/backchannel-logout";
/// Forward-auth (nginx `auth_request`, Traefik `forwardAuth`, Caddy
/// `forward_auth`), answered on any host.
pub const FORWARD_AUTH: &str = "/_portcullis/auth";
/// SCIM 2.0 service providers, one per `scim` entry: `{SCIM_PREFIX}{idp}/…`,
/// on `public_url`'s host only.
pub const SCIM_PREFIX: &str = "/_portcullis/scim/v2/";
