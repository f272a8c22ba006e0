//! Rider actors, through the router. A rider's actor lives on the arbiter of the shard of its
//! current cell. When a rider's update lands in another shard, its actor is handed off: the old
//! one gives up what it carries and ends, and a new one starts in the new shard with that
//! state, so the order it carries travels with it. A rider actor writes nothing: what it carries
//! is also in the store (set and cleared by the order's transitions, conditionally), so a
//! stopped shard simply drops its rider actors and a new one reloads.

use std::sync::Arc;

use actix::Addr;
use h3o::CellIndex;
use time::OffsetDateTime;
use tomato_actors::{
    ArmRiderFault, Carried, Carry, Carrying, Moved, OrderError, RiderActor, TakeOrder,
};
use tomato_domain::{LatLon, Order, RiderId};

use crate::ShardId;
use crate::index::INDEX_RESOLUTION;
use crate::remote::Position;
use crate::router::{OrderRef, ShardRouter, spawn_rider};
use crate::shard::{RiderHandle, Shard};

/// Where a position comes from, which decides how a rider whose dispatchable flag this node
/// does not know (new to its index or copy) learns it. Whether a rider may be offered work is
/// in its profile, and the node that ingests its positions reads it (once per entry) and sends
/// the flag with every position it replicates. A node hearing them takes that flag instead of
/// reading the profile too; a position that carries none (the ingesting node could not read
/// it) leaves the rider unknown, and so out of dispatch, until one does. One profile read per
/// rider in a cluster, where every node that copies the rider's region used to read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    Ingested,
    Replicated(Option<bool>),
}

impl Source {
    /// The flag the position carried (none for a position ingested here).
    fn flag(self) -> Option<bool> {
        match self {
            Source::Ingested => None,
            Source::Replicated(flag) => flag,
        }
    }
}

impl ShardRouter {
    /// The rider's shard, if it runs here and this node's hold on it has not run out (a node
    /// that woke past its lease takes nothing for its riders).
    pub(crate) fn running(&self, id: ShardId) -> Result<&Shard, OrderError> {
        self.shard(id)
            .filter(|shard| shard.holds())
            .ok_or(OrderError::NotOwner)
    }

    /// The rider's actor on `shard` (which the caller found running): the live one, a new one
    /// handed the old one's state if the rider changed shards, or a new one loading its state
    /// from the store.
    async fn rider_on(&self, rider: RiderId, shard: &Shard) -> RiderHandle {
        let id = shard.id();
        if let Some(handle) = shard.riders.get(&rider) {
            return handle.clone();
        }
        let old = self
            .rider_homes()
            .get(&rider)
            .map(|home| *home)
            .filter(|home| *home != id)
            .and_then(|home| self.shard(home))
            .and_then(|home| home.riders.remove(&rider))
            .map(|(_, handle)| handle.addr);
        let env = Arc::clone(self.riders_env());
        let actor = match old {
            Some(old) => {
                // Hand-off: ask the old actor what it carries; dropping its address ends it.
                match old.send(Carrying).await.ok().flatten() {
                    Some(carried) => RiderActor::new(rider, Some(carried), env),
                    None => RiderActor::loading(rider, env),
                }
            }
            None => RiderActor::loading(rider, env),
        };
        let handle = shard
            .riders
            .entry(rider)
            // Under the entry's lock: two callers missing at once start one actor, not two.
            .or_insert_with(|| spawn_rider(self.runtime(), id, actor))
            .clone();
        self.rider_homes().insert(rider, id);
        handle
    }

    /// Applies a position to the index and tells the rider's actor (which tells a watching
    /// customer). Refused when the position's shard does not run here and this node is alone.
    /// In a cluster every position ingested here is also replicated to the nodes that copy its
    /// region, the shard's owner among them: a position for a shard another node runs only
    /// updates this node's copy.
    pub async fn moved(
        &self,
        rider: RiderId,
        at: LatLon,
        seen_at: OffsetDateTime,
    ) -> Result<(), OrderError> {
        // The cell is worked out once for the index, the copy and the region's channel: the
        // hot path's one H3 computation.
        let cell = at.cell(INDEX_RESOLUTION);
        let here = self
            .moved_at(rider, cell, at, seen_at, Source::Ingested)
            .await;
        let Some(remote) = self.remote() else {
            return here.map(|_| ());
        };
        let dispatchable = match here {
            Ok(flag) => flag,
            Err(OrderError::NotOwner) => {
                self.copy_here(rider, cell, at, seen_at, Source::Ingested)
                    .await
            }
            Err(err) => return Err(err),
        };
        let position = Position {
            rider,
            at,
            seen_at,
            dispatchable,
        };
        remote.replicate(self.map().region_of(cell), position);
        Ok(())
    }

    /// Positions another node ingested and replicated: the owner's path for the shards running
    /// here, the copy for the others. Most of what a node hears is for its copy, so the shard
    /// is looked at first rather than the owner's path tried and refused.
    pub async fn replicated_heard(&self, positions: Vec<Position>) {
        for position in positions {
            let Position {
                rider,
                at,
                seen_at,
                dispatchable,
            } = position;
            let source = Source::Replicated(dispatchable);
            let cell = at.cell(INDEX_RESOLUTION);
            let owned = self.index().is_open(self.map().shard_of_cell(cell));
            // A shard that closed in between refuses the owner's path and the copy takes the
            // position; one that opened in between refuses the copy, and the rider's next
            // position (5 s later) reaches its new owner.
            if !owned
                || matches!(
                    self.moved_at(rider, cell, at, seen_at, source).await,
                    Err(OrderError::NotOwner)
                )
            {
                self.copy_here(rider, cell, at, seen_at, source).await;
            }
        }
    }

