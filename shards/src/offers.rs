//! The offers standing for one shard's orders, as the shard's order actors report them: the read
//! view behind `GET /api/rider/offers` and behind the candidate search's "riders holding an
//! offer go last". The order actors decide (who is offered, when an offer ends); this book only
//! mirrors what they said, so it has no rule of its own. Expired offers are pruned on every read
//! and write of a rider's entry, so the book never outgrows the riders with live offers; it is
//! emptied when the shard stops, with the actors that fill it.

use dashmap::DashMap;
use time::OffsetDateTime;
use tomato_actors::Offer;
use tomato_domain::{OrderId, RiderId};

/// The live offers of one shard's orders, by rider and by order.
#[derive(Debug, Default)]
pub(crate) struct OfferBook {
    held: DashMap<RiderId, Vec<Offer>>,
    /// Who was offered each order still being dispatched.
    offered_to: DashMap<OrderId, Vec<RiderId>>,
}

impl OfferBook {
    pub(crate) fn hold(&self, offer: &Offer, riders: &[RiderId]) {
        self.offered_to
            .entry(offer.order_id)
            .or_default()
            .extend_from_slice(riders);
        let now = OffsetDateTime::now_utc();
        for rider in riders {
            let mut held = self.held.entry(*rider).or_default();
            held.retain(|h| h.expires_at > now && h.order_id != offer.order_id);
            held.push(offer.clone());
        }
    }

    /// Forgets `rider`'s offer of `order`.
    pub(crate) fn forget(&self, rider: RiderId, order: OrderId) {
        let now = OffsetDateTime::now_utc();
        self.held.remove_if_mut(&rider, |_, held| {
            held.retain(|h| h.expires_at > now && h.order_id != order);
            held.is_empty()
        });
    }

    /// Forgets every offer of `order`.
    pub(crate) fn end(&self, order: OrderId) {
        if let Some((_, riders)) = self.offered_to.remove(&order) {
            for rider in riders {
                self.forget(rider, order);
            }
        }
    }

    /// Whether `rider` holds a live offer of this shard's orders.
    pub(crate) fn holds_any(&self, rider: RiderId) -> bool {
        let now = OffsetDateTime::now_utc();
        self.held
            .get(&rider)
            .is_some_and(|held| held.iter().any(|h| h.expires_at > now))
    }

    /// The live offers `rider` holds of this shard's orders, oldest first.
    pub(crate) fn of(&self, rider: RiderId) -> Vec<Offer> {
        let now = OffsetDateTime::now_utc();
        let mut live = Vec::new();
        self.held.remove_if_mut(&rider, |_, held| {
            held.retain(|h| h.expires_at > now);
            live.clone_from(held);
            held.is_empty()
        });
        live
    }

    /// Drops every expired offer, and the orders nobody holds an offer of any more: for a book
    /// whose ends may be lost on the way (another node's offers, as it told them).
    pub(crate) fn prune(&self) {
        let now = OffsetDateTime::now_utc();
        self.held.retain(|_, held| {
            held.retain(|h| h.expires_at > now);
            !held.is_empty()
        });
        self.offered_to.retain(|order, riders| {
            riders.retain(|rider| {
                self.held
                    .get(rider)
                    .is_some_and(|held| held.iter().any(|h| h.order_id == *order))
            });
            !riders.is_empty()
        });
    }

    pub(crate) fn clear(&self) {
        self.held.clear();
        self.offered_to.clear();
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.held.is_empty() && self.offered_to.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use time::Duration;
    use tomato_domain::{LatLon, RestaurantId};

    use super::*;

    fn offer(expires_in: Duration) -> Offer {
        let at = LatLon::new(12.97, 77.59).expect("a point");
        Offer {
            order_id: OrderId::new(),
            restaurant_id: RestaurantId::new(),
            restaurant_name: "Kitchen".into(),
            pickup: at,
            dropoff: at,
            distance_km: 1.0,
            rider_amount: 3000,
            expires_at: OffsetDateTime::now_utc() + expires_in,
        }
    }

    #[test]
    fn pruning_keeps_live_offers_and_drops_expired_ones_and_their_orders() {
        let book = OfferBook::default();
        let (ravi, sita) = (RiderId::new(), RiderId::new());
        let live = offer(Duration::seconds(30));
        let gone = offer(Duration::seconds(-1));
        book.hold(&live, &[ravi]);
        book.hold(&gone, &[ravi, sita]);
        book.prune();
        assert_eq!(book.of(ravi), vec![live.clone()]);
        assert!(book.of(sita).is_empty());
        assert_eq!(book.offered_to.len(), 1, "the expired order is forgotten");
        book.end(live.order_id);
        assert!(book.is_empty());
    }
}
