//! Edge middleware that is ours rather than tower-http's: the error-body guarantee and the span
//! every request runs in.

use axum::body::Body;
use axum::extract::{MatchedPath, Request};
use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tracing::Span;

use super::error::{ApiError, ErrorCause};

/// Makes every error response carry the API error body, and logs hidden causes.
///
/// Handlers already answer with [`ApiError`]; this catches what layers and the router answer on
/// their own (405, timeouts, panics, oversized bodies) with a plain-text or empty body, and
/// replaces that body while keeping the status and headers such as `Allow`. It runs inside the
/// request span, so the logged cause carries the request id and route.
pub async fn error_bodies(req: Request, next: Next) -> Response {
    let mut response = next.run(req).await;
    let status = response.status();
    if let Some(ErrorCause(cause)) = response.extensions_mut().remove::<ErrorCause>() {
        tracing::error!(status = status.as_u16(), cause = %cause, "request failed");
    }
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let is_json = response
        .headers()
        .get(CONTENT_TYPE)
        .is_some_and(|value| value.as_bytes().starts_with(b"application/json"));
    if is_json {
        return response;
    }
    let (mut parts, _) = response.into_parts();
    let replacement = ApiError::from_status(status).into_response();
    let (new_parts, body) = replacement.into_parts();
    parts.headers.remove(CONTENT_LENGTH);
    parts.headers.extend(new_parts.headers);
    Response::from_parts(parts, Body::new(body))
}

/// The span of one request: method, matched route and request id, so every log line of the
/// request can be found by any of them.
pub fn request_span(req: &Request) -> Span {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str);
    let request_id = req
        .headers()
        .get("x-request-id")
        .and_then(|value| value.to_str().ok())
        .unwrap_or("-");
    tracing::info_span!(
        "request",
        method = %req.method(),
        route,
        request_id,
    )
}
