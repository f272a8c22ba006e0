//! The in-memory spatial index of riders: the location hot path. Riders sit in buckets by H3
//! cell (resolution 8, cells of about 0.7 km²); a nearest search walks rings of cells outward
//! from the searched point and stops as soon as no farther ring can hold anything nearer than
//! what it has. Within the rings it skips every cell whose nearest possible point (its centre
//! less its reach) is farther than what it has: in a dense city the five nearest riders are a
//! few dozen metres away, and most cells around are never opened. Positions are kept as unit
//! vectors, so ranking by the squared chord between two points is exactly ranking by
//! great-circle distance, at the price of a few multiplications instead of the haversine's
//! trigonometry.

use std::collections::BinaryHeap;

use foldhash::HashMap;

use h3o::{CellIndex, LatLng, Resolution};
use tomato_domain::geo::{covering_k, ring_min_distance_m};
use tomato_domain::{LatLon, RiderId};

/// Resolution of the index's cells.
pub const INDEX_RESOLUTION: Resolution = Resolution::Eight;
/// Earth's mean radius, the one great-circle distances use everywhere else (GRS80).
const EARTH_RADIUS_M: f64 = 6_371_008.8;

/// One rider in a bucket.
#[derive(Debug, Clone, Copy)]
pub struct Slot {
    rider: RiderId,
    /// Unit vector of the position.
    xyz: [f64; 3],
    /// Last update, Unix seconds.
    seen: u32,
    /// Verified, available and without an order: dispatch may offer it work.
    dispatchable: bool,
}

/// A rider found by a search.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Found {
    pub rider: RiderId,
    pub location: LatLon,
    pub distance_m: f64,
    /// Last update, Unix seconds.
    pub seen: u32,
}

/// What an update did to the rider's place in the index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// The rider was not indexed before.
    New,
    /// Same cell as before.
    Stayed,
    /// Moved to another cell.
    Moved { from: CellIndex },
}

/// The riders of one cell, and where the cell lies, so a search can tell whether anything in
/// it could be near enough to be worth scanning.
#[derive(Debug)]
pub struct Bucket {
    slots: Vec<Slot>,
    /// Unit vector of the cell's centre.
    centre: [f64; 3],
    /// The chord from the centre to the farthest point of the cell, with slack: no point H3
    /// puts in the cell is farther from its centre.
    reach: f64,
}

/// Slack on a cell's reach. A cell's edges are great-circle arcs (H3 draws them straight in a
/// gnomonic projection), so its farthest points from the centre are vertices; the slack covers
/// the rounding of both computations, and the property test checks it over the whole globe.
const REACH_SLACK: f64 = 1.01;

impl Bucket {
    fn new(cell: CellIndex) -> Self {
        let (centre, reach) = geometry(cell);
        Self {
            slots: Vec::new(),
            centre,
            reach,
        }
    }
}

/// How many cells' geometry a thread remembers for [`remembered_geometry`] (about 40 bytes
/// each, and the map's own).
const GEOMETRY_REMEMBERED: usize = 4_096;

thread_local! {
    static GEOMETRY: std::cell::RefCell<HashMap<CellIndex, ([f64; 3], f64)>> =
        std::cell::RefCell::default();
}

/// [`geometry`], remembered by the thread: a search places the empty cells around the city's
/// edge again and again, and H3's boundary of a cell costs about a microsecond. It is a pure
/// function of the cell, so a thread's memory of it never goes stale; it is forgotten whole
/// when full.
fn remembered_geometry(cell: CellIndex) -> ([f64; 3], f64) {
    GEOMETRY.with_borrow_mut(|remembered| {
        if let Some(known) = remembered.get(&cell) {
            return *known;
        }
        if remembered.len() >= GEOMETRY_REMEMBERED {
            remembered.clear();
        }
        *remembered.entry(cell).or_insert_with(|| geometry(cell))
    })
}

