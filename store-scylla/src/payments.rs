//! Payment-provider bookkeeping over CQL: a provider order is claimed for one order with
//! `IF NOT EXISTS` (a second claim for another order is refused), found from our order through
//! a newest-first lookup, and each provider event id is recorded once (`IF NOT EXISTS`). The
//! first payment of a provider order is kept with `IF payment_id = null`. Opening a provider
//! order is claimed with `IF NOT EXISTS` and a TTL. A refund owed is its row by (order,
//! payment) plus a lookup oldest first, the lookup written first and believed only when the row
//! carries the same creation instant.

use std::time::Duration;

use async_trait::async_trait;
use time::OffsetDateTime;
use tomato_domain::OrderId;
use tomato_store::{
    Conflict, Page, PaymentStore, Refund, StoreError, parse_refund_cursor, refund_cursor,
};

use crate::{ScyllaStore, parse_col};
use tomato_domain::millis::to_ms;

/// The one partition of the owed-refunds lookup.
const OWED: i32 = 0;
/// How old a lookup without its row must be before a read removes it (younger ones may belong
/// to a refund being written right now).
const ORPHAN_AFTER: time::Duration = time::Duration::minutes(1);

/// A refund row's columns after its key.
type RefundRow = (i64, OffsetDateTime, i32, OffsetDateTime, Option<String>);

