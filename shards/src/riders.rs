//! The riders of this node, sharded by region. Each shard's spatial index sits behind its own
//! lock: a location update takes one shard's write lock (uncontended but for the rare search
//! that reads the same shard), and a search read-locks only the shards whose cells it reaches.
//! Messages to a shard actor would cost a round trip per shard a search spans (several
//! microseconds each, measured); an uncontended lock costs tens of nanoseconds, and the shard
//! stays the unit of ownership for routing between nodes.
//!
//! Positions are soft state: each shard remembers which riders moved since the last snapshot,
//! and [`RiderIndex::take_dirty`] hands them to the writer that persists them in batches.
//!
//! A slice is this node's own while its shard runs here ([`RiderIndex::open`]): it takes
//! [`RiderIndex::update`], remembers what to snapshot, and its riders have actors. In a cluster
//! the slices of shards other nodes run hold a read-only *copy*: the positions of the riders in
//! the regions this node copies ([`RiderIndex::copy_regions`]), replicated from whichever node
//! ingested them ([`RiderIndex::copy`]), so that searches read memory and never another node.
//! An owner's update for a slice that does not run here is refused with [`NotRunning`];
//! [`RiderIndex::close`] turns the slice into a copy (keeping the riders of copied regions, so a
//! shard's next owner, which copied them too, starts with every rider in view) and hands back
//! the positions not yet written. The running flag is read under the lock the update takes
//! anyway, so ownership costs the hot path nothing.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet};
use std::sync::{RwLock, RwLockReadGuard, TryLockError};

use h3o::CellIndex;
use time::OffsetDateTime;
use tomato_domain::geo::covering_k;
use tomato_domain::{LatLon, RiderId};
use tomato_store::PositionSnapshot;

use crate::index::{self, Bucket, Buckets, Found, INDEX_RESOLUTION, SpatialIndex};
use crate::{ShardId, ShardMap};

/// One shard's part of the index.
#[derive(Debug, Default)]
struct Slice {
    /// The shard runs on this node: its slice takes updates and answers searches.
    running: bool,
    index: SpatialIndex,
    /// Riders whose position changed since the last snapshot, with that position.
    dirty: HashMap<RiderId, PositionSnapshot>,
    /// Riders whose dispatchable flag this node has not learnt yet (it reads false, so
    /// dispatch passes them by): they came with no flag, and either their profile is being
    /// read here or the flag of the node that ingests their positions comes with the next one.
    unknown: HashSet<RiderId>,
}

/// The position's shard does not run on this node (it is stopped, starting, or owned by
/// another node).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{0} does not run on this node")]
pub struct NotRunning(pub ShardId);

/// Every rider of the node, by shard.
#[derive(Debug)]
pub struct RiderIndex {
    map: ShardMap,
    shards: Vec<RwLock<Slice>>,
    /// Which shard holds each rider, so a rider crossing a border is found and handed off.
    homes: dashmap::DashMap<RiderId, ShardId>,
    /// The regions whose riders the slices of other nodes' shards copy, and the regions where
    /// riders report at all (a cluster's node sets both; a node alone runs every shard and
    /// copies nothing).
    copied: RwLock<Copied>,
}

/// Which regions a node copies, out of those where riders report.
#[derive(Debug, Default)]
struct Copied {
    regions: HashSet<CellIndex>,
    active: HashSet<CellIndex>,
}

/// Who places a position: the shard's owner, or this node's copy of another node's shard.
/// Either way `newcomer` is the flag the ingesting node knew, which a rider new here, or whose
/// flag is still unknown here, takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hand {
    Owner { newcomer: Option<bool> },
    Copy { newcomer: Option<bool> },
}

