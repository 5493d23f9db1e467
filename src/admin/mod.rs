//! The admin listener: `/healthz`, `/readyz`, `/metrics` (unauthenticated)
//! and, under `/api/`, the management API. An axum router; no Pingora.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use crate::state::Shared;

pub(crate) mod api;
mod console;
pub(crate) mod error;

/// Largest request body the API reads.
pub const MAX_BODY: usize = 64 * 1024;

/// The admin listener's router: health, readiness and metrics without
/// authentication; `/api/` behind the admin tokens.
pub fn router(shared: Arc<Shared>) -> Router {
    let (api, _) = api::router();
    let doc = Arc::new(openapi());
    let api = api
        .route(
            "/api/openapi.json",
            get(move || {
                let doc = doc.clone();
                async move { axum::Json(doc.as_ref().clone()) }
            }),
        )
        .fallback(|| async { error::ApiError::not_found("no such endpoint") })
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .layer(axum::middleware::from_fn(api::link_header))
        .layer(axum::middleware::from_fn_with_state(
            shared.clone(),
            authenticate,
        ));
    let console = shared
        .runtime
        .load()
        .config
        .admin
        .as_ref()
        .is_some_and(|a| a.console);
    let mut router = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .merge(api);
    router = router.merge(if console {
        console::routes()
    } else {
        console::turned_off()
    });
    router.with_state(shared)
}

/// The API document, with the document's own endpoint listed too.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let (_, mut doc) = api::router();
    let op = utoipa::openapi::path::OperationBuilder::new()
        .summary(Some("This OpenAPI document"))
        .response(
            "200",
            utoipa::openapi::ResponseBuilder::new().description("OpenAPI 3.1 JSON"),
        )
        .build();
    doc.paths.add_path_operation(
        "/api/openapi.json",
        vec![utoipa::openapi::HttpMethod::Get],
        op,
    );
    document_common_answers(&mut doc);
    doc
}

/// The answers any call can get, whatever its handler: 401 from the token
/// check, 400 for a query or body that does not parse, 503 when the store
/// is down, and for calls with a body 413 (over 64 KiB) and 415 (not
/// JSON). Listed on every operation so that the document says what is
/// answered (schemathesis checks it in the suite).
fn document_common_answers(doc: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder};
    let error = |what: &str| {
        RefOr::T(
            ResponseBuilder::new()
                .description(what)
                .content(
                    "application/json",
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name("ErrorBody")))
                        .build(),
                )
                .build(),
        )
    };
    for item in doc.paths.paths.values_mut() {
        let ops = [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
        ];
        for op in ops.into_iter().flatten() {
            let with_body = op.request_body.is_some();
            let mut add = |code: &str, what: &str| {
                op.responses
                    .responses
                    .entry(code.to_string())
                    .or_insert_with(|| error(what));
            };
            add("400", "The query or body does not parse");
            add("401", "No admin token, or not one of admin.tokens");
            add("503", "The store cannot be reached; nothing was changed");
            if with_body {
                add("413", "The body is over 64 KiB");
                add("415", "The body is not application/json");
            }
        }
    }
}

/// Checks `Authorization: Bearer <token>` against `admin.tokens` in
/// constant time. Every failure is the same 401, whatever was wrong.
async fn authenticate(
    State(shared): State<Arc<Shared>>,
    mut req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let runtime = shared.runtime.load();
    let tokens = runtime
        .config
        .admin
        .as_ref()
        .map(|a| a.tokens.as_slice())
        .unwrap_or(&[]);
    let authorization = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let matched = crate::config::BearerToken::matching(tokens, authorization);
    drop(runtime);
    match matched {
        Some(i) => {
            req.extensions_mut()
                .insert(api::Actor(format!("token:{i}")));
            next.run(req).await
        }
        None => {
            let mut resp = error::ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "A valid admin token is required.",
            )
            .into_response();
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
            resp
        }
    }
}

/// Ready when the config is loaded (always, once this listener is up) and
/// the store answers.
async fn readyz(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    let ping = shared
        .sessions
        .with_store(|s| async move { s.ping().await });
    match tokio::time::timeout(std::time::Duration::from_secs(3), ping).await {
        Ok(Ok(())) => (StatusCode::OK, "ready".to_string()),
        Ok(Err(e)) => (StatusCode::SERVICE_UNAVAILABLE, format!("store: {e}")),
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "store: no answer within 3s".to_string(),
        ),
    }
}

async fn metrics(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        shared.metrics.encode(),
    )
}

/// Serves the admin router on an already bound listener until `shutdown`
/// turns true.
pub async fn serve(
    listener: std::net::TcpListener,
    shared: Arc<Shared>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let listener = match listener
        .set_nonblocking(true)
        .and_then(|_| tokio::net::TcpListener::from_std(listener))
    {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "admin listener could not start");
            return;
        }
    };
    let app = router(shared);
    let stop = async move {
        while !*shutdown.borrow() {
            if shutdown.changed().await.is_err() {
                break;
            }
        }
    };
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(stop)
        .await
    {
        tracing::error!(error = %e, "admin listener failed");
    }
}
