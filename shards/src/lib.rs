//! Location sharding. The world is cut into zones (H3 cells at `shards.zone_resolution`), and
//! each zone is hashed onto one of a fixed number of shards; a shard's actors live on one arbiter
//! (a thread of the actor runtime). An order belongs to the shard of its restaurant's zone, a
//! rider to the shard of its current zone. The mapping is a pure function of the cell, the same
//! on every node, so any node can tell which shard (and, in a cluster, which node) owns a point.
//! Zones lie inside regions (coarser cells at `shards.region_resolution`), the unit in which
//! positions are shared between nodes.
//!
//! A shard is the unit a node owns: [`ShardRouter::start`] and [`ShardRouter::stop`] bring all of
//! one shard (its order and rider actors, its slice of the rider index) up and down, and every
//! message to an order, a rider or a shard goes through the router.

use std::fmt;

use h3o::{CellIndex, Resolution};
use tomato_domain::LatLon;

mod candidates;
pub mod index;
pub mod matching;
mod offers;
mod orders;
mod ports;
pub mod regions;
pub mod remote;
mod rider_actors;
pub mod riders;
pub mod router;
pub mod runtime;
pub mod shard;
pub mod windows;

pub use candidates::Search;
pub use ports::{DispatchHook, OrderPorts, SearchSettings};
pub use remote::{NearestQuery, OfferChange, Position, RemoteShards, ShardCommand, ShardReply};
pub use riders::{NotRunning, RiderIndex};
pub use router::{OrderRef, Route, ShardRouter, Stopped};
pub use runtime::ActorRuntime;
pub use shard::{Shard, clock};
pub use windows::{MatchingSettings, WindowReport};

/// A shard, numbered from 0.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct ShardId(pub u32);

impl fmt::Display for ShardId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "shard-{}", self.0)
    }
}

/// Why a shard map could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ShardMapError {
    #[error("shards.count must be at least 1")]
    NoShards,
    #[error("shards.region_resolution must be between 0 and {MAX_ZONE_RESOLUTION}")]
    BadResolution,
    #[error(
        "shards.zone_resolution must be between shards.region_resolution and {MAX_ZONE_RESOLUTION} (a zone lies inside one region)"
    )]
    BadZone,
}

/// The finest zone: an order's or rider's zone is read from its index cell (resolution 8) or
/// finer, and a search covers a radius in zones, which grow 7x in number per resolution.
pub const MAX_ZONE_RESOLUTION: u8 = 9;

/// Cell -> shard: the cell's parent at the zone resolution, hashed onto `count` shards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardMap {
    zone: Resolution,
    region: Resolution,
    count: u32,
}

impl ShardMap {
    /// A map of `count` shards over zones at `zone_resolution`, inside regions at
    /// `region_resolution`.
    pub fn new(
        zone_resolution: u8,
        region_resolution: u8,
        count: u32,
    ) -> Result<Self, ShardMapError> {
        if region_resolution > MAX_ZONE_RESOLUTION {
            return Err(ShardMapError::BadResolution);
        }
        if !(region_resolution..=MAX_ZONE_RESOLUTION).contains(&zone_resolution) {
            return Err(ShardMapError::BadZone);
        }
        let resolution = |n: u8| Resolution::try_from(n).map_err(|_| ShardMapError::BadResolution);
        if count == 0 {
            return Err(ShardMapError::NoShards);
        }
        Ok(Self {
            zone: resolution(zone_resolution)?,
            region: resolution(region_resolution)?,
            count,
        })
    }

    /// What every node of a cluster must agree on, as one line.
    pub fn layout(&self) -> String {
        format!(
            "shards.count={} shards.zone_resolution={} shards.region_resolution={}",
            self.count,
            u8::from(self.zone),
            u8::from(self.region)
        )
    }

    /// The zone resolution.
    pub fn zone_resolution(&self) -> Resolution {
        self.zone
    }

    /// The zone a cell lies in (the cell itself when it is coarser than a zone).
    pub fn zone_of(&self, cell: CellIndex) -> CellIndex {
        cell.parent(self.zone).unwrap_or(cell)
    }

    /// How many shards there are.
    pub fn count(&self) -> u32 {
        self.count
    }

    /// The region resolution.
    pub fn region_resolution(&self) -> Resolution {
        self.region
    }