impl ScyllaStore {
    /// Provider orders created for `order` at `provider`, first linked first (two linked in
    /// one millisecond by their ids, as every reader sorts them).
    async fn provider_orders(
        &self,
        provider: &str,
        order: OrderId,
    ) -> Result<Vec<String>, StoreError> {
        let mut rows: Vec<(OffsetDateTime, String)> = self
            .db
            .rows(
                cql!("SELECT created_at, provider_order FROM payment_orders_by_order WHERE provider = ? AND order_id = ?"),
                (provider, order.to_string()),
            )
            .await?;
        rows.sort();
        Ok(rows.into_iter().map(|(_, id)| id).collect())
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
                cql!("INSERT INTO payment_orders_by_order (provider, order_id, created_at, provider_order)
                 VALUES (?, ?, ?, ?)"),
                (
                    provider,
                    order.to_string(),
                    to_ms(time::OffsetDateTime::now_utc()),
                    provider_order,
                ),
            )
            .await?;
        if self
            .db
            .applied(
                cql!("INSERT INTO payment_orders (provider, provider_order, order_id) VALUES (?, ?, ?)
                 IF NOT EXISTS"),
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
        // The first linked: one linked after it, by a caller slower than the opening claim, is
        // not the order's.
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
                cql!(
                    "SELECT order_id FROM payment_orders WHERE provider = ? AND provider_order = ?"
                ),
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
    ) -> Result<String, StoreError> {
        let known: Option<(Option<String>,)> = self
            .db
            .row(
                cql!("SELECT payment_id FROM payment_orders WHERE provider = ? AND provider_order = ?"),
                (provider, provider_order),
            )
            .await?;
        if let Some((Some(paying),)) = known {
            // Kept once, never changed: no transaction needed to read it back.
            return Ok(paying);
        }
        self.db
            .applied(
                cql!("UPDATE payment_orders SET payment_id = ? WHERE provider = ? AND provider_order = ?
                 IF payment_id = null"),
                (payment, provider, provider_order),
            )
            .await?;
        // At SERIAL: the transaction that won, even one still in flight.
        let rows: Vec<(Option<String>, String)> = self
            .db
            .serial_rows(
                cql!("SELECT payment_id, order_id FROM payment_orders WHERE provider = ? AND provider_order = ?"),
                (provider, provider_order),
            )
            .await?;
        rows.into_iter()
            .next()
            .and_then(|(payment, _)| payment)
            .ok_or(StoreError::NotFound)
    }

    async fn payment_of(
        &self,
        provider: &str,
        order: OrderId,
    ) -> Result<Option<String>, StoreError> {
        // Only the order's own provider order (the first linked) pays for it: a payment on
        // another is owed back by itself.
        for candidate in self.provider_orders(provider, order).await? {
            let row: Option<(Option<String>, Option<String>)> = self
                .db
                .row(
                    cql!(
                        "SELECT order_id, payment_id FROM payment_orders
                     WHERE provider = ? AND provider_order = ?"
                    ),
                    (provider, candidate.as_str()),
                )
                .await?;
            if let Some((Some(linked), payment)) = row
                && linked == order.to_string()
            {
                return Ok(payment);
            }
        }
        Ok(None)
    }

    async fn first_time(&self, provider: &str, event: &str) -> Result<bool, StoreError> {
        self.db
            .applied(
                cql!(
                    "INSERT INTO payment_events (provider, event_id, received_at) VALUES (?, ?, ?)
                 IF NOT EXISTS"
                ),
                (provider, event, to_ms(time::OffsetDateTime::now_utc())),
            )
            .await
    }

    async fn handled(&self, provider: &str, event: &str) -> Result<bool, StoreError> {
        let row: Option<(String,)> = self
            .db
            .row(
                cql!("SELECT event_id FROM payment_events WHERE provider = ? AND event_id = ?"),
                (provider, event),
            )
            .await?;
        Ok(row.is_some())
    }

    async fn claim_opening(
        &self,
        provider: &str,
        order: OrderId,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let ttl = i32::try_from(ttl.as_secs().max(1)).unwrap_or(i32::MAX);
        self.db
            .applied(
                cql!(
                    "INSERT INTO payment_openings (provider, order_id, claimed_at) VALUES (?, ?, ?)
                 IF NOT EXISTS USING TTL ?"
                ),
                (
                    provider,
                    order.to_string(),
                    to_ms(OffsetDateTime::now_utc()),
                    ttl,
                ),
            )
            .await
    }

    async fn owe_refund(&self, refund: &Refund) -> Result<(), StoreError> {
        let created = to_ms(refund.created_at);
        let (order, payment) = (refund.order_id.to_string(), refund.payment_key());
        self.db
            .run(
                cql!("INSERT INTO refunds_owed (bucket, created_at, order_id, payment) VALUES (?, ?, ?, ?)"),
                (OWED, created, order.as_str(), payment),
            )
            .await?;
        let attempts = i32::try_from(refund.attempts).unwrap_or(i32::MAX);
        let claimed = self
            .db
            .applied(
                cql!("INSERT INTO refunds (order_id, payment, amount, created_at, attempts, next_attempt_at, last_error)
                 VALUES (?, ?, ?, ?, ?, ?, ?) IF NOT EXISTS"),
                (
                    order.as_str(),
                    payment,
                    refund.amount,
                    created,
                    attempts,
                    to_ms(refund.next_attempt_at),
                    refund.last_error.as_deref(),
                ),
            )
            .await?;
        if !claimed {
            // Owed already, under its first creation instant: this lookup points at nothing.
            self.db
                .run(
                    cql!("DELETE FROM refunds_owed WHERE bucket = ? AND created_at = ? AND order_id = ? AND payment = ?"),
                    (OWED, created, order.as_str(), payment),
                )
                .await?;
        }
        Ok(())
    }

    async fn refunds_owed(
        &self,
        limit: usize,
        cursor: Option<String>,
    ) -> Result<Page<Refund>, StoreError> {
        let (mut millis_after, mut order_after, mut payment_after) = match cursor.as_deref() {
            Some(cursor) => parse_refund_cursor(cursor)?,
            None => (i64::MIN, String::new(), String::new()),
        };
        let batch = i32::try_from(limit.saturating_add(1)).unwrap_or(i32::MAX);
        let now = OffsetDateTime::now_utc();
        let mut items = Vec::new();
        loop {
            let after =
                OffsetDateTime::from_unix_timestamp_nanos(i128::from(millis_after) * 1_000_000)
                    .unwrap_or(OffsetDateTime::UNIX_EPOCH);
            let lookups: Vec<(OffsetDateTime, String, String)> = self
                .db
                .rows(
                    cql!(
                        "SELECT created_at, order_id, payment FROM refunds_owed
                     WHERE bucket = ? AND (created_at, order_id, payment) > (?, ?, ?) LIMIT ?"
                    ),
                    (
                        OWED,
                        after,
                        order_after.as_str(),
                        payment_after.as_str(),
                        batch,
                    ),
                )
                .await?;
            let exhausted = lookups.len() < usize::try_from(batch).unwrap_or(usize::MAX);
            for (created, order, payment) in lookups {
                let row: Option<RefundRow> = self
                    .db
                    .row(
                        cql!(
                            "SELECT amount, created_at, attempts, next_attempt_at, last_error
                         FROM refunds WHERE order_id = ? AND payment = ?"
                        ),
                        (order.as_str(), payment.as_str()),
                    )
                    .await?;
                match row {
                    Some((amount, row_created, attempts, next_attempt_at, last_error))
                        if row_created == created =>
                    {
                        items.push(Refund {
                            order_id: parse_col("order id", &order, str::parse)?,
                            payment: (!payment.is_empty()).then(|| payment.clone()),
                            amount,
                            created_at: created,
                            attempts: u32::try_from(attempts).unwrap_or_default(),
                            next_attempt_at,
                            last_error,
                        });
                    }
                    _ if now - created > ORPHAN_AFTER => {
                        self.db
                            .run(
                                cql!("DELETE FROM refunds_owed WHERE bucket = ? AND created_at = ? AND order_id = ? AND payment = ?"),
                                (OWED, created, order.as_str(), payment.as_str()),
                            )
                            .await?;
                    }
                    _ => {}
                }
                millis_after = tomato_domain::millis::unix_ms(created);
                order_after = order;
                payment_after = payment;
                if items.len() > limit {
                    break;
                }
            }
            if items.len() > limit || exhausted {
                break;
            }
        }
        Ok(Page::from_one_extra(items, limit, refund_cursor))
    }

    async fn refund_attempted(&self, refund: &Refund) -> Result<(), StoreError> {
        self.db
            .applied(
                cql!(
                    "UPDATE refunds SET attempts = ?, next_attempt_at = ?, last_error = ?
                 WHERE order_id = ? AND payment = ? IF EXISTS"
                ),
                (
                    i32::try_from(refund.attempts).unwrap_or(i32::MAX),
                    to_ms(refund.next_attempt_at),
                    refund.last_error.as_deref(),
                    refund.order_id.to_string(),
                    refund.payment_key(),
                ),
            )
            .await
            .map(drop)
    }

    async fn refund_settled(
        &self,
        order: OrderId,
        payment: Option<&str>,
    ) -> Result<(), StoreError> {
        let (order, payment) = (order.to_string(), payment.unwrap_or_default());
        let row: Option<(OffsetDateTime,)> = self
            .db
            .row(
                cql!("SELECT created_at FROM refunds WHERE order_id = ? AND payment = ?"),
                (order.as_str(), payment),
            )
            .await?;
        let Some((created,)) = row else {
            return Ok(());
        };
        // The row first: a lookup left behind points at nothing and is tidied by reads.
        self.db
            .applied(
                cql!("DELETE FROM refunds WHERE order_id = ? AND payment = ? IF EXISTS"),
                (order.as_str(), payment),
            )
            .await?;
        self.db
            .run(
                cql!("DELETE FROM refunds_owed WHERE bucket = ? AND created_at = ? AND order_id = ? AND payment = ?"),
                (OWED, created, order.as_str(), payment),
            )
            .await
            .map(drop)
    }
}
