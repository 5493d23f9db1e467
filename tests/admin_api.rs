//! The management API through real HTTP to the admin listener, with a
//! real store: authentication, every row of the SPEC section 6 table,
//! pagination edges, persistence, OpenAPI, and changes reaching the proxy.

mod support;

use portcullis::config::StoreKind;
use portcullis::store::Store;
use reqwest::Method;
use serde_json::{Value, json};
use support::*;

const HASHED_TOKEN: &str = "second-admin-token-hashed";

fn template(upstream: std::net::SocketAddr) -> String {
    let hashed = portcullis::util::hash_token(HASHED_TOKEN);
    format!(
        r#"server:
  listen: "127.0.0.1:{{http}}"
  public_url: "http://auth.test:{{http}}"
  grace_period: 1s
admin:
  listen: "127.0.0.1:{{admin}}"
  tokens: ["{ADMIN_TOKEN}", "{hashed}"]
store:
  url: "sqlite://{{dir}}/portcullis.db"
  cache_ttl: 30s
session:
  secret: "{SECRET}"
identity_providers:
  - id: authentik
    display_name: "Authentik"
    issuer: "https://sso.example.com/"
    client_id: portcullis
    provisioning:
      default:
        org: "contains(groups, '{{{{orgId}}}}')"
        roles: "'Member'"
  - id: closed
    display_name: "Closed IdP"
    issuer: "https://closed.example.com/"
    client_id: portcullis
    auto_provision: false
organizations:
  - id: home-lab
    name: "Home Lab"
    roles:
      - {{name: Admin, description: "Full access"}}
      - {{name: Member}}
      - {{name: Viewer}}
    jit:
      email_domains: [example.com]
      sso_connectors: [authentik]
      default_roles: [Member]
  - id: lab-two
    name: "Lab Two"
    roles: [{{name: Member}}]
routes:
  - name: app
    hosts: ["app.test"]
    upstreams: ["{upstream}"]
    org: home-lab
"#
    )
}

struct Api {
    gw: Gateway,
    http: reqwest::Client,
}

type Answer = ApiAnswer;

impl Api {
    async fn start() -> Api {
        let upstream = start_echo("app").await;
        Api {
            gw: Gateway::start(&template(upstream)).await,
            http: reqwest::Client::new(),
        }
    }

