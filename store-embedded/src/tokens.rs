//! Revoked tokens in SQLite.

use async_trait::async_trait;
use rusqlite::params;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::changes::record;
use crate::{EmbeddedStore, to_millis};
use tomato_store::{AuthChange, StoreError, TokenStore};

/// Whether one token was revoked: a single check, or each of a batch's.
const IS_REVOKED: &str = "SELECT EXISTS (SELECT 1 FROM revoked_tokens WHERE jti = ?1)";

#[async_trait]
impl TokenStore for EmbeddedStore {
    async fn revoke(&self, jti: Uuid, expires_at: OffsetDateTime) -> Result<(), StoreError> {
        let origin = self.origin;
        self.db
            .write(move |conn| {
                let tx = conn.transaction()?;
                let new = tx.execute(
                    "INSERT INTO revoked_tokens (jti, expires_at) VALUES (?1, ?2)
                     ON CONFLICT (jti) DO NOTHING",
                    params![jti.to_string(), to_millis(expires_at)],
                )?;
                if new == 1 {
                    record(&tx, origin, AuthChange::Revoked { jti, expires_at })?;
                }
                tx.commit()?;
                Ok(())
            })
            .await
    }

    async fn is_revoked(&self, jti: Uuid) -> Result<bool, StoreError> {
        self.db
            .read(move |conn| {
                Ok(conn
                    .prepare_cached(IS_REVOKED)?
                    .query_row([jti.to_string()], |row| row.get(0))?)
            })
            .await
    }

    async fn revoked_among(&self, jtis: &[Uuid]) -> Result<Vec<Uuid>, StoreError> {
        if jtis.is_empty() {
            return Ok(Vec::new());
        }
        let jtis = jtis.to_vec();
        self.db
            .read(move |conn| {
                let mut exists = conn.prepare_cached(IS_REVOKED)?;
                let mut revoked = Vec::new();
                for jti in &jtis {
                    if exists.query_row([jti.to_string()], |row| row.get::<_, bool>(0))? {
                        revoked.push(*jti);
                    }
                }
                Ok(revoked)
            })
            .await
    }

    async fn purge_expired(&self, now: OffsetDateTime) -> Result<u64, StoreError> {
        self.db
            .write(move |conn| {
                let gone = conn.execute(
                    "DELETE FROM revoked_tokens WHERE expires_at < ?1",
                    [to_millis(now)],
                )?;
                Ok(gone as u64)
            })
            .await
    }
}
