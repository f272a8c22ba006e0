//! The routing seam: every message to an order, a rider or a shard goes through the
//! [`ShardRouter`], which answers whether the shard runs here ([`Route::Local`]) or not
//! ([`Route::Elsewhere`]). On a single node every shard runs here once started; the cluster
//! adds the remote side behind the same seam. A command for a shard that does not run here is
//! refused with [`OrderError::NotOwner`], never served by starting a second actor.
//!
//! [`ShardRouter::start`] and [`ShardRouter::stop`] are the only ways a shard comes and goes, at
//! boot and shutdown of a node as much as when a cluster moves a shard between nodes.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use actix::{Addr, Supervisor};
use h3o::CellIndex;
use tomato_actors::{OrderActor, OrderEnv, OrderError, Retire, RiderActor, RiderEnv};
use tomato_domain::{Order, OrderId, RiderId};
use tomato_store::{RiderStore, StoreError};

use crate::index::INDEX_RESOLUTION;
use crate::shard::{Entered, RiderHandle, Shard};
use crate::{ActorRuntime, RiderIndex, ShardId, ShardMap};

/// How long a stopping shard waits for one order actor to retire.
const RETIRE_WITHIN: Duration = Duration::from_secs(5);

/// An order as routing needs it: its id and the shard recorded on it at placement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct OrderRef {
    pub id: OrderId,
    pub shard: ShardId,
}

impl From<&Order> for OrderRef {
    fn from(order: &Order) -> Self {
        Self {
            id: order.id,
            shard: ShardId(order.shard),
        }
    }
}

/// Where a shard's messages go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// The shard runs on this node.
    Local,
    /// The shard does not run here: owned by another node, or moving.
    Elsewhere,
}

/// What stopping a shard let go of.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stopped {
    pub orders: usize,
    pub riders: usize,
    /// Positions written on the way out.
    pub positions: usize,
}

/// The shards of this node and the one way in to their actors.
pub struct ShardRouter {
    map: ShardMap,
    runtime: Arc<ActorRuntime>,
    shards: Vec<Shard>,
    index: Arc<RiderIndex>,
    /// Which shard's actor speaks for each rider with a live actor here.
    rider_homes: dashmap::DashMap<RiderId, ShardId>,
    orders_env: Arc<OrderEnv>,
    riders_env: Arc<RiderEnv>,
    positions: Arc<dyn RiderStore>,
    /// Where commands for shards that do not run here go (a cluster's transport).
    remote: std::sync::OnceLock<Arc<dyn crate::RemoteShards>>,
    /// Batched dispatch's queue and windows; `None` when dispatch is greedy.
    windows: Option<Arc<crate::windows::Windows>>,
    /// The offers other nodes' order actors made, as they told this one: so a rider's offers
    /// are read here without asking them, and its search ranks riders holding theirs last.
    pub(crate) heard: crate::offers::OfferBook,
    /// Rider profiles read because a rider was new to the index or the copy.
    pub(crate) entry_reads: prometheus_client::metrics::counter::Counter,
}

impl std::fmt::Debug for ShardRouter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardRouter")
            .field("map", &self.map)
            .finish_non_exhaustive()
    }
}

impl ShardRouter {
    /// A router over `map`'s shards, none of them started, around its actors' shared parts
    /// (which [`ShardRouter::new`] builds with their ports).
    pub(crate) fn assemble(
        runtime: Arc<ActorRuntime>,
        map: ShardMap,
        index: Arc<RiderIndex>,
        orders_env: Arc<OrderEnv>,
        riders_env: RiderEnv,
        positions: Arc<dyn RiderStore>,
        windows: Option<Arc<crate::windows::Windows>>,
    ) -> Self {
        Self {
            map,
            runtime,
            shards: (0..map.count()).map(|id| Shard::new(ShardId(id))).collect(),
            index,
            rider_homes: dashmap::DashMap::new(),
            orders_env,
            riders_env: Arc::new(riders_env),
            positions,
            remote: std::sync::OnceLock::new(),
            windows,
            heard: crate::offers::OfferBook::default(),
            entry_reads: Default::default(),
        }
    }

