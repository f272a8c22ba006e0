//! A JSON extractor whose rejections are [`ApiError`]s, so a malformed body, a wrong content type
//! or an oversized body answers with the same error body as everything else.

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tomato_domain::ErrorKind;

use super::error::ApiError;

/// `axum::Json`, answering bad input with the API error body.
#[derive(Debug, Clone, Copy, Default)]
pub struct Json<T>(pub T);

impl<T, S> FromRequest<S> for Json<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(value)) => Ok(Json(value)),
            Err(rejection) => Err(reject(rejection)),
        }
    }
}

fn reject(rejection: JsonRejection) -> ApiError {
    match rejection {
        JsonRejection::MissingJsonContentType(_) => ApiError::from_kind(
            ErrorKind::UnsupportedMedia,
            "unsupported_media_type",
            "expected a body with Content-Type: application/json",
        ),
        JsonRejection::JsonSyntaxError(err) => {
            ApiError::from_kind(ErrorKind::Invalid, "malformed_json", err.body_text())
        }
        JsonRejection::JsonDataError(err) => {
            ApiError::from_kind(ErrorKind::Invalid, "invalid_body", err.body_text())
        }
        other if other.status() == StatusCode::PAYLOAD_TOO_LARGE => ApiError::from_kind(
            ErrorKind::TooLarge,
            "payload_too_large",
            "the request body is too large",
        ),
        // The body could not be read at all (cut short, say).
        other => ApiError::from_kind(ErrorKind::Invalid, "invalid_body", other.body_text()),
    }
}

impl<T: Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

/// A JSON integer field: any whole number, `34.0` included (JSON Schema's `integer` accepts it,
/// so clients and generators may send it); `12.5` is refused.
pub fn whole_number<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<i64, D::Error> {
    let number = serde_json::Number::deserialize(deserializer)?;
    whole(&number)
        .ok_or_else(|| serde::de::Error::custom(format!("{number} is not a whole number")))
}

/// [`whole_number`] for an optional field (use with `#[serde(default)]`).
pub fn whole_number_opt<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<i64>, D::Error> {
    match Option::<serde_json::Number>::deserialize(deserializer)? {
        None => Ok(None),
        Some(number) => whole(&number)
            .map(Some)
            .ok_or_else(|| serde::de::Error::custom(format!("{number} is not a whole number"))),
    }
}

fn whole(number: &serde_json::Number) -> Option<i64> {
    number.as_i64().or_else(|| {
        let value = number.as_f64()?;
        // Within i64 (2^63 is not) and with nothing after the point.
        (value.fract() == 0.0 && value.abs() < 9.2e18).then_some(value as i64)
    })
}
