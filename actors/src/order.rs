//! The order actor: one per live order, the only writer of its order.
//!
//! actix does not catch panics: a panic in a handler kills the actor's task (and, with it,
//! every message queued for it). So the part of a handler that decides (the status machine, and
//! the fault hook used to prove this design) runs inside `catch_unwind`. A caught panic answers
//! the caller with [`OrderError::Crashed`] and then stops the actor; its `Supervisor` restarts it
//! on the same address, and the restarted actor reloads the order from the store, the only truth
//! about it, before it takes the next message. Because every transition is persisted before it
//! is applied in memory, the reloaded state is exactly what callers were told, and nothing the
//! crashed command decided was applied, so it is safe to send it again.
//!
//! Dispatch runs here too: an order that is `ready_for_rider` offers itself to riders in waves
//! (see [`crate::dispatch`]), and because the actor handles one message at a time, of many
//! riders accepting at once exactly one wins.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use prometheus_client::metrics::counter::Counter;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use tomato_domain::{
    ErrorKind, Order, OrderCommand, OrderId, OrderStatus, PaymentStatus, RiderId, TransitionError,
};
use tomato_store::{OrderStore, RiderOrder, SaveEffects, StoreError};

use crate::dispatch_port::{DispatchPolicy, DispatchPort, Dispatching};

/// Commands waiting for one order; a full mailbox makes senders wait.
const MAILBOX: usize = 64;

/// Why a command to an order failed. Serde, like the commands, so a reply can come back from
/// the node that owns the order; every variant has a closed kind and a stable code.
#[derive(Debug, Clone, PartialEq, thiserror::Error, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderError {
    /// The status machine does not allow it.
    #[error(transparent)]
    Transition(#[from] TransitionError),
    /// No such order.
    #[error("order not found")]
    NotFound,
    /// The rider holds no live offer for this order (never offered, expired or rejected).
    #[error("no live offer of this order is held by this rider")]
    OfferNotHeld,
    /// Another rider was assigned first.
    #[error("another rider already took this order")]
    AlreadyTaken,
    /// The rider already carries an order.
    #[error("the rider already carries an order")]
    RiderBusy,
    /// Persisting (or loading) failed; nothing changed.
    #[error("order store: {0}")]
    Store(StoreFault),
    /// The actor failed while deciding; it is being rebuilt from the store and nothing changed.
    #[error("the order's actor crashed and is being restarted")]
    Crashed,
    /// The actor did not answer in time.
    #[error("the order's actor is unavailable")]
    Unavailable,
    /// The order's shard is not served by this node now (being stopped, started, or owned by
    /// another node): nothing was done, and the caller may retry once ownership settles.
    #[error("the order's shard is moving; try again shortly")]
    NotOwner,
    /// The stored order moved on since this actor's copy (another writer holds the order): the
    /// actor reloaded it and nothing of the command was written.
    #[error("the order changed under this actor")]
    Stale,
}

/// A store failure as it travels in a reply: its kind, its code and what it said (for a
/// server-side kind, that is logged, never shown to clients).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[error("{message}")]
pub struct StoreFault {
    pub kind: ErrorKind,
    pub code: String,
    pub message: String,
}

impl From<StoreError> for StoreFault {
    fn from(err: StoreError) -> Self {
        let mut message = err.to_string();
        // A backend's own error sits under ours; keep its words for the log.
        let mut source = std::error::Error::source(&err);
        while let Some(cause) = source {
            message = format!("{message}: {cause}");
            source = cause.source();
        }
        StoreFault {
            kind: err.kind(),
            code: err.code().to_owned(),
            message,
        }
    }
}

impl From<StoreError> for OrderError {
    /// The store's typed refusals become the command's; any other failure travels as a fault.
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::Stale => OrderError::Stale,
            StoreError::Fenced => OrderError::NotOwner,
            StoreError::RiderBusy => OrderError::RiderBusy,
            StoreError::NotFound => OrderError::NotFound,
            other => OrderError::Store(other.into()),
        }
    }
}

