//! The IdPs' directories (SCIM, SPEC 4b): users and groups as the
//! directory wrote them, and each write's consequences in the same
//! transaction — the Portcullis user linked or created, their
//! provisioning re-run, their sessions ended when deactivated.
//!
//! A SCIM user's id is the Portcullis user's id. Writes of one resource
//! serialize on its row (`UPDATE … version = version + 1` first: a row
//! lock in PostgreSQL; SQLite's transactions already hold the write
//! lock), so two replicas patching one group at once both land.

use std::collections::BTreeSet;

use super::*;
use crate::provision::ProvisionError;
use crate::provision::directory::DirectoryEntry;

/// Users or groups. Its table name is the only text ever formatted into
/// this module's SQL (hence `AssertSqlSafe`); values are always bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScimKind {
    User,
    Group,
}

impl ScimKind {
    fn table(self) -> &'static str {
        match self {
            ScimKind::User => "scim_users",
            ScimKind::Group => "scim_groups",
        }
    }
}

/// A stored resource: the SCIM JSON with `id` and, for a user, `groups`,
/// for a group, `members` (`value`, and `display` when the directory
/// gave one); never `meta`.
#[derive(Debug, Clone)]
pub struct ScimRecord {
    pub id: String,
    pub resource: Value,
    pub version: i64,
    pub created_at: i64,
    pub updated_at: i64,
}

/// An indexed equality a listing is narrowed by.
#[derive(Debug, Clone)]
pub enum ScimLookup {
    Id(String),
    /// Case-insensitive.
    UserName(String),
    ExternalId(String),
    /// Case-insensitive.
    DisplayName(String),
    /// Groups that have this member.
    Member(String),
}

/// Why a SCIM write did not happen; nothing was written.
#[derive(Debug, thiserror::Error)]
pub enum ScimWriteError<E> {
    #[error("no such resource")]
    NotFound,
    /// `If-Match` named a version that is no longer the current one.
    #[error("the resource changed since version {0}")]
    Stale(i64),
    /// A `userName` (users) taken by another resource, or a Portcullis
    /// user another SCIM resource already describes.
    #[error("{0}")]
    Uniqueness(String),
    /// The resource names something that does not exist (a group member).
    #[error("{0}")]
    Invalid(String),
    /// The edit refused the resource.
    #[error("refused")]
    Refused(E),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl<E> From<sqlx::Error> for ScimWriteError<E> {
    fn from(e: sqlx::Error) -> Self {
        ScimWriteError::Store(e.into())
    }
}

/// What a user's re-provisioning is planned from.
pub struct Replan<'a> {
    /// `None`: a user the directory creates now.
    pub existing: Option<&'a ExistingUser>,
    /// The IdP's claims as of the user's last login or refresh.
    pub stored_claims: Option<&'a Value>,
    /// What the directory says of the user (`None` once deleted).
    pub entry: Option<&'a DirectoryEntry>,
    pub jit: &'a JitTable,
}

/// Plans a user's provisioning after a directory change.
pub type Planner<'a> = dyn Fn(Replan<'_>) -> Result<Plan, ProvisionError> + Send + Sync + 'a;

/// How a directory user is linked to a Portcullis user who logged in
/// before the directory described them.
#[derive(Debug, Clone, Copy)]
pub struct Linking {
    /// The feed's `match` claim is the IdP's identifier: `externalId` is
    /// the identity's subject.
    pub match_is_identifier: bool,
    /// The feed's `match` claim is `sub`.
    pub match_is_sub: bool,
}

/// A committed SCIM write.
#[derive(Debug, Default)]
pub struct ScimWritten {
    /// The resource as now stored (`None` after a DELETE).
    pub record: Option<ScimRecord>,
    /// Hashed ids of the sessions ended (deactivated or deleted users).
    pub ended_sessions: Vec<String>,
    /// Portcullis users whose memberships or state changed.
    pub users: Vec<String>,
    pub audit: Vec<AuditEvent>,
}

