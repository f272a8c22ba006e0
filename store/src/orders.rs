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
    /// Set (assignment) or clear (delivery) this rider's current order.
    pub rider_order: Option<(RiderId, Option<OrderId>)>,
}

/// Orders. Every write is the whole order as its actor holds it: the actor is the only writer of
/// an order, so there is nothing to merge.
#[async_trait]
pub trait OrderStore: Send + Sync {
    /// Stores a new order. A customer holds at most one unpaid order: a second one while the
    /// first is `placed`/`pending` is a conflict (`unpaid_order_exists`).
    async fn create(&self, order: &Order) -> Result<(), StoreError>;

    async fn get(&self, id: OrderId) -> Result<Option<Order>, StoreError>;

    /// Persists a transition, and its effects in the same transaction.
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

    /// Every order not yet delivered, cancelled or expired: what a starting node must resume.
    async fn open(&self) -> Result<Vec<Order>, StoreError>;
}

/// A response remembered for an `Idempotency-Key`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SavedResponse {
    /// Hash of the request body the key was first used with.
    pub request_hash: String,
    pub status: u16,
    pub body: String,
}

/// Responses of idempotent requests, scoped to a user, a route and the client's key.
#[async_trait]
pub trait IdempotencyStore: Send + Sync {
    async fn get(
        &self,
        user: UserId,
        route: &str,
        key: &str,
    ) -> Result<Option<SavedResponse>, StoreError>;

    /// Remembers a response unless one is already saved for the key; returns whichever is
    /// saved now, so of two racing requests both answer with the first.
    async fn put(
        &self,
        user: UserId,
        route: &str,
        key: &str,
        response: SavedResponse,
    ) -> Result<SavedResponse, StoreError>;

    /// Forgets responses saved before `before`; returns how many went.
    async fn purge(&self, before: OffsetDateTime) -> Result<u64, StoreError>;
}