impl OrderError {
    /// The domain error kind.
    pub fn kind(&self) -> ErrorKind {
        match self {
            OrderError::Transition(_)
            | OrderError::OfferNotHeld
            | OrderError::AlreadyTaken
            | OrderError::RiderBusy => ErrorKind::Conflict,
            OrderError::NotFound => ErrorKind::NotFound,
            OrderError::Store(fault) => fault.kind,
            OrderError::Crashed => ErrorKind::Internal,
            OrderError::Unavailable | OrderError::NotOwner | OrderError::Stale => {
                ErrorKind::Unavailable
            }
        }
    }

    /// The stable machine code clients see (docs/api.md), one per variant.
    pub fn code(&self) -> &str {
        match self {
            OrderError::Transition(_) => "invalid_transition",
            OrderError::NotFound => "not_found",
            OrderError::OfferNotHeld => "offer_not_held",
            OrderError::AlreadyTaken => "already_taken",
            OrderError::RiderBusy => "rider_busy",
            OrderError::Store(fault) => &fault.code,
            OrderError::Crashed => "internal",
            OrderError::Unavailable => "unavailable",
            OrderError::NotOwner | OrderError::Stale => "shard_moving",
        }
    }
}

/// Told about every change once it is persisted: the realtime gateway implements it, so the
/// actor needs to know nothing about sockets.
pub trait OrderEvents: Send + Sync + 'static {
    fn changed(&self, before: &Order, after: &Order);

    /// The order as its actor holds it now: when the actor starts (new, resumed with its shard,
    /// or rebuilt after a crash or a stale copy) and after every change. For views of what the
    /// node's actors hold (the operations page); nothing by default.
    fn holding(&self, _order: &Order) {}
}

/// What every order actor of a node shares: where orders persist, who hears of changes, how
/// dispatch reaches riders, and how finished actors are let go.
pub struct OrderEnv {
    pub store: Arc<dyn OrderStore>,
    pub events: Arc<dyn OrderEvents>,
    pub dispatch: Arc<dyn DispatchPort>,
    pub policy: DispatchPolicy,
    /// Counts restarts of order actors, for `/metrics`.
    pub restarts: Counter,
    /// Called with the order's id and shard once it is finished: whoever keeps its address
    /// lets go.
    pub passivate: Box<dyn Fn(OrderId, u32) + Send + Sync>,
}

impl std::fmt::Debug for OrderEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OrderEnv")
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

/// One order, alive.
pub struct OrderActor {
    order: Order,
    env: Arc<OrderEnv>,
    /// Set by `restarting`: the in-memory order must be replaced by the stored one.
    reload: bool,
    /// Fault injection: what goes wrong with the next command.
    fault_armed: Option<ArmFault>,
    expiry: Option<SpawnHandle>,
    pub(crate) dispatching: Option<Dispatching>,
    /// Its shard stopped here: timers are off and every command is refused with
    /// [`OrderError::NotOwner`] until the last address is dropped and the actor ends.
    retired: bool,
    /// The epoch under which this node took the order's shard: every save carries it, so once
    /// another node has taken the shard the store refuses this actor's writes (a save in
    /// flight when the lease was lost, a timer that fires late, an actor that missed its
    /// retirement), and the actor retires itself.
    epoch: u64,
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
    /// An actor for `order` as stored, on a shard taken under `epoch`.
    pub fn new(order: Order, env: Arc<OrderEnv>, epoch: u64) -> Self {
        Self {
            order,
            env,
            reload: false,
            fault_armed: None,
            expiry: None,
            dispatching: None,
            retired: false,
            epoch,
        }
    }

    /// Lets go of timers and dispatch, and refuses every command from now on: the shard is
    /// no longer this node's.
    fn retire(&mut self, ctx: &mut Context<Self>) {
        self.retired = true;
        if let Some(handle) = self.expiry.take() {
            ctx.cancel_future(handle);
        }
        self.stop_dispatch(ctx);
    }

