//! `Idempotency-Key` for the routes that create money-bearing things. The same key and body from
//! the same user on the same route within 24 h replays the first response (status and body);
//! the same key with another body is 409 `idempotency_key_reused`. Server errors are not
//! remembered, so a retry after a 5xx really retries. The key is claimed in the store before
//! the handler runs, so a retry sent to another node while the first try runs waits for its
//! answer (409 `idempotency_key_in_use` past 10 s) instead of running the request twice.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tomato_domain::ErrorKind;

use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use dashmap::DashMap;
use serde::Serialize;
use sha2::{Digest, Sha256};
use tomato_domain::UserId;
use tomato_store::{IdempotencyStore, KeyClaim, SavedResponse};

use super::ApiError;

/// The request header.
pub const HEADER: &str = "idempotency-key";
/// Set on a replayed response.
pub const REPLAYED: &str = "idempotent-replayed";

/// Work with the same key waits for each other on this node: two racing retries of one
/// idempotent request cannot both run the handler (the store's first-write-wins keeps nodes
/// consistent with each other), and racing reports of one payment do not contend in the store.
#[derive(Debug, Default)]
pub struct KeyLocks(DashMap<String, Arc<tokio::sync::Mutex<()>>>);

impl KeyLocks {
    /// Runs `work` while holding the lock of `key`: calls with one key on this node run one at
    /// a time.
    pub async fn serially<T>(&self, key: String, work: impl Future<Output = T>) -> T {
        let lock = self.0.entry(key.clone()).or_default().clone();
        let guard = lock.lock().await;
        let result = work.await;
        drop(guard);
        // Forget the lock once nobody else holds it, so the map does not grow without bound.
        self.0
            .remove_if(&key, |_, lock| Arc::strong_count(lock) <= 2);
        result
    }
}

/// What [`once`] keeps its answers in: the store (every node's memory of a key) and this
/// node's key locks.
#[derive(Clone)]
pub struct Idempotency {
    pub store: Arc<dyn IdempotencyStore>,
    pub locks: Arc<KeyLocks>,
}

impl std::fmt::Debug for Idempotency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Idempotency").finish_non_exhaustive()
    }
}

/// Runs `handler` at most once per key: the response is remembered and replayed. With a key,
/// the handler runs in a task of its own, so a client that goes away (or a request cut by the
/// timeout) does not cut it half-way: it finishes and stores its response, and the retry gets
/// that response.
pub async fn once<B, F, Fut, T>(
    idempotency: &Idempotency,
    user: UserId,
    route: &'static str,
    headers: &HeaderMap,
    body: &B,
    handler: F,
) -> Result<Response, ApiError>
where
    B: Serialize,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = Result<(StatusCode, T), ApiError>> + Send + 'static,
    T: Serialize + Send + 'static,
{
    let Some(key) = headers.get(HEADER) else {
        let (status, value) = handler().await?;
        return Ok((status, axum::Json(value)).into_response());
    };
    let key = key
        .to_str()
        .ok()
        .filter(|key| {
            (1..=255).contains(&key.len()) && key.bytes().all(|b| (0x21..=0x7e).contains(&b))
        })
        .ok_or_else(|| {
            ApiError::bad_request("Idempotency-Key must be 1 to 255 visible ASCII characters")
        })?
        .to_owned();
    let canonical = serde_json::to_vec(body).map_err(ApiError::internal)?;
    let request_hash = hex::encode(Sha256::digest(&canonical));
    let request_hash_of_call = request_hash.clone();
    let lock_key = format!("{user}\u{0}{route}\u{0}{key}");
    let idempotency = idempotency.clone();
    let detached = tokio::spawn(async move {
        let Idempotency { store, locks } = &idempotency;
        locks
            .serially(lock_key, async {
                let holder = uuid::Uuid::new_v4().to_string();
                if let Some(answered) =
                    wait_for_key(store.as_ref(), user, route, &key, &request_hash, &holder).await?
                {
                    return Ok((answered, true));
                }
                let saved = match handler().await {
                    Ok((status, value)) => SavedResponse {
                        request_hash: request_hash.clone(),
                        status: status.as_u16(),
                        body: serde_json::to_string(&value).map_err(ApiError::internal)?,
                    },
                    Err(err) if err.status().is_server_error() => {
                        // Not an answer: the key is let go, so a retry really retries.
                        if let Err(lost) = store.release(user, route, &key, &holder).await {
                            tracing::warn!(error = %lost, "an idempotency key was not let go");
                        }
                        return Err(err);
                    }
                    Err(err) => {
                        // A client error is the answer to this request too: remember it.
                        let response = err.into_response();
                        let status = response.status();
                        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
                            .await
                            .map_err(ApiError::internal)?;
                        SavedResponse {
                            request_hash: request_hash.clone(),
                            status: status.as_u16(),
                            body: String::from_utf8_lossy(&body).into_owned(),
                        }
                    }
                };
                // The answer of the claim's holder; another's only if this claim lapsed.
                let kept = store
                    .settle(user, route, &key, &holder, saved.clone())
                    .await?;
                let replayed = kept != saved;
                Ok((kept, replayed))
            })
            .await
    });
    match detached.await.map_err(ApiError::internal)?? {
        (saved, true) => replay(saved, &request_hash_of_call),
        (saved, false) => Ok(json_response(saved.status, saved.body, false)),
    }
}

/// How long a request waits for another caller running the same key (a retry sent to another
/// node while the first try still runs) before it is told to come back.
const WAIT_FOR_RUNNING: Duration = Duration::from_secs(10);

/// Claims `key` for `holder`: `None` when the claim is ours (run the request), the key's
/// answer when it has one. A key another caller is running is waited for, up to
/// [`WAIT_FOR_RUNNING`], then answered 409 `idempotency_key_in_use` (try again later).
async fn wait_for_key(
    store: &dyn IdempotencyStore,
    user: UserId,
    route: &'static str,
    key: &str,
    request_hash: &str,
    holder: &str,
) -> Result<Option<SavedResponse>, ApiError> {
    let started = tokio::time::Instant::now();
    loop {
        match store.claim(user, route, key, request_hash, holder).await? {
            KeyClaim::Ours => return Ok(None),
            KeyClaim::Answered(saved) => return Ok(Some(saved)),
            KeyClaim::Running { request_hash: hash } if hash != request_hash => {
                return Err(reused());
            }
            KeyClaim::Running { .. } if started.elapsed() < WAIT_FOR_RUNNING => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            KeyClaim::Running { .. } => {
                return Err(ApiError::from_kind(
                    ErrorKind::Conflict,
                    "idempotency_key_in_use",
                    "a request with this Idempotency-Key is still running; try again shortly",
                )
                .with_retry_after(1));
            }
        }
    }
}

fn reused() -> ApiError {
    ApiError::from_kind(
        ErrorKind::Conflict,
        "idempotency_key_reused",
        "this Idempotency-Key was used with a different request body",
    )
}

fn replay(saved: SavedResponse, request_hash: &str) -> Result<Response, ApiError> {
    if saved.request_hash != request_hash {
        return Err(reused());
    }
    Ok(json_response(saved.status, saved.body, true))
}

fn json_response(status: u16, body: String, replayed: bool) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    let mut response = (
        status,
        [(
            axum::http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response();
    if replayed {
        response
            .headers_mut()
            .insert(REPLAYED, HeaderValue::from_static("true"));
    }
    response
}