/// The directory entry of a user at `idp`, in a transaction.
pub(super) async fn directory_of(
    conn: &mut sqlx::AnyConnection,
    idp: &str,
    user_id: &str,
) -> Result<Option<DirectoryEntry>, StoreError> {
    let Some(row) = sqlx::query("SELECT resource FROM scim_users WHERE idp = $1 AND id = $2")
        .bind(idp)
        .bind(user_id)
        .fetch_optional(&mut *conn)
        .await?
    else {
        return Ok(None);
    };
    let resource = parse_resource(&row.try_get::<String, _>(0)?)?;
    let groups = sqlx::query(
        "SELECT g.display_name FROM scim_members m \
         JOIN scim_groups g ON g.idp = m.idp AND g.id = m.group_id \
         WHERE m.idp = $1 AND m.member_id = $2 ORDER BY g.display_name",
    )
    .bind(idp)
    .bind(user_id)
    .fetch_all(&mut *conn)
    .await?
    .iter()
    .map(|r| r.try_get::<String, _>(0))
    .collect::<Result<Vec<_>, _>>()?;
    Ok(Some(DirectoryEntry { resource, groups }))
}

pub(super) async fn is_deactivated(
    conn: &mut sqlx::AnyConnection,
    user_id: &str,
) -> Result<bool, StoreError> {
    let at: Option<Option<i64>> = sqlx::query("SELECT deactivated_at FROM users WHERE id = $1")
        .bind(user_id)
        .fetch_optional(&mut *conn)
        .await?
        .map(|r| r.try_get(0))
        .transpose()?;
    Ok(matches!(at, Some(Some(_))))
}

pub(super) fn parse_resource(text: &str) -> Result<Value, StoreError> {
    serde_json::from_str(text)
        .map_err(|e| StoreError::Corrupt(format!("a stored SCIM resource is not JSON: {e}")))
}

fn text_of<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str).filter(|s| !s.is_empty())
}

/// The resource as stored: without what the store keeps elsewhere.
fn stored_form(resource: &Value, kind: ScimKind) -> Value {
    let mut r = resource.clone();
    if let Some(o) = r.as_object_mut() {
        for k in ["id", "meta"] {
            o.remove(k);
        }
        o.remove(match kind {
            ScimKind::User => "groups",
            ScimKind::Group => "members",
        });
    }
    r
}

/// The `display` the directory gave each member of a group resource.
fn member_displays(resource: &Value) -> std::collections::BTreeMap<&str, &str> {
    resource
        .get("members")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|m| Some((text_of(m, "value")?, text_of(m, "display")?)))
        .collect()
}

/// The member ids a group resource lists.
fn member_ids(resource: &Value) -> BTreeSet<String> {
    resource
        .get("members")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|m| text_of(m, "value").map(str::to_string))
        .collect()
}

