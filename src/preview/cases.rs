//! Policy tests (`portcullis test --config FILE CASES.yaml`): a YAML table
//! of logins and the memberships each must end with, run through the
//! provisioning engine a login runs. A case file:
//!
//! ```yaml
//! cases:
//!   - name: admins of home-lab
//!     idp: authentik
//!     claims: {sub: "1", email: a@example.com, email_verified: true, groups: [home-lab, admin]}
//!     expect: {home-lab: [Admin]}
//!   - name: an existing member loses the group
//!     idp: authentik
//!     claims: {sub: "2", groups: []}
//!     before: {home-lab: {roles: [Member], source: policy}}
//!     expect: refused
//! ```
//!
//! `before` (the memberships the user has; a list of roles is a `policy`
//! membership) makes the user an existing one; `new_user: true|false`
//! says so outright, and `first_login: true` marks an existing user's
//! first login through this IdP (SSO-connector JIT). JIT rules are the
//! file's.

use std::collections::BTreeMap;
use std::fmt::Write;

use serde::Deserialize;
use serde_json::Value;

use crate::config::{Config, Problem};
use crate::provision::{self, ExistingUser, Membership, MembershipSource, Outcome};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaseFile {
    pub cases: Vec<Case>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    pub name: String,
    pub idp: String,
    pub claims: serde_yaml::Value,
    #[serde(default)]
    pub before: Option<BTreeMap<String, Before>>,
    #[serde(default)]
    pub new_user: Option<bool>,
    #[serde(default)]
    pub first_login: bool,
    pub expect: Expect,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Before {
    Roles(Vec<String>),
    Full {
        roles: Vec<String>,
        #[serde(default = "policy")]
        source: MembershipSource,
    },
}

fn policy() -> MembershipSource {
    MembershipSource::Policy
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Expect {
    Memberships(BTreeMap<String, Vec<String>>),
    Word(String),
}

/// Why a case file cannot be run: each problem with its place in the file.
#[derive(Debug, thiserror::Error)]
#[error("{file}:\n{}", .problems.iter().map(|p| format!("  {p}")).collect::<Vec<_>>().join("\n"))]
pub struct CaseFileError {
    pub file: String,
    pub problems: Vec<Problem>,
}

/// One case's outcome.
#[derive(Debug, Clone)]
pub struct CaseResult {
    pub name: String,
    /// `None`: passed. Else what differs, one line each.
    pub failure: Option<String>,
}

/// Parses a case file and checks every case against `config` (its IdP
/// exists, its expectation is memberships or `refused`).
pub fn parse(text: &str, file: &str, config: &Config) -> Result<Vec<Case>, CaseFileError> {
    let fail = |path: String, message: String| CaseFileError {
        file: file.to_string(),
        problems: vec![Problem::new(path, message)],
    };
    let de = serde_yaml::Deserializer::from_str(text);
    let parsed: CaseFile = serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let at = inner
            .location()
            .map(|l| format!(" (line {}, column {})", l.line(), l.column()))
            .unwrap_or_default();
        let message = inner.to_string();
        // serde_yaml says where itself; the path says which case.
        let message = message
            .split(" at line ")
            .next()
            .unwrap_or(&message)
            .to_string();
        fail(
            if path == "." { String::new() } else { path },
            format!("{message}{at}"),
        )
    })?;
    let mut problems = Vec::new();
    if parsed.cases.is_empty() {
        problems.push(Problem::new("cases", "the file has no cases"));
    }
    let mut names = std::collections::BTreeSet::new();
    for (i, c) in parsed.cases.iter().enumerate() {
        let at = |field: &str| format!("cases[{i}].{field}");
        if !names.insert(c.name.as_str()) {
            problems.push(Problem::new(
                at("name"),
                format!("{:?} names another case too", c.name),
            ));
        }
        if config.identity_provider(&c.idp).is_none() {
            problems.push(Problem::new(
                at("idp"),
                format!("no identity provider {:?} in the configuration", c.idp),
            ));
        }
        if !c.claims.is_mapping() {
            problems.push(Problem::new(at("claims"), "the claims must be a mapping"));
        }
        if c.new_user == Some(true) && c.before.is_some() {
            problems.push(Problem::new(
                at("before"),
                "a new user has no memberships before",
            ));
        }
        if c.new_user == Some(true) && c.first_login {
            problems.push(Problem::new(
                at("first_login"),
                "is for existing users: a new user's login is always their first",
            ));
        }
        if let Expect::Word(w) = &c.expect
            && w != "refused"
        {
            problems.push(Problem::new(
                at("expect"),
                format!("{w:?}: expected memberships ({{org: [roles]}}) or refused"),
            ));
        }
    }
    if problems.is_empty() {
        Ok(parsed.cases)
    } else {
        Err(CaseFileError {
            file: file.to_string(),
            problems,
        })
    }
}

