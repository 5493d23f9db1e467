//! Sessions (hashed ids only), the ID tokens a logout ended, and the
//! back-channel logout tokens already used.

use super::*;

impl Store {
    pub async fn create_session(&self, s: &NewSession) -> Result<(), StoreError> {
        let at = now();
        sqlx::query(
            "INSERT INTO sessions (id_hash, user_id, idp, subject, sid, id_token, claims, created_at, last_seen_at, expires_at, idp_sub, refresh_token, validated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8, $9, $10, $11, $8)",
        )
        .bind(&s.id_hash)
        .bind(&s.user_id)
        .bind(&s.idp)
        .bind(&s.subject)
        .bind(&s.sid)
        .bind(&s.id_token)
        .bind(json_text(&s.claims))
        .bind(at)
        .bind(s.expires_at)
        .bind(&s.idp_sub)
        .bind(&s.refresh_token)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The session with this hashed id, its user and memberships, when it
    /// exists (expiry is the caller's judgement).
    pub async fn session(&self, id_hash: &str) -> Result<Option<SessionRecord>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        let Some(row) = sqlx::query(
            "SELECT s.user_id, s.idp, s.subject, s.sid, s.id_token, s.claims, s.created_at, s.last_seen_at, s.expires_at, u.email, u.name, \
             COALESCE(s.validated_at, s.created_at), CAST(CASE WHEN s.refresh_token IS NULL THEN 0 ELSE 1 END AS BIGINT) \
             FROM sessions s JOIN users u ON u.id = s.user_id WHERE s.id_hash = $1",
        )
        .bind(id_hash)
        .fetch_optional(&mut *conn)
        .await?
        else {
            return Ok(None);
        };
        let user_id: String = row.try_get(0)?;
        let claims: String = row.try_get(5)?;
        let claims = serde_json::from_str(&claims)
            .map_err(|e| StoreError::Corrupt(format!("claims of a session: {e}")))?;
        let memberships = memberships_of(&mut conn, &user_id).await?;
        Ok(Some(SessionRecord {
            id_hash: id_hash.to_string(),
            user_id,
            idp: row.try_get(1)?,
            subject: row.try_get(2)?,
            sid: row.try_get(3)?,
            id_token: row.try_get(4)?,
            claims,
            created_at: row.try_get(6)?,
            last_seen_at: row.try_get(7)?,
            expires_at: row.try_get(8)?,
            email: row.try_get(9)?,
            name: row.try_get(10)?,
            validated_at: row.try_get(11)?,
            refreshable: row.try_get::<i64, _>(12)? == 1,
            memberships,
        }))
    }

