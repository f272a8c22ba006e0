//! One rider's or seller's realtime connection: Socket.IO v4 over its WebSocket transport, or
//! the node's plain `/ws`, behind one interface (send an acknowledged position, read events and
//! acks).
//!
//! The Engine.IO/Socket.IO framing is written here rather than taken from a Socket.IO client
//! crate because the harness must choose each connection's source address (spreading tens of
//! thousands of sockets over 127.0.0.x) and keep a connection down to one task and a few
//! kilobytes; the framing it needs is five packet kinds.

use std::net::{IpAddr, SocketAddr};

use anyhow::{Context, bail};
use futures_util::{SinkExt, StreamExt};
use reqwest::Url;
use serde_json::{Value, json};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// Read buffer per connection; frames from the node are a few hundred bytes.
const READ_BUFFER: usize = 4 * 1024;

use crate::city::Point;
use crate::cli::Transport;

/// Something the node sent.
#[derive(Debug, Clone, PartialEq)]
pub enum Incoming {
    /// A server event and its data.
    Event(String, Value),
    /// The answer to the client message with this id.
    Ack(u64, Value),
}

/// An open, authenticated connection.
#[derive(Debug)]
pub struct Conn {
    socketio: bool,
    ws: WebSocketStream<TcpStream>,
    /// When this client last sent a frame: the node closes a `/ws` connection silent for 60 s.
    last_sent: tokio::time::Instant,
}

/// How often a plain WebSocket client that has nothing to say pings the node.
const KEEPALIVE: std::time::Duration = std::time::Duration::from_secs(25);

/// Where connections go and come from.
#[derive(Debug, Clone)]
pub struct Dialer {
    base: Url,
    server: SocketAddr,
    /// Loopback source addresses to spread connections over; empty: let the OS choose.
    sources: Vec<IpAddr>,
}

impl Dialer {
    /// Resolves the node once; on a loopback IPv4 target, sources are 127.0.0.1 ..= 127.0.0.n.
    pub async fn new(base: &Url, source_addrs: u8) -> anyhow::Result<Self> {
        let host = base.host_str().context("target has no host")?;
        let port = base.port_or_known_default().context("target has no port")?;
        let server = tokio::net::lookup_host((host, port))
            .await?
            .min_by_key(|a| !a.is_ipv4())
            .with_context(|| format!("{host} does not resolve"))?;
        let sources = match server.ip() {
            IpAddr::V4(ip) if ip.is_loopback() => (1..=source_addrs)
                .map(|n| IpAddr::from([127, 0, 0, n]))
                .collect(),
            _ => Vec::new(),
        };
        Ok(Self {
            base: base.clone(),
            server,
            sources,
        })
    }

    /// A TCP connection for the `n`th client, from its source address.
    pub async fn tcp(&self, n: usize) -> std::io::Result<TcpStream> {
        let socket = if self.server.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        if !self.sources.is_empty() {
            socket.bind(SocketAddr::new(self.sources[n % self.sources.len()], 0))?;
        }
        socket.set_nodelay(true)?;
        socket.connect(self.server).await
    }

    /// Connects the `n`th client with `token`.
    pub async fn connect(&self, kind: Transport, token: &str, n: usize) -> anyhow::Result<Conn> {
        let stream = self.tcp(n).await?;
        let host = self.base.host_str().unwrap_or("127.0.0.1");
        let port = self.server.port();
        let url = match kind {
            Transport::Socketio => {
                format!("ws://{host}:{port}/socket.io/?EIO=4&transport=websocket")
            }
            Transport::Ws | Transport::Http => format!("ws://{host}:{port}/ws?token={token}"),
        };
        // A small read buffer: the default 128 KiB per connection is gigabytes at this scale.
        let config = WebSocketConfig::default().read_buffer_size(READ_BUFFER);
        let (ws, _) = tokio_tungstenite::client_async_with_config(url, stream, Some(config))
            .await
            .context("websocket handshake")?;
        let mut conn = Conn {
            socketio: kind == Transport::Socketio,
            ws,
            last_sent: tokio::time::Instant::now(),
        };
        if conn.socketio {
            conn.socketio_handshake(token).await?;
        }
        Ok(conn)
    }
}

impl Conn {
    /// Engine.IO open, then the namespace connect with `auth: {token}`.
    async fn socketio_handshake(&mut self, token: &str) -> anyhow::Result<()> {
        let open = self.text().await?;
        if !open.starts_with('0') {
            bail!("expected an Engine.IO open packet, got {open:?}");
        }
        self.ws
            .send(Message::text(format!("40{}", json!({ "token": token }))))
            .await?;
        loop {
            let packet = self.text().await?;
            if packet.starts_with("40") {
                return Ok(());
            }
            if let Some(refusal) = packet.strip_prefix("44") {
                bail!("connect_error {refusal}");
            }
            if packet == "2" {
                self.ws.send(Message::text("3")).await?;
            }
        }
    }

