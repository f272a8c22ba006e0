//! `/api/rider`: rider profiles, availability, the location stream (the hot path: validated,
//! mapped to a cell and applied to the shard's in-memory index, never the database), the
//! nearest-riders search, and the admin's rider verification.

use axum::extract::{FromRequestParts, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use tomato_domain::ErrorKind;
use tomato_domain::marketplace::phone;
use tomato_domain::rider::{aadhar, driving_license, mask};
use tomato_domain::{LatLon, OrderCommand, OrderId, OrderStatus, Rider, RiderId};
use tomato_shards::OrderRef;
use tomato_shards::index::INDEX_RESOLUTION;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::{AdminUser, AuthUser, RiderUser};
use crate::http::fields::{Location, image, invalid};
use crate::http::responses::{RateLimited, ShardMoving, Unauthorized};
use crate::http::{ApiError, ErrorBody, InternalCaller, Json, PageParams, Path, Query};
use crate::orders::OrderResponse;
use crate::state::AppState;
use tomato_domain::millis::now_ms;

pub mod ids;
pub mod snapshots;

pub use ids::RiderIds;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create))
        .routes(routes!(me))
        .routes(routes!(location))
        .routes(routes!(availability))
        .routes(routes!(current_order))
        .routes(routes!(offers))
        .routes(routes!(accept))
        .routes(routes!(reject))
        .routes(routes!(set_status))
        .routes(routes!(nearby))
        .routes(routes!(pending))
        .routes(routes!(verify))
}

/// A rider as clients see it. `aadharNumber` and `drivingLicenseNumber` appear, masked to their
/// last 4 characters, only for the rider and admins.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RiderView {
    pub id: String,
    pub user_id: String,
    pub name: String,
    pub phone_number: String,
    pub picture: Option<String>,
    pub is_verified: bool,
    pub is_available: bool,
    #[schema(value_type = Location)]
    pub location: LatLon,
    /// H3 cell (resolution 8) of `location`, as hex.
    #[schema(example = "8860145b45fffff")]
    pub cell: String,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub last_seen_at: OffsetDateTime,
    pub current_order_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = "XXXXXXXX9012")]
    pub aadhar_number: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub driving_license_number: Option<String>,
}

impl RiderView {
    /// The view of `rider`, with its live position when the index has a fresher one.
    fn new(state: &AppState, rider: Rider, with_documents: bool) -> Self {
        let (location, last_seen_at) = match state.riders.get(rider.id) {
            Some((at, seen, _)) if i64::from(seen) >= rider.last_seen_at.unix_timestamp() => (
                at,
                OffsetDateTime::from_unix_timestamp(i64::from(seen)).unwrap_or(rider.last_seen_at),
            ),
            _ => (rider.location, rider.last_seen_at),
        };
        Self {
            id: rider.id.to_string(),
            user_id: rider.user_id.to_string(),
            name: rider.name,
            phone_number: rider.phone_number,
            picture: rider.picture,
            is_verified: rider.is_verified,
            is_available: rider.is_available,
            cell: location.cell(INDEX_RESOLUTION).to_string(),
            location,
            last_seen_at,
            current_order_id: rider.current_order_id.map(|id| id.to_string()),
            aadhar_number: with_documents.then(|| mask(&rider.aadhar_number)),
            driving_license_number: with_documents.then(|| mask(&rider.driving_license_number)),
        }
    }
}

/// `{rider}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct RiderResponse {
    pub rider: RiderView,
}

/// `{riders}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct RidersResponse {
    pub riders: Vec<RiderView>,
    /// Pass as `cursor` for the next page; null on the last one.
    pub next_cursor: Option<String>,
}

/// A new rider profile.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct NewRider {
    #[schema(pattern = r"^\+?[0-9]{7,15}$")]
    pub phone_number: String,
    /// 12 digits.
    #[schema(pattern = r"^[0-9]{12}$")]
    pub aadhar_number: String,
    /// 8 to 20 letters and digits.
    #[schema(pattern = r"^[A-Za-z0-9]{8,20}$")]
    pub driving_license_number: String,
    pub picture: Option<String>,
    #[schema(value_type = Location)]
    pub location: LatLon,
}

