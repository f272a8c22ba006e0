//! The rider actor: one per rider known to the node, living on the arbiter of the shard of the
//! rider's current cell. It owns what is about the rider rather than about an order: which order
//! it carries (and so who watches it move), and the one-at-a-time rule for taking work, so a
//! rider accepting two offers at once gets one of them.
//!
//! Like the order actor it decides inside `catch_unwind`; a caught panic stops it, its
//! `Supervisor` restarts it on the same address, and the restarted actor reloads what it carries
//! from the store before its next message.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use actix::prelude::*;
use prometheus_client::metrics::counter::Counter;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use tomato_domain::{LatLon, Order, OrderId, RiderId, UserId};

use crate::order::OrderError;

/// What a rider carries: the order, and the customer watching.
pub type Carried = Option<(OrderId, UserId)>;

/// How a rider actor reaches the rest of the node.
pub trait RiderPort: Send + Sync + 'static {
    /// The rider moved while carrying `order`: tell `customer` (`rider:location`).
    fn moved(&self, order: OrderId, customer: UserId, at: LatLon, seen_at: OffsetDateTime);

    /// Asks the order's actor (on the order's `shard`) to assign this rider; the order actor
    /// decides who wins.
    fn accept(
        &self,
        order: OrderId,
        shard: u32,
        rider: RiderId,
        name: String,
        phone: String,
    ) -> futures_core::future::BoxFuture<'static, Result<Order, OrderError>>;

    /// What the rider carries according to the store (after a restart).
    fn carried(&self, rider: RiderId) -> futures_core::future::BoxFuture<'static, Carried>;
}

/// Whether a rider's actor may carry an order: what the location hot path reads to skip the
/// actor for a rider nobody watches (most riders, most of the time). The actor is its one
/// writer; it says "maybe" (set) while it does not know yet (loading from the store, or
/// restarting), so a carried order never misses a position.
#[derive(Debug, Clone, Default)]
pub struct CarryingFlag(Arc<AtomicBool>);

impl CarryingFlag {
    /// True when the actor carries an order or does not know yet.
    pub fn maybe(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }

    fn set(&self, maybe: bool) {
        self.0.store(maybe, Ordering::Release);
    }
}

/// What every rider actor of a node shares.
pub struct RiderEnv {
    pub port: Arc<dyn RiderPort>,
    /// Counts restarts of rider actors, for `/metrics`.
    pub restarts: Counter,
}

impl std::fmt::Debug for RiderEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RiderEnv").finish_non_exhaustive()
    }
}

/// One rider, alive.
pub struct RiderActor {
    rider: RiderId,
    carried: Carried,
    flag: CarryingFlag,
    env: Arc<RiderEnv>,
    reload: bool,
    fault_armed: bool,
}

impl std::fmt::Debug for RiderActor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RiderActor")
            .field("rider", &self.rider)
            .field("carried", &self.carried)
            .finish_non_exhaustive()
    }
}

impl RiderActor {
    /// An actor for `rider`, carrying `carried` (handed over by its previous shard).
    pub fn new(rider: RiderId, carried: Carried, env: Arc<RiderEnv>) -> Self {
        let flag = CarryingFlag::default();
        flag.set(carried.is_some());
        Self {
            rider,
            carried,
            flag,
            env,
            reload: false,
            fault_armed: false,
        }
    }

    /// An actor for `rider` that learns what it carries from the store before its first
    /// message (a rider new to this node, or this node new to it).
    pub fn loading(rider: RiderId, env: Arc<RiderEnv>) -> Self {
        let actor = Self {
            reload: true,
            ..Self::new(rider, None, env)
        };
        actor.flag.set(true);
        actor
    }

    /// The flag this actor keeps (for whoever routes positions to it).
    pub fn flag(&self) -> CarryingFlag {
        self.flag.clone()
    }

    /// What the rider carries now; the flag follows.
    fn carry(&mut self, carried: Carried) {
        self.carried = carried;
        self.flag.set(carried.is_some());
    }

