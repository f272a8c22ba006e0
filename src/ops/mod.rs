//! The operations page's data: one snapshot of the city a tick, computed from memory (the
//! riders' index, the open orders this node's actors hold, the dispatch counters), bounded in
//! size whatever the city. `GET /api/admin/ops` answers one (the page's first paint); admins whose
//! socket emitted `ops:subscribe` get `ops:snapshot` every `ops.interval_ms`. In a cluster the
//! node that computes a snapshot asks the others for their part and merges, so the page shows
//! the whole city whichever node serves it. The page itself is [`page`].

pub mod book;
mod page;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use axum::extract::State;
use h3o::{CellIndex, Resolution};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tomato_domain::OrderStatus;
use tomato_shards::ShardMap;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::AdminUser;
use crate::cluster::ask::{Question, ask_others};
use crate::cluster::served::{ShardView, shards_now};
use crate::dispatch::{DispatchTally, WindowTally, fresh_since};
use crate::http::responses::Unauthorized;
use crate::http::{ApiError, ErrorBody, Json};
use crate::live::{CellCounts, add_all, cell_counts, demand_ratio, open_orders, round2};
use crate::realtime::bus::{Envelope, Room};
use crate::state::AppState;
use tomato_domain::millis::unix_ms;

/// The room of the admins watching the page.
pub const ROOM: &str = "ops";
/// Cells in a snapshot at most (the busiest).
const MAX_CELLS: usize = 2000;
/// Zones in a snapshot at most.
const MAX_ZONES: usize = 1000;
/// Waiting orders in a snapshot at most (the longest waiting).
const MAX_WAITING: usize = 100;
/// The window of the assignment latency figures.
const ASSIGN_WINDOW: Duration = Duration::from_secs(60);

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(first_paint))
        .merge(page::router())
}

/// One H3 cell: supply, demand and their balance.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OpsCell {
    /// H3 cell (resolution `ops.resolution`) as hex.
    pub cell: String,
    /// The cell's corners, `[lat, lon]`, in order.
    pub boundary: Vec<[f64; 2]>,
    /// Riders dispatch could offer work to now.
    pub available_riders: usize,
    /// Orders picked up here that wait for a rider (`ready_for_rider`).
    pub waiting_orders: usize,
    /// Unfinished orders picked up here.
    pub open_orders: usize,
    /// Waiting orders per available rider (divided by 1 when no rider is available): above 1,
    /// riders are short; the basis of surge pricing.
    pub demand_ratio: f64,
}

/// A zone under the shown cells, and the node that owns it now.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OpsZone {
    /// H3 cell at `shards.zone_resolution`, as hex.
    #[schema(example = "8760145b4ffffff")]
    pub zone: String,
    /// The shard (the leased unit) the zone hashes onto.
    pub shard: u32,
    /// The node serving it; null while it moves (or, on a single node, before it first runs).
    pub owner: Option<String>,
    /// The zone's corners, `[lat, lon]`, in order.
    pub boundary: Vec<[f64; 2]>,
}

/// Riders on the map.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OpsRiders {
    /// Riders reporting now (seen within `dispatch.stale_after_s`).
    pub total: usize,
    /// How many `points` there are: all of them up to `ops.max_riders`, then an even sample.
    pub shown: usize,
    /// `[lat, lon, available]`, available 1 when dispatch could offer the rider work.
    #[schema(value_type = Vec<Vec<f64>>)]
    pub points: Vec<(f64, f64, u8)>,
}

/// An order waiting for a rider.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OpsWaiting {
    pub order_id: String,
    pub restaurant_name: String,
    pub lat: f64,
    pub lon: f64,
    /// Seconds since it became `ready_for_rider`.
    pub waited_s: f64,
}

/// Counters of the city now.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OpsCounters {
    /// Riders dispatch could offer work to now.
    pub riders_online: usize,
    /// Riders reporting now, busy or not.
    pub riders_reporting: usize,
    /// Unfinished orders by status.
    #[schema(value_type = Object)]
    pub open_by_status: BTreeMap<String, u64>,
    /// Orders finished (`delivered`, `cancelled`, `expired`) since the nodes started.
    #[schema(value_type = Object)]
    pub finished: BTreeMap<String, u64>,
    pub offers: u64,
    pub accepts: u64,
    pub timeouts: u64,
}

