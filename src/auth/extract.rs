//! Extractors that authenticate a request. A handler that takes [`AuthUser`] serves any signed-in
//! user; one that takes [`CustomerUser`], [`SellerUser`], [`RiderUser`] or [`AdminUser`] serves
//! only that role, so a handler cannot forget the check. Authentication (401) is decided before
//! the role (403), and both before the body is read (400), the order docs/api.md prescribes.

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use tomato_domain::{Role, User};

use super::token::{Claims, TokenError};
use crate::http::ApiError;
use crate::state::AppState;

/// A request made by a signed-in user, with a token that is valid now.
#[derive(Debug, Clone)]
pub struct AuthUser {
    /// The user as stored now (not as the token remembers them).
    pub user: User,
    /// The presented token's claims.
    pub claims: Claims,
}

impl FromRequestParts<AppState> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = bearer_token(parts)?;
        // Requests come with the same token again and again: its check is remembered. A socket
        // checks its token once, when it connects, and does not fill the memory with them.
        let claims = state.tokens.verify_request(token).map_err(refused)?;
        still_valid(state, claims).await
    }
}

/// Reads `Authorization: Bearer <token>`.
fn bearer_token(parts: &Parts) -> Result<&str, ApiError> {
    let header = parts.headers.get(AUTHORIZATION).ok_or_else(|| {
        ApiError::unauthorized("unauthenticated", "missing Authorization: Bearer token")
    })?;
    header
        .to_str()
        .ok()
        .and_then(|value| {
            let (scheme, token) = value.split_once(' ')?;
            scheme
                .eq_ignore_ascii_case("bearer")
                .then_some(token.trim())
        })
        .filter(|token| !token.is_empty())
        .ok_or_else(|| {
            ApiError::unauthorized(
                "invalid_token",
                "the Authorization header must be `Bearer <token>`",
            )
        })
}

/// Checks a token the way every authenticated route does: signature and expiry, revocation,
/// that the user still exists, and that their role has not changed since it was minted.
pub async fn authenticate(state: &AppState, token: &str) -> Result<AuthUser, ApiError> {
    let claims = state.tokens.verify(token).map_err(refused)?;
    still_valid(state, claims).await
}

fn refused(err: TokenError) -> ApiError {
    match err {
        TokenError::Expired => expired(),
        TokenError::Invalid => ApiError::unauthorized("invalid_token", "the token is not valid"),
    }
}

fn expired() -> ApiError {
    ApiError::unauthorized("token_expired", "the token has expired")
}

/// Whether a token whose signature was checked before (when a socket connected) is still good
/// now: not expired, not revoked, and minted for the user's current role. A socket's inbound
/// events are judged by this, so a demoted rider's positions are refused at once.
pub async fn still_valid(state: &AppState, claims: Claims) -> Result<AuthUser, ApiError> {
    if claims.refused_from() <= time::OffsetDateTime::now_utc() {
        return Err(expired());
    }
    let cache = &state.auth_cache;
    let revoked = match cache.revoked(claims.jti) {
        Some(known) => known,
        None => {
            let revoked = state.stores.tokens.is_revoked(claims.jti).await?;
            if !revoked {
                cache.put_live(claims.jti);
            }
            revoked
        }
    };
    if revoked {
        return Err(ApiError::unauthorized(
            "token_revoked",
            "the token was revoked by logging out",
        ));
    }
    let matches = |user: &User| user.role == claims.role && user.role_version == claims.ver;
    // A cached user that does not match may be older than the token: ask the store then.
    let user = match cache.user(claims.sub).filter(matches) {
        Some(user) => user,
        None => {
            let generation = cache.generation(claims.sub);
            let user = state.stores.users.get(claims.sub).await?.ok_or_else(|| {
                ApiError::unauthorized("invalid_token", "the token's user does not exist")
            })?;
            cache.put_user(&user, generation);
            user
        }
    };
    if !matches(&user) {
        return Err(ApiError::unauthorized(
            "token_stale",
            "the user's role changed after this token was issued; use the new token",
        ));
    }
    Ok(AuthUser { user, claims })
}

