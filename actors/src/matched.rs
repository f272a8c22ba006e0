//! Batched dispatch, as the order actor runs it. An order that is `ready_for_rider` queues itself
//! for the node's matching windows (the windows themselves are the shards' business) and waits;
//! a window that matches it with a rider sends [`MatchedRider`], and the order offers itself to
//! that rider alone for `matched_ttl`. A rider who turns it down or lets it expire is left out
//! and the order queues for the next window. Once `offer_ttl` has passed since dispatch started,
//! the windows stop taking it and it is offered in waves ([`crate::waves`]), so no order starves
//! behind the optimiser.

use std::sync::Arc;
use std::time::Instant;

use actix::prelude::*;
use time::OffsetDateTime;
use tomato_domain::{OrderStatus, RiderId};

use crate::dispatch_port::{MatchedRider, Offer, Queued, Withdrawn};
use crate::order::OrderActor;

impl OrderActor {
    /// Starts the matching time: queued now, waves when `offer_ttl` runs out.
    pub(crate) fn start_matching(&mut self, ctx: &mut Context<Self>) {
        let ttl = self.env().policy.offer_ttl;
        let Some(dispatching) = self.dispatching.as_mut() else {
            return;
        };
        dispatching.matching_until = Some(Instant::now() + ttl);
        dispatching.timer = Some(ctx.run_later(ttl, |act, ctx| act.matching_over(ctx)));
        self.queue_for_window(ctx);
    }

    /// Queues the order for the next window, without the riders it must not be matched with.
    pub(crate) fn queue_for_window(&mut self, ctx: &mut Context<Self>) {
        let Some(dispatching) = self.dispatching.as_ref() else {
            return;
        };
        let Some(until) = dispatching.matching_until else {
            return;
        };
        let exclude = dispatching.left_out();
        let order = self.order();
        let ready_at = order.ready_since().unwrap_or(order.updated_at);
        let queued = Queued {
            exclude,
            ready_at,
            until,
            to: ctx.address().recipient(),
        };
        self.env().dispatch.queue(order, queued);
    }

    /// The matching time ran out: waves from now on. A matched offer still standing stays until
    /// its deadline (the first wave counts it).
    fn matching_over(&mut self, ctx: &mut Context<Self>) {
        let Some(dispatching) = self.dispatching.as_mut() else {
            return;
        };
        dispatching.matching_until = None;
        dispatching.timer = None;
        if let Some(timer) = dispatching.matched_timer.take() {
            ctx.cancel_future(timer);
        }
        self.env().dispatch.unmatched(self.order());
        tracing::info!(order_id = %self.order().id, "no match taken in time, offering in waves");
        self.wave(ctx);
    }

    /// The offer to the matched rider ran out unanswered: the rider is left out of the next
    /// windows.
    fn matched_expired(&mut self, rider: RiderId, ctx: &mut Context<Self>) {
        let port = Arc::clone(&self.env().dispatch);
        let order = self.order().clone();
        let Some(dispatching) = self.dispatching.as_mut() else {
            return;
        };
        dispatching.matched_timer = None;
        if dispatching.matching_until.is_none() || dispatching.live.remove(&rider).is_none() {
            return;
        }
        dispatching.tried.insert(rider);
        port.withdrawn(&order, rider, Withdrawn::Expired);
        self.queue_for_window(ctx);
    }
}

impl Handler<MatchedRider> for OrderActor {
    type Result = ();

    fn handle(&mut self, matched: MatchedRider, ctx: &mut Context<Self>) {
        let Some(ttl) = self.env().policy.matched_ttl else {
            return;
        };
        let port = Arc::clone(&self.env().dispatch);
        let order = self.order().clone();
        let Some(dispatching) = self.dispatching.as_mut() else {
            // Taken, retired or restarted since it was queued.
            return;
        };
        let rider = matched.rider;
        let matching = dispatching
            .matching_until
            .is_some_and(|until| until > Instant::now());
        if !matching || order.status != OrderStatus::ReadyForRider || !dispatching.live.is_empty() {
            // Late (waves took over), or an offer stands and requeues the order when it ends.
            return;
        }
        if dispatching.rejected.contains(&rider) || dispatching.tried.contains(&rider) {
            // Matched from a window that began before the rider was left out: the next one.
            self.queue_for_window(ctx);
            return;
        }
        let deadline = OffsetDateTime::now_utc() + ttl;
        dispatching.live.insert(rider, deadline);
        dispatching.matched_timer =
            Some(ctx.run_later(ttl, move |act, ctx| act.matched_expired(rider, ctx)));
        tracing::info!(order_id = %order.id, rider_id = %rider, distance_m = matched.distance_m, "matched offer sent");
        port.offer(&order, &Offer::of(&order, deadline), &[rider]);
    }
}
