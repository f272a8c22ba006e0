//! The simulated city: a disc on the map, random places in it, and riders moving between
//! random waypoints at street speeds, or straight to a restaurant and on to a customer while
//! they carry an order. Pure and seeded, so a run can be repeated.

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
    /// Where it is riding with an order, and how fast; it roams when there is none.
    errand: Option<(Point, f64)>,
}

impl Walker {
    /// Starts somewhere in the city, heading somewhere else.
    pub fn new(city: &City, rng: &mut impl Rng) -> Self {
        Self {
            at: city.random_point(rng),
            target: city.random_point(rng),
            speed_mps: rng.random_range(SPEEDS),
            errand: None,
        }
    }

    /// Rides straight to `to` at `speed_mps` from now on, and stays there once it arrives.
    /// Returns the distance to ride, in metres.
    pub fn ride_to(&mut self, to: Point, speed_mps: f64) -> f64 {
        self.errand = Some((to, speed_mps));
        self.at.distance_m(to)
    }

    /// It is where its errand leads (the caller timed the ride), whatever the ticks moved.
    pub fn arrive(&mut self) {
        if let Some((to, _)) = self.errand {
            self.at = to;
        }
    }

    /// Back to roaming between random waypoints.
    pub fn roam(&mut self) {
        self.errand = None;
    }

    /// The speed it moves at.
    pub fn speed_mps(&self) -> f64 {
        self.speed_mps
    }

    /// Moves for `seconds`: towards its errand, or, roaming, towards its target, picking a new
    /// one in the city on reaching it.
    pub fn step(&mut self, seconds: f64, city: &City, rng: &mut impl Rng) -> Point {
        if let Some((to, speed_mps)) = self.errand {
            let (east, north) = self.at.offset_to(to);
            let to_go = east.hypot(north);
            let k = (speed_mps * seconds / to_go.max(f64::MIN_POSITIVE)).min(1.0);
            self.at = self.at.moved(east * k, north * k);
            return self.at;
        }
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

    #[test]
    fn a_rider_on_an_errand_rides_straight_there_and_stays() {
        let (city, mut rng) = (city(), StdRng::seed_from_u64(3));
        let mut walker = Walker::new(&city, &mut rng);
        let to = city.random_point(&mut rng);
        let far = walker.ride_to(to, 10.0);
        // 10 m/s for 5 s: 50 m nearer each tick, until there.
        let mut left = far;
        while left > 0.0 {
            walker.step(5.0, &city, &mut rng);
            left = (left - 50.0).max(0.0);
            let now = walker.at.distance_m(to);
            assert!((now - left).abs() < 0.5, "{now} m to go, expected {left}");
        }
        walker.step(5.0, &city, &mut rng);
        assert!(walker.at.distance_m(to) < 0.01, "it stays where it arrived");
        walker.roam();
        walker.step(5.0, &city, &mut rng);
        assert!(walker.at.distance_m(to) > 1.0, "then roams again");
    }
}
