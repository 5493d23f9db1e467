//! Route authorization and identity headers through the real gateway: a
//! session is written into the gateway's own SQLite store (as a login
//! would), and requests carry its cookie.

mod support;

use std::time::Duration;

use portcullis::config::StoreKind;
use portcullis::provision::{Membership, MembershipSource};
use portcullis::session::cookie::SessionId;
use portcullis::store::{NewUser, Store};
use serde_json::{Value, json};
use support::*;

fn template(upstream: std::net::SocketAddr) -> String {
    let mut t = config_with(&format!(
        r#"identity_providers:
  - id: authentik
    issuer: "https://sso.example.com/"
    client_id: portcullis
organizations:
  - id: home-lab
    roles: [{{name: Admin}}, {{name: Member}}, {{name: Viewer}}]
  - id: lab-two
    roles: [{{name: Member}}]
routes:
  - name: members
    hosts: ["app.test"]
    upstreams: ["{upstream}"]
    org: home-lab
    claim_headers:
      X-Department: "department"
      X-Groups: "groups"
      X-Evil: "evil"
  - name: admins
    hosts: ["app.test"]
    path_prefix: "/admin"
    upstreams: ["{upstream}"]
    org: home-lab
    allow_roles: [Admin]
  - name: lab-two
    hosts: ["two.test"]
    upstreams: ["{upstream}"]
    org: lab-two
  - name: grafana
    hosts: ["grafana.test"]
    upstreams: ["{upstream}"]
    allow_if: "contains(groups, 'grafana')"
  - name: cookies
    hosts: ["cookies.test"]
    upstreams: ["{upstream}"]
    pass_cookie: true
"#
    ));
    t = t.replace("store:\n", "store:\n  cache_ttl: 1s\n");
    t
}

struct World {
    gw: Gateway,
    store: Store,
    user: String,
}

async fn world() -> World {
    world_with(|t| t).await
}

async fn world_with(edit: impl Fn(String) -> String) -> World {
    let upstream = start_echo("app").await;
    let gw = Gateway::start(&edit(template(upstream))).await;
    let url = format!("sqlite://{}/portcullis.db", gw.dir.path().display());
    let store = Store::open(&url, StoreKind::Sqlite).await.unwrap();
    let user = store
        .create_user(
            &NewUser {
                idp: "authentik".into(),
                subject: Some("alice-sub".into()),
                email: Some("alice@example.com".into()),
                name: Some("Alice Example".into()),
                memberships: vec![Membership {
                    org: "home-lab".into(),
                    roles: vec!["Viewer".into(), "Member".into()],
                    source: MembershipSource::Manual,
                }],
            },
            "token:0",
        )
        .await
        .unwrap();
    World {
        gw,
        store,
        user: user.id,
    }
}

impl World {
    /// A session for the user, as the login would create it; the cookie
    /// header line that carries it.
    async fn session(&self, claims: Value, expires_in: i64) -> (String, String) {
        session_cookie(
            &self.store,
            &self.user,
            "authentik",
            "alice-sub",
            claims,
            expires_in,
        )
        .await
    }

    async fn get(&self, host: &str, path: &str, headers: &[&str]) -> RawResponse {
        get(self.gw.http, host, path, headers).await
    }
}

/// The headers the upstream received, each exactly once, as name -> value.
fn upstream_headers(r: &RawResponse) -> Value {
    let body = r.json();
    let mut out = serde_json::Map::new();
    for (name, values) in body["headers"].as_object().expect("echo headers") {
        let values = values.as_array().unwrap();
        assert_eq!(values.len(), 1, "{name} arrived {} times", values.len());
        out.insert(name.clone(), values[0].clone());
    }
    Value::Object(out)
}

fn claims() -> Value {
    json!({"sub": "alice-sub", "email_verified": true, "groups": ["home-lab", "dev"], "department": "R&D", "evil": "a\r\nX-Injected: 1"})
}

