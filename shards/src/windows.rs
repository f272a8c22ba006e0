//! Batched dispatch's windows (`dispatch.mode = "batched"`). The order actors of the shards
//! running here queue themselves while they wait for a rider; every `dispatch.batch_window_ms`
//! the node takes the queue together, finds each order's `dispatch.candidates` nearest free
//! riders (none holding another offer, none the order left out), assigns them all at once with
//! [`crate::matching`], and tells each matched order its rider. The offer itself, its expiry and
//! the fall back to waves are the order actor's ([`tomato_actors::matched`]); the claim stays
//! the accept's, fenced by the order actor and the store, so a rider matched by two nodes'
//! windows at once still ends with one order.
//!
//! A window is bounded: at most [`MAX_ORDERS_PER_WINDOW`] orders (the oldest; the rest wait for
//! the next), and a solve that runs past half the window is abandoned for nearest-first in that
//! window (and counted).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use time::OffsetDateTime;
use tokio::task::JoinHandle;
use tomato_actors::{MatchedRider, Queued};
use tomato_domain::{LatLon, Order, OrderId, RiderId};

use crate::fresh_since;
use crate::matching::{self, Costs, Matched, Reach, Waiting};
use crate::ports::{DispatchHook, SearchSettings};
use crate::remote::NearestQuery;
use crate::router::ShardRouter;

/// The most orders one window takes, oldest first (a solve of 200 took about 4 ms on our
/// 2-core machines; the cost grows with the cube).
pub const MAX_ORDERS_PER_WINDOW: usize = 256;
/// Metres of pickup one second of waiting is worth: an order that has waited a minute wins a
/// rider over one 300 m nearer.
const CREDIT_M_PER_S: f64 = 5.0;

/// Batched dispatch's tuning (config `[dispatch]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MatchingSettings {
    /// How often a window runs.
    pub window: Duration,
    /// The nearest riders considered per order.
    pub candidates: usize,
    /// An order is left for the next window rather than given a rider farther than this many
    /// metres times (1 + the seconds it has waited); 0 matches every order it can.
    pub hold_m: u32,
}

/// What one window did, for the node's metrics and the operations page.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WindowReport {
    pub at: OffsetDateTime,
    /// Orders the window took.
    pub orders: usize,
    /// Distinct riders among their candidates.
    pub riders: usize,
    pub matched: usize,
    /// Mean pickup distance of the matches, metres (0 without any).
    pub mean_pickup_m: f64,
    pub solve: Duration,
    /// The solve ran past its budget: nearest-first matched this window.
    pub over_budget: bool,
}

/// An order waiting for a window.
struct Entry {
    pickup: LatLon,
    queued: Queued,
}

/// The queue of orders waiting for a window, and how windows run.
pub struct Windows {
    queue: Mutex<HashMap<OrderId, Entry>>,
    settings: MatchingSettings,
    search: SearchSettings,
    hook: Arc<dyn DispatchHook>,
}

impl std::fmt::Debug for Windows {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Windows")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Windows {
    pub(crate) fn new(
        settings: MatchingSettings,
        search: SearchSettings,
        hook: Arc<dyn DispatchHook>,
    ) -> Self {
        Self {
            queue: Mutex::default(),
            settings,
            search,
            hook,
        }
    }

    /// `order` waits for the next window (again, with the riders it now leaves out).
    pub(crate) fn queue(&self, order: &Order, queued: Queued) {
        let entry = Entry {
            pickup: order.pickup,
            queued,
        };
        self.lock().insert(order.id, entry);
    }