    async fn call_as(
        &self,
        token: Option<&str>,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Answer {
        admin_call(self.gw.admin, token, method, path, body).await
    }

    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> Answer {
        self.call_as(Some(ADMIN_TOKEN), method, path, body).await
    }

    async fn get(&self, path: &str) -> Answer {
        self.call(Method::GET, path, None).await
    }

    async fn post(&self, path: &str, body: Value) -> Answer {
        self.call(Method::POST, path, Some(body)).await
    }

    async fn put(&self, path: &str, body: Value) -> Answer {
        self.call(Method::PUT, path, Some(body)).await
    }

    async fn delete(&self, path: &str) -> Answer {
        self.call(Method::DELETE, path, None).await
    }

    async fn store(&self) -> Store {
        let url = format!("sqlite://{}/portcullis.db", self.gw.dir.path().display());
        Store::open(&url, StoreKind::Sqlite).await.unwrap()
    }

    async fn create_user(&self, email: &str, roles: &[&str]) -> String {
        let a = self
            .post(
                "/api/users",
                json!({"idp": "authentik", "subject": email.split('@').next().unwrap(), "email": email,
                       "memberships": [{"organizationId": "home-lab", "roles": roles}]}),
            )
            .await;
        assert_eq!(a.status, 201, "{}", a.body);
        a.body["id"].as_str().unwrap().to_string()
    }
}

const ED: &str = "/api/organizations/home-lab/jit/email-domains";
const SC: &str = "/api/organizations/home-lab/jit/sso-connectors";
const RO: &str = "/api/organizations/home-lab/jit/roles";

fn values(a: &Answer, key: &str) -> Vec<String> {
    a.body
        .as_array()
        .unwrap_or_else(|| panic!("not a list: {}", a.body))
        .iter()
        .map(|v| v[key].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn every_api_call_needs_an_admin_token() {
    let api = Api::start().await;
    let path = "/api/organizations";
    let refused = [
        None,
        Some("wrong-token"),
        Some(&ADMIN_TOKEN.to_uppercase()[..]),
        Some(""),
    ];
    let mut bodies = Vec::new();
    for token in refused {
        let a = api.call_as(token, Method::GET, path, None).await;
        assert_eq!(a.status, 401, "{token:?}");
        assert_eq!(a.headers["www-authenticate"], "Bearer");
        bodies.push(a.body.clone());
    }
    // The same answer whatever was wrong.
    assert!(bodies.windows(2).all(|w| w[0] == w[1]));
    assert_eq!(bodies[0]["code"], "unauthorized");
    // A wrong scheme, and unknown API paths, are 401 too.
    let basic = api
        .http
        .get(format!("http://{}{path}", api.gw.admin))
        .header("authorization", format!("Basic {ADMIN_TOKEN}"))
        .send()
        .await
        .unwrap();
    assert_eq!(basic.status(), 401);
    assert_eq!(
        api.call_as(None, Method::GET, "/api/nope", None)
            .await
            .status,
        401
    );
    // The plain token, the hashed one, and the scheme in any case.
    assert_eq!(api.get(path).await.status, 200);
    assert_eq!(
        api.call_as(Some(HASHED_TOKEN), Method::GET, path, None)
            .await
            .status,
        200
    );
    let lower = api
        .http
        .get(format!("http://{}{path}", api.gw.admin))
        .header("authorization", format!("bearer {ADMIN_TOKEN}"))
        .send()
        .await
        .unwrap();
    assert_eq!(lower.status(), 200);
    // Health, readiness and metrics need none.
    for open in ["/healthz", "/readyz", "/metrics"] {
        let r = reqwest::get(format!("http://{}{open}", api.gw.admin))
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{open}");
    }
    // An unknown API path, with a token: 404 as JSON.
    let a = api.get("/api/nope").await;
    assert_eq!(
        (a.status, a.body["code"].as_str()),
        (404, Some("not_found"))
    );
}

#[tokio::test]
async fn organizations_are_read_from_the_file() {
    let api = Api::start().await;
    let a = api.get("/api/organizations").await;
    assert_eq!(a.status, 200);
    assert_eq!(values(&a, "id"), ["home-lab", "lab-two"]);
    let a = api.get("/api/organizations/home-lab").await;
    assert_eq!(a.body["name"], "Home Lab");
    assert_eq!(
        a.body["roles"][0],
        json!({"id": "Admin", "name": "Admin", "description": "Full access"})
    );
    assert_eq!(api.get("/api/organizations/nope").await.status, 404);
}

#[tokio::test]
async fn email_domains_follow_logto() {
    let api = Api::start().await;
    // GET: the file's entry is there.
    let a = api.get(ED).await;
    assert_eq!(a.status, 200);
    assert_eq!(
        a.body,
        json!([{"organizationId": "home-lab", "emailDomain": "example.com"}])
    );
    assert!(
        a.headers.get("total-number").is_none(),
        "no pagination unless asked"
    );
    // POST: 201 with the entry, stored lower-case.
    let a = api.post(ED, json!({"emailDomain": "Partner.ORG"})).await;
    assert_eq!(a.status, 201, "{}", a.body);
    assert_eq!(
        a.body,
        json!({"organizationId": "home-lab", "emailDomain": "partner.org"})
    );
    // Already present (API or file): 422.
    assert_eq!(
        api.post(ED, json!({"emailDomain": "partner.org"}))
            .await
            .status,
        422
    );
    assert_eq!(
        api.post(ED, json!({"emailDomain": "EXAMPLE.com"}))
            .await
            .status,
        422
    );
    // Not a domain name: 400.
    for bad in [
        "https://x.org",
        "a@b.org",
        "nodot",
        "-x.org",
        &format!("{}.org", "a".repeat(130)),
    ] {
        let a = api.post(ED, json!({"emailDomain": bad})).await;
        assert_eq!(a.status, 400, "{bad}");
        assert_eq!(a.body["code"], "bad_request");
    }
    // Malformed bodies: 400 naming the field.
    let a = api.post(ED, json!({"emailDomain": 5})).await;
    assert_eq!(a.status, 400);
    assert!(
        a.body["message"].as_str().unwrap().contains("emailDomain"),
        "{}",
        a.body
    );
    let a = api.post(ED, json!({"domain": "x.org"})).await;
    assert_eq!(a.status, 400);
    // Pagination when asked.
    let a = api.get(&format!("{ED}?page=1&page_size=1")).await;
    assert_eq!(
        (a.status, a.headers["total-number"].to_str().unwrap()),
        (200, "2")
    );
    assert_eq!(values(&a, "emailDomain"), ["example.com"]);
    // Logto's Link header names the neighbouring pages.
    assert_eq!(
        a.headers["link"].to_str().unwrap(),
        format!(
            "<{ED}?page_size=1&page=1>; rel=\"first\", <{ED}?page_size=1&page=2>; rel=\"next\", <{ED}?page_size=1&page=2>; rel=\"last\""
        )
    );
    let a = api.get(&format!("{ED}?page=2&page_size=1")).await;
    assert_eq!(values(&a, "emailDomain"), ["partner.org"]);
    assert!(
        a.headers["link"].to_str().unwrap().contains("rel=\"prev\""),
        "{:?}",
        a.headers["link"]
    );
    let a = api.get(&format!("{ED}?page=9")).await;
    assert_eq!((a.status, a.body.clone()), (200, json!([])));
    for bad in ["page_size=0", "page_size=101", "page=0", "page=x"] {
        assert_eq!(api.get(&format!("{ED}?{bad}")).await.status, 400, "{bad}");
    }
    // PUT replaces the list (the file's entries must stay): 204.
    let a = api
        .put(
            ED,
            json!({"emailDomains": ["example.com", "One.org", "two.org"]}),
        )
        .await;
    assert_eq!(a.status, 204, "{}", a.body);
    assert_eq!(
        values(&api.get(ED).await, "emailDomain"),
        ["example.com", "one.org", "two.org"]
    );
    // Leaving out a file entry: 409, nothing changed; `[]` is the same.
    assert_eq!(
        api.put(ED, json!({"emailDomains": ["one.org"]}))
            .await
            .status,
        409
    );
    assert_eq!(api.put(ED, json!({"emailDomains": []})).await.status, 409);
    assert_eq!(api.get(ED).await.body.as_array().unwrap().len(), 3);
    assert_eq!(
        api.put(ED, json!({"emailDomains": ["example.com", "bad@x"]}))
            .await
            .status,
        400
    );
    // DELETE: 204, 404 when absent, 409 for the file's.
    assert_eq!(api.delete(&format!("{ED}/one.org")).await.status, 204);
    assert_eq!(api.delete(&format!("{ED}/one.org")).await.status, 404);
    assert_eq!(api.delete(&format!("{ED}/example.com")).await.status, 409);
    assert_eq!(
        values(&api.get(ED).await, "emailDomain"),
        ["example.com", "two.org"]
    );
    // Unknown organization: 404 for every call.
    let other = "/api/organizations/nope/jit/email-domains";
    assert_eq!(api.get(other).await.status, 404);
    assert_eq!(
        api.post(other, json!({"emailDomain": "x.org"}))
            .await
            .status,
        404
    );
    assert_eq!(
        api.put(other, json!({"emailDomains": []})).await.status,
        404
    );
    assert_eq!(api.delete(&format!("{other}/x.org")).await.status, 404);
}

#[tokio::test]
async fn sso_connectors_and_roles_follow_logto() {
    let api = Api::start().await;
    let a = api.get(SC).await;
    assert_eq!(
        a.body,
        json!([{"id": "authentik", "displayName": "Authentik", "issuer": "https://sso.example.com/"}])
    );
    assert_eq!(
        api.post(SC, json!({"ssoConnectorIds": ["closed"]}))
            .await
            .status,
        201
    );
    // Present ids are ignored.
    assert_eq!(
        api.post(SC, json!({"ssoConnectorIds": ["closed", "authentik"]}))
            .await
            .status,
        201
    );
    assert_eq!(values(&api.get(SC).await, "id"), ["authentik", "closed"]);
    let a = api.post(SC, json!({"ssoConnectorIds": ["nope"]})).await;
    assert_eq!(a.status, 422);
    assert_eq!(
        api.put(SC, json!({"ssoConnectorIds": ["authentik", "nope"]}))
            .await
            .status,
        422
    );
    assert_eq!(
        api.put(SC, json!({"ssoConnectorIds": []})).await.status,
        409
    );
    assert_eq!(
        api.put(SC, json!({"ssoConnectorIds": ["authentik"]}))
            .await
            .status,
        204
    );
    assert_eq!(values(&api.get(SC).await, "id"), ["authentik"]);
    assert_eq!(api.delete(&format!("{SC}/authentik")).await.status, 409);
    assert_eq!(api.delete(&format!("{SC}/closed")).await.status, 404);
    assert_eq!(
        api.get("/api/organizations/nope/jit/sso-connectors")
            .await
            .status,
        404
    );

    let a = api.get(RO).await;
    assert_eq!(
        a.body,
        json!([{"id": "Member", "name": "Member", "description": null}])
    );
    assert_eq!(
        api.post(RO, json!({"organizationRoleIds": ["Viewer"]}))
            .await
            .status,
        201
    );
    assert_eq!(
        api.post(RO, json!({"organizationRoleIds": ["Ghost"]}))
            .await
            .status,
        422
    );
    assert_eq!(values(&api.get(RO).await, "id"), ["Member", "Viewer"]);
    assert_eq!(
        api.put(RO, json!({"organizationRoleIds": ["Member", "Ghost"]}))
            .await
            .status,
        422
    );
    assert_eq!(
        api.put(RO, json!({"organizationRoleIds": ["Viewer"]}))
            .await
            .status,
        409
    );
    assert_eq!(
        api.put(RO, json!({"organizationRoleIds": ["Member", "Admin"]}))
            .await
            .status,
        204
    );
    assert_eq!(values(&api.get(RO).await, "id"), ["Admin", "Member"]);
    assert_eq!(api.delete(&format!("{RO}/Admin")).await.status, 204);
    assert_eq!(api.delete(&format!("{RO}/Admin")).await.status, 404);
    assert_eq!(api.delete(&format!("{RO}/Member")).await.status, 409);
    let a = api.get(&format!("{RO}?page_size=1")).await;
    assert_eq!(a.headers["total-number"], "1");
}

#[tokio::test]
async fn api_entries_survive_reload_and_restart() {
    let mut api = Api::start().await;
    assert_eq!(
        api.post(ED, json!({"emailDomain": "kept.org"}))
            .await
            .status,
        201
    );
    assert_eq!(
        api.post(RO, json!({"organizationRoleIds": ["Viewer"]}))
            .await
            .status,
        201
    );
    let a = api.call(Method::POST, "/api/config/reload", None).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.body["status"], "reloaded");
    assert_eq!(
        values(&api.get(ED).await, "emailDomain"),
        ["example.com", "kept.org"]
    );
    api.gw.restart().await;
    assert_eq!(
        values(&api.get(ED).await, "emailDomain"),
        ["example.com", "kept.org"]
    );
    assert_eq!(values(&api.get(RO).await, "id"), ["Member", "Viewer"]);
    // A broken file: the reload is refused with the reason, nothing changes.
    std::fs::write(&api.gw.config_path, "server: [").unwrap();
    let a = api.call(Method::POST, "/api/config/reload", None).await;
    assert_eq!(a.status, 422);
    assert_eq!(a.body["code"], "invalid_config");
    assert_eq!(
        api.get("/api/organizations")
            .await
            .body
            .as_array()
            .unwrap()
            .len(),
        2
    );
}

#[tokio::test]
async fn users_are_created_listed_and_deleted() {
    let api = Api::start().await;
    let a = api
        .post(
            "/api/users",
            json!({"idp": "closed", "email": "Dana@Example.com", "name": "Dana",
                   "memberships": [{"organizationId": "home-lab", "roles": ["Viewer", "Admin"]}]}),
        )
        .await;
    assert_eq!(a.status, 201, "{}", a.body);
    let dana = a.body["id"].as_str().unwrap().to_string();
    assert_eq!(
        a.body["memberships"],
        json!([{"organizationId": "home-lab", "roles": ["Admin", "Viewer"], "source": "manual"}])
    );
    assert_eq!(a.body["identities"][0]["subject"], Value::Null);
    // The same email at the same IdP again: 409.
    let again = api
        .post(
            "/api/users",
            json!({"idp": "closed", "email": "dana@example.com"}),
        )
        .await;
    assert_eq!(again.status, 409);
    for (body, status) in [
        (json!({"idp": "nope", "email": "x@example.com"}), 422),
        (
            json!({"idp": "closed", "email": "x@example.com", "memberships": [{"organizationId": "nope", "roles": ["Member"]}]}),
            422,
        ),
        (
            json!({"idp": "closed", "email": "x@example.com", "memberships": [{"organizationId": "home-lab", "roles": ["Ghost"]}]}),
            422,
        ),
        (json!({"idp": "closed", "email": "not-an-email"}), 400),
        (json!({"idp": "closed"}), 400),
    ] {
        assert_eq!(
            api.post("/api/users", body.clone()).await.status,
            status,
            "{body}"
        );
    }
    let erin = api.create_user("erin@example.com", &["Member"]).await;
    let a = api.get("/api/users").await;
    assert_eq!(values(&a, "id").len(), 2);
    let a = api.get("/api/users?page=2&page_size=1").await;
    assert_eq!(a.headers["total-number"], "2");
    assert_eq!(values(&a, "id").len(), 1);
    assert_eq!(api.get("/api/users?page_size=101").await.status, 400);
    assert_eq!(
        api.get(&format!("/api/users/{dana}")).await.body["email"],
        "Dana@Example.com"
    );
    assert_eq!(api.get("/api/users/u_nope").await.status, 404);
    assert_eq!(api.delete(&format!("/api/users/{erin}")).await.status, 204);
    assert_eq!(api.get(&format!("/api/users/{erin}")).await.status, 404);
    assert_eq!(api.delete(&format!("/api/users/{erin}")).await.status, 404);
}

#[tokio::test]
async fn memberships_and_sessions_take_effect_on_the_next_request() {
    let api = Api::start().await;
    let user = api.create_user("fay@example.com", &["Member"]).await;
    let store = api.store().await;
    let (cookie, hash) = session_cookie(
        &store,
        &user,
        "authentik",
        "fay",
        json!({"sub": "fay"}),
        3600,
    )
    .await;
    let headers = [cookie.as_str()];
    let proxied = || get(api.gw.http, "app.test", "/", &headers);
    let r = proxied().await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["headers"]["x-auth-roles"][0], "Member");

    // Members with roles and source.
    let a = api.get("/api/organizations/home-lab/users").await;
    assert_eq!(
        a.body,
        json!([{"userId": user, "email": "fay@example.com", "name": null, "roles": ["Member"], "source": "manual"}])
    );
    // PUT roles: manual, and the next request sees them (cache dropped).
    let path = format!("/api/organizations/home-lab/users/{user}");
    let a = api.put(&path, json!({"roles": ["Viewer", "Admin"]})).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(
        a.body,
        json!({"organizationId": "home-lab", "roles": ["Admin", "Viewer"], "source": "manual"})
    );
    assert_eq!(
        proxied().await.json()["headers"]["x-auth-roles"][0],
        "Admin,Viewer"
    );
    assert_eq!(
        api.put(&path, json!({"roles": ["Ghost"]})).await.status,
        422
    );
    assert_eq!(
        api.put(
            "/api/organizations/home-lab/users/u_nope",
            json!({"roles": ["Member"]})
        )
        .await
        .status,
        404
    );
    assert_eq!(
        api.put(
            &format!("/api/organizations/nope/users/{user}"),
            json!({"roles": ["Member"]})
        )
        .await
        .status,
        404
    );

    // Sessions listed, never with their id.
    let a = api.get(&format!("/api/users/{user}/sessions")).await;
    assert_eq!(a.body.as_array().unwrap().len(), 1);
    let id = cookie.trim_start_matches("Cookie: _portcullis=");
    assert!(!a.body.to_string().contains(id));
    assert!(!a.body.to_string().contains(&hash));

    // The membership removed: the next request is denied.
    assert_eq!(api.delete(&path).await.status, 204);
    assert_eq!(api.delete(&path).await.status, 404);
    let r = proxied().await;
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(r.json()["code"], "not_a_member");

    // Sessions revoked: the next request has none.
    assert_eq!(
        api.delete(&format!("/api/users/{user}/sessions"))
            .await
            .status,
        204
    );
    assert_eq!(
        api.get(&format!("/api/users/{user}/sessions")).await.body,
        json!([])
    );
    assert_eq!(proxied().await.status, 401);
    assert_eq!(api.get("/api/users/u_nope/sessions").await.status, 404);
}

#[tokio::test]
async fn explain_and_the_audit_log() {
    let api = Api::start().await;
    let a = api
        .post(
            "/api/provisioning/explain",
            json!({"idp": "authentik", "claims": {"sub": "g", "email": "g@example.com", "email_verified": true, "groups": ["lab-two"]}}),
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.body["outcome"]["outcome"], "allowed");
    let orgs: Vec<&str> = a.body["orgs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["org"].as_str().unwrap())
        .collect();
    assert_eq!(orgs, ["home-lab", "lab-two"]);
    assert_eq!(
        api.post(
            "/api/provisioning/explain",
            json!({"idp": "nope", "claims": {}})
        )
        .await
        .status,
        422
    );
    assert_eq!(
        api.post(
            "/api/provisioning/explain",
            json!({"idp": "authentik", "claims": {"sub": "x"}, "existingUserId": "u_nope"})
        )
        .await
        .status,
        404
    );
    assert_eq!(
        api.post(
            "/api/provisioning/explain",
            json!({"idp": "authentik", "claims": [1]})
        )
        .await
        .status,
        400
    );

    let user = api.create_user("hal@example.com", &["Member"]).await;
    let path = format!("/api/organizations/home-lab/users/{user}");
    assert_eq!(
        api.put(&path, json!({"roles": ["Admin"]})).await.status,
        200
    );
    assert_eq!(
        api.post(ED, json!({"emailDomain": "audit.org"}))
            .await
            .status,
        201
    );
    let a = api.get(&format!("/api/audit-events?userId={user}")).await;
    let actions: Vec<&str> = a
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        [
            "user.created",
            "membership.created",
            "membership.roles_changed"
        ]
    );
    let change = &a.body[2];
    assert_eq!(change["actor"], "token:0");
    assert_eq!(
        change["before"],
        json!({"roles": ["Member"], "source": "manual"})
    );
    assert_eq!(
        change["after"],
        json!({"roles": ["Admin"], "source": "manual"})
    );
    // Newest first when asked.
    let a = api
        .get(&format!("/api/audit-events?userId={user}&order=desc"))
        .await;
    assert_eq!(a.body[0]["action"], "membership.roles_changed");
    assert_eq!(
        api.get("/api/audit-events?order=sideways").await.status,
        400
    );
    let a = api.get("/api/audit-events?organizationId=home-lab").await;
    assert!(
        a.body
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "jit.email_domain.added")
    );
    let a = api.get("/api/audit-events?page=1&page_size=2").await;
    assert_eq!(a.body.as_array().unwrap().len(), 2);
    assert!(
        a.headers["total-number"]
            .to_str()
            .unwrap()
            .parse::<u32>()
            .unwrap()
            >= 4
    );
}

