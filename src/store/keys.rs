//! Keys every replica shares (the assertion signing key).

use super::*;

impl Store {
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
}