impl Store {
    /// What the directory at `idp` says of a user (for `explain`).
    pub async fn directory_entry(
        &self,
        idp: &str,
        user_id: &str,
    ) -> Result<Option<DirectoryEntry>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        directory_of(&mut conn, idp, user_id).await
    }

    /// The resources at `idp`, oldest first, narrowed by `lookup`, with
    /// groups (users) or members (groups) attached.
    pub async fn scim_list(
        &self,
        idp: &str,
        kind: ScimKind,
        lookup: Option<&ScimLookup>,
    ) -> Result<Vec<ScimRecord>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        let base = format!(
            "SELECT id, resource, version, created_at, updated_at FROM {} t WHERE idp = $1",
            kind.table()
        );
        let (clause, value) = match (kind, lookup) {
            (_, None) => ("", None),
            (_, Some(ScimLookup::Id(v))) => (" AND id = $2", Some(v.clone())),
            (ScimKind::User, Some(ScimLookup::UserName(v))) => {
                (" AND user_name_key = $2", Some(v.to_lowercase()))
            }
            (_, Some(ScimLookup::ExternalId(v))) => (" AND external_id = $2", Some(v.clone())),
            (ScimKind::Group, Some(ScimLookup::DisplayName(v))) => {
                (" AND display_name_key = $2", Some(v.to_lowercase()))
            }
            (ScimKind::Group, Some(ScimLookup::Member(v))) => (
                " AND EXISTS (SELECT 1 FROM scim_members m WHERE m.idp = t.idp AND m.group_id = t.id AND m.member_id = $2)",
                Some(v.clone()),
            ),
            // Nothing of that kind can match.
            _ => return Ok(Vec::new()),
        };
        let sql = format!("{base}{clause} ORDER BY created_at, id");
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(idp);
        if let Some(v) = value {
            q = q.bind(v);
        }
        let rows = q.fetch_all(&mut *conn).await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            let mut record = ScimRecord {
                id: r.try_get(0)?,
                resource: parse_resource(&r.try_get::<String, _>(1)?)?,
                version: r.try_get(2)?,
                created_at: r.try_get(3)?,
                updated_at: r.try_get(4)?,
            };
            attach(&mut conn, idp, kind, &mut record).await?;
            out.push(record);
        }
        Ok(out)
    }

    pub async fn scim_get(
        &self,
        idp: &str,
        kind: ScimKind,
        id: &str,
    ) -> Result<Option<ScimRecord>, StoreError> {
        Ok(self
            .scim_list(idp, kind, Some(&ScimLookup::Id(id.to_string())))
            .await?
            .pop())
    }

    /// Creates a resource (POST). A user is linked to the Portcullis user
    /// the directory describes (by `externalId` = the `match` claim, else
    /// by verified email) or created as pre-provisioned; either way their
    /// provisioning runs.
    pub async fn scim_create<E>(
        &self,
        idp: &str,
        kind: ScimKind,
        resource: &Value,
        linking: Linking,
        planner: &Planner<'_>,
    ) -> Result<ScimWritten, ScimWriteError<E>> {
        self.scim_retrying(|| self.try_scim_create(idp, kind, resource, linking, planner))
            .await
    }

    /// Replaces a resource (PUT, PATCH) with what `edit` makes of the
    /// current one; `if_match` is the version the client last saw.
    pub async fn scim_replace<E>(
        &self,
        idp: &str,
        kind: ScimKind,
        id: &str,
        if_match: Option<i64>,
        edit: &(dyn Fn(Value) -> Result<Value, E> + Send + Sync),
        planner: &Planner<'_>,
    ) -> Result<ScimWritten, ScimWriteError<E>> {
        self.scim_retrying(|| self.try_scim_replace(idp, kind, id, if_match, edit, planner))
            .await
    }

    /// Deletes a resource. A deleted user stays a Portcullis user,
    /// deactivated, so that a later POST of the same directory user
    /// relinks (and reactivates) them.
    pub async fn scim_delete<E>(
        &self,
        idp: &str,
        kind: ScimKind,
        id: &str,
        if_match: Option<i64>,
        planner: &Planner<'_>,
    ) -> Result<ScimWritten, ScimWriteError<E>> {
        self.scim_retrying(|| self.try_scim_delete(idp, kind, id, if_match, planner))
            .await
    }

    async fn scim_retrying<E, F, Fut>(&self, attempt: F) -> Result<ScimWritten, ScimWriteError<E>>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<ScimWritten, ScimWriteError<E>>>,
    {
        for n in 0..LOGIN_ATTEMPTS {
            match attempt().await {
                Err(ScimWriteError::Store(e)) if e.is_retryable() => {
                    tracing::debug!(attempt = n, error = %e, "SCIM transaction collided; trying again");
                    let backoff = 5 + rand::random::<u64>() % (10 << n.min(5));
                    tokio::time::sleep(Duration::from_millis(backoff)).await;
                }
                other => return other,
            }
        }
        Err(StoreError::Contention.into())
    }

    async fn try_scim_create<E>(
        &self,
        idp: &str,
        kind: ScimKind,
        resource: &Value,
        linking: Linking,
        planner: &Planner<'_>,
    ) -> Result<ScimWritten, ScimWriteError<E>> {
        let mut change = self.audited().await?;
        let at = now();
        let actor = format!("scim:{idp}");
        let mut written = ScimWritten::default();
        let id = match kind {
            ScimKind::User => {
                let user_name = text_of(resource, "userName").unwrap_or_default();
                user_name_free(&mut change.tx, idp, user_name, None).await?;
                let entry = DirectoryEntry {
                    resource: resource.clone(),
                    groups: Vec::new(),
                };
                let linked = linked_user(&mut change.tx, idp, &entry, linking).await?;
                let id = match linked {
                    Some(id) => {
                        if let Some(x) = entry.external_id() {
                            sqlx::query(
                                "UPDATE identities SET match_key = $1 WHERE user_id = $2 AND idp = $3",
                            )
                            .bind(x)
                            .bind(&id)
                            .bind(idp)
                            .execute(&mut *change.tx)
                            .await?;
                        }
                        id
                    }
                    None => {
                        let email = entry.email().map(str::to_lowercase);
                        let subject = entry
                            .external_id()
                            .filter(|_| linking.match_is_identifier)
                            .map(str::to_string);
                        let id = insert_user(
                            &mut change.tx,
                            &NewUser {
                                idp: idp.to_string(),
                                subject: subject.clone(),
                                email: entry.email().map(str::to_string),
                                name: entry.name(),
                                memberships: vec![],
                            },
                            email.as_deref(),
                            at,
                        )
                        .await?;
                        sqlx::query(
                            "UPDATE identities SET match_key = $1 WHERE user_id = $2 AND idp = $3",
                        )
                        .bind(entry.external_id())
                        .bind(&id)
                        .bind(idp)
                        .execute(&mut *change.tx)
                        .await?;
                        change.record(AuditEvent::about_user(
                            at,
                            &actor,
                            "user.created",
                            &id,
                            serde_json::json!({
                                "idp": idp, "subject": subject,
                                "externalId": entry.external_id(),
                                "email": entry.email(), "name": entry.name(),
                            }),
                        ));
                        written.users.push(id.clone());
                        let mut with_id = entry.clone();
                        with_id.resource["id"] = id.clone().into();
                        let jit = load_jit(&mut change.tx).await?;
                        let plan = planner(Replan {
                            existing: None,
                            stored_claims: None,
                            entry: Some(&with_id),
                            jit: &jit,
                        });
                        for c in planned_changes(&mut change, &id, plan, &actor, at) {
                            apply_change(&mut change.tx, &id, &c, at).await?;
                        }
                        id
                    }
                };
                insert_scim_user(&mut change.tx, idp, &id, resource, at).await?;
                id
            }
            ScimKind::Group => {
                let id = new_id("g_");
                sqlx::query(
                    "INSERT INTO scim_groups (idp, id, display_name, display_name_key, external_id, resource, version, created_at, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, 1, $7, $7)",
                )
                .bind(idp)
                .bind(&id)
                .bind(text_of(resource, "displayName").unwrap_or_default())
                .bind(text_of(resource, "displayName").unwrap_or_default().to_lowercase())
                .bind(text_of(resource, "externalId"))
                .bind(json_text(&stored_form(resource, kind)))
                .bind(at)
                .execute(&mut *change.tx)
                .await?;
                let members = member_ids(resource);
                set_members(&mut change.tx, idp, &id, &members, resource).await?;
                written.users.extend(members);
                id
            }
        };
        // A user linked or created is re-provisioned with what the
        // directory now says; a group's members are.
        if kind == ScimKind::User && !written.users.contains(&id) {
            written.users.push(id.clone());
        }
        self.reprovision_all(&mut change, idp, &mut written, planner, &actor, at)
            .await?;
        written.record = Some(read_record(&mut change.tx, idp, kind, &id).await?);
        written.audit = change.commit().await?;
        Ok(written)
    }

    async fn try_scim_replace<E>(
        &self,
        idp: &str,
        kind: ScimKind,
        id: &str,
        if_match: Option<i64>,
        edit: &(dyn Fn(Value) -> Result<Value, E> + Send + Sync),
        planner: &Planner<'_>,
    ) -> Result<ScimWritten, ScimWriteError<E>> {
        let mut change = self.audited().await?;
        let at = now();
        let actor = format!("scim:{idp}");
        let before = lock_version(&mut change.tx, idp, kind, id, if_match).await?;
        let current = read_record(&mut change.tx, idp, kind, id).await?;
        let mut next = match edit(current.resource.clone()) {
            Ok(v) => v,
            Err(e) => {
                change.tx.rollback().await?;
                return Err(ScimWriteError::Refused(e));
            }
        };
        next["id"] = id.into();
        let mut written = ScimWritten::default();
        match kind {
            ScimKind::User => {
                let user_name = text_of(&next, "userName").unwrap_or_default();
                user_name_free(&mut change.tx, idp, user_name, Some(id)).await?;
                sqlx::query(
                    "UPDATE scim_users SET user_name = $1, user_name_key = $2, external_id = $3, active = $4, \
                     resource = $5, updated_at = $6 WHERE idp = $7 AND id = $8",
                )
                .bind(user_name)
                .bind(user_name.to_lowercase())
                .bind(text_of(&next, "externalId"))
                .bind(i64::from(next.get("active") != Some(&Value::Bool(false))))
                .bind(json_text(&stored_form(&next, kind)))
                .bind(at)
                .bind(idp)
                .bind(id)
                .execute(&mut *change.tx)
                .await?;
                if let Some(x) = text_of(&next, "externalId") {
                    sqlx::query(
                        "UPDATE identities SET match_key = $1 WHERE user_id = $2 AND idp = $3",
                    )
                    .bind(x)
                    .bind(id)
                    .bind(idp)
                    .execute(&mut *change.tx)
                    .await?;
                }
                written.users.push(id.to_string());
            }
            ScimKind::Group => {
                let name = text_of(&next, "displayName").unwrap_or_default();
                sqlx::query(
                    "UPDATE scim_groups SET display_name = $1, display_name_key = $2, external_id = $3, \
                     resource = $4, updated_at = $5 WHERE idp = $6 AND id = $7",
                )
                .bind(name)
                .bind(name.to_lowercase())
                .bind(text_of(&next, "externalId"))
                .bind(json_text(&stored_form(&next, kind)))
                .bind(at)
                .bind(idp)
                .bind(id)
                .execute(&mut *change.tx)
                .await?;
                let old = member_ids(&current.resource);
                let new = member_ids(&next);
                set_members(&mut change.tx, idp, id, &new, &next).await?;
                // A rename concerns every member; else those who came or went.
                let renamed = text_of(&current.resource, "displayName") != Some(name);
                written.users.extend(if renamed {
                    old.union(&new).cloned().collect::<Vec<_>>()
                } else {
                    old.symmetric_difference(&new).cloned().collect()
                });
            }
        }
        tracing::debug!(idp, id, version = before + 1, "SCIM resource replaced");
        self.reprovision_all(&mut change, idp, &mut written, planner, &actor, at)
            .await?;
        written.record = Some(read_record(&mut change.tx, idp, kind, id).await?);
        written.audit = change.commit().await?;
        Ok(written)
    }

    async fn try_scim_delete<E>(
        &self,
        idp: &str,
        kind: ScimKind,
        id: &str,
        if_match: Option<i64>,
        planner: &Planner<'_>,
    ) -> Result<ScimWritten, ScimWriteError<E>> {
        let mut change = self.audited().await?;
        let at = now();
        let actor = format!("scim:{idp}");
        lock_version(&mut change.tx, idp, kind, id, if_match).await?;
        let mut written = ScimWritten::default();
        match kind {
            ScimKind::User => written.users.push(id.to_string()),
            ScimKind::Group => {
                let members: Vec<String> = sqlx::query(
                    "SELECT member_id FROM scim_members WHERE idp = $1 AND group_id = $2",
                )
                .bind(idp)
                .bind(id)
                .fetch_all(&mut *change.tx)
                .await?
                .iter()
                .map(|r| r.try_get(0))
                .collect::<Result<_, _>>()?;
                written.users = members;
            }
        }
        let member_of = match kind {
            ScimKind::User => "member_id",
            ScimKind::Group => "group_id",
        };
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DELETE FROM scim_members WHERE idp = $1 AND {member_of} = $2"
        )))
        .bind(idp)
        .bind(id)
        .execute(&mut *change.tx)
        .await?;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DELETE FROM {} WHERE idp = $1 AND id = $2",
            kind.table()
        )))
        .bind(idp)
        .bind(id)
        .execute(&mut *change.tx)
        .await?;
        self.reprovision_all(&mut change, idp, &mut written, planner, &actor, at)
            .await?;
        written.audit = change.commit().await?;
        Ok(written)
    }

    /// Re-runs the provisioning of every user in `written.users` with what
    /// the directory now says, and (de)activates them.
    async fn reprovision_all<E>(
        &self,
        change: &mut Audited,
        idp: &str,
        written: &mut ScimWritten,
        planner: &Planner<'_>,
        actor: &str,
        at: i64,
    ) -> Result<(), ScimWriteError<E>> {
        written.users.sort();
        written.users.dedup();
        let jit = load_jit(&mut change.tx).await?;
        for user_id in written.users.clone() {
            let ended = reprovision(change, idp, &user_id, planner, &jit, actor, at).await?;
            written.ended_sessions.extend(ended);
        }
        Ok(())
    }
}

