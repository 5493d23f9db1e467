//! `Authorization: Bearer <JWT>` on routes that accept it: verified like
//! an ID token, never a logout token nor one a logout ended, and acting as
//! the existing user it names.

use std::sync::Arc;

use serde_json::Value;

use super::idps_with_issuer;
use crate::oidc::verify::unverified_field;
use crate::oidc::{Expect, OidcError, TokenKind};
use crate::state::{Runtime, Shared};

/// Why a bearer token did not authenticate.
#[derive(Debug)]
pub enum BearerError {
    /// Not verifiable, not ours, expired, or no such user: 401.
    Rejected(String),
    /// The IdP or the store could not be asked: 503/502.
    Unavailable(String),
}

/// The user a bearer JWT speaks for: verified like an ID token (signature,
/// issuer, `aud` containing the client id or one of `bearer_audiences`,
/// expiry), then looked up as an existing user by `(idp, identifier)`.
pub async fn bearer(
    shared: &Shared,
    runtime: &Runtime,
    token: &str,
) -> Result<Arc<crate::session::Principal>, BearerError> {
    let key = crate::util::sha256_hex(token.as_bytes());
    let now = crate::store::now();
    if let Some(p) = shared.sessions.bearer.get(&key).await
        && p.expires_at > now
        && shared.sessions.is_current(&p)
    {
        shared.metrics.session_cache_hits.inc();
        return Ok(p);
    }
    shared.metrics.session_cache_misses.inc();
    let config = &runtime.config;
    let iss = unverified_field(token, 1, "iss")
        .ok_or_else(|| BearerError::Rejected("not a JWT with an issuer".into()))?;
    let mut last = String::from("no identity provider has this issuer");
    for idp in idps_with_issuer(config, &iss) {
        let discovered = match shared.oidc.provider(idp).await {
            Ok(d) => d,
            Err(e) => return Err(BearerError::Unavailable(e.to_string())),
        };
        let mut audiences = vec![idp.client_id.clone()];
        audiences.extend(idp.bearer_audiences.iter().cloned());
        let expect = Expect {
            issuer: discovered.metadata.issuer().as_str(),
            audiences: &audiences,
            authorized_party: None,
            kind: TokenKind::Bearer,
            now,
        };
        let claims = match shared.oidc.verify(idp, token, &expect).await {
            Ok(c) => c,
            Err(OidcError::Token(e)) => {
                last = e.to_string();
                continue;
            }
            Err(e) => return Err(BearerError::Unavailable(e.to_string())),
        };
        let identity = crate::provision::identity_from_claims(idp, &claims)
            .map_err(|e| BearerError::Rejected(e.to_string()))?;
        // Before the store is read: a change of the user from now on
        // makes this principal stale.
        let loaded = shared.sessions.stamp();
        // An ID token handed to the IdP in a logout (`id_token_hint`) must
        // not live on as a credential.
        let hash = key.clone();
        let ended = shared
            .sessions
            .with_store(move |s| async move { s.token_ended(&hash).await })
            .await
            .map_err(|e| BearerError::Unavailable(e.to_string()))?;
        if ended {
            return Err(BearerError::Rejected(
                "this token was ended by a logout".into(),
            ));
        }
        let (id, subject) = (idp.id.clone(), identity.subject.clone());
        let user = shared
            .sessions
            .with_store(move |s| async move { s.user_by_identity(&id, &subject).await })
            .await
            .map_err(|e| BearerError::Unavailable(e.to_string()))?
            .ok_or_else(|| BearerError::Rejected("no such user".into()))?;
        if !user.active {
            return Err(BearerError::Rejected(
                "the user was deactivated by the directory".into(),
            ));
        }
        let exp = claims.get("exp").and_then(Value::as_i64).unwrap_or(now);
        let p = Arc::new(crate::session::Principal::from_token(
            user,
            &idp.id,
            &identity.subject,
            claims,
            exp,
            loaded,
        ));
        shared.sessions.bearer.insert(key, p.clone()).await;
        return Ok(p);
    }
    Err(BearerError::Rejected(last))
}
