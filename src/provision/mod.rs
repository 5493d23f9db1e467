//! The provisioning engine: an IdP's claims and the user's current
//! memberships in, a plan of membership changes out, with a trace of every
//! decision. Pure: no I/O. The login and `portcullis explain` both call
//! [`plan`], so what `explain` prints is what a login does.

pub mod directory;
pub mod explain;
pub mod preview;

use std::collections::{BTreeMap, BTreeSet};

use jmespath::{Rcvar, ToJmespath};
use serde::Serialize;
use serde_json::Value;

use crate::config::{Config, Expr, IdentityProvider, OrgPolicy, PolicySource};

/// Where a membership came from. Decides what a later login may change.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum MembershipSource {
    /// The management API or pre-provisioning: never touched by logins.
    Manual,
    /// A provisioning policy: re-synced at every login.
    Policy,
    /// Just-in-time provisioning: only ever added.
    Jit,
}

impl MembershipSource {
    pub fn as_str(self) -> &'static str {
        match self {
            MembershipSource::Manual => "manual",
            MembershipSource::Policy => "policy",
            MembershipSource::Jit => "jit",
        }
    }

    pub fn parse(s: &str) -> Option<MembershipSource> {
        match s {
            "manual" => Some(MembershipSource::Manual),
            "policy" => Some(MembershipSource::Policy),
            "jit" => Some(MembershipSource::Jit),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Membership {
    pub org: String,
    /// Sorted, no duplicates.
    pub roles: Vec<String>,
    pub source: MembershipSource,
}

/// The user's key and profile at an IdP, read from the claims.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Identity {
    pub idp: String,
    /// The value of the IdP's `identifier`: the user's key there.
    pub subject: String,
    /// The IdP's own `sub`, kept beside the identifier.
    pub sub: Option<String>,
    pub email: Option<String>,
    pub email_verified: bool,
    pub name: Option<String>,
    /// The value of the IdP's SCIM `match` claim, when it has a feed: a
    /// directory user is found by it.
    pub match_key: Option<String>,
}

impl Identity {
    /// The email's domain, lower-case, when the IdP verified the email.
    pub fn verified_domain(&self) -> Option<String> {
        self.email
            .as_deref()
            .filter(|_| self.email_verified)
            .and_then(email_domain)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProvisionError {
    #[error("identifier expression {expression:?} gave no string for these claims")]
    NoIdentifier { expression: String },
    #[error("the claims are not a JSON object")]
    ClaimsNotObject,
    #[error(
        "the identifier {expression:?} reads an email address that the identity provider has not verified"
    )]
    UnverifiedEmailIdentifier { expression: String },
}

/// What is known of the user before this login.
#[derive(Debug, Clone, Default)]
pub struct ExistingUser {
    pub memberships: Vec<Membership>,
    /// First login with this `(idp, identifier)`: a pre-provisioned user
    /// matched by email. Decides SSO-connector JIT.
    pub identity_is_new: bool,
    /// What the IdP's directory (SCIM) says of the user, when it has a
    /// feed that describes them: its attributes and groups become claims.
    pub directory: Option<directory::DirectoryEntry>,
    /// The directory deactivated or deleted the user: logins are refused.
    pub deactivated: bool,
}

/// Just-in-time rules of one organization: the file's, plus what the
/// management API added.
#[derive(Debug, Clone, Default)]
pub struct JitRules {
    /// Lower-case.
    pub email_domains: BTreeSet<String>,
    pub sso_connectors: BTreeSet<String>,
    pub default_roles: BTreeSet<String>,
}

impl JitRules {
    /// Whether these rules admit a login: a new user with a verified
    /// email in one of the domains, else a first login with this identity
    /// through one of the SSO connectors. Rules without default roles
    /// admit nobody.
    pub fn matching(
        &self,
        idp: &str,
        new_user: bool,
        identity_is_new: bool,
        verified_domain: Option<&str>,
    ) -> Option<JitMatch> {
        if self.default_roles.is_empty() {
            return None;
        }
        if new_user
            && let Some(d) = verified_domain
            && self.email_domains.contains(d)
        {
            return Some(JitMatch::EmailDomain(d.to_string()));
        }
        if identity_is_new && self.sso_connectors.contains(idp) {
            return Some(JitMatch::SsoConnector(idp.to_string()));
        }
        None
    }
}

/// JIT rules by organization id: only organizations that have some. A
/// login looks every declared organization up in it, so a table with an
/// entry for each of 10,000 organizations would cost a cache miss per
/// organization per login.
pub type JitTable = std::collections::HashMap<String, JitRules>;

/// The JIT rules declared in the file.
pub fn jit_from_config(config: &Config) -> JitTable {
    config
        .organizations
        .iter()
        .filter(|o| {
            !(o.jit.email_domains.is_empty()
                && o.jit.sso_connectors.is_empty()
                && o.jit.default_roles.is_empty())
        })
        .map(|o| {
            (
                o.id.clone(),
                JitRules {
                    email_domains: o.jit.email_domains.iter().cloned().collect(),
                    sso_connectors: o.jit.sso_connectors.iter().cloned().collect(),
                    default_roles: o.jit.default_roles.iter().cloned().collect(),
                },
            )
        })
        .collect()
}

/// The file's JIT rules with the entries the management API added. An
/// entry for an organization that is no longer in `config` is ignored.
pub fn merge_jit(config: &Config, file: &JitTable, api: &JitTable) -> JitTable {
    let mut merged = file.clone();
    for (org, extra) in api {
        if config.organization(org).is_none() {
            continue;
        }
        let rules = merged.entry(org.clone()).or_default();
        rules
            .email_domains
            .extend(extra.email_domains.iter().cloned());
        rules
            .sso_connectors
            .extend(extra.sso_connectors.iter().cloned());
        rules
            .default_roles
            .extend(extra.default_roles.iter().cloned());
    }
    merged
}

/// One expression's run, for the trace.
#[derive(Debug, Clone, Serialize)]
pub struct ExprTrace {
    pub expression: String,
    pub from: PolicySource,
    /// The value it gave, or `None` when it failed.
    /// Kept as JMESPath produced it (serialized as JSON): converting every
    /// org's result at every login would cost more than the evaluation.
    #[serde(serialize_with = "serialize_rcvar")]
    pub result: Option<Rcvar>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    Created,
    RolesChanged,
    BecamePolicy,
    Removed,
    Unchanged,
    /// Not a member before, and still not.
    None,
}

impl Decision {
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Created => "created",
            Decision::RolesChanged => "roles_changed",
            Decision::BecamePolicy => "became_policy",
            Decision::Removed => "removed",
            Decision::Unchanged => "unchanged",
            Decision::None => "none",
        }
    }
}

