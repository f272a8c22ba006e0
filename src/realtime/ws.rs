//! The plain WebSocket at `/ws?token=...`: the same events as Socket.IO, as
//! `{"event": ..., "data": ...}` JSON text frames, for clients that do not speak Socket.IO.
//!
//! The server closes a connection: when its token is revoked, goes stale or expires (after
//! `session:ended`), on a frame over 64 KiB (1009), after 60 s without a frame from the client
//! (1001), and when the client stops reading so long that its outbox fills up (1008): a client
//! that cannot keep up is told so instead of silently missing events forever.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade, close_code};
use axum::response::Response;
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::Value;
use tokio::sync::{Notify, mpsc};
use utoipa::IntoParams;

use super::sessions::Ended;
use crate::auth::AuthUser;
use crate::auth::extract::authenticate;
use crate::http::{ApiError, ErrorBody, Query};
use crate::riders::PositionReport;
use crate::state::AppState;

/// Read buffer of a `/ws` connection (it grows for a larger frame, up to the frame limit).
const WS_READ_BUFFER: usize = 4 * 1024;

/// Frames waiting for one slow client; when they fill up the connection is closed.
const OUTBOX: usize = 256;
/// The largest frame (and message) a client may send.
pub const MAX_FRAME: usize = 64 * 1024;
/// A connection that sends nothing for this long is closed.
const IDLE: Duration = Duration::from_secs(60);

/// Why the server closes a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Closing {
    Session(Ended),
    /// Its outbox stayed full: the client is not reading.
    Overflow,
}

/// The signal that ends a connection from outside its task (a session ended, an overflow).
#[derive(Debug, Default)]
struct Ending {
    why: Mutex<Option<Closing>>,
    rung: Notify,
}

impl Ending {
    fn end(&self, why: Closing) {
        if let Ok(mut slot) = self.why.lock() {
            slot.get_or_insert(why);
        }
        self.rung.notify_one();
    }

    fn why(&self) -> Option<Closing> {
        self.why.lock().ok().and_then(|slot| *slot)
    }
}

/// A connection in a room: its id, its outbox and its end.
type Member = (u64, mpsc::Sender<String>, Arc<Ending>);

/// Rooms of plain WebSocket connections.
#[derive(Debug, Default)]
pub struct Hub {
    next: AtomicU64,
    rooms: Mutex<HashMap<String, Vec<Member>>>,
}

