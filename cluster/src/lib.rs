//! The cluster: several nodes sharing one store, coordinated through Redis. Redis decides
//! liveness and who serves which shard; the store decides correctness (every order write is a
//! compare-and-set on its version, so a former owner that did not notice its loss writes
//! nothing).
//!
//! Every second each node refreshes its heartbeat and reads the live set (see
//! [`coordination`]), computes each shard's owner by rendezvous hashing over the live nodes
//! ([`rendezvous`]), and then, shard by shard:
//!
//! - a shard it should own and does not hold: it takes the lease (free only once the previous
//!   holder released it or let it lapse) and starts the shard through
//!   [`ShardRouter::start`](tomato_shards::ShardRouter::start), which loads its open orders;
//! - a shard it holds but should not (a node joined): it stops the shard, then releases the
//!   lease, so the new owner takes it at its next tick without waiting for a timeout;
//! - a shard it holds and should: it renews the lease. The node counts the lease as good until
//!   the instant *before* the renewal call plus the TTL minus a margin, on its own boot
//!   clock, and the shard's gate refuses commands past that instant: a node paused past its
//!   lease (SIGSTOP, a long GC-like stall) refuses work the moment it wakes, and its tick then
//!   stops the shard.
//!
//! A node leaving cleanly stops and releases every shard and leaves the live set at once. A node
//! that dies is dropped from the live set when its heartbeat expires (5 s); its leases lapse
//! (6 s) and the next owners take them within a tick: every shard has a live owner within about
//! 8 s. When Redis restarts without its data, heartbeats re-register, holders claim their leases
//! back, and these epochs start over (they are for operators to read, not a fence: the fence is
//! the shard's epoch in the store, which `ShardRouter::start` raises).

pub mod coordination;
mod leases;
mod remote;
pub mod rendezvous;
mod replication;
mod rooms;
pub mod transport;
mod wire;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tokio::task::JoinHandle;
use tomato_shards::regions::Reach;
use tomato_shards::{RemoteShards, ShardRouter};

use crate::coordination::{Coordination, Lease, Member};
use crate::leases::{Held, TICK};
use crate::remote::Answerer;
use crate::replication::{FLUSH_EVERY, Outbox, Replication};
use crate::transport::{Transport, envelope_of};

/// What a node needs to take part.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    pub redis_url: String,
    pub node_id: String,
    /// How far dispatch searches (`dispatch.search_radius_m`): a node copies the regions its
    /// zones' searches reach.
    pub search_radius_m: f64,
}

/// Why a node could not join.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("cannot reach Redis at the configured cluster.redis_url: {0}")]
    Redis(#[from] redis::RedisError),
    #[error(
        "this node's shards ({ours}) differ from the cluster's ({theirs}); every node must use the same shards.count, shards.zone_resolution and shards.region_resolution"
    )]
    Layout { ours: String, theirs: String },
}

/// The cluster's counters in `/metrics`.
#[derive(Debug, Clone)]
pub struct ClusterMetrics {
    pub shards_owned: Gauge,
    pub leases_won: Counter,
    pub leases_lost: Counter,
    pub handed_over: Counter,
    pub redis_errors: Counter,
    /// Positions handed to the node that owns their shard directly (a region's first seconds).
    pub forwarded_positions: Counter,
    /// Positions this node published on their region's channel, the messages and bytes that
    /// carried them.
    pub replicated_positions: Counter,
    pub replication_messages: Counter,
    pub replication_bytes: Counter,
    /// Regions whose positions this node copies.
    pub regions_copied: Gauge,
    /// Realtime rooms whose events this node listens to (those its clients are in).
    pub rooms_listened: Gauge,
    /// Realtime events other nodes sent to rooms this node listens to.
    pub room_events_heard: Counter,
    /// Searches that had to ask other nodes (a region they reach is not copied here).
    pub remote_searches: Counter,
    /// Commands sent to other nodes, by outcome.
    pub remote_ok: Counter,
    /// Refused for what the command asked (a lost accept race, a status that moved on).
    pub remote_refused: Counter,
    /// Refused because the node asked no longer (or not yet) runs the shard.
    pub remote_not_owner: Counter,
    pub remote_failed: Counter,
    /// Sends of a command that got no answer in time (it is sent again).
    pub remote_unanswered: Counter,
    /// Waits of 250 ms for a shard's owner (nobody owned it, or its owner said it does not).
    pub owner_waits: Counter,
    /// Seconds a command for another node's shard took, re-sends and waits included.
    pub command_seconds: Histogram,
}

