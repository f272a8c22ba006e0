//! The node's side of a cluster: what it tells the other nodes (each realtime event, to the
//! nodes with a socket in its room; every revocation and role change, so each node's
//! authentication cache stays exact), the questions one node asks the others about their
//! memory (live statistics), `GET /api/admin/cluster`: which node serves which shard now, and
//! `GET /api/admin/cluster/owner`: which zone a point is in and who serves it. A single node
//! owns every shard it runs; a cluster node answers with the live set and the leases as it last
//! read them from Redis (at most a second old).

use std::sync::Arc;

use axum::extract::State;
use futures_core::future::BoxFuture;
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tomato_cluster::Cluster;
use tomato_domain::LatLon;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::AdminUser;
use crate::auth::cache::CacheChange;
use crate::http::fields::invalid;
use crate::http::responses::Unauthorized;
use crate::http::{ApiError, ErrorBody, Json, Query};
use crate::realtime::{Envelope, LocalSockets, RealtimeBus};
use crate::state::AppState;

pub mod ask;
pub mod served;

use ask::Question;
use served::{ShardView, shard_views, shards_now, single_node_id};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(cluster))
        .routes(routes!(owner))
}

/// What one node tells the others (externally tagged, which serde reads without buffering).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
enum NodeEvent {
    Realtime { envelope: Envelope },
    Auth { change: CacheChange },
}

/// What this node answers to `question`.
async fn answer(question: Question, state: &AppState) -> String {
    match question {
        Question::LiveStats => {
            serde_json::to_string(&crate::admin::Live::here(state)).unwrap_or_default()
        }
        Question::Ops => serde_json::to_string(&crate::ops::Part::here(state)).unwrap_or_default(),
    }
}

/// The realtime bus of a cluster: this node's sockets at once, the other nodes' through Redis.
struct ClusterBus {
    local: Arc<LocalSockets>,
    cluster: Arc<Cluster>,
}

impl RealtimeBus for ClusterBus {
    fn publish(&self, envelope: Envelope) {
        let room = envelope.room.to_string();
        if let Ok(payload) = serde_json::to_string(&NodeEvent::Realtime {
            envelope: envelope.clone(),
        }) {
            self.cluster.to_room(&room, &payload);
        }
        self.local.deliver(envelope);
    }

    fn listen_to(&self, rooms: &[String]) -> BoxFuture<'static, ()> {
        let (cluster, rooms) = (Arc::clone(&self.cluster), rooms.to_vec());
        Box::pin(async move { cluster.listen_to_rooms(&rooms).await })
    }
}

/// Connects the node's realtime gateway and authentication cache to the cluster.
pub fn wire(state: &AppState, cluster: &Arc<Cluster>) {
    state.realtime.use_bus(Arc::new(ClusterBus {
        local: state.realtime.local_sockets(),
        cluster: Arc::clone(cluster),
    }));
    // Weak: the cluster's own event handler below holds the cache.
    let peers = Arc::downgrade(cluster);
    state.auth_cache.tell_peers(move |change| {
        if let (Some(cluster), Ok(payload)) = (
            peers.upgrade(),
            serde_json::to_string(&NodeEvent::Auth { change }),
        ) {
            cluster.broadcast(payload);
        }
    });
    let held = state.realtime.local_sockets();
    cluster.sweep_rooms(move |rooms| held.holding(rooms));
    let (sockets, cache) = (
        state.realtime.local_sockets(),
        Arc::clone(&state.auth_cache),
    );
    let answering = state.clone();
    cluster.on_question(move |asked| {
        let state = answering.clone();
        Box::pin(async move {
            match serde_json::from_str::<Question>(&asked) {
                Ok(question) => answer(question, &state).await,
                Err(err) => {
                    tracing::warn!(error = %err, "unreadable question from another node");
                    String::new()
                }
            }
        })
    });
    cluster.on_event(move |payload| match serde_json::from_str(&payload) {
        Ok(NodeEvent::Realtime { envelope }) => sockets.deliver(envelope),
        Ok(NodeEvent::Auth { change }) => cache.apply(change),
        Err(err) => tracing::warn!(error = %err, "unreadable event from another node"),
    });
}

