//! Fields that the bodies of several domains share, and how each is checked: a point as clients
//! send and receive it, an image reference, and a domain value that did not parse (a 400).

use serde::Serialize;
use utoipa::ToSchema;

use super::ApiError;

/// A point as clients send and receive it: `lat` in [-90, 90], `lon` in [-180, 180].
#[derive(Debug, Serialize, ToSchema)]
pub struct Location {
    #[schema(example = 12.9716, minimum = -90, maximum = 90)]
    pub lat: f64,
    #[schema(example = 77.5946, minimum = -180, maximum = 180)]
    pub lon: f64,
}

/// Turns a domain parse failure into a 400.
pub(crate) fn invalid(err: tomato_domain::ParseError) -> ApiError {
    ApiError::bad_request(err.0)
}

/// What an image reference looks like: a path under `/media/` (what uploads return) or an
/// http(s) URL. The OpenAPI document publishes the same expression for every `image` and
/// `picture` field.
pub const IMAGE_PATTERN: &str = r"^(/media/[A-Za-z0-9._-]{1,200}|https?://[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*(:[0-9]{1,5})?(/[A-Za-z0-9._~%!$&'()*+,;=:@/?#-]*)?)$";

/// An image reference: an http(s) URL or a path under `/media/`, at most 2048 characters.
pub(crate) fn image(raw: &str) -> Result<String, ApiError> {
    static IMAGE: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
        regex::Regex::new(IMAGE_PATTERN).expect("the image pattern compiles")
    });
    let value = raw;
    let valid = value.len() <= 2048 && IMAGE.is_match(value);
    if !valid {
        return Err(ApiError::bad_request(
            "image must be an http(s) URL or a /media/ path of at most 2048 characters",
        ));
    }
    Ok(value.to_owned())
}