    async fn text(&mut self) -> anyhow::Result<String> {
        loop {
            match self.ws.next().await.context("connection closed")?? {
                Message::Text(text) => return Ok(text.to_string()),
                Message::Close(_) => bail!("connection closed"),
                _ => {}
            }
        }
    }

    /// Sends a position as `rider:location`, asking for an acknowledgement with `id`.
    pub async fn send_location(&mut self, id: u64, at: Point) -> anyhow::Result<()> {
        let data = at.json();
        let frame = if self.socketio {
            format!("42{id}{}", json!(["rider:location", data]))
        } else {
            json!({ "event": "rider:location", "id": id, "data": data }).to_string()
        };
        self.ws.send(Message::text(frame)).await?;
        self.last_sent = tokio::time::Instant::now();
        Ok(())
    }

    /// The next event or ack; `None` when the node closed the connection. Engine.IO pings are
    /// answered here.
    pub async fn next(&mut self) -> Option<anyhow::Result<Incoming>> {
        loop {
            // A listening client (a seller, a customer) still speaks now and then: a plain
            // WebSocket that sends nothing for 60 s is closed by the node. (Socket.IO has its
            // own heartbeat, answered below.)
            let ping_at = self.last_sent + KEEPALIVE;
            let received = if self.socketio {
                self.ws.next().await
            } else {
                match tokio::time::timeout_at(ping_at, self.ws.next()).await {
                    Ok(received) => received,
                    Err(_) => {
                        if let Err(err) = self.ws.send(Message::Ping(Vec::new().into())).await {
                            return Some(Err(err.into()));
                        }
                        self.last_sent = tokio::time::Instant::now();
                        continue;
                    }
                }
            };
            let text = match received? {
                Ok(Message::Text(text)) => text,
                Ok(Message::Close(_)) => return None,
                Ok(_) => continue,
                Err(err) => return Some(Err(err.into())),
            };
            if !self.socketio {
                return parse_ws(&text).map(Ok);
            }
            if text.as_str() == "2" {
                if let Err(err) = self.ws.send(Message::text("3")).await {
                    return Some(Err(err.into()));
                }
                continue;
            }
            if text.as_str() == "41" || text.as_str() == "1" {
                return None;
            }
            if let Some(incoming) = parse_socketio(&text) {
                return Some(Ok(incoming));
            }
        }
    }
}

/// `{"event","data"}` or `{"event":"ack","id","data"}`.
fn parse_ws(text: &str) -> Option<Incoming> {
    let mut frame: Value = serde_json::from_str(text).ok()?;
    let data = frame["data"].take();
    match frame["event"].as_str()? {
        "ack" => Some(Incoming::Ack(frame["id"].as_u64()?, data)),
        event => Some(Incoming::Event(event.to_owned(), data)),
    }
}

/// `42[event, data]`, `42<id>[event, data]` or `43<id>[data]` on the default namespace.
fn parse_socketio(text: &str) -> Option<Incoming> {
    let (kind, rest) = (text.get(..2)?, text.get(2..)?);
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    let id = rest[..digits].parse::<u64>().ok();
    let mut args: Value = serde_json::from_str(&rest[digits..]).ok()?;
    match kind {
        "42" => {
            let event = args[0].as_str()?.to_owned();
            Some(Incoming::Event(event, args[1].take()))
        }
        "43" => Some(Incoming::Ack(id?, args[0].take())),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socketio_packets_parse() {
        assert_eq!(
            parse_socketio(r#"42["order:available",{"orderId":"o1"}]"#),
            Some(Incoming::Event(
                "order:available".into(),
                json!({ "orderId": "o1" })
            ))
        );
        assert_eq!(
            parse_socketio(r#"4317[{"ok":true}]"#),
            Some(Incoming::Ack(17, json!({ "ok": true })))
        );
        assert_eq!(
            parse_socketio(r#"43[{"ok":true}]"#),
            None,
            "an ack needs an id"
        );
        assert_eq!(parse_socketio("40"), None);
    }

    #[test]
    fn ws_frames_parse() {
        assert_eq!(
            parse_ws(r#"{"event":"ack","id":3,"data":{"ok":true}}"#),
            Some(Incoming::Ack(3, json!({ "ok": true })))
        );
        assert_eq!(
            parse_ws(r#"{"event":"order:new","data":{"order":{}}}"#),
            Some(Incoming::Event("order:new".into(), json!({ "order": {} })))
        );
        assert_eq!(parse_ws("not json"), None);
    }
}
