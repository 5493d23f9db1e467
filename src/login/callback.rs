//! `/_portcullis/callback?code=…&state=…`: the sealed login state checked,
//! the code exchanged, the ID token verified, userinfo merged, the login
//! provisioned, the session created.

use std::sync::Arc;

use serde_json::Value;
use subtle::ConstantTimeEq;

use super::provision::{LoginError, provision_login};
use super::{
    Answer, RequestParts, count_login, failure, idp_unavailable, query_param, redirect_uri,
    with_cookie,
};
use crate::config::IdentityProvider;
use crate::oidc::{Expect, OidcError, TokenKind};
use crate::page::Reply;
use crate::provision::Outcome;
use crate::session::cookie::{self, SessionId};
use crate::session::login_state::{self, LoginState};
use crate::state::{Runtime, Shared};
use crate::store::NewSession;

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
    // What the route asked of this sign-in, judged on the verified token
    // (a login URL stripped of `acr_values` gets no further than this).
    if let Some(asked) = &state.step_up {
        let want = crate::config::StepUp {
            acr_values: asked.acr_values.clone(),
            max_age: asked.max_age.map(std::time::Duration::from_secs),
        };
        let acr = claims.get("acr").and_then(Value::as_str);
        let auth_time = claims.get("auth_time").and_then(Value::as_i64);
        if !want.met_by(acr, auth_time, crate::store::now()) {
            tracing::warn!(target: "portcullis::login", idp = %idp.id, acr = ?acr, auth_time = ?auth_time, wanted = ?want, "step-up sign-in refused");
            return Err((
                "step_up_failed",
                failure(
                    config,
                    403,
                    "step_up_failed",
                    format!(
                        "This page needs a stronger or more recent sign-in than {} gave (acr {}, wanted {}).",
                        idp.display_name,
                        acr.unwrap_or("none"),
                        if want.acr_values.is_empty() {
                            "any".to_string()
                        } else {
                            want.acr_values.join(" or ")
                        },
                    ),
                    rd,
                ),
            ));
        }
    }
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
        .with_store(
            move |s| async move { Ok(provision_login(&s, &config_arc, &idp2, &claims2).await) },
        )
        .await;
    let applied = match applied {
        Ok(Ok(a)) => a,
        Ok(Err(LoginError::Claims(e))) => {
            return Err(refused("bad_claims", "bad_claims", e.to_string()));
        }
        Ok(Err(LoginError::Store(e))) | Err(e) => {
            tracing::error!(target: "portcullis::login", idp = %idp.id, error = %e, "provisioning failed");
            return Err((
                "store_unavailable",
                Answer::Reply(Reply::store_unavailable(
                    "Signing in is not possible right now.",
                )),
            ));
        }
    };
    super::provision::count(&shared.metrics, idp, &applied.plan);
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
        (Outcome::Deactivated, _) => {
            return Err((
                "deactivated",
                Answer::Reply(Reply::new(
                    403,
                    "deactivated",
                    "Account deactivated",
                    "Your account was deactivated by the directory. Ask an administrator.",
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
        refresh_token: tokens
            .refresh_token
            .map(|t| seal_refresh_token(config, &id.hash(), &t)),
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
pub(super) fn merge_claims(claims: &mut Value, info: Value) {
    if let (Some(c), Value::Object(info)) = (claims.as_object_mut(), info) {
        for (k, v) in info {
            c.entry(k).or_insert(v);
        }
    }
}

/// A refresh token as stored: sealed under `session.secret`, bound to the
/// session it belongs to.
pub(super) fn seal_refresh_token(
    config: &crate::config::Config,
    session: &str,
    token: &str,
) -> String {
    crate::sealed::seal(
        &config.session.secret,
        crate::sealed::Purpose::RefreshToken,
        session,
        token.as_bytes(),
    )
}
