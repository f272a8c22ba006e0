//! The realtime gateway with real clients: the official socket.io-client and a plain WebSocket.

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{INTERNAL_KEY, error_code, json_ok, spawn_app};
use crate::riders::rider;
use crate::sockets::{SocketIoClient, WsClient};
use crate::world::{HOME_AT, SHOP_AT, customer, open_shop};

#[tokio::test]
async fn bad_tokens_are_refused_at_connect() {
    let app = spawn_app().await;
    for token in [None, Some("garbage")] {
        let mut client = SocketIoClient::connect(&app, token);
        let line = client
            .next("connect result", |l| {
                l["type"] == "connect" || l["type"] == "connect_error"
            })
            .await;
        assert_eq!(line["type"], "connect_error", "{token:?}: {line}");
    }
    let user = app.dev_login("gone@x.test", "Gone").await;
    app.request(
        reqwest::Method::POST,
        "/api/auth/logout",
        Some(&user.token),
        None,
    )
    .await;
    let mut revoked = SocketIoClient::connect(&app, Some(&user.token));
    let line = revoked
        .next("connect result", |l| {
            l["type"] == "connect" || l["type"] == "connect_error"
        })
        .await;
    assert_eq!(line["type"], "connect_error");
    assert!(
        line["message"]
            .as_str()
            .is_some_and(|m| m.contains("token_revoked")),
        "{line}"
    );

    assert_eq!(WsClient::connect(&app, "garbage").await.err(), Some(401));
}

#[tokio::test]
async fn sellers_and_customers_hear_about_their_orders() {
    let app = spawn_app().await;
    let shop = open_shop(&app, "rt-seller@x.test", "Live Kitchen", SHOP_AT).await;
    let buyer = customer(&app, "rt-buyer@x.test", HOME_AT).await;
    let mut kitchen = SocketIoClient::connect(&app, Some(&shop.seller.token));
    kitchen.connected().await;
    let mut phone = SocketIoClient::connect(&app, Some(&buyer.session.token));
    phone.connected().await;
    let mut browser = WsClient::connect(&app, &buyer.session.token)
        .await
        .expect("ws");

    buyer.add(&app, &shop.items[0], 1).await;
    let id = buyer.order(&app).await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    buyer.pay(&app, &id).await;

    let new = kitchen.event("order:new").await;
    assert_eq!(new["order"]["id"], id.as_str());
    assert_eq!(new["order"]["paymentStatus"], "paid");
    let update = phone.event("order:update").await;
    assert_eq!(update["orderId"], id.as_str());
    assert_eq!(update["paymentStatus"], "paid");
    assert_eq!(update["order"]["id"], id.as_str());
    let update = browser.event("order:update").await;
    assert_eq!(update["paymentStatus"], "paid");

    json_ok(shop.set_status(&app, &id, "accepted").await).await;
    let accepted = phone.event("order:update").await;
    assert_eq!(
        accepted["status"], "accepted",
        "the customer hears each change in order"
    );
    let accepted = kitchen
        .event_where("order:update", |data| data["status"] == "accepted")
        .await;
    assert_eq!(accepted["orderId"], id.as_str());
}

#[tokio::test]
async fn riders_stream_positions_and_bad_ones_get_an_error_event() {
    let app = spawn_app().await;
    let (session, id) = rider(&app, "rt-rider@x.test", SHOP_AT, true).await;
    let mut app_socket = SocketIoClient::connect(&app, Some(&session.token));
    app_socket.connected().await;

    app_socket.emit("rider:location", json!({ "lat": 123.0, "lon": 77.6 }));
    let error = app_socket.event("error").await;
    assert_eq!(error["code"], "invalid_input");
    app_socket.emit("rider:location", json!("not an object"));
    let error = app_socket.event("error").await;
    assert_eq!(error["code"], "invalid_input");

    // Still connected: a good position lands in the index.
    app_socket.emit("rider:location", json!({ "lat": 12.9900, "lon": 77.6200 }));
    let admin = app.admin().await;
    let mut found = None;
    for _ in 0..50 {
        let body = json_ok(
            app.get(
                "/api/rider/nearby?lat=12.99&lon=77.62&radius=500",
                Some(&admin.token),
            )
            .await,
        )
        .await;
        if let Some(first) = body["riders"].as_array().and_then(|r| r.first()).cloned() {
            found = Some(first);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(
        found.expect("the streamed position arrived")["id"],
        id.as_str()
    );

    // Customers cannot pose as riders.
    let someone = app.dev_login("rt-customer@x.test", "C").await;
    let mut imposter = SocketIoClient::connect(&app, Some(&someone.token));
    imposter.connected().await;
    imposter.emit("rider:location", json!({ "lat": 12.99, "lon": 77.62 }));
    assert_eq!(imposter.event("error").await["code"], "forbidden");

    // The plain WebSocket takes the same event.
    let mut ws = WsClient::connect(&app, &session.token).await.expect("ws");
    ws.send("rider:location", json!({ "lat": 12.9, "lon": 200.0 }))
        .await;
    assert_eq!(ws.event("error").await["code"], "invalid_input");
    ws.send("teleport", json!({})).await;
    assert_eq!(ws.event("error").await["code"], "invalid_input");
    // A frame with an id is acknowledged with the outcome, good or bad.
    ws.send_raw(
        json!({ "event": "rider:location", "id": 7, "data": { "lat": 12.99, "lon": 77.62 } }),
    )
    .await;
    assert_eq!(ws.ack(7).await, json!({ "ok": true }));
    ws.send_raw(
        json!({ "event": "rider:location", "id": 8, "data": { "lat": 91.0, "lon": 77.62 } }),
    )
    .await;
    assert_eq!(ws.ack(8).await["error"]["code"], "invalid_input");
}

#[tokio::test]
async fn other_services_emit_through_the_internal_route() {
    let app = spawn_app().await;
    let user = app.dev_login("listener@x.test", "Listener").await;
    let mut client = SocketIoClient::connect(&app, Some(&user.token));
    client.connected().await;
    let body = json!({ "event": "promo:flash", "room": format!("user:{}", user.id()), "payload": { "code": "DOSA50" } });
    let send = |key: &'static str| {
        app.client
            .post(app.url("/api/v1/internal/emit"))
            .header("x-internal-key", key)
            .json(&body)
            .send()
    };
    let refused = send("wrong").await.expect("send");
    assert_eq!(
        error_code(refused, StatusCode::FORBIDDEN).await,
        "forbidden"
    );
    let sent = send(INTERNAL_KEY).await.expect("send");
    assert_eq!(sent.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        client.event("promo:flash").await,
        json!({ "code": "DOSA50" })
    );
}
