//! Request and reply between nodes over Redis pub/sub: each node listens on a channel of its
//! own; a call carries an id and the caller's node id, and the reply comes back on the caller's
//! channel. Positions go on a channel per region (`tomato:positions:{<region>}`, the region in
//! braces so that Redis Cluster's sharded pub/sub would hash it alone), in binary, which only
//! the nodes that copy the region listen to. A realtime event goes on its room's channel
//! (`tomato:room:{<room>}`), which only the nodes with a client in the room listen to
//! ([`crate::rooms`]). `PUBLISH` answers how many listened, so a call to
//! a node that is gone is noticed at once (and sent again to whoever owns the shard by then).
//!
//! Pub/sub delivers at most once, and a node may die between running a call and answering it.
//! A call keeps its id when it is sent again, so a late answer to an earlier send still answers
//! it; whether sending again is safe is the caller's business (see `Cluster::call_owner`).

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use h3o::CellIndex;
use redis::aio::ConnectionManager;
use redis::{AsyncCommands, PushInfo, PushKind, Value};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};
use tomato_actors::OrderError;
use tomato_domain::{OrderId, RiderId, UserId};
use tomato_shards::{OfferChange, Position, ShardCommand, ShardId, ShardReply};

use crate::wire;

/// What travels between nodes. Externally tagged (`{"call":{...}}`): serde reads an internally
/// tagged enum (`{"kind":"call",...}`) by buffering the whole object first: a third of the time
/// three nodes spent reading JSON, in a profile of a load test.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Envelope {
    Call {
        id: u64,
        from: String,
        shard: ShardId,
        command: ShardCommand,
    },
    Reply {
        id: u64,
        result: Result<ShardReply, OrderError>,
    },
    /// Something every node hears (a revoked token), opaque here.
    Event {
        from: String,
        payload: String,
    },
    /// A realtime event heard on a room's channel, where it travels in binary ([`wire`]),
    /// never as JSON.
    #[serde(skip)]
    RoomEvent {
        from: String,
        payload: String,
    },
    /// Riders' positions, batched per region (on the region's channel) or per receiver (to a
    /// shard's owner, while a region is new).
    Positions {
        from: String,
        positions: Vec<Position>,
    },
    /// A question about the receiving node itself (its live figures, say), opaque here.
    Ask {
        id: u64,
        from: String,
        question: String,
    },
    Answer {
        id: u64,
        answer: String,
    },
    /// A rider's dispatchable flag changed on the sender, for the node whose index holds it.
    Dispatchable {
        from: String,
        rider: RiderId,
        dispatchable: bool,
    },
    /// What became of an order's offers on the sender, for every node to mirror.
    Offers {
        from: String,
        change: OfferChange,
    },
    /// What a rider carries now (an order and its customer, or nothing), decided by its order's
    /// actor on the sender, for the node where the rider's actor lives.
    Carried {
        from: String,
        rider: RiderId,
        carried: Option<(OrderId, UserId)>,
    },
}

/// The channel every node listens on for events.
pub const EVENTS: &str = "tomato:cluster:events";

/// The channel a node listens on.
pub fn inbox(node: &str) -> String {
    format!("tomato:cluster:inbox:{node}")
}

/// What the channels of regions' positions begin with.
const POSITIONS: &str = "tomato:positions:";

/// The channel of a region's positions.
pub fn region_channel(region: CellIndex) -> String {
    format!("{POSITIONS}{{{region}}}")
}

/// What the channels of rooms' events begin with.
const ROOMS: &str = "tomato:room:";

/// The channel of a realtime room's events (the room in braces: Redis Cluster would hash it
/// alone).
pub fn room_channel(room: &str) -> String {
    format!("{ROOMS}{{{room}}}")
}

fn room_channels(rooms: &[String]) -> Vec<String> {
    rooms.iter().map(|room| room_channel(room)).collect()
}

fn region_channels(regions: &[CellIndex]) -> Vec<String> {
    regions
        .iter()
        .map(|region| region_channel(*region))
        .collect()
}

