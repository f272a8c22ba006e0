//! Where order actors live. The directory places each order's actor on the arbiter of the
//! shard of its restaurant's cell, keeps the addresses of live ones, starts an actor from the
//! store on first use (after a restart, or once a finished order was let go), and, when an
//! actor is found dead, rebuilds it from the store and retries once.

use std::sync::Arc;
use std::time::Duration;

use actix::{Addr, MailboxError, Supervisor};
use dashmap::DashMap;
use prometheus_client::metrics::counter::Counter;
use tomato_actors::{Apply, ArmFault, OrderActor, OrderError, OrderEvents};
use tomato_domain::{Order, OrderCommand, OrderId};
use tomato_store::OrderStore;

use crate::{ActorRuntime, ShardMap};

/// How long a caller waits for an order's actor to answer.
const ANSWER_WITHIN: Duration = Duration::from_secs(10);

/// The live order actors of this node.
pub struct OrderDirectory {
    live: Arc<DashMap<OrderId, Addr<OrderActor>>>,
    runtime: Arc<ActorRuntime>,
    map: ShardMap,
    store: Arc<dyn OrderStore>,
    restarts: Counter,
    events: Arc<dyn OrderEvents>,
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
    /// A directory placing actors on `runtime` by `map`; `restarts` counts actor restarts and
    /// `events` hears of every persisted change.
    pub fn new(
        runtime: Arc<ActorRuntime>,
        map: ShardMap,
        store: Arc<dyn OrderStore>,
        restarts: Counter,
        events: Arc<dyn OrderEvents>,
    ) -> Self {
        Self {
            live: Arc::new(DashMap::new()),
            runtime,
            map,
            store,
            restarts,
            events,
        }
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
        let arbiter = self.runtime.arbiter(shard);
        let store = Arc::clone(&self.store);
        let restarts = self.restarts.clone();
        let events = Arc::clone(&self.events);
        let live = Arc::downgrade(&self.live);
        let passivate = Arc::new(move |id: OrderId| {
            if let Some(live) = live.upgrade() {
                live.remove(&id);
            }
        });
        tracing::debug!(order_id = %order.id, %shard, "starting order actor");
        Supervisor::start_in_arbiter(arbiter, move |_| {
            OrderActor::new(order, store, passivate, restarts, events)
        })
    }

    async fn address(&self, id: OrderId) -> Result<Addr<OrderActor>, OrderError> {
        if let Some(addr) = self.live.get(&id) {
            return Ok(addr.clone());
        }
        let order = self.store.get(id).await?.ok_or(OrderError::NotFound)?;
        Ok(self.start(order))
    }

    /// Sends a command to the order's actor and returns the order as it is afterwards. If the
    /// actor crashed on it (nothing was applied) or is found dead, the command is sent once more
    /// to the actor rebuilt from the store.
    pub async fn apply(&self, id: OrderId, command: OrderCommand) -> Result<Order, OrderError> {
        for attempt in 0..2 {
            let addr = self.address(id).await?;
            match addr.send(Apply { command }).timeout(ANSWER_WITHIN).await {
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

    /// Makes the order's next command panic inside its actor (fault injection).
    pub async fn arm_fault(&self, id: OrderId) -> Result<(), OrderError> {
        let addr = self.address(id).await?;
        addr.send(ArmFault)
            .await
            .map_err(|_| OrderError::Unavailable)
    }

    /// Starts the actors of every open order in the store, so their timers resume. Returns
    /// how many.
    pub async fn resume(&self) -> Result<usize, OrderError> {
        let open = self.store.open().await?;
        let count = open.len();
        for order in open {
            self.start(order);
        }
        Ok(count)
    }
}
