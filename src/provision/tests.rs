//! The provisioning engine, table-driven: every row of the membership
//! table, Pangolin's documented policy examples, Logto's JIT cases, the
//! identifier rules, and property tests.

use crate::test_yaml as yaml;

use portcullis::config::Config;
use portcullis::provision::{
    Decision, ExistingUser, JitMatch, Membership, MembershipSource, Outcome, Plan, jit_from_config,
    plan, plan_traced,
};
use serde_json::{Value, json};

fn config(idp_provisioning: &str, orgs: &str, auto_provision: bool) -> Config {
    yaml::config(&format!(
        r#"identity_providers:
  - id: authentik
    issuer: "https://sso.example.com/"
    client_id: portcullis
    auto_provision: {auto_provision}
{idp_provisioning}
  - id: other
    issuer: "https://other.example.com/"
    client_id: portcullis
organizations:
{orgs}
"#
    ))
}

const TWO_ORGS: &str = r#"  - id: home-lab
    roles: [{name: Admin}, {name: Member}]
  - id: lab-two
    roles: [{name: Admin}, {name: Member}]"#;

/// The claims of Pangolin's auto-provisioning examples.
fn pangolin_claims() -> Value {
    serde_json::from_str(include_str!("../../tests/fixtures/pangolin-claims.json")).unwrap()
}

/// The traced plan (explain's), after checking that a login's plan, which
/// keeps no trace, decides exactly the same.
fn run(c: &Config, claims: &Value, existing: Option<&ExistingUser>) -> Plan {
    let (idp, jit) = (&c.identity_providers[0], jit_from_config(c));
    let traced = plan_traced(c, idp, claims, existing, &jit).unwrap();
    let login = plan(c, idp, claims, existing, &jit).unwrap();
    assert!(login.orgs.is_empty(), "a login's plan keeps no trace");
    let without_trace = |p: &Plan| {
        let mut v = serde_json::to_value(p).unwrap();
        v.as_object_mut().unwrap().remove("orgs");
        v
    };
    assert_eq!(without_trace(&login), without_trace(&traced));
    traced
}

fn member(org: &str, roles: &[&str], source: MembershipSource) -> Membership {
    Membership {
        org: org.into(),
        roles: roles.iter().map(|r| r.to_string()).collect(),
        source,
    }
}

fn existing(memberships: Vec<Membership>) -> ExistingUser {
    ExistingUser {
        memberships,
        identity_is_new: false,
        ..Default::default()
    }
}

fn roles_in(p: &Plan, org: &str) -> Option<(Vec<String>, MembershipSource)> {
    p.memberships
        .iter()
        .find(|m| m.org == org)
        .map(|m| (m.roles.clone(), m.source))
}

fn policy(org: &str, roles: &str) -> String {
    format!("    provisioning:\n      default:\n        org: \"{org}\"\n        roles: \"{roles}\"")
}

#[test]
fn pangolin_role_expression() {
    // home-lab's own policy, as in Pangolin's documentation.
    let prov = r#"    provisioning:
      organizations:
        home-lab:
          org: "contains(groups, 'home-lab')"
          roles: "contains(groups, 'admin') && 'Admin' || 'Member'""#;
    let c = config(prov, TWO_ORGS, true);
    let p = run(&c, &pangolin_claims(), None);
    assert_eq!(
        roles_in(&p, "home-lab"),
        Some((vec!["Admin".into()], MembershipSource::Policy))
    );
    // lab-two has no policy and there is no fallback: not evaluated.
    assert_eq!(roles_in(&p, "lab-two"), None);
    // As a fallback, the same expression is `true` for every org.
    let c = config(
        &policy(
            "contains(groups, 'home-lab')",
            "contains(groups, 'admin') && 'Admin' || 'Member'",
        ),
        TWO_ORGS,
        true,
    );
    let p = run(&c, &pangolin_claims(), None);
    assert!(roles_in(&p, "lab-two").is_some());

    let mut claims = pangolin_claims();
    claims["groups"] = json!(["home-lab"]);
    let p = run(&c, &claims, None);
    assert_eq!(
        roles_in(&p, "home-lab"),
        Some((vec!["Member".into()], MembershipSource::Policy))
    );
}

