//! `/_portcullis/backchannel-logout` (OpenID Connect Back-Channel Logout
//! 1.0): the logout token verified, accepted once per `iss` and `jti`
//! across replicas, and the sessions it names ended.

use serde_json::Value;

use super::{Answer, idps_with_issuer};
use crate::oidc::verify::unverified_field;
use crate::oidc::{Expect, TokenKind};
use crate::page::Reply;
use crate::state::{Runtime, Shared};

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
                shared
                    .metrics
                    .count_ended("backchannel_logout", hashes.len());
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
