//! `/_portcullis/login?rd=…[&idp=…]`: where to return afterwards, which
//! IdP (or the chooser page), and the redirect to it with the login state
//! sealed in cookies.

use super::{
    Answer, RequestParts, idp_unavailable, login_link, login_link_at, query_param, redirect_uri,
};
use crate::authz::safe_redirect;
use crate::page::Reply;
use crate::session::login_state::{self, LoginState};
use crate::state::{Runtime, Shared};

/// `/_portcullis/login?rd=…[&idp=…]`.
pub async fn start(shared: &Shared, runtime: &Runtime, req: &RequestParts<'_>) -> Answer {
    let config = &runtime.config;
    let rd_param = query_param(req.query, "rd");
    let mut rd = safe_redirect(rd_param.as_deref(), &runtime.routes);
    let on_public_host = runtime.public_host.as_deref() == Some(req.host);
    if rd.len() > login_state::MAX_RD_BYTES {
        rd = first_page(&rd, req.host, runtime);
    }
    if rd.starts_with('/') && !on_public_host {
        // A path is relative to the host the login began on.
        let scheme = if req.tls { "https" } else { "http" };
        rd = format!("{scheme}://{}{rd}", req.authority);
    }
    let idp_param = query_param(req.query, "idp");
    if !on_public_host {
        // The login-state cookie must be set where the callback is.
        let location = match &idp_param {
            Some(idp) => login_link_at(config, &rd, idp),
            None => login_link(config, &rd),
        };
        return Answer::Redirect {
            location,
            cookies: vec![],
        };
    }
    let idp = match (&idp_param, config.identity_providers.as_slice()) {
        (Some(id), all) => match all.iter().find(|i| &i.id == id) {
            Some(i) => i.clone(),
            None => {
                return Answer::Reply(Reply::new(
                    400,
                    "unknown_idp",
                    "Unknown sign-in provider",
                    format!("There is no identity provider {id:?}."),
                ));
            }
        },
        (None, [only]) => only.clone(),
        (None, []) => {
            return Answer::Reply(Reply::new(
                503,
                "no_idp",
                "Sign-in unavailable",
                "No identity provider is configured.",
            ));
        }
        (None, all) => {
            let choices: Vec<(String, String)> = all
                .iter()
                .map(|i| (login_link_at(config, &rd, &i.id), i.display_name.clone()))
                .collect();
            return Answer::Html {
                status: 200,
                body: crate::page::chooser(&choices),
            };
        }
    };
    let discovered = match shared.oidc.provider(&idp).await {
        Ok(d) => d,
        Err(e) => return idp_unavailable(shared, &idp, &e),
    };
    // The route `rd` leads to may ask for a stronger or fresher sign-in:
    // asked of the IdP now, and checked on the ID token at the callback.
    let step_up = route_of(&rd, req.host, runtime).and_then(|r| r.step_up.clone());
    let request = match shared.oidc.authorization_request(
        &discovered,
        &idp,
        &redirect_uri(config),
        step_up.as_ref(),
    ) {
        Ok(r) => r,
        Err(e) => return idp_unavailable(shared, &idp, &e),
    };
    let state = LoginState {
        idp: idp.id.clone(),
        state: request.state.clone(),
        nonce: request.nonce,
        pkce_verifier: request.pkce_verifier,
        rd,
        iat: crate::store::now(),
        step_up: step_up.map(|su| login_state::StepUpAsked {
            acr_values: su.acr_values,
            max_age: su.max_age.map(|d| d.as_secs()),
        }),
    };
    let name = login_state::cookie_name(config, &request.state);
    let sealed = login_state::seal(&config.session.secret, &name, &state);
    Answer::Redirect {
        location: request.url,
        cookies: login_state::set_cookies(config, &name, &sealed),
    }
}

/// The route a (validated) `rd` leads to: an absolute URL's host and path,
/// or a path on the host the login began on.
fn route_of(
    rd: &str,
    login_host: &str,
    runtime: &Runtime,
) -> Option<std::sync::Arc<crate::config::Route>> {
    match url::Url::parse(rd) {
        Ok(url) => {
            let host = url.host_str().and_then(crate::authz::normalize_host)?;
            runtime.routes.lookup(&host, url.path()).cloned()
        }
        Err(_) => {
            let path = rd.split(['?', '#']).next().unwrap_or("/");
            runtime.routes.lookup(login_host, path).cloned()
        }
    }
}

/// For a deep link too long to keep through a login: the first page of
/// the route it points into (`path_prefix` on the same origin).
fn first_page(rd: &str, login_host: &str, runtime: &Runtime) -> String {
    let first = route_of(rd, login_host, runtime)
        .map(|r| r.path_prefix.clone())
        .unwrap_or_else(|| "/".into());
    match url::Url::parse(rd) {
        Ok(url) => format!("{}{first}", url.origin().ascii_serialization()),
        // A path on the host the login began on.
        Err(_) => first,
    }
}