/// One node's end of the transport.
pub struct Transport {
    node: String,
    redis: ConnectionManager,
    pending: Mutex<HashMap<u64, oneshot::Sender<Result<ShardReply, OrderError>>>>,
    asked: Mutex<HashMap<u64, oneshot::Sender<String>>>,
    next: AtomicU64,
    /// What goes to every node or to a room's nodes, drained in order by one task: two changes
    /// of one order (its offer made, then ended) reach the others in the order they were made
    /// here, which tasks spawned per message did not promise, and so do an order's events.
    to_all: mpsc::UnboundedSender<Outgoing>,
    /// Fault drill: how many of the next calls are published but reported as failed, as a
    /// Redis that took a message and then timed out would.
    failing_publishes: AtomicU32,
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport")
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

/// Whether a publish reached a listener, and what it answered.
#[derive(Debug)]
pub enum Sent {
    /// The reply.
    Answered(Result<ShardReply, OrderError>),
    /// Nobody listens on that node's channel: the call did not run.
    NobodyThere,
    /// No reply came in time, or the publish itself failed (it may still have been
    /// delivered): the call may or may not have run.
    NoReply,
}

impl Transport {
    /// Connects (RESP3, so that pushes arrive on the same reconnecting connection) and
    /// subscribes to this node's inbox; what arrives there comes out of the receiver.
    pub async fn connect(
        url: &str,
        node: &str,
    ) -> redis::RedisResult<(Self, mpsc::UnboundedReceiver<PushInfo>)> {
        let url = if url.contains("protocol=") {
            url.to_owned()
        } else if url.contains('?') {
            format!("{url}&protocol=resp3")
        } else {
            format!("{url}?protocol=resp3")
        };
        let (tx, rx) = mpsc::unbounded_channel();
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_secs(2)))
            .set_max_delay(Duration::from_secs(1))
            .set_push_sender(tx)
            .set_automatic_resubscription();
        let mut redis = redis::Client::open(url)?
            .get_connection_manager_with_config(config)
            .await?;
        redis.subscribe(&[inbox(node), EVENTS.to_owned()]).await?;
        let (to_all, queue) = mpsc::unbounded_channel();
        tokio::spawn(tell_all_in_order(redis.clone(), queue));
        Ok((
            Self {
                node: node.to_owned(),
                redis,
                pending: Mutex::new(HashMap::new()),
                asked: Mutex::new(HashMap::new()),
                next: AtomicU64::new(1),
                to_all,
                failing_publishes: AtomicU32::new(0),
            },
            rx,
        ))
    }

    /// A new call's id, kept by every send of that call.
    pub fn call_id(&self) -> u64 {
        self.next.fetch_add(1, Ordering::Relaxed)
    }

    /// Sends call `id` (`command`) to `owner` and waits up to `within` for its reply.
    pub async fn call(
        &self,
        owner: &str,
        id: u64,
        shard: ShardId,
        command: ShardCommand,
        within: Duration,
    ) -> Sent {
        let (tx, rx) = oneshot::channel();
        if let Ok(mut pending) = self.pending.lock() {
            pending.insert(id, tx);
        }
        let envelope = Envelope::Call {
            id,
            from: self.node.clone(),
            shard,
            command,
        };
        let mut published = self.publish(owner, &envelope).await;
        if published.is_some()
            && self
                .failing_publishes
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
                .is_ok()
        {
            tracing::warn!(
                owner,
                id,
                "call published but reported failed (fault drill)"
            );
            published = None;
        }
        match published {
            // Redis counted no listener: nobody heard it, so the call did not run.
            Some(0) => {
                self.forget(id);
                return Sent::NobodyThere;
            }
            // The publish failed or timed out: Redis may have delivered it before the error
            // (a reply lost, a stalled Redis), so the call may have run and only a re-send
            // marked as a repeat is safe.
            None => {
                self.forget(id);
                return Sent::NoReply;
            }
            Some(_) => {}
        }
        let answer = match tokio::time::timeout(within, rx).await {
            Ok(Ok(result)) => Sent::Answered(result),
            _ => Sent::NoReply,
        };
        self.forget(id);
        answer
    }

    /// Fault drill: the next `count` calls are published, then reported as not published.
    pub fn fail_next_publishes(&self, count: u32) {
        self.failing_publishes.store(count, Ordering::Release);
    }

    fn forget(&self, id: u64) {
        if let Ok(mut pending) = self.pending.lock() {
            pending.remove(&id);
        }
    }

    /// Answers a call that came from `to`.
    pub async fn reply(&self, to: &str, id: u64, result: Result<ShardReply, OrderError>) {
        self.publish(to, &Envelope::Reply { id, result }).await;
    }

    /// Asks `node` a question and waits up to `within` for its answer (`None`: no answer).
    pub async fn ask(&self, node: &str, question: &str, within: Duration) -> Option<String> {
        let id = self.call_id();
        let (tx, rx) = oneshot::channel();
        if let Ok(mut asked) = self.asked.lock() {
            asked.insert(id, tx);
        }
        let envelope = Envelope::Ask {
            id,
            from: self.node.clone(),
            question: question.to_owned(),
        };
        let answer = match self.publish(node, &envelope).await {
            Some(0) | None => None,
            Some(_) => tokio::time::timeout(within, rx)
                .await
                .ok()
                .and_then(Result::ok),
        };
        if let Ok(mut asked) = self.asked.lock() {
            asked.remove(&id);
        }
        answer
    }

    /// Answers a question that came from `to`.
    pub async fn answer(&self, to: &str, id: u64, answer: String) {
        self.publish(to, &Envelope::Answer { id, answer }).await;
    }

    /// Hands an answer to the question waiting for it.
    pub fn told(&self, id: u64, answer: String) {
        let waiting = self.asked.lock().ok().and_then(|mut a| a.remove(&id));
        if let Some(waiting) = waiting {
            let _ = waiting.send(answer);
        }
    }

    /// Sends a batch of positions to `node`, fire-and-forget.
    pub async fn positions(&self, node: &str, positions: Vec<Position>) {
        let envelope = Envelope::Positions {
            from: self.node.clone(),
            positions,
        };
        self.publish(node, &envelope).await;
    }

    /// Publishes a batch of one region's positions on its channel, fire-and-forget; the bytes
    /// sent, for the metrics (0 when it did not go).
    pub async fn region_positions(&self, region: CellIndex, positions: &[Position]) -> usize {
        let Some(payload) = wire::encode(&self.node, positions) else {
            return 0;
        };
        let bytes = payload.len();
        let mut redis = self.redis.clone();
        match redis
            .publish::<_, _, usize>(region_channel(region), payload)
            .await
        {
            Ok(_) => bytes,
            Err(err) => {
                tracing::warn!(%region, error = %err, "positions not published");
                0
            }
        }
    }

    /// Starts listening to the positions of `regions`.
    pub async fn listen_to(&self, regions: &[CellIndex]) -> redis::RedisResult<()> {
        if regions.is_empty() {
            return Ok(());
        }
        self.redis
            .clone()
            .subscribe(&region_channels(regions))
            .await
    }

    /// Starts listening to the events of `rooms`.
    pub async fn listen_to_rooms(&self, rooms: &[String]) -> redis::RedisResult<()> {
        if rooms.is_empty() {
            return Ok(());
        }
        self.redis.clone().subscribe(&room_channels(rooms)).await
    }

    /// Stops listening to the events of `rooms`.
    pub async fn stop_listening_to_rooms(&self, rooms: &[String]) -> redis::RedisResult<()> {
        if rooms.is_empty() {
            return Ok(());
        }
        self.redis.clone().unsubscribe(&room_channels(rooms)).await
    }

    /// Sends `payload` to the nodes listening to `room`, after whatever was queued before it,
    /// fire-and-forget.
    pub fn to_room(&self, room: &str, payload: &str) {
        if let Some(bytes) = wire::encode_event(&self.node, payload) {
            let _ = self.to_all.send(Outgoing::Room(room_channel(room), bytes));
        }
    }

    /// Stops listening to the positions of `regions`.
    pub async fn stop_listening_to(&self, regions: &[CellIndex]) -> redis::RedisResult<()> {
        if regions.is_empty() {
            return Ok(());
        }
        self.redis
            .clone()
            .unsubscribe(&region_channels(regions))
            .await
    }

    /// Tells every node (this one included; it skips its own).
    pub fn broadcast(&self, payload: String) {
        self.tell_all(Envelope::Event {
            from: self.node.clone(),
            payload,
        });
    }

    /// Tells every node (this one included; it skips its own) a rider's new dispatchable flag.
    pub fn dispatchable(&self, rider: RiderId, dispatchable: bool) {
        self.tell_all(Envelope::Dispatchable {
            from: self.node.clone(),
            rider,
            dispatchable,
        });
    }

    /// Tells every node (this one included; it skips its own) what a rider carries now.
    pub fn carried(&self, rider: RiderId, carried: Option<(OrderId, UserId)>) {
        self.tell_all(Envelope::Carried {
            from: self.node.clone(),
            rider,
            carried,
        });
    }

    /// Tells every node (this one included; it skips its own) what became of an order's offers.
    pub fn offers(&self, change: OfferChange) {
        self.tell_all(Envelope::Offers {
            from: self.node.clone(),
            change,
        });
    }

    /// Queues `envelope` for every node, fire-and-forget (pub/sub may drop it while Redis is
    /// out of reach).
    fn tell_all(&self, envelope: Envelope) {
        // The task lives as long as this sender.
        let _ = self.to_all.send(Outgoing::All(envelope));
    }

    /// Publishes to `node`'s inbox; how many listened (`None` when Redis did not answer).
    async fn publish(&self, node: &str, envelope: &Envelope) -> Option<usize> {
        self.publish_on(&inbox(node), envelope).await
    }

    async fn publish_on(&self, channel: &str, envelope: &Envelope) -> Option<usize> {
        let payload = serde_json::to_string(envelope).ok()?;
        let mut redis = self.redis.clone();
        match redis.publish::<_, _, usize>(channel, payload).await {
            Ok(listeners) => Some(listeners),
            Err(err) => {
                tracing::warn!(channel, error = %err, "cluster message not published");
                None
            }
        }
    }

    /// A round trip on the listening connection: the connection manager reconnects (and
    /// resubscribes) only when a command fails, so a node that only listens would stay deaf
    /// after Redis restarts without this.
    pub async fn keepalive(&self) -> redis::RedisResult<()> {
        let mut redis = self.redis.clone();
        redis::cmd("PING").query_async::<()>(&mut redis).await
    }

    /// Hands a reply to the call waiting for it.
    pub fn answered(&self, id: u64, result: Result<ShardReply, OrderError>) {
        let waiting = self.pending.lock().ok().and_then(|mut p| p.remove(&id));
        if let Some(waiting) = waiting {
            let _ = waiting.send(result);
        }
    }
}