/// Seconds from `ready_for_rider` to `rider_assigned` over the last minute.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OpsAssign {
    pub samples: usize,
    pub p50_s: Option<f64>,
    pub p99_s: Option<f64>,
}

/// The city now.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OpsSnapshot {
    /// When it was taken (RFC 3339).
    pub at: String,
    /// The cells' H3 resolution.
    pub resolution: u8,
    /// Milliseconds between snapshots on the socket.
    pub interval_ms: u64,
    /// The base map's tile URL (`ops.tile_url`); empty: no base map.
    pub tile_url: String,
    /// Nodes whose memory it sums (1 on a single node).
    pub nodes: usize,
    /// How long it took to compute, in milliseconds.
    pub computed_in_ms: f64,
    pub counters: OpsCounters,
    pub assign: OpsAssign,
    /// Cells with riders or open orders, the highest demand ratio first, at most 2000.
    pub cells: Vec<OpsCell>,
    /// The zones' H3 resolution (`shards.zone_resolution`).
    pub zone_resolution: u8,
    /// The zones that hold the shown cells, each with its owner as the serving node sees the
    /// cluster, at most 1000.
    pub zones: Vec<OpsZone>,
    pub riders: OpsRiders,
    /// How many orders wait for a rider.
    pub waiting_total: usize,
    /// The longest waiting first, at most 100.
    pub waiting: Vec<OpsWaiting>,
    /// Batched dispatch: the latest windows of every node, oldest first, at most 20; empty
    /// when dispatch is greedy.
    pub windows: Vec<WindowTally>,
}

/// One node's part of a snapshot (what another node answers when asked).
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Part {
    riders_total: usize,
    riders: Vec<(f64, f64, u8)>,
    /// By cell (`u64` of the H3 index).
    cells: BTreeMap<u64, CellCounts>,
    waiting: Vec<OpsWaiting>,
    open_by_status: BTreeMap<String, u64>,
    finished: BTreeMap<String, u64>,
    dispatch: DispatchTally,
}

fn resolution(state: &AppState) -> Resolution {
    Resolution::try_from(state.settings.ops.resolution).unwrap_or(Resolution::Eight)
}

impl Part {
    /// This node's part, from its memory.
    pub fn here(state: &AppState) -> Part {
        let now = OffsetDateTime::now_utc();
        let res = resolution(state);
        let fresh = fresh_since(state.settings.dispatch.stale_after_s);
        let (riders_total, sample) = state
            .riders
            .sample(move |seen, _| seen >= fresh, state.settings.ops.max_riders);
        let riders = sample
            .into_iter()
            .map(|(at, available)| (at.lat(), at.lon(), u8::from(available)))
            .collect();
        let open = open_orders(state);
        let cells = cell_counts(state, res, &open);
        let mut open_by_status: BTreeMap<String, u64> = BTreeMap::new();
        let mut waiting = Vec::new();
        for (id, held) in open {
            *open_by_status.entry(held.status.to_string()).or_default() += 1;
            if held.status != OrderStatus::ReadyForRider {
                continue;
            }
            let since = held.ready_at.unwrap_or(now);
            waiting.push(OpsWaiting {
                order_id: id.to_string(),
                restaurant_name: held.restaurant,
                lat: held.pickup.lat(),
                lon: held.pickup.lon(),
                waited_s: round2((now - since).as_seconds_f64().max(0.0)),
            });
        }
        let window = i64::try_from(ASSIGN_WINDOW.as_millis()).unwrap_or(i64::MAX);
        Part {
            riders_total,
            riders,
            cells,
            waiting,
            open_by_status,
            finished: state.ops_book.finished(),
            dispatch: state.dispatch_metrics.tally(unix_ms(now) - window),
        }
    }

