//! The plain WebSocket at `/ws?token=...`: the same events as Socket.IO, as
//! `{"event": ..., "data": ...}` JSON text frames, for clients that do not speak Socket.IO.
//!
//! The server closes a connection: when its token is revoked, goes stale or expires (after
//! `session:ended`), on a frame over 64 KiB (1009), after 60 s without a frame from the client
//! (1001), and when the client stops reading so long that its outbox fills up or a write waits
//! 10 s (1008): a client that cannot keep up is told so instead of silently missing events
//! forever.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade, close_code};
use axum::response::Response;
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::sync::mpsc;
use tokio::time::Instant;
use utoipa::IntoParams;

use super::clients::READ_BUFFER;
use super::rooms::{Closing, Ending};
use super::sessions::Ended;
use crate::auth::AuthUser;
use crate::auth::extract::authenticate;
use crate::http::{ApiError, ErrorBody, Query};
use crate::limits::SocketSlot;
use crate::riders::PositionReport;
use crate::state::AppState;

/// Frames waiting for one slow client; when they fill up the connection is closed.
const OUTBOX: usize = 256;
/// The largest frame (and message) a client may send.
pub const MAX_FRAME: usize = 64 * 1024;
/// The largest frame read whole before the connection is closed with 1009. A frame refused
/// before it was read leaves its bytes unread in the socket, and closing a socket with unread
/// bytes makes the kernel answer with a reset, which loses the close frame: so a frame up to
/// this size is read, then refused, and only a larger one is cut short.
const READ_WHOLE: usize = 1024 * 1024;
/// After its close frame, the connection waits this long for the client's, reading and
/// dropping whatever else comes, so that the close is a handshake and not a reset.
const CLOSE_WITHIN: Duration = Duration::from_secs(5);
/// A connection that sends nothing for this long is closed.
const IDLE: Duration = Duration::from_secs(60);
/// A frame the client's socket does not take within this long ends the connection (it stopped
/// reading); the timer only starts when a write has to wait.
const SEND_WITHIN: Duration = Duration::from_secs(10);

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
    let slot = state.limits.open_socket(auth.user.id)?;
    let rooms = super::transport::rooms_of(&state, &auth).await;
    // Before the upgrade is answered: an event sent once the client is connected reaches it.
    state.realtime.listen_to(&rooms).await;
    let conn = Box::new(Conn {
        state,
        auth,
        rooms,
        _slot: slot,
    });
    // tungstenite preallocates a 128 KiB read buffer per connection by default: 2.6 GB for
    // 19 k rider sockets in a load test. Client frames here are position reports of ~100 bytes.
    Ok(upgrade
        .read_buffer_size(READ_BUFFER)
        .max_frame_size(READ_WHOLE)
        .max_message_size(READ_WHOLE)
        .on_upgrade(move |socket| serve(conn, socket)))
}

/// What a connection holds for its life besides its socket, in one box: a task's future
/// stores the values it was handed once per layer of `async` around them (axum's upgrade,
/// an `async fn`'s arguments and their moved copies), which made a connection's task 5 KB,
/// most of it the node's state and the user three times over.
struct Conn {
    state: AppState,
    auth: AuthUser,
    rooms: Vec<String>,
    /// Its place under `limits.sockets_per_user`, given back when the connection ends.
    _slot: SocketSlot,
}

/// A client frame, borrowed from its text: `data` is parsed once, into what its event takes.
#[derive(Debug, Deserialize)]
struct Incoming<'a> {
    #[serde(borrow)]
    event: Cow<'a, str>,
    #[serde(default, borrow)]
    data: Option<&'a RawValue>,
    /// Set by a client that wants the outcome back as `{"event":"ack","id",data}`.
    #[serde(default)]
    id: Option<u64>,
}

/// The last frames before the server closes a connection.
struct Close {
    last: Option<String>,
    code: u16,
    reason: &'static str,
}