impl Default for ClusterMetrics {
    fn default() -> Self {
        Self {
            shards_owned: Gauge::default(),
            leases_won: Counter::default(),
            leases_lost: Counter::default(),
            handed_over: Counter::default(),
            redis_errors: Counter::default(),
            forwarded_positions: Counter::default(),
            replicated_positions: Counter::default(),
            replication_messages: Counter::default(),
            replication_bytes: Counter::default(),
            regions_copied: Gauge::default(),
            rooms_listened: Gauge::default(),
            room_events_heard: Counter::default(),
            remote_searches: Counter::default(),
            remote_ok: Counter::default(),
            remote_refused: Counter::default(),
            remote_not_owner: Counter::default(),
            remote_failed: Counter::default(),
            remote_unanswered: Counter::default(),
            owner_waits: Counter::default(),
            // 1 ms to 16 s: a command's retry budget is 15 s.
            command_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 15)),
        }
    }
}

impl ClusterMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        registry.register(
            "cluster_shards_owned",
            "Shards this node serves now",
            metrics.shards_owned.clone(),
        );
        registry.register(
            "cluster_leases_won",
            "Shard leases this node took",
            metrics.leases_won.clone(),
        );
        registry.register(
            "cluster_leases_lost",
            "Shard leases this node lost without giving them up",
            metrics.leases_lost.clone(),
        );
        registry.register(
            "cluster_handed_over",
            "Shards this node stopped and released for their new owner",
            metrics.handed_over.clone(),
        );
        registry.register(
            "cluster_redis_errors",
            "Cluster ticks that could not reach Redis",
            metrics.redis_errors.clone(),
        );
        registry.register(
            "cluster_forwarded_positions",
            "Positions handed to the node that owns their shard directly, in a region's first seconds",
            metrics.forwarded_positions.clone(),
        );
        registry.register(
            "cluster_replicated_positions",
            "Positions this node published on their region's channel",
            metrics.replicated_positions.clone(),
        );
        registry.register(
            "cluster_replication_messages",
            "Messages that carried this node's positions to their regions' channels",
            metrics.replication_messages.clone(),
        );
        registry.register(
            "cluster_replication_bytes",
            "Bytes of the messages that carried this node's positions",
            metrics.replication_bytes.clone(),
        );
        registry.register(
            "cluster_regions_copied",
            "Regions whose riders' positions this node copies",
            metrics.regions_copied.clone(),
        );
        registry.register(
            "cluster_rooms_listened",
            "Realtime rooms whose events this node listens to (those its clients are in)",
            metrics.rooms_listened.clone(),
        );
        registry.register(
            "cluster_room_events_heard",
            "Realtime events other nodes sent to rooms a client of this node is in",
            metrics.room_events_heard.clone(),
        );
        registry.register(
            "cluster_remote_searches",
            "Nearest-rider searches that asked other nodes (a region they reach is not copied here)",
            metrics.remote_searches.clone(),
        );
        registry.register(
            "cluster_remote_calls_ok",
            "Commands another node ran for this one",
            metrics.remote_ok.clone(),
        );
        registry.register(
            "cluster_remote_calls_refused",
            "Commands another node refused for what they asked (a lost accept race, ...)",
            metrics.remote_refused.clone(),
        );
        registry.register(
            "cluster_remote_calls_not_owner",
            "Commands another node refused because it does not run the shard (it moves)",
            metrics.remote_not_owner.clone(),
        );
        registry.register(
            "cluster_remote_calls_failed",
            "Commands to another node that found no owner that answered in time",
            metrics.remote_failed.clone(),
        );
        registry.register(
            "cluster_remote_calls_unanswered",
            "Sends of a command to another node that got no answer in time (sent again)",
            metrics.remote_unanswered.clone(),
        );
        registry.register(
            "cluster_owner_waits",
            "Waits of 250 ms for a shard's owner while a command looked for it",
            metrics.owner_waits.clone(),
        );
        registry.register(
            "cluster_command_seconds",
            "Seconds a command for another node's shard took, re-sends and waits included",
            metrics.command_seconds.clone(),
        );
        metrics
    }
}