/// Register the user's rider profile (one per user). It starts unverified and offline.
#[utoipa::path(
    post,
    path = "/api/rider/new",
    tag = "riders",
    security(("bearer" = [])),
    request_body = NewRider,
    responses(
        (status = 201, body = RiderResponse),
        (status = 400, body = ErrorBody),
        Unauthorized,
        (status = 403, description = "Not a rider", body = ErrorBody),
        (status = 409, description = "The user already has a profile (`rider_exists`)", body = ErrorBody),
    )
)]
async fn create(
    State(state): State<AppState>,
    RiderUser(auth): RiderUser,
    Json(body): Json<NewRider>,
) -> Result<(StatusCode, Json<RiderResponse>), ApiError> {
    let now = now_ms();
    let rider = Rider {
        id: RiderId::new(),
        user_id: auth.user.id,
        name: auth.user.name.as_str().to_owned(),
        phone_number: phone("phoneNumber", &body.phone_number).map_err(invalid)?,
        aadhar_number: aadhar(&body.aadhar_number).map_err(invalid)?,
        driving_license_number: driving_license(&body.driving_license_number).map_err(invalid)?,
        picture: body.picture.as_deref().map(image).transpose()?,
        is_verified: false,
        is_available: false,
        location: body.location,
        last_seen_at: now,
        current_order_id: None,
        created_at: now,
    };
    state.stores.riders.create(&rider).await?;
    state.rider_ids.remember(rider.user_id, rider.id);
    state.riders.restore(rider.id, rider.location, now, false);
    tracing::info!(rider_id = %rider.id, "rider registered");
    Ok((
        StatusCode::CREATED,
        Json(RiderResponse {
            rider: RiderView::new(&state, rider, true),
        }),
    ))
}

async fn own_profile(state: &AppState, auth: &AuthUser) -> Result<Rider, ApiError> {
    let id = state.rider_ids.of(&state.stores, auth.user.id).await?;
    state
        .stores
        .riders
        .get(id)
        .await?
        .ok_or_else(|| ApiError::not_found("create your rider profile first"))
}

/// The rider's own profile, with its live position.
#[utoipa::path(
    get,
    path = "/api/rider/me",
    tag = "riders",
    security(("bearer" = [])),
    responses(
        (status = 200, body = RiderResponse),
        Unauthorized,
        (status = 403, description = "Not a rider", body = ErrorBody),
        (status = 404, description = "No profile yet", body = ErrorBody),
    )
)]
async fn me(
    State(state): State<AppState>,
    RiderUser(auth): RiderUser,
) -> Result<Json<RiderResponse>, ApiError> {
    let rider = own_profile(&state, &auth).await?;
    Ok(Json(RiderResponse {
        rider: RiderView::new(&state, rider, true),
    }))
}

/// A position report.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PositionReport {
    #[schema(minimum = -90, maximum = 90)]
    pub lat: f64,
    #[schema(minimum = -180, maximum = 180)]
    pub lon: f64,
    /// Degrees clockwise from north, 0 to 360.
    #[schema(minimum = 0, maximum = 360)]
    pub heading: Option<f64>,
    /// Ground speed, 0 to 100 m/s.
    #[schema(minimum = 0, maximum = 100)]
    pub speed_mps: Option<f64>,
    /// When the device took the fix (RFC 3339). Informational: staleness is measured from
    /// when the server received the report, so a wrong device clock cannot hide a rider.
    #[schema(
        format = DateTime,
        pattern = r"^(19|20)[0-9]{2}-(0[1-9]|1[0-2])-(0[1-9]|1[0-9]|2[0-8])T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]{1,9})?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$"
    )]
    pub at: Option<String>,
}

impl PositionReport {
    /// Checks the report; the point it is at.
    pub fn validate(&self) -> Result<LatLon, ApiError> {
        let at = LatLon::new(self.lat, self.lon).map_err(invalid)?;
        if let Some(heading) = self.heading
            && !(heading.is_finite() && (0.0..=360.0).contains(&heading))
        {
            return Err(ApiError::bad_request("heading must be between 0 and 360"));
        }
        if let Some(speed) = self.speed_mps
            && !(speed.is_finite() && (0.0..=100.0).contains(&speed))
        {
            return Err(ApiError::bad_request("speedMps must be between 0 and 100"));
        }
        if let Some(stamp) = &self.at {
            OffsetDateTime::parse(stamp, &time::format_description::well_known::Rfc3339)
                .map_err(|_| ApiError::bad_request("at must be an RFC 3339 timestamp"))?;
        }
        Ok(at)
    }
}

