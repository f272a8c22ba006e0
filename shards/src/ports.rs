//! The order and rider actors' ports as the shards implement them. What dispatch does to the
//! shards (the candidate search, the standing offers, the riders' dispatchable flag, a rider's
//! accept reaching the order's actor) stays down here; what the node must hear (riders to tell
//! of an offer, a restaurant to tell nobody is free, the counters, a carried order's rider
//! moving) goes up through one narrow hook, [`DispatchHook`]. The router is built here, with
//! both ports around it ([`ShardRouter::new`]), so nothing is wired in after construction.

use std::collections::HashSet;
use std::sync::{Arc, Weak};

use futures_core::future::BoxFuture;
use prometheus_client::metrics::counter::Counter;
use time::OffsetDateTime;
use tomato_actors::{
    Carried, DispatchPolicy, DispatchPort, Offer, OrderEnv, OrderError, OrderEvents, Queued,
    RiderEnv, RiderPort, Withdrawn,
};
use tomato_domain::{LatLon, Order, OrderId, RiderId, UserId};
use tomato_store::{OrderStore, RiderStore};

use crate::candidates::Search;
use crate::router::{OrderRef, ShardRouter};
use crate::windows::{MatchingSettings, WindowReport, Windows};
use crate::{ActorRuntime, RiderIndex, ShardId, ShardMap, fresh_since};

/// What the node hears of dispatch and of carried orders.
pub trait DispatchHook: Send + Sync + 'static {
    /// `order` was offered to `riders`: tell them (`order:available`).
    fn offered(&self, order: &Order, offer: &Offer, riders: &[RiderId]);

    /// Nobody could be offered `order` this round (`order:dispatch_pending`).
    fn pending(&self, order: &Order, attempts: u32);

    /// `rider`'s offer of `order` no longer stands.
    fn withdrawn(&self, order: &Order, rider: RiderId, why: Withdrawn);

    /// `rider` took `order` (persisted).
    fn assigned(&self, order: &Order, rider: RiderId);

    /// A batched dispatch window ran (one that had orders to match).
    fn window(&self, report: &WindowReport);

    /// Batched dispatch gave up matching `order`: it is offered in waves from now on.
    fn unmatched(&self, order: &Order);

    /// The rider carrying `order` moved: its `customer` may watch (`rider:location`).
    fn moved(&self, order: OrderId, customer: UserId, at: LatLon, seen_at: OffsetDateTime);
}

/// How far dispatch looks for riders (config `[dispatch]`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SearchSettings {
    pub radius_m: f64,
    /// Riders not seen for this long are not offered anything.
    pub stale_after_s: u64,
}

/// What the router's actors need from the node: the order store and events, the hook and the
/// search of dispatch, its policy, and the counters of actor restarts.
pub struct OrderPorts {
    pub store: Arc<dyn OrderStore>,
    pub events: Arc<dyn OrderEvents>,
    /// What the node hears of dispatch; the dispatch port itself is the router's.
    pub hook: Arc<dyn DispatchHook>,
    pub search: SearchSettings,
    /// Dispatch's policy; batched when it gives a `matched_ttl`.
    pub policy: DispatchPolicy,
    /// How batched dispatch's windows run (unused when dispatch is greedy).
    pub matching: MatchingSettings,
    /// Counts restarts of order actors, for `/metrics`.
    pub restarts: Counter,
    /// Counts restarts of rider actors, for `/metrics`.
    pub rider_restarts: Counter,
    /// Counts the rider profiles read because a rider was new to this node's index or copy
    /// (to learn whether it may be offered work), for `/metrics`.
    pub entry_reads: Counter,
}

impl std::fmt::Debug for OrderPorts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OrderPorts")
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl ShardRouter {
    /// A router over `map`'s shards, none of them started, with the ports its order and rider
    /// actors reach dispatch and the node through.
    pub fn new(
        runtime: Arc<ActorRuntime>,
        map: ShardMap,
        index: Arc<RiderIndex>,
        orders: OrderPorts,
        positions: Arc<dyn RiderStore>,
    ) -> Arc<Self> {
        let windows = orders.policy.matched_ttl.map(|_| {
            Arc::new(Windows::new(
                orders.matching,
                orders.search,
                Arc::clone(&orders.hook),
            ))
        });
        Arc::new_cyclic(|me: &Weak<ShardRouter>| {
            let dispatch = Arc::new(RouterDispatch {
                router: me.clone(),
                hook: Arc::clone(&orders.hook),
                search: orders.search,
                riders: Arc::clone(&positions),
            });
            let riders = RiderEnv {
                port: Arc::new(RouterRiders {
                    router: me.clone(),
                    hook: orders.hook,
                    riders: Arc::clone(&positions),
                    orders: Arc::clone(&orders.store),
                }),
                restarts: orders.rider_restarts,
            };
            let me = me.clone();
            let orders_env = Arc::new(OrderEnv {
                store: orders.store,
                events: orders.events,
                dispatch,
                policy: orders.policy,
                restarts: orders.restarts,
                passivate: Box::new(move |id, shard| {
                    if let Some(router) = me.upgrade() {
                        router.passivated(id, shard);
                    }
                }),
            });
            let mut router =
                ShardRouter::assemble(runtime, map, index, orders_env, riders, positions, windows);
            router.entry_reads = orders.entry_reads;
            router
        })
    }
}

