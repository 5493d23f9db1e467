//! `ProxyHttp` for the gateway, and nothing else: each hook hands its
//! phase to the file named for it.

use async_trait::async_trait;
use pingora::prelude::*;
use pingora::proxy::FailToProxy;

use super::{Gateway, RequestCtx, headers, observe, respond};

#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx::new(&self.shared)
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        self.admit(session, ctx).await
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        ctx.next_peer()
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut RequestCtx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        // Another upstream of the route may be up: try each once.
        if ctx.untried_upstreams() {
            e.set_retry(true);
        }
        e
    }

    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        upstream: &mut pingora::http::RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let assertion = ctx
            .principal
            .as_ref()
            .zip(ctx.route.as_ref())
            .and_then(|(p, route)| self.assertion(&ctx.runtime.config, p, &ctx.host, route));
        headers::prepare_upstream(upstream, ctx, assertion.as_ref())
    }

    async fn upstream_response_filter(
        &self,
        session: &mut Session,
        upstream_response: &mut pingora::http::ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        observe::upstream_answered(&self.shared, ctx);
        if upstream_response.status == 101 {
            self.upgraded_by_session(session, ctx);
        }
        Ok(())
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        respond::failure(session, e, ctx).await
    }

    /// A client that hangs up before its answer is not an error of the
    /// gateway: the access log records it (status 0), nothing more.
    fn suppress_error_log(&self, _session: &Session, _ctx: &RequestCtx, error: &Error) -> bool {
        error.esource() == &ErrorSource::Downstream
            && matches!(
                error.etype(),
                ErrorType::ConnectionClosed | ErrorType::ReadError | ErrorType::WriteError
            )
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut RequestCtx) {
        if let Some(cookie) = ctx.upgraded.take() {
            self.upgraded.unregister(cookie);
        }
        observe::access_log(&self.shared, session, e, ctx);
    }
}
