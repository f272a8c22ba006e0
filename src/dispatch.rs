//! The node's side of dispatch: the hook through which the shards tell it what dispatch did
//! (offers to announce in riders' user rooms, nobody free in the restaurant's room, a carried
//! order's rider moving in the customer's room), and the dispatch counters of `/metrics` and the
//! admin statistics, with the latest batched windows for the operations page. The search, the
//! offers and the accept itself stay in the shards.

use std::sync::Arc;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use serde_json::json;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tomato_actors::{Offer, Withdrawn};
use tomato_domain::{LatLon, Order, OrderId, RiderId, UserId};
pub use tomato_shards::fresh_since;
use tomato_shards::{DispatchHook, WindowReport};
use tomato_store::Stores;

use crate::realtime::bus::Room;
use crate::realtime::clients::Realtime;
use crate::riders::ids::RiderIds;

/// How many recent assignments the median assignment time is taken over.
const ASSIGN_SAMPLES: usize = 1000;
/// How many of the latest batched windows a node keeps for the operations page.
pub const RECENT_WINDOWS: usize = 20;

/// Dispatch's counters.
#[derive(Debug, Clone)]
pub struct DispatchMetrics {
    pub offers: Counter,
    pub accepts: Counter,
    pub timeouts: Counter,
    /// Seconds from `ready_for_rider` to `rider_assigned`.
    pub assign_seconds: Histogram,
    /// Batched dispatch: seconds each window's assignment took to solve.
    pub window_solve_seconds: Histogram,
    /// Batched dispatch: orders matched with a rider by a window.
    pub window_matched: Counter,
    /// Batched dispatch: windows whose solve ran past its budget (matched nearest-first).
    pub window_over_budget: Counter,
    /// Batched dispatch: orders no match was taken for in time, offered in waves after.
    pub unmatched: Counter,
    /// Accepts refused because the rider already holds an order: an offer made from a copy of
    /// the rider that lagged its assignment elsewhere, taken up.
    pub busy_claims: Counter,
    /// The latest assignment times, for a median (a histogram only has buckets), with when
    /// they happened (Unix milliseconds).
    recent: Arc<std::sync::Mutex<std::collections::VecDeque<(i64, f64)>>>,
    /// The latest batched windows, newest last.
    windows: Arc<std::sync::Mutex<std::collections::VecDeque<WindowTally>>>,
}

/// One batched window as the operations page shows it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WindowTally {
    /// When it ran (RFC 3339).
    pub at: String,
    /// Orders it took.
    pub orders: usize,
    /// Distinct riders among their candidates.
    pub riders: usize,
    /// Orders matched with a rider.
    pub matched: usize,
    /// Mean pickup distance of the matches, metres.
    pub mean_pickup_m: f64,
    /// How long the assignment took, milliseconds.
    pub solve_ms: f64,
    /// The solve ran past half the window: matched nearest-first.
    pub over_budget: bool,
}

impl DispatchMetrics {
    /// Registers the counters in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            offers: Counter::default(),
            accepts: Counter::default(),
            timeouts: Counter::default(),
            assign_seconds: Histogram::new(exponential_buckets(0.25, 2.0, 12)),
            window_solve_seconds: Histogram::new(exponential_buckets(0.000_05, 2.0, 16)),
            window_matched: Counter::default(),
            window_over_budget: Counter::default(),
            unmatched: Counter::default(),
            busy_claims: Counter::default(),
            recent: Arc::default(),
            windows: Arc::default(),
        };
        registry.register(
            "dispatch_offers",
            "Offers sent to riders",
            metrics.offers.clone(),
        );
        registry.register(
            "dispatch_accepts",
            "Offers accepted",
            metrics.accepts.clone(),
        );
        registry.register(
            "dispatch_timeouts",
            "Offers that ran out",
            metrics.timeouts.clone(),
        );
        registry.register(
            "dispatch_assign_seconds",
            "Seconds from ready_for_rider to rider_assigned",
            metrics.assign_seconds.clone(),
        );
        registry.register(
            "dispatch_window_solve_seconds",
            "Batched dispatch: seconds each window's assignment took",
            metrics.window_solve_seconds.clone(),
        );
        registry.register(
            "dispatch_window_matched",
            "Batched dispatch: orders matched with a rider by a window",
            metrics.window_matched.clone(),
        );
        registry.register(
            "dispatch_window_over_budget",
            "Batched dispatch: windows matched nearest-first because the solve ran past its budget",
            metrics.window_over_budget.clone(),
        );
        registry.register(
            "dispatch_unmatched",
            "Batched dispatch: orders offered in waves after no match was taken in time",
            metrics.unmatched.clone(),
        );
        registry.register(
            "dispatch_busy_claims",
            "Accepts refused because the rider already holds an order (an offer from a lagging copy, taken up)",
            metrics.busy_claims.clone(),
        );
        metrics
    }

    fn window_ran(&self, report: &WindowReport) {
        self.window_solve_seconds
            .observe(report.solve.as_secs_f64());
        self.window_matched.inc_by(report.matched as u64);
        if report.over_budget {
            self.window_over_budget.inc();
        }
        let tally = WindowTally {
            at: report.at.format(&Rfc3339).unwrap_or_default(),
            orders: report.orders,
            riders: report.riders,
            matched: report.matched,
            mean_pickup_m: report.mean_pickup_m.round(),
            solve_ms: (report.solve.as_secs_f64() * 1e5).round() / 100.0,
            over_budget: report.over_budget,
        };
        if let Ok(mut windows) = self.windows.lock() {
            if windows.len() == RECENT_WINDOWS {
                windows.pop_front();
            }
            windows.push_back(tally);
        }
    }

    fn assigned_after(&self, seconds: f64) {
        self.assign_seconds.observe(seconds);
        if let Ok(mut recent) = self.recent.lock() {
            if recent.len() == ASSIGN_SAMPLES {
                recent.pop_front();
            }
            recent.push_back((
                tomato_domain::millis::unix_ms(OffsetDateTime::now_utc()),
                seconds,
            ));
        }
    }

    /// The counters now, with the assignment times of the latest 1000 that happened at
    /// `since` (Unix milliseconds) or later.
    pub fn tally(&self, since: i64) -> DispatchTally {
        let assign_seconds = self
            .recent
            .lock()
            .map(|recent| {
                recent
                    .iter()
                    .filter(|(at, _)| *at >= since)
                    .map(|(_, seconds)| *seconds)
                    .collect()
            })
            .unwrap_or_default();
        let windows = self
            .windows
            .lock()
            .map(|windows| windows.iter().cloned().collect())
            .unwrap_or_default();
        DispatchTally {
            offers: self.offers.get(),
            accepts: self.accepts.get(),
            timeouts: self.timeouts.get(),
            assign_seconds,
            windows,
        }
    }
}