/// One user's re-provisioning after a directory change: deactivated (and
/// every session ended) when the directory has them inactive or deleted,
/// reactivated when it has them active again, their memberships planned
/// from the IdP's last claims with the directory's.
async fn reprovision(
    change: &mut Audited,
    idp: &str,
    user_id: &str,
    planner: &Planner<'_>,
    jit: &JitTable,
    actor: &str,
    at: i64,
) -> Result<Vec<String>, StoreError> {
    let Some(row) = sqlx::query(
        "SELECT i.subject, i.claims, u.deactivated_at FROM identities i JOIN users u ON u.id = i.user_id \
         WHERE i.user_id = $1 AND i.idp = $2",
    )
    .bind(user_id)
    .bind(idp)
    .fetch_optional(&mut *change.tx)
    .await?
    else {
        return Ok(Vec::new());
    };
    let subject: Option<String> = row.try_get(0)?;
    let stored_claims = row
        .try_get::<Option<String>, _>(1)?
        .and_then(|t| serde_json::from_str::<Value>(&t).ok());
    let was_deactivated = row.try_get::<Option<i64>, _>(2)?.is_some();
    let entry = directory_of(&mut change.tx, idp, user_id).await?;
    let deactivated = entry.as_ref().is_none_or(|e| !e.active());
    let mut ended = Vec::new();
    if deactivated && !was_deactivated {
        sqlx::query("UPDATE users SET deactivated_at = $1, updated_at = $1 WHERE id = $2")
            .bind(at)
            .bind(user_id)
            .execute(&mut *change.tx)
            .await?;
        ended = end_sessions(
            &mut change.tx,
            sqlx::query(
                "DELETE FROM sessions WHERE user_id = $1 RETURNING id_hash, id_token, expires_at",
            )
            .bind(user_id),
        )
        .await?;
        let reason = if entry.is_some() {
            "inactive"
        } else {
            "deleted"
        };
        change.record(AuditEvent::about_user(
            at,
            actor,
            "user.deactivated",
            user_id,
            serde_json::json!({"idp": idp, "directory": reason, "sessionsEnded": ended.len()}),
        ));
    } else if !deactivated && was_deactivated {
        sqlx::query("UPDATE users SET deactivated_at = NULL, updated_at = $1 WHERE id = $2")
            .bind(at)
            .bind(user_id)
            .execute(&mut *change.tx)
            .await?;
        change.record(AuditEvent::about_user(
            at,
            actor,
            "user.reactivated",
            user_id,
            serde_json::json!({"idp": idp}),
        ));
    }
    if let Some(e) = &entry {
        // The directory's profile, as of this change.
        sqlx::query(
            "UPDATE users SET email = COALESCE($1, email), name = COALESCE($2, name), updated_at = $3 WHERE id = $4",
        )
        .bind(e.email())
        .bind(e.name())
        .bind(at)
        .bind(user_id)
        .execute(&mut *change.tx)
        .await?;
        if subject.is_none() {
            // Not logged in yet: the first login may be matched by this email.
            sqlx::query(
                "UPDATE identities SET email = COALESCE($1, email) WHERE user_id = $2 AND idp = $3",
            )
            .bind(e.email().map(str::to_lowercase))
            .bind(user_id)
            .bind(idp)
            .execute(&mut *change.tx)
            .await?;
        }
    }
    if deactivated || (entry.is_none() && stored_claims.is_none()) {
        return Ok(ended);
    }
    let existing = ExistingUser {
        memberships: memberships_of(&mut change.tx, user_id).await?,
        identity_is_new: subject.is_none(),
        directory: entry.clone(),
        deactivated,
    };
    let plan = planner(Replan {
        existing: Some(&existing),
        stored_claims: stored_claims.as_ref(),
        entry: entry.as_ref(),
        jit,
    });
    for c in planned_changes(change, user_id, plan, actor, at) {
        apply_change(&mut change.tx, user_id, &c, at).await?;
    }
    Ok(ended)
}

