//! The change feed in SQLite: a row per change, numbered in commit order (one writer), written
//! in the transaction that makes the change, so the feed and the data never disagree.

use async_trait::async_trait;
use rusqlite::{Connection, params};
use time::OffsetDateTime;
use tomato_store::{
    AuthChange, AuthChanges, ChangeFeed, FedChange, FeedCursor, START_BACK, StoreError,
};
use uuid::Uuid;

use crate::{EmbeddedStore, from_millis, parse_col, to_millis};

/// Records `change`, made through the store stamped `origin`, through `conn` (the writer's
/// transaction that makes it).
pub(crate) fn record(
    conn: &Connection,
    origin: Uuid,
    change: AuthChange,
) -> Result<(), StoreError> {
    let now = to_millis(OffsetDateTime::now_utc());
    let origin = origin.to_string();
    match change {
        AuthChange::UserChanged(id) => conn.execute(
            "INSERT INTO auth_changes (at, origin, user_id) VALUES (?1, ?2, ?3)",
            params![now, origin, id.to_string()],
        )?,
        AuthChange::Revoked { jti, expires_at } => conn.execute(
            "INSERT INTO auth_changes (at, origin, jti, expires_at) VALUES (?1, ?2, ?3, ?4)",
            params![now, origin, jti.to_string(), to_millis(expires_at)],
        )?,
    };
    Ok(())
}

#[async_trait]
impl ChangeFeed for EmbeddedStore {
    async fn auth_changes(
        &self,
        after: Option<FeedCursor>,
        limit: usize,
    ) -> Result<AuthChanges, StoreError> {
        let origin = self.origin.to_string();
        self.db
            .read(move |conn| {
                let Some(after) = after.clone() else {
                    let since = to_millis(OffsetDateTime::now_utc() - START_BACK);
                    let at: i64 = conn.query_row(
                        "SELECT coalesce(max(seq), 0) FROM auth_changes WHERE at < ?1",
                        [since],
                        |row| row.get(0),
                    )?;
                    return Ok(AuthChanges {
                        changes: Vec::new(),
                        next: FeedCursor {
                            at,
                            seen: Vec::new(),
                        },
                    });
                };
                let mut select = conn.prepare_cached(
                    "SELECT seq, origin, user_id, jti, expires_at FROM auth_changes
                     WHERE seq > ?1 ORDER BY seq LIMIT ?2",
                )?;
                let limit = i64::try_from(limit).unwrap_or(i64::MAX);
                let rows = select.query_map(params![after.at, limit], |row| {
                    Ok((
                        row.get::<_, i64>(0)?,
                        row.get::<_, String>(1)?,
                        row.get::<_, Option<String>>(2)?,
                        row.get::<_, Option<String>>(3)?,
                        row.get::<_, Option<i64>>(4)?,
                    ))
                })?;
                let mut next = after;
                let mut changes = Vec::new();
                for row in rows {
                    let (seq, by, user, jti, expires_at) = row?;
                    let change = match (user, jti, expires_at) {
                        (Some(user), _, _) => {
                            AuthChange::UserChanged(parse_col("user id", &user, str::parse)?)
                        }
                        (None, Some(jti), Some(expires_at)) => AuthChange::Revoked {
                            jti: parse_col("token id", &jti, str::parse)?,
                            expires_at: from_millis(expires_at)?,
                        },
                        _ => {
                            return Err(StoreError::Corrupt(format!(
                                "auth change {seq} names neither a user nor a token"
                            )));
                        }
                    };
                    changes.push(FedChange {
                        change,
                        here: by == origin,
                    });
                    next.at = seq;
                }
                Ok(AuthChanges { changes, next })
            })
            .await
    }

    async fn forget_before(&self, before: OffsetDateTime) -> Result<u64, StoreError> {
        self.db
            .write(move |conn| {
                let gone = conn.execute(
                    "DELETE FROM auth_changes WHERE at < ?1",
                    [to_millis(before)],
                )?;
                Ok(gone as u64)
            })
            .await
    }
}
