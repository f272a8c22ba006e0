//! The remote side of the routing seam: a command for a shard that does not run here is sent,
//! as a plain serde value, to the node that runs it (through [`RemoteShards`], which a cluster
//! implements over its transport), and executed there by [`ShardRouter::execute_here`]. A single
//! node has no remote: such a command is refused `NotOwner`.

use futures_core::future::BoxFuture;
use serde::{Deserialize, Serialize};
use tomato_actors::OrderError;
use tomato_domain::{Order, OrderCommand, RiderId};

use crate::ShardId;
use crate::router::{OrderRef, ShardRouter};

/// A command for an order of a shard, as it crosses to the shard's node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ShardCommand {
    /// Start the actor of a newly placed (and stored) order.
    Place {
        order: Box<Order>,
    },
    Apply {
        order: OrderRef,
        command: OrderCommand,
    },
    Accept {
        order: OrderRef,
        rider: RiderId,
        name: String,
        phone: String,
    },
    Reject {
        order: OrderRef,
        rider: RiderId,
    },
}

/// What a command answered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ShardReply {
    Done,
    Order(Box<Order>),
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
}

impl ShardRouter {
    /// Runs a command here, never forwarding it: what a node does with a command another node
    /// sent it. `NotOwner` if the shard does not run here (any more).
    pub async fn execute_here(&self, command: ShardCommand) -> Result<ShardReply, OrderError> {
        match command {
            ShardCommand::Place { order } => {
                self.place_here(*order).await.map(|()| ShardReply::Done)
            }
            ShardCommand::Apply { order, command } => self
                .apply_here(order, command)
                .await
                .map(|o| ShardReply::Order(Box::new(o))),
            ShardCommand::Accept {
                order,
                rider,
                name,
                phone,
            } => self
                .accept_here(order, rider, name, phone)
                .await
                .map(|o| ShardReply::Order(Box::new(o))),
            ShardCommand::Reject { order, rider } => self
                .reject_here(order, rider)
                .await
                .map(|()| ShardReply::Done),
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

/// The order a reply carries.
pub(crate) fn order_of(reply: ShardReply) -> Result<Order, OrderError> {
    match reply {
        ShardReply::Order(order) => Ok(*order),
        ShardReply::Done => Err(OrderError::Unavailable),
    }
}
