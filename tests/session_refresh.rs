//! Sessions kept true to the IdP (SPEC 4a), end to end against
//! `oidc-provider` (tests/idp) with real refresh tokens: a change at the
//! IdP reaches the session within one refresh interval; a revoked grant
//! or a removed account ends it; an IdP that is down leaves it as it is;
//! a session without a refresh token is never refreshed.

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::idp::{Browser, Idp, Page, client, main_idp_yaml};
use support::*;

fn template(idp_port: u16, upstream: std::net::SocketAddr) -> String {
    let head = localhost_preamble("sqlite://{dir}/portcullis.db")
        .replace("  cache_ttl: 30s\n", "  cache_ttl: 2s\n")
        .replace(
            &format!("  secret: \"{SECRET}\"\n"),
            &format!("  secret: \"{SECRET}\"\n  refresh_interval: 1s\n"),
        );
    let main = main_idp_yaml(idp_port, "contains(groups, 'admin') && 'Admin' || 'Member'");
    format!(
        r#"{head}identity_providers:
{main}organizations:
  - id: lab
    roles: [{{name: Admin}}, {{name: Member}}]
routes:
  - name: admin
    hosts: ["localhost"]
    path_prefix: /admin
    upstreams: ["{upstream}"]
    org: lab
    allow_roles: [Admin]
  - name: app
    hosts: ["localhost"]
    upstreams: ["{upstream}"]
    org: lab
"#
    )
}

fn alice(groups: &[&str]) -> Value {
    json!({"email": "alice@example.com", "email_verified": true, "name": "Alice", "groups": groups})
}

struct World {
    gw: Gateway,
    idp: Idp,
    idp_port: u16,
    /// The IdP's listening socket, held so that a stopped IdP can be made
    /// to refuse connections (by closing it) rather than queue them.
    idp_socket: Option<std::net::TcpListener>,
    browser: Browser,
}

async fn world(refresh_tokens: bool) -> World {
    let upstream = start_echo("app").await;
    let idp_socket = listener();
    let idp_port = idp_socket.local_addr().unwrap().port();
    let gw = Gateway::start(&template(idp_port, upstream)).await;
    let mut client = client("portcullis", "main-secret", gw.http.port());
    if !refresh_tokens {
        client["grant_types"] = json!(["authorization_code"]);
    }
    let idp = Idp::start(
        json!([{
            "clients": [client],
            "accounts": {"alice": alice(&["lab", "admin"])},
        }]),
        std::slice::from_ref(&idp_socket),
    );
    let w = World {
        gw,
        idp,
        idp_port,
        idp_socket: Some(idp_socket),
        browser: Browser::new(),
    };
    let page = w.get("/admin/panel").await;
    assert_eq!(page.status, 302, "{}", page.body);
    let mut trail = Vec::new();
    let page = w.browser.follow(page, &mut trail).await;
    let page = w.browser.sign_in_at_idp(page, "alice", &mut trail).await;
    assert_eq!(page.status, 200, "signed in as an Admin: {}", page.body);
    w
}

impl World {
    async fn get(&self, path: &str) -> Page {
        self.browser
            .get(&format!("http://localhost:{}{path}", self.gw.http.port()))
            .await
    }

    async fn refreshes(&self, outcome: &str) -> f64 {
        let m = self.gw.metrics().await;
        metric_value(
            &m,
            &format!("portcullis_session_refresh_total{{outcome=\"{outcome}\"}}"),
        )
        .unwrap_or(0.0)
    }

    /// Requests `path` until its status is `want` (each request may start
    /// a refresh in the background); the last page.
    async fn until_status(&self, path: &str, want: u16, what: &str) -> Page {
        eventually(what, Duration::from_secs(20), || async {
            let page = self.get(path).await;
            (page.status == want).then_some(page)
        })
        .await
    }

    async fn audit(&self) -> Vec<Value> {
        let r = self
            .gw
            .api(reqwest::Method::GET, "/api/audit-events", None)
            .await;
        assert_eq!(r.status, 200);
        r.body.as_array().unwrap().clone()
    }
}

