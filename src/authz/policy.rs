//! A route's policy for an authenticated user: `org`, `allow_roles`,
//! `allow_if`. Pure: the user's roles and stored claims in, a verdict out.

use crate::config::Route;

/// A user's roles by organization id: pairs sorted by organization, each
/// role list sorted. A flat list rather than a map: a cached session holds
/// one, and a user is in few organizations.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Roles(Box<[(String, Vec<String>)]>);

impl Roles {
    /// The roles in `org`, or `None` when not a member.
    pub fn get(&self, org: &str) -> Option<&[String]> {
        self.0
            .binary_search_by(|(o, _)| o.as_str().cmp(org))
            .ok()
            .map(|i| self.0[i].1.as_slice())
    }

    /// Each organization with its roles, by organization id.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &[String])> {
        self.0.iter().map(|(o, r)| (o.as_str(), r.as_slice()))
    }
}

impl FromIterator<(String, Vec<String>)> for Roles {
    fn from_iter<I: IntoIterator<Item = (String, Vec<String>)>>(iter: I) -> Roles {
        let mut pairs: Vec<(String, Vec<String>)> = iter.into_iter().collect();
        pairs.sort_by(|a, b| a.0.cmp(&b.0));
        // One entry per organization (the store keeps one; merged anyway).
        pairs.dedup_by(|later, kept| {
            let same = later.0 == kept.0;
            if same {
                kept.1.append(&mut later.1);
            }
            same
        });
        for (_, roles) in &mut pairs {
            roles.sort();
            roles.dedup();
            roles.shrink_to_fit();
        }
        Roles(pairs.into_boxed_slice())
    }
}

/// The first requirement of the route that the user does not meet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denied {
    /// `org`: not a member.
    NotMember { org: String },
    /// `allow_roles`: a member, without any of these roles.
    NoAllowedRole { org: String, allowed: Vec<String> },
    /// `allow_if`: the expression was not exactly `true` (or failed).
    Condition { expression: String },
}

impl Denied {
    pub fn code(&self) -> &'static str {
        match self {
            Denied::NotMember { .. } => "not_a_member",
            Denied::NoAllowedRole { .. } => "role_required",
            Denied::Condition { .. } => "condition_failed",
        }
    }

    /// Says which requirement failed, in the operator's words; shown to
    /// the user on the 403 page.
    pub fn message(&self) -> String {
        match self {
            Denied::NotMember { org } => {
                format!("This route requires membership of the organization \"{org}\".")
            }
            Denied::NoAllowedRole { org, allowed } => format!(
                "This route requires one of the roles {} in the organization \"{org}\".",
                allowed.join(", ")
            ),
            Denied::Condition { expression } => {
                format!("This route's condition is not met: allow_if \"{expression}\".")
            }
        }
    }
}

