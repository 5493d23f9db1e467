//! Real browsers (SPEC 3, 6b): Debian's Chromium, driven through
//! playwright-core (tests/browser/run.mjs), signs in through
//! `oidc-provider`'s own pages via the gateway's IdP chooser, meets the 403
//! page, and walks through `portcullis demo` as a newcomer would.
//! Screenshots of every page are kept under `target/browser-artifacts/`.

mod support;

use std::path::PathBuf;
use std::process::Command;

use serde_json::{Value, json};
use support::idp::{Idp, client, main_idp_yaml};
use support::*;

#[derive(Debug)]
struct Seen {
    url: String,
    status: u64,
    title: String,
    text: String,
}

fn artifacts() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/browser-artifacts")
}

/// Runs `script` (under tests/browser) with `spec`, with the screenshots
/// going to [`artifacts`] under `name`; the JSON line it prints.
async fn run_node(script: &str, name: &str, mut spec: Value) -> Value {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    assert!(
        dir.join("node_modules/playwright-core").exists()
            && std::path::Path::new("/usr/bin/chromium").exists(),
        "playwright-core or chromium is missing: run the tests with `./dev test`"
    );
    spec["shots"] = json!(artifacts());
    spec["name"] = json!(name);
    let script = dir.join(script);
    let out = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .arg(&script)
            .arg(spec.to_string())
            .current_dir(&dir)
            .output()
            .expect("node runs")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the browser run failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.lines().last().unwrap_or("")).unwrap()
}

/// One visit in a fresh Chromium (see tests/browser/run.mjs): the page the
/// sign-in ended on, then each page of `then`.
async fn visit(name: &str, spec: Value) -> Vec<Seen> {
    let result = run_node("run.mjs", name, spec).await;
    result["pages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| Seen {
            url: p["url"].as_str().unwrap().to_string(),
            status: p["status"].as_u64().unwrap(),
            title: p["title"].as_str().unwrap().to_string(),
            text: p["text"].as_str().unwrap().to_string(),
        })
        .collect()
}

fn template(idp1: u16, idp2: u16, upstream: std::net::SocketAddr) -> String {
    let head = localhost_preamble("sqlite://{dir}/portcullis.db");
    let main = main_idp_yaml(idp1, "contains(groups, 'admin') && 'Admin' || 'Member'");
    format!(
        r#"{head}identity_providers:
{main}  - id: second
    display_name: "Second IdP"
    issuer: "http://localhost:{idp2}"
    client_id: portcullis-two
    client_secret: second-secret
    scopes: [openid, email, profile]
organizations:
  - id: home-lab
    roles: [{{name: Admin}}, {{name: Member}}]
routes:
  - name: admin
    hosts: ["localhost"]
    path_prefix: /admin
    upstreams: ["{upstream}"]
    org: home-lab
    allow_roles: [Admin]
  - name: app
    hosts: ["localhost"]
    upstreams: ["{upstream}"]
    org: home-lab
"#
    )
}

struct World {
    gw: Gateway,
    _idp: Idp,
}

async fn world() -> World {
    let upstream = start_echo("app").await;
    let sockets = [listener(), listener()];
    let [p1, p2] = sockets.each_ref().map(|s| s.local_addr().unwrap().port());
    let gw = Gateway::start(&template(p1, p2, upstream)).await;
    let port = gw.http.port();
    let accounts = json!({
        "alice": {"email": "alice@example.com", "email_verified": true, "name": "Alice", "groups": ["home-lab", "admin"]},
        "bob": {"email": "bob@example.com", "email_verified": true, "name": "Bob", "groups": ["home-lab"]},
    });
    let idp = Idp::start(
        json!([
            {"clients": [client("portcullis", "main-secret", port)], "accounts": accounts},
            {"clients": [client("portcullis-two", "second-secret", port)], "accounts": accounts},
        ]),
        &sockets,
    );
    World { gw, _idp: idp }
}

