//! Ending a session ends its connections (SPEC 4a): a WebSocket opened
//! through the gateway with a session closes when the session is logged
//! out or revoked — on the same replica at once, on another within
//! `store.cache_ttl` — and when the session loses access to the route.

mod support;

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use portcullis::config::StoreKind;
use portcullis::store::Store;
use serde_json::json;
use support::*;
use tokio_tungstenite::tungstenite::Message;

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

fn template(upstream: std::net::SocketAddr, store_url: &str) -> String {
    lab_config(
        &format!(
            r#"  - name: live
    hosts: ["app.test"]
    upstreams: ["{upstream}"]
    org: lab
    websockets: true
  - name: admin-live
    hosts: ["app.test"]
    path_prefix: /admin
    upstreams: ["{upstream}"]
    org: lab
    allow_roles: [Admin]
    websockets: true
"#
        ),
        store_url,
        "2s",
    )
}

/// A user with `roles` in `lab`, and a session of theirs: its cookie line.
async fn user_with_session(store: &Store, roles: &[&str]) -> (String, String) {
    let user = manual_user(store, "lab", roles).await;
    let (cookie, _) = session_cookie(
        store,
        &user,
        "authentik",
        "alice-sub",
        json!({"sub": "alice-sub"}),
        3600,
    )
    .await;
    (user, cookie)
}

/// A WebSocket through `gw` to `path` with the session cookie, checked
/// to echo.
async fn open(gw: &Gateway, path: &str, cookie: &str) -> Socket {
    let request = ws_request(gw.http, "app.test", path, Some(cookie));
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    ws.send(Message::text("hello")).await.unwrap();
    let reply = ws.next().await.unwrap().unwrap();
    assert_eq!(reply.into_text().unwrap().as_str(), "echo: hello");
    ws
}

/// Waits for the socket to be closed by the far end, at most `within`;
/// how long it took.
async fn closed_within(ws: &mut Socket, within: Duration, what: &str) -> Duration {
    let started = Instant::now();
    let end = tokio::time::timeout(within, async {
        loop {
            match ws.next().await {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                Some(Ok(_)) => continue,
            }
        }
    })
    .await;
    assert!(
        end.is_ok(),
        "{what}: the socket is still open after {within:?}"
    );
    started.elapsed()
}

async fn sqlite_world() -> (Gateway, Store) {
    let upstream = start_echo("app").await;
    let gw = Gateway::start(&template(upstream, "sqlite://{dir}/portcullis.db")).await;
    let url = format!("sqlite://{}/portcullis.db", gw.dir.path().display());
    let store = Store::open(&url, StoreKind::Sqlite).await.unwrap();
    (gw, store)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_closes_the_sessions_websocket_at_once() {
    let (gw, store) = sqlite_world().await;
    let (_, cookie) = user_with_session(&store, &["Member"]).await;
    let mut ws = open(&gw, "/socket", &cookie).await;
    let out = get(gw.http, "app.test", "/_portcullis/logout", &[&cookie]).await;
    assert_eq!(out.status, 302);
    closed_within(
        &mut ws,
        Duration::from_secs(1),
        "after logout on this replica",
    )
    .await;
    let m = gw.metrics().await;
    assert_eq!(
        metric_value(
            &m,
            "portcullis_upgraded_connections_closed_total{reason=\"session_ended\"}"
        ),
        Some(1.0),
        "{m}"
    );
    assert_eq!(
        metric_value(&m, "portcullis_sessions_ended_total{reason=\"logout\"}"),
        Some(1.0),
        "{m}"
    );
    // A new upgrade with the ended session is refused like any request.
    let request = ws_request(gw.http, "app.test", "/socket", Some(&cookie));
    match tokio_tungstenite::connect_async(request).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status(), 401)
        }
        other => panic!("an ended session upgraded: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_removed_closes_the_websocket_of_the_route_that_needs_it() {
    let (gw, store) = sqlite_world().await;
    let (user, cookie) = user_with_session(&store, &["Admin", "Member"]).await;
    let mut admin = open(&gw, "/admin/socket", &cookie).await;
    let mut member = open(&gw, "/socket", &cookie).await;
    let r = gw
        .api(
            reqwest::Method::PUT,
            &format!("/api/organizations/lab/users/{user}"),
            Some(json!({"roles": ["Member"]})),
        )
        .await;
    assert!((200..300).contains(&r.status), "{}", r.status);
    closed_within(
        &mut admin,
        Duration::from_secs(1),
        "the Admin route's socket",
    )
    .await;
    // The route the user may still use keeps its socket.
    member.send(Message::text("still")).await.unwrap();
    let reply = member.next().await.unwrap().unwrap();
    assert_eq!(reply.into_text().unwrap().as_str(), "echo: still");
}

/// Two replicas on one PostgreSQL database: a revocation through the
/// management API of one closes the socket held open through the other
/// within `store.cache_ttl` (2 s here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_on_another_replica_closes_the_websocket() {
    let upstream = start_echo("app").await;
    let db = fresh_postgres_database().await;
    let a = Gateway::start(&template(upstream, &db)).await;
    let b = Gateway::start(&template(upstream, &db)).await;
    let store = Store::open(&db, StoreKind::Postgres).await.unwrap();
    let (user, cookie) = user_with_session(&store, &["Member"]).await;
    let mut ws = open(&b, "/socket", &cookie).await;
    let r = a
        .api(
            reqwest::Method::DELETE,
            &format!("/api/users/{user}/sessions"),
            None,
        )
        .await;
    assert_eq!(r.status, 204);
    let took = closed_within(&mut ws, Duration::from_secs(4), "on the other replica").await;
    eprintln!("closed on the other replica after {took:?}");
}