    pub(crate) fn order(&self) -> &Order {
        &self.order
    }

    pub(crate) fn env(&self) -> &OrderEnv {
        &self.env
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
                    repeat: false,
                });
            }));
        }
    }

    /// Timers and dispatch as the order's state asks for them: at start, and after a change.
    fn resume(&mut self, ctx: &mut Context<Self>) {
        self.env.events.holding(&self.order);
        self.arm_expiry(ctx);
        if self.order.status == OrderStatus::ReadyForRider && self.dispatching.is_none() {
            self.start_dispatch(ctx);
        }
    }

    fn decide(&mut self, command: OrderCommand) -> Result<Option<Order>, TransitionError> {
        if self.fault_armed == Some(ArmFault::Panic) {
            self.fault_armed = None;
            panic!("injected fault in order {}", self.order.id);
        }
        self.order.apply(command, OffsetDateTime::now_utc())
    }

    /// Decides `command` (catching a panic), persists the result with its effects, and only then
    /// applies it in memory and answers.
    fn run(
        &mut self,
        command: OrderCommand,
        repeat: bool,
        _ctx: &mut Context<Self>,
    ) -> AtomicResponse<Self, Result<Order, OrderError>> {
        let answer = |result| AtomicResponse::new(Box::pin(fut::ready(result)));
        if self.retired {
            return answer(Err(OrderError::NotOwner));
        }
        if self.order.status.is_terminal() {
            // Started only to answer (a refusal, or a repeated payment): let go again.
            (self.env.passivate)(self.order.id, self.order.shard);
        }
        let next = match catch_unwind(AssertUnwindSafe(|| self.decide(command.clone()))) {
            Err(_) => {
                tracing::error!(order_id = %self.order.id, %command, "order actor panicked; restarting from the store");
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
            // Sent again after its answer was lost: if it already ran, it is done.
            Ok(Err(_)) if repeat && self.order.shows(&command) => {
                return answer(Ok(self.order.clone()));
            }
            Ok(Err(refused)) => return answer(Err(refused.into())),
            Ok(Ok(None)) => return answer(Ok(self.order.clone())),
            Ok(Ok(Some(next))) => next,
        };
        let effects = effects_of(&self.order, &next, self.epoch);
        let store = Arc::clone(&self.env.store);
        let to_save = next.clone();
        let store_fails = self.fault_armed == Some(ArmFault::StoreFailure);
        let slow = match self.fault_armed {
            Some(ArmFault::SlowSave(ms)) => Some(Duration::from_millis(ms)),
            _ => None,
        };
        if store_fails || slow.is_some() {
            self.fault_armed = None;
        }
        // Atomic: no other command runs until this one is persisted and applied.
        AtomicResponse::new(Box::pin(
            async move {
                if store_fails {
                    return Err(StoreError::Unavailable("injected store failure".into()));
                }
                if let Some(slow) = slow {
                    actix::clock::sleep(slow).await;
                }
                store.save(&to_save, effects).await
            }
                .into_actor(self)
                .map(move |saved, act, ctx| {
                    if let Err(err) = saved {
                        if matches!(err, StoreError::Fenced) {
                            // Another node took the shard: the command goes to it instead.
                            tracing::warn!(order_id = %act.order.id, epoch = act.epoch, "order fenced by a later epoch of its shard; retiring");
                            act.retire(ctx);
                        }
                        let err = OrderError::from(err);
                        if matches!(err, OrderError::Stale) {
                            // Someone else wrote the order: this copy is no longer the truth.
                            tracing::warn!(order_id = %act.order.id, version = act.order.version, "stale order actor; reloading from the store");
                            act.reload_now(ctx);
                        }
                        return Err(err);
                    }
                    tracing::info!(order_id = %next.id, status = %next.status, payment = %next.payment_status, "order moved");
                    let before = std::mem::replace(&mut act.order, next);
                    act.env.events.changed(&before, &act.order);
                    act.env.events.holding(&act.order);
                    act.applied(&before, ctx);
                    Ok(act.order.clone())
                }),
        ))
    }

    fn applied(&mut self, before: &Order, ctx: &mut Context<Self>) {
        let still_waiting = self.order.payment_status == PaymentStatus::Pending
            && self.order.status == OrderStatus::Placed;
        if !still_waiting && let Some(handle) = self.expiry.take() {
            ctx.cancel_future(handle);
        }
        match (before.status, self.order.status) {
            (_, OrderStatus::ReadyForRider) => self.start_dispatch(ctx),
            (OrderStatus::ReadyForRider, OrderStatus::RiderAssigned) => {
                self.stop_dispatch(ctx);
                if let Some(rider) = self.order.rider_id {
                    self.env.dispatch.assigned(&self.order, rider);
                }
            }
            (_, OrderStatus::Delivered) => {
                if let Some(rider) = self.order.rider_id {
                    self.env.dispatch.released(&self.order, rider);
                }
            }
            _ => {}
        }
        if self.order.status.is_terminal() {
            // Nothing can happen to it any more: let go, and the actor ends with its last
            // address.
            (self.env.passivate)(self.order.id, self.order.shard);
        }
    }
}

