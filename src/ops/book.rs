//! The open orders this node's actors hold, as the operations page needs them: status, pickup,
//! and since when an order waits for a rider. Its one writer is the actors' `holding` hook
//! (through the node's order events): an actor reports its order when it starts and after every
//! change, and a finished order leaves the book and is counted.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use dashmap::DashMap;
use time::OffsetDateTime;
use tomato_domain::{LatLon, Order, OrderId, OrderStatus};

/// One open order.
#[derive(Debug, Clone)]
pub struct Held {
    pub shard: u32,
    pub status: OrderStatus,
    pub pickup: LatLon,
    pub restaurant: String,
    /// When it became `ready_for_rider`, while it waits for one.
    pub ready_at: Option<OffsetDateTime>,
}

/// The node's open orders, and how many finished since it started.
#[derive(Debug, Default)]
pub struct OpsBook {
    open: DashMap<OrderId, Held>,
    delivered: AtomicU64,
    cancelled: AtomicU64,
    expired: AtomicU64,
}

impl OpsBook {
    /// The order as its actor holds it now.
    pub fn holding(&self, order: &Order) {
        if order.status.is_terminal() {
            // Counted once: only the actor that held it open reports it finished here.
            if self.open.remove(&order.id).is_some() {
                let counter = match order.status {
                    OrderStatus::Delivered => &self.delivered,
                    OrderStatus::Cancelled => &self.cancelled,
                    _ => &self.expired,
                };
                counter.fetch_add(1, Ordering::Relaxed);
            }
            return;
        }
        let ready_at = (order.status == OrderStatus::ReadyForRider)
            .then(|| order.ready_since())
            .flatten();
        self.open.insert(
            order.id,
            Held {
                shard: order.shard,
                status: order.status,
                pickup: order.pickup,
                restaurant: order.restaurant_name.clone(),
                ready_at,
            },
        );
    }

    /// The open orders of the shards for which `running` holds; those of shards that stopped
    /// here (handed over, lost) leave the book.
    pub fn open(&self, running: impl Fn(u32) -> bool) -> Vec<(OrderId, Held)> {
        self.open.retain(|_, held| running(held.shard));
        self.open
            .iter()
            .map(|entry| (*entry.key(), entry.value().clone()))
            .collect()
    }

    /// Orders finished on this node since it started, by status.
    pub fn finished(&self) -> BTreeMap<String, u64> {
        [
            (OrderStatus::Delivered, &self.delivered),
            (OrderStatus::Cancelled, &self.cancelled),
            (OrderStatus::Expired, &self.expired),
        ]
        .into_iter()
        .map(|(status, n)| (status.to_string(), n.load(Ordering::Relaxed)))
        .collect()
    }
}
