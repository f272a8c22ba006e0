//! The history a run records for the checker: every order operation the harness makes (place,
//! pay, a seller's or rider's status step, an accept, a cancellation) as one JSON line when it
//! is invoked and one when it completes — `ok` (2xx), `fail` (a definite 4xx: it did not
//! happen) or `info` (a timeout, a reset, a 5xx, a key still running: it may or may not have
//! happened) — with the node it went to, the caller, times since the run's start, and the ids
//! its answer named. `check.rs` reads it back.

use std::fs::File;
use std::hash::{Hash, Hasher};
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use base64::Engine;
use reqwest::Method;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// What an event says of its operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Invoke,
    Ok,
    Fail,
    Info,
}

/// The operations the checker reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    /// `POST /api/order/new`.
    Place,
    /// `POST /api/payment/verify`.
    Pay,
    /// `PUT /api/order/{id}` (the seller's step, or the seller's cancellation).
    SellerStatus,
    /// `POST /api/rider/orders/{id}/accept`.
    Accept,
    /// `PUT /api/rider/orders/{id}/status`.
    RiderStatus,
    /// `POST /api/order/{id}/cancel` (the customer's).
    Cancel,
}

impl Op {
    /// The operation a call is, if the checker reads it, and the order it names in its path.
    pub fn of(method: &Method, path: &str) -> Option<(Op, Option<String>)> {
        let path = path.split('?').next().unwrap_or(path);
        let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
        let id = |i: usize| parts.get(i).map(|s| (*s).to_owned());
        match (method.as_str(), parts.as_slice()) {
            ("POST", ["api", "order", "new"]) => Some((Op::Place, None)),
            ("POST", ["api", "payment", "verify"]) => Some((Op::Pay, None)),
            ("PUT", ["api", "order", _]) => Some((Op::SellerStatus, id(2))),
            ("POST", ["api", "order", _, "cancel"]) => Some((Op::Cancel, id(2))),
            ("POST", ["api", "rider", "orders", _, "accept"]) => Some((Op::Accept, id(3))),
            ("PUT", ["api", "rider", "orders", _, "status"]) => Some((Op::RiderStatus, id(3))),
            _ => None,
        }
    }
}

/// One line of the history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    /// The operation's number: its invoke and its completion share it.
    pub op: u64,
    #[serde(rename = "type")]
    pub kind: Kind,
    pub f: Op,
    /// The node's address it went to.
    pub node: String,
    /// The caller's user id (from its token).
    pub who: String,
    /// Milliseconds since the run started.
    pub at_ms: u64,
    /// The order it names (its path or body), or that its answer named.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order: Option<String>,
    /// The status a step asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// The order's rider in an ok answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rider: Option<String>,
    /// The HTTP status of the answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// The error code of a refusal, or what cut the call (`timeout`, `connect`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// A hash of the answer's body: two answers to one key must be the same bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answer: Option<u64>,
}