impl World {
    fn url(&self, path: &str) -> String {
        format!("http://localhost:{}{path}", self.gw.http.port())
    }
}

#[tokio::test]
async fn a_real_login_through_the_chooser_and_the_idps_pages() {
    let w = world().await;
    let pages = visit(
        "login",
        json!({"start": w.url("/dashboard?tab=1"), "choose": "Main IdP", "account": "alice"}),
    )
    .await;
    let landed = &pages[0];
    assert_eq!(landed.status, 200, "{landed:?}");
    assert_eq!(landed.url, w.url("/dashboard?tab=1"));
    let echo: Value = serde_json::from_str(&landed.text).unwrap();
    let h = &echo["headers"];
    assert_eq!(h["x-auth-email"][0], "alice@example.com");
    assert_eq!(h["x-auth-idp"][0], "main");
    assert_eq!(h["x-auth-roles"][0], "Admin");
    assert!(h["x-auth-assertion"][0].is_string());
    // The chooser named both IdPs (its screenshot is among the artifacts).
    assert!(artifacts().join("login-01-start.png").exists());
}

#[tokio::test]
async fn the_403_page_names_the_failed_requirement() {
    let w = world().await;
    let pages = visit(
        "denied",
        json!({"start": w.url("/"), "choose": "Main IdP", "account": "bob", "then": [w.url("/admin/settings")]}),
    )
    .await;
    assert_eq!(pages[0].status, 200, "{:?}", pages[0]);
    let denied = &pages[1];
    assert_eq!(denied.status, 403, "{denied:?}");
    assert!(denied.title.contains("403"), "{denied:?}");
    assert!(denied.text.contains("Admin"), "{denied:?}");
}

#[tokio::test]
async fn a_newcomer_walks_through_the_demo() {
    let demo = support::demo::start();
    support::demo::wait_up(&demo.url).await;
    let admin = format!("{}admin/", demo.url);
    for (user, path, want_status, want_text) in [
        ("alice", "", 200, "Signature verified"),
        ("bob", "", 200, "Member"),
        ("carol", "partners/", 200, "partners"),
        ("dave", "", 403, "not a member of any organization"),
    ] {
        let pages = visit(
            &format!("demo-{user}"),
            json!({"start": format!("{}{path}", demo.url), "pick": user, "then": [admin]}),
        )
        .await;
        let landed = &pages[0];
        assert_eq!(landed.status, want_status, "{user}: {landed:?}");
        assert!(landed.text.contains(want_text), "{user}: {landed:?}");
        // Only alice is an Admin; dave, with no session, is asked to sign in.
        let at_admin = &pages[1];
        match user {
            "alice" => assert_eq!(at_admin.status, 200, "{at_admin:?}"),
            "dave" => assert!(at_admin.url.contains("/authorize"), "{at_admin:?}"),
            _ => assert_eq!(at_admin.status, 403, "{user}: {at_admin:?}"),
        }
    }
}

/// Runs tests/browser/console.mjs against `gw`'s console at `width`.
async fn console_visit(name: &str, gw: &Gateway, width: u32) -> Value {
    let spec = json!({
        "console": format!("http://{}/console/", gw.admin),
        "token": ADMIN_TOKEN,
        "email": "carol@example.com",
        "org": "home-lab",
        "role": "Admin",
        "idp": "main",
        "claims": {"sub": "zed", "email": "zed@example.com", "email_verified": true, "groups": ["home-lab"]},
        // The configuration in force with home-lab's Admin renamed Owner.
        "plan_yaml": std::fs::read_to_string(&gw.config_path).unwrap()
            .replace("{name: Admin}", "{name: Owner}")
            .replace("allow_roles: [Admin]", "allow_roles: [Owner]"),
        "width": width,
    });
    run_node("console.mjs", name, spec).await
}