/// A plan's changes, audited, for [`apply_change`]; a plan that could not
/// be made (the claims name no user) changes nothing, and says so.
fn planned_changes(
    change: &mut Audited,
    user_id: &str,
    plan: Result<Plan, ProvisionError>,
    actor: &str,
    at: i64,
) -> Vec<Change> {
    match plan {
        Ok(plan) => {
            for c in &plan.changes {
                change.record(AuditEvent::for_change(at, actor, user_id, c));
            }
            plan.changes
        }
        Err(e) => {
            tracing::warn!(
                target: "portcullis::provision",
                user = user_id, error = %e,
                "directory change: provisioning not re-run"
            );
            Vec::new()
        }
    }
}

/// Bumps the resource's version, which locks its row until the
/// transaction ends; checks `If-Match`. Returns the version before.
async fn lock_version<E>(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    idp: &str,
    kind: ScimKind,
    id: &str,
    if_match: Option<i64>,
) -> Result<i64, ScimWriteError<E>> {
    let bumped: Option<i64> = sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE {} SET version = version + 1 WHERE idp = $1 AND id = $2 RETURNING version",
        kind.table()
    )))
    .bind(idp)
    .bind(id)
    .fetch_optional(&mut **tx)
    .await?
    .map(|r| r.try_get(0))
    .transpose()?;
    let Some(version) = bumped else {
        return Err(ScimWriteError::NotFound);
    };
    let before = version - 1;
    if let Some(expected) = if_match
        && expected != before
    {
        return Err(ScimWriteError::Stale(expected));
    }
    Ok(before)
}

