//! The change feed in CQL: a row per change in a partition per minute, ordered by the writer's
//! clock, expiring by itself after `KEEP`. Without transactions a change is recorded right
//! after the write it describes, and its clock time comes from whichever node wrote it, so a row
//! can become visible after a reader has read past its time; every read therefore starts
//! `OVERLAP` before the present and skips the rows it already returned (the cursor's `seen`).
//! This assumes a write lands, and nodes' clocks agree, within `OVERLAP`.

use std::collections::HashSet;

use async_trait::async_trait;
use time::{Duration, OffsetDateTime};
use tomato_store::{
    AuthChange, AuthChanges, ChangeFeed, FedChange, FeedCursor, START_BACK, StoreError,
};
use uuid::Uuid;

use tomato_domain::millis::{to_ms, unix_ms};

use crate::ScyllaStore;

/// How far behind the present every read starts again.
const OVERLAP: Duration = Duration::seconds(10);
/// How long a change is kept (the rows' TTL); a reader further behind starts this far back.
const KEEP: Duration = Duration::hours(1);
/// `KEEP` as a CQL TTL.
const KEEP_TTL_S: i32 = 3600;

type ChangeRow = (
    OffsetDateTime,
    Uuid,
    Uuid,
    Option<String>,
    Option<Uuid>,
    Option<OffsetDateTime>,
);

/// The partition of changes made at `at`: whole minutes since the Unix epoch.
fn minute_of(at: OffsetDateTime) -> i64 {
    at.unix_timestamp().div_euclid(60)
}

impl ScyllaStore {
    /// Records `change`, after the write it describes. Best effort: the write it tells of has
    /// succeeded, the node that made it told its own cache and the others directly, and the
    /// feed is what lets a node that missed that message catch up; a failure is logged.
    /// The columns a change does not use are left unset, not null: a null is a tombstone,
    /// and every reader of the minute would step over two of them per row.
    pub(crate) async fn record(&self, change: AuthChange) {
        use scylla::value::MaybeUnset::{Set, Unset};
        let at = to_ms(OffsetDateTime::now_utc());
        let (user, jti, expires_at) = match change {
            AuthChange::UserChanged(id) => (Set(id.to_string()), Unset, Unset),
            AuthChange::Revoked { jti, expires_at } => (Unset, Set(jti), Set(to_ms(expires_at))),
        };
        crate::tidy(
            "recording an authentication change",
            self.db
                .run(
                    cql!("INSERT INTO auth_changes (minute, at, id, origin, user_id, jti, expires_at)
                     VALUES (?, ?, ?, ?, ?, ?, ?) USING TTL ?"),
                    (
                        minute_of(at),
                        at,
                        Uuid::new_v4(),
                        self.origin,
                        user,
                        jti,
                        expires_at,
                        KEEP_TTL_S,
                    ),
                )
                .await,
        );
    }

    /// The first `cap` changes recorded from `from` on, oldest first (ties by id), and whether
    /// there were more. Each minute's partition is read only as far as the cap needs.
    async fn changes_from(
        &self,
        from: OffsetDateTime,
        cap: usize,
    ) -> Result<(Vec<ChangeRow>, bool), StoreError> {
        let now = OffsetDateTime::now_utc();
        let mut rows: Vec<ChangeRow> = Vec::new();
        for minute in minute_of(from)..=minute_of(now) {
            let room = cap.saturating_sub(rows.len());
            if room == 0 {
                break;
            }
            rows.extend(
                self.db
                    .rows::<ChangeRow>(
                        cql!(
                            "SELECT at, id, origin, user_id, jti, expires_at FROM auth_changes
                         WHERE minute = ? AND at >= ? LIMIT ?"
                        ),
                        (minute, from, i32::try_from(room).unwrap_or(i32::MAX)),
                    )
                    .await?,
            );
        }
        let more = rows.len() >= cap;
        rows.sort_by_key(|row| (row.0, row.1));
        Ok((rows, more))
    }
}

fn change_of(row: &ChangeRow) -> Result<AuthChange, StoreError> {
    let (_, id, _, user, jti, expires_at) = row;
    match (user, jti, expires_at) {
        (Some(user), _, _) => Ok(AuthChange::UserChanged(user.parse().map_err(|err| {
            StoreError::Corrupt(format!("auth change {id}: user {user:?}: {err}"))
        })?)),
        (None, Some(jti), Some(expires_at)) => Ok(AuthChange::Revoked {
            jti: *jti,
            expires_at: *expires_at,
        }),
        _ => Err(StoreError::Corrupt(format!(
            "auth change {id} names neither a user nor a token"
        ))),
    }
}

#[async_trait]
impl ChangeFeed for ScyllaStore {
    async fn auth_changes(
        &self,
        after: Option<FeedCursor>,
        limit: usize,
    ) -> Result<AuthChanges, StoreError> {
        let now = OffsetDateTime::now_utc();
        let start = unix_ms(now - OVERLAP);
        let Some(after) = after else {
            return Ok(AuthChanges {
                changes: Vec::new(),
                next: FeedCursor {
                    at: unix_ms(now - START_BACK),
                    seen: Vec::new(),
                },
            });
        };
        let from_ms = after.at.max(unix_ms(now - KEEP));
        let from = OffsetDateTime::from_unix_timestamp_nanos(i128::from(from_ms) * 1_000_000)
            .map_err(|err| StoreError::Invalid(format!("feed cursor {from_ms}: {err}")))?;
        let seen: HashSet<Uuid> = after.seen.iter().copied().collect();
        // Enough rows for a page of fresh ones past those already returned, and one more to
        // tell whether the page is full.
        let (rows, more) = self.changes_from(from, limit + seen.len() + 1).await?;
        let fresh: Vec<&ChangeRow> = rows.iter().filter(|row| !seen.contains(&row.1)).collect();
        let taken = &fresh[..fresh.len().min(limit)];
        // A full page resumes at its last change; otherwise the next read starts `OVERLAP`
        // back (never before where this one did).
        let at = match taken.last() {
            Some(last) if taken.len() < fresh.len() || more => unix_ms(last.0),
            _ => start.max(after.at),
        };
        // What one poll costs the database: the rows it read, against those it returns.
        tracing::debug!(
            read = rows.len(),
            returned = taken.len(),
            "read the authentication change feed"
        );
        let returned: HashSet<Uuid> = taken.iter().map(|row| row.1).collect();
        let changes = taken
            .iter()
            .map(|row| {
                Ok(FedChange {
                    change: change_of(row)?,
                    here: row.2 == self.origin,
                })
            })
            .collect::<Result<_, StoreError>>()?;
        Ok(AuthChanges {
            changes,
            next: FeedCursor {
                at,
                seen: rows
                    .iter()
                    .filter(|row| {
                        unix_ms(row.0) >= at && (seen.contains(&row.1) || returned.contains(&row.1))
                    })
                    .map(|row| row.1)
                    .collect(),
            },
        })
    }

    async fn forget_before(&self, _before: OffsetDateTime) -> Result<u64, StoreError> {
        // The rows' TTL forgets them.
        Ok(0)
    }
}
