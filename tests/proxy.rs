//! The gateway as a reverse proxy, through real sockets: routing, round
//! robin, failures, hostile paths and headers, websockets, HTTPS.

mod support;

use std::collections::HashMap;

use support::*;

struct Upstreams {
    a: std::net::SocketAddr,
    b: std::net::SocketAddr,
    c: std::net::SocketAddr,
    /// Held bound and not listening for the test's life: refuses.
    dead: Reserved,
}

async fn upstreams() -> Upstreams {
    Upstreams {
        a: start_echo("a").await,
        b: start_echo("b").await,
        c: start_echo("c").await,
        dead: Reserved::new(),
    }
}

fn routes(u: &Upstreams, dead: u16) -> String {
    format!(
        r#"identity_headers:
  email: X-Remote-Email
routes:
  - name: app
    hosts: ["app.test"]
    upstreams: ["{a}"]
    public: true
  - name: app-api
    hosts: ["app.test"]
    path_prefix: "/api"
    upstreams: ["{b}"]
    public: true
  - name: wild
    hosts: ["*.wild.test"]
    upstreams: ["{c}"]
    public: true
  - name: rr
    hosts: ["rr.test"]
    upstreams: ["{a}", "{b}"]
    public: true
  - name: dead
    hosts: ["dead.test"]
    upstreams: ["127.0.0.1:{dead}"]
    public: true
  - name: secure
    hosts: ["secure.test"]
    upstreams: ["{a}"]
    public_paths: ["/health"]
  - name: nows
    hosts: ["nows.test"]
    upstreams: ["{a}"]
    public: true
    websockets: false
"#,
        a = u.a,
        b = u.b,
        c = u.c,
    )
}

async fn gateway(u: &Upstreams) -> Gateway {
    Gateway::start(&config_with(&routes(u, u.dead.port()))).await
}

