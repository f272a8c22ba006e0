//! Dispatch, as the order actor runs it. An order that is `ready_for_rider` offers itself to the
//! nearest free riders in waves of `offer_batch`; an offer lives `offer_ttl`. When offers expire
//! or are rejected the next wave goes to the next-nearest riders not tried yet; when nobody is
//! left the restaurant hears `order:dispatch_pending`, and after a backoff (doubling up to
//! `max_backoff`) everyone but those who rejected may be offered again. Dispatch state is soft:
//! a restarted actor (or node) starts it over from the stored order. In batched mode the waves
//! start only after the order's matching time ([`crate::matched`]).

use std::time::Duration;

use actix::prelude::*;
use time::OffsetDateTime;
use tomato_domain::RiderId;

use crate::dispatch_port::{Dispatching, Offer, Withdrawn};
use crate::order::OrderActor;

impl OrderActor {
    pub(crate) fn start_dispatch(&mut self, ctx: &mut Context<Self>) {
        self.dispatching = Some(Dispatching::default());
        if self.env().policy.matched_ttl.is_some() {
            self.start_matching(ctx);
        } else {
            self.wave(ctx);
        }
    }

    pub(crate) fn stop_dispatch(&mut self, ctx: &mut Context<Self>) {
        let Some(dispatching) = self.dispatching.take() else {
            return;
        };
        for timer in [dispatching.timer, dispatching.matched_timer]
            .into_iter()
            .flatten()
        {
            ctx.cancel_future(timer);
        }
        self.env().dispatch.ended(self.order());
    }

    pub(crate) fn holds_offer(&self, rider: RiderId) -> bool {
        let now = OffsetDateTime::now_utc();
        self.dispatching
            .as_ref()
            .and_then(|d| d.live.get(&rider))
            .is_some_and(|deadline| *deadline > now)
    }

    pub(crate) fn rejected(&mut self, rider: RiderId, ctx: &mut Context<Self>) {
        let port = std::sync::Arc::clone(&self.env().dispatch);
        let order = self.order().clone();
        let Some(dispatching) = self.dispatching.as_mut() else {
            return;
        };
        dispatching.live.remove(&rider);
        port.withdrawn(&order, rider, Withdrawn::Rejected);
        dispatching.rejected.insert(rider);
        if dispatching.matching_until.is_some() {
            // Back to the next window, without the rider who said no.
            if let Some(timer) = dispatching.matched_timer.take() {
                ctx.cancel_future(timer);
            }
            self.queue_for_window(ctx);
            return;
        }
        if dispatching.live.is_empty() {
            if let Some(timer) = dispatching.timer.take() {
                ctx.cancel_future(timer);
            }
            self.wave(ctx);
        }
    }

    /// Lets expired offers go and searches for riders to fill the wave; the offers go out when
    /// the search answers ([`Self::offer_wave`]).
    pub(crate) fn wave(&mut self, ctx: &mut Context<Self>) {
        let policy = self.env().policy;
        let (order, port) = (
            self.order().clone(),
            std::sync::Arc::clone(&self.env().dispatch),
        );
        let pickup = order.pickup;
        let Some(dispatching) = self.dispatching.as_mut() else {
            return;
        };
        let now = OffsetDateTime::now_utc();
        let expired: Vec<RiderId> = dispatching
            .live
            .iter()
            .filter(|(_, deadline)| **deadline <= now)
            .map(|(rider, _)| *rider)
            .collect();
        for rider in expired {
            dispatching.live.remove(&rider);
            dispatching.tried.insert(rider);
            port.withdrawn(&order, rider, Withdrawn::Expired);
        }
        let wanted = policy.batch.saturating_sub(dispatching.live.len());
        if wanted == 0 {
            self.offer_wave(Vec::new(), ctx);
            return;
        }
        let exclude = dispatching.left_out();
        let search = port.candidates(pickup, exclude, wanted);
        // Spawned, not waited on: accepts of standing offers are served while the search runs.
        // Its handle is the pending step, so stopping dispatch cancels it.
        let handle = ctx.spawn(
            search
                .into_actor(self)
                .map(|riders, act, ctx| act.offer_wave(riders, ctx)),
        );
        if let Some(dispatching) = self.dispatching.as_mut() {
            dispatching.timer = Some(handle);
        }
    }

    /// Offers the order to the riders found, and schedules the next wave.
    fn offer_wave(&mut self, riders: Vec<RiderId>, ctx: &mut Context<Self>) {
        let policy = self.env().policy;
        let (order, port) = (
            self.order().clone(),
            std::sync::Arc::clone(&self.env().dispatch),
        );
        let Some(dispatching) = self.dispatching.as_mut() else {
            // Dispatch stopped while the search ran (the order was taken, or retired).
            return;
        };
        let now = OffsetDateTime::now_utc();
        if !riders.is_empty() {
            let deadline = now + policy.offer_ttl;
            for rider in &riders {
                dispatching.live.insert(*rider, deadline);
            }
            tracing::info!(order_id = %order.id, riders = riders.len(), "offers sent");
            port.offer(&order, &Offer::of(&order, deadline), &riders);
        }
        let next = if dispatching.live.is_empty() {
            // Nobody to offer it to: tell the restaurant, wait, and let this round's riders
            // (but not those who said no) be offered again.
            dispatching.attempts += 1;
            dispatching.tried.clear();
            port.pending(&order, dispatching.attempts);
            tracing::warn!(order_id = %order.id, attempts = dispatching.attempts, "no rider to offer the order to");
            backoff(dispatching.attempts, policy.max_backoff)
        } else {
            policy.offer_ttl
        };
        dispatching.timer = Some(ctx.run_later(next, |act, ctx| act.wave(ctx)));
    }
}

/// 1 s, 2 s, 4 s ... capped.
fn backoff(attempts: u32, max: Duration) -> Duration {
    Duration::from_secs(1u64 << attempts.saturating_sub(1).min(16)).min(max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let cap = Duration::from_secs(30);
        let waits: Vec<u64> = (1..=7).map(|a| backoff(a, cap).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 30, 30]);
    }
}
