//! A login's provisioning in one transaction: find the user, plan, write
//! user, identity, membership changes and audit events; retried on a
//! collision with a concurrent login.

use super::*;

/// Why the IdP's claims are being applied.
#[derive(Debug, Clone, Copy)]
pub enum Occasion<'a> {
    /// A login: the user may be created (audit actor `login:{idp}`).
    Login,
    /// A session's refresh: only that session's user is re-provisioned,
    /// never created (audit actor `refresh:{idp}`).
    Refresh { user_id: &'a str },
}

impl Store {
    /// Provisions one login in one transaction: finds the user by
    /// `(idp, subject)` or, for a pre-provisioned user, by `(idp, verified
    /// email)`; asks `planner` for the plan given what is stored; writes
    /// the user, identity, membership changes and audit events. A refused
    /// new user leaves nothing behind. Collisions with a concurrent login
    /// of the same user are retried, so both end with one user.
    ///
    /// The outer `Result` is the store's; the inner one is the planner's
    /// refusal, after which nothing was written.
    pub async fn apply_login<F, E>(
        &self,
        identity: &Identity,
        claims: &Value,
        occasion: Occasion<'_>,
        planner: F,
    ) -> Result<Result<AppliedLogin, E>, StoreError>
    where
        F: Fn(Option<&ExistingUser>, &JitTable) -> Result<Plan, E>,
    {
        let mut last = None;
        for attempt in 0..LOGIN_ATTEMPTS {
            match self
                .try_apply_login(identity, claims, occasion, &planner)
                .await
            {
                Ok(applied) => return Ok(applied),
                Err(e) if e.is_retryable() => {
                    tracing::debug!(attempt, error = %e, "login transaction collided; trying again");
                    let backoff = 5 + rand::random::<u64>() % (10 << attempt.min(5));
                    tokio::time::sleep(Duration::from_millis(backoff)).await;
                    last = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        tracing::warn!(error = ?last, "login transaction gave up");
        Err(StoreError::Contention)
    }

    async fn try_apply_login<F, E>(
        &self,
        identity: &Identity,
        claims: &Value,
        occasion: Occasion<'_>,
        planner: &F,
    ) -> Result<Result<AppliedLogin, E>, StoreError>
    where
        F: Fn(Option<&ExistingUser>, &JitTable) -> Result<Plan, E>,
    {
        let mut change = self.audited().await?;
        let by_subject: Option<String> =
            sqlx::query("SELECT user_id FROM identities WHERE idp = $1 AND subject = $2")
                .bind(&identity.idp)
                .bind(&identity.subject)
                .fetch_optional(&mut *change.tx)
                .await?
                .map(|r| r.try_get(0))
                .transpose()?;
        let verified_email = identity
            .email
            .as_deref()
            .filter(|_| identity.email_verified)
            .map(str::to_lowercase);
        // Not logged in here yet: a user the directory (SCIM) created, by
        // its `match` claim; else one pre-provisioned, by verified email.
        let by_match = match (&by_subject, &identity.match_key) {
            (None, Some(key)) => sqlx::query(
                "SELECT user_id FROM identities WHERE idp = $1 AND subject IS NULL AND match_key = $2",
            )
            .bind(&identity.idp)
            .bind(key)
            .fetch_optional(&mut *change.tx)
            .await?
            .map(|r| r.try_get(0))
            .transpose()?,
            _ => None,
        };
        let (user_id, identity_is_new) = match (by_subject, by_match, &verified_email) {
            (Some(id), _, _) => (Some(id), false),
            (None, Some(id), _) => (Some(id), true),
            (None, None, Some(email)) => {
                let pre: Option<String> = sqlx::query(
                    "SELECT user_id FROM identities WHERE idp = $1 AND subject IS NULL AND email = $2",
                )
                .bind(&identity.idp)
                .bind(email)
                .fetch_optional(&mut *change.tx)
                .await?
                .map(|r| r.try_get(0))
                .transpose()?;
                (pre, true)
            }
            (None, None, None) => (None, true),
        };
        let existing = match &user_id {
            Some(id) => Some(ExistingUser {
                memberships: memberships_of(&mut change.tx, id).await?,
                identity_is_new,
                directory: directory_of(&mut change.tx, &identity.idp, id).await?,
                deactivated: is_deactivated(&mut change.tx, id).await?,
            }),
            None => None,
        };
        let api_jit = load_jit(&mut change.tx).await?;
        let plan = match planner(existing.as_ref(), &api_jit) {
            Ok(p) => p,
            Err(refused) => {
                change.tx.rollback().await?;
                return Ok(Err(refused));
            }
        };
        if let Occasion::Refresh { user_id: expected } = occasion
            && user_id.as_deref() != Some(expected)
        {
            // The session's user is gone, or the identity now names
            // another: a refresh creates and moves nothing.
            change.tx.rollback().await?;
            return Ok(Ok(AppliedLogin {
                user_id: None,
                plan,
                audit: Vec::new(),
            }));
        }
        let actor = match occasion {
            Occasion::Login => format!("login:{}", identity.idp),
            Occasion::Refresh { .. } => format!("refresh:{}", identity.idp),
        };
        let at = now();
        let mut audit = Vec::new();

        let user_id = match (user_id, &plan.outcome) {
            // Refused and new: nothing is created.
            (None, Outcome::Allowed) => {
                let id = insert_user(
                    &mut change.tx,
                    &NewUser {
                        idp: identity.idp.clone(),
                        subject: Some(identity.subject.clone()),
                        email: identity.email.clone(),
                        name: identity.name.clone(),
                        memberships: vec![],
                    },
                    verified_email.as_deref(),
                    at,
                )
                .await?;
                audit.push(AuditEvent::about_user(
                    at,
                    &actor,
                    "user.created",
                    &id,
                    serde_json::json!({
                        "idp": identity.idp, "subject": identity.subject,
                        "email": identity.email, "name": identity.name,
                    }),
                ));
                Some(id)
            }
            (None, _) => None,
            (Some(id), _) => {
                if identity_is_new {
                    // A pre-provisioned user's first login records the subject.
                    sqlx::query(
                        "UPDATE identities SET subject = $1 WHERE user_id = $2 AND idp = $3",
                    )
                    .bind(&identity.subject)
                    .bind(&id)
                    .bind(&identity.idp)
                    .execute(&mut *change.tx)
                    .await?;
                    audit.push(AuditEvent::new(
                        at,
                        &actor,
                        "identity.linked",
                        Some(&id),
                        None,
                        None,
                        Some(serde_json::json!({"idp": identity.idp, "subject": identity.subject})),
                    ));
                }
                // The IdP's profile is the newest word on email and name.
                sqlx::query(
                    "UPDATE users SET email = COALESCE($1, email), name = COALESCE($2, name), updated_at = $3 WHERE id = $4",
                )
                .bind(&identity.email)
                .bind(&identity.name)
                .bind(at)
                .bind(&id)
                .execute(&mut *change.tx)
                .await?;
                Some(id)
            }
        };
        let audit = if let Some(id) = &user_id {
            // The IdP's own `sub` beside the identifier, the directory's
            // key, and the claims, as of this login (`portcullis plan`
            // replays them).
            sqlx::query(
                "UPDATE identities SET idp_sub = $1, match_key = COALESCE($2, match_key), claims = $3 \
                 WHERE user_id = $4 AND idp = $5",
            )
            .bind(&identity.sub)
            .bind(&identity.match_key)
            .bind(json_text(claims))
            .bind(id)
            .bind(&identity.idp)
            .execute(&mut *change.tx)
            .await?;
            for c in &plan.changes {
                apply_change(&mut change.tx, id, c, at).await?;
                audit.push(AuditEvent::for_change(at, &actor, id, c));
            }
            change.record_all(audit);
            // Emitted once committed; a retried attempt emits nothing.
            change.commit().await?
        } else {
            change.tx.rollback().await?;
            Vec::new()
        };
        Ok(Ok(AppliedLogin {
            user_id,
            plan,
            audit,
        }))
    }
}
