//! `/api/restaurant` and the admin's restaurant verification.

use axum::extract::State;
use axum::http::StatusCode;
use h3o::Resolution;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use tomato_domain::geo::covering_k;
use tomato_domain::marketplace::{phone, text};
use tomato_domain::{LatLon, Restaurant, RestaurantId};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::{AdminUser, AuthUser, SellerUser};
use crate::http::fields::{Location, image, invalid};
use crate::http::responses::Unauthorized;
use crate::http::{ApiError, ErrorBody, Json, PageParams, Path, Query};
use crate::state::AppState;

/// Restaurants are indexed by their H3 cell at this resolution (edge about 3.7 km): a 5 km search
/// reads about 37 cells, the 50 km maximum about 400.
pub const INDEX_RESOLUTION: Resolution = Resolution::Six;
/// Default and largest search radius, in metres.
const DEFAULT_RADIUS_M: u32 = 5000;
const MAX_RADIUS_M: u32 = 50_000;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create))
        .routes(routes!(nearby))
        .routes(routes!(mine))
        .routes(routes!(get_one, update))
        .routes(routes!(pending))
        .routes(routes!(verify))
}

/// A restaurant as clients see it.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestaurantView {
    pub id: String,
    pub owner_id: String,
    pub name: String,
    pub description: String,
    pub image: Option<String>,
    pub phone: String,
    #[schema(value_type = Location)]
    pub location: LatLon,
    pub formatted_address: String,
    pub is_open: bool,
    pub is_verified: bool,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: OffsetDateTime,
    /// Great-circle distance from the searched point, in km (nearby search only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub distance_km: Option<f64>,
}

impl From<Restaurant> for RestaurantView {
    fn from(r: Restaurant) -> Self {
        Self {
            id: r.id.to_string(),
            owner_id: r.owner_id.to_string(),
            name: r.name,
            description: r.description,
            image: r.image,
            phone: r.phone,
            location: r.location,
            formatted_address: r.formatted_address,
            is_open: r.is_open,
            is_verified: r.is_verified,
            created_at: r.created_at,
            distance_km: None,
        }
    }
}

/// `{restaurant}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct RestaurantResponse {
    pub restaurant: RestaurantView,
}

/// `{restaurants}`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestaurantsResponse {
    pub restaurants: Vec<RestaurantView>,
    /// Pass as `cursor` for the next page; null on the last one.
    pub next_cursor: Option<String>,
}

/// A page of the nearby search.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct NearbyResponse {
    pub restaurants: Vec<RestaurantView>,
    /// Pass as `cursor` for the next page; null on the last one.
    pub next_cursor: Option<String>,
}

fn one(restaurant: Restaurant) -> Json<RestaurantResponse> {
    Json(RestaurantResponse {
        restaurant: restaurant.into(),
    })
}

/// A new restaurant.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct NewRestaurant {
    #[schema(
        min_length = 1,
        max_length = 100,
        pattern = r"^\s*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
    )]
    pub name: String,
    #[serde(default)]
    #[schema(max_length = 1000, pattern = r"^[^\x00-\x09\x0b-\x1f\x7f-\x9f]*$")]
    pub description: String,
    pub image: Option<String>,
    #[schema(pattern = r"^\+?[0-9]{7,15}$")]
    pub phone: String,
    #[schema(value_type = Location)]
    pub location: LatLon,
    #[schema(
        min_length = 1,
        max_length = 500,
        pattern = r"^\s*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
    )]
    pub formatted_address: String,
}

/// Create the seller's restaurant (one per seller). It starts unverified and closed.
#[utoipa::path(
    post,
    path = "/api/restaurant/new",
    tag = "restaurants",
    security(("bearer" = [])),
    request_body = NewRestaurant,
    responses(
        (status = 201, body = RestaurantResponse),
        (status = 400, description = "Invalid field (name 1-100, description up to 1000, phone 7-15 digits, address 1-500, coordinates in range)", body = ErrorBody),
        Unauthorized,
        (status = 403, description = "Not a seller", body = ErrorBody),
        (status = 409, description = "The seller already has a restaurant (`restaurant_exists`)", body = ErrorBody),
    )
)]
async fn create(
    State(state): State<AppState>,
    SellerUser(seller): SellerUser,
    Json(body): Json<NewRestaurant>,
) -> Result<(StatusCode, Json<RestaurantResponse>), ApiError> {
    let restaurant = Restaurant {
        id: RestaurantId::new(),
        owner_id: seller.user.id,
        name: text("name", &body.name, 1, 100).map_err(invalid)?,
        description: text("description", &body.description, 0, 1000).map_err(invalid)?,
        image: body.image.as_deref().map(image).transpose()?,
        phone: phone("phone", &body.phone).map_err(invalid)?,
        location: body.location,
        formatted_address: text("formattedAddress", &body.formatted_address, 1, 500)
            .map_err(invalid)?,
        is_open: false,
        is_verified: false,
        created_at: tomato_domain::millis::now_ms(),
    };
    let cell = u64::from(restaurant.location.cell(INDEX_RESOLUTION));
    state.stores.restaurants.create(&restaurant, cell).await?;
    tracing::info!(restaurant_id = %restaurant.id, "restaurant created");
    Ok((StatusCode::CREATED, one(restaurant)))
}