async fn user_name_free<E>(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    idp: &str,
    user_name: &str,
    except: Option<&str>,
) -> Result<(), ScimWriteError<E>> {
    let taken: Option<String> =
        sqlx::query("SELECT id FROM scim_users WHERE idp = $1 AND user_name_key = $2")
            .bind(idp)
            .bind(user_name.to_lowercase())
            .fetch_optional(&mut **tx)
            .await?
            .map(|r| r.try_get(0))
            .transpose()?;
    match taken {
        Some(other) if Some(other.as_str()) != except => Err(ScimWriteError::Uniqueness(format!(
            "userName {user_name:?} is already taken"
        ))),
        _ => Ok(()),
    }
}

/// The Portcullis user a new directory user describes: by `externalId`
/// as the identity's `match` claim (or its subject, or its `sub`), else
/// by verified email. One that another directory user already describes
/// is a conflict.
async fn linked_user<E>(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    idp: &str,
    entry: &DirectoryEntry,
    linking: Linking,
) -> Result<Option<String>, ScimWriteError<E>> {
    let mut probes: Vec<(&str, String)> = Vec::new();
    if let Some(x) = entry.external_id() {
        probes.push(("match_key", x.to_string()));
        if linking.match_is_identifier {
            probes.push(("subject", x.to_string()));
        }
        if linking.match_is_sub {
            probes.push(("idp_sub", x.to_string()));
        }
    }
    let email = entry
        .email()
        .or_else(|| entry.user_name().filter(|u| u.contains('@')));
    if let Some(e) = email {
        probes.push(("email", e.to_lowercase()));
    }
    for (column, value) in probes {
        let found: Option<String> = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT user_id FROM identities WHERE idp = $1 AND {column} = $2"
        )))
        .bind(idp)
        .bind(&value)
        .fetch_optional(&mut **tx)
        .await?
        .map(|r| r.try_get(0))
        .transpose()?;
        if let Some(user_id) = found {
            let described: bool =
                sqlx::query("SELECT 1 FROM scim_users WHERE idp = $1 AND id = $2")
                    .bind(idp)
                    .bind(&user_id)
                    .fetch_optional(&mut **tx)
                    .await?
                    .is_some();
            if described {
                return Err(ScimWriteError::Uniqueness(format!(
                    "another directory user already describes this user ({column} {value:?})"
                )));
            }
            return Ok(Some(user_id));
        }
    }
    Ok(None)
}

