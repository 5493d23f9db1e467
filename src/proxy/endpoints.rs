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
}
