//! Batched dispatch end to end (`dispatch.mode = "batched"`): a window gives each order the rider
//! of the least total pickup where nearest-first would not, a rider who took one order is never
//! offered the other, an order that holds (`dispatch.batch_hold_m`) waits for a nearer rider
//! rather than take a far one, and an order nobody takes within `offer_ttl_s` is offered in waves.

use std::time::Duration;

use reqwest::StatusCode;

use crate::dispatch::{accept, make_ready};
use crate::helpers::{TestApp, json_ok, spawn_app_with};
use crate::riders::{on_duty, rider};
use crate::sockets::SocketIoClient;
use crate::world::{SHOP_AT, open_shop, paid_order};

/// `metres` north of `from` (a degree of latitude is about 111.2 km).
fn north(from: (f64, f64), metres: f64) -> (f64, f64) {
    (from.0 + metres / 111_195.0, from.1)
}

async fn batched(extra: &[(&str, &str)]) -> TestApp {
    let mut settings = vec![
        ("TOMATO_DISPATCH__MODE", "batched"),
        ("TOMATO_DISPATCH__BATCH_WINDOW_MS", "200"),
    ];
    settings.extend_from_slice(extra);
    spawn_app_with(&settings).await
}

#[tokio::test]
async fn a_window_gives_each_order_the_rider_of_the_least_total_pickup() {
    let app = batched(&[]).await;
    // Kitchen A, kitchen B 1 km north; rider "between" 600 m north of A (400 m from B),
    // rider "behind" 700 m south of A. Nearest-first serving A first gives A "between" and
    // B "behind": 600 + 1 700 m. The least total is A "behind", B "between": 700 + 400 m.
    let a_at = SHOP_AT;
    let b_at = north(SHOP_AT, 1_000.0);
    let shop_a = open_shop(&app, "batch-a@b.test", "Kitchen A", a_at).await;
    let shop_b = open_shop(&app, "batch-b@b.test", "Kitchen B", b_at).await;
    let (_, order_a) = paid_order(&app, &shop_a, "batch-buyer-a@b.test").await;
    let (_, order_b) = paid_order(&app, &shop_b, "batch-buyer-b@b.test").await;
    let between_at = north(SHOP_AT, 600.0);
    let behind_at = north(SHOP_AT, -700.0);
    let (between, between_id) = rider(&app, "between@b.test", between_at, false).await;
    let (behind, behind_id) = rider(&app, "behind@b.test", behind_at, false).await;
    let mut between_app = SocketIoClient::connect(&app, Some(&between.token));
    between_app.connected().await;
    let mut behind_app = SocketIoClient::connect(&app, Some(&behind.token));
    behind_app.connected().await;

    // Both orders wait before any rider is free, so they share windows; whichever rider comes
    // on duty first, every window's least total gives the same pairs.
    make_ready(&app, &shop_a, &order_a).await;
    make_ready(&app, &shop_b, &order_b).await;
    on_duty(&app, &between, &between_id, between_at).await;
    on_duty(&app, &behind, &behind_id, behind_at).await;

    let to_between = between_app.event("order:available").await;
    let to_behind = behind_app.event("order:available").await;
    assert_eq!(to_between["orderId"], order_b.as_str(), "{to_between}");
    assert_eq!(to_behind["orderId"], order_a.as_str(), "{to_behind}");
    // Each offer goes to its matched rider alone.
    for (token, order) in [(&between.token, &order_b), (&behind.token, &order_a)] {
        let held = json_ok(
            app.request(reqwest::Method::GET, "/api/rider/offers", Some(token), None)
                .await,
        )
        .await;
        let offers = held["offers"].as_array().expect("offers");
        assert_eq!(offers.len(), 1, "{held}");
        assert_eq!(offers[0]["orderId"], order.as_str(), "{held}");
    }
    let taken = json_ok(accept(&app, &between.token, &order_b).await).await;
    assert_eq!(taken["order"]["riderId"], between_id.as_str());
    // The rider who took B is never offered A, nor may take it.
    let second = accept(&app, &between.token, &order_a).await;
    assert_eq!(second.status(), StatusCode::CONFLICT);
    let taken = json_ok(accept(&app, &behind.token, &order_a).await).await;
    assert_eq!(taken["order"]["riderId"], behind_id.as_str());
    assert_eq!(
        between_app
            .count("order:available", Duration::from_millis(800))
            .await,
        0,
        "a busy rider is matched with nothing"
    );
    assert!(app.metric("tomato_dispatch_window_matched_total").await >= 2);
    // The operations page shows the windows that matched them.
    let admin = app.admin().await;
    let ops = json_ok(app.get("/api/admin/ops", Some(&admin.token)).await).await;
    let windows = ops["windows"].as_array().expect("windows");
    let matched: u64 = windows.iter().filter_map(|w| w["matched"].as_u64()).sum();
    assert_eq!(matched, 2, "{ops}");
    assert!(
        windows.iter().all(|w| w["solveMs"].as_f64().is_some()),
        "{ops}"
    );
}

