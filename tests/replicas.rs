//! Replicas on one PostgreSQL database tell each other what changed
//! (SPEC 8): with `store.cache_ttl: 60s`, a logout or a role change on one
//! replica reaches the other within a second. When the notification
//! connection is lost, the replica drops its caches and reconnects.

mod support;

use std::time::Duration;

use portcullis::config::StoreKind;
use portcullis::store::Store;
use serde_json::json;
use support::*;

fn template(upstream: std::net::SocketAddr, store_url: &str) -> String {
    lab_config(
        &format!(
            r#"  - name: app
    hosts: ["app.test"]
    upstreams: ["{upstream}"]
    org: lab
  - name: admin
    hosts: ["app.test"]
    path_prefix: /admin
    upstreams: ["{upstream}"]
    org: lab
    allow_roles: [Admin]
"#
        ),
        store_url,
        "60s",
    )
}

struct World {
    a: Gateway,
    b: Gateway,
    store: Store,
    db: String,
    user: String,
}

async fn world() -> World {
    let upstream = start_echo("app").await;
    let db = fresh_postgres_database().await;
    let a = Gateway::start(&template(upstream, &db)).await;
    let b = Gateway::start(&template(upstream, &db)).await;
    let store = Store::open(&db, StoreKind::Postgres).await.unwrap();
    let user = manual_user(&store, "lab", &["Admin", "Member"]).await;
    let w = World {
        a,
        b,
        store,
        db,
        user,
    };
    w.listeners_up(2).await;
    w
}

impl World {
    async fn session(&self) -> String {
        session_cookie(
            &self.store,
            &self.user,
            "authentik",
            "alice-sub",
            json!({"sub": "alice-sub"}),
            3600,
        )
        .await
        .0
    }

    /// The notification connections of this database's replicas.
    async fn listeners(&self) -> i64 {
        use sqlx::{Connection, Row};
        let mut conn = sqlx::PgConnection::connect(&self.db).await.unwrap();
        let name = url::Url::parse(&self.db).unwrap().path()[1..].to_string();
        sqlx::query(
            "SELECT COUNT(*) FROM pg_stat_activity WHERE application_name = 'portcullis-notify' AND datname = $1",
        )
        .bind(name)
        .fetch_one(&mut conn)
        .await
        .unwrap()
        .get(0)
    }

    async fn listeners_up(&self, n: i64) {
        eventually("every replica listens", Duration::from_secs(20), || async {
            (self.listeners().await == n).then_some(())
        })
        .await;
    }

    /// Ends the notification connections, as a database restart or a
    /// network cut would.
    async fn cut_listeners(&self) {
        use sqlx::Connection;
        let mut conn = sqlx::PgConnection::connect(&self.db).await.unwrap();
        let name = url::Url::parse(&self.db).unwrap().path()[1..].to_string();
        sqlx::query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'portcullis-notify' AND datname = $1",
        )
        .bind(name)
        .execute(&mut conn)
        .await
        .unwrap();
    }
}

/// Requests `path` on `gw` until its status is `want`, at most `within`.
async fn status_becomes(gw: &Gateway, path: &str, cookie: &str, want: u16, within: Duration) {
    let what = format!("{path} answers {want}");
    eventually(&what, within, || async {
        (get(gw.http, "app.test", path, &[cookie]).await.status == want).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_logout_on_one_replica_is_refused_on_the_other_within_a_second() {
    let w = world().await;
    let cookie = w.session().await;
    // Replica B has the session in its cache (for up to 60 s).
    assert_eq!(get(w.b.http, "app.test", "/", &[&cookie]).await.status, 200);
    let out = get(w.a.http, "app.test", "/_portcullis/logout", &[&cookie]).await;
    assert_eq!(out.status, 302);
    status_becomes(&w.b, "/", &cookie, 401, Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_change_on_one_replica_applies_on_the_other_within_a_second() {
    let w = world().await;
    let cookie = w.session().await;
    assert_eq!(
        get(w.b.http, "app.test", "/admin/x", &[&cookie])
            .await
            .status,
        200
    );
    let r =
        w.a.api(
            reqwest::Method::PUT,
            &format!("/api/organizations/lab/users/{}", w.user),
            Some(json!({"roles": ["Member"]})),
        )
        .await;
    assert!((200..300).contains(&r.status), "{}", r.status);
    status_becomes(&w.b, "/admin/x", &cookie, 403, Duration::from_secs(1)).await;
    assert_eq!(get(w.b.http, "app.test", "/", &[&cookie]).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_notification_connection_drops_the_cache_and_reconnects() {
    let w = world().await;
    let cookie = w.session().await;
    assert_eq!(get(w.b.http, "app.test", "/", &[&cookie]).await.status, 200);
    w.cut_listeners().await;
    // Whatever was said while the connection was down, the replica reads
    // the store again rather than trust its cache for the full 60 s.
    let out = get(w.a.http, "app.test", "/_portcullis/logout", &[&cookie]).await;
    assert_eq!(out.status, 302);
    status_becomes(&w.b, "/", &cookie, 401, Duration::from_secs(10)).await;
    // Both listen again, and notices flow as before.
    w.listeners_up(2).await;
    let cookie = w.session().await;
    assert_eq!(get(w.b.http, "app.test", "/", &[&cookie]).await.status, 200);
    let out = get(w.a.http, "app.test", "/_portcullis/logout", &[&cookie]).await;
    assert_eq!(out.status, 302);
    status_becomes(&w.b, "/", &cookie, 401, Duration::from_secs(1)).await;
    w.b.log_with("store notifications interrupted").await;
}
