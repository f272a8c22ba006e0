//! The simulated city: a disc on the map, random places in it, and riders moving between
//! random waypoints at street speeds. Pure and seeded, so a run can be repeated.

use rand::Rng;

/// Metres per degree of latitude (and of longitude at the equator).
const METRES_PER_DEGREE: f64 = 111_320.0;
/// Rider speeds in m/s: a bicycle in traffic to a scooter on an open road.
const SPEEDS: std::ops::Range<f64> = 3.0..12.0;

/// A point, in degrees.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    pub lat: f64,
    pub lon: f64,
}

impl Point {
    /// The `{lat, lon}` JSON the API takes.
    pub fn json(self) -> serde_json::Value {
        serde_json::json!({ "lat": self.lat, "lon": self.lon })
    }

    /// Flat-earth offset in metres (east, north) from `self` to `to`; exact enough inside a city.
    fn offset_to(self, to: Point) -> (f64, f64) {
        let east = (to.lon - self.lon) * METRES_PER_DEGREE * self.lat.to_radians().cos();
        let north = (to.lat - self.lat) * METRES_PER_DEGREE;
        (east, north)
    }

    fn moved(self, east: f64, north: f64) -> Point {
        Point {
            lat: self.lat + north / METRES_PER_DEGREE,
            lon: self.lon + east / (METRES_PER_DEGREE * self.lat.to_radians().cos()),
        }
    }

    /// Distance in metres (flat-earth).
    pub fn distance_m(self, to: Point) -> f64 {
        let (east, north) = self.offset_to(to);
        east.hypot(north)
    }
}

/// The city's disc.
#[derive(Debug, Clone, Copy)]
pub struct City {
    pub centre: Point,
    pub radius_m: f64,
}

impl City {
    /// A uniformly random point inside the disc.
    pub fn random_point(&self, rng: &mut impl Rng) -> Point {
        let r = self.radius_m * rng.random::<f64>().sqrt();
        let angle = rng.random::<f64>() * std::f64::consts::TAU;
        self.centre.moved(r * angle.cos(), r * angle.sin())
    }
}

/// A rider's simulated movement.
#[derive(Debug, Clone)]
pub struct Walker {
    pub at: Point,
    target: Point,
    speed_mps: f64,
}

impl Walker {
    /// Starts somewhere in the city, heading somewhere else.
    pub fn new(city: &City, rng: &mut impl Rng) -> Self {
        Self {
            at: city.random_point(rng),
            target: city.random_point(rng),
            speed_mps: rng.random_range(SPEEDS),
        }
    }

    /// The speed it moves at.
    pub fn speed_mps(&self) -> f64 {
        self.speed_mps
    }

    /// Moves for `seconds`; on reaching its target it picks a new one in the city.
    pub fn step(&mut self, seconds: f64, city: &City, rng: &mut impl Rng) -> Point {
        let mut left = self.speed_mps * seconds;
        loop {
            let (east, north) = self.at.offset_to(self.target);
            let to_go = east.hypot(north);
            if to_go > left {
                let k = left / to_go;
                self.at = self.at.moved(east * k, north * k);
                return self.at;
            }
            self.at = self.target;
            left -= to_go;
            self.target = city.random_point(rng);
            self.speed_mps = rng.random_range(SPEEDS);
        }
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;

    fn city() -> City {
        City {
            centre: Point {
                lat: 12.9716,
                lon: 77.5946,
            },
            radius_m: 4000.0,
        }
    }

    #[test]
    fn random_points_stay_in_the_city() {
        let (city, mut rng) = (city(), StdRng::seed_from_u64(1));
        for _ in 0..10_000 {
            let p = city.random_point(&mut rng);
            assert!(city.centre.distance_m(p) <= city.radius_m + 1.0);
        }
    }

    #[test]
    fn riders_move_at_their_speed_and_stay_in_the_city() {
        let (city, mut rng) = (city(), StdRng::seed_from_u64(2));
        for _ in 0..200 {
            let mut walker = Walker::new(&city, &mut rng);
            for _ in 0..100 {
                let before = walker.at;
                let speed = walker.speed_mps();
                let after = walker.step(5.0, &city, &mut rng);
                // Straight-line progress never beats the distance travelled.
                assert!(before.distance_m(after) <= speed * 5.0 + 0.01);
                assert!(city.centre.distance_m(after) <= city.radius_m + 1.0);
            }
        }
    }
}