impl Hub {
    fn join(&self, rooms: &[String], outbox: mpsc::Sender<String>, ending: &Arc<Ending>) -> u64 {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut all) = self.rooms.lock() {
            for room in rooms {
                all.entry(room.clone())
                    .or_default()
                    .push((id, outbox.clone(), Arc::clone(ending)));
            }
        }
        id
    }

    fn leave(&self, id: u64, rooms: &[String]) {
        if let Ok(mut all) = self.rooms.lock() {
            for room in rooms {
                if let Some(members) = all.get_mut(room) {
                    members.retain(|(member, _, _)| *member != id);
                    if members.is_empty() {
                        all.remove(room);
                    }
                }
            }
        }
    }

    pub(super) fn has_members(&self, room: &str) -> bool {
        self.rooms
            .lock()
            .is_ok_and(|all| all.get(room).is_some_and(|members| !members.is_empty()))
    }

    /// Adds connection `id` (which joined before) to `room`.
    fn join_one(&self, id: u64, room: &str, outbox: mpsc::Sender<String>, ending: &Arc<Ending>) {
        if let Ok(mut all) = self.rooms.lock() {
            let members = all.entry(room.to_owned()).or_default();
            if !members.iter().any(|(member, _, _)| *member == id) {
                members.push((id, outbox, Arc::clone(ending)));
            }
        }
    }

    pub(super) fn emit(&self, room: &str, event: &str, data: &Value) {
        let Ok(all) = self.rooms.lock() else { return };
        let Some(members) = all.get(room) else { return };
        let frame = serde_json::json!({ "event": event, "data": data }).to_string();
        for (_, outbox, ending) in members {
            // A full outbox means the client is not reading: never block the emitter; close
            // the connection rather than let it miss events without knowing.
            if let Err(mpsc::error::TrySendError::Full(_)) = outbox.try_send(frame.clone()) {
                ending.end(Closing::Overflow);
            }
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
/// The server closes it after `session:ended` `{reason}` when the token is revoked, goes stale
/// or expires (close code 1008), on a frame over 64 KiB (1009), after 60 s without any frame
/// from the client, pings included (1001), and when the client reads too slowly to keep up
/// (1008).
#[utoipa::path(
    get,
    path = "/ws",
    tag = "realtime",
    params(WsQuery),
    responses(
        (status = 101, description = "Switching to WebSocket: server events as {\"event\",\"data\"} frames; send {\"event\":\"rider:location\",\"data\":{lat,lon,...}}; add \"id\": n to get {\"event\":\"ack\",\"id\":n,\"data\":{\"ok\":true} or {\"error\":{code,message}}} back"),
        (status = 400, description = "Not a WebSocket upgrade request", body = ErrorBody),
        (status = 401, description = "Missing, bad, expired or revoked token", body = ErrorBody),
        (status = 429, description = "`rate_limited`: the user already has `limits.sockets_per_user` sockets open (Socket.IO and `/ws` together)", body = ErrorBody),
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
    let slot = state
        .limits
        .open_socket(auth.user.id)
        .ok_or_else(too_many_sockets)?;
    let rooms = super::rooms_of(&state, &auth).await;
    // tungstenite preallocates a 128 KiB read buffer per connection by default: 2.6 GB for
    // 19 k rider sockets in a load test. Client frames here are position reports of ~100 bytes.
    Ok(upgrade
        .read_buffer_size(WS_READ_BUFFER)
        .max_frame_size(MAX_FRAME)
        .max_message_size(MAX_FRAME)
        .on_upgrade(move |socket| async move {
            serve(state, auth, rooms, socket).await;
            drop(slot);
        }))
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

/// A user over `limits.sockets_per_user` is refused at connect, never accepted and dropped.
pub(super) fn too_many_sockets() -> ApiError {
    ApiError::rate_limited(
        "too many open sockets for this user; close one first",
        Duration::from_secs(5),
    )
}

/// What the connection's writer sends: an event frame, or the last frames before closing.
enum Out {
    Frame(String),
    Close {
        last: Option<String>,
        code: u16,
        reason: &'static str,
    },
}

async fn serve(state: AppState, auth: AuthUser, mut rooms: Vec<String>, socket: WebSocket) {
    let (mut sink, mut stream) = socket.split();
    let (outbox, mut inbox) = mpsc::channel::<String>(OUTBOX);
    // Closing goes on its own channel: a full outbox must not keep the close from going out.
    let (closer, mut closing) = mpsc::channel::<Out>(1);
    let ending = Arc::new(Ending::default());
    let id = state
        .realtime
        .sockets()
        .ws
        .join(&rooms, outbox.clone(), &ending);
    let session = {
        let ending = Arc::clone(&ending);
        state.realtime.sessions.open(
            &auth.claims,
            Arc::new(move |why| ending.end(Closing::Session(why))),
        )
    };
    let writer = tokio::spawn(async move {
        loop {
            let out = tokio::select! {
                biased;
                Some(out) = closing.recv() => out,
                Some(frame) = inbox.recv() => Out::Frame(frame),
                else => break,
            };
            match out {
                Out::Frame(frame) => {
                    if sink.send(Message::Text(frame.into())).await.is_err() {
                        break;
                    }
                }
                Out::Close { last, code, reason } => {
                    if let Some(last) = last {
                        let _ = sink.send(Message::Text(last.into())).await;
                    }
                    let _ = sink
                        .send(Message::Close(Some(CloseFrame {
                            code,
                            reason: reason.into(),
                        })))
                        .await;
                    break;
                }
            }
        }
    });
    let left = (auth.claims.refused_from() - time::OffsetDateTime::now_utc())
        .max(time::Duration::ZERO)
        .unsigned_abs();
    let expiry = tokio::time::sleep(left);
    tokio::pin!(expiry);
    let close = loop {
        let next = tokio::select! {
            biased;
            () = ending.rung.notified() => break ending.why().map(closing_frame),
            () = &mut expiry => break Some(closing_frame(Closing::Session(Ended::TokenExpired))),
            next = tokio::time::timeout(IDLE, stream.next()) => next,
        };
        let message = match next {
            Err(_) => {
                break Some(Out::Close {
                    last: None,
                    code: close_code::AWAY,
                    reason: "idle for 60 s",
                });
            }
            Ok(Some(Ok(message))) => message,
            Ok(Some(Err(err))) => {
                // tungstenite refuses a frame over the limit before reading it whole.
                let too_large = err.to_string().contains("too long");
                break too_large.then_some(Out::Close {
                    last: None,
                    code: close_code::SIZE,
                    reason: "frames are at most 64 KiB",
                });
            }
            Ok(None) => break None,
        };
        let Message::Text(text) = message else {
            if matches!(message, Message::Close(_)) {
                break None;
            }
            continue;
        };
        let (ack_id, outcome) = handle(&state, &auth, &text).await;
        let outcome = outcome.map(|joined| {
            if let Some(room) = joined {
                let hub = &state.realtime.sockets().ws;
                hub.join_one(id, room, outbox.clone(), &ending);
                if !rooms.iter().any(|r| r == room) {
                    rooms.push(room.to_owned());
                }
            }
        });
        let frame = match (ack_id, &outcome) {
            (Some(id), _) => {
                serde_json::json!({ "event": "ack", "id": id, "data": super::ack_body(&outcome) })
            }
            (None, Err(err)) => {
                serde_json::json!({ "event": "error", "data": super::error_event(err) })
            }
            (None, Ok(())) => continue,
        };
        if let Err(mpsc::error::TrySendError::Full(_)) = outbox.try_send(frame.to_string()) {
            ending.end(Closing::Overflow);
        }
    };
    state.realtime.sockets().ws.leave(id, &rooms);
    state.realtime.sessions.close(&auth.claims, session);
    match close {
        Some(close) => {
            // The writer sends the last frames and the close, then ends.
            let _ = closer.send(close).await;
            let _ = tokio::time::timeout(Duration::from_secs(5), writer).await;
        }
        None => writer.abort(),
    }
}

/// The frames that close a connection for `why`.
fn closing_frame(why: Closing) -> Out {
    match why {
        Closing::Session(ended) => Out::Close {
            last: Some(
                serde_json::json!({ "event": "session:ended", "data": ended.data() }).to_string(),
            ),
            code: close_code::POLICY,
            reason: ended.reason(),
        },
        Closing::Overflow => Out::Close {
            last: None,
            code: close_code::POLICY,
            reason: "too slow: events were not read",
        },
    }
}

/// Handles one frame; answers the ack id the client asked with, if any, and the outcome: a
/// room to join, for a subscription.
async fn handle(
    state: &AppState,
    auth: &AuthUser,
    text: &str,
) -> (Option<u64>, Result<Option<&'static str>, ApiError>) {
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
) -> Result<Option<&'static str>, ApiError> {
    match incoming.event.as_str() {
        "rider:location" => {
            let report: PositionReport = serde_json::from_value(incoming.data)
                .map_err(|err| ApiError::bad_request(err.to_string()))?;
            super::socketio::rider_location(state, auth.claims.clone(), &report)
                .await
                .map(|()| None)
        }
        "ops:subscribe" => super::ops_subscribe(state, auth.claims.clone())
            .await
            .map(|()| Some(crate::ops::ROOM)),
        other => Err(ApiError::bad_request(format!("unknown event {other:?}"))),
    }
}