/// Applies a validated position of the signed-in rider: the shared path of HTTP and sockets.
pub async fn apply_position(
    state: &AppState,
    auth: &AuthUser,
    report: &PositionReport,
) -> Result<(), ApiError> {
    // HTTP and sockets alike: one rider's flood is refused before it costs anything.
    state.limits.position(auth.user.id)?;
    let at = report.validate()?;
    let rider = state.rider_ids.of(&state.stores, auth.user.id).await?;
    let now = OffsetDateTime::now_utc();
    // Into the index, and to the rider's actor (on the update's shard, handed off if it
    // changed), which tells a watching customer.
    state.shards.moved(rider, at, now).await?;
    Ok(())
}

/// Report the rider's position (apps send one every few seconds). Applied in memory; the store
/// gets periodic snapshots.
#[utoipa::path(
    put,
    path = "/api/rider/location",
    tag = "riders",
    security(("bearer" = [])),
    request_body = PositionReport,
    responses(
        (status = 204, description = "Applied"),
        (status = 400, description = "Coordinates out of range or not finite, bad heading, speed or timestamp", body = ErrorBody),
        Unauthorized,
        (status = 403, description = "Not a rider", body = ErrorBody),
        (status = 404, description = "No rider profile yet", body = ErrorBody),
        ShardMoving,
        RateLimited,
    )
)]
async fn location(
    State(state): State<AppState>,
    RiderUser(auth): RiderUser,
    Json(report): Json<PositionReport>,
) -> Result<StatusCode, ApiError> {
    apply_position(&state, &auth, &report).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Going on or off duty.
#[derive(Debug, Deserialize, ToSchema)]
pub struct Availability {
    pub available: bool,
}

/// Go online (needs a verified profile) or offline. Offline riders get no new offers; an order
/// they carry goes on.
#[utoipa::path(
    put,
    path = "/api/rider/availability",
    tag = "riders",
    security(("bearer" = [])),
    request_body = Availability,
    responses(
        (status = 200, body = RiderResponse),
        (status = 400, body = ErrorBody),
        Unauthorized,
        (status = 403, description = "Not a rider, or going online unverified (`rider_not_verified`)", body = ErrorBody),
        (status = 404, description = "No rider profile yet", body = ErrorBody),
    )
)]
async fn availability(
    State(state): State<AppState>,
    RiderUser(auth): RiderUser,
    Json(body): Json<Availability>,
) -> Result<Json<RiderResponse>, ApiError> {
    let rider = own_profile(&state, &auth).await?;
    if body.available && !rider.is_verified {
        return Err(ApiError::from_kind(
            ErrorKind::Forbidden,
            "rider_not_verified",
            "an admin must verify your profile before you can go online",
        ));
    }
    let rider = state
        .stores
        .riders
        .set_available(rider.id, body.available)
        .await?;
    state.shards.rider_changed(&rider);
    Ok(Json(RiderResponse {
        rider: RiderView::new(&state, rider, true),
    }))
}

/// `{order}`, or `{order: null}` when the rider carries none.
#[derive(Debug, Serialize, ToSchema)]
pub struct CurrentOrder {
    pub order: Option<crate::orders::OrderView>,
}

/// The order the rider carries, if any.
#[utoipa::path(
    get,
    path = "/api/rider/orders/current",
    tag = "riders",
    security(("bearer" = [])),
    responses(
        (status = 200, body = CurrentOrder),
        Unauthorized,
        (status = 403, description = "Not a rider", body = ErrorBody),
        (status = 404, description = "No rider profile yet", body = ErrorBody),
    )
)]
async fn current_order(
    State(state): State<AppState>,
    RiderUser(auth): RiderUser,
) -> Result<Json<CurrentOrder>, ApiError> {
    let rider = own_profile(&state, &auth).await?;
    let order = match rider.current_order_id {
        Some(id) => state.stores.orders.get(id).await?,
        None => None,
    };
    Ok(Json(CurrentOrder {
        order: order.map(|o| OrderResponse::from(o).order),
    }))
}

