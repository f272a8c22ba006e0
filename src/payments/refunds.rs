//! Refunds: money owed back goes back through the provider that took it, and is retried until
//! the provider confirms it.
//!
//! What is owed lives in the store, never only in memory: the save that moves an order to
//! `refund_pending` (a paid order cancelled, or a payment that arrived after the order expired
//! or was cancelled) records the refund with it, and a second payment of an order already paid
//! is recorded before the provider's call is answered. A worker on each node sends the refunds
//! of the orders whose shard runs there (so in a cluster one node sends each), settles the
//! order (`refunded`) once the provider confirms, and on failure waits with exponential backoff
//! (kept in the store, so a restart picks the refund up where it was).

use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use time::OffsetDateTime;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tomato_actors::OrderEvents;
use tomato_domain::{Order, OrderCommand, PaymentMethod, PaymentStatus};
use tomato_shards::{Route, ShardId, ShardRouter};
use tomato_store::{Refund, StoreError, Stores};

use super::providers::Providers;
use super::{razorpay, stripe};
use crate::realtime::events::RealtimeOrderEvents;

/// How often the worker looks for refunds due when nothing wakes it.
const TICK: Duration = Duration::from_secs(1);
/// The first wait after a failed attempt; it doubles per attempt up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(600);
/// A refund row whose order never reached `refund_pending` belongs to a save that lost (its
/// compare-and-set failed after the row was written); after this long it is dropped.
const UNCLAIMED_AFTER: time::Duration = time::Duration::minutes(1);
/// Refunds read per pass.
const PAGE: usize = 200;

/// The wait before attempt `attempts + 1`, after `attempts` failures.
pub fn backoff(attempts: u32) -> Duration {
    let doubled = FIRST_BACKOFF.saturating_mul(1 << attempts.saturating_sub(1).min(16));
    doubled.min(MAX_BACKOFF)
}

/// Refund counters for `/metrics`.
#[derive(Debug, Clone, Default)]
pub struct RefundMetrics {
    /// Calls to providers by outcome (`confirmed`, `failed`).
    pub attempts: Family<Vec<(&'static str, &'static str)>, Counter>,
    /// Refunds owed and not confirmed, as of the worker's last pass.
    pub pending: Gauge,
}

impl RefundMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        registry.register(
            "refund_attempts",
            "Refund calls to payment providers, by outcome",
            metrics.attempts.clone(),
        );
        registry.register(
            "refunds_pending",
            "Refunds owed that no provider has confirmed yet",
            metrics.pending.clone(),
        );
        metrics
    }

    fn count(&self, outcome: &'static str) {
        self.attempts
            .get_or_create(&vec![("outcome", outcome)])
            .inc();
    }
}

/// Sends refunds to providers and settles them on the order.
pub struct Refunds {
    providers: Arc<Providers>,
    stores: Stores,
    metrics: RefundMetrics,
    /// Rung when something becomes owed, so the worker does not wait for its tick.
    wake: Notify,
    /// Set once the order directory exists (it is built after the events that need this).
    pub orders: OnceLock<Weak<ShardRouter>>,
}

impl std::fmt::Debug for Refunds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Refunds").finish_non_exhaustive()
    }
}

/// What one attempt came to.
enum Outcome {
    /// Confirmed by the provider (or not owed after all): forget it.
    Settled,
    /// Not this node's to send now, or not due yet: look again later, no attempt counted.
    Later,
    /// The provider (or the way to it) failed.
    Failed(String),
}

impl Refunds {
    pub fn new(providers: Arc<Providers>, stores: Stores, metrics: RefundMetrics) -> Self {
        Self {
            providers,
            stores,
            metrics,
            wake: Notify::new(),
            orders: OnceLock::new(),
        }
    }

    /// Runs the worker until the task is aborted.
    pub fn spawn(self: &Arc<Self>) -> JoinHandle<()> {
        let refunds = Arc::clone(self);
        tokio::spawn(async move {
            loop {
                if let Err(err) = refunds.pass().await {
                    tracing::warn!(error = %err, "refund pass failed; trying again");
                }
                tokio::select! {
                    () = tokio::time::sleep(TICK) => {}
                    () = refunds.wake.notified() => {}
                }
            }
        })
    }

    /// Attempts every refund that is due.
    async fn pass(&self) -> Result<(), StoreError> {
        let mut cursor = None;
        let mut pending = 0_i64;
        loop {
            let page = self.stores.payments.refunds_owed(PAGE, cursor).await?;
            pending += i64::try_from(page.items.len()).unwrap_or(i64::MAX);
            let now = OffsetDateTime::now_utc();
            for refund in page.items {
                if refund.next_attempt_at <= now {
                    self.attempt(refund).await?;
                }
            }
            cursor = page.next_cursor;
            if cursor.is_none() {
                break;
            }
        }
        self.metrics.pending.set(pending);
        Ok(())
    }

    async fn attempt(&self, mut refund: Refund) -> Result<(), StoreError> {
        let Some(orders) = self.orders.get().and_then(Weak::upgrade) else {
            return Ok(());
        };
        let Some(order) = self.stores.orders.get(refund.order_id).await? else {
            tracing::error!(order_id = %refund.order_id, "a refund is owed for an order that does not exist");
            return Ok(());
        };
        if orders.route(ShardId(order.shard)) != Route::Local {
            // The node running the order's shard sends it.
            return Ok(());
        }
        match self.settle(&orders, &refund, &order).await {
            Outcome::Settled => {
                self.stores
                    .payments
                    .refund_settled(refund.order_id, refund.payment.as_deref())
                    .await
            }
            Outcome::Later => Ok(()),
            Outcome::Failed(error) => {
                self.metrics.count("failed");
                refund.attempts = refund.attempts.saturating_add(1);
                let wait = backoff(refund.attempts);
                refund.next_attempt_at = OffsetDateTime::now_utc() + wait;
                tracing::warn!(order_id = %refund.order_id, attempts = refund.attempts, retry_in_s = wait.as_secs(), %error, "refund failed; it stays owed");
                refund.last_error = Some(error);
                self.stores.payments.refund_attempted(&refund).await
            }
        }
    }