async fn insert_scim_user(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    idp: &str,
    id: &str,
    resource: &Value,
    at: i64,
) -> Result<(), StoreError> {
    let user_name = text_of(resource, "userName").unwrap_or_default();
    sqlx::query(
        "INSERT INTO scim_users (idp, id, user_name, user_name_key, external_id, active, resource, version, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, 1, $8, $8)",
    )
    .bind(idp)
    .bind(id)
    .bind(user_name)
    .bind(user_name.to_lowercase())
    .bind(text_of(resource, "externalId"))
    .bind(i64::from(resource.get("active") != Some(&Value::Bool(false))))
    .bind(json_text(&stored_form(resource, ScimKind::User)))
    .bind(at)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Makes the group's member list `members` (with the `display` names
/// `resource` gives them); every member must be a user of this directory.
async fn set_members<E>(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    idp: &str,
    group_id: &str,
    members: &BTreeSet<String>,
    resource: &Value,
) -> Result<(), ScimWriteError<E>> {
    let displays = member_displays(resource);
    sqlx::query("DELETE FROM scim_members WHERE idp = $1 AND group_id = $2")
        .bind(idp)
        .bind(group_id)
        .execute(&mut **tx)
        .await?;
    for m in members {
        let known = sqlx::query("SELECT 1 FROM scim_users WHERE idp = $1 AND id = $2")
            .bind(idp)
            .bind(m)
            .fetch_optional(&mut **tx)
            .await?
            .is_some();
        if !known {
            return Err(ScimWriteError::Invalid(format!(
                "member {m:?} is not a user of this directory"
            )));
        }
        sqlx::query(
            "INSERT INTO scim_members (idp, group_id, member_id, display) VALUES ($1, $2, $3, $4)",
        )
        .bind(idp)
        .bind(group_id)
        .bind(m)
        .bind(displays.get(m.as_str()).copied())
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

async fn read_record(
    conn: &mut sqlx::AnyConnection,
    idp: &str,
    kind: ScimKind,
    id: &str,
) -> Result<ScimRecord, StoreError> {
    let r = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT id, resource, version, created_at, updated_at FROM {} WHERE idp = $1 AND id = $2",
        kind.table()
    )))
    .bind(idp)
    .bind(id)
    .fetch_one(&mut *conn)
    .await?;
    let mut record = ScimRecord {
        id: r.try_get(0)?,
        resource: parse_resource(&r.try_get::<String, _>(1)?)?,
        version: r.try_get(2)?,
        created_at: r.try_get(3)?,
        updated_at: r.try_get(4)?,
    };
    attach(conn, idp, kind, &mut record).await?;
    Ok(record)
}

