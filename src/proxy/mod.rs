//! The only module that knows Pingora. `gateway.rs` holds the `ProxyHttp`
//! impl, each hook a few lines that call the phase that does the work:
//! `admit` (request_filter: read the request, route it, decide), `endpoints`
//! (the gateway's own `/_portcullis/*`), `forward_auth`, `decide` (the one
//! access decision), `headers` (what goes upstream), `respond` (what the
//! gateway answers itself), `observe` (metrics and the access log).

mod admit;
mod decide;
pub(crate) mod endpoints;
mod forward_auth;
mod gateway;
pub mod headers;
mod observe;
pub(crate) mod respond;
pub(crate) mod server;
mod upgraded;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pingora::prelude::*;

use crate::authz::Target;
use crate::config::Route;
use crate::login;
use crate::session::Principal;
use crate::state::{InflightGuard, Runtime, Shared};

pub use endpoints::RESERVED_PREFIX;

/// Request headers larger than this (all names, values and the request
/// line) are answered 431.
pub const MAX_REQUEST_HEADER_BYTES: usize = 32 * 1024;

pub struct Gateway {
    shared: Arc<Shared>,
    upgraded: Arc<upgraded::Upgraded>,
}

impl Gateway {
    pub fn new(shared: Arc<Shared>) -> Gateway {
        let upgraded = Arc::new(upgraded::Upgraded::default());
        upgraded::watch(&shared, &upgraded);
        Gateway { shared, upgraded }
    }

    /// Registers an upgraded connection a session opened, so that it ends
    /// with the session (see `upgraded`).
    fn upgraded_by_session(&self, session: &pingora::proxy::Session, ctx: &mut RequestCtx) {
        let (Some(hash), Some(route)) = (
            ctx.principal
                .as_ref()
                .and_then(|p| p.session_hash.as_deref()),
            ctx.route.as_ref(),
        ) else {
            return;
        };
        if let Some(fd) = session.stream().map(|s| s.id()) {
            ctx.upgraded = self.upgraded.register(fd, hash, &route.name);
        }
    }

    /// The signed assertion for `p` at `host` on `route`; a signing failure
    /// is logged and the headers go without it.
    fn assertion(
        &self,
        config: &crate::config::Config,
        p: &Principal,
        host: &str,
        route: &Route,
    ) -> Option<http::HeaderValue> {
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
    /// The registration of this request's upgraded connection.
    upgraded: Option<u64>,
    _inflight: InflightGuard,
}

impl RequestCtx {
    /// The normalized path, once the request target has been parsed.
    fn path(&self) -> &str {
        self.target.as_ref().map(|t| t.path.as_str()).unwrap_or("")
    }

    fn new(shared: &Arc<Shared>) -> RequestCtx {
        RequestCtx {
            runtime: shared.runtime.load_full(),
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
            upgraded: None,
            _inflight: shared.track(),
        }
    }
}

impl RequestCtx {
    /// The route's next upstream in turn, as a peer to connect to. Built
    /// from a resolved address: no DNS here.
    fn next_peer(&mut self) -> Result<Box<HttpPeer>> {
        let route = self
            .route
            .as_ref()
            .ok_or_else(|| Error::explain(InternalError, "no route chosen"))?;
        let set = self
            .runtime
            .upstreams
            .get(route.index)
            .ok_or_else(|| Error::explain(InternalError, "route has no upstream set"))?;
        let (addr, host) = set
            .next()
            .ok_or_else(|| Error::explain(ConnectNoRoute, "no upstream available"))?;
        self.tries += 1;
        self.upstream = Some(addr);
        self.upstream_started = Some(Instant::now());
        let mut peer = HttpPeer::new(addr, set.tls, host.to_string());
        peer.options.connection_timeout = Some(Duration::from_secs(5));
        peer.options.total_connection_timeout = Some(Duration::from_secs(10));
        Ok(Box::new(peer))
    }

    /// Whether the route has an upstream this request has not tried yet.
    fn untried_upstreams(&self) -> bool {
        let count = self
            .route
            .as_ref()
            .and_then(|r| self.runtime.upstreams.get(r.index))
            .map(|s| s.len)
            .unwrap_or(1);
        self.tries < count
    }
}