/// One task per connection reads frames, answers them and writes the events of its rooms: the
/// ack of a position goes out from where it was decided, with no hop to a writer task.
#[expect(
    clippy::manual_async_fn,
    reason = "an async fn's future keeps its arguments twice (as given and moved); the socket is 368 bytes"
)]
fn serve(mut conn: Box<Conn>, mut socket: WebSocket) -> impl Future<Output = ()> {
    async move {
        let Conn {
            state, auth, rooms, ..
        } = &mut *conn;
        let (state, auth) = (&*state, &*auth);
        let (outbox, mut inbox) = mpsc::channel::<String>(OUTBOX);
        let ending = Arc::new(Ending::default());
        let id = state
            .realtime
            .sockets()
            .ws
            .join(rooms, outbox.clone(), &ending);
        let session = {
            let ending = Arc::clone(&ending);
            state.realtime.sessions.open(
                &auth.claims,
                Arc::new(move |why| ending.end(Closing::Session(why))),
            )
        };
        let left = (auth.claims.refused_from() - time::OffsetDateTime::now_utc())
            .max(time::Duration::ZERO)
            .unsigned_abs();
        let expiry = tokio::time::sleep(left);
        tokio::pin!(expiry);
        // One timer for idleness, re-armed when it fires rather than on every frame.
        let mut heard = Instant::now();
        let idle = tokio::time::sleep(IDLE);
        tokio::pin!(idle);
        let close = loop {
            let next = tokio::select! {
                biased;
                () = ending.rung.notified() => break ending.why().map(closing_frame),
                () = &mut expiry => break Some(closing_frame(Closing::Session(Ended::TokenExpired))),
                () = &mut idle => {
                    if heard.elapsed() >= IDLE {
                        break Some(Close { last: None, code: close_code::AWAY, reason: "idle for 60 s" });
                    }
                    idle.as_mut().reset(heard + IDLE);
                    continue;
                }
                Some(frame) = inbox.recv() => {
                    match send(&mut socket, frame).await {
                        Sent::Yes => continue,
                        Sent::Stuck => break Some(closing_frame(Closing::Overflow)),
                        Sent::Gone => break None,
                    }
                }
                next = socket.next() => next,
            };
            heard = Instant::now();
            let message = match next {
                Some(Ok(message)) if size_of_message(&message) > MAX_FRAME => {
                    break Some(Close {
                        last: None,
                        code: close_code::SIZE,
                        reason: "frames are at most 64 KiB",
                    });
                }
                Some(Ok(message)) => message,
                Some(Err(err)) => {
                    // tungstenite refuses a frame over the limit before reading it whole.
                    let too_large = err.to_string().contains("too long");
                    break too_large.then_some(Close {
                        last: None,
                        code: close_code::SIZE,
                        reason: "frames are at most 64 KiB",
                    });
                }
                None => break None,
            };
            let Message::Text(text) = message else {
                if matches!(message, Message::Close(_)) {
                    break None;
                }
                continue;
            };
            // Boxed: the handler's future is most of this loop's state, and an idle connection
            // (nearly all of them, between positions) should not carry it.
            let (ack_id, outcome) = Box::pin(handle(state, auth, &text)).await;
            if let Ok(Some(room)) = &outcome {
                // Before the ack: an event sent once the client heard it reaches it.
                state.realtime.listen_to(&[(*room).to_owned()]).await;
            }
            let outcome = outcome.map(|joined| {
                if let Some(room) = joined {
                    let hub = &state.realtime.sockets().ws;
                    hub.join_one(id, room, outbox.clone(), &ending);
                    if !rooms.iter().any(|r| r == room) {
                        rooms.push(room.to_owned());
                    }
                }
            });
            let Some(frame) = answer(ack_id, &outcome) else {
                continue;
            };
            match send(&mut socket, frame).await {
                Sent::Yes => {}
                Sent::Stuck => break Some(closing_frame(Closing::Overflow)),
                Sent::Gone => break None,
            }
        };
        state.realtime.sockets().ws.leave(id, rooms);
        state.realtime.sessions.close(&auth.claims, session);
        if let Some(Close { last, code, reason }) = close {
            let goodbye = async {
                if let Some(last) = last {
                    socket.send(Message::Text(last.into())).await?;
                }
                let frame = CloseFrame {
                    code,
                    reason: reason.into(),
                };
                socket.send(Message::Close(Some(frame))).await?;
                // The client's close (or the end of the stream) ends the handshake.
                while let Some(Ok(message)) = socket.next().await {
                    if matches!(message, Message::Close(_)) {
                        break;
                    }
                }
                Ok::<(), axum::Error>(())
            };
            let _ = tokio::time::timeout(CLOSE_WITHIN, goodbye).await;
        }
    }
}

/// The frame answering a client's frame, if it asked for an ack or was refused.
fn answer(ack_id: Option<u64>, outcome: &Result<(), ApiError>) -> Option<String> {
    Some(match (ack_id, outcome) {
        // The common answer, written without building a JSON tree.
        (Some(id), Ok(())) => format!(r#"{{"event":"ack","id":{id},"data":{{"ok":true}}}}"#),
        (Some(id), Err(_)) => {
            serde_json::json!({ "event": "ack", "id": id, "data": super::transport::ack_body(outcome) })
                .to_string()
        }
        (None, Err(err)) => {
            serde_json::json!({ "event": "error", "data": super::transport::error_event(err) }).to_string()
        }
        (None, Ok(())) => return None,
    })
}

/// The bytes a client's message carries.
fn size_of_message(message: &Message) -> usize {
    match message {
        Message::Text(text) => text.len(),
        Message::Binary(bytes) | Message::Ping(bytes) | Message::Pong(bytes) => bytes.len(),
        Message::Close(_) => 0,
    }
}

/// How a write went.
enum Sent {
    Yes,
    /// The client has not taken it within `SEND_WITHIN`.
    Stuck,
    Gone,
}

async fn send(socket: &mut WebSocket, frame: String) -> Sent {
    match tokio::time::timeout(SEND_WITHIN, socket.send(Message::Text(frame.into()))).await {
        Ok(Ok(())) => Sent::Yes,
        Ok(Err(_)) => Sent::Gone,
        Err(_) => Sent::Stuck,
    }
}

/// The frames that close a connection for `why`.
fn closing_frame(why: Closing) -> Close {
    match why {
        Closing::Session(ended) => Close {
            last: Some(
                serde_json::json!({ "event": "session:ended", "data": ended.data() }).to_string(),
            ),
            code: close_code::POLICY,
            reason: ended.reason(),
        },
        Closing::Overflow => Close {
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
    incoming: Incoming<'_>,
) -> Result<Option<&'static str>, ApiError> {
    match incoming.event.as_ref() {
        "rider:location" => {
            let data = incoming.data.map_or("null", RawValue::get);
            let report: PositionReport =
                serde_json::from_str(data).map_err(|err| ApiError::bad_request(err.to_string()))?;
            super::socketio::rider_location(state, auth.claims.clone(), &report)
                .await
                .map(|()| None)
        }
        "ops:subscribe" => super::transport::ops_subscribe(state, auth.claims.clone())
            .await
            .map(|()| Some(crate::ops::ROOM)),
        other => Err(ApiError::bad_request(format!("unknown event {other:?}"))),
    }
}
