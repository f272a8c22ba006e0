//! The realtime gateway with real clients: the official socket.io-client and a plain WebSocket.

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{INTERNAL_KEY, error_code, json_ok, spawn_app, spawn_app_with};
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

#[tokio::test]
async fn sockets_end_with_their_token_on_logout_and_on_a_role_change() {
    let app = spawn_app().await;
    let first = app.dev_login("sess@x.test", "Sess").await;
    let mut io = SocketIoClient::connect(&app, Some(&first.token));
    io.connected().await;
    let mut ws = WsClient::connect(&app, &first.token).await.expect("ws");
    // A second sign-in of the same user (another device): a token of its own.
    let second = app.dev_login("sess@x.test", "Sess").await;
    let mut other_io = SocketIoClient::connect(&app, Some(&second.token));
    other_io.connected().await;
    let mut other_ws = WsClient::connect(&app, &second.token).await.expect("ws");

    let out = app
        .post("/api/auth/logout", Some(&first.token), &json!({}))
        .await;
    assert_eq!(out.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        io.event("session:ended").await,
        json!({ "reason": "logout" })
    );
    let gone = io.next("disconnect", |l| l["type"] == "disconnect").await;
    assert_eq!(gone["reason"], "io server disconnect");
    assert_eq!(
        ws.event("session:ended").await,
        json!({ "reason": "logout" })
    );
    assert_eq!(ws.closed().await, 1008);

    // The other device's connections live on: their token was not revoked.
    other_ws
        .send_raw(
            json!({ "event": "rider:location", "data": { "lat": 12.9, "lon": 77.6 }, "id": 1 }),
        )
        .await;
    assert_eq!(
        other_ws.ack(1).await["error"]["code"],
        "forbidden",
        "a customer's position is refused, over a live connection"
    );
    // A role change makes the second token stale: its connections end too.
    let changed = app
        .put(
            "/api/auth/role",
            Some(&second.token),
            &json!({ "role": "rider" }),
        )
        .await;
    assert_eq!(changed.status(), StatusCode::OK);
    assert_eq!(
        other_io.event("session:ended").await,
        json!({ "reason": "token_stale" })
    );
    assert_eq!(
        other_ws.event("session:ended").await,
        json!({ "reason": "token_stale" })
    );
    assert_eq!(other_ws.closed().await, 1008);
}

#[tokio::test]
async fn sockets_end_when_their_token_expires_and_idle_websockets_are_closed() {
    let app = spawn_app_with(&[("TOMATO_AUTH__TOKEN_TTL_S", "60")]).await;
    let session = app.dev_login("brief@x.test", "Brief").await;
    let mut ws = WsClient::connect(&app, &session.token).await.expect("ws");
    let mut silent = WsClient::connect(&app, &session.token).await.expect("ws");
    let mut io = SocketIoClient::connect(&app, Some(&session.token));
    io.connected().await;
    // 60 s of life and 5 s of leeway: the end comes within the events' patience after 60 s.
    // Meanwhile one WebSocket pings (a live client), the other says nothing for 60 s.
    tokio::time::sleep(std::time::Duration::from_secs(30)).await;
    ws.ping().await;
    tokio::time::sleep(std::time::Duration::from_secs(30)).await;
    assert_eq!(silent.closed().await, 1001, "idle for 60 s: closed");
    assert_eq!(
        io.event("session:ended").await,
        json!({ "reason": "token_expired" })
    );
    assert_eq!(
        ws.event("session:ended").await,
        json!({ "reason": "token_expired" })
    );
    assert_eq!(ws.closed().await, 1008);
}

#[tokio::test]
async fn a_websocket_frame_over_64_kib_closes_the_connection() {
    let app = spawn_app().await;
    let session = app.dev_login("big@x.test", "Big").await;
    let mut ws = WsClient::connect(&app, &session.token).await.expect("ws");
    // Just under the limit is a frame like any other (refused as JSON, the connection stays).
    ws.send_text(format!(
        "{{\"event\":\"x\",\"data\":\"{}\"}}",
        "a".repeat(60 * 1024)
    ))
    .await;
    assert_eq!(ws.event("error").await["code"], "invalid_input");
    ws.send_text("a".repeat(65 * 1024)).await;
    assert_eq!(ws.closed().await, 1009);
    // Every time, and for a frame many times the limit too: the close frame arrives, where a
    // socket closed with the frame's rest unread would answer with a reset instead.
    for size in [65 * 1024, 512 * 1024, 1000 * 1024] {
        for _ in 0..4 {
            let mut ws = WsClient::connect(&app, &session.token).await.expect("ws");
            ws.send_text("a".repeat(size)).await;
            assert_eq!(ws.closed().await, 1009, "a frame of {size} bytes");
        }
    }
}
