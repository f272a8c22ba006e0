//! `/api/auth`: sign-in (Google, and the development login), the current user, role switches and
//! logout.

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use tomato_domain::ErrorKind;
use tomato_domain::{Email, PersonName, Role, User};
use tomato_store::SignIn;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::extract::AuthUser;
use super::google::GoogleError;
use crate::http::responses::{RateLimited, Unauthorized};
use crate::http::{ApiError, ErrorBody, Json};
use crate::limits::ClientAddress;
use crate::state::AppState;

/// The auth routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(google))
        .routes(routes!(dev_login))
        .routes(routes!(me))
        .routes(routes!(set_role))
        .routes(routes!(logout))
}

/// A user as clients see it.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserView {
    #[schema(example = "0192f3c5-7d3e-7a80-9d8e-2f6f5b1c0a11")]
    pub id: String,
    pub name: String,
    pub email: String,
    /// Profile picture URL, or null.
    pub image: Option<String>,
    #[schema(value_type = String, example = "customer")]
    pub role: Role,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: OffsetDateTime,
}

impl From<User> for UserView {
    fn from(user: User) -> Self {
        Self {
            id: user.id.to_string(),
            name: user.name.into(),
            email: user.email.into(),
            image: user.image,
            role: user.role,
            created_at: user.created_at,
        }
    }
}

/// A fresh token and the user it is for.
#[derive(Debug, Serialize, ToSchema)]
pub struct SessionResponse {
    /// Bearer token for `Authorization: Bearer <token>`.
    pub token: String,
    pub user: UserView,
}

/// The current user.
#[derive(Debug, Serialize, ToSchema)]
pub struct MeResponse {
    pub user: UserView,
}

/// A Google sign-in.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct GoogleRequest {
    /// The ID token Google Identity Services handed the client.
    pub id_token: String,
}

/// A development sign-in.
#[derive(Debug, Deserialize, ToSchema)]
pub struct DevLoginRequest {
    #[schema(example = "asha@example.com", format = Email, max_length = 254)]
    pub email: String,
    #[schema(
        example = "Asha",
        min_length = 1,
        max_length = 100,
        pattern = r"^\s*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
    )]
    pub name: String,
}

/// A role switch.
#[derive(Debug, Deserialize, ToSchema)]
pub struct RoleRequest {
    /// `customer`, `seller` or `rider`; `admin` is refused with 403.
    #[schema(value_type = String, example = "seller")]
    pub role: Role,
}

fn issue_session(state: &AppState, user: User) -> Result<Json<SessionResponse>, ApiError> {
    let (token, _) = state.tokens.issue(&user).map_err(ApiError::internal)?;
    Ok(Json(SessionResponse {
        token,
        user: user.into(),
    }))
}

async fn sign_in(
    state: &AppState,
    email: Email,
    name: PersonName,
    image: Option<String>,
) -> Result<Json<SessionResponse>, ApiError> {
    let admin = state.settings.auth.admin_emails.contains(&email);
    let user = state
        .stores
        .users
        .sign_in(SignIn {
            email,
            name,
            image,
            admin,
        })
        .await?;
    // Sign-in may have changed the name, the picture or (admin_emails) the role.
    state.auth_cache.user_changed(user.id);
    tracing::info!(user_id = %user.id, role = %user.role, "signed in");
    issue_session(state, user)
}

