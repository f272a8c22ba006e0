//! The whole application: every domain's routes merged into one router with its OpenAPI
//! document, the interactive docs, and the layers every request passes through. Separate from
//! serving, so tests and tools can drive it without a socket.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE};
use axum::http::{HeaderName, HeaderValue, Method, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;
use utoipa::OpenApi;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa_axum::router::OpenApiRouter;
use utoipa_scalar::{Scalar, Servable};

use crate::config::ServerSettings;
use crate::http::{ApiError, ErrorBody, ErrorDetail, metrics, middleware, openapi};
use crate::state::AppState;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "tomato",
        description = "Food-delivery back end: restaurants, menus, carts, orders, payments, riders, \
live tracking and admin. Errors always have the body `{\"error\":{\"code\",\"message\"}}`; \
authenticated routes take `Authorization: Bearer <token>` from a sign-in route.\n\n\
Realtime: Socket.IO v4 at `/socket.io/` (connect with `auth: {token}`; a bad token gets \
`connect_error`) and a plain WebSocket at `/ws?token=` carrying `{\"event\",\"data\"}` frames. \
Connections join `user:<userId>` and, for a seller, `restaurant:<restaurantId>`. Server events: \
`order:new` `{order}`, `order:update` `{orderId, status, paymentStatus, order}`, \
`order:available` `{orderId, restaurantId, restaurantName, pickup, dropoff, distanceKm, \
riderAmount, expiresAt}`, `order:rider_assigned` `{order}`, `order:dispatch_pending` \
`{orderId, attempts}`, `rider:location` `{orderId, lat, lon, at}`, and `error` `{code, message}` \
when a client event is refused (the connection stays). Client events: `rider:location` \
`{lat, lon, heading?, speedMps?, at?}`, the same as `PUT /api/rider/location`; and \
`ops:subscribe` (admins; anyone else is refused `forbidden`), after which `ops:snapshot` \
brings the body of `GET /api/admin/ops` every `ops.interval_ms` (subscribing again is harmless, \
and keeps an idle `/ws` open). A client that \
wants the outcome asks for an acknowledgement (Socket.IO `emitWithAck`; on `/ws` a frame field \
`id`, answered by `{event: \"ack\", id, data}`): `{ok: true}` or `{error: {code, message}}`. \
Riders that cannot hold a socket read the offers they hold with `GET /api/rider/offers`.",
    ),
    components(schemas(ErrorBody, ErrorDetail)),
    modifiers(&BearerScheme),
    tags(
        (name = "auth", description = "Sign-in, tokens and roles"),
        (name = "ops", description = "The operations page and its files"),
        (name = "restaurants", description = "Restaurants and the nearby search"),
        (name = "menu", description = "Restaurants' dishes"),
        (name = "cart", description = "The customer's cart"),
        (name = "addresses", description = "The customer's delivery addresses"),
        (name = "orders", description = "Placing and moving orders"),
        (name = "payments", description = "Paying for orders"),
        (name = "uploads", description = "Images users upload"),
        (name = "riders", description = "Rider profiles, availability, location and the nearby search"),
        (name = "admin", description = "Verification and statistics, for admins"),
        (name = "realtime", description = "The plain WebSocket (Socket.IO is served at /socket.io/)"),
        (name = "internal", description = "Service-to-service routes behind x-internal-key"),
        (name = "operations", description = "Health, readiness and metrics"),
    )
)]
struct ApiDoc;

struct BearerScheme;

impl utoipa::Modify for BearerScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        if let Some(components) = openapi.components.as_mut() {
            components.add_security_scheme(
                "bearer",
                SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
            );
        }
    }
}

/// Every documented route of the API, with its OpenAPI description.
fn api(upload_limit: usize) -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(crate::uploads::router(upload_limit))
        .merge(crate::health::router())
        .merge(crate::auth::router())
        .merge(crate::marketplace::router())
        .merge(crate::orders::router())
        .merge(crate::payments::router())
        .merge(crate::riders::router())
        .merge(crate::realtime::router())
        .merge(crate::fault::router())
        .merge(crate::admin::router())
        .merge(crate::ops::router())
        .merge(crate::cluster::router())
}

