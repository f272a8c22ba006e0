//! [`Realtime`], the handle to every connected client: this node's Socket.IO and `/ws` sockets
//! and the bus an event takes to reach them (this node's alone, or a cluster's).

use std::sync::Arc;

use serde_json::Value;
use socketioxide::SocketIo;
use socketioxide::layer::SocketIoLayer;

use super::bus::{Envelope, LocalBus, LocalSockets, RealtimeBus, Room};
use super::rooms::Hub;
use super::sessions::Sessions;

/// Read buffer of a `/ws` connection, held for as long as it is open. A position report is a
/// frame of ~150 bytes; a larger frame reserves its whole length once its header is read, so
/// the size only sets how much one read syscall may take.
pub(super) const READ_BUFFER: usize = 512;

/// The handle to every connected client: this node's sockets, and the bus that reaches the
/// sockets of every node.
pub struct Realtime {
    layer: SocketIoLayer,
    sockets: Arc<LocalSockets>,
    bus: Arc<dyn RealtimeBus>,
    /// The bus of a cluster, once the node joined one; it replaces `bus`.
    cluster_bus: std::sync::OnceLock<Arc<dyn RealtimeBus>>,
    /// The tokens this node's connections hold.
    pub(crate) sessions: Arc<Sessions>,
}

impl std::fmt::Debug for Realtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Realtime").finish_non_exhaustive()
    }
}

impl Default for Realtime {
    fn default() -> Self {
        // Socket.IO's WebSocket transport reads with the same small buffer as `/ws` (its
        // default, 4 KiB, was most of a rider's memory after the socket itself).
        let (layer, io) = SocketIo::builder()
            .ws_read_buffer_size(READ_BUFFER)
            .build_layer();
        let sockets = Arc::new(LocalSockets {
            io,
            ws: Hub::default(),
        });
        Self {
            layer,
            bus: Arc::new(LocalBus(Arc::clone(&sockets))),
            cluster_bus: std::sync::OnceLock::new(),
            sessions: Arc::default(),
            sockets,
        }
    }
}

impl Realtime {
    /// The tower layer serving `/socket.io/`.
    pub fn layer(&self) -> SocketIoLayer {
        self.layer.clone()
    }

    /// Sends `event` with `data` to everyone in `room`, over Socket.IO and the plain WebSocket.
    /// Fire-and-forget: a slow or gone client never holds the caller up.
    pub fn emit(&self, room: Room, event: &str, data: &Value) {
        let bus = self.cluster_bus.get().unwrap_or(&self.bus);
        bus.publish(Envelope {
            room,
            event: event.to_owned(),
            data: data.clone(),
        });
    }

    /// Readies delivery to `rooms` before a client of this node joins them (see
    /// [`RealtimeBus::listen_to`]).
    pub(crate) async fn listen_to(&self, rooms: &[String]) {
        let bus = self.cluster_bus.get().unwrap_or(&self.bus);
        bus.listen_to(rooms).await;
    }

    /// This node's sockets.
    pub(crate) fn sockets(&self) -> &LocalSockets {
        &self.sockets
    }

    /// This node's sockets, shared (for a bus that delivers to them).
    pub fn local_sockets(&self) -> Arc<LocalSockets> {
        Arc::clone(&self.sockets)
    }

    /// From now on every event goes through `bus` (a cluster's).
    pub fn use_bus(&self, bus: Arc<dyn RealtimeBus>) {
        let _ = self.cluster_bus.set(bus);
    }
}
