//! `/api/payment`: paying for an order. Providers: the offline `test` provider
//! (`payments.test_provider`, always succeeds, so the whole flow runs without network access) and
//! Razorpay (on once `payments.razorpay.key_id` is set). Success, from `verify` or a webhook, is
//! applied through the order's actor, which makes it count exactly once however often and in
//! whatever order it is reported; a webhook event is recorded as handled once its effect is
//! stored, so a repeated delivery is recognised and one whose apply failed is applied again.
//! Money that cannot be kept (too late, or a second payment) is owed back ([`refunds`]).

use std::future::Future;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde::{Deserialize, Serialize};
use tomato_domain::ErrorKind;
use tomato_domain::{Order, OrderCommand, OrderId, OrderStatus, PaymentMethod, PaymentStatus};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::CustomerUser;
use crate::http::responses::{RateLimited, ShardMoving, Unauthorized};
use crate::http::{ApiError, ErrorBody, Json, Path, idempotency};
use crate::orders::{OrderResponse, load_visible};
use crate::state::AppState;

pub mod providers;
pub mod razorpay;
pub mod refunds;
pub mod signature;
pub mod stripe;

pub use providers::Providers;
pub use razorpay::Razorpay;
pub use stripe::Stripe;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_order))
        .routes(routes!(verify))
        .routes(routes!(webhook))
        .routes(routes!(refunds_pending))
}

fn razorpay(state: &AppState) -> Result<&Razorpay, ApiError> {
    state.providers.razorpay.as_ref().ok_or_else(|| {
        ApiError::from_kind(
            ErrorKind::Unprocessable,
            "payment_method_unavailable",
            "razorpay payments are not available on this node",
        )
    })
}

fn stripe(state: &AppState) -> Result<&Stripe, ApiError> {
    state.providers.stripe.as_ref().ok_or_else(|| {
        ApiError::from_kind(
            ErrorKind::Unprocessable,
            "payment_method_unavailable",
            "stripe payments are not available on this node",
        )
    })
}

fn bad_signature() -> ApiError {
    ApiError::from_kind(
        ErrorKind::Invalid,
        "bad_signature",
        "the payment signature does not match",
    )
}

/// Which order to pay.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PaymentRequest {
    #[schema(format = Uuid)]
    pub order_id: String,
}

/// What the client needs to take the payment with the provider.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProviderOrder {
    #[schema(example = "razorpay")]
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

/// How long one caller may take to open a provider order before another may try.
const OPENING_TTL: Duration = Duration::from_secs(30);
/// How long a concurrent caller waits for the provider order another caller is opening.
const OPENING_WAIT: Duration = Duration::from_secs(10);

/// What [`opened_once`] found: the provider order opened before, or the one just opened.
enum Opened<T> {
    Before(String),
    Now(T),
}

