//! `/api/cart`: the customer's cart, one restaurant at a time, priced from the menu as it is now.

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use tomato_domain::ErrorKind;
use tomato_domain::marketplace::MAX_QUANTITY;
use tomato_domain::{Cart, CartLineId, MenuItemId};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::CustomerUser;
use crate::http::responses::Unauthorized;
use crate::http::{ApiError, ErrorBody, Json, Path};
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_cart))
        .routes(routes!(add))
        .routes(routes!(set_quantity, remove_line))
        .routes(routes!(clear))
}

/// One line of the cart.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CartLineView {
    pub id: String,
    pub item_id: String,
    pub name: String,
    /// Current price, minor units.
    pub price: i64,
    pub quantity: u32,
    /// False once the restaurant marks the dish unavailable; such a cart cannot be ordered.
    pub is_available: bool,
}

/// The cart. An empty cart has `restaurantId` null and no lines.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CartView {
    pub restaurant_id: Option<String>,
    pub lines: Vec<CartLineView>,
    /// Sum of current price x quantity, minor units.
    pub subtotal: i64,
    /// Dishes, counting quantities.
    pub item_count: u32,
}

impl From<Cart> for CartView {
    fn from(cart: Cart) -> Self {
        Self {
            restaurant_id: cart.restaurant_id.map(|id| id.to_string()),
            subtotal: cart.subtotal().minor(),
            item_count: cart.item_count(),
            lines: cart
                .lines
                .into_iter()
                .map(|line| CartLineView {
                    id: line.id.to_string(),
                    item_id: line.item_id.to_string(),
                    name: line.name,
                    price: line.price.minor(),
                    quantity: line.quantity,
                    is_available: line.is_available,
                })
                .collect(),
        }
    }
}

/// `{cart}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct CartResponse {
    pub cart: CartView,
}

fn respond(cart: Cart) -> Json<CartResponse> {
    Json(CartResponse { cart: cart.into() })
}

/// The customer's cart.
#[utoipa::path(
    get,
    path = "/api/cart/all",
    tag = "cart",
    security(("bearer" = [])),
    responses(
        (status = 200, body = CartResponse),
        Unauthorized,
        (status = 403, description = "Not a customer", body = ErrorBody),
    )
)]
async fn get_cart(
    State(state): State<AppState>,
    CustomerUser(customer): CustomerUser,
) -> Result<Json<CartResponse>, ApiError> {
    Ok(respond(state.stores.carts.get(customer.user.id).await?))
}

/// A dish to add.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AddToCart {
    #[schema(format = Uuid)]
    pub item_id: String,
    /// 1 to 50, default 1.
    #[schema(minimum = 1, maximum = 50)]
    #[serde(default, deserialize_with = "crate::http::json::whole_number_opt")]
    pub quantity: Option<i64>,
}

fn quantity(raw: i64, min: i64) -> Result<u32, ApiError> {
    if !(min..=i64::from(MAX_QUANTITY)).contains(&raw) {
        return Err(ApiError::bad_request(format!(
            "quantity must be between {min} and {MAX_QUANTITY}"
        )));
    }
    Ok(raw as u32)
}

/// Add a dish (to its line, if the cart has one).
#[utoipa::path(
    post,
    path = "/api/cart/new",
    tag = "cart",
    security(("bearer" = [])),
    request_body = AddToCart,
    responses(
        (status = 200, body = CartResponse),
        (status = 400, description = "Quantity outside 1-50, or not an item id", body = ErrorBody),
        Unauthorized,
        (status = 403, description = "Not a customer", body = ErrorBody),
        (status = 404, description = "No such item", body = ErrorBody),
        (status = 409, description = "`cart_other_restaurant`: the cart holds another restaurant's dishes; `item_unavailable`; `quantity_limit`: the line would exceed 50", body = ErrorBody),
    )
)]
async fn add(
    State(state): State<AppState>,
    CustomerUser(customer): CustomerUser,
    Json(body): Json<AddToCart>,
) -> Result<Json<CartResponse>, ApiError> {
    let quantity = quantity(body.quantity.unwrap_or(1), 1)?;
    let item_id: MenuItemId = body
        .item_id
        .parse()
        .map_err(|_| ApiError::bad_request("itemId is not an id"))?;
    let item = state
        .stores
        .menu
        .get(item_id)
        .await?
        .ok_or_else(|| ApiError::not_found("no such item"))?;
    if !item.is_available {
        return Err(ApiError::from_kind(
            ErrorKind::Conflict,
            "item_unavailable",
            "this dish is not available right now",
        ));
    }
    Ok(respond(
        state
            .stores
            .carts
            .add(customer.user.id, &item, quantity)
            .await?,
    ))
}

/// A line's new quantity.
#[derive(Debug, Deserialize, ToSchema)]
pub struct SetQuantity {
    /// 0 to 50; 0 removes the line.
    #[schema(minimum = 0, maximum = 50)]
    #[serde(deserialize_with = "crate::http::json::whole_number")]
    pub quantity: i64,
}

/// Change a line's quantity; 0 removes it.
#[utoipa::path(
    put,
    path = "/api/cart/{lineId}",
    tag = "cart",
    security(("bearer" = [])),
    params(("lineId" = String, Path, description = "Cart line id")),
    request_body = SetQuantity,
    responses(
        (status = 200, body = CartResponse),
        (status = 400, description = "Quantity outside 0-50", body = ErrorBody),
        Unauthorized,
        (status = 403, description = "Not a customer", body = ErrorBody),
        (status = 404, description = "No such line in this customer's cart", body = ErrorBody),
    )
)]
async fn set_quantity(
    State(state): State<AppState>,
    CustomerUser(customer): CustomerUser,
    Path(line): Path<CartLineId>,
    Json(body): Json<SetQuantity>,
) -> Result<Json<CartResponse>, ApiError> {
    let quantity = quantity(body.quantity, 0)?;
    Ok(respond(
        state
            .stores
            .carts
            .set_quantity(customer.user.id, line, quantity)
            .await?,
    ))
}

/// Remove a line.
#[utoipa::path(
    delete,
    path = "/api/cart/{lineId}",
    tag = "cart",
    security(("bearer" = [])),
    params(("lineId" = String, Path, description = "Cart line id")),
    responses(
        (status = 200, body = CartResponse),
        Unauthorized,
        (status = 403, description = "Not a customer", body = ErrorBody),
        (status = 404, description = "No such line in this customer's cart", body = ErrorBody),
    )
)]
async fn remove_line(
    State(state): State<AppState>,
    CustomerUser(customer): CustomerUser,
    Path(line): Path<CartLineId>,
) -> Result<Json<CartResponse>, ApiError> {
    Ok(respond(
        state
            .stores
            .carts
            .set_quantity(customer.user.id, line, 0)
            .await?,
    ))
}

/// Empty the cart.
#[utoipa::path(
    delete,
    path = "/api/cart",
    tag = "cart",
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Emptied"),
        Unauthorized,
        (status = 403, description = "Not a customer", body = ErrorBody),
    )
)]
async fn clear(
    State(state): State<AppState>,
    CustomerUser(customer): CustomerUser,
) -> Result<StatusCode, ApiError> {
    state.stores.carts.clear(customer.user.id).await?;
    Ok(StatusCode::NO_CONTENT)
}