macro_rules! role_extractor {
    ($(#[$meta:meta])* $name:ident, $role:expr, $label:literal) => {
        $(#[$meta])*
        #[derive(Debug, Clone)]
        pub struct $name(pub AuthUser);

        impl FromRequestParts<AppState> for $name {
            type Rejection = ApiError;

            async fn from_request_parts(
                parts: &mut Parts,
                state: &AppState,
            ) -> Result<Self, ApiError> {
                let auth = AuthUser::from_request_parts(parts, state).await?;
                if auth.user.role != $role {
                    return Err(ApiError::forbidden(concat!(
                        "this route is for users with role ",
                        $label
                    )));
                }
                Ok(Self(auth))
            }
        }
    };
}

role_extractor!(
    /// A signed-in user acting as a customer.
    CustomerUser,
    Role::Customer,
    "customer"
);
role_extractor!(
    /// A signed-in user acting as a seller.
    SellerUser,
    Role::Seller,
    "seller"
);
role_extractor!(
    /// A signed-in user acting as a rider.
    RiderUser,
    Role::Rider,
    "rider"
);
role_extractor!(
    /// A signed-in admin.
    AdminUser,
    Role::Admin,
    "admin"
);

#[cfg(test)]
mod tests {
    use axum::Router;
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use axum::routing::get;
    use tomato_domain::{Email, PersonName};
    use tomato_store::SignIn;
    use tower::ServiceExt;

    use super::*;
    use crate::config::Settings;

    async fn state(dir: &std::path::Path) -> AppState {
        let file = dir.join("empty.toml");
        std::fs::write(&file, "").expect("write config");
        let settings =
            Settings::load(Some(&file), Vec::<(String, String)>::new()).expect("settings");
        let stores = tomato_store_embedded::open(dir).expect("store");
        AppState::new(settings, stores).expect("state")
    }

    async fn token_for(state: &AppState, email: &str, role: Role) -> String {
        let user = state
            .stores
            .users
            .sign_in(SignIn {
                email: Email::parse(email).expect("email"),
                name: PersonName::parse("Test").expect("name"),
                image: None,
                admin: role == Role::Admin,
            })
            .await
            .expect("sign in");
        let user = state
            .stores
            .users
            .set_role(user.id, role)
            .await
            .expect("role");
        state.tokens.issue(&user).expect("token").0
    }

    async fn call(router: &Router, path: &str, token: &str) -> StatusCode {
        let request = Request::get(path)
            .header("authorization", format!("Bearer {token}"))
            .body(Body::empty())
            .expect("request");
        router
            .clone()
            .oneshot(request)
            .await
            .expect("response")
            .status()
    }

    #[tokio::test]
    async fn each_role_extractor_admits_only_its_role() {
        let dir = tempfile::tempdir().expect("dir");
        let state = state(dir.path()).await;
        let router = Router::new()
            .route("/customer", get(|_: CustomerUser| async {}))
            .route("/seller", get(|_: SellerUser| async {}))
            .route("/rider", get(|_: RiderUser| async {}))
            .route("/admin", get(|_: AdminUser| async {}))
            .route("/any", get(|_: AuthUser| async {}))
            .with_state(state.clone());

        for (i, role) in Role::ALL.into_iter().enumerate() {
            let token = token_for(&state, &format!("user{i}@example.com"), role).await;
            assert_eq!(
                call(&router, "/any", &token).await,
                StatusCode::OK,
                "{role}"
            );
            for gate in Role::ALL {
                let expected = if gate == role {
                    StatusCode::OK
                } else {
                    StatusCode::FORBIDDEN
                };
                let path = format!("/{gate}");
                assert_eq!(
                    call(&router, &path, &token).await,
                    expected,
                    "{role} on {path}"
                );
            }
        }
        assert_eq!(
            call(&router, "/admin", "nonsense").await,
            StatusCode::UNAUTHORIZED
        );
        state.stores.backend.close().await.expect("close");
    }
}
