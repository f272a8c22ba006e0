//! The node's public API as the harness uses it: one keep-alive client, JSON in and out, and
//! every failure turned into a short kind (`http_409_already_taken`, `timeout`, `connect`) that
//! the report counts errors by.

use std::sync::Arc;
use std::time::Duration;

use reqwest::{Client, Method, StatusCode, Url};
use serde_json::{Value, json};

use crate::history::{Call, Outcome, Recorder};

/// A failed call, by kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallError {
    /// What the report counts it as.
    pub kind: String,
    /// The HTTP status, when there was a response.
    pub status: Option<StatusCode>,
    /// The server's message, for setup failures the user has to read.
    pub message: String,
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.kind, self.message)
    }
}

impl std::error::Error for CallError {}

/// A client for one node.
#[derive(Debug, Clone)]
pub struct Api {
    client: Client,
    base: Url,
    /// Where the order operations it makes are recorded for the checker, if anywhere.
    recorder: Option<Arc<Recorder>>,
}

/// A signed-in user.
#[derive(Debug, Clone)]
pub struct Session {
    pub token: String,
    pub user_id: String,
}

impl Api {
    /// A client with a keep-alive pool sized for many concurrent callers.
    pub fn new(base: Url) -> anyhow::Result<Self> {
        let client = Client::builder()
            .pool_max_idle_per_host(1024)
            .timeout(Duration::from_secs(30))
            .tcp_nodelay(true)
            .build()?;
        Ok(Self {
            client,
            base,
            recorder: None,
        })
    }

    /// A client that speaks HTTP/2 without TLS (h2c) on one connection.
    pub fn http2(base: Url) -> anyhow::Result<Self> {
        let client = Client::builder()
            .http2_prior_knowledge()
            .timeout(Duration::from_secs(30))
            .tcp_nodelay(true)
            .build()?;
        Ok(Self {
            client,
            base,
            recorder: None,
        })
    }

