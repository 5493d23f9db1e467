//! What the store hands out and takes in: plain data, no sqlx types.

use serde::Serialize;
use serde_json::Value;

use crate::provision::{Change, Membership, Plan};

/// A login once applied: the plan, and the user it was applied to
/// (`None` when a new user was refused and nothing was written).
#[derive(Debug)]
pub struct AppliedLogin {
    pub user_id: Option<String>,
    pub plan: Plan,
    pub audit: Vec<AuditEvent>,
}

#[derive(Debug, Clone, Serialize)]
pub struct UserIdentity {
    pub idp: String,
    pub subject: Option<String>,
    pub email: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct User {
    pub id: String,
    pub email: Option<String>,
    pub name: Option<String>,
    pub created_at: i64,
    /// `false` while the IdP's directory has the user inactive or deleted.
    pub active: bool,
    pub identities: Vec<UserIdentity>,
    pub memberships: Vec<Membership>,
}

pub struct NewUser {
    pub idp: String,
    pub subject: Option<String>,
    pub email: Option<String>,
    pub name: Option<String>,
    pub memberships: Vec<Membership>,
}

pub struct NewSession {
    /// SHA-256 of the id in the cookie, hex.
    pub id_hash: String,
    pub user_id: String,
    pub idp: String,
    pub subject: String,
    /// The IdP's `sub` (the identifier may be another claim), for
    /// back-channel logout and refresh.
    pub idp_sub: Option<String>,
    /// The IdP's session id (`sid`), for back-channel logout.
    pub sid: Option<String>,
    /// Kept for the RP-initiated logout's `id_token_hint`.
    pub id_token: Option<String>,
    /// The refresh token, sealed under `session.secret`.
    pub refresh_token: Option<String>,
    pub claims: Value,
    pub expires_at: i64,
}

#[derive(Debug, Clone)]
pub struct SessionRecord {
    pub id_hash: String,
    pub user_id: String,
    pub idp: String,
    pub subject: String,
    pub sid: Option<String>,
    pub id_token: Option<String>,
    pub claims: Value,
    pub created_at: i64,
    pub last_seen_at: i64,
    pub expires_at: i64,
    /// When the IdP last vouched for it (login or refresh).
    pub validated_at: i64,
    /// Whether it holds a refresh token.
    pub refreshable: bool,
    pub email: Option<String>,
    pub name: Option<String>,
    pub memberships: Vec<Membership>,
}

/// A session claimed for a refresh by this replica.
#[derive(Debug, Clone)]
pub struct RefreshClaim {
    pub user_id: String,
    pub idp: String,
    /// Sealed under `session.secret`.
    pub refresh_token: String,
    /// The claims the session holds now.
    pub claims: Value,
}

#[derive(Debug, Clone)]
pub struct StoredKey {
    pub kid: String,
    /// PKCS#8 PEM.
    pub private_key: String,
}

#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub user_id: Option<String>,
    pub org_id: Option<String>,
    pub limit: i64,
    pub offset: i64,
    /// Newest first (else oldest first).
    pub newest_first: bool,
}

/// One entry of the audit log: who did what to whom, before and after.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditEvent {
    pub id: i64,
    /// Unix seconds.
    pub at: i64,
    /// `login:<idp>`, `token:<n>` (the admin token's position) or
    /// `scim:<idp>` (that IdP's directory).
    pub actor: String,
    pub action: String,
    pub user_id: Option<String>,
    pub organization_id: Option<String>,
    pub before: Option<Value>,
    pub after: Option<Value>,
}

impl AuditEvent {
    pub fn new(
        at: i64,
        actor: &str,
        action: &str,
        user_id: Option<&str>,
        org: Option<&str>,
        before: Option<Value>,
        after: Option<Value>,
    ) -> AuditEvent {
        AuditEvent {
            id: 0,
            at,
            actor: actor.to_string(),
            action: action.to_string(),
            user_id: user_id.map(str::to_string),
            organization_id: org.map(str::to_string),
            before,
            after,
        }
    }