#[tokio::test]
async fn an_order_nobody_takes_in_time_is_offered_in_waves() {
    // Offers stand 3 s: a matched offer 1 s, then waves.
    let app = batched(&[("TOMATO_DISPATCH__OFFER_TTL_S", "3")]).await;
    let shop = open_shop(&app, "late-seller@b.test", "Late Kitchen", SHOP_AT).await;
    let (_, order) = paid_order(&app, &shop, "late-buyer@b.test").await;
    let (only, _) = rider(&app, "only@b.test", north(SHOP_AT, 300.0), true).await;
    let mut only_app = SocketIoClient::connect(&app, Some(&only.token));
    only_app.connected().await;

    make_ready(&app, &shop, &order).await;
    let matched = only_app.event("order:available").await;
    assert_eq!(matched["orderId"], order.as_str());
    // Let it run out: windows leave the rider out, and once offer_ttl_s has passed the order
    // goes to waves, which offer it again (to the same rider, the only one near).
    let again = only_app.event("order:available").await;
    assert_eq!(again["orderId"], order.as_str());
    assert_eq!(app.metric("tomato_dispatch_unmatched_total").await, 1);
    let won = json_ok(accept(&app, &only.token, &order).await).await;
    assert_eq!(won["order"]["status"], "rider_assigned");
}

#[tokio::test]
async fn an_order_that_holds_waits_for_a_nearer_rider_than_the_far_free_one() {
    // A 500 m hold: a fresh order takes riders within 500 m, after a second 1 km, ... so the
    // rider 4.5 km away is worth taking only after about 8 s of waiting.
    let app = batched(&[("TOMATO_DISPATCH__BATCH_HOLD_M", "500")]).await;
    let shop = open_shop(&app, "hold-seller@b.test", "Holding Kitchen", SHOP_AT).await;
    let (_, order) = paid_order(&app, &shop, "hold-buyer@b.test").await;
    let far_at = north(SHOP_AT, 4_500.0);
    let (far, _) = rider(&app, "far@b.test", far_at, true).await;
    let mut far_app = SocketIoClient::connect(&app, Some(&far.token));
    far_app.connected().await;

    make_ready(&app, &shop, &order).await;
    assert_eq!(
        far_app
            .count("order:available", Duration::from_millis(2_000))
            .await,
        0,
        "the far rider is left for a nearer one"
    );
    let near_at = north(SHOP_AT, 300.0);
    let (near, near_id) = rider(&app, "near@b.test", near_at, false).await;
    let mut near_app = SocketIoClient::connect(&app, Some(&near.token));
    near_app.connected().await;
    on_duty(&app, &near, &near_id, near_at).await;
    let offer = near_app.event("order:available").await;
    assert_eq!(offer["orderId"], order.as_str(), "{offer}");
    let won = json_ok(accept(&app, &near.token, &order).await).await;
    assert_eq!(won["order"]["riderId"], near_id.as_str());
    assert_eq!(
        far_app
            .count("order:available", Duration::from_millis(500))
            .await,
        0,
        "the far rider was never offered it"
    );
}