/// The provider order of `order` at `provider`, opened at most once however many calls race:
/// the caller that claims the opening calls `open` (and links what it opened), the others wait
/// for that link.
async fn opened_once<T, F, Fut>(
    state: &AppState,
    provider: &str,
    order: OrderId,
    id_of: impl Fn(&T) -> &str,
    open: F,
) -> Result<Opened<T>, ApiError>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<T, ApiError>>,
{
    let payments = &state.stores.payments;
    let deadline = tokio::time::Instant::now() + OPENING_WAIT;
    loop {
        if let Some(id) = payments.provider_order(provider, order).await? {
            return Ok(Opened::Before(id));
        }
        if payments.claim_opening(provider, order, OPENING_TTL).await? {
            break;
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(ApiError::unavailable(anyhow::anyhow!(
                "another request is still opening the {provider} payment of order {order}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Claimed: someone may have linked one between the read and the claim.
    if let Some(id) = payments.provider_order(provider, order).await? {
        return Ok(Opened::Before(id));
    }
    let opened = open().await?;
    payments.link(provider, id_of(&opened), order).await?;
    // A caller slower than the claim's TTL may find another's provider order linked first:
    // that one is the order's, and its client is shown it (nobody is shown this one).
    match payments.provider_order(provider, order).await? {
        Some(first) if first != id_of(&opened) => Ok(Opened::Before(first)),
        _ => Ok(Opened::Now(opened)),
    }
}

/// The provider order for `order`: the one opened before (retries and concurrent calls reuse
/// it), or a new one.
async fn provider_order(state: &AppState, order: &Order) -> Result<ProviderOrder, ApiError> {
    let mut checkout_url = None;
    let (provider_order_id, key) = match order.payment_method {
        PaymentMethod::Test => (format!("test_{}", order.id), None),
        PaymentMethod::Razorpay => {
            let razorpay = razorpay(state)?;
            let id = match opened_once(state, razorpay::NAME, order.id, String::as_str, || async {
                razorpay
                    .create_order(order)
                    .await
                    .map_err(ApiError::unavailable)
            })
            .await?
            {
                Opened::Before(id) | Opened::Now(id) => id,
            };
            (id, Some(razorpay.key_id().to_owned()))
        }
        PaymentMethod::Stripe => {
            let stripe = stripe(state)?;
            let opened = opened_once(
                state,
                stripe::NAME,
                order.id,
                |session: &stripe::Session| session.id.as_str(),
                || async {
                    stripe
                        .create_session(order)
                        .await
                        .map_err(ApiError::unavailable)
                },
            )
            .await?;
            let session = match opened {
                Opened::Now(session) => session,
                Opened::Before(id) => stripe.session(&id).await.map_err(ApiError::unavailable)?,
            };
            checkout_url = session.url;
            (session.id, None)
        }
    };
    Ok(ProviderOrder {
        provider: order.payment_method.to_string(),
        provider_order_id,
        amount: order.total_amount.minor(),
        currency: order.currency.clone(),
        key,
        checkout_url,
    })
}

/// Start paying for the customer's unpaid order: for Razorpay this opens a Razorpay order
/// (once; retries get the same one). Honours `Idempotency-Key`.
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
        Unauthorized,
        (status = 403, description = "Not a customer", body = ErrorBody),
        (status = 404, description = "No such order of this customer", body = ErrorBody),
        (status = 409, description = "Already paid, cancelled or expired (`not_payable`)", body = ErrorBody),
        (status = 422, description = "The order's payment method is not available on this node", body = ErrorBody),
        (status = 503, description = "The provider could not be reached", body = ErrorBody),
        RateLimited,
    )
)]
async fn create_order(
    State(state): State<AppState>,
    CustomerUser(customer): CustomerUser,
    headers: HeaderMap,
    Json(body): Json<PaymentRequest>,
) -> Result<Response, ApiError> {
    state.limits.payment(customer.user.id)?;
    let id = order_id(&body.order_id)?;
    idempotency::once(
        &state.idempotency,
        customer.user.id,
        "/api/payment/create-order",
        &headers,
        &body,
        {
            let (state, customer) = (state.clone(), customer.clone());
            move || async move {
                let order = load_visible(&state, &customer, id).await?;
                if order.status != OrderStatus::Placed
                    || order.payment_status != PaymentStatus::Pending
                {
                    return Err(ApiError::from_kind(
                        ErrorKind::Conflict,
                        "not_payable",
                        format!(
                            "the order is {} with payment {}",
                            order.status, order.payment_status
                        ),
                    ));
                }
                state.providers.require(order.payment_method)?;
                Ok((StatusCode::OK, provider_order(&state, &order).await?))
            }
        },
    )
    .await
}

/// Proof of payment. The `test` provider needs only `orderId`; Razorpay needs what its
/// checkout handed the client.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct VerifyRequest {
    #[schema(format = Uuid)]
    pub order_id: String,
    pub razorpay_order_id: Option<String>,
    pub razorpay_payment_id: Option<String>,
    pub razorpay_signature: Option<String>,
}

/// Checks a Razorpay checkout's proof: the signature, and that the Razorpay order is this
/// order's. Answers the payment it proves.
async fn razorpay_proof<'a>(
    state: &AppState,
    order: OrderId,
    body: &'a VerifyRequest,
) -> Result<(&'a str, &'a str), ApiError> {
    let razorpay = razorpay(state)?;
    let (Some(provider_order), Some(payment), Some(signature)) = (
        body.razorpay_order_id.as_deref(),
        body.razorpay_payment_id.as_deref(),
        body.razorpay_signature.as_deref(),
    ) else {
        return Err(ApiError::bad_request(
            "razorpayOrderId, razorpayPaymentId and razorpaySignature are required",
        ));
    };
    if !razorpay.payment_signed(provider_order, payment, signature) {
        return Err(bad_signature());
    }
    let paid_for = state
        .stores
        .payments
        .order_of(razorpay::NAME, provider_order)
        .await?;
    if paid_for != Some(order) {
        return Err(ApiError::from_kind(
            ErrorKind::Invalid,
            "order_mismatch",
            "that Razorpay order does not belong to this order",
        ));
    }
    Ok((provider_order, payment))
}

