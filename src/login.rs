//! The login and logout flows behind `/_portcullis/login`, `/callback`,
//! `/logout` and `/backchannel-logout`: what to answer, given the request's
//! parts. No Pingora types; `proxy` writes the [`Answer`] out.

use std::sync::Arc;

use serde_json::Value;
use subtle::ConstantTimeEq;

use crate::accounts::provision_login;
use crate::authz::safe_redirect;
use crate::config::{Config, IdentityProvider};
use crate::metrics::LoginLabels;
use crate::oidc::verify::unverified_field;
use crate::oidc::{Expect, OidcError, TokenKind};
use crate::page::Reply;
use crate::provision::Outcome;
use crate::session::cookie::{self, SessionId};
use crate::session::login_state::{self, LoginState};
use crate::state::{Runtime, Shared};
use crate::store::NewSession;

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

fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    url::form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

fn encode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// `{public_url}` without a trailing slash.
pub fn public_base(config: &Config) -> &str {
    config.server.public_url.as_str().trim_end_matches('/')
}

pub fn redirect_uri(config: &Config) -> String {
    format!("{}/_portcullis/callback", public_base(config))
}

pub fn login_link(config: &Config, rd: &str) -> String {
    format!(
        "{}/_portcullis/login?rd={}",
        public_base(config),
        encode(rd)
    )
}

fn failure(config: &Config, status: u16, code: &'static str, message: String, rd: &str) -> Answer {
    Answer::Reply(
        Reply::new(status, code, "Sign-in failed", message)
            .with_link(login_link(config, rd), "Sign in again"),
    )
}

fn count_login(shared: &Shared, idp: &str, outcome: &str) {
    shared
        .metrics
        .logins
        .get_or_create(&LoginLabels {
            idp: idp.to_string(),
            outcome: outcome.to_string(),
        })
        .inc();
}

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
        let mut location = login_link(config, &rd);
        if let Some(idp) = &idp_param {
            location.push_str("&idp=");
            location.push_str(&encode(idp));
        }
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
                .map(|i| {
                    (
                        format!("{}&idp={}", login_link(config, &rd), encode(&i.id)),
                        i.display_name.clone(),
                    )
                })
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
    let request = match shared
        .oidc
        .authorization_request(&discovered, &idp, &redirect_uri(config))
    {
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
    };
    let name = login_state::cookie_name(config, &request.state);
    let sealed = login_state::seal(&config.session.secret, &name, &state);
    Answer::Redirect {
        location: request.url,
        cookies: login_state::set_cookies(config, &name, &sealed),
    }
}

/// For a deep link too long to keep through a login: the first page of
/// the route it points into (`path_prefix` on the same origin).
fn first_page(rd: &str, login_host: &str, runtime: &Runtime) -> String {
    let prefix = |host: &str, path: &str| {
        runtime
            .routes
            .lookup(host, path)
            .map(|r| r.path_prefix.clone())
            .unwrap_or_else(|| "/".into())
    };
    match url::Url::parse(rd) {
        Ok(url) => {
            let host = url.host_str().and_then(crate::authz::normalize_host);
            let first = host
                .map(|h| prefix(&h, url.path()))
                .unwrap_or_else(|| "/".into());
            format!("{}{first}", url.origin().ascii_serialization())
        }
        // A path on the host the login began on.
        Err(_) => prefix(login_host, rd.split(['?', '#']).next().unwrap_or("/")),
    }
}