impl OrderActor {
    /// Replaces the in-memory order by the stored one before the next message, and resumes
    /// timers and dispatch from it.
    fn reload_now(&mut self, ctx: &mut Context<Self>) {
        if let Some(handle) = self.expiry.take() {
            ctx.cancel_future(handle);
        }
        self.stop_dispatch(ctx);
        let store = Arc::clone(&self.env.store);
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
                    act.resume(ctx);
                }),
        );
    }
}

/// What a transition changes besides the order, in the same write.
fn effects_of(before: &Order, after: &Order, epoch: u64) -> SaveEffects {
    let paid = before.payment_status == PaymentStatus::Pending
        && after.payment_status == PaymentStatus::Paid;
    let order = after.id;
    let rider_order = match (before.status, after.status, after.rider_id) {
        (OrderStatus::ReadyForRider, OrderStatus::RiderAssigned, Some(rider)) => {
            Some(RiderOrder::Take { rider, order })
        }
        (_, OrderStatus::Delivered, Some(rider)) => Some(RiderOrder::Release { rider, order }),
        _ => None,
    };
    SaveEffects {
        // Payment success empties the customer's cart.
        clear_cart_of: paid.then_some(after.user_id),
        // Assignment makes the rider busy; delivery frees it.
        rider_order,
        // A cancelled paid order, or money that came too late, is owed back.
        owe_refund: before.payment_status != PaymentStatus::RefundPending
            && after.payment_status == PaymentStatus::RefundPending,
        epoch: Some(epoch),
    }
}

impl Actor for OrderActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(MAILBOX);
        if std::mem::take(&mut self.reload) {
            self.reload_now(ctx);
        } else {
            self.resume(ctx);
        }
    }
}

impl Supervised for OrderActor {
    fn restarting(&mut self, _ctx: &mut Context<Self>) {
        tracing::warn!(order_id = %self.order.id, "order actor restarting");
        self.env.restarts.inc();
        self.reload = true;
        self.fault_armed = None;
        // Timers die with the old context; dispatch starts over from the reloaded order.
        self.expiry = None;
        self.dispatching = None;
    }
}

/// Apply a command to the order; answers with the order as it is afterwards.
#[derive(Debug, Clone, Message, Serialize, Deserialize)]
#[rtype(result = "Result<Order, OrderError>")]
pub struct Apply {
    pub command: OrderCommand,
    /// The command may have run already (it is sent again because its answer was lost): an
    /// order that already shows it answers as if it ran now.
    #[serde(default)]
    pub repeat: bool,
}

impl Handler<Apply> for OrderActor {
    type Result = AtomicResponse<Self, Result<Order, OrderError>>;

    fn handle(&mut self, msg: Apply, ctx: &mut Context<Self>) -> Self::Result {
        self.run(msg.command, msg.repeat, ctx)
    }
}