    fn add(&mut self, other: Part) {
        self.riders_total += other.riders_total;
        self.riders.extend(other.riders);
        add_all(&mut self.cells, other.cells);
        self.waiting.extend(other.waiting);
        add_all(&mut self.open_by_status, other.open_by_status);
        add_all(&mut self.finished, other.finished);
        self.dispatch.add(other.dispatch);
    }

    /// The snapshot of the parts summed into this one.
    fn into_snapshot(mut self, state: &AppState, nodes: usize, started: Instant) -> OpsSnapshot {
        let settings = &state.settings.ops;
        // Each shard and node sampled its own riders; an even sample of the union keeps exactly
        // the cap (a stride would halve a union just over it).
        self.riders = evenly(self.riders, settings.max_riders);
        let waiting_total = self.waiting.len();
        self.waiting.sort_by(|a, b| {
            b.waited_s
                .total_cmp(&a.waited_s)
                .then(a.order_id.cmp(&b.order_id))
        });
        self.waiting.truncate(MAX_WAITING);
        let riders_online = self.cells.values().map(|c| c.available).sum();
        let map = state.shards.map();
        let cells = cells_of(self.cells);
        let shown = cells.iter().filter_map(|c| c.cell.parse().ok());
        let zones = zones_of(shown, &map, shards_now(state));
        let dispatch = self.dispatch;
        let windows = dispatch.windows;
        let mut assign = dispatch.assign_seconds;
        assign.sort_by(f64::total_cmp);
        OpsSnapshot {
            at: OffsetDateTime::now_utc()
                .format(&Rfc3339)
                .unwrap_or_default(),
            resolution: settings.resolution,
            interval_ms: settings.interval_ms,
            tile_url: settings.tile_url.clone(),
            nodes,
            computed_in_ms: round2(started.elapsed().as_secs_f64() * 1000.0),
            counters: OpsCounters {
                riders_online,
                riders_reporting: self.riders_total,
                open_by_status: self.open_by_status,
                finished: self.finished,
                offers: dispatch.offers,
                accepts: dispatch.accepts,
                timeouts: dispatch.timeouts,
            },
            assign: OpsAssign {
                samples: assign.len(),
                p50_s: quantile(&assign, 0.5),
                p99_s: quantile(&assign, 0.99),
            },
            cells,
            zone_resolution: u8::from(map.zone_resolution()),
            zones,
            riders: OpsRiders {
                total: self.riders_total,
                shown: self.riders.len(),
                points: self.riders,
            },
            waiting_total,
            waiting: self.waiting,
            windows,
        }
    }
}

/// The cells with their corners and demand ratio, the highest ratio first (then the busiest),
/// at most [`MAX_CELLS`].
fn cells_of(counts: BTreeMap<u64, CellCounts>) -> Vec<OpsCell> {
    let mut cells: Vec<OpsCell> = counts
        .into_iter()
        .filter_map(|(cell, counts)| {
            let CellCounts {
                available,
                waiting,
                open,
            } = counts;
            let cell = CellIndex::try_from(cell).ok()?;
            Some(OpsCell {
                cell: cell.to_string(),
                boundary: corners(cell),
                available_riders: available,
                waiting_orders: waiting,
                open_orders: open,
                demand_ratio: demand_ratio(waiting, available),
            })
        })
        .collect();
    cells.sort_by(|a, b| {
        b.demand_ratio
            .total_cmp(&a.demand_ratio)
            .then((b.open_orders + b.available_riders).cmp(&(a.open_orders + a.available_riders)))
            .then_with(|| a.cell.cmp(&b.cell))
    });
    cells.truncate(MAX_CELLS);
    cells
}

