//! Persistence for tomato. The traits here speak domain types, never SQL or CQL, so every backend
//! (the embedded SQLite file in `tomato-store-embedded`, ScyllaDB at scale) implements the same
//! contract and passes the same [`conformance`] suite. Nothing in this crate knows about HTTP,
//! actors or any backend.

use std::sync::Arc;

use async_trait::async_trait;
use time::OffsetDateTime;
use tomato_domain::{CartRule, Email, ErrorKind, PersonName, Role, User, UserId};
use uuid::Uuid;

mod changes;
pub mod conformance;
mod marketplace;
mod orders;
mod payments;
mod riders;
mod stats;

pub use changes::{AuthChange, AuthChanges, ChangeFeed, FedChange, FeedCursor, START_BACK};
pub use marketplace::{AddressStore, CartStore, MenuStore, RestaurantStore};
pub use orders::{
    IDEMPOTENCY_CLAIM, IdempotencyStore, KeyClaim, OrderStore, Page, RestaurantOrderFilter,
    RiderOrder, SaveEffects, SavedResponse, ShardTaken,
};
pub use payments::{PaymentStore, Refund, parse_refund_cursor, refund_cursor};
pub use riders::{PositionSnapshot, RiderStore};
pub use stats::{OrderSummary, StatsStore, Totals};

/// Why a store call failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The record asked for does not exist.
    #[error("not found")]
    NotFound,
    /// An argument the caller passed through from a client is not valid (a cursor, say).
    #[error("{0}")]
    Invalid(String),
    /// The write would break a uniqueness or state rule; nothing was written.
    #[error(transparent)]
    Conflict(#[from] Conflict),
    /// A compare-and-set found the record changed since the caller's copy was read (an order
    /// saved over another version): the caller's copy is stale, and nothing was written.
    #[error("the record changed since it was read")]
    Stale,
    /// A later epoch has taken the shard of the order (another node runs it now): this writer
    /// may no longer write it, and nothing was written.
    #[error("the order's shard was taken by a later epoch")]
    Fenced,
    /// The rider already carries another order, so it cannot be assigned this one; nothing was
    /// written.
    #[error("the rider already carries another order")]
    RiderBusy,
    /// The backend cannot be reached or is too busy right now; retrying later may work.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The store was shut down; no more calls are served.
    #[error("store is closed")]
    Closed,
    /// A stored record could not be turned back into a domain value.
    #[error("corrupt record: {0}")]
    Corrupt(String),
    /// Any other backend failure.
    #[error("backend failure")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl StoreError {
    /// The stable machine code clients see for this failure.
    pub fn code(&self) -> &'static str {
        match self {
            StoreError::NotFound => "not_found",
            StoreError::Invalid(_) => "invalid_input",
            StoreError::Conflict(rule) => rule.code(),
            StoreError::Stale => "conflict",
            StoreError::Fenced => "shard_moving",
            StoreError::RiderBusy => "rider_busy",
            StoreError::Unavailable(_) | StoreError::Closed => "unavailable",
            StoreError::Corrupt(_) | StoreError::Backend(_) => "internal",
        }
    }

    /// The domain error kind this maps to.
    pub fn kind(&self) -> ErrorKind {
        match self {
            StoreError::NotFound => ErrorKind::NotFound,
            StoreError::Invalid(_) => ErrorKind::Invalid,
            StoreError::Conflict(_) | StoreError::Stale | StoreError::RiderBusy => {
                ErrorKind::Conflict
            }
            StoreError::Unavailable(_) | StoreError::Closed | StoreError::Fenced => {
                ErrorKind::Unavailable
            }
            StoreError::Corrupt(_) | StoreError::Backend(_) => ErrorKind::Internal,
        }
    }
}

/// The rules a store enforces on a write, each a refusal with a stable code; backends name the
/// rule, and the words clients read are written here once, not in every backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Conflict {
    #[error("this seller already has a restaurant")]
    RestaurantExists,
    #[error("this user already has a rider profile")]
    RiderExists,
    #[error("you already have an unpaid order; pay or cancel it first")]
    UnpaidOrderExists,
    #[error("this provider order pays for another order")]
    ProviderOrderTaken,
    /// A cart rule of the domain (`Cart::quantity_after_adding`).
    #[error(transparent)]
    Cart(#[from] CartRule),
}

impl Conflict {
    /// The stable machine code clients see.
    pub fn code(self) -> &'static str {
        match self {
            Conflict::RestaurantExists => "restaurant_exists",
            Conflict::RiderExists => "rider_exists",
            Conflict::UnpaidOrderExists => "unpaid_order_exists",
            Conflict::ProviderOrderTaken => "provider_order_taken",
            Conflict::Cart(rule) => rule.code(),
        }
    }
}

impl From<CartRule> for StoreError {
    fn from(rule: CartRule) -> Self {
        StoreError::Conflict(Conflict::Cart(rule))
    }
}

/// SQLite's errors as store errors, for the embedded backend's `?`. It lives here because the
/// orphan rule allows it nowhere else; only the backend turns the `sqlite` feature on, so no
/// other crate compiles SQLite through this one.
#[cfg(feature = "sqlite")]
impl From<rusqlite::Error> for StoreError {
    fn from(err: rusqlite::Error) -> Self {
        match err.sqlite_error_code() {
            Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) => {
                StoreError::Unavailable(format!("database is busy ({err})"))
            }
            _ => StoreError::Backend(Box::new(err)),
        }
    }
}