    /// An event about a user as a whole (`user.created`, `user.deactivated`,
    /// …): no organization, no before, what it became in `after`.
    pub fn about_user(
        at: i64,
        actor: &str,
        action: &str,
        user_id: &str,
        after: Value,
    ) -> AuditEvent {
        AuditEvent::new(at, actor, action, Some(user_id), None, None, Some(after))
    }

    pub fn for_change(at: i64, actor: &str, user_id: &str, change: &Change) -> AuditEvent {
        let as_json = |m: &Option<Membership>| {
            m.as_ref()
                .map(|m| serde_json::json!({"roles": m.roles, "source": m.source}))
        };
        AuditEvent::new(
            at,
            actor,
            &format!("membership.{}", change.decision.as_str()),
            Some(user_id),
            Some(&change.org),
            as_json(&change.before),
            as_json(&change.after),
        )
    }

    /// The `portcullis::audit` tracing event, sent once the change is
    /// committed.
    pub fn emit(&self) {
        tracing::info!(
            target: "portcullis::audit",
            actor = %self.actor,
            action = %self.action,
            user_id = self.user_id.as_deref().unwrap_or(""),
            org = self.organization_id.as_deref().unwrap_or(""),
            before = %self.before.as_ref().map(|v| v.to_string()).unwrap_or_default(),
            after = %self.after.as_ref().map(|v| v.to_string()).unwrap_or_default(),
            "audit"
        );
    }
}

/// One of the three just-in-time lists of an organization.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JitList {
    EmailDomains,
    SsoConnectors,
    Roles,
}

impl JitList {
    pub fn name(self) -> &'static str {
        match self {
            JitList::EmailDomains => "email_domain",
            JitList::SsoConnectors => "sso_connector",
            JitList::Roles => "role",
        }
    }

    pub(crate) fn select(self) -> &'static str {
        match self {
            JitList::EmailDomains => {
                "SELECT domain FROM jit_email_domains WHERE org_id = $1 ORDER BY domain"
            }
            JitList::SsoConnectors => {
                "SELECT idp FROM jit_sso_connectors WHERE org_id = $1 ORDER BY idp"
            }
            JitList::Roles => "SELECT role FROM jit_roles WHERE org_id = $1 ORDER BY role",
        }
    }

    pub(crate) fn insert(self) -> &'static str {
        match self {
            JitList::EmailDomains => {
                "INSERT INTO jit_email_domains (org_id, domain) VALUES ($1, $2) ON CONFLICT DO NOTHING"
            }
            JitList::SsoConnectors => {
                "INSERT INTO jit_sso_connectors (org_id, idp) VALUES ($1, $2) ON CONFLICT DO NOTHING"
            }
            JitList::Roles => {
                "INSERT INTO jit_roles (org_id, role) VALUES ($1, $2) ON CONFLICT DO NOTHING"
            }
        }
    }

    pub(crate) fn delete_all(self) -> &'static str {
        match self {
            JitList::EmailDomains => "DELETE FROM jit_email_domains WHERE org_id = $1",
            JitList::SsoConnectors => "DELETE FROM jit_sso_connectors WHERE org_id = $1",
            JitList::Roles => "DELETE FROM jit_roles WHERE org_id = $1",
        }
    }

    pub(crate) fn delete_one(self) -> &'static str {
        match self {
            JitList::EmailDomains => {
                "DELETE FROM jit_email_domains WHERE org_id = $1 AND domain = $2"
            }
            JitList::SsoConnectors => {
                "DELETE FROM jit_sso_connectors WHERE org_id = $1 AND idp = $2"
            }
            JitList::Roles => "DELETE FROM jit_roles WHERE org_id = $1 AND role = $2",
        }
    }
}

/// A session as the management API shows it: never its id, only a prefix
/// of the id's hash to tell sessions apart.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionSummary {
    pub id: String,
    pub idp: String,
    pub created_at: i64,
    pub last_seen_at: i64,
    pub expires_at: i64,
}
