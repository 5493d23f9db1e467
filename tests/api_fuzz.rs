//! The management API against its own OpenAPI document, fuzzed by
//! schemathesis (PyPI, installed by `./dev test` into `.venv`): no answer
//! is a 5xx, and every answer matches the document (status, content type,
//! headers, body schema), with and without the admin token; calls without
//! it are refused; invalid input is rejected.

mod support;

use std::process::Command;

use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_management_api_survives_schemathesis_and_matches_its_document() {
    let bin = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/schemathesis");
    assert!(
        bin.exists(),
        "schemathesis is not installed: run the tests with `./dev test` (it installs it into .venv)"
    );
    let upstream = start_echo("app").await;
    let gw = Gateway::start(&config_with(&format!(
        r#"identity_providers:
  - id: corp-idp
    issuer: "https://sso.example.com/"
    client_id: portcullis
organizations:
  - id: corp
    roles: [{{name: Admin}}, {{name: Member}}]
    jit: {{email_domains: [company.com], default_roles: [Member]}}
routes:
  - name: app
    hosts: ["app.test"]
    upstreams: ["{upstream}"]
    org: corp
"#
    )))
    .await;
    let schema = format!("http://{}/api/openapi.json", gw.admin);
    let out = tokio::task::spawn_blocking(move || {
        Command::new(bin)
            .args(["run", &schema])
            .args(["--header", &format!("Authorization: Bearer {ADMIN_TOKEN}")])
            .args(["--checks", "all"])
            // "Schema-valid request rejected": the API validates more than a
            // schema can say (a domain name, a role the organization
            // declares, an IdP that exists) and answers 400/422 for it, as
            // the document lists.
            .args(["--exclude-checks", "positive_data_acceptance"])
            .args([
                "--max-examples",
                "25",
                "--generation-deterministic",
                "--no-color",
            ])
            .args(["--request-timeout", "10"])
            .env("SCHEMATHESIS_HOOKS", "")
            .output()
            .expect("schemathesis runs")
    })
    .await
    .unwrap();
    let report = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "schemathesis found problems:\n{report}"
    );
    // It ran: every operation it selected was tested, and it selected all
    // of the document's (the document's own endpoint aside).
    let selected = report
        .lines()
        .find_map(|l| l.trim().strip_prefix("Selected: "))
        .unwrap_or_else(|| panic!("no summary:\n{report}"));
    let (picked, total) = selected.split_once('/').unwrap();
    assert_eq!(picked, total, "{report}");
    assert!(report.contains(&format!("Tested: {total}")), "{report}");
    let doc = gw
        .api(reqwest::Method::GET, "/api/openapi.json", None)
        .await
        .body;
    let operations: usize = doc["paths"]
        .as_object()
        .unwrap()
        .values()
        .map(|p| p.as_object().unwrap().len())
        .sum();
    assert_eq!(total.parse::<usize>().unwrap() + 1, operations, "{report}");
    eprintln!(
        "{}",
        report.lines().rev().take(12).collect::<Vec<_>>().join("\n")
    );
    drop(gw);
}
