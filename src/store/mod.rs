//! Persistence: users, identities, memberships, JIT entries added through
//! the API, sessions, the shared signing key and the audit log, in SQLite
//! or PostgreSQL. The only module that knows sqlx. Both databases run the
//! same SQL (`$n` placeholders, `ON CONFLICT`), through sqlx's `Any`
//! driver; only the migrations differ.

mod records;

use std::time::Duration;

use serde_json::Value;
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Row};

use crate::config::StoreKind;
use crate::provision::{
    Change, Decision, ExistingUser, Identity, JitRules, JitTable, Membership, MembershipSource,
    Outcome, Plan, ProvisionError,
};
pub use records::*;

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("src/store/migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator =
    sqlx::migrate!("src/store/migrations/postgres");

/// How many times a login transaction is tried when it collides with a
/// concurrent one (a unique constraint, a busy SQLite file, a PostgreSQL
/// serialization failure).
const LOGIN_ATTEMPTS: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the store is unreachable: {0}")]
    Unavailable(String),
    #[error("store query failed: {0}")]
    Database(#[from] sqlx::Error),
    #[error("store migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("stored data is not readable: {0}")]
    Corrupt(String),
    #[error(transparent)]
    Provision(#[from] ProvisionError),
    #[error("{0}")]
    Conflict(String),
    #[error(
        "a concurrent change kept colliding with this one; gave up after {LOGIN_ATTEMPTS} tries"
    )]
    Contention,
}

impl StoreError {
    /// A collision with a concurrent transaction: trying again can succeed.
    fn is_retryable(&self) -> bool {
        let StoreError::Database(sqlx::Error::Database(e)) = self else {
            return false;
        };
        if e.is_unique_violation() {
            return true;
        }
        // SQLite: BUSY (5), BUSY_SNAPSHOT (517), LOCKED (6); PostgreSQL:
        // serialization_failure, deadlock_detected.
        matches!(
            e.code().as_deref(),
            Some("5" | "517" | "6" | "262" | "40001" | "40P01")
        )
    }

    /// The store could not be reached at all (as opposed to a query that
    /// failed): new logins and API writes answer 503.
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            StoreError::Unavailable(_)
                | StoreError::Database(
                    sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed
                )
        )
    }
}

pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn new_id(prefix: &str) -> String {
    format!("{prefix}{}", hex::encode(rand::random::<[u8; 12]>()))
}

fn json_text(v: &impl serde::Serialize) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "null".into())
}

#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    kind: StoreKind,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("kind", &self.kind).finish()
    }
}

/// The URL without a password, for logs.
pub fn redacted_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => url.to_string(),
    }
}

impl Store {
    /// Connects, creating a SQLite file when it is missing, and applies
    /// the embedded migrations.
    pub async fn open(url: &str, kind: StoreKind) -> Result<Store, StoreError> {
        sqlx::any::install_default_drivers();
        let url = match kind {
            StoreKind::Sqlite if !url.contains("mode=") => {
                let sep = if url.contains('?') { '&' } else { '?' };
                format!("{url}{sep}mode=rwc")
            }
            _ => url.to_string(),
        };
        let max = match kind {
            // One file, one writer at a time: a few connections are plenty.
            StoreKind::Sqlite => 4,
            StoreKind::Postgres => 10,
        };
        let pool = AnyPoolOptions::new()
            .max_connections(max)
            .acquire_timeout(Duration::from_secs(5))
            .connect(&url)
            .await
            .map_err(|e| StoreError::Unavailable(format!("{}: {e}", redacted_url(&url))))?;
        let store = Store { pool, kind };
        if store.kind == StoreKind::Sqlite {
            // Readers do not block the writer. Persistent in the file.
            sqlx::query("PRAGMA journal_mode=WAL")
                .execute(&store.pool)
                .await?;
        }
        store.migrate().await?;
        Ok(store)
    }

