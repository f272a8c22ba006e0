//! The Socket.IO namespace `/`: authentication at connect (`auth: {token}`; a bad token gets
//! `connect_error`), the rooms, and the client event `rider:location`. A refused message is
//! answered with an `error` event `{code, message}`; the connection stays. A client that asks
//! for an acknowledgement gets `{ok: true}` or `{error: {code, message}}` through it.
//! Also [`own_head`], which keeps a connection's request head from pinning its read buffer.

use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, Uri};
use serde::Deserialize;
use socketioxide::extract::{AckSender, SocketRef, TryData};
use socketioxide::handler::ConnectHandler;
use tomato_domain::Role;

use std::sync::Arc;

use super::sessions::{Ended, Ender};
use crate::auth::extract::{authenticate, still_valid};
use crate::auth::{AuthUser, Claims};
use crate::http::ApiError;
use crate::limits::SocketSlot;
use crate::riders::{PositionReport, apply_position};
use crate::state::AppState;

/// Where socketioxide serves (its default path).
const PATH: &str = "/socket.io";

/// socketioxide keeps each connection's request head for as long as the connection lives, and
/// hyper's header values and URI are views into the read buffer the request came in: kept, they
/// keep that whole buffer alive (16 KiB per Socket.IO rider in a heap profile, half of its
/// memory). A Socket.IO request's head gets its own copies of them, a few hundred bytes.
pub(crate) fn own_head(mut request: Request) -> Request {
    if !request.uri().path().starts_with(PATH) {
        return request;
    }
    let mut headers = HeaderMap::with_capacity(request.headers().len());
    for (name, value) in request.headers() {
        // A name is copied when parsed; a value, once valid, stays valid.
        let mut copy = HeaderValue::from_bytes(value.as_bytes()).unwrap_or_else(|_| value.clone());
        copy.set_sensitive(value.is_sensitive());
        headers.append(name.clone(), copy);
    }
    *request.headers_mut() = headers;
    if let Ok(uri) = Uri::try_from(request.uri().to_string()) {
        *request.uri_mut() = uri;
    }
    request
}

/// What `socket.io-client` sends as `auth`.
#[derive(Debug, Deserialize)]
struct SocketAuth {
    token: String,
}

/// The rooms a connection joins, found when it is authenticated.
#[derive(Debug, Clone)]
struct Rooms(Vec<String>);

/// Why a connection was refused; its text is what the client's `connect_error` carries.
#[derive(Debug)]
struct Refused(String);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

pub(super) fn attach(state: &AppState) {
    let for_auth = state.clone();
    let authenticate_socket = move |socket: SocketRef, TryData(auth): TryData<SocketAuth>| {
        let state = for_auth.clone();
        async move {
            let auth = auth.map_err(|_| Refused("unauthenticated: pass auth: {token}".into()))?;
            let refused = |err: ApiError| Refused(format!("{}: {}", err.code(), err.message()));
            let user = authenticate(&state, &auth.token).await.map_err(refused)?;
            let slot = state.limits.open_socket(user.user.id).map_err(refused)?;
            // Given back when the socket disconnects (or, refused later, is dropped).
            socket
                .extensions
                .insert(Arc::new(std::sync::Mutex::new(Some(slot))));
            // Before the connect is answered: an event sent once the client is connected
            // reaches it.
            let rooms = super::transport::rooms_of(&state, &user).await;
            state.realtime.listen_to(&rooms).await;
            socket.extensions.insert(Rooms(rooms));
            socket.extensions.insert(user);
            Ok::<(), Refused>(())
        }
    };
    let for_connect = state.clone();
    let on_connect = move |socket: SocketRef| {
        let state = for_connect.clone();
        async move {
            let Some(auth) = socket.extensions.get::<AuthUser>() else {
                socket.disconnect().ok();
                return;
            };
            if let Some(Rooms(rooms)) = socket.extensions.get::<Rooms>() {
                for room in rooms {
                    socket.join(room);
                }
            }
            watch_session(&state, &socket, auth.claims);
            let on_subscribe = state.clone();
            socket.on("ops:subscribe", move |socket: SocketRef, ack: AckSender| {
                let state = on_subscribe.clone();
                async move {
                    let outcome = match socket.extensions.get::<AuthUser>() {
                        Some(auth) => super::transport::ops_subscribe(&state, auth.claims).await,
                        None => Err(ApiError::unauthorized(
                            "unauthenticated",
                            "this connection is not authenticated",
                        )),
                    };
                    if outcome.is_ok() {
                        state
                            .realtime
                            .listen_to(&[crate::ops::ROOM.to_owned()])
                            .await;
                        socket.join(crate::ops::ROOM);
                    }
                    let _ = ack.send(&super::transport::ack_body(&outcome));
                    if let Err(err) = outcome {
                        let _ = socket.emit("error", &super::transport::error_event(&err));
                    }
                }
            });
            let on_location = state.clone();
            socket.on(
                "rider:location",
                move |socket: SocketRef,
                      TryData(report): TryData<PositionReport>,
                      ack: AckSender| {
                    let state = on_location.clone();
                    async move {
                        let outcome = match (socket.extensions.get::<AuthUser>(), report) {
                            (Some(auth), Ok(report)) => {
                                rider_location(&state, auth.claims, &report).await
                            }
                            (_, Err(err)) => Err(ApiError::bad_request(format!(
                                "rider:location takes {{lat, lon, heading?, speedMps?, at?}}: {err}"
                            ))),
                            (None, _) => Err(ApiError::unauthorized(
                                "unauthenticated",
                                "this connection is not authenticated",
                            )),
                        };
                        // A client that asked for an ack (`emitWithAck`) learns the outcome
                        // there; the `error` event stays for clients that did not ask.
                        let _ = ack.send(&super::transport::ack_body(&outcome));
                        if let Err(err) = outcome {
                            let _ = socket.emit("error", &super::transport::error_event(&err));
                        }
                    }
                },
            );
        }
    };
    state
        .realtime
        .sockets()
        .io
        .ns("/", on_connect.with(authenticate_socket));
}