/// The OpenAPI document of every route the node serves.
pub fn openapi() -> utoipa::openapi::OpenApi {
    // The upload limit only shapes the route's layer, not its description.
    openapi::complete(api(0).into_openapi())
}

/// The whole application: routes, docs and the edge layers. Separate from serving, so tests and
/// tools can drive it without a socket.
pub fn app(state: AppState) -> Router {
    crate::realtime::attach(&state);
    let socket_io = state.realtime.layer();
    let (router, openapi) = api(state.settings.server.upload_limit_bytes).split_for_parts();
    let openapi = Arc::new(openapi::complete(openapi));
    let spec = Arc::clone(&openapi);
    let server = &state.settings.server;
    let request_id = HeaderName::from_static("x-request-id");

    let layers = ServiceBuilder::new()
        .layer(SetRequestIdLayer::new(request_id.clone(), MakeRequestUuid))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|req: &Request| middleware::request_span(req)),
        )
        .layer(PropagateRequestIdLayer::new(request_id))
        .option_layer(cors(server))
        .layer(axum::middleware::from_fn(middleware::error_bodies))
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&state.metrics),
            metrics::track,
        ))
        .layer(CatchPanicLayer::custom(|_| {
            // The panic message may hold internals; it is logged by the panic hook, not sent.
            ApiError::internal(anyhow::anyhow!("handler panicked")).into_response()
        }))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            Duration::from_secs(server.request_timeout_s),
        ))
        .layer(DefaultBodyLimit::max(server.body_limit_bytes));

    router
        .route(
            "/api/openapi.json",
            get(move || {
                let spec = Arc::clone(&spec);
                async move { axum::Json(spec.as_ref().clone()) }
            }),
        )
        .merge(Scalar::with_url("/api/docs", openapi.as_ref().clone()))
        .fallback(|req: Request| async move {
            ApiError::not_found(format!(
                "no route for {} {}",
                req.method(),
                req.uri().path()
            ))
        })
        .layer(layers)
        // Outermost: Socket.IO takes its own path before any request layer (its connections
        // are long-lived; the request timeout must not cut them).
        .layer(socket_io)
        .layer(tower::util::MapRequestLayer::new(
            crate::realtime::own_socket_io_head,
        ))
        .with_state(state)
}

/// CORS for browser clients from `server.cors_origins`; none configured means no CORS headers,
/// so browsers allow same-origin calls only.
fn cors(server: &ServerSettings) -> Option<CorsLayer> {
    if server.cors_origins.is_empty() {
        return None;
    }
    let origins = if server.cors_origins.iter().any(|origin| origin == "*") {
        AllowOrigin::any()
    } else {
        // Validated at load: every entry is an origin URL, hence a valid header value.
        AllowOrigin::list(
            server
                .cors_origins
                .iter()
                .filter_map(|origin| HeaderValue::from_str(origin).ok()),
        )
    };
    Some(
        CorsLayer::new()
            .allow_origin(origins)
            .allow_methods([Method::GET, Method::POST, Method::PUT, Method::DELETE])
            .allow_headers([
                AUTHORIZATION,
                CONTENT_TYPE,
                HeaderName::from_static("idempotency-key"),
                HeaderName::from_static("x-request-id"),
            ])
            .expose_headers([HeaderName::from_static("x-request-id")])
            .max_age(Duration::from_secs(3600)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::openapi::complete;

    #[test]
    fn every_operation_gets_the_edge_answers_and_uuid_ids() {
        let completed = complete(openapi());
        let document = serde_json::to_value(&completed).expect("json");
        let cancel = &document["paths"]["/api/order/{id}/cancel"]["post"];
        for status in ["400", "401"] {
            assert!(cancel["responses"][status].is_object(), "{status}");
        }
        assert_eq!(cancel["parameters"][0]["schema"]["format"], "uuid");
        let place = &document["paths"]["/api/order/new"]["post"];
        for status in ["400", "413", "415"] {
            assert!(place["responses"][status].is_object(), "{status}");
        }
        let shard = &document["paths"]["/api/v1/internal/shards/{id}/{action}"]["post"];
        assert_ne!(shard["parameters"][0]["schema"]["format"], "uuid");
    }
}