    /// Opens an existing store to read it (`explain`, `plan`): never
    /// creates a SQLite file and never migrates; `Ok(None)` when the
    /// SQLite file does not exist.
    pub async fn open_to_read(url: &str, kind: StoreKind) -> Result<Option<Store>, StoreError> {
        sqlx::any::install_default_drivers();
        let url = match kind {
            StoreKind::Sqlite => {
                let path = url
                    .trim_start_matches("sqlite://")
                    .trim_start_matches("sqlite:")
                    .split('?')
                    .next()
                    .unwrap_or("");
                if !std::path::Path::new(path).exists() {
                    return Ok(None);
                }
                format!("sqlite://{path}?mode=ro")
            }
            StoreKind::Postgres => url.to_string(),
        };
        let pool = AnyPoolOptions::new()
            .max_connections(2)
            .acquire_timeout(Duration::from_secs(5))
            .connect(&url)
            .await
            .map_err(|e| StoreError::Unavailable(format!("{}: {e}", redacted_url(&url))))?;
        Ok(Some(Store { pool, kind }))
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        let migrator = match self.kind {
            StoreKind::Sqlite => &SQLITE_MIGRATIONS,
            StoreKind::Postgres => &POSTGRES_MIGRATIONS,
        };
        // Two replicas starting at once: the loser of the race sees the
        // winner's tables, so one more try is enough.
        match migrator.run(&self.pool).await {
            Ok(()) => Ok(()),
            Err(first) => {
                tokio::time::sleep(Duration::from_millis(200)).await;
                migrator.run(&self.pool).await.map_err(|_| first.into())
            }
        }
    }

    pub fn kind(&self) -> &StoreKind {
        &self.kind
    }