#[tokio::test]
async fn bodies_are_limited() {
    let api = Api::start().await;
    // 1 MiB: answered 413 as soon as the limit is passed. The server may
    // close before the client has sent everything, so this client writes
    // what it can and then reads the answer.
    let addr = api.gw.admin;
    let answer = tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let body = format!("{{\"emailDomain\": \"{}\"}}", "a".repeat(1024 * 1024));
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
        let head = format!(
            "POST {ED} HTTP/1.1\r\nHost: admin\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        let _ = s.write_all(head.as_bytes()).and_then(|_| s.write_all(body.as_bytes()));
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        String::from_utf8_lossy(&out).into_owned()
    })
    .await
    .unwrap();
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("body_too_large"), "{answer}");
    let raw = api
        .http
        .post(format!("http://{}{ED}", api.gw.admin))
        .header("authorization", format!("Bearer {ADMIN_TOKEN}"))
        .header("content-type", "application/json")
        .body("{\"emailDomain\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status(), 400);
}

#[tokio::test]
async fn the_openapi_document_matches_the_router() {
    let api = Api::start().await;
    let a = api.get("/api/openapi.json").await;
    assert_eq!(a.status, 200);
    assert!(a.body["openapi"].as_str().unwrap().starts_with("3.1"));
    let paths = a.body["paths"].as_object().unwrap();
    // Every endpoint of SPEC section 6 is documented…
    let spec = [
        ("get", "/api/organizations"),
        ("get", "/api/organizations/{organizationId}"),
        (
            "get",
            "/api/organizations/{organizationId}/jit/email-domains",
        ),
        (
            "post",
            "/api/organizations/{organizationId}/jit/email-domains",
        ),
        (
            "put",
            "/api/organizations/{organizationId}/jit/email-domains",
        ),
        (
            "delete",
            "/api/organizations/{organizationId}/jit/email-domains/{emailDomain}",
        ),
        (
            "get",
            "/api/organizations/{organizationId}/jit/sso-connectors",
        ),
        (
            "post",
            "/api/organizations/{organizationId}/jit/sso-connectors",
        ),
        (
            "put",
            "/api/organizations/{organizationId}/jit/sso-connectors",
        ),
        (
            "delete",
            "/api/organizations/{organizationId}/jit/sso-connectors/{ssoConnectorId}",
        ),
        ("get", "/api/organizations/{organizationId}/jit/roles"),
        ("post", "/api/organizations/{organizationId}/jit/roles"),
        ("put", "/api/organizations/{organizationId}/jit/roles"),
        (
            "delete",
            "/api/organizations/{organizationId}/jit/roles/{organizationRoleId}",
        ),
        ("get", "/api/users"),
        ("post", "/api/users"),
        ("get", "/api/users/{userId}"),
        ("delete", "/api/users/{userId}"),
        ("get", "/api/organizations/{organizationId}/users"),
        ("put", "/api/organizations/{organizationId}/users/{userId}"),
        (
            "delete",
            "/api/organizations/{organizationId}/users/{userId}",
        ),
        ("get", "/api/users/{userId}/sessions"),
        ("delete", "/api/users/{userId}/sessions"),
        ("post", "/api/provisioning/explain"),
        ("post", "/api/provisioning/plan"),
        ("get", "/api/provisioning/identity-providers"),
        ("get", "/api/audit-events"),
        ("post", "/api/config/reload"),
        ("get", "/api/openapi.json"),
    ];
    for (method, path) in spec {
        assert!(
            paths.get(path).and_then(|p| p.get(method)).is_some(),
            "{method} {path} not documented"
        );
    }
    // …and everything documented is served (never the fallback's "no such
    // endpoint"), with request and response schemas where there is a body.
    let mut documented = 0;
    for (path, ops) in paths {
        for (method, op) in ops.as_object().unwrap() {
            documented += 1;
            let concrete = path
                .replace("{organizationId}", "nope")
                .replace("{userId}", "u_nope")
                .replace("{emailDomain}", "x.org")
                .replace("{ssoConnectorId}", "x")
                .replace("{organizationRoleId}", "x");
            let m = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            if path == "/api/config/reload" {
                continue; // served, shown by its own test; reloading here is harmless but slow
            }
            let body = matches!(method.as_str(), "post" | "put").then(|| json!({}));
            let a = api.call(m, &concrete, body).await;
            assert!(
                a.status != 405 && a.body["message"] != "no such endpoint",
                "{method} {path} is documented but not served: {} {}",
                a.status,
                a.body
            );
            if matches!(method.as_str(), "post" | "put") {
                assert!(
                    op.get("requestBody").is_some(),
                    "{method} {path} has no request schema"
                );
            }
            assert!(
                op.get("responses")
                    .is_some_and(|r| !r.as_object().unwrap().is_empty())
            );
        }
    }
    assert_eq!(
        documented,
        spec.len(),
        "the document has endpoints beyond SPEC section 6"
    );
}

