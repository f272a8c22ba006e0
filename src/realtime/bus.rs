//! How an event reaches every socket in its room, wherever the socket is connected. Emitters
//! (order events, dispatch, rider positions, the internal emit route) hand an [`Envelope`] to
//! the node's [`RealtimeBus`]; the bus delivers it to this node's sockets and, in a cluster,
//! to the other nodes' (the cluster adds that implementation). Envelopes are plain serde
//! values so they can cross a network.

use std::fmt;
use std::sync::Arc;

use futures_core::future::BoxFuture;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use socketioxide::SocketIo;
use tomato_domain::{RestaurantId, UserId};

use super::rooms::Hub;

/// A room of realtime clients.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(into = "String", from = "String")]
pub enum Room {
    /// Every connection of one user (`user:<id>`).
    User(UserId),
    /// Every connection of a restaurant's seller (`restaurant:<id>`).
    Restaurant(RestaurantId),
    /// A room named by another back-end service through the internal emit route.
    Named(String),
}

impl fmt::Display for Room {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Room::User(id) => write!(f, "user:{id}"),
            Room::Restaurant(id) => write!(f, "restaurant:{id}"),
            Room::Named(name) => f.write_str(name),
        }
    }
}

impl From<String> for Room {
    /// Rooms of the well-known shapes become typed; anything else stays a name.
    fn from(name: String) -> Self {
        let typed = if let Some(id) = name.strip_prefix("user:") {
            id.parse().ok().map(Room::User)
        } else if let Some(id) = name.strip_prefix("restaurant:") {
            id.parse().ok().map(Room::Restaurant)
        } else {
            None
        };
        typed.unwrap_or(Room::Named(name))
    }
}

impl From<Room> for String {
    fn from(room: Room) -> Self {
        room.to_string()
    }
}

/// One event for one room.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    pub room: Room,
    pub event: String,
    pub data: Value,
}

/// Delivers events to every socket of the service in their room.
pub trait RealtimeBus: Send + Sync + 'static {
    /// Fire-and-forget: a slow or gone client never holds the caller up.
    fn publish(&self, envelope: Envelope);

    /// Readies delivery to `rooms` before a client of this node joins them: once it is done,
    /// every event published to them anywhere reaches this node. A single node has nothing
    /// to do.
    fn listen_to(&self, rooms: &[String]) -> BoxFuture<'static, ()> {
        let _ = rooms;
        Box::pin(std::future::ready(()))
    }
}

/// This node's sockets: Socket.IO and the plain WebSocket.
#[derive(Debug)]
pub struct LocalSockets {
    pub(super) io: SocketIo,
    pub(super) ws: Hub,
}

impl LocalSockets {
    /// Whether any of this node's sockets is in `room`.
    pub fn has_members(&self, room: &str) -> bool {
        self.ws.has_members(room)
            || self
                .socket_io()
                .is_some_and(|io| !io.within(room.to_owned()).sockets().is_empty())
    }

    /// For each of `rooms`, whether any of this node's sockets is in it.
    pub fn holding(&self, rooms: &[String]) -> Vec<bool> {
        rooms.iter().map(|room| self.has_members(room)).collect()
    }

    /// Sends the envelope to this node's sockets in its room, over both transports.
    pub fn deliver(&self, envelope: Envelope) {
        let room = envelope.room.to_string();
        self.ws.emit(&room, &envelope.event, &envelope.data);
        let Some(io) = self.socket_io() else {
            return;
        };
        // Callers run on the edge's runtime or on an actor arbiter's; both are tokio.
        tokio::spawn(async move {
            if let Err(err) = io.to(room).emit(&envelope.event, &envelope.data).await {
                tracing::debug!(error = %err, event = envelope.event, "socket.io broadcast failed");
            }
        });
    }

    /// The Socket.IO namespace, once the gateway is attached. Before that no Socket.IO client
    /// can be connected, yet events already flow: a cluster node hears the others' while it
    /// joins, and the operations ticker starts before the routes are built. (socketioxide's
    /// `to`/`within` on the `SocketIo` handle panic when the namespace is missing.)
    fn socket_io(&self) -> Option<socketioxide::operators::BroadcastOperators> {
        self.io.of("/")
    }
}

/// The bus of a single node: every socket is local.
#[derive(Debug)]
pub struct LocalBus(pub Arc<LocalSockets>);

impl RealtimeBus for LocalBus {
    fn publish(&self, envelope: Envelope) {
        self.0.deliver(envelope);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rooms_round_trip_through_their_names() {
        let user = UserId::new();
        for room in [
            Room::User(user),
            Room::Restaurant(RestaurantId::new()),
            Room::Named("ops".into()),
        ] {
            assert_eq!(Room::from(room.to_string()), room);
        }
        assert_eq!(Room::User(user).to_string(), format!("user:{user}"));
        assert_eq!(
            Room::from("user:not-an-id".to_owned()),
            Room::Named("user:not-an-id".into())
        );
        let json = serde_json::to_string(&Room::User(user)).expect("json");
        assert_eq!(json, format!("\"user:{user}\""));
    }

    #[tokio::test]
    async fn events_before_the_gateway_is_attached_reach_nobody_and_break_nothing() {
        let realtime = crate::realtime::Realtime::default();
        let sockets = realtime.local_sockets();
        assert!(!sockets.has_members("ops"));
        sockets.deliver(Envelope {
            room: Room::Named("ops".into()),
            event: "ops:snapshot".into(),
            data: serde_json::json!({}),
        });
    }
}