/// The offers a rider holds.
#[derive(Debug, Serialize, ToSchema)]
pub struct HeldOffers {
    /// Each as the `order:available` event carried it: `{orderId, restaurantId,
    /// restaurantName, pickup, dropoff, distanceKm, riderAmount, expiresAt}`, oldest first.
    #[schema(value_type = Vec<Object>)]
    pub offers: Vec<tomato_actors::Offer>,
}

/// The live offers this rider holds (not yet accepted, rejected or expired): the same data as
/// the `order:available` events, for apps that poll instead of keeping a socket, or that missed
/// events while reconnecting. An offer of an order someone else took meanwhile may still show
/// until it expires; accepting it answers 409 `already_taken`. With `dispatch.mode =
/// "batched"` an offer goes to the one rider a window matched the order with and stands a
/// third of `dispatch.offer_ttl_s` (at least 1 s); an order nobody took within
/// `dispatch.offer_ttl_s` is then offered in waves, as in greedy mode.
#[utoipa::path(
    get,
    path = "/api/rider/offers",
    tag = "riders",
    security(("bearer" = [])),
    responses(
        (status = 200, body = HeldOffers),
        Unauthorized,
        (status = 403, description = "Not a rider", body = ErrorBody),
        (status = 404, description = "No rider profile yet", body = ErrorBody),
    )
)]
async fn offers(
    State(state): State<AppState>,
    RiderUser(auth): RiderUser,
) -> Result<Json<HeldOffers>, ApiError> {
    let rider = state.rider_ids.of(&state.stores, auth.user.id).await?;
    // In a cluster an offer stands on the node that owns its order's shard, which tells every
    // other node: the rider's offers are read here, from memory.
    let offers = state.shards.offers_of(rider);
    Ok(Json(HeldOffers { offers }))
}

/// Accept an offer. Exactly one rider wins; the order becomes `rider_assigned` and the rider
/// busy until delivery.
#[utoipa::path(
    post,
    path = "/api/rider/orders/{id}/accept",
    tag = "riders",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Order id")),
    responses(
        (status = 200, body = OrderResponse),
        Unauthorized,
        (status = 403, description = "Not a rider", body = ErrorBody),
        (status = 404, description = "No such order, or no rider profile", body = ErrorBody),
        (status = 409, description = "`offer_not_held` (never offered, expired or rejected), `already_taken`, `rider_busy` (already carrying an order)", body = ErrorBody),
        ShardMoving,
    )
)]
async fn accept(
    State(state): State<AppState>,
    RiderUser(auth): RiderUser,
    Path(id): Path<OrderId>,
) -> Result<Json<OrderResponse>, ApiError> {
    let rider = own_profile(&state, &auth).await?;
    // In a cluster the rider's position may live on the node that owns its shard.
    if state.cluster.get().is_none() && state.riders.home(rider.id).is_none() {
        return Err(ApiError::not_found(
            "report your position before taking orders",
        ));
    }
    // Any rider may name any order; the order's actor refuses one it did not offer.
    let order = OrderRef::from(&crate::orders::load(&state, id).await?);
    // Through the rider's actor: it takes one order at a time.
    let order = state
        .shards
        .take(rider.id, order, rider.name, rider.phone_number)
        .await
        .inspect_err(|err| {
            if matches!(err, tomato_actors::OrderError::RiderBusy) {
                state.dispatch_metrics.busy_claims.inc();
            }
        })?;
    tracing::info!(order_id = %id, rider_id = %rider.id, "offer accepted");
    Ok(Json(order.into()))
}

