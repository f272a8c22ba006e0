//! The state every handler gets: cheap, cloneable handles to the node's parts.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use prometheus_client::metrics::counter::Counter;

use tomato_actors::DispatchPolicy;
use tomato_shards::{
    ActorRuntime, MatchingSettings, OrderPorts, RiderIndex, SearchSettings, ShardMap, ShardRouter,
};
use tomato_store::Stores;

use crate::auth::cache::AuthCache;
use crate::auth::google::GoogleVerifier;
use crate::auth::token::TokenKeys;
use crate::config::Settings;
use crate::dispatch::{DispatchMetrics, NodeDispatch};
use crate::http::Metrics;
use crate::http::idempotency::{Idempotency, KeyLocks};
use crate::payments::providers::Providers;
use crate::payments::razorpay::Razorpay;
use crate::payments::refunds::{NodeOrderEvents, RefundMetrics, Refunds};
use crate::payments::stripe::Stripe;
use crate::realtime::clients::Realtime;
use crate::realtime::events::RealtimeOrderEvents;
use crate::riders::ids::RiderIds;

/// The longest wait between dispatch rounds when no rider is free.
const MAX_DISPATCH_BACKOFF_S: u64 = 30;

/// The node's settings, stores and services, as every handler gets them: one shared [`Services`]
/// behind a reference count, because axum hands each request its own clone of the state (a
/// clone of the services themselves was two dozen reference counts, 1 % of a nearby query).
#[derive(Debug, Clone)]
pub struct AppState(Arc<Services>);

impl std::ops::Deref for AppState {
    type Target = Services;

    fn deref(&self) -> &Services {
        &self.0
    }
}

/// Handles to the node's settings, stores and services.
#[derive(Debug)]
pub struct Services {
    pub settings: Arc<Settings>,
    pub stores: Stores,
    pub tokens: Arc<TokenKeys>,
    pub google: Arc<GoogleVerifier>,
    pub metrics: Arc<Metrics>,
    /// The actix side: one system, an arbiter per shard group.
    pub actors: Arc<ActorRuntime>,
    /// The shards of this node, and the one way in to their order and rider actors.
    pub shards: Arc<ShardRouter>,
    /// Remembered answers of `Idempotency-Key` requests, and this node's per-key locks.
    pub idempotency: Idempotency,
    /// Every rider's live position, by shard (the running shards' slices), for reads; updates
    /// go through `shards`.
    pub riders: Arc<RiderIndex>,
    pub rider_ids: Arc<RiderIds>,
    /// Every connected Socket.IO and WebSocket client.
    pub realtime: Arc<Realtime>,
    /// The payment providers this node takes payments with.
    pub providers: Arc<Providers>,
    /// Money owed back, and the worker that returns it.
    pub refunds: Arc<Refunds>,
    /// Rate limits and socket slots.
    pub limits: Arc<crate::limits::Limits>,
    /// Where uploaded images are kept.
    pub media: Arc<dyn object_store::ObjectStore>,
    pub dispatch_metrics: DispatchMetrics,
    /// The open orders this node's actors hold, for the operations page.
    pub ops_book: Arc<crate::ops::book::OpsBook>,
    /// The cluster's counters (registered whether or not the node joins one).
    pub cluster_metrics: tomato_cluster::ClusterMetrics,
    /// This node's membership, once it joined a cluster (`cluster.redis_url`).
    pub cluster: Arc<std::sync::OnceLock<Arc<tomato_cluster::Cluster>>>,
    /// Users and token revocations as authentication last read them.
    pub auth_cache: Arc<AuthCache>,
}

/// The rate limits, for the extractor of a request's client address.
impl axum::extract::FromRef<AppState> for Arc<crate::limits::Limits> {
    fn from_ref(state: &AppState) -> Self {
        Arc::clone(&state.limits)
    }
}

/// What an internal caller must present, for the http kit's extractor.
impl axum::extract::FromRef<AppState> for crate::http::InternalKey {
    fn from_ref(state: &AppState) -> Self {
        Self(state.settings.internal.key.clone())
    }
}