/// The order actors' dispatch port: down into the shards, up through the hook.
pub(crate) struct RouterDispatch {
    pub(crate) router: Weak<ShardRouter>,
    pub(crate) hook: Arc<dyn DispatchHook>,
    pub(crate) search: SearchSettings,
    /// Where a freed rider's profile is read, to tell whether it may be offered work again.
    pub(crate) riders: Arc<dyn RiderStore>,
}

impl RouterDispatch {
    fn router(&self) -> Option<Arc<ShardRouter>> {
        self.router.upgrade()
    }

    /// Batched dispatch's queue, which the router owns; `None` when dispatch is greedy.
    fn windows(&self) -> Option<Arc<Windows>> {
        self.router()?.windows().cloned()
    }
}

impl DispatchPort for RouterDispatch {
    fn candidates(
        &self,
        pickup: LatLon,
        exclude: HashSet<RiderId>,
        limit: usize,
    ) -> BoxFuture<'static, Vec<RiderId>> {
        let search = Search {
            radius_m: self.search.radius_m,
            fresh_since: fresh_since(self.search.stale_after_s),
        };
        match self.router() {
            Some(router) => router.candidates(pickup, exclude, limit, search),
            None => Box::pin(std::future::ready(Vec::new())),
        }
    }

    fn offer(&self, order: &Order, offer: &Offer, riders: &[RiderId]) {
        if let Some(router) = self.router() {
            router.offers_made(order, offer, riders);
        }
        self.hook.offered(order, offer, riders);
    }

    fn pending(&self, order: &Order, attempts: u32) {
        self.hook.pending(order, attempts);
    }

    fn withdrawn(&self, order: &Order, rider: RiderId, why: Withdrawn) {
        if let Some(router) = self.router() {
            router.offer_withdrawn(order, rider);
        }
        self.hook.withdrawn(order, rider, why);
    }

    fn queue(&self, order: &Order, queued: Queued) {
        if let Some(windows) = self.windows() {
            windows.queue(order, queued);
        }
    }

    fn unmatched(&self, order: &Order) {
        if let Some(windows) = self.windows() {
            windows.forget(order.id);
        }
        self.hook.unmatched(order);
    }

    fn ended(&self, order: &Order) {
        if let Some(windows) = self.windows() {
            windows.forget(order.id);
        }
        if let Some(router) = self.router() {
            router.offers_ended(order);
        }
    }

    fn assigned(&self, order: &Order, rider: RiderId) {
        if let Some(router) = self.router() {
            router.rider_assigned(rider);
            router.rider_carries(rider, Some((order.id, order.user_id)));
        }
        self.hook.assigned(order, rider);
    }

    fn released(&self, _order: &Order, rider: RiderId) {
        let Some(router) = self.router() else {
            return;
        };
        router.rider_carries(rider, None);
        let riders = Arc::clone(&self.riders);
        // Free again if the rider is still online and verified (the store knows).
        tokio::spawn(async move {
            if let Ok(Some(profile)) = riders.get(rider).await {
                router.rider_changed(&profile);
            }
        });
    }
}

/// The rider actors' port: an accept goes down to the order's actor through the router; a
/// carried order's rider moving goes up through the hook.
pub(crate) struct RouterRiders {
    pub(crate) router: Weak<ShardRouter>,
    pub(crate) hook: Arc<dyn DispatchHook>,
    pub(crate) riders: Arc<dyn RiderStore>,
    pub(crate) orders: Arc<dyn OrderStore>,
}

impl RiderPort for RouterRiders {
    fn moved(&self, order: OrderId, customer: UserId, at: LatLon, seen_at: OffsetDateTime) {
        self.hook.moved(order, customer, at, seen_at);
    }

    fn accept(
        &self,
        order: OrderId,
        shard: u32,
        rider: RiderId,
        name: String,
        phone: String,
    ) -> BoxFuture<'static, Result<Order, OrderError>> {
        let router = self.router.upgrade();
        let order = OrderRef {
            id: order,
            shard: ShardId(shard),
        };
        Box::pin(async move {
            match router {
                Some(router) => router.accept(order, rider, name, phone).await,
                None => Err(OrderError::Unavailable),
            }
        })
    }

    fn carried(&self, rider: RiderId) -> BoxFuture<'static, Carried> {
        let (riders, orders) = (Arc::clone(&self.riders), Arc::clone(&self.orders));
        Box::pin(async move {
            let profile = riders.get(rider).await.ok().flatten()?;
            let order = orders.get(profile.current_order_id?).await.ok().flatten()?;
            Some((order.id, order.user_id))
        })
    }
}
