//! Fault injection for resilience drills: makes one order's or rider's actor panic on its next
//! message, to watch supervision rebuild it from the store. Off unless
//! `testing.fault_injection = true`, and even then only for callers holding the internal key.

use axum::extract::State;
use axum::http::StatusCode;
use tomato_domain::{OrderId, RiderId};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::http::{ApiError, ErrorBody, InternalCaller, Path};
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(arm))
        .routes(routes!(arm_rider))
}

fn enabled(state: &AppState) -> Result<(), ApiError> {
    if state.settings.testing.fault_injection {
        Ok(())
    } else {
        Err(ApiError::not_found("no such route"))
    }
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
    enabled(&state)?;
    state.orders.arm_fault(id).await?;
    tracing::warn!(order_id = %id, "fault armed in order actor");
    Ok(StatusCode::NO_CONTENT)
}

/// Arm a fault in a rider's actor: its next message (a position, say) panics inside the actor,
/// and the actor is restarted, reloading the order it carries from the store.
#[utoipa::path(
    post,
    path = "/api/v1/internal/fault/rider/{id}",
    tag = "internal",
    params(
        ("id" = String, Path, description = "Rider id"),
        ("x-internal-key" = String, Header, description = "internal.key"),
    ),
    responses(
        (status = 204, description = "Armed"),
        (status = 403, description = "Missing or wrong x-internal-key", body = ErrorBody),
        (status = 404, description = "Fault injection is off, or the rider has not reported a position", body = ErrorBody),
    )
)]
async fn arm_rider(
    State(state): State<AppState>,
    _caller: InternalCaller,
    Path(id): Path<RiderId>,
) -> Result<StatusCode, ApiError> {
    enabled(&state)?;
    let shard = state
        .riders
        .home(id)
        .ok_or_else(|| ApiError::not_found("no such rider on this node"))?;
    state.rider_actors.arm_fault(id, shard).await?;
    tracing::warn!(rider_id = %id, "fault armed in rider actor");
    Ok(StatusCode::NO_CONTENT)
}