impl AppState {
    /// Wires the node's services around already-opened stores.
    pub fn new(settings: Settings, stores: Stores) -> anyhow::Result<Self> {
        let http_client = reqwest::Client::builder()
            .user_agent(concat!("tomato/", env!("CARGO_PKG_VERSION")))
            .build()
            .context("building the http client")?;
        let shards = ShardMap::new(
            settings.shards.zone_resolution,
            settings.shards.region_resolution,
            settings.shards.count,
        )
        .context("building the shard map")?;
        let arbiters = match settings.shards.arbiters {
            0 => std::thread::available_parallelism().map_or(1, usize::from),
            n => n,
        };
        let actors = Arc::new(ActorRuntime::start(arbiters).context("starting the actor runtime")?);
        let realtime = Arc::new(Realtime::default());
        let mut metrics = Metrics::new();
        let restarts = Counter::default();
        metrics.registry_mut().register(
            "order_actor_restarts",
            "Order actors restarted by their supervisor after a crash",
            restarts.clone(),
        );
        let dispatch_metrics = DispatchMetrics::register(metrics.registry_mut());
        let cluster_metrics = tomato_cluster::ClusterMetrics::register(metrics.registry_mut());
        let riders = Arc::new(RiderIndex::new(shards));
        let rider_ids = Arc::new(RiderIds::default());
        let rider_restarts = Counter::default();
        metrics.registry_mut().register(
            "rider_actor_restarts",
            "Rider actors restarted by their supervisor after a crash",
            rider_restarts.clone(),
        );
        let entry_reads = Counter::default();
        metrics.registry_mut().register(
            "rider_entry_reads",
            "Rider profiles read because the rider was new to this node's index or copy",
            entry_reads.clone(),
        );
        let dispatch = Arc::new(NodeDispatch {
            rider_ids: Arc::clone(&rider_ids),
            realtime: Arc::clone(&realtime),
            stores: stores.clone(),
            metrics: dispatch_metrics.clone(),
        });
        let providers = Arc::new(Providers {
            test: settings.payments.test_provider,
            razorpay: Razorpay::from_settings(&settings.payments.razorpay, http_client.clone()),
            stripe: Stripe::from_settings(&settings.payments.stripe, http_client.clone()),
        });
        let refund_metrics = RefundMetrics::register(metrics.registry_mut());
        let refunds = Arc::new(Refunds::new(
            Arc::clone(&providers),
            stores.clone(),
            refund_metrics,
        ));
        let ops_book = Arc::new(crate::ops::book::OpsBook::default());
        let router = ShardRouter::new(
            Arc::clone(&actors),
            shards,
            Arc::clone(&riders),
            OrderPorts {
                store: Arc::clone(&stores.orders),
                events: Arc::new(NodeOrderEvents {
                    realtime: RealtimeOrderEvents(Arc::clone(&realtime)),
                    refunds: Arc::clone(&refunds),
                    ops: Arc::clone(&ops_book),
                }),
                hook: dispatch,
                search: SearchSettings {
                    radius_m: f64::from(settings.dispatch.search_radius_m),
                    stale_after_s: settings.dispatch.stale_after_s,
                },
                policy: dispatch_policy(&settings.dispatch),
                matching: MatchingSettings {
                    window: Duration::from_millis(settings.dispatch.batch_window_ms),
                    candidates: settings.dispatch.candidates as usize,
                    hold_m: settings.dispatch.batch_hold_m,
                },
                restarts,
                rider_restarts,
                entry_reads,
            },
            Arc::clone(&stores.riders),
        );
        // Refunds are built before the router (its order events hold them) and reach it after.
        let _ = refunds.orders.set(Arc::downgrade(&router));
        Ok(Self(Arc::new(Services {
            media: crate::media::open_store(&settings)?,
            providers,
            refunds,
            limits: Arc::new(crate::limits::Limits::new(&settings)),
            realtime,
            riders,
            rider_ids,
            dispatch_metrics,
            ops_book,
            cluster_metrics,
            cluster: Arc::default(),
            auth_cache: Arc::new(AuthCache::default()),
            actors,
            shards: router,
            idempotency: Idempotency {
                store: Arc::clone(&stores.idempotency),
                locks: Arc::new(KeyLocks::default()),
            },
            tokens: Arc::new(TokenKeys::new(
                &settings.auth.jwt_secret,
                Duration::from_secs(settings.auth.token_ttl_s),
            )),
            google: Arc::new(GoogleVerifier::new(
                settings.auth.google.clone(),
                http_client,
            )),
            metrics: Arc::new(metrics),
            stores,
            settings: Arc::new(settings),
        })))
    }
}

/// Dispatch's policy from `[dispatch]`: in batched mode an offer to a matched rider stands a
/// third of `offer_ttl_s` (at least a second), so an order gets up to three matches before it
/// is offered in waves.
fn dispatch_policy(settings: &crate::config::DispatchSettings) -> DispatchPolicy {
    let offer_ttl = Duration::from_secs(settings.offer_ttl_s);
    DispatchPolicy {
        batch: settings.offer_batch as usize,
        offer_ttl,
        max_backoff: Duration::from_secs(MAX_DISPATCH_BACKOFF_S),
        matched_ttl: (settings.mode == crate::config::DispatchMode::Batched)
            .then(|| (offer_ttl / 3).max(Duration::from_secs(1))),
    }
}