/// A rider accepts the order's offer. Exactly one accept wins; the others get
/// [`OrderError::AlreadyTaken`] (or [`OrderError::OfferNotHeld`] without a live offer).
#[derive(Debug, Clone, Message, Serialize, Deserialize)]
#[rtype(result = "Result<Order, OrderError>")]
pub struct Accept {
    pub rider: RiderId,
    pub name: String,
    pub phone: String,
    /// Sent again after its answer was lost: the rider who already holds the order has won.
    #[serde(default)]
    pub repeat: bool,
}

impl Handler<Accept> for OrderActor {
    type Result = AtomicResponse<Self, Result<Order, OrderError>>;

    fn handle(&mut self, msg: Accept, ctx: &mut Context<Self>) -> Self::Result {
        let refuse = |err| AtomicResponse::new(Box::pin(fut::ready(Err(err))));
        if self.retired {
            return refuse(OrderError::NotOwner);
        }
        if msg.repeat && self.order.rider_id == Some(msg.rider) {
            return AtomicResponse::new(Box::pin(fut::ready(Ok(self.order.clone()))));
        }
        if self.order.status != OrderStatus::ReadyForRider {
            return refuse(if self.order.rider_id.is_some() {
                OrderError::AlreadyTaken
            } else {
                OrderError::OfferNotHeld
            });
        }
        if !self.holds_offer(msg.rider) {
            return refuse(OrderError::OfferNotHeld);
        }
        self.run(
            OrderCommand::AssignRider {
                rider: msg.rider,
                name: msg.name,
                phone: msg.phone,
            },
            false,
            ctx,
        )
    }
}

/// A rider turns the offer down; the next wave goes out at once if no offer is left.
#[derive(Debug, Clone, Message, Serialize, Deserialize)]
#[rtype(result = "Result<(), OrderError>")]
pub struct Reject {
    pub rider: RiderId,
    /// Sent again after its answer was lost: an offer no longer held is as good as rejected.
    #[serde(default)]
    pub repeat: bool,
}

impl Handler<Reject> for OrderActor {
    type Result = Result<(), OrderError>;

    fn handle(&mut self, msg: Reject, ctx: &mut Context<Self>) -> Self::Result {
        if self.retired {
            return Err(OrderError::NotOwner);
        }
        if !self.holds_offer(msg.rider) {
            return if msg.repeat {
                Ok(())
            } else {
                Err(OrderError::OfferNotHeld)
            };
        }
        self.rejected(msg.rider, ctx);
        Ok(())
    }
}

/// Fault injection: what goes wrong with the next command this actor receives. For resilience
/// drills and the supervision tests; reachable only where the node enables fault injection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Message, Serialize, Deserialize)]
#[rtype(result = "()")]
pub enum ArmFault {
    /// It panics while deciding (the actor is restarted from the store).
    Panic,
    /// Its save fails as an unreachable store would (nothing is written, the caller is told).
    StoreFailure,
    /// Its save waits this many milliseconds before it is sent, as a slow store would: a
    /// write in flight for that long (while its node loses its lease, say).
    SlowSave(u64),
}

impl Handler<ArmFault> for OrderActor {
    type Result = ();

    fn handle(&mut self, fault: ArmFault, _: &mut Context<Self>) {
        self.fault_armed = Some(fault);
    }
}

/// The order's shard is stopping on this node: cancel the payment timer and dispatch, and
/// refuse whatever still arrives. Nothing is written: the next owner resumes both from the
/// stored order. Answers once the actor has let go of everything but its mailbox, so the
/// caller can then drop the address and the actor ends.
#[derive(Debug, Clone, Copy, Message, Serialize, Deserialize)]
#[rtype(result = "()")]
pub struct Retire;

impl Handler<Retire> for OrderActor {
    type Result = ();

    fn handle(&mut self, _: Retire, ctx: &mut Context<Self>) {
        self.retire(ctx);
        tracing::debug!(order_id = %self.order.id, "order actor retired");
    }
}
