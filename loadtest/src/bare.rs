//! The ceiling of the stack: a server the harness starts in-process on the same axum, WebSocket
//! and Socket.IO stack as tomato, speaking the same frames, events and requests, that does only
//! what every server must — read the frame, parse the JSON, check the token, answer — with no
//! index, no actors and no store. What it sustains on this machine is the most tomato could;
//! `geo-compare` prints every tomato figure as a fraction of it.

use std::net::SocketAddr;

use axum::Router;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use std::borrow::Cow;

use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::json;
use serde_json::value::RawValue;
use socketioxide::SocketIo;
use socketioxide::extract::{AckSender, SocketRef, TryData};
use socketioxide::handler::ConnectHandler;
use tokio::task::JoinHandle;

/// The one token the bare server accepts.
pub const TOKEN: &str = "bare-ceiling-token";
/// The WebSocket read buffer of both transports, as tomato sets it (tungstenite's default is
/// 128 KiB, most of a connection's memory).
const READ_BUFFER: usize = 512;

/// A running bare server; stopped when dropped.
#[derive(Debug)]
pub struct Bare {
    pub addr: SocketAddr,
    running: Running,
}

#[derive(Debug)]
enum Running {
    /// In this process (the harness used as a library, as the tests do).
    Task(JoinHandle<()>),
    /// A `tomato-load bare-server` process, killed on drop.
    Process(tokio::process::Child),
}

impl Drop for Bare {
    fn drop(&mut self) {
        if let Running::Task(task) = &self.running {
            task.abort();
        }
    }
}

impl Bare {
    /// Whether it runs in this process (then it holds the server end of each socket here).
    pub fn in_process(&self) -> bool {
        matches!(self.running, Running::Task(_))
    }

    /// Its process, when it has one of its own.
    pub fn pid(&self) -> Option<u32> {
        match &self.running {
            Running::Task(_) => None,
            Running::Process(child) => child.id(),
        }
    }
}

/// The bare server where it measures fairly: in a process of its own when this is the
/// `tomato-load` binary (like the node, it then has its own open-file limit, and one socket per
/// rider on each end fits), else in this process.
pub async fn spawn() -> anyhow::Result<Bare> {
    let me = std::env::current_exe()?;
    if me.file_stem().and_then(|s| s.to_str()) != Some("tomato-load") {
        return start().await;
    }
    use tokio::io::AsyncBufReadExt;
    let mut child = tokio::process::Command::new(me)
        .arg("bare-server")
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| anyhow::anyhow!("no stdout"))?;
    let mut line = String::new();
    tokio::io::BufReader::new(stdout)
        .read_line(&mut line)
        .await?;
    let addr = line
        .trim()
        .parse()
        .map_err(|err| anyhow::anyhow!("bare-server printed {line:?}: {err}"))?;
    Ok(Bare {
        addr,
        running: Running::Process(child),
    })
}

#[derive(Debug, Deserialize)]
struct WsQuery {
    token: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Frame<'a> {
    #[serde(borrow)]
    event: Cow<'a, str>,
    #[serde(default, borrow)]
    data: Option<&'a RawValue>,
    id: Option<u64>,
}

#[derive(Debug, Deserialize)]
struct SocketAuth {
    token: String,
}

#[derive(Debug, Deserialize)]
struct Position {
    lat: f64,
    lon: f64,
}

#[derive(Debug, Deserialize)]
struct Nearby {
    lat: f64,
    lon: f64,
    radius: Option<f64>,
    limit: Option<u32>,
}

/// Starts the bare server on a free loopback port.
pub async fn start() -> anyhow::Result<Bare> {
    // One socket per rider: as many open files as the hard limit allows.
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    // Socket.IO configured as tomato's is (the same small WebSocket read buffer as `/ws`).
    let (socket_io, io) = SocketIo::builder()
        .ws_read_buffer_size(READ_BUFFER)
        .build_layer();
    io.ns("/", on_socket_io.with(socket_io_token));
    let app = Router::new()
        .route("/ws", get(upgrade))
        .route("/api/rider/location", put(location))
        .route("/api/rider/nearby", get(nearby))
        .with_state(())
        .layer(socket_io);
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(Bare {
        addr,
        running: Running::Task(task),
    })
}

