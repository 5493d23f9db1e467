//! The bad day (SPEC 4, 7): the gateway killed in the middle of a burst
//! of first logins, an upstream that goes away and comes back, the IdP
//! gone for a while. Each ends with the gateway serving again and nothing
//! half-written in the store.

mod support;

use std::time::{Duration, Instant};

use portcullis::config::StoreKind;
use portcullis::store::Store;
use serde_json::json;
use sqlx::Connection;
use support::flaky::Flaky;
use support::idp::Browser;
use support::rogue::{CLIENT_ID, Rogue};
use support::*;

fn template(issuer: &str, upstream: std::net::SocketAddr) -> String {
    format!(
        r#"{head}identity_providers:
  - id: rogue
    display_name: "Rogue IdP"
    issuer: "{issuer}"
    client_id: {CLIENT_ID}
    claims: id_token
    provisioning:
      default:
        org: "contains(groups, '{{{{orgId}}}}')"
        roles: "'Member'"
organizations:
  - id: home-lab
    roles: [{{name: Member}}]
routes:
  - name: app
    hosts: ["localhost"]
    upstreams: ["{upstream}"]
    org: home-lab
"#,
        head = localhost_preamble("sqlite://{dir}/portcullis.db"),
    )
}

/// A first login through the rogue IdP, up to the gateway's answer to the
/// callback; `Err` when a connection fails on the way (the gateway killed).
async fn try_login(port: u16) -> Result<(u16, Option<String>), reqwest::Error> {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .cookie_store(true)
        .timeout(Duration::from_secs(20))
        .build()?;
    let start = client
        .get(format!("http://localhost:{port}/_portcullis/login?rd=%2F"))
        .send()
        .await?;
    let to_idp = start.headers()["location"].to_str().unwrap().to_string();
    let at_idp = client.get(to_idp).send().await?;
    let back = at_idp.headers()["location"].to_str().unwrap().to_string();
    let answer = client.get(back).send().await?;
    let session = answer
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|c| c.starts_with("_portcullis=") && !c.starts_with("_portcullis=;"))
        .map(|c| c.split(';').next().unwrap().to_string());
    Ok((answer.status().as_u16(), session))
}

async fn one_value(db: &mut sqlx::SqliteConnection, sql: &'static str) -> i64 {
    sqlx::query_scalar::<_, i64>(sql)
        .fetch_one(db)
        .await
        .unwrap()
}

/// SIGKILL while 20 first logins are in flight, then a restart on the
/// same SQLite file: the file is intact, every login either happened
/// whole or not at all, and logins work again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_during_first_logins_leaves_the_store_whole() {
    let rogue = Rogue::start().await;
    rogue.set_claims(json!({"groups": ["home-lab"]}));
    rogue.unique_subjects();
    let upstream = start_echo("app").await;
    let mut gw = Gateway::start(&template(&rogue.issuer(), upstream)).await;
    let db_path = gw.dir.path().join("portcullis.db");
    let url = format!("sqlite://{}", db_path.display());
    let port = gw.http.port();

    let logins: Vec<_> = (0..20)
        .map(|_| tokio::spawn(async move { try_login(port).await }))
        .collect();
    // Kill once some logins are through and others are not.
    let store = Store::open(&url, StoreKind::Sqlite).await.unwrap();
    eventually(
        "a few first logins done",
        Duration::from_secs(30),
        || async { (store.count_users().await.unwrap() >= 3).then_some(()) },
    )
    .await;
    drop(store);
    gw.signal("KILL");
    let mut completed = 0;
    for l in logins {
        if let Ok(Ok((302, Some(_)))) = l.await {
            completed += 1;
        }
    }
    gw.restart().await;

    let mut db = sqlx::SqliteConnection::connect(&url).await.unwrap();
    let check: String = sqlx::query_scalar("PRAGMA integrity_check")
        .fetch_one(&mut db)
        .await
        .unwrap();
    assert_eq!(check, "ok");
    let users = one_value(&mut db, "SELECT COUNT(*) FROM users").await;
    assert!(
        users >= completed,
        "{users} users, {completed} logins completed"
    );
    // Each query counts what a half-written login would leave.
    let half_written = [
        (
            "a user without a membership",
            "SELECT COUNT(*) FROM users u WHERE NOT EXISTS \
             (SELECT 1 FROM memberships m WHERE m.user_id = u.id)",
        ),
        (
            "a user without an identity",
            "SELECT COUNT(*) FROM users u WHERE NOT EXISTS \
             (SELECT 1 FROM identities i WHERE i.user_id = u.id)",
        ),
        (
            "a session without a user",
            "SELECT COUNT(*) FROM sessions s WHERE NOT EXISTS \
             (SELECT 1 FROM users u WHERE u.id = s.user_id)",
        ),
        (
            "a user without its user.created audit event",
            "SELECT COUNT(*) FROM users u WHERE NOT EXISTS \
             (SELECT 1 FROM audit_events a WHERE a.user_id = u.id AND a.action = 'user.created')",
        ),
    ];
    for (what, sql) in half_written {
        assert_eq!(one_value(&mut db, sql).await, 0, "{what}");
    }
    drop(db);

    // Logins work again, and their sessions pass.
    let (status, session) = try_login(port).await.unwrap();
    assert_eq!(status, 302);
    let cookie = format!("Cookie: {}", session.unwrap());
    assert_eq!(get(gw.http, "localhost", "/", &[&cookie]).await.status, 200);
}

