//! Fault injection for resilience drills: makes one order's actor panic on its next command, to
//! watch supervision rebuild it from the store. Off unless `testing.fault_injection = true`, and
//! even then only for callers holding the internal key.

use axum::extract::State;
use axum::http::StatusCode;
use tomato_domain::OrderId;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::http::{ApiError, ErrorBody, InternalCaller, Path};
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(arm))
}

/// Arm a fault in an order's actor: its next command panics inside the actor, is answered 500,
/// and the actor is restarted from the store.
#[utoipa::path(
    post,
    path = "/api/v1/internal/fault/order/{id}",
    tag = "internal",
    params(
        ("id" = String, Path, description = "Order id"),
        ("x-internal-key" = String, Header, description = "internal.key"),
    ),
    responses(
        (status = 204, description = "Armed"),
        (status = 403, description = "Missing or wrong x-internal-key", body = ErrorBody),
        (status = 404, description = "Fault injection is off, or no such order", body = ErrorBody),
    )
)]
async fn arm(
    State(state): State<AppState>,
    _caller: InternalCaller,
    Path(id): Path<OrderId>,
) -> Result<StatusCode, ApiError> {
    if !state.settings.testing.fault_injection {
        return Err(ApiError::not_found("no such route"));
    }
    state.orders.arm_fault(id).await?;
    tracing::warn!(order_id = %id, "fault armed in order actor");
    Ok(StatusCode::NO_CONTENT)
}