/// A cell's centre as a unit vector, and its reach from there (with the slack).
fn geometry(cell: CellIndex) -> ([f64; 3], f64) {
    let centre = unit_vector_of(LatLng::from(cell));
    let reach = cell
        .boundary()
        .iter()
        .map(|vertex| chord2(centre, unit_vector_of(*vertex)).sqrt())
        .fold(0.0, f64::max);
    (centre, reach * REACH_SLACK)
}

/// Where a search finds the riders of a cell: one index, or several shards' indexes.
pub trait Buckets {
    /// `f` of the riders in `cell`, if any. (A visitor rather than a borrow, so that a view
    /// over several shards may lock a shard the first time the search reaches it.)
    fn with_bucket<R>(&self, cell: CellIndex, f: impl FnOnce(&Bucket) -> R) -> Option<R>;
}

/// Riders by cell.
#[derive(Debug, Default)]
pub struct SpatialIndex {
    buckets: HashMap<CellIndex, Bucket>,
    /// Where each rider's slot is: its cell and position in the bucket.
    places: HashMap<RiderId, (CellIndex, u32)>,
}

fn unit_vector(at: LatLon) -> [f64; 3] {
    unit_vector_rad(at.lat().to_radians(), at.lon().to_radians())
}

fn unit_vector_of(at: LatLng) -> [f64; 3] {
    unit_vector_rad(at.lat_radians(), at.lng_radians())
}

fn unit_vector_rad(lat: f64, lon: f64) -> [f64; 3] {
    [lat.cos() * lon.cos(), lat.cos() * lon.sin(), lat.sin()]
}

fn to_latlon(xyz: [f64; 3]) -> LatLon {
    let lat = xyz[2].clamp(-1.0, 1.0).asin().to_degrees();
    let lon = xyz[1].atan2(xyz[0]).to_degrees();
    LatLon::new(lat, lon).unwrap_or_else(|_| unreachable!("a unit vector maps into range"))
}

fn chord2(a: [f64; 3], b: [f64; 3]) -> f64 {
    let (dx, dy, dz) = (a[0] - b[0], a[1] - b[1], a[2] - b[2]);
    dx * dx + dy * dy + dz * dz
}

fn chord2_to_m(chord2: f64) -> f64 {
    2.0 * EARTH_RADIUS_M * (chord2.sqrt() / 2.0).min(1.0).asin()
}

fn m_to_chord2(metres: f64) -> f64 {
    let chord = 2.0
        * (metres / (2.0 * EARTH_RADIUS_M))
            .min(std::f64::consts::FRAC_PI_2)
            .sin();
    chord * chord
}

/// A candidate in the search's max-heap, ordered by distance (then id, for a total order).
#[derive(Debug)]
struct Candidate(f64, Slot);

impl PartialEq for Candidate {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other).is_eq()
    }
}

impl Eq for Candidate {}

impl PartialOrd for Candidate {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Candidate {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0
            .total_cmp(&other.0)
            .then(self.1.rider.cmp(&other.1.rider))
    }
}

impl SpatialIndex {
    /// How many riders are indexed.
    pub fn len(&self) -> usize {
        self.places.len()
    }

    pub fn is_empty(&self) -> bool {
        self.places.is_empty()
    }

    /// Puts the rider at `at`, seen at `seen` (Unix seconds).
    pub fn upsert(
        &mut self,
        rider: RiderId,
        at: LatLon,
        seen: u32,
        dispatchable: bool,
    ) -> Placement {
        self.upsert_in(at.cell(INDEX_RESOLUTION), rider, at, seen, dispatchable)
    }

    /// [`upsert`](Self::upsert) with the rider's cell at [`INDEX_RESOLUTION`] already known.
    pub fn upsert_in(
        &mut self,
        cell: CellIndex,
        rider: RiderId,
        at: LatLon,
        seen: u32,
        dispatchable: bool,
    ) -> Placement {
        let slot = Slot {
            rider,
            xyz: unit_vector(at),
            seen,
            dispatchable,
        };
        match self.places.get(&rider).copied() {
            Some((old, index)) if old == cell => {
                if let Some(existing) = self
                    .buckets
                    .get_mut(&cell)
                    .and_then(|bucket| bucket.slots.get_mut(index as usize))
                {
                    *existing = slot;
                }
                Placement::Stayed
            }
            Some((old, _)) => {
                self.remove(rider);
                self.insert(cell, slot);
                Placement::Moved { from: old }
            }
            None => {
                self.insert(cell, slot);
                Placement::New
            }
        }
    }

