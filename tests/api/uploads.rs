//! Image uploads: judged by their bytes, bounded in size, stored under random names, served back.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::Path as AxumPath;
use axum::response::IntoResponse;
use axum::routing::put;
use reqwest::StatusCode;

use crate::helpers::{TestApp, error_code, json_ok, spawn_app, spawn_app_with};

pub(crate) const PNG: &[u8] = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00\x00\x1f\x15\xc4\x89";

/// A multipart/form-data body with one file field.
pub(crate) fn multipart(
    field: &str,
    filename: &str,
    content_type: &str,
    bytes: &[u8],
) -> (String, Vec<u8>) {
    let boundary = "tomato-test-boundary-7d3e";
    let mut body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{filename}\"\r\nContent-Type: {content_type}\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(bytes);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

pub(crate) async fn send(
    app: &TestApp,
    token: Option<&str>,
    (content_type, body): (String, Vec<u8>),
) -> reqwest::Response {
    let mut request = app
        .client
        .post(app.url("/api/upload"))
        .header("content-type", content_type)
        .body(body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.expect("send")
}

pub(crate) fn stored(app: &TestApp) -> usize {
    std::fs::read_dir(app.data_dir().join("media"))
        .map(|dir| dir.count())
        .unwrap_or(0)
}

#[tokio::test]
async fn an_image_is_stored_under_a_random_name_and_served_back() {
    let app = spawn_app().await;
    let user = app.dev_login("uploader@x.test", "Uploader").await;
    let response = send(
        &app,
        Some(&user.token),
        multipart("file", "../../etc/passwd.png", "text/plain", PNG),
    )
    .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let url = json_ok(response).await["url"]
        .as_str()
        .expect("url")
        .to_owned();
    assert!(url.starts_with("/media/") && url.ends_with(".png"), "{url}");
    assert!(
        !url.contains("passwd"),
        "the client's file name is not used"
    );
    let served = app.get(&url, None).await;
    assert_eq!(served.status(), StatusCode::OK);
    assert_eq!(served.headers()["content-type"], "image/png");
    assert_eq!(served.headers()["x-content-type-options"], "nosniff");
    assert_eq!(served.bytes().await.expect("bytes").as_ref(), PNG);
    assert_eq!(stored(&app), 1);

    let missing = app.get("/media/nothing-here.png", None).await;
    assert_eq!(
        error_code(missing, StatusCode::NOT_FOUND).await,
        "not_found"
    );
    let escape = app.get("/media/..%2F..%2Fdata%2Ftomato.db", None).await;
    assert!(escape.status().is_client_error(), "{}", escape.status());
}

#[tokio::test]
async fn bad_uploads_are_refused_and_nothing_is_written() {
    let app = spawn_app().await;
    let user = app.dev_login("bad-uploader@x.test", "Bad").await;
    let text = send(
        &app,
        Some(&user.token),
        multipart("file", "photo.png", "image/png", b"just some text, honest"),
    )
    .await;
    assert_eq!(
        error_code(text, StatusCode::UNSUPPORTED_MEDIA_TYPE).await,
        "unsupported_media_type"
    );

    let mut huge = PNG.to_vec();
    huge.resize(11 * 1024 * 1024, 0);
    let too_big = send(
        &app,
        Some(&user.token),
        multipart("file", "big.png", "image/png", &huge),
    )
    .await;
    assert_eq!(
        error_code(too_big, StatusCode::PAYLOAD_TOO_LARGE).await,
        "payload_too_large"
    );

    let wrong_field = send(
        &app,
        Some(&user.token),
        multipart("picture", "a.png", "image/png", PNG),
    )
    .await;
    assert_eq!(
        error_code(wrong_field, StatusCode::BAD_REQUEST).await,
        "invalid_input"
    );
    let not_multipart = app
        .post(
            "/api/upload",
            Some(&user.token),
            &serde_json::json!({ "file": "x" }),
        )
        .await;
    assert_eq!(
        error_code(not_multipart, StatusCode::UNSUPPORTED_MEDIA_TYPE).await,
        "unsupported_media_type"
    );
    let anonymous = send(&app, None, multipart("file", "a.png", "image/png", PNG)).await;
    assert_eq!(
        error_code(anonymous, StatusCode::UNAUTHORIZED).await,
        "unauthenticated"
    );

    assert_eq!(stored(&app), 0, "nothing was written");
}

/// An S3-compatible stand-in: path-style PUT and GET of objects, what the S3 client needs back.
async fn s3_stand_in() -> (std::net::SocketAddr, Arc<Mutex<HashMap<String, Vec<u8>>>>) {
    let objects: Arc<Mutex<HashMap<String, Vec<u8>>>> = Arc::default();
    let (put_store, get_store) = (Arc::clone(&objects), Arc::clone(&objects));
    let router = Router::new().route(
        "/{bucket}/{key}",
        put(
            move |AxumPath((bucket, key)): AxumPath<(String, String)>, body: axum::body::Bytes| {
                let objects = Arc::clone(&put_store);
                async move {
                    objects
                        .lock()
                        .expect("lock")
                        .insert(format!("{bucket}/{key}"), body.to_vec());
                    [("etag", "\"etag-1\"")]
                }
            },
        )
        .get(move |AxumPath((bucket, key)): AxumPath<(String, String)>| {
            let objects = Arc::clone(&get_store);
            async move {
                match objects
                    .lock()
                    .expect("lock")
                    .get(&format!("{bucket}/{key}"))
                {
                    Some(bytes) => (
                        axum::http::StatusCode::OK,
                        [
                            ("etag", "\"etag-1\""),
                            ("last-modified", "Thu, 26 Nov 2026 00:00:00 GMT"),
                        ],
                        bytes.clone(),
                    )
                        .into_response(),
                    None => (
                        axum::http::StatusCode::NOT_FOUND,
                        "<Error><Code>NoSuchKey</Code></Error>",
                    )
                        .into_response(),
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, router).await });
    (addr, objects)
}

#[tokio::test]
async fn uploads_can_live_in_an_s3_compatible_bucket() {
    let (addr, objects) = s3_stand_in().await;
    let endpoint = format!("http://{addr}");
    let app = spawn_app_with(&[
        ("TOMATO_UPLOADS__STORE", "s3"),
        ("TOMATO_UPLOADS__S3__BUCKET", "tomato-media"),
        ("TOMATO_UPLOADS__S3__ENDPOINT", &endpoint),
        ("TOMATO_UPLOADS__S3__ACCESS_KEY_ID", "test-access"),
        ("TOMATO_UPLOADS__S3__SECRET_ACCESS_KEY", "test-secret"),
    ])
    .await;
    let user = app.dev_login("s3@x.test", "S3").await;
    let response = send(
        &app,
        Some(&user.token),
        multipart("file", "me.png", "image/png", PNG),
    )
    .await;
    let url = json_ok(response).await["url"]
        .as_str()
        .expect("url")
        .to_owned();
    let name = url.trim_start_matches("/media/");
    assert_eq!(
        objects
            .lock()
            .expect("lock")
            .get(&format!("tomato-media/{name}"))
            .map(Vec::as_slice),
        Some(PNG),
        "the bytes went to the bucket"
    );
    assert_eq!(stored(&app), 0, "not to local disk");
    let served = app.get(&url, None).await;
    assert_eq!(served.status(), StatusCode::OK);
    assert_eq!(served.headers()["content-type"], "image/png");
    assert_eq!(served.bytes().await.expect("bytes").as_ref(), PNG);
    let missing = app
        .get(&format!("/media/{}.png", uuid::Uuid::new_v4()), None)
        .await;
    assert_eq!(
        error_code(missing, StatusCode::NOT_FOUND).await,
        "not_found"
    );
}
