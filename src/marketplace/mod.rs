//! The marketplace routes: restaurants (with their admin verification), menus, carts and
//! addresses. Their shared request checks live here.

use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;

use crate::http::ApiError;
use crate::state::AppState;

mod addresses;
mod cart;
mod menu;
mod restaurants;

pub use cart::CartView;
pub(crate) use restaurants::{load as load_restaurant, now_ms};

/// Every marketplace route.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .merge(restaurants::router())
        .merge(menu::router())
        .merge(cart::router())
        .merge(addresses::router())
}

/// A point as clients send and receive it: `lat` in [-90, 90], `lon` in [-180, 180].
#[derive(Debug, Serialize, ToSchema)]
pub struct Location {
    #[schema(example = 12.9716)]
    pub lat: f64,
    #[schema(example = 77.5946)]
    pub lon: f64,
}

/// Turns a domain parse failure into a 400.
pub(crate) fn invalid(err: tomato_domain::ParseError) -> ApiError {
    ApiError::bad_request(err.0)
}

/// An image reference: an http(s) URL or a path under `/media/` (what uploads return).
pub(crate) fn image(raw: &str) -> Result<String, ApiError> {
    let value = raw.trim();
    let valid = value.len() <= 2048
        && (value.starts_with("/media/")
            || reqwest::Url::parse(value)
                .is_ok_and(|url| matches!(url.scheme(), "http" | "https") && url.has_host()));
    if !valid {
        return Err(ApiError::bad_request(
            "image must be an http(s) URL or a /media/ path of at most 2048 characters",
        ));
    }
    Ok(value.to_owned())
}