fn idp_unavailable(shared: &Shared, idp: &IdentityProvider, e: &OidcError) -> Answer {
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

/// `/_portcullis/callback?code=…&state=…`.
pub async fn callback(shared: &Shared, runtime: &Runtime, req: &RequestParts<'_>) -> Answer {
    let config = &runtime.config;
    let fail = |code: &'static str, message: String| {
        tracing::warn!(target: "portcullis::login", reason = code, "{message}");
        failure(config, 400, code, message, "/")
    };
    if let Some(error) = query_param(req.query, "error") {
        let detail = query_param(req.query, "error_description").unwrap_or_default();
        return fail(
            "idp_error",
            format!("The sign-in provider refused the sign-in: {error} {detail}"),
        );
    }
    let (Some(state_param), Some(code)) = (
        query_param(req.query, "state"),
        query_param(req.query, "code"),
    ) else {
        return fail(
            "bad_callback",
            "The sign-in answer lacks its state or code.".into(),
        );
    };
    let name = login_state::cookie_name(config, &state_param);
    let sealed = req.cookie_header.and_then(|h| login_state::read(h, &name));
    let Some(sealed) = sealed else {
        return fail(
            "no_login_state",
            "This sign-in was not started here, or took longer than 10 minutes.".into(),
        );
    };
    let clear_state =
        login_state::clear_cookies(config, &name, req.cookie_header.unwrap_or_default());
    let now = crate::store::now();
    let state = match login_state::open(&config.session.secret, &name, &sealed, now) {
        Ok(s) => s,
        Err(e) => return with_cookie(fail("bad_login_state", e.to_string()), &clear_state),
    };
    if !bool::from(state.state.as_bytes().ct_eq(state_param.as_bytes())) {
        return with_cookie(
            fail("state_mismatch", "The sign-in state does not match.".into()),
            &clear_state,
        );
    }
    let rd = state.rd.clone();
    let Some(idp) = config.identity_provider(&state.idp).cloned() else {
        return with_cookie(
            fail(
                "unknown_idp",
                format!("Identity provider {:?} is no longer configured.", state.idp),
            ),
            &clear_state,
        );
    };
    let answer = finish_login(shared, runtime, &idp, &state, &code).await;
    let answer = match answer {
        Ok((cookie, user)) => {
            count_login(shared, &idp.id, "success");
            tracing::info!(target: "portcullis::login", idp = %idp.id, user = %user, "signed in");
            Answer::Redirect {
                location: rd,
                cookies: vec![cookie],
            }
        }
        Err((outcome, answer)) => {
            count_login(shared, &idp.id, outcome);
            answer
        }
    };
    with_cookie(answer, &clear_state)
}