/// How one organization was decided.
#[derive(Debug, Clone, Serialize)]
pub struct OrgTrace {
    pub org: String,
    /// Whether the org has a policy of its own at this IdP, or the
    /// fallback applied. `None`: no policy evaluated this org.
    pub policy: Option<PolicySource>,
    pub org_expression: Option<ExprTrace>,
    pub org_matched: bool,
    pub roles_expression: Option<ExprTrace>,
    /// Declared roles the policy gave (empty: not provisioned by policy).
    pub policy_roles: Vec<String>,
    /// Role names the expression gave that the org does not declare.
    pub dropped_roles: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jit: Option<JitMatch>,
    pub before: Option<Membership>,
    pub after: Option<Membership>,
    pub decision: Decision,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "by", content = "value")]
pub enum JitMatch {
    EmailDomain(String),
    SsoConnector(String),
}

/// A membership change to apply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    pub org: String,
    pub decision: Decision,
    pub before: Option<Membership>,
    pub after: Option<Membership>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "outcome", content = "reason")]
pub enum Outcome {
    /// The login may go on: the user has at least one membership after.
    Allowed,
    /// `auto_provision: false` and no such user.
    UnknownUser,
    /// No membership left after provisioning.
    NoMembership,
    /// The IdP's directory (SCIM) has the user inactive or deleted.
    Deactivated,
}

/// A failed expression: the org is a no-match, the login goes on.
#[derive(Debug, Clone, Serialize)]
pub struct PolicyError {
    pub idp: String,
    pub org: String,
    pub expression: String,
    pub message: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub identity: Identity,
    pub new_user: bool,
    pub auto_provision: bool,
    pub orgs: Vec<OrgTrace>,
    pub changes: Vec<Change>,
    /// Every membership the user has after the plan, sorted by org.
    pub memberships: Vec<Membership>,
    pub outcome: Outcome,
    pub policy_errors: Vec<PolicyError>,
    pub warnings: Vec<String>,
}

fn as_string(v: &Rcvar) -> Option<String> {
    if let Some(s) = v.as_string() {
        return Some(s.clone());
    }
    v.as_number().map(|n| {
        if n.fract() == 0.0 && n.abs() < 9.0e15 {
            format!("{}", n as i64)
        } else {
            n.to_string()
        }
    })
}

