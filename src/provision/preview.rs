//! A policy change previewed on stored users (`portcullis plan`, `POST
//! /api/provisioning/plan`): each user's next login replayed under another
//! configuration, on the claims kept from their last login, refresh or SCIM
//! change, with the engine a login runs ([`super::plan`]). Pure, like the
//! rest of the engine: the store hands the users in, nothing is written.
//!
//! On top of what a login would change, memberships of organizations the
//! new configuration no longer declares, and roles it no longer declares,
//! show as removals: they would grant nothing any more.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{Map, Value};

use super::directory::DirectoryEntry;
use super::{Decision, ExistingUser, JitMatch, JitTable, Membership, Outcome};
use crate::config::Config;

/// A user as the store holds them, for a replay.
#[derive(Debug, Clone, Default)]
pub struct StoredUser {
    pub id: String,
    pub email: Option<String>,
    /// The directory (SCIM) has them inactive or deleted.
    pub deactivated: bool,
    /// Sorted by organization.
    pub memberships: Vec<Membership>,
    /// Sorted by IdP.
    pub identities: Vec<StoredIdentity>,
}

/// One of the user's identities.
#[derive(Debug, Clone, Default)]
pub struct StoredIdentity {
    pub idp: String,
    /// Logged in through this IdP at least once (else pre-provisioned or
    /// created by the directory: the next login is the identity's first).
    pub logged_in: bool,
    /// The IdP's claims as of the last login or refresh.
    pub claims: Option<Value>,
    /// What the IdP's directory says of the user, when it has a feed.
    pub directory: Option<DirectoryEntry>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    Created,
    RolesChanged,
    Removed,
}

impl ChangeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Created => "created",
            ChangeKind::RolesChanged => "roles changed",
            ChangeKind::Removed => "removed",
        }
    }
}

/// One membership the new configuration would change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PreviewChange {
    pub org: String,
    pub kind: ChangeKind,
    pub before: Option<Membership>,
    pub after: Option<Membership>,
    /// Why, in the operator's words.
    pub reason: String,
}

/// What the new configuration would do to one user.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UserPreview {
    pub user_id: String,
    pub email: Option<String>,
    pub changes: Vec<PreviewChange>,
    /// What was not replayed, and what the next login would meet
    /// (refused, an IdP no longer configured, no claims kept).
    pub notes: Vec<String>,
}

impl UserPreview {
    /// Nothing would change and there is nothing to note: left out of
    /// what `plan` prints and answers.
    pub fn is_quiet(&self) -> bool {
        self.changes.is_empty() && self.notes.is_empty()
    }
}

