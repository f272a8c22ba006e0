//! Service-to-service calls: the `x-internal-key` header must equal `internal.key`, compared in
//! constant time. With no key configured every internal call is refused.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use secrecy::ExposeSecret;
use subtle::ConstantTimeEq;

use super::ApiError;
use crate::state::AppState;

/// The header carrying the key.
pub const HEADER: &str = "x-internal-key";

/// A request from another back-end service.
#[derive(Debug, Clone, Copy)]
pub struct InternalCaller;

impl FromRequestParts<AppState> for InternalCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let expected = state.settings.internal.key.expose_secret().as_bytes();
        let presented = parts
            .headers
            .get(HEADER)
            .map(|value| value.as_bytes())
            .unwrap_or_default();
        let matches = !expected.is_empty() && bool::from(expected.ct_eq(presented));
        if matches {
            Ok(InternalCaller)
        } else {
            Err(ApiError::forbidden("a valid x-internal-key is required"))
        }
    }
}
