//! `portcullis plan` and `POST /api/provisioning/plan` on a store filled by
//! real logins through the test IdP: a new expression that removes policy
//! memberships, a role renamed, an organization dropped, manual
//! memberships untouched, and nothing written.

mod support;

use reqwest::Method;
use serde_json::{Value, json};
use support::idp::{Browser, Idp, client, main_idp_yaml};
use support::*;

/// The configuration in force: every organization by name in `groups`.
/// `NEW` edits it (see [`new_template`]).
fn template(idp_port: u16, upstream: std::net::SocketAddr) -> String {
    format!(
        r#"{head}identity_providers:
{main}organizations:
  - id: lab
    roles: [{{name: Admin}}, {{name: Member}}]
  - id: ops
    roles: [{{name: Admin}}, {{name: Member}}]
  - id: legacy
    roles: [{{name: Member}}]
routes:
  - name: app
    hosts: ["localhost"]
    upstreams: ["{upstream}"]
"#,
        head = localhost_preamble("sqlite://{dir}/portcullis.db"),
        main = main_idp_yaml(idp_port, "contains(groups, 'admin') && 'Admin' || 'Member'"),
    )
}

/// The change under review: `ops` only for admins (a new expression),
/// `lab`'s `Admin` renamed `Administrator`, `legacy` dropped.
fn new_template(old: &str) -> String {
    old.replace(
        "        roles: \"contains(groups, 'admin') && 'Admin' || 'Member'\"\n",
        "        roles: \"contains(groups, 'admin') && 'Administrator' || 'Member'\"\n      organizations:\n        ops:\n          org: \"contains(groups, 'ops') && contains(groups, 'admin')\"\n          roles: \"'Admin'\"\n",
    )
    .replace(
        "  - id: lab\n    roles: [{name: Admin}, {name: Member}]\n",
        "  - id: lab\n    roles: [{name: Administrator}, {name: Member}]\n",
    )
    .replace("  - id: legacy\n    roles: [{name: Member}]\n", "")
}

fn accounts() -> Value {
    json!({
        "alice": {"email": "alice@example.com", "email_verified": true, "name": "Alice", "groups": ["lab", "ops", "admin"]},
        "bob": {"email": "bob@example.com", "email_verified": true, "name": "Bob", "groups": ["lab", "legacy"]},
        "carol": {"email": "carol@example.com", "email_verified": true, "name": "Carol", "groups": ["ops"]},
    })
}

struct World {
    gw: Gateway,
    _idp: Idp,
    new_yaml: String,
    new_path: std::path::PathBuf,
    /// User id by account.
    ids: std::collections::BTreeMap<&'static str, String>,
}

async fn world() -> World {
    let upstream = start_echo("app").await;
    let idp_socket = listener();
    let idp_port = idp_socket.local_addr().unwrap().port();
    let old = template(idp_port, upstream);
    let gw = Gateway::start(&old).await;
    let idp = Idp::start(
        json!([{"clients": [client("portcullis", "main-secret", gw.http.port())], "accounts": accounts()}]),
        std::slice::from_ref(&idp_socket),
    );
    let mut ids = std::collections::BTreeMap::new();
    for account in ["alice", "bob", "carol"] {
        let b = Browser::new();
        let first = b
            .get(&format!("http://localhost:{}/", gw.http.port()))
            .await;
        let page = b.sign_in_at_idp(first, account, &mut Vec::new()).await;
        assert_eq!(page.status, 200, "{account}: {}", page.body);
        let echo: Value = serde_json::from_str(&page.body).unwrap();
        let id = echo["headers"]["x-auth-user-id"][0].as_str().unwrap();
        ids.insert(account, id.to_string());
    }
    // Carol is also a manual member of lab, which her claims do not name.
    let put = gw
        .api(
            Method::PUT,
            &format!("/api/organizations/lab/users/{}", ids["carol"]),
            Some(json!({"roles": ["Member"]})),
        )
        .await;
    assert!(put.status < 300, "{:?}", put.body);
    let new_yaml = gw.rendered(&new_template(&old));
    let new_path = gw.dir.path().join("new.yaml");
    std::fs::write(&new_path, &new_yaml).unwrap();
    World {
        gw,
        _idp: idp,
        new_yaml,
        new_path,
        ids,
    }
}

fn plan_command(config: &std::path::Path, extra: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .arg("plan")
        .arg("--config")
        .arg(config)
        .args(extra)
        .output()
        .unwrap()
}

/// `(org, kind, roles after, reason)` of each change, per user id.
fn changes_by_user(
    users: &Value,
) -> std::collections::BTreeMap<String, Vec<(String, String, Value, String)>> {
    users
        .as_array()
        .unwrap()
        .iter()
        .map(|u| {
            let changes = u["changes"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| {
                    (
                        c["org"].as_str().unwrap().to_string(),
                        c["kind"].as_str().unwrap().to_string(),
                        c["after"]["roles"].clone(),
                        c["reason"].as_str().unwrap().to_string(),
                    )
                })
                .collect();
            (u["userId"].as_str().unwrap().to_string(), changes)
        })
        .collect()
}

/// What the store holds, to show that planning wrote nothing.
async fn stored(gw: &Gateway) -> (Value, usize) {
    let users = gw.api(Method::GET, "/api/users", None).await.body;
    let audit = gw.api(Method::GET, "/api/audit-events", None).await.body;
    (users, audit.as_array().unwrap().len())
}

