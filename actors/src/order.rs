//! The order actor.
//!
//! actix does not catch panics: a panic in a handler kills the actor's task (and, with it,
//! every message queued for it). So the part of a handler that decides (the status machine, and
//! the fault hook used to prove this design) runs inside `catch_unwind`. A caught panic answers
//! the caller with [`OrderError::Crashed`] and then stops the actor; its `Supervisor` restarts it
//! on the same address, and the restarted actor reloads the order from the store, the only truth
//! about it, before it takes the next message. Because every transition is persisted before it
//! is applied in memory, the reloaded state is exactly what callers were told, and nothing the
//! crashed command decided was applied, so it is safe to send it again.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use prometheus_client::metrics::counter::Counter;
use time::OffsetDateTime;
use tomato_domain::{
    ErrorKind, Order, OrderCommand, OrderId, OrderStatus, PaymentStatus, TransitionError,
};
use tomato_store::{OrderStore, StoreError};

/// Commands waiting for one order; a full mailbox makes senders wait.
const MAILBOX: usize = 64;

/// Why a command to an order failed.
#[derive(Debug, thiserror::Error)]
pub enum OrderError {
    /// The status machine does not allow it.
    #[error(transparent)]
    Transition(#[from] TransitionError),
    /// No such order.
    #[error("order not found")]
    NotFound,
    /// Persisting (or loading) failed; nothing changed.
    #[error("order store: {0}")]
    Store(#[from] StoreError),
    /// The actor failed while deciding; it is being rebuilt from the store and nothing changed.
    #[error("the order's actor crashed and is being restarted")]
    Crashed,
    /// The actor did not answer in time.
    #[error("the order's actor is unavailable")]
    Unavailable,
}

impl OrderError {
    /// The domain error kind.
    pub fn kind(&self) -> ErrorKind {
        match self {
            OrderError::Transition(_) => ErrorKind::Conflict,
            OrderError::NotFound => ErrorKind::NotFound,
            OrderError::Store(err) => err.kind(),
            OrderError::Crashed => ErrorKind::Internal,
            OrderError::Unavailable => ErrorKind::Unavailable,
        }
    }
}

/// Told about every change once it is persisted: the realtime gateway implements it, so the
/// actor needs to know nothing about sockets.
pub trait OrderEvents: Send + Sync + 'static {
    fn changed(&self, before: &Order, after: &Order);
}

/// Called with the order's id once it reached a terminal status: its actor is no longer needed
/// and whoever keeps its address should let go of it.
pub type Passivate = Arc<dyn Fn(OrderId) + Send + Sync>;

/// One order, alive.
pub struct OrderActor {
    order: Order,
    store: Arc<dyn OrderStore>,
    passivate: Passivate,
    /// Counts restarts of order actors, for `/metrics`.
    restarts: Counter,
    events: Arc<dyn OrderEvents>,
    /// Set by `restarting`: the in-memory order must be replaced by the stored one.
    reload: bool,
    /// Fault injection: the next command panics while deciding.
    fault_armed: bool,
    expiry: Option<SpawnHandle>,
}

impl std::fmt::Debug for OrderActor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OrderActor")
            .field("order", &self.order.id)
            .field("status", &self.order.status)
            .finish_non_exhaustive()
    }
}

impl OrderActor {
    /// An actor for `order` as stored.
    pub fn new(
        order: Order,
        store: Arc<dyn OrderStore>,
        passivate: Passivate,
        restarts: Counter,
        events: Arc<dyn OrderEvents>,
    ) -> Self {
        Self {
            order,
            store,
            passivate,
            restarts,
            events,
            reload: false,
            fault_armed: false,
            expiry: None,
        }
    }

    /// Starts (or restarts) the payment deadline from the stored `expiresAt`, so a restart of
    /// the node resumes the timer rather than starting it over.
    fn arm_expiry(&mut self, ctx: &mut Context<Self>) {
        if let Some(handle) = self.expiry.take() {
            ctx.cancel_future(handle);
        }
        let waiting = self.order.status == OrderStatus::Placed
            && self.order.payment_status == PaymentStatus::Pending;
        if let (true, Some(deadline)) = (waiting, self.order.expires_at) {
            let left = (deadline - OffsetDateTime::now_utc()).max(time::Duration::ZERO);
            let left = Duration::try_from(left).unwrap_or(Duration::ZERO);
            self.expiry = Some(ctx.run_later(left, |_, ctx| {
                ctx.notify(Apply {
                    command: OrderCommand::Expire,
                });
            }));
        }
    }