    /// An order actor ended by itself (idle, or its order finished): its shard forgets it.
    pub(crate) fn passivated(&self, id: OrderId, shard: u32) {
        if let Some(shard) = self.shards.get(shard as usize) {
            shard.orders.remove(&id);
            shard.open.remove(&id);
        }
    }

    /// The cell -> shard map.
    pub fn map(&self) -> ShardMap {
        self.map
    }

    /// Sends commands for shards that do not run here to their owners through `remote` (set
    /// once, by a node joining a cluster).
    pub fn set_remote(&self, remote: Arc<dyn crate::RemoteShards>) {
        let _ = self.remote.set(remote);
    }

    /// Batched dispatch's queue and windows; `None` when dispatch is greedy.
    pub fn windows(&self) -> Option<&Arc<crate::windows::Windows>> {
        self.windows.as_ref()
    }

    pub(crate) fn remote(&self) -> Option<&Arc<dyn crate::RemoteShards>> {
        self.remote.get()
    }

    /// Where rider profiles and positions are stored.
    pub(crate) fn rider_store(&self) -> &Arc<dyn RiderStore> {
        &self.positions
    }

    /// The node's rider index (every running shard's slice).
    pub fn index(&self) -> &Arc<RiderIndex> {
        &self.index
    }

    /// The shard, if the id is in range.
    pub fn shard(&self, id: ShardId) -> Option<&Shard> {
        self.shards.get(id.0 as usize)
    }

    /// Every shard of the map, running here or not.
    pub fn shards(&self) -> impl Iterator<Item = &Shard> {
        self.shards.iter()
    }

    /// Where `shard`'s messages go now.
    pub fn route(&self, shard: ShardId) -> Route {
        match self.shard(shard) {
            Some(shard) if shard.holds() => Route::Local,
            _ => Route::Elsewhere,
        }
    }