    /// One call; 2xx bodies parsed as JSON (`null` when empty).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> Result<Value, CallError> {
        self.call_keyed(method, path, token, body, None).await
    }

    /// [`Api::call`] with an `Idempotency-Key`, which the routes creating money-bearing things
    /// honour: the same key and body replays the first answer.
    pub async fn call_keyed(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
        key: Option<&str>,
    ) -> Result<Value, CallError> {
        // A shard moving between nodes answers 503 `shard_moving` (nothing was done): a client
        // tries again shortly, as docs/api.md asks; a takeover lasts seconds.
        let mut attempts = 0;
        loop {
            match self.call_once(method.clone(), path, token, body, key).await {
                Err(err)
                    if err.kind == "http_503_shard_moving" && attempts < SHARD_MOVING_RETRIES =>
                {
                    attempts += 1;
                    tokio::time::sleep(SHARD_MOVING_PAUSE).await;
                }
                done => return done,
            }
        }
    }

    /// The same client, recording its order operations in `recorder`.
    pub fn recording(mut self, recorder: Arc<Recorder>) -> Self {
        self.recorder = Some(recorder);
        self
    }

    async fn call_once(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
        key: Option<&str>,
    ) -> Result<Value, CallError> {
        let call = Call {
            method: &method,
            path,
            node: self.base.authority(),
            token,
            body,
            key,
        };
        // Only the order operations the checker reads are recorded.
        let recorded = self
            .recorder
            .as_ref()
            .and_then(|recorder| Some((recorder, recorder.invoked(&call)?)));
        let Some((recorder, op)) = recorded else {
            return self
                .send(method.clone(), path, token, body, key, None)
                .await;
        };
        let mut answered = None;
        let result = self
            .send(method.clone(), path, token, body, key, Some(&mut answered))
            .await;
        let outcome = match (&answered, &result) {
            (Some((status, bytes)), _) => Outcome::Answered(*status, bytes),
            (None, Err(err)) => Outcome::Cut(&err.kind),
            (None, Ok(_)) => Outcome::Cut("unknown"),
        };
        recorder.completed(op, &call, outcome);
        result
    }

    /// Sends one call; its status and body go to `answered` when there was an answer.
    async fn send(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
        key: Option<&str>,
        answered: Option<&mut Option<(u16, Vec<u8>)>>,
    ) -> Result<Value, CallError> {
        let url = self.base.join(path).map_err(|err| CallError {
            kind: "bad_url".into(),
            status: None,
            message: err.to_string(),
        })?;
        let mut request = self.client.request(method, url);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        if let Some(key) = key {
            request = request.header("Idempotency-Key", key);
        }
        let response = request.send().await.map_err(transport_error)?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(transport_error)?;
        if let Some(answered) = answered {
            *answered = Some((status.as_u16(), bytes.to_vec()));
        }
        let value: Value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or(Value::Null)
        };
        if status.is_success() {
            return Ok(value);
        }
        let code = value["error"]["code"].as_str().unwrap_or("no_code");
        Err(CallError {
            kind: format!("http_{}_{code}", status.as_u16()),
            status: Some(status),
            message: value["error"]["message"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        })
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> Result<Value, CallError> {
        self.call(Method::GET, path, token, None).await
    }

    pub async fn post(&self, path: &str, token: &str, body: &Value) -> Result<Value, CallError> {
        self.call(Method::POST, path, Some(token), Some(body)).await
    }

    pub async fn put(&self, path: &str, token: &str, body: &Value) -> Result<Value, CallError> {
        self.call(Method::PUT, path, Some(token), Some(body)).await
    }

    /// Signs in through the development login.
    pub async fn dev_login(&self, email: &str, name: &str) -> Result<Session, CallError> {
        let body = json!({ "email": email, "name": name });
        let answer = self
            .call(Method::POST, "/api/auth/dev-login", None, Some(&body))
            .await?;
        Ok(session_of(&answer))
    }

    /// Switches the session's role; the new token replaces the old.
    pub async fn become_role(&self, session: &Session, role: &str) -> Result<Session, CallError> {
        let answer = self
            .put("/api/auth/role", &session.token, &json!({ "role": role }))
            .await?;
        Ok(session_of(&answer))
    }

    /// The node's resident memory from `/metrics`, in bytes.
    pub async fn server_memory(&self) -> Option<u64> {
        self.metric("tomato_process_resident_memory_bytes").await
    }

    /// A counter or gauge of the node's `/metrics`, by its full name, in whole units.
    pub async fn metric(&self, name: &str) -> Option<u64> {
        self.metric_f64(name).await.map(|n| n as u64)
    }

    /// A counter or gauge of the node's `/metrics`, by its full name.
    pub async fn metric_f64(&self, name: &str) -> Option<f64> {
        let url = self.base.join("/metrics").ok()?;
        let text = self.client.get(url).send().await.ok()?.text().await.ok()?;
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .and_then(|n| n.trim().parse::<f64>().ok())
    }

    /// The node's base URL.
    pub fn base(&self) -> &Url {
        &self.base
    }
}

/// How often a call answered `shard_moving` is tried again, and how long apart.
const SHARD_MOVING_RETRIES: u32 = 20;
const SHARD_MOVING_PAUSE: std::time::Duration = std::time::Duration::from_millis(500);

fn session_of(answer: &Value) -> Session {
    Session {
        token: answer["token"].as_str().unwrap_or_default().to_owned(),
        user_id: answer["user"]["id"].as_str().unwrap_or_default().to_owned(),
    }
}

fn transport_error(err: reqwest::Error) -> CallError {
    let kind = if err.is_timeout() {
        "timeout"
    } else if err.is_connect() {
        "connect"
    } else {
        "transport"
    };
    CallError {
        kind: kind.into(),
        status: None,
        message: err.to_string(),
    }
}
