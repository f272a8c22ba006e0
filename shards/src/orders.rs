//! Commands to order actors, through the router. An order's actor lives on the arbiter of its
//! shard (recorded on the order), is started when the shard starts or the order is placed, and
//! lets go of itself once the order is finished; a command for a finished order starts it again
//! from the store just to answer. When an actor crashed on a command, or found its copy stale,
//! the command is sent once more to the actor rebuilt from the store.

use std::time::Duration;

use actix::dev::ToEnvelope;
use actix::{Handler, MailboxError, Message};
use tomato_actors::{Accept, Apply, ArmFault, OrderActor, OrderError, Reject};
use tomato_domain::{Order, OrderCommand, RiderId};

use crate::remote::{ShardCommand, order_of};
use crate::router::{OrderRef, ShardRouter};
use crate::shard::Entered;

/// How long a caller waits for an order's actor to answer.
const ANSWER_WITHIN: Duration = Duration::from_secs(10);

impl ShardRouter {
    /// Starts the actor of a newly placed (and stored) order, on the node that runs its shard.
    pub async fn place(&self, order: Order) -> Result<(), OrderError> {
        let shard = OrderRef::from(&order).shard;
        match self.place_here(order.clone()).await {
            Err(OrderError::NotOwner) => self
                .forward(
                    shard,
                    ShardCommand::Place {
                        order: Box::new(order),
                    },
                )
                .await
                .map(drop),
            done => done,
        }
    }

    pub(crate) async fn place_here(&self, order: Order) -> Result<(), OrderError> {
        let entered = self.enter(OrderRef::from(&order).shard).await?;
        self.spawn_order(entered.shard, order);
        Ok(())
    }

    async fn address(
        &self,
        entered: &Entered<'_>,
        order: OrderRef,
    ) -> Result<actix::Addr<OrderActor>, OrderError> {
        if let Some(addr) = entered.shard.orders.get(&order.id) {
            return Ok(addr.clone());
        }
        // Not live: finished and let go, or never started here. The shard runs here, so this
        // node is the order's only writer and may start it from the store.
        let stored = self
            .orders_env()
            .store
            .get(order.id)
            .await?
            .ok_or(OrderError::NotFound)?;
        if stored.shard != order.shard.0 {
            return Err(OrderError::NotFound);
        }
        Ok(self.spawn_order(entered.shard, stored))
    }

    /// Sends `msg` to the order's actor, inside its shard's gate. If the actor crashed on it
    /// (nothing was applied), found its copy stale, or is found dead, the message is sent once
    /// more to the actor rebuilt from the store.
    pub(crate) async fn send<M, T>(&self, order: OrderRef, msg: M) -> Result<T, OrderError>
    where
        M: Message<Result = Result<T, OrderError>> + Clone + Send + 'static,
        T: Send + 'static,
        OrderActor: Handler<M>,
        <OrderActor as actix::Actor>::Context: ToEnvelope<OrderActor, M>,
    {
        let entered = self.enter(order.shard).await?;
        let mut last = OrderError::Unavailable;
        for attempt in 0..2 {
            let addr = self.address(&entered, order).await?;
            match addr.send(msg.clone()).timeout(ANSWER_WITHIN).await {
                Ok(Err(err @ (OrderError::Crashed | OrderError::Stale))) if attempt == 0 => {
                    tracing::warn!(order_id = %order.id, error = %err, "retrying on the rebuilt order actor");
                    last = err;
                }
                // A stale copy twice over: another writer holds the order.
                Ok(Err(OrderError::Stale)) => return Err(OrderError::NotOwner),
                Ok(result) => return result,
                Err(MailboxError::Timeout) => return Err(OrderError::Unavailable),
                Err(MailboxError::Closed) => {
                    // The actor is gone (its arbiter died, say): forget it, and the next
                    // round rebuilds it from the store.
                    tracing::warn!(order_id = %order.id, "order actor gone; rebuilding it");
                    entered
                        .shard
                        .orders
                        .remove_if(&order.id, |_, live| *live == addr);
                }
            }
        }
        Err(last)
    }

    /// Applies a command, wherever the order's shard runs; returns the order as it is
    /// afterwards.
    pub async fn apply(&self, order: OrderRef, command: OrderCommand) -> Result<Order, OrderError> {
        match self.apply_here(order, command.clone()).await {
            Err(OrderError::NotOwner) => self
                .forward(
                    order.shard,
                    ShardCommand::Apply {
                        order,
                        command,
                        repeat: false,
                    },
                )
                .await
                .and_then(order_of),
            done => done,
        }
    }

    pub(crate) async fn apply_here(
        &self,
        order: OrderRef,
        command: OrderCommand,
    ) -> Result<Order, OrderError> {
        self.send(
            order,
            Apply {
                command,
                repeat: false,
            },
        )
        .await
    }

    /// A rider accepts the order's offer; exactly one wins.
    pub async fn accept(
        &self,
        order: OrderRef,
        rider: RiderId,
        name: String,
        phone: String,
    ) -> Result<Order, OrderError> {
        match self
            .accept_here(order, rider, name.clone(), phone.clone())
            .await
        {
            Err(OrderError::NotOwner) => self
                .forward(
                    order.shard,
                    ShardCommand::Accept {
                        order,
                        rider,
                        name,
                        phone,
                        repeat: false,
                    },
                )
                .await
                .and_then(order_of),
            done => done,
        }
    }

    pub(crate) async fn accept_here(
        &self,
        order: OrderRef,
        rider: RiderId,
        name: String,
        phone: String,
    ) -> Result<Order, OrderError> {
        self.send(
            order,
            Accept {
                rider,
                name,
                phone,
                repeat: false,
            },
        )
        .await
    }

    /// A rider turns the order's offer down.
    pub async fn reject(&self, order: OrderRef, rider: RiderId) -> Result<(), OrderError> {
        match self.reject_here(order, rider).await {
            Err(OrderError::NotOwner) => self
                .forward(
                    order.shard,
                    ShardCommand::Reject {
                        order,
                        rider,
                        repeat: false,
                    },
                )
                .await
                .map(drop),
            done => done,
        }
    }

    pub(crate) async fn reject_here(
        &self,
        order: OrderRef,
        rider: RiderId,
    ) -> Result<(), OrderError> {
        self.send(
            order,
            Reject {
                rider,
                repeat: false,
            },
        )
        .await
    }

    /// Arms `fault` for the order's next command in its actor (fault injection).
    pub async fn arm_fault(&self, order: OrderRef, fault: ArmFault) -> Result<(), OrderError> {
        let entered = self.enter(order.shard).await?;
        let addr = self.address(&entered, order).await?;
        addr.send(fault).await.map_err(|_| OrderError::Unavailable)
    }

    /// How many order actors are alive on this node.
    pub fn live_orders(&self) -> usize {
        self.shards().map(|shard| shard.live_orders()).sum()
    }
}