    pub(crate) async fn enter(&self, shard: ShardId) -> Result<Entered<'_>, OrderError> {
        match self.shard(shard) {
            Some(shard) => shard.enter().await.ok_or(OrderError::NotOwner),
            None => Err(OrderError::NotOwner),
        }
    }

    /// Starts `shard` here: loads its open orders from the store and starts their actors (so
    /// payment timers and dispatch resume), then opens its slice of the index. Commands that
    /// arrive meanwhile wait, and are served once it runs. Returns how many orders resumed.
    pub async fn start(&self, id: ShardId) -> Result<usize, StoreError> {
        let Some(shard) = self.shard(id) else {
            return Err(StoreError::Invalid(format!(
                "{id} is not a shard of the map"
            )));
        };
        let mut running = shard.lock().await;
        if *running {
            return Ok(shard.orders.len());
        }
        // A new epoch first: from here on the store refuses the writes of whoever ran the
        // shard before (a node that lost its lease with a save in flight, say).
        let taken = self.orders_env.store.take_shard(id.0).await?;
        shard.set_epoch(taken.epoch);
        let resumed = taken.open.len();
        for order in taken.open {
            self.spawn_order(shard, order);
        }
        self.index.open(id);
        *running = true;
        tracing::info!(%id, epoch = taken.epoch, orders = resumed, "shard started");
        Ok(resumed)
    }

    /// Stops `shard` here: refuses new commands, waits for those in flight, retires its order
    /// actors (timers and dispatch off; the store keeps their state), ends its rider actors,
    /// writes the positions of its riders not yet snapshotted, and forgets all of it.
    pub async fn stop(&self, id: ShardId) -> Stopped {
        let Some(shard) = self.shard(id) else {
            return Stopped::default();
        };
        let mut running = shard.lock().await;
        if !*running {
            return Stopped::default();
        }
        *running = false;
        let unsaved = self.index.close(id);
        let positions = unsaved.len();
        if !unsaved.is_empty()
            && let Err(err) = self.positions.save_positions(unsaved).await
        {
            // Soft state: riders re-send their position within seconds.
            tracing::warn!(%id, error = %err, "positions of a stopping shard not written");
        }
        let orders: Vec<(OrderId, Addr<OrderActor>)> = shard
            .orders
            .iter()
            .map(|entry| (*entry.key(), entry.value().clone()))
            .collect();
        shard.orders.clear();
        shard.open.clear();
        for (order, addr) in &orders {
            if addr.send(Retire).timeout(RETIRE_WITHIN).await.is_err() {
                tracing::warn!(order_id = %order, %id, "order actor did not retire in time");
            }
        }
        // Retired actors withdrew their offers; whatever a slow one left goes with the shard.
        shard.offers.clear();
        let riders: Vec<RiderId> = shard.riders.iter().map(|entry| *entry.key()).collect();
        shard.riders.clear();
        for rider in &riders {
            self.rider_homes.remove_if(rider, |_, home| *home == id);
        }
        tracing::info!(%id, orders = orders.len(), riders = riders.len(), positions, "shard stopped");
        Stopped {
            orders: orders.len(),
            riders: riders.len(),
            positions,
        }
    }

    /// Starts every shard of the map (a single node at boot). Returns the orders resumed.
    pub async fn start_all(&self) -> Result<usize, StoreError> {
        let mut resumed = 0;
        for id in 0..self.map.count() {
            resumed += self.start(ShardId(id)).await?;
        }
        Ok(resumed)
    }

    /// Stops every shard (a node shutting down).
    pub async fn stop_all(&self) -> Stopped {
        let mut total = Stopped::default();
        for id in 0..self.map.count() {
            let stopped = self.stop(ShardId(id)).await;
            total.orders += stopped.orders;
            total.riders += stopped.riders;
            total.positions += stopped.positions;
        }
        total
    }

    /// Starts the actor of an order on its shard's arbiter, unless it runs.
    pub(crate) fn spawn_order(&self, shard: &Shard, order: Order) -> Addr<OrderActor> {
        let id = order.id;
        shard
            .orders
            .entry(id)
            // Under the entry's lock: two callers missing at once start one actor, not two.
            .or_insert_with(|| {
                if !order.status.is_terminal() {
                    shard.open.insert(id, order.pickup.cell(INDEX_RESOLUTION));
                }
                let arbiter = self.runtime.arbiter(shard.id());
                let env = Arc::clone(&self.orders_env);
                let epoch = shard.epoch();
                tracing::debug!(order_id = %id, shard = %shard.id(), epoch, "starting order actor");
                Supervisor::start_in_arbiter(arbiter, move |_| OrderActor::new(order, env, epoch))
            })
            .clone()
    }

    /// Unfinished orders per pickup cell at `resolution`, from the running shards' memory.
    pub fn open_by_cell(&self, resolution: h3o::Resolution) -> HashMap<CellIndex, usize> {
        let mut counts = HashMap::new();
        for shard in &self.shards {
            for entry in shard.open.iter() {
                let cell = entry.value().parent(resolution).unwrap_or(*entry.value());
                *counts.entry(cell).or_insert(0) += 1;
            }
        }
        counts
    }

    pub(crate) fn orders_env(&self) -> &Arc<OrderEnv> {
        &self.orders_env
    }

    pub(crate) fn riders_env(&self) -> &Arc<RiderEnv> {
        &self.riders_env
    }

    pub(crate) fn runtime(&self) -> &ActorRuntime {
        &self.runtime
    }

    pub(crate) fn rider_homes(&self) -> &dashmap::DashMap<RiderId, ShardId> {
        &self.rider_homes
    }
}

/// A rider actor for `rider` on `shard`'s arbiter.
pub(crate) fn spawn_rider(
    runtime: &ActorRuntime,
    shard: ShardId,
    actor: RiderActor,
) -> RiderHandle {
    let carrying = actor.flag();
    let addr = Supervisor::start_in_arbiter(runtime.arbiter(shard), move |_| actor);
    RiderHandle { addr, carrying }
}