/// An upstream that disappears and comes back: 502 while it is gone,
/// answered at once rather than hanging, the session untouched; served
/// again once it is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_upstream_that_goes_away_gives_502_then_serves_again() {
    let rogue = Rogue::start().await;
    let flaky = Flaky::bind(start_echo("app").await).await;
    let gw = Gateway::start(&template(&rogue.issuer(), flaky.addr)).await;
    let (status, session) = try_login(gw.http.port()).await.unwrap();
    assert_eq!(status, 302);
    let cookie = format!("Cookie: {}", session.unwrap());
    assert_eq!(get(gw.http, "localhost", "/", &[&cookie]).await.status, 200);

    flaky.set_down(true);
    for _ in 0..5 {
        let started = Instant::now();
        let r = get(gw.http, "localhost", "/", &[&cookie]).await;
        assert_eq!(r.status, 502, "{}", r.body);
        // Bounded by the upstream connect timeout (5 s), never a hang.
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    flaky.set_down(false);
    assert_eq!(get(gw.http, "localhost", "/", &[&cookie]).await.status, 200);
    let m = gw.metrics().await;
    assert!(m.contains("status=\"502\""), "502s counted: {m}");
}

/// The IdP gone for a while: existing sessions keep working; a login that
/// needs it gets the 502 page naming it; logins work once it is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_idp_gone_keeps_sessions_and_names_it_to_new_logins() {
    let inner = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let relay = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let flaky = Flaky::start(relay, inner.local_addr().unwrap());
    let rogue = Rogue::serve_as(inner, flaky.addr);
    let upstream = start_echo("app").await;
    let gw = Gateway::start(&template(&rogue.issuer(), upstream)).await;
    let port = gw.http.port();
    let (status, session) = try_login(port).await.unwrap();
    assert_eq!(status, 302);
    let cookie = format!("Cookie: {}", session.unwrap());

    // A browser on its way back from the IdP when it goes away.
    let b = Browser::new();
    let start = b
        .get(&format!("http://localhost:{port}/_portcullis/login?rd=%2F"))
        .await;
    let at_idp = b.get(&start.location().unwrap()).await;
    flaky.set_down(true);

    assert_eq!(get(gw.http, "localhost", "/", &[&cookie]).await.status, 200);
    let answer = b.get(&at_idp.location().unwrap()).await;
    assert_eq!(answer.status, 502, "{}", answer.body);
    assert!(answer.body.contains("Rogue IdP"), "{}", answer.body);
    assert!(
        answer
            .set_cookies()
            .iter()
            .all(|c| !c.starts_with("_portcullis=") || c.starts_with("_portcullis=;")),
        "no session without the IdP's word"
    );

    flaky.set_down(false);
    let (status, session) = try_login(port).await.unwrap();
    assert_eq!(status, 302);
    assert!(session.is_some());
    assert_eq!(get(gw.http, "localhost", "/", &[&cookie]).await.status, 200);
}