    fn insert(&mut self, cell: CellIndex, slot: Slot) {
        let bucket = self
            .buckets
            .entry(cell)
            .or_insert_with(|| Bucket::new(cell));
        self.places
            .insert(slot.rider, (cell, bucket.slots.len() as u32));
        bucket.slots.push(slot);
    }

    /// Takes the rider out; returns where it was and when it was seen.
    pub fn remove(&mut self, rider: RiderId) -> Option<(LatLon, u32, bool)> {
        let (cell, index) = self.places.remove(&rider)?;
        let bucket = self.buckets.get_mut(&cell)?;
        let slot = bucket.slots.swap_remove(index as usize);
        // The last slot moved into the hole: tell its rider where it is now.
        if let Some(moved) = bucket.slots.get(index as usize) {
            self.places.insert(moved.rider, (cell, index));
        }
        if bucket.slots.is_empty() {
            self.buckets.remove(&cell);
        }
        Some((to_latlon(slot.xyz), slot.seen, slot.dispatchable))
    }

    /// Every rider indexed.
    pub fn riders(&self) -> impl Iterator<Item = RiderId> + '_ {
        self.places.keys().copied()
    }

    /// Marks whether dispatch may offer the rider work. Returns false if it is not indexed.
    pub fn set_dispatchable(&mut self, rider: RiderId, dispatchable: bool) -> bool {
        let Some((cell, index)) = self.places.get(&rider).copied() else {
            return false;
        };
        if let Some(slot) = self
            .buckets
            .get_mut(&cell)
            .and_then(|bucket| bucket.slots.get_mut(index as usize))
        {
            slot.dispatchable = dispatchable;
        }
        true
    }

    /// Where the rider is, when it was seen, and whether it is dispatchable.
    pub fn get(&self, rider: RiderId) -> Option<(LatLon, u32, bool)> {
        let (cell, index) = self.places.get(&rider)?;
        let slot = self.buckets.get(cell)?.slots.get(*index as usize)?;
        Some((to_latlon(slot.xyz), slot.seen, slot.dispatchable))
    }

    /// The `limit` nearest riders within `radius_m` of `at` that pass
    /// `filter(seen, dispatchable)`, nearest first.
    pub fn nearest(
        &self,
        at: LatLon,
        radius_m: f64,
        limit: usize,
        filter: impl Fn(u32, bool) -> bool,
    ) -> Vec<Found> {
        nearest(self, at, radius_m, limit, filter)
    }
}

impl SpatialIndex {
    /// For each cell holding riders that pass `filter(seen, dispatchable)`, how many.
    pub fn count_by_cell<'a>(
        &'a self,
        filter: impl Fn(u32, bool) -> bool + 'a,
    ) -> impl Iterator<Item = (CellIndex, usize)> + 'a {
        self.buckets.iter().filter_map(move |(cell, bucket)| {
            let count = bucket
                .slots
                .iter()
                .filter(|slot| filter(slot.seen, slot.dispatchable))
                .count();
            (count > 0).then_some((*cell, count))
        })
    }
}

impl SpatialIndex {
    /// Every `stride`-th rider passing `filter(seen, dispatchable)` (counting only those), in
    /// bucket order: where it is and whether it is dispatchable; and how many passed.
    pub fn sample(
        &self,
        filter: impl Fn(u32, bool) -> bool,
        stride: usize,
        out: &mut Vec<(LatLon, bool)>,
    ) -> usize {
        let stride = stride.max(1);
        let mut passed = 0;
        for slot in self.buckets.values().flat_map(|bucket| &bucket.slots) {
            if !filter(slot.seen, slot.dispatchable) {
                continue;
            }
            if passed % stride == 0 {
                out.push((to_latlon(slot.xyz), slot.dispatchable));
            }
            passed += 1;
        }
        passed
    }
}