    /// Claims a session for a refresh: it holds a refresh token, the IdP
    /// last vouched for it at or before `due`, and no replica holds it
    /// (or its hold ran out). The hold lasts until `hold_until`. `None`:
    /// not this replica's to refresh now.
    pub async fn claim_refresh(
        &self,
        id_hash: &str,
        due: i64,
        at: i64,
        hold_until: i64,
    ) -> Result<Option<RefreshClaim>, StoreError> {
        let row = sqlx::query(
            "UPDATE sessions SET refresh_held_until = $4 \
             WHERE id_hash = $1 AND refresh_token IS NOT NULL AND expires_at > $3 \
             AND COALESCE(validated_at, created_at) <= $2 \
             AND (refresh_held_until IS NULL OR refresh_held_until <= $3) \
             RETURNING user_id, idp, refresh_token, claims",
        )
        .bind(id_hash)
        .bind(due)
        .bind(at)
        .bind(hold_until)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            let claims: String = r.try_get(3)?;
            Ok(RefreshClaim {
                user_id: r.try_get(0)?,
                idp: r.try_get(1)?,
                refresh_token: r.try_get(2)?,
                claims: serde_json::from_str(&claims)
                    .map_err(|e| StoreError::Corrupt(format!("claims of a session: {e}")))?,
            })
        })
        .transpose()
    }

    /// A refresh succeeded: the new claims (and ID token, and refresh
    /// token when the IdP rotated it) replace the old, the IdP vouched
    /// for the session at `at`, and the hold is released.
    pub async fn session_refreshed(
        &self,
        id_hash: &str,
        claims: &Value,
        id_token: Option<&str>,
        refresh_token: Option<&str>,
        at: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE sessions SET claims = $2, id_token = COALESCE($3, id_token), \
             refresh_token = COALESCE($4, refresh_token), validated_at = $5, refresh_held_until = NULL \
             WHERE id_hash = $1",
        )
        .bind(id_hash)
        .bind(json_text(claims))
        .bind(id_token)
        .bind(refresh_token)
        .bind(at)
        .execute(&self.pool)
        .await?;
        self.notify(Notice::Sessions(vec![id_hash.to_string()]))
            .await
    }

    /// Puts off a session's refresh until `until` (the IdP could not be
    /// reached): the session stays as it is.
    pub async fn hold_refresh(&self, id_hash: &str, until: i64) -> Result<(), StoreError> {
        sqlx::query("UPDATE sessions SET refresh_held_until = $2 WHERE id_hash = $1")
            .bind(id_hash)
            .bind(until)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn touch_session(&self, id_hash: &str, at: i64) -> Result<(), StoreError> {
        sqlx::query("UPDATE sessions SET last_seen_at = $1 WHERE id_hash = $2")
            .bind(at)
            .bind(id_hash)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Ends one session (logout); its ID token is never a bearer
    /// credential again.
    pub async fn delete_session(&self, id_hash: &str) -> Result<bool, StoreError> {
        let mut tx = self.begin().await?;
        let ended = end_sessions(
            &mut tx,
            sqlx::query(
                "DELETE FROM sessions WHERE id_hash = $1 RETURNING id_hash, id_token, expires_at",
            )
            .bind(id_hash),
        )
        .await?;
        tx.commit().await?;
        Ok(!ended.is_empty())
    }

    /// Whether a logout ended the ID token with this SHA-256 (hex).
    pub async fn token_ended(&self, token_hash: &str) -> Result<bool, StoreError> {
        Ok(
            sqlx::query("SELECT 1 FROM ended_tokens WHERE token_hash = $1")
                .bind(token_hash)
                .fetch_optional(&self.pool)
                .await?
                .is_some(),
        )
    }

    /// Records a back-channel logout token's `iss` and `jti`; `false` when
    /// any replica recorded them before (a replay).
    pub async fn first_use_of_logout_token(
        &self,
        iss: &str,
        jti: &str,
        expires_at: i64,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "INSERT INTO logout_tokens_seen (iss, jti, expires_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
        )
        .bind(iss)
        .bind(jti)
        .bind(expires_at)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Ends the sessions of `(idp, subject)`, only the one IdP session
    /// `sid` when given, or every session with that `sid` when no subject
    /// is given. Returns the hashed ids ended.
    pub async fn delete_sessions_by_idp(
        &self,
        idp: &str,
        subject: Option<&str>,
        sid: Option<&str>,
    ) -> Result<Vec<String>, StoreError> {
        // One statement: exactly the sessions deleted are returned, so the
        // caller drops exactly those from its cache. `subject` is the IdP's
        // `sub`, whatever claim the user is keyed by.
        let mut tx = self.begin().await?;
        let ended = end_sessions(
            &mut tx,
            sqlx::query(
                "DELETE FROM sessions WHERE idp = $1 AND ($2 IS NULL OR idp_sub = $2) AND ($3 IS NULL OR sid = $3) RETURNING id_hash, id_token, expires_at",
            )
            .bind(idp)
            .bind(subject)
            .bind(sid),
        )
        .await?;
        tx.commit().await?;
        Ok(ended)
    }

    pub async fn delete_expired_sessions(&self, at: i64, idle: i64) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM sessions WHERE expires_at <= $1 OR last_seen_at <= $2")
            .bind(at)
            .bind(at - idle)
            .execute(&self.pool)
            .await?;
        // What these remember is moot once the tokens have expired.
        for sql in [
            "DELETE FROM ended_tokens WHERE expires_at <= $1",
            "DELETE FROM logout_tokens_seen WHERE expires_at <= $1",
        ] {
            sqlx::query(sql).bind(at).execute(&self.pool).await?;
        }
        Ok(done.rows_affected())
    }

    /// A user's sessions, newest first.
    pub async fn user_sessions(&self, user_id: &str) -> Result<Vec<SessionSummary>, StoreError> {
        let rows = sqlx::query(
            "SELECT id_hash, idp, created_at, last_seen_at, expires_at FROM sessions WHERE user_id = $1 ORDER BY created_at DESC",
        )
        .bind(user_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let hash: String = r.try_get(0)?;
                Ok(SessionSummary {
                    id: hash.chars().take(16).collect(),
                    idp: r.try_get(1)?,
                    created_at: r.try_get(2)?,
                    last_seen_at: r.try_get(3)?,
                    expires_at: r.try_get(4)?,
                })
            })
            .collect()
    }

    /// Ends every session of a user; returns the hashed ids ended.
    pub async fn delete_user_sessions(
        &self,
        user_id: &str,
        actor: &str,
    ) -> Result<Vec<String>, StoreError> {
        let mut change = self.audited().await?;
        let hashes = end_sessions(
            &mut change.tx,
            sqlx::query(
                "DELETE FROM sessions WHERE user_id = $1 RETURNING id_hash, id_token, expires_at",
            )
            .bind(user_id),
        )
        .await?;
        let event = AuditEvent::new(
            now(),
            actor,
            "sessions.revoked",
            Some(user_id),
            None,
            Some(serde_json::json!({"sessions": hashes.len()})),
            None,
        );
        change.record(event);
        change.commit().await?;
        Ok(hashes)
    }
}
