//! `/api/order`: placing orders, reading them, and moving them through the status machine. Every
//! change goes through the order's actor (see the `actors` crate), which persists it before the
//! caller hears back.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use time::{Duration, OffsetDateTime};
use tomato_actors::OrderError;
use tomato_domain::ErrorKind;
use tomato_domain::{
    AddressId, DeliveryAddress, HistoryEntry, Order, OrderCommand, OrderId, OrderLine, OrderStatus,
    PaymentMethod, PaymentStatus, Role,
};
use tomato_shards::ShardRouter;
use tomato_store::{OrderStore, RestaurantOrderFilter};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::{AuthUser, CustomerUser, SellerUser};
use crate::http::responses::{RateLimited, ShardMoving, Unauthorized};
use crate::http::{ApiError, ErrorBody, Json, PageParams, Path, Query, idempotency};
use crate::state::AppState;

pub mod audit;
pub mod view;

pub use view::{OrderResponse, OrderView, OrdersResponse};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(place))
        .routes(routes!(mine))
        .routes(routes!(for_restaurant))
        .routes(routes!(get_one, set_status))
        .routes(routes!(cancel))
}

impl From<OrderError> for ApiError {
    fn from(err: OrderError) -> Self {
        let message = match &err {
            OrderError::Transition(refused) => refused.to_string(),
            OrderError::NotFound => "no such order".into(),
            OrderError::OfferNotHeld => "you hold no live offer of this order".into(),
            OrderError::RiderBusy => "deliver your current order before taking another".into(),
            OrderError::AlreadyTaken => "another rider already took this order".into(),
            OrderError::NotOwner | OrderError::Stale => {
                "the order is moving between nodes; try again shortly".into()
            }
            // A store refusal says itself; a server-side failure is logged by `from_kind` and
            // clients see the generic message.
            OrderError::Store(fault) => fault.message.clone(),
            OrderError::Unavailable | OrderError::Crashed => err.to_string(),
        };
        ApiError::from_kind(err.kind(), err.code().to_owned(), message)
    }
}

/// What to order: the cart, delivered to one of the customer's addresses.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct NewOrder {
    #[schema(format = Uuid)]
    pub address_id: String,
    /// `razorpay`, `stripe` or `test`.
    #[schema(example = "test", pattern = "^(razorpay|stripe|test)$")]
    pub payment_method: String,
}

/// Place an order from the cart. Prices come from the menu as it is now, never from the client.
/// Honours `Idempotency-Key`.
#[utoipa::path(
    post,
    path = "/api/order/new",
    tag = "orders",
    security(("bearer" = [])),
    params(("Idempotency-Key" = Option<String>, Header, description = "Replays the first response for the same key and body within 24 h")),
    request_body = NewOrder,
    responses(
        (status = 201, body = OrderResponse),
        (status = 400, description = "Not an address id, or unknown payment method", body = ErrorBody),
        Unauthorized,
        (status = 403, description = "Not a customer", body = ErrorBody),
        (status = 404, description = "No such address of this customer", body = ErrorBody),
        (status = 409, description = "`unpaid_order_exists`, `restaurant_closed`, `restaurant_unverified`, `item_unavailable`, `idempotency_key_reused`, `idempotency_key_in_use` (a try with this key still runs: retry after `Retry-After`)", body = ErrorBody),
        (status = 422, description = "`empty_cart`, `address_out_of_range` (beyond dispatch.max_delivery_km), `payment_method_unavailable` (provider not enabled on this node)", body = ErrorBody),
        ShardMoving,
        RateLimited,
    )
)]
async fn place(
    State(state): State<AppState>,
    CustomerUser(customer): CustomerUser,
    headers: HeaderMap,
    Json(body): Json<NewOrder>,
) -> Result<Response, ApiError> {
    // Before the idempotency layer: a refusal for speed is not the answer to remember.
    state.limits.order(customer.user.id)?;
    let address: AddressId = body
        .address_id
        .parse()
        .map_err(|_| ApiError::bad_request("addressId is not an id"))?;
    let method: PaymentMethod = body
        .payment_method
        .parse()
        .map_err(|_| ApiError::bad_request("paymentMethod must be razorpay, stripe or test"))?;
    idempotency::once(
        &state.idempotency,
        customer.user.id,
        "/api/order/new",
        &headers,
        &body,
        {
            let (state, customer) = (state.clone(), customer.clone());
            move || async move {
                let order = create(&state, &customer, address, method).await?;
                Ok((StatusCode::CREATED, OrderResponse::from(order)))
            }
        },
    )
    .await
}