impl Buckets for SpatialIndex {
    fn with_bucket<R>(&self, cell: CellIndex, f: impl FnOnce(&Bucket) -> R) -> Option<R> {
        self.buckets.get(&cell).map(f)
    }
}

/// The `limit` nearest riders a search has found so far: a max-heap, with its worst distance
/// kept beside it so that the scan's inner loop compares one number per rider.
struct Best {
    heap: BinaryHeap<Candidate>,
    limit: usize,
    /// The squared chord a rider must be nearer than to be kept: the radius's until the heap is
    /// full, then the worst kept's.
    bound: f64,
    /// Whether `bound` is the worst kept's (the heap is full) rather than the radius's.
    full: bool,
}

impl Best {
    fn new(limit: usize, max_chord2: f64) -> Self {
        Self {
            heap: BinaryHeap::with_capacity(limit + 1),
            limit,
            bound: max_chord2,
            full: false,
        }
    }

    /// Keeps `slot` at squared chord `d` if it is among the nearest so far.
    #[inline]
    fn offer(&mut self, d: f64, slot: Slot) {
        if !self.full {
            // The radius is inclusive.
            if d <= self.bound {
                self.heap.push(Candidate(d, slot));
                if self.heap.len() == self.limit {
                    self.full = true;
                    self.bound = self.worst();
                }
            }
        } else if d < self.bound {
            if let Some(mut worst) = self.heap.peek_mut() {
                // Replaced in place: one sift down when the guard drops, not a pop and a push.
                *worst = Candidate(d, slot);
            }
            self.bound = self.worst();
        }
    }

    fn worst(&self) -> f64 {
        self.heap.peek().map_or(f64::INFINITY, |worst| worst.0)
    }
}

/// Where a cell lies against the searched point: the chord from the point to the nearest place
/// the cell could hold (0 when the point may be inside it). Chords are straight lines, so the
/// triangle inequality bounds every point of the cell.
fn floor(target: [f64; 3], centre: [f64; 3], reach: f64) -> f64 {
    (chord2(target, centre).sqrt() - reach).max(0.0)
}

/// Riders in `cell` that pass `filter`, scored against `target` into `best`. A cell that cannot
/// hold anything nearer than what `best` still takes is not opened. Returns the cell's
/// [`floor`], or `None` when no rider is in it.
fn scan(
    buckets: &impl Buckets,
    cell: CellIndex,
    target: [f64; 3],
    filter: &impl Fn(u32, bool) -> bool,
    best: &mut Best,
) -> Option<f64> {
    buckets.with_bucket(cell, |bucket| {
        let floor = floor(target, bucket.centre, bucket.reach);
        let floor2 = floor * floor;
        if floor2 > best.bound || best.full && floor2 >= best.bound {
            return floor;
        }
        for slot in &bucket.slots {
            if !filter(slot.seen, slot.dispatchable) {
                continue;
            }
            best.offer(chord2(target, slot.xyz), *slot);
        }
        floor
    })
}