    /// For `/readyz`.
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn begin(&self) -> Result<sqlx::Transaction<'static, sqlx::Any>, StoreError> {
        Ok(match self.kind {
            // Take the write lock up front: a deferred transaction that
            // reads and then writes deadlocks against another one.
            StoreKind::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            StoreKind::Postgres => self.pool.begin().await?,
        })
    }

    // ---- logins -------------------------------------------------------

    /// Provisions one login in one transaction: finds the user by
    /// `(idp, subject)` or, for a pre-provisioned user, by `(idp, verified
    /// email)`; asks `planner` for the plan given what is stored; writes
    /// the user, identity, membership changes and audit events. A refused
    /// new user leaves nothing behind. Collisions with a concurrent login
    /// of the same user are retried, so both end with one user.
    pub async fn apply_login<F>(
        &self,
        identity: &Identity,
        planner: F,
    ) -> Result<AppliedLogin, StoreError>
    where
        F: Fn(Option<&ExistingUser>, &JitTable) -> Result<Plan, ProvisionError>,
    {
        let mut last = None;
        for attempt in 0..LOGIN_ATTEMPTS {
            match self.try_apply_login(identity, &planner).await {
                Ok(applied) => {
                    for event in &applied.audit {
                        event.emit();
                    }
                    return Ok(applied);
                }
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

    async fn try_apply_login<F>(
        &self,
        identity: &Identity,
        planner: &F,
    ) -> Result<AppliedLogin, StoreError>
    where
        F: Fn(Option<&ExistingUser>, &JitTable) -> Result<Plan, ProvisionError>,
    {
        let mut tx = self.begin().await?;
        let by_subject: Option<String> =
            sqlx::query("SELECT user_id FROM identities WHERE idp = $1 AND subject = $2")
                .bind(&identity.idp)
                .bind(&identity.subject)
                .fetch_optional(&mut *tx)
                .await?
                .map(|r| r.try_get(0))
                .transpose()?;
        let verified_email = identity
            .email
            .as_deref()
            .filter(|_| identity.email_verified)
            .map(str::to_lowercase);
        let (user_id, identity_is_new) = match (by_subject, &verified_email) {
            (Some(id), _) => (Some(id), false),
            (None, Some(email)) => {
                let pre: Option<String> = sqlx::query(
                    "SELECT user_id FROM identities WHERE idp = $1 AND subject IS NULL AND email = $2",
                )
                .bind(&identity.idp)
                .bind(email)
                .fetch_optional(&mut *tx)
                .await?
                .map(|r| r.try_get(0))
                .transpose()?;
                (pre, true)
            }
            (None, None) => (None, true),
        };
        let existing = match &user_id {
            Some(id) => Some(ExistingUser {
                memberships: memberships_of(&mut tx, id).await?,
                identity_is_new,
            }),
            None => None,
        };
        let api_jit = load_jit(&mut tx).await?;
        let plan = planner(existing.as_ref(), &api_jit)?;
        let actor = format!("login:{}", identity.idp);
        let at = now();
        let mut audit = Vec::new();

        let user_id = match (user_id, &plan.outcome) {
            // Refused and new: nothing is created.
            (None, Outcome::Allowed) => {
                let id = insert_user(
                    &mut tx,
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
                sqlx::query("UPDATE identities SET idp_sub = $1 WHERE user_id = $2 AND idp = $3")
                    .bind(&identity.sub)
                    .bind(&id)
                    .bind(&identity.idp)
                    .execute(&mut *tx)
                    .await?;
                audit.push(AuditEvent::new(
                    at,
                    &actor,
                    "user.created",
                    Some(&id),
                    None,
                    None,
                    Some(serde_json::json!({
                        "idp": identity.idp, "subject": identity.subject,
                        "email": identity.email, "name": identity.name,
                    })),
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
                    .execute(&mut *tx)
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
                sqlx::query("UPDATE identities SET idp_sub = $1 WHERE user_id = $2 AND idp = $3")
                    .bind(&identity.sub)
                    .bind(&id)
                    .bind(&identity.idp)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query(
                    "UPDATE users SET email = COALESCE($1, email), name = COALESCE($2, name), updated_at = $3 WHERE id = $4",
                )
                .bind(&identity.email)
                .bind(&identity.name)
                .bind(at)
                .bind(&id)
                .execute(&mut *tx)
                .await?;
                Some(id)
            }
        };
        if let Some(id) = &user_id {
            for change in &plan.changes {
                apply_change(&mut tx, id, change, at).await?;
                audit.push(AuditEvent::for_change(at, &actor, id, change));
            }
            for event in &audit {
                event.insert(&mut tx).await?;
            }
            tx.commit().await?;
        } else {
            tx.rollback().await?;
            audit.clear();
        }
        Ok(AppliedLogin {
            user_id,
            plan,
            audit,
        })
    }

    // ---- users ----------------------------------------------------------

    pub async fn user(&self, id: &str) -> Result<Option<User>, StoreError> {
        let Some(row) = sqlx::query("SELECT id, email, name, created_at FROM users WHERE id = $1")
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
            identities,
            memberships,
        }))
    }

    /// Pre-provisions a user for an IdP: memberships are `manual`. Refused
    /// with `Conflict` when the IdP already knows that subject or email.
    pub async fn create_user(&self, u: &NewUser, actor: &str) -> Result<User, StoreError> {
        let email = u.email.as_deref().map(str::to_lowercase);
        let mut tx = self.begin().await?;
        let taken = sqlx::query(
            "SELECT user_id FROM identities WHERE idp = $1 AND (subject = $2 OR (subject IS NULL AND email = $3))",
        )
        .bind(&u.idp)
        .bind(&u.subject)
        .bind(&email)
        .fetch_optional(&mut *tx)
        .await?;
        if taken.is_some() {
            return Err(StoreError::Conflict(format!(
                "identity provider {:?} already has a user with this subject or email",
                u.idp
            )));
        }
        let at = now();
        let id = insert_user(&mut tx, u, email.as_deref(), at).await?;
        let mut audit = vec![AuditEvent::new(
            at,
            actor,
            "user.created",
            Some(&id),
            None,
            None,
            Some(
                serde_json::json!({"idp": u.idp, "subject": u.subject, "email": u.email, "name": u.name}),
            ),
        )];
        for m in &u.memberships {
            let m = Membership {
                source: MembershipSource::Manual,
                ..m.clone()
            };
            write_membership(&mut tx, &id, &m, at).await?;
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
        for event in &audit {
            event.insert(&mut tx).await?;
        }
        tx.commit().await?;
        for event in &audit {
            event.emit();
        }
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
    pub async fn users(&self, limit: i64, offset: i64) -> Result<Vec<User>, StoreError> {
        let ids = sqlx::query("SELECT id FROM users ORDER BY created_at, id LIMIT $1 OFFSET $2")
            .bind(limit)
            .bind(offset)
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
        let row = sqlx::query("SELECT COUNT(*) FROM users")
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get(0)?)
    }

    // ---- sessions -------------------------------------------------------

    pub async fn create_session(&self, s: &NewSession) -> Result<(), StoreError> {
        let at = now();
        sqlx::query(
            "INSERT INTO sessions (id_hash, user_id, idp, subject, sid, id_token, claims, created_at, last_seen_at, expires_at, idp_sub) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8, $9, $10)",
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
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The session with this hashed id, its user and memberships, when it
    /// exists (expiry is the caller's judgement).
    pub async fn session(&self, id_hash: &str) -> Result<Option<SessionRecord>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        let Some(row) = sqlx::query(
            "SELECT s.user_id, s.idp, s.subject, s.sid, s.id_token, s.claims, s.created_at, s.last_seen_at, s.expires_at, u.email, u.name \
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
            memberships,
        }))
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

    // ---- signing key ----------------------------------------------------

    /// The key stored under `name`, or `generate`'s, stored so that every
    /// replica signs with the same one. Concurrent starts agree on one.
    pub async fn signing_key(
        &self,
        name: &str,
        generate: impl FnOnce() -> StoredKey,
    ) -> Result<StoredKey, StoreError> {
        if let Some(k) = self.read_key(name).await? {
            return Ok(k);
        }
        let fresh = generate();
        sqlx::query(
            "INSERT INTO signing_keys (name, kid, private_key, created_at) VALUES ($1, $2, $3, $4) ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .bind(&fresh.kid)
        .bind(&fresh.private_key)
        .bind(now())
        .execute(&self.pool)
        .await?;
        self.read_key(name)
            .await?
            .ok_or_else(|| StoreError::Corrupt(format!("signing key {name:?} vanished")))
    }

    /// Replaces the key stored under `name`.
    pub async fn replace_signing_key(&self, name: &str, key: &StoredKey) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO signing_keys (name, kid, private_key, created_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (name) DO UPDATE SET kid = excluded.kid, private_key = excluded.private_key, created_at = excluded.created_at",
        )
        .bind(name)
        .bind(&key.kid)
        .bind(&key.private_key)
        .bind(now())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn read_key(&self, name: &str) -> Result<Option<StoredKey>, StoreError> {
        let row = sqlx::query("SELECT kid, private_key FROM signing_keys WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| {
            Ok(StoredKey {
                kid: r.try_get(0)?,
                private_key: r.try_get(1)?,
            })
        })
        .transpose()
    }

    // ---- JIT entries added through the API --------------------------------

    pub async fn api_jit(&self) -> Result<JitTable, StoreError> {
        let mut conn = self.pool.acquire().await?;
        load_jit(&mut conn).await
    }

    /// The API-added entries of one JIT list of `org`, sorted.
    pub async fn jit_list(&self, org: &str, list: JitList) -> Result<Vec<String>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        jit_entries(&mut conn, org, list).await
    }

    /// Adds entries (present ones are kept as they are); returns those
    /// that were new.
    pub async fn jit_add(
        &self,
        org: &str,
        list: JitList,
        values: &[String],
        actor: &str,
    ) -> Result<Vec<String>, StoreError> {
        let mut tx = self.begin().await?;
        let mut added = Vec::new();
        for v in values {
            let done = sqlx::query(list.insert())
                .bind(org)
                .bind(v)
                .execute(&mut *tx)
                .await?;
            if done.rows_affected() > 0 {
                added.push(v.clone());
            }
        }
        let mut audit = Vec::new();
        for v in &added {
            audit.push(AuditEvent::new(
                now(),
                actor,
                &format!("jit.{}.added", list.name()),
                None,
                Some(org),
                None,
                Some(Value::String(v.clone())),
            ));
        }
        for e in &audit {
            e.insert(&mut tx).await?;
        }
        tx.commit().await?;
        audit.iter().for_each(AuditEvent::emit);
        Ok(added)
    }

    /// Replaces the API-added entries of a list.
    pub async fn jit_replace(
        &self,
        org: &str,
        list: JitList,
        values: &[String],
        actor: &str,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        let before = jit_entries(&mut tx, org, list).await?;
        sqlx::query(list.delete_all())
            .bind(org)
            .execute(&mut *tx)
            .await?;
        for v in values {
            sqlx::query(list.insert())
                .bind(org)
                .bind(v)
                .execute(&mut *tx)
                .await?;
        }
        let after = jit_entries(&mut tx, org, list).await?;
        let event = AuditEvent::new(
            now(),
            actor,
            &format!("jit.{}.replaced", list.name()),
            None,
            Some(org),
            Some(serde_json::json!(before)),
            Some(serde_json::json!(after)),
        );
        event.insert(&mut tx).await?;
        tx.commit().await?;
        event.emit();
        Ok(())
    }

    /// Removes one entry; `false` when it was not there.
    pub async fn jit_delete(
        &self,
        org: &str,
        list: JitList,
        value: &str,
        actor: &str,
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin().await?;
        let done = sqlx::query(list.delete_one())
            .bind(org)
            .bind(value)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            tx.rollback().await?;
            return Ok(false);
        }
        let event = AuditEvent::new(
            now(),
            actor,
            &format!("jit.{}.removed", list.name()),
            None,
            Some(org),
            Some(Value::String(value.to_string())),
            None,
        );
        event.insert(&mut tx).await?;
        tx.commit().await?;
        event.emit();
        Ok(true)
    }

    /// Deletes a user with their identities, memberships and sessions.
    pub async fn delete_user(&self, user_id: &str, actor: &str) -> Result<bool, StoreError> {
        let Some(user) = self.user(user_id).await? else {
            return Ok(false);
        };
        let mut tx = self.begin().await?;
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
            &mut tx,
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
            sqlx::query(sql).bind(user_id).execute(&mut *tx).await?;
        }
        let done = sqlx::query("DELETE FROM users WHERE id = $1")
            .bind(user_id)
            .execute(&mut *tx)
            .await?;
        for e in &audit {
            e.insert(&mut tx).await?;
        }
        tx.commit().await?;
        audit.iter().for_each(AuditEvent::emit);
        Ok(done.rows_affected() > 0)
    }

    /// Members of `org` with their roles and source, by user id.
    pub async fn org_members(&self, org: &str) -> Result<Vec<(User, Membership)>, StoreError> {
        let ids: Vec<String> =
            sqlx::query("SELECT user_id FROM memberships WHERE org_id = $1 ORDER BY user_id")
                .bind(org)
                .fetch_all(&self.pool)
                .await?
                .iter()
                .map(|r| r.try_get(0))
                .collect::<Result<_, _>>()?;
        let mut out = Vec::new();
        for id in ids {
            if let Some(u) = self.user(&id).await?
                && let Some(m) = u.memberships.iter().find(|m| m.org == org).cloned()
            {
                out.push((u, m));
            }
        }
        Ok(out)
    }

    /// Sets a user's roles in `org`; the membership becomes `manual`.
    /// `None` when the user does not exist.
    pub async fn set_membership(
        &self,
        user_id: &str,
        org: &str,
        roles: &[String],
        actor: &str,
    ) -> Result<Option<Membership>, StoreError> {
        let mut tx = self.begin().await?;
        let exists = sqlx::query("SELECT id FROM users WHERE id = $1")
            .bind(user_id)
            .fetch_optional(&mut *tx)
            .await?;
        if exists.is_none() {
            tx.rollback().await?;
            return Ok(None);
        }
        let before = memberships_of(&mut tx, user_id)
            .await?
            .into_iter()
            .find(|m| m.org == org);
        let mut sorted: Vec<String> = roles.to_vec();
        sorted.sort();
        sorted.dedup();
        let after = Membership {
            org: org.to_string(),
            roles: sorted,
            source: MembershipSource::Manual,
        };
        let at = now();
        write_membership(&mut tx, user_id, &after, at).await?;
        let event = AuditEvent::for_change(
            at,
            actor,
            user_id,
            &Change {
                org: org.to_string(),
                decision: if before.is_some() {
                    Decision::RolesChanged
                } else {
                    Decision::Created
                },
                before,
                after: Some(after.clone()),
            },
        );
        event.insert(&mut tx).await?;
        tx.commit().await?;
        event.emit();
        Ok(Some(after))
    }

    /// Removes a user's membership of `org`; `false` when there was none.
    pub async fn remove_membership(
        &self,
        user_id: &str,
        org: &str,
        actor: &str,
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin().await?;
        let before = memberships_of(&mut tx, user_id)
            .await?
            .into_iter()
            .find(|m| m.org == org);
        let Some(before) = before else {
            tx.rollback().await?;
            return Ok(false);
        };
        delete_membership(&mut tx, user_id, org).await?;
        let event = AuditEvent::for_change(
            now(),
            actor,
            user_id,
            &Change {
                org: org.to_string(),
                decision: Decision::Removed,
                before: Some(before),
                after: None,
            },
        );
        event.insert(&mut tx).await?;
        tx.commit().await?;
        event.emit();
        Ok(true)
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
        let mut tx = self.begin().await?;
        let hashes = end_sessions(
            &mut tx,
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
        event.insert(&mut tx).await?;
        tx.commit().await?;
        event.emit();
        Ok(hashes)
    }

    // ---- audit ----------------------------------------------------------

    /// Writes one audit event on its own (changes made elsewhere, such as
    /// a config reload through the API) and emits it.
    pub async fn record(&self, event: &AuditEvent) -> Result<(), StoreError> {
        let mut conn = self.pool.acquire().await?;
        event.insert(&mut conn).await?;
        event.emit();
        Ok(())
    }

    pub async fn audit_events(&self, filter: &AuditFilter) -> Result<Vec<AuditEvent>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, at, actor, action, user_id, org_id, before, after FROM audit_events \
             WHERE ($1 IS NULL OR user_id = $1) AND ($2 IS NULL OR org_id = $2) ORDER BY id LIMIT $3 OFFSET $4",
        )
        .bind(&filter.user_id)
        .bind(&filter.org_id)
        .bind(filter.limit)
        .bind(filter.offset)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(AuditEvent::from_row).collect()
    }

    pub async fn count_audit_events(&self, filter: &AuditFilter) -> Result<i64, StoreError> {
        let row = sqlx::query(
            "SELECT COUNT(*) FROM audit_events WHERE ($1 IS NULL OR user_id = $1) AND ($2 IS NULL OR org_id = $2)",
        )
        .bind(&filter.user_id)
        .bind(&filter.org_id)
        .fetch_one(&self.pool)
        .await?;
        Ok(row.try_get(0)?)
    }
}