/// A sign-in by an identity provider (Google, or the development login).
#[derive(Debug, Clone)]
pub struct SignIn {
    pub email: Email,
    pub name: PersonName,
    /// Profile picture; `None` keeps whatever the user had.
    pub image: Option<String>,
    /// The e-mail is on the configured admin list: the user gets role admin. An admin made so
    /// by the list (not by [`UserStore::grant_admin`]) who signs in while off it is a customer
    /// again.
    pub admin: bool,
}

/// User accounts.
#[async_trait]
pub trait UserStore: Send + Sync {
    /// Creates the user on first sign-in (role customer, or admin when flagged), or refreshes the
    /// name and picture of the existing one with this e-mail.
    async fn sign_in(&self, sign_in: SignIn) -> Result<User, StoreError>;

    /// The user with this id, if any.
    async fn get(&self, id: UserId) -> Result<Option<User>, StoreError>;

    /// Those of these users that exist, in any order: how the authentication cache refreshes
    /// the users it serves, in one batch rather than a read per request.
    async fn get_many(&self, ids: &[UserId]) -> Result<Vec<User>, StoreError>;

    /// The user with this (normalised) e-mail, if any.
    async fn find_by_email(&self, email: &Email) -> Result<Option<User>, StoreError>;

    /// Switches the user's role. A real change bumps `role_version`, which invalidates every
    /// token minted before it; asking for the current role changes nothing.
    async fn set_role(&self, id: UserId, role: Role) -> Result<User, StoreError>;

    /// Makes the user with this e-mail an admin, creating the account if it does not exist yet
    /// (its name is then the e-mail's local part until the first sign-in).
    async fn grant_admin(&self, email: &Email) -> Result<User, StoreError>;
}

/// Revoked access tokens, kept until they would have expired anyway.
#[async_trait]
pub trait TokenStore: Send + Sync {
    /// Revokes the token with this id. Revoking twice is harmless.
    async fn revoke(&self, jti: Uuid, expires_at: OffsetDateTime) -> Result<(), StoreError>;

    /// Whether the token with this id was revoked.
    async fn is_revoked(&self, jti: Uuid) -> Result<bool, StoreError>;

    /// Which of these tokens were revoked, in any order (the cache's batch refresh).
    async fn revoked_among(&self, jtis: &[Uuid]) -> Result<Vec<Uuid>, StoreError>;

    /// Forgets revocations of tokens that expired before `now`; returns how many went.
    async fn purge_expired(&self, now: OffsetDateTime) -> Result<u64, StoreError>;
}

/// The backend as a whole: reachability and an orderly shutdown.
#[async_trait]
pub trait Backend: Send + Sync {
    /// Short name for logs and health reports (`embedded`, `scylla`).
    fn name(&self) -> &'static str;

    /// Cheap round trip proving the backend answers.
    async fn ping(&self) -> Result<(), StoreError>;

    /// Whether what expires (token revocations, idempotent responses, the change feed) goes by
    /// itself, by a time to live, so that a node's periodic purge would only repeat it with
    /// deletes (tombstones, in a CQL database). The purges still work when called.
    fn expires_by_itself(&self) -> bool {
        false
    }

    /// Finishes every acknowledged write and releases the backend; later calls fail with
    /// [`StoreError::Closed`].
    async fn close(&self) -> Result<(), StoreError>;
}

/// Cheap, cloneable handles to every store of one backend.
#[derive(Clone)]
pub struct Stores {
    pub users: Arc<dyn UserStore>,
    pub tokens: Arc<dyn TokenStore>,
    pub restaurants: Arc<dyn RestaurantStore>,
    pub menu: Arc<dyn MenuStore>,
    pub carts: Arc<dyn CartStore>,
    pub addresses: Arc<dyn AddressStore>,
    pub orders: Arc<dyn OrderStore>,
    pub idempotency: Arc<dyn IdempotencyStore>,
    pub riders: Arc<dyn RiderStore>,
    pub stats: Arc<dyn StatsStore>,
    pub payments: Arc<dyn PaymentStore>,
    pub changes: Arc<dyn ChangeFeed>,
    pub backend: Arc<dyn Backend>,
}

impl Stores {
    /// Every handle over one value that implements every store trait, as each backend does.
    pub fn over<S>(store: Arc<S>) -> Self
    where
        S: UserStore
            + TokenStore
            + RestaurantStore
            + MenuStore
            + CartStore
            + AddressStore
            + OrderStore
            + IdempotencyStore
            + RiderStore
            + StatsStore
            + PaymentStore
            + ChangeFeed
            + Backend
            + 'static,
    {
        Self {
            users: store.clone(),
            tokens: store.clone(),
            restaurants: store.clone(),
            menu: store.clone(),
            carts: store.clone(),
            addresses: store.clone(),
            orders: store.clone(),
            idempotency: store.clone(),
            riders: store.clone(),
            stats: store.clone(),
            payments: store.clone(),
            changes: store.clone(),
            backend: store,
        }
    }
}

impl std::fmt::Debug for Stores {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stores")
            .field("backend", &self.backend.name())
            .finish_non_exhaustive()
    }
}
