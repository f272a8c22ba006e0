//! The node's side of dispatch: the adapter from the order actors' dispatch port to the shards
//! (candidate search, standing offers, the riders' flag) and to realtime events (riders' user
//! rooms, the restaurant's room); plus the dispatch counters of `/metrics` and the admin
//! statistics.

use std::collections::HashSet;
use std::sync::Arc;

use futures_core::future::BoxFuture;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use serde_json::json;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tomato_actors::{Carried, DispatchPort, Offer, OrderError, RiderPort, Withdrawn};
use tomato_domain::{LatLon, Order, OrderId, OrderStatus, RiderId, UserId};
use tomato_shards::{OrderRef, Search, ShardId, ShardRouter};
use tomato_store::Stores;

use crate::config::DispatchSettings;
use crate::realtime::bus::Room;
use crate::realtime::clients::Realtime;
use crate::riders::ids::RiderIds;

/// How many recent assignments the median assignment time is taken over.
const ASSIGN_SAMPLES: usize = 1000;

/// Dispatch's counters.
#[derive(Debug, Clone)]
pub struct DispatchMetrics {
    pub offers: Counter,
    pub accepts: Counter,
    pub timeouts: Counter,
    /// Seconds from `ready_for_rider` to `rider_assigned`.
    pub assign_seconds: Histogram,
    /// The latest assignment times, for a median (a histogram only has buckets), with when
    /// they happened (Unix milliseconds).
    recent: Arc<std::sync::Mutex<std::collections::VecDeque<(i64, f64)>>>,
}

impl DispatchMetrics {
    /// Registers the counters in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            offers: Counter::default(),
            accepts: Counter::default(),
            timeouts: Counter::default(),
            assign_seconds: Histogram::new(exponential_buckets(0.25, 2.0, 12)),
            recent: Arc::default(),
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
        metrics
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
        DispatchTally {
            offers: self.offers.get(),
            accepts: self.accepts.get(),
            timeouts: self.timeouts.get(),
            assign_seconds,
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
}

impl DispatchTally {
    pub fn add(&mut self, other: DispatchTally) {
        self.offers += other.offers;
        self.accepts += other.accepts;
        self.timeouts += other.timeouts;
        self.assign_seconds.extend(other.assign_seconds);
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

/// Dispatch over this node's riders and sockets.
pub struct NodeDispatch {
    pub rider_ids: Arc<RiderIds>,
    pub realtime: Arc<Realtime>,
    pub stores: Stores,
    pub settings: DispatchSettings,
    /// Set once the router exists (it is built after its dispatch port); weak, so the two do
    /// not keep each other alive.
    pub shards: std::sync::OnceLock<std::sync::Weak<ShardRouter>>,
    pub metrics: DispatchMetrics,
}

impl std::fmt::Debug for NodeDispatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeDispatch").finish_non_exhaustive()
    }
}

/// Riders seen before this (Unix seconds) are invisible to dispatch.
pub fn fresh_since(stale_after_s: u64) -> u32 {
    let now = OffsetDateTime::now_utc().unix_timestamp();
    let stale = i64::try_from(stale_after_s).unwrap_or(i64::MAX);
    u32::try_from(now.saturating_sub(stale)).unwrap_or(0)
}

impl NodeDispatch {
    fn shards(&self) -> Option<Arc<ShardRouter>> {
        self.shards.get().and_then(std::sync::Weak::upgrade)
    }
}

impl DispatchPort for NodeDispatch {
    fn candidates(
        &self,
        pickup: LatLon,
        exclude: HashSet<RiderId>,
        limit: usize,
    ) -> BoxFuture<'static, Vec<RiderId>> {
        // On a single node the answer is at hand; in a cluster the owners of the other shards
        // the search covers are asked, and this is a real wait.
        let search = Search {
            radius_m: f64::from(self.settings.search_radius_m),
            fresh_since: fresh_since(self.settings.stale_after_s),
        };
        match self.shards() {
            Some(shards) => shards.candidates(pickup, exclude, limit, search),
            None => Box::pin(std::future::ready(Vec::new())),
        }
    }

    fn offer(&self, order: &Order, offer: &Offer, riders: &[RiderId]) {
        if let Some(shards) = self.shards() {
            shards.offers_made(order, offer, riders);
        }
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

    fn withdrawn(&self, order: &Order, rider: RiderId, why: Withdrawn) {
        if let Some(shards) = self.shards() {
            shards.offer_withdrawn(order, rider);
        }
        if why == Withdrawn::Expired {
            self.metrics.timeouts.inc();
        }
    }

    fn ended(&self, order: &Order) {
        if let Some(shards) = self.shards() {
            shards.offers_ended(order);
        }
    }

    fn assigned(&self, order: &Order, rider: RiderId) {
        if let Some(shards) = self.shards() {
            shards.rider_assigned(rider);
        }
        self.metrics.accepts.inc();
        let ready = order
            .history
            .iter()
            .rev()
            .find(|h| h.status == OrderStatus::ReadyForRider)
            .map(|h| h.at);
        if let Some(ready) = ready {
            self.metrics
                .assigned_after((order.updated_at - ready).as_seconds_f64().max(0.0));
        }
    }

    fn released(&self, _order: &Order, rider: RiderId) {
        let Some(shards) = self.shards() else {
            return;
        };
        shards.released(rider);
        let store = Arc::clone(&self.stores.riders);
        // Free again if the rider is still online and verified (the store knows).
        tokio::spawn(async move {
            if let Ok(Some(profile)) = store.get(rider).await {
                shards.rider_changed(&profile);
            }
        });
    }
}

/// How rider actors reach the node: the customer's room, the order's actor, the store.
#[derive(Default)]
pub struct NodeRiderPort {
    pub realtime: std::sync::OnceLock<Arc<Realtime>>,
    /// Set once the router exists (it is built after the rider actors' port); weak, so the two
    /// do not keep each other alive.
    pub shards: std::sync::OnceLock<std::sync::Weak<ShardRouter>>,
    pub stores: std::sync::OnceLock<Stores>,
}

impl std::fmt::Debug for NodeRiderPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeRiderPort").finish_non_exhaustive()
    }
}

impl RiderPort for NodeRiderPort {
    fn moved(&self, order: OrderId, customer: UserId, at: LatLon, seen_at: OffsetDateTime) {
        if let Some(realtime) = self.realtime.get() {
            realtime.emit(
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

    fn accept(
        &self,
        order: OrderId,
        shard: u32,
        rider: RiderId,
        name: String,
        phone: String,
    ) -> BoxFuture<'static, Result<Order, OrderError>> {
        let shards = self.shards.get().and_then(std::sync::Weak::upgrade);
        let order = OrderRef {
            id: order,
            shard: ShardId(shard),
        };
        Box::pin(async move {
            match shards {
                Some(shards) => shards.accept(order, rider, name, phone).await,
                None => Err(OrderError::Unavailable),
            }
        })
    }

    fn carried(&self, rider: RiderId) -> BoxFuture<'static, Carried> {
        let stores = self.stores.get().cloned();
        Box::pin(async move {
            let stores = stores?;
            let profile = stores.riders.get(rider).await.ok().flatten()?;
            let order = stores
                .orders
                .get(profile.current_order_id?)
                .await
                .ok()
                .flatten()?;
            Some((order.id, order.user_id))
        })
    }
}