/// The ring search over any [`Buckets`]: the `limit` nearest riders within `radius_m` of `at`
/// that pass `filter(seen, dispatchable)`, nearest first.
///
/// Rings are walked outward from the point's cell. The search stops after ring `k` once it holds
/// `limit` riders and no cell of ring `k` can hold one nearer than the worst of them: ring `k`
/// encloses every cell nearer in the grid, so the straight way from the point to anything in a
/// farther ring crosses a cell of ring `k` first, and is no shorter than the way to that cell.
/// In a dense city that is after the first ring or the second, where the grid bound alone
/// ([`ring_min_distance_m`], which must allow for H3's distortion) needs four.
pub fn nearest(
    buckets: &impl Buckets,
    at: LatLon,
    radius_m: f64,
    limit: usize,
    filter: impl Fn(u32, bool) -> bool,
) -> Vec<Found> {
    if limit == 0 {
        return Vec::new();
    }
    let target = unit_vector(at);
    let origin = at.cell(INDEX_RESOLUTION);
    let last_ring = covering_k(radius_m, INDEX_RESOLUTION);
    let mut best = Best::new(limit, m_to_chord2(radius_m));
    let mut ring: Vec<CellIndex> = Vec::new();
    let mut empty: Vec<CellIndex> = Vec::new();
    for k in 0..=last_ring {
        if best.full && chord2_to_m(best.bound) < ring_min_distance_m(k, INDEX_RESOLUTION) {
            break;
        }
        ring.clear();
        if k == 0 {
            ring.push(origin);
        } else if !ring_fast(origin, k, &mut ring) {
            // Near a pentagon the fast ring is undefined; the safe disk walk is not.
            ring.clear();
            ring.extend(
                origin
                    .grid_disk_distances_safe(k)
                    .filter(|(_, distance)| *distance == k)
                    .map(|(cell, _)| cell),
            );
        }
        // The nearest any cell of the ring could hold, over the cells with riders; the empty
        // ones are only placed if that could end the search.
        let mut ring_floor = f64::INFINITY;
        empty.clear();
        for &cell in &ring {
            match scan(buckets, cell, target, &filter, &mut best) {
                Some(floor) => ring_floor = ring_floor.min(floor),
                None => empty.push(cell),
            }
        }
        let encloses = |floor: f64| best.full && floor * floor >= best.bound;
        if encloses(ring_floor)
            && empty.iter().all(|&cell| {
                let (centre, reach) = remembered_geometry(cell);
                encloses(floor(target, centre, reach))
            })
        {
            break;
        }
    }
    let mut found: Vec<Found> = best
        .heap
        .into_iter()
        .map(|Candidate(d, slot)| Found {
            rider: slot.rider,
            location: to_latlon(slot.xyz),
            distance_m: chord2_to_m(d),
            seen: slot.seen,
        })
        .collect();
    found.sort_by(|a, b| {
        a.distance_m
            .total_cmp(&b.distance_m)
            .then(a.rider.cmp(&b.rider))
    });
    found
}

