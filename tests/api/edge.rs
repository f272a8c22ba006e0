//! What the edge does with bad requests: every error is the error body of docs/api.md with the right status.

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{error_code, json_ok, spawn_app, spawn_app_with};

#[tokio::test]
async fn unknown_routes_are_json_404s() {
    let app = spawn_app().await;
    let code = error_code(app.get("/api/nope", None).await, StatusCode::NOT_FOUND).await;
    assert_eq!(code, "not_found");
}

#[tokio::test]
async fn wrong_methods_are_json_405s_with_allow() {
    let app = spawn_app().await;
    let response = app
        .client
        .delete(app.url("/api/auth/me"))
        .send()
        .await
        .expect("send");
    assert!(response.headers().contains_key("allow"));
    let code = error_code(response, StatusCode::METHOD_NOT_ALLOWED).await;
    assert_eq!(code, "method_not_allowed");
}

#[tokio::test]
async fn malformed_json_is_a_400() {
    let app = spawn_app().await;
    let response = app
        .client
        .post(app.url("/api/auth/dev-login"))
        .header("content-type", "application/json")
        .body(r#"{"email": "a@b.c", "name": "#)
        .send()
        .await
        .expect("send");
    assert_eq!(
        error_code(response, StatusCode::BAD_REQUEST).await,
        "malformed_json"
    );

    let missing_field = app
        .post("/api/auth/dev-login", None, &json!({ "email": "a@b.c" }))
        .await;
    assert_eq!(
        error_code(missing_field, StatusCode::BAD_REQUEST).await,
        "invalid_body"
    );

    let wrong_type = app
        .post(
            "/api/auth/dev-login",
            None,
            &json!({ "email": 5, "name": "x" }),
        )
        .await;
    assert_eq!(
        error_code(wrong_type, StatusCode::BAD_REQUEST).await,
        "invalid_body"
    );
}

#[tokio::test]
async fn the_wrong_content_type_is_a_415() {
    let app = spawn_app().await;
    let response = app
        .client
        .post(app.url("/api/auth/dev-login"))
        .header("content-type", "text/plain")
        .body(r#"{"email":"a@b.c","name":"x"}"#)
        .send()
        .await
        .expect("send");
    assert_eq!(
        error_code(response, StatusCode::UNSUPPORTED_MEDIA_TYPE).await,
        "unsupported_media_type"
    );
}

#[tokio::test]
async fn oversized_bodies_are_413s_and_change_nothing() {
    let app = spawn_app().await;
    let before = app.dev_login("huge@example.com", "Before").await;
    let huge_name = "x".repeat(1024 * 1024 + 1);
    let response = app
        .post(
            "/api/auth/dev-login",
            None,
            &json!({ "email": "huge@example.com", "name": huge_name }),
        )
        .await;
    assert_eq!(
        error_code(response, StatusCode::PAYLOAD_TOO_LARGE).await,
        "payload_too_large"
    );
    let me = json_ok(app.get("/api/auth/me", Some(&before.token)).await).await;
    assert_eq!(
        me["user"]["name"], "Before",
        "the refused sign-in changed nothing"
    );
}

#[tokio::test]
async fn the_body_limit_comes_from_config() {
    let app = spawn_app_with(&[("TOMATO_SERVER__BODY_LIMIT_BYTES", "2048")]).await;
    let response = app
        .post(
            "/api/auth/dev-login",
            None,
            &json!({ "email": "limit@example.com", "name": "y".repeat(3000) }),
        )
        .await;
    assert_eq!(
        error_code(response, StatusCode::PAYLOAD_TOO_LARGE).await,
        "payload_too_large"
    );
}

#[tokio::test]
async fn cors_allows_configured_origins_only() {
    let app = spawn_app_with(&[("TOMATO_SERVER__CORS_ORIGINS", "https://app.example.com")]).await;
    let preflight = |origin: &'static str| {
        app.client
            .request(reqwest::Method::OPTIONS, app.url("/api/auth/me"))
            .header("origin", origin)
            .header("access-control-request-method", "GET")
            .header("access-control-request-headers", "authorization")
            .send()
    };
    let allowed = preflight("https://app.example.com").await.expect("send");
    assert_eq!(
        allowed.headers()["access-control-allow-origin"],
        "https://app.example.com"
    );
    let refused = preflight("https://evil.example.com").await.expect("send");
    assert!(
        !refused
            .headers()
            .contains_key("access-control-allow-origin")
    );
}
