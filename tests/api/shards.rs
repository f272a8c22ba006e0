//! A shard handed over in process: every shard of a node is stopped and started again, as a
//! node losing and winning its leases in a cluster would, with orders in every state and a rider
//! carrying one. While stopped, commands get the typed refusal; afterwards every open order
//! carries on from the store, and the store shows nothing lost or applied twice.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::dispatch::{accept, make_ready, rider_status};
use crate::helpers::{
    INTERNAL_KEY, Store, TestApp, error_code, json_ok, spawn_app_on, spawn_app_with,
};
use crate::riders::{move_to, rider};
use crate::world::{HOME_AT, SHOP_AT, customer, open_shop, paid_order};

const SHARDS: u32 = 4;

async fn drill(app: &TestApp, shard: u32, action: &str) -> Value {
    let response = app
        .client
        .post(app.url(&format!("/api/v1/internal/shards/{shard}/{action}")))
        .header("x-internal-key", INTERNAL_KEY)
        .send()
        .await
        .expect("send");
    json_ok(response).await
}

async fn order_of(app: &TestApp, token: Option<&str>, id: &str) -> Value {
    json_ok(app.get(&format!("/api/order/{id}"), token).await).await["order"].clone()
}

/// Accepts `order` for the rider, retrying while the offer has not reached it yet.
async fn accept_when_offered(app: &TestApp, token: &str, order: &str) -> Value {
    for _ in 0..100 {
        let response = accept(app, token, order).await;
        if response.status() == StatusCode::OK {
            return json_ok(response).await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("order {order} was never offered to the rider");
}

fn statuses(order: &Value) -> Vec<String> {
    order["history"]
        .as_array()
        .expect("history")
        .iter()
        .map(|h| h["status"].as_str().expect("status").to_owned())
        .collect()
}

/// The ids of the orders `token`'s rider holds a live offer of.
async fn offers_held(app: &TestApp, token: &str) -> Vec<String> {
    let held = json_ok(app.get("/api/rider/offers", Some(token)).await).await;
    held["offers"]
        .as_array()
        .expect("offers")
        .iter()
        .map(|offer| offer["orderId"].as_str().expect("orderId").to_owned())
        .collect()
}

crate::on_both_stores!(stopping_and_starting_every_shard_loses_nothing_and_applies_nothing_twice);
async fn stopping_and_starting_every_shard_loses_nothing_and_applies_nothing_twice(store: Store) {
    let app = spawn_app_on(
        store,
        &[
            ("TOMATO_TESTING__FAULT_INJECTION", "true"),
            ("TOMATO_SHARDS__COUNT", &SHARDS.to_string()),
            ("TOMATO_ORDERS__PAYMENT_TIMEOUT_S", "6"),
        ],
    )
    .await;
    let shop = open_shop(&app, "handoff-seller@s.test", "Handoff Kitchen", SHOP_AT).await;
    // Carried: assigned to Ravi before the hand-off.
    let (carried_buyer, carried) = paid_order(&app, &shop, "handoff-a@s.test").await;
    let (ravi, ravi_id) = rider(&app, "handoff-ravi@s.test", SHOP_AT, true).await;
    make_ready(&app, &shop, &carried).await;
    accept_when_offered(&app, &ravi.token, &carried).await;
    // Unpaid: must still expire on time after the hand-off.
    let unpaid_buyer = customer(&app, "handoff-b@s.test", HOME_AT).await;
    unpaid_buyer.add(&app, &shop.items[0], 1).await;
    let unpaid = unpaid_buyer.order(&app).await;
    let unpaid_id = unpaid["id"].as_str().expect("id").to_owned();
    // Waiting: paid and accepted by the kitchen, made ready while the shards are stopped.
    let (_, waiting) = paid_order(&app, &shop, "handoff-c@s.test").await;
    json_ok(shop.set_status(&app, &waiting, "accepted").await).await;
    json_ok(shop.set_status(&app, &waiting, "preparing").await).await;
    // Offered: ready for a rider, and offered to Meera when the shards stop.
    let (_, offered) = paid_order(&app, &shop, "handoff-d@s.test").await;
    let (meera, meera_id) = rider(&app, "handoff-meera@s.test", SHOP_AT, true).await;
    make_ready(&app, &shop, &offered).await;
    let mut held = Vec::new();
    for _ in 0..50 {
        held = offers_held(&app, &meera.token).await;
        if held.contains(&offered) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(held.contains(&offered), "Meera was offered the ready order");

    let mut retired = 0;
    for shard in 0..SHARDS {
        retired += drill(&app, shard, "stop").await["orders"]
            .as_u64()
            .expect("orders");
    }
    assert!(
        retired >= 3,
        "the open orders' actors were retired ({retired})"
    );

    // While stopped, every command to an order or a rider is refused, typed, and changes
    // nothing.
    assert_eq!(
        error_code(
            shop.set_status(&app, &waiting, "ready_for_rider").await,
            StatusCode::SERVICE_UNAVAILABLE
        )
        .await,
        "shard_moving"
    );
    assert_eq!(
        error_code(
            rider_status(&app, &ravi.token, &carried, "picked_up").await,
            StatusCode::SERVICE_UNAVAILABLE
        )
        .await,
        "shard_moving"
    );
    let refused = app
        .put(
            "/api/rider/location",
            Some(&ravi.token),
            &json!({ "lat": SHOP_AT.0, "lon": SHOP_AT.1 }),
        )
        .await;
    assert_eq!(
        error_code(refused, StatusCode::SERVICE_UNAVAILABLE).await,
        "shard_moving"
    );
    let still = order_of(&app, shop.token(), &waiting).await;
    assert_eq!(still["status"], "preparing");
    assert!(
        offers_held(&app, &meera.token).await.is_empty(),
        "the offers went with their shard"
    );

    let mut resumed = 0;
    for shard in 0..SHARDS {
        resumed += drill(&app, shard, "start").await["orders"]
            .as_u64()
            .expect("orders");
    }
    assert_eq!(
        resumed, retired,
        "every retired order resumed from the store"
    );

    // Dispatch of the ready order resumed: it is offered again to a rider who reports a
    // position after the hand-off (riders are soft state and reappear with their next one).
    move_to(&app, &meera, SHOP_AT).await;
    let taken = accept_when_offered(&app, &meera.token, &offered).await;
    assert_eq!(taken["order"]["riderId"], meera_id.as_str());

    // The kitchen carries on, and its next ready order is offered too.
    json_ok(shop.set_status(&app, &waiting, "ready_for_rider").await).await;
    let (asha, asha_id) = rider(&app, "handoff-asha@s.test", SHOP_AT, true).await;
    let taken = accept_when_offered(&app, &asha.token, &waiting).await;
    assert_eq!(taken["order"]["riderId"], asha_id.as_str());

    // The carried order is picked up and delivered by its rider, who still holds it: its new
    // actor reloaded what it carries, so it cannot take another.
    move_to(&app, &ravi, SHOP_AT).await;
    assert_eq!(
        error_code(
            accept(&app, &ravi.token, &waiting).await,
            StatusCode::CONFLICT
        )
        .await,
        "rider_busy"
    );
    json_ok(rider_status(&app, &ravi.token, &carried, "picked_up").await).await;
    let done = json_ok(rider_status(&app, &ravi.token, &carried, "delivered").await).await;
    assert_eq!(done["order"]["riderId"], ravi_id.as_str());

    // The unpaid order's deadline survived: it expires on time.
    let mut expired = false;
    for _ in 0..100 {
        if order_of(&app, unpaid_buyer.token(), &unpaid_id).await["status"] == "expired" {
            expired = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(expired, "the unpaid order expired after the hand-off");

    // Audit of the store: every order went through each status once, in order.
    let delivered = order_of(&app, carried_buyer.token(), &carried).await;
    assert_eq!(
        statuses(&delivered),
        [
            "placed",
            "accepted",
            "preparing",
            "ready_for_rider",
            "rider_assigned",
            "picked_up",
            "delivered"
        ]
    );
    let assigned = order_of(&app, shop.token(), &waiting).await;
    assert_eq!(
        statuses(&assigned),
        [
            "placed",
            "accepted",
            "preparing",
            "ready_for_rider",
            "rider_assigned"
        ]
    );
    assert_eq!(
        statuses(&order_of(&app, unpaid_buyer.token(), &unpaid_id).await),
        ["placed", "expired"]
    );
    // Ravi is free again, Asha busy with the order she took.
    let current = json_ok(
        app.get("/api/rider/orders/current", Some(&asha.token))
            .await,
    )
    .await;
    assert_eq!(current["order"]["id"], waiting.as_str());
}

#[tokio::test]
async fn shard_drills_need_fault_injection_and_a_real_shard() {
    let app = spawn_app_with(&[("TOMATO_SHARDS__COUNT", &SHARDS.to_string())]).await;
    let response = app
        .client
        .post(app.url("/api/v1/internal/shards/0/stop"))
        .header("x-internal-key", INTERNAL_KEY)
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), StatusCode::NOT_FOUND);

    let app = spawn_app_with(&[
        ("TOMATO_TESTING__FAULT_INJECTION", "true"),
        ("TOMATO_SHARDS__COUNT", &SHARDS.to_string()),
    ])
    .await;
    let response = app
        .client
        .post(app.url(&format!("/api/v1/internal/shards/{SHARDS}/stop")))
        .header("x-internal-key", INTERNAL_KEY)
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let response = app
        .client
        .post(app.url("/api/v1/internal/shards/0/pause"))
        .header("x-internal-key", INTERNAL_KEY)
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), StatusCode::NOT_FOUND, "no such drill");
    let response = app
        .client
        .post(app.url("/api/v1/internal/shards/0/stop"))
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn the_owner_of_a_point_names_its_zone_shard_and_node() {
    let app = spawn_app_with(&[
        ("TOMATO_TESTING__FAULT_INJECTION", "true"),
        ("TOMATO_SHARDS__COUNT", &SHARDS.to_string()),
        ("TOMATO_SHARDS__ZONE_RESOLUTION", "7"),
    ])
    .await;
    let admin = app.admin().await;
    let owner_of = |(lat, lon): (f64, f64)| format!("/api/admin/cluster/owner?lat={lat}&lon={lon}");
    let at = tomato_domain::LatLon::new(SHOP_AT.0, SHOP_AT.1).expect("point");
    let map = tomato_shards::ShardMap::new(7, 5, SHARDS).expect("map");
    let zone = at.cell(h3o::Resolution::Seven);

    let owner = json_ok(app.get(&owner_of(SHOP_AT), Some(&admin.token)).await).await;
    assert_eq!(
        owner,
        json!({ "zone": zone.to_string(), "shard": map.shard_of(at).0, "owner": "single", "epoch": 1 })
    );
    // Another zone of the same city: another cell, its own shard by the same map.
    let across = (SHOP_AT.0 + 0.05, SHOP_AT.1 + 0.05);
    let far = tomato_domain::LatLon::new(across.0, across.1).expect("point");
    let other = json_ok(app.get(&owner_of(across), Some(&admin.token)).await).await;
    assert_ne!(other["zone"], owner["zone"]);
    assert_eq!(other["shard"], map.shard_of(far).0);

    // While the shard is stopped nobody serves it.
    drill(&app, map.shard_of(at).0, "stop").await;
    let moving = json_ok(app.get(&owner_of(SHOP_AT), Some(&admin.token)).await).await;
    assert_eq!(
        (&moving["owner"], &moving["epoch"]),
        (&Value::Null, &json!(0))
    );
    drill(&app, map.shard_of(at).0, "start").await;

    for bad in [
        "/api/admin/cluster/owner?lat=91&lon=77.6",
        "/api/admin/cluster/owner?lat=NaN&lon=77.6",
        "/api/admin/cluster/owner?lat=12.9",
    ] {
        let response = app.get(bad, Some(&admin.token)).await;
        error_code(response, StatusCode::BAD_REQUEST).await;
    }
    let buyer = app.dev_login("owner-buyer@s.test", "Buyer").await;
    let response = app.get(&owner_of(SHOP_AT), Some(&buyer.token)).await;
    error_code(response, StatusCode::FORBIDDEN).await;
    let response = app.get(&owner_of(SHOP_AT), None).await;
    error_code(response, StatusCode::UNAUTHORIZED).await;
}