/// The zones that hold `cells` (a cell coarser than a zone holds several), with their corners and
/// owners, at most [`MAX_ZONES`].
fn zones_of(
    cells: impl Iterator<Item = CellIndex>,
    map: &ShardMap,
    served: Vec<ShardView>,
) -> Vec<OpsZone> {
    let res = map.zone_resolution();
    let mut zones = BTreeSet::new();
    for cell in cells {
        if zones.len() >= MAX_ZONES {
            break;
        }
        match cell.parent(res) {
            Some(zone) => {
                zones.insert(zone);
            }
            None => zones.extend(cell.children(res).take(MAX_ZONES - zones.len())),
        }
    }
    let served: BTreeMap<u32, ShardView> = served.into_iter().map(|s| (s.id, s)).collect();
    zones
        .into_iter()
        .map(|zone| {
            let shard = map.shard_of_cell(zone).0;
            OpsZone {
                zone: zone.to_string(),
                shard,
                owner: served.get(&shard).and_then(|s| s.owner.clone()),
                boundary: corners(zone),
            }
        })
        .collect()
}

/// A cell's corners, `[lat, lon]`, rounded to about 10 cm.
fn corners(cell: CellIndex) -> Vec<[f64; 2]> {
    cell.boundary()
        .iter()
        .map(|corner| [round6(corner.lat()), round6(corner.lng())])
        .collect()
}

/// At most `max` of `items`, evenly spaced.
fn evenly<T: Copy>(items: Vec<T>, max: usize) -> Vec<T> {
    let len = items.len();
    if len <= max {
        return items;
    }
    (0..max).map(|i| items[i * len / max]).collect()
}

/// The `q` quantile of sorted `samples` (nearest rank).
fn quantile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Some(round2(sorted[rank - 1]))
}

fn round6(x: f64) -> f64 {
    (x * 1e6).round() / 1e6
}

/// The whole city now: this node's part and every other node's that answers in time.
pub async fn snapshot(state: &AppState) -> OpsSnapshot {
    let started = Instant::now();
    let mut part = Part::here(state);
    let mut nodes = 1;
    for other in ask_others::<Part>(state, Question::Ops).await {
        part.add(other);
        nodes += 1;
    }
    part.into_snapshot(state, nodes, started)
}

/// The operations page's first paint: the city now (admin). Then `ops:snapshot` events follow
/// on the socket of an admin who emits `ops:subscribe`.
#[utoipa::path(
    get,
    path = "/api/admin/ops",
    tag = "admin",
    security(("bearer" = [])),
    responses(
        (status = 200, body = OpsSnapshot),
        Unauthorized,
        (status = 403, description = "Not an admin", body = ErrorBody),
    )
)]
async fn first_paint(
    State(state): State<AppState>,
    _admin: AdminUser,
) -> Result<Json<OpsSnapshot>, ApiError> {
    Ok(Json(snapshot(&state).await))
}

