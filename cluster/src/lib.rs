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
//!   the instant *before* the renewal call plus the TTL minus a margin, on its own monotonic
//!   clock, and the shard's gate refuses commands past that instant: a node paused past its
//!   lease (SIGSTOP, a long GC-like stall) refuses work the moment it wakes, and its tick then
//!   stops the shard.
//!
//! A node leaving cleanly stops and releases every shard and leaves the live set at once. A node
//! that dies is dropped from the live set when its heartbeat expires (5 s); its leases lapse
//! (6 s) and the next owners take them within a tick: every shard has a live owner within about
//! 8 s. When Redis restarts without its data, heartbeats re-register, holders claim their leases
//! back, and the epochs start over (they are for operators to read, not a fence).

pub mod coordination;
pub mod rendezvous;
pub mod transport;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_core::future::BoxFuture;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::task::JoinHandle;
use tomato_actors::OrderError;
use tomato_domain::RiderId;
use tomato_shards::index::Found;
use tomato_shards::{
    NearestQuery, Position, RemoteShards, ShardCommand, ShardId, ShardReply, ShardRouter, clock,
};

use crate::coordination::{Coordination, Lease, Member, millis};
use crate::transport::{Envelope, Sent, Transport, envelope_of};

/// How often a node beats, reads the live set and renews its leases.
const TICK: Duration = Duration::from_secs(1);
/// How long a heartbeat keeps a node in the live set.
const HEARTBEAT_TTL: Duration = Duration::from_secs(5);
/// How long a lease lasts unless renewed.
const LEASE_TTL: Duration = Duration::from_secs(6);
/// How long before its lease lapses (on its own clock) a node stops serving the shard.
const LEASE_MARGIN: Duration = Duration::from_secs(1);
/// How long one send of a command waits for the owner's answer before sending it again.
const CALL_WITHIN: Duration = Duration::from_secs(3);
/// How long a command keeps looking for an owner that answers while its shard moves: past a
/// takeover (a dead owner's shards have a new one within ~8 s) and short of the edge's timeout.
const COMMAND_WITHIN: Duration = Duration::from_secs(15);
/// How long a search waits for other nodes' riders: past it, the answer is what came.
const SEARCH_WITHIN: Duration = Duration::from_millis(300);
/// How often positions for other nodes go out, batched per node.
const FLUSH_EVERY: Duration = Duration::from_millis(20);

/// What a node needs to take part.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    pub redis_url: String,
    pub node_id: String,
    pub shard_count: u32,
    pub region_resolution: u8,
}

/// Why a node could not join.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("cannot reach Redis at the configured cluster.redis_url: {0}")]
    Redis(#[from] redis::RedisError),
    #[error(
        "this node's shards ({ours}) differ from the cluster's ({theirs}); every node must use the same shards.count and shards.region_resolution"
    )]
    Layout { ours: String, theirs: String },
}

