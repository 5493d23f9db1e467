//! Sessions kept true to the IdP (SPEC 4a). Once `session.refresh_interval`
//! has passed since the IdP last vouched for a session, the next request
//! through it starts a refresh in the background ([`after_request`]; the
//! request goes on as it was). One replica does it: the store hands the
//! session to whoever claims it first. The refresh token is redeemed, the
//! new claims (the refreshed ID token's, else userinfo's) replace the
//! stored ones, and provisioning runs again exactly as at a login (audit
//! actor `refresh:{idp}`). `invalid_grant`, an identity that no longer names
//! the session's user, or no membership left end the session; an IdP that
//! cannot be reached leaves it as it is until the next interval.

use std::sync::Arc;

use serde_json::Value;

use super::provision::{LoginError, provision_claims};
use super::redirect_uri;
use crate::config::{Config, IdentityProvider};
use crate::oidc::{Expect, OidcError, TokenKind};
use crate::provision::Outcome;
use crate::sealed::{self, Purpose};
use crate::session::Principal;
use crate::state::Shared;
use crate::store::{Occasion, RefreshClaim};

/// How long a claimed refresh keeps other replicas off the session.
const HOLD_SECS: i64 = 60;

/// Starts the session's refresh in the background when it is due and
/// this replica has not asked lately. Never waits for it.
pub fn after_request(shared: &Arc<Shared>, config: &Config, principal: &Principal, now: i64) {
    let interval = config.session.refresh_interval.as_secs() as i64;
    let Some(hash) = principal.session_hash.as_deref() else {
        return;
    };
    if interval == 0 || !principal.refreshable || now - principal.validated_at < interval {
        return;
    }
    if !shared.sessions.ask_refresh(hash) {
        return;
    }
    let (shared2, hash) = (shared.clone(), hash.to_string());
    shared.sessions.background().spawn(async move {
        let outcome = refresh(&shared2, &hash).await;
        if let Some(outcome) = outcome {
            shared2.metrics.count_refresh(outcome.label());
        }
    });
}

/// What a refresh came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefreshOutcome {
    Refreshed,
    /// The IdP refused the grant, or no longer vouches for this user:
    /// the session ended.
    Revoked,
    /// Provisioning left the user no membership: the session ended.
    NoMembership,
    /// The IdP did not answer: the session stays until the next interval.
    Unreachable,
    /// Something else went wrong (the store, an unexpected answer): the
    /// session stays until the next interval.
    Error,
}

impl RefreshOutcome {
    pub fn label(self) -> &'static str {
        match self {
            RefreshOutcome::Refreshed => "refreshed",
            RefreshOutcome::Revoked => "revoked",
            RefreshOutcome::NoMembership => "no_membership",
            RefreshOutcome::Unreachable => "unreachable",
            RefreshOutcome::Error => "error",
        }
    }
}

/// Refreshes the session when it is due and this replica claims it;
/// `None` when it was not this replica's to do.
pub async fn refresh(shared: &Arc<Shared>, hash: &str) -> Option<RefreshOutcome> {
    let runtime = shared.runtime.load_full();
    let config = &runtime.config;
    let now = crate::store::now();
    let interval = config.session.refresh_interval.as_secs() as i64;
    let store = shared.store();
    let claim = match store
        .claim_refresh(hash, now - interval, now, now + HOLD_SECS)
        .await
    {
        Ok(Some(c)) => c,
        Ok(None) => return None,
        Err(e) => {
            tracing::warn!(target: "portcullis::session", error = %e, "refresh not claimed");
            return Some(RefreshOutcome::Error);
        }
    };
    let outcome = match redeem(shared, config, hash, &claim, now).await {
        Ok(()) => RefreshOutcome::Refreshed,
        Err(Failed::End(outcome, why)) => {
            tracing::info!(target: "portcullis::session", user = %claim.user_id, idp = %claim.idp, "session ended by its refresh: {why}");
            end(shared, hash, &claim.user_id, outcome).await;
            outcome
        }
        Err(Failed::Later(outcome, why)) => {
            tracing::warn!(target: "portcullis::session", user = %claim.user_id, idp = %claim.idp, "session kept until the next refresh: {why}");
            if let Err(e) = store
                .hold_refresh(hash, now + interval.max(HOLD_SECS))
                .await
            {
                tracing::warn!(target: "portcullis::session", error = %e, "refresh hold not recorded");
            }
            outcome
        }
    };
    Some(outcome)
}

enum Failed {
    /// The session must end.
    End(RefreshOutcome, String),
    /// Try again at the next interval.
    Later(RefreshOutcome, String),
}

fn later(e: OidcError) -> Failed {
    match e {
        OidcError::Unreachable { .. } => Failed::Later(RefreshOutcome::Unreachable, e.to_string()),
        OidcError::GrantRefused { .. } => Failed::End(RefreshOutcome::Revoked, e.to_string()),
        e => Failed::Later(RefreshOutcome::Error, e.to_string()),
    }
}

