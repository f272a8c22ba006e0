//! Image uploads: judged by their bytes, bounded in size, stored under random names, served back.

use reqwest::StatusCode;

use crate::helpers::{TestApp, error_code, json_ok, spawn_app};

const PNG: &[u8] = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00\x00\x1f\x15\xc4\x89";

/// A multipart/form-data body with one file field.
fn multipart(field: &str, filename: &str, content_type: &str, bytes: &[u8]) -> (String, Vec<u8>) {
    let boundary = "tomato-test-boundary-7d3e";
    let mut body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{filename}\"\r\nContent-Type: {content_type}\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(bytes);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

async fn send(
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

fn stored(app: &TestApp) -> usize {
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
