//! The actor runtime: an actix `System` on a thread of its own, with one arbiter (a thread with a
//! single-threaded event loop) per shard group. The tokio runtime of the HTTP edge talks to actors
//! through their addresses; the two runtimes never share a thread.

use std::sync::{Mutex, mpsc};
use std::thread::JoinHandle;

use actix::{Arbiter, ArbiterHandle, System};

use crate::ShardId;

/// The actix side of a node.
#[derive(Debug)]
pub struct ActorRuntime {
    system: System,
    arbiters: Vec<ArbiterHandle>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl ActorRuntime {
    /// Starts the system and `arbiters` arbiters (at least one).
    pub fn start(arbiters: usize) -> std::io::Result<Self> {
        let (ready, started) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("actors".into())
            .spawn(move || {
                let system = System::new();
                let handles: Vec<ArbiterHandle> = (0..arbiters.max(1))
                    .map(|_| Arbiter::new().handle())
                    .collect();
                let _ = ready.send((System::current(), handles));
                if let Err(err) = system.run() {
                    tracing::error!(error = %err, "actor system stopped with an error");
                }
            })?;
        let (system, arbiters) = started
            .recv()
            .map_err(|_| std::io::Error::other("the actor system failed to start"))?;
        Ok(Self {
            system,
            arbiters,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// The arbiter that runs `shard`'s actors.
    pub fn arbiter(&self, shard: ShardId) -> &ArbiterHandle {
        &self.arbiters[shard.0 as usize % self.arbiters.len()]
    }

    /// How many arbiters run actors.
    pub fn arbiters(&self) -> usize {
        self.arbiters.len()
    }

    /// Stops every arbiter and the system, and waits for the thread. Idempotent.
    pub fn stop(&self) {
        for arbiter in &self.arbiters {
            arbiter.stop();
        }
        self.system.stop();
        let thread = self.thread.lock().ok().and_then(|mut thread| thread.take());
        if let Some(thread) = thread {
            let _ = thread.join();
        }
    }
}

impl Drop for ActorRuntime {
    fn drop(&mut self) {
        self.stop();
    }
}