async fn redeem(
    shared: &Arc<Shared>,
    config: &Arc<Config>,
    hash: &str,
    claim: &RefreshClaim,
    now: i64,
) -> Result<(), Failed> {
    let revoked = |why: &str| Failed::End(RefreshOutcome::Revoked, why.to_string());
    let Some(idp) = config.identity_provider(&claim.idp).cloned() else {
        return Err(revoked("its identity provider is no longer configured"));
    };
    let token = sealed::open(
        &config.session.secret,
        Purpose::RefreshToken,
        hash,
        &claim.refresh_token,
    )
    .and_then(|t| String::from_utf8(t).ok())
    .ok_or_else(|| revoked("the refresh token cannot be opened (session.secret changed)"))?;
    let store = shared.store();
    let old_claims = &claim.claims;
    let discovered = shared.oidc.provider(&idp).await.map_err(later)?;
    let tokens = shared
        .oidc
        .refresh(&discovered, &idp, &redirect_uri(config), &token)
        .await
        .map_err(later)?;
    let old_sub = old_claims.get("sub").cloned();
    let claims = match &tokens.id_token {
        Some(id_token) => {
            let audiences = [idp.client_id.clone()];
            let login_nonce = old_claims.get("nonce").and_then(Value::as_str);
            let expect = Expect {
                issuer: discovered.metadata.issuer().as_str(),
                audiences: &audiences,
                authorized_party: Some(&idp.client_id),
                kind: TokenKind::RefreshedIdToken { nonce: login_nonce },
                now,
            };
            let mut claims = shared
                .oidc
                .verify(&idp, id_token, &expect)
                .await
                .map_err(|e| revoked(&format!("the refreshed ID token was rejected: {e}")))?;
            if crate::oidc::Oidc::merges_userinfo(&idp) {
                let info =
                    userinfo(shared, &discovered, &idp, &tokens.access_token, &old_sub).await?;
                super::callback::merge_claims(&mut claims, info);
            }
            claims
        }
        None => {
            // No new ID token: userinfo's claims, with what only the login's
            // ID token said about the sign-in itself.
            let mut info =
                userinfo(shared, &discovered, &idp, &tokens.access_token, &old_sub).await?;
            if let Some(obj) = info.as_object_mut() {
                for k in ["iss", "aud", "acr", "amr", "auth_time", "sid", "nonce"] {
                    if let Some(v) = old_claims.get(k) {
                        obj.entry(k).or_insert_with(|| v.clone());
                    }
                }
            }
            info
        }
    };
    if claims.get("sub") != old_sub.as_ref() {
        return Err(revoked(
            "the IdP's answer is about another user (sub differs)",
        ));
    }
    let (config2, idp2, claims2, user) = (
        config.clone(),
        idp.clone(),
        claims.clone(),
        claim.user_id.clone(),
    );
    let applied = shared
        .sessions
        .with_store(move |s| async move {
            Ok(provision_claims(
                &s,
                &config2,
                &idp2,
                &claims2,
                Occasion::Refresh { user_id: &user },
            )
            .await)
        })
        .await
        .map_err(|e| Failed::Later(RefreshOutcome::Error, e.to_string()))?;
    let applied = match applied {
        Ok(a) => a,
        Err(LoginError::Claims(e)) => return Err(revoked(&e.to_string())),
        Err(LoginError::Store(e)) => {
            return Err(Failed::Later(RefreshOutcome::Error, e.to_string()));
        }
    };
    super::provision::count(&shared.metrics, &idp, &applied.plan);
    if applied.user_id.as_deref() != Some(claim.user_id.as_str()) {
        return Err(revoked("the identity no longer names this user"));
    }
    if applied.plan.outcome != Outcome::Allowed {
        return Err(Failed::End(
            RefreshOutcome::NoMembership,
            "no membership is left".into(),
        ));
    }
    let sealed_new = tokens
        .refresh_token
        .as_deref()
        .map(|t| super::callback::seal_refresh_token(config, hash, t));
    store
        .session_refreshed(
            hash,
            &claims,
            tokens.id_token.as_deref(),
            sealed_new.as_deref(),
            now,
        )
        .await
        .map_err(|e| Failed::Later(RefreshOutcome::Error, e.to_string()))?;
    // The user's memberships may have changed: every cached session of
    // theirs here (this one included) reads the store again.
    shared.sessions.forget_user(&claim.user_id);
    tracing::info!(target: "portcullis::session", user = %claim.user_id, idp = %idp.id, changes = applied.plan.changes.len(), "session refreshed");
    Ok(())
}

async fn userinfo(
    shared: &Shared,
    discovered: &crate::oidc::Discovered,
    idp: &IdentityProvider,
    access_token: &str,
    sub: &Option<Value>,
) -> Result<Value, Failed> {
    let info = shared
        .oidc
        .userinfo(discovered, idp, access_token)
        .await
        .map_err(later)?;
    if info.get("sub") != sub.as_ref() {
        return Err(Failed::End(
            RefreshOutcome::Revoked,
            "the userinfo answer is about another user (sub differs)".into(),
        ));
    }
    Ok(info)
}

/// Ends the session after a failed refresh.
async fn end(shared: &Shared, hash: &str, user_id: &str, outcome: RefreshOutcome) {
    let key = hash.to_string();
    match shared
        .sessions
        .with_store(move |s| async move { s.delete_session(&key).await })
        .await
    {
        Ok(ended) => {
            // Every cached session of the user, this one included.
            shared.sessions.forget_user(user_id);
            if ended {
                shared.metrics.count_ended(
                    match outcome {
                        RefreshOutcome::NoMembership => "no_membership",
                        _ => "refresh_revoked",
                    },
                    1,
                );
            }
        }
        Err(e) => {
            tracing::warn!(target: "portcullis::session", error = %e, "session to end after its refresh not removed")
        }
    }
}
