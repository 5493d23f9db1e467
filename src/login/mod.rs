//! Signing in and out: the flows behind `/_portcullis/login` (`start`),
//! `/callback` (`callback`), `/logout` (`logout`) and
//! `/backchannel-logout` (`backchannel`), bearer tokens (`bearer`), and a
//! login's provisioning against the store (`provision`). Each flow takes
//! the request's parts and says what to answer; no Pingora types, `proxy`
//! writes the [`Answer`] out. Login URLs are built in `urls` alone.

mod backchannel;
mod bearer;
mod callback;
mod logout;
pub mod provision;
pub mod refresh;
mod start;
pub(crate) mod urls;

use std::sync::Arc;

use crate::config::{Config, IdentityProvider};
use crate::metrics::LoginLabels;
use crate::oidc::OidcError;
use crate::page::Reply;
use crate::state::Shared;

pub use backchannel::backchannel;
pub use bearer::{BearerError, bearer};
pub use callback::callback;
pub use logout::logout;
pub use start::start;
pub use urls::{login_link, login_link_at, public_base, redirect_uri};

/// What the gateway answers.
#[derive(Debug)]
pub enum Answer {
    Redirect {
        location: String,
        cookies: Vec<String>,
    },
    /// An error page (HTML or JSON by `Accept`).
    Reply(Reply),
    Html {
        status: u16,
        body: String,
    },
    Empty {
        status: u16,
    },
}

/// The parts of a request the flows look at.
pub struct RequestParts<'a> {
    /// Normalized host name.
    pub host: &'a str,
    /// `Host` as written, for URLs back to it.
    pub authority: &'a str,
    pub tls: bool,
    pub query: Option<&'a str>,
    /// Every `Cookie` header, as bytes.
    pub cookie_header: Option<&'a [u8]>,
}

pub(super) fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    url::form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

pub(super) fn encode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

pub(super) fn failure(
    config: &Config,
    status: u16,
    code: &'static str,
    message: String,
    rd: &str,
) -> Answer {
    Answer::Reply(
        Reply::new(status, code, "Sign-in failed", message)
            .with_link(login_link(config, rd), "Sign in again"),
    )
}

pub(super) fn count_login(shared: &Shared, idp: &str, outcome: &str) {
    shared
        .metrics
        .logins
        .get_or_create(&LoginLabels {
            idp: idp.to_string(),
            outcome: outcome.to_string(),
        })
        .inc();
}

pub(super) fn idp_unavailable(shared: &Shared, idp: &IdentityProvider, e: &OidcError) -> Answer {
    tracing::warn!(target: "portcullis::login", idp = %idp.id, error = %e, "identity provider unavailable");
    count_login(shared, &idp.id, "idp_unavailable");
    Answer::Reply(Reply::new(
        502,
        "idp_unavailable",
        "Sign-in provider unavailable",
        format!(
            "The sign-in provider \"{}\" cannot be reached right now. Try again in a moment.",
            idp.display_name
        ),
    ))
}

pub(super) fn with_cookie(answer: Answer, more: &[String]) -> Answer {
    match answer {
        Answer::Redirect {
            location,
            mut cookies,
        } => {
            cookies.extend(more.iter().cloned());
            Answer::Redirect { location, cookies }
        }
        Answer::Reply(r) => Answer::Reply(
            more.iter()
                .fold(r, |r, c| r.with_header("set-cookie", c.clone())),
        ),
        other => other,
    }
}

/// The IdPs a token's (unverified) `iss` may name: only their keys may
/// then verify it, and the verification compares `iss` exactly with the
/// issuer their discovery names.
pub(super) fn idps_with_issuer<'a>(
    config: &'a Config,
    iss: &'a str,
) -> impl Iterator<Item = &'a Arc<IdentityProvider>> + 'a {
    config
        .identity_providers
        .iter()
        .filter(move |i| i.issuer.trim_end_matches('/') == iss.trim_end_matches('/'))
}
