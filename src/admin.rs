//! `/api/admin/stats`: the platform at a glance. Counts and today's money come from the store
//! (indexed counts and one day's orders); live supply and demand per cell and the dispatch
//! counters come from memory (the riders' index, the open orders' actors, the counters), never
//! from a table scan. In a cluster each node holds only its shards' part of that memory: the
//! node asked sums its own with what the other nodes answer (1 s deadline).

use std::collections::BTreeMap;

use axum::extract::State;
use h3o::Resolution;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::AdminUser;
use crate::cluster::ask::{Question, ask_others};
use crate::dispatch::{DispatchTally, median};
use crate::http::responses::Unauthorized;
use crate::http::{ApiError, ErrorBody, Json};
use crate::live::{CellCounts, add_all, cell_counts, demand_ratio, open_orders};
use crate::state::AppState;

/// Supply and demand are reported per H3 cell at this resolution (about 5 km² a cell).
pub const STATS_RESOLUTION: Resolution = Resolution::Seven;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(stats))
}

/// Dispatch since the nodes started (summed over a cluster's nodes).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DispatchStats {
    pub offers: u64,
    pub accepts: u64,
    pub timeouts: u64,
    /// Median seconds from `ready_for_rider` to `rider_assigned` over the latest 1000
    /// assignments; null before the first.
    pub median_assign_seconds: Option<f64>,
}

/// Supply and demand in one cell.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CellStats {
    /// H3 cell (resolution 7) as hex.
    pub cell: String,
    /// Riders dispatch could offer work to now (verified, online, free, fresh).
    pub available_riders: usize,
    /// Unfinished orders picked up in this cell.
    pub open_orders: usize,
    /// Orders picked up here that wait for a rider (`ready_for_rider`).
    pub waiting_orders: usize,
    /// Waiting orders per available rider (divided by 1 when no rider is available): above 1,
    /// riders are short here; the basis of surge pricing.
    pub demand_ratio: f64,
}

/// The statistics.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Stats {
    pub users: u64,
    pub restaurants: u64,
    pub riders: u64,
    /// Riders dispatch could offer work to now.
    pub riders_online: usize,
    /// Every order by its status now.
    #[schema(value_type = Object)]
    pub orders_by_status: BTreeMap<String, u64>,
    /// Total amount of today's paid orders (the day of `admin.timezone`, UTC by default),
    /// minor units.
    pub revenue_today: i64,
    /// Platform fees of the same orders, minor units.
    pub platform_fees_today: i64,
    pub dispatch: DispatchStats,
    /// Cells with riders or open orders, busiest first.
    pub cells: Vec<CellStats>,
    /// Nodes whose memory the live figures (`ridersOnline`, `dispatch`, `cells`) sum: 1 on a
    /// single node; in a cluster, the nodes that answered within 1 s.
    pub nodes: usize,
}

/// The live half of the statistics as one node's memory holds it; a cluster sums the nodes'.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Live {
    /// Supply and demand by cell (`u64` of the H3 index, resolution 7).
    cells: BTreeMap<u64, CellCounts>,
    /// All the node's latest assignment times, for a median over every node's.
    dispatch: DispatchTally,
}

impl Live {
    /// What this node's memory holds now.
    pub fn here(state: &AppState) -> Live {
        let open = open_orders(state);
        Live {
            cells: cell_counts(state, STATS_RESOLUTION, &open),
            dispatch: state.dispatch_metrics.tally(i64::MIN),
        }
    }

    fn add(&mut self, other: Live) {
        add_all(&mut self.cells, other.cells);
        self.dispatch.add(other.dispatch);
    }
}

/// This node's live figures plus those of every other node that answers in time; how many
/// nodes that is.
async fn live_everywhere(state: &AppState) -> (Live, usize) {
    let mut live = Live::here(state);
    let mut nodes = 1;
    for other in ask_others::<Live>(state, Question::LiveStats).await {
        live.add(other);
        nodes += 1;
    }
    (live, nodes)
}

/// When the day that `now` falls in began, in `zone`'s calendar.
pub fn start_of_day(now: OffsetDateTime, zone: &jiff::tz::TimeZone) -> OffsetDateTime {
    let midnight_utc = || now.replace_time(time::Time::MIDNIGHT);
    let Ok(instant) = jiff::Timestamp::from_second(now.unix_timestamp()) else {
        return midnight_utc();
    };
    instant
        .to_zoned_datetime(zone.clone())
        .start_of_day()
        .ok()
        .and_then(|start| OffsetDateTime::from_unix_timestamp(start.timestamp().as_second()).ok())
        .unwrap_or_else(midnight_utc)
}

/// The platform at a glance: accounts, orders by status, today's revenue (UTC), dispatch
/// counters since the nodes started, and live supply and demand per H3 cell (summed over the
/// nodes of a cluster).
#[utoipa::path(
    get,
    path = "/api/admin/stats",
    tag = "admin",
    security(("bearer" = [])),
    responses(
        (status = 200, body = Stats),
        Unauthorized,
        (status = 403, description = "Not an admin", body = ErrorBody),
    )
)]
async fn stats(State(state): State<AppState>, _admin: AdminUser) -> Result<Json<Stats>, ApiError> {
    let today = start_of_day(OffsetDateTime::now_utc(), &state.settings.admin.zone());
    let totals = state.stores.stats.totals().await?;
    let orders = state.stores.stats.orders_since(today).await?;

    let (live, nodes) = live_everywhere(&state).await;
    let riders_online = live.cells.values().map(|c| c.available).sum();
    let mut cells: Vec<CellStats> = live
        .cells
        .iter()
        .filter_map(|(cell, counts)| {
            Some(CellStats {
                cell: h3o::CellIndex::try_from(*cell).ok()?.to_string(),
                available_riders: counts.available,
                open_orders: counts.open,
                waiting_orders: counts.waiting,
                demand_ratio: demand_ratio(counts.waiting, counts.available),
            })
        })
        .collect();
    cells.sort_by(|a, b| {
        (b.open_orders + b.available_riders)
            .cmp(&(a.open_orders + a.available_riders))
            .then_with(|| a.cell.cmp(&b.cell))
    });

    Ok(Json(Stats {
        users: totals.users,
        restaurants: totals.restaurants,
        riders: totals.riders,
        riders_online,
        orders_by_status: orders
            .by_status
            .into_iter()
            .map(|(status, count)| (status.to_string(), count))
            .collect(),
        revenue_today: orders.revenue.minor(),
        platform_fees_today: orders.platform_fees.minor(),
        dispatch: DispatchStats {
            offers: live.dispatch.offers,
            accepts: live.dispatch.accepts,
            timeouts: live.dispatch.timeouts,
            median_assign_seconds: median(live.dispatch.assign_seconds),
        },
        cells,
        nodes,
    }))
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::start_of_day;

    #[test]
    fn today_follows_the_configured_zone() {
        let now = datetime!(2026-11-26 20:00 UTC);
        assert_eq!(
            start_of_day(now, &jiff::tz::TimeZone::UTC),
            datetime!(2026-11-26 00:00 UTC)
        );
        // 20:00 UTC is 01:30 the next day in India (UTC+5:30), whose day began at 18:30 UTC.
        let kolkata = jiff::tz::TimeZone::get("Asia/Kolkata").expect("bundled zone");
        assert_eq!(start_of_day(now, &kolkata), datetime!(2026-11-26 18:30 UTC));
    }
}