/// Runs a `DELETE FROM sessions … RETURNING id_hash, id_token,
/// expires_at` and records the ended sessions' ID tokens, so that none of
/// them passes as a bearer token afterwards. Returns the hashed ids ended.
async fn end_sessions<'q>(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    delete: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>,
) -> Result<Vec<String>, StoreError> {
    let rows = delete.fetch_all(&mut **tx).await?;
    let mut hashes = Vec::with_capacity(rows.len());
    for row in &rows {
        hashes.push(row.try_get::<String, _>(0)?);
        if let Some(token) = row.try_get::<Option<String>, _>(1)? {
            sqlx::query(
                "INSERT INTO ended_tokens (token_hash, expires_at) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            )
            .bind(hex::encode(crate::util::sha256(token.as_bytes())))
            .bind(row.try_get::<i64, _>(2)?)
            .execute(&mut **tx)
            .await?;
        }
    }
    Ok(hashes)
}

/// A new user row and its identity at `u.idp`; `match_email` is the
/// lower-case email a later first login may be matched by. Returns the id.
async fn insert_user(
    conn: &mut sqlx::AnyConnection,
    u: &NewUser,
    match_email: Option<&str>,
    at: i64,
) -> Result<String, StoreError> {
    let id = new_id("u_");
    sqlx::query(
        "INSERT INTO users (id, email, name, created_at, updated_at) VALUES ($1, $2, $3, $4, $4)",
    )
    .bind(&id)
    .bind(&u.email)
    .bind(&u.name)
    .bind(at)
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "INSERT INTO identities (user_id, idp, subject, email, created_at) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(&id)
    .bind(&u.idp)
    .bind(&u.subject)
    .bind(match_email)
    .bind(at)
    .execute(&mut *conn)
    .await?;
    Ok(id)
}

async fn memberships_of(
    conn: &mut sqlx::AnyConnection,
    user_id: &str,
) -> Result<Vec<Membership>, StoreError> {
    let rows = sqlx::query(
        "SELECT m.org_id, m.source, r.role FROM memberships m \
         LEFT JOIN membership_roles r ON r.user_id = m.user_id AND r.org_id = m.org_id \
         WHERE m.user_id = $1 ORDER BY m.org_id, r.role",
    )
    .bind(user_id)
    .fetch_all(&mut *conn)
    .await?;
    let mut out: Vec<Membership> = Vec::new();
    for row in rows {
        let org: String = row.try_get(0)?;
        let source: String = row.try_get(1)?;
        let role: Option<String> = row.try_get(2)?;
        let source = MembershipSource::parse(&source)
            .ok_or_else(|| StoreError::Corrupt(format!("membership source {source:?}")))?;
        match out.last_mut() {
            Some(m) if m.org == org => m.roles.extend(role),
            _ => out.push(Membership {
                org,
                roles: role.into_iter().collect(),
                source,
            }),
        }
    }
    Ok(out)
}

async fn jit_entries(
    conn: &mut sqlx::AnyConnection,
    org: &str,
    list: JitList,
) -> Result<Vec<String>, StoreError> {
    let rows = sqlx::query(list.select())
        .bind(org)
        .fetch_all(&mut *conn)
        .await?;
    Ok(rows
        .iter()
        .map(|r| r.try_get::<String, _>(0))
        .collect::<Result<_, _>>()?)
}

async fn load_jit(conn: &mut sqlx::AnyConnection) -> Result<JitTable, StoreError> {
    let mut table = JitTable::new();
    for (sql, which) in [
        ("SELECT org_id, domain FROM jit_email_domains", 0),
        ("SELECT org_id, idp FROM jit_sso_connectors", 1),
        ("SELECT org_id, role FROM jit_roles", 2),
    ] {
        for row in sqlx::query(sql).fetch_all(&mut *conn).await? {
            let org: String = row.try_get(0)?;
            let value: String = row.try_get(1)?;
            let rules: &mut JitRules = table.entry(org).or_default();
            match which {
                0 => rules.email_domains.insert(value),
                1 => rules.sso_connectors.insert(value),
                _ => rules.default_roles.insert(value),
            };
        }
    }
    Ok(table)
}

async fn write_membership(
    conn: &mut sqlx::AnyConnection,
    user_id: &str,
    m: &Membership,
    at: i64,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO memberships (user_id, org_id, source, created_at, updated_at) VALUES ($1, $2, $3, $4, $4) \
         ON CONFLICT (user_id, org_id) DO UPDATE SET source = excluded.source, updated_at = excluded.updated_at",
    )
    .bind(user_id)
    .bind(&m.org)
    .bind(m.source.as_str())
    .bind(at)
    .execute(&mut *conn)
    .await?;
    sqlx::query("DELETE FROM membership_roles WHERE user_id = $1 AND org_id = $2")
        .bind(user_id)
        .bind(&m.org)
        .execute(&mut *conn)
        .await?;
    for role in &m.roles {
        sqlx::query("INSERT INTO membership_roles (user_id, org_id, role) VALUES ($1, $2, $3)")
            .bind(user_id)
            .bind(&m.org)
            .bind(role)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

async fn delete_membership(
    conn: &mut sqlx::AnyConnection,
    user_id: &str,
    org: &str,
) -> Result<bool, StoreError> {
    sqlx::query("DELETE FROM membership_roles WHERE user_id = $1 AND org_id = $2")
        .bind(user_id)
        .bind(org)
        .execute(&mut *conn)
        .await?;
    let done = sqlx::query("DELETE FROM memberships WHERE user_id = $1 AND org_id = $2")
        .bind(user_id)
        .bind(org)
        .execute(&mut *conn)
        .await?;
    Ok(done.rows_affected() > 0)
}

async fn apply_change(
    conn: &mut sqlx::AnyConnection,
    user_id: &str,
    change: &Change,
    at: i64,
) -> Result<(), StoreError> {
    match (&change.decision, &change.after) {
        (Decision::Removed, _) | (_, None) => {
            delete_membership(conn, user_id, &change.org).await?;
        }
        (_, Some(after)) => write_membership(conn, user_id, after, at).await?,
    }
    Ok(())
}

impl AuditEvent {
    fn from_row(r: &AnyRow) -> Result<AuditEvent, StoreError> {
        let parse = |s: Option<String>| -> Result<Option<Value>, StoreError> {
            s.map(|s| {
                serde_json::from_str(&s)
                    .map_err(|e| StoreError::Corrupt(format!("audit event: {e}")))
            })
            .transpose()
        };
        Ok(AuditEvent {
            id: r.try_get(0)?,
            at: r.try_get(1)?,
            actor: r.try_get(2)?,
            action: r.try_get(3)?,
            user_id: r.try_get(4)?,
            organization_id: r.try_get(5)?,
            before: parse(r.try_get(6)?)?,
            after: parse(r.try_get(7)?)?,
        })
    }

    async fn insert(&self, conn: &mut sqlx::AnyConnection) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO audit_events (at, actor, action, user_id, org_id, before, after) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(self.at)
        .bind(&self.actor)
        .bind(&self.action)
        .bind(&self.user_id)
        .bind(&self.organization_id)
        .bind(self.before.as_ref().map(json_text))
        .bind(self.after.as_ref().map(json_text))
        .execute(&mut *conn)
        .await?;
        Ok(())
    }
}
