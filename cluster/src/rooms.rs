//! The realtime rooms this node listens to. A realtime event goes on its room's channel, and
//! only the nodes with a client in that room subscribe to it, so a node decodes the events of
//! its own clients and no others (on three nodes, every event used to be decoded three times
//! for the one node that held the customer's socket).
//!
//! A node subscribes *before* a client joins a room (before its Socket.IO connect or WebSocket
//! upgrade is answered), so nothing sent to the room after the client is told it is in can be
//! missed. It unsubscribes lazily: a sweep drops the rooms that no client of this node holds
//! and that nobody asked for in the last [`GRACE`] (a client asks, then joins a moment later).
//! The one rule that makes this exact: an unsubscribe never reaches Redis after a later
//! subscribe of the same room, which the lock `order` keeps.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{OnceCell, RwLock};

use crate::transport::Transport;

/// How long a room asked for is kept without a client holding it.
pub(crate) const GRACE: Duration = Duration::from_secs(10);

/// How often the sweep runs.
pub(crate) const SWEEP_EVERY: Duration = Duration::from_secs(10);

/// One room listened to.
#[derive(Default)]
struct Listened {
    /// Set once the subscription is in place.
    subscribed: OnceCell<()>,
    /// When a client last asked for it.
    asked_at: Mutex<Option<Instant>>,
}

impl Listened {
    fn ask(&self, now: Instant) {
        if let Ok(mut at) = self.asked_at.lock() {
            *at = Some(now);
        }
    }

    fn asked_within(&self, grace: Duration, now: Instant) -> bool {
        self.asked_at
            .lock()
            .ok()
            .and_then(|at| *at)
            .is_some_and(|at| now.saturating_duration_since(at) < grace)
    }
}

/// The rooms this node listens to.
#[derive(Default)]
pub(crate) struct Rooms {
    listened: Mutex<HashMap<String, Arc<Listened>>>,
    /// Subscribes hold it shared, the sweep alone while it unsubscribes: a room dropped and
    /// asked for again is subscribed after the unsubscribe went, not before.
    order: RwLock<()>,
}

impl Rooms {
    /// Listens to `rooms`, returning once every one is subscribed (or Redis refused: then the
    /// client hears this node's events only, until a later ask subscribes the room); how many
    /// rooms are listened to now.
    pub(crate) async fn want(&self, transport: &Transport, rooms: &[String]) -> usize {
        let now = Instant::now();
        let (pending, count): (Vec<(String, Arc<Listened>)>, usize) = {
            let Ok(mut listened) = self.listened.lock() else {
                return 0;
            };
            let pending = rooms
                .iter()
                .filter_map(|room| {
                    let entry = listened.entry(room.clone()).or_default();
                    entry.ask(now);
                    (!entry.subscribed.initialized()).then(|| (room.clone(), Arc::clone(entry)))
                })
                .collect();
            (pending, listened.len())
        };
        if pending.is_empty() {
            return count;
        }
        let _shared = self.order.read().await;
        for (room, entry) in pending {
            let subscribed = entry
                .subscribed
                .get_or_try_init(|| async {
                    transport.listen_to_rooms(std::slice::from_ref(&room)).await
                })
                .await;
            if let Err(err) = subscribed {
                tracing::warn!(%room, error = %err, "realtime room not subscribed");
            }
        }
        count
    }

    /// Drops the rooms no client asked for within [`GRACE`] and `held` says no client of this
    /// node is in (`held` answers for a list of rooms at once); how many rooms are listened to
    /// after it.
    pub(crate) async fn sweep(
        &self,
        transport: &Transport,
        held: &(dyn Fn(&[String]) -> Vec<bool> + Send + Sync),
    ) -> usize {
        let now = Instant::now();
        let stale: Vec<String> = self
            .listened
            .lock()
            .map(|listened| {
                listened
                    .iter()
                    .filter(|(_, entry)| !entry.asked_within(GRACE, now))
                    .map(|(room, _)| room.clone())
                    .collect()
            })
            .unwrap_or_default();
        let holding = held(&stale);
        let _alone = self.order.write().await;
        let (dropped, left) = {
            let Ok(mut listened) = self.listened.lock() else {
                return 0;
            };
            // Asked for again since the list was made: kept (its client joins after asking).
            let dropped: Vec<String> = stale
                .into_iter()
                .zip(holding)
                .filter(|(room, held)| {
                    !held
                        && listened
                            .get(room)
                            .is_some_and(|entry| !entry.asked_within(GRACE, now))
                })
                .map(|(room, _)| room)
                .collect();
            for room in &dropped {
                listened.remove(room);
            }
            (dropped, listened.len())
        };
        if let Err(err) = transport.stop_listening_to_rooms(&dropped).await {
            tracing::warn!(rooms = dropped.len(), error = %err, "realtime rooms not unsubscribed");
        }
        left
    }
}
