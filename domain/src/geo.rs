//! Coordinates, distances and H3 cells. A [`LatLon`] is always finite and in range, so nothing
//! past parsing has to wonder about NaN or a longitude of 200.

use std::fmt;

use geo::{Distance, Haversine, Point};
use h3o::{CellIndex, LatLng, Resolution};
use serde::{Deserialize, Serialize};

use crate::user::ParseError;

/// A point on Earth: latitude in [-90, 90], longitude in [-180, 180], both finite.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "RawLatLon")]
pub struct LatLon {
    lat: f64,
    lon: f64,
}

#[derive(Deserialize)]
struct RawLatLon {
    lat: f64,
    lon: f64,
}

impl TryFrom<RawLatLon> for LatLon {
    type Error = ParseError;

    fn try_from(raw: RawLatLon) -> Result<Self, Self::Error> {
        LatLon::new(raw.lat, raw.lon)
    }
}

impl LatLon {
    /// A checked point.
    pub fn new(lat: f64, lon: f64) -> Result<Self, ParseError> {
        if !lat.is_finite() || !(-90.0..=90.0).contains(&lat) {
            return Err(ParseError(
                "lat must be a finite number in [-90, 90]".into(),
            ));
        }
        if !lon.is_finite() || !(-180.0..=180.0).contains(&lon) {
            return Err(ParseError(
                "lon must be a finite number in [-180, 180]".into(),
            ));
        }
        Ok(Self { lat, lon })
    }

    pub fn lat(self) -> f64 {
        self.lat
    }

    pub fn lon(self) -> f64 {
        self.lon
    }

    /// Great-circle distance in metres.
    pub fn distance_m(self, other: LatLon) -> f64 {
        Haversine.distance(
            Point::new(self.lon, self.lat),
            Point::new(other.lon, other.lat),
        )
    }

    /// Great-circle distance in kilometres.
    pub fn distance_km(self, other: LatLon) -> f64 {
        self.distance_m(other) / 1000.0
    }

    /// The H3 cell containing this point at `resolution`.
    pub fn cell(self, resolution: Resolution) -> CellIndex {
        // In range and finite by construction, so H3 accepts it.
        LatLng::new(self.lat, self.lon)
            .map(|ll| ll.to_cell(resolution))
            .unwrap_or_else(|_| unreachable!("LatLon is validated"))
    }
}

impl fmt::Display for LatLon {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "({}, {})", self.lat, self.lon)
    }
}

/// The smallest grid-disk radius `k` around a point's cell that contains every cell holding a
/// point within `radius_m` of it, at `resolution`.
///
/// Neighbouring cell centres are `edge * sqrt(3)` (1.73 edges) apart on average; H3's cells are
/// distorted by up to about 0.7 of the average edge, so one ring is taken to cover only 1.2
/// edges, and two rings are added for the cells the point and the disk's rim sit in.
pub fn covering_k(radius_m: f64, resolution: Resolution) -> u32 {
    let edge = resolution.edge_length_m();
    let k = (radius_m.max(0.0) / (RING_STEP * edge)).ceil() + 2.0;
    // Radii are bounded by validation (50 km); this only guards against misuse.
    k.min(1000.0) as u32
}

/// The distance one ring of cells is taken to cover, in average edge lengths.
const RING_STEP: f64 = 1.2;

/// A lower bound of the distance from a point to anything in the cells `k` rings away from the
/// point's cell: the inverse of [`covering_k`], so a ring search may stop once this exceeds the
/// distance of the farthest result it keeps.
pub fn ring_min_distance_m(k: u32, resolution: Resolution) -> f64 {
    f64::from(k.saturating_sub(3)) * RING_STEP * resolution.edge_length_m()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn out_of_range_and_non_finite_are_refused() {
        for (lat, lon) in [
            (91.0, 0.0),
            (-90.1, 0.0),
            (0.0, 180.5),
            (f64::NAN, 0.0),
            (0.0, f64::INFINITY),
        ] {
            assert!(LatLon::new(lat, lon).is_err(), "({lat}, {lon})");
        }
        assert!(LatLon::new(90.0, -180.0).is_ok());
        assert!(serde_json::from_str::<LatLon>(r#"{"lat": 12.9, "lon": 77.6}"#).is_ok());
        assert!(serde_json::from_str::<LatLon>(r#"{"lat": 120, "lon": 77.6}"#).is_err());
    }

    #[test]
    fn distances_are_great_circle() {
        // Bengaluru MG Road to Indiranagar: about 4 km.
        let a = LatLon::new(12.9756, 77.6050).expect("a");
        let b = LatLon::new(12.9719, 77.6412).expect("b");
        let km = a.distance_km(b);
        assert!((3.8..4.1).contains(&km), "{km}");
        assert_eq!(a.distance_m(a), 0.0);
    }

    proptest! {
        #[test]
        fn every_point_within_the_radius_lies_in_the_covering_disk(
            lat in -70.0f64..70.0, lon in -179.0f64..179.0,
            bearing in 0.0f64..360.0, fraction in 0.0f64..1.0, radius in 1.0f64..50_000.0,
        ) {
            use geo::Destination;
            let resolution = Resolution::Seven;
            let centre = LatLon::new(lat, lon).expect("centre");
            let dest = Haversine.destination(Point::new(lon, lat), bearing, radius * fraction);
            let other = LatLon::new(dest.y(), dest.x().clamp(-180.0, 180.0)).expect("other");
            prop_assume!(centre.distance_m(other) <= radius);
            let disk: Vec<CellIndex> = centre.cell(resolution).grid_disk(covering_k(radius, resolution));
            prop_assert!(disk.contains(&other.cell(resolution)));
        }
    }
}
