//! Organization memberships set and removed through the management API.

use super::*;

impl Store {
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
        let mut change = self.audited().await?;
        let exists = sqlx::query("SELECT id FROM users WHERE id = $1")
            .bind(user_id)
            .fetch_optional(&mut *change.tx)
            .await?;
        if exists.is_none() {
            change.tx.rollback().await?;
            return Ok(None);
        }
        let before = memberships_of(&mut change.tx, user_id)
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
        write_membership(&mut change.tx, user_id, &after, at).await?;
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
        change.record(event);
        change.commit().await?;
        Ok(Some(after))
    }

    /// Removes a user's membership of `org`; `false` when there was none.
    pub async fn remove_membership(
        &self,
        user_id: &str,
        org: &str,
        actor: &str,
    ) -> Result<bool, StoreError> {
        let mut change = self.audited().await?;
        let before = memberships_of(&mut change.tx, user_id)
            .await?
            .into_iter()
            .find(|m| m.org == org);
        let Some(before) = before else {
            change.tx.rollback().await?;
            return Ok(false);
        };
        delete_membership(&mut change.tx, user_id, org).await?;
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
        change.record(event);
        change.commit().await?;
        Ok(true)
    }
}
