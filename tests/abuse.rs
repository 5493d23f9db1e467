//! Bounded under abuse (SPEC 7): clients that send made-up session
//! cookies as fast as they can, flood the login start, hold thousands of
//! idle connections or send their headers a byte at a time neither grow
//! the gateway's memory without bound nor keep it from serving everyone
//! else. Each test names the advisory class it guards against. Memory is
//! the gateway's own `VmRSS`; the figures are printed for the operator's
//! guide (README, "Running it in production").

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use portcullis::config::StoreKind;
use portcullis::session::cookie::SessionId;
use portcullis::store::Store;
use serde_json::json;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn template(upstream: std::net::SocketAddr) -> String {
    lab_config(
        &format!(
            r#"  - name: app
    hosts: ["app.test"]
    upstreams: ["{upstream}"]
    org: lab
"#
        ),
        "sqlite://{dir}/portcullis.db",
        "30s",
    )
    .replace(
        "  grace_period: 5s\n",
        "  grace_period: 1s\n  keepalive_timeout: 3s\n",
    )
}

async fn gateway() -> (Gateway, Store) {
    let upstream = start_echo("app").await;
    let gw = Gateway::start(&template(upstream)).await;
    let url = format!("sqlite://{}/portcullis.db", gw.dir.path().display());
    let store = Store::open(&url, StoreKind::Sqlite).await.unwrap();
    (gw, store)
}

/// Sends `requests` GETs of `/x` on `app.test` on one keep-alive
/// connection per worker, each with the header lines `make(i)` gives;
/// the statuses of the answers.
async fn hammer(
    addr: std::net::SocketAddr,
    workers: usize,
    requests: usize,
    make: impl Fn(usize) -> String + Send + Sync + 'static,
) -> Vec<u16> {
    hammer_raw(addr, workers, requests, move |i| {
        format!("GET /x HTTP/1.1\r\nHost: app.test\r\n{}\r\n", make(i))
    })
    .await
}