/// Families appear with their first sample (the Prometheus client leaves
/// empty ones out); login families are checked by the login tests.
#[tokio::test]
async fn metrics_have_every_family_once_used() {
    let api = Api::start().await;
    let user = api.create_user("ida@example.com", &["Member"]).await;
    let store = api.store().await;
    let (cookie, _) = session_cookie(&store, &user, "authentik", "ida", json!({}), 3600).await;
    assert_eq!(
        get(api.gw.http, "app.test", "/", &[&cookie]).await.status,
        200
    );
    assert_eq!(
        get(api.gw.http, "app.test", "/", &[&cookie]).await.status,
        200
    );
    assert_eq!(get(api.gw.http, "app.test", "/", &[]).await.status, 401);
    assert_eq!(
        api.call(Method::POST, "/api/config/reload", None)
            .await
            .status,
        200
    );
    let m = api.gw.metrics().await;
    for line in [
        r#"portcullis_requests_total{route="app",status="200"} 2"#,
        r#"portcullis_requests_total{route="app",status="401"} 1"#,
        r#"portcullis_auth_outcomes_total{outcome="allowed"} 2"#,
        r#"portcullis_auth_outcomes_total{outcome="unauthenticated"} 1"#,
        r#"portcullis_upstream_latency_seconds_count{route="app"} 2"#,
        "portcullis_session_cache_hits_total 1",
        "portcullis_session_cache_misses_total 1",
        "portcullis_config_reloads_total 1",
        "portcullis_config_reload_failures_total 0",
    ] {
        assert!(m.contains(line), "{line} missing:\n{m}");
    }
}

