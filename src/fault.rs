//! Fault injection for resilience drills: makes one order's or rider's actor panic on its next
//! message, to watch supervision rebuild it from the store, or an order's next save fail as a
//! store outage would or wait as a slow store would; and stops and starts a shard on this node as losing and winning its
//! lease in a cluster would; and drops the replies to commands other nodes of a cluster send
//! here, as a reply lost on the way would be, or reports the commands it sends as not
//! published although Redis took them, as a stalled Redis would. Off unless `testing.fault_injection = true`, and even then only for
//! callers holding the internal key.

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use tomato_actors::ArmFault;
use tomato_domain::{OrderId, RiderId};
use tomato_shards::ShardId;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::http::{ApiError, ErrorBody, InternalCaller, Json, Path, Query};
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(arm))
        .routes(routes!(arm_rider))
        .routes(routes!(shard_drill))
        .routes(routes!(drop_replies))
        .routes(routes!(fail_publishes))
}

fn enabled(state: &AppState) -> Result<(), ApiError> {
    if state.settings.testing.fault_injection {
        Ok(())
    } else {
        Err(ApiError::not_found("no such route"))
    }
}

/// Which fault to arm in an order's actor.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct OrderFault {
    /// `panic` (default): the next command panics inside the actor, is retried once on the
    /// actor restarted from the store, and the caller does not notice. `store`: the next
    /// command's save fails as an unreachable store would; nothing is written and the caller
    /// gets 503. `slow`: the next command's save waits `ms` before it is sent, as a slow
    /// store would (a write in flight while its node loses its lease, say).
    pub kind: Option<String>,
    /// For `slow`: how long the save waits, in milliseconds (default 5000, at most 60000).
    pub ms: Option<u64>,
}

/// Arm a fault in an order's actor for its next command.
#[utoipa::path(
    post,
    path = "/api/v1/internal/fault/order/{id}",
    tag = "internal",
    params(
        ("id" = String, Path, description = "Order id"),
        OrderFault,
        ("x-internal-key" = String, Header, description = "internal.key"),
    ),
    responses(
        (status = 204, description = "Armed"),
        (status = 400, description = "Unknown kind", body = ErrorBody),
        (status = 403, description = "Missing or wrong x-internal-key", body = ErrorBody),
        (status = 404, description = "Fault injection is off, or no such order", body = ErrorBody),
    )
)]
async fn arm(
    State(state): State<AppState>,
    _caller: InternalCaller,
    Path(id): Path<OrderId>,
    Query(fault): Query<OrderFault>,
) -> Result<StatusCode, ApiError> {
    enabled(&state)?;
    let fault = match fault.kind.as_deref() {
        None | Some("panic") => ArmFault::Panic,
        Some("store") => ArmFault::StoreFailure,
        Some("slow") => match fault.ms.unwrap_or(5_000) {
            ms @ 0..=60_000 => ArmFault::SlowSave(ms),
            ms => {
                return Err(ApiError::bad_request(format!(
                    "ms must be at most 60000, not {ms}"
                )));
            }
        },
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "kind must be panic, store or slow, not {other:?}"
            )));
        }
    };
    let order = crate::orders::load(&state, id).await?;
    state.shards.arm_fault((&order).into(), fault).await?;
    tracing::warn!(order_id = %id, ?fault, "fault armed in order actor");
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

