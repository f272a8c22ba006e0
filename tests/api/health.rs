//! Health, readiness, metrics and the published API description.

use reqwest::StatusCode;

use crate::helpers::{json_ok, spawn_app};

#[tokio::test]
async fn health_and_readiness_answer() {
    let app = spawn_app().await;
    let health = json_ok(app.get("/healthz", None).await).await;
    assert_eq!(health["status"], "ok");
    let ready = json_ok(app.get("/readyz", None).await).await;
    assert_eq!(ready["status"], "ready");
    assert_eq!(ready["checks"]["store"], "ok");
}

#[tokio::test]
async fn metrics_count_requests_by_matched_route() {
    let app = spawn_app().await;
    for _ in 0..3 {
        app.get("/healthz", None).await;
    }
    let session = app.dev_login("metrics@example.com", "Metrics").await;
    app.get("/api/auth/me", Some(&session.token)).await;
    app.get("/no/such/route/12345", None).await;
    // Made-up methods all count as one label value: a client cannot add series at will.
    for made_up in ["FROBNICATE", "BREW", "XYZZY9"] {
        let method = reqwest::Method::from_bytes(made_up.as_bytes()).expect("a token");
        app.client
            .request(method, app.url("/healthz"))
            .send()
            .await
            .expect("send");
    }

    let response = app.get("/metrics", None).await;
    assert_eq!(response.status(), StatusCode::OK);
    let text = response.text().await.expect("body");
    assert!(
        text.contains(
            r#"tomato_http_requests_total{method="GET",route="/healthz",status="200"} 3"#
        ),
        "{text}"
    );
    assert!(text.contains(r#"route="/api/auth/me""#), "{text}");
    assert!(text.contains(r#"route="unmatched",status="404""#), "{text}");
    assert!(
        text.contains("tomato_http_request_duration_seconds_bucket"),
        "{text}"
    );
    let resident: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("tomato_process_resident_memory_bytes "))
        .expect("resident memory gauge")
        .parse()
        .expect("a number");
    assert!(resident > 1_000_000, "a live process holds more than 1 MB");
    assert!(!text.contains("12345"), "no path or id in labels");
    for made_up in ["FROBNICATE", "BREW", "XYZZY9"] {
        assert!(!text.contains(made_up), "{made_up} is not a label value");
    }
    assert!(
        text.contains(
            r#"tomato_http_requests_total{method="OTHER",route="/healthz",status="405"} 3"#
        ),
        "{text}"
    );
    assert!(!text.contains(session.id()), "no ids in labels");
}

#[tokio::test]
async fn openapi_lists_every_route_and_docs_are_served() {
    let app = spawn_app().await;
    let spec = json_ok(app.get("/api/openapi.json", None).await).await;
    assert!(spec["openapi"].as_str().expect("version").starts_with("3."));
    let paths = spec["paths"].as_object().expect("paths");
    for (path, method) in [
        ("/healthz", "get"),
        ("/readyz", "get"),
        ("/metrics", "get"),
        ("/api/auth/google", "post"),
        ("/api/auth/dev-login", "post"),
        ("/api/auth/me", "get"),
        ("/api/auth/role", "put"),
        ("/api/auth/logout", "post"),
        ("/api/restaurant/all", "get"),
        ("/api/restaurant/{id}", "put"),
        ("/api/item/{id}", "delete"),
        ("/api/cart/{lineId}", "put"),
        ("/api/address/new", "post"),
        ("/api/order/new", "post"),
        ("/api/order/{id}", "put"),
        ("/api/order/{id}/cancel", "post"),
        ("/api/payment/verify", "post"),
        ("/api/rider/location", "put"),
        ("/api/rider/nearby", "get"),
        ("/api/rider/orders/{id}/accept", "post"),
        ("/api/rider/orders/{id}/status", "put"),
        ("/api/admin/restaurant/pending", "get"),
        ("/api/admin/rider/verify/{id}", "put"),
        ("/api/v1/internal/emit", "post"),
        ("/ws", "get"),
    ] {
        assert!(
            paths.get(path).and_then(|p| p.get(method)).is_some(),
            "{method} {path} missing from the spec"
        );
    }
    assert!(spec["components"]["schemas"]["ErrorBody"].is_object());
    assert!(spec["components"]["securitySchemes"]["bearer"].is_object());

    let docs = app.get("/api/docs", None).await;
    assert_eq!(docs.status(), StatusCode::OK);
    let html = docs.text().await.expect("html");
    assert!(
        html.contains("<html") || html.contains("<!doctype"),
        "{html}"
    );
}

#[tokio::test]
async fn every_response_carries_a_request_id() {
    let app = spawn_app().await;
    let response = app.get("/healthz", None).await;
    let id = response
        .headers()
        .get("x-request-id")
        .expect("a generated request id");
    assert!(!id.is_empty());

    let response = app
        .client
        .get(app.url("/healthz"))
        .header("x-request-id", "caller-chosen-id")
        .send()
        .await
        .expect("send");
    assert_eq!(response.headers()["x-request-id"], "caller-chosen-id");
}