/// Replays `user`'s provisioning under `config` with the JIT rules in
/// force, as their next login through each of their identities would run
/// it (manual memberships untouched, policy memberships re-synced, JIT
/// only where the identity is new), then lists the net changes.
pub fn preview_user(config: &Config, jit: &JitTable, user: &StoredUser) -> UserPreview {
    let mut out = UserPreview {
        user_id: user.id.clone(),
        email: user.email.clone(),
        changes: Vec::new(),
        notes: Vec::new(),
    };
    if user.deactivated {
        out.notes
            .push("deactivated by the directory: nothing changes until it is reactivated".into());
        return out;
    }
    let mut memberships = user.memberships.clone();
    let mut reasons: BTreeMap<String, String> = BTreeMap::new();
    let empty = Value::Object(Map::new());
    for identity in &user.identities {
        let Some(idp) = config.identity_provider(&identity.idp) else {
            out.notes.push(format!(
                "identity provider {:?} is not in the new configuration: its logins are refused",
                identity.idp
            ));
            continue;
        };
        let claims = match (&identity.claims, &identity.directory) {
            (Some(c), _) => c,
            (None, Some(_)) => &empty,
            (None, None) => {
                out.notes.push(format!(
                    "no claims kept from {:?} (never logged in there): not replayed",
                    identity.idp
                ));
                continue;
            }
        };
        let existing = ExistingUser {
            memberships: memberships.clone(),
            identity_is_new: !identity.logged_in,
            directory: identity.directory.clone(),
            deactivated: false,
        };
        let plan = match super::plan(config, idp, claims, Some(&existing), jit) {
            Ok(p) => p,
            Err(e) => {
                out.notes.push(format!(
                    "{:?}: the kept claims cannot be replayed: {e}",
                    identity.idp
                ));
                continue;
            }
        };
        for c in &plan.changes {
            let reason = match (c.decision, &c.after) {
                (Decision::Removed, _) => format!("the policy of {:?} no longer matches", idp.id),
                (Decision::BecamePolicy, _) => format!(
                    "the policy of {:?} now matches: the jit membership becomes policy",
                    idp.id
                ),
                (_, Some(m)) if m.source == super::MembershipSource::Jit => {
                    jit_reason(jit.get(&c.org).and_then(|r| {
                        r.matching(
                            &idp.id,
                            plan.new_user,
                            existing.identity_is_new,
                            plan.identity.verified_domain().as_deref(),
                        )
                    }))
                }
                _ => format!("the policy of {:?}", idp.id),
            };
            reasons.insert(c.org.clone(), reason);
        }
        for w in &plan.warnings {
            out.notes.push(format!("{:?}: {w}", identity.idp));
        }
        for e in &plan.policy_errors {
            out.notes.push(format!(
                "{:?}: organization {:?}: expression {:?} failed: {}",
                e.idp, e.org, e.expression, e.message
            ));
        }
        if plan.outcome == Outcome::NoMembership {
            out.notes.push(format!(
                "the next login through {:?} is refused: no membership left",
                identity.idp
            ));
        }
        memberships = plan.memberships;
    }
    // What the new file no longer declares grants nothing any more.
    let mut kept = Vec::new();
    for mut m in memberships {
        let Some(org) = config.organization(&m.org) else {
            reasons.insert(
                m.org.clone(),
                format!("organization {:?} is not in the new configuration", m.org),
            );
            continue;
        };
        let undeclared: Vec<String> = m
            .roles
            .iter()
            .filter(|r| !org.has_role(r))
            .cloned()
            .collect();
        if !undeclared.is_empty() {
            m.roles.retain(|r| org.has_role(r));
            reasons.insert(
                m.org.clone(),
                format!(
                    "organization {:?} no longer declares {}",
                    m.org,
                    undeclared
                        .iter()
                        .map(|r| format!("{r:?}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            );
            if m.roles.is_empty() {
                continue;
            }
        }
        kept.push(m);
    }
    out.changes = diff(&user.memberships, &kept, &mut reasons);
    out
}

fn jit_reason(m: Option<JitMatch>) -> String {
    match m {
        Some(JitMatch::EmailDomain(d)) => format!("jit: email domain {d}"),
        Some(JitMatch::SsoConnector(c)) => format!("jit: first login through SSO connector {c}"),
        None => "jit".into(),
    }
}

/// The net changes from `before` to `after` (both sorted by org).
fn diff(
    before: &[Membership],
    after: &[Membership],
    reasons: &mut BTreeMap<String, String>,
) -> Vec<PreviewChange> {
    let was: BTreeMap<&str, &Membership> = before.iter().map(|m| (m.org.as_str(), m)).collect();
    let now: BTreeMap<&str, &Membership> = after.iter().map(|m| (m.org.as_str(), m)).collect();
    let mut orgs: Vec<&str> = was.keys().chain(now.keys()).copied().collect();
    orgs.sort_unstable();
    orgs.dedup();
    let mut out = Vec::new();
    for org in orgs {
        let (b, a) = (was.get(org).copied(), now.get(org).copied());
        let kind = match (b, a) {
            (None, Some(_)) => ChangeKind::Created,
            (Some(_), None) => ChangeKind::Removed,
            (Some(b), Some(a)) if b.roles != a.roles => ChangeKind::RolesChanged,
            // The same roles: at most the source changed (jit to policy),
            // which grants nothing new.
            _ => continue,
        };
        out.push(PreviewChange {
            org: org.to_string(),
            kind,
            before: b.cloned(),
            after: a.cloned(),
            reason: reasons.remove(org).unwrap_or_default(),
        });
    }
    out
}

/// Per-organization totals of a preview.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OrgTotals {
    pub created: u64,
    pub roles_changed: u64,
    pub removed: u64,
}

/// The totals of a whole preview, built user by user (a store's worth of
/// previews is never held at once).
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PreviewTotals {
    pub users: u64,
    pub users_changed: u64,
    /// Users with a note: not (fully) replayed, or refused at their next
    /// login.
    pub users_with_notes: u64,
    pub organizations: BTreeMap<String, OrgTotals>,
}

impl PreviewTotals {
    pub fn add(&mut self, user: &UserPreview) {
        self.users += 1;
        if !user.changes.is_empty() {
            self.users_changed += 1;
        }
        if !user.notes.is_empty() {
            self.users_with_notes += 1;
        }
        for c in &user.changes {
            let t = self.organizations.entry(c.org.clone()).or_default();
            match c.kind {
                ChangeKind::Created => t.created += 1,
                ChangeKind::RolesChanged => t.roles_changed += 1,
                ChangeKind::Removed => t.removed += 1,
            }
        }
    }

    pub fn removals(&self) -> u64 {
        self.organizations.values().map(|t| t.removed).sum()
    }
}

fn roles(m: &Option<Membership>) -> String {
    match m {
        Some(m) => format!("[{}] ({})", m.roles.join(", "), m.source.as_str()),
        None => "-".into(),
    }
}

/// One user's preview as text, for `portcullis plan`; empty when nothing
/// changes and there is nothing to note.
pub fn render_user(user: &UserPreview) -> String {
    if user.is_quiet() {
        return String::new();
    }
    let mut out = format!(
        "user {} ({})\n",
        user.user_id,
        user.email.as_deref().unwrap_or("no email")
    );
    for c in &user.changes {
        let sign = match c.kind {
            ChangeKind::Created => '+',
            ChangeKind::RolesChanged => '~',
            ChangeKind::Removed => '-',
        };
        out.push_str(&format!(
            "  {sign} {}: {} {} -> {}  ({})\n",
            c.org,
            c.kind.as_str(),
            roles(&c.before),
            roles(&c.after),
            c.reason
        ));
    }
    for n in &user.notes {
        out.push_str(&format!("  ! {n}\n"));
    }
    out
}

/// The totals as text.
pub fn render_totals(t: &PreviewTotals) -> String {
    let mut out = format!(
        "\n{} users planned: {} would change, {} with notes\n",
        t.users, t.users_changed, t.users_with_notes
    );
    if t.organizations.is_empty() {
        out.push_str("no membership would change\n");
        return out;
    }
    out.push_str("organization            created  roles changed  removed\n");
    for (org, o) in &t.organizations {
        out.push_str(&format!(
            "{org:<22} {:>8} {:>14} {:>8}\n",
            o.created, o.roles_changed, o.removed
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provision::MembershipSource::{self, *};

    fn config() -> Config {
        crate::test_yaml::config(&format!(
            "{}{}",
            crate::test_yaml::MAIN_IDP,
            r#"organizations:
  - id: lab
    roles: [{name: Admin}, {name: Member}]
  - id: ops
    roles: [{name: Member}]
    jit: {sso_connectors: [main], default_roles: [Member]}
"#
        ))
    }

    fn m(org: &str, roles: &[&str], source: MembershipSource) -> Membership {
        Membership {
            org: org.into(),
            roles: roles.iter().map(|r| r.to_string()).collect(),
            source,
        }
    }

    fn user(memberships: Vec<Membership>, claims: Option<Value>, logged_in: bool) -> StoredUser {
        StoredUser {
            id: "u1".into(),
            email: Some("a@example.com".into()),
            deactivated: false,
            memberships,
            identities: vec![StoredIdentity {
                idp: "main".into(),
                logged_in,
                claims,
                directory: None,
            }],
        }
    }

    fn claims(groups: &[&str]) -> Option<Value> {
        Some(
            serde_json::json!({"sub": "s1", "email": "a@example.com", "email_verified": true, "groups": groups}),
        )
    }

    /// (what, stored user, expected (org, kind, roles after, reason contains), expected note contains)
    #[test]
    fn replays_each_users_next_login_under_the_new_config() {
        let c = config();
        let jit = crate::provision::jit_from_config(&c);
        type Expect = &'static [(
            &'static str,
            ChangeKind,
            &'static [&'static str],
            &'static str,
        )];
        let cases: Vec<(&str, StoredUser, Expect, Option<&str>)> = vec![
            (
                "policy membership unchanged: nothing to show",
                user(
                    vec![m("lab", &["Member"], Policy), m("ops", &["Member"], Jit)],
                    claims(&["lab"]),
                    true,
                ),
                &[],
                None,
            ),
            (
                "the policy no longer matches: removed",
                user(vec![m("lab", &["Member"], Policy)], claims(&["ops"]), true),
                &[
                    ("lab", ChangeKind::Removed, &[], "no longer matches"),
                    ("ops", ChangeKind::Created, &["Member"], "policy"),
                ],
                None,
            ),
            (
                "roles follow the claims",
                user(
                    vec![m("lab", &["Member"], Policy)],
                    claims(&["lab", "admin"]),
                    true,
                ),
                &[("lab", ChangeKind::RolesChanged, &["Admin"], "policy")],
                None,
            ),
            (
                "manual memberships untouched",
                user(vec![m("lab", &["Admin"], Manual)], claims(&[]), true),
                &[],
                None,
            ),
            (
                "an existing identity gets no SSO-connector JIT again",
                user(vec![m("lab", &["Member"], Policy)], claims(&["lab"]), true),
                &[],
                None,
            ),
            (
                "a pre-provisioned identity's first login gets it",
                user(vec![m("lab", &["Member"], Manual)], claims(&[]), false),
                &[(
                    "ops",
                    ChangeKind::Created,
                    &["Member"],
                    "SSO connector main",
                )],
                None,
            ),
            (
                "an organization dropped from the file",
                user(
                    vec![
                        m("gone", &["Member"], Manual),
                        m("lab", &["Member"], Policy),
                    ],
                    claims(&["lab"]),
                    true,
                ),
                &[(
                    "gone",
                    ChangeKind::Removed,
                    &[],
                    "\"gone\" is not in the new configuration",
                )],
                None,
            ),
            (
                "a role dropped from the file",
                user(
                    vec![m("lab", &["Member", "Owner"], Manual)],
                    claims(&[]),
                    true,
                ),
                &[(
                    "lab",
                    ChangeKind::RolesChanged,
                    &["Member"],
                    "no longer declares \"Owner\"",
                )],
                None,
            ),
            (
                "no claims kept: not replayed",
                user(vec![m("lab", &["Member"], Policy)], None, true),
                &[],
                Some("no claims kept"),
            ),
            (
                "the last policy membership goes: refused at the next login",
                user(vec![m("lab", &["Member"], Policy)], claims(&[]), true),
                &[("lab", ChangeKind::Removed, &[], "no longer matches")],
                Some("is refused: no membership left"),
            ),
        ];
        for (what, u, expected, note) in cases {
            let p = preview_user(&c, &jit, &u);
            let got: Vec<(String, ChangeKind, Vec<String>)> = p
                .changes
                .iter()
                .map(|c| {
                    (
                        c.org.clone(),
                        c.kind,
                        c.after
                            .as_ref()
                            .map(|m| m.roles.clone())
                            .unwrap_or_default(),
                    )
                })
                .collect();
            let want: Vec<(String, ChangeKind, Vec<String>)> = expected
                .iter()
                .map(|(o, k, r, _)| (o.to_string(), *k, r.iter().map(|s| s.to_string()).collect()))
                .collect();
            assert_eq!(got, want, "{what}: {p:#?}");
            for (c, (_, _, _, reason)) in p.changes.iter().zip(expected) {
                assert!(
                    c.reason.contains(reason),
                    "{what}: reason {:?} lacks {reason:?}",
                    c.reason
                );
            }
            match note {
                Some(n) => assert!(
                    p.notes.iter().any(|x| x.contains(n)),
                    "{what}: notes {:?}",
                    p.notes
                ),
                None => assert!(p.notes.is_empty(), "{what}: notes {:?}", p.notes),
            }
        }
    }

    #[test]
    fn totals_count_per_organization() {
        let c = config();
        let jit = crate::provision::jit_from_config(&c);
        let mut t = PreviewTotals::default();
        t.add(&preview_user(
            &c,
            &jit,
            &user(vec![m("lab", &["Member"], Policy)], claims(&["ops"]), true),
        ));
        t.add(&preview_user(
            &c,
            &jit,
            &user(vec![m("lab", &["Member"], Policy)], claims(&["lab"]), true),
        ));
        assert_eq!((t.users, t.users_changed, t.removals()), (2, 1, 1));
        assert_eq!(
            t.organizations["ops"],
            OrgTotals {
                created: 1,
                roles_changed: 0,
                removed: 0
            }
        );
    }
}
