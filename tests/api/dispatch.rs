//! Dispatch end to end, with real sockets: offers reach the nearest riders' apps, exactly one
//! accept wins, offers time out and move on, stale riders are never offered, and a delivery runs
//! to the end with the customer watching the rider move.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{Store, TestApp, error_code, json_ok, spawn_app_on, spawn_app_with};
use crate::riders::{move_to, rider};
use crate::sockets::SocketIoClient;
use crate::world::{HOME_AT, SHOP_AT, Shop, open_shop, paid_order};

/// Moves a paid order through the kitchen to `ready_for_rider`.
pub async fn make_ready(app: &TestApp, shop: &Shop, order: &str) {
    for status in ["accepted", "preparing", "ready_for_rider"] {
        json_ok(shop.set_status(app, order, status).await).await;
    }
}

pub async fn rider_status(
    app: &TestApp,
    token: &str,
    order: &str,
    status: &str,
) -> reqwest::Response {
    app.put(
        &format!("/api/rider/orders/{order}/status"),
        Some(token),
        &json!({ "status": status }),
    )
    .await
}

pub async fn accept(app: &TestApp, token: &str, order: &str) -> reqwest::Response {
    app.request(
        reqwest::Method::POST,
        &format!("/api/rider/orders/{order}/accept"),
        Some(token),
        None,
    )
    .await
}

