//! Rate limits (`[limits]`): floods get 429 `rate_limited` with `Retry-After` and change
//! nothing, while an honest client on the same node is not touched.

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{TestApp, error_code, spawn_app_with};
use crate::riders::rider;
use crate::sockets::{SocketIoClient, WsClient};
use crate::uploads::{PNG, multipart, send, stored};

const MG_ROAD: (f64, f64) = (12.9756, 77.6050);

fn retry_after(response: &reqwest::Response) -> u64 {
    response
        .headers()
        .get("retry-after")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse().ok())
        .expect("a Retry-After header in seconds")
}

async fn put_position(app: &TestApp, token: &str, at: (f64, f64)) -> reqwest::Response {
    app.put(
        "/api/rider/location",
        Some(token),
        &json!({ "lat": at.0, "lon": at.1 }),
    )
    .await
}

#[tokio::test]
async fn a_position_flood_is_refused_over_http_and_sockets_together_and_an_honest_rider_is_not() {
    let app = spawn_app_with(&[]).await;
    let (flooder, _) = rider(&app, "flood@x.test", MG_ROAD, true).await;
    let (honest, _) = rider(&app, "honest@x.test", MG_ROAD, true).await;
    // Let both riders' buckets refill from their sign-up positions.
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;

    let mut refused = None;
    for i in 0..30 {
        let response =
            put_position(&app, &flooder.token, (12.97 + f64::from(i) * 1e-4, 77.6)).await;
        if response.status() == StatusCode::TOO_MANY_REQUESTS {
            refused = Some(response);
            break;
        }
        assert_eq!(response.status(), StatusCode::NO_CONTENT);
    }
    let refused = refused.expect("the flood met the limit");
    assert!(retry_after(&refused) >= 1);
    assert_eq!(
        error_code(refused, StatusCode::TOO_MANY_REQUESTS).await,
        "rate_limited"
    );
    // The same rider's socket shares the allowance.
    let mut ws = WsClient::connect(&app, &flooder.token).await.expect("ws");
    ws.send_raw(
        json!({ "event": "rider:location", "data": { "lat": 12.98, "lon": 77.6 }, "id": 1 }),
    )
    .await;
    assert_eq!(ws.ack(1).await["error"]["code"], "rate_limited");

    // Meanwhile an honest rider, one position a second, never meets the limit.
    for i in 0..4 {
        let response = put_position(&app, &honest.token, (12.97, 77.6 + f64::from(i) * 1e-4)).await;
        assert_eq!(response.status(), StatusCode::NO_CONTENT);
        tokio::time::sleep(std::time::Duration::from_millis(1000)).await;
    }
}

async fn sign_in(app: &TestApp, i: usize) -> reqwest::Response {
    app.post(
        "/api/auth/dev-login",
        None,
        &json!({ "email": format!("login{i}@x.test"), "name": "Flood" }),
    )
    .await
}

#[tokio::test]
async fn a_sign_in_flood_from_one_address_is_refused() {
    let app = spawn_app_with(&[("TOMATO_LIMITS__SIGN_IN_PER_MINUTE", "5")]).await;
    for i in 0..5 {
        assert_eq!(sign_in(&app, i).await.status(), StatusCode::OK);
    }
    let refused = sign_in(&app, 5).await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(retry_after(&refused) >= 1);
    assert_eq!(
        error_code(refused, StatusCode::TOO_MANY_REQUESTS).await,
        "rate_limited"
    );
}

#[tokio::test]
async fn an_upload_flood_is_refused_and_writes_nothing_while_others_upload() {
    let app = spawn_app_with(&[("TOMATO_LIMITS__UPLOADS_PER_DAY", "3")]).await;
    let flooder = app.dev_login("uploader@x.test", "Up").await;
    let other = app.dev_login("other-uploader@x.test", "Other").await;
    for _ in 0..3 {
        let response = send(
            &app,
            Some(&flooder.token),
            multipart("file", "a.png", "image/png", PNG),
        )
        .await;
        assert_eq!(response.status(), StatusCode::CREATED);
    }
    let refused = send(
        &app,
        Some(&flooder.token),
        multipart("file", "a.png", "image/png", PNG),
    )
    .await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(
        retry_after(&refused) > 3600,
        "a day's allowance comes back slowly"
    );
    assert_eq!(stored(&app), 3, "the refused upload wrote nothing");
    let response = send(
        &app,
        Some(&other.token),
        multipart("file", "b.png", "image/png", PNG),
    )
    .await;
    assert_eq!(
        response.status(),
        StatusCode::CREATED,
        "another user is not touched"
    );
}

#[tokio::test]
async fn sockets_over_the_per_user_limit_are_refused_at_connect() {
    let app = spawn_app_with(&[("TOMATO_LIMITS__SOCKETS_PER_USER", "2")]).await;
    let user = app.dev_login("sockets@x.test", "Many").await;
    let first = WsClient::connect(&app, &user.token).await.expect("first");
    let mut second = SocketIoClient::connect(&app, Some(&user.token));
    second.connected().await;
    assert_eq!(
        WsClient::connect(&app, &user.token).await.err(),
        Some(429),
        "a third socket is refused at the upgrade"
    );
    let mut third = SocketIoClient::connect(&app, Some(&user.token));
    let line = third
        .next("connect_error", |l| l["type"] == "connect_error")
        .await;
    assert!(
        line["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("rate_limited")),
        "{line}"
    );
    // Closing one frees its slot.
    drop(first);
    let mut again = None;
    for _ in 0..50 {
        if let Ok(ws) = WsClient::connect(&app, &user.token).await {
            again = Some(ws);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(again.is_some(), "the closed socket's slot came back");
}
