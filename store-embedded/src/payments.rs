//! Payment-provider bookkeeping in SQLite.

use async_trait::async_trait;
use rusqlite::{OptionalExtension, params};
use time::OffsetDateTime;
use tomato_domain::OrderId;

use crate::{EmbeddedStore, parse_col, to_millis};
use tomato_store::{Conflict, PaymentStore, StoreError};

#[async_trait]
impl PaymentStore for EmbeddedStore {
    async fn link(
        &self,
        provider: &str,
        provider_order: &str,
        order: OrderId,
    ) -> Result<(), StoreError> {
        let (provider, provider_order) = (provider.to_owned(), provider_order.to_owned());
        self.db
            .write(move |conn| {
                conn.execute(
                    "INSERT INTO payment_orders (provider, provider_order, order_id, created_at)
                     VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (provider, provider_order) DO NOTHING",
                    params![
                        provider,
                        provider_order,
                        order.to_string(),
                        to_millis(OffsetDateTime::now_utc())
                    ],
                )?;
                let linked: String = conn.query_row(
                    "SELECT order_id FROM payment_orders WHERE provider = ?1 AND provider_order = ?2",
                    params![provider, provider_order],
                    |row| row.get(0),
                )?;
                if linked != order.to_string() {
                    return Err(StoreError::Conflict(Conflict::ProviderOrderTaken));
                }
                Ok(())
            })
            .await
    }

    async fn provider_order(
        &self,
        provider: &str,
        order: OrderId,
    ) -> Result<Option<String>, StoreError> {
        let provider = provider.to_owned();
        self.db
            .read(move |conn| {
                Ok(conn
                    .prepare_cached(
                        "SELECT provider_order FROM payment_orders
                         WHERE provider = ?1 AND order_id = ?2 ORDER BY created_at DESC LIMIT 1",
                    )?
                    .query_row(params![provider, order.to_string()], |row| row.get(0))
                    .optional()?)
            })
            .await
    }

    async fn order_of(
        &self,
        provider: &str,
        provider_order: &str,
    ) -> Result<Option<OrderId>, StoreError> {
        let (provider, provider_order) = (provider.to_owned(), provider_order.to_owned());
        self.db
            .read(move |conn| {
                let id: Option<String> = conn
                    .prepare_cached(
                        "SELECT order_id FROM payment_orders
                         WHERE provider = ?1 AND provider_order = ?2",
                    )?
                    .query_row(params![provider, provider_order], |row| row.get(0))
                    .optional()?;
                id.map(|id| parse_col("order id", &id, str::parse))
                    .transpose()
            })
            .await
    }

    async fn set_payment(
        &self,
        provider: &str,
        provider_order: &str,
        payment: &str,
    ) -> Result<(), StoreError> {
        let (provider, provider_order, payment) = (
            provider.to_owned(),
            provider_order.to_owned(),
            payment.to_owned(),
        );
        self.db
            .write(move |conn| {
                conn.execute(
                    "UPDATE payment_orders SET payment_id = ?3
                     WHERE provider = ?1 AND provider_order = ?2",
                    params![provider, provider_order, payment],
                )?;
                Ok(())
            })
            .await
    }

    async fn payment_of(
        &self,
        provider: &str,
        order: OrderId,
    ) -> Result<Option<String>, StoreError> {
        let provider = provider.to_owned();
        self.db
            .read(move |conn| {
                Ok(conn
                    .prepare_cached(
                        "SELECT payment_id FROM payment_orders
                         WHERE provider = ?1 AND order_id = ?2 AND payment_id IS NOT NULL
                         ORDER BY created_at DESC LIMIT 1",
                    )?
                    .query_row(params![provider, order.to_string()], |row| row.get(0))
                    .optional()?)
            })
            .await
    }

    async fn first_time(&self, provider: &str, event: &str) -> Result<bool, StoreError> {
        let (provider, event) = (provider.to_owned(), event.to_owned());
        self.db
            .write(move |conn| {
                let inserted = conn.execute(
                    "INSERT INTO payment_events (provider, event_id, received_at) VALUES (?1, ?2, ?3)
                     ON CONFLICT (provider, event_id) DO NOTHING",
                    params![provider, event, to_millis(OffsetDateTime::now_utc())],
                )?;
                Ok(inserted == 1)
            })
            .await
    }
}