#[tokio::test]
async fn a_member_passes_with_identity_headers_and_spoofed_ones_are_replaced() {
    let w = world().await;
    let (cookie, _) = w.session(claims(), 3600).await;
    let r = w
        .get(
            "app.test",
            "/page",
            &[
                &cookie,
                "X-Auth-User-Id: someone-else",
                "X_Auth_Roles: Admin",
                "x-AUTH-email: boss@example.com",
                "X-Auth-Anything: x",
            ],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let h = &upstream_headers(&r);
    assert_eq!(h["x-auth-user-id"], json!(w.user));
    assert_eq!(h["x-auth-subject"], "alice-sub");
    assert_eq!(h["x-auth-idp"], "authentik");
    assert_eq!(h["x-auth-email"], "alice@example.com");
    assert_eq!(h["x-auth-name"], "Alice Example");
    assert_eq!(h["x-auth-org"], "home-lab");
    // Sorted, of the route's organization only.
    assert_eq!(h["x-auth-roles"], "Member,Viewer");
    assert_eq!(h["x-department"], "R&D");
    assert_eq!(h["x-groups"], "home-lab,dev");
    // A claim value with CR/LF is left out, not injected.
    assert!(h.get("x-evil").is_none());
    assert!(h.get("x-injected").is_none());
    assert!(h.get("x-auth-anything").is_none());
    assert!(h.get("x_auth_roles").is_none());
    // The session cookie does not reach the upstream.
    assert!(h.get("cookie").is_none());
}

#[tokio::test]
async fn the_assertion_verifies_against_the_published_keys() {
    let w = world().await;
    let (cookie, _) = w.session(claims(), 3600).await;
    let r = w.get("App.Test:8080", "/", &[&cookie]).await;
    assert_eq!(r.status, 200);
    let jwt = upstream_headers(&r)["x-auth-assertion"]
        .as_str()
        .unwrap()
        .to_string();

    let jwks = w.get("app.test", "/_portcullis/jwks.json", &[]).await;
    assert_eq!(jwks.status, 200);
    let jwks: jsonwebtoken::jwk::JwkSet = serde_json::from_str(&jwks.body).unwrap();
    let header = jsonwebtoken::decode_header(&jwt).unwrap();
    assert_eq!(header.alg, jsonwebtoken::Algorithm::ES256);
    let kid = header.kid.expect("a kid");
    let jwk = jwks.find(&kid).expect("the kid is published");
    let key = jsonwebtoken::DecodingKey::from_jwk(jwk).unwrap();
    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
    v.set_audience(&["app.test"]);
    v.set_issuer(&[format!("http://auth.test:{}", w.gw.http.port())]);
    v.set_required_spec_claims(&["exp", "iat", "iss", "aud", "sub"]);
    let data = jsonwebtoken::decode::<Value>(&jwt, &key, &v).unwrap();
    let c = data.claims;
    assert_eq!(c["sub"], json!(w.user));
    assert_eq!(c["email"], "alice@example.com");
    assert_eq!(c["name"], "Alice Example");
    assert_eq!(c["idp"], "authentik");
    assert_eq!(c["org"], "home-lab");
    assert_eq!(c["roles"], json!(["Member", "Viewer"]));
    let lifetime = c["exp"].as_i64().unwrap() - c["iat"].as_i64().unwrap();
    assert!(lifetime > 0 && lifetime <= 300, "{lifetime}");

    // The wrong audience does not verify.
    let mut other = v.clone();
    other.set_audience(&["evil.test"]);
    assert!(jsonwebtoken::decode::<Value>(&jwt, &key, &other).is_err());
    // A tampered payload does not verify.
    let mut parts: Vec<String> = jwt.split('.').map(str::to_string).collect();
    {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let mut payload: Value = serde_json::from_slice(&b64.decode(&parts[1]).unwrap()).unwrap();
        payload["roles"] = json!(["Admin"]);
        parts[1] = b64.encode(payload.to_string());
    }
    assert!(jsonwebtoken::decode::<Value>(&parts.join("."), &key, &v).is_err());

    // The key in the store is sealed: reading the database is not enough
    // to sign assertions.
    let stored = w
        .store
        .signing_key(
            portcullis::assertion::KEY_NAME,
            || -> portcullis::store::StoredKey { panic!("the gateway stored its key at start") },
        )
        .await
        .unwrap();
    assert_eq!(stored.kid, kid);
    assert!(!stored.private_key.contains("PRIVATE KEY"));

    // Reused while valid, not signed per request.
    let again = w.get("app.test", "/", &[&cookie]).await;
    assert_eq!(upstream_headers(&again)["x-auth-assertion"], json!(jwt));
}

#[tokio::test]
async fn failed_requirements_get_403_naming_them() {
    let w = world().await;
    let (cookie, _) = w.session(claims(), 3600).await;

    let r = w.get("app.test", "/admin/x", &[&cookie]).await;
    assert_eq!(r.status, 403);
    assert_eq!(r.json()["code"], "role_required");
    assert!(r.json()["message"].as_str().unwrap().contains("Admin"));

    let r = w.get("two.test", "/", &[&cookie]).await;
    assert_eq!(r.status, 403);
    assert_eq!(r.json()["code"], "not_a_member");
    assert!(r.json()["message"].as_str().unwrap().contains("lab-two"));

    let r = w
        .get("grafana.test", "/", &[&cookie, "Accept: text/html"])
        .await;
    assert_eq!(r.status, 403);
    assert!(r.header("content-type").unwrap().starts_with("text/html"));
    assert!(r.body.contains("allow_if"), "{}", r.body);
    assert!(
        r.body.contains("contains(groups, &#x27;grafana&#x27;)")
            || r.body.contains("contains(groups, &#39;grafana&#39;)"),
        "{}",
        r.body
    );

    // The same user with the group in the session's claims passes.
    let (cookie2, _) = w
        .session(json!({"sub": "alice-sub", "groups": ["grafana"]}), 3600)
        .await;
    let r = w.get("grafana.test", "/", &[&cookie2]).await;
    assert_eq!(r.status, 200);
    // No org on the route: no org or roles headers.
    assert!(upstream_headers(&r).get("x-auth-org").is_none());
}

#[tokio::test]
async fn hostile_and_dead_cookies_never_pass() {
    let w = world().await;
    // Malformed: 400, and the cookie is cleared.
    for bad in ["garbage", "%00%0d%0a", "AAAA=", &"A".repeat(44)] {
        let r = w
            .get("app.test", "/", &[&format!("Cookie: _portcullis={bad}")])
            .await;
        assert_eq!(r.status, 400, "{bad}");
        let set = r.header("set-cookie").unwrap();
        assert!(
            set.starts_with("_portcullis=;") && set.contains("Max-Age=0"),
            "{set}"
        );
    }
    // Well formed but unknown: as if there were no session.
    let unknown = SessionId::generate().encode();
    let r = w
        .get(
            "app.test",
            "/",
            &[&format!("Cookie: _portcullis={unknown}")],
        )
        .await;
    assert_eq!(r.status, 401);
    // Expired.
    let (expired, _) = w.session(claims(), -1).await;
    let r = w.get("app.test", "/", &[&expired]).await;
    assert_eq!(r.status, 401);
    // Idle for longer than session.idle_timeout (1h by default).
    let (idle, hash) = w.session(claims(), 3600).await;
    w.store
        .touch_session(&hash, portcullis::store::now() - 2 * 3600)
        .await
        .unwrap();
    let r = w.get("app.test", "/", &[&idle]).await;
    assert_eq!(r.status, 401);
    // A browser is sent to the login instead.
    let r = w
        .get("app.test", "/x?y=1", &[&expired, "Accept: text/html"])
        .await;
    assert_eq!(r.status, 302);
    assert!(
        r.header("location")
            .unwrap()
            .starts_with("/_portcullis/login?rd=")
    );
}

#[tokio::test]
async fn pass_cookie_keeps_it_and_other_cookies_always_pass() {
    let w = world().await;
    let (cookie, _) = w.session(claims(), 3600).await;
    let with_other = format!("{cookie}; theme=dark");
    let r = w.get("cookies.test", "/", &[&with_other]).await;
    assert_eq!(r.status, 200);
    assert!(
        upstream_headers(&r)["cookie"]
            .as_str()
            .unwrap()
            .contains("_portcullis=")
    );
    let r = w.get("app.test", "/", &[&with_other]).await;
    assert_eq!(upstream_headers(&r)["cookie"], "theme=dark");
}

#[tokio::test]
async fn userinfo_logout_and_revocation_elsewhere() {
    let w = world().await;
    let (cookie, hash) = w.session(claims(), 3600).await;
    let r = w.get("app.test", "/_portcullis/userinfo", &[&cookie]).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.json(),
        json!({"id": w.user, "idp": "authentik", "subject": "alice-sub", "email_verified": true,
               "email": "alice@example.com", "name": "Alice Example",
               "memberships": [{"org": "home-lab", "roles": ["Member", "Viewer"]}]})
    );
    let r = w.get("app.test", "/_portcullis/userinfo", &[]).await;
    assert_eq!(r.status, 401);

    // Logout: the cookie is cleared and the session is gone.
    let r = w.get("app.test", "/_portcullis/logout", &[&cookie]).await;
    assert_eq!(r.status, 302);
    assert!(r.header("set-cookie").unwrap().contains("Max-Age=0"));
    assert!(w.store.session(&hash).await.unwrap().is_none());
    let r = w.get("app.test", "/", &[&cookie]).await;
    assert_eq!(r.status, 401);

    // Ended by another replica (straight in the store): honoured once the
    // cache entry (store.cache_ttl = 1s) expires.
    let (cookie, hash) = w.session(claims(), 3600).await;
    assert_eq!(w.get("app.test", "/", &[&cookie]).await.status, 200);
    assert!(w.store.delete_session(&hash).await.unwrap());
    eventually(
        "the revocation is honoured",
        Duration::from_secs(10),
        || async {
            let status = w.get("app.test", "/", &[&cookie]).await.status;
            assert!(status == 200 || status == 401, "{status}");
            (status == 401).then_some(())
        },
    )
    .await;
    let metrics = w.gw.metrics().await;
    assert!(metric_value(&metrics, "portcullis_session_cache_hits_total").unwrap() >= 1.0);
    assert!(metric_value(&metrics, "portcullis_session_cache_misses_total").unwrap() >= 1.0);
}

