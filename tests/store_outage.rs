//! The gateway on PostgreSQL when the database goes away (SPEC section 7):
//! cached sessions keep working, new logins and API writes answer 503,
//! `/readyz` says not ready, nothing half-written remains, and everything
//! recovers when the database is back. The outage is real: the database
//! stops accepting connections and the existing ones are terminated.

mod support;

use portcullis::config::StoreKind;
use portcullis::provision::{Membership, MembershipSource};
use portcullis::store::{NewUser, Store};
use serde_json::json;
use sqlx::Connection;
use support::idp::Browser;
use support::rogue::{CLIENT_ID, Rogue, Spoil};
use support::*;

async fn admin_sql(sql: String) {
    let base = std::env::var("PORTCULLIS_TEST_POSTGRES_URL").unwrap();
    let mut conn = sqlx::PgConnection::connect(&base).await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .execute(&mut conn)
        .await
        .unwrap();
}

async fn outage(db: &str, on: bool) {
    admin_sql(format!("ALTER DATABASE {db} ALLOW_CONNECTIONS {}", !on)).await;
    if on {
        admin_sql(format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{db}' AND pid <> pg_backend_pid()"
        ))
        .await;
    }
}

/// A login through the rogue IdP, up to the gateway's answer to the callback.
async fn login_through_rogue(port: u16) -> support::idp::Page {
    let b = Browser::new();
    let start = b
        .get(&format!("http://localhost:{port}/_portcullis/login?rd=%2F"))
        .await;
    let at_idp = b.get(&start.location().unwrap()).await;
    b.get(&at_idp.location().unwrap()).await
}

#[tokio::test]
async fn a_store_outage_degrades_and_recovers() {
    let url = support::fresh_postgres_database().await;
    let db = url::Url::parse(&url)
        .unwrap()
        .path()
        .trim_start_matches('/')
        .to_string();
    let rogue = Rogue::start().await;
    let upstream = start_echo("app").await;
    let head = localhost_preamble(&url).replace("cache_ttl: 30s", "cache_ttl: 5m");
    let template = format!(
        r#"{head}identity_providers:
  - id: rogue
    issuer: "{issuer}"
    client_id: {CLIENT_ID}
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
        issuer = rogue.issuer()
    );
    let gw = Gateway::start(&template).await;
    let store = Store::open(&url, StoreKind::Postgres).await.unwrap();
    let user = store
        .create_user(
            &NewUser {
                idp: "rogue".into(),
                subject: Some("s".into()),
                email: None,
                name: None,
                memberships: vec![Membership {
                    org: "home-lab".into(),
                    roles: vec!["Member".into()],
                    source: MembershipSource::Manual,
                }],
            },
            "token:0",
        )
        .await
        .unwrap();
    let (cached, _) = session_cookie(&store, &user.id, "rogue", "s", json!({}), 3600).await;
    let (uncached, _) = session_cookie(&store, &user.id, "rogue", "s", json!({}), 3600).await;
    drop(store);
    assert_eq!(get(gw.http, "localhost", "/", &[&cached]).await.status, 200);
    let admin = |path: &str| format!("http://{}{path}", gw.admin);
    let http = reqwest::Client::new();

    outage(&db, true).await;

    // A cached session keeps working.
    assert_eq!(get(gw.http, "localhost", "/", &[&cached]).await.status, 200);
    // One the cache has not seen cannot be checked: 503, not a pass.
    let r = get(gw.http, "localhost", "/", &[&uncached]).await;
    assert_eq!(r.status, 503, "{}", r.body);
    // Not ready.
    assert_eq!(reqwest::get(admin("/readyz")).await.unwrap().status(), 503);
    // API writes: 503 with the error shape, nothing written.
    let r = http
        .post(admin("/api/users"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"idp": "rogue", "email": "new@example.com"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["code"], "store_unavailable");
    // A new login: 503 page, no session.
    rogue.spoil(Spoil::Nothing);
    rogue.set_claims(json!({"sub": "newcomer", "groups": ["home-lab"]}));
    let done = login_through_rogue(gw.http.port()).await;
    assert_eq!(done.status, 503, "{}", done.body);
    assert!(
        done.set_cookies()
            .iter()
            .all(|c| !c.starts_with("_portcullis=") || c.starts_with("_portcullis=;"))
    );

    outage(&db, false).await;

    // Back: ready again, the uncached session is honoured, and the login
    // that failed left nothing behind.
    let ready = admin("/readyz");
    eventually(
        "ready again",
        std::time::Duration::from_secs(20),
        || async { (reqwest::get(&ready).await.unwrap().status() == 200).then_some(()) },
    )
    .await;
    assert_eq!(
        get(gw.http, "localhost", "/", &[&uncached]).await.status,
        200
    );
    let store = Store::open(&url, StoreKind::Postgres).await.unwrap();
    assert_eq!(store.count_users().await.unwrap(), 1);
    assert!(
        store
            .user_by_identity("rogue", "newcomer")
            .await
            .unwrap()
            .is_none()
    );
    let done = login_through_rogue(gw.http.port()).await;
    assert_eq!(done.status, 302, "{}", done.body);
    assert_eq!(store.count_users().await.unwrap(), 2);
}
