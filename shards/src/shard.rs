//! One shard as this node runs it: the actors of its orders and riders, and the gate through
//! which every command to them passes. Its slice of the spatial index sits in the node's
//! [`RiderIndex`](crate::RiderIndex), one lock per slice, because a nearest search spans
//! several shards at once; the shard opens and closes that slice as it starts and stops.
//!
//! The gate is what makes a shard a unit that can be handed over: commands hold it shared
//! while they run; [`ShardRouter::start`](crate::ShardRouter::start) and
//! [`stop`](crate::ShardRouter::stop) hold it exclusively, so a stop waits for the commands in
//! flight, and commands that arrive meanwhile wait for the outcome and are then served (the
//! shard started) or refused as not owned here (it stopped). Nothing outside this crate holds
//! an actor's address.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use actix::Addr;
use dashmap::DashMap;
use h3o::CellIndex;
use tokio::sync::{RwLock, RwLockReadGuard};
use tomato_actors::{CarryingFlag, OrderActor, RiderActor};
use tomato_domain::{OrderId, RiderId};

use crate::ShardId;
use crate::offers::OfferBook;

/// Everything of one shard on this node.
#[derive(Debug)]
pub struct Shard {
    id: ShardId,
    /// True while the shard runs here.
    gate: RwLock<bool>,
    /// The live order actors of the shard's orders.
    pub(crate) orders: DashMap<OrderId, Addr<OrderActor>>,
    /// The pickup cell of every live unfinished order, for supply-and-demand statistics.
    pub(crate) open: DashMap<OrderId, CellIndex>,
    /// The rider actors of the riders whose current cell lies in the shard.
    pub(crate) riders: DashMap<RiderId, RiderHandle>,
    /// The offers standing for the shard's orders.
    pub(crate) offers: OfferBook,
    /// Until when this node may serve the shard (milliseconds on [`clock`]): a cluster node's
    /// lease, counted on its own clock; `u64::MAX` on a single node.
    lease_until: AtomicU64,
    /// The epoch under which this node last took the shard from the store
    /// ([`OrderStore::take_shard`](tomato_store::OrderStore::take_shard)); its order actors
    /// write under it.
    epoch: AtomicU64,
}

/// A rider actor's address and its [`CarryingFlag`], read on every position.
#[derive(Debug, Clone)]
pub(crate) struct RiderHandle {
    pub(crate) addr: Addr<RiderActor>,
    pub(crate) carrying: CarryingFlag,
}

/// Milliseconds on the machine's boot clock: a monotonic clock for lease deadlines that, unlike
/// std's `Instant` (CLOCK_MONOTONIC), goes on counting while the machine is suspended, so a
/// node frozen with its VM past its lease wakes up knowing the lease is gone.
pub fn clock() -> u64 {
    use nix::time::{ClockId, clock_gettime};
    match clock_gettime(ClockId::CLOCK_BOOTTIME) {
        Ok(now) => {
            let millis = i128::from(now.tv_sec()) * 1000 + i128::from(now.tv_nsec()) / 1_000_000;
            u64::try_from(millis).unwrap_or(u64::MAX)
        }
        // Not on this kernel: the monotonic clock, which stops while suspended.
        Err(_) => {
            static START: OnceLock<Instant> = OnceLock::new();
            u64::try_from(START.get_or_init(Instant::now).elapsed().as_millis()).unwrap_or(u64::MAX)
        }
    }
}

/// Proof that the shard runs here, held for the length of one command.
#[derive(Debug)]
pub struct Entered<'a> {
    pub(crate) shard: &'a Shard,
    _gate: RwLockReadGuard<'a, bool>,
}

impl Shard {
    pub(crate) fn new(id: ShardId) -> Self {
        Self {
            id,
            gate: RwLock::new(false),
            orders: DashMap::new(),
            open: DashMap::new(),
            riders: DashMap::new(),
            offers: OfferBook::default(),
            lease_until: AtomicU64::new(u64::MAX),
            epoch: AtomicU64::new(0),
        }
    }

    /// The shard's id.
    pub fn id(&self) -> ShardId {
        self.id
    }

    /// Whether the shard runs here now (a hint: the answer may change right after).
    pub fn is_running(&self) -> bool {
        self.gate
            .try_read()
            .map(|running| *running)
            .unwrap_or(false)
    }

    /// Sets until when (on [`clock`]) this node may serve the shard: a cluster extends it with
    /// every renewal of its lease, so a node paused past its lease refuses commands the moment
    /// it wakes, before it has even noticed the loss.
    pub fn hold_until(&self, until: u64) {
        self.lease_until.store(until, Ordering::Release);
    }

    /// The epoch under which this node last took the shard.
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    pub(crate) fn set_epoch(&self, epoch: u64) {
        self.epoch.store(epoch, Ordering::Release);
    }

    /// Whether this node may serve the shard now: it runs here and its hold on it has not run
    /// out (a hint, as [`Shard::is_running`]; what a command does is decided at its entry).
    pub fn holds(&self) -> bool {
        self.is_running() && clock() < self.lease_until.load(Ordering::Acquire)
    }

    /// Waits for any start or stop under way, then lets a command in if the shard runs here
    /// and this node's hold on it has not run out.
    pub(crate) async fn enter(&self) -> Option<Entered<'_>> {
        let gate = self.gate.read().await;
        let held = clock() < self.lease_until.load(Ordering::Acquire);
        (*gate && held).then_some(Entered {
            shard: self,
            _gate: gate,
        })
    }

    /// Exclusive hold of the gate, for start and stop.
    pub(crate) async fn lock(&self) -> tokio::sync::RwLockWriteGuard<'_, bool> {
        self.gate.write().await
    }

    /// How many order actors of the shard are alive here.
    pub fn live_orders(&self) -> usize {
        self.orders.len()
    }

    /// Whether any offer of the shard's orders stands here.
    pub fn holds_offers(&self) -> bool {
        !self.offers.is_empty()
    }

    /// How many rider actors of the shard are alive here.
    pub fn live_riders(&self) -> usize {
        self.riders.len()
    }
}