/// The console (SPEC 6b), at a desktop and at a phone width: the token,
/// a user found by email with their membership and its source, a role
/// added (then in the API and the audit log), the explainer's trace, and
/// the policy plan of a configuration that renames a role.
#[tokio::test]
async fn the_console_edits_a_membership_and_explains_a_login() {
    let w = world().await;
    for (name, width) in [("console-desktop", 1280), ("console-phone", 390)] {
        // A pre-provisioned member, through the API.
        let created =
            w.gw.api(
                reqwest::Method::POST,
                "/api/users",
                Some(json!({"idp": "main", "email": "carol@example.com",
                    "memberships": [{"organizationId": "home-lab", "roles": ["Member"]}]})),
            )
            .await;
        let id = created.body["id"].as_str().unwrap().to_string();
        let seen = console_visit(name, &w.gw, width).await;
        assert_eq!(seen["errors"], json!([]), "{seen}");
        assert_eq!(
            seen["overflow"],
            json!(false),
            "{name}: wider than the screen"
        );
        let text = |k: &str| seen[k].as_str().unwrap().to_string();
        assert!(
            text("orgs").contains("home-lab") && text("orgs").contains("Admin"),
            "{seen}"
        );
        assert!(
            text("user").contains("home-lab") && text("user").contains("manual"),
            "{seen}"
        );
        assert!(text("saved").contains("saved"), "{seen}");
        // The change went through the API: there, and in the audit log.
        let user =
            w.gw.api(reqwest::Method::GET, &format!("/api/users/{id}"), None)
                .await;
        assert_eq!(
            user.body["memberships"][0]["roles"],
            json!(["Admin", "Member"])
        );
        // Newest first: the role change heads the organization's log.
        let audit = text("audit");
        let changed = audit.find("membership.roles_changed");
        let created = audit.find("membership.created");
        assert!(
            changed.is_some() && created.is_some() && changed < created,
            "{audit}"
        );
        assert!(
            text("audit").contains("token:0") && text("audit").contains(&id),
            "{seen}"
        );
        assert!(text("audit_page").contains("newest first"), "{seen}");
        // The explainer shows the org's trace for the pasted claims.
        let explain = text("explain");
        assert!(explain.contains("Outcome: allowed"), "{explain}");
        assert!(explain.contains("home-lab: created"), "{explain}");
        assert!(
            explain.contains("contains(groups, 'home-lab')"),
            "{explain}"
        );
        // The plan: carol's manual Admin would grant nothing any more.
        let plan = text("plan");
        assert!(plan.contains("1 users planned: 1 would change"), "{plan}");
        assert!(
            plan.contains("home-lab: roles changed, [Admin, Member] (manual) → [Member] (manual) — organization \"home-lab\" no longer declares \"Admin\""),
            "{plan}"
        );
        assert!(plan.contains("Note: no claims kept"), "{plan}");
        // Next width: a fresh user.
        let r =
            w.gw.api(reqwest::Method::DELETE, &format!("/api/users/{id}"), None)
                .await;
        assert_eq!(r.status, 204);
    }
}

/// `admin.console: false`: no console at all.
#[tokio::test]
async fn the_console_can_be_turned_off() {
    let upstream = start_echo("app").await;
    let off = config_with(&format!(
        "routes:\n  - {{name: app, hosts: [app.test], upstreams: [\"{upstream}\"], public: true}}\n"
    ))
    .replace("admin:\n", "admin:\n  console: false\n");
    let gw = Gateway::start(&off).await;
    for path in ["/console/", "/console/console.js"] {
        let r = reqwest::get(format!("http://{}{path}", gw.admin))
            .await
            .unwrap();
        assert_eq!(r.status(), 404, "{path}");
    }
    let on = Gateway::start(&config_with(&format!(
        "routes:\n  - {{name: app, hosts: [app.test], upstreams: [\"{upstream}\"], public: true}}\n"
    )))
    .await;
    let r = reqwest::get(format!("http://{}/console/", on.admin))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let csp = r.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(csp.contains("script-src 'self'"), "{csp}");
}