fn roles_text(roles: &[String]) -> String {
    format!("[{}]", roles.join(", "))
}

/// Runs one case.
pub fn run(config: &Config, case: &Case) -> CaseResult {
    let result = |failure| CaseResult {
        name: case.name.clone(),
        failure,
    };
    let Some(idp) = config.identity_provider(&case.idp) else {
        return result(Some(format!("no identity provider {:?}", case.idp)));
    };
    let claims: Value = match serde_json::to_value(&case.claims) {
        Ok(v) => v,
        Err(e) => return result(Some(format!("the claims are not JSON: {e}"))),
    };
    let existing = match (case.new_user, &case.before) {
        (Some(true), _) | (None, None) => None,
        _ => Some(ExistingUser {
            memberships: case
                .before
                .iter()
                .flatten()
                .map(|(org, b)| {
                    let (roles, source) = match b {
                        Before::Roles(r) => (r.clone(), MembershipSource::Policy),
                        Before::Full { roles, source } => (roles.clone(), *source),
                    };
                    let mut roles = roles;
                    roles.sort();
                    roles.dedup();
                    Membership {
                        org: org.clone(),
                        roles,
                        source,
                    }
                })
                .collect(),
            identity_is_new: case.first_login,
            directory: None,
            deactivated: false,
        }),
    };
    let jit = provision::jit_from_config(config);
    let got: Result<BTreeMap<String, Vec<String>>, String> =
        match provision::plan(config, idp, &claims, existing.as_ref(), &jit) {
            Err(e) => Err(e.to_string()),
            Ok(p) if p.outcome != Outcome::Allowed => Err(match p.outcome {
                Outcome::UnknownUser => "no such user, and auto_provision is off".into(),
                Outcome::NoMembership => "not a member of any organization".into(),
                Outcome::Deactivated => "deactivated".into(),
                Outcome::Allowed => unreachable!(),
            }),
            Ok(p) => Ok(p
                .memberships
                .into_iter()
                .map(|m| (m.org, m.roles))
                .collect()),
        };
    let failure = match (&case.expect, got) {
        (Expect::Word(_), Err(_)) => None,
        (Expect::Word(_), Ok(got)) => {
            let mut d = String::from("  expected: refused\n  got:\n");
            for (org, roles) in &got {
                let _ = writeln!(d, "    {org}: {}", roles_text(roles));
            }
            Some(d)
        }
        (Expect::Memberships(_), Err(why)) => {
            Some(format!("  expected memberships, got: refused ({why})\n"))
        }
        (Expect::Memberships(want), Ok(got)) => {
            let want: BTreeMap<&String, Vec<String>> = want
                .iter()
                .map(|(o, r)| {
                    let mut r = r.clone();
                    r.sort();
                    r.dedup();
                    (o, r)
                })
                .collect();
            let mut d = String::new();
            let orgs: std::collections::BTreeSet<&String> =
                want.keys().copied().chain(got.keys()).collect();
            for org in orgs {
                match (want.get(org), got.get(org)) {
                    (Some(w), None) => {
                        let _ =
                            writeln!(d, "  - {org}: {}   (expected, not a member)", roles_text(w));
                    }
                    (None, Some(g)) => {
                        let _ =
                            writeln!(d, "  + {org}: {}   (a member, not expected)", roles_text(g));
                    }
                    (Some(w), Some(g)) if w != g => {
                        let _ = writeln!(
                            d,
                            "  ~ {org}: expected {}, got {}",
                            roles_text(w),
                            roles_text(g)
                        );
                    }
                    _ => {}
                }
            }
            (!d.is_empty()).then_some(d)
        }
    };
    result(failure)
}

fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if (c as u32) < 0x20 && !matches!(c, '\n' | '\t' | '\r') => {}
            c => out.push(c),
        }
    }
    out
}

