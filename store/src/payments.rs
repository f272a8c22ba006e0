//! Store trait of payment-provider bookkeeping: which provider order belongs to which of our
//! orders, and which provider events were already applied.

use async_trait::async_trait;
use tomato_domain::OrderId;

use crate::StoreError;

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

    /// The provider order created for `order`, if any.
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

    /// Remembers the provider's payment id of `provider_order` (what refunds need).
    async fn set_payment(
        &self,
        provider: &str,
        provider_order: &str,
        payment: &str,
    ) -> Result<(), StoreError>;

    /// The provider's payment id for `order`, once known.
    async fn payment_of(
        &self,
        provider: &str,
        order: OrderId,
    ) -> Result<Option<String>, StoreError>;

    /// Records a provider event; true the first time, false for a repeat.
    async fn first_time(&self, provider: &str, event: &str) -> Result<bool, StoreError>;
}
