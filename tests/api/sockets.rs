//! Socket clients for the realtime tests: the official `socket.io-client` (driven through a small
//! Node.js script) and a plain WebSocket.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

use crate::helpers::TestApp;

/// How long a test waits for an event it expects.
const PATIENCE: Duration = Duration::from_secs(10);

fn client_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/socketio")
}

/// Installs the pinned `socket.io-client` once.
fn ensure_installed() {
    crate::helpers::npm_ci(&client_dir(), "socket.io-client", "the Socket.IO tests");
}

/// A `socket.io-client` connection.
pub struct SocketIoClient {
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::UnboundedReceiver<Value>,
}

impl SocketIoClient {
    /// Connects to the app with `token` (`None`: no auth at all).
    pub fn connect(app: &TestApp, token: Option<&str>) -> Self {
        ensure_installed();
        let mut child = Command::new("node")
            .arg(client_dir().join("client.mjs"))
            .arg(format!("http://{}", app.addr))
            .arg(token.unwrap_or("-"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("node is needed for the Socket.IO tests");
        let stdout = child.stdout.take().expect("stdout");
        let stdin = child.stdin.take().expect("stdin");
        let (tx, lines) = mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Ok(value) = serde_json::from_str(&line) {
                    let _ = tx.send(value);
                }
            }
        });
        Self {
            child,
            stdin,
            lines,
        }
    }

    /// The next line matching `pred`, skipping others; panics after [`PATIENCE`].
    pub async fn next(&mut self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            match tokio::time::timeout_at(deadline, self.lines.recv()).await {
                Ok(Some(line)) if pred(&line) => return line,
                Ok(Some(_)) => continue,
                Ok(None) => panic!("the client exited while waiting for {what}"),
                Err(_) => panic!("no {what} within {PATIENCE:?}"),
            }
        }
    }

    /// Waits for the connection to be accepted.
    pub async fn connected(&mut self) {
        let line = self
            .next("connect", |l| {
                l["type"] == "connect" || l["type"] == "connect_error"
            })
            .await;
        assert_eq!(line["type"], "connect", "{line}");
    }

    /// The data of the next `event`.
    pub async fn event(&mut self, event: &str) -> Value {
        self.next(event, |l| l["type"] == "event" && l["event"] == event)
            .await["data"]
            .clone()
    }

    /// The data of the next `event` whose data passes `pred`.
    pub async fn event_where(&mut self, event: &str, pred: impl Fn(&Value) -> bool) -> Value {
        self.next(event, |l| {
            l["type"] == "event" && l["event"] == event && pred(&l["data"])
        })
        .await["data"]
            .clone()
    }

    /// How many `event`s arrive within `window`.
    pub async fn count(&mut self, event: &str, window: Duration) -> usize {
        let deadline = tokio::time::Instant::now() + window;
        let mut count = 0;
        while let Ok(Some(line)) = tokio::time::timeout_at(deadline, self.lines.recv()).await {
            if line["type"] == "event" && line["event"] == event {
                count += 1;
            }
        }
        count
    }

    pub fn emit(&mut self, event: &str, data: Value) {
        let line = json!({ "emit": event, "data": data }).to_string();
        writeln!(self.stdin, "{line}").expect("write to client");
    }
}

impl Drop for SocketIoClient {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A plain WebSocket connection to `/ws`.
pub struct WsClient {
    stream: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
}

impl WsClient {
    /// Connects; the handshake's HTTP status on refusal.
    pub async fn connect(app: &TestApp, token: &str) -> Result<Self, u16> {
        let url = format!("ws://{}/ws?token={token}", app.addr);
        match tokio_tungstenite::connect_async(url).await {
            Ok((stream, _)) => Ok(Self { stream }),
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                Err(response.status().as_u16())
            }
            Err(err) => panic!("websocket connect failed: {err}"),
        }
    }

    pub async fn send(&mut self, event: &str, data: Value) {
        self.send_raw(json!({ "event": event, "data": data })).await;
    }

    pub async fn send_raw(&mut self, frame: Value) {
        let frame = frame.to_string();
        self.stream.send(Message::text(frame)).await.expect("send");
    }

    /// The data of the acknowledgement with this id.
    pub async fn ack(&mut self, id: u64) -> Value {
        loop {
            let ack = self.frame("ack").await;
            if ack["id"] == id {
                return ack["data"].clone();
            }
        }
    }

    /// Sends a WebSocket ping (which counts as traffic: the connection is not idle).
    pub async fn ping(&mut self) {
        self.stream
            .send(Message::Ping(Vec::new().into()))
            .await
            .expect("ping");
    }

    /// Sends one text frame as it is.
    pub async fn send_text(&mut self, text: String) {
        self.stream.send(Message::text(text)).await.expect("send");
    }

    /// Waits for the server's close frame; its code.
    pub async fn closed(&mut self) -> u16 {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            match tokio::time::timeout_at(deadline, self.stream.next())
                .await
                .unwrap_or_else(|_| panic!("no close within {PATIENCE:?}"))
            {
                Some(Ok(Message::Close(frame))) => {
                    return frame.map_or(1005, |frame| u16::from(frame.code));
                }
                Some(Ok(_)) => continue,
                Some(Err(err)) => panic!("the connection broke without a close frame: {err}"),
                None => panic!("the connection ended without a close frame"),
            }
        }
    }

    /// The data of the next frame carrying `event`.
    pub async fn event(&mut self, event: &str) -> Value {
        self.frame(event).await["data"].clone()
    }

    /// The next whole frame carrying `event`.
    pub async fn frame(&mut self, event: &str) -> Value {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let frame = tokio::time::timeout_at(deadline, self.stream.next())
                .await
                .unwrap_or_else(|_| panic!("no {event} within {PATIENCE:?}"))
                .expect("stream open")
                .expect("frame");
            if let Message::Text(text) = frame {
                let value: Value = serde_json::from_str(&text).expect("JSON frame");
                if value["event"] == event {
                    return value;
                }
            }
        }
    }
}