/// Records a Razorpay payment of `order` (refunds name it). The first payment of the order's
/// Razorpay order pays for the order; another one is owed back, and so is any payment on a
/// Razorpay order linked to it after its first (opened by a caller slower than the claim),
/// which pays nothing. Answers whether the payment pays for the order.
async fn record_payment(
    state: &AppState,
    order: &Order,
    provider_order: &str,
    payment: &str,
) -> Result<bool, ApiError> {
    // One at a time per provider order on this node: verify and webhooks race to report the
    // same payment, and on CQL each would otherwise contend for the same lightweight transaction.
    let paying = state
        .idempotency
        .locks
        .serially(
            format!("payment\u{0}{provider_order}"),
            state
                .stores
                .payments
                .set_payment(razorpay::NAME, provider_order, payment),
        )
        .await?;
    let its_own = state
        .stores
        .payments
        .provider_order(razorpay::NAME, order.id)
        .await?;
    let pays = its_own.as_deref() == Some(provider_order);
    if paying != payment || !pays {
        state.refunds.owe_second_payment(order, payment).await?;
    }
    Ok(pays)
}

/// Checks a Stripe payment: the order's Checkout Session says `paid`, for this order.
async fn stripe_proof(state: &AppState, order: OrderId) -> Result<(), ApiError> {
    let stripe = stripe(state)?;
    let not_paid = || {
        ApiError::from_kind(
            ErrorKind::Conflict,
            "not_paid",
            "Stripe has not confirmed this payment yet",
        )
    };
    let session_id = state
        .stores
        .payments
        .provider_order(stripe::NAME, order)
        .await?
        .ok_or_else(not_paid)?;
    let session = stripe
        .session(&session_id)
        .await
        .map_err(ApiError::unavailable)?;
    let ours =
        session.metadata.get("orderId").map(String::as_str) == Some(order.to_string().as_str());
    if session.payment_status != "paid" || !ours {
        return Err(not_paid());
    }
    Ok(())
}

/// Confirm the payment. Repeats (and verifying an already paid order) answer with the same
/// `{order}`; the payment counts once, and the cart is cleared then. A payment that arrives
/// after the order expired or was cancelled is not kept: the answer is the order with
/// `paymentStatus` `refund_pending` (then `refunded` once the provider confirms), and a second
/// payment of an order already paid is refunded the same way (the order stays paid). Honours
/// `Idempotency-Key`.
#[utoipa::path(
    post,
    path = "/api/payment/verify",
    tag = "payments",
    security(("bearer" = [])),
    params(("Idempotency-Key" = Option<String>, Header, description = "Replays the first response for the same key and body within 24 h")),
    request_body = VerifyRequest,
    responses(
        (status = 200, body = OrderResponse),
        (status = 400, description = "Missing proof, `bad_signature`, or `order_mismatch`; the order is unchanged", body = ErrorBody),
        Unauthorized,
        (status = 403, description = "Not a customer", body = ErrorBody),
        (status = 404, description = "No such order of this customer", body = ErrorBody),
        (status = 409, description = "`idempotency_key_reused`: the key was used with another body; `payment_refunded`: the Razorpay order paid is not the order's own (one opened by a retry slower than the first), so its payment is refunded; `idempotency_key_in_use`: a try with this key still runs (retry after `Retry-After`)", body = ErrorBody),
        (status = 422, description = "The order's payment method is not available on this node", body = ErrorBody),
        ShardMoving,
        RateLimited,
    )
)]
async fn verify(
    State(state): State<AppState>,
    CustomerUser(customer): CustomerUser,
    headers: HeaderMap,
    Json(body): Json<VerifyRequest>,
) -> Result<Response, ApiError> {
    state.limits.payment(customer.user.id)?;
    let id = order_id(&body.order_id)?;
    idempotency::once(
        &state.idempotency,
        customer.user.id,
        "/api/payment/verify",
        &headers,
        &body,
        {
            let (state, customer, body) = (state.clone(), customer.clone(), body.clone());
            move || async move {
                let order = load_visible(&state, &customer, id).await?;
                state.providers.require(order.payment_method)?;
                match order.payment_method {
                    PaymentMethod::Razorpay => {
                        let (provider_order, payment) = razorpay_proof(&state, id, &body).await?;
                        if !record_payment(&state, &order, provider_order, payment).await? {
                            return Err(ApiError::from_kind(
                                ErrorKind::Conflict,
                                "payment_refunded",
                                "that Razorpay order is not the one this order is paid \
                                 through; the payment is refunded",
                            ));
                        }
                    }
                    PaymentMethod::Stripe => stripe_proof(&state, id).await?,
                    PaymentMethod::Test => {}
                }
                let order = state
                    .shards
                    .apply((&order).into(), OrderCommand::ConfirmPayment)
                    .await?;
                Ok((StatusCode::OK, OrderResponse::from(order)))
            }
        },
    )
    .await
}