/// The results as a JUnit XML report, for CI systems.
pub fn junit(suite: &str, results: &[CaseResult]) -> String {
    let failures = results.iter().filter(|r| r.failure.is_some()).count();
    let mut out = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites tests=\"{}\" failures=\"{failures}\">\n  <testsuite name=\"{}\" tests=\"{}\" failures=\"{failures}\">\n",
        results.len(),
        xml_escape(suite),
        results.len()
    );
    for r in results {
        let _ = write!(
            out,
            "    <testcase classname=\"{}\" name=\"{}\"",
            xml_escape(suite),
            xml_escape(&r.name)
        );
        match &r.failure {
            None => out.push_str("/>\n"),
            Some(f) => {
                let _ = write!(
                    out,
                    ">\n      <failure message=\"memberships differ\">{}</failure>\n    </testcase>\n",
                    xml_escape(f)
                );
            }
        }
    }
    out.push_str("  </testsuite>\n</testsuites>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        crate::test_yaml::config(&format!(
            "{}{}",
            crate::test_yaml::MAIN_IDP,
            r#"organizations:
  - id: lab
    roles: [{name: Admin}, {name: Member}]
"#
        ))
    }

    fn results(text: &str) -> Vec<(String, Option<String>)> {
        let c = config();
        parse(text, "cases.yaml", &c)
            .unwrap_or_else(|e| panic!("{e}"))
            .iter()
            .map(|case| {
                let r = run(&c, case);
                (r.name, r.failure)
            })
            .collect()
    }

    #[test]
    fn cases_pass_and_fail_with_a_diff() {
        let got = results(
            r#"cases:
  - name: admin
    idp: main
    claims: {sub: "1", groups: [lab, admin]}
    expect: {lab: [Admin]}
  - name: wrong role expected
    idp: main
    claims: {sub: "1", groups: [lab]}
    expect: {lab: [Admin]}
  - name: stranger refused
    idp: main
    claims: {sub: "2", groups: []}
    expect: refused
  - name: manual membership stays
    idp: main
    claims: {sub: "3", groups: []}
    before: {lab: {roles: [Admin], source: manual}}
    expect: {lab: [Admin]}
  - name: policy membership goes
    idp: main
    claims: {sub: "3", groups: []}
    before: {lab: [Member]}
    expect: {lab: [Member]}
"#,
        );
        assert_eq!(got[0], ("admin".into(), None));
        assert_eq!(
            got[1].1.as_deref(),
            Some("  ~ lab: expected [Admin], got [Member]\n")
        );
        assert_eq!(got[2], ("stranger refused".into(), None));
        assert_eq!(got[3], ("manual membership stays".into(), None));
        assert_eq!(
            got[4].1.as_deref(),
            Some("  expected memberships, got: refused (not a member of any organization)\n")
        );
    }

    #[test]
    fn malformed_case_files_are_located() {
        let c = config();
        // (what, file, the problem's path and words)
        let cases = [
            (
                "unknown field",
                "cases:\n  - name: a\n    idp: main\n    claims: {}\n    expct: refused\n",
                "cases[0]: unknown field `expct`",
            ),
            (
                "line and column",
                "cases:\n  - name: a\n    idp: main\n    claims: {}\n    expct: refused\n",
                "line 5, column 5",
            ),
            (
                "unknown idp",
                "cases:\n  - name: a\n    idp: nope\n    claims: {}\n    expect: refused\n",
                "cases[0].idp: no identity provider \"nope\"",
            ),
            (
                "bad expectation",
                "cases:\n  - name: a\n    idp: main\n    claims: {}\n    expect: allowed\n",
                "cases[0].expect: \"allowed\"",
            ),
            (
                "claims not a mapping",
                "cases:\n  - name: a\n    idp: main\n    claims: [1]\n    expect: refused\n",
                "cases[0].claims: the claims must be a mapping",
            ),
            (
                "new user with memberships",
                "cases:\n  - name: a\n    idp: main\n    claims: {}\n    new_user: true\n    before: {lab: [Member]}\n    expect: refused\n",
                "cases[0].before: a new user has no memberships before",
            ),
            (
                "duplicate names",
                "cases:\n  - {name: a, idp: main, claims: {}, expect: refused}\n  - {name: a, idp: main, claims: {}, expect: refused}\n",
                "cases[1].name",
            ),
            ("no cases", "cases: []\n", "cases: the file has no cases"),
            ("not YAML", "cases: [unclosed\n", "cases.yaml"),
        ];
        for (what, text, needle) in cases {
            let e = parse(text, "cases.yaml", &c).expect_err(what).to_string();
            assert!(e.contains(needle), "{what}: {e:?} lacks {needle:?}");
        }
    }

    #[test]
    fn junit_report_escapes_and_counts() {
        let xml = junit(
            "cases.yaml",
            &[
                CaseResult {
                    name: "a <b>".into(),
                    failure: None,
                },
                CaseResult {
                    name: "c".into(),
                    failure: Some("  ~ lab: expected [A & B]\n".into()),
                },
            ],
        );
        assert!(
            xml.contains("<testsuites tests=\"2\" failures=\"1\">"),
            "{xml}"
        );
        assert!(xml.contains("name=\"a &lt;b&gt;\"/>"), "{xml}");
        assert!(
            xml.contains(
                "<failure message=\"memberships differ\">  ~ lab: expected [A &amp; B]\n</failure>"
            ),
            "{xml}"
        );
    }
}
