//! Forward-auth (`/_portcullis/auth`) for nginx `auth_request`, Traefik
//! `forwardAuth` and Caddy `forward_auth`: the proxy in front describes the
//! original request in `X-Forwarded-*` headers; the gateway judges it with
//! the same [`Gateway::decide`] as a proxied request and answers 200 with
//! the identity headers, 401 or 403. Nothing is proxied.

use pingora::prelude::*;

use super::decide::Decision;
use super::{Gateway, RequestCtx, headers, respond};
use crate::authz;
use crate::login;
use crate::page::Reply;
use crate::request::forwarded;

impl Gateway {
    pub(super) async fn forward_auth(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<bool> {
        let runtime = ctx.runtime.clone();
        let config = &runtime.config;
        if !headers::is_trusted(ctx.peer, &config.server.trusted_proxies) {
            let reply = Reply::new(
                403,
                "untrusted_proxy",
                "Not allowed",
                "Forward-auth answers only proxies listed in server.trusted_proxies.",
            );
            respond::send(session, &reply).await?;
            return Ok(true);
        }
        let original = match forwarded::read(&session.req_header().headers) {
            Ok(f) => f,
            Err(e) => {
                tracing::info!(error = %e, "forward-auth request refused");
                respond::send(session, &Reply::bad_request(e.to_string())).await?;
                return Ok(true);
            }
        };
        ctx.host = original.host.clone();
        let judged = match respond::judged_or_refusal(authz::judge(
            &runtime.routes,
            &original.host,
            &original.target,
        )) {
            Ok(j) => j,
            Err(reply) => {
                respond::send(session, &reply).await?;
                return Ok(true);
            }
        };
        ctx.route = Some(judged.route.clone());
        ctx.target = Some(original.target.clone());
        let decision = self.decide(session.req_header(), &runtime, &judged).await;
        // Where the sign-in returns to: the request the proxy asked about.
        let original_url = || {
            format!(
                "{}://{}{}",
                original.scheme,
                original.authority,
                original.target.path_and_query()
            )
        };
        let reply = match &decision {
            Decision::Public => {
                respond::ok_with(session, vec![]).await?;
                return Ok(true);
            }
            Decision::Allowed(p) => {
                let jwt = self.assertion(config, p, &original.host, &judged.route);
                let values = headers::identity_headers(
                    &config.identity_headers,
                    &judged.route,
                    p,
                    jwt.as_ref(),
                );
                respond::ok_with(session, values).await?;
                return Ok(true);
            }
            Decision::Unauthenticated => Reply::unauthenticated("This route needs a session.")
                .with_link(login::login_link(config, &original_url()), "Sign in"),
            Decision::StepUp(p, su) => Reply::step_up(su).with_link(
                login::login_link_at(config, &original_url(), &p.idp),
                "Sign in again",
            ),
            refused => match refused.refusal(&runtime) {
                Some(reply) => reply,
                None => Reply::unauthenticated("This route needs a session."),
            },
        };
        respond::send(session, &reply).await?;
        Ok(true)
    }
}
