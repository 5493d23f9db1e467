//! Advisory classes: loosely keyed identities, bearer tokens checked more
//! loosely than ID tokens, replayed back-channel logout tokens, and claims
//! of unusual types, against a rogue IdP on loopback that signs whatever
//! the test asks for.

use portcullis::config::StoreKind;
use portcullis::session::cookie::SessionId;
use portcullis::store::Store;
use serde_json::{Value, json};

use crate::support::idp::{Browser, Page};
use crate::support::rogue::{CLIENT_ID, Rogue, login_through, post_logout_token};
use crate::support::*;

struct Idp {
    gw: Gateway,
    rogue: Rogue,
}

fn template(issuer: &str, identifier: &str, store: &str) -> String {
    let upstream_marker = "{upstream}";
    let head = localhost_preamble(store);
    format!(
        r#"{head}identity_providers:
  - id: rogue
    issuer: "{issuer}"
    client_id: {CLIENT_ID}
    client_secret: s3cret
    identifier: "{identifier}"
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
    upstreams: ["{upstream_marker}"]
    org: home-lab
  - name: api
    hosts: ["localhost"]
    path_prefix: "/api"
    upstreams: ["{upstream_marker}"]
    org: home-lab
    accept_bearer: true
"#
    )
}

async fn start(identifier: &str) -> Idp {
    let rogue = Rogue::start().await;
    let upstream = start_echo("app").await;
    let t = template(&rogue.issuer(), identifier, "sqlite://{dir}/portcullis.db")
        .replace("{upstream}", &upstream.to_string());
    Idp {
        gw: Gateway::start(&t).await,
        rogue,
    }
}

impl Idp {
    fn url(&self, path: &str) -> String {
        format!("http://localhost:{}{}", self.gw.http.port(), path)
    }

    async fn store(&self) -> Store {
        let url = format!("sqlite://{}/portcullis.db", self.gw.dir.path().display());
        Store::open(&url, StoreKind::Sqlite).await.unwrap()
    }

    /// A login through the rogue IdP with these claims, up to the
    /// gateway's answer to the callback; the login start's cookies too.
    async fn login(&self, b: &Browser, claims: Value, rd: &str) -> (Page, Page) {
        self.rogue.set_claims(claims);
        login_through(b, &self.url(""), rd).await
    }
}

fn session_of(p: &Page) -> Option<SessionId> {
    p.set_cookies().iter().find_map(|c| {
        let v = c.strip_prefix("_portcullis=")?.split(';').next()?;
        SessionId::decode(v)
    })
}

/// Amazon Cognito sends `email_verified` as the string "true"; other IdPs
/// send `address` as a string or `groups` as one string. None of it may
/// fail a login, and only the JSON boolean counts as verified.
#[tokio::test]
async fn claims_of_unusual_types_never_fail_a_login() {
    let idp = start("sub").await;
    let b = Browser::new();
    let (_, answer) = idp
        .login(
            &b,
            json!({"sub": "cog", "email": "c@company.com", "email_verified": "true", "address": "1 Main St", "groups": "home-lab", "updated_at": "2026-01-01"}),
            "/",
        )
        .await;
    assert_eq!(answer.status, 302, "{}", answer.body);
    assert!(session_of(&answer).is_some(), "no session");
    let page = b.get(&idp.url("/_portcullis/userinfo")).await;
    assert_eq!(page.json()["subject"], "cog");
    let seen = b.get(&idp.url("/x")).await.json();
    assert!(
        seen["headers"].get("x-auth-email").is_none(),
        "a string \"true\" verified the email"
    );
}

/// With `identifier: email`, a second IdP account with an unverified copy
/// of someone's address must not sign in as them; back-channel logout,
/// which names the IdP's `sub`, still ends the session.
#[tokio::test]
async fn an_email_identifier_counts_only_while_verified() {
    let idp = start("email").await;
    let verified = json!({"sub": "s-1", "email": "ann@company.com", "email_verified": true, "groups": ["home-lab"]});
    let b = Browser::new();
    let (_, answer) = idp.login(&b, verified, "/").await;
    let session = session_of(&answer).expect("the verified login has a session");
    let copy = json!({"sub": "s-2", "email": "ann@company.com", "email_verified": false, "groups": ["home-lab"]});
    let (_, refused) = idp.login(&Browser::new(), copy, "/").await;
    assert_eq!(refused.status, 400, "{}", refused.body);
    assert!(
        session_of(&refused).is_none(),
        "the unverified copy got a session"
    );
    assert_eq!(idp.store().await.count_users().await.unwrap(), 1);

    let token = idp.rogue.sign(
        &idp.rogue
            .logout_claims(json!({"sub": "s-1", "jti": "bc-1"})),
    );
    let status = post_logout_token(idp.gw.http.port(), token).await;
    assert_eq!(status, 200);
    assert!(
        idp.store()
            .await
            .session(&session.hash())
            .await
            .unwrap()
            .is_none(),
        "back-channel logout by sub ended nothing"
    );
}