    /// Applies a position to this node's copy and returns the rider's flag there, if known
    /// (see [`Source`] for a rider whose flag is not).
    async fn copy_here(
        &self,
        rider: RiderId,
        cell: CellIndex,
        at: LatLon,
        seen_at: OffsetDateTime,
        source: Source,
    ) -> Option<bool> {
        let update = self
            .index()
            .copy_at(rider, cell, at, seen_at, source.flag())?;
        self.learn_flag(rider, update.dispatchable, source).await
    }

    /// The rider's flag after an update from `source`. A rider whose flag this node does not
    /// know and whose positions it ingests has its profile read before its position goes on
    /// (once per entry, not on the steady path), so the position carries the flag to every
    /// node that hears it; a read that failed is tried again with the next position.
    async fn learn_flag(&self, rider: RiderId, flag: Option<bool>, source: Source) -> Option<bool> {
        match flag {
            None if source == Source::Ingested => self.read_flag(rider).await,
            flag => flag,
        }
    }

    /// [`ShardRouter::moved`] on this node only, `cell` being `at`'s at the index's resolution:
    /// refused when the position's shard does not run here. Returns the rider's dispatchable
    /// flag, `None` while this node does not know it (see [`Source`]).
    async fn moved_at(
        &self,
        rider: RiderId,
        cell: CellIndex,
        at: LatLon,
        seen_at: OffsetDateTime,
        source: Source,
    ) -> Result<Option<bool>, OrderError> {
        let index = self.index();
        let update = match source {
            Source::Ingested => index.update_at(rider, cell, at, seen_at, None),
            Source::Replicated(flag) => index.update_heard(rider, cell, at, seen_at, flag),
        }
        .map_err(|_| OrderError::NotOwner)?;
        // The index just took the position, so the shard runs here: no second check on the
        // hot path.
        let Some(shard) = self.shard(update.shard) else {
            return Err(OrderError::NotOwner);
        };
        // Only a rider that carries an order (or whose actor does not know yet) has anyone to
        // tell: the others skip the actor, a cross-thread message per position.
        // (The map's guard ends with this statement: `rider_on` may write the map.)
        let known = (shard.riders.get(&rider))
            .map(|handle| handle.carrying.maybe().then(|| handle.addr.clone()));
        let carrying = match known {
            Some(carrying) => carrying,
            None => {
                let handle = self.rider_on(rider, shard).await;
                handle.carrying.maybe().then_some(handle.addr)
            }
        };
        if let Some(addr) = carrying {
            // Fire-and-forget: the location hot path never waits on an actor. A mailbox that
            // is full (a flood the rate limits let through, a stalled actor) drops this copy
            // rather than grow: the index holds the position, and the next one brings the
            // actor up to date.
            let _ = addr.try_send(Moved { at, seen_at });
        }
        Ok(self.learn_flag(rider, update.dispatchable, source).await)
    }

    /// The rider takes an offered order, through its actor (one order at a time).
    pub async fn take(
        &self,
        rider: RiderId,
        order: OrderRef,
        name: String,
        phone: String,
    ) -> Result<Order, OrderError> {
        let local = self
            .index()
            .home(rider)
            .and_then(|home| self.running(home).ok());
        let Some(home) = local else {
            if self.remote().is_some() {
                // The rider streams to another node of the cluster: its actor is not here, and
                // the store's conditional take still keeps it to one order at a time.
                return self.accept(order, rider, name, phone).await;
            }
            return Err(OrderError::NotOwner);
        };
        let addr = self.rider_on(rider, home).await.addr;
        let take = TakeOrder {
            order: order.id,
            shard: order.shard.0,
            name,
            phone,
        };
        match addr.send(take).await {
            Ok(result) => result,
            Err(_) => Err(OrderError::Unavailable),
        }
    }

    /// What the rider carries now, as its order's actor decided it (taken, or finished): its
    /// actor here hears it, and in a cluster so does every other node, since the rider's actor
    /// lives where its positions go, which need not be where the order was taken. Without
    /// this, a rider who took an order through another node was never tracked for its
    /// customer, and one whose order ended elsewhere kept being tracked.
    pub fn rider_carries(&self, rider: RiderId, carried: Carried) {
        self.carried_heard(rider, carried);
        if let Some(remote) = self.remote() {
            remote.carried(rider, carried);
        }
    }

    /// Another node's [`ShardRouter::rider_carries`]: the rider's actor here, if any, takes it.
    pub fn carried_heard(&self, rider: RiderId, carried: Carried) {
        if let Some(addr) = self.live_actor(rider) {
            addr.do_send(Carry(carried));
        }
    }

    /// What the rider's actor carries, if it runs here.
    pub async fn carried(&self, rider: RiderId) -> Carried {
        let addr = self.live_actor(rider)?;
        addr.send(Carrying).await.ok().flatten()
    }

    /// The rider's actor, if one is alive on this node (none is started for it).
    fn live_actor(&self, rider: RiderId) -> Option<Addr<RiderActor>> {
        let home = self.rider_homes().get(&rider).map(|home| *home)?;
        self.shard(home)?
            .riders
            .get(&rider)
            .map(|handle| handle.addr.clone())
    }

    /// Makes the rider actor's next message panic (fault injection).
    pub async fn arm_rider_fault(&self, rider: RiderId) -> Result<(), OrderError> {
        let home = self.index().home(rider).ok_or(OrderError::NotFound)?;
        let addr = self.rider_on(rider, self.running(home)?).await.addr;
        addr.send(ArmRiderFault)
            .await
            .map_err(|_| OrderError::Unavailable)
    }

    /// How many rider actors are alive on this node.
    pub fn live_riders(&self) -> usize {
        self.shards().map(|shard| shard.live_riders()).sum()
    }
}