/// The outcome of a call, as the history records it.
#[derive(Debug, Clone, Copy)]
pub enum Outcome<'a> {
    /// An HTTP answer: its status and its body.
    Answered(u16, &'a [u8]),
    /// No answer: what cut the call.
    Cut(&'a str),
}

/// The error codes of a 4xx that do not prove the operation did not happen.
const UNDECIDED_CODES: [&str; 1] = ["idempotency_key_in_use"];

/// The file a run writes its history to, one line per event.
#[derive(Debug)]
pub struct Recorder {
    out: Mutex<BufWriter<File>>,
    next: AtomicU64,
    started: Instant,
}

impl Recorder {
    pub fn create(path: &Path) -> std::io::Result<Recorder> {
        Ok(Recorder {
            out: Mutex::new(BufWriter::new(File::create(path)?)),
            next: AtomicU64::new(1),
            started: Instant::now(),
        })
    }

    /// Records the invoke of a call the checker reads; its number for [`Recorder::completed`].
    pub fn invoked(&self, call: &Call<'_>) -> Option<u64> {
        let op = self.next.fetch_add(1, Ordering::Relaxed);
        let event = self.event(op, Kind::Invoke, call)?;
        self.write(&event);
        Some(op)
    }

    /// What every event of `call` says: the operation, the node, the caller, the order its
    /// path or body names, the status asked for, the key; now.
    fn event(&self, op: u64, kind: Kind, call: &Call<'_>) -> Option<Event> {
        let (f, in_path) = Op::of(call.method, call.path)?;
        Some(Event {
            op,
            kind,
            f,
            node: call.node.to_owned(),
            who: call.token.and_then(user_of).unwrap_or_default(),
            at_ms: self.now_ms(),
            order: in_path.or_else(|| {
                call.body
                    .and_then(|b| b["orderId"].as_str())
                    .map(str::to_owned)
            }),
            value: call
                .body
                .and_then(|b| b["status"].as_str())
                .map(str::to_owned),
            key: call.key.map(str::to_owned),
            rider: None,
            status: None,
            code: None,
            answer: None,
        })
    }

    /// Records how call `op` (from [`Recorder::invoked`]) ended.
    pub fn completed(&self, op: u64, call: &Call<'_>, outcome: Outcome<'_>) {
        let Some(mut event) = self.event(op, Kind::Info, call) else {
            return;
        };
        match outcome {
            Outcome::Cut(what) => event.code = Some(what.to_owned()),
            Outcome::Answered(status, body) => {
                let value: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
                let mut hasher = std::collections::hash_map::DefaultHasher::new();
                body.hash(&mut hasher);
                event.status = Some(status);
                event.answer = Some(hasher.finish());
                let code = value["error"]["code"].as_str().map(str::to_owned);
                event.kind = match status {
                    200..=299 => Kind::Ok,
                    400..=499
                        if !code
                            .as_deref()
                            .is_some_and(|c| UNDECIDED_CODES.contains(&c)) =>
                    {
                        Kind::Fail
                    }
                    _ => Kind::Info,
                };
                event.code = code;
                let order = &value["order"];
                if let Some(id) = order["id"].as_str() {
                    event.order = Some(id.to_owned());
                }
                event.rider = order["riderId"].as_str().map(str::to_owned);
            }
        }
        self.write(&event);
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn write(&self, event: &Event) {
        if let (Ok(line), Ok(mut out)) = (serde_json::to_string(event), self.out.lock()) {
            let _ = writeln!(out, "{line}");
        }
    }

    /// Writes out what is buffered.
    pub fn flush(&self) {
        if let Ok(mut out) = self.out.lock() {
            let _ = out.flush();
        }
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.flush();
    }
}

/// One call as the recorder sees it.
#[derive(Debug, Clone, Copy)]
pub struct Call<'a> {
    pub method: &'a Method,
    pub path: &'a str,
    pub node: &'a str,
    pub token: Option<&'a str>,
    pub body: Option<&'a Value>,
    pub key: Option<&'a str>,
}

/// The user id a token names (its `sub`; the token's signature is the node's business).
fn user_of(token: &str) -> Option<String> {
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    let claims: Value = serde_json::from_slice(&bytes).ok()?;
    claims["sub"].as_str().map(str::to_owned)
}

/// Reads a history file back.
pub fn read(path: &Path) -> anyhow::Result<Vec<Event>> {
    let file = BufReader::new(File::open(path)?);
    let mut events = Vec::new();
    for (n, line) in file.lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        events.push(
            serde_json::from_str(&line)
                .map_err(|err| anyhow::anyhow!("{}:{}: {err}", path.display(), n + 1))?,
        );
    }
    Ok(events)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_are_told_apart_by_method_and_path() {
        let put = Method::PUT;
        let post = Method::POST;
        assert_eq!(Op::of(&post, "/api/order/new"), Some((Op::Place, None)));
        assert_eq!(
            Op::of(&put, "/api/order/o1"),
            Some((Op::SellerStatus, Some("o1".into())))
        );
        assert_eq!(
            Op::of(&post, "/api/rider/orders/o2/accept"),
            Some((Op::Accept, Some("o2".into())))
        );
        assert_eq!(
            Op::of(&put, "/api/rider/orders/o3/status"),
            Some((Op::RiderStatus, Some("o3".into())))
        );
        assert_eq!(Op::of(&put, "/api/rider/location"), None);
        assert_eq!(Op::of(&Method::GET, "/api/order/o1"), None);
    }

    #[test]
    fn a_token_names_its_user() {
        let claims = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(br#"{"sub":"u-42","role":"rider"}"#);
        assert_eq!(user_of(&format!("h.{claims}.s")), Some("u-42".into()));
        assert_eq!(user_of("not a token"), None);
    }

    #[test]
    fn answers_are_sorted_into_ok_fail_and_info() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("history.jsonl");
        let recorder = Recorder::create(&path).expect("create");
        let body = serde_json::json!({ "status": "accepted" });
        let call = Call {
            method: &Method::PUT,
            path: "/api/order/o1",
            node: "127.0.0.1:1",
            token: None,
            body: Some(&body),
            key: None,
        };
        for outcome in [
            Outcome::Answered(200, br#"{"order":{"id":"o1"}}"#),
            Outcome::Answered(409, br#"{"error":{"code":"invalid_transition"}}"#),
            Outcome::Answered(409, br#"{"error":{"code":"idempotency_key_in_use"}}"#),
            Outcome::Answered(503, br#"{"error":{"code":"unavailable"}}"#),
            Outcome::Cut("timeout"),
        ] {
            let op = recorder.invoked(&call).expect("read by the checker");
            recorder.completed(op, &call, outcome);
        }
        drop(recorder);
        let kinds: Vec<Kind> = read(&path)
            .expect("read")
            .into_iter()
            .filter(|e| e.kind != Kind::Invoke)
            .map(|e| e.kind)
            .collect();
        assert_eq!(
            kinds,
            [Kind::Ok, Kind::Fail, Kind::Info, Kind::Info, Kind::Info]
        );
    }
}