/// Sessions in the store, and how many keep a refresh token.
async fn stored_refresh_tokens(gw: &Gateway) -> (i64, i64) {
    use sqlx::{Connection, Row};
    let url = format!("sqlite://{}/portcullis.db", gw.dir.path().display());
    let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
    let row = sqlx::query("SELECT COUNT(*), COUNT(refresh_token) FROM sessions")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

/// The refresh token is kept sealed, never as the IdP issued it.
#[tokio::test]
async fn the_refresh_token_is_kept_sealed() {
    let w = world(true).await;
    assert_eq!(stored_refresh_tokens(&w.gw).await, (1, 1));
    use sqlx::{Connection, Row};
    let url = format!("sqlite://{}/portcullis.db", w.gw.dir.path().display());
    let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
    let sealed: String = sqlx::query("SELECT refresh_token FROM sessions")
        .fetch_one(&mut conn)
        .await
        .unwrap()
        .get(0);
    // What the database holds is worth nothing at the IdP: redeemed as a
    // refresh token, it is refused.
    let r = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{}/token", w.idp_port))
        .basic_auth("portcullis", Some("main-secret"))
        .form(&[("grant_type", "refresh_token"), ("refresh_token", &sealed)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "invalid_grant", "{body}");
}

#[tokio::test]
async fn a_group_removed_at_the_idp_removes_the_role_within_one_interval() {
    let w = world(true).await;
    w.idp
        .set_account(w.idp_port, "alice", alice(&["lab"]))
        .await;
    // The session still passes until its refresh has run; then the
    // Admin role is gone and the Member route still open.
    let denied = w
        .until_status("/admin/panel", 403, "the Admin role goes with the group")
        .await;
    assert!(denied.body.contains("Admin"), "{}", denied.body);
    assert_eq!(w.get("/home").await.status, 200);
    assert!(w.refreshes("refreshed").await >= 1.0);
    // Audited as the refresh's doing, like a login's changes.
    let audit = w.audit().await;
    assert!(
        audit.iter().any(|e| e["actor"] == "refresh:main"
            && e["action"]
                .as_str()
                .unwrap_or("")
                .starts_with("membership.")),
        "{audit:?}"
    );
    // And back: the group given again at the IdP, the role returns.
    w.idp
        .set_account(w.idp_port, "alice", alice(&["lab", "admin"]))
        .await;
    w.until_status("/admin/panel", 200, "the Admin role comes back")
        .await;
}

#[tokio::test]
async fn no_membership_left_ends_the_session() {
    let w = world(true).await;
    w.idp.set_account(w.idp_port, "alice", alice(&[])).await;
    let page = w
        .until_status("/home", 302, "the session ends with the last membership")
        .await;
    assert!(
        page.location().unwrap().contains("/_portcullis/login"),
        "sent to sign in again: {:?}",
        page.location()
    );
    assert!(w.refreshes("no_membership").await >= 1.0);
    let m = w.gw.metrics().await;
    assert_eq!(
        metric_value(
            &m,
            "portcullis_sessions_ended_total{reason=\"no_membership\"}"
        ),
        Some(1.0),
        "{m}"
    );
}

#[tokio::test]
async fn an_account_removed_at_the_idp_ends_the_session() {
    let w = world(true).await;
    w.idp.remove_account(w.idp_port, "alice").await;
    w.until_status(
        "/home",
        302,
        "the session ends when the IdP refuses the grant",
    )
    .await;
    assert!(w.refreshes("revoked").await >= 1.0);
}

#[tokio::test]
async fn a_revoked_grant_ends_the_session() {
    let w = world(true).await;
    w.idp.revoke_grants(w.idp_port, "alice").await;
    w.until_status("/home", 302, "the session ends when its grant is revoked")
        .await;
    assert!(w.refreshes("revoked").await >= 1.0);
    // Its API form: a JSON client is told to authenticate.
    let r = reqwest::Client::new()
        .get(format!("http://localhost:{}/home", w.gw.http.port()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

#[tokio::test]
async fn an_idp_that_is_down_leaves_the_session_as_it_is() {
    let mut w = world(true).await;
    w.idp.stop();
    drop(w.idp_socket.take());
    // Refreshes are tried and fail to reach the IdP; every request passes
    // with the roles the session had.
    eventually(
        "a refresh finds the IdP unreachable",
        Duration::from_secs(20),
        || async {
            let page = w.get("/admin/panel").await;
            assert_eq!(page.status, 200, "kept while the IdP is down");
            (w.refreshes("unreachable").await >= 1.0).then_some(())
        },
    )
    .await;
    assert_eq!(w.get("/admin/panel").await.status, 200);
    assert_eq!(w.refreshes("revoked").await, 0.0);
}

#[tokio::test]
async fn a_session_without_a_refresh_token_is_never_refreshed() {
    // A client the IdP gives no refresh token.
    let w = world(false).await;
    w.idp
        .set_account(w.idp_port, "alice", alice(&["lab"]))
        .await;
    let (sessions, with_token) = stored_refresh_tokens(&w.gw).await;
    assert_eq!((sessions, with_token), (1, 0), "no refresh token kept");
    // Past the interval and the cache lifetime (1 s, 2 s), the session
    // keeps what the login gave it, and no refresh is tried.
    let started = std::time::Instant::now();
    eventually(
        "two cache lifetimes of requests",
        Duration::from_secs(20),
        || async {
            assert_eq!(w.get("/admin/panel").await.status, 200);
            (started.elapsed() > Duration::from_secs(4)).then_some(())
        },
    )
    .await;
    let m = w.gw.metrics().await;
    assert!(!m.contains("portcullis_session_refresh_total{"), "{m}");
}
