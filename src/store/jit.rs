//! Just-in-time entries added through the management API (the file's
//! own entries are never stored).

use super::*;

impl Store {
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
        let mut change = self.audited().await?;
        let mut added = Vec::new();
        for v in values {
            let done = sqlx::query(list.insert())
                .bind(org)
                .bind(v)
                .execute(&mut *change.tx)
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
        change.record_all(audit);
        change.commit().await?;
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
        let mut change = self.audited().await?;
        let before = jit_entries(&mut change.tx, org, list).await?;
        sqlx::query(list.delete_all())
            .bind(org)
            .execute(&mut *change.tx)
            .await?;
        for v in values {
            sqlx::query(list.insert())
                .bind(org)
                .bind(v)
                .execute(&mut *change.tx)
                .await?;
        }
        let after = jit_entries(&mut change.tx, org, list).await?;
        let event = AuditEvent::new(
            now(),
            actor,
            &format!("jit.{}.replaced", list.name()),
            None,
            Some(org),
            Some(serde_json::json!(before)),
            Some(serde_json::json!(after)),
        );
        change.record(event);
        change.commit().await?;
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
        let mut change = self.audited().await?;
        let done = sqlx::query(list.delete_one())
            .bind(org)
            .bind(value)
            .execute(&mut *change.tx)
            .await?;
        if done.rows_affected() == 0 {
            change.tx.rollback().await?;
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
        change.record(event);
        change.commit().await?;
        Ok(true)
    }
}