    /// Runs `decide` inside `catch_unwind`; a panic stops the actor for its supervisor to
    /// restart, and is reported as `None`.
    fn guarded<T>(
        &mut self,
        ctx: &mut Context<Self>,
        decide: impl FnOnce(&mut Self) -> T,
    ) -> Option<T> {
        match catch_unwind(AssertUnwindSafe(|| {
            if std::mem::take(&mut self.fault_armed) {
                panic!("injected fault in rider {}", self.rider);
            }
            decide(self)
        })) {
            Ok(value) => Some(value),
            Err(_) => {
                tracing::error!(rider_id = %self.rider, "rider actor panicked; restarting from the store");
                ctx.stop();
                None
            }
        }
    }
}

impl Actor for RiderActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(256);
        if !std::mem::take(&mut self.reload) {
            return;
        }
        let load = self.env.port.carried(self.rider);
        ctx.wait(
            load.into_actor(self)
                .map(|carried, act, _| act.carry(carried)),
        );
    }
}

impl Supervised for RiderActor {
    fn restarting(&mut self, _ctx: &mut Context<Self>) {
        tracing::warn!(rider_id = %self.rider, "rider actor restarting");
        self.env.restarts.inc();
        self.reload = true;
        self.flag.set(true);
        self.fault_armed = false;
    }
}

/// A position report, already applied to the index: the rider actor fans it out.
#[derive(Debug, Clone, Copy, Message, Serialize, Deserialize)]
#[rtype(result = "()")]
pub struct Moved {
    pub at: LatLon,
    pub seen_at: OffsetDateTime,
}

impl Handler<Moved> for RiderActor {
    type Result = ();

    fn handle(&mut self, msg: Moved, ctx: &mut Context<Self>) {
        let port = Arc::clone(&self.env.port);
        self.guarded(ctx, |act| {
            if let Some((order, customer)) = act.carried {
                port.moved(order, customer, msg.at, msg.seen_at);
            }
        });
    }
}

/// The rider takes an offered order: one at a time, and only while carrying nothing.
#[derive(Debug, Clone, Message, Serialize, Deserialize)]
#[rtype(result = "Result<Order, OrderError>")]
pub struct TakeOrder {
    pub order: OrderId,
    /// The order's shard, where its actor lives.
    pub shard: u32,
    pub name: String,
    pub phone: String,
}

impl Handler<TakeOrder> for RiderActor {
    type Result = AtomicResponse<Self, Result<Order, OrderError>>;

    fn handle(&mut self, msg: TakeOrder, ctx: &mut Context<Self>) -> Self::Result {
        let done = |result| AtomicResponse::new(Box::pin(fut::ready(result)));
        match self.guarded(ctx, |act| act.carried.is_some()) {
            None => return done(Err(OrderError::Crashed)),
            Some(true) => return done(Err(OrderError::RiderBusy)),
            Some(false) => {}
        }
        let accepting = self
            .env
            .port
            .accept(msg.order, msg.shard, self.rider, msg.name, msg.phone);
        // Atomic: a second offer taken meanwhile waits, and then finds the rider busy.
        AtomicResponse::new(Box::pin(accepting.into_actor(self).map(
            |result, act, _| {
                if let Ok(order) = &result {
                    act.carry(Some((order.id, order.user_id)));
                }
                result
            },
        )))
    }
}

/// What the rider carries now, as its order's actor decided it: an assignment (the rider took
/// the order through another node, which its actor here did not see) or the end of one
/// (delivered, or reassigned: nothing).
#[derive(Debug, Clone, Copy, Message, Serialize, Deserialize)]
#[rtype(result = "()")]
pub struct Carry(pub Carried);

impl Handler<Carry> for RiderActor {
    type Result = ();

    fn handle(&mut self, msg: Carry, _: &mut Context<Self>) {
        self.carry(msg.0);
    }
}

/// What the rider carries: for the next shard at hand-off, and for tests and admin.
#[derive(Debug, Clone, Copy, Message, Serialize, Deserialize)]
#[rtype(result = "Carried")]
pub struct Carrying;

impl Handler<Carrying> for RiderActor {
    type Result = MessageResult<Carrying>;

    fn handle(&mut self, _: Carrying, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.carried)
    }
}

/// Fault injection: the next message this actor handles panics.
#[derive(Debug, Clone, Copy, Message, Serialize, Deserialize)]
#[rtype(result = "()")]
pub struct ArmRiderFault;

impl Handler<ArmRiderFault> for RiderActor {
    type Result = ();

    fn handle(&mut self, _: ArmRiderFault, _: &mut Context<Self>) {
        self.fault_armed = true;
    }
}