/// What a webhook was taken as.
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookOutcome {
    /// `applied`, `duplicate`, `ignored`, or `refunded` (a payment on a Razorpay order that is not
    /// the order's own, owed back).
    pub status: &'static str,
}

/// A provider's webhook, authenticated by its signature header over the raw body
/// (`X-Razorpay-Signature`, `Stripe-Signature` with its timestamp tolerance). Razorpay's
/// `payment.captured` and `order.paid`, and Stripe's `checkout.session.completed` (paid), mark
/// the order paid; other events, and events about orders this node does not know, are
/// acknowledged and ignored.
#[utoipa::path(
    post,
    path = "/api/payment/webhook/{provider}",
    tag = "payments",
    params(("provider" = String, Path, description = "`razorpay` or `stripe`")),
    request_body(content = String, description = "The provider's raw event"),
    responses(
        (status = 200, body = WebhookOutcome),
        (status = 400, description = "Missing or wrong signature, or not JSON; nothing changes", body = ErrorBody),
        (status = 404, description = "The provider is not configured", body = ErrorBody),
        ShardMoving,
    )
)]
async fn webhook(
    State(state): State<AppState>,
    Path(provider): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<WebhookOutcome>, ApiError> {
    let razorpay = match (provider.as_str(), state.providers.razorpay.as_ref()) {
        (razorpay::NAME, Some(razorpay)) => razorpay,
        (stripe::NAME, _) if state.providers.stripe.is_some() => {
            return stripe_webhook(&state, &headers, &body).await;
        }
        _ => return Err(ApiError::not_found("no such payment provider on this node")),
    };
    let signature = headers
        .get("x-razorpay-signature")
        .and_then(|value| value.to_str().ok())
        .ok_or_else(bad_signature)?;
    if !razorpay.webhook_signed(&body, signature) {
        return Err(bad_signature());
    }
    let event: serde_json::Value = serde_json::from_slice(&body)
        .map_err(|_| ApiError::bad_request("the event is not JSON"))?;
    let outcome = |status| Ok(Json(WebhookOutcome { status }));
    let Some(provider_order) = razorpay::paid_order_of(&event) else {
        return outcome("ignored");
    };
    // Razorpay names each delivery; a repeat of one already applied stops here.
    let event_id = headers
        .get("x-razorpay-event-id")
        .and_then(|v| v.to_str().ok());
    if already_handled(&state, razorpay::NAME, event_id).await? {
        return outcome("duplicate");
    }
    let Some(order) = state
        .stores
        .payments
        .order_of(razorpay::NAME, provider_order)
        .await?
    else {
        tracing::warn!(provider_order, "razorpay event for an unknown order");
        return outcome("ignored");
    };
    let stored = crate::orders::load(&state, order).await?;
    if let Some(payment) = razorpay::payment_of(&event)
        && !record_payment(&state, &stored, provider_order, payment).await?
    {
        return outcome("refunded");
    }
    confirm_from_webhook(&state, &stored, razorpay::NAME, event_id).await
}

/// Whether the provider's event `event_id` was handled before (its effect is stored).
async fn already_handled(
    state: &AppState,
    provider: &str,
    event_id: Option<&str>,
) -> Result<bool, ApiError> {
    Ok(match event_id {
        Some(event_id) => state.stores.payments.handled(provider, event_id).await?,
        None => false,
    })
}

/// Applies a provider's "paid" to the order, and only then records the event as handled: a
/// delivery whose apply failed is applied when the provider sends it again. Money that arrives
/// too late is owed back by the order's own move (`refund_pending`).
async fn confirm_from_webhook(
    state: &AppState,
    stored: &Order,
    provider: &str,
    event_id: Option<&str>,
) -> Result<Json<WebhookOutcome>, ApiError> {
    let status = match state
        .shards
        .apply(stored.into(), OrderCommand::ConfirmPayment)
        .await
    {
        Ok(_) => "applied",
        Err(tomato_actors::OrderError::Transition(refused)) => {
            tracing::error!(order_id = %stored.id, error = %refused, "payment arrived for an order that cannot take it");
            "ignored"
        }
        Err(err) => return Err(err.into()),
    };
    if let Some(event_id) = event_id {
        state.stores.payments.first_time(provider, event_id).await?;
    }
    Ok(Json(WebhookOutcome { status }))
}

/// Stripe's webhook: `Stripe-Signature` over `"{t}.{body}"` within the tolerance; a completed
/// and paid Checkout Session marks its order paid.
async fn stripe_webhook(
    state: &AppState,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Json<WebhookOutcome>, ApiError> {
    let stripe = stripe(state)?;
    let signature = headers
        .get("stripe-signature")
        .and_then(|value| value.to_str().ok())
        .ok_or_else(bad_signature)?;
    if !stripe.webhook_signed(body, signature, time::OffsetDateTime::now_utc()) {
        return Err(bad_signature());
    }
    let event: serde_json::Value =
        serde_json::from_slice(body).map_err(|_| ApiError::bad_request("the event is not JSON"))?;
    let outcome = |status| Ok(Json(WebhookOutcome { status }));
    let session = &event["data"]["object"];
    let completed =
        event["type"] == "checkout.session.completed" && session["payment_status"] == "paid";
    let (Some(session_id), true) = (session["id"].as_str(), completed) else {
        return outcome("ignored");
    };
    let event_id = event["id"].as_str();
    if already_handled(state, stripe::NAME, event_id).await? {
        return outcome("duplicate");
    }
    let Some(order) = state
        .stores
        .payments
        .order_of(stripe::NAME, session_id)
        .await?
    else {
        tracing::warn!(session_id, "stripe event for an unknown checkout session");
        return outcome("ignored");
    };
    if session["metadata"]["orderId"].as_str() != Some(order.to_string().as_str()) {
        tracing::warn!(session_id, order_id = %order, "stripe session metadata names another order");
        return outcome("ignored");
    }
    let stored = crate::orders::load(state, order).await?;
    confirm_from_webhook(state, &stored, stripe::NAME, event_id).await
}

/// A refund the provider has not confirmed yet.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PendingRefund {
    pub order_id: String,
    /// The provider payment being returned: null for the payment that paid the order, set for
    /// a second payment of an order already paid.
    pub payment: Option<String>,
    /// Minor units.
    pub amount: i64,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub owed_since: time::OffsetDateTime,
    /// Failed calls to the provider so far.
    pub attempts: u32,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub next_attempt_at: time::OffsetDateTime,
    pub last_error: Option<String>,
}

/// `{orders, refunds, nextCursor}`: the orders whose refund is pending, oldest refund first,
/// and the refunds themselves in the same order (an order appears once per refund it is owed).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PendingRefunds {
    pub orders: Vec<crate::orders::OrderView>,
    pub refunds: Vec<PendingRefund>,
    /// Pass as `cursor` for the next page; null on the last one.
    pub next_cursor: Option<String>,
}