#[test]
fn pangolin_fixed_org_and_fallback_with_org_id() {
    // A fixed org string matches only the org with that id.
    let c = config(&policy("'home-lab'", "'Member'"), TWO_ORGS, true);
    let p = run(&c, &pangolin_claims(), None);
    assert!(roles_in(&p, "home-lab").is_some());
    assert!(roles_in(&p, "lab-two").is_none());

    // {{orgId}} in the fallback policy: home-lab is in groups, lab-two is not.
    let c = config(
        &policy(
            "contains(groups, '{{orgId}}')",
            "contains(groups, 'admin') && 'Admin' || 'Member'",
        ),
        TWO_ORGS,
        true,
    );
    let p = run(&c, &pangolin_claims(), None);
    assert_eq!(
        roles_in(&p, "home-lab"),
        Some((vec!["Admin".into()], MembershipSource::Policy))
    );
    assert!(roles_in(&p, "lab-two").is_none());
    let lab_two = p.orgs.iter().find(|o| o.org == "lab-two").unwrap();
    assert_eq!(
        lab_two.org_expression.as_ref().unwrap().expression,
        "contains(groups, 'lab-two')"
    );
    assert!(!lab_two.org_matched);
}

#[test]
fn org_expression_must_be_true_or_the_org_id() {
    for (expr, matches) in [
        ("`true`", true),
        ("'home-lab'", true),
        ("'yes'", false),
        ("`1`", false),
        ("groups", false),
        ("`null`", false),
        ("`false`", false),
        ("'HOME-LAB'", false),
    ] {
        let c = config(&policy(expr, "'Member'"), TWO_ORGS, true);
        let p = run(&c, &pangolin_claims(), None);
        assert_eq!(
            roles_in(&p, "home-lab").is_some(),
            matches,
            "org expression {expr}"
        );
    }
}