    /// The region a cell lies in (the cell itself when it is coarser than a region).
    pub fn region_of(&self, cell: CellIndex) -> CellIndex {
        cell.parent(self.region).unwrap_or(cell)
    }

    /// The shard owning `cell`.
    pub fn shard_of_cell(&self, cell: CellIndex) -> ShardId {
        let zone = u64::from(self.zone_of(cell));
        // A fixed mixer, not the std hasher: the mapping must agree across processes, versions
        // and nodes.
        ShardId((splitmix64(zone) % u64::from(self.count)) as u32)
    }

    /// The shard owning a point.
    pub fn shard_of(&self, point: LatLon) -> ShardId {
        self.shard_of_cell(point.cell(self.zone))
    }
}

/// Riders seen before this (Unix seconds) are invisible to dispatch.
pub fn fresh_since(stale_after_s: u64) -> u32 {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let stale = i64::try_from(stale_after_s).unwrap_or(i64::MAX);
    u32::try_from(now.saturating_sub(stale)).unwrap_or(0)
}

/// SplitMix64's finaliser: spreads neighbouring cell ids evenly over the shards.
fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// A fixed stream of numbers in [0, 1) (xorshift) for tests' cities, so that a failure repeats.
#[cfg(test)]
pub(crate) fn fixed_stream(mut state: u64) -> impl FnMut() -> f64 {
    move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn point() -> impl Strategy<Value = LatLon> {
        (-89.9f64..89.9, -179.9f64..179.9)
            .prop_map(|(lat, lon)| LatLon::new(lat, lon).expect("in range"))
    }

    #[test]
    fn bad_maps_are_refused() {
        assert!(ShardMap::new(5, 5, 0).is_err());
        assert!(ShardMap::new(16, 16, 4).is_err());
        assert!(matches!(
            ShardMap::new(4, 5, 4),
            Err(ShardMapError::BadZone)
        ));
        assert!(matches!(
            ShardMap::new(10, 5, 4),
            Err(ShardMapError::BadZone)
        ));
        assert!(ShardMap::new(5, 5, 1).is_ok());
        assert!(ShardMap::new(9, 5, 64).is_ok());
    }

    #[test]
    fn the_layout_names_both_resolutions_and_the_count() {
        let map = ShardMap::new(7, 5, 64).expect("map");
        assert_eq!(
            map.layout(),
            "shards.count=64 shards.zone_resolution=7 shards.region_resolution=5"
        );
    }

    #[test]
    fn the_mapping_is_fixed() {
        // Nodes of different builds must agree: pin one value.
        let map = ShardMap::new(5, 5, 64).expect("map");
        let bengaluru = LatLon::new(12.9716, 77.5946).expect("point");
        let shard = map.shard_of(bengaluru);
        assert_eq!(shard, map.shard_of(bengaluru));
        assert_eq!(splitmix64(0), 0xE220_A839_7B1D_CDAF);
    }

    #[test]
    fn a_city_spreads_over_several_shards() {
        let map = ShardMap::new(7, 5, 16).expect("map");
        let mut shards = std::collections::BTreeSet::new();
        for i in 0..20 {
            for j in 0..20 {
                let p = LatLon::new(12.85 + f64::from(i) * 0.01, 77.50 + f64::from(j) * 0.01)
                    .expect("point");
                shards.insert(map.shard_of(p));
            }
        }
        assert!(
            shards.len() >= 8,
            "a 20 km city lands on {} shards",
            shards.len()
        );
    }

    proptest! {
        #[test]
        fn every_point_maps_to_a_shard_in_range(p in point(), count in 1u32..512, res in 0u8..=9) {
            let map = ShardMap::new(res, res.min(5), count).expect("map");
            prop_assert!(map.shard_of(p).0 < count);
        }

        #[test]
        fn all_cells_of_a_zone_share_its_shard(p in point(), zone in 5u8..=9, fine in 9u8..=12) {
            let map = ShardMap::new(zone, 5, 64).expect("map");
            let cell = p.cell(Resolution::try_from(fine).expect("res"));
            let zone_cell = map.zone_of(cell);
            prop_assert_eq!(map.shard_of_cell(cell), map.shard_of_cell(zone_cell));
            for child in zone_cell.children(Resolution::Ten).take(50) {
                prop_assert_eq!(map.shard_of_cell(child), map.shard_of_cell(zone_cell));
            }
            // A zone lies inside one region.
            prop_assert_eq!(map.region_of(zone_cell), map.region_of(cell));
        }
    }
}