/// The envelope a push carries, if it is a message on a channel this node listens to: a
/// region's positions and a room's events in their binary form ([`wire`]), anything else as
/// JSON. A batch or room event that node `me` sent itself, heard back because it listens on
/// the same channel, is left undecoded: a third of the positions a node of three hears are its
/// own.
pub fn envelope_of(push: PushInfo, me: &str) -> Option<Envelope> {
    if push.kind != PushKind::Message {
        return None;
    }
    let mut data = push.data.into_iter();
    let channel = bytes_of(data.next()?)?;
    let payload = bytes_of(data.next()?)?;
    let from_here = || wire::sender(&payload) == Some(me);
    if channel.starts_with(POSITIONS.as_bytes()) {
        if from_here() {
            return None;
        }
        let (from, positions) = wire::decode(&payload)?;
        return Some(Envelope::Positions { from, positions });
    }
    if channel.starts_with(ROOMS.as_bytes()) {
        if from_here() {
            return None;
        }
        let (from, payload) = wire::decode_event(&payload)?;
        return Some(Envelope::RoomEvent { from, payload });
    }
    serde_json::from_slice(&payload).ok()
}

fn bytes_of(value: Value) -> Option<Vec<u8>> {
    match value {
        Value::BulkString(bytes) => Some(bytes),
        Value::SimpleString(text) => Some(text.into_bytes()),
        _ => None,
    }
}

