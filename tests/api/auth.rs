//! Sign-in, tokens, roles and logout over HTTP.

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::StatusCode;
use serde_json::json;
use tomato::auth::Claims;
use tomato_domain::Role;

use crate::helpers::{TEST_JWT_SECRET, error_code, json_ok, session, spawn_app, spawn_app_with};

#[tokio::test]
async fn login_me_role_switch_logout_and_restart() {
    let mut app = spawn_app().await;

    let first = app.dev_login("Asha@Example.com", "Asha").await;
    assert_eq!(first.user["email"], "asha@example.com");
    assert_eq!(first.user["role"], "customer");
    assert_eq!(first.user["image"], serde_json::Value::Null);
    assert!(
        first.user["createdAt"]
            .as_str()
            .expect("createdAt")
            .ends_with('Z')
    );

    let me = json_ok(app.get("/api/auth/me", Some(&first.token)).await).await;
    assert_eq!(me["user"], first.user);

    // Switching role hands out a token for the new role; the old one goes stale.
    let switched = session(
        json_ok(
            app.put(
                "/api/auth/role",
                Some(&first.token),
                &json!({ "role": "seller" }),
            )
            .await,
        )
        .await,
    );
    assert_eq!(switched.user["role"], "seller");
    assert_eq!(switched.id(), first.id());
    let me = json_ok(app.get("/api/auth/me", Some(&switched.token)).await).await;
    assert_eq!(me["user"]["role"], "seller", "me reads the store");
    let stale = app.get("/api/auth/me", Some(&first.token)).await;
    assert_eq!(
        error_code(stale, StatusCode::UNAUTHORIZED).await,
        "token_stale"
    );

    // Tokens survive a restart (the signing secret is configuration, not process state).
    app.restart().await;
    let me = json_ok(app.get("/api/auth/me", Some(&switched.token)).await).await;
    assert_eq!(me["user"]["role"], "seller");

    let logout = app
        .request(
            reqwest::Method::POST,
            "/api/auth/logout",
            Some(&switched.token),
            None,
        )
        .await;
    assert_eq!(logout.status(), StatusCode::NO_CONTENT);
    let revoked = app.get("/api/auth/me", Some(&switched.token)).await;
    assert_eq!(
        error_code(revoked, StatusCode::UNAUTHORIZED).await,
        "token_revoked"
    );

    // ...and a revocation survives one too.
    app.restart().await;
    let revoked = app.get("/api/auth/me", Some(&switched.token)).await;
    assert_eq!(
        error_code(revoked, StatusCode::UNAUTHORIZED).await,
        "token_revoked"
    );

    // Signing in again gives the same user a fresh token.
    let again = app.dev_login("asha@example.com", "Asha K").await;
    assert_eq!(again.id(), first.id());
    assert_eq!(again.user["role"], "seller");
    assert_eq!(again.user["name"], "Asha K");
}

#[tokio::test]
async fn admin_cannot_be_asked_for_and_roles_are_validated() {
    let app = spawn_app().await;
    let user = app.dev_login("climber@example.com", "Climber").await;
    let response = app
        .put(
            "/api/auth/role",
            Some(&user.token),
            &json!({ "role": "admin" }),
        )
        .await;
    assert_eq!(
        error_code(response, StatusCode::FORBIDDEN).await,
        "role_not_assignable"
    );
    let response = app
        .put(
            "/api/auth/role",
            Some(&user.token),
            &json!({ "role": "overlord" }),
        )
        .await;
    assert_eq!(
        error_code(response, StatusCode::BAD_REQUEST).await,
        "invalid_body"
    );

    // Nothing changed: the original token still works and the role is still customer.
    let me = json_ok(app.get("/api/auth/me", Some(&user.token)).await).await;
    assert_eq!(me["user"]["role"], "customer");

    // Authentication is checked before the body.
    let response = app
        .put("/api/auth/role", None, &json!({ "role": "overlord" }))
        .await;
    assert_eq!(
        error_code(response, StatusCode::UNAUTHORIZED).await,
        "unauthenticated"
    );
}

#[tokio::test]
async fn configured_admin_emails_sign_in_as_admin() {
    let app = spawn_app_with(&[("TOMATO_AUTH__ADMIN_EMAILS", "boss@example.com")]).await;
    let boss = app.dev_login("BOSS@example.com", "Boss").await;
    assert_eq!(boss.user["role"], "admin");
    let other = app.dev_login("staff@example.com", "Staff").await;
    assert_eq!(other.user["role"], "customer");
}

#[tokio::test]
async fn dev_login_is_a_404_when_off() {
    let app = spawn_app_with(&[("TOMATO_AUTH__DEV_LOGIN", "false")]).await;
    let response = app
        .post(
            "/api/auth/dev-login",
            None,
            &json!({ "email": "a@example.com", "name": "A" }),
        )
        .await;
    assert_eq!(
        error_code(response, StatusCode::NOT_FOUND).await,
        "not_found"
    );
}

#[tokio::test]
async fn dev_login_validates_its_input() {
    let app = spawn_app().await;
    for body in [
        json!({ "email": "not-an-email", "name": "A" }),
        json!({ "email": "a@example.com", "name": "   " }),
        json!({ "email": "a@example.com", "name": "n".repeat(101) }),
    ] {
        let response = app.post("/api/auth/dev-login", None, &body).await;
        assert_eq!(
            error_code(response, StatusCode::BAD_REQUEST).await,
            "invalid_input",
            "{body}"
        );
    }
}

fn forge(secret: &str, claims: &Claims) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("encode")
}

#[tokio::test]
async fn bad_tokens_are_401s() {
    let app = spawn_app().await;
    let user = app.dev_login("victim@example.com", "Victim").await;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let claims = Claims {
        sub: user.id().parse().expect("id"),
        role: Role::Customer,
        ver: 0,
        jti: uuid::Uuid::new_v4(),
        iat: now,
        exp: now + 3600,
    };
    // A token we sign with the right secret works: the forging itself is sound.
    let good = forge(TEST_JWT_SECRET, &claims);
    assert_eq!(
        app.get("/api/auth/me", Some(&good)).await.status(),
        StatusCode::OK
    );

    let cases = [
        (None, "unauthenticated"),
        (Some("garbage".to_owned()), "invalid_token"),
        (
            Some(forge("another-secret-0123456789abcdef0123456789", &claims)),
            "invalid_token",
        ),
        (
            Some(forge(
                TEST_JWT_SECRET,
                &Claims {
                    iat: now - 7200,
                    exp: now - 3600,
                    ..claims.clone()
                },
            )),
            "token_expired",
        ),
        (
            Some(forge(
                TEST_JWT_SECRET,
                &Claims {
                    sub: tomato_domain::UserId::new(),
                    ..claims.clone()
                },
            )),
            "invalid_token",
        ),
        (
            Some(forge(
                TEST_JWT_SECRET,
                &Claims {
                    role: Role::Admin,
                    ..claims.clone()
                },
            )),
            "token_stale",
        ),
    ];
    for (token, expected) in cases {
        let response = app.get("/api/auth/me", token.as_deref()).await;
        assert_eq!(
            error_code(response, StatusCode::UNAUTHORIZED).await,
            expected,
            "token {token:?}"
        );
    }

    let basic = app
        .client
        .get(app.url("/api/auth/me"))
        .header("authorization", "Basic dXNlcjpwYXNz")
        .send()
        .await
        .expect("send");
    assert_eq!(
        error_code(basic, StatusCode::UNAUTHORIZED).await,
        "invalid_token"
    );
}
