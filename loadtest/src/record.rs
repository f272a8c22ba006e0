//! What a run measures while it runs: latency histograms (HDR, microseconds) for the paths the
//! report names, the deliveries' rides (HDR, metres and milliseconds), counters, errors by kind,
//! and a per-second timeline for the plots.
//! Recording is a short lock per sample; the harness records a few thousand samples a second.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

/// Latencies are kept from 1 µs to 10 min with 3 significant digits.
pub(crate) const HIGHEST_US: u64 = 600_000_000;

/// A measured path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Path {
    /// A position sent until the node acknowledged it (ack or HTTP response).
    Ingest,
    /// `POST /api/order/new` round trip.
    Placement,
    /// The seller's `ready_for_rider` sent until the first rider heard the offer.
    ReadyToAvailable,
    /// The seller's `ready_for_rider` sent until the restaurant heard `order:rider_assigned`.
    ReadyToAssigned,
    /// One churning app: a sign-in and its logout (`--churn-rate`).
    SignInOut,
}

const PATHS: [Path; 5] = [
    Path::Ingest,
    Path::Placement,
    Path::ReadyToAvailable,
    Path::ReadyToAssigned,
    Path::SignInOut,
];

impl Path {
    fn index(self) -> usize {
        self as usize
    }

    fn name(self) -> &'static str {
        match self {
            Path::Ingest => "location_ingest",
            Path::Placement => "order_placement",
            Path::ReadyToAvailable => "ready_to_available",
            Path::ReadyToAssigned => "ready_to_assigned",
            Path::SignInOut => "sign_in_and_out",
        }
    }
}

/// A measured part of the deliveries (minutes long, so kept apart from the latencies).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ride {
    /// How far the rider was from the restaurant when it won the order, metres.
    PickupDistance,
    /// From the accept until the rider is at the restaurant.
    PickupTime,
    /// The seller's `ready_for_rider` until the rider's `picked_up`.
    ReadyToPickedUp,
    /// The seller's `ready_for_rider` until the rider's `delivered`.
    ReadyToDelivered,
}

const RIDES: [Ride; 4] = [
    Ride::PickupDistance,
    Ride::PickupTime,
    Ride::ReadyToPickedUp,
    Ride::ReadyToDelivered,
];

impl Ride {
    fn index(self) -> usize {
        self as usize
    }

    /// Its name in the report, with its unit.
    fn name(self) -> &'static str {
        match self {
            Ride::PickupDistance => "pickup_m",
            Ride::PickupTime => "pickup_s",
            Ride::ReadyToPickedUp => "ready_to_picked_up_s",
            Ride::ReadyToDelivered => "ready_to_delivered_s",
        }
    }

    /// What one recorded unit is in the reported unit (times are kept in milliseconds).
    fn scale(self) -> f64 {
        match self {
            Ride::PickupDistance => 1.0,
            _ => 0.001,
        }
    }
}

/// Event counters.
#[derive(Debug, Default)]
pub struct Counters {
    pub locations_sent: AtomicU64,
    pub orders_placed: AtomicU64,
    pub orders_paid: AtomicU64,
    pub orders_ready: AtomicU64,
    pub offers_heard: AtomicU64,
    pub accepts: AtomicU64,
    pub accepts_lost: AtomicU64,
    pub picked_up: AtomicU64,
    pub delivered: AtomicU64,
    /// Milliseconds riders spent with an order, accept to delivery, summed.
    pub busy_ms: AtomicU64,
    /// Sockets dialled again after their node closed them (killed, in a soak).
    pub redials: AtomicU64,
}

impl Counters {
    /// Adds one.
    pub fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// One second of the run.
#[derive(Debug, Clone)]
struct Second {
    counts: [u64; PATHS.len()],
    ingest: Histogram<u64>,
    placement: Histogram<u64>,
}

/// Everything a run records.
#[derive(Debug)]
pub struct Recorder {
    started: Instant,
    histograms: Mutex<Vec<Histogram<u64>>>,
    rides: Mutex<Vec<Histogram<u64>>>,
    timeline: Mutex<Vec<Second>>,
    errors: Mutex<BTreeMap<String, u64>>,
    pub counters: Counters,
}

/// Rides are kept up to a day (in ms) or 86 400 km.
const HIGHEST_RIDE: u64 = 86_400_000;

/// A ride histogram: 1 to [`HIGHEST_RIDE`] with 3 significant digits.
fn ride_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, HIGHEST_RIDE, 3).expect("valid histogram bounds")
}