fn search(expr: &Expr, data: &Rcvar) -> Result<Rcvar, String> {
    expr.search(data).map_err(|e| e.reason.to_string())
}

fn serialize_rcvar<S: serde::Serializer>(v: &Option<Rcvar>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(v) => serde::Serialize::serialize(&**v, s),
        None => s.serialize_none(),
    }
}

/// Reads the user's identity from the claims with the IdP's expressions.
pub fn identity(
    idp: &IdentityProvider,
    claims: &Rcvar,
    raw: &Value,
) -> Result<Identity, ProvisionError> {
    if !raw.is_object() {
        return Err(ProvisionError::ClaimsNotObject);
    }
    let subject = search(&idp.identifier, claims)
        .ok()
        .and_then(|v| as_string(&v))
        .filter(|s| !s.is_empty())
        .ok_or_else(|| ProvisionError::NoIdentifier {
            expression: idp.identifier.text.clone(),
        })?;
    let text = |e: &Expr| {
        search(e, claims)
            .ok()
            .and_then(|v| v.as_string().cloned())
            .filter(|s| !s.trim().is_empty())
    };
    let email = text(&idp.email);
    // Only the JSON boolean `true` counts.
    let email_verified = raw.get("email_verified") == Some(&Value::Bool(true));
    // A key read from an email claim is only as good as the IdP's word
    // that the address is the user's: anyone can type someone else's. (A
    // `sub` that happens to look like an address is the IdP's own key.)
    let reads_email = idp.identifier.text.contains("email");
    if reads_email && !email_verified {
        return Err(ProvisionError::UnverifiedEmailIdentifier {
            expression: idp.identifier.text.clone(),
        });
    }
    Ok(Identity {
        idp: idp.id.clone(),
        subject,
        sub: raw
            .get("sub")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string),
        email,
        email_verified,
        name: text(&idp.name),
        match_key: idp
            .directory_match
            .as_ref()
            .and_then(|m| search(m, claims).ok())
            .and_then(|v| as_string(&v))
            .filter(|s| !s.is_empty()),
    })
}

/// [`identity`] from plain JSON claims.
pub fn identity_from_claims(
    idp: &IdentityProvider,
    claims: &Value,
) -> Result<Identity, ProvisionError> {
    let data = claims
        .to_jmespath()
        .map_err(|_| ProvisionError::ClaimsNotObject)?;
    identity(idp, &data, claims)
}

/// The domain of an email with exactly one `@`, lower-case.
pub fn email_domain(email: &str) -> Option<String> {
    let mut parts = email.split('@');
    let (local, domain) = (parts.next()?, parts.next()?);
    if parts.next().is_some() || local.is_empty() || domain.is_empty() {
        return None;
    }
    Some(domain.to_ascii_lowercase())
}

/// What one org's policy says: `Some(roles)` when the org matched and at
/// least one declared role is left.
struct PolicyVerdict {
    org_trace: Option<ExprTrace>,
    matched: bool,
    roles_trace: Option<ExprTrace>,
    roles: Vec<String>,
    dropped: Vec<String>,
    errors: Vec<(String, String)>,
}

fn evaluate_policy(
    policy: &OrgPolicy,
    declared: &[crate::config::Role],
    claims: &Rcvar,
    trace: bool,
) -> PolicyVerdict {
    let mut v = PolicyVerdict {
        org_trace: None,
        matched: true,
        roles_trace: None,
        roles: Vec::new(),
        dropped: Vec::new(),
        errors: Vec::new(),
    };
    if let Some((expr, from)) = &policy.org_expr {
        let result = search(expr, claims);
        v.matched = match &result {
            Ok(r) => r.as_boolean() == Some(true) || r.as_string() == Some(&policy.org_id),
            Err(_) => false,
        };
        if let Err(e) = &result {
            v.errors.push((expr.text.clone(), e.clone()));
        }
        if trace {
            v.org_trace = Some(ExprTrace {
                expression: expr.text.clone(),
                from: *from,
                result: result.as_ref().ok().cloned(),
                error: result.err(),
            });
        }
    }
    if !v.matched {
        return v;
    }
    let Some((expr, from)) = &policy.roles_expr else {
        return v;
    };
    let result = search(expr, claims);
    let names: Option<Vec<String>> = match &result {
        Ok(r) => {
            if let Some(s) = r.as_string() {
                Some(vec![s.clone()])
            } else if let Some(items) = r.as_array() {
                items.iter().map(|i| i.as_string().cloned()).collect()
            } else {
                None
            }
        }
        Err(e) => {
            v.errors.push((expr.text.clone(), e.clone()));
            None
        }
    };
    let mut roles = BTreeSet::new();
    for name in names.unwrap_or_default() {
        let name = name.trim();
        if name.is_empty() {
            continue;
        }
        if declared.iter().any(|r| r.name == name) {
            roles.insert(name.to_string());
        } else if !v.dropped.iter().any(|d| d == name) {
            v.dropped.push(name.to_string());
        }
    }
    v.roles = roles.into_iter().collect();
    if trace {
        v.roles_trace = Some(ExprTrace {
            expression: expr.text.clone(),
            from: *from,
            result: result.as_ref().ok().cloned(),
            error: result.err(),
        });
    }
    v
}