/// Refunds the provider has not confirmed yet, oldest first, with their attempts: each is
/// retried with backoff until the provider confirms it, across restarts.
#[utoipa::path(
    get,
    path = "/api/admin/refunds/pending",
    tag = "admin",
    security(("bearer" = [])),
    params(crate::http::PageParams),
    responses(
        (status = 200, body = PendingRefunds),
        (status = 400, description = "limit outside 1-200 or bad cursor", body = ErrorBody),
        Unauthorized,
        (status = 403, description = "Not an admin", body = ErrorBody),
    )
)]
async fn refunds_pending(
    State(state): State<AppState>,
    _admin: crate::auth::AdminUser,
    crate::http::Query(page): crate::http::Query<crate::http::PageParams>,
) -> Result<Json<PendingRefunds>, ApiError> {
    let limit = page.limit()?;
    let owed = state
        .stores
        .payments
        .refunds_owed(limit, page.cursor)
        .await?;
    let mut orders = Vec::with_capacity(owed.items.len());
    let mut refunds = Vec::with_capacity(owed.items.len());
    for refund in owed.items {
        let Some(order) = state.stores.orders.get(refund.order_id).await? else {
            continue;
        };
        orders.push(order.into());
        refunds.push(PendingRefund {
            order_id: refund.order_id.to_string(),
            payment: refund.payment,
            amount: refund.amount,
            owed_since: refund.created_at,
            attempts: refund.attempts,
            next_attempt_at: refund.next_attempt_at,
            last_error: refund.last_error,
        });
    }
    Ok(Json(PendingRefunds {
        orders,
        refunds,
        next_cursor: owed.next_cursor,
    }))
}
