//! The gateway's login URLs, built here alone: the login link (with the
//! page to return to) and the OIDC redirect URI.

use crate::config::Config;
use crate::paths::{CALLBACK, LOGIN};

/// `{public_url}` without a trailing slash.
pub fn public_base(config: &Config) -> &str {
    config.server.public_url.as_str().trim_end_matches('/')
}

/// The OIDC redirect URI: `{public_url}/_portcullis/callback`.
pub fn redirect_uri(config: &Config) -> String {
    format!("{}{CALLBACK}", public_base(config))
}

/// `{public_url}/_portcullis/login?rd=…`: a sign-in that returns to `rd`.
pub fn login_link(config: &Config, rd: &str) -> String {
    format!("{}{}", public_base(config), relative_login_link(rd))
}

/// [`login_link`] at one IdP (`&idp=…`).
pub fn login_link_at(config: &Config, rd: &str, idp: &str) -> String {
    format!("{}{}", public_base(config), relative_login_link_at(rd, idp))
}

/// `/_portcullis/login?rd=…` on whatever host the request came to.
pub fn relative_login_link(rd: &str) -> String {
    format!("{LOGIN}?rd={}", super::encode(rd))
}

/// [`relative_login_link`] at one IdP.
pub fn relative_login_link_at(rd: &str, idp: &str) -> String {
    format!("{}&idp={}", relative_login_link(rd), super::encode(idp))
}
