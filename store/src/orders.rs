//! Store traits of orders and of idempotent requests.

use async_trait::async_trait;
use time::OffsetDateTime;
use tomato_domain::{Order, OrderId, OrderStatus, RestaurantId, RiderId, UserId};

use crate::StoreError;

/// A page of a newest-first list.
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Pass back to get the next page; `None` at the end.
    pub next_cursor: Option<String>,
}

impl<T> Page<T> {
    /// The page of a read that fetched one item more than `limit` to learn whether more
    /// follow: the extra item is dropped, and the cursor names the page's last item.
    pub fn from_one_extra(
        mut items: Vec<T>,
        limit: usize,
        cursor_of: impl Fn(&T) -> String,
    ) -> Self {
        let next_cursor = if items.len() > limit {
            items.truncate(limit);
            items.last().map(cursor_of)
        } else {
            None
        };
        Self { items, next_cursor }
    }
}

/// Which of a restaurant's orders to list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RestaurantOrderFilter {
    /// Only orders in this status.
    pub status: Option<OrderStatus>,
}

/// What else a transition changes, in the same transaction as the order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SaveEffects {
    /// Empty this user's cart (payment succeeded).
    pub clear_cart_of: Option<UserId>,
    /// Make the rider busy with the order (assignment) or free again (delivery).
    pub rider_order: Option<RiderOrder>,
    /// The order's payment is owed back (it moved to `refund_pending`): record the refund
    /// ([`crate::Refund`]) with the order, so no crash can keep the money.
    pub owe_refund: bool,
    /// The epoch under which the writer runs the order's shard ([`OrderStore::take_shard`]):
    /// the save is refused with [`StoreError::Fenced`] once a later epoch has taken the shard.
    /// `None` for a writer outside any shard (tools, tests), which only the version fences.
    pub epoch: Option<u64>,
}

/// A shard as a node starting it takes it from the store: the epoch it now runs under, and its
/// open orders, each already fenced against the shard's earlier epochs.
#[derive(Debug, Clone, PartialEq)]
pub struct ShardTaken {
    pub epoch: u64,
    pub open: Vec<Order>,
}

/// A change to a rider's current order, made with the order's transition. Both are conditional,
/// so a rider never holds two orders whatever races: taking fails with
/// [`StoreError::RiderBusy`] (and the whole save with it) unless the rider holds nothing or
/// this order already; releasing clears only this order, never one taken since.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RiderOrder {
    Take { rider: RiderId, order: OrderId },
    Release { rider: RiderId, order: OrderId },
}

/// Orders. Every write is the whole order as its actor holds it: the actor is the only writer of
/// an order, so there is nothing to merge. Two fences keep out a writer that is no longer the
/// only one: the version (a copy that is stale), and the shard's epoch (a node that has lost
/// the shard, with a save in flight or a timer that fires late, once another node has taken
/// it: its copy may be current, but it may no longer write).
#[async_trait]
pub trait OrderStore: Send + Sync {
    /// Stores a new order. A customer holds at most one unpaid order: a second one while the
    /// first is `placed`/`pending` is a conflict (`unpaid_order_exists`).
    async fn create(&self, order: &Order) -> Result<(), StoreError>;

    async fn get(&self, id: OrderId) -> Result<Option<Order>, StoreError>;

    /// Persists a transition, and its effects in the same transaction, if the stored order is
    /// still at `order.version - 1` (the version the transition started from) and no later
    /// epoch than `effects.epoch` has taken its shard. Otherwise nothing is written:
    /// [`StoreError::Fenced`] when a later epoch has, [`StoreError::Stale`] when the stored
    /// version differs,
    /// [`StoreError::NotFound`] when there is no such order, [`StoreError::RiderBusy`] when
    /// the effects would give a busy rider a second order.
    async fn save(&self, order: &Order, effects: SaveEffects) -> Result<(), StoreError>;

    /// A customer's orders, newest first.
    async fn by_customer(
        &self,
        user: UserId,
        limit: usize,
        cursor: Option<String>,
    ) -> Result<Page<Order>, StoreError>;

    /// A restaurant's orders whose payment succeeded, newest first.
    async fn by_restaurant(
        &self,
        restaurant: RestaurantId,
        filter: RestaurantOrderFilter,
        limit: usize,
        cursor: Option<String>,
    ) -> Result<Page<Order>, StoreError>;

    /// Takes `shard` for a node starting it: raises the shard's epoch (every call answers a
    /// higher one, whatever else was lost), fences every open order of the shard with it, so
    /// no save under an earlier epoch lands any more, and answers the epoch with those orders
    /// (not yet delivered, cancelled or expired: what the node must resume), as they are once
    /// fenced. Served by an index of open orders by shard, not a scan.
    async fn take_shard(&self, shard: u32) -> Result<ShardTaken, StoreError>;
}

/// A response remembered for an `Idempotency-Key`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SavedResponse {
    /// Hash of the request body the key was first used with.
    pub request_hash: String,
    pub status: u16,
    pub body: String,
}

/// How long a claim on a key holds while its request runs: past it, a caller that died or froze
/// half-way is taken to have given up and another may run the request (longer than a request
/// may take: a provider call and a few store calls).
pub const IDEMPOTENCY_CLAIM: std::time::Duration = std::time::Duration::from_secs(60);

/// What a caller finds when it claims a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyClaim {
    /// The key is this caller's: run the request, then settle or release the key.
    Ours,
    /// The key has its answer already.
    Answered(SavedResponse),
    /// Another caller holds the key and is running the request (made with the body hashed to
    /// `request_hash`).
    Running { request_hash: String },
}

/// Responses of idempotent requests, scoped to a user, a route and the client's key. A key is
/// claimed before its request runs (on any node: the claim is in the store), so two callers
/// with one key never both run it; the runner then settles the key with its answer.
#[async_trait]
pub trait IdempotencyStore: Send + Sync {
    /// The answer saved for the key, if it has one (a key being run has none yet).
    async fn get(
        &self,
        user: UserId,
        route: &str,
        key: &str,
    ) -> Result<Option<SavedResponse>, StoreError>;

    /// Claims the key for `holder` (unique per call) unless it has an answer or another
    /// caller's claim younger than [`IDEMPOTENCY_CLAIM`].
    async fn claim(
        &self,
        user: UserId,
        route: &str,
        key: &str,
        request_hash: &str,
        holder: &str,
    ) -> Result<KeyClaim, StoreError>;

    /// Saves `response` as the key's answer if `holder` still holds it (or nobody does);
    /// returns the answer saved now: another's, if `holder`'s claim lapsed and another
    /// caller's answer came first.
    async fn settle(
        &self,
        user: UserId,
        route: &str,
        key: &str,
        holder: &str,
        response: SavedResponse,
    ) -> Result<SavedResponse, StoreError>;

    /// Gives the key up without an answer (the request failed on the server's side and may be
    /// tried again), if `holder` still holds it.
    async fn release(
        &self,
        user: UserId,
        route: &str,
        key: &str,
        holder: &str,
    ) -> Result<(), StoreError>;

    /// Forgets responses saved before `before`; returns how many went.
    async fn purge(&self, before: OffsetDateTime) -> Result<u64, StoreError>;
}