/// Ring `k` around `origin` into `ring`, by H3's fast walk; false (with `ring` partly filled)
/// where that walk is undefined, near a pentagon.
fn ring_fast(origin: CellIndex, k: u32, ring: &mut Vec<CellIndex>) -> bool {
    for cell in origin.grid_ring_fast(k) {
        match cell {
            Some(cell) => ring.push(cell),
            None => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn point(lat: f64, lon: f64) -> LatLon {
        LatLon::new(lat, lon).expect("in range")
    }

    #[test]
    fn updates_move_riders_between_cells_and_removal_keeps_places_right() {
        let mut index = SpatialIndex::default();
        let (a, b, c) = (RiderId::new(), RiderId::new(), RiderId::new());
        let here = point(12.9716, 77.5946);
        assert_eq!(index.upsert(a, here, 1, true), Placement::New);
        assert_eq!(index.upsert(b, here, 1, true), Placement::New);
        assert_eq!(index.upsert(c, here, 1, false), Placement::New);
        assert_eq!(
            index.upsert(a, point(12.97161, 77.59461), 2, true),
            Placement::Stayed
        );
        let far = point(12.99, 77.70);
        assert!(matches!(
            index.upsert(a, far, 3, true),
            Placement::Moved { .. }
        ));
        // b was swapped into a's old slot when a left; c must still be found.
        assert_eq!(index.get(c).map(|(_, seen, d)| (seen, d)), Some((1, false)));
        assert_eq!(index.remove(b).map(|(_, seen, _)| seen), Some(1));
        assert_eq!(index.get(c).map(|(_, seen, _)| seen), Some(1));
        assert!(index.set_dispatchable(c, true));
        assert_eq!(index.len(), 2);
        let (at, seen, _) = index.get(a).expect("a");
        assert!((at.lat() - 12.99).abs() < 1e-9 && (at.lon() - 77.70).abs() < 1e-9);
        assert_eq!(seen, 3);
        assert_eq!(index.remove(RiderId::new()), None);
    }

    #[test]
    fn the_filter_and_radius_apply() {
        let mut index = SpatialIndex::default();
        let centre = point(12.9716, 77.5946);
        let (busy, stale, near, far) = (
            RiderId::new(),
            RiderId::new(),
            RiderId::new(),
            RiderId::new(),
        );
        index.upsert(busy, point(12.9717, 77.5946), 100, false);
        index.upsert(stale, point(12.9718, 77.5946), 10, true);
        index.upsert(near, point(12.9800, 77.5946), 100, true);
        index.upsert(far, point(13.2000, 77.5946), 100, true);
        let found = index.nearest(centre, 5000.0, 5, |seen, ok| ok && seen >= 50);
        assert_eq!(
            found.iter().map(|f| f.rider).collect::<Vec<_>>(),
            vec![near]
        );
        let d = found[0].distance_m;
        assert!(
            (d - centre.distance_m(point(12.98, 77.5946))).abs() < 0.01,
            "{d}"
        );
    }

    /// What a scan of every rider returns: the `limit` nearest within `radius` passing `filter`.
    fn brute_force(
        all: &[(RiderId, LatLon, u32, bool)],
        centre: LatLon,
        radius: f64,
        limit: usize,
        filter: impl Fn(u32, bool) -> bool,
    ) -> Vec<RiderId> {
        let mut expected: Vec<(f64, RiderId)> = all
            .iter()
            .filter(|(_, _, seen, ok)| filter(*seen, *ok))
            .map(|(id, at, _, _)| (centre.distance_m(*at), *id))
            .filter(|(d, _)| *d <= radius)
            .collect();
        expected.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        expected.into_iter().take(limit).map(|(_, id)| id).collect()
    }

    /// Indexes the riders, searches around `(lat, lon)` for fresh, available riders and returns
    /// what the ring search found beside what a scan of every rider finds.
    fn ring_search_and_brute_force(
        riders: Vec<(f64, f64, u32, bool)>,
        (lat, lon): (f64, f64),
        radius: f64,
        limit: usize,
    ) -> (Vec<RiderId>, Vec<RiderId>) {
        let mut index = SpatialIndex::default();
        let mut all = Vec::new();
        for (lat, lon, seen, ok) in riders {
            let id = RiderId::new();
            index.upsert(id, point(lat, lon), seen, ok);
            all.push((id, point(lat, lon), seen, ok));
        }
        let centre = point(lat, lon);
        let filter = |seen: u32, ok: bool| ok && seen >= 30;
        let found = index
            .nearest(centre, radius, limit, filter)
            .iter()
            .map(|f| f.rider)
            .collect();
        (found, brute_force(&all, centre, radius, limit, filter))
    }

    /// Many searches over a dense city (about 170 riders a cell) and a sparse one (one rider in
    /// five cells): each stop a search makes before its last ring is checked against a scan of
    /// every rider. Points are drawn by a fixed stream, so a failure repeats.
    #[test]
    fn searches_stop_only_when_nothing_nearer_is_left() {
        let mut next = crate::fixed_stream(0x2545_F491_4F6C_DD1D);
        for (riders, side) in [(2_500, 0.03), (400, 0.3)] {
            let mut index = SpatialIndex::default();
            let mut all = Vec::new();
            for _ in 0..riders {
                let at = point(12.9 + next() * side, 77.5 + next() * side);
                let (id, seen, ok) = (RiderId::new(), (next() * 100.0) as u32, next() < 0.9);
                index.upsert(id, at, seen, ok);
                all.push((id, at, seen, ok));
            }
            let filter = |seen: u32, ok: bool| ok && seen >= 10;
            for _ in 0..1_000 {
                let centre = point(12.9 + next() * side, 77.5 + next() * side);
                let limit = 1 + (next() * 8.0) as usize;
                let found: Vec<RiderId> = index
                    .nearest(centre, 5_000.0, limit, filter)
                    .iter()
                    .map(|f| f.rider)
                    .collect();
                assert_eq!(
                    found,
                    brute_force(&all, centre, 5_000.0, limit, filter),
                    "around {centre}, {riders} riders"
                );
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// The ring search returns exactly what a scan of every rider would, over a city.
        #[test]
        fn ring_search_equals_brute_force(
            riders in prop::collection::vec((12.80f64..13.15, 77.45f64..77.80, 0u32..100, any::<bool>()), 0..400),
            (lat, lon) in (12.80f64..13.15, 77.45f64..77.80),
            radius in 100.0f64..20_000.0,
            limit in 1usize..12,
        ) {
            let (found, expected) = ring_search_and_brute_force(riders, (lat, lon), radius, limit);
            prop_assert_eq!(found, expected);
        }

        /// The same where riders are dense (a few km², dozens a cell), so that most cells around
        /// the searched point are skipped by their bound rather than scanned.
        #[test]
        fn dense_ring_search_equals_brute_force(
            riders in prop::collection::vec((12.95f64..12.99, 77.58f64..77.62, 0u32..100, any::<bool>()), 200..1500),
            (lat, lon) in (12.94f64..13.00, 77.57f64..77.63),
            radius in 20.0f64..6_000.0,
            limit in 1usize..12,
        ) {
            let (found, expected) = ring_search_and_brute_force(riders, (lat, lon), radius, limit);
            prop_assert_eq!(found, expected);
        }

        /// The same around the pentagons, where rings are walked the safe way and cells are
        /// distorted most.
        #[test]
        fn ring_search_around_pentagons_equals_brute_force(
            pentagon in 0usize..12,
            riders in prop::collection::vec(
                (-0.03f64..0.03, -0.03f64..0.03, 0u32..100, any::<bool>()),
                50..600,
            ),
            (dlat, dlon) in (-0.03f64..0.03, -0.03f64..0.03),
            radius in 20.0f64..6_000.0,
            limit in 1usize..12,
        ) {
            let centre = INDEX_RESOLUTION
                .pentagons()
                .nth(pentagon)
                .map(LatLng::from)
                .expect("12 pentagons");
            let riders = riders
                .into_iter()
                .map(|(dlat, dlon, seen, ok)| {
                    let (lat, lon) = offset(centre, dlat, dlon);
                    (lat, lon, seen, ok)
                })
                .collect();
            let (found, expected) =
                ring_search_and_brute_force(riders, offset(centre, dlat, dlon), radius, limit);
            prop_assert_eq!(found, expected);
        }

        /// Every point H3 puts in a cell lies within the cell's reach of its centre, anywhere on
        /// the globe (the poles, the antimeridian and cells cut by icosahedron faces included).
        #[test]
        fn a_cell_reaches_every_point_in_it(lat in -90.0f64..=90.0, lon in -180.0f64..=180.0) {
            let at = point(lat, lon);
            let cell = at.cell(INDEX_RESOLUTION);
            let bucket = Bucket::new(cell);
            let d = chord2(unit_vector(at), bucket.centre).sqrt();
            prop_assert!(d <= bucket.reach, "{} > {} in {}", d, bucket.reach, cell);
        }
    }

    /// `centre` moved by the given degrees, kept on the globe.
    fn offset(centre: LatLng, dlat: f64, dlon: f64) -> (f64, f64) {
        let lat = (centre.lat() + dlat).clamp(-90.0, 90.0);
        let lon = centre.lng() + dlon;
        let lon = if lon > 180.0 {
            lon - 360.0
        } else if lon < -180.0 {
            lon + 360.0
        } else {
            lon
        };
        (lat, lon)
    }

    /// The same around every pentagon, where cells are distorted most: a grid of points over
    /// each pentagon and its neighbours.
    #[test]
    fn cells_around_pentagons_reach_every_point_in_them() {
        for pentagon in INDEX_RESOLUTION.pentagons() {
            let centre = LatLng::from(pentagon);
            for i in -10..=10 {
                for j in -10..=10 {
                    let (lat, lon) = offset(centre, f64::from(i) * 0.001, f64::from(j) * 0.001);
                    let at = point(lat, lon);
                    let bucket = Bucket::new(at.cell(INDEX_RESOLUTION));
                    let d = chord2(unit_vector(at), bucket.centre).sqrt();
                    assert!(d <= bucket.reach, "{d} > {} near {pentagon}", bucket.reach);
                }
            }
        }
    }
}
