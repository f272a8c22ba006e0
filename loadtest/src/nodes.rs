//! The nodes a run plays, as a client app sees a cluster behind a load balancer: each party
//! talks to the node its token picks, and to the next ones in turn while that one refuses
//! connections (killed, or starting again). A call whose answer was lost on the way (the node
//! died with it in hand) is tried again only where that is safe to do: reads, the routes that
//! honour an `Idempotency-Key`, and status steps, where a 409 on the second try means the first
//! went through.

use std::time::Duration;

use reqwest::Method;
use serde_json::Value;

use crate::api::{Api, CallError};

/// How long a party keeps trying the nodes before it gives up on a call or a socket: longer
/// than a killed node's restart and the takeover of its zones.
pub const PATIENCE: Duration = Duration::from_secs(60);
/// The pause between two rounds over the nodes.
pub const ROUND_PAUSE: Duration = Duration::from_millis(500);

/// Every node of the run.
#[derive(Debug, Clone)]
pub struct Nodes {
    apis: Vec<Api>,
}

/// What a call that lost its answer may do when tried again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Nothing is tried again after a request went out (an accept: the caller finds out).
    Never,
    /// A read, a position, or a route given an `Idempotency-Key`: the same again is harmless.
    Same,
    /// A status step: a 409 on a later try means an earlier one was applied.
    ConflictIsDone,
}

impl Nodes {
    pub fn new(apis: Vec<Api>) -> Self {
        assert!(!apis.is_empty(), "a run plays at least one node");
        Self { apis }
    }

    /// The first node given: statistics and memory are read there.
    pub fn first(&self) -> &Api {
        &self.apis[0]
    }

    pub fn all(&self) -> &[Api] {
        &self.apis
    }

    /// One call of `token`'s party, to its node or, while that refuses connections, the next
    /// ones; an answer lost on the way is tried again as `retry` allows. `key` is sent as the
    /// `Idempotency-Key`.
    pub async fn call(
        &self,
        token: &str,
        method: Method,
        path: &str,
        body: Option<&Value>,
        (retry, key): (Retry, Option<&str>),
    ) -> Result<Value, CallError> {
        let home = node_of(token, self.apis.len());
        let started = tokio::time::Instant::now();
        let mut lost_once = false;
        let mut turn = 0;
        loop {
            let api = &self.apis[(home + turn) % self.apis.len()];
            turn += 1;
            let result = api
                .call_keyed(method.clone(), path, Some(token), body, key)
                .await;
            let patient = started.elapsed() < PATIENCE;
            match result {
                // Nothing reached the node: any node may take the call.
                Err(err) if err.kind == "connect" && patient => {
                    if turn.is_multiple_of(self.apis.len()) {
                        tokio::time::sleep(ROUND_PAUSE).await;
                    }
                }
                Err(err) if is_lost(&err) && retry != Retry::Never && patient => {
                    lost_once = true;
                    tokio::time::sleep(ROUND_PAUSE).await;
                }
                Err(err)
                    if lost_once
                        && retry == Retry::ConflictIsDone
                        && err.status == Some(reqwest::StatusCode::CONFLICT) =>
                {
                    return Ok(Value::Null);
                }
                done => return done,
            }
        }
    }

    pub async fn get(&self, token: &str, path: &str) -> Result<Value, CallError> {
        self.call(token, Method::GET, path, None, (Retry::Same, None))
            .await
    }

    /// A status step (`PUT {status}`).
    pub async fn step(&self, token: &str, path: &str, body: &Value) -> Result<Value, CallError> {
        self.call(
            token,
            Method::PUT,
            path,
            Some(body),
            (Retry::ConflictIsDone, None),
        )
        .await
    }

    /// A POST under an `Idempotency-Key`, so it may be tried again.
    pub async fn post_keyed(
        &self,
        token: &str,
        path: &str,
        body: &Value,
        key: &str,
    ) -> Result<Value, CallError> {
        self.call(
            token,
            Method::POST,
            path,
            Some(body),
            (Retry::Same, Some(key)),
        )
        .await
    }
}

/// The request went out but its answer did not come back whole, or the node answered it could
/// not do it now (503: nothing was done, try again).
pub fn is_lost(err: &CallError) -> bool {
    err.kind == "transport"
        || err.kind == "timeout"
        || err.status == Some(reqwest::StatusCode::SERVICE_UNAVAILABLE)
}