/// The cluster's counters in `/metrics`.
#[derive(Debug, Clone, Default)]
pub struct ClusterMetrics {
    pub shards_owned: Gauge,
    pub leases_won: Counter,
    pub leases_lost: Counter,
    pub handed_over: Counter,
    pub redis_errors: Counter,
    /// Positions handed to the node that owns their shard.
    pub forwarded_positions: Counter,
    /// Commands sent to other nodes, by outcome.
    pub remote_ok: Counter,
    pub remote_refused: Counter,
    pub remote_failed: Counter,
    /// Sends of a command that got no answer in time (it is sent again).
    pub remote_unanswered: Counter,
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
            "Positions handed to the node that owns their shard",
            metrics.forwarded_positions.clone(),
        );
        registry.register(
            "cluster_remote_calls_ok",
            "Commands another node ran for this one",
            metrics.remote_ok.clone(),
        );
        registry.register(
            "cluster_remote_calls_refused",
            "Commands another node answered with a refusal (not owner, conflict, ...)",
            metrics.remote_refused.clone(),
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

/// What answers other nodes' questions about this one.
type Answerer = Box<dyn Fn(String) -> BoxFuture<'static, String> + Send + Sync>;

/// A shard this node holds, and until when (on [`clock`]) it may serve it.
struct Held {
    lease: Lease,
    until: u64,
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
    /// Positions waiting to go to the nodes that own their shards.
    outbox: Mutex<HashMap<String, Vec<Position>>>,
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
        let ours = format!(
            "shards.count={} shards.region_resolution={}",
            config.shard_count, config.region_resolution
        );
        let theirs = redis.layout(&ours).await?;
        if theirs != ours {
            return Err(ClusterError::Layout { ours, theirs });
        }
        let (transport, mut inbox) = Transport::connect(&config.redis_url, &config.node_id).await?;
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
            outbox: Mutex::new(HashMap::new()),
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
                if let Some(envelope) = envelope_of(push) {
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

    /// A message on this node's inbox: a command to run here, or the reply to one of ours.
    fn received(self: Arc<Self>, envelope: Envelope) {
        match envelope {
            Envelope::Call {
                id,
                from,
                shard,
                command,
            } => {
                tokio::spawn(async move {
                    let result = self.router.execute_here(command).await;
                    if result.is_err() {
                        tracing::debug!(shard = shard.0, %from, "remote command refused here");
                    }
                    let drop = self
                        .drop_replies
                        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
                        .is_ok();
                    if drop {
                        tracing::warn!(shard = shard.0, %from, id, "reply dropped (fault drill)");
                        return;
                    }
                    self.transport.reply(&from, id, result).await;
                });
            }
            Envelope::Reply { id, result } => self.transport.answered(id, result),
            Envelope::Positions { positions } => {
                tokio::spawn(async move {
                    for p in positions {
                        // Not ours any more: dropped, the rider's next position finds the owner.
                        let _ = self.router.moved_here(p.rider, p.at, p.seen_at).await;
                    }
                });
            }
            Envelope::Ask { id, from, question } => {
                if let Some(answerer) = self.questions.get() {
                    let answering = answerer(question);
                    tokio::spawn(async move {
                        let answer = answering.await;
                        self.transport.answer(&from, id, answer).await;
                    });
                }
            }
            Envelope::Answer { id, answer } => self.transport.told(id, answer),
            Envelope::Dispatchable {
                from,
                rider,
                dispatchable,
            } => {
                if from != self.config.node_id {
                    self.router.dispatchable_heard(rider, dispatchable);
                }
            }
            Envelope::Event { from, payload } => {
                if from != self.config.node_id
                    && let Some(handler) = self.events.get()
                {
                    handler(payload);
                }
            }
        }
    }

    /// Sends `payload` to every other node (fire-and-forget: pub/sub may drop it while Redis
    /// is out of reach; realtime clients resynchronise on reconnect).
    pub fn broadcast(&self, payload: String) {
        if let Some(me) = self.me.upgrade() {
            tokio::spawn(async move { me.transport.broadcast(payload).await });
        }
    }

    /// Sets who hears what other nodes broadcast (once).
    pub fn on_event(&self, handler: impl Fn(String) + Send + Sync + 'static) {
        let _ = self.events.set(Box::new(handler));
    }

    /// Sets who answers the questions other nodes ask about this one (once).
    pub fn on_question(
        &self,
        answerer: impl Fn(String) -> BoxFuture<'static, String> + Send + Sync + 'static,
    ) {
        let _ = self.questions.set(Box::new(answerer));
    }

    /// Asks every other live node `question` in parallel; the answers that came within
    /// `within` (a node that is slow or gone is left out).
    pub async fn ask_others(&self, question: &str, within: Duration) -> Vec<String> {
        let others: Vec<String> = self
            .view()
            .nodes
            .into_iter()
            .map(|member| member.id)
            .filter(|id| *id != self.config.node_id)
            .collect();
        let asks = others
            .iter()
            .map(|node| self.transport.ask(node, question, within));
        futures_util::future::join_all(asks)
            .await
            .into_iter()
            .flatten()
            .collect()
    }

    /// Sends the positions waiting for other nodes, one message per node.
    async fn flush_positions(&self) {
        let batches: Vec<(String, Vec<Position>)> = match self.outbox.lock() {
            Ok(mut outbox) => outbox.drain().collect(),
            Err(_) => return,
        };
        for (node, positions) in batches {
            self.metrics
                .forwarded_positions
                .inc_by(u64::try_from(positions.len()).unwrap_or(u64::MAX));
            self.transport.positions(&node, positions).await;
        }
    }

    /// Who holds `shard`'s lease, as last read.
    fn owner_of(&self, shard: ShardId) -> Option<String> {
        let view = self.view.lock().ok()?;
        view.leases
            .get(shard.0 as usize)
            .and_then(|lease| lease.as_ref())
            .map(|lease| lease.node.clone())
    }

    /// Runs `command` wherever `shard` runs: on its owner, waiting out a move for a while.
    ///
    /// A send that was certainly not run (nobody listened, or the node does not own the shard)
    /// is simply sent again to whoever owns the shard by then. A send that got no answer may
    /// have run: it is sent again with the same call id (a late answer to the first send still
    /// counts) and marked [`ShardCommand::again`], so an order that already shows its effect
    /// answers "done" instead of refusing it. Either way the command runs at most once: the
    /// actor serialises commands on its order, and the store's version check keeps a former
    /// owner's copy from writing.
    async fn call_owner(
        self: Arc<Self>,
        shard: ShardId,
        mut command: ShardCommand,
    ) -> Result<ShardReply, OrderError> {
        let started = tokio::time::Instant::now();
        let id = self.transport.call_id();
        loop {
            let sent = match self.owner_of(shard) {
                Some(owner) if owner == self.config.node_id => {
                    // Ours by the last reading: it may be starting here right now.
                    Sent::Answered(self.router.execute_here(command.clone()).await)
                }
                Some(owner) => {
                    let sent = self
                        .transport
                        .call(&owner, id, shard, command.clone(), CALL_WITHIN)
                        .await;
                    let counter = match &sent {
                        Sent::Answered(Ok(_)) => Some(&self.metrics.remote_ok),
                        Sent::Answered(Err(_)) => Some(&self.metrics.remote_refused),
                        Sent::NoReply => Some(&self.metrics.remote_unanswered),
                        Sent::NobodyThere => None,
                    };
                    if let Some(counter) = counter {
                        counter.inc();
                    }
                    sent
                }
                None => Sent::Answered(Err(OrderError::NotOwner)),
            };
            let in_time = started.elapsed() < COMMAND_WITHIN;
            match sent {
                // The shard moves: look for its owner again, for a while.
                Sent::Answered(Err(OrderError::NotOwner)) | Sent::NobodyThere if in_time => {
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                // Maybe run, maybe not: the owner may have died with it, or the answer was lost.
                Sent::NoReply if in_time => command = command.again(),
                Sent::Answered(Err(OrderError::NotOwner)) | Sent::NobodyThere => {
                    self.metrics.remote_failed.inc();
                    return Err(OrderError::NotOwner);
                }
                Sent::NoReply => {
                    self.metrics.remote_failed.inc();
                    return Err(OrderError::Unavailable);
                }
                Sent::Answered(done) => return done,
            }
        }
    }

    /// Fault drill: the next `count` commands other nodes send here run, but their replies
    /// are dropped, as a reply lost on the way would be.
    pub fn drop_next_replies(&self, count: u32) {
        self.drop_replies.store(count, Ordering::Release);
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

    /// One round: heartbeat, live set, then each shard taken, renewed, handed over or dropped.
    async fn tick(&self) {
        let mut held = self.held.lock().await;
        if self.leaving.load(Ordering::Acquire) {
            return;
        }
        // First what this node's own clock says: a lease that ran out (a pause, or Redis out
        // of reach for too long) is lost, whatever Redis would answer now.
        let now = clock();
        let expired: Vec<u32> = held
            .iter()
            .filter(|(_, h)| h.until <= now)
            .map(|(shard, _)| *shard)
            .collect();
        for shard in expired {
            held.remove(&shard);
            self.lost(shard, "its lease ran out on this node's clock")
                .await;
        }
        if let Err(err) = self.transport.keepalive().await {
            tracing::warn!(error = %err, "cluster inbox connection is down; reconnecting");
        }
        let live = match self
            .redis
            .heartbeat(&self.config.node_id, HEARTBEAT_TTL)
            .await
        {
            Ok(live) => live,
            Err(err) => {
                self.metrics.redis_errors.inc();
                tracing::warn!(error = %err, "cluster tick could not reach Redis");
                self.set_view(|view| view.redis_ok = false);
                return;
            }
        };
        let names: Vec<String> = live.iter().map(|m| m.id.clone()).collect();
        for shard in 0..self.config.shard_count {
            let mine = rendezvous::owner(shard, &names) == Some(self.config.node_id.as_str());
            match (held.get(&shard), mine) {
                (Some(h), true) => {
                    let asked = clock();
                    match self.redis.renew(shard, &h.lease, LEASE_TTL).await {
                        Ok(true) => {
                            let until = asked + millis(LEASE_TTL - LEASE_MARGIN);
                            self.hold(shard, until);
                            if let Some(h) = held.get_mut(&shard) {
                                h.until = until;
                            }
                        }
                        Ok(false) => {
                            held.remove(&shard);
                            self.lost(shard, "another node holds its lease").await;
                        }
                        // Out of reach: keep serving until the local deadline says otherwise.
                        Err(err) => tracing::warn!(shard, error = %err, "lease not renewed"),
                    }
                }
                (Some(_), false) => {
                    if let Some(h) = held.remove(&shard) {
                        self.hand_over(shard, &h.lease).await;
                    }
                }
                (None, true) => {
                    let asked = clock();
                    match self
                        .redis
                        .acquire(shard, &self.config.node_id, LEASE_TTL)
                        .await
                    {
                        Ok(Some(lease)) => {
                            let until = asked + millis(LEASE_TTL - LEASE_MARGIN);
                            self.hold(shard, until);
                            match self.router.start(ShardId(shard)).await {
                                Ok(orders) => {
                                    self.metrics.leases_won.inc();
                                    tracing::info!(
                                        shard,
                                        epoch = lease.epoch,
                                        orders,
                                        "lease won, shard started"
                                    );
                                    held.insert(shard, Held { lease, until });
                                }
                                Err(err) => {
                                    tracing::warn!(shard, error = %err, "shard could not start; lease given back");
                                    self.router.stop(ShardId(shard)).await;
                                    let _ = self.redis.release(shard, &lease).await;
                                }
                            }
                        }
                        // Still held by its previous owner: its lease lapses or it hands over.
                        Ok(None) => {}
                        Err(err) => tracing::warn!(shard, error = %err, "lease not taken"),
                    }
                }
                (None, false) => {}
            }
        }
        self.metrics
            .shards_owned
            .set(i64::try_from(held.len()).unwrap_or(i64::MAX));
        let leases = self.redis.leases(self.config.shard_count).await.ok();
        self.set_view(|view| {
            view.nodes = live;
            if let Some(leases) = leases {
                view.leases = leases;
            }
            view.joined = true;
            view.redis_ok = true;
        });
    }

    fn hold(&self, shard: u32, until: u64) {
        if let Some(s) = self.router.shard(ShardId(shard)) {
            s.hold_until(until);
        }
    }

    fn set_view(&self, change: impl FnOnce(&mut View)) {
        if let Ok(mut view) = self.view.lock() {
            change(&mut view);
        }
    }

    /// The shard was lost without this node giving it up: stop serving it at once.
    async fn lost(&self, shard: u32, why: &str) {
        self.hold(shard, 0);
        let stopped = self.router.stop(ShardId(shard)).await;
        self.metrics.leases_lost.inc();
        tracing::warn!(
            shard,
            why,
            orders = stopped.orders,
            "lease lost, shard stopped"
        );
    }

    /// Another node should own the shard: stop it here, then free the lease for it.
    async fn hand_over(&self, shard: u32, lease: &Lease) {
        let stopped = self.router.stop(ShardId(shard)).await;
        self.hold(shard, 0);
        if let Err(err) = self.redis.release(shard, lease).await {
            tracing::warn!(shard, error = %err, "lease not released; it lapses on its own");
        }
        self.metrics.handed_over.inc();
        tracing::info!(
            shard,
            epoch = lease.epoch,
            orders = stopped.orders,
            "shard handed over"
        );
    }

    /// Leaves cleanly: stops and releases every shard, then leaves the live set, so the others
    /// take over at their next tick instead of waiting for leases to lapse.
    pub async fn leave(&self) {
        self.leaving.store(true, Ordering::Release);
        let mut held = self.held.lock().await;
        // Out of the live set first, so the others' next tick already counts without us.
        if let Err(err) = self.redis.forget(&self.config.node_id).await {
            tracing::warn!(error = %err, "could not leave the live set; the heartbeat expires");
        }
        for (shard, h) in held.drain() {
            self.hand_over(shard, &h.lease).await;
        }
        self.metrics.shards_owned.set(0);
        tracing::info!(node_id = %self.config.node_id, "left the cluster");
    }
}

impl RemoteShards for Cluster {
    fn forward_position(&self, shard: ShardId, position: Position) {
        // Soft state: with no owner known, the position is dropped and the next one tries again.
        let Some(owner) = self.owner_of(shard) else {
            return;
        };
        if owner == self.config.node_id {
            // Ours by the last reading, though not running yet: it starts within a tick.
            return;
        }
        if let Ok(mut outbox) = self.outbox.lock() {
            outbox.entry(owner).or_default().push(position);
        }
    }

    fn nearest(&self, shards: Vec<ShardId>, query: NearestQuery) -> BoxFuture<'static, Vec<Found>> {
        let mut owners: HashMap<String, ShardId> = HashMap::new();
        for shard in shards {
            if let Some(owner) = self.owner_of(shard)
                && owner != self.config.node_id
            {
                owners.entry(owner).or_insert(shard);
            }
        }
        let Some(me) = self.me.upgrade() else {
            return Box::pin(std::future::ready(Vec::new()));
        };
        Box::pin(async move {
            let asks = owners.into_iter().map(|(owner, shard)| {
                let me = Arc::clone(&me);
                async move {
                    let id = me.transport.call_id();
                    match me
                        .transport
                        .call(
                            &owner,
                            id,
                            shard,
                            ShardCommand::Nearest { query },
                            SEARCH_WITHIN,
                        )
                        .await
                    {
                        Sent::Answered(Ok(ShardReply::Found(found))) => found,
                        _ => {
                            me.metrics.remote_failed.inc();
                            Vec::new()
                        }
                    }
                }
            });
            futures_util::future::join_all(asks)
                .await
                .into_iter()
                .flatten()
                .collect()
        })
    }

    fn dispatchable(&self, rider: RiderId, dispatchable: bool) {
        if let Some(me) = self.me.upgrade() {
            tokio::spawn(async move { me.transport.dispatchable(rider, dispatchable).await });
        }
    }

    fn call(
        &self,
        shard: ShardId,
        command: ShardCommand,
    ) -> BoxFuture<'static, Result<ShardReply, OrderError>> {
        match self.me.upgrade() {
            Some(me) => Box::pin(me.call_owner(shard, command)),
            None => Box::pin(std::future::ready(Err(OrderError::NotOwner))),
        }
    }
}