fn upstream_of(r: &RawResponse) -> String {
    assert_eq!(
        r.status, 200,
        "expected a proxied answer, got:\n{}\n{}",
        r.head, r.body
    );
    r.json()["upstream"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_by_host_and_longest_prefix() {
    let u = upstreams().await;
    let gw = gateway(&u).await;
    let cases = [
        ("app.test", "/x", Some("a")),
        ("app.test", "/api", Some("b")),
        ("app.test", "/api/users?id=1", Some("b")),
        ("app.test", "/apiary", Some("a")),
        ("APP.Test.", "/api/x", Some("b")),
        ("app.test:8443", "/api/x", Some("b")),
        ("team.wild.test", "/", Some("c")),
        ("a.b.wild.test", "/", Some("c")),
        ("wild.test", "/", None),
        ("unknown.test", "/", None),
    ];
    for (host, target, expected) in cases {
        let r = get(gw.http, host, target, &[]).await;
        match expected {
            Some(up) => assert_eq!(upstream_of(&r), up, "{host}{target}"),
            None => {
                assert_eq!(r.status, 404, "{host}{target}");
                assert_eq!(r.json()["code"], "unknown_host");
            }
        }
    }
    // The upstream sees the path and query it was asked for.
    let r = get(gw.http, "app.test", "/api/users?id=1&x=%2F", &[]).await;
    let body = r.json();
    assert_eq!(body["path"], "/api/users");
    assert_eq!(body["query"], "id=1&x=%2F");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_across_two_upstreams() {
    let u = upstreams().await;
    let gw = gateway(&u).await;
    let mut seen: HashMap<String, usize> = HashMap::new();
    for _ in 0..6 {
        let r = get(gw.http, "rr.test", "/", &[]).await;
        *seen.entry(upstream_of(&r)).or_default() += 1;
    }
    assert_eq!(seen.get("a"), Some(&3), "{seen:?}");
    assert_eq!(seen.get("b"), Some(&3), "{seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_upstream_gives_502_page() {
    let u = upstreams().await;
    let gw = gateway(&u).await;
    let r = get(gw.http, "dead.test", "/", &[]).await;
    assert_eq!(r.status, 502);
    assert_eq!(r.json()["code"], "upstream_unavailable");
    let r = get(gw.http, "dead.test", "/", &["Accept: text/html,*/*"]).await;
    assert_eq!(r.status, 502);
    assert!(r.header("content-type").unwrap().starts_with("text/html"));
    assert!(r.body.contains("Application unavailable"), "{}", r.body);
    // The gateway is still fine afterwards.
    assert_eq!(upstream_of(&get(gw.http, "app.test", "/", &[]).await), "a");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protected_route_without_session() {
    let u = upstreams().await;
    let gw = gateway(&u).await;
    let r = get(gw.http, "secure.test", "/app?x=1", &[]).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.header("www-authenticate").as_deref(), Some("Bearer"));
    assert_eq!(r.json()["code"], "unauthenticated");

    let r = get(gw.http, "secure.test", "/app?x=1", &["Accept: text/html"]).await;
    assert_eq!(r.status, 302);
    assert_eq!(
        r.header("location").as_deref(),
        Some("/_portcullis/login?rd=http%3A%2F%2Fsecure.test%2Fapp%3Fx%3D1")
    );

    let r = get(gw.http, "Secure.Test:8080", "/a", &["Accept: text/html"]).await;
    assert_eq!(
        r.header("location").as_deref(),
        Some("/_portcullis/login?rd=http%3A%2F%2FSecure.Test%3A8080%2Fa")
    );

    // Public paths pass, on segment boundaries and after normalization.
    assert_eq!(
        upstream_of(&get(gw.http, "secure.test", "/health", &[]).await),
        "a"
    );
    assert_eq!(
        upstream_of(&get(gw.http, "secure.test", "/health/live", &[]).await),
        "a"
    );
    for sneaky in [
        "/healthz",
        "/health/../admin",
        "/health/%2e%2e/admin",
        "/health/.%2E/admin",
        "//health/../admin",
        "/health%2f..%2fadmin",
    ] {
        let r = get(gw.http, "secure.test", sneaky, &[]).await;
        assert!(
            r.status == 401 || r.status == 400,
            "{sneaky} must not pass: {}",
            r.status
        );
    }
    // The query is never part of the path: this is /health, and the
    // upstream is told exactly that.
    let r = get(gw.http, "secure.test", "/health?/../admin", &[]).await;
    assert_eq!(upstream_of(&r), "a");
    assert_eq!(r.json()["path"], "/health");
    assert_eq!(r.json()["query"], "/../admin");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_identity_headers_never_reach_the_upstream() {
    let u = upstreams().await;
    let gw = gateway(&u).await;
    let r = get(
        gw.http,
        "app.test",
        "/",
        &[
            "X-Auth-Email: evil@example.com",
            "X_Auth_Email: evil@example.com",
            "x-AUTH-email: evil@example.com",
            "X-Auth-User-Id: 1",
            "X-Auth-Roles: Admin",
            "X-Auth-Assertion: forged",
            "X-Auth-Something-New: 1",
            "X-Remote-Email: evil@example.com",
            "X_Remote_Email: evil@example.com",
            "x-remote-EMAIL: evil@example.com",
            "X-Forwarded-For: 6.6.6.6",
            "X-Forwarded-Host: evil.test",
            "X-Forwarded-Proto: https",
            "Forwarded: for=6.6.6.6",
            "X-Authorization-Kept: yes",
        ],
    )
    .await;
    let body = r.json();
    let headers = body["headers"].as_object().unwrap();
    for name in headers.keys() {
        let n = name.to_ascii_lowercase().replace('_', "-");
        assert!(
            !n.starts_with("x-auth-") && n != "x-remote-email" && n != "forwarded",
            "{name} reached the upstream: {body}"
        );
    }
    assert_eq!(headers["x-forwarded-for"][0], "127.0.0.1");
    assert_eq!(headers["x-forwarded-proto"][0], "http");
    assert_eq!(headers["x-forwarded-host"][0], "app.test");
    assert_eq!(headers["x-authorization-kept"][0], "yes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trusted_proxy_keeps_forwarded_for() {
    let u = upstreams().await;
    let config = config_with(&routes(&u, u.dead.port())).replace(
        "  grace_period: 5s",
        "  grace_period: 5s\n  trusted_proxies: [\"127.0.0.0/8\"]",
    );
    let gw = Gateway::start(&config).await;
    let r = get(
        gw.http,
        "app.test",
        "/",
        &[
            "X-Forwarded-For: 203.0.113.7",
            "X-Forwarded-Proto: https",
            "X-Auth-Email: x@y",
        ],
    )
    .await;
    let body = r.json();
    assert_eq!(
        body["headers"]["x-forwarded-for"][0],
        "203.0.113.7, 127.0.0.1"
    );
    assert_eq!(body["headers"]["x-forwarded-proto"][0], "https");
    // Trust covers forwarding headers, never identity.
    assert!(body["headers"].get("x-auth-email").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_paths_and_headers_are_refused() {
    let u = upstreams().await;
    let gw = gateway(&u).await;
    for target in [
        "/a%2Fb",
        "/a%2fb",
        "/a%5Cb",
        "/a%5cb",
        "/a\\b",
        "/a%00b",
        "/a%0d%0aX-Auth-Email:%20evil",
        "/a%zz",
        "/a%",
        "/a%1",
    ] {
        let r = get(gw.http, "app.test", target, &[]).await;
        assert_eq!(r.status, 400, "{target:?} gave {}", r.status);
    }
    // Raw control bytes in the request line.
    for target in [&b"/a\x01b"[..], b"/a\x7fb", b"/a\x00b"] {
        let mut req = b"GET ".to_vec();
        req.extend_from_slice(target);
        req.extend_from_slice(b" HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n");
        let r = raw(gw.http, &req).await;
        assert_eq!(r.status, 400, "{target:?}");
    }
    // Oversized headers.
    let big = format!("X-Big: {}", "a".repeat(40 * 1024));
    let r = get(gw.http, "app.test", "/", &[&big]).await;
    assert_eq!(r.status, 431);
    // Two Host headers, or none.
    let r = raw(
        gw.http,
        b"GET / HTTP/1.1\r\nHost: app.test\r\nHost: evil.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(r.status, 400);
    let r = raw(gw.http, b"GET / HTTP/1.0\r\n\r\n").await;
    assert_eq!(r.status, 400);
    // Still serving.
    assert_eq!(upstream_of(&get(gw.http, "app.test", "/", &[]).await), "a");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reserved_prefix_is_never_proxied() {
    let u = upstreams().await;
    let gw = gateway(&u).await;
    let r = get(gw.http, "app.test", "/_portcullis/healthz", &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, "ok");
    for target in [
        "/_portcullis/nope",
        "/x/../_portcullis/nope",
        "/_portcullis",
    ] {
        let r = get(gw.http, "app.test", target, &[]).await;
        assert_eq!(r.status, 404, "{target}");
        assert_eq!(r.json()["code"], "not_found", "{target}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_upgrade_passes() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;

    let u = upstreams().await;
    let gw = gateway(&u).await;
    let request = ws_request(gw.http, "app.test", "/socket", None);
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    ws.send(Message::text("hello")).await.unwrap();
    let reply = ws.next().await.unwrap().unwrap();
    assert_eq!(reply.into_text().unwrap().as_str(), "echo: hello");

    let request = ws_request(gw.http, "nows.test", "/socket", None);
    match tokio_tungstenite::connect_async(request).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status(), 403)
        }
        other => panic!("upgrade on a route without websockets: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_listener_serves_with_the_configured_certificate() {
    let u = upstreams().await;
    let cert = rcgen::generate_simple_self_signed(vec!["app.test".to_string()]).unwrap();
    let cert_pem = cert.cert.pem();
    let key_pem = cert.signing_key.serialize_pem();
    let config = config_with(&routes(&u, u.dead.port())).replace(
        "  grace_period: 5s",
        "  grace_period: 5s\n  tls:\n    listen: \"127.0.0.1:{tls}\"\n    cert: \"{dir}/tls.crt\"\n    key: \"{dir}/tls.key\"",
    );
    let gw = Gateway::start_with(&config, |dir| {
        std::fs::write(dir.join("tls.crt"), &cert_pem).unwrap();
        std::fs::write(dir.join("tls.key"), &key_pem).unwrap();
    })
    .await;
    let tls = gw.tls.unwrap();
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(cert_pem.as_bytes()).unwrap())
        .resolve("app.test", tls)
        .build()
        .unwrap();
    let body: serde_json::Value = client
        .get(format!("https://app.test:{}/api/x", tls.port()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["upstream"], "b");
    assert_eq!(body["headers"]["x-forwarded-proto"][0], "https");
}
