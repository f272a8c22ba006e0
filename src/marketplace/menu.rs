//! `/api/item`: restaurants' menus.

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use tomato_domain::ErrorKind;
use tomato_domain::marketplace::{price, text};
use tomato_domain::{MenuItem, MenuItemId, RestaurantId};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::restaurants::load as load_restaurant;
use crate::auth::{AuthUser, SellerUser};
use crate::http::fields::{image, invalid};
use crate::http::responses::Unauthorized;
use crate::http::{ApiError, ErrorBody, Json, PageParams, Path, Query};
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create))
        // One path for three verbs: GET takes a restaurant id, PUT and DELETE an item id
        // (docs/api.md's layout; the router needs one parameter name per position).
        .routes(routes!(list, update, delete))
}

/// A dish as clients see it.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ItemView {
    pub id: String,
    pub restaurant_id: String,
    pub name: String,
    pub description: String,
    /// Minor units (paise).
    pub price: i64,
    pub image: Option<String>,
    pub category: Option<String>,
    pub is_available: bool,
}

impl From<MenuItem> for ItemView {
    fn from(item: MenuItem) -> Self {
        Self {
            id: item.id.to_string(),
            restaurant_id: item.restaurant_id.to_string(),
            name: item.name,
            description: item.description,
            price: item.price.minor(),
            image: item.image,
            category: item.category,
            is_available: item.is_available,
        }
    }
}

/// `{item}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ItemResponse {
    pub item: ItemView,
}

/// `{items, nextCursor}`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ItemsResponse {
    pub items: Vec<ItemView>,
    /// Pass as `cursor` for the next page; null on the last one.
    pub next_cursor: Option<String>,
}

/// A restaurant's menu (any signed-in user), in the order dishes were added.
#[utoipa::path(
    get,
    path = "/api/item/{id}",
    tag = "menu",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Restaurant id (for GET this is the restaurant's id)"), PageParams),
    responses(
        (status = 200, body = ItemsResponse),
        (status = 400, description = "limit outside 1-200 or bad cursor", body = ErrorBody),
        Unauthorized,
        (status = 404, description = "No such restaurant", body = ErrorBody),
    )
)]
async fn list(
    State(state): State<AppState>,
    _auth: AuthUser,
    Path(restaurant): Path<RestaurantId>,
    Query(page): Query<PageParams>,
) -> Result<Json<ItemsResponse>, ApiError> {
    page.limit()?;
    load_restaurant(&state, restaurant).await?;
    let (items, next_cursor) = page.offset_page(state.stores.menu.list(restaurant).await?)?;
    Ok(Json(ItemsResponse {
        items: items.into_iter().map(Into::into).collect(),
        next_cursor,
    }))
}

/// A new dish, added to the seller's own restaurant.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct NewItem {
    #[schema(
        min_length = 1,
        max_length = 100,
        pattern = r"^\s*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
    )]
    pub name: String,
    #[serde(default)]
    #[schema(max_length = 1000, pattern = r"^[^\x00-\x09\x0b-\x1f\x7f-\x9f]*$")]
    pub description: String,
    /// Minor units, 1 to 10000000.
    #[schema(minimum = 1, maximum = 10_000_000)]
    #[serde(deserialize_with = "crate::http::json::whole_number")]
    pub price: i64,
    pub image: Option<String>,
    #[schema(
        min_length = 1,
        max_length = 50,
        pattern = r"^\s*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
    )]
    pub category: Option<String>,
    pub is_available: Option<bool>,
}

fn category(raw: &str) -> Result<String, ApiError> {
    text("category", raw, 1, 50).map_err(invalid)
}

/// Add a dish to the seller's restaurant (available unless `isAvailable` is false).
#[utoipa::path(
    post,
    path = "/api/item/new",
    tag = "menu",
    security(("bearer" = [])),
    request_body = NewItem,
    responses(
        (status = 201, body = ItemResponse),
        (status = 400, description = "Invalid field (name 1-100, description up to 1000, price 1-10000000, category 1-50)", body = ErrorBody),
        Unauthorized,
        (status = 403, description = "Not a seller", body = ErrorBody),
        (status = 409, description = "The seller has no restaurant yet (`no_restaurant`)", body = ErrorBody),
    )
)]
async fn create(
    State(state): State<AppState>,
    SellerUser(seller): SellerUser,
    Json(body): Json<NewItem>,
) -> Result<(StatusCode, Json<ItemResponse>), ApiError> {
    let name = text("name", &body.name, 1, 100).map_err(invalid)?;
    let description = text("description", &body.description, 0, 1000).map_err(invalid)?;
    let price = price(body.price).map_err(invalid)?;
    let image = body.image.as_deref().map(image).transpose()?;
    let category = body.category.as_deref().map(category).transpose()?;
    let restaurant = state
        .stores
        .restaurants
        .by_owner(seller.user.id)
        .await?
        .ok_or_else(|| {
            ApiError::from_kind(
                ErrorKind::Conflict,
                "no_restaurant",
                "create your restaurant before adding dishes",
            )
        })?;
    let item = MenuItem {
        id: MenuItemId::new(),
        restaurant_id: restaurant.id,
        name,
        description,
        price,
        image,
        category,
        is_available: body.is_available.unwrap_or(true),
    };
    state.stores.menu.create(&item).await?;
    Ok((
        StatusCode::CREATED,
        Json(ItemResponse { item: item.into() }),
    ))
}

