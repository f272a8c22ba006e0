//! The riders of this node, sharded by region. Each shard's spatial index sits behind its own
//! lock: a location update takes one shard's write lock (uncontended but for the rare search
//! that reads the same shard), and a search read-locks only the shards whose regions its disk
//! touches. Messages to a shard actor would cost a round trip per shard a search spans (several
//! microseconds each, measured); an uncontended lock costs tens of nanoseconds, and the shard
//! stays the unit of ownership for routing between nodes.
//!
//! Positions are soft state: each shard remembers which riders moved since the last snapshot,
//! and [`RiderIndex::take_dirty`] hands them to the writer that persists them in batches.

use std::collections::HashMap;
use std::sync::{RwLock, RwLockReadGuard};

use h3o::CellIndex;
use time::OffsetDateTime;
use tomato_domain::geo::covering_k;
use tomato_domain::{LatLon, RiderId};
use tomato_store::PositionSnapshot;

use crate::index::{self, Buckets, Found, INDEX_RESOLUTION, Slot, SpatialIndex};
use crate::{ShardId, ShardMap};

#[derive(Debug, Default)]
struct Shard {
    index: SpatialIndex,
    /// Riders whose position changed since the last snapshot, with that position.
    dirty: HashMap<RiderId, PositionSnapshot>,
}

/// Every rider of the node, by shard.
#[derive(Debug)]
pub struct RiderIndex {
    map: ShardMap,
    shards: Vec<RwLock<Shard>>,
    /// Which shard holds each rider, so a rider crossing a border is found and handed off.
    homes: dashmap::DashMap<RiderId, ShardId>,
}

/// Where an update left the rider.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Update {
    pub shard: ShardId,
    pub cell: CellIndex,
    /// The rider changed shards with this update.
    pub handed_off: bool,
}

fn secs(at: OffsetDateTime) -> u32 {
    u32::try_from(at.unix_timestamp()).unwrap_or(0)
}

impl RiderIndex {
    pub fn new(map: ShardMap) -> Self {
        Self {
            map,
            shards: (0..map.count()).map(|_| RwLock::default()).collect(),
            homes: dashmap::DashMap::new(),
        }
    }

    fn shard(&self, id: ShardId) -> &RwLock<Shard> {
        &self.shards[id.0 as usize]
    }

    /// How many riders are indexed.
    pub fn len(&self) -> usize {
        self.homes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.homes.is_empty()
    }

    /// Applies a position. `dispatchable` of `None` keeps the rider's flag (false for a rider
    /// new to the index). A rider whose new cell lies in another shard is handed off to it.
    pub fn update(
        &self,
        rider: RiderId,
        at: LatLon,
        seen_at: OffsetDateTime,
        dispatchable: Option<bool>,
    ) -> Update {
        let cell = at.cell(INDEX_RESOLUTION);
        let shard = self.map.shard_of_cell(cell);
        let seen = secs(seen_at);
        let mut handed_off = false;
        let mut flag = dispatchable;
        if let Some(old) = self.homes.get(&rider).map(|home| *home)
            && old != shard
        {
            // Hand-off: out of the old shard (keeping its flag), into the new one.
            if let Ok(mut old_shard) = self.shard(old).write()
                && let Some((_, _, was)) = old_shard.index.remove(rider)
            {
                old_shard.dirty.remove(&rider);
                flag = flag.or(Some(was));
            }
            handed_off = true;
        }
        if let Ok(mut target) = self.shard(shard).write() {
            let keep = flag
                .or_else(|| target.index.get(rider).map(|(_, _, d)| d))
                .unwrap_or(false);
            target.index.upsert_in(cell, rider, at, seen, keep);
            target.dirty.insert(
                rider,
                PositionSnapshot {
                    rider,
                    location: at,
                    seen_at,
                },
            );
        }
        self.homes.insert(rider, shard);
        Update {
            shard,
            cell,
            handed_off,
        }
    }

    /// Loads a rider from its stored snapshot without marking it dirty (node start).
    pub fn restore(&self, rider: RiderId, at: LatLon, seen_at: OffsetDateTime, dispatchable: bool) {
        let cell = at.cell(INDEX_RESOLUTION);
        let shard = self.map.shard_of_cell(cell);
        if let Ok(mut target) = self.shard(shard).write() {
            target
                .index
                .upsert_in(cell, rider, at, secs(seen_at), dispatchable);
        }
        self.homes.insert(rider, shard);
    }

    /// Sets whether dispatch may offer the rider work. False if the rider is not indexed.
    pub fn set_dispatchable(&self, rider: RiderId, dispatchable: bool) -> bool {
        let Some(home) = self.homes.get(&rider).map(|home| *home) else {
            return false;
        };
        self.shard(home)
            .write()
            .map(|mut shard| shard.index.set_dispatchable(rider, dispatchable))
            .unwrap_or(false)
    }

    /// The shard holding the rider, if it is indexed.
    pub fn home(&self, rider: RiderId) -> Option<ShardId> {
        self.homes.get(&rider).map(|home| *home)
    }

    /// Where the rider is, when it was last seen (Unix seconds), and whether it is dispatchable.
    pub fn get(&self, rider: RiderId) -> Option<(LatLon, u32, bool)> {
        let home = *self.homes.get(&rider)?;
        self.shard(home).read().ok()?.index.get(rider)
    }

