//! The remote side of the routing seam: a command for a shard that does not run here is sent,
//! as a plain serde value, to the node that runs it (through [`RemoteShards`], which a cluster
//! implements over its transport), and executed there by [`ShardRouter::execute_here`]. A single
//! node has no remote: such a command is refused `NotOwner`.

use futures_core::future::BoxFuture;
use h3o::CellIndex;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use tomato_actors::{Accept, Apply, Offer, OrderError, Reject};
use tomato_domain::{LatLon, Order, OrderCommand, OrderId, RiderId};

use crate::ShardId;
use crate::index::Found;
use crate::router::{OrderRef, ShardRouter};

/// A rider's position on its way to the nodes that copy its region (its shard's owner among
/// them).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Position {
    pub rider: RiderId,
    pub at: LatLon,
    #[serde(with = "time::serde::rfc3339")]
    pub seen_at: OffsetDateTime,
    /// Whether dispatch may offer the rider work, as the ingesting node knew it (`None` when
    /// it did not yet): a node whose copy meets the rider for the first time takes it instead
    /// of reading the rider's profile.
    #[serde(default)]
    pub dispatchable: Option<bool>,
}

/// What became of an order's offers, as the node running the order tells the others.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OfferChange {
    Made {
        offer: Offer,
        riders: Vec<RiderId>,
    },
    Withdrawn {
        order: OrderId,
        rider: RiderId,
    },
    /// The order stopped being dispatched: none of its offers stands.
    Ended {
        order: OrderId,
    },
}

/// A nearest-rider search as another node runs it over the shards it owns.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct NearestQuery {
    pub at: LatLon,
    pub radius_m: f64,
    pub limit: usize,
    /// Riders seen before this (Unix seconds) are left out, as are riders not dispatchable.
    pub fresh_since: u32,
}

/// A command for an order of a shard, as it crosses to the shard's node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ShardCommand {
    /// Start the actor of a newly placed (and stored) order.
    Place { order: Box<Order> },
    Apply {
        order: OrderRef,
        command: OrderCommand,
        /// Sent again after its answer was lost (see [`ShardCommand::again`]).
        #[serde(default)]
        repeat: bool,
    },
    Accept {
        order: OrderRef,
        rider: RiderId,
        name: String,
        phone: String,
        #[serde(default)]
        repeat: bool,
    },
    Reject {
        order: OrderRef,
        rider: RiderId,
        #[serde(default)]
        repeat: bool,
    },
    /// The nearest dispatchable riders in the shards the node runs.
    Nearest { query: NearestQuery },
}

impl ShardCommand {
    /// The command as it is sent again when its first answer was lost (the node that ran it
    /// died, or the reply went astray): it may have run, so the order answers "done" when it
    /// already shows the command's effect instead of refusing it as a transition from the state
    /// the command itself produced. Placing is idempotent and searching reads, so they stay.
    pub fn again(mut self) -> Self {
        match &mut self {
            ShardCommand::Apply { repeat, .. }
            | ShardCommand::Accept { repeat, .. }
            | ShardCommand::Reject { repeat, .. } => *repeat = true,
            ShardCommand::Place { .. } | ShardCommand::Nearest { .. } => {}
        }
        self
    }
}

/// What a command answered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ShardReply {
    Done,
    Order(Box<Order>),
    Found(Vec<Found>),
}

/// How a node reaches the owners of shards it does not run.
pub trait RemoteShards: Send + Sync + 'static {
    /// Runs `command` on the node that owns `shard` and answers its reply; `NotOwner` when no
    /// node owns it now (it is moving), `Unavailable` when the owner did not answer in time
    /// (the command may or may not have run).
    fn call(
        &self,
        shard: ShardId,
        command: ShardCommand,
    ) -> BoxFuture<'static, Result<ShardReply, OrderError>>;

    /// Replicates a position ingested here to the nodes that copy its region, the owner of its
    /// shard among them, fire-and-forget (the next one comes in seconds): they apply it with
    /// [`ShardRouter::replicated_heard`]. `region` is the position's, worked out by the caller.
    fn replicate(&self, region: CellIndex, position: Position);

    /// The nearest riders in `shards` (none of them running here, their regions not copied
    /// here), asked of their owners in parallel within a short deadline: a slow node costs a
    /// partial answer.
    fn nearest(&self, shards: Vec<ShardId>, query: NearestQuery) -> BoxFuture<'static, Vec<Found>>;

    /// Tells every other node that `rider` may (or may not) be offered work now, fire-and-forget:
    /// every node whose index or copy holds the rider applies it
    /// ([`ShardRouter::dispatchable_heard`]). Sent when a rider's profile changes or it is
    /// assigned.
    fn dispatchable(&self, rider: RiderId, dispatchable: bool);

    /// Tells every other node what `rider` carries now, fire-and-forget: the node whose actor
    /// speaks for the rider applies it ([`ShardRouter::carried_heard`]).
    fn carried(&self, rider: RiderId, carried: tomato_actors::Carried);

    /// Tells every other node what became of an order's offers, fire-and-forget: each mirrors
    /// it ([`ShardRouter::offers_heard`]), so a rider's offers are read on the node it talks
    /// to. A change lost on the way is bounded by the offer's expiry.
    fn offers_changed(&self, change: OfferChange);
}

impl ShardRouter {
    /// Runs a command here, never forwarding it: what a node does with a command another node
    /// sent it. `NotOwner` if the shard does not run here (any more).
    pub async fn execute_here(&self, command: ShardCommand) -> Result<ShardReply, OrderError> {
        match command {
            ShardCommand::Place { order } => {
                self.place_here(*order).await.map(|()| ShardReply::Done)
            }
            ShardCommand::Apply {
                order,
                command,
                repeat,
            } => self
                .send(order, Apply { command, repeat })
                .await
                .map(|o| ShardReply::Order(Box::new(o))),
            ShardCommand::Accept {
                order,
                rider,
                name,
                phone,
                repeat,
            } => self
                .send(
                    order,
                    Accept {
                        rider,
                        name,
                        phone,
                        repeat,
                    },
                )
                .await
                .map(|o| ShardReply::Order(Box::new(o))),
            ShardCommand::Reject {
                order,
                rider,
                repeat,
            } => self
                .send(order, Reject { rider, repeat })
                .await
                .map(|()| ShardReply::Done),
            ShardCommand::Nearest { query } => Ok(ShardReply::Found(self.nearest_here(query))),
        }
    }

    /// Sends a command this node could not run to the shard's owner.
    pub(crate) async fn forward(
        &self,
        shard: ShardId,
        command: ShardCommand,
    ) -> Result<ShardReply, OrderError> {
        match self.remote() {
            Some(remote) => remote.call(shard, command).await,
            None => Err(OrderError::NotOwner),
        }
    }
}

impl ShardRouter {
    /// The nearest dispatchable, fresh riders in the shards running here.
    pub fn nearest_here(&self, query: NearestQuery) -> Vec<Found> {
        self.index()
            .nearest(query.at, query.radius_m, query.limit, |seen, ok| {
                ok && seen >= query.fresh_since
            })
    }
}

/// The order a reply carries.
pub(crate) fn order_of(reply: ShardReply) -> Result<Order, OrderError> {
    match reply {
        ShardReply::Order(order) => Ok(*order),
        ShardReply::Done | ShardReply::Found(_) => Err(OrderError::Unavailable),
    }
}