/// Decides whether a user with `roles` (by organization id) and `claims`
/// (the session's stored claims) may use `route`. Requirements are checked
/// in the order `org`, `allow_roles`, `allow_if`; every one that the route
/// sets must hold.
pub fn authorize(route: &Route, roles: &Roles, claims: &jmespath::Rcvar) -> Result<(), Denied> {
    if let Some(org) = &route.org {
        let Some(have) = roles.get(org) else {
            return Err(Denied::NotMember { org: org.clone() });
        };
        if !route.allow_roles.is_empty() && !have.iter().any(|r| route.allow_roles.contains(r)) {
            return Err(Denied::NoAllowedRole {
                org: org.clone(),
                allowed: route.allow_roles.clone(),
            });
        }
    }
    if let Some(expr) = &route.allow_if {
        let verdict = match expr.search(claims) {
            Ok(v) => v.as_boolean() == Some(true),
            Err(e) => {
                tracing::warn!(route = %route.name, expression = %expr.text, error = %e.reason, "allow_if failed at run time; denied");
                false
            }
        };
        if !verdict {
            return Err(Denied::Condition {
                expression: expr.text.clone(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, Environment};
    use jmespath::ToJmespath;
    use serde_json::json;

    fn routes() -> Config {
        let yaml = r#"server: {listen: "127.0.0.1:1", public_url: "http://a.test"}
session: {secret: "0123456789abcdef0123456789abcdef"}
organizations:
  - {id: lab, roles: [{name: Admin}, {name: Member}]}
routes:
  - {name: open, hosts: [a.test], upstreams: ["127.0.0.1:1"]}
  - {name: org, hosts: [a.test], path_prefix: /org, upstreams: ["127.0.0.1:1"], org: lab}
  - {name: admin, hosts: [a.test], path_prefix: /admin, upstreams: ["127.0.0.1:1"], org: lab, allow_roles: [Admin]}
  - {name: cond, hosts: [a.test], path_prefix: /cond, upstreams: ["127.0.0.1:1"], allow_if: "contains(groups, 'ops')"}
  - {name: all, hosts: [a.test], path_prefix: /all, upstreams: ["127.0.0.1:1"], org: lab, allow_roles: [Admin, Member], allow_if: "email_verified"}
"#;
        Config::from_yaml(yaml, std::path::Path::new("t.yaml"), &Environment::system()).unwrap()
    }

    /// Roles are found by organization however the memberships came
    /// (unsorted, an organization twice), each list sorted without repeats.
    #[test]
    fn roles_by_organization() {
        let owned =
            |o: &str, r: &[&str]| (o.to_string(), r.iter().map(|s| s.to_string()).collect());
        let roles: Roles = [
            owned("zeta", &["Member"]),
            owned("lab", &["Member", "Admin"]),
            owned("alpha", &[]),
            owned("lab", &["Admin", "Ops"]),
        ]
        .into_iter()
        .collect();
        let cases: &[(&str, Option<&[&str]>)] = &[
            ("lab", Some(&["Admin", "Member", "Ops"])),
            ("zeta", Some(&["Member"])),
            ("alpha", Some(&[])),
            ("beta", None),
            ("", None),
            ("la", None),
        ];
        for (org, want) in cases {
            let got = roles
                .get(org)
                .map(|r| r.iter().map(String::as_str).collect::<Vec<_>>());
            assert_eq!(got.as_deref(), *want, "{org}");
        }
        let orgs: Vec<&str> = roles.iter().map(|(o, _)| o).collect();
        assert_eq!(orgs, ["alpha", "lab", "zeta"]);
    }

    #[test]
    fn each_requirement_in_order() {
        let c = routes();
        let route = |name: &str| c.routes.iter().find(|r| r.name == name).unwrap().clone();
        let roles = |r: &[&str]| -> Roles {
            if r.is_empty() {
                Roles::default()
            } else {
                [("lab".to_string(), r.iter().map(|s| s.to_string()).collect())]
                    .into_iter()
                    .collect()
            }
        };
        let not_member = Err(Denied::NotMember { org: "lab".into() });
        let no_admin = Err(Denied::NoAllowedRole {
            org: "lab".into(),
            allowed: vec!["Admin".into()],
        });
        let cond = |e: &str| {
            Err(Denied::Condition {
                expression: e.into(),
            })
        };
        // (route, roles in lab, claims, verdict)
        type Case<'a> = (
            &'a str,
            &'a [&'a str],
            serde_json::Value,
            Result<(), Denied>,
        );
        let cases: Vec<Case> = vec![
            ("open", &[], json!({}), Ok(())),
            ("org", &[], json!({}), not_member.clone()),
            ("org", &["Member"], json!({}), Ok(())),
            ("admin", &["Member"], json!({}), no_admin.clone()),
            ("admin", &["Admin"], json!({}), Ok(())),
            ("admin", &[], json!({}), not_member),
            ("cond", &[], json!({"groups": ["ops"]}), Ok(())),
            (
                "cond",
                &[],
                json!({"groups": ["dev"]}),
                cond("contains(groups, 'ops')"),
            ),
            // Missing claim: the function fails at run time, which denies.
            ("cond", &[], json!({}), cond("contains(groups, 'ops')")),
            ("all", &["Member"], json!({"email_verified": true}), Ok(())),
            // Only the boolean true counts.
            (
                "all",
                &["Member"],
                json!({"email_verified": "true"}),
                cond("email_verified"),
            ),
            (
                "all",
                &["Member"],
                json!({"email_verified": 1}),
                cond("email_verified"),
            ),
        ];
        for (name, r, claims, want) in cases {
            let got = authorize(&route(name), &roles(r), &(&claims).to_jmespath().unwrap());
            assert_eq!(got, want, "route {name}, roles {r:?}, claims {claims}");
        }
    }
}