    /// The `limit` nearest riders within `radius_m` of `at` passing `filter(seen, dispatchable)`,
    /// nearest first, across every shard the search disk touches.
    pub fn nearest(
        &self,
        at: LatLon,
        radius_m: f64,
        limit: usize,
        filter: impl Fn(u32, bool) -> bool,
    ) -> Vec<Found> {
        let region = self.map.region_resolution();
        let mut touched: Vec<ShardId> = at
            .cell(region)
            .grid_disk::<Vec<_>>(covering_k(radius_m, region))
            .into_iter()
            .map(|cell| self.map.shard_of_cell(cell))
            .collect();
        touched.sort_unstable();
        touched.dedup();
        // Locks are taken in shard order, so two searches can never wait on each other in a
        // cycle with an update (which holds at most one lock at a time anyway).
        let guards: Vec<(ShardId, RwLockReadGuard<'_, Shard>)> = touched
            .into_iter()
            .filter_map(|id| self.shard(id).read().ok().map(|guard| (id, guard)))
            .collect();
        let view = View {
            map: self.map,
            guards,
        };
        index::nearest(&view, at, radius_m, limit, filter)
    }

    /// Takes every position changed since the last call, for the snapshot writer.
    pub fn take_dirty(&self) -> Vec<PositionSnapshot> {
        let mut out = Vec::new();
        for shard in &self.shards {
            if let Ok(mut shard) = shard.write()
                && !shard.dirty.is_empty()
            {
                out.extend(std::mem::take(&mut shard.dirty).into_values());
            }
        }
        out
    }

    /// Riders passing `filter(seen, dispatchable)` per cell at `resolution` (coarser than the
    /// index's), for statistics. Walks the whole index, in memory.
    pub fn count_by_cell(
        &self,
        resolution: h3o::Resolution,
        filter: impl Fn(u32, bool) -> bool + Copy,
    ) -> HashMap<CellIndex, usize> {
        let mut counts = HashMap::new();
        for shard in &self.shards {
            let Ok(shard) = shard.read() else { continue };
            for (cell, count) in shard.index.count_by_cell(filter) {
                *counts
                    .entry(cell.parent(resolution).unwrap_or(cell))
                    .or_insert(0) += count;
            }
        }
        counts
    }

    /// Riders per shard, for statistics.
    pub fn counts(&self) -> Vec<(ShardId, usize)> {
        self.shards
            .iter()
            .enumerate()
            .filter_map(|(i, shard)| Some((ShardId(i as u32), shard.read().ok()?.index.len())))
            .collect()
    }
}

/// The read-locked shards of one search, seen as one set of buckets.
struct View<'a> {
    map: ShardMap,
    guards: Vec<(ShardId, RwLockReadGuard<'a, Shard>)>,
}

impl Buckets for View<'_> {
    fn bucket(&self, cell: CellIndex) -> Option<&[Slot]> {
        let shard = self.map.shard_of_cell(cell);
        let (_, guard) = self.guards.iter().find(|(id, _)| *id == shard)?;
        guard.index.bucket(cell)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(lat: f64, lon: f64) -> LatLon {
        LatLon::new(lat, lon).expect("in range")
    }

    #[test]
    fn a_rider_crossing_a_shard_border_is_handed_off_and_still_found() {
        // Small regions and many shards, so a short ride crosses a border.
        let map = ShardMap::new(7, 64).expect("map");
        let riders = RiderIndex::new(map);
        let rider = RiderId::new();
        let now = OffsetDateTime::now_utc();
        let start = point(12.9716, 77.5946);
        let first = riders.update(rider, start, now, Some(true));
        assert!(!first.handed_off);
        let mut crossed = None;
        for step in 1..200 {
            let at = point(12.9716 + f64::from(step) * 0.001, 77.5946);
            let update = riders.update(rider, at, now, None);
            if update.handed_off {
                crossed = Some((at, update));
                break;
            }
        }
        let (at, update) = crossed.expect("crossed into another shard within 20 km");
        assert_ne!(update.shard, first.shard);
        assert_eq!(riders.len(), 1);
        let (where_now, _, dispatchable) = riders.get(rider).expect("indexed");
        assert!(where_now.distance_m(at) < 0.01);
        assert!(dispatchable, "the flag travels with the rider");
        let found = riders.nearest(at, 1000.0, 5, |_, ok| ok);
        assert_eq!(
            found.iter().map(|f| f.rider).collect::<Vec<_>>(),
            vec![rider]
        );
        // Searches from across the border find it too.
        let found = riders.nearest(start, 25_000.0, 5, |_, ok| ok);
        assert_eq!(found.len(), 1);
    }

    #[test]
    fn snapshots_take_each_moved_rider_once() {
        let riders = RiderIndex::new(ShardMap::new(5, 8).expect("map"));
        let (a, b) = (RiderId::new(), RiderId::new());
        let now = OffsetDateTime::now_utc();
        riders.update(a, point(12.97, 77.59), now, None);
        riders.update(a, point(12.98, 77.59), now, None);
        riders.update(b, point(12.99, 77.59), now, None);
        riders.restore(RiderId::new(), point(12.9, 77.5), now, true);
        let mut dirty = riders.take_dirty();
        dirty.sort_by_key(|p| p.rider);
        assert_eq!(dirty.len(), 2);
        let a_snapshot = dirty.iter().find(|p| p.rider == a).expect("a");
        assert_eq!(a_snapshot.location, point(12.98, 77.59));
        assert!(riders.take_dirty().is_empty());
        assert!(
            !riders.get(a).expect("a").2,
            "new riders are not dispatchable"
        );
        assert!(riders.set_dispatchable(a, true));
        assert!(riders.get(a).expect("a").2);
    }
}
