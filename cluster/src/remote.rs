//! Remote calls: commands to the owner of a shard (request and reply, re-sent until answered),
//! nearest-rider searches over other nodes' shards whose regions are not copied here, events
//! every node hears, realtime events for the nodes with a client in their room, and questions
//! every node answers. Positions go by region
//! ([`crate::replication`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_core::future::BoxFuture;
use h3o::CellIndex;
use tomato_actors::{Carried, OrderError};
use tomato_domain::RiderId;
use tomato_shards::index::Found;
use tomato_shards::{
    NearestQuery, OfferChange, Position, RemoteShards, ShardCommand, ShardId, ShardReply,
};

use crate::Cluster;
use crate::transport::{Envelope, Sent};

/// How long one send of a command waits for the owner's answer before sending it again.
const CALL_WITHIN: Duration = Duration::from_secs(3);
/// How long a command keeps looking for an owner that answers while its shard moves: past a
/// takeover (a dead owner's shards have a new one within ~8 s) and short of the edge's timeout.
const COMMAND_WITHIN: Duration = Duration::from_secs(15);
/// How long a search waits for other nodes' riders: past it, the answer is what came.
const SEARCH_WITHIN: Duration = Duration::from_millis(300);

/// What answers other nodes' questions about this one.
pub(crate) type Answerer = Box<dyn Fn(String) -> BoxFuture<'static, String> + Send + Sync>;

impl Cluster {
    /// A message on this node's inbox: a command to run here, or the reply to one of ours.
    pub(crate) fn received(self: Arc<Self>, envelope: Envelope) {
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
            // Our own batches and room events heard back never get here: `envelope_of` leaves
            // them undecoded.
            Envelope::Positions { positions, .. } => {
                tokio::spawn(async move { self.router.replicated_heard(positions).await });
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
            Envelope::Offers { from, change } => {
                if from != self.config.node_id {
                    self.router.offers_heard(change);
                }
            }
            Envelope::Carried {
                from,
                rider,
                carried,
            } => {
                if from != self.config.node_id {
                    self.router.carried_heard(rider, carried);
                }
            }
            Envelope::Event { from, payload } => {
                if from != self.config.node_id
                    && let Some(handler) = self.events.get()
                {
                    handler(payload);
                }
            }
            Envelope::RoomEvent { payload, .. } => {
                if let Some(handler) = self.events.get() {
                    self.metrics.room_events_heard.inc();
                    handler(payload);
                }
            }
        }
    }

    /// Sends `payload` to every other node (fire-and-forget: pub/sub may drop it while Redis
    /// is out of reach; realtime clients resynchronise on reconnect).
    pub fn broadcast(&self, payload: String) {
        self.transport.broadcast(payload);
    }

    /// Sends `payload` to the other nodes with a client in `room` (fire-and-forget, in order with
    /// what this node broadcasts); [`Cluster::on_event`] hears it there.
    pub fn to_room(&self, room: &str, payload: &str) {
        self.transport.to_room(room, payload);
    }

    /// Listens to the events other nodes send to `rooms`; call it before a client of this node
    /// joins them, and the client misses none sent after it joined.
    pub async fn listen_to_rooms(&self, rooms: &[String]) {
        let count = self.rooms.want(&self.transport, rooms).await;
        self.metrics
            .rooms_listened
            .set(i64::try_from(count).unwrap_or(i64::MAX));
    }

    /// Stops listening, every 10 s, to the rooms that no client here is in
    /// (`held` answers, for a list of rooms, whether this node's clients are in each) and that
    /// nobody asked for lately. Call once.
    pub fn sweep_rooms(&self, held: impl Fn(&[String]) -> Vec<bool> + Send + Sync + 'static) {
        let me = self.me.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(crate::rooms::SWEEP_EVERY);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                let Some(cluster) = me.upgrade() else {
                    break;
                };
                let left = cluster.rooms.sweep(&cluster.transport, &held).await;
                cluster
                    .metrics
                    .rooms_listened
                    .set(i64::try_from(left).unwrap_or(i64::MAX));
            }
        });
    }

    /// Sets who hears what other nodes broadcast or send to this node's rooms (once).
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

    /// Who holds `shard`'s lease, as last read.
    pub(crate) fn owner_of(&self, shard: ShardId) -> Option<String> {
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
        command: ShardCommand,
    ) -> Result<ShardReply, OrderError> {
        let started = tokio::time::Instant::now();
        let done = self
            .call_owner_until_answered(shard, command, started)
            .await;
        self.metrics
            .command_seconds
            .observe(started.elapsed().as_secs_f64());
        done
    }

    /// [`Cluster::call_owner`]'s loop, its budget counted from `started`.
    async fn call_owner_until_answered(
        &self,
        shard: ShardId,
        mut command: ShardCommand,
        started: tokio::time::Instant,
    ) -> Result<ShardReply, OrderError> {
        let id = self.transport.call_id();
        loop {
            let sent_at = tokio::time::Instant::now();
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
                        Sent::Answered(Err(OrderError::NotOwner)) => {
                            Some(&self.metrics.remote_not_owner)
                        }
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
                    self.metrics.owner_waits.inc();
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                // Maybe run, maybe not: the owner may have died with it, the answer was lost,
                // or the publish failed after Redis took it. A failed publish comes back at
                // once, so wait before the repeat as a move is waited for.
                Sent::NoReply if in_time => {
                    command = command.again();
                    let pause = Duration::from_millis(250);
                    if sent_at.elapsed() < pause {
                        tokio::time::sleep(pause - sent_at.elapsed()).await;
                    }
                }
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

    /// Fault drill: the next `count` commands this node sends to others go out, but their
    /// publish is reported as failed, as a Redis that stalls past the reply timeout after
    /// taking a message would.
    pub fn fail_next_publishes(&self, count: u32) {
        self.transport.fail_next_publishes(count);
    }
}

impl RemoteShards for Cluster {
    fn replicate(&self, region: CellIndex, position: Position) {
        self.outbox.push(region, position);
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
        self.metrics.remote_searches.inc();
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
        self.transport.dispatchable(rider, dispatchable);
    }

    fn offers_changed(&self, change: OfferChange) {
        self.transport.offers(change);
    }

    fn carried(&self, rider: RiderId, carried: Carried) {
        self.transport.carried(rider, carried);
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
