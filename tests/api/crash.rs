//! kill -9 of the node process in the middle of a load, on either store backend: after a restart
//! on the same store, every order and payment the node acknowledged is there, and no status was
//! applied twice. The audit reads the store back through the API, not the test's own memory.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::cli::start_node_with;
use crate::helpers::{ADMIN_EMAIL, Store, TestApp, json_ok};
use crate::world::{Customer, HOME_AT, SHOP_AT, customer, open_shop};

/// Customers placing and paying orders at once.
const CUSTOMERS: usize = 8;
/// How long the load runs before the kill.
const LOAD_FOR: Duration = Duration::from_millis(2500);

/// What the node acknowledged, per order: placed, and whether its payment was confirmed.
type Acknowledged = Arc<Mutex<HashMap<String, (usize, bool)>>>;

crate::on_both_stores!(a_node_killed_mid_load_loses_nothing_it_acknowledged);
async fn a_node_killed_mid_load_loses_nothing_it_acknowledged(store: Store) {
    let dir = tempfile::tempdir().expect("dir");
    let keyspace = crate::cql::keyspace();
    let node = match store {
        Store::Scylla => crate::cql::node(),
        Store::Embedded => String::new(),
    };
    let mut env = vec![("TOMATO_AUTH__ADMIN_EMAILS", ADMIN_EMAIL)];
    if store == Store::Scylla {
        env.extend([
            ("TOMATO_STORE__BACKEND", "scylla"),
            ("TOMATO_STORE__SCYLLA__NODES", node.as_str()),
            ("TOMATO_STORE__SCYLLA__KEYSPACE", keyspace.as_str()),
        ]);
    }
    let (child, addr) = start_node_with(dir.path(), &env);
    let mut child = KillOnDrop(child);
    let app = TestApp::attached(addr.parse::<SocketAddr>().expect("addr"));
    let shop = open_shop(&app, "crash-seller@k.test", "Crash Kitchen", SHOP_AT).await;
    let mut customers = Vec::new();
    for i in 0..CUSTOMERS {
        customers.push(customer(&app, &format!("crash-{i}@k.test"), HOME_AT).await);
    }

    let acknowledged: Acknowledged = Arc::default();
    let mut load = Vec::new();
    for (i, buyer) in customers.iter().enumerate() {
        let (client, base) = (app.client.clone(), app.url(""));
        let (buyer, item) = (buyer_of(buyer), shop.items[0].clone());
        let acknowledged = Arc::clone(&acknowledged);
        load.push(tokio::spawn(async move {
            // Each customer orders and pays in a loop until the node stops answering.
            while let Some(order) = place(&client, &base, &buyer, &item).await {
                acknowledged
                    .lock()
                    .expect("lock")
                    .insert(order.clone(), (i, false));
                if !pay(&client, &base, &buyer.0, &order).await {
                    break;
                }
                acknowledged.lock().expect("lock").insert(order, (i, true));
            }
        }));
    }
    tokio::time::sleep(LOAD_FOR).await;
    child.0.kill().expect("kill -9 the node");
    child.0.wait().expect("reap the node");
    for task in load {
        task.await.expect("load task");
    }
    let acknowledged = acknowledged.lock().expect("lock").clone();
    assert!(
        acknowledged.values().filter(|(_, paid)| *paid).count() >= CUSTOMERS,
        "the load got orders through before the kill ({} acknowledged)",
        acknowledged.len()
    );

    let (child, addr) = start_node_with(dir.path(), &env);
    let _child = KillOnDrop(child);
    let app = TestApp::attached(addr.parse::<SocketAddr>().expect("addr"));
    for (order, (owner, paid)) in &acknowledged {
        let response = app
            .get(&format!("/api/order/{order}"), customers[*owner].token())
            .await;
        assert_eq!(response.status(), StatusCode::OK, "order {order} survived");
        let stored = json_ok(response).await["order"].clone();
        if *paid {
            assert_eq!(
                stored["paymentStatus"], "paid",
                "payment of {order} survived"
            );
        }
        let statuses: Vec<&str> = stored["history"]
            .as_array()
            .expect("history")
            .iter()
            .map(|h| h["status"].as_str().expect("status"))
            .collect();
        let mut unique = statuses.clone();
        unique.dedup();
        assert_eq!(unique, statuses, "no status of {order} applied twice");
    }
    // Each customer's list, page by page, holds every acknowledged order once.
    for (i, buyer) in customers.iter().enumerate() {
        let mut listed: Vec<String> = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let path = match &cursor {
                Some(cursor) => format!("/api/order/myorder?limit=200&cursor={cursor}"),
                None => "/api/order/myorder?limit=200".to_owned(),
            };
            let page = json_ok(app.get(&path, buyer.token()).await).await;
            listed.extend(
                page["orders"]
                    .as_array()
                    .expect("orders")
                    .iter()
                    .map(|o| o["id"].as_str().expect("id").to_owned()),
            );
            match page["nextCursor"].as_str() {
                Some(next) => cursor = Some(next.to_owned()),
                None => break,
            }
        }
        let ids: Vec<&str> = listed.iter().map(String::as_str).collect();
        let mut unique = ids.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), ids.len(), "no order listed twice");
        for (order, (owner, _)) in &acknowledged {
            if *owner == i {
                assert!(ids.contains(&order.as_str()), "{order} is listed");
            }
        }
    }
}

/// A node process that is killed when the test ends, passed or not.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A customer's token and address.
fn buyer_of(customer: &Customer) -> (String, String) {
    (customer.session.token.clone(), customer.address_id.clone())
}

/// Fills the cart and places an order; the order id once the node acknowledged it.
async fn place(
    client: &reqwest::Client,
    base: &str,
    (token, address): &(String, String),
    item: &str,
) -> Option<String> {
    let added = client
        .post(format!("{base}/api/cart/new"))
        .bearer_auth(token)
        .json(&json!({ "itemId": item, "quantity": 1 }))
        .send()
        .await
        .ok()?;
    if !added.status().is_success() {
        return None;
    }
    let placed = client
        .post(format!("{base}/api/order/new"))
        .bearer_auth(token)
        .json(&json!({ "addressId": address, "paymentMethod": "test" }))
        .send()
        .await
        .ok()?;
    if placed.status() != StatusCode::CREATED {
        return None;
    }
    let body: Value = placed.json().await.ok()?;
    body["order"]["id"].as_str().map(str::to_owned)
}

/// Pays an order with the test provider; whether the node acknowledged it.
async fn pay(client: &reqwest::Client, base: &str, token: &str, order: &str) -> bool {
    let Ok(paid) = client
        .post(format!("{base}/api/payment/verify"))
        .bearer_auth(token)
        .json(&json!({ "orderId": order }))
        .send()
        .await
    else {
        return false;
    };
    paid.status() == StatusCode::OK && paid.json::<Value>().await.is_ok()
}
