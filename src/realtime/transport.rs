//! What the two transports (Socket.IO and `/ws`) do alike: the rooms a client joins, its
//! `ops:subscribe`, and the bodies of acknowledgements and error events.

use serde_json::Value;
use tomato_domain::Role;

use super::bus::Room;
use crate::auth::AuthUser;
use crate::http::ApiError;
use crate::state::AppState;

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

/// The rooms a connection joins: the user's own, and a seller's restaurant's.
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