/// Sends the requests `make(i)` for `i` below `requests`, one keep-alive
/// connection per worker (a new one when the gateway closes it).
async fn hammer_raw(
    addr: std::net::SocketAddr,
    workers: usize,
    requests: usize,
    make: impl Fn(usize) -> String + Send + Sync + 'static,
) -> Vec<u16> {
    let make = Arc::new(make);
    let next = Arc::new(AtomicUsize::new(0));
    let connect = move || async move {
        tokio::io::BufReader::new(tokio::net::TcpStream::connect(addr).await.unwrap())
    };
    let mut tasks = Vec::new();
    for _ in 0..workers {
        let (make, next) = (make.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut statuses = Vec::new();
            let mut conn = connect().await;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= requests {
                    return statuses;
                }
                conn.get_mut().write_all(make(i).as_bytes()).await.unwrap();
                let (status, close) = read_response(&mut conn).await;
                statuses.push(status);
                if close {
                    conn = connect().await;
                }
            }
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all
}

/// One HTTP/1.1 response with a `Content-Length` body: its status and
/// whether the server closes the connection after it.
async fn read_response(conn: &mut tokio::io::BufReader<tokio::net::TcpStream>) -> (u16, bool) {
    use tokio::io::AsyncBufReadExt;
    let mut line = String::new();
    conn.read_line(&mut line).await.unwrap();
    let status = line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let (mut length, mut close) = (0usize, false);
    loop {
        let mut h = String::new();
        conn.read_line(&mut h).await.unwrap();
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let lower = h.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("content-length:") {
            length = v.trim().parse().unwrap();
        }
        if lower.starts_with("connection:") && lower.contains("close") {
            close = true;
        }
    }
    let mut body = vec![0; length];
    conn.read_exact(&mut body).await.unwrap();
    (status, close)
}

/// Resource exhaustion through unauthenticated look-ups (CWE-400, CWE-770):
/// well-formed made-up session ids sent as fast as clients can. None
/// passes; memory stays bounded; the store is asked about a repeated
/// made-up id once; a real session, cached or not, keeps being served.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn made_up_session_cookies_neither_grow_memory_nor_starve_real_sessions() {
    let (gw, store) = gateway().await;
    let user = manual_user(&store, "lab", &["Member"]).await;
    let (real, _) = session_cookie(&store, &user, "authentik", "alice-sub", json!({}), 3600).await;
    let (uncached, _) =
        session_cookie(&store, &user, "authentik", "alice-sub", json!({}), 3600).await;
    assert_eq!(get(gw.http, "app.test", "/", &[&real]).await.status, 200);

    // A repeated made-up id: the store is asked about it by the first
    // requests only (at most one per connection racing for the answer),
    // then its absence is remembered.
    let misses = |m: &str| metric_value(m, "portcullis_session_cache_misses_total").unwrap();
    let before = misses(&gw.metrics().await);
    let stale = format!("Cookie: _portcullis={}", SessionId::generate().encode());
    let statuses = hammer(gw.http, 4, 400, move |_| format!("{stale}\r\n")).await;
    // Not a browser: 401 (a browser would be sent to log in).
    assert!(statuses.iter().all(|s| *s == 401), "{statuses:?}");
    let asked = misses(&gw.metrics().await) - before;
    assert!(
        (1.0..=4.0).contains(&asked),
        "asked the store {asked} times for 400 requests"
    );

    // A flood of fresh made-up ids, with a real user's requests beside it.
    let rss_before = rss_mib(gw.pid());
    let flood = tokio::spawn(hammer(gw.http, 16, 40_000, |_| {
        format!("Cookie: _portcullis={}\r\n", SessionId::generate().encode())
    }));
    let mut real_statuses = Vec::new();
    while !flood.is_finished() {
        real_statuses.push(get(gw.http, "app.test", "/", &[&real]).await.status);
    }
    let statuses = flood.await.unwrap();
    let rss_after = rss_mib(gw.pid());
    eprintln!(
        "40,000 made-up session ids: RSS {rss_before:.0} -> {rss_after:.0} MiB; \
         {} real requests meanwhile",
        real_statuses.len()
    );
    assert_eq!(statuses.len(), 40_000);
    // Never a pass: 401, or 503 when the look-ups queue is full.
    assert!(
        statuses.iter().all(|s| *s == 401 || *s == 503),
        "{:?}",
        statuses
            .iter()
            .filter(|s| **s != 401 && **s != 503)
            .take(5)
            .collect::<Vec<_>>()
    );
    assert!(
        !real_statuses.is_empty() && real_statuses.iter().all(|s| *s == 200),
        "{real_statuses:?}"
    );
    // The made-up ids are remembered in a cache of 10,000 entries: the
    // growth stays far below what 40,000 kept entries would take.
    assert!(
        rss_after - rss_before < 48.0,
        "RSS grew from {rss_before:.0} to {rss_after:.0} MiB"
    );
    // The store was not taken down: a session the cache never saw works.
    assert_eq!(
        get(gw.http, "app.test", "/", &[&uncached]).await.status,
        200
    );
    assert_eq!(
        reqwest::get(format!("http://{}/readyz", gw.admin))
            .await
            .unwrap()
            .status(),
        200
    );
}

