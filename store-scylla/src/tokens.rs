//! Revoked tokens: a row per token id with a TTL running until an hour past the token's own
//! expiry, and an hour bucket of expiries so the purge removes what is due without a scan.

use async_trait::async_trait;
use futures_util::{StreamExt, TryStreamExt};
use time::{Duration, OffsetDateTime};
use tomato_store::{AuthChange, StoreError, TokenStore};
use uuid::Uuid;

use crate::ScyllaStore;

/// Revocations outlive their token by this much before the TTL removes them: an expired token
/// is refused anyway, and the purge takes them sooner.
const GRACE: Duration = Duration::hours(1);
/// The purge looks this far back in the expiry buckets; older ones are gone by TTL.
const PURGE_BACK: Duration = Duration::hours(2);

/// The start of `at`'s hour.
pub(crate) fn hour_of(at: OffsetDateTime) -> OffsetDateTime {
    at.replace_minute(0)
        .and_then(|at| at.replace_second(0))
        .and_then(|at| at.replace_nanosecond(0))
        .unwrap_or(at)
}

/// Seconds from now until `until`, at least a minute, as a CQL TTL.
pub(crate) fn ttl_until(until: OffsetDateTime) -> i32 {
    let seconds = (until - OffsetDateTime::now_utc()).whole_seconds().max(60);
    i32::try_from(seconds).unwrap_or(i32::MAX)
}

#[async_trait]
impl TokenStore for ScyllaStore {
    async fn revoke(&self, jti: Uuid, expires_at: OffsetDateTime) -> Result<(), StoreError> {
        let ttl = ttl_until(expires_at + GRACE);
        let expires_at = tomato_domain::millis::to_ms(expires_at);
        self.db
            .run(
                cql!("INSERT INTO revoked_by_hour (hour, jti, expires_at) VALUES (?, ?, ?) USING TTL ?"),
                (hour_of(expires_at), jti, expires_at, ttl),
            )
            .await?;
        self.db
            .run(
                cql!("INSERT INTO revoked_tokens (jti, expires_at) VALUES (?, ?) USING TTL ?"),
                (jti, expires_at, ttl),
            )
            .await?;
        // After the revocation, so a cache that hears of it and asks the store finds it.
        self.record(AuthChange::Revoked { jti, expires_at }).await;
        Ok(())
    }

    async fn is_revoked(&self, jti: Uuid) -> Result<bool, StoreError> {
        let row: Option<(Uuid,)> = self
            .db
            .row(cql!("SELECT jti FROM revoked_tokens WHERE jti = ?"), (jti,))
            .await?;
        Ok(row.is_some())
    }

    async fn revoked_among(&self, jtis: &[Uuid]) -> Result<Vec<Uuid>, StoreError> {
        let revoked: Vec<(Uuid, bool)> = futures_util::stream::iter(jtis.to_vec())
            .map(|jti| async move { Ok::<_, StoreError>((jti, self.is_revoked(jti).await?)) })
            .buffer_unordered(crate::IN_FLIGHT)
            .try_collect()
            .await?;
        Ok(revoked
            .into_iter()
            .filter_map(|(jti, revoked)| revoked.then_some(jti))
            .collect())
    }

    async fn purge_expired(&self, now: OffsetDateTime) -> Result<u64, StoreError> {
        let mut purged = 0;
        let mut hour = hour_of(now - PURGE_BACK);
        while hour <= now {
            let due: Vec<(Uuid, OffsetDateTime)> = self
                .db
                .rows(
                    cql!("SELECT jti, expires_at FROM revoked_by_hour WHERE hour = ?"),
                    (hour,),
                )
                .await?;
            for (jti, expires_at) in due {
                if expires_at < now {
                    self.db
                        .run(cql!("DELETE FROM revoked_tokens WHERE jti = ?"), (jti,))
                        .await?;
                    self.db
                        .run(
                            cql!("DELETE FROM revoked_by_hour WHERE hour = ? AND jti = ?"),
                            (hour, jti),
                        )
                        .await?;
                    purged += 1;
                }
            }
            hour += Duration::hours(1);
        }
        Ok(purged)
    }
}
