//! The actors of tomato. Each order is an actix actor that owns its state and serialises every
//! command to it, dispatch included; it persists a transition before it answers, and it runs
//! under an actix `Supervisor`, so when it fails it is rebuilt from the store while its
//! neighbours carry on. Where actors live (which shard, which arbiter) is the `shards` crate's
//! business, not theirs.
//!
//! Every message to an actor, every reply and every error is a plain serde type, so the cluster
//! can carry a command to the node that owns its order or rider unchanged.

pub mod dispatch_port;
pub mod matched;
pub mod order;
pub mod rider;
pub mod waves;
#[cfg(test)]
mod wire;

pub use dispatch_port::{DispatchPolicy, DispatchPort, MatchedRider, Offer, Queued, Withdrawn};
pub use order::{
    Accept, Apply, ArmFault, OrderActor, OrderEnv, OrderError, OrderEvents, Reject, Retire,
    StoreFault,
};
pub use rider::{
    ArmRiderFault, Carried, Carry, Carrying, CarryingFlag, Moved, RiderActor, RiderEnv, RiderPort,
    TakeOrder,
};
