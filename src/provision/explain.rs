//! Human-readable rendering of a [`Plan`], for `portcullis explain`. The
//! JSON form is the `Plan` itself, serialized.

use std::fmt::Write;

use super::{ExprTrace, JitMatch, Membership, Outcome, Plan};

fn expr_line(label: &str, t: &ExprTrace) -> String {
    let from = match t.from {
        crate::config::PolicySource::Organization => "org policy",
        crate::config::PolicySource::Fallback => "fallback",
    };
    let result = match (&t.result, &t.error) {
        (_, Some(e)) => format!("ERROR: {e}"),
        (Some(v), None) => serde_json::to_string(&**v).unwrap_or_default(),
        (None, None) => "null".into(),
    };
    format!("    {label:<6} {} [{from}] => {result}\n", t.expression)
}

fn membership(m: &Option<Membership>) -> String {
    match m {
        Some(m) => format!("{} ({})", m.roles.join(", "), m.source.as_str()),
        None => "-".into(),
    }
}

pub fn render(plan: &Plan) -> String {
    let mut out = String::new();
    let id = &plan.identity;
    let _ = writeln!(
        out,
        "identity: {} / {}  email: {}{}  name: {}",
        id.idp,
        id.subject,
        id.email.as_deref().unwrap_or("-"),
        if id.email_verified {
            " (verified)"
        } else {
            " (not verified)"
        },
        id.name.as_deref().unwrap_or("-"),
    );
    let _ = writeln!(
        out,
        "user: {}  auto_provision: {}",
        if plan.new_user { "new" } else { "existing" },
        plan.auto_provision
    );
    for org in &plan.orgs {
        let policy = match org.policy {
            Some(crate::config::PolicySource::Organization) => "its own policy",
            Some(crate::config::PolicySource::Fallback) => "the fallback policy",
            None => "no policy",
        };
        let _ = writeln!(out, "\norganization {} — {policy}", org.org);
        match &org.org_expression {
            Some(t) => out.push_str(&expr_line("org", t)),
            None if org.policy.is_some() => out.push_str("    org    (no expression: matches)\n"),
            None => {}
        }
        if org.policy.is_some() {
            let _ = writeln!(
                out,
                "    match  {}",
                if org.org_matched { "yes" } else { "no" }
            );
        }
        if let Some(t) = &org.roles_expression {
            out.push_str(&expr_line("roles", t));
            let _ = writeln!(
                out,
                "    roles  {}",
                if org.policy_roles.is_empty() {
                    "none declared: not provisioned".into()
                } else {
                    org.policy_roles.join(", ")
                }
            );
        } else if org.org_matched && org.policy.is_some() {
            out.push_str("    roles  (no role expression: not provisioned)\n");
        }
        if !org.dropped_roles.is_empty() {
            let _ = writeln!(
                out,
                "    dropped (not declared): {}",
                org.dropped_roles.join(", ")
            );
        }
        match &org.jit {
            Some(JitMatch::EmailDomain(d)) => {
                let _ = writeln!(out, "    jit    email domain {d}");
            }
            Some(JitMatch::SsoConnector(c)) => {
                let _ = writeln!(out, "    jit    SSO connector {c}");
            }
            None => {}
        }
        let _ = writeln!(
            out,
            "    decision {}: {} -> {}",
            org.decision.as_str(),
            membership(&org.before),
            membership(&org.after)
        );
    }
    for e in &plan.policy_errors {
        let _ = writeln!(
            out,
            "\npolicy error in {}: {} ({})",
            e.org, e.expression, e.message
        );
    }
    for w in &plan.warnings {
        let _ = writeln!(out, "\nwarning: {w}");
    }
    let _ = writeln!(
        out,
        "\noutcome: {}",
        match plan.outcome {
            Outcome::Allowed => "allowed".to_string(),
            Outcome::UnknownUser =>
                "refused: auto_provision is off and no such user exists".to_string(),
            Outcome::NoMembership => "refused: not a member of any organization".to_string(),
            Outcome::Deactivated => "refused: deactivated by the directory (SCIM)".to_string(),
        }
    );
    if plan.outcome == Outcome::Allowed {
        for m in &plan.memberships {
            let _ = writeln!(
                out,
                "  {}: {} ({})",
                m.org,
                m.roles.join(", "),
                m.source.as_str()
            );
        }
    }
    out
}
