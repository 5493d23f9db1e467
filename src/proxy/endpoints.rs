//! The gateway's own endpoints under `/_portcullis/`, on every routed
//! host: one constant per path, and no path literal anywhere else.

use pingora::prelude::*;

use super::decide::Authn;
use super::respond::{self, Reply};
use super::{Gateway, RequestCtx, headers};
use crate::login;

pub use crate::paths::*;

/// Largest back-channel logout request body read.
const MAX_BACKCHANNEL_BODY: usize = 64 * 1024;

/// The request body, up to `max` bytes; `None` when larger or unreadable.
async fn read_body(session: &mut Session, max: usize) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        match session.read_request_body().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > max {
                    return None;
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Some(body),
            Err(_) => return None,
        }
    }
}

impl Gateway {
    /// Answers the gateway's own endpoints under `/_portcullis/`.
    pub(super) async fn own_endpoint(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<bool> {
        let runtime = ctx.runtime.clone();
        match ctx.path() {
            HEALTHZ => respond::text(session, 200, "ok").await?,
            JWKS => {
                let body = self.shared.signer.jwks().to_string();
                let cache = [("cache-control", "public, max-age=300".to_string())];
                respond::json(session, 200, body, &cache).await?
            }
            USERINFO => match self
                .authenticate(session.req_header(), &runtime, None)
                .await
            {
                Authn::Principal(p) => {
                    let body = serde_json::json!({
                        "id": p.user_id,
                        "idp": p.idp,
                        "subject": p.subject,
                        // Only an address the IdP verified, as in the headers.
                        "email": p.verified_email(),
                        "email_verified": p.verified_email().is_some(),
                        "name": p.name,
                        "memberships": p.roles.iter()
                            .map(|(org, roles)| serde_json::json!({"org": org, "roles": roles}))
                            .collect::<Vec<_>>(),
                    });
                    respond::json(session, 200, body.to_string(), &[]).await?
                }
                _ => respond::send(session, &Reply::unauthenticated("No session.")).await?,
            },
            LOGIN | CALLBACK | LOGOUT => {
                let path = ctx.path().to_string();
                let method = session.req_header().method.clone();
                let allowed = match path.as_str() {
                    LOGOUT => method == http::Method::GET || method == http::Method::POST,
                    _ => method == http::Method::GET || method == http::Method::HEAD,
                };
                if !allowed {
                    let allow = if path == LOGOUT {
                        "GET, POST"
                    } else {
                        "GET, HEAD"
                    };
                    respond::send(session, &Reply::method_not_allowed(allow)).await?;
                    return Ok(true);
                }
                let cookie_header = headers::joined_bytes(session.req_header(), "cookie");
                let parts = login::RequestParts {
                    host: &ctx.host,
                    authority: &ctx.authority,
                    tls: ctx.tls,
                    query: ctx.target.as_ref().and_then(|t| t.query.as_deref()),
                    cookie_header: cookie_header.as_deref(),
                };
                let answer = match path.as_str() {
                    LOGIN => login::start(&self.shared, &runtime, &parts).await,
                    CALLBACK => login::callback(&self.shared, &runtime, &parts).await,
                    _ => login::logout(&self.shared, &runtime, &parts).await,
                };
                respond::answer(session, answer).await?
            }
            BACKCHANNEL_LOGOUT => {
                if session.req_header().method != http::Method::POST {
                    respond::send(session, &Reply::method_not_allowed("POST")).await?;
                    return Ok(true);
                }
                let answer = match read_body(session, MAX_BACKCHANNEL_BODY).await {
                    Some(body) => login::backchannel(&self.shared, &runtime, &body).await,
                    None => login::Answer::Reply(Reply::bad_request(
                        "The body is too large or unreadable.",
                    )),
                };
                respond::answer(session, answer).await?
            }
            path if path.starts_with(SCIM_PREFIX)
                && runtime.public_host.as_deref() == Some(ctx.host.as_str()) =>
            {
                self.scim(session, ctx).await?
            }
            _ => {
                respond::send(
                    session,
                    &Reply::new(404, "not_found", "Not found", "No such gateway endpoint."),
                )
                .await?
            }
        }
        Ok(true)
    }

    /// Hands a request under [`SCIM_PREFIX`] to the feed's service
    /// provider, then drops what it ended from this replica's caches
    /// (other replicas hear of it through the store).
    async fn scim(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<()> {
        let rest = ctx.path()[SCIM_PREFIX.len()..].to_string();
        let (idp, rest) = rest.split_once('/').unwrap_or((rest.as_str(), ""));
        let (idp, rest) = (idp.to_string(), rest.to_string());
        let req = session.req_header();
        let header = |name: &str| {
            req.headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let (authorization, if_match, content_type) = (
            header("authorization"),
            header("if-match"),
            header("content-type"),
        );
        let method = req.method.clone();
        let query = ctx.target.as_ref().and_then(|t| t.query.clone());
        let body = if matches!(
            method,
            http::Method::GET | http::Method::HEAD | http::Method::DELETE
        ) {
            Some(Vec::new())
        } else {
            read_body(session, crate::scim::MAX_BODY).await
        };
        let config = ctx.runtime.config.clone();
        let answer = self
            .shared
            .sessions
            .with_store(move |store| async move {
                let req = crate::scim::ScimRequest {
                    method: &method,
                    rest: &rest,
                    query: query.as_deref(),
                    authorization: authorization.as_deref(),
                    if_match: if_match.as_deref(),
                    content_type: content_type.as_deref(),
                    body: body.as_deref(),
                };
                Ok(crate::scim::handle(&store, &config, &idp, req).await)
            })
            .await;
        let answer = match answer {
            Ok(a) => a,
            Err(e) => {
                tracing::error!(target: "portcullis::scim", error = %e, "SCIM request failed");
                return respond::send(
                    session,
                    &Reply::store_unavailable("The directory feed is unavailable."),
                )
                .await;
            }
        };
        self.shared.sessions.forget(&answer.ended_sessions).await;
        for user in &answer.users {
            self.shared.sessions.forget_user(user);
        }
        respond::scim(session, answer.status, answer.headers, answer.body).await
    }
}
