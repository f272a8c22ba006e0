//! Google sign-in against a key set the test serves itself: no test reaches the internet.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::routing::get;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TestApp, error_code, json_ok, spawn_app, spawn_app_with};

const CLIENT_ID: &str = "tomato-test-client.apps.googleusercontent.com";
const ISSUER: &str = "https://accounts.google.com";
const KID: &str = "test-key-1";
const JWKS: &str = include_str!("fixtures/google_jwks.json");
const GOOGLE_KEY: &[u8] = include_bytes!("fixtures/google_key.pem");
const OTHER_KEY: &[u8] = include_bytes!("fixtures/other_key.pem");

/// Serves the test key set at `/certs`, counting fetches.
async fn serve_jwks() -> (SocketAddr, Arc<AtomicUsize>) {
    let fetches = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&fetches);
    let router = Router::new().route(
        "/certs",
        get(move || {
            counter.fetch_add(1, Ordering::SeqCst);
            async { ([("content-type", "application/json")], JWKS) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, router).await });
    (addr, fetches)
}

async fn app_trusting(jwks_addr: SocketAddr) -> TestApp {
    let url = format!("http://{jwks_addr}/certs");
    spawn_app_with(&[
        ("TOMATO_AUTH__GOOGLE__CLIENT_IDS", CLIENT_ID),
        ("TOMATO_AUTH__GOOGLE__JWKS_URL", &url),
    ])
    .await
}

fn claims() -> Value {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    json!({
        "iss": ISSUER,
        "aud": CLIENT_ID,
        "sub": "108012345678901234567",
        "email": "Priya@Gmail.com",
        "email_verified": true,
        "name": "Priya",
        "picture": "https://lh3.googleusercontent.com/a/priya",
        "iat": now,
        "exp": now + 3600,
    })
}

fn sign(claims: &Value, key: &[u8], kid: &str) -> String {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(kid.to_owned());
    jsonwebtoken::encode(
        &header,
        claims,
        &EncodingKey::from_rsa_pem(key).expect("test key"),
    )
    .expect("sign")
}

fn with(changes: Value) -> Value {
    let mut claims = claims();
    for (key, value) in changes.as_object().expect("object") {
        claims[key] = value.clone();
    }
    claims
}

#[tokio::test]
async fn a_valid_google_token_signs_in_and_creates_the_user_once() {
    let (jwks, fetches) = serve_jwks().await;
    let app = app_trusting(jwks).await;
    let token = sign(&claims(), GOOGLE_KEY, KID);

    let first = json_ok(
        app.post("/api/auth/google", None, &json!({ "idToken": token }))
            .await,
    )
    .await;
    assert_eq!(first["user"]["email"], "priya@gmail.com");
    assert_eq!(first["user"]["name"], "Priya");
    assert_eq!(first["user"]["role"], "customer");
    assert_eq!(
        first["user"]["image"],
        "https://lh3.googleusercontent.com/a/priya"
    );
    let me = json_ok(app.get("/api/auth/me", first["token"].as_str()).await).await;
    assert_eq!(me["user"]["id"], first["user"]["id"]);

    let second = json_ok(
        app.post("/api/auth/google", None, &json!({ "idToken": token }))
            .await,
    )
    .await;
    assert_eq!(
        second["user"]["id"], first["user"]["id"],
        "same account on the next sign-in"
    );
    assert_eq!(fetches.load(Ordering::SeqCst), 1, "keys are cached");
}

#[tokio::test]
async fn bad_google_tokens_are_401s() {
    let (jwks, _) = serve_jwks().await;
    let app = app_trusting(jwks).await;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let cases = [
        (
            "wrong audience",
            sign(&with(json!({ "aud": "someone-else" })), GOOGLE_KEY, KID),
        ),
        (
            "wrong issuer",
            sign(
                &with(json!({ "iss": "https://evil.example" })),
                GOOGLE_KEY,
                KID,
            ),
        ),
        (
            "expired",
            sign(
                &with(json!({ "iat": now - 7200, "exp": now - 3600 })),
                GOOGLE_KEY,
                KID,
            ),
        ),
        ("bad signature", sign(&claims(), OTHER_KEY, KID)),
        ("unknown key", sign(&claims(), GOOGLE_KEY, "no-such-key")),
        (
            "unverified e-mail",
            sign(&with(json!({ "email_verified": false })), GOOGLE_KEY, KID),
        ),
        ("not a jwt", "definitely.not.a-jwt".to_owned()),
    ];
    for (what, token) in cases {
        let response = app
            .post("/api/auth/google", None, &json!({ "idToken": token }))
            .await;
        assert_eq!(
            error_code(response, StatusCode::UNAUTHORIZED).await,
            "invalid_id_token",
            "{what}"
        );
    }
    // None of them created an account.
    let response = app
        .post(
            "/api/auth/google",
            None,
            &json!({ "idToken": sign(&claims(), GOOGLE_KEY, KID) }),
        )
        .await;
    let user = json_ok(response).await;
    assert_eq!(user["user"]["email"], "priya@gmail.com");
}

#[tokio::test]
async fn an_hs256_token_cannot_pose_as_google() {
    let (jwks, _) = serve_jwks().await;
    let app = app_trusting(jwks).await;
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some(KID.to_owned());
    // The classic confusion attack: sign with the public key's bytes as an HMAC secret.
    let token = jsonwebtoken::encode(
        &header,
        &claims(),
        &EncodingKey::from_secret(JWKS.as_bytes()),
    )
    .expect("sign");
    let response = app
        .post("/api/auth/google", None, &json!({ "idToken": token }))
        .await;
    assert_eq!(
        error_code(response, StatusCode::UNAUTHORIZED).await,
        "invalid_id_token"
    );
}

#[tokio::test]
async fn google_sign_in_is_a_404_when_not_configured() {
    let app = spawn_app().await;
    let token = sign(&claims(), GOOGLE_KEY, KID);
    let response = app
        .post("/api/auth/google", None, &json!({ "idToken": token }))
        .await;
    assert_eq!(
        error_code(response, StatusCode::NOT_FOUND).await,
        "not_found"
    );
}

#[tokio::test]
async fn unreachable_google_keys_are_a_503_without_details_and_with_retry_after() {
    // A port nobody listens on: bind one, then free it.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr")
    };
    let app = app_trusting(closed).await;
    let token = sign(&claims(), GOOGLE_KEY, KID);
    let response = app
        .post("/api/auth/google", None, &json!({ "idToken": token }))
        .await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    assert!(
        retry_after.is_some_and(|seconds| seconds >= 1),
        "a 503 says when to try again: {retry_after:?}"
    );
    let body = response.text().await.expect("body");
    assert!(
        !body.contains("127.0.0.1"),
        "no internals in a 5xx body: {body}"
    );
    let body: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(body["error"]["code"], "unavailable");
}
