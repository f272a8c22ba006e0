//! `/api/payment`: paying for an order. This node offers the offline `test` provider
//! (`payments.test_provider`), which always succeeds, so the whole flow runs without network
//! access. Success is applied through the order's actor, which makes it count exactly once
//! however often it is reported.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde::{Deserialize, Serialize};
use tomato_domain::{OrderCommand, OrderId, OrderStatus, PaymentMethod, PaymentStatus};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{OrderResponse, load_visible};
use crate::auth::CustomerUser;
use crate::http::{ApiError, ErrorBody, Json, idempotency};
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_order))
        .routes(routes!(verify))
}

/// Refuses (422 `payment_method_unavailable`) a method this node cannot take payments with.
pub fn require_available(state: &AppState, method: PaymentMethod) -> Result<(), ApiError> {
    let available = match method {
        PaymentMethod::Test => state.settings.payments.test_provider,
        // The Razorpay and Stripe integrations are not part of this build.
        PaymentMethod::Razorpay | PaymentMethod::Stripe => false,
    };
    if available {
        return Ok(());
    }
    Err(ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "payment_method_unavailable",
        format!("{method} payments are not available on this node"),
    ))
}

/// Which order to pay.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PaymentRequest {
    pub order_id: String,
}

/// What the client needs to take the payment with the provider.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProviderOrder {
    #[schema(example = "test")]
    pub provider: String,
    pub provider_order_id: String,
    /// Minor units.
    pub amount: i64,
    pub currency: String,
    /// Razorpay's public key id, for its checkout.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Stripe Checkout's page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checkout_url: Option<String>,
}

fn order_id(raw: &str) -> Result<OrderId, ApiError> {
    raw.parse()
        .map_err(|_| ApiError::bad_request("orderId is not an id"))
}

/// Start paying for the customer's unpaid order. Honours `Idempotency-Key`.
#[utoipa::path(
    post,
    path = "/api/payment/create-order",
    tag = "payments",
    security(("bearer" = [])),
    params(("Idempotency-Key" = Option<String>, Header, description = "Replays the first response for the same key and body within 24 h")),
    request_body = PaymentRequest,
    responses(
        (status = 200, body = ProviderOrder),
        (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 403, description = "Not a customer", body = ErrorBody),
        (status = 404, description = "No such order of this customer", body = ErrorBody),
        (status = 409, description = "Already paid, cancelled or expired (`not_payable`)", body = ErrorBody),
        (status = 422, description = "The order's payment method is not available on this node", body = ErrorBody),
    )
)]
async fn create_order(
    State(state): State<AppState>,
    CustomerUser(customer): CustomerUser,
    headers: HeaderMap,
    Json(body): Json<PaymentRequest>,
) -> Result<Response, ApiError> {
    let id = order_id(&body.order_id)?;
    idempotency::once(
        &state,
        customer.user.id,
        "/api/payment/create-order",
        &headers,
        &body,
        || async {
            let order = load_visible(&state, &customer, id).await?;
            if order.status != OrderStatus::Placed || order.payment_status != PaymentStatus::Pending
            {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    "not_payable",
                    format!(
                        "the order is {} with payment {}",
                        order.status, order.payment_status
                    ),
                ));
            }
            require_available(&state, order.payment_method)?;
            Ok((
                StatusCode::OK,
                ProviderOrder {
                    provider: order.payment_method.to_string(),
                    provider_order_id: format!("test_{}", order.id),
                    amount: order.total_amount.minor(),
                    currency: order.currency,
                    key: None,
                    checkout_url: None,
                },
            ))
        },
    )
    .await
}

/// Proof of payment. The `test` provider needs only `orderId`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct VerifyRequest {
    pub order_id: String,
    pub razorpay_order_id: Option<String>,
    pub razorpay_payment_id: Option<String>,
    pub razorpay_signature: Option<String>,
}

/// Confirm the payment. Repeats (and verifying an already paid order) answer with the same
/// `{order}`; the payment counts once, and the cart is cleared then. Honours `Idempotency-Key`.
#[utoipa::path(
    post,
    path = "/api/payment/verify",
    tag = "payments",
    security(("bearer" = [])),
    params(("Idempotency-Key" = Option<String>, Header, description = "Replays the first response for the same key and body within 24 h")),
    request_body = VerifyRequest,
    responses(
        (status = 200, body = OrderResponse),
        (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 403, description = "Not a customer", body = ErrorBody),
        (status = 404, description = "No such order of this customer", body = ErrorBody),
        (status = 409, description = "The order expired or was cancelled before payment (`invalid_transition`)", body = ErrorBody),
        (status = 422, description = "The order's payment method is not available on this node", body = ErrorBody),
    )
)]
async fn verify(
    State(state): State<AppState>,
    CustomerUser(customer): CustomerUser,
    headers: HeaderMap,
    Json(body): Json<VerifyRequest>,
) -> Result<Response, ApiError> {
    let id = order_id(&body.order_id)?;
    idempotency::once(
        &state,
        customer.user.id,
        "/api/payment/verify",
        &headers,
        &body,
        || async {
            let order = load_visible(&state, &customer, id).await?;
            require_available(&state, order.payment_method)?;
            let order = state.orders.apply(id, OrderCommand::ConfirmPayment).await?;
            Ok((StatusCode::OK, OrderResponse::from(order)))
        },
    )
    .await
}
