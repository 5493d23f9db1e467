//! A header-echo upstream: answers every request with JSON describing what
//! arrived (method, path, headers), and echoes WebSocket messages. The tests
//! use it as a real upstream. In the demo ([`serve_demo`]) it also answers
//! browsers with a page of who they are: the identity headers, and the
//! assertion decoded and checked against the gateway's JWKS, fetched from
//! the gateway it was told to trust (never from the token's own `iss`).

use std::collections::BTreeMap;

use axum::Router;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{FromRequestParts, Request, State};
use axum::response::{IntoResponse, Json, Response};

#[derive(Clone)]
struct EchoState {
    name: String,
    /// The gateway's public URL, whose JWKS verifies assertions; `None`:
    /// JSON for every client.
    gateway: Option<String>,
    http: reqwest::Client,
}

/// Serves the echo app on `listener` until the task is dropped.
pub async fn serve(listener: tokio::net::TcpListener, name: impl Into<String>) {
    run(listener, name.into(), None).await
}

/// [`serve`], with the page for browsers; assertions are checked against
/// `{gateway}/_portcullis/jwks.json`.
pub async fn serve_demo(listener: tokio::net::TcpListener, name: String, gateway: String) {
    run(listener, name, Some(gateway)).await
}

async fn run(listener: tokio::net::TcpListener, name: String, gateway: Option<String>) {
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(std::time::Duration::from_secs(5))
        .build()
        .unwrap_or_default();
    let app = Router::new().fallback(echo).with_state(EchoState {
        name,
        gateway,
        http,
    });
    if let Err(e) = axum::serve(listener, app).await {
        tracing::error!(error = %e, "echo upstream stopped");
    }
}

async fn echo(State(state): State<EchoState>, req: Request) -> Response {
    let (mut parts, _body) = req.into_parts();
    if parts.headers.contains_key("upgrade") {
        return match WebSocketUpgrade::from_request_parts(&mut parts, &state).await {
            Ok(ws) => ws.on_upgrade(echo_socket).into_response(),
            Err(e) => e.into_response(),
        };
    }
    let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (k, v) in &parts.headers {
        headers
            .entry(k.as_str().to_string())
            .or_default()
            .push(String::from_utf8_lossy(v.as_bytes()).into_owned());
    }
    let wants_html = parts
        .headers
        .get("accept")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/html"));
    if let (true, Some(gateway)) = (wants_html, &state.gateway) {
        return page(&state, gateway, &parts, &headers).await;
    }
    Json(serde_json::json!({
        "upstream": state.name,
        "method": parts.method.as_str(),
        "path": parts.uri.path(),
        "query": parts.uri.query(),
        "headers": headers,
    }))
    .into_response()
}

async fn echo_socket(mut socket: WebSocket) {
    while let Some(Ok(msg)) = socket.recv().await {
        let reply = match msg {
            Message::Text(t) => Message::Text(format!("echo: {}", t.as_str()).into()),
            Message::Binary(b) => Message::Binary(b),
            Message::Close(_) => break,
            _ => continue,
        };
        if socket.send(reply).await.is_err() {
            break;
        }
    }
}

#[derive(askama::Template)]
#[template(path = "demo_echo.html")]
struct WhoPage {
    links: Vec<(String, &'static str)>,
    identity: Vec<(String, String)>,
    assertion: Option<AssertionView>,
    method: String,
    path: String,
}

struct AssertionView {
    verified: bool,
    verdict: String,
    header: String,
    claims: String,
}

async fn page(
    state: &EchoState,
    gateway: &str,
    parts: &axum::http::request::Parts,
    headers: &BTreeMap<String, Vec<String>>,
) -> Response {
    use askama::Template;
    let identity: Vec<(String, String)> = headers
        .iter()
        .filter(|(k, _)| {
            (k.starts_with("x-auth-") && *k != "x-auth-assertion") || *k == "x-department"
        })
        .map(|(k, v)| (k.clone(), v.join(", ")))
        .collect();
    let assertion = match headers.get("x-auth-assertion").and_then(|v| v.first()) {
        Some(jwt) => Some(check(state, gateway, jwt).await),
        None => None,
    };
    let links = [
        ("/", "Home (Home Lab members)"),
        ("/admin/", "Admin (Admins only)"),
        ("/partners/", "Partners"),
        ("/public/", "Public"),
        (crate::paths::USERINFO, "Userinfo"),
        (crate::paths::LOGOUT, "Sign out"),
    ]
    .into_iter()
    .map(|(h, l)| (h.to_string(), l))
    .collect();
    let page = WhoPage {
        links,
        identity,
        assertion,
        method: parts.method.to_string(),
        path: parts.uri.path().to_string(),
    };
    match page.render() {
        Ok(html) => (
            [(axum::http::header::CONTENT_TYPE, "text/html; charset=utf-8")],
            html,
        )
            .into_response(),
        Err(e) => (
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            format!("page: {e}"),
        )
            .into_response(),
    }
}

/// Decodes the assertion and verifies its signature with the gateway's
/// published keys (ES256 only, the key named by `kid`).
async fn check(state: &EchoState, gateway: &str, jwt: &str) -> AssertionView {
    let part = |i: usize| {
        crate::oidc::verify::unverified_part(jwt, i)
            .map(|v| serde_json::to_string_pretty(&v).unwrap_or_default())
            .unwrap_or_else(|| "(not readable)".into())
    };
    let (header, claims) = (part(0), part(1));
    let url = format!("{}{}", gateway.trim_end_matches('/'), crate::paths::JWKS);
    let verdict = match verify(state, &url, jwt).await {
        Ok(kid) => Ok(format!("Signature verified with key {kid} from {url}.")),
        Err(why) => Err(format!("Signature NOT verified: {why}")),
    };
    let verified = verdict.is_ok();
    AssertionView {
        verified,
        verdict: verdict.unwrap_or_else(|e| e),
        header,
        claims,
    }
}

async fn verify(state: &EchoState, jwks_url: &str, jwt: &str) -> Result<String, String> {
    let header = jsonwebtoken::decode_header(jwt).map_err(|e| format!("not a JWT ({e})"))?;
    if header.alg != jsonwebtoken::Algorithm::ES256 {
        return Err(format!("algorithm {:?}, not ES256", header.alg));
    }
    let kid = header.kid.ok_or("no kid")?;
    let jwks: jsonwebtoken::jwk::JwkSet = state
        .http
        .get(jwks_url)
        .send()
        .await
        .map_err(|e| format!("JWKS not fetched ({e})"))?
        .json()
        .await
        .map_err(|e| format!("JWKS not readable ({e})"))?;
    let jwk = jwks.find(&kid).ok_or("no published key has this kid")?;
    let key = jsonwebtoken::DecodingKey::from_jwk(jwk).map_err(|e| e.to_string())?;
    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
    // The demo shows the signature; audience and issuer are the app's to check.
    v.validate_aud = false;
    jsonwebtoken::decode::<serde_json::Value>(jwt, &key, &v).map_err(|e| e.to_string())?;
    Ok(kid)
}