/// Turn an offer down; the order goes to the next riders.
#[utoipa::path(
    post,
    path = "/api/rider/orders/{id}/reject",
    tag = "riders",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Order id")),
    responses(
        (status = 204, description = "Rejected"),
        Unauthorized,
        (status = 403, description = "Not a rider", body = ErrorBody),
        (status = 404, description = "No such order, or no rider profile", body = ErrorBody),
        (status = 409, description = "No live offer of this order (`offer_not_held`)", body = ErrorBody),
        ShardMoving,
    )
)]
async fn reject(
    State(state): State<AppState>,
    RiderUser(auth): RiderUser,
    Path(id): Path<OrderId>,
) -> Result<StatusCode, ApiError> {
    let rider = state.rider_ids.of(&state.stores, auth.user.id).await?;
    let order = crate::orders::load(&state, id).await?;
    state.shards.reject((&order).into(), rider).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The assigned rider's move.
#[derive(Debug, Deserialize, ToSchema)]
pub struct RiderStatus {
    /// `picked_up` or `delivered`.
    #[schema(example = "picked_up", pattern = "^(picked_up|delivered)$")]
    pub status: String,
}

/// The assigned rider moves the order: `rider_assigned` -> `picked_up` -> `delivered`. On
/// delivery the rider is free for new offers again.
#[utoipa::path(
    put,
    path = "/api/rider/orders/{id}/status",
    tag = "riders",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Order id")),
    request_body = RiderStatus,
    responses(
        (status = 200, body = OrderResponse),
        (status = 400, description = "A status other than picked_up or delivered", body = ErrorBody),
        Unauthorized,
        (status = 403, description = "Not a rider, or not the order's assigned rider", body = ErrorBody),
        (status = 404, description = "No such order, or no rider profile", body = ErrorBody),
        (status = 409, description = "Not allowed from the current status (`invalid_transition`)", body = ErrorBody),
        ShardMoving,
    )
)]
async fn set_status(
    State(state): State<AppState>,
    RiderUser(auth): RiderUser,
    Path(id): Path<OrderId>,
    Json(body): Json<RiderStatus>,
) -> Result<Json<OrderResponse>, ApiError> {
    let status = match body.status.parse::<OrderStatus>() {
        Ok(status @ (OrderStatus::PickedUp | OrderStatus::Delivered)) => status,
        _ => {
            return Err(ApiError::bad_request(
                "status must be picked_up or delivered",
            ));
        }
    };
    let rider = state.rider_ids.of(&state.stores, auth.user.id).await?;
    let order = crate::orders::load(&state, id).await?;
    if order.rider_id != Some(rider) {
        return Err(ApiError::forbidden(
            "only the order's assigned rider can move it",
        ));
    }
    let order = state
        .shards
        .apply((&order).into(), OrderCommand::SetByRider { rider, status })
        .await?;
    Ok(Json(order.into()))
}

/// An admin, or another back-end service holding the internal key.
#[derive(Debug)]
pub struct AdminOrService;

impl FromRequestParts<AppState> for AdminOrService {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        if parts.headers.contains_key(crate::http::INTERNAL_KEY_HEADER) {
            InternalCaller::from_request_parts(parts, state).await?;
        } else {
            AdminUser::from_request_parts(parts, state).await?;
        }
        Ok(AdminOrService)
    }
}

/// Where to look for riders.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct NearbyRidersQuery {
    #[param(minimum = -90, maximum = 90)]
    pub lat: f64,
    #[param(minimum = -180, maximum = 180)]
    pub lon: f64,
    /// Metres (default `dispatch.search_radius_m`, 1 to 50000).
    #[param(minimum = 1, maximum = 50000)]
    pub radius: Option<i64>,
    /// Default 5, 1 to 100.
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<i64>,
}

/// A rider found near a point.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct NearbyRider {
    pub id: String,
    #[schema(value_type = Location)]
    pub location: LatLon,
    pub distance_m: f64,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub last_seen_at: OffsetDateTime,
}

/// `{riders}` of the nearby search.
#[derive(Debug, Serialize, ToSchema)]
pub struct NearbyRidersResponse {
    pub riders: Vec<NearbyRider>,
}

