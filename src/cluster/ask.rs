//! The questions one node asks the others about what only their memory holds, and waiting for
//! their answers.

use std::time::Duration;

use crate::state::AppState;

/// What one node asks the others about what only their memory holds.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Question {
    /// Their part of `/api/admin/stats`'s live figures ([`crate::admin::Live`]).
    LiveStats,
    /// Their part of the operations page's snapshot ([`crate::ops::Part`]).
    Ops,
}

/// How long a question waits for the other nodes: past it, a node is left out.
const ANSWER_WITHIN: Duration = Duration::from_secs(1);

/// The answers of the other nodes of the cluster to `question` (none on a single node); a node
/// that does not answer within a second, or answers what cannot be read, is left out.
pub async fn ask_others<T: serde::de::DeserializeOwned>(
    state: &AppState,
    question: Question,
) -> Vec<T> {
    let Some(cluster) = state.cluster.get() else {
        return Vec::new();
    };
    let Ok(asked) = serde_json::to_string(&question) else {
        return Vec::new();
    };
    cluster
        .ask_others(&asked, ANSWER_WITHIN)
        .await
        .iter()
        .filter_map(|answer| serde_json::from_str(answer).ok())
        .collect()
}