#[test]
fn role_expression_results() {
    for (expr, expected) in [
        ("'Admin'", Some(vec!["Admin"])),
        (
            "['Member', 'Admin', 'Member']",
            Some(vec!["Admin", "Member"]),
        ),
        ("['  Admin ', '']", Some(vec!["Admin"])),
        ("['Admin', 'Owner']", Some(vec!["Admin"])),
        ("'Owner'", None),
        ("''", None),
        ("`[]`", None),
        ("`1`", None),
        ("`null`", None),
        ("['Admin', `1`]", None),
        ("missing_claim", None),
    ] {
        let c = config(&policy("`true`", expr), TWO_ORGS, true);
        let p = run(&c, &pangolin_claims(), None);
        let got = roles_in(&p, "home-lab").map(|(r, _)| r);
        let expected = expected.map(|v| v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(got, expected, "role expression {expr}");
    }
    let c = config(&policy("`true`", "['Admin', 'Owner']"), TWO_ORGS, true);
    let p = run(&c, &pangolin_claims(), None);
    assert!(
        p.warnings.iter().any(|w| w.contains("\"Owner\"")),
        "{:?}",
        p.warnings
    );
}

#[test]
fn runtime_error_is_a_no_match_for_that_org_only() {
    // lab-two's own expression fails (no `teams` claim); home-lab goes on.
    let prov = r#"    provisioning:
      default:
        org: "contains(groups, '{{orgId}}')"
        roles: "'Member'"
      organizations:
        lab-two:
          org: "contains(teams, 'x')""#;
    let c = config(prov, TWO_ORGS, true);
    let p = run(&c, &pangolin_claims(), None);
    assert!(roles_in(&p, "home-lab").is_some());
    assert!(roles_in(&p, "lab-two").is_none());
    assert_eq!(p.policy_errors.len(), 1);
    assert_eq!(p.policy_errors[0].org, "lab-two");
    assert_eq!(p.policy_errors[0].expression, "contains(teams, 'x')");
    assert_eq!(p.outcome, Outcome::Allowed);
}

#[test]
fn fields_fall_back_one_by_one() {
    // lab-two's own policy has roles but no org: the fallback's org applies.
    let prov = r#"    provisioning:
      default:
        org: "contains(groups, '{{orgId}}')"
        roles: "'Member'"
      organizations:
        home-lab:
          roles: "'Admin'""#;
    let c = config(prov, TWO_ORGS, true);
    let p = run(&c, &pangolin_claims(), None);
    assert_eq!(
        roles_in(&p, "home-lab"),
        Some((vec!["Admin".into()], MembershipSource::Policy))
    );
    // Neither has `org`: the org matches.
    let prov =
        "    provisioning:\n      organizations:\n        lab-two:\n          roles: \"'Member'\"";
    let c = config(prov, TWO_ORGS, true);
    let p = run(&c, &pangolin_claims(), None);
    assert!(roles_in(&p, "lab-two").is_some());
    // Only orgs with a policy are evaluated when there is no fallback.
    assert!(roles_in(&p, "home-lab").is_none());
    assert!(p.orgs.iter().all(|o| o.org != "home-lab"));
}

/// Every row of the membership table (SPEC section 4).
#[test]
fn membership_table() {
    use MembershipSource::*;
    let matching = config(
        &policy("contains(groups, 'home-lab')", "'Admin'"),
        JIT_ORGS,
        true,
    );
    let not_matching = config(
        &policy("contains(groups, 'nope')", "'Admin'"),
        JIT_ORGS,
        true,
    );
    type Row = (
        &'static str,
        bool,
        Option<Membership>,
        Option<(Vec<&'static str>, MembershipSource)>,
        Decision,
    );
    let rows: Vec<Row> = vec![
        (
            "none + match -> created policy",
            true,
            None,
            Some((vec!["Admin"], Policy)),
            Decision::Created,
        ),
        (
            "policy + match -> roles replaced",
            true,
            Some(member("home-lab", &["Member"], Policy)),
            Some((vec!["Admin"], Policy)),
            Decision::RolesChanged,
        ),
        (
            "policy + no match -> removed",
            false,
            Some(member("home-lab", &["Member"], Policy)),
            None,
            Decision::Removed,
        ),
        (
            "jit + match -> becomes policy",
            true,
            Some(member("home-lab", &["Member"], Jit)),
            Some((vec!["Admin"], Policy)),
            Decision::BecamePolicy,
        ),
        (
            "jit + no match -> unchanged",
            false,
            Some(member("home-lab", &["Member"], Jit)),
            Some((vec!["Member"], Jit)),
            Decision::Unchanged,
        ),
        (
            "manual + match -> unchanged",
            true,
            Some(member("home-lab", &["Member"], Manual)),
            Some((vec!["Member"], Manual)),
            Decision::Unchanged,
        ),
        (
            "manual + no match -> unchanged",
            false,
            Some(member("home-lab", &["Member"], Manual)),
            Some((vec!["Member"], Manual)),
            Decision::Unchanged,
        ),
    ];
    for (name, matches, before, expected, decision) in rows {
        let c = if matches { &matching } else { &not_matching };
        // Keep the user alive in another org so the refusal rule does not interfere.
        let mut memberships = vec![member("lab-two", &["Member"], Manual)];
        memberships.extend(before);
        let user = existing(memberships);
        let p = run(c, &pangolin_claims(), Some(&user));
        let expected =
            expected.map(|(r, s)| (r.iter().map(|x| x.to_string()).collect::<Vec<_>>(), s));
        assert_eq!(roles_in(&p, "home-lab"), expected, "{name}");
        let trace = p.orgs.iter().find(|o| o.org == "home-lab").unwrap();
        assert_eq!(trace.decision, decision, "{name}");
    }
    // none + no match + JIT matches -> created jit with default roles
    let p = run(&not_matching, &pangolin_claims(), None);
    assert_eq!(roles_in(&p, "home-lab"), Some((vec!["Member".into()], Jit)));
}

const JIT_ORGS: &str = r#"  - id: home-lab
    roles: [{name: Admin}, {name: Member}]
    jit:
      email_domains: [example.com]
      default_roles: [Member]
  - id: lab-two
    roles: [{name: Admin}, {name: Member}]
    jit:
      sso_connectors: [authentik]
      default_roles: [Member]"#;

const NO_POLICY: &str = "";

#[test]
fn logto_email_domain_jit() {
    let c = config(NO_POLICY, JIT_ORGS, true);
    let p = run(&c, &pangolin_claims(), None);
    let home = p.orgs.iter().find(|o| o.org == "home-lab").unwrap();
    assert_eq!(home.jit, Some(JitMatch::EmailDomain("example.com".into())));
    assert_eq!(
        roles_in(&p, "home-lab"),
        Some((vec!["Member".into()], MembershipSource::Jit))
    );

    for (email, verified, joins) in [
        ("user@EXAMPLE.com", json!(true), true),
        ("user@example.com", json!(false), false),
        ("user@example.com", json!("true"), false),
        ("user@example.com", Value::Null, false),
        ("user@sub.example.com", json!(true), false),
        ("user@example.com.evil.test", json!(true), false),
        ("a@b@example.com", json!(true), false),
        ("example.com", json!(true), false),
    ] {
        let mut claims = pangolin_claims();
        claims["email"] = json!(email);
        claims["email_verified"] = verified.clone();
        let p = run(&c, &claims, None);
        assert_eq!(
            roles_in(&p, "home-lab").is_some(),
            joins,
            "{email} verified={verified}"
        );
    }
    // An existing user is not provisioned by a domain (e.g. added later).
    let user = existing(vec![member(
        "lab-two",
        &["Member"],
        MembershipSource::Manual,
    )]);
    let p = run(&c, &pangolin_claims(), Some(&user));
    assert!(roles_in(&p, "home-lab").is_none());
}

#[test]
fn logto_sso_connector_jit() {
    let c = config(NO_POLICY, JIT_ORGS, true);
    let mut claims = pangolin_claims();
    claims["email"] = json!("someone@elsewhere.test");
    // New user through the connector.
    let p = run(&c, &claims, None);
    assert_eq!(
        roles_in(&p, "lab-two"),
        Some((vec!["Member".into()], MembershipSource::Jit))
    );
    // Existing (pre-provisioned) user, first login with this identity.
    let user = ExistingUser {
        memberships: vec![member("home-lab", &["Admin"], MembershipSource::Manual)],
        identity_is_new: true,
        ..Default::default()
    };
    let p = run(&c, &claims, Some(&user));
    assert_eq!(
        roles_in(&p, "lab-two"),
        Some((vec!["Member".into()], MembershipSource::Jit))
    );
    // Existing user, identity seen before: not again.
    let user = existing(vec![member(
        "home-lab",
        &["Admin"],
        MembershipSource::Manual,
    )]);
    let p = run(&c, &claims, Some(&user));
    assert!(roles_in(&p, "lab-two").is_none());
    // Through another IdP: no.
    let p = plan(
        &c,
        &c.identity_providers[1],
        &claims,
        None,
        &jit_from_config(&c),
    )
    .unwrap();
    assert!(roles_in(&p, "lab-two").is_none());
}

#[test]
fn duplicate_jit_entries_give_one_membership() {
    let orgs = r#"  - id: home-lab
    roles: [{name: Admin}, {name: Member}]
    jit:
      email_domains: [example.com, EXAMPLE.COM, example.com]
      sso_connectors: [authentik, authentik]
      default_roles: [Member, Member]"#;
    let c = config(NO_POLICY, orgs, true);
    let p = run(&c, &pangolin_claims(), None);
    assert_eq!(
        p.memberships,
        vec![member("home-lab", &["Member"], MembershipSource::Jit)]
    );
    assert_eq!(p.changes.len(), 1);
}

#[test]
fn refusal_without_membership_and_auto_provision_off() {
    let c = config(
        &policy("contains(groups, 'nope')", "'Admin'"),
        TWO_ORGS,
        true,
    );
    let p = run(&c, &pangolin_claims(), None);
    assert_eq!(p.outcome, Outcome::NoMembership);
    assert!(p.changes.is_empty(), "a refused new user is not created");

    let c = config(&policy("`true`", "'Admin'"), TWO_ORGS, false);
    let p = run(&c, &pangolin_claims(), None);
    assert_eq!(p.outcome, Outcome::UnknownUser);
    assert!(p.changes.is_empty());
    let user = existing(vec![member(
        "home-lab",
        &["Member"],
        MembershipSource::Manual,
    )]);
    let p = run(&c, &pangolin_claims(), Some(&user));
    assert_eq!(p.outcome, Outcome::Allowed);
    assert!(
        p.changes.is_empty(),
        "auto_provision: false changes nothing"
    );
    // Even a policy membership is left alone.
    let user = existing(vec![member(
        "lab-two",
        &["Member"],
        MembershipSource::Policy,
    )]);
    let p = run(&c, &json!({"sub": "x", "groups": []}), Some(&user));
    assert_eq!(roles_in(&p, "lab-two").unwrap().1, MembershipSource::Policy);
}

#[test]
fn identity_comes_from_the_idp_expressions() {
    let c = config(&policy("`true`", "'Admin'"), TWO_ORGS, true);
    let p = run(&c, &pangolin_claims(), None);
    assert_eq!(p.identity.subject, "9590c3bf-8b6e-4f5c-a7b2-1f0c2d3e4a5b");
    assert_eq!(p.identity.email.as_deref(), Some("user@example.com"));
    assert!(p.identity.email_verified);
    assert_eq!(p.identity.name.as_deref(), Some("Example User"));
    let err = plan(
        &c,
        &c.identity_providers[0],
        &json!({"email": "x@y"}),
        None,
        &jit_from_config(&c),
    );
    assert!(err.is_err());
    let err = plan(
        &c,
        &c.identity_providers[0],
        &json!(["not", "an", "object"]),
        None,
        &jit_from_config(&c),
    );
    assert!(err.is_err());
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    fn claims_strategy() -> impl Strategy<Value = Value> {
        (
            proptest::collection::vec(prop_oneof!["home-lab", "lab-two", "admin", "x", ""], 0..5),
            prop_oneof!["u@example.com", "u@other.test", "bad", "a@b@c"],
            any::<bool>(),
        )
            .prop_map(|(groups, email, verified)| {
                json!({"sub": "s1", "email": email, "email_verified": verified, "groups": groups})
            })
    }

    fn source_strategy() -> impl Strategy<Value = MembershipSource> {
        prop_oneof![
            Just(MembershipSource::Manual),
            Just(MembershipSource::Policy),
            Just(MembershipSource::Jit)
        ]
    }

    fn existing_strategy() -> impl Strategy<Value = Option<ExistingUser>> {
        proptest::option::of(
            (
                proptest::collection::vec(
                    (
                        prop_oneof!["home-lab", "lab-two", "gone-org"],
                        source_strategy(),
                        prop_oneof!["Admin", "Member"],
                    ),
                    0..3,
                ),
                any::<bool>(),
            )
                .prop_map(|(ms, identity_is_new)| {
                    let mut seen = std::collections::BTreeSet::new();
                    ExistingUser {
                        memberships: ms
                            .into_iter()
                            .filter(|(o, _, _)| seen.insert(o.to_string()))
                            .map(|(o, s, r)| member(&o, &[&r], s))
                            .collect(),
                        identity_is_new,
                        ..Default::default()
                    }
                }),
        )
    }

    fn engine_config() -> Config {
        let prov = r#"    provisioning:
      default:
        org: "contains(groups, '{{orgId}}')"
        roles: "contains(groups, 'admin') && ['Admin', 'Member'] || 'Member'""#;
        config(prov, JIT_ORGS, true)
    }

    proptest! {
        #[test]
        fn replanning_the_result_changes_nothing(claims in claims_strategy(), before in existing_strategy()) {
            let c = engine_config();
            let first = run(&c, &claims, before.as_ref());
            prop_assume!(first.outcome == Outcome::Allowed);
            let again = existing(first.memberships.clone());
            let second = run(&c, &claims, Some(&again));
            prop_assert!(second.changes.is_empty(), "{:?}", second.changes);
            prop_assert_eq!(second.memberships, first.memberships);
        }

        #[test]
        fn manual_memberships_are_never_touched(claims in claims_strategy(), before in existing_strategy()) {
            let c = engine_config();
            let p = run(&c, &claims, before.as_ref());
            for m in before.iter().flat_map(|b| &b.memberships).filter(|m| m.source == MembershipSource::Manual) {
                prop_assert!(p.memberships.contains(m));
                prop_assert!(p.changes.iter().all(|ch| ch.org != m.org));
            }
        }

        #[test]
        fn no_org_outside_the_config_is_produced(claims in claims_strategy(), before in existing_strategy()) {
            let c = engine_config();
            let p = run(&c, &claims, before.as_ref());
            for ch in &p.changes {
                prop_assert!(c.organization(&ch.org).is_some(), "{}", ch.org);
            }
            for m in &p.memberships {
                let carried = before.iter().flat_map(|b| &b.memberships).any(|b| b == m);
                prop_assert!(c.organization(&m.org).is_some() || carried);
            }
        }
    }
}
/// An identifier read from an email claim counts only while the email is
/// verified; the IdP's `sub` counts whatever it looks like.
#[test]
fn identifiers_from_unverified_emails_are_refused_table() {
    use portcullis::provision::{ProvisionError, identity_from_claims};
    for (identifier, claims, accepted) in [
        (
            "sub",
            json!({"sub": "s1", "email": "a@x.example", "email_verified": false}),
            true,
        ),
        (
            "sub",
            json!({"sub": "a@x.example", "email": "a@x.example", "email_verified": false}),
            true,
        ),
        (
            "email",
            json!({"sub": "s1", "email": "a@x.example", "email_verified": true}),
            true,
        ),
        (
            "email",
            json!({"sub": "s1", "email": "a@x.example", "email_verified": false}),
            false,
        ),
        (
            "email",
            json!({"sub": "s1", "email": "a@x.example", "email_verified": "true"}),
            false,
        ),
        ("email", json!({"sub": "s1", "email": "a@x.example"}), false),
        (
            "emails[0]",
            json!({"sub": "s1", "emails": ["a@x.example"]}),
            false,
        ),
        (
            "preferred_username",
            json!({"sub": "s1", "preferred_username": "ann"}),
            true,
        ),
    ] {
        let c = yaml::config(&format!(
            "identity_providers:\n  - {{id: i, issuer: \"https://i.example/\", client_id: c, identifier: \"{identifier}\"}}\n"
        ));
        let got = identity_from_claims(&c.identity_providers[0], &claims);
        assert_eq!(got.is_ok(), accepted, "{identifier} {claims}: {got:?}");
        if !accepted {
            assert!(
                matches!(got, Err(ProvisionError::UnverifiedEmailIdentifier { .. })),
                "{got:?}"
            );
        }
    }
}
