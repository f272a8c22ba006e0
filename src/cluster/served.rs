//! Who serves each shard now, as this node sees it: on a single node the shards it runs, in a
//! cluster the leases as it last read them from Redis. The cluster's admin routes and the
//! operations page read it.

use serde::Serialize;
use tomato_cluster::View;
use utoipa::ToSchema;

use crate::state::AppState;

/// A shard and its owner.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ShardView {
    pub id: u32,
    /// The node serving it; null while it moves.
    pub owner: Option<String>,
    /// Grows with every grant of the shard's lease (1 on a single node); restarts if Redis
    /// loses its data.
    pub epoch: u64,
}

/// Who serves each shard now, as this node sees it: on a single node the shards it runs (epoch
/// 1), in a cluster every shard by its lease in `view` (no owner, epoch 0, while it moves).
pub(super) fn shard_views(state: &AppState, view: Option<&View>) -> Vec<ShardView> {
    match view {
        None => {
            let node_id = single_node_id(state);
            state
                .shards
                .shards()
                .filter(|shard| shard.is_running())
                .map(|shard| ShardView {
                    id: shard.id().0,
                    owner: Some(node_id.clone()),
                    epoch: 1,
                })
                .collect()
        }
        Some(view) => view
            .leases
            .iter()
            .enumerate()
            .map(|(id, lease)| ShardView {
                id: u32::try_from(id).unwrap_or(u32::MAX),
                owner: lease.as_ref().map(|l| l.node.clone()),
                epoch: lease.as_ref().map_or(0, |l| l.epoch),
            })
            .collect(),
    }
}

/// Who serves each shard now, as this node sees it (see [`shard_views`]).
pub fn shards_now(state: &AppState) -> Vec<ShardView> {
    let view = state.cluster.get().map(|cluster| cluster.view());
    shard_views(state, view.as_ref())
}

/// A node outside a cluster: its configured id, or `single`.
pub(super) fn single_node_id(state: &AppState) -> String {
    if state.settings.cluster.node_id.is_empty() {
        "single".to_owned()
    } else {
        state.settings.cluster.node_id.clone()
    }
}
