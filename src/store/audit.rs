//! The audit log: reading it, and events written on their own.

use super::*;

impl Store {
    /// Writes one audit event on its own (changes made elsewhere, such as
    /// a config reload through the API) and emits it.
    pub async fn record(&self, event: &AuditEvent) -> Result<(), StoreError> {
        let mut conn = self.pool.acquire().await?;
        event.insert(&mut conn).await?;
        event.emit();
        Ok(())
    }

    pub async fn audit_events(&self, filter: &AuditFilter) -> Result<Vec<AuditEvent>, StoreError> {
        let sql = if filter.newest_first {
            "SELECT id, at, actor, action, user_id, org_id, before, after FROM audit_events \
             WHERE ($1 IS NULL OR user_id = $1) AND ($2 IS NULL OR org_id = $2) ORDER BY id DESC LIMIT $3 OFFSET $4"
        } else {
            "SELECT id, at, actor, action, user_id, org_id, before, after FROM audit_events \
             WHERE ($1 IS NULL OR user_id = $1) AND ($2 IS NULL OR org_id = $2) ORDER BY id LIMIT $3 OFFSET $4"
        };
        let rows = sqlx::query(sql)
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
