//! Payment-provider bookkeeping over CQL: a provider order is claimed for one order with
//! `IF NOT EXISTS` (a second claim for another order is refused), found from our order through
//! a newest-first lookup, and each provider event id is recorded once (`IF NOT EXISTS`).

use async_trait::async_trait;
use tomato_domain::OrderId;
use tomato_store::{Conflict, PaymentStore, StoreError};

use crate::orders::millis;
use crate::{ScyllaStore, parse_col};

impl ScyllaStore {
    /// Provider orders created for `order` at `provider`, newest first.
    async fn provider_orders(
        &self,
        provider: &str,
        order: OrderId,
    ) -> Result<Vec<String>, StoreError> {
        let rows: Vec<(String,)> = self
            .db
            .rows(
                "SELECT provider_order FROM payment_orders_by_order WHERE provider = ? AND order_id = ?",
                (provider, order.to_string()),
            )
            .await?;
        Ok(rows.into_iter().map(|(id,)| id).collect())
    }
}

#[async_trait]
impl PaymentStore for ScyllaStore {
    async fn link(
        &self,
        provider: &str,
        provider_order: &str,
        order: OrderId,
    ) -> Result<(), StoreError> {
        // The lookup first: it is only believed when the claim below names the same order.
        self.db
            .run(
                "INSERT INTO payment_orders_by_order (provider, order_id, created_at, provider_order)
                 VALUES (?, ?, ?, ?)",
                (
                    provider,
                    order.to_string(),
                    millis(time::OffsetDateTime::now_utc()),
                    provider_order,
                ),
            )
            .await?;
        if self
            .db
            .applied(
                "INSERT INTO payment_orders (provider, provider_order, order_id) VALUES (?, ?, ?)
                 IF NOT EXISTS",
                (provider, provider_order, order.to_string()),
            )
            .await?
        {
            return Ok(());
        }
        match self.order_of(provider, provider_order).await? {
            Some(linked) if linked == order => Ok(()),
            _ => Err(StoreError::Conflict(Conflict::ProviderOrderTaken)),
        }
    }

    async fn provider_order(
        &self,
        provider: &str,
        order: OrderId,
    ) -> Result<Option<String>, StoreError> {
        for candidate in self.provider_orders(provider, order).await? {
            if self.order_of(provider, &candidate).await? == Some(order) {
                return Ok(Some(candidate));
            }
        }
        Ok(None)
    }

    async fn order_of(
        &self,
        provider: &str,
        provider_order: &str,
    ) -> Result<Option<OrderId>, StoreError> {
        let row: Option<(Option<String>,)> = self
            .db
            .row(
                "SELECT order_id FROM payment_orders WHERE provider = ? AND provider_order = ?",
                (provider, provider_order),
            )
            .await?;
        row.and_then(|(order,)| order)
            .map(|order| parse_col("order id", &order, str::parse))
            .transpose()
    }

    async fn set_payment(
        &self,
        provider: &str,
        provider_order: &str,
        payment: &str,
    ) -> Result<(), StoreError> {
        self.db
            .run(
                "UPDATE payment_orders SET payment_id = ? WHERE provider = ? AND provider_order = ?",
                (payment, provider, provider_order),
            )
            .await
            .map(drop)
    }

    async fn payment_of(
        &self,
        provider: &str,
        order: OrderId,
    ) -> Result<Option<String>, StoreError> {
        for candidate in self.provider_orders(provider, order).await? {
            let row: Option<(Option<String>, Option<String>)> = self
                .db
                .row(
                    "SELECT order_id, payment_id FROM payment_orders
                     WHERE provider = ? AND provider_order = ?",
                    (provider, candidate.as_str()),
                )
                .await?;
            if let Some((Some(linked), Some(payment))) = row
                && linked == order.to_string()
            {
                return Ok(Some(payment));
            }
        }
        Ok(None)
    }

    async fn first_time(&self, provider: &str, event: &str) -> Result<bool, StoreError> {
        self.db
            .applied(
                "INSERT INTO payment_events (provider, event_id, received_at) VALUES (?, ?, ?)
                 IF NOT EXISTS",
                (provider, event, millis(time::OffsetDateTime::now_utc())),
            )
            .await
    }
}