/// Stop (`stop`) or start (`start`) a shard on this node, as a node giving up or winning its
/// lease would. A stopped shard's commands are refused with 503 `shard_moving`; a started one
/// loads its open orders from the store, which resume their timers and dispatch.
#[utoipa::path(
    post,
    path = "/api/v1/internal/shards/{id}/{action}",
    tag = "internal",
    params(
        ("id" = u32, Path, description = "Shard number"),
        ("action" = String, Path, description = "`stop` or `start`"),
        ("x-internal-key" = String, Header, description = "internal.key"),
    ),
    responses(
        (status = 200, body = ShardDrill),
        (status = 403, description = "Missing or wrong x-internal-key", body = ErrorBody),
        (status = 404, description = "Fault injection is off, no such shard, or no such action", body = ErrorBody),
    )
)]
async fn shard_drill(
    State(state): State<AppState>,
    _caller: InternalCaller,
    Path((id, action)): Path<(u32, String)>,
) -> Result<Json<ShardDrill>, ApiError> {
    enabled(&state)?;
    let shard = shard_id(&state, id)?;
    let drill = match action.as_str() {
        "stop" => {
            let stopped = state.shards.stop(shard).await;
            ShardDrill {
                shard: id,
                orders: stopped.orders,
                riders: stopped.riders,
            }
        }
        "start" => ShardDrill {
            shard: id,
            orders: state.shards.start(shard).await?,
            riders: 0,
        },
        _ => return Err(ApiError::not_found("no such drill")),
    };
    tracing::warn!(%shard, action, orders = drill.orders, "shard drill");
    Ok(Json(drill))
}

/// How many of the next commands a cluster drill touches.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DrillCount {
    /// The next `count` commands between this node and the others.
    #[param(minimum = 0, maximum = 1000)]
    pub count: u32,
}

/// Drop the replies to the next commands other nodes send here (after running them), as a
/// reply lost between nodes would be: the sender sends the command again and must not apply it
/// twice.
#[utoipa::path(
    post,
    path = "/api/v1/internal/fault/replies",
    tag = "internal",
    params(
        DrillCount,
        ("x-internal-key" = String, Header, description = "internal.key"),
    ),
    responses(
        (status = 204, description = "Armed"),
        (status = 400, description = "`count` missing or out of range", body = ErrorBody),
        (status = 403, description = "Missing or wrong x-internal-key", body = ErrorBody),
        (status = 404, description = "Fault injection is off, or the node is not in a cluster", body = ErrorBody),
    )
)]
async fn drop_replies(
    State(state): State<AppState>,
    _caller: InternalCaller,
    Query(drill): Query<DrillCount>,
) -> Result<StatusCode, ApiError> {
    let cluster = cluster_drill(&state, &drill)?;
    cluster.drop_next_replies(drill.count);
    tracing::warn!(
        count = drill.count,
        "replies to other nodes will be dropped"
    );
    Ok(StatusCode::NO_CONTENT)
}

/// Publish the next commands this node sends to other nodes, but take the publish as failed,
/// as when Redis stalls past the reply timeout after taking a message: the command may have
/// run, so it must be sent again only as a repeat.
#[utoipa::path(
    post,
    path = "/api/v1/internal/fault/publishes",
    tag = "internal",
    params(
        DrillCount,
        ("x-internal-key" = String, Header, description = "internal.key"),
    ),
    responses(
        (status = 204, description = "Armed"),
        (status = 400, description = "`count` missing or out of range", body = ErrorBody),
        (status = 403, description = "Missing or wrong x-internal-key", body = ErrorBody),
        (status = 404, description = "Fault injection is off, or the node is not in a cluster", body = ErrorBody),
    )
)]
async fn fail_publishes(
    State(state): State<AppState>,
    _caller: InternalCaller,
    Query(drill): Query<DrillCount>,
) -> Result<StatusCode, ApiError> {
    let cluster = cluster_drill(&state, &drill)?;
    cluster.fail_next_publishes(drill.count);
    tracing::warn!(
        count = drill.count,
        "commands to other nodes will look unpublished"
    );
    Ok(StatusCode::NO_CONTENT)
}

/// The node's cluster, for a drill of `drill.count` commands (bounded) when drills are on.
fn cluster_drill<'s>(
    state: &'s AppState,
    drill: &DrillCount,
) -> Result<&'s std::sync::Arc<tomato_cluster::Cluster>, ApiError> {
    enabled(state)?;
    if drill.count > 1000 {
        return Err(ApiError::bad_request("count must be between 0 and 1000"));
    }
    state
        .cluster
        .get()
        .ok_or_else(|| ApiError::not_found("this node is not in a cluster"))
}
