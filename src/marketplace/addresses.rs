//! `/api/address`: the customer's delivery addresses.

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use tomato_domain::ErrorKind;
use tomato_domain::marketplace::{phone, text};
use tomato_domain::{Address, AddressId, LatLon};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::CustomerUser;
use crate::http::fields::{Location, invalid};
use crate::http::responses::Unauthorized;
use crate::http::{ApiError, ErrorBody, Json, Path};
use crate::state::AppState;
use tomato_domain::millis::now_ms;

/// The most addresses one customer keeps.
const MAX_ADDRESSES: usize = 50;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(create))
        .routes(routes!(delete))
}

/// A delivery address.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AddressView {
    pub id: String,
    pub formatted_address: String,
    pub mobile: String,
    #[schema(value_type = Location)]
    pub location: LatLon,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: OffsetDateTime,
}

impl From<Address> for AddressView {
    fn from(a: Address) -> Self {
        Self {
            id: a.id.to_string(),
            formatted_address: a.formatted_address,
            mobile: a.mobile,
            location: a.location,
            created_at: a.created_at,
        }
    }
}

/// `{address}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct AddressResponse {
    pub address: AddressView,
}

/// `{addresses}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct AddressesResponse {
    pub addresses: Vec<AddressView>,
}

/// The customer's addresses, newest first.
#[utoipa::path(
    get,
    path = "/api/address/all",
    tag = "addresses",
    security(("bearer" = [])),
    responses(
        (status = 200, body = AddressesResponse),
        Unauthorized,
        (status = 403, description = "Not a customer", body = ErrorBody),
    )
)]
async fn list(
    State(state): State<AppState>,
    CustomerUser(customer): CustomerUser,
) -> Result<Json<AddressesResponse>, ApiError> {
    let addresses = state.stores.addresses.list(customer.user.id).await?;
    Ok(Json(AddressesResponse {
        addresses: addresses.into_iter().map(Into::into).collect(),
    }))
}

/// A new address.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct NewAddress {
    #[schema(
        min_length = 1,
        max_length = 500,
        pattern = r"^\s*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
    )]
    pub formatted_address: String,
    /// 7 to 15 digits, optionally starting with +.
    #[schema(pattern = r"^\+?[0-9]{7,15}$")]
    pub mobile: String,
    #[schema(value_type = Location)]
    pub location: LatLon,
}

/// Save an address (at most 50 per customer).
#[utoipa::path(
    post,
    path = "/api/address/new",
    tag = "addresses",
    security(("bearer" = [])),
    request_body = NewAddress,
    responses(
        (status = 201, body = AddressResponse),
        (status = 400, description = "Invalid address (1-500 characters), mobile or coordinates", body = ErrorBody),
        Unauthorized,
        (status = 403, description = "Not a customer", body = ErrorBody),
        (status = 409, description = "Already 50 addresses (`address_limit`)", body = ErrorBody),
    )
)]
async fn create(
    State(state): State<AppState>,
    CustomerUser(customer): CustomerUser,
    Json(body): Json<NewAddress>,
) -> Result<(StatusCode, Json<AddressResponse>), ApiError> {
    let address = Address {
        id: AddressId::new(),
        user_id: customer.user.id,
        formatted_address: text("formattedAddress", &body.formatted_address, 1, 500)
            .map_err(invalid)?,
        mobile: phone("mobile", &body.mobile).map_err(invalid)?,
        location: body.location,
        created_at: now_ms(),
    };
    if state.stores.addresses.list(customer.user.id).await?.len() >= MAX_ADDRESSES {
        return Err(ApiError::from_kind(
            ErrorKind::Conflict,
            "address_limit",
            format!("a customer keeps at most {MAX_ADDRESSES} addresses"),
        ));
    }
    state.stores.addresses.create(&address).await?;
    Ok((
        StatusCode::CREATED,
        Json(AddressResponse {
            address: address.into(),
        }),
    ))
}

/// Delete one of the customer's addresses.
#[utoipa::path(
    delete,
    path = "/api/address/{id}",
    tag = "addresses",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Address id")),
    responses(
        (status = 204, description = "Deleted"),
        Unauthorized,
        (status = 403, description = "Not a customer", body = ErrorBody),
        (status = 404, description = "No such address of this customer", body = ErrorBody),
    )
)]
async fn delete(
    State(state): State<AppState>,
    CustomerUser(customer): CustomerUser,
    Path(id): Path<AddressId>,
) -> Result<StatusCode, ApiError> {
    state.stores.addresses.delete(customer.user.id, id).await?;
    Ok(StatusCode::NO_CONTENT)
}
