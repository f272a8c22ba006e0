//! The node's side of dispatch: how order actors find riders (the sharded index), reach them
//! (their user rooms), and mark them busy and free again; plus the dispatch counters of
//! `/metrics` and the admin statistics.

use std::collections::HashSet;
use std::sync::Arc;

use dashmap::DashMap;
use futures_core::future::BoxFuture;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tomato_actors::{Carried, DispatchPort, OrderError, RiderPort};
use tomato_domain::{LatLon, Order, OrderId, OrderStatus, RiderId, UserId};
use tomato_shards::{OrderRef, RiderIndex, ShardId, ShardRouter};
use tomato_store::Stores;

use crate::config::DispatchSettings;
use crate::realtime::{Realtime, Room};
use crate::riders::RiderIds;

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
    /// The latest assignment times, for a median (a histogram only has buckets).
    recent: Arc<std::sync::Mutex<std::collections::VecDeque<f64>>>,
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
            recent.push_back(seconds);
        }
    }

    /// The median of the latest assignment times, in seconds; `None` before the first.
    pub fn median_assign_seconds(&self) -> Option<f64> {
        let mut samples: Vec<f64> = self.recent.lock().ok()?.iter().copied().collect();
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
}

/// The offers each rider holds now, as sent in `order:available`: what `GET /api/rider/offers`
/// answers, for rider apps that cannot keep a socket open (or missed an event while away).
/// Entries go when accepted, rejected or timed out, and expired ones are pruned on every read
/// and write of the rider's entry, so the book never outgrows the riders with live offers. Once
/// an order is assigned its offers go from every rider who held them, so a rider polling the
/// book is not sent racing for orders already taken.
#[derive(Debug, Default)]
pub struct OfferBook {
    held: DashMap<RiderId, Vec<HeldOffer>>,
    /// Who was offered each order still being dispatched.
    offered_to: DashMap<OrderId, Vec<RiderId>>,
}

#[derive(Debug, Clone)]
struct HeldOffer {
    order: OrderId,
    expires_at: OffsetDateTime,
    payload: Value,
}

impl OfferBook {
    fn hold(&self, rider: RiderId, offer: HeldOffer) {
        self.offered_to.entry(offer.order).or_default().push(rider);
        let now = OffsetDateTime::now_utc();
        let mut held = self.held.entry(rider).or_default();
        held.retain(|h| h.expires_at > now && h.order != offer.order);
        held.push(offer);
    }

    /// Whether `rider` holds a live offer now.
    fn holds_any(&self, rider: RiderId) -> bool {
        let now = OffsetDateTime::now_utc();
        self.held
            .get(&rider)
            .is_some_and(|held| held.iter().any(|h| h.expires_at > now))
    }

    /// Forgets every offer of `order`: it has found its rider.
    fn settle(&self, order: OrderId) {
        if let Some((_, riders)) = self.offered_to.remove(&order) {
            for rider in riders {
                self.forget(rider, order);
            }
        }
    }

    /// Forgets `rider`'s offer of `order`.
    pub fn forget(&self, rider: RiderId, order: OrderId) {
        let now = OffsetDateTime::now_utc();
        self.held.remove_if_mut(&rider, |_, held| {
            held.retain(|h| h.expires_at > now && h.order != order);
            held.is_empty()
        });
    }

    /// The live offers `rider` holds, oldest first.
    pub fn of(&self, rider: RiderId) -> Vec<Value> {
        let now = OffsetDateTime::now_utc();
        let mut live = Vec::new();
        self.held.remove_if_mut(&rider, |_, held| {
            held.retain(|h| h.expires_at > now);
            live = held.iter().map(|h| h.payload.clone()).collect();
            held.is_empty()
        });
        live
    }
}