    /// `order` no longer waits (taken, retired, or offered in waves).
    pub(crate) fn forget(&self, order: OrderId) {
        self.lock().remove(&order);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<OrderId, Entry>> {
        // A panic while holding the queue cannot leave it half-written: every change is one
        // insert or remove.
        self.queue
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The orders this window takes: those still in their matching time, oldest first, at most
    /// [`MAX_ORDERS_PER_WINDOW`]. Orders past their time leave the queue.
    fn due(&self, now: Instant) -> Vec<(OrderId, LatLon, Queued)> {
        let mut queue = self.lock();
        queue.retain(|_, entry| entry.queued.until > now);
        let mut due: Vec<(OrderId, LatLon, Queued)> = queue
            .iter()
            .map(|(id, entry)| (*id, entry.pickup, entry.queued.clone()))
            .collect();
        drop(queue);
        due.sort_by_key(|(id, _, queued)| (queued.ready_at, *id));
        due.truncate(MAX_ORDERS_PER_WINDOW);
        due
    }
}

impl ShardRouter {
    /// Runs a window every `dispatch.batch_window_ms` until the task is aborted; `None` when
    /// dispatch is greedy.
    pub fn spawn_windows(self: &Arc<Self>) -> Option<JoinHandle<()>> {
        let every = self.windows()?.settings.window;
        let router = Arc::clone(self);
        Some(tokio::spawn(async move {
            let mut ticks = tokio::time::interval(every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                router.window().await;
            }
        }))
    }

    /// One window: the queued orders, their candidates, the assignment, the matches told.
    async fn window(self: &Arc<Self>) {
        let Some(windows) = self.windows() else {
            return;
        };
        let due = windows.due(Instant::now());
        if due.is_empty() {
            return;
        }
        let waiting = self.reaches(windows, &due).await;
        let riders: HashSet<RiderId> = waiting
            .iter()
            .flat_map(|w| w.riders.iter().map(|reach| reach.rider))
            .collect();
        let budget = windows.settings.window / 2;
        let started = Instant::now();
        let costs = Costs {
            credit_m_per_s: CREDIT_M_PER_S,
            hold_m: f64::from(windows.settings.hold_m),
        };
        let (matched, over_budget) = solve(waiting, costs, budget).await;
        let solve = started.elapsed();
        let to: HashMap<OrderId, &Queued> = due.iter().map(|(id, _, q)| (*id, q)).collect();
        for pair in &matched {
            // Out of the queue: the order queues itself again if the offer comes to nothing.
            windows.forget(pair.order);
            if let Some(queued) = to.get(&pair.order) {
                queued.to.do_send(MatchedRider {
                    rider: pair.rider,
                    distance_m: pair.distance_m,
                });
            }
        }
        let total_m: f64 = matched.iter().map(|pair| pair.distance_m).sum();
        windows.hook.window(&WindowReport {
            at: OffsetDateTime::now_utc(),
            orders: due.len(),
            riders: riders.len(),
            matched: matched.len(),
            mean_pickup_m: if matched.is_empty() {
                0.0
            } else {
                total_m / matched.len() as f64
            },
            solve,
            over_budget,
        });
    }

    /// Each due order with its nearest free riders, searched at once.
    async fn reaches(&self, windows: &Windows, due: &[(OrderId, LatLon, Queued)]) -> Vec<Waiting> {
        let fresh = fresh_since(windows.search.stale_after_s);
        let k = windows.settings.candidates;
        let searches = due.iter().map(|(_, pickup, queued)| {
            self.nearest_everywhere(NearestQuery {
                at: *pickup,
                radius_m: windows.search.radius_m,
                // Riders left out or holding another offer are dropped after the search.
                limit: 2 * k + queued.exclude.len(),
                fresh_since: fresh,
            })
        });
        let found = futures_util::future::join_all(searches).await;
        let now = OffsetDateTime::now_utc();
        due.iter()
            .zip(found)
            .map(|((order, _, queued), found)| {
                let mut seen = HashSet::new();
                let riders = found
                    .into_iter()
                    .filter(|f| {
                        !queued.exclude.contains(&f.rider)
                            && seen.insert(f.rider)
                            && !self.holds_offer(f.rider)
                    })
                    .take(k)
                    .map(|f| Reach {
                        rider: f.rider,
                        distance_m: f.distance_m,
                    })
                    .collect();
                Waiting {
                    order: *order,
                    waited_s: (now - queued.ready_at).as_seconds_f64().max(0.0),
                    riders,
                }
            })
            .collect()
    }
}

/// The window's assignment, off the async threads; nearest-first when it does not finish
/// within `budget` (the solve still ends in the background, its answer unused).
async fn solve(waiting: Vec<Waiting>, costs: Costs, budget: Duration) -> (Vec<Matched>, bool) {
    let waiting = Arc::new(waiting);
    let solving = tokio::task::spawn_blocking({
        let waiting = Arc::clone(&waiting);
        move || matching::assign(&waiting, costs)
    });
    match tokio::time::timeout(budget, solving).await {
        Ok(Ok(matched)) => return (matched, false),
        Ok(Err(err)) => {
            tracing::error!(error = %err, "matching failed, nearest-first this window");
        }
        Err(_) => {
            tracing::warn!(
                budget_ms = budget.as_millis(),
                "matching past its budget, nearest-first this window"
            );
        }
    }
    // Only now: most windows never need it.
    (matching::nearest_first(&waiting, costs), true)
}
