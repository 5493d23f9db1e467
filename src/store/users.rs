//! Users and their identities: pre-provisioning, look-ups, listing,
//! deletion (with their memberships and sessions).

use super::*;

impl Store {
    pub async fn user(&self, id: &str) -> Result<Option<User>, StoreError> {
        let Some(row) = sqlx::query(
            "SELECT id, email, name, created_at, deactivated_at FROM users WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        else {
            return Ok(None);
        };
        let mut conn = self.pool.acquire().await?;
        let identities = sqlx::query(
            "SELECT idp, subject, email FROM identities WHERE user_id = $1 ORDER BY idp",
        )
        .bind(id)
        .fetch_all(&mut *conn)
        .await?
        .iter()
        .map(|r| {
            Ok(UserIdentity {
                idp: r.try_get(0)?,
                subject: r.try_get(1)?,
                email: r.try_get(2)?,
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
        let memberships = memberships_of(&mut conn, id).await?;
        Ok(Some(User {
            id: row.try_get(0)?,
            email: row.try_get(1)?,
            name: row.try_get(2)?,
            created_at: row.try_get(3)?,
            active: row.try_get::<Option<i64>, _>(4)?.is_none(),
            identities,
            memberships,
        }))
    }

    /// Pre-provisions a user for an IdP: memberships are `manual`. Refused
    /// with `Conflict` when the IdP already knows that subject or email.
    pub async fn create_user(&self, u: &NewUser, actor: &str) -> Result<User, StoreError> {
        let email = u.email.as_deref().map(str::to_lowercase);
        let mut change = self.audited().await?;
        let taken = sqlx::query(
            "SELECT user_id FROM identities WHERE idp = $1 AND (subject = $2 OR (subject IS NULL AND email = $3))",
        )
        .bind(&u.idp)
        .bind(&u.subject)
        .bind(&email)
        .fetch_optional(&mut *change.tx)
        .await?;
        if taken.is_some() {
            return Err(StoreError::Conflict(format!(
                "identity provider {:?} already has a user with this subject or email",
                u.idp
            )));
        }
        let at = now();
        let id = insert_user(&mut change.tx, u, email.as_deref(), at).await?;
        let mut audit = vec![AuditEvent::about_user(
            at,
            actor,
            "user.created",
            &id,
            serde_json::json!({"idp": u.idp, "subject": u.subject, "email": u.email, "name": u.name}),
        )];
        for m in &u.memberships {
            let m = Membership {
                source: MembershipSource::Manual,
                ..m.clone()
            };
            write_membership(&mut change.tx, &id, &m, at).await?;
            audit.push(AuditEvent::for_change(
                at,
                actor,
                &id,
                &Change {
                    org: m.org.clone(),
                    decision: Decision::Created,
                    before: None,
                    after: Some(m),
                },
            ));
        }
        change.record_all(audit);
        change.commit().await?;
        self.user(&id)
            .await?
            .ok_or_else(|| StoreError::Corrupt("a created user vanished".into()))
    }

    /// The user with this identity at `idp`, with memberships.
    pub async fn user_by_identity(
        &self,
        idp: &str,
        subject: &str,
    ) -> Result<Option<User>, StoreError> {
        let id: Option<String> =
            sqlx::query("SELECT user_id FROM identities WHERE idp = $1 AND subject = $2")
                .bind(idp)
                .bind(subject)
                .fetch_optional(&self.pool)
                .await?
                .map(|r| r.try_get(0))
                .transpose()?;
        match id {
            Some(id) => self.user(&id).await,
            None => Ok(None),
        }
    }

    /// Users by creation, a page at a time.
    /// Users by creation, whose email contains `search` (any case) when
    /// given.
    pub async fn users(
        &self,
        search: Option<&str>,
        limit: i64,
        offset: i64,
    ) -> Result<Vec<User>, StoreError> {
        let ids = sqlx::query(
            "SELECT id FROM users WHERE $3 IS NULL OR LOWER(COALESCE(email, '')) LIKE $3 ESCAPE '\\' \
             ORDER BY created_at, id LIMIT $1 OFFSET $2",
        )
        .bind(limit)
        .bind(offset)
        .bind(search.map(like_pattern))
        .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|r| r.try_get::<String, _>(0))
            .collect::<Result<Vec<_>, _>>()?;
        let mut users = Vec::with_capacity(ids.len());
        for id in ids {
            // A user deleted between the two reads is skipped.
            users.extend(self.user(&id).await?);
        }
        Ok(users)
    }

    pub async fn count_users(&self) -> Result<i64, StoreError> {
        self.count_users_matching(None).await
    }

    /// How many users [`Store::users`] lists for `search`.
    pub async fn count_users_matching(&self, search: Option<&str>) -> Result<i64, StoreError> {
        let row = sqlx::query(
            "SELECT COUNT(*) FROM users WHERE $1 IS NULL OR LOWER(COALESCE(email, '')) LIKE $1 ESCAPE '\\'",
        )
        .bind(search.map(like_pattern))
        .fetch_one(&self.pool)
        .await?;
        Ok(row.try_get(0)?)
    }

    /// Deletes a user with their identities, memberships and sessions.
    pub async fn delete_user(&self, user_id: &str, actor: &str) -> Result<bool, StoreError> {
        let Some(user) = self.user(user_id).await? else {
            return Ok(false);
        };
        let mut change = self.audited().await?;
        let at = now();
        let mut audit = Vec::new();
        for m in &user.memberships {
            audit.push(AuditEvent::for_change(
                at,
                actor,
                user_id,
                &Change {
                    org: m.org.clone(),
                    decision: Decision::Removed,
                    before: Some(m.clone()),
                    after: None,
                },
            ));
        }
        audit.push(AuditEvent::new(
            at,
            actor,
            "user.deleted",
            Some(user_id),
            None,
            Some(serde_json::to_value(&user).unwrap_or(Value::Null)),
            None,
        ));
        end_sessions(
            &mut change.tx,
            sqlx::query(
                "DELETE FROM sessions WHERE user_id = $1 RETURNING id_hash, id_token, expires_at",
            )
            .bind(user_id),
        )
        .await?;
        for sql in [
            "DELETE FROM membership_roles WHERE user_id = $1",
            "DELETE FROM memberships WHERE user_id = $1",
            "DELETE FROM identities WHERE user_id = $1",
        ] {
            sqlx::query(sql)
                .bind(user_id)
                .execute(&mut *change.tx)
                .await?;
        }
        let done = sqlx::query("DELETE FROM users WHERE id = $1")
            .bind(user_id)
            .execute(&mut *change.tx)
            .await?;
        change.record_all(audit);
        change.commit().await?;
        Ok(done.rows_affected() > 0)
    }
}

/// `%text%` for `LIKE`, lower-case, with `%` and `_` in the text matched as
/// themselves.
fn like_pattern(text: &str) -> String {
    let escaped: String = text
        .to_lowercase()
        .chars()
        .flat_map(|c| match c {
            '%' | '_' | '\\' => vec!['\\', c],
            c => vec![c],
        })
        .collect();
    format!("%{escaped}%")
}
