//! The realtime gateway: Socket.IO (v4, what `socket.io-client` speaks) at `/socket.io/` and a
//! plain WebSocket at `/ws` carrying the same events as `{"event", "data"}` JSON, both on the
//! API's port. Clients authenticate when they connect (a bad token is refused there, never
//! accepted and dropped later) and are put in the rooms `user:<id>` and, for a seller with a
//! restaurant, `restaurant:<id>`. [`Realtime::emit`] sends an event to a [`Room`] through the
//! node's [`RealtimeBus`], which reaches both transports.

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use socketioxide::SocketIo;
use socketioxide::layer::SocketIoLayer;
use tomato_domain::Role;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::AuthUser;
use crate::auth::cache::CacheChange;
use crate::http::{ApiError, ErrorBody, InternalCaller, Json};
use crate::state::AppState;

mod bus;
mod events;
pub mod sessions;
mod socketio;

pub(crate) use socketio::own_head as own_socket_io_head;
pub mod ws;

use std::sync::Arc;

pub use bus::{Envelope, LocalBus, LocalSockets, RealtimeBus, Room};
pub use events::RealtimeOrderEvents;

/// The handle to every connected client: this node's sockets, and the bus that reaches the
/// sockets of every node.
pub struct Realtime {
    layer: SocketIoLayer,
    sockets: Arc<LocalSockets>,
    bus: Arc<dyn RealtimeBus>,
    /// The bus of a cluster, once the node joined one; it replaces `bus`.
    cluster_bus: std::sync::OnceLock<Arc<dyn RealtimeBus>>,
    /// The tokens this node's connections hold.
    pub(crate) sessions: Arc<sessions::Sessions>,
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
            .ws_read_buffer_size(ws::READ_BUFFER)
            .build_layer();
        let sockets = Arc::new(LocalSockets {
            io,
            ws: ws::Hub::default(),
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

    /// Attaches the Socket.IO namespace (the handlers keep `state` for authentication), and
    /// ends connections whose token the authentication cache hears revoked or made stale.
    pub fn attach(state: &AppState) {
        socketio::attach(state);
        let sessions = Arc::clone(&state.realtime.sessions);
        let users = Arc::clone(&state.stores.users);
        state.auth_cache.on_change(move |change| match change {
            CacheChange::Revoked { jti, .. } => sessions.revoked(jti),
            CacheChange::UserChanged { id } if sessions.has_user(id) => {
                // Whether the change made their tokens stale is the stored user's to say.
                let (sessions, users) = (Arc::clone(&sessions), Arc::clone(&users));
                if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                    runtime.spawn(async move {
                        match users.get(id).await {
                            Ok(Some(user)) => sessions.user_is(&user),
                            Ok(None) => {}
                            Err(err) => {
                                tracing::warn!(user_id = %id, error = %err, "cannot check the sockets of a changed user");
                            }
                        }
                    });
                }
            }
            CacheChange::UserChanged { .. } => {}
        });
    }
}

/// The rooms a connection joins: the user's own, and a seller's restaurant's.
/// `ops:subscribe` from a socket: admins (by the token as it stands now) join the operations
/// page's room and get `ops:snapshot` every `ops.interval_ms`.
pub(crate) async fn ops_subscribe(
    state: &AppState,
    claims: crate::auth::token::Claims,
) -> Result<(), ApiError> {
    let auth = crate::auth::extract::still_valid(state, claims).await?;
    if auth.user.role != Role::Admin {
        return Err(ApiError::forbidden("ops:subscribe is for admins"));
    }
    Ok(())
}

pub(crate) async fn rooms_of(state: &AppState, auth: &AuthUser) -> Vec<String> {
    let mut rooms = vec![Room::User(auth.user.id).to_string()];
    if auth.user.role == Role::Seller
        && let Ok(Some(restaurant)) = state.stores.restaurants.by_owner(auth.user.id).await
    {
        rooms.push(Room::Restaurant(restaurant.id).to_string());
    }
    rooms
}

/// The body of an `error` event sent to a client whose message was refused.
pub(crate) fn error_event(err: &ApiError) -> Value {
    serde_json::json!({ "code": err.code(), "message": err.message() })
}

/// The acknowledgement of a client event: `{ok: true}`, or the error body of the API.
pub(crate) fn ack_body(outcome: &Result<(), ApiError>) -> Value {
    match outcome {
        Ok(()) => serde_json::json!({ "ok": true }),
        Err(err) => serde_json::json!({ "error": error_event(err) }),
    }
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(emit))
        .routes(routes!(ws::upgrade))
}

/// An event another back-end service pushes to connected clients.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
pub struct EmitRequest {
    #[schema(example = "order:update")]
    pub event: String,
    #[schema(example = "user:0192f3c5-7d3e-7a80-9d8e-2f6f5b1c0a11")]
    pub room: String,
    #[schema(value_type = Object)]
    pub payload: Value,
}

/// Push an event to a room (`x-internal-key` equal to `internal.key`; with no key configured
/// every call is refused). Answers 204 once the event is handed to the gateway.
#[utoipa::path(
    post,
    path = "/api/v1/internal/emit",
    tag = "internal",
    params(("x-internal-key" = String, Header, description = "internal.key")),
    request_body = EmitRequest,
    responses(
        (status = 204, description = "Sent"),
        (status = 400, description = "Empty or overlong event or room", body = ErrorBody),
        (status = 403, description = "Missing or wrong x-internal-key", body = ErrorBody),
    )
)]
async fn emit(
    State(state): State<AppState>,
    _caller: InternalCaller,
    Json(body): Json<EmitRequest>,
) -> Result<StatusCode, ApiError> {
    if body.event.is_empty() || body.event.len() > 100 {
        return Err(ApiError::bad_request("event must be 1 to 100 characters"));
    }
    if body.room.is_empty() || body.room.len() > 200 {
        return Err(ApiError::bad_request("room must be 1 to 200 characters"));
    }
    state
        .realtime
        .emit(Room::from(body.room), &body.event, &body.payload);
    Ok(StatusCode::NO_CONTENT)
}