/// A change expected: org, kind, roles after, words of the reason.
type Expected = (&'static str, &'static str, Value, &'static str);

fn check_preview(w: &World, users: &Value, totals: &Value) {
    let by_user = changes_by_user(users);
    let (alice, bob, carol) = (&w.ids["alice"], &w.ids["bob"], &w.ids["carol"]);
    // (whose, their changes: org, kind, roles after, words of the reason)
    let expected: [(&str, &String, Vec<Expected>); 3] = [
        (
            "alice: lab's Admin renamed, ops still matches",
            alice,
            vec![(
                "lab",
                "roles_changed",
                json!(["Administrator"]),
                "policy of \"main\"",
            )],
        ),
        (
            "bob: legacy dropped from the file",
            bob,
            vec![(
                "legacy",
                "removed",
                Value::Null,
                "\"legacy\" is not in the new configuration",
            )],
        ),
        (
            "carol: ops's new expression no longer matches; manual lab untouched",
            carol,
            vec![("ops", "removed", Value::Null, "no longer matches")],
        ),
    ];
    for (what, id, want) in expected {
        let got = by_user
            .get(id.as_str())
            .unwrap_or_else(|| panic!("{what}: not in {users:#}"));
        assert_eq!(got.len(), want.len(), "{what}: {got:?}");
        for (g, (org, kind, roles, reason)) in got.iter().zip(want) {
            assert_eq!(
                (g.0.as_str(), g.1.as_str(), &g.2),
                (org, kind, &roles),
                "{what}"
            );
            assert!(
                g.3.contains(reason),
                "{what}: reason {:?} lacks {reason:?}",
                g.3
            );
        }
    }
    assert_eq!(totals["users"], 3);
    assert_eq!(totals["usersChanged"], 3);
    assert_eq!(
        totals["organizations"]["lab"],
        json!({"created": 0, "rolesChanged": 1, "removed": 0})
    );
    assert_eq!(
        totals["organizations"]["ops"],
        json!({"created": 0, "rolesChanged": 0, "removed": 1})
    );
    assert_eq!(
        totals["organizations"]["legacy"],
        json!({"created": 0, "rolesChanged": 0, "removed": 1})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_previews_a_policy_change_on_real_logins_and_writes_nothing() {
    let w = world().await;
    let before = stored(&w.gw).await;

    let out = plan_command(&w.new_path, &["--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
    check_preview(&w, &json["users"], &json["totals"]);

    // The text form: per user, then totals per organization.
    let out = plan_command(&w.new_path, &[]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("user ") && text.contains("(carol@example.com)"),
        "{text}"
    );
    assert!(
        text.contains(
            "  - ops: removed [Member] (policy) -> -  (the policy of \"main\" no longer matches)"
        ),
        "{text}"
    );
    assert!(
        text.contains("  ~ lab: roles changed [Admin] (policy) -> [Administrator] (policy)"),
        "{text}"
    );
    assert!(text.contains("3 users planned: 3 would change"), "{text}");

    // For CI: removals fail the step with exit code 3.
    let out = plan_command(&w.new_path, &["--fail-on-removal"]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("2 memberships would be removed"));
    // The configuration in force removes nothing.
    let out = plan_command(&w.gw.config_path, &["--fail-on-removal"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("no membership would change"));

    // The same preview from the management API, for the store in use.
    let answer = reqwest::Client::new()
        .post(format!("http://{}/api/provisioning/plan", w.gw.admin))
        .header("authorization", format!("Bearer {ADMIN_TOKEN}"))
        .header("content-type", "application/yaml")
        .body(w.new_yaml.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    let body: Value = answer.json().await.unwrap();
    check_preview(&w, &body["users"], &body["totals"]);
    assert_eq!(body["truncated"], false);

    // Nothing was written by any of it.
    assert_eq!(stored(&w.gw).await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_refuses_what_it_cannot_read() {
    let w = world().await;
    let post = |content_type: &'static str, body: String| {
        let admin = w.gw.admin;
        async move {
            let r = reqwest::Client::new()
                .post(format!("http://{admin}/api/provisioning/plan"))
                .header("authorization", format!("Bearer {ADMIN_TOKEN}"))
                .header("content-type", content_type)
                .body(body)
                .send()
                .await
                .unwrap();
            (
                r.status().as_u16(),
                r.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    };
    // A configuration that does not validate: 422 naming the place.
    let invalid = w
        .new_yaml
        .replace("    upstreams:", "    org: nowhere\n    upstreams:");
    let (status, body) = post("application/yaml", invalid.clone()).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["code"], "invalid_config");
    assert!(
        body["errors"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["path"] == "routes[0].org"),
        "{body}"
    );
    // Not YAML by its type.
    let (status, _) = post("application/json", w.new_yaml.clone()).await;
    assert_eq!(status, 415);
    // The command: exit 1 with the place, like `check`.
    let bad = w.gw.dir.path().join("bad.yaml");
    std::fs::write(&bad, &invalid).unwrap();
    let out = plan_command(&bad, &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("routes[0].org"));
    // A store that is not there: said, exit 2, nothing created.
    let elsewhere = w.gw.dir.path().join("elsewhere.yaml");
    std::fs::write(
        &elsewhere,
        w.new_yaml.replace("portcullis.db", "missing.db"),
    )
    .unwrap();
    let out = plan_command(&elsewhere, &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not exist"));
    assert!(!w.gw.dir.path().join("missing.db").exists());
}