fn trusting_loopback(t: String) -> String {
    t.replace(
        "  grace_period: 5s\n",
        "  grace_period: 5s\n  trusted_proxies: [\"127.0.0.1/32\"]\n",
    )
}

/// Forward-auth as nginx's `auth_request` calls it: the original request
/// in `X-Forwarded-*`, the browser's cookie passed along.
#[tokio::test]
async fn forward_auth_answers_for_the_original_request() {
    let w = world_with(trusting_loopback).await;
    let (cookie, _) = w.session(claims(), 3600).await;
    let ask = |host: &'static str, uri: &'static str, cookie: Option<String>| {
        let addr = w.gw.http;
        async move {
            let mut h = vec![
                format!("X-Forwarded-Host: {host}"),
                format!("X-Forwarded-Uri: {uri}"),
                "X-Forwarded-Method: GET".to_string(),
                "X-Forwarded-Proto: https".to_string(),
            ];
            h.extend(cookie);
            let refs: Vec<&str> = h.iter().map(String::as_str).collect();
            get(addr, "portcullis.internal", "/_portcullis/auth", &refs).await
        }
    };
    let r = ask("app.test", "/page?x=1", Some(cookie.clone())).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("x-auth-user-id").as_deref(), Some(w.user.as_str()));
    assert_eq!(r.header("x-auth-roles").as_deref(), Some("Member,Viewer"));
    assert!(r.header("x-auth-assertion").is_some());
    // The route's policy applies, on the normalized path.
    let r = ask("app.test", "/admin/x", Some(cookie.clone())).await;
    assert_eq!(r.status, 403);
    assert_eq!(r.json()["code"], "role_required");
    let r = ask("app.test", "/page/%2e%2e/admin/x", Some(cookie.clone())).await;
    assert_eq!(r.status, 403, "dot segments are resolved before the policy");
    let r = ask("app.test", "/admin%2Fx", Some(cookie.clone())).await;
    assert_eq!(r.status, 400);
    // No session: 401, with where to sign in.
    let r = ask("app.test", "/page", None).await;
    assert_eq!(r.status, 401);
    assert!(r.body.contains("unauthenticated"));
    // Unknown host: 404.
    assert_eq!(ask("nowhere.test", "/", Some(cookie)).await.status, 404);
}

