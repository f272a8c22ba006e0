//! Dispatch as the shards see it: the offers standing for each shard's orders (a mirror of what
//! their order actors report, kept in the shard and dropped with it), the nearest-candidate
//! search over the index, and the rider's dispatchable flag, whose only writer is here.

use std::collections::HashSet;
use std::sync::Arc;

use futures_core::future::BoxFuture;
use tomato_actors::Offer;
use tomato_domain::{LatLon, Order, Rider, RiderId};

use crate::index::Found;
use crate::remote::{NearestQuery, OfferChange};
use crate::router::ShardRouter;
use crate::{RiderIndex, ShardId};

/// What the candidate search looks through.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Search {
    pub radius_m: f64,
    /// Riders seen before this (Unix seconds) are not offered anything.
    pub fresh_since: u32,
}

impl ShardRouter {
    /// The nearest dispatchable riders, none in `exclude`, riders holding another live offer
    /// last: from the shards running here at once, and in a cluster from the owners of the
    /// other shards the search covers (asked in parallel, within a deadline).
    pub fn candidates(
        self: &Arc<Self>,
        pickup: LatLon,
        exclude: HashSet<RiderId>,
        limit: usize,
        search: Search,
    ) -> BoxFuture<'static, Vec<RiderId>> {
        // The index filters on freshness and the dispatchable flag; excluded riders are dropped
        // after, so ask for enough to still have `limit` left, and `limit` more to pass over
        // riders holding another live offer: an app takes one offer at a time, so a second
        // offer to the same rider mostly ends in a timeout (seen in load tests: the same few
        // riders nearest a busy restaurant got every order, and most waves timed out). They
        // still get it when nobody else is near.
        let query = NearestQuery {
            at: pickup,
            radius_m: search.radius_m,
            limit: 2 * limit + exclude.len(),
            fresh_since: search.fresh_since,
        };
        let nearest = self.nearest_everywhere(query);
        let me = Arc::clone(self);
        Box::pin(async move {
            let found = nearest.await;
            let mut seen = HashSet::new();
            let (free, holding): (Vec<RiderId>, Vec<RiderId>) = found
                .into_iter()
                .map(|found| found.rider)
                .filter(|rider| !exclude.contains(rider) && seen.insert(*rider))
                .partition(|rider| !me.holds_offer(*rider));
            free.into_iter().chain(holding).take(limit).collect()
        })
    }

    /// The nearest dispatchable, fresh riders around `query.at`, nearest first: from this node's
    /// index and copy at once, and in a cluster from the owners of the shards the search covers
    /// whose riders this node does not copy (asked in parallel within a deadline; a slow node
    /// costs a partial answer). A node that copies every region the search reaches asks nobody.
    pub fn nearest_everywhere(&self, query: NearestQuery) -> BoxFuture<'static, Vec<Found>> {
        let local = self.nearest_here(query);
        // A node alone runs every shard: the shards around are only listed when others may
        // own some (listing them was 8 % of a nearby query's CPU, for nothing).
        let Some(remote) = self.remote() else {
            return Box::pin(std::future::ready(local));
        };
        let unseen = self.index().shards_unseen(query.at, query.radius_m);
        if unseen.is_empty() {
            return Box::pin(std::future::ready(local));
        }
        let remote = remote.nearest(unseen, query);
        Box::pin(async move {
            let mut found = local;
            found.extend(remote.await);
            found.sort_by(|a, b| a.distance_m.total_cmp(&b.distance_m));
            // A rider copied here may also come from its owner: once, the nearer.
            let mut seen = HashSet::new();
            found.retain(|f| seen.insert(f.rider));
            found.truncate(query.limit);
            found
        })
    }

    /// `order`'s actor offered it to `riders`.
    pub fn offers_made(&self, order: &Order, offer: &Offer, riders: &[RiderId]) {
        if let Some(shard) = self.shard(ShardId(order.shard)) {
            shard.offers.hold(offer, riders);
        }
        self.tell_others(|| OfferChange::Made {
            offer: offer.clone(),
            riders: riders.to_vec(),
        });
    }

    /// `rider`'s offer of `order` no longer stands.
    pub fn offer_withdrawn(&self, order: &Order, rider: RiderId) {
        if let Some(shard) = self.shard(ShardId(order.shard)) {
            shard.offers.forget(rider, order.id);
        }
        self.tell_others(|| OfferChange::Withdrawn {
            order: order.id,
            rider,
        });
    }

    /// `order` stopped being dispatched: none of its offers stands.
    pub fn offers_ended(&self, order: &Order) {
        if let Some(shard) = self.shard(ShardId(order.shard)) {
            shard.offers.end(order.id);
        }
        self.tell_others(|| OfferChange::Ended { order: order.id });
    }

    fn tell_others(&self, change: impl FnOnce() -> OfferChange) {
        if let Some(remote) = self.remote() {
            remote.offers_changed(change());
        }
    }

    /// What another node's order actor did with its offers, mirrored here.
    pub fn offers_heard(&self, change: OfferChange) {
        match change {
            OfferChange::Made { offer, riders } => self.heard.hold(&offer, &riders),
            OfferChange::Withdrawn { order, rider } => self.heard.forget(rider, order),
            OfferChange::Ended { order } => self.heard.end(order),
        }
    }

    /// Drops the expired offers other nodes told of: an end lost on the way leaves an offer
    /// that only its expiry removes. The cluster's tick calls it.
    pub fn prune_heard_offers(&self) {
        self.heard.prune();
    }

    /// The live offers `rider` holds, of every shard running here and, in a cluster, of every
    /// other node's (as they told this one), oldest first.
    pub fn offers_of(&self, rider: RiderId) -> Vec<Offer> {
        let mut offers: Vec<Offer> = self
            .shards()
            .filter(|shard| shard.is_running())
            .flat_map(|shard| shard.offers.of(rider))
            .collect();
        // A shard that moved here may still be in the heard book: once, the running one's.
        for offer in self.heard.of(rider) {
            if !offers.iter().any(|o| o.order_id == offer.order_id) {
                offers.push(offer);
            }
        }
        offers.sort_by_key(|offer| offer.expires_at);
        offers
    }

    pub(crate) fn holds_offer(&self, rider: RiderId) -> bool {
        self.shards().any(|shard| shard.offers.holds_any(rider)) || self.heard.holds_any(rider)
    }

    /// The rider's profile changed (verified, online or offline, an order taken or finished):
    /// whether dispatch may offer it work follows from the profile.
    pub fn rider_changed(&self, rider: &Rider) {
        self.flag_everywhere(rider.id, rider.is_dispatchable());
    }

    /// Sets the rider's flag here and, in a cluster, on every other node: the owner of the
    /// rider's shard and every node that copies its region search it.
    fn flag_everywhere(&self, rider: RiderId, dispatchable: bool) {
        set_dispatchable(self.index(), rider, dispatchable);
        if let Some(remote) = self.remote() {
            remote.dispatchable(rider, dispatchable);
        }
    }

    /// Another node changed the flag of a rider this node may hold (see
    /// [`RemoteShards::dispatchable`](crate::RemoteShards::dispatchable)).
    pub fn dispatchable_heard(&self, rider: RiderId, dispatchable: bool) {
        set_dispatchable(self.index(), rider, dispatchable);
    }

    /// Reads the rider's profile and sets its flag from it; the flag, if the profile was read.
    pub(crate) async fn read_flag(&self, rider: RiderId) -> Option<bool> {
        self.entry_reads.inc();
        match self.rider_store().get(rider).await {
            Ok(Some(profile)) => {
                let flag = profile.is_dispatchable();
                set_dispatchable(self.index(), rider, flag);
                Some(flag)
            }
            Ok(None) => None,
            Err(err) => {
                tracing::warn!(rider_id = %rider, error = %err, "rider profile not read");
                None
            }
        }
    }

    /// The rider was assigned an order: no more offers until it is delivered. Set at once, not
    /// from a profile read later, so the next wave of another order skips the rider.
    pub fn rider_assigned(&self, rider: RiderId) {
        self.flag_everywhere(rider, false);
    }
}

/// The one write of the flag (index restores at start carry the stored profile's value).
fn set_dispatchable(index: &RiderIndex, rider: RiderId, dispatchable: bool) {
    index.set_dispatchable(rider, dispatchable);
}
