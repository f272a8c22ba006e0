//! The one error type of the HTTP edge. Every failure a handler or extractor reports becomes the
//! body docs/api.md prescribes, `{"error":{"code","message"}}`. Server-side failures keep their cause
//! out of the body: the cause rides along in a response extension, and the error middleware logs
//! it inside the request's span.

use std::borrow::Cow;
use std::sync::Arc;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use tomato_domain::ErrorKind;
use tomato_store::StoreError;
use utoipa::ToSchema;

/// An error answer: status, stable machine code, human message, and (for 5xx) the hidden cause.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: Cow<'static, str>,
    message: Cow<'static, str>,
    cause: Option<anyhow::Error>,
    /// Seconds to wait before trying again (429, 503), sent as `Retry-After`.
    retry_after: Option<u64>,
}

/// What a 503 asks a client to wait before trying again: a store that timed out or a shard
/// being handed over is usually back within a second or two.
const UNAVAILABLE_RETRY_S: u64 = 2;

/// The cause of a server-side failure, handed from the error to the logging middleware.
#[derive(Debug, Clone)]
pub(crate) struct ErrorCause(pub Arc<String>);

/// The body of every error response.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// What went wrong.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable snake_case code for programs, e.g. `token_expired`.
    #[schema(example = "invalid_body")]
    pub code: String,
    /// Human-readable explanation.
    #[schema(example = "missing field `email`")]
    pub message: String,
}

impl ApiError {
    /// An error with an explicit status and code: only for the helpers here, so that every other
    /// error goes through [`ApiError::from_kind`], the one kind -> status map.
    fn new(
        status: StatusCode,
        code: impl Into<Cow<'static, str>>,
        message: impl Into<Cow<'static, str>>,
    ) -> Self {
        Self {
            status,
            code: code.into(),
            message: message.into(),
            cause: None,
            retry_after: (status == StatusCode::SERVICE_UNAVAILABLE).then_some(UNAVAILABLE_RETRY_S),
        }
    }

    /// 429 `rate_limited`: try again after `wait` (sent as `Retry-After`, whole seconds).
    pub fn rate_limited(message: impl Into<Cow<'static, str>>, wait: std::time::Duration) -> Self {
        Self {
            retry_after: Some(wait.as_secs() + u64::from(wait.subsec_nanos() > 0)),
            ..Self::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", message)
        }
    }

    /// The same error, asking the client to try again after `seconds` (`Retry-After`).
    pub fn with_retry_after(self, seconds: u64) -> Self {
        Self {
            retry_after: Some(seconds),
            ..self
        }
    }

    /// 400: the input is malformed or out of range.
    pub fn bad_request(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_input", message)
    }

    /// 401 with a specific code (`unauthenticated`, `token_expired`, ...).
    pub fn unauthorized(code: &'static str, message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, code, message)
    }

    /// 403: authenticated, not allowed.
    pub fn forbidden(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    /// 404: nothing here (or nothing the caller may know about).
    pub fn not_found(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 503: a dependency is down; the cause is logged, not shown.
    pub fn unavailable(cause: impl Into<anyhow::Error>) -> Self {
        Self {
            cause: Some(cause.into()),
            ..Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "a dependency is unavailable; try again later",
            )
        }
    }

    /// 500: a bug or broken invariant; the cause is logged, not shown.
    pub fn internal(cause: impl Into<anyhow::Error>) -> Self {
        Self {
            cause: Some(cause.into()),
            ..Self::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "internal server error",
            )
        }
    }

    /// An error of a domain kind: the one place a kind becomes an HTTP status. Server-side
    /// kinds keep `message` out of the body (it is logged as the cause).
    pub fn from_kind(
        kind: ErrorKind,
        code: impl Into<Cow<'static, str>>,
        message: impl Into<Cow<'static, str>>,
    ) -> Self {
        let code = code.into();
        let status = match kind {
            ErrorKind::Invalid => StatusCode::BAD_REQUEST,
            ErrorKind::Unauthenticated => StatusCode::UNAUTHORIZED,
            ErrorKind::Forbidden => StatusCode::FORBIDDEN,
            ErrorKind::NotFound => StatusCode::NOT_FOUND,
            ErrorKind::Conflict => StatusCode::CONFLICT,
            ErrorKind::Unprocessable => StatusCode::UNPROCESSABLE_ENTITY,
            ErrorKind::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorKind::UnsupportedMedia => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let message = message.into();
        match kind {
            ErrorKind::Internal => Self::internal(anyhow::anyhow!(message.into_owned())),
            // A generic 503 hides its cause; a code of its own (`shard_moving`) tells the
            // client what to do, and says nothing internal.
            ErrorKind::Unavailable if code == "unavailable" => {
                Self::unavailable(anyhow::anyhow!(message.into_owned()))
            }
            _ => Self::new(status, code, message),
        }
    }

    /// The standard error for a bare status, used where a framework layer answered on its own
    /// (unknown method, timeout, oversized body) without our body.
    pub fn from_status(status: StatusCode) -> Self {
        let (code, message) = match status {
            StatusCode::BAD_REQUEST => ("invalid_input", "the request is malformed"),
            StatusCode::UNAUTHORIZED => ("unauthenticated", "authentication required"),
            StatusCode::FORBIDDEN => ("forbidden", "not allowed"),
            StatusCode::NOT_FOUND => ("not_found", "no such resource"),
            StatusCode::METHOD_NOT_ALLOWED => (
                "method_not_allowed",
                "this method is not allowed on this route",
            ),
            StatusCode::REQUEST_TIMEOUT => ("request_timeout", "the request took too long"),
            StatusCode::PAYLOAD_TOO_LARGE => ("payload_too_large", "the request body is too large"),
            StatusCode::UNSUPPORTED_MEDIA_TYPE => (
                "unsupported_media_type",
                "this content type is not accepted here",
            ),
            StatusCode::UNPROCESSABLE_ENTITY => {
                ("unprocessable", "the request cannot be processed")
            }
            StatusCode::TOO_MANY_REQUESTS => ("rate_limited", "too many requests; slow down"),
            StatusCode::SERVICE_UNAVAILABLE => {
                ("unavailable", "the service is unavailable; try again later")
            }
            StatusCode::GATEWAY_TIMEOUT => ("timeout", "the request took too long"),
            status if status.is_server_error() => ("internal", "internal server error"),
            _ => ("error", "the request failed"),
        };
        Self::new(status, code, message)
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The machine-readable code.
    pub fn code(&self) -> &str {
        &self.code
    }

    /// The human-readable message (for 5xx, the generic one: causes are never shown).
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::Conflict(rule) => {
                Self::from_kind(ErrorKind::Conflict, rule.code(), rule.to_string())
            }
            StoreError::Invalid(message) => Self::bad_request(message),
            StoreError::NotFound => Self::not_found("not found"),
            err @ (StoreError::Stale | StoreError::RiderBusy) => {
                Self::from_kind(err.kind(), err.code(), err.to_string())
            }
            err if err.kind() == ErrorKind::Unavailable => Self::unavailable(err),
            err => Self::internal(err),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.into_owned(),
                message: self.message.into_owned(),
            },
        };
        let mut response = (self.status, axum::Json(body)).into_response();
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, seconds.max(1).into());
        }
        if let Some(cause) = self.cause {
            response
                .extensions_mut()
                .insert(ErrorCause(Arc::new(format!("{cause:#}"))));
        }
        response
    }
}
