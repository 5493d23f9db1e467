//! A login's provisioning, end to end: the engine's plan against what the
//! store holds, applied in one transaction, logged and counted. The login
//! callback, and tests of the store, call [`provision_login`].

use serde_json::Value;

use crate::config::{Config, IdentityProvider};
use crate::metrics::{DecisionLabels, Metrics, PolicyErrorLabels};
use crate::provision::{self, ExistingUser, JitTable, Outcome, Plan, ProvisionError};
use crate::store::{AppliedLogin, Occasion, Store, StoreError, User};

/// The just-in-time rules in force: the file's, with what the management
/// API added to the store. What a login applies, and what `explain` shows.
pub async fn jit_in_force(store: &Store, config: &Config) -> Result<JitTable, StoreError> {
    let api = store.api_jit().await?;
    Ok(provision::merge_jit(
        config,
        &provision::jit_from_config(config),
        &api,
    ))
}

/// What a plan needs to know of a stored user logging in through `idp`:
/// their memberships, whether this identity is new to them (a user
/// pre-provisioned without a subject there), and what the IdP's
/// directory says of them.
pub async fn existing(store: &Store, user: &User, idp: &str) -> Result<ExistingUser, StoreError> {
    Ok(ExistingUser {
        identity_is_new: !user
            .identities
            .iter()
            .any(|i| i.idp == idp && i.subject.is_some()),
        memberships: user.memberships.clone(),
        directory: store.directory_entry(idp, &user.id).await?,
        deactivated: !user.active,
    })
}

/// Why a login's provisioning did not happen.
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    /// The claims cannot name a user (no identifier, an unverified email
    /// as the identifier, not an object): the login is refused.
    #[error(transparent)]
    Claims(#[from] ProvisionError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub async fn provision_login(
    store: &Store,
    config: &Config,
    idp: &IdentityProvider,
    claims: &Value,
) -> Result<AppliedLogin, LoginError> {
    provision_claims(store, config, idp, claims, Occasion::Login).await
}

/// [`provision_login`] for a login or a session's refresh: the same plan,
/// the same transaction, the same logs.
pub async fn provision_claims(
    store: &Store,
    config: &Config,
    idp: &IdentityProvider,
    claims: &Value,
    occasion: Occasion<'_>,
) -> Result<AppliedLogin, LoginError> {
    let identity = provision::identity_from_claims(idp, claims)?;
    let file_jit = provision::jit_from_config(config);
    let applied = store
        .apply_login(&identity, claims, occasion, |existing, api_jit| {
            let jit = provision::merge_jit(config, &file_jit, api_jit);
            provision::plan(config, idp, claims, existing, &jit)
        })
        .await??;
    let plan = &applied.plan;
    for e in &plan.policy_errors {
        tracing::warn!(
            target: "portcullis::provision",
            idp = %e.idp, org = %e.org, expression = %e.expression, error = %e.message,
            "policy expression failed; no match for this organization"
        );
    }
    for w in &plan.warnings {
        tracing::warn!(target: "portcullis::provision", idp = %idp.id, "{w}");
    }
    if plan.outcome != Outcome::Allowed {
        tracing::warn!(
            target: "portcullis::provision",
            idp = %idp.id, subject = %plan.identity.subject, outcome = ?plan.outcome,
            "login refused"
        );
    }
    Ok(applied)
}

/// Counts a login's policy errors and membership decisions.
pub fn count(m: &Metrics, idp: &IdentityProvider, plan: &Plan) {
    for e in &plan.policy_errors {
        m.policy_errors
            .get_or_create(&PolicyErrorLabels {
                idp: e.idp.clone(),
                org: e.org.clone(),
            })
            .inc();
    }
    for c in &plan.changes {
        m.provisioning_decisions
            .get_or_create(&DecisionLabels {
                idp: idp.id.clone(),
                decision: c.decision.as_str().to_string(),
            })
            .inc();
    }
}