fn unprocessable(code: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::from_kind(ErrorKind::Unprocessable, code, message.into())
}

fn conflict(code: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::from_kind(ErrorKind::Conflict, code, message.into())
}

async fn create(
    state: &AppState,
    customer: &AuthUser,
    address_id: AddressId,
    method: PaymentMethod,
) -> Result<Order, ApiError> {
    let stores = &state.stores;
    let address = stores
        .addresses
        .get(address_id)
        .await?
        .filter(|a| a.user_id == customer.user.id)
        .ok_or_else(|| ApiError::not_found("no such address"))?;
    let cart = stores.carts.get(customer.user.id).await?;
    let Some(restaurant_id) = cart.restaurant_id.filter(|_| !cart.is_empty()) else {
        return Err(unprocessable("empty_cart", "the cart is empty"));
    };
    let restaurant = crate::marketplace::load_restaurant(state, restaurant_id).await?;
    if !restaurant.is_verified {
        return Err(conflict(
            "restaurant_unverified",
            "this restaurant cannot take orders yet",
        ));
    }
    if !restaurant.is_open {
        return Err(conflict("restaurant_closed", "this restaurant is closed"));
    }
    if let Some(line) = cart.lines.iter().find(|line| !line.is_available) {
        return Err(conflict(
            "item_unavailable",
            format!(
                "{} is not available right now; remove it from the cart",
                line.name
            ),
        ));
    }
    let exact_km = restaurant.location.distance_km(address.location);
    let max_km = state.settings.dispatch.max_delivery_km;
    if exact_km > max_km {
        return Err(unprocessable(
            "address_out_of_range",
            format!(
                "the address is {exact_km:.1} km away; this restaurant delivers up to {max_km} km"
            ),
        ));
    }
    state.providers.require(method)?;

    let quote = state.settings.pricing.quote(cart.subtotal(), exact_km);
    let now = tomato_domain::millis::now_ms();
    let order = Order {
        id: OrderId::new(),
        user_id: customer.user.id,
        restaurant_id: restaurant.id,
        restaurant_name: restaurant.name.clone(),
        pickup: restaurant.location,
        rider_id: None,
        rider_name: None,
        rider_phone: None,
        items: cart
            .lines
            .iter()
            .map(|line| OrderLine {
                item_id: line.item_id,
                name: line.name.clone(),
                price: line.price,
                quantity: line.quantity,
            })
            .collect(),
        subtotal: quote.subtotal,
        delivery_fee: quote.delivery_fee,
        platform_fee: quote.platform_fee,
        total_amount: quote.total_amount,
        currency: state.settings.pricing.currency.clone(),
        rider_amount: quote.rider_amount,
        distance_km: quote.distance_km,
        delivery_address: DeliveryAddress {
            formatted_address: address.formatted_address,
            mobile: address.mobile,
            location: address.location,
        },
        status: OrderStatus::Placed,
        payment_status: PaymentStatus::Pending,
        payment_method: method,
        expires_at: Some(now + payment_window(state)),
        created_at: now,
        updated_at: now,
        history: vec![HistoryEntry {
            status: OrderStatus::Placed,
            at: now,
        }],
        version: 0,
        shard: state.shards.map().shard_of(restaurant.location).0,
    };
    stores.orders.create(&order).await?;
    // The actor lives in the shard of the restaurant's cell and owns the payment deadline. If
    // that shard is moving (or its owner out of reach), the order is acknowledged all the same
    // and placed again in the background until an actor holds it: without one, an unpaid order
    // would never expire and would lock its customer out of ordering.
    if let Err(err) = state.shards.place(order.clone()).await {
        tracing::warn!(order_id = %order.id, error = %err, "order stored; placing it again");
        tokio::spawn(place_until_held(
            Arc::clone(&state.shards),
            Arc::clone(&stores.orders),
            order.clone(),
        ));
    }
    tracing::info!(order_id = %order.id, restaurant_id = %restaurant.id, total = %order.total_amount, "order placed");
    Ok(order)
}

