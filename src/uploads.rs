//! `POST /api/upload` and `/media/...`: images users upload (restaurant, dish and rider
//! pictures). A file is judged by its bytes, never by the declared type or name; it is stored
//! under a random name in `<data_dir>/media`, so no client-chosen path ever reaches the file
//! system, and served back read-only.

use std::path::{Path, PathBuf};

use axum::extract::multipart::MultipartError;
use axum::extract::{DefaultBodyLimit, Multipart, State};
use axum::http::StatusCode;
use serde::Serialize;
use tower_http::services::ServeDir;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::auth::AuthUser;
use crate::http::{ApiError, ErrorBody, Json};
use crate::state::AppState;

/// Where uploads live under the data directory, and the URL prefix they are served at.
pub const MEDIA_DIR: &str = "media";

/// The upload route, with its own body limit (`server.upload_limit_bytes`).
pub fn router(upload_limit: usize) -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(upload))
        .layer(DefaultBodyLimit::max(upload_limit))
}

/// Serves stored uploads; ServeDir refuses any path leaving the directory.
pub fn media(data_dir: &Path) -> ServeDir {
    ServeDir::new(data_dir.join(MEDIA_DIR))
}

/// Where an upload went.
#[derive(Debug, Serialize, ToSchema)]
pub struct Uploaded {
    /// Path to fetch it from, under `/media/`.
    #[schema(example = "/media/0192f3c5-7d3e-7a80-9d8e-2f6f5b1c0a11.png")]
    pub url: String,
}

/// The image kinds accepted, recognised by their first bytes.
fn sniff(bytes: &[u8]) -> Option<&'static str> {
    if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some("png")
    } else if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        Some("jpg")
    } else if bytes.len() >= 12 && &bytes[..4] == b"RIFF" && &bytes[8..12] == b"WEBP" {
        Some("webp")
    } else {
        None
    }
}

fn multipart_error(err: MultipartError) -> ApiError {
    if err.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            "the upload is larger than server.upload_limit_bytes",
        )
    } else {
        ApiError::bad_request(format!(
            "the multipart body is malformed: {}",
            err.body_text()
        ))
    }
}

/// Upload an image: multipart field `file`, PNG, JPEG or WebP (judged by its bytes), at most
/// `server.upload_limit_bytes` (10 MiB by default).
#[utoipa::path(
    post,
    path = "/api/upload",
    tag = "uploads",
    security(("bearer" = [])),
    request_body(content_type = "multipart/form-data", description = "field `file`: the image"),
    responses(
        (status = 201, body = Uploaded),
        (status = 400, description = "No `file` field, or a malformed body", body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 413, description = "Larger than the upload limit", body = ErrorBody),
        (status = 415, description = "Not a PNG, JPEG or WebP image, or not multipart", body = ErrorBody),
    )
)]
async fn upload(
    State(state): State<AppState>,
    auth: AuthUser,
    multipart: Result<Multipart, axum::extract::multipart::MultipartRejection>,
) -> Result<(StatusCode, Json<Uploaded>), ApiError> {
    let mut multipart = multipart.map_err(|_| {
        ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "expected a multipart/form-data body",
        )
    })?;
    let mut image = None;
    while let Some(field) = multipart.next_field().await.map_err(multipart_error)? {
        if field.name() == Some("file") {
            image = Some(field.bytes().await.map_err(multipart_error)?);
            break;
        }
    }
    let bytes = image.ok_or_else(|| ApiError::bad_request("the body has no `file` field"))?;
    let extension = sniff(&bytes).ok_or_else(|| {
        ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "only PNG, JPEG and WebP images are accepted",
        )
    })?;
    let name = format!("{}.{extension}", Uuid::new_v4());
    let dir: PathBuf = state.settings.store.data_dir.join(MEDIA_DIR);
    tokio::fs::create_dir_all(&dir)
        .await
        .map_err(ApiError::internal)?;
    tokio::fs::write(dir.join(&name), &bytes)
        .await
        .map_err(ApiError::internal)?;
    tracing::info!(user_id = %auth.user.id, bytes = bytes.len(), file = %name, "image uploaded");
    Ok((
        StatusCode::CREATED,
        Json(Uploaded {
            url: format!("/{MEDIA_DIR}/{name}"),
        }),
    ))
}

#[cfg(test)]
mod tests {
    use super::sniff;

    #[test]
    fn images_are_recognised_by_their_bytes() {
        assert_eq!(sniff(b"\x89PNG\r\n\x1a\n rest"), Some("png"));
        assert_eq!(sniff(&[0xFF, 0xD8, 0xFF, 0xE0, 0, 0]), Some("jpg"));
        assert_eq!(sniff(b"RIFF\x10\x00\x00\x00WEBPVP8 "), Some("webp"));
        assert_eq!(sniff(b"RIFF\x10\x00\x00\x00WAVEfmt "), None);
        assert_eq!(sniff(b"hello, I am a .png"), None);
        assert_eq!(sniff(b""), None);
    }
}