/// Sends `ops:snapshot` to this node's subscribed admins every `ops.interval_ms`, while there
/// are any (each node serves its own subscribers, so nothing crosses the cluster's bus).
pub fn spawn_ticker(state: AppState) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut every =
            tokio::time::interval(Duration::from_millis(state.settings.ops.interval_ms));
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            let sockets = state.realtime.local_sockets();
            if !sockets.has_members(ROOM) {
                continue;
            }
            let snapshot = snapshot(&state).await;
            tracing::debug!(
                computed_in_ms = snapshot.computed_in_ms,
                riders = snapshot.riders.total,
                cells = snapshot.cells.len(),
                "ops snapshot"
            );
            let data: Value = serde_json::to_value(&snapshot).unwrap_or_default();
            sockets.deliver(Envelope {
                room: Room::Named(ROOM.into()),
                event: "ops:snapshot".into(),
                data,
            });
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_demand_ratio_counts_a_missing_rider_as_one() {
        assert_eq!(demand_ratio(0, 0), 0.0);
        assert_eq!(demand_ratio(3, 0), 3.0);
        assert_eq!(demand_ratio(3, 4), 0.75);
        assert_eq!(demand_ratio(2, 3), 0.67);
    }

    #[test]
    fn an_even_sample_keeps_exactly_the_cap() {
        let items: Vec<u32> = (0..2003).collect();
        let sample = evenly(items, 2000);
        assert_eq!(sample.len(), 2000);
        assert_eq!((sample[0], sample[1999]), (0, 2001));
        assert_eq!(evenly(vec![1, 2, 3], 5), vec![1, 2, 3]);
    }

    #[test]
    fn quantiles_take_the_nearest_rank() {
        assert_eq!(quantile(&[], 0.5), None);
        let samples: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(quantile(&samples, 0.5), Some(50.0));
        assert_eq!(quantile(&samples, 0.99), Some(99.0));
        assert_eq!(quantile(&[7.0], 0.99), Some(7.0));
    }

    #[test]
    fn cells_carry_their_corners_and_the_short_ones_come_first() {
        let here = tomato_domain::LatLon::new(12.9716, 77.5946).expect("point");
        let there = tomato_domain::LatLon::new(12.99, 77.61).expect("point");
        let (a, b) = (here.cell(Resolution::Eight), there.cell(Resolution::Eight));
        let counts = |available, waiting, open| CellCounts {
            available,
            waiting,
            open,
        };
        let counts = BTreeMap::from([
            (u64::from(a), counts(4, 1, 2)),
            (u64::from(b), counts(1, 3, 3)),
        ]);
        let cells = cells_of(counts);
        assert_eq!(cells.len(), 2);
        assert_eq!(cells[0].cell, b.to_string());
        assert_eq!(cells[0].demand_ratio, 3.0);
        assert_eq!(cells[1].demand_ratio, 0.25);
        assert_eq!(cells[0].boundary.len(), 6);
        // Each corner is within the cell's reach (about 0.5 km at resolution 8).
        for [lat, lon] in &cells[1].boundary {
            let corner = tomato_domain::LatLon::new(*lat, *lon).expect("corner");
            assert!(corner.distance_m(here) < 1500.0);
        }
    }

    #[test]
    fn zones_hold_the_cells_and_carry_their_owners() {
        let map = ShardMap::new(7, 5, 64).expect("map");
        let here = tomato_domain::LatLon::new(12.9716, 77.5946).expect("point");
        let fine = here.cell(Resolution::Eight);
        let zone = fine.parent(Resolution::Seven).expect("parent");
        let shard = map.shard_of_cell(zone).0;
        let served = vec![ShardView {
            id: shard,
            owner: Some("node-b".into()),
            epoch: 3,
        }];
        // Two fine cells of one zone make one zone, owned as the lease says.
        let siblings = [
            fine,
            fine.center_child(Resolution::Nine)
                .expect("child")
                .parent(Resolution::Eight)
                .expect("cell"),
        ];
        let zones = zones_of(siblings.into_iter(), &map, served);
        assert_eq!(zones.len(), 1);
        assert_eq!(zones[0].zone, zone.to_string());
        assert_eq!(
            (zones[0].shard, zones[0].owner.as_deref()),
            (shard, Some("node-b"))
        );
        assert_eq!(zones[0].boundary.len(), 6);
        // A cell coarser than a zone holds 49 zones two resolutions down; no lease, no owner.
        let coarse = here.cell(Resolution::Five);
        let zones = zones_of(std::iter::once(coarse), &map, Vec::new());
        assert_eq!(zones.len(), 49);
        assert!(zones.iter().all(|z| z.owner.is_none()));
        // Many cells stay bounded.
        let many = here.cell(Resolution::Nine).grid_disk::<Vec<_>>(60);
        let zones = zones_of(many.into_iter(), &map, Vec::new());
        assert!(
            zones.len() <= MAX_ZONES && zones.len() > 1,
            "{}",
            zones.len()
        );
    }

    #[test]
    fn a_snapshot_of_many_cells_stays_bounded() {
        let origin = tomato_domain::LatLon::new(12.9716, 77.5946).expect("point");
        let one = CellCounts {
            available: 1,
            waiting: 0,
            open: 1,
        };
        let cells: BTreeMap<u64, CellCounts> = origin
            .cell(Resolution::Eight)
            .grid_disk::<Vec<_>>(40)
            .into_iter()
            .map(|cell| (u64::from(cell), one))
            .collect();
        assert!(cells.len() > MAX_CELLS);
        assert_eq!(cells_of(cells).len(), MAX_CELLS);
    }
}
