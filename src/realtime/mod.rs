//! The realtime gateway: Socket.IO (v4, what `socket.io-client` speaks) at `/socket.io/` and a
//! plain WebSocket at `/ws` carrying the same events as `{"event", "data"}` JSON, both on the
//! API's port. Clients authenticate when they connect (a bad token is refused there, never
//! accepted and dropped later) and are put in the rooms `user:<id>` and, for a seller with a
//! restaurant, `restaurant:<id>`. [`Realtime::emit`] sends an event to a [`Room`] through the
//! node's [`RealtimeBus`], which reaches both transports.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::cache::CacheChange;
use crate::http::{ApiError, ErrorBody, InternalCaller, Json};
use crate::state::AppState;

pub mod bus;
pub mod clients;
pub mod events;
mod rooms;
pub mod sessions;
mod socketio;
mod transport;
pub mod ws;

pub use bus::{Envelope, LocalBus, LocalSockets, RealtimeBus, Room};
pub use clients::Realtime;
pub use events::RealtimeOrderEvents;
pub(crate) use socketio::own_head as own_socket_io_head;

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
