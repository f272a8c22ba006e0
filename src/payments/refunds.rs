//! Refunds: when a paid order is cancelled (payment `refund_pending`), the money goes back
//! through the provider that took it, and the order then becomes `refunded`. The call happens
//! after the cancellation is persisted, off the order's actor; a failed call leaves the order
//! `refund_pending` and is logged for an operator (no automatic retry yet).

use std::sync::{Arc, OnceLock, Weak};

use tomato_actors::OrderEvents;
use tomato_domain::{Order, OrderCommand, PaymentMethod, PaymentStatus};
use tomato_shards::ShardRouter;
use tomato_store::Stores;

use super::{Providers, razorpay, stripe};
use crate::realtime::RealtimeOrderEvents;

/// Sends refunds to providers and settles them on the order.
pub struct Refunds {
    providers: Arc<Providers>,
    stores: Stores,
    /// Set once the order directory exists (it is built after the events that need this).
    pub orders: OnceLock<Weak<ShardRouter>>,
}

impl std::fmt::Debug for Refunds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Refunds").finish_non_exhaustive()
    }
}

impl Refunds {
    pub fn new(providers: Arc<Providers>, stores: Stores) -> Self {
        Self {
            providers,
            stores,
            orders: OnceLock::new(),
        }
    }

    async fn send(&self, order: &Order) -> Result<(), String> {
        match order.payment_method {
            PaymentMethod::Test => Ok(()),
            PaymentMethod::Razorpay => {
                let provider = self.providers.razorpay.as_ref().ok_or("razorpay is off")?;
                let payment = self
                    .stores
                    .payments
                    .payment_of(razorpay::NAME, order.id)
                    .await
                    .map_err(|err| err.to_string())?
                    .ok_or("no razorpay payment id is known for the order")?;
                provider
                    .refund(&payment, order.total_amount.minor())
                    .await
                    .map_err(|err| err.to_string())
            }
            PaymentMethod::Stripe => {
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
        }
    }

    async fn run(&self, order: Order) {
        if let Err(err) = self.send(&order).await {
            tracing::error!(order_id = %order.id, error = %err, "refund failed; the order stays refund_pending");
            return;
        }
        let Some(orders) = self.orders.get().and_then(Weak::upgrade) else {
            return;
        };
        match orders
            .apply((&order).into(), OrderCommand::SettleRefund)
            .await
        {
            Ok(_) => tracing::info!(order_id = %order.id, "refund settled"),
            Err(err) => {
                tracing::error!(order_id = %order.id, error = %err, "refund sent but not settled")
            }
        }
    }
}

/// The node's listener of order changes: realtime events, and refunds.
#[derive(Debug)]
pub struct NodeOrderEvents {
    pub realtime: RealtimeOrderEvents,
    pub refunds: Arc<Refunds>,
}

impl OrderEvents for NodeOrderEvents {
    fn changed(&self, before: &Order, after: &Order) {
        self.realtime.changed(before, after);
        if before.payment_status != PaymentStatus::RefundPending
            && after.payment_status == PaymentStatus::RefundPending
        {
            let (refunds, order) = (Arc::clone(&self.refunds), after.clone());
            tokio::spawn(async move { refunds.run(order).await });
        }
    }
}