#[tokio::test]
async fn bearer_tokens_are_checked_as_strictly_as_id_tokens() {
    let idp = start("sub").await;
    let b = Browser::new();
    let (_, answer) = idp
        .login(&b, json!({"sub": "bob", "email": "bob@company.com", "email_verified": true, "groups": ["home-lab"]}), "/")
        .await;
    let session = session_of(&answer).unwrap();
    let api = |token: String| {
        let url = idp.url("/api/things");
        async move {
            reqwest::Client::new()
                .get(url)
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    let now = portcullis::store::now();
    let event = json!({"http://schemas.openid.net/event/backchannel-logout": {}});
    assert_eq!(
        api(idp.rogue.sign(&idp.rogue.claims(json!({"sub": "bob"})))).await,
        200,
        "a good token"
    );
    let refused = [
        (
            "a logout token with exp",
            idp.rogue
                .claims(json!({"sub": "bob", "jti": "x", "events": event})),
        ),
        (
            "not valid before an hour from now",
            idp.rogue.claims(json!({"sub": "bob", "nbf": now + 3600})),
        ),
        (
            "the issuer with a trailing slash",
            idp.rogue
                .claims(json!({"sub": "bob", "iss": format!("{}/", idp.rogue.issuer())})),
        ),
        (
            "the issuer in another case",
            idp.rogue
                .claims(json!({"sub": "bob", "iss": idp.rogue.issuer().to_uppercase()})),
        ),
    ];
    for (what, claims) in refused {
        assert_eq!(api(idp.rogue.sign(&claims)).await, 401, "{what}");
    }
    // A membership removed through the API reaches a cached bearer token
    // at once on this replica.
    let good = idp.rogue.sign(&idp.rogue.claims(json!({"sub": "carl"})));
    let (_, carl) = idp
        .login(
            &Browser::new(),
            json!({"sub": "carl", "groups": ["home-lab"]}),
            "/",
        )
        .await;
    assert!(session_of(&carl).is_some());
    assert_eq!(api(good.clone()).await, 200, "carl's token, now cached");
    let carl_id = idp
        .store()
        .await
        .user_by_identity("rogue", "carl")
        .await
        .unwrap()
        .unwrap()
        .id;
    let removed = reqwest::Client::new()
        .delete(format!(
            "http://{}/api/organizations/home-lab/users/{carl_id}",
            idp.gw.admin
        ))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(removed, 204);
    assert_eq!(
        api(good).await,
        403,
        "the cached bearer token kept the removed membership"
    );

    // The login's own ID token works as a bearer until a logout ends it.
    let id_token = idp
        .store()
        .await
        .session(&session.hash())
        .await
        .unwrap()
        .unwrap()
        .id_token
        .unwrap();
    assert_eq!(api(id_token.clone()).await, 200);
    let out = b.get(&idp.url("/_portcullis/logout")).await;
    assert_eq!(out.status, 302);
    assert_eq!(api(id_token).await, 401, "the ID token outlived its logout");
}

#[tokio::test]
async fn back_channel_logout_tokens_need_a_jti_and_are_used_once_across_replicas() {
    let idp = start("sub").await;
    let db = format!("sqlite://{}/portcullis.db", idp.gw.dir.path().display());
    let upstream = start_echo("app").await;
    let second = Gateway::start(
        &template(&idp.rogue.issuer(), "sub", &db).replace("{upstream}", &upstream.to_string()),
    )
    .await;
    let post = |gw: &Gateway, token: String| post_logout_token(gw.http.port(), token);
    let token = |jti: Option<&str>| {
        let jti = jti.map(|j| json!({"jti": j})).unwrap_or(json!({}));
        let mut c = idp.rogue.logout_claims(json!({"sub": "bob"}));
        for (k, v) in jti.as_object().unwrap() {
            c[k] = v.clone();
        }
        idp.rogue.sign(&c)
    };
    assert_eq!(post(&idp.gw, token(None)).await, 400, "no jti");
    let once = token(Some("once-1"));
    assert_eq!(post(&idp.gw, once.clone()).await, 200);
    assert_eq!(
        post(&idp.gw, once.clone()).await,
        400,
        "replayed on the same replica"
    );
    assert_eq!(
        post(&second, once).await,
        400,
        "replayed on another replica"
    );
}

/// A deep link of up to 4 KB survives the login; no cookie set on the way
/// is over 4,096 bytes.
#[tokio::test]
async fn a_deep_link_of_4_kb_returns_to_itself() {
    let idp = start("sub").await;
    let rd = idp.url(&format!("/deep/{}?q=1", "a".repeat(4096 - 60)));
    assert!(rd.len() <= 4096 && rd.len() > 4000);
    let b = Browser::new();
    let claims = json!({"sub": "dee", "groups": ["home-lab"]});
    let (start, answer) = idp.login(&b, claims.clone(), &rd).await;
    for c in start.set_cookies() {
        assert!(c.len() <= 4096, "a cookie of {} bytes", c.len());
    }
    assert!(
        start.set_cookies().len() >= 2,
        "the login state was not split"
    );
    assert_eq!(answer.status, 302, "{}", answer.body);
    assert_eq!(answer.location().as_deref(), Some(rd.as_str()));
    // Longer: back to the route's first page.
    let longer = idp.url(&format!("/deep/{}", "b".repeat(5000)));
    let (_, answer) = idp.login(&Browser::new(), claims, &longer).await;
    assert_eq!(answer.location(), Some(idp.url("/")));
}