/// Two replicas sharing one store: a membership removed through one is
/// enforced by the other once its cache entry (store.cache_ttl) expires.
#[tokio::test]
async fn another_replica_follows_within_the_cache_ttl() {
    let upstream = start_echo("app").await;
    let short = |t: String| t.replace("cache_ttl: 30s", "cache_ttl: 1s");
    let a = Api {
        gw: Gateway::start(&short(template(upstream))).await,
        http: reqwest::Client::new(),
    };
    let shared_db = format!("sqlite://{}/portcullis.db", a.gw.dir.path().display());
    let b = Gateway::start(
        &short(template(upstream)).replace("sqlite://{dir}/portcullis.db", &shared_db),
    )
    .await;
    let user = a.create_user("jo@example.com", &["Member"]).await;
    let (cookie, _) =
        session_cookie(&a.store().await, &user, "authentik", "jo", json!({}), 3600).await;
    assert_eq!(get(b.http, "app.test", "/", &[&cookie]).await.status, 200);
    let path = format!("/api/organizations/home-lab/users/{user}");
    assert_eq!(a.delete(&path).await.status, 204);
    eventually(
        "replica B sees the change",
        std::time::Duration::from_secs(10),
        || async {
            let status = get(b.http, "app.test", "/", &[&cookie]).await.status;
            assert!(status == 200 || status == 403, "{status}");
            (status == 403).then_some(())
        },
    )
    .await;
}