/// Where and what to search.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct NearbyQuery {
    /// Latitude of the point to search around.
    #[param(minimum = -90, maximum = 90)]
    pub lat: f64,
    /// Longitude of the point to search around.
    #[param(minimum = -180, maximum = 180)]
    pub lon: f64,
    /// Search radius in metres (default 5000, 1 to 50000).
    #[param(minimum = 1, maximum = 50000)]
    pub radius: Option<i64>,
    /// Case-insensitive substring of the name (at most 100 characters).
    #[param(max_length = 100)]
    pub search: Option<String>,
}

/// Verified restaurants near a point: open ones first, then nearest, each with `distanceKm`.
/// The answer carries `nextCursor` (null on the last page).
#[utoipa::path(
    get,
    path = "/api/restaurant/all",
    tag = "restaurants",
    security(("bearer" = [])),
    params(NearbyQuery, PageParams),
    responses(
        (status = 200, body = NearbyResponse),
        (status = 400, description = "Missing or out-of-range lat, lon, radius or limit; bad cursor", body = ErrorBody),
        Unauthorized,
    )
)]
async fn nearby(
    State(state): State<AppState>,
    _auth: AuthUser,
    Query(query): Query<NearbyQuery>,
    Query(page): Query<PageParams>,
) -> Result<Json<NearbyResponse>, ApiError> {
    let centre = LatLon::new(query.lat, query.lon).map_err(invalid)?;
    let radius = match query.radius {
        None => DEFAULT_RADIUS_M,
        Some(r) if (1..=i64::from(MAX_RADIUS_M)).contains(&r) => r as u32,
        Some(_) => {
            return Err(ApiError::bad_request(format!(
                "radius must be between 1 and {MAX_RADIUS_M} metres"
            )));
        }
    };
    let search = match query.search.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(s) if s.chars().count() <= 100 => Some(s.to_owned()),
        Some(_) => {
            return Err(ApiError::bad_request(
                "search must be at most 100 characters",
            ));
        }
    };
    // Checked before the search runs (an invalid page changes nothing either way).
    page.limit()?;

    let cells: Vec<u64> = centre
        .cell(INDEX_RESOLUTION)
        .grid_disk::<Vec<_>>(covering_k(f64::from(radius), INDEX_RESOLUTION))
        .into_iter()
        .map(u64::from)
        .collect();
    let found = state
        .stores
        .restaurants
        .verified_in_cells(cells, search)
        .await?;
    let mut within: Vec<(Restaurant, f64)> = found
        .into_iter()
        .map(|r| {
            let metres = centre.distance_m(r.location);
            (r, metres)
        })
        .filter(|(_, metres)| *metres <= f64::from(radius))
        .collect();
    within.sort_by(|(a, da), (b, db)| b.is_open.cmp(&a.is_open).then(da.total_cmp(db)));
    // The list is ranked in memory, so its cursor is simply the offset of the next page.
    let (within, next_cursor) = page.offset_page(within)?;
    let restaurants = within
        .into_iter()
        .map(|(r, metres)| RestaurantView {
            distance_km: Some((metres / 10.0).round() / 100.0),
            ..r.into()
        })
        .collect();
    Ok(Json(NearbyResponse {
        restaurants,
        next_cursor,
    }))
}

/// The seller's own restaurant; 404 until they create one.
#[utoipa::path(
    get,
    path = "/api/restaurant/my",
    tag = "restaurants",
    security(("bearer" = [])),
    responses(
        (status = 200, body = RestaurantResponse),
        Unauthorized,
        (status = 403, description = "Not a seller", body = ErrorBody),
        (status = 404, description = "No restaurant yet", body = ErrorBody),
    )
)]
async fn mine(
    State(state): State<AppState>,
    SellerUser(seller): SellerUser,
) -> Result<Json<RestaurantResponse>, ApiError> {
    let restaurant = state
        .stores
        .restaurants
        .by_owner(seller.user.id)
        .await?
        .ok_or_else(|| ApiError::not_found("you have no restaurant yet"))?;
    Ok(one(restaurant))
}

/// Loads a restaurant or answers 404.
pub(crate) async fn load(state: &AppState, id: RestaurantId) -> Result<Restaurant, ApiError> {
    state
        .stores
        .restaurants
        .get(id)
        .await?
        .ok_or_else(|| ApiError::not_found("no such restaurant"))
}

