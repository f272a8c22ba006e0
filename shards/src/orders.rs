//! Where order actors live. The directory places each order's actor on the arbiter of the
//! shard of its restaurant's cell, keeps the addresses of live ones, starts an actor from the
//! store on first use (after a restart, or once a finished order was let go), and, when an
//! actor crashed on a command or is found dead, sends the command once more to the actor rebuilt
//! from the store.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use actix::dev::ToEnvelope;
use actix::{Addr, Handler, MailboxError, Message, Supervisor};
use dashmap::DashMap;
use h3o::CellIndex;
use prometheus_client::metrics::counter::Counter;
use tomato_actors::{
    Accept, Apply, ArmFault, DispatchPolicy, DispatchPort, OrderActor, OrderEnv, OrderError,
    OrderEvents, Reject,
};
use tomato_domain::{Order, OrderCommand, OrderId, RiderId};
use tomato_store::OrderStore;

use crate::index::INDEX_RESOLUTION;
use crate::{ActorRuntime, ShardMap};

/// How long a caller waits for an order's actor to answer.
const ANSWER_WITHIN: Duration = Duration::from_secs(10);

/// What the order actors of a node share (see [`OrderEnv`]).
pub struct OrderPorts {
    pub store: Arc<dyn OrderStore>,
    pub events: Arc<dyn OrderEvents>,
    pub dispatch: Arc<dyn DispatchPort>,
    pub policy: DispatchPolicy,
    pub restarts: Counter,
}

impl std::fmt::Debug for OrderPorts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OrderPorts")
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

/// The live order actors of this node.
pub struct OrderDirectory {
    live: Arc<DashMap<OrderId, Addr<OrderActor>>>,
    /// The pickup cell of every live (unfinished) order, for supply-and-demand statistics.
    open: Arc<DashMap<OrderId, CellIndex>>,
    runtime: Arc<ActorRuntime>,
    map: ShardMap,
    env: Arc<OrderEnv>,
}

impl std::fmt::Debug for OrderDirectory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OrderDirectory")
            .field("live", &self.live.len())
            .field("map", &self.map)
            .finish_non_exhaustive()
    }
}

impl OrderDirectory {
    /// A directory placing actors on `runtime` by `map`.
    pub fn new(runtime: Arc<ActorRuntime>, map: ShardMap, ports: OrderPorts) -> Self {
        let live: Arc<DashMap<OrderId, Addr<OrderActor>>> = Arc::new(DashMap::new());
        let open: Arc<DashMap<OrderId, CellIndex>> = Arc::new(DashMap::new());
        let (weak, weak_open) = (Arc::downgrade(&live), Arc::downgrade(&open));
        let env = Arc::new(OrderEnv {
            store: ports.store,
            events: ports.events,
            dispatch: ports.dispatch,
            policy: ports.policy,
            restarts: ports.restarts,
            passivate: Box::new(move |id| {
                if let Some(live) = weak.upgrade() {
                    live.remove(&id);
                }
                if let Some(open) = weak_open.upgrade() {
                    open.remove(&id);
                }
            }),
        });
        Self {
            live,
            open,
            runtime,
            map,
            env,
        }
    }

    /// Unfinished orders per pickup cell at `resolution`, from memory.
    pub fn open_by_cell(&self, resolution: h3o::Resolution) -> HashMap<CellIndex, usize> {
        let mut counts = HashMap::new();
        for entry in self.open.iter() {
            let cell = entry.value().parent(resolution).unwrap_or(*entry.value());
            *counts.entry(cell).or_insert(0) += 1;
        }
        counts
    }

    /// How many order actors are alive.
    pub fn live(&self) -> usize {
        self.live.len()
    }

    /// Starts the actor of a stored order (a new one, or one being resumed), unless it runs.
    pub fn start(&self, order: Order) -> Addr<OrderActor> {
        let id = order.id;
        self.live
            .entry(id)
            // Under the entry's lock: two callers missing at once start one actor, not two.
            .or_insert_with(|| self.spawn(order))
            .clone()
    }

    fn spawn(&self, order: Order) -> Addr<OrderActor> {
        let shard = self.map.shard_of(order.pickup);
        if !order.status.is_terminal() {
            self.open
                .insert(order.id, order.pickup.cell(INDEX_RESOLUTION));
        }
        let arbiter = self.runtime.arbiter(shard);
        let env = Arc::clone(&self.env);
        tracing::debug!(order_id = %order.id, %shard, "starting order actor");
        Supervisor::start_in_arbiter(arbiter, move |_| OrderActor::new(order, env))
    }

    async fn address(&self, id: OrderId) -> Result<Addr<OrderActor>, OrderError> {
        if let Some(addr) = self.live.get(&id) {
            return Ok(addr.clone());
        }
        let order = self.env.store.get(id).await?.ok_or(OrderError::NotFound)?;
        Ok(self.start(order))
    }

    /// Sends `msg` to the order's actor. If the actor crashed on it (nothing was applied) or is
    /// found dead, the message is sent once more to the actor rebuilt from the store.
    async fn send<M, T>(&self, id: OrderId, msg: M) -> Result<T, OrderError>
    where
        M: Message<Result = Result<T, OrderError>> + Clone + Send + 'static,
        T: Send + 'static,
        OrderActor: Handler<M>,
        <OrderActor as actix::Actor>::Context: ToEnvelope<OrderActor, M>,
    {
        for attempt in 0..2 {
            let addr = self.address(id).await?;
            match addr.send(msg.clone()).timeout(ANSWER_WITHIN).await {
                Ok(Err(OrderError::Crashed)) if attempt == 0 => {
                    tracing::warn!(order_id = %id, "order actor crashed; retrying on the rebuilt actor");
                }
                Ok(result) => return result,
                Err(MailboxError::Timeout) => return Err(OrderError::Unavailable),
                Err(MailboxError::Closed) => {
                    // The actor is gone (its arbiter died, say): forget it, and the next
                    // round rebuilds it from the store.
                    tracing::warn!(order_id = %id, "order actor gone; rebuilding it");
                    self.live.remove_if(&id, |_, live| *live == addr);
                }
            }
        }
        Err(OrderError::Unavailable)
    }

    /// Applies a command; returns the order as it is afterwards.
    pub async fn apply(&self, id: OrderId, command: OrderCommand) -> Result<Order, OrderError> {
        self.send(id, Apply { command }).await
    }

    /// A rider accepts the order's offer; exactly one wins.
    pub async fn accept(
        &self,
        id: OrderId,
        rider: RiderId,
        name: String,
        phone: String,
    ) -> Result<Order, OrderError> {
        self.send(id, Accept { rider, name, phone }).await
    }

    /// A rider turns the order's offer down.
    pub async fn reject(&self, id: OrderId, rider: RiderId) -> Result<(), OrderError> {
        self.send(id, Reject { rider }).await
    }

    /// Makes the order's next command panic inside its actor (fault injection).
    pub async fn arm_fault(&self, id: OrderId) -> Result<(), OrderError> {
        let addr = self.address(id).await?;
        addr.send(ArmFault)
            .await
            .map_err(|_| OrderError::Unavailable)
    }

    /// Starts the actors of every open order in the store, so their timers and dispatch
    /// resume. Returns the open orders.
    pub async fn resume(&self) -> Result<Vec<Order>, OrderError> {
        let open = self.env.store.open().await?;
        for order in &open {
            self.start(order.clone());
        }
        Ok(open)
    }
}