crate::on_both_stores!(a_full_delivery_with_the_customer_watching);
async fn a_full_delivery_with_the_customer_watching(store: Store) {
    let app = spawn_app_on(store, &[]).await;
    let shop = open_shop(&app, "d-seller@x.test", "Dispatch Kitchen", SHOP_AT).await;
    let (buyer, order) = paid_order(&app, &shop, "d-buyer@x.test").await;
    let (ravi, ravi_id) = rider(&app, "ravi@d.test", (12.9760, 77.6060), true).await;
    let (_far, _) = rider(&app, "far@d.test", (13.0300, 77.6060), true).await;
    let mut ravi_app = SocketIoClient::connect(&app, Some(&ravi.token));
    ravi_app.connected().await;
    let mut buyer_app = SocketIoClient::connect(&app, buyer.token());
    buyer_app.connected().await;

    make_ready(&app, &shop, &order).await;
    let offer = ravi_app.event("order:available").await;
    assert_eq!(offer["orderId"], order.as_str());
    assert_eq!(offer["restaurantName"], "Dispatch Kitchen");
    assert_eq!(
        offer["pickup"],
        json!({ "lat": SHOP_AT.0, "lon": SHOP_AT.1 })
    );
    assert_eq!(
        offer["dropoff"],
        json!({ "lat": HOME_AT.0, "lon": HOME_AT.1 })
    );
    assert_eq!(offer["riderAmount"], 4 * 1700);
    assert!(offer["distanceKm"].as_f64().is_some_and(|d| d > 3.0));
    assert!(
        offer["expiresAt"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z'))
    );

    let assigned = json_ok(accept(&app, &ravi.token, &order).await).await["order"].clone();
    assert_eq!(assigned["status"], "rider_assigned");
    assert_eq!(assigned["riderId"], ravi_id.as_str());
    assert_eq!(assigned["riderPhone"], "+919845011111");
    let heard = buyer_app.event("order:rider_assigned").await;
    assert_eq!(heard["order"]["riderId"], ravi_id.as_str());
    let current = json_ok(
        app.get("/api/rider/orders/current", Some(&ravi.token))
            .await,
    )
    .await;
    assert_eq!(current["order"]["id"], order.as_str());
    let seen = json_ok(
        app.get(&format!("/api/order/{order}"), Some(&ravi.token))
            .await,
    )
    .await;
    assert_eq!(
        seen["order"]["status"], "rider_assigned",
        "the assigned rider may read it"
    );

    // The customer watches the rider move.
    move_to(&app, &ravi, (12.9740, 77.6200)).await;
    let moved = buyer_app.event("rider:location").await;
    assert_eq!(moved["orderId"], order.as_str());
    assert_eq!(moved["lat"], 12.974);
    assert_eq!(moved["lon"], 77.62);
    assert!(moved["at"].is_string());

    let early = rider_status(&app, &ravi.token, &order, "delivered").await;
    assert_eq!(
        error_code(early, StatusCode::CONFLICT).await,
        "invalid_transition"
    );
    json_ok(rider_status(&app, &ravi.token, &order, "picked_up").await).await;
    let done = json_ok(rider_status(&app, &ravi.token, &order, "delivered").await).await;
    assert_eq!(done["order"]["status"], "delivered");
    let history: Vec<&str> = done["order"]["history"]
        .as_array()
        .expect("history")
        .iter()
        .map(|h| h["status"].as_str().expect("s"))
        .collect();
    assert_eq!(
        history,
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
    let update = buyer_app
        .event_where("order:update", |d| d["status"] == "delivered")
        .await;
    assert_eq!(update["orderId"], order.as_str());

    // Free again: no current order, and dispatch can see the rider.
    let current = json_ok(
        app.get("/api/rider/orders/current", Some(&ravi.token))
            .await,
    )
    .await;
    assert_eq!(current, json!({ "order": null }));
    let admin = app.admin().await;
    let mut free = false;
    for _ in 0..50 {
        let near = json_ok(
            app.get(
                "/api/rider/nearby?lat=12.974&lon=77.62&radius=500",
                Some(&admin.token),
            )
            .await,
        )
        .await;
        if near["riders"]
            .as_array()
            .is_some_and(|r| r.iter().any(|x| x["id"] == ravi_id.as_str()))
        {
            free = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(free, "the rider is available again after delivery");
}

crate::on_both_stores!(of_fifty_riders_accepting_at_once_exactly_one_wins);
async fn of_fifty_riders_accepting_at_once_exactly_one_wins(store: Store) {
    let app = spawn_app_on(
        store,
        &[
            ("TOMATO_DISPATCH__OFFER_BATCH", "50"),
            ("TOMATO_DISPATCH__SEARCH_RADIUS_M", "20000"),
        ],
    )
    .await;
    let shop = open_shop(&app, "race-seller@d.test", "Race Kitchen", SHOP_AT).await;
    let (_, order) = paid_order(&app, &shop, "race-buyer@d.test").await;
    let mut riders = Vec::new();
    for i in 0..50 {
        let at = (SHOP_AT.0 + f64::from(i) * 0.001, SHOP_AT.1);
        riders.push(rider(&app, &format!("r{i}@race.test"), at, true).await.0);
    }
    make_ready(&app, &shop, &order).await;
    // Offers go out as the order becomes ready; give the wave a moment.
    tokio::time::sleep(Duration::from_millis(200)).await;

    let attempts = riders.iter().map(|rider| {
        let (client, url, token) = (
            app.client.clone(),
            app.url(&format!("/api/rider/orders/{order}/accept")),
            rider.token.clone(),
        );
        tokio::spawn(async move { client.post(url).bearer_auth(token).send().await })
    });
    let mut won = Vec::new();
    let mut codes = std::collections::BTreeMap::<String, usize>::new();
    for attempt in attempts {
        let response = attempt.await.expect("task").expect("send");
        if response.status() == StatusCode::OK {
            won.push(json_ok(response).await["order"]["riderId"].clone());
        } else {
            *codes
                .entry(error_code(response, StatusCode::CONFLICT).await)
                .or_default() += 1;
        }
    }
    assert_eq!(won.len(), 1, "exactly one winner; refusals: {codes:?}");
    assert_eq!(codes.get("already_taken"), Some(&49), "{codes:?}");
    let order = json_ok(app.get(&format!("/api/order/{order}"), shop.token()).await).await;
    assert_eq!(order["order"]["riderId"], won[0]);
}

#[tokio::test]
async fn offers_time_out_or_get_rejected_and_move_to_the_next_rider() {
    let app = spawn_app_with(&[
        ("TOMATO_DISPATCH__OFFER_BATCH", "1"),
        ("TOMATO_DISPATCH__OFFER_TTL_S", "1"),
    ])
    .await;
    let shop = open_shop(&app, "ttl-seller@d.test", "Slow Kitchen", SHOP_AT).await;
    let (_, order) = paid_order(&app, &shop, "ttl-buyer@d.test").await;
    let (near, _) = rider(&app, "near@ttl.test", (12.9757, 77.6051), true).await;
    let (middle, _) = rider(&app, "middle@ttl.test", (12.9800, 77.6050), true).await;
    let (far, far_id) = rider(&app, "far@ttl.test", (12.9900, 77.6050), true).await;
    let mut near_app = SocketIoClient::connect(&app, Some(&near.token));
    near_app.connected().await;
    let mut middle_app = SocketIoClient::connect(&app, Some(&middle.token));
    middle_app.connected().await;
    let mut far_app = SocketIoClient::connect(&app, Some(&far.token));
    far_app.connected().await;

    make_ready(&app, &shop, &order).await;
    assert_eq!(
        near_app.event("order:available").await["orderId"],
        order.as_str(),
        "nearest first"
    );
    let held = json_ok(
        app.request(
            reqwest::Method::GET,
            "/api/rider/offers",
            Some(&near.token),
            None,
        )
        .await,
    )
    .await;
    assert_eq!(held["offers"][0]["orderId"], order.as_str(), "{held}");
    // The nearest lets it expire: after the TTL the offer moves to the next rider.
    let next = middle_app.event("order:available").await;
    assert_eq!(next["orderId"], order.as_str());
    let held = json_ok(
        app.request(
            reqwest::Method::GET,
            "/api/rider/offers",
            Some(&near.token),
            None,
        )
        .await,
    )
    .await;
    assert_eq!(
        held["offers"],
        json!([]),
        "an expired offer is no longer held"
    );
    let late = accept(&app, &near.token, &order).await;
    assert_eq!(
        error_code(late, StatusCode::CONFLICT).await,
        "offer_not_held"
    );
    // The middle one says no: the next wave goes out at once.
    let rejected = app
        .request(
            reqwest::Method::POST,
            &format!("/api/rider/orders/{order}/reject"),
            Some(&middle.token),
            None,
        )
        .await;
    assert_eq!(rejected.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        far_app.event("order:available").await["orderId"],
        order.as_str()
    );
    let won = json_ok(accept(&app, &far.token, &order).await).await;
    assert_eq!(won["order"]["riderId"], far_id.as_str());
    let not_mine = rider_status(&app, &near.token, &order, "picked_up").await;
    assert_eq!(
        error_code(not_mine, StatusCode::FORBIDDEN).await,
        "forbidden"
    );
}

#[tokio::test]
async fn stale_riders_are_never_offered_and_nobody_means_dispatch_pending() {
    let app = spawn_app_with(&[("TOMATO_DISPATCH__STALE_AFTER_S", "1")]).await;
    let shop = open_shop(&app, "stale-seller@d.test", "Quiet Kitchen", SHOP_AT).await;
    let (_, order) = paid_order(&app, &shop, "stale-buyer@d.test").await;
    let (silent, _) = rider(&app, "silent@d.test", SHOP_AT, true).await;
    let mut kitchen = SocketIoClient::connect(&app, shop.token());
    kitchen.connected().await;
    tokio::time::sleep(Duration::from_millis(2200)).await;

    make_ready(&app, &shop, &order).await;
    let pending: Value = kitchen.event("order:dispatch_pending").await;
    assert_eq!(pending["orderId"], order.as_str());
    assert!(pending["attempts"].as_u64().is_some_and(|a| a >= 1));
    let response = accept(&app, &silent.token, &order).await;
    assert_eq!(
        error_code(response, StatusCode::CONFLICT).await,
        "offer_not_held",
        "a stale rider gets no offer"
    );

    // Once the rider reports again, a later round offers it the order.
    let mut silent_app = SocketIoClient::connect(&app, Some(&silent.token));
    silent_app.connected().await;
    for _ in 0..5 {
        move_to(&app, &silent, SHOP_AT).await;
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    assert_eq!(
        silent_app.event("order:available").await["orderId"],
        order.as_str()
    );
}

#[tokio::test]
async fn a_rider_crossing_a_shard_border_keeps_its_order() {
    // Small zones: a ride of a few kilometres crosses several shard borders.
    // The ride is replayed faster than a rider moves: above the default position rate.
    let app = spawn_app_with(&[
        ("TOMATO_SHARDS__ZONE_RESOLUTION", "7"),
        ("TOMATO_LIMITS__POSITIONS_PER_SECOND", "1000"),
        ("TOMATO_LIMITS__POSITIONS_BURST", "1000"),
    ])
    .await;
    let shop = open_shop(&app, "border-seller@d.test", "Border Kitchen", SHOP_AT).await;
    let (buyer, order) = paid_order(&app, &shop, "border-buyer@d.test").await;
    let (ravi, ravi_id) = rider(&app, "border@d.test", SHOP_AT, true).await;
    make_ready(&app, &shop, &order).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    json_ok(accept(&app, &ravi.token, &order).await).await;
    let mut buyer_app = SocketIoClient::connect(&app, buyer.token());
    buyer_app.connected().await;

    for step in 1..=30 {
        let at = (
            SHOP_AT.0 - f64::from(step) * 0.0005,
            SHOP_AT.1 + f64::from(step) * 0.0012,
        );
        move_to(&app, &ravi, at).await;
        let heard = buyer_app.event("rider:location").await;
        assert_eq!(heard["orderId"], order.as_str(), "step {step}");
    }
    json_ok(rider_status(&app, &ravi.token, &order, "picked_up").await).await;
    let done = json_ok(rider_status(&app, &ravi.token, &order, "delivered").await).await;
    assert_eq!(done["order"]["riderId"], ravi_id.as_str());
}

crate::on_both_stores!(a_restart_in_the_middle_of_dispatch_resumes_it);
async fn a_restart_in_the_middle_of_dispatch_resumes_it(store: Store) {
    let mut app = spawn_app_on(store, &[]).await;
    let shop = open_shop(&app, "resume-seller@d.test", "Resume Kitchen", SHOP_AT).await;
    let (_, order) = paid_order(&app, &shop, "resume-buyer@d.test").await;
    let (ravi, _) = rider(&app, "resume@d.test", SHOP_AT, true).await;
    make_ready(&app, &shop, &order).await;
    app.restart().await;
    // The resumed order offers itself again; the rider (seen just before the restart) is fresh.
    let mut won = None;
    for _ in 0..50 {
        let response = accept(&app, &ravi.token, &order).await;
        if response.status() == StatusCode::OK {
            won = Some(json_ok(response).await);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        won.expect("accepted after the restart")["order"]["status"],
        "rider_assigned"
    );
}

#[tokio::test]
async fn a_panicking_rider_actor_restarts_while_its_shard_keeps_serving() {
    let app = spawn_app_with(&[("TOMATO_TESTING__FAULT_INJECTION", "true")]).await;
    let shop = open_shop(&app, "rp-seller@d.test", "Panic Kitchen", SHOP_AT).await;
    let (buyer, order) = paid_order(&app, &shop, "rp-buyer@d.test").await;
    let (ravi, ravi_id) = rider(&app, "rp-ravi@d.test", SHOP_AT, true).await;
    let (neighbour, neighbour_id) =
        rider(&app, "rp-neighbour@d.test", (12.9800, 77.6050), true).await;
    make_ready(&app, &shop, &order).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    json_ok(accept(&app, &ravi.token, &order).await).await;
    let mut buyer_app = SocketIoClient::connect(&app, buyer.token());
    buyer_app.connected().await;

    let before = app.metric("tomato_rider_actor_restarts_total").await;
    let armed = app
        .client
        .post(app.url(&format!("/api/v1/internal/fault/rider/{ravi_id}")))
        .header("x-internal-key", crate::helpers::INTERNAL_KEY)
        .send()
        .await
        .expect("send");
    assert_eq!(armed.status(), StatusCode::NO_CONTENT);
    // This update's fan-out panics inside the actor; the position itself was applied.
    move_to(&app, &ravi, (12.9760, 77.6070)).await;
    // Patient: on a loaded machine the panic's unwinding and the restart take seconds.
    let mut restarted = false;
    for _ in 0..200 {
        if app.metric("tomato_rider_actor_restarts_total").await == before + 1 {
            restarted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(restarted, "the supervisor restarted the rider actor");

    // The shard kept serving its other rider...
    move_to(&app, &neighbour, (12.9801, 77.6051)).await;
    let admin = app.admin().await;
    let near = json_ok(
        app.get(
            "/api/rider/nearby?lat=12.98&lon=77.605&radius=300",
            Some(&admin.token),
        )
        .await,
    )
    .await;
    assert_eq!(near["riders"][0]["id"], neighbour_id.as_str());
    // ...and the restarted actor reloaded the order it carries: the customer still watches.
    move_to(&app, &ravi, (12.9765, 77.6080)).await;
    let moved = buyer_app
        .event_where("rider:location", |d| d["lon"] == 77.608)
        .await;
    assert_eq!(moved["orderId"], order.as_str());
}

crate::on_both_stores!(a_busy_rider_cannot_take_a_second_order);
async fn a_busy_rider_cannot_take_a_second_order(store: Store) {
    let app = spawn_app_on(store, &[]).await;
    let shop = open_shop(&app, "busy-seller@d.test", "Busy Kitchen", SHOP_AT).await;
    let (_, first) = paid_order(&app, &shop, "busy-a@d.test").await;
    let (_, second) = paid_order(&app, &shop, "busy-b@d.test").await;
    let (ravi, _) = rider(&app, "busy@d.test", SHOP_AT, true).await;
    make_ready(&app, &shop, &first).await;
    make_ready(&app, &shop, &second).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (a, b) = tokio::join!(
        accept(&app, &ravi.token, &first),
        accept(&app, &ravi.token, &second)
    );
    let statuses = [a.status(), b.status()];
    assert!(statuses.contains(&StatusCode::OK), "{statuses:?}");
    let refused = if a.status() == StatusCode::OK { b } else { a };
    assert_eq!(
        error_code(refused, StatusCode::CONFLICT).await,
        "rider_busy"
    );
    assert_eq!(app.metric("tomato_dispatch_busy_claims_total").await, 1);
}

#[tokio::test]
async fn a_rider_holding_an_offer_is_passed_over_for_the_next_order() {
    let app = spawn_app_with(&[("TOMATO_DISPATCH__OFFER_BATCH", "1")]).await;
    let shop = open_shop(&app, "two-seller@d.test", "Two Kitchen", SHOP_AT).await;
    let (_, first) = paid_order(&app, &shop, "two-buyer1@d.test").await;
    let (_, second) = paid_order(&app, &shop, "two-buyer2@d.test").await;
    let (near, _) = rider(&app, "near@two.test", (12.9757, 77.6051), true).await;
    let (next, _) = rider(&app, "next@two.test", (12.9800, 77.6050), true).await;
    let mut near_app = SocketIoClient::connect(&app, Some(&near.token));
    near_app.connected().await;
    let mut next_app = SocketIoClient::connect(&app, Some(&next.token));
    next_app.connected().await;

    make_ready(&app, &shop, &first).await;
    assert_eq!(
        near_app.event("order:available").await["orderId"],
        first.as_str()
    );
    // The nearest rider is still thinking about the first order: the second goes to the next.
    make_ready(&app, &shop, &second).await;
    assert_eq!(
        next_app.event("order:available").await["orderId"],
        second.as_str()
    );
    let held = json_ok(
        app.request(
            reqwest::Method::GET,
            "/api/rider/offers",
            Some(&near.token),
            None,
        )
        .await,
    )
    .await;
    assert_eq!(held["offers"].as_array().map(Vec::len), Some(1), "{held}");
}
