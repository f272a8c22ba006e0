//! The rooms of plain WebSocket (`/ws`) connections: who is in which room, delivering an event to
//! a room without ever waiting on a client, and the signal that ends a connection from outside
//! its task (a session ended, an outbox that filled up).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::Value;
use tokio::sync::{Notify, mpsc};

use super::sessions::Ended;

/// Why the server closes a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Closing {
    Session(Ended),
    /// Its outbox stayed full: the client is not reading.
    Overflow,
}

/// The signal that ends a connection from outside its task (a session ended, an overflow).
#[derive(Debug, Default)]
pub(super) struct Ending {
    why: Mutex<Option<Closing>>,
    pub(super) rung: Notify,
}

impl Ending {
    pub(super) fn end(&self, why: Closing) {
        if let Ok(mut slot) = self.why.lock() {
            slot.get_or_insert(why);
        }
        self.rung.notify_one();
    }

    pub(super) fn why(&self) -> Option<Closing> {
        self.why.lock().ok().and_then(|slot| *slot)
    }
}

/// A connection in a room: its id, its outbox and its end.
type Member = (u64, mpsc::Sender<String>, Arc<Ending>);

/// Rooms of plain WebSocket connections.
#[derive(Debug, Default)]
pub struct Hub {
    next: AtomicU64,
    rooms: Mutex<HashMap<String, Vec<Member>>>,
}

impl Hub {
    pub(super) fn join(
        &self,
        rooms: &[String],
        outbox: mpsc::Sender<String>,
        ending: &Arc<Ending>,
    ) -> u64 {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut all) = self.rooms.lock() {
            for room in rooms {
                all.entry(room.clone())
                    .or_default()
                    .push((id, outbox.clone(), Arc::clone(ending)));
            }
        }
        id
    }

    pub(super) fn leave(&self, id: u64, rooms: &[String]) {
        if let Ok(mut all) = self.rooms.lock() {
            for room in rooms {
                if let Some(members) = all.get_mut(room) {
                    members.retain(|(member, _, _)| *member != id);
                    if members.is_empty() {
                        all.remove(room);
                    }
                }
            }
        }
    }

    pub(super) fn has_members(&self, room: &str) -> bool {
        self.rooms
            .lock()
            .is_ok_and(|all| all.get(room).is_some_and(|members| !members.is_empty()))
    }

    /// Adds connection `id` (which joined before) to `room`.
    pub(super) fn join_one(
        &self,
        id: u64,
        room: &str,
        outbox: mpsc::Sender<String>,
        ending: &Arc<Ending>,
    ) {
        if let Ok(mut all) = self.rooms.lock() {
            let members = all.entry(room.to_owned()).or_default();
            if !members.iter().any(|(member, _, _)| *member == id) {
                members.push((id, outbox, Arc::clone(ending)));
            }
        }
    }

    pub(super) fn emit(&self, room: &str, event: &str, data: &Value) {
        let Ok(all) = self.rooms.lock() else { return };
        let Some(members) = all.get(room) else { return };
        let frame = serde_json::json!({ "event": event, "data": data }).to_string();
        for (_, outbox, ending) in members {
            // A full outbox means the client is not reading: never block the emitter; close
            // the connection rather than let it miss events without knowing.
            if let Err(mpsc::error::TrySendError::Full(_)) = outbox.try_send(frame.clone()) {
                ending.end(Closing::Overflow);
            }
        }
    }
}