/// A restaurant by id (any signed-in user).
#[utoipa::path(
    get,
    path = "/api/restaurant/{id}",
    tag = "restaurants",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Restaurant id")),
    responses(
        (status = 200, body = RestaurantResponse),
        (status = 400, description = "Not an id", body = ErrorBody),
        Unauthorized,
        (status = 404, body = ErrorBody),
    )
)]
async fn get_one(
    State(state): State<AppState>,
    _auth: AuthUser,
    Path(id): Path<RestaurantId>,
) -> Result<Json<RestaurantResponse>, ApiError> {
    Ok(one(load(&state, id).await?))
}

/// Changes to a restaurant; absent fields stay as they are.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RestaurantChanges {
    #[schema(
        min_length = 1,
        max_length = 100,
        pattern = r"^\s*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
    )]
    pub name: Option<String>,
    #[schema(max_length = 1000, pattern = r"^[^\x00-\x09\x0b-\x1f\x7f-\x9f]*$")]
    pub description: Option<String>,
    pub image: Option<String>,
    #[schema(pattern = r"^\+?[0-9]{7,15}$")]
    pub phone: Option<String>,
    pub is_open: Option<bool>,
}

/// Edit the seller's restaurant, or open and close it.
#[utoipa::path(
    put,
    path = "/api/restaurant/{id}",
    tag = "restaurants",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Restaurant id")),
    request_body = RestaurantChanges,
    responses(
        (status = 200, body = RestaurantResponse),
        (status = 400, body = ErrorBody),
        Unauthorized,
        (status = 403, description = "Not a seller, or not this restaurant's owner", body = ErrorBody),
        (status = 404, body = ErrorBody),
    )
)]
async fn update(
    State(state): State<AppState>,
    SellerUser(seller): SellerUser,
    Path(id): Path<RestaurantId>,
    Json(changes): Json<RestaurantChanges>,
) -> Result<Json<RestaurantResponse>, ApiError> {
    let name = changes
        .name
        .as_deref()
        .map(|v| text("name", v, 1, 100))
        .transpose();
    let description = changes
        .description
        .as_deref()
        .map(|v| text("description", v, 0, 1000))
        .transpose();
    let phone = changes
        .phone
        .as_deref()
        .map(|v| phone("phone", v))
        .transpose();
    let (name, description, phone) = (
        name.map_err(invalid)?,
        description.map_err(invalid)?,
        phone.map_err(invalid)?,
    );
    let new_image = changes.image.as_deref().map(image).transpose()?;

    let mut restaurant = load(&state, id).await?;
    if restaurant.owner_id != seller.user.id {
        return Err(ApiError::forbidden(
            "only the owner can change a restaurant",
        ));
    }
    if let Some(name) = name {
        restaurant.name = name;
    }
    if let Some(description) = description {
        restaurant.description = description;
    }
    if let Some(image) = new_image {
        restaurant.image = Some(image);
    }
    if let Some(phone) = phone {
        restaurant.phone = phone;
    }
    if let Some(is_open) = changes.is_open {
        restaurant.is_open = is_open;
    }
    state.stores.restaurants.update(&restaurant).await?;
    Ok(one(restaurant))
}

/// Restaurants waiting for verification, oldest first.
#[utoipa::path(
    get,
    path = "/api/admin/restaurant/pending",
    tag = "admin",
    security(("bearer" = [])),
    params(PageParams),
    responses(
        (status = 200, body = RestaurantsResponse),
        (status = 400, description = "limit outside 1-200 or bad cursor", body = ErrorBody),
        Unauthorized,
        (status = 403, description = "Not an admin", body = ErrorBody),
    )
)]
async fn pending(
    State(state): State<AppState>,
    _admin: AdminUser,
    Query(page): Query<PageParams>,
) -> Result<Json<RestaurantsResponse>, ApiError> {
    page.limit()?;
    let (restaurants, next_cursor) = page.offset_page(state.stores.restaurants.pending().await?)?;
    Ok(Json(RestaurantsResponse {
        restaurants: restaurants.into_iter().map(Into::into).collect(),
        next_cursor,
    }))
}

/// Verify a restaurant: from now on it is listed and can take orders (while open).
/// Verifying twice is harmless.
#[utoipa::path(
    put,
    path = "/api/admin/restaurant/verify/{id}",
    tag = "admin",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Restaurant id")),
    responses(
        (status = 200, body = RestaurantResponse),
        Unauthorized,
        (status = 403, description = "Not an admin", body = ErrorBody),
        (status = 404, body = ErrorBody),
    )
)]
async fn verify(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
    Path(id): Path<RestaurantId>,
) -> Result<Json<RestaurantResponse>, ApiError> {
    let restaurant = state.stores.restaurants.verify(id).await?;
    tracing::info!(restaurant_id = %id, admin_id = %admin.user.id, "restaurant verified");
    Ok(one(restaurant))
}