/// A latency histogram in microseconds, 1 µs to 10 min.
pub(crate) fn histogram() -> Histogram<u64> {
    // The bounds are constants that hdrhistogram accepts; a failure here is a programming error
    // caught by the first test.
    Histogram::new_with_bounds(1, HIGHEST_US, 3).expect("valid histogram bounds")
}

impl Recorder {
    /// Starts the clock of the timeline.
    pub fn new() -> Self {
        Self {
            started: Instant::now(),
            histograms: Mutex::new(PATHS.iter().map(|_| histogram()).collect()),
            rides: Mutex::new(RIDES.iter().map(|_| ride_histogram()).collect()),
            timeline: Mutex::new(Vec::new()),
            errors: Mutex::new(BTreeMap::new()),
            counters: Counters::default(),
        }
    }

    /// Records one latency sample of `path`.
    pub fn latency(&self, path: Path, took: Duration) {
        let us = u64::try_from(took.as_micros())
            .unwrap_or(HIGHEST_US)
            .clamp(1, HIGHEST_US);
        if let Ok(mut all) = self.histograms.lock() {
            let _ = all[path.index()].record(us);
        }
        let second = usize::try_from(self.started.elapsed().as_secs()).unwrap_or(usize::MAX);
        if let Ok(mut timeline) = self.timeline.lock() {
            while timeline.len() <= second {
                timeline.push(Second {
                    counts: [0; PATHS.len()],
                    ingest: histogram(),
                    placement: histogram(),
                });
            }
            let slot = &mut timeline[second];
            slot.counts[path.index()] += 1;
            match path {
                Path::Ingest => {
                    let _ = slot.ingest.record(us);
                }
                Path::Placement => {
                    let _ = slot.placement.record(us);
                }
                _ => {}
            }
        }
    }

    /// Records one ride sample: metres for [`Ride::PickupDistance`], a duration otherwise.
    pub fn ride(&self, what: Ride, metres: f64, took: Duration) {
        let value = match what {
            Ride::PickupDistance => metres.round() as u64,
            _ => u64::try_from(took.as_millis()).unwrap_or(u64::MAX),
        };
        if let Ok(mut all) = self.rides.lock() {
            let _ = all[what.index()].record(value.clamp(1, HIGHEST_RIDE));
        }
    }

    /// Counts one error of `kind`.
    pub fn error(&self, kind: &str) {
        if let Ok(mut errors) = self.errors.lock() {
            *errors.entry(kind.to_owned()).or_default() += 1;
        }
    }

    /// Errors so far.
    pub fn error_count(&self) -> u64 {
        self.errors.lock().map(|e| e.values().sum()).unwrap_or(0)
    }

    /// How many samples of `path` so far.
    pub fn samples(&self, path: Path) -> u64 {
        self.histograms
            .lock()
            .map(|all| all[path.index()].len())
            .unwrap_or(0)
    }

    /// Seconds since the recorder started.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// The measured part of a report.
    pub fn measured(&self) -> Measured {
        let c = &self.counters;
        let latency_ms = self
            .histograms
            .lock()
            .map(|all| {
                PATHS
                    .iter()
                    .map(|p| (p.name().to_owned(), Percentiles::of(&all[p.index()])))
                    .collect()
            })
            .unwrap_or_default();
        let timeline = self
            .timeline
            .lock()
            .map(|seconds| {
                seconds
                    .iter()
                    .enumerate()
                    .map(|(second, s)| TimelinePoint {
                        second: second as u64,
                        location_updates: s.counts[Path::Ingest.index()],
                        orders_placed: s.counts[Path::Placement.index()],
                        ingest_p99_ms: p99_ms(&s.ingest),
                        placement_p99_ms: p99_ms(&s.placement),
                    })
                    .collect()
            })
            .unwrap_or_default();
        let rides = self
            .rides
            .lock()
            .map(|all| {
                RIDES
                    .iter()
                    .map(|r| (r.name().to_owned(), Spread::of(&all[r.index()], r.scale())))
                    .collect()
            })
            .unwrap_or_default();
        Measured {
            rides,
            counts: Counts {
                locations_sent: Counters::get(&c.locations_sent),
                locations_acknowledged: self.samples(Path::Ingest),
                orders_placed: Counters::get(&c.orders_placed),
                orders_paid: Counters::get(&c.orders_paid),
                orders_ready: Counters::get(&c.orders_ready),
                offers_heard: Counters::get(&c.offers_heard),
                accepts: Counters::get(&c.accepts),
                accepts_lost: Counters::get(&c.accepts_lost),
                picked_up: Counters::get(&c.picked_up),
                delivered: Counters::get(&c.delivered),
                busy_s: Counters::get(&c.busy_ms) as f64 / 1000.0,
                redials: Counters::get(&c.redials),
            },
            latency_ms,
            errors: self.errors.lock().map(|e| e.clone()).unwrap_or_default(),
            timeline,
        }
    }
}