/// Where an update left the rider.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Update {
    pub shard: ShardId,
    pub cell: CellIndex,
    /// The rider changed shards with this update.
    pub handed_off: bool,
    /// The rider was not in the index before this update (first report since it started, or
    /// since its shard was handed over): its dispatchable flag starts unknown unless given.
    pub entered: bool,
    /// The rider's dispatchable flag after the update; `None` while this node has not learnt
    /// it (dispatch passes the rider by meanwhile).
    pub dispatchable: Option<bool>,
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
            copied: RwLock::default(),
        }
    }

    /// Whether the riders of `region` are copied here.
    fn is_copied(&self, region: CellIndex) -> bool {
        self.copied
            .read()
            .map(|copied| copied.regions.contains(&region))
            .unwrap_or(false)
    }

    /// Whether this node sees every rider of `region` without asking: it copies the region, or
    /// nobody reports there (as of the last reading of the active regions).
    fn sees(&self, region: CellIndex) -> bool {
        self.copied
            .read()
            .map(|copied| copied.regions.contains(&region) || !copied.active.contains(&region))
            .unwrap_or(false)
    }

    /// The regions whose riders this node copies.
    pub fn regions_copied(&self) -> HashSet<CellIndex> {
        self.copied
            .read()
            .map(|copied| copied.regions.clone())
            .unwrap_or_default()
    }

    /// Sets the regions whose riders this node copies, out of the `active` ones where riders
    /// report. The copies of regions left out are dropped: nothing keeps them fresh any more.
    pub fn copy_regions(&self, regions: HashSet<CellIndex>, active: HashSet<CellIndex>) {
        let dropped: HashSet<CellIndex> = match self.copied.write() {
            Ok(mut copied) => {
                let dropped = copied.regions.difference(&regions).copied().collect();
                *copied = Copied { regions, active };
                dropped
            }
            Err(_) => return,
        };
        if dropped.is_empty() {
            return;
        }
        for (id, slice) in self.shards.iter().enumerate() {
            let Ok(mut slice) = slice.write() else {
                continue;
            };
            if !slice.running {
                self.drop_riders(ShardId(id as u32), &mut slice, |region| {
                    dropped.contains(&region)
                });
            }
        }
    }

    /// Sets the regions where riders report, the copied ones staying as they are.
    pub fn set_active_regions(&self, active: HashSet<CellIndex>) {
        if let Ok(mut copied) = self.copied.write() {
            copied.active = active;
        }
    }

    /// Drops from shard `id`'s slice the riders of the regions `drop` picks.
    fn drop_riders(&self, id: ShardId, slice: &mut Slice, drop: impl Fn(CellIndex) -> bool) {
        let gone: Vec<RiderId> = slice
            .index
            .riders()
            .filter(|rider| {
                slice
                    .index
                    .get(*rider)
                    .is_some_and(|(at, _, _)| drop(self.map.region_of(at.cell(INDEX_RESOLUTION))))
            })
            .collect();
        for rider in gone {
            slice.index.remove(rider);
            slice.unknown.remove(&rider);
            self.homes.remove_if(&rider, |_, home| *home == id);
        }
    }

    /// Applies a position another node ingested (or this one, for a shard it does not run) to
    /// the copy. `newcomer` is the rider's dispatchable flag as the ingesting node knew it: a
    /// rider new to the copy, or whose flag the copy has not learnt yet, takes it (and stays
    /// unknown when `None`); a known rider keeps the flag heard for it (a flag carried by an
    /// older position must not undo a newer change). `None` when the position's region is not
    /// copied here, or its shard runs here (then the owner's [`RiderIndex::update_heard`]
    /// applies it). `cell` is `at`'s at [`INDEX_RESOLUTION`], which the caller has already
    /// worked out.
    pub fn copy_at(
        &self,
        rider: RiderId,
        cell: CellIndex,
        at: LatLon,
        seen_at: OffsetDateTime,
        newcomer: Option<bool>,
    ) -> Option<Update> {
        if !self.is_copied(self.map.region_of(cell)) {
            return None;
        }
        self.place(rider, cell, at, seen_at, None, Hand::Copy { newcomer })
            .ok()
    }

    fn shard(&self, id: ShardId) -> &RwLock<Slice> {
        &self.shards[id.0 as usize]
    }

    /// Lets the shard's slice take updates (its shard started here).
    pub fn open(&self, shard: ShardId) {
        if let Ok(mut slice) = self.shard(shard).write() {
            slice.running = true;
        }
    }

    /// Whether the shard's slice is open.
    pub fn is_open(&self, shard: ShardId) -> bool {
        self.shard(shard)
            .read()
            .map(|slice| slice.running)
            .unwrap_or(false)
    }

    /// Closes the shard's slice: it keeps the riders of the regions copied here, as a copy,
    /// and drops the others; returns the positions not yet snapshotted, for the caller to write
    /// before the shard is given up.
    pub fn close(&self, shard: ShardId) -> Vec<PositionSnapshot> {
        let Ok(mut slice) = self.shard(shard).write() else {
            return Vec::new();
        };
        slice.running = false;
        self.drop_riders(shard, &mut slice, |region| !self.is_copied(region));
        std::mem::take(&mut slice.dirty).into_values().collect()
    }

    /// How many riders are indexed.
    pub fn len(&self) -> usize {
        self.homes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.homes.is_empty()
    }

    /// Applies a position. `dispatchable` of `None` keeps the rider's flag (false for a rider
    /// new to the index). A rider whose new cell lies in another shard is handed off to it. A
    /// position in a shard that does not run here is refused, and changes nothing.
    pub fn update(
        &self,
        rider: RiderId,
        at: LatLon,
        seen_at: OffsetDateTime,
        dispatchable: Option<bool>,
    ) -> Result<Update, NotRunning> {
        self.update_at(rider, at.cell(INDEX_RESOLUTION), at, seen_at, dispatchable)
    }

    /// [`RiderIndex::update`] with `at`'s cell at [`INDEX_RESOLUTION`] already worked out.
    pub fn update_at(
        &self,
        rider: RiderId,
        cell: CellIndex,
        at: LatLon,
        seen_at: OffsetDateTime,
        dispatchable: Option<bool>,
    ) -> Result<Update, NotRunning> {
        self.place(
            rider,
            cell,
            at,
            seen_at,
            dispatchable,
            Hand::Owner { newcomer: None },
        )
    }

    /// The owner's [`RiderIndex::update_at`] for a position another node ingested: a rider
    /// new here, or whose flag is not known here yet, takes `newcomer`, the flag the ingesting
    /// node knew (as [`RiderIndex::copy_at`] does), instead of having its profile read again.
    pub fn update_heard(
        &self,
        rider: RiderId,
        cell: CellIndex,
        at: LatLon,
        seen_at: OffsetDateTime,
        newcomer: Option<bool>,
    ) -> Result<Update, NotRunning> {
        self.place(rider, cell, at, seen_at, None, Hand::Owner { newcomer })
    }

    /// Puts a rider at `cell`, by the shard's owner (the slice must run here, and remembers
    /// the position for the next snapshot) or into the copy (the slice must not run here). A
    /// rider whose cell lies in another shard than before is handed off, keeping its flag, or
    /// its not knowing it.
    fn place(
        &self,
        rider: RiderId,
        cell: CellIndex,
        at: LatLon,
        seen_at: OffsetDateTime,
        dispatchable: Option<bool>,
        hand: Hand,
    ) -> Result<Update, NotRunning> {
        let (owner, newcomer) = match hand {
            Hand::Owner { newcomer } => (true, newcomer),
            Hand::Copy { newcomer } => (false, newcomer),
        };
        let shard = self.map.shard_of_cell(cell);
        // The flag this node knows for the rider (given now, or held before), and whether it
        // has none to go on: new here, or still waiting for one.
        let mut flag = dispatchable;
        let home = self.homes.get(&rider).map(|home| *home);
        let mut waiting = home.is_none();
        let handed_off = home.is_some_and(|old| old != shard);
        if let Some(old) = home
            && handed_off
        {
            if self.is_open(shard) != owner {
                return Err(NotRunning(shard));
            }
            if let Ok(mut old_shard) = self.shard(old).write()
                && let Some((_, _, was)) = old_shard.index.remove(rider)
            {
                old_shard.dirty.remove(&rider);
                if old_shard.unknown.remove(&rider) {
                    waiting = true;
                } else {
                    flag = flag.or(Some(was));
                }
            }
        }
        let mut target = self.shard(shard).write().map_err(|_| NotRunning(shard))?;
        if target.running != owner {
            return Err(NotRunning(shard));
        }
        if !handed_off && target.unknown.contains(&rider) {
            waiting = true;
        }
        if !waiting {
            flag = flag.or_else(|| target.index.get(rider).map(|(_, _, d)| d));
        }
        let flag = flag.or(if waiting { newcomer } else { None });
        // Only a waiting rider can be in (or go into) the unknown set: a known one, the hot
        // path's case, touches it no more.
        if waiting {
            if flag.is_some() {
                target.unknown.remove(&rider);
            } else {
                target.unknown.insert(rider);
            }
        }
        target
            .index
            .upsert_in(cell, rider, at, secs(seen_at), flag.unwrap_or(false));
        if owner {
            target.dirty.insert(
                rider,
                PositionSnapshot {
                    rider,
                    location: at,
                    seen_at,
                },
            );
        }
        drop(target);
        self.homes.insert(rider, shard);
        Ok(Update {
            shard,
            cell,
            handed_off,
            entered: home.is_none(),
            dispatchable: flag.or(if waiting { None } else { Some(false) }),
        })
    }

    /// Loads a rider from its stored snapshot without marking it dirty (node start). Riders of
    /// shards that do not run here are left out; they reappear with their next position.
    pub fn restore(&self, rider: RiderId, at: LatLon, seen_at: OffsetDateTime, dispatchable: bool) {
        let cell = at.cell(INDEX_RESOLUTION);
        let shard = self.map.shard_of_cell(cell);
        if let Ok(mut target) = self.shard(shard).write()
            && target.running
        {
            target
                .index
                .upsert_in(cell, rider, at, secs(seen_at), dispatchable);
            target.unknown.remove(&rider);
            self.homes.insert(rider, shard);
        }
    }

    /// Sets whether dispatch may offer the rider work. False if the rider is not indexed.
    pub fn set_dispatchable(&self, rider: RiderId, dispatchable: bool) -> bool {
        let Some(home) = self.homes.get(&rider).map(|home| *home) else {
            return false;
        };
        self.shard(home)
            .write()
            .map(|mut shard| {
                let set = shard.index.set_dispatchable(rider, dispatchable);
                if set {
                    shard.unknown.remove(&rider);
                }
                set
            })
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
    /// nearest first, across every shard the search reaches.
    pub fn nearest(
        &self,
        at: LatLon,
        radius_m: f64,
        limit: usize,
        filter: impl Fn(u32, bool) -> bool,
    ) -> Vec<Found> {
        // A search mostly ends a cell or two from its point, in one shard or two: those are
        // locked as the search reaches them, where locking every shard the radius could touch
        // (about 28 of 64 for 5 km) cost a third of a search.
        let reached = Reached {
            index: self,
            held: RefCell::new(Vec::with_capacity(4)),
            refused: Cell::new(false),
        };
        let found = index::nearest(&reached, at, radius_m, limit, &filter);
        if !reached.refused.get() {
            return found;
        }
        drop(reached);
        // A shard was busy out of order: start again holding nothing, and take every shard the
        // radius touches in shard order.
        let guards: Vec<(ShardId, RwLockReadGuard<'_, Slice>)> = self
            .shards_within(at, radius_m)
            .into_iter()
            .filter_map(|id| self.shard(id).read().ok().map(|guard| (id, guard)))
            .collect();
        let view = View {
            map: self.map,
            guards,
        };
        index::nearest(&view, at, radius_m, limit, filter)
    }

    /// The shards whose zones a search of `radius_m` around `at` covers, in order.
    pub fn shards_within(&self, at: LatLon, radius_m: f64) -> Vec<ShardId> {
        self.shards_of_zones(at, radius_m, |_| true)
    }

    /// The shards of the zones a search of `radius_m` around `at` covers whose riders this node
    /// does not see: their shard runs elsewhere, and riders report in their region, which is not
    /// copied here. A search must ask those shards' owners.
    pub fn shards_unseen(&self, at: LatLon, radius_m: f64) -> Vec<ShardId> {
        self.shards_of_zones(at, radius_m, |zone| {
            !self.is_open(self.map.shard_of_cell(zone)) && !self.sees(self.map.region_of(zone))
        })
    }

    fn shards_of_zones(
        &self,
        at: LatLon,
        radius_m: f64,
        keep: impl Fn(CellIndex) -> bool,
    ) -> Vec<ShardId> {
        let zone = self.map.zone_resolution();
        let mut touched: Vec<ShardId> = at
            .cell(zone)
            .grid_disk::<Vec<_>>(covering_k(radius_m, zone))
            .into_iter()
            .filter(|zone| keep(*zone))
            .map(|cell| self.map.shard_of_cell(cell))
            .collect();
        touched.sort_unstable();
        touched.dedup();
        touched
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
    /// index's), in the running shards (a copy is counted by its owner), for statistics. Walks
    /// the whole index, in memory.
    pub fn count_by_cell(
        &self,
        resolution: h3o::Resolution,
        filter: impl Fn(u32, bool) -> bool + Copy,
    ) -> HashMap<CellIndex, usize> {
        let mut counts = HashMap::new();
        for shard in &self.shards {
            let Ok(shard) = shard.read() else { continue };
            if !shard.running {
                continue;
            }
            for (cell, count) in shard.index.count_by_cell(filter) {
                *counts
                    .entry(cell.parent(resolution).unwrap_or(cell))
                    .or_insert(0) += count;
            }
        }
        counts
    }

    /// The riders passing `filter(seen, dispatchable)` in the running shards, for a map: how
    /// many, and at most about `max` of them (an even sample past it) with their position and
    /// whether they are dispatchable.
    pub fn sample(
        &self,
        filter: impl Fn(u32, bool) -> bool + Copy,
        max: usize,
    ) -> (usize, Vec<(LatLon, bool)>) {
        let mut total = 0;
        for shard in &self.shards {
            let Ok(shard) = shard.read() else { continue };
            if shard.running {
                total += shard
                    .index
                    .count_by_cell(filter)
                    .map(|(_, n)| n)
                    .sum::<usize>();
            }
        }
        let stride = total.div_ceil(max.max(1)).max(1);
        let mut points = Vec::with_capacity(total.min(max) + self.shards.len());
        for shard in &self.shards {
            let Ok(shard) = shard.read() else { continue };
            if shard.running {
                shard.index.sample(filter, stride, &mut points);
            }
        }
        (total, points)
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
    guards: Vec<(ShardId, RwLockReadGuard<'a, Slice>)>,
}

impl Buckets for View<'_> {
    fn with_bucket<R>(&self, cell: CellIndex, f: impl FnOnce(&Bucket) -> R) -> Option<R> {
        let shard = self.map.shard_of_cell(cell);
        let (_, guard) = self.guards.iter().find(|(id, _)| *id == shard)?;
        guard.index.with_bucket(cell, f)
    }
}

/// The shards of one search, read-locked as the search reaches them.
///
/// Deadlock is ruled out by the order locks are waited for: a search waits only for a shard
/// above every shard it holds, and an update holds one shard at a time. A shard below one it
/// holds is only tried; if it is busy the search is `refused`, and [`RiderIndex::nearest`]
/// drops everything and starts again in shard order.
struct Reached<'a> {
    index: &'a RiderIndex,
    held: RefCell<Vec<(ShardId, RwLockReadGuard<'a, Slice>)>>,
    refused: Cell<bool>,
}

impl Buckets for Reached<'_> {
    fn with_bucket<R>(&self, cell: CellIndex, f: impl FnOnce(&Bucket) -> R) -> Option<R> {
        if self.refused.get() {
            return None;
        }
        let shard = self.index.map.shard_of_cell(cell);
        let mut held = self.held.borrow_mut();
        let at = match held.iter().position(|(id, _)| *id == shard) {
            Some(at) => at,
            None => {
                let lock = self.index.shard(shard);
                let guard = if held.iter().all(|(id, _)| *id < shard) {
                    // A poisoned slice is left out, as in the ordered search.
                    lock.read().ok()?
                } else {
                    match lock.try_read() {
                        Ok(guard) => guard,
                        Err(TryLockError::WouldBlock) => {
                            self.refused.set(true);
                            return None;
                        }
                        Err(TryLockError::Poisoned(_)) => return None,
                    }
                };
                held.push((shard, guard));
                held.len() - 1
            }
        };
        held[at].1.index.with_bucket(cell, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(lat: f64, lon: f64) -> LatLon {
        LatLon::new(lat, lon).expect("in range")
    }

    fn open_index(map: ShardMap) -> RiderIndex {
        let riders = RiderIndex::new(map);
        for shard in 0..map.count() {
            riders.open(ShardId(shard));
        }
        riders
    }

    #[test]
    fn a_closed_slice_refuses_updates_and_gives_back_unsaved_positions() {
        let map = ShardMap::new(5, 5, 4).expect("map");
        let riders = open_index(map);
        let (a, b) = (RiderId::new(), RiderId::new());
        let now = OffsetDateTime::now_utc();
        let here = point(12.97, 77.59);
        let shard = riders.update(a, here, now, Some(true)).expect("open").shard;
        riders.update(b, here, now, None).expect("open");
        let mut unsaved = riders.close(shard);
        unsaved.sort_by_key(|p| p.rider);
        assert_eq!(unsaved.len(), 2, "both positions are handed back");
        assert!(riders.get(a).is_none() && riders.home(a).is_none());
        assert!(riders.is_empty());
        assert!(riders.nearest(here, 1000.0, 5, |_, _| true).is_empty());
        assert_eq!(riders.update(a, here, now, None), Err(NotRunning(shard)));
        riders.restore(a, here, now, true);
        assert!(riders.get(a).is_none(), "restores skip closed slices");
        riders.open(shard);
        assert!(riders.update(a, here, now, None).is_ok());
        assert!(
            !riders.get(a).expect("indexed").2,
            "a fresh start knows no flag"
        );
    }

    #[test]
    fn a_copy_holds_other_nodes_riders_of_copied_regions_only() {
        let map = ShardMap::new(7, 5, 16).expect("map");
        let riders = RiderIndex::new(map);
        let now = OffsetDateTime::now_utc();
        let here = point(12.97, 77.59);
        let far = point(28.61, 77.21);
        let region = map.region_of(here.cell(INDEX_RESOLUTION));
        riders.copy_regions(HashSet::from([region]), HashSet::from([region]));
        let (a, b) = (RiderId::new(), RiderId::new());
        let copy = |rider, at: LatLon, newcomer| {
            riders
                .copy_at(rider, at.cell(INDEX_RESOLUTION), at, now, newcomer)
                .map(|update| (update.entered, update.dispatchable))
        };
        assert_eq!(copy(a, here, None), Some((true, None)), "new to the copy");
        assert!(riders.nearest(here, 500.0, 5, |_, ok| ok).is_empty());
        assert_eq!(copy(a, here, None), Some((false, None)), "still unknown");
        assert_eq!(
            copy(a, here, Some(false)),
            Some((false, Some(false))),
            "an unknown rider takes the flag a later position carries"
        );
        assert_eq!(
            copy(a, here, Some(true)),
            Some((false, Some(false))),
            "a known rider keeps the flag heard for it"
        );
        assert_eq!(copy(b, far, Some(true)), None, "not a copied region");
        assert!(riders.set_dispatchable(a, true));
        let found = riders.nearest(here, 500.0, 5, |_, ok| ok);
        assert_eq!(found.iter().map(|f| f.rider).collect::<Vec<_>>(), vec![a]);
        assert!(
            riders.take_dirty().is_empty(),
            "a copy is not snapshotted here"
        );
        assert!(
            riders
                .count_by_cell(map.region_resolution(), |_, _| true)
                .is_empty()
        );

        // Its shard starts here: the copy is the new owner's index, flag and all; the owner's
        // updates apply, the copy's refuse.
        let shard = map.shard_of(here);
        riders.open(shard);
        assert!(riders.get(a).expect("kept").2);
        assert_eq!(copy(a, here, None), None);
        assert!(!riders.update(a, here, now, None).expect("open").entered);
        // Stopped again: the rider stays in view as a copy; the snapshot is handed back.
        assert_eq!(riders.close(shard).len(), 1);
        assert_eq!(riders.nearest(here, 500.0, 5, |_, ok| ok).len(), 1);
        // The region is no longer copied: its riders go.
        riders.copy_regions(HashSet::new(), HashSet::from([region]));
        assert!(riders.get(a).is_none() && riders.is_empty());
        assert!(riders.shards_unseen(here, 100.0).contains(&shard));
        riders.copy_regions(HashSet::new(), HashSet::new());
        assert!(
            riders.shards_unseen(here, 100.0).is_empty(),
            "nobody reports there: nothing to ask for"
        );
    }

    #[test]
    fn a_rider_new_to_a_copy_starts_with_the_flag_its_position_carried() {
        let map = ShardMap::new(7, 5, 16).expect("map");
        let riders = RiderIndex::new(map);
        let now = OffsetDateTime::now_utc();
        let here = point(12.97, 77.59);
        let region = map.region_of(here.cell(INDEX_RESOLUTION));
        riders.copy_regions(HashSet::from([region]), HashSet::from([region]));
        let rider = RiderId::new();
        let update = riders
            .copy_at(rider, here.cell(INDEX_RESOLUTION), here, now, Some(true))
            .expect("copied");
        assert!(update.entered && update.dispatchable == Some(true));
        let found = riders.nearest(here, 500.0, 5, |_, ok| ok);
        assert_eq!(
            found.iter().map(|f| f.rider).collect::<Vec<_>>(),
            vec![rider]
        );
        // A change heard later wins over what an older position carried.
        assert!(riders.set_dispatchable(rider, false));
        let update = riders
            .copy_at(rider, here.cell(INDEX_RESOLUTION), here, now, Some(true))
            .expect("copied");
        assert!(!update.entered && update.dispatchable == Some(false));
    }

    #[test]
    fn a_rider_crossing_a_shard_border_is_handed_off_and_still_found() {
        // Small regions and many shards, so a short ride crosses a border.
        let map = ShardMap::new(7, 5, 64).expect("map");
        let riders = open_index(map);
        let rider = RiderId::new();
        let now = OffsetDateTime::now_utc();
        let start = point(12.9716, 77.5946);
        let first = riders.update(rider, start, now, Some(true)).expect("open");
        assert!(!first.handed_off);
        let mut crossed = None;
        for step in 1..200 {
            let at = point(12.9716 + f64::from(step) * 0.001, 77.5946);
            let update = riders.update(rider, at, now, None).expect("open");
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
    fn an_owner_hearing_a_rider_takes_the_flag_its_positions_carry_once_it_has_one() {
        let map = ShardMap::new(7, 5, 64).expect("map");
        let riders = open_index(map);
        let rider = RiderId::new();
        let now = OffsetDateTime::now_utc();
        let heard = |at: LatLon, flag| {
            riders
                .update_heard(rider, at.cell(INDEX_RESOLUTION), at, now, flag)
                .expect("open")
        };
        let start = point(12.9716, 77.5946);
        let first = heard(start, None);
        assert!(first.entered && first.dispatchable.is_none());
        // Still unknown after crossing into another shard: the waiting travels with it.
        let mut at = start;
        for step in 1..200 {
            at = point(12.9716 + f64::from(step) * 0.001, 77.5946);
            let update = heard(at, None);
            assert_eq!(update.dispatchable, None);
            if update.handed_off {
                break;
            }
        }
        assert_ne!(map.shard_of(at), first.shard, "crossed within 20 km");
        assert!(riders.nearest(at, 1000.0, 5, |_, ok| ok).is_empty());
        assert_eq!(heard(at, Some(true)).dispatchable, Some(true));
        assert_eq!(riders.nearest(at, 1000.0, 5, |_, ok| ok).len(), 1);
        // Known now: a change heard here wins over what a later position carries.
        assert!(riders.set_dispatchable(rider, false));
        assert_eq!(heard(at, Some(true)).dispatchable, Some(false));
        // The owner's own update of a rider new to it knows nothing until its profile is read.
        let other = RiderId::new();
        let update = riders.update(other, start, now, None).expect("open");
        assert!(update.entered && update.dispatchable.is_none());
        assert!(riders.set_dispatchable(other, true));
        assert_eq!(
            riders
                .update(other, start, now, None)
                .expect("open")
                .dispatchable,
            Some(true)
        );
    }

    #[test]
    fn a_search_over_many_shards_finds_what_one_index_finds() {
        // Every index cell is a region of its own, so a search crosses shards at each cell.
        let riders = open_index(ShardMap::new(8, 5, 16).expect("map"));
        let mut whole = SpatialIndex::default();
        let now = OffsetDateTime::now_utc();
        let mut next = crate::fixed_stream(0x9E37_79B9_7F4A_7C15);
        for _ in 0..800 {
            let (rider, at) = (
                RiderId::new(),
                point(12.95 + next() * 0.05, 77.58 + next() * 0.05),
            );
            riders.update(rider, at, now, Some(true)).expect("open");
            whole.upsert(rider, at, secs(now), true);
        }
        for _ in 0..300 {
            let at = point(12.94 + next() * 0.07, 77.57 + next() * 0.07);
            let limit = 1 + (next() * 6.0) as usize;
            let ids = |found: Vec<Found>| found.into_iter().map(|f| f.rider).collect::<Vec<_>>();
            assert_eq!(
                ids(riders.nearest(at, 3_000.0, limit, |_, ok| ok)),
                ids(whole.nearest(at, 3_000.0, limit, |_, ok| ok)),
                "around {at}"
            );
        }
    }

    #[test]
    fn a_search_meeting_a_busy_shard_out_of_order_starts_again_in_order() {
        let map = ShardMap::new(8, 5, 16).expect("map");
        let riders = open_index(map);
        // A point whose cell's shard is above the shard of a neighbouring cell: the search
        // holds the first when it reaches the second, so it may only try the second.
        let (origin, neighbour) = (0..100)
            .map(|i| point(12.9 + f64::from(i) * 0.01, 77.59).cell(INDEX_RESOLUTION))
            .find_map(|origin| {
                let above = map.shard_of_cell(origin);
                origin
                    .grid_ring_fast(1)
                    .flatten()
                    .find(|cell| map.shard_of_cell(*cell) < above)
                    .map(|neighbour| (origin, neighbour))
            })
            .expect("some neighbour's shard is below");
        let centre = |cell: CellIndex| {
            let at = h3o::LatLng::from(cell);
            point(at.lat(), at.lng())
        };
        let rider = RiderId::new();
        let now = OffsetDateTime::now_utc();
        riders
            .update(rider, centre(neighbour), now, Some(true))
            .expect("open");
        let busy = riders
            .shard(map.shard_of_cell(neighbour))
            .write()
            .expect("not poisoned");
        std::thread::scope(|scope| {
            let search = scope.spawn(|| riders.nearest(centre(origin), 2_000.0, 1, |_, ok| ok));
            std::thread::sleep(std::time::Duration::from_millis(100));
            assert!(
                !search.is_finished(),
                "the search waits for the busy shard instead of answering without it"
            );
            drop(busy);
            let found = search.join().expect("the search ends");
            assert_eq!(
                found.iter().map(|f| f.rider).collect::<Vec<_>>(),
                vec![rider]
            );
        });
    }

    #[test]
    fn snapshots_take_each_moved_rider_once() {
        let riders = open_index(ShardMap::new(5, 5, 8).expect("map"));
        let (a, b) = (RiderId::new(), RiderId::new());
        let now = OffsetDateTime::now_utc();
        for (rider, lat) in [(a, 12.97), (a, 12.98), (b, 12.99)] {
            riders
                .update(rider, point(lat, 77.59), now, None)
                .expect("open");
        }
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
