//! The request_filter phase: read the request strictly (size, host,
//! target), answer the gateway's own endpoints and forward-auth, route it,
//! and let [`Gateway::decide`] say whether it passes. Early answers are
//! written here and end the request.

use pingora::prelude::*;

use super::decide::Decision;
use super::endpoints::{FORWARD_AUTH, RESERVED_PREFIX};
use super::respond::{self, Reply};
use super::{Gateway, MAX_REQUEST_HEADER_BYTES, RequestCtx};
use crate::authz;

fn header_bytes(req: &pingora::http::RequestHeader) -> usize {
    req.raw_path().len()
        + req
            .headers
            .iter()
            .map(|(k, v)| k.as_str().len() + v.len() + 4)
            .sum::<usize>()
}

/// The host a request is for, normalized and as written: the `Host`
/// header, or the authority of an absolute-form target (HTTP/2). Several
/// `Host` headers are refused.
fn request_host(req: &pingora::http::RequestHeader) -> Result<(String, String), &'static str> {
    let mut hosts = req.headers.get_all("host").iter();
    let target = req.uri.authority().map(|a| a.as_str());
    let raw = match (hosts.next(), hosts.next()) {
        (Some(_), Some(_)) => return Err("more than one Host header"),
        (Some(h), None) => h.to_str().map_err(|_| "the Host header is not text")?,
        (None, _) => target.ok_or("no Host header")?,
    };
    let host = authz::normalize_host(raw).ok_or("the Host header is not a host name")?;
    // An absolute-form target names its host too (RFC 9112 3.2.2): the
    // two must agree, or the app behind could be asked about another.
    if let Some(t) = target
        && authz::normalize_host(t).as_deref() != Some(host.as_str())
    {
        return Err("the request target names another host than the Host header");
    }
    Ok((host, raw.trim().to_string()))
}

impl Gateway {
    /// `Ok(true)`: answered here; `Ok(false)`: goes upstream.
    pub(super) async fn admit(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        ctx.peer = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip());
        ctx.tls = session.digest().is_some_and(|d| d.ssl_digest.is_some());
        // HTTP/1.1 keeps a connection open for ever by default: an idle
        // client gets `server.keepalive_timeout` (a client that asked to
        // close still closes).
        if session.get_keepalive().is_some() {
            session.set_keepalive(Some(ctx.runtime.config.server.keepalive_timeout.as_secs()));
        }
        let req = session.req_header();
        if header_bytes(req) > MAX_REQUEST_HEADER_BYTES {
            let reply = Reply::headers_too_large(MAX_REQUEST_HEADER_BYTES);
            respond::send(session, &reply).await?;
            return Ok(true);
        }
        (ctx.host, ctx.authority) = match request_host(req) {
            Ok(h) => h,
            Err(why) => {
                respond::send(session, &Reply::bad_request(why)).await?;
                return Ok(true);
            }
        };
        let target = match authz::parse_target(req.raw_path()) {
            Ok(t) => t,
            Err(e) => {
                respond::send(session, &Reply::bad_request(e.to_string())).await?;
                return Ok(true);
            }
        };
        if target.path == FORWARD_AUTH {
            // Asked by a proxy in front, on whatever host it uses.
            return self.forward_auth(session, ctx).await;
        }
        let reserved = authz::under_prefix(&target.path, RESERVED_PREFIX);
        let judged = authz::judge(&ctx.runtime.routes, &ctx.host, &target);
        ctx.target = Some(target);
        if reserved
            && (!matches!(judged, Ok(None))
                || ctx.runtime.routes.knows_host(&ctx.host)
                || ctx.runtime.public_host.as_deref() == Some(ctx.host.as_str()))
        {
            return self.own_endpoint(session, ctx).await;
        }
        let judged = match respond::judged_or_refusal(judged) {
            Ok(j) => j,
            Err(reply) => {
                respond::send(session, &reply).await?;
                return Ok(true);
            }
        };
        let route = judged.route.clone();
        ctx.route = Some(route.clone());
        if session.is_upgrade_req() && !route.websockets {
            let reply = Reply::new(
                403,
                "websockets_disabled",
                "Not allowed",
                "WebSocket upgrades are not enabled on this route.",
            );
            respond::send(session, &reply).await?;
            return Ok(true);
        }
        let runtime = ctx.runtime.clone();
        match self.decide(session.req_header(), &runtime, &judged).await {
            Decision::Public => Ok(false),
            Decision::Allowed(p) => {
                ctx.principal = Some(p);
                Ok(false)
            }
            Decision::Unauthenticated => {
                self.unauthenticated(session, ctx, None).await?;
                Ok(true)
            }
            Decision::StepUp(p, su) => {
                // The same IdP, asked for the stronger sign-in (the login
                // reads what to ask from the route of `rd`).
                self.unauthenticated(session, ctx, Some((&p.idp, &su)))
                    .await?;
                Ok(true)
            }
            refused => {
                if let Some(reply) = refused.refusal(&runtime) {
                    respond::send(session, &reply).await?;
                }
                Ok(true)
            }
        }
    }

    /// A protected route without a valid session, or with one whose
    /// sign-in is not strong or recent enough (`step_up`: its IdP and what
    /// the route asks): browsers go to the login, API clients get 401.
    async fn unauthenticated(
        &self,
        session: &mut Session,
        ctx: &RequestCtx,
        step_up: Option<(&str, &crate::config::StepUp)>,
    ) -> Result<()> {
        if respond::wants_html(session.req_header()) {
            let scheme = if ctx.tls { "https" } else { "http" };
            let original = format!(
                "{scheme}://{}{}",
                ctx.authority,
                ctx.target
                    .as_ref()
                    .map(|t| t.path_and_query())
                    .unwrap_or_default()
            );
            let login = match step_up {
                Some((idp, _)) => crate::login::urls::relative_login_link_at(&original, idp),
                None => crate::login::urls::relative_login_link(&original),
            };
            respond::redirect(session, &login, vec![]).await
        } else {
            let reply = match step_up {
                Some((_, su)) => Reply::step_up(su),
                None => Reply::unauthenticated("This route needs a session or a bearer token."),
            };
            respond::send(session, &reply).await
        }
    }
}
