//! Payment-provider bookkeeping in SQLite, refunds owed included (an order's own refund is
//! written in the transaction that moves it to `refund_pending`, through [`owe`]).

use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, Row, params};
use time::OffsetDateTime;
use tomato_domain::OrderId;

use crate::{EmbeddedStore, from_millis, parse_col, to_millis};
use tomato_store::{
    Conflict, Page, PaymentStore, Refund, StoreError, parse_refund_cursor, refund_cursor,
};

/// Records `refund` unless the same (order, payment) is owed already.
pub(crate) fn owe(conn: &Connection, refund: &Refund) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO refunds (order_id, payment, amount, created_at, attempts, next_attempt_at, last_error)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
         ON CONFLICT (order_id, payment) DO NOTHING",
        params![
            refund.order_id.to_string(),
            refund.payment_key(),
            refund.amount,
            to_millis(refund.created_at),
            refund.attempts,
            to_millis(refund.next_attempt_at),
            refund.last_error
        ],
    )?;
    Ok(())
}

fn refund_of(row: &Row<'_>) -> Result<Refund, StoreError> {
    let order: String = row.get(0)?;
    let payment: String = row.get(1)?;
    Ok(Refund {
        order_id: parse_col("order id", &order, str::parse)?,
        payment: (!payment.is_empty()).then_some(payment),
        amount: row.get(2)?,
        created_at: from_millis(row.get(3)?)?,
        attempts: row.get(4)?,
        next_attempt_at: from_millis(row.get(5)?)?,
        last_error: row.get(6)?,
    })
}

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
                         WHERE provider = ?1 AND order_id = ?2
                         ORDER BY created_at, provider_order LIMIT 1",
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
    ) -> Result<String, StoreError> {
        let (provider, provider_order, payment) = (
            provider.to_owned(),
            provider_order.to_owned(),
            payment.to_owned(),
        );
        self.db
            .write(move |conn| {
                conn.execute(
                    "UPDATE payment_orders SET payment_id = COALESCE(payment_id, ?3)
                     WHERE provider = ?1 AND provider_order = ?2",
                    params![provider, provider_order, payment],
                )?;
                let recorded: Option<Option<String>> = conn
                    .query_row(
                        "SELECT payment_id FROM payment_orders
                         WHERE provider = ?1 AND provider_order = ?2",
                        params![provider, provider_order],
                        |row| row.get(0),
                    )
                    .optional()?;
                recorded.flatten().ok_or(StoreError::NotFound)
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
                         WHERE provider = ?1 AND order_id = ?2
                         ORDER BY created_at, provider_order LIMIT 1",
                    )?
                    .query_row(params![provider, order.to_string()], |row| row.get(0))
                    .optional()?
                    .flatten())
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

    async fn handled(&self, provider: &str, event: &str) -> Result<bool, StoreError> {
        let (provider, event) = (provider.to_owned(), event.to_owned());
        self.db
            .read(move |conn| {
                Ok(conn
                    .prepare_cached(
                        "SELECT 1 FROM payment_events WHERE provider = ?1 AND event_id = ?2",
                    )?
                    .exists(params![provider, event])?)
            })
            .await
    }

    async fn claim_opening(
        &self,
        provider: &str,
        order: OrderId,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let provider = provider.to_owned();
        let now = OffsetDateTime::now_utc();
        let cutoff = to_millis(now - ttl);
        self.db
            .write(move |conn| {
                let claimed = conn.execute(
                    "INSERT INTO payment_openings (provider, order_id, claimed_at) VALUES (?1, ?2, ?3)
                     ON CONFLICT (provider, order_id) DO UPDATE SET claimed_at = excluded.claimed_at
                     WHERE claimed_at < ?4",
                    params![provider, order.to_string(), to_millis(now), cutoff],
                )?;
                Ok(claimed == 1)
            })
            .await
    }

    async fn owe_refund(&self, refund: &Refund) -> Result<(), StoreError> {
        let refund = refund.clone();
        self.db.write(move |conn| owe(conn, &refund)).await
    }

    async fn refunds_owed(
        &self,
        limit: usize,
        cursor: Option<String>,
    ) -> Result<Page<Refund>, StoreError> {
        let after = cursor.as_deref().map(parse_refund_cursor).transpose()?;
        let (millis, order, payment) = after.unwrap_or((i64::MIN, String::new(), String::new()));
        let fetch = i64::try_from(limit).unwrap_or(i64::MAX).saturating_add(1);
        self.db
            .read(move |conn| {
                let mut statement = conn.prepare_cached(
                    "SELECT order_id, payment, amount, created_at, attempts, next_attempt_at, last_error
                     FROM refunds WHERE (created_at, order_id, payment) > (?1, ?2, ?3)
                     ORDER BY created_at, order_id, payment LIMIT ?4",
                )?;
                let mut rows = statement.query(params![millis, order, payment, fetch])?;
                let mut items = Vec::new();
                while let Some(row) = rows.next()? {
                    items.push(refund_of(row)?);
                }
                Ok(Page::from_one_extra(items, limit, refund_cursor))
            })
            .await
    }

    async fn refund_attempted(&self, refund: &Refund) -> Result<(), StoreError> {
        let refund = refund.clone();
        self.db
            .write(move |conn| {
                conn.execute(
                    "UPDATE refunds SET attempts = ?3, next_attempt_at = ?4, last_error = ?5
                     WHERE order_id = ?1 AND payment = ?2",
                    params![
                        refund.order_id.to_string(),
                        refund.payment_key(),
                        refund.attempts,
                        to_millis(refund.next_attempt_at),
                        refund.last_error
                    ],
                )?;
                Ok(())
            })
            .await
    }

    async fn refund_settled(
        &self,
        order: OrderId,
        payment: Option<&str>,
    ) -> Result<(), StoreError> {
        let payment = payment.unwrap_or_default().to_owned();
        self.db
            .write(move |conn| {
                conn.execute(
                    "DELETE FROM refunds WHERE order_id = ?1 AND payment = ?2",
                    params![order.to_string(), payment],
                )?;
                Ok(())
            })
            .await
    }
}
