//! A JSON extractor whose rejections are [`ApiError`]s, so a malformed body, a wrong content type
//! or an oversized body answers with the same error body as everything else.

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;
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