    /// Sends `refund` if it is owed, and settles the order when it is the order's own payment.
    async fn settle(&self, orders: &ShardRouter, refund: &Refund, order: &Order) -> Outcome {
        if let Some(payment) = &refund.payment {
            // A second payment of a paid order: the order itself does not change.
            return match self.send_payment(order, payment, refund.amount).await {
                Ok(()) => {
                    self.metrics.count("confirmed");
                    tracing::info!(order_id = %order.id, payment, "second payment refunded");
                    Outcome::Settled
                }
                Err(err) => Outcome::Failed(err),
            };
        }
        match order.payment_status {
            PaymentStatus::Refunded => return Outcome::Settled,
            PaymentStatus::RefundPending => {}
            _ if OffsetDateTime::now_utc() - refund.created_at > UNCLAIMED_AFTER => {
                tracing::warn!(order_id = %order.id, payment = %order.payment_status, "a refund was recorded for a move that did not happen; dropped");
                return Outcome::Settled;
            }
            // The save that owes it may still be on its way.
            _ => return Outcome::Later,
        }
        if let Err(err) = self.send(order).await {
            return Outcome::Failed(err);
        }
        self.metrics.count("confirmed");
        match orders.apply(order.into(), OrderCommand::SettleRefund).await {
            Ok(_) => {
                tracing::info!(order_id = %order.id, "refund settled");
                Outcome::Settled
            }
            // Sent, not settled: the next attempt sends again, which the providers answer as
            // already refunded.
            Err(err) => Outcome::Failed(format!("refunded but not settled: {err}")),
        }
    }

    /// Returns the payment that paid `order`.
    async fn send(&self, order: &Order) -> Result<(), String> {
        match order.payment_method {
            PaymentMethod::Test => Ok(()),
            PaymentMethod::Razorpay => {
                let payment = self
                    .stores
                    .payments
                    .payment_of(razorpay::NAME, order.id)
                    .await
                    .map_err(|err| err.to_string())?
                    .ok_or("no razorpay payment id is known for the order")?;
                self.razorpay(&payment, order.total_amount.minor()).await
            }
            PaymentMethod::Stripe => self.stripe(order).await,
        }
    }

    /// Returns one named payment of `order`'s provider.
    async fn send_payment(&self, order: &Order, payment: &str, amount: i64) -> Result<(), String> {
        match order.payment_method {
            PaymentMethod::Test => Ok(()),
            PaymentMethod::Razorpay => self.razorpay(payment, amount).await,
            // One Checkout Session pays once: its payment is the order's.
            PaymentMethod::Stripe => self.stripe(order).await,
        }
    }

    async fn razorpay(&self, payment: &str, amount: i64) -> Result<(), String> {
        let provider = self.providers.razorpay.as_ref().ok_or("razorpay is off")?;
        provider
            .refund(payment, amount)
            .await
            .map_err(|err| err.to_string())
    }

    async fn stripe(&self, order: &Order) -> Result<(), String> {
        let provider = self.providers.stripe.as_ref().ok_or("stripe is off")?;
        let session = self
            .stores
            .payments
            .provider_order(stripe::NAME, order.id)
            .await
            .map_err(|err| err.to_string())?
            .ok_or("no stripe session is known for the order")?;
        provider
            .refund(&session)
            .await
            .map_err(|err| err.to_string())
    }

    /// Records a second payment of an already paid order as owed back, and wakes the worker.
    pub async fn owe_second_payment(&self, order: &Order, payment: &str) -> Result<(), StoreError> {
        tracing::warn!(order_id = %order.id, payment, "a second payment arrived for a paid order; refunding it");
        self.stores
            .payments
            .owe_refund(&Refund::owed(
                order.id,
                Some(payment.to_owned()),
                order.total_amount.minor(),
                OffsetDateTime::now_utc(),
            ))
            .await?;
        self.wake.notify_one();
        Ok(())
    }
}

/// The node's listener of order changes: realtime events, refunds, and the operations page's
/// book of open orders.
#[derive(Debug)]
pub struct NodeOrderEvents {
    pub realtime: RealtimeOrderEvents,
    pub refunds: Arc<Refunds>,
    pub ops: Arc<crate::ops::book::OpsBook>,
}

impl OrderEvents for NodeOrderEvents {
    fn holding(&self, order: &Order) {
        self.ops.holding(order);
    }

    fn changed(&self, before: &Order, after: &Order) {
        self.realtime.changed(before, after);
        if before.payment_status != PaymentStatus::RefundPending
            && after.payment_status == PaymentStatus::RefundPending
        {
            // The refund was stored with the order; the worker need not wait for its tick.
            self.refunds.wake.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_ten_minutes() {
        assert_eq!(backoff(1), Duration::from_secs(1));
        assert_eq!(backoff(2), Duration::from_secs(2));
        assert_eq!(backoff(5), Duration::from_secs(16));
        assert_eq!(backoff(20), MAX_BACKOFF);
        assert_eq!(backoff(u32::MAX), MAX_BACKOFF);
    }
}
