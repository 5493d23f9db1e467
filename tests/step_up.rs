//! Step-up per route (SPEC 3), end to end against `oidc-provider`: a route
//! with `step_up` sends a browser whose sign-in is too weak or too old
//! through a new login at the same IdP (with `acr_values` and `max_age`)
//! and back; the check is on the verified ID token, so a login URL
//! stripped of `acr_values` does not pass; API clients get RFC 9470's 401;
//! `acr` and `auth_time` reach the app in the assertion.

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::idp::{Browser, Idp, Page, client, main_idp_yaml};
use support::*;

fn template(idp_port: u16, upstream: std::net::SocketAddr) -> String {
    let head = localhost_preamble("sqlite://{dir}/portcullis.db");
    let main = main_idp_yaml(idp_port, "'Member'");
    format!(
        r#"{head}identity_providers:
{main}organizations:
  - id: lab
    roles: [{{name: Member}}]
routes:
  - name: secure
    hosts: ["localhost"]
    path_prefix: /secure
    upstreams: ["{upstream}"]
    org: lab
    step_up:
      acr_values: [mfa]
  - name: fresh
    hosts: ["localhost"]
    path_prefix: /fresh
    upstreams: ["{upstream}"]
    org: lab
    step_up:
      max_age: 4s
  - name: app
    hosts: ["localhost"]
    upstreams: ["{upstream}"]
    org: lab
"#
    )
}

struct World {
    gw: Gateway,
    _idp: Idp,
    browser: Browser,
}

async fn world() -> World {
    let upstream = start_echo("app").await;
    let socket = listener();
    let idp_port = socket.local_addr().unwrap().port();
    let gw = Gateway::start(&template(idp_port, upstream)).await;
    // The IdP puts auth_time in every ID token for this client.
    let mut client = client("portcullis", "main-secret", gw.http.port());
    client["require_auth_time"] = json!(true);
    let idp = Idp::start(
        json!([{
            "clients": [client],
            "accounts": {"alice": {"email": "alice@example.com", "email_verified": true, "groups": ["lab"]}},
        }]),
        std::slice::from_ref(&socket),
    );
    let w = World {
        gw,
        _idp: idp,
        browser: Browser::new(),
    };
    // A plain sign-in (acr `pwd`) on the ordinary route.
    let page = w.get("/home").await;
    let page = w.follow_to_idp(page).await;
    let page = w
        .browser
        .sign_in_at_idp_with(page, "alice", "any", &mut Vec::new())
        .await;
    assert_eq!(page.status, 200, "{}", page.body);
    w
}

impl World {
    fn url(&self, path: &str) -> String {
        format!("http://localhost:{}{path}", self.gw.http.port())
    }

    async fn get(&self, path: &str) -> Page {
        self.browser.get(&self.url(path)).await
    }

    /// From the gateway's redirect to its login, on to the IdP's
    /// authorization endpoint: that URL's page.
    async fn follow_to_idp(&self, page: Page) -> Page {
        assert_eq!(page.status, 302, "{}", page.body);
        let login = support::idp::join(&page.url, &page.location().unwrap());
        let to_idp = self.browser.get(&login).await;
        assert_eq!(to_idp.status, 302, "{}", to_idp.body);
        to_idp
    }
}

fn query(url: &str, name: &str) -> Option<String> {
    url::Url::parse(url)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

fn assertion_claims(page: &Page) -> Value {
    let jwt = page.json()["headers"]["x-auth-assertion"][0]
        .as_str()
        .expect("an assertion")
        .to_string();
    portcullis::oidc::verify::unverified_payload(&jwt).unwrap()
}

#[tokio::test]
async fn a_weak_sign_in_is_sent_through_a_stronger_one_and_back() {
    let w = world().await;
    let first = w.get("/secure/report?x=1").await;
    // Back to the login at the same IdP, for the page asked for.
    let login = first.location().unwrap();
    assert!(login.contains("idp=main"), "{login}");
    let to_idp = w.follow_to_idp(first).await;
    let authorize = to_idp.location().unwrap();
    assert_eq!(query(&authorize, "acr_values").as_deref(), Some("mfa"));
    // The IdP asks for the stronger sign-in; done, the browser is back.
    let page = w
        .browser
        .sign_in_at_idp_with(to_idp, "alice", "mfa", &mut Vec::new())
        .await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.url.ends_with("/secure/report?x=1"), "{}", page.url);
    let claims = assertion_claims(&page);
    assert_eq!(claims["acr"], "mfa", "{claims}");
    assert!(claims["auth_time"].as_i64().is_some(), "{claims}");
    // The ordinary route still passes with the new session.
    assert_eq!(w.get("/home").await.status, 200);
}

#[tokio::test]
async fn a_login_url_stripped_of_acr_values_does_not_pass() {
    let w = world().await;
    let to_idp = w.follow_to_idp(w.get("/secure/x").await).await;
    let mut authorize = url::Url::parse(&to_idp.location().unwrap()).unwrap();
    let kept: Vec<(String, String)> = authorize
        .query_pairs()
        .filter(|(k, _)| k != "acr_values")
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    authorize.query_pairs_mut().clear().extend_pairs(kept);
    // The IdP, not asked for more, answers with the sign-in it has (pwd).
    let at_idp = w.browser.get(authorize.as_str()).await;
    let page = w
        .browser
        .sign_in_at_idp_with(at_idp, "alice", "any", &mut Vec::new())
        .await;
    assert_eq!(page.status, 403, "{}", page.body);
    assert!(page.body.contains("stronger"), "{}", page.body);
    // And the route still refuses the session it has.
    assert_eq!(w.get("/secure/x").await.status, 302);
}

#[tokio::test]
async fn api_clients_are_told_what_sign_in_would_do() {
    let w = world().await;
    let r = w
        .browser
        .client()
        .get(w.url("/secure/api"))
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let challenge = r.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        challenge.starts_with("Bearer error=\"insufficient_user_authentication\""),
        "{challenge}"
    );
    assert!(challenge.contains("acr_values=\"mfa\""), "{challenge}");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["code"], "insufficient_user_authentication");
}

#[tokio::test]
async fn a_sign_in_older_than_max_age_is_renewed() {
    let w = world().await;
    // Fresh enough at first…
    assert_eq!(w.get("/fresh/a").await.status, 200);
    // …until max_age (4 s) has passed since the sign-in.
    let stale = eventually(
        "the sign-in grows older than max_age",
        Duration::from_secs(15),
        || async {
            let page = w.get("/fresh/a").await;
            (page.status == 302).then_some(page)
        },
    )
    .await;
    let to_idp = w.follow_to_idp(stale).await;
    assert_eq!(
        query(&to_idp.location().unwrap(), "max_age").as_deref(),
        Some("4")
    );
    let page = w
        .browser
        .sign_in_at_idp_with(to_idp, "alice", "any", &mut Vec::new())
        .await;
    assert_eq!(
        page.status,
        200,
        "{} {:?} {}",
        page.url,
        page.location(),
        page.body
    );
    assert!(page.url.ends_with("/fresh/a"), "{}", page.url);
}