/// The node (of `nodes`) a party talks to, chosen by its token: riders, sellers and customers
/// spread over every node, and the parties of one order mostly talk to different ones.
pub fn node_of(token: &str, nodes: usize) -> usize {
    let hash = token.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    });
    usize::try_from(hash % nodes.max(1) as u64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use axum::Router;
    use axum::http::StatusCode;
    use axum::routing::{post, put};

    use super::*;

    /// A node that answers every call with `status`, counting them.
    async fn node(status: StatusCode, calls: Arc<AtomicUsize>) -> SocketAddr {
        let answer = move || {
            let calls = Arc::clone(&calls);
            async move {
                calls.fetch_add(1, Ordering::SeqCst);
                (status, "{}")
            }
        };
        let app = Router::new()
            .route("/step", put(answer.clone()))
            .route("/pay", post(answer));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(listener, app).await });
        addr
    }

    /// An address nobody listens on.
    async fn dead() -> SocketAddr {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr")
    }

    fn api(addr: SocketAddr) -> Api {
        Api::new(format!("http://{addr}").parse().expect("url")).expect("client")
    }

    /// A token whose home is node `home` of `n`.
    fn token_at(home: usize, n: usize) -> String {
        (0..)
            .map(|i| format!("token-{i}"))
            .find(|t| node_of(t, n) == home)
            .expect("some token")
    }

    #[tokio::test]
    async fn a_call_refused_by_its_node_goes_to_the_next() {
        let calls = Arc::new(AtomicUsize::new(0));
        let live = node(StatusCode::OK, Arc::clone(&calls)).await;
        let nodes = Nodes::new(vec![api(dead().await), api(live)]);
        let body = serde_json::json!({"status": "picked_up"});
        let answer = nodes.step(&token_at(0, 2), "/step", &body).await;
        assert!(answer.is_ok(), "{answer:?}");
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_conflict_after_a_lost_answer_is_a_step_done_but_not_a_first_conflict() {
        let unavailable = Arc::new(AtomicUsize::new(0));
        let conflicted = Arc::new(AtomicUsize::new(0));
        let busy = node(StatusCode::SERVICE_UNAVAILABLE, Arc::clone(&unavailable)).await;
        let refusing = node(StatusCode::CONFLICT, Arc::clone(&conflicted)).await;
        let nodes = Nodes::new(vec![api(busy), api(refusing)]);
        let body = serde_json::json!({"status": "picked_up"});

        let answer = nodes.step(&token_at(1, 2), "/step", &body).await;
        assert!(
            matches!(answer, Err(ref e) if e.status == Some(reqwest::StatusCode::CONFLICT)),
            "a 409 at the first try is a conflict: {answer:?}"
        );
        // The home node could not do it now (503), so the step goes on to the other node,
        // whose 409 means the step stands: done.
        let answer = nodes.step(&token_at(0, 2), "/step", &body).await;
        assert!(answer.is_ok(), "{answer:?}");
        assert_eq!(unavailable.load(Ordering::SeqCst), 1);
        assert_eq!(conflicted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_keyed_post_is_tried_again_with_its_key_and_an_unkeyed_one_is_not() {
        let unavailable = Arc::new(AtomicUsize::new(0));
        let busy = node(StatusCode::SERVICE_UNAVAILABLE, Arc::clone(&unavailable)).await;
        let calls = Arc::new(AtomicUsize::new(0));
        let live = node(StatusCode::OK, Arc::clone(&calls)).await;
        let nodes = Nodes::new(vec![api(busy), api(live)]);
        let token = token_at(0, 2);
        let body = serde_json::json!({});
        let answer = nodes.post_keyed(&token, "/pay", &body, "key-1").await;
        assert!(answer.is_ok(), "{answer:?}");
        let once = nodes
            .call(
                &token,
                Method::POST,
                "/pay",
                Some(&body),
                (Retry::Never, None),
            )
            .await;
        assert!(
            matches!(once, Err(ref e) if e.status == Some(reqwest::StatusCode::SERVICE_UNAVAILABLE))
        );
        assert_eq!(unavailable.load(Ordering::SeqCst), 2);
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn every_node_is_someones_home() {
        let homes: std::collections::HashSet<usize> =
            (0..100).map(|i| node_of(&format!("t{i}"), 3)).collect();
        assert_eq!(homes.len(), 3);
    }
}
