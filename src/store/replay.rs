//! Users as a policy preview replays them (`portcullis plan`): a page at a
//! time, in user id order, each with their memberships, identities (the
//! claims kept from their last login, refresh or SCIM change) and what the
//! directory says of them. Four queries a page, whatever its size.

use std::collections::HashMap;

use super::*;
use crate::provision::directory::DirectoryEntry;
use crate::provision::preview::{StoredIdentity, StoredUser};

impl Store {
    /// Up to `limit` users whose id sorts after `after`, in id order.
    pub async fn users_to_replay(
        &self,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Vec<StoredUser>, StoreError> {
        let after = after.unwrap_or("");
        let rows = sqlx::query(
            "SELECT id, email, deactivated_at FROM users WHERE id > $1 ORDER BY id LIMIT $2",
        )
        .bind(after)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        let mut users = Vec::with_capacity(rows.len());
        for r in &rows {
            users.push(StoredUser {
                id: r.try_get(0)?,
                email: r.try_get(1)?,
                deactivated: r.try_get::<Option<i64>, _>(2)?.is_some(),
                memberships: Vec::new(),
                identities: Vec::new(),
            });
        }
        let Some(last) = users.last().map(|u| u.id.clone()) else {
            return Ok(users);
        };
        let index: HashMap<String, usize> = users
            .iter()
            .enumerate()
            .map(|(i, u)| (u.id.clone(), i))
            .collect();
        // Every row below names a user of this page: ids in (after, last].
        let range = |sql: &'static str| sqlx::query(sql).bind(after).bind(last.clone());

        for row in range(
            "SELECT m.user_id, m.org_id, m.source, r.role FROM memberships m \
             LEFT JOIN membership_roles r ON r.user_id = m.user_id AND r.org_id = m.org_id \
             WHERE m.user_id > $1 AND m.user_id <= $2 ORDER BY m.user_id, m.org_id, r.role",
        )
        .fetch_all(&self.pool)
        .await?
        {
            let user: String = row.try_get(0)?;
            let Some(&i) = index.get(&user) else { continue };
            push_membership_row(&mut users[i].memberships, &row, 1)?;
        }

        for row in range(
            "SELECT user_id, idp, subject, claims FROM identities \
             WHERE user_id > $1 AND user_id <= $2 ORDER BY user_id, idp",
        )
        .fetch_all(&self.pool)
        .await?
        {
            let user: String = row.try_get(0)?;
            let Some(&i) = index.get(&user) else { continue };
            let idp: String = row.try_get(1)?;
            let claims = match row.try_get::<Option<String>, _>(3)? {
                Some(t) => Some(serde_json::from_str(&t).map_err(|e| {
                    StoreError::Corrupt(format!("claims of user {user} at {idp}: {e}"))
                })?),
                None => None,
            };
            users[i].identities.push(StoredIdentity {
                idp,
                logged_in: row.try_get::<Option<String>, _>(2)?.is_some(),
                claims,
                directory: None,
            });
        }

        let mut entries: HashMap<(String, String), DirectoryEntry> = HashMap::new();
        for row in range("SELECT idp, id, resource FROM scim_users WHERE id > $1 AND id <= $2")
            .fetch_all(&self.pool)
            .await?
        {
            let key = (row.try_get(0)?, row.try_get(1)?);
            let resource = scim::parse_resource(&row.try_get::<String, _>(2)?)?;
            entries.insert(
                key,
                DirectoryEntry {
                    resource,
                    groups: Vec::new(),
                },
            );
        }
        if !entries.is_empty() {
            for row in range(
                "SELECT m.idp, m.member_id, g.display_name FROM scim_members m \
                 JOIN scim_groups g ON g.idp = m.idp AND g.id = m.group_id \
                 WHERE m.member_id > $1 AND m.member_id <= $2 ORDER BY g.display_name",
            )
            .fetch_all(&self.pool)
            .await?
            {
                let key: (String, String) = (row.try_get(0)?, row.try_get(1)?);
                if let Some(e) = entries.get_mut(&key) {
                    e.groups.push(row.try_get(2)?);
                }
            }
            for u in &mut users {
                for identity in &mut u.identities {
                    identity.directory = entries.remove(&(identity.idp.clone(), u.id.clone()));
                }
            }
        }
        Ok(users)
    }

    /// Whether every migration this build knows has been applied: a
    /// preview reads the store without migrating it.
    pub async fn is_current(&self) -> Result<bool, StoreError> {
        let migrator = match self.kind {
            StoreKind::Sqlite => &SQLITE_MIGRATIONS,
            StoreKind::Postgres => &POSTGRES_MIGRATIONS,
        };
        let newest = migrator.iter().map(|m| m.version).max().unwrap_or(0);
        let applied: Option<i64> =
            sqlx::query("SELECT MAX(version) FROM _sqlx_migrations WHERE success = true")
                .fetch_one(&self.pool)
                .await
                .ok()
                .and_then(|r| r.try_get(0).ok());
        Ok(applied.is_some_and(|v| v >= newest))
    }
}
