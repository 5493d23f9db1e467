//! `portcullis test`: the example case file passes against the example
//! configuration; failing cases print a diff and fail the run; a JUnit
//! report is written for CI; malformed case files are refused with the
//! place of each problem.

use std::path::Path;
use std::process::{Command, Output};

const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/config.example.yaml");
const CASES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/policy-tests.yaml");

fn run(cases: &Path, junit: Option<&Path>) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_portcullis"));
    c.args(["test", "--config", EXAMPLE])
        .arg(cases)
        .env("PORTCULLIS_ADMIN_TOKEN", "an-admin-token-of-some-length")
        .env(
            "PORTCULLIS_SESSION_SECRET",
            "0123456789abcdef0123456789abcdef",
        )
        .env("AUTHENTIK_SECRET", "a")
        .env("KEYCLOAK_SECRET", "k");
    if let Some(j) = junit {
        c.arg("--junit").arg(j);
    }
    c.output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn the_example_cases_pass_and_report_to_junit() {
    let dir = tempfile::tempdir().unwrap();
    let junit = dir.path().join("report.xml");
    let out = run(Path::new(CASES), Some(&junit));
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains("6 cases: 6 passed, 0 failed"), "{stdout}");
    assert!(!stdout.contains("FAIL"), "{stdout}");
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(
        xml.contains("<testsuites tests=\"6\" failures=\"0\">"),
        "{xml}"
    );
}

#[test]
fn a_failing_case_prints_its_diff_and_fails_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let cases = dir.path().join("cases.yaml");
    std::fs::write(
        &cases,
        r#"cases:
  - name: lab admins
    idp: authentik
    claims: {sub: "u1", email: a@example.com, email_verified: true, groups: [home-lab, lab-admins]}
    expect: {home-lab: [Admin, Member]}
  - name: admins of contractors too (wrong)
    idp: authentik
    claims: {sub: "u1", email: a@example.com, email_verified: true, groups: [home-lab, lab-admins]}
    expect: {home-lab: [Admin], contractors: [Viewer]}
  - name: outsiders refused (wrong)
    idp: authentik
    claims: {sub: "u9", email: z@example.com, email_verified: true, groups: []}
    expect: refused
"#,
    )
    .unwrap();
    let junit = dir.path().join("report.xml");
    let out = run(&cases, Some(&junit));
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("ok    lab admins"), "{stdout}");
    // Each difference on a line of its own: what was expected, what came.
    for line in [
        "FAIL  admins of contractors too (wrong)",
        "  - contractors: [Viewer]   (expected, not a member)",
        "  ~ home-lab: expected [Admin], got [Admin, Member]",
        "FAIL  outsiders refused (wrong)",
        "  expected: refused",
        "    home-lab: [Member]",
        "3 cases: 1 passed, 2 failed",
    ] {
        assert!(stdout.contains(line), "{line:?} not in:\n{stdout}");
    }
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(xml.contains("failures=\"2\""), "{xml}");
    assert!(
        xml.contains("<failure message=\"memberships differ\">"),
        "{xml}"
    );
}

#[test]
fn malformed_case_files_are_refused_with_the_place() {
    let dir = tempfile::tempdir().unwrap();
    // (what, file, words of the error)
    let table = [
        (
            "a misspelt key",
            "cases:\n  - name: a\n    idp: authentik\n    claims: {}\n    expected: refused\n",
            "cases[0]: unknown field `expected`",
        ),
        (
            "an IdP the configuration lacks",
            "cases:\n  - name: a\n    idp: okta\n    claims: {}\n    expect: refused\n",
            "cases[0].idp: no identity provider \"okta\" in the configuration",
        ),
        (
            "roles that are not a list",
            "cases:\n  - name: a\n    idp: authentik\n    claims: {}\n    expect: {home-lab: 7}\n",
            "cases[0].expect",
        ),
        ("broken YAML", "cases:\n  - name: [a\n", "line 2"),
    ];
    for (what, body, needle) in table {
        let cases = dir.path().join("cases.yaml");
        std::fs::write(&cases, body).unwrap();
        let out = run(&cases, None);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{what}: {stderr}");
        assert!(
            stderr.contains("cases.yaml"),
            "{what}: the file is not named: {stderr}"
        );
        assert!(
            stderr.contains(needle),
            "{what}: {needle:?} not in {stderr}"
        );
    }
}
