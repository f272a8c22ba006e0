//! The live figures that the statistics (`admin`), the operations page (`ops`) and a cluster's
//! questions share: supply and demand per cell as one node's memory holds them, and how the
//! counts of several nodes add up.

use std::collections::BTreeMap;

use h3o::Resolution;
use serde::{Deserialize, Serialize};
use tomato_domain::{OrderId, OrderStatus};
use tomato_shards::ShardId;

use crate::dispatch::fresh_since;
use crate::ops::book;
use crate::state::AppState;

/// Supply and demand in one cell as one node counts them; a cluster sums its nodes'.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CellCounts {
    /// Riders dispatch could offer work to now.
    pub available: usize,
    /// Orders picked up here that wait for a rider.
    pub waiting: usize,
    /// Unfinished orders picked up here.
    pub open: usize,
}

impl std::ops::AddAssign for CellCounts {
    fn add_assign(&mut self, other: CellCounts) {
        self.available += other.available;
        self.waiting += other.waiting;
        self.open += other.open;
    }
}

/// This node's supply and demand per cell at `res` (by the cell's `u64`): its fresh
/// dispatchable riders, and of `open` (its open orders) those waiting and all.
pub fn cell_counts(
    state: &AppState,
    res: Resolution,
    open: &[(OrderId, book::Held)],
) -> BTreeMap<u64, CellCounts> {
    let fresh = fresh_since(state.settings.dispatch.stale_after_s);
    let mut cells: BTreeMap<u64, CellCounts> = BTreeMap::new();
    let available = state
        .riders
        .count_by_cell(res, move |seen, ok| ok && seen >= fresh);
    for (cell, n) in available {
        cells.entry(u64::from(cell)).or_default().available += n;
    }
    for (cell, n) in state.shards.open_by_cell(res) {
        cells.entry(u64::from(cell)).or_default().open += n;
    }
    for (_, held) in open {
        if held.status == OrderStatus::ReadyForRider {
            cells
                .entry(u64::from(held.pickup.cell(res)))
                .or_default()
                .waiting += 1;
        }
    }
    cells
}

/// The open orders of the shards running on this node, from its book.
pub fn open_orders(state: &AppState) -> Vec<(tomato_domain::OrderId, book::Held)> {
    let shards = &state.shards;
    state.ops_book.open(|shard| {
        shards
            .shard(ShardId(shard))
            .is_some_and(|shard| shard.is_running())
    })
}

/// Waiting orders per available rider, a rider short counted as one.
pub fn demand_ratio(waiting: usize, available: usize) -> f64 {
    round2(waiting as f64 / available.max(1) as f64)
}

/// `x` to two decimals.
pub(crate) fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// Adds `other`'s counts into `into`, key by key (summing what several nodes counted).
pub(crate) fn add_all<K: Ord, V: std::ops::AddAssign + Default>(
    into: &mut BTreeMap<K, V>,
    other: BTreeMap<K, V>,
) {
    for (key, n) in other {
        *into.entry(key).or_default() += n;
    }
}