fn membership(org: &str, roles: Vec<String>, source: MembershipSource) -> Membership {
    let roles: BTreeSet<String> = roles.into_iter().collect();
    Membership {
        org: org.to_string(),
        roles: roles.into_iter().collect(),
        source,
    }
}

/// Plans one login of `claims` at `idp`. `existing` is `None` for a user
/// that does not exist yet. What the IdP's directory says of an existing
/// user joins the claims (SPEC 4b); a user the directory deactivated is
/// refused and nothing of theirs changes.
///
/// `Plan::orgs` stays empty: the per-organization trace is only for
/// [`plan_traced`] (explain). A login against 10,000 organizations would
/// otherwise build 10,000 traces nobody reads.
pub fn plan(
    config: &Config,
    idp: &IdentityProvider,
    claims: &Value,
    existing: Option<&ExistingUser>,
    jit: &JitTable,
) -> Result<Plan, ProvisionError> {
    plan_with(config, idp, claims, existing, jit, false)
}

/// [`plan`] with `Plan::orgs` filled: how each organization was decided,
/// the expressions run and what they gave.
pub fn plan_traced(
    config: &Config,
    idp: &IdentityProvider,
    claims: &Value,
    existing: Option<&ExistingUser>,
    jit: &JitTable,
) -> Result<Plan, ProvisionError> {
    plan_with(config, idp, claims, existing, jit, true)
}

fn plan_with(
    config: &Config,
    idp: &IdentityProvider,
    claims: &Value,
    existing: Option<&ExistingUser>,
    jit: &JitTable,
    trace: bool,
) -> Result<Plan, ProvisionError> {
    let merged;
    let claims = match existing.and_then(|e| e.directory.as_ref()) {
        Some(entry) => {
            merged = directory::claims_for(idp, Some(claims), entry);
            &merged
        }
        None => claims,
    };
    let mut plan = plan_claims(config, idp, claims, existing, jit, trace)?;
    if existing.is_some_and(|e| e.deactivated) {
        plan.outcome = Outcome::Deactivated;
        plan.changes.clear();
        plan.memberships = existing.map(|e| e.memberships.clone()).unwrap_or_default();
    }
    Ok(plan)
}