/// State exhaustion by unauthenticated login starts (CWE-770): login
/// state lives in the client's cookie, so 20,000 starts, each with its
/// own return address, keep nothing on the gateway.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_flood_of_login_starts_keeps_nothing_on_the_gateway() {
    let rogue = support::rogue::Rogue::start().await;
    let upstream = start_echo("app").await;
    let gw = Gateway::start(&format!(
        r#"{head}identity_providers:
  - id: rogue
    issuer: "{issuer}"
    client_id: {client}
organizations:
  - id: lab
    roles: [{{name: Member}}]
routes:
  - name: app
    hosts: ["localhost"]
    upstreams: ["{upstream}"]
    org: lab
"#,
        head = localhost_preamble("sqlite://{dir}/portcullis.db"),
        issuer = rogue.issuer(),
        client = support::rogue::CLIENT_ID,
    ))
    .await;
    let start = |i: usize| {
        format!("GET /_portcullis/login?rd=%2Fpage%2F{i} HTTP/1.1\r\nHost: localhost\r\n\r\n")
    };
    // Warm: the IdP's discovery document is fetched once.
    let first = raw(
        gw.http,
        start(0)
            .replace("\r\n\r\n", "\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    )
    .await;
    assert_eq!(first.status, 302, "{}", first.body);
    assert!(
        first.header("set-cookie").is_some(),
        "the state goes to the client"
    );
    let rss_before = rss_mib(gw.pid());
    let statuses = hammer_raw(gw.http, 16, 20_000, start).await;
    let rss_after = rss_mib(gw.pid());
    eprintln!("20,000 login starts: RSS {rss_before:.0} -> {rss_after:.0} MiB");
    assert!(statuses.iter().all(|s| *s == 302), "{:?}", &statuses[..5]);
    assert!(
        rss_after - rss_before < 24.0,
        "RSS grew from {rss_before:.0} to {rss_after:.0} MiB"
    );
}

/// Connection exhaustion (CWE-400, Slowloris): 10,000 idle keep-alive
/// connections and 2,000 clients sending their headers a byte a second.
/// Others are served meanwhile, memory stays bounded, and idle
/// connections are closed after `server.keepalive_timeout`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn idle_and_slow_connections_leave_the_gateway_serving_others() {
    let (gw, store) = gateway().await;
    let user = manual_user(&store, "lab", &["Member"]).await;
    let (real, _) = session_cookie(&store, &user, "authentik", "alice-sub", json!({}), 3600).await;
    let rss_before = rss_mib(gw.pid());
    let addr = gw.http;

    // 10,000 keep-alive connections, each idle after one request.
    let mut idle = Vec::with_capacity(10_000);
    for _ in 0..100 {
        let mut batch = Vec::new();
        for _ in 0..100 {
            let real = real.clone();
            batch.push(tokio::spawn(async move {
                let mut conn =
                    tokio::io::BufReader::new(tokio::net::TcpStream::connect(addr).await.unwrap());
                let req = format!("GET / HTTP/1.1\r\nHost: app.test\r\n{real}\r\n\r\n");
                conn.get_mut().write_all(req.as_bytes()).await.unwrap();
                let (status, _) = read_response(&mut conn).await;
                assert_eq!(status, 200);
                conn
            }));
        }
        for b in batch {
            idle.push(b.await.unwrap());
        }
    }
    let rss_idle = rss_mib(gw.pid());
    eprintln!("10,000 idle connections: RSS {rss_before:.0} -> {rss_idle:.0} MiB");
    // 2,000 clients, a header byte a second.
    let slow_stop = Arc::new(tokio::sync::Notify::new());
    let mut slow = Vec::new();
    for _ in 0..2_000 {
        let stop = slow_stop.clone();
        slow.push(tokio::spawn(async move {
            let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
            let bytes =
                b"GET / HTTP/1.1\r\nHost: app.test\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
            for b in bytes.iter() {
                if conn.write_all(&[*b]).await.is_err() {
                    return;
                }
                tokio::select! {
                    _ = stop.notified() => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }));
    }
    // Meanwhile others are served.
    for _ in 0..50 {
        assert_eq!(get(gw.http, "app.test", "/", &[&real]).await.status, 200);
    }
    let rss_loaded = rss_mib(gw.pid());
    eprintln!("10,000 idle + 2,000 slow connections: RSS {rss_before:.0} -> {rss_loaded:.0} MiB");
    // Each connection costs memory (about 40 KiB here: Pingora's session,
    // buffers, the task): bounded per connection, never growing while
    // they sit there.
    let per_connection_kib = (rss_loaded - rss_before) * 1024.0 / 12_000.0;
    assert!(
        per_connection_kib < 64.0,
        "RSS grew from {rss_before:.0} to {rss_loaded:.0} MiB: {per_connection_kib:.0} KiB per connection"
    );
    slow_stop.notify_waiters();
    for s in slow {
        let _ = s.await;
    }

    // Idle connections are closed by the gateway after keepalive_timeout
    // (3 s here): each read ends.
    let closed = Arc::new(AtomicUsize::new(0));
    let mut readers = Vec::new();
    for mut conn in idle.drain(..).take(200) {
        let closed = closed.clone();
        readers.push(tokio::spawn(async move {
            let mut buf = [0u8; 1];
            let read = tokio::time::timeout(Duration::from_secs(30), conn.read(&mut buf)).await;
            if matches!(read, Ok(Ok(0)) | Ok(Err(_))) {
                closed.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for r in readers {
        r.await.unwrap();
    }
    assert_eq!(
        closed.load(Ordering::Relaxed),
        200,
        "idle connections closed by the gateway"
    );
    drop(idle);
}