/// Dispatch over this node's riders and sockets.
pub struct NodeDispatch {
    pub riders: Arc<RiderIndex>,
    pub rider_ids: Arc<RiderIds>,
    pub realtime: Arc<Realtime>,
    pub stores: Stores,
    pub settings: DispatchSettings,
    /// Set once the router exists (it is built after its dispatch port); weak, so the two do
    /// not keep each other alive.
    pub shards: std::sync::OnceLock<std::sync::Weak<ShardRouter>>,
    pub metrics: DispatchMetrics,
    pub offers: Arc<OfferBook>,
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
    /// The nearest dispatchable riders in this node's index, riders holding another live offer
    /// last.
    fn local_candidates(
        &self,
        pickup: LatLon,
        exclude: &HashSet<RiderId>,
        limit: usize,
    ) -> Vec<RiderId> {
        let fresh = fresh_since(self.settings.stale_after_s);
        // The index filters on freshness and the dispatchable flag; excluded riders are dropped
        // after, so ask for enough to still have `limit` left, and `limit` more to pass over
        // riders holding another live offer: an app takes one offer at a time, so a second
        // offer to the same rider mostly ends in a timeout (seen in load tests: the same few
        // riders nearest a busy restaurant got every order, and most waves timed out). They
        // still get it when nobody else is near.
        let (free, holding): (Vec<RiderId>, Vec<RiderId>) = self
            .riders
            .nearest(
                pickup,
                f64::from(self.settings.search_radius_m),
                2 * limit + exclude.len(),
                |seen, ok| ok && seen >= fresh,
            )
            .into_iter()
            .map(|found| found.rider)
            .filter(|rider| !exclude.contains(rider))
            .partition(|rider| !self.offers.holds_any(*rider));
        free.into_iter().chain(holding).take(limit).collect()
    }
}

impl DispatchPort for NodeDispatch {
    fn candidates(
        &self,
        pickup: LatLon,
        exclude: HashSet<RiderId>,
        limit: usize,
    ) -> BoxFuture<'static, Vec<RiderId>> {
        // Every shard the search covers runs here, so the answer is at hand; in a cluster the
        // other owners are asked and this becomes a real wait.
        let found = self.local_candidates(pickup, &exclude, limit);
        Box::pin(std::future::ready(found))
    }

    fn offer(&self, order: &Order, riders: &[RiderId], expires_at: OffsetDateTime) {
        let offer = json!({
            "orderId": order.id.to_string(),
            "restaurantId": order.restaurant_id.to_string(),
            "restaurantName": order.restaurant_name,
            "pickup": order.pickup,
            "dropoff": order.delivery_address.location,
            "distanceKm": order.distance_km,
            "riderAmount": order.rider_amount.minor(),
            "expiresAt": expires_at
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default(),
        });
        for rider in riders {
            if let Some(user) = self.rider_ids.user_of(*rider) {
                self.realtime
                    .emit(Room::User(user), "order:available", &offer);
                self.offers.hold(
                    *rider,
                    HeldOffer {
                        order: order.id,
                        expires_at,
                        payload: offer.clone(),
                    },
                );
                self.metrics.offers.inc();
            }
        }
    }

    fn pending(&self, order: &Order, attempts: u32) {
        self.realtime.emit(
            Room::Restaurant(order.restaurant_id),
            "order:dispatch_pending",
            &json!({ "orderId": order.id.to_string(), "attempts": attempts }),
        );
    }

    fn expired(&self, order: OrderId, rider: RiderId) {
        self.offers.forget(rider, order);
        self.metrics.timeouts.inc();
    }

    fn assigned(&self, order: &Order, rider: RiderId) {
        self.offers.settle(order.id);
        self.riders.set_dispatchable(rider, false);
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
        if let Some(shards) = self.shards.get().and_then(std::sync::Weak::upgrade) {
            shards.released(rider);
        }
        let (riders, store) = (Arc::clone(&self.riders), Arc::clone(&self.stores.riders));
        // Free again if the rider is still online and verified (the store knows).
        tokio::spawn(async move {
            if let Ok(Some(profile)) = store.get(rider).await {
                riders.set_dispatchable(rider, crate::riders::dispatchable(&profile));
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