/// Registers the socket's session: it is sent `session:ended` and disconnected when its token
/// is revoked, goes stale or expires.
fn watch_session(state: &AppState, socket: &SocketRef, claims: Claims) {
    let ending = socket.clone();
    let end: Ender = Arc::new(move |why: Ended| {
        let _ = ending.emit("session:ended", &why.data());
        let _ = ending.clone().disconnect();
    });
    let sessions = Arc::clone(&state.realtime.sessions);
    let id = sessions.open(&claims, Arc::clone(&end));
    let left = (claims.refused_from() - time::OffsetDateTime::now_utc()).max(time::Duration::ZERO);
    let expiry = tokio::spawn(async move {
        tokio::time::sleep(left.unsigned_abs()).await;
        end(Ended::TokenExpired);
    })
    .abort_handle();
    let slot = socket
        .extensions
        .get::<Arc<std::sync::Mutex<Option<SocketSlot>>>>();
    socket.on_disconnect(move || {
        expiry.abort();
        sessions.close(&claims, id);
        if let Some(slot) = &slot
            && let Ok(mut slot) = slot.lock()
        {
            slot.take();
        }
        std::future::ready(())
    });
}

/// `rider:location` from a socket: the same as `PUT /api/rider/location`, judged by the
/// connection's token as it stands now (revoked, stale or expired tokens are refused, and the
/// user's current role decides).
pub(super) async fn rider_location(
    state: &AppState,
    claims: Claims,
    report: &PositionReport,
) -> Result<(), ApiError> {
    let auth = still_valid(state, claims).await?;
    if auth.user.role != Role::Rider {
        return Err(ApiError::forbidden(
            "rider:location is for users with role rider",
        ));
    }
    apply_position(state, &auth, report).await
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::body::Bytes;

    use super::*;

    /// A request whose header value and URI are views into `buffer`, as hyper parses them.
    fn parsed_from(buffer: &Bytes, path: &str) -> Request {
        let mut request = Request::new(Body::empty());
        *request.uri_mut() =
            Uri::from_maybe_shared(buffer.slice_ref(&buffer[..path.len()])).expect("uri");
        let value = &buffer[path.len()..];
        request.headers_mut().insert(
            "user-agent",
            HeaderValue::from_maybe_shared(buffer.slice_ref(value)).expect("value"),
        );
        request
    }

    fn inside(buffer: &Bytes, bytes: &[u8]) -> bool {
        buffer.as_ptr_range().contains(&bytes.as_ptr())
    }

    #[test]
    fn a_socket_io_head_stops_pointing_into_the_read_buffer() {
        let path = "/socket.io/?EIO=4&transport=websocket";
        let buffer = Bytes::from(format!("{path}rider-app/1.0"));
        let owned = own_head(parsed_from(&buffer, path));
        assert_eq!(owned.uri().to_string(), path);
        assert_eq!(owned.headers()["user-agent"], "rider-app/1.0");
        assert!(!inside(&buffer, owned.headers()["user-agent"].as_bytes()));
        assert!(!inside(&buffer, owned.uri().path().as_bytes()));

        let other = "/api/rider/location";
        let buffer = Bytes::from(format!("{other}rider-app/1.0"));
        let untouched = own_head(parsed_from(&buffer, other));
        assert!(
            inside(&buffer, untouched.headers()["user-agent"].as_bytes()),
            "other requests are left as they are"
        );
    }
}
