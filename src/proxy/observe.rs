//! What a request leaves behind: request and upstream-latency metrics and
//! one `portcullis::access` log line (never the query, never cookies).

use pingora::prelude::*;

use super::RequestCtx;
use crate::metrics::{RequestLabels, RouteLabels};
use crate::state::Shared;

/// The upstream answered: its latency, by route.
pub(super) fn upstream_answered(shared: &Shared, ctx: &RequestCtx) {
    if let (Some(route), Some(started)) = (&ctx.route, ctx.upstream_started) {
        shared
            .metrics
            .upstream_latency
            .get_or_create(&RouteLabels {
                route: route.name.clone(),
            })
            .observe(started.elapsed().as_secs_f64());
    }
}

pub(super) fn access_log(shared: &Shared, session: &Session, e: Option<&Error>, ctx: &RequestCtx) {
    let status = session
        .response_written()
        .map(|r| r.status.as_u16())
        .unwrap_or(0);
    let route = ctx.route.as_ref().map(|r| r.name.as_str()).unwrap_or("");
    shared
        .metrics
        .requests
        .get_or_create(&RequestLabels {
            route: route.to_string(),
            status,
        })
        .inc();
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