fn authorised(headers: &HeaderMap) -> bool {
    headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        == Some(TOKEN)
}

/// A position is two finite coordinates in range, as tomato checks them.
fn valid(p: &Position) -> bool {
    p.lat.is_finite() && p.lon.is_finite() && p.lat.abs() <= 90.0 && p.lon.abs() <= 180.0
}

async fn upgrade(
    State(()): State<()>,
    Query(query): Query<WsQuery>,
    ws: WebSocketUpgrade,
) -> Response {
    if query.token.as_deref() != Some(TOKEN) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    // Configured as tomato's `/ws` configures its sockets (a 512-byte read buffer rather than
    // tungstenite's 128 KiB, 64 KiB frames), so memory per connection compares too.
    ws.read_buffer_size(READ_BUFFER)
        .max_frame_size(64 * 1024)
        .max_message_size(64 * 1024)
        .on_upgrade(serve)
        .into_response()
}

/// One task per connection, as tomato's `/ws` has: read a frame, parse it, answer on the same
/// task. The common answer is written without building a JSON tree.
async fn serve(mut socket: WebSocket) {
    while let Some(Ok(message)) = socket.next().await {
        let Message::Text(text) = message else {
            continue;
        };
        let answer = match serde_json::from_str::<Frame>(&text) {
            Ok(frame) if frame.event == "rider:location" => {
                let data = frame.data.map_or("null", RawValue::get);
                let ok = serde_json::from_str::<Position>(data).is_ok_and(|p| valid(&p));
                match (frame.id, ok) {
                    (Some(id), true) => {
                        format!(r#"{{"event":"ack","id":{id},"data":{{"ok":true}}}}"#)
                    }
                    (id, true) => {
                        json!({ "event": "ack", "id": id, "data": { "ok": true } }).to_string()
                    }
                    (id, false) => {
                        json!({ "event": "ack", "id": id, "data": position_refused() }).to_string()
                    }
                }
            }
            _ => json!({ "event": "error", "data": { "code": "invalid_input" } }).to_string(),
        };
        if socket.send(Message::Text(answer.into())).await.is_err() {
            break;
        }
    }
}

/// The ack of a position that is not two finite coordinates in range, on both transports.
fn position_refused() -> serde_json::Value {
    json!({ "error": { "code": "invalid_input", "message": "bad position" } })
}

/// The Socket.IO connect check: the token in `auth: {token}`, where tomato checks its JWT.
async fn socket_io_token(TryData(auth): TryData<SocketAuth>) -> Result<(), &'static str> {
    match auth {
        Ok(auth) if auth.token == TOKEN => Ok(()),
        _ => Err("unauthenticated"),
    }
}

/// A Socket.IO rider: `rider:location` answered on its ack, as tomato answers it.
async fn on_socket_io(socket: SocketRef) {
    socket.on(
        "rider:location",
        async |TryData(position): TryData<Position>, ack: AckSender| {
            let answer = match position {
                Ok(p) if valid(&p) => json!({ "ok": true }),
                _ => position_refused(),
            };
            let _ = ack.send(&answer);
        },
    );
}

async fn location(headers: HeaderMap, body: axum::body::Bytes) -> StatusCode {
    if !authorised(&headers) {
        return StatusCode::UNAUTHORIZED;
    }
    match serde_json::from_slice::<Position>(&body) {
        Ok(p) if valid(&p) => StatusCode::NO_CONTENT,
        _ => StatusCode::BAD_REQUEST,
    }
}

async fn nearby(headers: HeaderMap, Query(query): Query<Nearby>) -> Response {
    if !authorised(&headers) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let inside = query.lat.abs() <= 90.0 && query.lon.abs() <= 180.0;
    let sane = query.radius.is_none_or(|r| r > 0.0) && query.limit.is_none_or(|l| l > 0);
    if !(inside && sane) {
        return StatusCode::BAD_REQUEST.into_response();
    }
    axum::Json(json!({ "riders": [] })).into_response()
}