type LoginFailure = (&'static str, Answer);

/// Code exchange, token verification, provisioning, session. `Ok`: the
/// session cookie and the user id.
async fn finish_login(
    shared: &Shared,
    runtime: &Runtime,
    idp: &Arc<IdentityProvider>,
    state: &LoginState,
    code: &str,
) -> Result<(String, String), LoginFailure> {
    let config = &runtime.config;
    let rd = &state.rd;
    let refused = |outcome: &'static str, code: &'static str, message: String| {
        tracing::warn!(target: "portcullis::login", idp = %idp.id, reason = code, "sign-in refused: {message}");
        (outcome, failure(config, 400, code, message, rd))
    };
    let discovered = shared
        .oidc
        .provider(idp)
        .await
        .map_err(|e| ("idp_unavailable", idp_unavailable(shared, idp, &e)))?;
    let tokens = shared
        .oidc
        .exchange(
            &discovered,
            idp,
            &redirect_uri(config),
            code,
            &state.pkce_verifier,
        )
        .await
        .map_err(|e| match e {
            OidcError::Unreachable { .. } => ("idp_unavailable", idp_unavailable(shared, idp, &e)),
            e => refused("exchange_failed", "exchange_failed", e.to_string()),
        })?;
    let audiences = [idp.client_id.clone()];
    let expect = Expect {
        issuer: discovered.metadata.issuer().as_str(),
        audiences: &audiences,
        authorized_party: Some(&idp.client_id),
        kind: TokenKind::IdToken {
            nonce: &state.nonce,
        },
        now: crate::store::now(),
    };
    let mut claims = shared
        .oidc
        .verify(idp, &tokens.id_token, &expect)
        .await
        .map_err(|e| {
            refused(
                "invalid_token",
                "invalid_id_token",
                format!("The ID token was rejected: {e}"),
            )
        })?;
    if crate::oidc::Oidc::merges_userinfo(idp) {
        let info = shared
            .oidc
            .userinfo(&discovered, idp, &tokens.access_token)
            .await
            .map_err(|e| refused("userinfo_failed", "userinfo_failed", e.to_string()))?;
        if info.get("sub") != claims.get("sub") {
            return Err(refused(
                "userinfo_mismatch",
                "userinfo_mismatch",
                "The userinfo answer is about another user (sub differs).".into(),
            ));
        }
        merge_claims(&mut claims, info);
    }
    let (config_arc, idp2, claims2) = (runtime.config.clone(), idp.clone(), claims.clone());
    let applied = shared
        .sessions
        .with_store(move |s| async move { provision_login(&s, &config_arc, &idp2, &claims2).await })
        .await;
    let applied = match applied {
        Ok(a) => a,
        Err(crate::store::StoreError::Provision(e)) => {
            return Err(refused("bad_claims", "bad_claims", e.to_string()));
        }
        Err(e) => {
            tracing::error!(target: "portcullis::login", idp = %idp.id, error = %e, "provisioning failed");
            return Err((
                "store_unavailable",
                Answer::Reply(Reply::store_unavailable(
                    "Signing in is not possible right now.",
                )),
            ));
        }
    };
    crate::accounts::count(&shared.metrics, idp, &applied.plan);
    let user_id = match (&applied.plan.outcome, applied.user_id) {
        (Outcome::Allowed, Some(id)) => id,
        (Outcome::UnknownUser, _) => {
            return Err((
                "unknown_user",
                Answer::Reply(Reply::new(
                    403,
                    "unknown_user",
                    "No account",
                    "There is no account for you here. Ask an administrator to add you.",
                )),
            ));
        }
        _ => {
            return Err((
                "no_membership",
                Answer::Reply(Reply::new(
                    403,
                    "no_membership",
                    "Access denied",
                    "You are not a member of any organization.",
                )),
            ));
        }
    };
    let id = SessionId::generate();
    let now = crate::store::now();
    let session = NewSession {
        id_hash: id.hash(),
        user_id: user_id.clone(),
        idp: idp.id.clone(),
        subject: applied.plan.identity.subject.clone(),
        idp_sub: applied.plan.identity.sub.clone(),
        sid: claims
            .get("sid")
            .and_then(Value::as_str)
            .map(str::to_string),
        id_token: Some(tokens.id_token),
        claims,
        expires_at: now + config.session.lifetime.as_secs() as i64,
    };
    shared
        .sessions
        .with_store(move |s| async move { s.create_session(&session).await })
        .await
        .map_err(|e| {
            tracing::error!(target: "portcullis::login", error = %e, "session not stored");
            (
                "store_unavailable",
                Answer::Reply(Reply::store_unavailable(
                    "Signing in is not possible right now.",
                )),
            )
        })?;
    Ok((cookie::set(config, &id), user_id))
}

/// Userinfo claims fill in what the ID token lacks; the ID token wins.
fn merge_claims(claims: &mut Value, info: Value) {
    if let (Some(c), Value::Object(info)) = (claims.as_object_mut(), info) {
        for (k, v) in info {
            c.entry(k).or_insert(v);
        }
    }
}

fn with_cookie(answer: Answer, more: &[String]) -> Answer {
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

/// `/_portcullis/logout`: ends the session, clears the cookie, then sends
/// the browser to the IdP's `end_session_endpoint` when it has one.
pub async fn logout(shared: &Shared, runtime: &Runtime, req: &RequestParts<'_>) -> Answer {
    let config = &runtime.config;
    let mut location = "/".to_string();
    if let cookie::Found::Id(id) = cookie::find(req.cookie_header, &config.session.cookie_name) {
        let hash = id.hash();
        let key = hash.clone();
        let ended = shared
            .sessions
            .with_store(move |s| async move {
                let record = s.session(&key).await?;
                s.delete_session(&key).await?;
                Ok(record)
            })
            .await;
        match ended {
            Ok(record) => {
                shared.sessions.forget(&[hash]).await;
                if let Some(token) = record.as_ref().and_then(|r| r.id_token.as_deref()) {
                    shared.sessions.forget_bearer(token).await;
                }
                if let Some(r) = record {
                    tracing::info!(target: "portcullis::session", user = %r.user_id, "session ended by logout");
                    if let Some(url) =
                        end_session_url(shared, config, &r.idp, r.id_token.as_deref()).await
                    {
                        location = url;
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "logout could not reach the store");
                return Answer::Reply(Reply::store_unavailable("Signing out failed."));
            }
        }
    }
    Answer::Redirect {
        location,
        cookies: vec![cookie::clear(config)],
    }
}

async fn end_session_url(
    shared: &Shared,
    config: &Config,
    idp_id: &str,
    id_token: Option<&str>,
) -> Option<String> {
    let idp = config.identity_provider(idp_id)?;
    let d = shared.oidc.provider(idp).await.ok()?;
    let mut url = url::Url::parse(d.end_session_endpoint.as_deref()?).ok()?;
    {
        let mut q = url.query_pairs_mut();
        if let Some(t) = id_token {
            q.append_pair("id_token_hint", t);
        }
        q.append_pair(
            "post_logout_redirect_uri",
            &format!("{}/", public_base(config)),
        );
        q.append_pair("client_id", &idp.client_id);
    }
    Some(url.to_string())
}

/// `/_portcullis/backchannel-logout`: the body is the form
/// `logout_token=…`. 200 when sessions were ended (or none existed), 400
/// for a token that does not verify.
pub async fn backchannel(shared: &Shared, runtime: &Runtime, body: &[u8]) -> Answer {
    let config = &runtime.config;
    let bad = |why: String| {
        tracing::warn!(target: "portcullis::login", reason = %why, "back-channel logout refused");
        Answer::Reply(Reply::new(400, "invalid_request", "Bad request", why))
    };
    let Some(token) = url::form_urlencoded::parse(body)
        .find(|(k, _)| k == "logout_token")
        .map(|(_, v)| v.into_owned())
    else {
        return bad("no logout_token".into());
    };
    // Which IdP: the unverified `iss` only picks the keys to verify with.
    let Some(iss) = unverified_field(&token, 1, "iss") else {
        return bad("the logout token has no issuer".into());
    };
    let mut last = None;
    for idp in idps_with_issuer(config, &iss) {
        let discovered = match shared.oidc.provider(idp).await {
            Ok(d) => d,
            Err(e) => {
                last = Some(e.to_string());
                continue;
            }
        };
        let audiences = [idp.client_id.clone()];
        let expect = Expect {
            // The issuer the IdP's discovery names, compared exactly.
            issuer: discovered.metadata.issuer().as_str(),
            audiences: &audiences,
            authorized_party: None,
            kind: TokenKind::LogoutToken,
            now: crate::store::now(),
        };
        let claims = match shared.oidc.verify(idp, &token, &expect).await {
            Ok(claims) => claims,
            Err(e) => {
                last = Some(e.to_string());
                continue;
            }
        };
        let text = |k: &str| claims.get(k).and_then(Value::as_str).map(str::to_string);
        let (jti, sub, sid) = (text("jti").unwrap_or_default(), text("sub"), text("sid"));
        // Accepted once per issuer and jti, across every replica; the
        // memory outlives the token's acceptance window.
        let (iss_owned, until) = (iss.clone(), crate::store::now() + 3600);
        let first = shared
            .sessions
            .with_store(move |s| async move {
                s.first_use_of_logout_token(&iss_owned, &jti, until).await
            })
            .await;
        match first {
            Ok(true) => {}
            Ok(false) => return bad("this logout token was used already".into()),
            Err(e) => {
                tracing::error!(error = %e, "back-channel logout could not reach the store");
                return Answer::Reply(Reply::store_unavailable("The sessions were not ended."));
            }
        }
        let id = idp.id.clone();
        let ended = shared
            .sessions
            .with_store(move |s| async move {
                s.delete_sessions_by_idp(&id, sub.as_deref(), sid.as_deref())
                    .await
            })
            .await;
        return match ended {
            Ok(hashes) => {
                shared.sessions.forget(&hashes).await;
                tracing::info!(target: "portcullis::session", idp = %idp.id, sessions = hashes.len(), "sessions ended by back-channel logout");
                Answer::Empty { status: 200 }
            }
            Err(e) => {
                tracing::error!(error = %e, "back-channel logout could not reach the store");
                Answer::Reply(Reply::store_unavailable("The sessions were not ended."))
            }
        };
    }
    bad(last.unwrap_or_else(|| "no identity provider has this issuer".into()))
}

/// The IdPs a token's (unverified) `iss` may name: only their keys may
/// then verify it, and the verification compares `iss` exactly with the
/// issuer their discovery names.
fn idps_with_issuer<'a>(
    config: &'a Config,
    iss: &'a str,
) -> impl Iterator<Item = &'a Arc<IdentityProvider>> + 'a {
    config
        .identity_providers
        .iter()
        .filter(move |i| i.issuer.trim_end_matches('/') == iss.trim_end_matches('/'))
}

/// Why a bearer token did not authenticate.
#[derive(Debug)]
pub enum BearerError {
    /// Not verifiable, not ours, expired, or no such user: 401.
    Rejected(String),
    /// The IdP or the store could not be asked: 503/502.
    Unavailable(String),
}

/// The user a bearer JWT speaks for: verified like an ID token (signature,
/// issuer, `aud` containing the client id or one of `bearer_audiences`,
/// expiry), then looked up as an existing user by `(idp, identifier)`.
pub async fn bearer(
    shared: &Shared,
    runtime: &Runtime,
    token: &str,
) -> Result<Arc<crate::session::Principal>, BearerError> {
    let key = hex::encode(crate::util::sha256(token.as_bytes()));
    let now = crate::store::now();
    if let Some(p) = shared.sessions.bearer.get(&key).await
        && p.expires_at > now
    {
        shared.metrics.session_cache_hits.inc();
        return Ok(p);
    }
    shared.metrics.session_cache_misses.inc();
    let config = &runtime.config;
    let iss = unverified_field(token, 1, "iss")
        .ok_or_else(|| BearerError::Rejected("not a JWT with an issuer".into()))?;
    let mut last = String::from("no identity provider has this issuer");
    for idp in idps_with_issuer(config, &iss) {
        let discovered = match shared.oidc.provider(idp).await {
            Ok(d) => d,
            Err(e) => return Err(BearerError::Unavailable(e.to_string())),
        };
        let mut audiences = vec![idp.client_id.clone()];
        audiences.extend(idp.bearer_audiences.iter().cloned());
        let expect = Expect {
            issuer: discovered.metadata.issuer().as_str(),
            audiences: &audiences,
            authorized_party: None,
            kind: TokenKind::Bearer,
            now,
        };
        let claims = match shared.oidc.verify(idp, token, &expect).await {
            Ok(c) => c,
            Err(OidcError::Token(e)) => {
                last = e.to_string();
                continue;
            }
            Err(e) => return Err(BearerError::Unavailable(e.to_string())),
        };
        let identity = crate::provision::identity_from_claims(idp, &claims)
            .map_err(|e| BearerError::Rejected(e.to_string()))?;
        // An ID token handed to the IdP in a logout (`id_token_hint`) must
        // not live on as a credential.
        let hash = key.clone();
        let ended = shared
            .sessions
            .with_store(move |s| async move { s.token_ended(&hash).await })
            .await
            .map_err(|e| BearerError::Unavailable(e.to_string()))?;
        if ended {
            return Err(BearerError::Rejected(
                "this token was ended by a logout".into(),
            ));
        }
        let (id, subject) = (idp.id.clone(), identity.subject.clone());
        let user = shared
            .sessions
            .with_store(move |s| async move { s.user_by_identity(&id, &subject).await })
            .await
            .map_err(|e| BearerError::Unavailable(e.to_string()))?
            .ok_or_else(|| BearerError::Rejected("no such user".into()))?;
        let exp = claims.get("exp").and_then(Value::as_i64).unwrap_or(now);
        let p = Arc::new(crate::session::Principal::from_token(
            user,
            &idp.id,
            &identity.subject,
            claims,
            exp,
        ));
        shared.sessions.bearer.insert(key, p.clone()).await;
        return Ok(p);
    }
    Err(BearerError::Rejected(last))
}
