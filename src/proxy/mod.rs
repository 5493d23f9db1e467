//! The only module that knows Pingora. `Gateway` implements `ProxyHttp`
//! and stays thin: routing and policy come from `authz`, headers from
//! `headers`, pages from `respond`.

mod decide;
mod forward_auth;
pub mod headers;
pub mod respond;
pub mod server;
pub mod upstream;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora::prelude::*;
use pingora::proxy::FailToProxy;

use crate::authz::{self, Target};
use crate::config::Route;
use crate::login;
use crate::metrics::{RequestLabels, RouteLabels};
use crate::session::Principal;
use crate::state::{InflightGuard, Runtime, Shared};
use decide::{Authn, Decision};
use respond::Reply;

/// Prefix reserved on every host; never proxied.
pub const RESERVED_PREFIX: &str = "/_portcullis";

/// Request headers larger than this (all names, values and the request
/// line) are answered 431.
pub const MAX_REQUEST_HEADER_BYTES: usize = 32 * 1024;

pub struct Gateway {
    shared: Arc<Shared>,
}

impl Gateway {
    pub fn new(shared: Arc<Shared>) -> Gateway {
        Gateway { shared }
    }
}

/// Per-request state.
pub struct RequestCtx {
    runtime: Arc<Runtime>,
    route: Option<Arc<Route>>,
    /// Normalized host, for routing.
    host: String,
    /// Host as the client wrote it (validated), for URLs back to it.
    authority: String,
    target: Option<Target>,
    peer: Option<IpAddr>,
    tls: bool,
    started: Instant,
    upstream: Option<SocketAddr>,
    upstream_started: Option<Instant>,
    tries: usize,
    /// The authenticated user, once the route's policy let them pass.
    principal: Option<Arc<Principal>>,
    _inflight: InflightGuard,
}