/// Adds `id` and the user's `groups` or the group's `members`.
async fn attach(
    conn: &mut sqlx::AnyConnection,
    idp: &str,
    kind: ScimKind,
    record: &mut ScimRecord,
) -> Result<(), StoreError> {
    let (sql, key) = match kind {
        ScimKind::User => (
            "SELECT g.id, g.display_name FROM scim_members m \
             JOIN scim_groups g ON g.idp = m.idp AND g.id = m.group_id \
             WHERE m.idp = $1 AND m.member_id = $2 ORDER BY g.display_name, g.id",
            "groups",
        ),
        ScimKind::Group => (
            "SELECT u.id, m.display FROM scim_members m \
             JOIN scim_users u ON u.idp = m.idp AND u.id = m.member_id \
             WHERE m.idp = $1 AND m.group_id = $2 ORDER BY u.user_name, u.id",
            "members",
        ),
    };
    let items: Vec<Value> = sqlx::query(sql)
        .bind(idp)
        .bind(&record.id)
        .fetch_all(&mut *conn)
        .await?
        .iter()
        .map(|r| {
            // A group's name is its members' `display`; a member's is what
            // the directory sent, if anything.
            let mut item = serde_json::json!({"value": r.try_get::<String, _>(0)?});
            if let Some(d) = r.try_get::<Option<String>, _>(1)? {
                item["display"] = d.into();
            }
            Ok(item)
        })
        .collect::<Result<_, sqlx::Error>>()?;
    if let Some(o) = record.resource.as_object_mut() {
        o.insert("id".into(), record.id.clone().into());
        if !items.is_empty() {
            o.insert(key.into(), Value::Array(items));
        }
    }
    Ok(())
}