/// Places `order` again, backing off from 1 s to 10 s, until an actor holds it or it is no
/// longer waiting for its payment (paid, expired or cancelled through another path, each of
/// which starts its actor), giving up a minute past its payment deadline.
async fn place_until_held(shards: Arc<ShardRouter>, orders: Arc<dyn OrderStore>, order: Order) {
    let id = order.id;
    let give_up = order.expires_at.unwrap_or(order.created_at) + Duration::minutes(1);
    let mut pause = std::time::Duration::from_secs(1);
    loop {
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(std::time::Duration::from_secs(10));
        let stored = match orders.get(id).await {
            Ok(Some(stored)) => stored,
            Ok(None) => return,
            Err(err) => {
                tracing::warn!(order_id = %id, error = %err, "an unplaced order not read");
                continue;
            }
        };
        if stored.status != OrderStatus::Placed || stored.payment_status != PaymentStatus::Pending {
            return;
        }
        match shards.place(stored).await {
            Ok(()) => {
                tracing::info!(order_id = %id, "order placed after a retry");
                return;
            }
            Err(err) if OffsetDateTime::now_utc() < give_up => {
                tracing::warn!(order_id = %id, error = %err, "order not placed yet");
            }
            Err(err) => {
                tracing::error!(order_id = %id, error = %err, "order never placed; its shard's next start loads it");
                return;
            }
        }
    }
}

fn payment_window(state: &AppState) -> Duration {
    Duration::seconds(i64::try_from(state.settings.orders.payment_timeout_s).unwrap_or(i64::MAX))
}

/// The customer's orders, newest first.
#[utoipa::path(
    get,
    path = "/api/order/myorder",
    tag = "orders",
    security(("bearer" = [])),
    params(PageParams),
    responses(
        (status = 200, body = OrdersResponse),
        (status = 400, description = "limit outside 1-200 or bad cursor", body = ErrorBody),
        Unauthorized,
        (status = 403, description = "Not a customer", body = ErrorBody),
    )
)]
async fn mine(
    State(state): State<AppState>,
    CustomerUser(customer): CustomerUser,
    Query(page): Query<PageParams>,
) -> Result<Json<OrdersResponse>, ApiError> {
    let limit = page.limit()?;
    let page = state
        .stores
        .orders
        .by_customer(customer.user.id, limit, page.cursor)
        .await?;
    Ok(Json(OrdersResponse {
        orders: page.items.into_iter().map(Into::into).collect(),
        next_cursor: page.next_cursor,
    }))
}

/// Which of the restaurant's orders.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RestaurantOrdersQuery {
    /// Only orders in this status.
    #[param(
        pattern = "^(placed|accepted|preparing|ready_for_rider|rider_assigned|picked_up|delivered|cancelled|expired)$"
    )]
    pub status: Option<String>,
}

/// The seller's restaurant's orders whose payment succeeded (paid, refund_pending, refunded),
/// newest first, in any status.
#[utoipa::path(
    get,
    path = "/api/order/restaurant",
    tag = "orders",
    security(("bearer" = [])),
    params(RestaurantOrdersQuery, PageParams),
    responses(
        (status = 200, body = OrdersResponse),
        (status = 400, description = "Unknown status, limit outside 1-200, or bad cursor", body = ErrorBody),
        Unauthorized,
        (status = 403, description = "Not a seller", body = ErrorBody),
        (status = 404, description = "The seller has no restaurant", body = ErrorBody),
    )
)]
async fn for_restaurant(
    State(state): State<AppState>,
    SellerUser(seller): SellerUser,
    Query(query): Query<RestaurantOrdersQuery>,
    Query(page): Query<PageParams>,
) -> Result<Json<OrdersResponse>, ApiError> {
    let status = query
        .status
        .as_deref()
        .map(str::parse::<OrderStatus>)
        .transpose()
        .map_err(|err| ApiError::bad_request(err.0))?;
    let limit = page.limit()?;
    let restaurant = state
        .stores
        .restaurants
        .by_owner(seller.user.id)
        .await?
        .ok_or_else(|| ApiError::not_found("you have no restaurant yet"))?;
    let page = state
        .stores
        .orders
        .by_restaurant(
            restaurant.id,
            RestaurantOrderFilter { status },
            limit,
            page.cursor,
        )
        .await?;
    Ok(Json(OrdersResponse {
        orders: page.items.into_iter().map(Into::into).collect(),
        next_cursor: page.next_cursor,
    }))
}

/// Whether this user may see this order: its customer, its restaurant's seller, its assigned
/// rider, or an admin.
async fn may_see(state: &AppState, auth: &AuthUser, order: &Order) -> Result<bool, ApiError> {
    Ok(match auth.user.role {
        Role::Admin => true,
        Role::Customer => order.user_id == auth.user.id,
        Role::Seller => state
            .stores
            .restaurants
            .by_owner(auth.user.id)
            .await?
            .is_some_and(|r| r.id == order.restaurant_id),
        Role::Rider => match state.stores.riders.by_user(auth.user.id).await? {
            Some(rider) => order.rider_id == Some(rider.id),
            None => false,
        },
    })
}