impl RequestCtx {
    /// The normalized path, once the request target has been parsed.
    fn path(&self) -> &str {
        self.target.as_ref().map(|t| t.path.as_str()).unwrap_or("")
    }
}

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
    /// The signed assertion for `p` at `host` on `route`; a signing failure
    /// is logged and the headers go without it.
    fn assertion(
        &self,
        config: &crate::config::Config,
        p: &Principal,
        host: &str,
        route: &Route,
    ) -> Option<Arc<str>> {
        p.assertion(
            &self.shared.signer,
            login::public_base(config),
            host,
            route.org.as_deref(),
            crate::store::now(),
        )
        .map_err(|e| tracing::error!(error = %e, "assertion not signed; sent without it"))
        .ok()
    }

    /// Answers the gateway's own endpoints under `/_portcullis/`.
    async fn own_endpoint(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        let runtime = ctx.runtime.clone();
        match ctx.path() {
            "/_portcullis/healthz" => respond::text(session, 200, "ok").await?,
            "/_portcullis/jwks.json" => {
                let body = self.shared.signer.jwks().to_string();
                let cache = [("cache-control", "public, max-age=300".to_string())];
                respond::json(session, 200, body, &cache).await?
            }
            "/_portcullis/userinfo" => match self
                .authenticate(session.req_header(), &runtime, None)
                .await
            {
                Authn::Principal(p) => {
                    let body = serde_json::json!({
                        "id": p.user_id,
                        "idp": p.idp,
                        "subject": p.subject,
                        "email": p.email,
                        "name": p.name,
                        "memberships": p.roles.iter()
                            .map(|(org, roles)| serde_json::json!({"org": org, "roles": roles}))
                            .collect::<Vec<_>>(),
                    });
                    respond::json(session, 200, body.to_string(), &[]).await?
                }
                _ => respond::send(session, &Reply::unauthenticated("No session.")).await?,
            },
            "/_portcullis/login" | "/_portcullis/callback" | "/_portcullis/logout" => {
                let path = ctx.path().to_string();
                let method = session.req_header().method.clone();
                let allowed = match path.as_str() {
                    "/_portcullis/logout" => {
                        method == http::Method::GET || method == http::Method::POST
                    }
                    _ => method == http::Method::GET || method == http::Method::HEAD,
                };
                if !allowed {
                    let allow = if path == "/_portcullis/logout" {
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
                    "/_portcullis/login" => login::start(&self.shared, &runtime, &parts).await,
                    "/_portcullis/callback" => {
                        login::callback(&self.shared, &runtime, &parts).await
                    }
                    _ => login::logout(&self.shared, &runtime, &parts).await,
                };
                respond::answer(session, answer).await?
            }
            "/_portcullis/backchannel-logout" => {
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

    /// A protected route without a valid session: browsers go to the
    /// login, API clients get 401.
    async fn unauthenticated(&self, session: &mut Session, ctx: &RequestCtx) -> Result<()> {
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
            let rd: String = url::form_urlencoded::byte_serialize(original.as_bytes()).collect();
            respond::redirect(session, &format!("{RESERVED_PREFIX}/login?rd={rd}"), vec![]).await
        } else {
            let reply = Reply::unauthenticated("This route needs a session or a bearer token.");
            respond::send(session, &reply).await
        }
    }
}

/// The forward-auth endpoint (nginx `auth_request`, Traefik `forwardAuth`,
/// Caddy `forward_auth`).
const FORWARD_AUTH: &str = "/_portcullis/auth";

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

#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx {
            runtime: self.shared.runtime.load_full(),
            route: None,
            host: String::new(),
            authority: String::new(),
            target: None,
            peer: None,
            tls: false,
            started: Instant::now(),
            upstream: None,
            upstream_started: None,
            tries: 0,
            principal: None,
            _inflight: self.shared.track(),
        }
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        ctx.peer = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip());
        ctx.tls = session.digest().is_some_and(|d| d.ssl_digest.is_some());
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
        let judged = match judged {
            Ok(Some(j)) => j,
            Ok(None) => {
                respond::send(session, &Reply::unknown_host()).await?;
                return Ok(true);
            }
            Err(e) => {
                respond::send(session, &Reply::bad_request(e.to_string())).await?;
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
                self.unauthenticated(session, ctx).await?;
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

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        let route = ctx
            .route
            .as_ref()
            .ok_or_else(|| Error::explain(InternalError, "no route chosen"))?;
        let set = ctx
            .runtime
            .upstreams
            .get(route.index)
            .ok_or_else(|| Error::explain(InternalError, "route has no upstream set"))?;
        let (addr, host) = set
            .next()
            .ok_or_else(|| Error::explain(ConnectNoRoute, "no upstream available"))?;
        ctx.tries += 1;
        ctx.upstream = Some(addr);
        ctx.upstream_started = Some(Instant::now());
        let mut peer = HttpPeer::new(addr, set.tls, host.to_string());
        peer.options.connection_timeout = Some(Duration::from_secs(5));
        peer.options.total_connection_timeout = Some(Duration::from_secs(10));
        Ok(Box::new(peer))
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut RequestCtx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        // Another upstream of the route may be up: try each once.
        let count = ctx
            .route
            .as_ref()
            .and_then(|r| ctx.runtime.upstreams.get(r.index))
            .map(|s| s.len)
            .unwrap_or(1);
        if ctx.tries < count {
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
        let config = &ctx.runtime.config;
        headers::strip_identity_headers(upstream, &ctx.runtime.identity_header_names);
        let trusted = headers::is_trusted(ctx.peer, &config.server.trusted_proxies);
        let proto = if ctx.tls { "https" } else { "http" };
        headers::set_forwarded(upstream, ctx.peer, trusted, proto, &ctx.authority);
        if let Some(route) = &ctx.route
            && !route.pass_cookie
        {
            headers::strip_cookie(upstream, &config.session.cookie_name);
        }
        if let (Some(route), Some(p)) = (&ctx.route, &ctx.principal) {
            let assertion = self.assertion(config, p, &ctx.host, route);
            headers::set_identity(
                upstream,
                &config.identity_headers,
                route,
                p,
                assertion.as_deref(),
            );
        }
        if let Some(target) = &ctx.target {
            // The upstream sees the same path that the policy judged.
            let uri = target
                .path_and_query()
                .parse::<http::Uri>()
                .map_err(|_| Error::explain(InternalError, "normalized path is not a URI"))?;
            upstream.set_uri(uri);
        }
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        _session: &mut Session,
        _upstream_response: &mut pingora::http::ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if let (Some(route), Some(started)) = (&ctx.route, ctx.upstream_started) {
            self.shared
                .metrics
                .upstream_latency
                .get_or_create(&RouteLabels {
                    route: route.name.clone(),
                })
                .observe(started.elapsed().as_secs_f64());
        }
        Ok(())
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        let code = match e.etype() {
            ErrorType::HTTPStatus(code) => *code,
            _ => match e.esource() {
                ErrorSource::Upstream => 502,
                ErrorSource::Downstream => match e.etype() {
                    ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed => 0,
                    _ => 400,
                },
                ErrorSource::Internal | ErrorSource::Unset => 500,
            },
        };
        if code > 0 && session.response_written().is_none() {
            let reply = match code {
                502 => {
                    let route = ctx.route.as_ref().map(|r| r.name.as_str()).unwrap_or("");
                    tracing::warn!(route, upstream = ?ctx.upstream, error = %e, "upstream unavailable");
                    Reply::upstream_unavailable()
                }
                400 => Reply::bad_request("The request could not be read."),
                431 => Reply::headers_too_large(MAX_REQUEST_HEADER_BYTES),
                code => Reply::new(
                    code,
                    "gateway_error",
                    "Gateway error",
                    "The gateway could not complete this request.",
                ),
            };
            if let Err(err) = respond::send(session, &reply).await {
                tracing::debug!(error = %err, "error response could not be written");
            }
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
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
        let status = session
            .response_written()
            .map(|r| r.status.as_u16())
            .unwrap_or(0);
        let route = ctx.route.as_ref().map(|r| r.name.as_str()).unwrap_or("");
        self.shared
            .metrics
            .requests
            .get_or_create(&RequestLabels {
                route: route.to_string(),
                status,
            })
            .inc();
        // Never the query (it may carry tokens), never cookies.
        let req = session.req_header();
        tracing::info!(
            target: "portcullis::access",
            method = %req.method,
            host = %ctx.host,
            path = ctx.path(),
            route,
            status,
            upstream = ctx.upstream.map(|a| a.to_string()).unwrap_or_default(),
            peer = ctx.peer.map(|a| a.to_string()).unwrap_or_default(),
            duration_ms = ctx.started.elapsed().as_secs_f64() * 1000.0,
            error = e.map(|e| e.etype().as_str()).unwrap_or(""),
        );
    }
}
