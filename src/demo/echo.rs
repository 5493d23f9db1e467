//! A header-echo upstream: answers every request with JSON describing what
//! arrived (method, path, headers), and echoes WebSocket messages. The demo
//! puts it behind the gateway; the tests use it as a real upstream.

use std::collections::BTreeMap;

use axum::Router;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{FromRequestParts, Request, State};
use axum::response::{IntoResponse, Json, Response};

#[derive(Clone)]
struct EchoState {
    name: String,
}

/// Serves the echo app on `listener` until the task is dropped.
pub async fn serve(listener: tokio::net::TcpListener, name: impl Into<String>) {
    let app = Router::new()
        .fallback(echo)
        .with_state(EchoState { name: name.into() });
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
