//! `/_portcullis/logout`: the session ended (its ID token with it), the
//! cookie cleared, then RP-initiated logout at the IdP when it has one.

use super::{Answer, RequestParts, public_base};
use crate::config::Config;
use crate::page::Reply;
use crate::session::cookie;
use crate::state::{Runtime, Shared};

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
                let ended = s.delete_session(&key).await?;
                Ok(record.filter(|_| ended))
            })
            .await;
        match ended {
            Ok(record) => {
                shared.sessions.forget(&[hash]).await;
                if let Some(token) = record.as_ref().and_then(|r| r.id_token.as_deref()) {
                    shared.sessions.forget_bearer(token).await;
                }
                if let Some(r) = record {
                    shared.metrics.count_ended("logout", 1);
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