    fn decide(&mut self, command: OrderCommand) -> Result<Option<Order>, TransitionError> {
        if std::mem::take(&mut self.fault_armed) {
            panic!("injected fault in order {}", self.order.id);
        }
        self.order.apply(command, OffsetDateTime::now_utc())
    }

    fn applied(&mut self, ctx: &mut Context<Self>) {
        let still_waiting = self.order.payment_status == PaymentStatus::Pending
            && self.order.status == OrderStatus::Placed;
        if !still_waiting && let Some(handle) = self.expiry.take() {
            ctx.cancel_future(handle);
        }
        if self.order.status.is_terminal() {
            // Nothing can happen to it any more: let go, and the actor ends with its last
            // address.
            (self.passivate)(self.order.id);
        }
    }
}

impl Actor for OrderActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(MAILBOX);
        if !std::mem::take(&mut self.reload) {
            self.arm_expiry(ctx);
            return;
        }
        let store = Arc::clone(&self.store);
        let id = self.order.id;
        // `wait` holds the mailbox until the order is reloaded: no command sees stale state.
        ctx.wait(
            async move { store.get(id).await }
                .into_actor(self)
                .map(|loaded, act, ctx| {
                    match loaded {
                        Ok(Some(order)) => act.order = order,
                        // The in-memory copy is what was last persisted, so it stays right.
                        Ok(None) => tracing::error!(order_id = %act.order.id, "order vanished from the store"),
                        Err(err) => tracing::warn!(order_id = %act.order.id, error = %err, "reload failed, keeping the last persisted state"),
                    }
                    act.arm_expiry(ctx);
                }),
        );
    }
}

impl Supervised for OrderActor {
    fn restarting(&mut self, _ctx: &mut Context<Self>) {
        tracing::warn!(order_id = %self.order.id, "order actor restarting");
        self.restarts.inc();
        self.reload = true;
        self.fault_armed = false;
        // Timers die with the old context.
        self.expiry = None;
    }
}

/// Apply a command to the order; answers with the order as it is afterwards.
#[derive(Debug, Message)]
#[rtype(result = "Result<Order, OrderError>")]
pub struct Apply {
    pub command: OrderCommand,
}

impl Handler<Apply> for OrderActor {
    type Result = AtomicResponse<Self, Result<Order, OrderError>>;

    fn handle(&mut self, msg: Apply, _ctx: &mut Context<Self>) -> Self::Result {
        let answer = |result| AtomicResponse::new(Box::pin(fut::ready(result)));
        if self.order.status.is_terminal() {
            // Started only to answer (a refusal, or a repeated payment): let go again.
            (self.passivate)(self.order.id);
        }
        let next = match catch_unwind(AssertUnwindSafe(|| self.decide(msg.command))) {
            Err(_) => {
                tracing::error!(order_id = %self.order.id, command = %msg.command, "order actor panicked; restarting from the store");
                // Stop from inside the answering future: the answer is sent in the same poll,
                // and being a `wait` future nothing else runs in between, so no other command
                // can reach the broken state and no answer is lost with the old context.
                return AtomicResponse::new(Box::pin(fut::ready(()).map(
                    |(), _act, ctx: &mut Context<Self>| {
                        ctx.stop();
                        Err(OrderError::Crashed)
                    },
                )));
            }
            Ok(Err(refused)) => return answer(Err(refused.into())),
            Ok(Ok(None)) => return answer(Ok(self.order.clone())),
            Ok(Ok(Some(next))) => next,
        };
        // Payment success empties the customer's cart in the same write.
        let clear_cart = (self.order.payment_status == PaymentStatus::Pending
            && next.payment_status == PaymentStatus::Paid)
            .then_some(next.user_id);
        let store = Arc::clone(&self.store);
        let to_save = next.clone();
        // Atomic: no other command runs until this one is persisted and applied.
        AtomicResponse::new(Box::pin(
            async move { store.save(&to_save, clear_cart).await }
                .into_actor(self)
                .map(move |saved, act, ctx| {
                    saved?;
                    tracing::info!(order_id = %next.id, status = %next.status, payment = %next.payment_status, "order moved");
                    let before = std::mem::replace(&mut act.order, next);
                    act.events.changed(&before, &act.order);
                    act.applied(ctx);
                    Ok(act.order.clone())
                }),
        ))
    }
}

/// Fault injection: the next command this actor receives panics while deciding. For resilience
/// drills and the supervision tests; reachable only where the node enables fault injection.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct ArmFault;

impl Handler<ArmFault> for OrderActor {
    type Result = ();

    fn handle(&mut self, _: ArmFault, _: &mut Context<Self>) {
        self.fault_armed = true;
    }
}
