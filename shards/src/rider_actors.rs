//! Where rider actors live: on the arbiter of the shard of the rider's current cell. When a
//! rider's update lands in another shard, its actor is handed off: the old one gives up its
//! state and ends, and a new one starts on the new shard's arbiter with that state, so the
//! order it carries travels with it.

use std::sync::Arc;

use actix::{Addr, Supervisor};
use dashmap::DashMap;
use time::OffsetDateTime;
use tomato_actors::{
    ArmRiderFault, Carrying, Moved, OrderError, Released, RiderActor, RiderEnv, TakeOrder,
};
use tomato_domain::{LatLon, Order, OrderId, RiderId};

use crate::{ActorRuntime, ShardId};

/// The live rider actors of this node.
pub struct RiderDirectory {
    live: DashMap<RiderId, (ShardId, Addr<RiderActor>)>,
    runtime: Arc<ActorRuntime>,
    env: Arc<RiderEnv>,
}

impl std::fmt::Debug for RiderDirectory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RiderDirectory")
            .field("live", &self.live.len())
            .finish_non_exhaustive()
    }
}

impl RiderDirectory {
    pub fn new(runtime: Arc<ActorRuntime>, env: RiderEnv) -> Self {
        Self {
            live: DashMap::new(),
            runtime,
            env: Arc::new(env),
        }
    }

    /// How many rider actors are alive.
    pub fn live(&self) -> usize {
        self.live.len()
    }

    fn spawn(&self, shard: ShardId, actor: RiderActor) -> Addr<RiderActor> {
        Supervisor::start_in_arbiter(self.runtime.arbiter(shard), move |_| actor)
    }

    /// The rider's actor on `shard`: the running one, a new one handed the old one's state if
    /// the rider changed shards, or a new one loading its state from the store.
    async fn on_shard(&self, rider: RiderId, shard: ShardId) -> Addr<RiderActor> {
        let current = self.live.get(&rider).map(|entry| entry.clone());
        match current {
            Some((home, addr)) if home == shard => addr,
            Some((_, old)) => {
                // Hand-off: ask the old actor what it carries; dropping its address ends it.
                let carried = old.send(Carrying).await.ok().flatten();
                let actor = match carried {
                    Some(carried) => RiderActor::new(rider, Some(carried), Arc::clone(&self.env)),
                    None => RiderActor::loading(rider, Arc::clone(&self.env)),
                };
                let addr = self.spawn(shard, actor);
                self.live.insert(rider, (shard, addr.clone()));
                tracing::debug!(rider_id = %rider, %shard, "rider actor handed off");
                addr
            }
            None => self
                .live
                .entry(rider)
                .or_insert_with(|| {
                    let actor = RiderActor::loading(rider, Arc::clone(&self.env));
                    (shard, self.spawn(shard, actor))
                })
                .1
                .clone(),
        }
    }

    /// A position was applied to the index on `shard`: the rider's actor fans it out.
    pub async fn moved(&self, rider: RiderId, shard: ShardId, at: LatLon, seen_at: OffsetDateTime) {
        let addr = self.on_shard(rider, shard).await;
        // Fire-and-forget: the location hot path never waits on an actor.
        addr.do_send(Moved { at, seen_at });
    }

    /// The rider takes an offered order, through its actor (one order at a time).
    pub async fn take(
        &self,
        rider: RiderId,
        shard: ShardId,
        order: OrderId,
        name: String,
        phone: String,
    ) -> Result<Order, OrderError> {
        let addr = self.on_shard(rider, shard).await;
        match addr.send(TakeOrder { order, name, phone }).await {
            Ok(result) => result,
            Err(_) => Err(OrderError::Unavailable),
        }
    }

    /// The order the rider carried is finished.
    pub fn released(&self, rider: RiderId) {
        if let Some(entry) = self.live.get(&rider) {
            entry.1.do_send(Released);
        }
    }

    /// What the rider's actor carries, if it runs.
    pub async fn carried(&self, rider: RiderId) -> Option<(OrderId, tomato_domain::UserId)> {
        let addr = self.live.get(&rider).map(|entry| entry.1.clone())?;
        addr.send(Carrying).await.ok().flatten()
    }

    /// Makes the rider actor's next message panic (fault injection).
    pub async fn arm_fault(&self, rider: RiderId, shard: ShardId) -> Result<(), OrderError> {
        let addr = self.on_shard(rider, shard).await;
        addr.send(ArmRiderFault)
            .await
            .map_err(|_| OrderError::Unavailable)
    }
}
