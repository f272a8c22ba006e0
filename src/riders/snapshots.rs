//! Write-behind of rider positions: every `riders.snapshot_every_s` the positions that changed
//! go to the store in one batch, so a restart knows roughly where riders were without the store
//! ever seeing the per-update stream.

use std::time::Duration;

use tokio::task::JoinHandle;

use crate::state::AppState;

/// Writes the positions changed since the last snapshot; returns how many.
pub async fn flush(state: &AppState) -> usize {
    let dirty = state.riders.take_dirty();
    let count = dirty.len();
    if count == 0 {
        return 0;
    }
    let started = std::time::Instant::now();
    if let Err(err) = state.stores.riders.save_positions(dirty).await {
        // Soft state: the next reports of these riders carry their positions again.
        tracing::warn!(error = %err, riders = count, "rider position snapshot failed");
        return 0;
    }
    tracing::debug!(
        riders = count,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "rider positions snapshotted"
    );
    count
}

/// Runs [`flush`] periodically until aborted.
pub fn spawn(state: AppState) -> JoinHandle<()> {
    let every = Duration::from_secs(state.settings.riders.snapshot_every_s);
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(every);
        ticks.tick().await;
        loop {
            ticks.tick().await;
            flush(&state).await;
        }
    })
}
