//! Fault injection for resilience drills: makes one order's or rider's actor panic on its next
//! message, to watch supervision rebuild it from the store, and stops and starts a shard on this
//! node as losing and winning its lease in a cluster would. Off unless
//! `testing.fault_injection = true`, and even then only for callers holding the internal key.

use axum::extract::State;
use axum::http::StatusCode;
use serde::Serialize;
use tomato_domain::{OrderId, RiderId};
use tomato_shards::ShardId;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::http::{ApiError, ErrorBody, InternalCaller, Json, Path};
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(arm))
        .routes(routes!(arm_rider))
        .routes(routes!(stop_shard))
        .routes(routes!(start_shard))
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
    let order = state
        .stores
        .orders
        .get(id)
        .await?
        .ok_or_else(|| ApiError::not_found("no such order"))?;
    state.shards.arm_fault((&order).into()).await?;
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
    if state.riders.home(id).is_none() {
        return Err(ApiError::not_found("no such rider on this node"));
    }
    state.shards.arm_rider_fault(id).await?;
    tracing::warn!(rider_id = %id, "fault armed in rider actor");
    Ok(StatusCode::NO_CONTENT)
}

/// What a shard drill did.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ShardDrill {
    pub shard: u32,
    /// Open orders resumed (start) or order actors retired (stop).
    pub orders: usize,
    /// Rider actors ended (stop).
    pub riders: usize,
}

fn shard_id(state: &AppState, id: u32) -> Result<ShardId, ApiError> {
    if id < state.shards.map().count() {
        Ok(ShardId(id))
    } else {
        Err(ApiError::not_found("no such shard"))
    }
}

/// Stop a shard on this node, as a node giving up its lease would: commands for it are refused
/// with 503 `shard_moving` until it starts again.
#[utoipa::path(
    post,
    path = "/api/v1/internal/shards/{id}/stop",
    tag = "internal",
    params(
        ("id" = u32, Path, description = "Shard number"),
        ("x-internal-key" = String, Header, description = "internal.key"),
    ),
    responses(
        (status = 200, body = ShardDrill),
        (status = 403, description = "Missing or wrong x-internal-key", body = ErrorBody),
        (status = 404, description = "Fault injection is off, or no such shard", body = ErrorBody),
    )
)]
async fn stop_shard(
    State(state): State<AppState>,
    _caller: InternalCaller,
    Path(id): Path<u32>,
) -> Result<Json<ShardDrill>, ApiError> {
    enabled(&state)?;
    let shard = shard_id(&state, id)?;
    let stopped = state.shards.stop(shard).await;
    tracing::warn!(%shard, "shard stopped by a drill");
    Ok(Json(ShardDrill {
        shard: id,
        orders: stopped.orders,
        riders: stopped.riders,
    }))
}

/// Start a shard on this node, as a node winning its lease would: its open orders are loaded
/// from the store and resume their timers and dispatch.
#[utoipa::path(
    post,
    path = "/api/v1/internal/shards/{id}/start",
    tag = "internal",
    params(
        ("id" = u32, Path, description = "Shard number"),
        ("x-internal-key" = String, Header, description = "internal.key"),
    ),
    responses(
        (status = 200, body = ShardDrill),
        (status = 403, description = "Missing or wrong x-internal-key", body = ErrorBody),
        (status = 404, description = "Fault injection is off, or no such shard", body = ErrorBody),
    )
)]
async fn start_shard(
    State(state): State<AppState>,
    _caller: InternalCaller,
    Path(id): Path<u32>,
) -> Result<Json<ShardDrill>, ApiError> {
    enabled(&state)?;
    let shard = shard_id(&state, id)?;
    let orders = state.shards.start(shard).await?;
    tracing::warn!(%shard, orders, "shard started by a drill");
    Ok(Json(ShardDrill {
        shard: id,
        orders,
        riders: 0,
    }))
}
