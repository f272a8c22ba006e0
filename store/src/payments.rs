//! Store trait of payment-provider bookkeeping: which provider order belongs to which of our
//! orders, who is opening one, which provider events were already applied, and the refunds owed
//! until their provider confirms them.

use std::time::Duration;

use async_trait::async_trait;
use time::OffsetDateTime;
use tomato_domain::OrderId;

use crate::{Page, StoreError};

/// Money owed back to a customer, kept until the provider confirms it went back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refund {
    pub order_id: OrderId,
    /// The provider payment to return: `None` for the payment that paid the order (found when
    /// the refund is sent), `Some` for a second payment of an order already paid.
    pub payment: Option<String>,
    /// Minor units.
    pub amount: i64,
    pub created_at: OffsetDateTime,
    /// Calls to the provider that failed so far.
    pub attempts: u32,
    pub next_attempt_at: OffsetDateTime,
    pub last_error: Option<String>,
}

impl Refund {
    /// A refund owed from `now`, first tried at once.
    pub fn owed(
        order_id: OrderId,
        payment: Option<String>,
        amount: i64,
        now: OffsetDateTime,
    ) -> Self {
        Self {
            order_id,
            payment,
            amount,
            created_at: now,
            attempts: 0,
            next_attempt_at: now,
            last_error: None,
        }
    }

    /// The key column form of [`Refund::payment`] (empty for the order's own payment).
    pub fn payment_key(&self) -> &str {
        self.payment.as_deref().unwrap_or_default()
    }
}

/// Provider orders and provider events.
#[async_trait]
pub trait PaymentStore: Send + Sync {
    /// Remembers that `provider_order` (at `provider`) pays for `order`. Linking the same pair
    /// twice is harmless; linking a provider order to another order is a conflict.
    async fn link(
        &self,
        provider: &str,
        provider_order: &str,
        order: OrderId,
    ) -> Result<(), StoreError>;

    /// The provider order created for `order`, if any: the first linked, whichever other was
    /// linked after it (a payment on another is not the order's, and is owed back).
    async fn provider_order(
        &self,
        provider: &str,
        order: OrderId,
    ) -> Result<Option<String>, StoreError>;

    /// Our order that `provider_order` pays for, if any.
    async fn order_of(
        &self,
        provider: &str,
        provider_order: &str,
    ) -> Result<Option<OrderId>, StoreError>;

    /// Remembers the provider's payment id of `provider_order` (what refunds need) unless one
    /// is remembered already, and answers the one remembered: the first payment of a provider
    /// order pays for it, and a different answer means a second payment (owed back).
    async fn set_payment(
        &self,
        provider: &str,
        provider_order: &str,
        payment: &str,
    ) -> Result<String, StoreError>;

    /// The provider's payment id for `order`, once known.
    async fn payment_of(
        &self,
        provider: &str,
        order: OrderId,
    ) -> Result<Option<String>, StoreError>;

    /// Records a provider event as handled (call it once its effect is stored); true the first
    /// time, false for a repeat.
    async fn first_time(&self, provider: &str, event: &str) -> Result<bool, StoreError>;

    /// Whether a provider event was recorded by [`PaymentStore::first_time`].
    async fn handled(&self, provider: &str, event: &str) -> Result<bool, StoreError>;

    /// Claims the opening of `order`'s provider order at `provider`: true for the one caller
    /// that should ask the provider now, false while another caller's claim is younger than
    /// `ttl` (a claim older than that is taken over: its holder died or gave up).
    async fn claim_opening(
        &self,
        provider: &str,
        order: OrderId,
        ttl: Duration,
    ) -> Result<bool, StoreError>;

    /// Records a refund as owed. Owing the same (order, payment) again changes nothing.
    async fn owe_refund(&self, refund: &Refund) -> Result<(), StoreError>;

    /// The refunds still owed, oldest first.
    async fn refunds_owed(
        &self,
        limit: usize,
        cursor: Option<String>,
    ) -> Result<Page<Refund>, StoreError>;

    /// Stores a failed attempt of `refund` (its `attempts`, `next_attempt_at`, `last_error`).
    async fn refund_attempted(&self, refund: &Refund) -> Result<(), StoreError>;

    /// Forgets a refund the provider confirmed (or that turned out not to be owed).
    async fn refund_settled(&self, order: OrderId, payment: Option<&str>)
    -> Result<(), StoreError>;
}

/// The cursor of a page of refunds: the last one's creation instant and key.
pub fn refund_cursor(refund: &Refund) -> String {
    format!(
        "{}:{}:{}",
        refund.created_at.unix_timestamp_nanos() / 1_000_000,
        refund.order_id,
        refund.payment_key()
    )
}

/// Parses [`refund_cursor`]: (Unix milliseconds, order id, payment key).
pub fn parse_refund_cursor(cursor: &str) -> Result<(i64, String, String), StoreError> {
    let invalid = || StoreError::Invalid("cursor is not a cursor of this list".into());
    let mut parts = cursor.splitn(3, ':');
    let millis = parts
        .next()
        .and_then(|m| m.parse().ok())
        .ok_or_else(invalid)?;
    let order: OrderId = parts
        .next()
        .and_then(|o| o.parse().ok())
        .ok_or_else(invalid)?;
    let payment = parts.next().ok_or_else(invalid)?;
    Ok((millis, order.to_string(), payment.to_owned()))
}
