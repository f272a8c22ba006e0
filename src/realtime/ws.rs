//! The plain WebSocket at `/ws?token=...`: the same events as Socket.IO, as
//! `{"event": ..., "data": ...}` JSON text frames, for clients that do not speak Socket.IO.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::extract::State;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::response::Response;
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::Value;
use tokio::sync::mpsc;
use utoipa::IntoParams;

use crate::auth::AuthUser;
use crate::auth::extract::authenticate;
use crate::http::{ApiError, ErrorBody, Query};
use crate::riders::PositionReport;
use crate::state::AppState;

/// Read buffer of a `/ws` connection (it grows for a larger frame, up to the frame limit).
const WS_READ_BUFFER: usize = 4 * 1024;

/// Frames waiting for one slow client; beyond this its events are dropped, not buffered.
const OUTBOX: usize = 256;

/// A connection in a room: its id and its outbox.
type Member = (u64, mpsc::Sender<String>);

/// Rooms of plain WebSocket connections.
#[derive(Debug, Default)]
pub struct Hub {
    next: AtomicU64,
    rooms: Mutex<HashMap<String, Vec<Member>>>,
}

impl Hub {
    fn join(&self, rooms: &[String], outbox: mpsc::Sender<String>) -> u64 {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut all) = self.rooms.lock() {
            for room in rooms {
                all.entry(room.clone())
                    .or_default()
                    .push((id, outbox.clone()));
            }
        }
        id
    }

    fn leave(&self, id: u64, rooms: &[String]) {
        if let Ok(mut all) = self.rooms.lock() {
            for room in rooms {
                if let Some(members) = all.get_mut(room) {
                    members.retain(|(member, _)| *member != id);
                    if members.is_empty() {
                        all.remove(room);
                    }
                }
            }
        }
    }

    pub(super) fn emit(&self, room: &str, event: &str, data: &Value) {
        let Ok(all) = self.rooms.lock() else { return };
        let Some(members) = all.get(room) else { return };
        let frame = serde_json::json!({ "event": event, "data": data }).to_string();
        for (_, outbox) in members {
            // A full outbox means the client is not reading: drop, never block the emitter.
            let _ = outbox.try_send(frame.clone());
        }
    }
}

/// The token, since browsers cannot set headers on a WebSocket.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct WsQuery {
    /// An access token from a sign-in route.
    pub token: Option<String>,
}

/// Open the plain WebSocket. A missing or bad token is refused with 401 before the upgrade.
#[utoipa::path(
    get,
    path = "/ws",
    tag = "realtime",
    params(WsQuery),
    responses(
        (status = 101, description = "Switching to WebSocket: server events as {\"event\",\"data\"} frames; send {\"event\":\"rider:location\",\"data\":{lat,lon,...}}; add \"id\": n to get {\"event\":\"ack\",\"id\":n,\"data\":{\"ok\":true} or {\"error\":{code,message}}} back"),
        (status = 401, description = "Missing, bad, expired or revoked token", body = ErrorBody),
    )
)]
pub async fn upgrade(
    State(state): State<AppState>,
    Query(query): Query<WsQuery>,
    upgrade: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    let token = query
        .token
        .ok_or_else(|| ApiError::unauthorized("unauthenticated", "pass ?token=<access token>"))?;
    let auth = authenticate(&state, &token).await?;
    let rooms = super::rooms_of(&state, &auth).await;
    // tungstenite preallocates a 128 KiB read buffer per connection by default: 2.6 GB for
    // 19 k rider sockets in a load test. Client frames here are position reports of ~100 bytes.
    Ok(upgrade
        .read_buffer_size(WS_READ_BUFFER)
        .on_upgrade(move |socket| serve(state, auth, rooms, socket)))
}

/// A client frame.
#[derive(Debug, Deserialize)]
struct Incoming {
    event: String,
    #[serde(default)]
    data: Value,
    /// Set by a client that wants the outcome back as `{"event":"ack","id",data}`.
    #[serde(default)]
    id: Option<u64>,
}

async fn serve(state: AppState, auth: AuthUser, rooms: Vec<String>, socket: WebSocket) {
    let (mut sink, mut stream) = socket.split();
    let (outbox, mut inbox) = mpsc::channel::<String>(OUTBOX);
    let id = state.realtime.sockets().ws.join(&rooms, outbox.clone());
    let writer = tokio::spawn(async move {
        while let Some(frame) = inbox.recv().await {
            if sink.send(Message::Text(frame.into())).await.is_err() {
                break;
            }
        }
    });
    while let Some(Ok(message)) = stream.next().await {
        let Message::Text(text) = message else {
            if matches!(message, Message::Close(_)) {
                break;
            }
            continue;
        };
        let (ack_id, outcome) = handle(&state, &auth, &text).await;
        let frame = match (ack_id, &outcome) {
            (Some(id), _) => {
                serde_json::json!({ "event": "ack", "id": id, "data": super::ack_body(&outcome) })
            }
            (None, Err(err)) => {
                serde_json::json!({ "event": "error", "data": super::error_event(err) })
            }
            (None, Ok(())) => continue,
        };
        let _ = outbox.try_send(frame.to_string());
    }
    state.realtime.sockets().ws.leave(id, &rooms);
    writer.abort();
}

/// Handles one frame; answers the ack id the client asked with, if any, and the outcome.
async fn handle(
    state: &AppState,
    auth: &AuthUser,
    text: &str,
) -> (Option<u64>, Result<(), ApiError>) {
    let incoming: Incoming = match serde_json::from_str(text) {
        Ok(incoming) => incoming,
        Err(err) => {
            let err = ApiError::bad_request(format!(
                "a frame must be {{\"event\", \"data\", \"id\"?}} JSON: {err}"
            ));
            return (None, Err(err));
        }
    };
    (incoming.id, dispatch_event(state, auth, incoming).await)
}

async fn dispatch_event(
    state: &AppState,
    auth: &AuthUser,
    incoming: Incoming,
) -> Result<(), ApiError> {
    match incoming.event.as_str() {
        "rider:location" => {
            let report: PositionReport = serde_json::from_value(incoming.data)
                .map_err(|err| ApiError::bad_request(err.to_string()))?;
            super::socketio::rider_location(state, auth, &report).await
        }
        other => Err(ApiError::bad_request(format!("unknown event {other:?}"))),
    }
}