impl Default for Recorder {
    fn default() -> Self {
        Self::new()
    }
}

fn p99_ms(h: &Histogram<u64>) -> Option<f64> {
    (!h.is_empty()).then(|| h.value_at_quantile(0.99) as f64 / 1000.0)
}

/// Percentiles of one path, in milliseconds.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct Percentiles {
    pub count: u64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

impl Percentiles {
    fn of(h: &Histogram<u64>) -> Self {
        let ms = |us: u64| us as f64 / 1000.0;
        Self {
            count: h.len(),
            p50: ms(h.value_at_quantile(0.5)),
            p90: ms(h.value_at_quantile(0.9)),
            p99: ms(h.value_at_quantile(0.99)),
            p999: ms(h.value_at_quantile(0.999)),
            max: ms(h.max()),
        }
    }
}

/// The spread of one ride measure, in its unit (metres or seconds).
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct Spread {
    pub count: u64,
    pub mean: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

impl Spread {
    fn of(h: &Histogram<u64>, scale: f64) -> Self {
        let at = |q: f64| h.value_at_quantile(q) as f64 * scale;
        Self {
            count: h.len(),
            mean: h.mean() * scale,
            p50: at(0.5),
            p90: at(0.9),
            p99: at(0.99),
            max: h.max() as f64 * scale,
        }
    }
}

/// Counters at the end of a run.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Counts {
    pub locations_sent: u64,
    pub locations_acknowledged: u64,
    pub orders_placed: u64,
    pub orders_paid: u64,
    pub orders_ready: u64,
    pub offers_heard: u64,
    pub accepts: u64,
    /// Accepts answered 409 because another rider was first (expected under load).
    pub accepts_lost: u64,
    pub picked_up: u64,
    pub delivered: u64,
    /// Seconds riders spent with an order (accept to delivery), summed over riders.
    #[serde(default)]
    pub busy_s: f64,
    /// Sockets dialled again after their node closed them.
    #[serde(default)]
    pub redials: u64,
}

/// One second of the timeline.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TimelinePoint {
    pub second: u64,
    pub location_updates: u64,
    pub orders_placed: u64,
    pub ingest_p99_ms: Option<f64>,
    pub placement_p99_ms: Option<f64>,
}

/// What the recorder measured.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Measured {
    pub counts: Counts,
    /// By path: `location_ingest`, `order_placement`, `ready_to_available`, `ready_to_assigned`.
    pub latency_ms: BTreeMap<String, Percentiles>,
    /// The deliveries' rides: `pickup_m` (distance at the accept), `pickup_s`,
    /// `ready_to_picked_up_s`, `ready_to_delivered_s`.
    #[serde(default)]
    pub rides: BTreeMap<String, Spread>,
    pub errors: BTreeMap<String, u64>,
    pub timeline: Vec<TimelinePoint>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_come_from_the_samples() {
        let recorder = Recorder::new();
        for ms in 1..=100 {
            recorder.latency(Path::Ingest, Duration::from_millis(ms));
        }
        recorder.error("http_409_already_taken");
        recorder.error("http_409_already_taken");
        let measured = recorder.measured();
        let ingest = &measured.latency_ms["location_ingest"];
        assert_eq!(ingest.count, 100);
        assert!((ingest.p50 - 50.0).abs() < 0.1, "{ingest:?}");
        assert!((ingest.p99 - 99.0).abs() < 0.1, "{ingest:?}");
        assert!((ingest.max - 100.0).abs() < 0.1, "{ingest:?}");
        assert_eq!(measured.latency_ms["order_placement"].count, 0);
        assert_eq!(measured.errors["http_409_already_taken"], 2);
        assert_eq!(measured.timeline[0].location_updates, 100);
    }
}
