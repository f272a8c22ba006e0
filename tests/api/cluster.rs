//! The cluster with real processes and real failures: `tomato` node processes on loopback, one
//! `redis-server` of the test's own, and the Cassandra of the ScyllaDB tests as the shared store.
//! Ownership is read back from the nodes' own `GET /api/admin/cluster`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::Value;
use tempfile::TempDir;

use crate::cli::{start_node_with, tomato};
use crate::dispatch::{accept, make_ready, rider_status};
use crate::helpers::{ADMIN_EMAIL, INTERNAL_KEY, TestApp, error_code, json_ok};
use crate::riders::{move_to, rider};
use crate::sockets::WsClient;
use crate::world::{HOME_AT, SHOP_AT, customer, open_shop};
use tomato_domain::OrderId;
use tomato_load::nemesis::{Link, Proxy};

/// Few shards keep the ticks short; the layout rules are the same.
pub(crate) const SHARDS: u32 = 16;

/// A `redis-server` on a free port, stopped when dropped.
pub(crate) struct Redis {
    pub(crate) port: u16,
    pub(crate) child: Child,
}

impl Redis {
    pub(crate) fn start_on(port: u16) -> Redis {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .args(["--bind", "127.0.0.1"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("the cluster tests need redis-server (apt-get install redis-server)");
        let started = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "redis-server did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Redis { port, child }
    }

    pub(crate) fn start() -> Redis {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("free port");
        Redis::start_on(port)
    }

    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub(crate) fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One node process of the cluster.
pub(crate) struct Node {
    pub(crate) id: String,
    pub(crate) addr: String,
    pub(crate) child: Option<Child>,
    _dir: TempDir,
}

impl Node {
    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub(crate) fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("kill -9");
            child.wait().expect("reap");
        }
    }

    pub(crate) fn signal(&self, signal: &str) {
        let child = self.child.as_ref().expect("running");
        let status = Command::new("kill")
            .args([signal, &child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
    }

    fn terminate(&mut self) {
        self.signal("-TERM");
        if let Some(mut child) = self.child.take() {
            let status = child.wait().expect("wait");
            assert!(status.success(), "a clean stop exits 0, got {status}");
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A cluster's shared settings: one Redis, one keyspace.
pub(crate) struct ClusterEnv {
    redis_url: String,
    cql: String,
    keyspace: String,
}

impl ClusterEnv {
    pub(crate) fn new(redis: &Redis) -> ClusterEnv {
        ClusterEnv {
            redis_url: redis.url(),
            cql: crate::cql::node(),
            keyspace: crate::cql::keyspace(),
        }
    }

    fn start(&self, id: &str) -> Node {
        self.start_with(id, SHARDS)
    }

    fn env<'a>(&'a self, id: &'a str, shards: &'a str) -> Vec<(&'a str, &'a str)> {
        vec![
            ("TOMATO_AUTH__ADMIN_EMAILS", ADMIN_EMAIL),
            ("TOMATO_STORE__BACKEND", "scylla"),
            ("TOMATO_STORE__SCYLLA__NODES", self.cql.as_str()),
            ("TOMATO_STORE__SCYLLA__KEYSPACE", self.keyspace.as_str()),
            ("TOMATO_CLUSTER__REDIS_URL", self.redis_url.as_str()),
            ("TOMATO_CLUSTER__NODE_ID", id),
            ("TOMATO_SHARDS__COUNT", shards),
            ("TOMATO_TESTING__FAULT_INJECTION", "true"),
            ("TOMATO_INTERNAL__KEY", INTERNAL_KEY),
        ]
    }

    fn start_with(&self, id: &str, shards: u32) -> Node {
        self.start_setting(id, shards, &[])
    }

    /// A node with `extra` settings over the cluster's.
    pub(crate) fn start_setting(&self, id: &str, shards: u32, extra: &[(&str, &str)]) -> Node {
        let dir = tempfile::tempdir().expect("dir");
        let shards = shards.to_string();
        let mut env = self.env(id, &shards);
        env.extend_from_slice(extra);
        let (child, addr) = start_node_with(dir.path(), &env);
        Node {
            id: id.to_owned(),
            addr,
            child: Some(child),
            _dir: dir,
        }
    }

    /// Runs a node that must refuse to start; its one line of error.
    /// Runs a node with `layout` over the shard settings the others have; its error line.
    fn refused(&self, id: &str, layout: &[(&str, &str)], dir: &Path) -> String {
        let shards = SHARDS.to_string();
        let output = tomato(dir)
            .arg("serve")
            .env("TOMATO_SERVER__BIND", "127.0.0.1:0")
            .envs(self.env(id, &shards))
            .envs(layout.iter().copied())
            .output()
            .expect("run tomato");
        assert!(!output.status.success(), "the node started");
        String::from_utf8_lossy(&output.stderr).trim().to_owned()
    }
}

pub(crate) async fn admin_token(node: &Node) -> String {
    let body: Value = reqwest::Client::new()
        .post(node.url("/api/auth/dev-login"))
        .json(&serde_json::json!({ "email": ADMIN_EMAIL, "name": "Admin" }))
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    body["token"].as_str().expect("token").to_owned()
}

/// `GET path` on `node` as the admin: the JSON of a 200.
async fn admin_get(node: &Node, token: &str, path: &str) -> Value {
    let response = reqwest::Client::new()
        .get(node.url(path))
        .bearer_auth(token)
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), StatusCode::OK, "{path}");
    response.json().await.expect("json")
}

/// Shard -> owner, as `node` sees it now.
async fn owners(node: &Node, token: &str) -> BTreeMap<u64, Option<String>> {
    let view = admin_get(node, token, "/api/admin/cluster").await;
    assert_eq!(view["mode"], "cluster");
    view["shards"]
        .as_array()
        .expect("shards")
        .iter()
        .map(|s| {
            (
                s["id"].as_u64().expect("id"),
                s["owner"].as_str().map(str::to_owned),
            )
        })
        .collect()
}

/// Waits until every shard is owned by one of `nodes`, and each of them owns some; how long
/// it took.
pub(crate) async fn settled(
    observer: &Node,
    token: &str,
    nodes: &[&str],
    within: Duration,
) -> Duration {
    let started = Instant::now();
    let wanted: BTreeSet<&str> = nodes.iter().copied().collect();
    loop {
        let owners = owners(observer, token).await;
        let all_owned = owners.len() == SHARDS as usize
            && owners
                .values()
                .all(|o| o.as_deref().is_some_and(|o| wanted.contains(o)));
        let holders: BTreeSet<&str> = owners.values().flatten().map(String::as_str).collect();
        if all_owned && holders == wanted {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < within,
            "shards not settled on {nodes:?} within {within:?}: {owners:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn shards_spread_over_the_nodes_and_move_when_one_dies_joins_or_leaves() {
    let redis = Redis::start();
    let cluster = ClusterEnv::new(&redis);
    let mut a = cluster.start("node-a");
    let mut b = cluster.start("node-b");
    let mut c = cluster.start("node-c");
    let token = admin_token(&a).await;
    settled(
        &a,
        &token,
        &["node-a", "node-b", "node-c"],
        Duration::from_secs(20),
    )
    .await;
    for node in [&a, &b, &c] {
        let ready = reqwest::get(node.url("/readyz")).await.expect("readyz");
        assert_eq!(ready.status(), StatusCode::OK, "{} is ready", node.id);
    }
    // Every node names the same owner for a point as the shard table does.
    let shard_owners = owners(&a, &token).await;
    for node in [&a, &b, &c] {
        let owner = admin_get(
            node,
            &token,
            "/api/admin/cluster/owner?lat=12.9716&lon=77.5946",
        )
        .await;
        let shard = owner["shard"].as_u64().expect("shard");
        assert_eq!(
            owner["owner"].as_str(),
            shard_owners[&shard].as_deref(),
            "{owner}"
        );
        assert!(owner["epoch"].as_u64().expect("epoch") >= 1, "{owner}");
    }

    // kill -9: the dead node's shards have live owners within 10 s.
    b.kill9();
    let takeover = settled(&a, &token, &["node-a", "node-c"], Duration::from_secs(10)).await;
    eprintln!("takeover after kill -9: {takeover:?}");

    // A node joins and takes its share.
    let d = cluster.start("node-d");
    settled(
        &a,
        &token,
        &["node-a", "node-c", "node-d"],
        Duration::from_secs(10),
    )
    .await;

    // SIGTERM: the leaver hands its shards over without a lease timeout.
    c.terminate();
    let handover = settled(&a, &token, &["node-a", "node-d"], Duration::from_secs(4)).await;
    eprintln!("hand-over after SIGTERM: {handover:?}");

    // A node with another shard layout (more shards, or other zones) is refused, with one line.
    let twice = (SHARDS * 2).to_string();
    for layout in [
        [("TOMATO_SHARDS__COUNT", twice.as_str())],
        [("TOMATO_SHARDS__ZONE_RESOLUTION", "6")],
    ] {
        let dir = tempfile::tempdir().expect("dir");
        let refused = cluster.refused("node-e", &layout, dir.path());
        assert!(
            refused.contains("differ from the cluster's") && !refused.contains('\n'),
            "refused with: {refused}"
        );
        let (variable, value) = layout[0];
        let setting = variable
            .trim_start_matches("TOMATO_SHARDS__")
            .to_lowercase();
        assert!(
            refused.contains(&format!("shards.{setting}={value}")),
            "the line names the differing setting: {refused}"
        );
    }
    drop(d);
    a.terminate();
}

/// Waits up to 10 s for `node`'s `/readyz` to answer `status`.
async fn readyz_becomes(node: &Node, status: StatusCode) {
    let started = Instant::now();
    while reqwest::get(node.url("/readyz"))
        .await
        .expect("readyz")
        .status()
        != status
    {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "readyz of {} never answered {status}",
            node.id
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn the_cluster_recovers_by_itself_when_redis_restarts() {
    let mut redis = Redis::start();
    let cluster = ClusterEnv::new(&redis);
    let a = cluster.start("node-a");
    let b = cluster.start("node-b");
    let token = admin_token(&a).await;
    settled(&a, &token, &["node-a", "node-b"], Duration::from_secs(20)).await;
    let (on_a, on_b) = (
        TestApp::attached(a.addr.parse().expect("addr")),
        TestApp::attached(b.addr.parse().expect("addr")),
    );
    // Orders acknowledged before and during the outage, through both nodes.
    let shop = open_shop(&on_a, "rr-seller@c.test", "Restart Kitchen", SHOP_AT).await;
    let mut acknowledged: Vec<(String, &'static str, crate::world::Customer)> = Vec::new();
    for (i, app) in [&on_a, &on_b].into_iter().enumerate() {
        let buyer = customer(app, &format!("rr-before-{i}@c.test"), HOME_AT).await;
        buyer.add(app, &shop.items[0], 1).await;
        let order = buyer.order(app).await["id"]
            .as_str()
            .expect("id")
            .to_owned();
        buyer.pay(app, &order).await;
        acknowledged.push((order, "paid", buyer));
    }

    let port = redis.port;
    redis.kill();
    // Meanwhile the store still takes what does not need another node: what is acknowledged
    // must be there afterwards.
    for (i, app) in [&on_a, &on_b].into_iter().enumerate() {
        let buyer = customer(app, &format!("rr-during-{i}@c.test"), HOME_AT).await;
        buyer.add(app, &shop.items[0], 1).await;
        let placed = buyer.place(app).await;
        if placed.status() == StatusCode::CREATED {
            let order = json_ok(placed).await["order"]["id"]
                .as_str()
                .expect("id")
                .to_owned();
            acknowledged.push((order, "pending", buyer));
        }
    }
    // Without Redis a node cannot see the cluster: it says so on /readyz.
    readyz_becomes(&a, StatusCode::SERVICE_UNAVAILABLE).await;
    let _redis = Redis::start_on(port);
    settled(&a, &token, &["node-a", "node-b"], Duration::from_secs(20)).await;
    readyz_becomes(&a, StatusCode::OK).await;
    // Nothing acknowledged was lost, and the paid orders move on through either node.
    for (order, payment, buyer) in &acknowledged {
        let stored = status_of(&on_b, buyer.token(), order).await;
        assert_eq!(stored["paymentStatus"], *payment, "{order} as acknowledged");
        if *payment == "paid" {
            let moved = json_ok(shop.set_status(&on_b, order, "accepted").await).await;
            assert_eq!(moved["order"]["status"], "accepted");
        }
    }
    drop(b);
}

#[test]
fn a_cluster_on_the_embedded_store_is_refused() {
    let dir = tempfile::tempdir().expect("dir");
    let output = tomato(dir.path())
        .args(["config", "check"])
        .env("TOMATO_CLUSTER__REDIS_URL", "redis://127.0.0.1:6379")
        .output()
        .expect("run tomato");
    assert_eq!(output.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&output.stderr).trim(),
        "tomato: cluster.redis_url needs store.backend = \"scylla\": the nodes of a cluster share one store"
    );
}

/// The shard of an order picked up at `at` (the shop's location), as every node maps it (the
/// shipped zone and region resolutions).
fn shard_at(at: (f64, f64)) -> u64 {
    let map = tomato_shards::ShardMap::new(7, 5, SHARDS).expect("map");
    let point = tomato_domain::LatLon::new(at.0, at.1).expect("point");
    u64::from(map.shard_of(point).0)
}

async fn status_of(app: &TestApp, token: Option<&str>, order: &str) -> Value {
    json_ok(app.get(&format!("/api/order/{order}"), token).await).await["order"].clone()
}

/// Three settled nodes, and which of them owns the shop's shard.
struct Three {
    _redis: Redis,
    nodes: [Node; 3],
    apps: Vec<TestApp>,
    token: String,
    shard: u64,
    owner_id: String,
    owner: usize,
}

/// The three nodes' ids.
const THREE: [&str; 3] = ["node-a", "node-b", "node-c"];

/// Three node processes started with `settings` and settled, an app on each, and an admin's
/// token.
async fn three_settled(
    cluster: &ClusterEnv,
    settings: &[(&str, &str)],
) -> ([Node; 3], Vec<TestApp>, String) {
    let nodes = THREE.map(|id| cluster.start_setting(id, SHARDS, settings));
    let token = admin_token(&nodes[0]).await;
    settled(&nodes[0], &token, &THREE, Duration::from_secs(20)).await;
    let apps = nodes
        .iter()
        .map(|n| TestApp::attached(n.addr.parse().expect("addr")))
        .collect();
    (nodes, apps, token)
}

async fn three_nodes() -> Three {
    let redis = Redis::start();
    let cluster = ClusterEnv::new(&redis);
    let (nodes, apps, token) = three_settled(&cluster, &[]).await;
    let shard = shard_at(SHOP_AT);
    let owner_id = owners(&nodes[0], &token).await[&shard]
        .clone()
        .expect("owned");
    let owner = nodes.iter().position(|n| n.id == owner_id).expect("a node");
    Three {
        _redis: redis,
        nodes,
        apps,
        token,
        shard,
        owner_id,
        owner,
    }
}

#[tokio::test]
async fn an_order_moves_through_every_node_and_a_paused_owner_writes_nothing() {
    let Three {
        _redis,
        nodes,
        apps,
        token,
        shard,
        owner_id,
        owner,
    } = three_nodes().await;
    // The two nodes that do not own the order's shard: every step goes through one of them.
    let others: Vec<usize> = (0..3).filter(|i| *i != owner).collect();
    let (x, y) = (&apps[others[0]], &apps[others[1]]);

    let shop = open_shop(x, "cl-seller@c.test", "Cluster Kitchen", SHOP_AT).await;
    let buyer = customer(y, "cl-buyer@c.test", HOME_AT).await;
    // The customer watches over a socket on a node that runs none of the order's work.
    let mut watching = WsClient::connect(y, &buyer.session.token)
        .await
        .expect("ws");
    buyer.add(y, &shop.items[0], 1).await;
    let order = buyer.order(y).await["id"].as_str().expect("id").to_owned();
    let paid = buyer.pay(x, &order).await;
    assert_eq!(paid["paymentStatus"], "paid");
    // The owner runs the acceptance but its reply is lost: the sender sends it again, and it
    // counts once (the history below).
    let armed = apps[owner]
        .client
        .post(apps[owner].url("/api/v1/internal/fault/replies?count=1"))
        .header("x-internal-key", INTERNAL_KEY)
        .send()
        .await
        .expect("send");
    assert_eq!(armed.status(), StatusCode::NO_CONTENT);
    let accepted = json_ok(shop.set_status(y, &order, "accepted").await).await;
    assert_eq!(accepted["order"]["status"], "accepted");
    assert_eq!(
        y.metric("tomato_cluster_remote_calls_unanswered_total")
            .await,
        1,
        "the first reply was lost"
    );
    // And the command's time, re-send included, is in the histogram of command times.
    let metrics = y.get("/metrics", None).await.text().await.expect("metrics");
    let waited: f64 = metrics
        .lines()
        .find_map(|line| line.strip_prefix("tomato_cluster_command_seconds_sum "))
        .and_then(|sum| sum.trim().parse().ok())
        .unwrap_or_else(|| panic!("no command seconds in {metrics}"));
    assert!(waited >= 3.0, "a re-send waits 3 s first: {waited}");
    // The owner's actor told the customer's socket on another node.
    loop {
        let update = watching.event("order:update").await;
        if update["status"] == "accepted" {
            break;
        }
    }

    // The owner freezes past its lease while a command is on its way to it: the command gets
    // no answer, waits out the takeover and runs on the new owner.
    nodes[owner].signal("-STOP");
    let started = Instant::now();
    let moved = json_ok(shop.set_status(x, &order, "preparing").await).await;
    eprintln!(
        "a command sent to a frozen owner answered after {:?}",
        started.elapsed()
    );
    assert_eq!(moved["order"]["status"], "preparing");
    let now = owners(&nodes[others[0]], &token).await[&shard].clone();
    assert!(now.is_some_and(|o| o != owner_id), "taken over");

    // It wakes up: what it is sent now goes to the new owner, and nothing it held is written
    // over the new owner's work.
    nodes[owner].signal("-CONT");
    let ready = json_ok(
        shop.set_status(&apps[owner], &order, "ready_for_rider")
            .await,
    )
    .await;
    assert_eq!(ready["order"]["status"], "ready_for_rider");
    let stored = status_of(y, buyer.token(), &order).await;
    let statuses: Vec<&str> = stored["history"]
        .as_array()
        .expect("history")
        .iter()
        .map(|h| h["status"].as_str().expect("status"))
        .collect();
    assert_eq!(
        statuses,
        ["placed", "accepted", "preparing", "ready_for_rider"],
        "each step once, in order"
    );
}

/// The steps of `order`'s history, as stored.
async fn steps_of(app: &TestApp, token: Option<&str>, order: &str) -> Vec<String> {
    status_of(app, token, order).await["history"]
        .as_array()
        .expect("history")
        .iter()
        .map(|h| h["status"].as_str().expect("status").to_owned())
        .collect()
}

#[tokio::test]
async fn a_command_whose_publish_failed_after_redis_took_it_is_answered_as_done() {
    let Three {
        _redis,
        nodes: _nodes,
        apps,
        owner,
        ..
    } = three_nodes().await;
    let x = &apps[(owner + 1) % 3];
    let shop = open_shop(x, "pub-seller@c.test", "Publish Kitchen", SHOP_AT).await;
    let buyer = customer(x, "pub-buyer@c.test", HOME_AT).await;
    buyer.add(x, &shop.items[0], 1).await;
    let order = buyer.order(x).await["id"].as_str().expect("id").to_owned();
    buyer.pay(x, &order).await;
    // Redis takes the seller's command to the owner, which runs it, but the publish is reported
    // failed to the node that sent it (a stalled Redis): that is no proof the command did not
    // run, so it is sent again as a repeat and the seller is told it is done.
    fail_publishes(x, 1).await;
    let accepted = json_ok(shop.set_status(x, &order, "accepted").await).await;
    assert_eq!(accepted["order"]["status"], "accepted");
    assert_eq!(
        steps_of(x, buyer.token(), &order).await,
        ["placed", "accepted"],
        "accepted once"
    );
}

#[tokio::test]
async fn one_idempotency_key_sent_to_two_nodes_at_once_makes_one_order_and_one_answer() {
    let Three {
        _redis,
        nodes: _nodes,
        apps,
        token,
        ..
    } = three_nodes().await;
    let (a, b) = (&apps[0], &apps[1]);
    let shop = open_shop(a, "key-seller@c.test", "Key Kitchen", SHOP_AT).await;
    // A checkout retried on another node while the first try still runs, as an app behind a
    // load balancer does after a timeout: the same key, the same body, at once.
    for n in 0..10 {
        let buyer = customer(a, &format!("key-buyer-{n}@c.test"), HOME_AT).await;
        buyer.add(a, &shop.items[0], 1).await;
        let body = serde_json::json!({ "addressId": buyer.address_id, "paymentMethod": "test" });
        let send = |app: &TestApp| {
            app.client
                .post(app.url("/api/order/new"))
                .bearer_auth(&buyer.session.token)
                .header("idempotency-key", format!("checkout-{n}"))
                .json(&body)
                .send()
        };
        let (first, second) = tokio::join!(send(a), send(b));
        let answer = |r: reqwest::Response| async move {
            let status = r.status();
            (status, r.text().await.expect("body"))
        };
        let (first, second) = (
            answer(first.expect("send")).await,
            answer(second.expect("send")).await,
        );
        assert_eq!(first.0, StatusCode::CREATED, "customer {n}: {}", first.1);
        assert_eq!(first, second, "customer {n}: one answer for one key");
        let listed = json_ok(a.get("/api/order/myorder", buyer.token()).await).await;
        let orders = listed["orders"].as_array().expect("orders").len();
        assert_eq!(orders, 1, "customer {n}: one order for one key: {listed}");
    }
    drop(token);
}

/// Arms node `app`'s drill: its next `count` commands to other nodes look unpublished.
async fn fail_publishes(app: &TestApp, count: u32) {
    let armed = app
        .client
        .post(app.url(&format!("/api/v1/internal/fault/publishes?count={count}")))
        .header("x-internal-key", INTERNAL_KEY)
        .send()
        .await
        .expect("send");
    assert_eq!(armed.status(), StatusCode::NO_CONTENT);
}

/// Three nodes started with `settings`, each reaching Redis through a link of its own, which
/// the test can cut (several workers: the proxies run while a node's start blocks the
/// test's thread).
async fn behind_links(redis: &Redis, settings: &[(&str, &str)]) -> (Vec<Node>, Vec<Proxy>) {
    let cluster = ClusterEnv::new(redis);
    let mut links = Vec::new();
    let mut nodes = Vec::new();
    for id in THREE {
        let link = Proxy::start(([127, 0, 0, 1], redis.port).into())
            .await
            .expect("proxy");
        let url = format!("redis://{}", link.addr());
        let mut env = vec![("TOMATO_CLUSTER__REDIS_URL", url.as_str())];
        env.extend_from_slice(settings);
        nodes.push(cluster.start_setting(id, SHARDS, &env));
        links.push(link);
    }
    (nodes, links)
}

// Several workers: the proxies run while a node's start blocks this test's thread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_acknowledged_while_its_owner_was_out_of_reach_still_expires() {
    let redis = Redis::start();
    let (nodes, links) = behind_links(&redis, &[("TOMATO_ORDERS__PAYMENT_TIMEOUT_S", "5")]).await;
    let token = admin_token(&nodes[0]).await;
    settled(&nodes[0], &token, &THREE, Duration::from_secs(20)).await;
    let owner = owners(&nodes[0], &token).await[&shard_at(SHOP_AT)]
        .clone()
        .expect("owned");
    let i = nodes
        .iter()
        .position(|n| n.id != owner)
        .expect("another node");
    let x = &TestApp::attached(nodes[i].addr.parse().expect("addr"));
    let shop = open_shop(x, "late-seller@c.test", "Late Kitchen", SHOP_AT).await;
    let buyer = customer(x, "late-buyer@c.test", HOME_AT).await;
    buyer.add(x, &shop.items[0], 1).await;
    // The node taking the order is cut off from Redis for as long as it tries to reach the
    // owner: the order is stored and acknowledged, but no actor holds it.
    links[i].set(Link::Down);
    let placed = buyer.order(x).await;
    links[i].set(Link::Clear);
    let order = placed["id"].as_str().expect("id").to_owned();
    // Its payment deadline passes all the same: the store shows it expired, and the customer
    // may order again. (The order is read from the customer's list, which the store answers:
    // reading the order itself would start its actor from the store and hide an order nobody
    // holds.)
    let started = Instant::now();
    loop {
        let mine = json_ok(x.get("/api/order/myorder", buyer.token()).await).await;
        let status = mine["orders"]
            .as_array()
            .and_then(|orders| orders.iter().find(|o| o["id"] == order.as_str()))
            .map(|o| o["status"].clone())
            .expect("listed");
        if status == "expired" {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(40),
            "an order nobody holds never expired: {status}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    buyer.add(x, &shop.items[0], 1).await;
    let again = buyer.place(x).await;
    assert_eq!(again.status(), StatusCode::CREATED, "not locked out");
}

/// A save in flight when its node loses the shard lands nowhere once another node has taken the
/// shard: the new owner's take raised the shard's epoch in the store and fenced the open
/// orders with it, so the late save is refused, and what the new owner serves is what the
/// store holds. (Fenced by the version alone, the late save landed after the new owner had
/// started the shard: a node that no longer ran it wrote the order.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_save_in_flight_when_its_node_lost_the_shard_is_fenced_out_by_the_next_owner() {
    let redis = Redis::start();
    let (nodes, links) = behind_links(&redis, &[]).await;
    let token = admin_token(&nodes[0]).await;
    settled(&nodes[0], &token, &THREE, Duration::from_secs(20)).await;
    let shard = shard_at(SHOP_AT);
    let owner_id = owners(&nodes[0], &token).await[&shard]
        .clone()
        .expect("owned");
    let i = nodes.iter().position(|n| n.id == owner_id).expect("owner");
    let j = (i + 1) % nodes.len();
    let owner = &TestApp::attached(nodes[i].addr.parse().expect("addr"));
    let x = &TestApp::attached(nodes[j].addr.parse().expect("addr"));
    let shop = open_shop(x, "fenced-seller@c.test", "Fenced Kitchen", SHOP_AT).await;
    let buyer = customer(x, "fenced-buyer@c.test", HOME_AT).await;
    buyer.add(x, &shop.items[0], 1).await;
    let order = buyer.order(x).await["id"].as_str().expect("id").to_owned();
    assert_eq!(buyer.pay(x, &order).await["paymentStatus"], "paid");

    // The owner's next save waits 12 s, and the owner is cut off from Redis as the seller's
    // step reaches it: its lease runs out (5 s on its own clock) and another node takes the
    // shard (once the lease lapses in Redis, 6 s) while the save is still on its way.
    const SLOW_MS: u64 = 12_000;
    let armed = owner
        .client
        .post(owner.url(&format!(
            "/api/v1/internal/fault/order/{order}?kind=slow&ms={SLOW_MS}"
        )))
        .header("x-internal-key", INTERNAL_KEY)
        .send()
        .await
        .expect("send");
    assert_eq!(armed.status(), StatusCode::NO_CONTENT);
    links[i].set(Link::Down);
    let sent = Instant::now();
    let taken_over = async {
        loop {
            let now = owners(&nodes[j], &token).await[&shard].clone();
            if now.is_some_and(|o| o != owner_id) {
                return sent.elapsed();
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    let (answer, took) = tokio::join!(shop.set_status(owner, &order, "accepted"), taken_over);
    assert!(
        took < Duration::from_millis(SLOW_MS - 1_000),
        "the takeover ({took:?}) came after the slow save, so this test shows nothing"
    );
    let answered = answer.status();
    // The slow save has been sent by now, and answered.
    tokio::time::sleep(Duration::from_millis(SLOW_MS + 2_000).saturating_sub(sent.elapsed())).await;

    // What the store holds (the customer's list, which the store answers) and what the new
    // owner serves (the order itself, from its actor) agree, and the late save is not in it.
    let listed = json_ok(x.get("/api/order/myorder", buyer.token()).await).await["orders"]
        .as_array()
        .and_then(|orders| orders.iter().find(|o| o["id"] == order.as_str()))
        .map(|o| o["status"].clone())
        .expect("listed");
    let served = status_of(x, buyer.token(), &order).await["status"].clone();
    assert_eq!(
        listed, served,
        "the store and the new owner disagree (the old owner answered {answered})"
    );
    assert_eq!(listed, "placed", "the late save was refused");
    assert!(
        !answered.is_success(),
        "the old owner answered {answered} for a save that did not land"
    );

    // Heal: the step goes through the new owner, once.
    links[i].set(Link::Clear);
    let accepted = json_ok(shop.set_status(x, &order, "accepted").await).await;
    assert_eq!(accepted["order"]["status"], "accepted");
    assert_eq!(
        steps_of(x, buyer.token(), &order).await,
        ["placed", "accepted"]
    );
}

#[tokio::test]
async fn a_logout_on_one_node_holds_on_every_node_at_once_and_ends_its_sockets_there() {
    let redis = Redis::start();
    let cluster = ClusterEnv::new(&redis);
    let (a, b) = (cluster.start("node-a"), cluster.start("node-b"));
    let token = admin_token(&a).await;
    settled(&a, &token, &["node-a", "node-b"], Duration::from_secs(20)).await;
    let (on_a, on_b) = (
        TestApp::attached(a.addr.parse().expect("addr")),
        TestApp::attached(b.addr.parse().expect("addr")),
    );
    let user = on_a.dev_login("leaver@c.test", "Leaver").await;
    // Node B has seen the token live (and caches that for seconds), and holds its sockets.
    assert_eq!(
        on_b.get("/api/auth/me", Some(&user.token)).await.status(),
        StatusCode::OK
    );
    let mut ws_on_b = crate::sockets::WsClient::connect(&on_b, &user.token)
        .await
        .expect("ws on node B");
    let mut io_on_b = crate::sockets::SocketIoClient::connect(&on_b, Some(&user.token));
    io_on_b.connected().await;
    let out = on_a
        .post(
            "/api/auth/logout",
            Some(&user.token),
            &serde_json::json!({}),
        )
        .await;
    assert!(out.status().is_success(), "logout: {}", out.status());
    // Pub/sub takes a moment, far less than the cache's seconds.
    let started = Instant::now();
    loop {
        let me = on_b.get("/api/auth/me", Some(&user.token)).await;
        if me.status() == StatusCode::UNAUTHORIZED {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "node B still accepts a token logged out on node A"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // And node B ended the token's sockets.
    let ended = serde_json::json!({ "reason": "logout" });
    assert_eq!(ws_on_b.event("session:ended").await, ended);
    assert_eq!(ws_on_b.closed().await, 1008);
    assert_eq!(io_on_b.event("session:ended").await, ended);
}

/// Waits until every node's statistics and operations snapshot count `online` riders, summed
/// over all three nodes.
async fn riders_online_everywhere(apps: &[TestApp], token: &str, online: u64) {
    let started = Instant::now();
    'nodes: for app in apps {
        loop {
            let stats = json_ok(app.get("/api/admin/stats", Some(token)).await).await;
            let ops = json_ok(app.get("/api/admin/ops", Some(token)).await).await;
            assert_eq!(stats["nodes"], 3, "{stats}");
            assert_eq!(ops["nodes"], 3, "{ops}");
            if stats["ridersOnline"] == online && ops["counters"]["ridersOnline"] == online {
                continue 'nodes;
            }
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "riders online never became {online}: {stats}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

#[tokio::test]
async fn a_delivery_where_every_party_talks_to_another_node() {
    let Three {
        _redis,
        nodes: _nodes,
        apps,
        token,
        owner,
        ..
    } = three_nodes().await;
    let others: Vec<usize> = (0..3).filter(|i| *i != owner).collect();
    // The rider streams to one node, the customer and the kitchen talk to the other; the
    // order's shard (and the rider's, next door to the shop) runs on the third.
    let (riders_node, customers_node, kitchens_node) =
        (&apps[others[0]], &apps[others[1]], &apps[owner]);

    let shop = open_shop(kitchens_node, "dl-seller@c.test", "Relay Kitchen", SHOP_AT).await;
    let (ravi, ravi_id) = rider(riders_node, "dl-ravi@c.test", SHOP_AT, true).await;
    // Admins see the rider near the shop from a node that holds no rider at all.
    let started = Instant::now();
    loop {
        move_to(riders_node, &ravi, SHOP_AT).await;
        let nearby = json_ok(
            customers_node
                .get(
                    &format!("/api/rider/nearby?lat={}&lon={}", SHOP_AT.0, SHOP_AT.1),
                    Some(&token),
                )
                .await,
        )
        .await;
        if nearby["riders"]
            .as_array()
            .expect("riders")
            .iter()
            .any(|r| r["id"] == ravi_id.as_str())
        {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the rider is not found from another node"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // Every node's statistics count the rider, whichever node holds it in memory; going
    // offline and online again through a node that does not hold it reaches the one that does.
    riders_online_everywhere(&apps, &token, 1).await;
    for (available, online) in [(false, 0), (true, 1)] {
        let response = riders_node
            .put(
                "/api/rider/availability",
                Some(&ravi.token),
                &serde_json::json!({ "available": available }),
            )
            .await;
        assert_eq!(response.status(), StatusCode::OK);
        riders_online_everywhere(&apps, &token, online).await;
    }
    let buyer = customer(customers_node, "dl-buyer@c.test", HOME_AT).await;
    let mut watching = WsClient::connect(customers_node, &buyer.session.token)
        .await
        .expect("ws");
    buyer.add(customers_node, &shop.items[0], 1).await;
    let order = buyer.order(customers_node).await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let mut riders_socket = WsClient::connect(riders_node, &ravi.token)
        .await
        .expect("ws");
    buyer.pay(customers_node, &order).await;
    make_ready(kitchens_node, &shop, &order).await;
    // The offer, made on the node that owns the order, reaches the rider's socket on another.
    let offered = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            move_to(riders_node, &ravi, SHOP_AT).await;
            if let Ok(offer) = tokio::time::timeout(
                Duration::from_secs(1),
                riders_socket.event("order:available"),
            )
            .await
            {
                return offer;
            }
        }
    })
    .await
    .expect("the rider heard the offer");
    assert_eq!(offered["orderId"], order.as_str());
    // An app that missed the event reads its offers from its own node, which does not own the
    // order: the node asks the one that does.
    let held = json_ok(
        riders_node
            .get("/api/rider/offers", Some(&ravi.token))
            .await,
    )
    .await;
    assert_eq!(held["offers"][0]["orderId"], order.as_str(), "{held}");

    // The rider keeps reporting (through its node, forwarded to the shard's owner) until the
    // order's offer reaches it, and takes it through its own node.
    let started = Instant::now();
    let taken = loop {
        move_to(riders_node, &ravi, SHOP_AT).await;
        let response = accept(riders_node, &ravi.token, &order).await;
        if response.status() == StatusCode::OK {
            break json_ok(response).await;
        }
        let refused = response.text().await.unwrap_or_default();
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the order was never offered to the rider on another node: {refused}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!(taken["order"]["riderId"], ravi_id.as_str());
    let assigned = watching.event("order:rider_assigned").await;
    assert_eq!(assigned["order"]["id"], order.as_str());
    json_ok(rider_status(riders_node, &ravi.token, &order, "picked_up").await).await;
    // Live tracking across nodes: the rider's positions go to its node, on to the owner of its
    // shard (whose rider actor never saw the accept, made through another node), and out to the
    // customer's socket on the third.
    let on_the_way = (SHOP_AT.0 - 0.002, SHOP_AT.1 + 0.002);
    let heard = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            move_to(riders_node, &ravi, on_the_way).await;
            if let Ok(location) =
                tokio::time::timeout(Duration::from_secs(1), watching.event("rider:location")).await
            {
                return location;
            }
        }
    })
    .await
    .expect("the customer tracks the rider from another node");
    assert_eq!(heard["orderId"], order.as_str());
    let done = json_ok(rider_status(riders_node, &ravi.token, &order, "delivered").await).await;
    assert_eq!(done["order"]["status"], "delivered");
    // Delivered: the customer stops hearing where the rider is, on every node.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = HOME_AT;
    let tracked_after = tokio::time::timeout(Duration::from_secs(3), async {
        loop {
            move_to(riders_node, &ravi, after).await;
            let location = watching.event("rider:location").await;
            if location["lat"].as_f64() == Some(after.0) {
                return location;
            }
        }
    })
    .await;
    assert!(
        tracked_after.is_err(),
        "still tracked after delivery: {tracked_after:?}"
    );
    // Events went only where a client was: the customer's and the rider's nodes heard the
    // order's events from the node that made them; that node, with no client at all, listens
    // to no room and heard none.
    for (node, name) in [(customers_node, "customer's"), (riders_node, "rider's")] {
        assert!(
            node.metric("tomato_cluster_room_events_heard_total").await > 0,
            "the {name} node heard no event of its client's room"
        );
    }
    assert_eq!(
        kitchens_node
            .metric("tomato_cluster_room_events_heard_total")
            .await,
        0,
        "a node without clients heard events of others' rooms"
    );
    // The customer's node stops listening to the customer's room once its socket is gone
    // (a sweep every 10 s drops rooms nobody holds or asked for in 10 s).
    assert!(
        customers_node.metric("tomato_cluster_rooms_listened").await > 0,
        "the customer's node does not listen to its client's room"
    );
    drop(watching);
    let started = Instant::now();
    while customers_node.metric("tomato_cluster_rooms_listened").await > 0 {
        assert!(
            started.elapsed() < Duration::from_secs(40),
            "the customer's node still listens to a room no client holds"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test]
async fn a_city_played_on_two_nodes_keeps_delivering_when_the_third_dies() {
    let redis = Redis::start();
    let cluster = ClusterEnv::new(&redis);
    let (a, mut b, c) = (
        cluster.start("node-a"),
        cluster.start("node-b"),
        cluster.start("node-c"),
    );
    let token = admin_token(&a).await;
    settled(
        &a,
        &token,
        &["node-a", "node-b", "node-c"],
        Duration::from_secs(20),
    )
    .await;
    // The city talks to A and C only (as a balancer would once B is gone); B owns shards and
    // dies in the middle of the run.
    let (target_a, target_c) = (format!("http://{}", a.addr), format!("http://{}", c.addr));
    let args = tomato_load::parse_from([
        "tomato-load",
        "run",
        "--target",
        target_a.as_str(),
        "--target",
        target_c.as_str(),
        "--admin-email",
        ADMIN_EMAIL,
        "--radius-km",
        "1.5",
        "--restaurants",
        "3",
        "--customers",
        "6",
        "--riders",
        "12",
        "--transport",
        "ws",
        "--interval-s",
        "1",
        "--order-rate",
        "2",
        "--duration-s",
        "12",
        "--prep-s",
        "0.2",
        "--think-s",
        "0.1",
        "--speed-kmh",
        "3600",
        "--handover-s",
        "0.1",
        "--drain-s",
        "60",
    ])
    .expect("harness arguments");
    let tomato_load::Command::Run(args) = args else {
        panic!("not a run");
    };
    let killing = async {
        tokio::time::sleep(Duration::from_secs(8)).await;
        b.kill9();
        settled(&a, &token, &["node-a", "node-c"], Duration::from_secs(10)).await
    };
    let (report, takeover) = tokio::join!(tomato_load::run::run(args), killing);
    eprintln!("takeover under load after kill -9: {takeover:?}");
    let report = report.expect("harness run");
    eprintln!("{}", report.text());
    let counts = &report.measured.counts;
    assert!(counts.orders_placed >= 10, "{}", report.text());
    assert_eq!(
        counts.orders_paid,
        counts.orders_placed,
        "{}",
        report.text()
    );
    assert_eq!(counts.delivered, counts.orders_placed, "{}", report.text());
    assert_eq!(report.undelivered, 0, "{}", report.text());

    // The audit of the store itself: every acknowledged order is there and delivered, each
    // status was applied once and in order, and its version counts exactly its writes
    // (placement is version 0, then payment and six moves), so nothing was written twice.
    assert_eq!(
        report.acknowledged_orders.len() as u64,
        counts.orders_placed
    );
    let stores = tomato_store_scylla::open(&crate::cql::config(&cluster.keyspace))
        .await
        .expect("open the cluster's keyspace");
    let ids: Vec<OrderId> = (report.acknowledged_orders.iter())
        .map(|id| id.parse().expect("an order id"))
        .collect();
    let audit = tomato::orders::audit::audit(stores.orders.as_ref(), &ids)
        .await
        .expect("read the store");
    assert_eq!(audit.audited, ids.len());
    assert!(audit.is_clean(), "the store's audit: {:?}", audit.findings);
}

/// The riders `app` finds within 1 km of `at`, by id.
async fn nearby_ids(app: &TestApp, token: &str, at: (f64, f64)) -> BTreeSet<String> {
    let path = format!(
        "/api/rider/nearby?lat={}&lon={}&radius=1000&limit=20",
        at.0, at.1
    );
    json_ok(app.get(&path, Some(token)).await).await["riders"]
        .as_array()
        .expect("riders")
        .iter()
        .map(|r| r["id"].as_str().expect("id").to_owned())
        .collect()
}

/// Which node owns the zone of `at`, as `node` answers.
async fn owner_at(node: &Node, token: &str, at: (f64, f64)) -> String {
    let path = format!("/api/admin/cluster/owner?lat={}&lon={}", at.0, at.1);
    admin_get(node, token, &path).await["owner"]
        .as_str()
        .expect("owned")
        .to_owned()
}

#[tokio::test]
async fn one_city_spreads_over_three_nodes_and_each_searches_its_own_copy() {
    let redis = Redis::start();
    let cluster = ClusterEnv::new(&redis);
    // Zones of about 0.7 km², so that a city a few km across has dozens of them.
    let (mut nodes, apps, token) =
        three_settled(&cluster, &[("TOMATO_SHARDS__ZONE_RESOLUTION", "8")]).await;
    let all = THREE;

    // The city's zones, 3 km across, are owned by all three nodes: a point of each node's.
    let mut points: BTreeMap<String, (f64, f64)> = BTreeMap::new();
    for i in 0..6 {
        for j in 0..6 {
            let at = (
                SHOP_AT.0 - 0.0135 + f64::from(i) * 0.0054,
                SHOP_AT.1 - 0.0135 + f64::from(j) * 0.0054,
            );
            let owner = owner_at(&nodes[0], &token, at).await;
            points.entry(owner).or_insert(at);
        }
    }
    assert_eq!(
        points.keys().map(String::as_str).collect::<Vec<_>>(),
        all,
        "the city's zones land on every node"
    );

    // One rider per node, each streaming to the next node from where its zone's owner is:
    // every position reaches one node, and every node must see every rider.
    let mut riders = Vec::new();
    for (n, (owner, at)) in points.iter().enumerate() {
        let streams_to = (all.iter().position(|id| id == owner).expect("a node") + 1) % 3;
        let app = &apps[streams_to];
        let (session, id) = rider(app, &format!("copy-{n}@c.test"), *at, false).await;
        crate::riders::on_duty(app, &session, &id, (at.0 + 0.0001, at.1)).await;
        riders.push((session, id, *at, streams_to));
    }
    // Every node copies the city's region once a tick has read where riders report.
    let started = Instant::now();
    for app in &apps {
        while app.metric("tomato_cluster_regions_copied").await == 0 {
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "no region copied"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let mut asked = Vec::new();
    for app in &apps {
        asked.push(app.metric("tomato_cluster_remote_searches_total").await);
    }
    for (session, id, at, streams_to) in &riders {
        // A move the others have not seen: found by every node within a second of reaching one.
        let moved = (at.0 - 0.0002, at.1);
        move_to(&apps[*streams_to], session, moved).await;
        let sent = Instant::now();
        for (n, app) in apps.iter().enumerate() {
            loop {
                let found = nearby_ids(app, &token, moved).await;
                if found.contains(id) {
                    break;
                }
                assert!(
                    sent.elapsed() < Duration::from_secs(1),
                    "node {n} did not see rider {id} within a second: {found:?}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    // Every one of those searches read the node's own memory.
    for (app, before) in apps.iter().zip(asked) {
        assert_eq!(
            app.metric("tomato_cluster_remote_searches_total").await,
            before,
            "a search asked another node"
        );
    }

    // The operations page outlines the riders' zones by owner: all three nodes, each zone's
    // owner the one the owner route names for a point inside it.
    let ops = admin_get(&nodes[1], &token, "/api/admin/ops").await;
    let zones = ops["zones"].as_array().expect("zones");
    let mut zone_owners = BTreeSet::new();
    for zone in zones {
        let corners = zone["boundary"].as_array().expect("corners");
        let mean = |k: usize| {
            corners
                .iter()
                .map(|c| c[k].as_f64().expect("a number"))
                .sum::<f64>()
                / corners.len() as f64
        };
        let path = format!("/api/admin/cluster/owner?lat={}&lon={}", mean(0), mean(1));
        let owner = admin_get(&nodes[0], &token, &path).await;
        assert_eq!(
            (&zone["zone"], &zone["owner"]),
            (&owner["zone"], &owner["owner"])
        );
        zone_owners.insert(zone["owner"].as_str().expect("owned").to_owned());
    }
    assert_eq!(
        zone_owners.iter().map(String::as_str).collect::<Vec<_>>(),
        all,
        "{ops}"
    );

    // kill -9 of the node owning the first rider's zone: the others still find that rider
    // while its zones have no owner, and after they are taken over, without a new position.
    let (_, id, at, _) = &riders[0];
    let dead = all
        .iter()
        .position(|n| *n == points.keys().next().expect("an owner"))
        .expect("a node");
    nodes[dead].kill9();
    let survivors: Vec<usize> = (0..3).filter(|n| *n != dead).collect();
    let moved = (at.0 - 0.0002, at.1);
    for n in &survivors {
        assert!(
            nearby_ids(&apps[*n], &token, moved).await.contains(id),
            "node {n} lost rider {id} when its owner died"
        );
    }
    let alive: Vec<&str> = survivors.iter().map(|n| all[*n]).collect();
    let observer = &nodes[survivors[0]];
    settled(observer, &token, &alive, Duration::from_secs(15)).await;
    for n in &survivors {
        assert!(
            nearby_ids(&apps[*n], &token, moved).await.contains(id),
            "node {n} lost rider {id} when it took over its zones"
        );
    }
}

/// The live offers the rider holds, by order id (any node answers for every node's orders).
async fn offered_to(app: &TestApp, token: &str) -> BTreeSet<String> {
    json_ok(app.get("/api/rider/offers", Some(token)).await).await["offers"]
        .as_array()
        .expect("offers")
        .iter()
        .map(|o| o["orderId"].as_str().expect("orderId").to_owned())
        .collect()
}

#[tokio::test]
async fn one_rider_nearest_to_two_orders_of_two_nodes_takes_one_and_the_other_goes_on() {
    let redis = Redis::start();
    let cluster = ClusterEnv::new(&redis);
    // Fine zones, so that two shops a few hundred metres apart are owned by two nodes; each
    // order is offered to its nearest rider alone, and an offer not taken lapses quickly.
    let settings = [
        ("TOMATO_SHARDS__ZONE_RESOLUTION", "8"),
        ("TOMATO_DISPATCH__MODE", "greedy"),
        ("TOMATO_DISPATCH__OFFER_BATCH", "1"),
        ("TOMATO_DISPATCH__OFFER_TTL_S", "3"),
    ];
    let (nodes, apps, token) = three_settled(&cluster, &settings).await;
    let all = THREE;
    // Two shops 600 m apart (east-west) whose zones two different nodes own.
    let mut shops = None;
    'search: for i in 0..8 {
        for j in 0..8 {
            let west = (
                SHOP_AT.0 - 0.01 + f64::from(i) * 0.0025,
                SHOP_AT.1 - 0.01 + f64::from(j) * 0.0025,
            );
            let east = (west.0, west.1 + 0.0055);
            let (a, b) = (
                owner_at(&nodes[0], &token, west).await,
                owner_at(&nodes[0], &token, east).await,
            );
            if a != b {
                shops = Some(((west, a), (east, b)));
                break 'search;
            }
        }
    }
    let ((west, west_owner), (east, east_owner)) = shops.expect("two zones of two nodes");
    let node_of = |id: &str| all.iter().position(|n| *n == id).expect("a node");
    let (west_node, east_node) = (node_of(&west_owner), node_of(&east_owner));
    // Each kitchen and its customer talk to the node owning the shop's zone.
    let west_shop = open_shop(&apps[west_node], "two-w@c.test", "West Kitchen", west).await;
    let east_shop = open_shop(&apps[east_node], "two-e@c.test", "East Kitchen", east).await;

    // Ravi stands halfway, nearest to both; Sita 1.5 km south, farther from both.
    let middle = (west.0, (west.1 + east.1) / 2.0);
    let far = (middle.0 - 0.0135, middle.1);
    let (ravi, ravi_id) = rider(&apps[0], "two-ravi@c.test", middle, true).await;
    let (sita, sita_id) = rider(&apps[1], "two-sita@c.test", far, true).await;
    // Both riders are in view of both shops' nodes before the orders are ready (a node copies
    // the city's region from its first tick after riders report there, and from then on sees
    // each new position).
    for node in [west_node, east_node] {
        let started = Instant::now();
        loop {
            move_to(&apps[0], &ravi, middle).await;
            move_to(&apps[1], &sita, far).await;
            tokio::time::sleep(Duration::from_millis(500)).await;
            let near_west = nearby_ids(&apps[node], &token, west).await;
            let found = nearby_ids(&apps[node], &token, far).await;
            if near_west.contains(&ravi_id) && found.contains(&sita_id) {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "node {node} does not see both riders"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    let mut orders = Vec::new();
    for (n, (node, shop)) in [(west_node, &west_shop), (east_node, &east_shop)]
        .into_iter()
        .enumerate()
    {
        let buyer = customer(&apps[node], &format!("two-buyer-{n}@c.test"), HOME_AT).await;
        buyer.add(&apps[node], &shop.items[0], 1).await;
        let order = buyer.order(&apps[node]).await["id"]
            .as_str()
            .expect("id")
            .to_owned();
        buyer.pay(&apps[node], &order).await;
        orders.push(order);
    }
    // Ready at the same moment, on two nodes: each offers its order to Ravi, its nearest.
    tokio::join!(
        make_ready(&apps[west_node], &west_shop, &orders[0]),
        make_ready(&apps[east_node], &east_shop, &orders[1]),
    );
    // Both nodes offer Ravi their order, or the later one, hearing Ravi holds the other's
    // offer, ranks him last and offers Sita: either way every order is offered.
    let both: BTreeSet<String> = orders.iter().cloned().collect();
    let started = Instant::now();
    loop {
        let held = offered_to(&apps[0], &ravi.token).await;
        let mut all_offered = held.clone();
        all_offered.extend(offered_to(&apps[1], &sita.token).await);
        if !held.is_empty() && all_offered.is_superset(&both) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the orders were not offered: Ravi holds {held:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Ravi accepts both at once, each through the node owning the order: one wins.
    let (first, second) = tokio::join!(
        accept(&apps[west_node], &ravi.token, &orders[0]),
        accept(&apps[east_node], &ravi.token, &orders[1]),
    );
    let statuses = [first.status(), second.status()];
    let won = match statuses {
        [StatusCode::OK, StatusCode::CONFLICT] => 0,
        [StatusCode::CONFLICT, StatusCode::OK] => 1,
        other => panic!("one accept must win and one be refused: {other:?}"),
    };
    let refused = if won == 0 { second } else { first };
    let code = error_code(refused, StatusCode::CONFLICT).await;
    assert!(
        ["rider_busy", "offer_not_held"].contains(&code.as_str()),
        "{code}"
    );
    let other = &orders[1 - won];
    // The other order goes on to Sita once Ravi's offer lapses; Ravi is never given it.
    let started = Instant::now();
    loop {
        if offered_to(&apps[1], &sita.token).await.contains(other) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "the other order was never offered to Sita"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let taken = json_ok(accept(&apps[1], &sita.token, other).await).await;
    assert_eq!(taken["order"]["riderId"], sita_id.as_str());
    let again = accept(&apps[0], &ravi.token, other).await;
    assert_eq!(again.status(), StatusCode::CONFLICT);
    for (n, order) in orders.iter().enumerate() {
        let stored = status_of(&apps[2], Some(&token), order).await;
        let expected = if n == won { &ravi_id } else { &sita_id };
        assert_eq!(stored["riderId"], expected.as_str(), "{stored}");
    }
}
