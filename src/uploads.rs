//! `POST /api/upload` and `GET /media/{name}`: images users upload (restaurant, dish and rider
//! pictures). A file is judged by its bytes, never by the declared type or name; it is stored
//! under a random name, so no client-chosen path ever reaches the storage, on local disk
//! (`<data_dir>/media`) or in any S3-compatible bucket (`uploads.store = "s3"`), and served back
//! under `/media/` either way.

use tomato_domain::ErrorKind;

use axum::extract::multipart::MultipartError;
use axum::extract::{DefaultBodyLimit, Multipart, State};
use axum::http::StatusCode;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, X_CONTENT_TYPE_OPTIONS};
use axum::response::{IntoResponse, Response};
use object_store::ObjectStoreExt;
use object_store::path::Path as StorePath;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::auth::AuthUser;
use crate::http::responses::{RateLimited, Unauthorized};
use crate::http::{ApiError, ErrorBody, Json, Path};
use crate::media::MEDIA_DIR;
use crate::state::AppState;

/// The image kinds accepted: extension and content type, recognised by their first bytes.
const KINDS: [(&str, &str); 3] = [
    ("png", "image/png"),
    ("jpg", "image/jpeg"),
    ("webp", "image/webp"),
];

/// The upload routes; the upload itself has its own body limit (`server.upload_limit_bytes`).
pub fn router(upload_limit: usize) -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(upload))
        .layer(DefaultBodyLimit::max(upload_limit))
        .routes(routes!(media))
}

/// Where an upload went.
#[derive(Debug, Serialize, ToSchema)]
pub struct Uploaded {
    /// Path to fetch it from, under `/media/`.
    #[schema(example = "/media/0192f3c5-7d3e-7a80-9d8e-2f6f5b1c0a11.png")]
    pub url: String,
}

/// The extension of an accepted image, judged by its first bytes.
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

/// The content type of a stored name, if it is one this module could have written
/// (`<uuid>.<png|jpg|webp>`); anything else is not ours.
fn stored_kind(name: &str) -> Option<&'static str> {
    let (stem, extension) = name.split_once('.')?;
    Uuid::try_parse(stem).ok()?;
    KINDS
        .iter()
        .find(|(ext, _)| *ext == extension)
        .map(|(_, content_type)| *content_type)
}

fn multipart_error(err: MultipartError) -> ApiError {
    if err.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::from_kind(
            ErrorKind::TooLarge,
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

/// The multipart form of an upload.
#[derive(Debug, ToSchema)]
#[allow(dead_code)] // Only its schema is used: the handler reads the parts as they stream.
pub struct UploadForm {
    /// The image's bytes: PNG, JPEG or WebP.
    #[schema(value_type = String, format = Binary)]
    file: Vec<u8>,
}

/// Upload an image: multipart field `file`, PNG, JPEG or WebP (judged by its bytes), at most
/// `server.upload_limit_bytes` (10 MiB by default).
#[utoipa::path(
    post,
    path = "/api/upload",
    tag = "uploads",
    security(("bearer" = [])),
    request_body(content_type = "multipart/form-data", content = UploadForm, description = "field `file`: the image"),
    responses(
        (status = 201, body = Uploaded),
        (status = 400, description = "No `file` field, or a malformed body", body = ErrorBody),
        Unauthorized,
        (status = 413, description = "Larger than the upload limit", body = ErrorBody),
        (status = 415, description = "Not a PNG, JPEG or WebP image, or not multipart", body = ErrorBody),
        (status = 503, description = "The upload store is unreachable, or (`storage_full`) its disk is short of space", body = ErrorBody),
        RateLimited,
    )
)]
async fn upload(
    State(state): State<AppState>,
    auth: AuthUser,
    multipart: Result<Multipart, axum::extract::multipart::MultipartRejection>,
) -> Result<(StatusCode, Json<Uploaded>), ApiError> {
    let mut multipart = multipart.map_err(|_| {
        ApiError::from_kind(
            ErrorKind::UnsupportedMedia,
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
        ApiError::from_kind(
            ErrorKind::UnsupportedMedia,
            "unsupported_media_type",
            "only PNG, JPEG and WebP images are accepted",
        )
    })?;
    state.limits.upload(auth.user.id, bytes.len())?;
    let name = format!("{}.{extension}", Uuid::new_v4());
    let size = bytes.len();
    state
        .media
        .put(&StorePath::from(name.as_str()), bytes.into())
        .await
        .map_err(ApiError::unavailable)?;
    tracing::info!(user_id = %auth.user.id, bytes = size, file = %name, "image uploaded");
    Ok((
        StatusCode::CREATED,
        Json(Uploaded {
            url: format!("/{MEDIA_DIR}/{name}"),
        }),
    ))
}

/// An uploaded image (public: the URLs are unguessable and end up in menus anyway).
#[utoipa::path(
    get,
    path = "/media/{name}",
    tag = "uploads",
    params(("name" = String, Path, description = "The name an upload returned")),
    responses(
        (status = 200, description = "The image", content_type = "image/*"),
        (status = 404, description = "No such upload", body = ErrorBody),
    )
)]
async fn media(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let content_type = stored_kind(&name).ok_or_else(|| ApiError::not_found("no such upload"))?;
    let found = state.media.get(&StorePath::from(name.as_str())).await;
    let bytes = match found {
        Ok(object) => object.bytes().await.map_err(ApiError::unavailable)?,
        Err(object_store::Error::NotFound { .. }) => {
            return Err(ApiError::not_found("no such upload"));
        }
        Err(err) => return Err(ApiError::unavailable(err)),
    };
    Ok((
        [
            (CONTENT_TYPE, content_type),
            // Names are never reused, so the bytes behind one never change.
            (CACHE_CONTROL, "public, max-age=31536000, immutable"),
            // Served as the image it was judged to be, never sniffed into something else.
            (X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        bytes,
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::{sniff, stored_kind};

    #[test]
    fn images_are_recognised_by_their_bytes() {
        assert_eq!(sniff(b"\x89PNG\r\n\x1a\n rest"), Some("png"));
        assert_eq!(sniff(&[0xFF, 0xD8, 0xFF, 0xE0, 0, 0]), Some("jpg"));
        assert_eq!(sniff(b"RIFF\x10\x00\x00\x00WEBPVP8 "), Some("webp"));
        assert_eq!(sniff(b"RIFF\x10\x00\x00\x00WAVEfmt "), None);
        assert_eq!(sniff(b"hello, I am a .png"), None);
        assert_eq!(sniff(b""), None);
    }

    #[test]
    fn only_names_we_write_are_served() {
        let id = uuid::Uuid::new_v4();
        assert_eq!(stored_kind(&format!("{id}.png")), Some("image/png"));
        assert_eq!(stored_kind(&format!("{id}.jpg")), Some("image/jpeg"));
        assert_eq!(stored_kind(&format!("{id}.exe")), None);
        assert_eq!(stored_kind("../tomato.db"), None);
        assert_eq!(stored_kind("tomato.db"), None);
    }
}