/// Loads an order by id, whoever asks: 404 when there is none. For routes that check the caller
/// against the order themselves, or leave that to the order's actor.
pub(crate) async fn load(state: &AppState, id: OrderId) -> Result<Order, ApiError> {
    state
        .stores
        .orders
        .get(id)
        .await?
        .ok_or_else(|| ApiError::not_found("no such order"))
}

/// Loads an order this user may see; everyone else learns only 404.
pub(crate) async fn load_visible(
    state: &AppState,
    auth: &AuthUser,
    id: OrderId,
) -> Result<Order, ApiError> {
    let order = state.stores.orders.get(id).await?;
    match order {
        Some(order) if may_see(state, auth, &order).await? => Ok(order),
        _ => Err(ApiError::not_found("no such order")),
    }
}

/// An order: for its customer, its restaurant's seller, its assigned rider and admins.
#[utoipa::path(
    get,
    path = "/api/order/{id}",
    tag = "orders",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Order id")),
    responses(
        (status = 200, body = OrderResponse),
        (status = 400, description = "Not an id", body = ErrorBody),
        Unauthorized,
        (status = 404, description = "No such order, or not one this user may see", body = ErrorBody),
    )
)]
async fn get_one(
    State(state): State<AppState>,
    auth: AuthUser,
    Path(id): Path<OrderId>,
) -> Result<Json<OrderResponse>, ApiError> {
    Ok(Json(load_visible(&state, &auth, id).await?.into()))
}

/// The seller's move.
#[derive(Debug, Deserialize, ToSchema)]
pub struct StatusChange {
    /// `accepted`, `preparing`, `ready_for_rider` or `cancelled`.
    #[schema(
        example = "accepted",
        pattern = "^(accepted|preparing|ready_for_rider|cancelled)$"
    )]
    pub status: String,
}

/// Move an order of the seller's restaurant on: `placed` (paid) -> `accepted` -> `preparing` ->
/// `ready_for_rider`, or cancel it before `ready_for_rider` (its payment becomes
/// `refund_pending`). Any other transition is 409 `invalid_transition`.
#[utoipa::path(
    put,
    path = "/api/order/{id}",
    tag = "orders",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Order id")),
    request_body = StatusChange,
    responses(
        (status = 200, body = OrderResponse),
        (status = 400, description = "A status the seller cannot set", body = ErrorBody),
        Unauthorized,
        (status = 403, description = "Not a seller", body = ErrorBody),
        (status = 404, description = "No such order of this seller's restaurant", body = ErrorBody),
        (status = 409, description = "Not allowed from the current status (`invalid_transition`)", body = ErrorBody),
        ShardMoving,
    )
)]
async fn set_status(
    State(state): State<AppState>,
    SellerUser(seller): SellerUser,
    Path(id): Path<OrderId>,
    Json(body): Json<StatusChange>,
) -> Result<Json<OrderResponse>, ApiError> {
    let status = match body.status.parse::<OrderStatus>() {
        Ok(
            status @ (OrderStatus::Accepted
            | OrderStatus::Preparing
            | OrderStatus::ReadyForRider
            | OrderStatus::Cancelled),
        ) => status,
        _ => {
            return Err(ApiError::bad_request(
                "status must be accepted, preparing, ready_for_rider or cancelled",
            ));
        }
    };
    let order = load_visible(&state, &seller, id).await?;
    let order = state
        .shards
        .apply((&order).into(), OrderCommand::SetBySeller(status))
        .await?;
    Ok(Json(order.into()))
}

/// Cancel the customer's order before the restaurant accepts it. A paid order's payment becomes
/// `refund_pending`.
#[utoipa::path(
    post,
    path = "/api/order/{id}/cancel",
    tag = "orders",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Order id")),
    responses(
        (status = 200, body = OrderResponse),
        Unauthorized,
        (status = 403, description = "Not a customer", body = ErrorBody),
        (status = 404, description = "No such order of this customer", body = ErrorBody),
        (status = 409, description = "Already accepted, or finished (`invalid_transition`)", body = ErrorBody),
        ShardMoving,
    )
)]
async fn cancel(
    State(state): State<AppState>,
    CustomerUser(customer): CustomerUser,
    Path(id): Path<OrderId>,
) -> Result<Json<OrderResponse>, ApiError> {
    let order = load_visible(&state, &customer, id).await?;
    let order = state
        .shards
        .apply((&order).into(), OrderCommand::CancelByCustomer)
        .await?;
    Ok(Json(order.into()))
}

/// Forgets saved idempotent responses once they are a day old.
pub(crate) fn idempotency_horizon() -> OffsetDateTime {
    OffsetDateTime::now_utc() - Duration::hours(24)
}