/// The cluster as one node last saw it.
#[derive(Debug, Clone, Default)]
pub struct View {
    /// Live nodes and when their heartbeat expires (Unix milliseconds).
    pub nodes: Vec<Member>,
    /// Each shard's lease holder, by shard id.
    pub leases: Vec<Option<Lease>>,
    /// Whether this node has completed a tick since it joined (and so serves its share).
    pub joined: bool,
    /// Whether the last tick reached Redis.
    pub redis_ok: bool,
}

/// This node's membership.
pub struct Cluster {
    /// Itself, for the futures of calls (which must own what they use).
    me: std::sync::Weak<Cluster>,
    config: ClusterConfig,
    router: Arc<ShardRouter>,
    redis: Coordination,
    transport: Transport,
    held: tokio::sync::Mutex<HashMap<u32, Held>>,
    view: Mutex<View>,
    leaving: AtomicBool,
    metrics: ClusterMetrics,
    /// Who hears the events other nodes broadcast.
    events: std::sync::OnceLock<Box<dyn Fn(String) + Send + Sync>>,
    /// Who answers the questions other nodes ask about this one.
    questions: std::sync::OnceLock<Answerer>,
    /// Positions waiting to go out.
    outbox: Outbox,
    /// What the flusher and the tick remember about regions.
    replication: Mutex<Replication>,
    /// The realtime rooms this node listens to.
    rooms: rooms::Rooms,
    /// Replies to drop after running their command (a fault drill: a reply lost on the way).
    drop_replies: AtomicU32,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("node_id", &self.config.node_id)
            .finish_non_exhaustive()
    }
}

impl Cluster {
    /// Connects to Redis, checks that this node's shard layout is the cluster's, and starts
    /// taking part (the first tick runs in the background; [`View::joined`] says when it did).
    pub async fn join(
        config: ClusterConfig,
        router: Arc<ShardRouter>,
        metrics: ClusterMetrics,
    ) -> Result<(Arc<Self>, JoinHandle<()>), ClusterError> {
        let redis = Coordination::connect(&config.redis_url).await?;
        // The router's map is the one owner of the layout.
        let ours = router.map().layout();
        let theirs = redis.layout(&ours).await?;
        if theirs != ours {
            return Err(ClusterError::Layout { ours, theirs });
        }
        let (transport, mut inbox) = Transport::connect(&config.redis_url, &config.node_id).await?;
        let reach = Reach::new(router.map(), config.search_radius_m);
        let cluster = Arc::new_cyclic(|me| Self {
            me: me.clone(),
            config,
            router,
            redis,
            transport,
            held: tokio::sync::Mutex::new(HashMap::new()),
            view: Mutex::new(View::default()),
            leaving: AtomicBool::new(false),
            metrics,
            events: std::sync::OnceLock::new(),
            questions: std::sync::OnceLock::new(),
            outbox: Outbox::new(),
            replication: Mutex::new(Replication::new(reach)),
            rooms: rooms::Rooms::default(),
            drop_replies: AtomicU32::new(0),
        });
        let ticking = Arc::clone(&cluster);
        let task = tokio::spawn(async move {
            let mut every = tokio::time::interval(TICK);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            while !ticking.leaving.load(Ordering::Acquire) {
                every.tick().await;
                ticking.tick().await;
            }
        });
        let listening = Arc::downgrade(&cluster);
        tokio::spawn(async move {
            while let Some(push) = inbox.recv().await {
                let Some(cluster) = listening.upgrade() else {
                    break;
                };
                if let Some(envelope) = envelope_of(push, &cluster.config.node_id) {
                    cluster.received(envelope);
                }
            }
        });
        let flushing = Arc::downgrade(&cluster);
        tokio::spawn(async move {
            let mut every = tokio::time::interval(FLUSH_EVERY);
            loop {
                every.tick().await;
                let Some(cluster) = flushing.upgrade() else {
                    break;
                };
                cluster.flush_positions().await;
            }
        });
        cluster
            .router
            .set_remote(Arc::clone(&cluster) as Arc<dyn RemoteShards>);
        tracing::info!(node_id = %cluster.config.node_id, "joined the cluster");
        Ok((cluster, task))
    }

    /// This node's id.
    pub fn node_id(&self) -> &str {
        &self.config.node_id
    }

    /// The cluster as last seen.
    pub fn view(&self) -> View {
        self.view
            .lock()
            .map(|view| view.clone())
            .unwrap_or_default()
    }
}