fn plan_claims(
    config: &Config,
    idp: &IdentityProvider,
    claims: &Value,
    existing: Option<&ExistingUser>,
    jit: &JitTable,
    trace: bool,
) -> Result<Plan, ProvisionError> {
    let data = claims
        .to_jmespath()
        .map_err(|_| ProvisionError::ClaimsNotObject)?;
    let identity = identity(idp, &data, claims)?;
    let new_user = existing.is_none();
    // What the user had in organizations not yet decided: after the loop
    // over the declared ones, those no longer in the file.
    let mut undecided: BTreeMap<&str, &Membership> = existing
        .map(|e| e.memberships.iter().map(|m| (m.org.as_str(), m)).collect())
        .unwrap_or_default();

    let mut plan = Plan {
        identity,
        new_user,
        auto_provision: idp.auto_provision,
        orgs: Vec::new(),
        changes: Vec::new(),
        memberships: Vec::new(),
        outcome: Outcome::Allowed,
        policy_errors: Vec::new(),
        warnings: Vec::new(),
    };

    if !idp.auto_provision {
        // Nothing is created or changed automatically.
        plan.memberships = existing.map(|e| e.memberships.clone()).unwrap_or_default();
        plan.memberships.sort_by(|a, b| a.org.cmp(&b.org));
        plan.outcome = if new_user {
            Outcome::UnknownUser
        } else if plan.memberships.is_empty() {
            Outcome::NoMembership
        } else {
            Outcome::Allowed
        };
        return Ok(plan);
    }

    let identity_is_new = existing.is_none_or(|e| e.identity_is_new);
    let verified_domain = plan.identity.verified_domain();

    let mut policies = idp.policies.iter().peekable();
    let mut after_all: BTreeMap<String, Membership> = BTreeMap::new();
    for (index, org) in config.organizations.iter().enumerate() {
        let policy = match policies.peek() {
            Some(p) if p.org == index => policies.next(),
            _ => None,
        };
        let verdict = policy.map(|p| evaluate_policy(p, &org.roles, &data, trace));
        if let Some(v) = &verdict {
            for (expression, message) in &v.errors {
                plan.policy_errors.push(PolicyError {
                    idp: idp.id.clone(),
                    org: org.id.clone(),
                    expression: expression.clone(),
                    message: message.clone(),
                });
            }
            for name in &v.dropped {
                plan.warnings.push(format!(
                    "organization {:?}: role {name:?} from the policy is not declared; dropped",
                    org.id
                ));
            }
        }
        let policy_roles = verdict
            .as_ref()
            .filter(|v| v.matched)
            .map(|v| v.roles.clone())
            .unwrap_or_default();

        let rules = jit.get(&org.id);
        let jit_match = rules.and_then(|r| {
            r.matching(
                &idp.id,
                new_user,
                identity_is_new,
                verified_domain.as_deref(),
            )
        });

        let was = undecided.remove(org.id.as_str());
        let (after, decision) = match (was.map(|m| m.source), policy_roles.is_empty()) {
            (Some(MembershipSource::Manual), _) => (was.cloned(), Decision::Unchanged),
            (None, false) => (
                Some(membership(
                    &org.id,
                    policy_roles.clone(),
                    MembershipSource::Policy,
                )),
                Decision::Created,
            ),
            (Some(MembershipSource::Policy), false) => {
                let next = membership(&org.id, policy_roles.clone(), MembershipSource::Policy);
                let d = if was.map(|m| &m.roles) == Some(&next.roles) {
                    Decision::Unchanged
                } else {
                    Decision::RolesChanged
                };
                (Some(next), d)
            }
            (Some(MembershipSource::Policy), true) => (None, Decision::Removed),
            (Some(MembershipSource::Jit), false) => (
                Some(membership(
                    &org.id,
                    policy_roles.clone(),
                    MembershipSource::Policy,
                )),
                Decision::BecamePolicy,
            ),
            (Some(MembershipSource::Jit), true) => (was.cloned(), Decision::Unchanged),
            (None, true) => match (&jit_match, rules) {
                (Some(_), Some(r)) => (
                    Some(membership(
                        &org.id,
                        r.default_roles
                            .iter()
                            .filter(|n| org.has_role(n))
                            .cloned()
                            .collect(),
                        MembershipSource::Jit,
                    ))
                    .filter(|m| !m.roles.is_empty()),
                    Decision::Created,
                ),
                _ => (None, Decision::None),
            },
        };
        let decision = if after.is_none() && was.is_none() {
            Decision::None
        } else {
            decision
        };
        if !matches!(decision, Decision::Unchanged | Decision::None) {
            plan.changes.push(Change {
                org: org.id.clone(),
                decision,
                before: was.cloned(),
                after: after.clone(),
            });
        }
        if let Some(m) = &after {
            after_all.insert(org.id.clone(), m.clone());
        }
        if trace && (policy.is_some() || jit_match.is_some() || was.is_some()) {
            let (org_expression, org_matched, roles_expression, dropped_roles) = match verdict {
                Some(v) => (v.org_trace, v.matched, v.roles_trace, v.dropped),
                None => (None, false, None, Vec::new()),
            };
            plan.orgs.push(OrgTrace {
                org: org.id.clone(),
                policy: policy.map(|p| p.source),
                org_expression,
                org_matched,
                roles_expression,
                policy_roles,
                dropped_roles,
                jit: jit_match,
                before: was.cloned(),
                after,
                decision,
            });
        }
    }
    // Memberships of organizations no longer in the file are kept as they
    // are: the engine only decides about declared organizations.
    for (org, m) in undecided {
        after_all.insert(org.to_string(), m.clone());
    }
    plan.memberships = after_all.into_values().collect();
    if plan.memberships.is_empty() {
        plan.outcome = Outcome::NoMembership;
        // A refused new user is not created, so nothing is written. An
        // existing user's removals still apply: the IdP no longer vouches
        // for those memberships.
        if new_user {
            plan.changes.clear();
        }
    }
    Ok(plan)
}

#[cfg(test)]
mod tests;