/// Changes to a dish; absent fields stay as they are.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ItemChanges {
    #[schema(
        min_length = 1,
        max_length = 100,
        pattern = r"^\s*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
    )]
    pub name: Option<String>,
    #[schema(max_length = 1000, pattern = r"^[^\x00-\x09\x0b-\x1f\x7f-\x9f]*$")]
    pub description: Option<String>,
    #[schema(minimum = 1, maximum = 10_000_000)]
    #[serde(default, deserialize_with = "crate::http::json::whole_number_opt")]
    pub price: Option<i64>,
    pub image: Option<String>,
    #[schema(
        min_length = 1,
        max_length = 50,
        pattern = r"^\s*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
    )]
    pub category: Option<String>,
    pub is_available: Option<bool>,
}

/// Loads an item of the seller's own restaurant: 404 if it does not exist, 403 if it is
/// another restaurant's (menus are public, so its existence is no secret).
async fn own_item(
    state: &AppState,
    seller: &AuthUser,
    id: MenuItemId,
) -> Result<MenuItem, ApiError> {
    let item = state
        .stores
        .menu
        .get(id)
        .await?
        .ok_or_else(|| ApiError::not_found("no such item"))?;
    let restaurant = load_restaurant(state, item.restaurant_id).await?;
    if restaurant.owner_id != seller.user.id {
        return Err(ApiError::forbidden(
            "only the restaurant's owner can change its menu",
        ));
    }
    Ok(item)
}

/// Edit a dish of the seller's restaurant. Carts see the new price at once; placed orders keep
/// theirs.
#[utoipa::path(
    put,
    path = "/api/item/{id}",
    tag = "menu",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Item id")),
    request_body = ItemChanges,
    responses(
        (status = 200, body = ItemResponse),
        (status = 400, body = ErrorBody),
        Unauthorized,
        (status = 403, description = "Not a seller, or another restaurant's item", body = ErrorBody),
        (status = 404, body = ErrorBody),
    )
)]
async fn update(
    State(state): State<AppState>,
    SellerUser(seller): SellerUser,
    Path(id): Path<MenuItemId>,
    Json(changes): Json<ItemChanges>,
) -> Result<Json<ItemResponse>, ApiError> {
    let name = changes
        .name
        .as_deref()
        .map(|v| text("name", v, 1, 100))
        .transpose()
        .map_err(invalid)?;
    let description = changes
        .description
        .as_deref()
        .map(|v| text("description", v, 0, 1000))
        .transpose()
        .map_err(invalid)?;
    let new_price = changes.price.map(price).transpose().map_err(invalid)?;
    let new_image = changes.image.as_deref().map(image).transpose()?;
    let new_category = changes.category.as_deref().map(category).transpose()?;

    let mut item = own_item(&state, &seller, id).await?;
    if let Some(name) = name {
        item.name = name;
    }
    if let Some(description) = description {
        item.description = description;
    }
    if let Some(price) = new_price {
        item.price = price;
    }
    if let Some(image) = new_image {
        item.image = Some(image);
    }
    if let Some(category) = new_category {
        item.category = Some(category);
    }
    if let Some(available) = changes.is_available {
        item.is_available = available;
    }
    state.stores.menu.update(&item).await?;
    Ok(Json(ItemResponse { item: item.into() }))
}

/// Remove a dish; it leaves every cart holding it. Placed orders keep their copy.
#[utoipa::path(
    delete,
    path = "/api/item/{id}",
    tag = "menu",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Item id")),
    responses(
        (status = 204, description = "Deleted"),
        Unauthorized,
        (status = 403, description = "Not a seller, or another restaurant's item", body = ErrorBody),
        (status = 404, body = ErrorBody),
    )
)]
async fn delete(
    State(state): State<AppState>,
    SellerUser(seller): SellerUser,
    Path(id): Path<MenuItemId>,
) -> Result<StatusCode, ApiError> {
    own_item(&state, &seller, id).await?;
    state.stores.menu.delete(id).await?;
    Ok(StatusCode::NO_CONTENT)
}