/// Sign in with a Google ID token; creates the user on first sign-in.
#[utoipa::path(
    post,
    path = "/api/auth/google",
    tag = "auth",
    request_body = GoogleRequest,
    responses(
        (status = 200, body = SessionResponse),
        (status = 400, description = "Malformed body", body = ErrorBody),
        (status = 401, description = "The ID token is invalid, expired, for another client, from another issuer, or signed with an unknown key", body = ErrorBody),
        (status = 404, description = "Google sign-in is not configured (auth.google.client_ids is empty)", body = ErrorBody),
        (status = 503, description = "Google's signing keys could not be fetched", body = ErrorBody),
        RateLimited,
    )
)]
async fn google(
    State(state): State<AppState>,
    ClientAddress(client): ClientAddress,
    Json(body): Json<GoogleRequest>,
) -> Result<Json<SessionResponse>, ApiError> {
    state.limits.sign_in(client)?;
    let identity = state
        .google
        .verify(&body.id_token)
        .await
        .map_err(|err| match err {
            GoogleError::NotConfigured => ApiError::not_found("google sign-in is not configured"),
            GoogleError::Rejected(why) => ApiError::unauthorized("invalid_id_token", why),
            unavailable @ GoogleError::KeysUnavailable(_) => ApiError::unavailable(unavailable),
        })?;
    let email = Email::parse(&identity.email).map_err(|_| {
        ApiError::unauthorized("invalid_id_token", "the id token's e-mail is invalid")
    })?;
    // Google names can be missing or odd; fall back to the e-mail's local part.
    let name = identity
        .name
        .as_deref()
        .and_then(|name| PersonName::parse(name).ok())
        .or_else(|| PersonName::parse(email.local_part()).ok())
        .ok_or_else(|| {
            ApiError::unauthorized("invalid_id_token", "the id token names no usable name")
        })?;
    sign_in(&state, email, name, identity.picture).await
}

/// Sign in with just an e-mail and a name. Development only: 404 unless `auth.dev_login = true`.
#[utoipa::path(
    post,
    path = "/api/auth/dev-login",
    tag = "auth",
    request_body = DevLoginRequest,
    responses(
        (status = 200, body = SessionResponse),
        (status = 400, description = "Invalid e-mail or name (1 to 100 characters)", body = ErrorBody),
        (status = 404, description = "auth.dev_login is off", body = ErrorBody),
        RateLimited,
    )
)]
async fn dev_login(
    State(state): State<AppState>,
    ClientAddress(client): ClientAddress,
    Json(body): Json<DevLoginRequest>,
) -> Result<Json<SessionResponse>, ApiError> {
    if !state.settings.auth.dev_login {
        return Err(ApiError::not_found("no such route"));
    }
    state.limits.sign_in(client)?;
    let email = Email::parse(&body.email).map_err(|err| ApiError::bad_request(err.0))?;
    let name = PersonName::parse(&body.name).map_err(|err| ApiError::bad_request(err.0))?;
    sign_in(&state, email, name, None).await
}

/// The signed-in user, read from the store (not from the token).
#[utoipa::path(
    get,
    path = "/api/auth/me",
    tag = "auth",
    security(("bearer" = [])),
    responses(
        (status = 200, body = MeResponse),
        Unauthorized,
    )
)]
async fn me(auth: AuthUser) -> Json<MeResponse> {
    Json(MeResponse {
        user: auth.user.into(),
    })
}

/// Switch between customer, seller and rider. The answer carries a new token for the new role;
/// every token issued before a real change is refused from then on (401 `token_stale`). Asking
/// for the role the user already has changes nothing and keeps older tokens valid.
#[utoipa::path(
    put,
    path = "/api/auth/role",
    tag = "auth",
    security(("bearer" = [])),
    request_body = RoleRequest,
    responses(
        (status = 200, body = SessionResponse),
        (status = 400, description = "Not a role", body = ErrorBody),
        Unauthorized,
        (status = 403, description = "Asked for admin", body = ErrorBody),
    )
)]
async fn set_role(
    State(state): State<AppState>,
    auth: AuthUser,
    Json(body): Json<RoleRequest>,
) -> Result<Json<SessionResponse>, ApiError> {
    if !body.role.is_self_assignable() {
        return Err(ApiError::from_kind(
            ErrorKind::Forbidden,
            "role_not_assignable",
            "admin is granted by configuration or the command line, never through the API",
        ));
    }
    let user = state.stores.users.set_role(auth.user.id, body.role).await?;
    state.auth_cache.user_changed(user.id);
    tracing::info!(user_id = %user.id, role = %user.role, "role changed");
    issue_session(&state, user)
}

/// Log out: the presented token is refused from now on, across restarts, until it expires.
#[utoipa::path(
    post,
    path = "/api/auth/logout",
    tag = "auth",
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Logged out"),
        Unauthorized,
    )
)]
async fn logout(State(state): State<AppState>, auth: AuthUser) -> Result<StatusCode, ApiError> {
    // Here first: from this moment no cached answer lets the token through.
    state.auth_cache.revoke(auth.claims.jti, auth.claims.exp);
    state
        .stores
        .tokens
        .revoke(auth.claims.jti, auth.claims.expires_at())
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
