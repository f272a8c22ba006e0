//! The feed of changes that authentication caches must hear of: a user's row changed (role,
//! role version, profile), a token was revoked. Every backend records one in the same write as
//! the change (or, without transactions, right after it), whoever made it: a node, or `tomato
//! admin` in another process. A node follows the feed so it can keep what it read for minutes
//! instead of re-reading it every few seconds. Each change says whether it was recorded through
//! the store that reads it, so a node can tell its own changes from everyone else's.

use async_trait::async_trait;
use time::OffsetDateTime;
use tomato_domain::UserId;
use uuid::Uuid;

use crate::StoreError;

/// How far before the present a new reader's cursor starts.
pub const START_BACK: time::Duration = time::Duration::seconds(10);

/// One change, as a cache applies it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthChange {
    /// The user's row changed: what was read of it is stale.
    UserChanged(UserId),
    /// The token with this id is revoked until it expires.
    Revoked {
        jti: Uuid,
        expires_at: OffsetDateTime,
    },
}

/// Where a reader of the feed stands: made by the backend and handed back to it unchanged.
/// `at` is a position in the backend's order of changes; `seen` lists changes at or after it
/// already returned, for a backend whose reads overlap (see `tomato-store-scylla`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FeedCursor {
    pub at: i64,
    pub seen: Vec<Uuid>,
}

/// A change as the feed returns it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FedChange {
    pub change: AuthChange,
    /// Recorded through this same store (this process): a node applies its own changes to its
    /// cache as it makes them, so it skips these and hears only of changes made elsewhere.
    pub here: bool,
}

/// Changes after a cursor, and the cursor to ask from next.
#[derive(Debug, Clone, Default)]
pub struct AuthChanges {
    pub changes: Vec<FedChange>,
    pub next: FeedCursor,
}

/// The change feed.
#[async_trait]
pub trait ChangeFeed: Send + Sync {
    /// The changes recorded after `after`, oldest first, at most `limit` of them (ask again
    /// from `next` while a page comes back full). `None` starts a reader: no changes, and a
    /// cursor `START_BACK` before the present, so that its first read returns the changes of
    /// those seconds again, among them any that a read of the store it made while starting
    /// raced with.
    async fn auth_changes(
        &self,
        after: Option<FeedCursor>,
        limit: usize,
    ) -> Result<AuthChanges, StoreError>;

    /// Forgets changes recorded before `before` (a backend whose rows expire by themselves
    /// has nothing to do); returns how many went.
    async fn forget_before(&self, before: OffsetDateTime) -> Result<u64, StoreError>;
}
