//! Persistence: users, identities, memberships, JIT entries added through
//! the API, sessions, the shared signing key and the audit log, in SQLite
//! or PostgreSQL. The only module that knows sqlx. Both databases run the
//! same SQL (`$n` placeholders, `ON CONFLICT`), through sqlx's `Any`
//! driver; only the migrations differ.

mod audit;
mod jit;
mod keys;
mod login;
mod memberships;
mod notify;
mod records;
mod replay;
mod scim;
mod sessions;
mod users;

use std::time::Duration;

use serde_json::Value;
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Row};

use crate::config::StoreKind;
use crate::provision::{
    Change, Decision, ExistingUser, Identity, JitRules, JitTable, Membership, MembershipSource,
    Outcome, Plan,
};
pub use login::Occasion;
pub use notify::Notice;
pub use records::*;
pub use scim::{
    Linking, Planner, Replan, ScimKind, ScimLookup, ScimRecord, ScimWriteError, ScimWritten,
};
use scim::{directory_of, is_deactivated};

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
    /// For the notification listener's own connection (PostgreSQL).
    url: std::sync::Arc<str>,
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

/// Whether a pooled connection may be handed out: not left inside a
/// transaction. SQLite rolls a transaction back by itself when a COMMIT
/// fails with a full disk (SQLITE_FULL) or an I/O error, and the driver's
/// own ROLLBACK then fails, so the driver goes on counting a transaction
/// that is not there and refuses every later BEGIN on that connection.
/// Such a connection is closed, and the pool opens another.
async fn still_usable(conn: &mut sqlx::AnyConnection) -> Result<bool, sqlx::Error> {
    use sqlx::Connection;
    if !conn.is_in_transaction() {
        return Ok(true);
    }
    // The rollback of a transaction dropped a moment ago may still be on
    // its way to SQLite's worker thread: let it arrive, then look again.
    conn.ping().await?;
    if conn.is_in_transaction() {
        tracing::warn!(target: "portcullis::store", "a store connection was left inside a failed transaction; it is replaced");
        return Ok(false);
    }
    Ok(true)
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
            .before_acquire(|conn, _| Box::pin(still_usable(conn)))
            .connect(&url)
            .await
            .map_err(|e| StoreError::Unavailable(format!("{}: {e}", redacted_url(&url))))?;
        let store = Store {
            pool,
            kind,
            url: url.as_str().into(),
        };
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
        Ok(Some(Store {
            pool,
            kind,
            url: url.as_str().into(),
        }))
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
}

/// A change and its audit events in one transaction: the events are
/// written in the same transaction and emitted (`portcullis::audit`) only
/// once it has committed. Every audited write goes through this.
pub(super) struct Audited {
    pub(super) tx: sqlx::Transaction<'static, sqlx::Any>,
    events: Vec<AuditEvent>,
}

impl Audited {
    pub(super) fn record(&mut self, event: AuditEvent) {
        self.events.push(event);
    }

    pub(super) fn record_all(&mut self, events: Vec<AuditEvent>) {
        self.events.extend(events);
    }

    /// Writes the events, tells the other replicas (PostgreSQL) which
    /// users changed, commits, then emits them; returns them.
    pub(super) async fn commit(mut self) -> Result<Vec<AuditEvent>, StoreError> {
        for e in &self.events {
            e.insert(&mut self.tx).await?;
        }
        let mut users: Vec<String> = self
            .events
            .iter()
            .filter_map(|e| e.user_id.clone())
            .collect();
        users.sort();
        users.dedup();
        notify::send(&mut self.tx, Notice::Users(users)).await?;
        self.tx.commit().await?;
        for e in &self.events {
            e.emit();
        }
        Ok(self.events)
    }
}

impl Store {
    /// Begins an [`Audited`] change.
    pub(super) async fn audited(&self) -> Result<Audited, StoreError> {
        Ok(Audited {
            tx: self.begin().await?,
            events: Vec::new(),
        })
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
    let mut tokens = Vec::new();
    for row in &rows {
        hashes.push(row.try_get::<String, _>(0)?);
        if let Some(token) = row.try_get::<Option<String>, _>(1)? {
            let token_hash = crate::util::sha256_hex(token.as_bytes());
            sqlx::query(
                "INSERT INTO ended_tokens (token_hash, expires_at) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            )
            .bind(&token_hash)
            .bind(row.try_get::<i64, _>(2)?)
            .execute(&mut **tx)
            .await?;
            tokens.push(token_hash);
        }
    }
    // Delivered to every replica when (and only if) the deletion commits.
    notify::send(tx, Notice::Sessions(hashes.clone())).await?;
    notify::send(tx, Notice::Tokens(tokens)).await?;
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
        push_membership_row(&mut out, &row, 0)?;
    }
    Ok(out)
}

/// Adds one row of `memberships LEFT JOIN membership_roles` (org, source,
/// role, from column `at`), in org order, to `list`: a row of the org
/// last added only adds its role.
fn push_membership_row(
    list: &mut Vec<Membership>,
    row: &AnyRow,
    at: usize,
) -> Result<(), StoreError> {
    let org: String = row.try_get(at)?;
    let source: String = row.try_get(at + 1)?;
    let role: Option<String> = row.try_get(at + 2)?;
    let source = MembershipSource::parse(&source)
        .ok_or_else(|| StoreError::Corrupt(format!("membership source {source:?}")))?;
    match list.last_mut() {
        Some(m) if m.org == org => m.roles.extend(role),
        _ => list.push(Membership {
            org,
            roles: role.into_iter().collect(),
            source,
        }),
    }
    Ok(())
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