/// A live node.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeView {
    pub id: String,
    /// When its last heartbeat was taken (RFC 3339).
    pub last_seen_at: String,
    /// How many shards it holds.
    pub shards: usize,
}

/// The cluster as this node sees it.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterView {
    /// `single` or `cluster`.
    #[schema(example = "cluster")]
    pub mode: &'static str,
    pub node_id: String,
    pub nodes: Vec<NodeView>,
    pub shards: Vec<ShardView>,
}

/// Heartbeats say when they expire; they were taken this long before.
const HEARTBEAT_TTL_MS: i64 = 5_000;

/// Nodes and shard owners (admin).
#[utoipa::path(
    get,
    path = "/api/admin/cluster",
    tag = "admin",
    security(("bearer" = [])),
    responses(
        (status = 200, body = ClusterView),
        Unauthorized,
        (status = 403, description = "Not an admin", body = ErrorBody),
    )
)]
async fn cluster(State(state): State<AppState>, _admin: AdminUser) -> Json<ClusterView> {
    let view = state.cluster.get().map(|cluster| cluster.view());
    let shards = shard_views(&state, view.as_ref());
    let (Some(cluster), Some(view)) = (state.cluster.get(), view) else {
        let node_id = single_node_id(&state);
        return Json(ClusterView {
            mode: "single",
            nodes: vec![NodeView {
                id: node_id.clone(),
                last_seen_at: OffsetDateTime::now_utc()
                    .format(&Rfc3339)
                    .unwrap_or_default(),
                shards: shards.len(),
            }],
            node_id,
            shards,
        });
    };
    debug_assert!(!state.settings.cluster.redis_url.expose_secret().is_empty());
    let nodes = view
        .nodes
        .iter()
        .map(|member| NodeView {
            id: member.id.clone(),
            last_seen_at: OffsetDateTime::from_unix_timestamp_nanos(
                i128::from(member.expires_ms - HEARTBEAT_TTL_MS) * 1_000_000,
            )
            .ok()
            .and_then(|at| at.format(&Rfc3339).ok())
            .unwrap_or_default(),
            shards: shards
                .iter()
                .filter(|s| s.owner.as_deref() == Some(member.id.as_str()))
                .count(),
        })
        .collect();
    Json(ClusterView {
        mode: "cluster",
        node_id: cluster.node_id().to_owned(),
        nodes,
        shards,
    })
}

/// A point, for `GET /api/admin/cluster/owner`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct OwnerQuery {
    #[param(minimum = -90, maximum = 90)]
    pub lat: f64,
    #[param(minimum = -180, maximum = 180)]
    pub lon: f64,
}

/// Who serves a point.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OwnerView {
    /// The zone the point is in: an H3 cell at `shards.zone_resolution`, as hex.
    #[schema(example = "8760145b4ffffff")]
    pub zone: String,
    /// The shard the zone hashes onto.
    pub shard: u32,
    /// The node serving the shard; null while it moves.
    pub owner: Option<String>,
    /// The shard lease's epoch (1 on a single node; 0 while it moves).
    pub epoch: u64,
}

/// Which zone a point is in, the shard it hashes onto, and the node that owns it now (admin).
#[utoipa::path(
    get,
    path = "/api/admin/cluster/owner",
    tag = "admin",
    security(("bearer" = [])),
    params(OwnerQuery),
    responses(
        (status = 200, body = OwnerView),
        Unauthorized,
        (status = 403, description = "Not an admin", body = ErrorBody),
    )
)]
async fn owner(
    State(state): State<AppState>,
    _admin: AdminUser,
    Query(query): Query<OwnerQuery>,
) -> Result<Json<OwnerView>, ApiError> {
    let at = LatLon::new(query.lat, query.lon).map_err(invalid)?;
    let map = state.shards.map();
    let zone = at.cell(map.zone_resolution());
    let shard = map.shard_of_cell(zone);
    let served = shards_now(&state)
        .into_iter()
        .find(|served| served.id == shard.0);
    Ok(Json(OwnerView {
        zone: zone.to_string(),
        shard: shard.0,
        owner: served.as_ref().and_then(|served| served.owner.clone()),
        epoch: served.map_or(0, |served| served.epoch),
    }))
}