/// The nearest available riders (verified, online, without an order, seen within
/// `dispatch.stale_after_s`), nearest first: the search dispatch uses. For admins and back-end
/// services (`x-internal-key`), never for customers.
#[utoipa::path(
    get,
    path = "/api/rider/nearby",
    tag = "riders",
    security(("bearer" = [])),
    params(NearbyRidersQuery),
    responses(
        (status = 200, body = NearbyRidersResponse),
        (status = 400, description = "Coordinates, radius or limit out of range", body = ErrorBody),
        Unauthorized,
        (status = 403, description = "Neither an admin nor a valid x-internal-key", body = ErrorBody),
    )
)]
async fn nearby(
    State(state): State<AppState>,
    _caller: AdminOrService,
    Query(query): Query<NearbyRidersQuery>,
) -> Result<Json<NearbyRidersResponse>, ApiError> {
    let at = LatLon::new(query.lat, query.lon).map_err(invalid)?;
    let radius = match query.radius {
        None => i64::from(state.settings.dispatch.search_radius_m),
        Some(r) if (1..=50_000).contains(&r) => r,
        Some(_) => {
            return Err(ApiError::bad_request(
                "radius must be between 1 and 50000 metres",
            ));
        }
    };
    let limit = match query.limit {
        None => 5,
        Some(l) if (1..=100).contains(&l) => l as usize,
        Some(_) => return Err(ApiError::bad_request("limit must be between 1 and 100")),
    };
    let fresh_since = crate::dispatch::fresh_since(state.settings.dispatch.stale_after_s);
    // Every node's riders, in a cluster: from this node's copy of the regions around, and the
    // owners of any shard around whose region it does not copy are asked.
    let riders = state
        .shards
        .nearest_everywhere(tomato_shards::NearestQuery {
            at,
            radius_m: radius as f64,
            limit,
            fresh_since,
        })
        .await
        .into_iter()
        .map(|found| NearbyRider {
            id: found.rider.to_string(),
            location: found.location,
            distance_m: (found.distance_m * 10.0).round() / 10.0,
            last_seen_at: OffsetDateTime::from_unix_timestamp(i64::from(found.seen))
                .unwrap_or(OffsetDateTime::UNIX_EPOCH),
        })
        .collect();
    Ok(Json(NearbyRidersResponse { riders }))
}

/// Rider profiles waiting for verification, oldest first (documents masked).
#[utoipa::path(
    get,
    path = "/api/admin/rider/pending",
    tag = "admin",
    security(("bearer" = [])),
    params(PageParams),
    responses(
        (status = 200, body = RidersResponse),
        (status = 400, description = "limit outside 1-200 or bad cursor", body = ErrorBody),
        Unauthorized,
        (status = 403, description = "Not an admin", body = ErrorBody),
    )
)]
async fn pending(
    State(state): State<AppState>,
    _admin: AdminUser,
    Query(page): Query<PageParams>,
) -> Result<Json<RidersResponse>, ApiError> {
    page.limit()?;
    let (riders, next_cursor) = page.offset_page(state.stores.riders.pending().await?)?;
    Ok(Json(RidersResponse {
        riders: riders
            .into_iter()
            .map(|r| RiderView::new(&state, r, true))
            .collect(),
        next_cursor,
    }))
}

/// Verify a rider: from now on it may go online. Verifying twice is harmless.
#[utoipa::path(
    put,
    path = "/api/admin/rider/verify/{id}",
    tag = "admin",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Rider id")),
    responses(
        (status = 200, body = RiderResponse),
        Unauthorized,
        (status = 403, description = "Not an admin", body = ErrorBody),
        (status = 404, body = ErrorBody),
    )
)]
async fn verify(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
    Path(id): Path<RiderId>,
) -> Result<Json<RiderResponse>, ApiError> {
    let rider = state.stores.riders.verify(id).await?;
    state.shards.rider_changed(&rider);
    tracing::info!(rider_id = %id, admin_id = %admin.user.id, "rider verified");
    Ok(Json(RiderResponse {
        rider: RiderView::new(&state, rider, true),
    }))
}

/// Loads every rider into the index at start, from the last snapshot: riders whose snapshot is
/// older than `dispatch.stale_after_s` stay invisible to dispatch until they report again.
pub async fn restore(state: &AppState) -> Result<usize, tomato_store::StoreError> {
    let riders = state.stores.riders.all().await?;
    let count = riders.len();
    for rider in riders {
        state.rider_ids.remember(rider.user_id, rider.id);
        state.riders.restore(
            rider.id,
            rider.location,
            rider.last_seen_at,
            rider.is_dispatchable(),
        );
    }
    Ok(count)
}
