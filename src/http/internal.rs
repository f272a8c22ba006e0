//! Service-to-service calls: the `x-internal-key` header must equal `internal.key`, compared in
//! constant time. With no key configured every internal call is refused.

use axum::extract::{FromRef, FromRequestParts};
use axum::http::request::Parts;
use secrecy::{ExposeSecret, SecretString};
use subtle::ConstantTimeEq;

use super::error::ApiError;

/// The header carrying the key.
pub const HEADER: &str = "x-internal-key";

/// The key internal callers must present (`internal.key`), taken from the application's state.
#[derive(Debug, Clone)]
pub struct InternalKey(pub SecretString);

/// A request from another back-end service.
#[derive(Debug, Clone, Copy)]
pub struct InternalCaller;

impl<S> FromRequestParts<S> for InternalCaller
where
    InternalKey: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let InternalKey(key) = InternalKey::from_ref(state);
        let expected = key.expose_secret().as_bytes();
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
