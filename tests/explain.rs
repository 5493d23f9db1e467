//! `portcullis explain`: the command prints the engine's plan, and reads
//! the store as a login would.

#[path = "support/yaml.rs"]
mod yaml;

use portcullis::provision::{Membership, MembershipSource};
use serde_json::{Value, json};

/// The claims of Pangolin's auto-provisioning examples.
fn pangolin_claims() -> Value {
    serde_json::from_str(include_str!("fixtures/pangolin-claims.json")).unwrap()
}

#[test]
fn explain_command_prints_the_same_plan() {
    let dir = tempfile::tempdir().unwrap();
    let claims = dir.path().join("claims.json");
    std::fs::write(&claims, pangolin_claims().to_string()).unwrap();
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/config.example.yaml");
    let explain_at = |idp: &str, extra: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
            .args(["explain", "--config", example, "--idp", idp, "--claims"])
            .arg(&claims)
            .args(extra)
            .env("PORTCULLIS_ADMIN_TOKEN", "an-admin-token-of-some-length")
            .env(
                "PORTCULLIS_SESSION_SECRET",
                "0123456789abcdef0123456789abcdef",
            )
            .env("AUTHENTIK_SECRET", "a")
            .env("KEYCLOAK_SECRET", "k")
            .output()
            .unwrap()
    };
    let explain = |extra: &[&str]| explain_at("authentik", extra);
    let out = explain(&["--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let plan: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(plan["outcome"]["outcome"], "allowed");
    assert_eq!(plan["memberships"][0]["org"], "home-lab");
    assert_eq!(plan["memberships"][0]["source"], "policy");
    let home = &plan["orgs"][0];
    assert_eq!(home["policy"], "organization");
    assert_eq!(home["org_expression"]["result"], true);
    assert_eq!(home["jit"]["by"], "email_domain");

    let out = explain(&["--existing-user"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("user: existing"), "{text}");
    assert!(
        text.contains("organization home-lab — its own policy"),
        "{text}"
    );
    // contractors has its own `roles` but no `org`: that field falls back.
    assert!(
        text.contains("organization contractors — its own policy"),
        "{text}"
    );
    assert!(
        text.contains("contains(groups, 'contractors') [fallback] => false"),
        "{text}"
    );
    assert!(
        !text.contains("jit    email domain"),
        "existing users get no email-domain JIT:\n{text}"
    );

    let out = explain_at("nope", &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no identity provider \"nope\""));
    // A usage error is invalid input too: exit 1.
    let out = explain(&["--no-such-flag"]);
    assert_eq!(out.status.code(), Some(1));
}

/// `explain` plans with what a login would see: the JIT entries added
/// through the management API, and with `--existing-user` the user's
/// stored memberships.
#[tokio::test]
async fn explain_command_reads_the_store_like_a_login() {
    use portcullis::config::StoreKind;
    use portcullis::store::{JitList, NewUser, Store};
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}/portcullis.db", dir.path().display());
    let yaml = format!(
        r#"store: {{url: "{db}"}}
identity_providers:
  - {{id: corp-idp, issuer: "https://sso.example.com/", client_id: portcullis}}
organizations:
  - id: corp
    roles: [{{name: Admin}}, {{name: Member}}]
    jit: {{default_roles: [Member]}}
  - id: ops
    roles: [{{name: Member}}]
"#
    );
    let config_path = dir.path().join("portcullis.yaml");
    std::fs::write(&config_path, yaml::minimal(&yaml)).unwrap();
    let claims = dir.path().join("claims.json");
    std::fs::write(
        &claims,
        json!({"sub": "ann", "email": "ann@added.example", "email_verified": true}).to_string(),
    )
    .unwrap();
    let explain = |extra: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
            .args(["explain", "--json", "--idp", "corp-idp", "--config"])
            .arg(&config_path)
            .arg("--claims")
            .arg(&claims)
            .args(extra)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<Value>(&out.stdout).unwrap()
    };
    // No store yet: the file alone, and no file is created by a dry run.
    assert_eq!(explain(&[])["outcome"]["outcome"], "no_membership");
    assert!(!dir.path().join("portcullis.db").exists());

    let store = Store::open(&db, StoreKind::Sqlite).await.unwrap();
    store
        .jit_add(
            "corp",
            JitList::EmailDomains,
            &["added.example".into()],
            "token:0",
        )
        .await
        .unwrap();
    let plan = explain(&[]);
    assert_eq!(plan["outcome"]["outcome"], "allowed", "{plan}");
    assert_eq!(plan["memberships"][0]["org"], "corp");
    assert_eq!(plan["memberships"][0]["source"], "jit");

    store
        .create_user(
            &NewUser {
                idp: "corp-idp".into(),
                subject: Some("ann".into()),
                email: Some("ann@added.example".into()),
                name: None,
                memberships: vec![Membership {
                    org: "ops".into(),
                    roles: vec!["Member".into()],
                    source: MembershipSource::Manual,
                }],
            },
            "token:0",
        )
        .await
        .unwrap();
    let plan = explain(&["--existing-user"]);
    // An existing user: no email-domain JIT, the manual membership kept.
    assert_eq!(plan["new_user"], false);
    assert_eq!(plan["outcome"]["outcome"], "allowed", "{plan}");
    let orgs: Vec<(&str, &str)> = plan["memberships"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["org"].as_str().unwrap(), m["source"].as_str().unwrap()))
        .collect();
    assert_eq!(orgs, vec![("ops", "manual")]);
}
