//! Store trait of the counts and sums behind the admin statistics.

use std::collections::BTreeMap;

use async_trait::async_trait;
use time::OffsetDateTime;
use tomato_domain::{Money, OrderStatus};

use crate::StoreError;

/// How many of each kind of account there are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Totals {
    pub users: u64,
    pub restaurants: u64,
    pub riders: u64,
}

/// Orders at a glance.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OrderSummary {
    /// Every order, by its status now.
    pub by_status: BTreeMap<OrderStatus, u64>,
    /// Total amount of the orders placed since the given instant whose payment stands (paid,
    /// not refunded).
    pub revenue: Money,
    /// Platform fees of the same orders.
    pub platform_fees: Money,
}

/// Counts and sums for the admin statistics.
#[async_trait]
pub trait StatsStore: Send + Sync {
    async fn totals(&self) -> Result<Totals, StoreError>;

    /// Orders by status, and the money of the paid orders placed since `since`.
    async fn orders_since(&self, since: OffsetDateTime) -> Result<OrderSummary, StoreError>;
}