#[tokio::test]
async fn forward_auth_refuses_untrusted_peers() {
    let w = world().await;
    let (cookie, _) = w.session(claims(), 3600).await;
    let r = w
        .get(
            "app.test",
            "/_portcullis/auth",
            &[
                &cookie,
                "X-Forwarded-Host: app.test",
                "X-Forwarded-Uri: /page",
            ],
        )
        .await;
    assert_eq!(r.status, 403);
    assert_eq!(r.json()["code"], "untrusted_proxy");
    assert!(r.header("x-auth-user-id").is_none());
}

/// A changed session.secret cannot open the stored key: a new one replaces
/// it, published under a new kid, and the operator is told.
#[tokio::test]
async fn a_new_secret_replaces_the_signing_key() {
    let mut w = world().await;
    let kid = |body: &str| {
        let v: Value = serde_json::from_str(body).unwrap();
        v["keys"][0]["kid"].as_str().unwrap().to_string()
    };
    let before = kid(&w.get("app.test", "/_portcullis/jwks.json", &[]).await.body);
    w.gw.restart().await;
    let same = kid(&w.get("app.test", "/_portcullis/jwks.json", &[]).await.body);
    assert_eq!(before, same, "a restart keeps the key");
    let text = std::fs::read_to_string(&w.gw.config_path).unwrap();
    std::fs::write(
        &w.gw.config_path,
        text.replace(SECRET, "another-secret-0123456789abcdef-xyz"),
    )
    .unwrap();
    w.gw.restart().await;
    let after = kid(&w.get("app.test", "/_portcullis/jwks.json", &[]).await.body);
    assert_ne!(before, after);
    w.gw.log_with("cannot be opened with this session.secret")
        .await;
}