/// A message waiting to go out in order.
enum Outgoing {
    /// For every node, on [`EVENTS`].
    All(Envelope),
    /// A room's event, in its binary form, for the nodes listening on the room's channel.
    Room(String, Vec<u8>),
}

/// How many queued messages go out in one pipeline at most.
const TELL_ALL_BATCH: usize = 256;

/// Publishes what is queued for every node or a room's nodes, in order: whatever waits goes
/// out in one pipeline (one round trip, its commands run in order on the one connection), so a
/// burst costs one wait on Redis rather than one per message. Ends when the transport is
/// dropped.
async fn tell_all_in_order(
    mut redis: ConnectionManager,
    mut queue: mpsc::UnboundedReceiver<Outgoing>,
) {
    let mut waiting = Vec::with_capacity(TELL_ALL_BATCH);
    while queue.recv_many(&mut waiting, TELL_ALL_BATCH).await > 0 {
        let mut pipe = redis::pipe();
        for outgoing in waiting.drain(..) {
            match outgoing {
                Outgoing::All(envelope) => match serde_json::to_string(&envelope) {
                    Ok(payload) => {
                        pipe.publish(EVENTS, payload).ignore();
                    }
                    Err(err) => tracing::warn!(error = %err, "cluster message not encoded"),
                },
                Outgoing::Room(channel, bytes) => {
                    pipe.publish(channel, bytes).ignore();
                }
            }
        }
        if let Err(err) = pipe.query_async::<()>(&mut redis).await {
            tracing::warn!(error = %err, "cluster messages not published");
        }
    }
}