/// Dispatch's counters as one node holds them; a cluster sums its nodes' (admin statistics,
/// the operations page).
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct DispatchTally {
    pub offers: u64,
    pub accepts: u64,
    pub timeouts: u64,
    /// Assignment times (seconds), for percentiles over every node's.
    pub assign_seconds: Vec<f64>,
    /// The latest batched windows, oldest first.
    #[serde(default)]
    pub windows: Vec<WindowTally>,
}

impl DispatchTally {
    pub fn add(&mut self, other: DispatchTally) {
        self.offers += other.offers;
        self.accepts += other.accepts;
        self.timeouts += other.timeouts;
        self.assign_seconds.extend(other.assign_seconds);
        // Every node's windows, the latest kept (RFC 3339 in UTC sorts by time).
        self.windows.extend(other.windows);
        self.windows.sort_by(|a, b| a.at.cmp(&b.at));
        let surplus = self.windows.len().saturating_sub(RECENT_WINDOWS);
        self.windows.drain(..surplus);
    }
}

/// The median of `samples`; `None` when there are none.
pub fn median(mut samples: Vec<f64>) -> Option<f64> {
    if samples.is_empty() {
        return None;
    }
    samples.sort_by(f64::total_cmp);
    let mid = samples.len() / 2;
    Some(if samples.len().is_multiple_of(2) {
        (samples[mid - 1] + samples[mid]) / 2.0
    } else {
        samples[mid]
    })
}

/// What this node does when the shards say dispatch did something: tell riders, restaurants
/// and customers through the realtime gateway, and count.
pub struct NodeDispatch {
    pub rider_ids: Arc<RiderIds>,
    pub realtime: Arc<Realtime>,
    pub stores: Stores,
    pub metrics: DispatchMetrics,
}

impl std::fmt::Debug for NodeDispatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeDispatch").finish_non_exhaustive()
    }
}

impl DispatchHook for NodeDispatch {
    fn offered(&self, _order: &Order, offer: &Offer, riders: &[RiderId]) {
        let offer = json!(offer);
        let mut strangers = Vec::new();
        for rider in riders {
            match self.rider_ids.user_of(*rider) {
                Some(user) => {
                    self.realtime
                        .emit(Room::User(user), "order:available", &offer);
                    self.metrics.offers.inc();
                }
                None => strangers.push(*rider),
            }
        }
        if strangers.is_empty() {
            return;
        }
        // Riders this node has not met: in a cluster their positions reach it from the node
        // they talk to. Their user comes from the store, once, off the actor's path.
        let (ids, store) = (Arc::clone(&self.rider_ids), Arc::clone(&self.stores.riders));
        let (realtime, metrics) = (Arc::clone(&self.realtime), self.metrics.clone());
        tokio::spawn(async move {
            for rider in strangers {
                match store.get(rider).await {
                    Ok(Some(profile)) => {
                        ids.remember(profile.user_id, rider);
                        realtime.emit(Room::User(profile.user_id), "order:available", &offer);
                        metrics.offers.inc();
                    }
                    Ok(None) => {}
                    Err(err) => {
                        tracing::warn!(rider_id = %rider, error = %err, "offer not sent: rider unknown");
                    }
                }
            }
        });
    }

    fn pending(&self, order: &Order, attempts: u32) {
        self.realtime.emit(
            Room::Restaurant(order.restaurant_id),
            "order:dispatch_pending",
            &json!({ "orderId": order.id.to_string(), "attempts": attempts }),
        );
    }

    fn withdrawn(&self, _order: &Order, _rider: RiderId, why: Withdrawn) {
        if why == Withdrawn::Expired {
            self.metrics.timeouts.inc();
        }
    }

    fn assigned(&self, order: &Order, _rider: RiderId) {
        self.metrics.accepts.inc();
        let ready = order.ready_since();
        if let Some(ready) = ready {
            self.metrics
                .assigned_after((order.updated_at - ready).as_seconds_f64().max(0.0));
        }
    }

    fn window(&self, report: &WindowReport) {
        self.metrics.window_ran(report);
    }

    fn unmatched(&self, _order: &Order) {
        self.metrics.unmatched.inc();
    }

    fn moved(&self, order: OrderId, customer: UserId, at: LatLon, seen_at: OffsetDateTime) {
        self.realtime.emit(
            Room::User(customer),
            "rider:location",
            &json!({
                "orderId": order.to_string(),
                "lat": at.lat(),
                "lon": at.lon(),
                "at": seen_at.format(&Rfc3339).unwrap_or_default(),
            }),
        );
    }
}
