//! Which regions a node of a cluster copies. Positions are replicated by region: the node that
//! ingests one publishes it once on its region's channel, and every node that needs the region
//! listens. A node needs a region when a search from one of its zones can reach into it, so
//! that every search it runs (dispatch from its restaurants, and the riders around a point)
//! reads its own memory. With zones hashed onto shards, a city's zones land on every node, and
//! every node of a small cluster needs every region of its cities; a node needs no region that
//! none of its zones comes near (Bengaluru's owners hear nothing of Delhi).
//!
//! A pure function of the map, the radius and the shards a node owns, so it is tested alone.

use std::collections::{HashMap, HashSet};

use h3o::CellIndex;
use tomato_domain::geo::covering_k;

use crate::{ShardId, ShardMap};

/// The shards whose zones can reach each region within a search radius, remembered (a pure
/// function of the region, and worked out once per region a node hears of).
#[derive(Debug)]
pub struct Reach {
    map: ShardMap,
    radius_m: f64,
    known: HashMap<CellIndex, Vec<ShardId>>,
}

impl Reach {
    pub fn new(map: ShardMap, radius_m: f64) -> Self {
        Self {
            map,
            radius_m,
            known: HashMap::new(),
        }
    }

    /// The shards of every zone from which a search of the radius can reach into `region`:
    /// the zones of the regions within the radius of it (with the covering's slack, so never
    /// fewer than needed).
    pub fn shards_reaching(&mut self, region: CellIndex) -> &[ShardId] {
        let (map, radius_m) = (self.map, self.radius_m);
        self.known.entry(region).or_insert_with(|| {
            let k = covering_k(radius_m, map.region_resolution());
            let mut shards: Vec<ShardId> = region
                .grid_disk::<Vec<_>>(k)
                .into_iter()
                .flat_map(|near| near.children(map.zone_resolution()))
                .map(|zone| map.shard_of_cell(zone))
                .collect();
            shards.sort_unstable();
            shards.dedup();
            shards
        })
    }

    /// Of the `active` regions (those where riders report), the ones a node owning the shards
    /// `owns` says yes to must copy.
    pub fn needed(
        &mut self,
        active: impl IntoIterator<Item = CellIndex>,
        owns: impl Fn(ShardId) -> bool,
    ) -> HashSet<CellIndex> {
        active
            .into_iter()
            .filter(|region| self.shards_reaching(*region).iter().any(|s| owns(*s)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use tomato_domain::LatLon;

    use super::*;

    fn region(map: ShardMap, lat: f64, lon: f64) -> CellIndex {
        map.region_of(
            LatLon::new(lat, lon)
                .expect("point")
                .cell(map.zone_resolution()),
        )
    }

    #[test]
    fn a_region_is_needed_by_the_owner_of_any_zone_in_it_or_near_it() {
        // Zones are regions here: a node owning one region's shard needs it and its neighbours
        // within the radius, not a city 1 700 km away.
        // Many shards, so that no zone within Delhi's reach shares Bengaluru's by chance.
        let map = ShardMap::new(5, 5, 4_096).expect("map");
        let mut reach = Reach::new(map, 5_000.0);
        let bengaluru = region(map, 12.9716, 77.5946);
        let delhi = region(map, 28.6139, 77.2090);
        let neighbour = bengaluru
            .grid_ring_fast(1)
            .flatten()
            .next()
            .expect("a ring");
        let owned = map.shard_of_cell(bengaluru);
        let needed = reach.needed([bengaluru, neighbour, delhi], |s| s == owned);
        assert!(needed.contains(&bengaluru) && needed.contains(&neighbour));
        assert!(!needed.contains(&delhi));
        assert!(reach.needed([bengaluru], |_| false).is_empty());
    }

    #[test]
    fn with_fine_zones_every_owner_of_a_zone_of_the_region_needs_it() {
        let map = ShardMap::new(7, 5, 64).expect("map");
        let mut reach = Reach::new(map, 3_000.0);
        let city = region(map, 12.9716, 77.5946);
        for zone in city.children(map.zone_resolution()) {
            let shard = map.shard_of_cell(zone);
            assert!(
                reach.shards_reaching(city).contains(&shard),
                "the owner of {zone} searches from inside the region"
            );
        }
        // A city's 49 zones over 64 shards: most shards reach it.
        assert!(reach.shards_reaching(city).len() > 32);
    }

    #[test]
    fn a_zone_on_the_region_edge_reaches_across_it() {
        let map = ShardMap::new(7, 5, 64).expect("map");
        let mut reach = Reach::new(map, 2_000.0);
        let city = region(map, 12.9716, 77.5946);
        // A zone of a neighbouring region that touches a zone of `city`.
        let edge = city
            .children(map.zone_resolution())
            .flat_map(|zone| zone.grid_ring_fast(1).flatten().collect::<Vec<_>>())
            .find(|zone| map.region_of(*zone) != city)
            .expect("a zone across the edge");
        let shard = map.shard_of_cell(edge);
        assert!(reach.needed([city], |s| s == shard).contains(&city));
    }

    #[test]
    fn pentagons_and_the_antimeridian_are_covered() {
        let map = ShardMap::new(7, 5, 64).expect("map");
        let mut reach = Reach::new(map, 5_000.0);
        for pentagon in map.region_resolution().pentagons() {
            let shard = map.shard_of_cell(
                pentagon
                    .children(map.zone_resolution())
                    .next()
                    .expect("a zone"),
            );
            assert!(reach.needed([pentagon], |s| s == shard).contains(&pentagon));
        }
        // Fiji straddles 180°: a zone just west reaches the region just east.
        let (east, west_zone) = [0.01, 0.05, 0.1, 0.15]
            .into_iter()
            .map(|d| {
                let west = LatLon::new(-17.0, 180.0 - d).expect("point");
                (
                    region(map, -17.0, -180.0 + d),
                    west.cell(map.zone_resolution()),
                )
            })
            .find(|(east, west)| map.region_of(*west) != *east)
            .expect("two regions within 35 km across 180°");
        let shard = map.shard_of_cell(west_zone);
        assert!(reach.needed([east], |s| s == shard).contains(&east));
    }
}
