//! Liveness, readiness and metrics, for orchestrators, load balancers and Prometheus.

use std::collections::BTreeMap;
use std::time::Duration;
use tomato_domain::ErrorKind;

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::http::{ApiError, ErrorBody, Json};
use crate::state::AppState;

/// How long a dependency may take to answer a readiness probe.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// The health routes, plus `/metrics`.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(metrics))
}

/// The answer of a health probe.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    #[schema(example = "ok")]
    pub status: &'static str,
    /// Each dependency checked, with `ok`.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub checks: BTreeMap<&'static str, &'static str>,
}

/// The process is up.
#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, body = Health)))]
async fn healthz() -> Json<Health> {
    Json(Health {
        status: "ok",
        checks: BTreeMap::new(),
    })
}

/// The node can serve: the store (and Redis, when configured) answers.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "operations",
    responses(
        (status = 200, body = Health),
        (status = 503, description = "A dependency does not answer; the message names it", body = ErrorBody),
    )
)]
async fn readyz(State(state): State<AppState>) -> Result<Json<Health>, ApiError> {
    if let Some(cluster) = state.cluster.get() {
        let view = cluster.view();
        if !view.joined || !view.redis_ok {
            let why = if view.joined {
                "Redis does not answer"
            } else {
                "the node has not joined the cluster yet"
            };
            return Err(ApiError::from_kind(
                ErrorKind::Unavailable,
                "not_ready",
                why,
            ));
        }
    }
    let backend = &state.stores.backend;
    match tokio::time::timeout(PROBE_TIMEOUT, backend.ping()).await {
        Ok(Ok(())) => {
            let mut checks = BTreeMap::from([("store", "ok")]);
            if state.cluster.get().is_some() {
                checks.insert("cluster", "ok");
            }
            Ok(Json(Health {
                status: "ready",
                checks,
            }))
        }
        outcome => {
            let why = match outcome {
                Ok(Err(err)) => err.to_string(),
                _ => "timed out".to_owned(),
            };
            tracing::warn!(backend = backend.name(), error = %why, "store not ready");
            Err(ApiError::from_kind(
                ErrorKind::Unavailable,
                "not_ready",
                format!("store ({}) does not answer", backend.name()),
            ))
        }
    }
}

/// `GET /metrics`: Prometheus text exposition.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    responses((status = 200, description = "Prometheus/OpenMetrics text", content_type = "application/openmetrics-text"))
)]
async fn metrics(State(state): State<AppState>) -> Response {
    match state.metrics.render() {
        Ok(body) => (
            [(
                CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        )
            .into_response(),
        Err(err) => ApiError::internal(anyhow::anyhow!("encoding metrics: {err}")).into_response(),
    }
}
