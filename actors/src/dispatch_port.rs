//! Dispatch as the order actor sees it from outside: the port it reaches dispatch through
//! ([`DispatchPort`], implemented by the shards), its tuning, the offer riders see, why an
//! offer ends, and the state of a dispatch in progress. The waves themselves are
//! [`crate::waves`]; batched dispatch's side of the order is [`crate::matched`].

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use actix::prelude::*;
use futures_core::future::BoxFuture;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use tomato_domain::{LatLon, Order, OrderId, RestaurantId, RiderId};

/// One offer as riders see it (`order:available`, `GET /api/rider/offers`): what the order
/// actor sends, and what the shard's offer book keeps while it stands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Offer {
    pub order_id: OrderId,
    pub restaurant_id: RestaurantId,
    pub restaurant_name: String,
    pub pickup: LatLon,
    pub dropoff: LatLon,
    pub distance_km: f64,
    /// What the rider earns, in minor units.
    pub rider_amount: i64,
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
}

impl Offer {
    /// The offer of `order`, standing until `expires_at`.
    pub fn of(order: &Order, expires_at: OffsetDateTime) -> Self {
        Self {
            order_id: order.id,
            restaurant_id: order.restaurant_id,
            restaurant_name: order.restaurant_name.clone(),
            pickup: order.pickup,
            dropoff: order.delivery_address.location,
            distance_km: order.distance_km,
            rider_amount: order.rider_amount.minor(),
            expires_at,
        }
    }
}

/// Why a rider's offer stopped standing before anyone took the order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Withdrawn {
    /// It ran out unanswered.
    Expired,
    /// The rider turned it down.
    Rejected,
}

/// How dispatch reaches riders: implemented by the shards (which keep the offers standing per
/// shard) over the node's rider index and realtime gateway, so actors know nothing of either.
pub trait DispatchPort: Send + Sync + 'static {
    /// Up to `limit` dispatchable riders (verified, online, free, seen recently) nearest to
    /// `pickup` within the search radius, nearest first, none of them in `exclude`. A future:
    /// the search may span shards owned by other nodes, which answer over the network.
    fn candidates(
        &self,
        pickup: LatLon,
        exclude: HashSet<RiderId>,
        limit: usize,
    ) -> BoxFuture<'static, Vec<RiderId>>;

    /// Offers `order` to `riders` (`order:available`).
    fn offer(&self, order: &Order, offer: &Offer, riders: &[RiderId]);

    /// Nobody could be offered the order this round (`order:dispatch_pending`).
    fn pending(&self, order: &Order, attempts: u32);

    /// `rider`'s offer of `order` no longer stands.
    fn withdrawn(&self, order: &Order, rider: RiderId, why: Withdrawn);

    /// Batched dispatch: `order` waits for the node's next matching window; the rider it is
    /// matched with comes back to `queued.to` as [`MatchedRider`]. It stays queued until it is
    /// matched, `queued.until` passes, or [`Self::ended`].
    fn queue(&self, order: &Order, queued: Queued);

    /// Batched dispatch gave up on `order` (nobody took a match within `offer_ttl`): it is
    /// offered in waves from now on.
    fn unmatched(&self, order: &Order);

    /// The order stopped being dispatched (a rider took it, it left `ready_for_rider`, or its
    /// actor retired): none of its offers stands any more.
    fn ended(&self, order: &Order);

    /// The assignment is persisted: the rider is busy with this order.
    fn assigned(&self, order: &Order, rider: RiderId);

    /// The order was delivered: the rider is free again.
    fn released(&self, order: &Order, rider: RiderId);
}

/// Dispatch tuning (config `[dispatch]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DispatchPolicy {
    /// Riders offered the order at once.
    pub batch: usize,
    /// How long an offer stands.
    pub offer_ttl: Duration,
    /// The longest wait between rounds when nobody is free.
    pub max_backoff: Duration,
    /// Batched dispatch: how long the offer to a matched rider stands. `None`: greedy waves
    /// from the start.
    pub matched_ttl: Option<Duration>,
}

/// An order waiting for a matching window: what the node's batch needs of it.
#[derive(Debug, Clone)]
pub struct Queued {
    /// Riders not to match it with (let an offer of it expire, or turned it down).
    pub exclude: HashSet<RiderId>,
    /// When it became ready for a rider: older orders win ties.
    pub ready_at: OffsetDateTime,
    /// Past this, it is offered in waves and no window takes it.
    pub until: Instant,
    pub to: Recipient<MatchedRider>,
}

/// A window matched the order with `rider`, `distance_m` from its pickup.
#[derive(Debug, Clone, Copy, PartialEq, Message)]
#[rtype(result = "()")]
pub struct MatchedRider {
    pub rider: RiderId,
    pub distance_m: f64,
}

/// The offers of an order being dispatched.
#[derive(Debug, Default)]
pub(crate) struct Dispatching {
    /// Offers standing now, with their deadline.
    pub(crate) live: HashMap<RiderId, OffsetDateTime>,
    /// Offered this round and let expire: not offered again until the next round.
    pub(crate) tried: HashSet<RiderId>,
    /// Turned it down: never offered this order again.
    pub(crate) rejected: HashSet<RiderId>,
    /// Rounds in which nobody could be offered.
    pub(crate) attempts: u32,
    pub(crate) timer: Option<SpawnHandle>,
    /// Batched dispatch: windows may match the order until this instant, then waves take over.
    /// `None` in waves.
    pub(crate) matching_until: Option<Instant>,
    /// Batched dispatch: when the offer to the matched rider runs out.
    pub(crate) matched_timer: Option<SpawnHandle>,
}

impl Dispatching {
    /// Riders not to look for: offered now, let it run out this round, or said no.
    pub(crate) fn left_out(&self) -> HashSet<RiderId> {
        self.live
            .keys()
            .chain(&self.tried)
            .chain(&self.rejected)
            .copied()
            .collect()
    }
}
