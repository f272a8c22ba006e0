//! Positions replicated by region. Every position a node ingests goes, batched every
//! [`FLUSH_EVERY`], once on its region's channel; every node that copies the region listens
//! there, the owner of the rider's shard among them, and applies it as owner or to its copy
//! ([`ShardRouter::replicated_heard`](tomato_shards::ShardRouter::replicated_heard)). So a
//! search reads the node's own memory, and a region's positions reach only the nodes whose zones
//! can search it.
//!
//! Which regions a node copies follows from the regions where riders report (announced in
//! Redis by the nodes that ingest them) and the shards it owns or is about to own
//! ([`tomato_shards::regions::Reach`]), worked out again every tick. A region new to the
//! cluster has nobody listening for up to a tick: for its first seconds, the node that
//! announced it also hands its positions to their shards' owners directly.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use h3o::CellIndex;
use tokio::sync::mpsc;
use tomato_shards::regions::Reach;
use tomato_shards::{Position, ShardId};

use crate::Cluster;

/// How often positions go out, batched per region. Each message costs every node that hears
/// it more than the positions in it (measured: 100 ms against 20 ms cut the messages 3.5x and the
/// three nodes' CPU 10 %, Redis's 20 %, with no rise in dispatch latency), and a copy 100 ms
/// behind is a few metres behind.
pub(crate) const FLUSH_EVERY: Duration = Duration::from_millis(100);
/// How often a node says again that riders report in a region it ingests.
const ANNOUNCE_EVERY: Duration = Duration::from_secs(30);
/// A region nobody announced for this long is no longer copied.
const ACTIVE_FOR: Duration = Duration::from_secs(300);
/// How long after announcing a region a node also hands its positions to their owners: past
/// the owners' next tick, when they listen to its channel.
const NEW_FOR: Duration = Duration::from_secs(3);

/// What the flusher remembers between flushes.
#[derive(Debug)]
pub(crate) struct Replication {
    /// When this node first and last announced each region it ingests positions in.
    announced: HashMap<CellIndex, (Instant, Instant)>,
    reach: Reach,
}

impl Replication {
    pub(crate) fn new(reach: Reach) -> Self {
        Self {
            announced: HashMap::new(),
            reach,
        }
    }
}

/// Where the location path drops positions for the flusher: a channel, so that ingesting a
/// position takes no lock another thread holds.
#[derive(Debug)]
pub(crate) struct Outbox {
    sender: mpsc::UnboundedSender<(CellIndex, Position)>,
    receiver: Mutex<mpsc::UnboundedReceiver<(CellIndex, Position)>>,
}

impl Outbox {
    pub(crate) fn new() -> Self {
        let (sender, receiver) = mpsc::unbounded_channel();
        Self {
            sender,
            receiver: Mutex::new(receiver),
        }
    }

    /// Queues `position`, whose region the caller has already worked out.
    pub(crate) fn push(&self, region: CellIndex, position: Position) {
        // The receiver lives as long as the sender: both are the cluster's.
        let _ = self.sender.send((region, position));
    }

    /// Everything waiting now, grouped by region (only the flusher takes).
    fn take(&self) -> HashMap<CellIndex, Vec<Position>> {
        let mut taken: HashMap<CellIndex, Vec<Position>> = HashMap::new();
        if let Ok(mut receiver) = self.receiver.lock() {
            while let Ok((region, position)) = receiver.try_recv() {
                taken.entry(region).or_default().push(position);
            }
        }
        taken
    }
}

/// One flush: the batches, the regions to announce, and those new enough to also go to owners.
struct Flush {
    batches: Vec<(CellIndex, Vec<Position>)>,
    announce: Vec<CellIndex>,
    new: HashSet<CellIndex>,
}

impl Cluster {
    /// Sends the positions waiting, one message per region.
    pub(crate) async fn flush_positions(&self) {
        let Some(flush) = self.take_flush() else {
            return;
        };
        if !flush.announce.is_empty()
            && let Err(err) = self.redis.announce_regions(&flush.announce).await
        {
            tracing::warn!(error = %err, "regions not announced; said again at the next flush");
            if let Ok(mut replication) = self.replication.lock() {
                for region in &flush.announce {
                    replication.announced.remove(region);
                }
            }
        }
        let mut to_owners: HashMap<String, Vec<Position>> = HashMap::new();
        for (region, positions) in flush.batches {
            if flush.new.contains(&region) {
                for position in &positions {
                    let shard = self.router.map().shard_of(position.at);
                    if let Some(owner) = self.owner_of(shard)
                        && owner != self.config.node_id
                    {
                        to_owners.entry(owner).or_default().push(*position);
                    }
                }
            }
            let count = u64::try_from(positions.len()).unwrap_or(u64::MAX);
            let bytes = self.transport.region_positions(region, &positions).await;
            if bytes > 0 {
                self.metrics.replicated_positions.inc_by(count);
                self.metrics.replication_messages.inc();
                self.metrics
                    .replication_bytes
                    .inc_by(u64::try_from(bytes).unwrap_or(u64::MAX));
            }
        }
        for (owner, positions) in to_owners {
            self.metrics
                .forwarded_positions
                .inc_by(u64::try_from(positions.len()).unwrap_or(u64::MAX));
            self.transport.positions(&owner, positions).await;
        }
    }

    fn take_flush(&self) -> Option<Flush> {
        let by_region = self.outbox.take();
        if by_region.is_empty() {
            return None;
        }
        let batches: Vec<(CellIndex, Vec<Position>)> = by_region.into_iter().collect();
        let mut replication = self.replication.lock().ok()?;
        let now = Instant::now();
        let mut announce = Vec::new();
        let mut new = HashSet::new();
        for (region, _) in &batches {
            let (first, last) = replication
                .announced
                .get(region)
                .copied()
                .unwrap_or((now, now - 2 * ANNOUNCE_EVERY));
            if now.duration_since(last) >= ANNOUNCE_EVERY {
                announce.push(*region);
                replication.announced.insert(*region, (first, now));
            }
            if now.duration_since(first) < NEW_FOR {
                new.insert(*region);
            }
        }
        Some(Flush {
            batches,
            announce,
            new,
        })
    }

    /// Listens to the regions this node needs now and to no others: those where riders report
    /// that a search from a zone of `owned` can reach. Part of every tick.
    pub(crate) async fn copy_what_is_needed(&self, owned: &HashSet<ShardId>) {
        let active = match self.redis.active_regions(ACTIVE_FOR).await {
            Ok(active) => active,
            Err(err) => {
                tracing::warn!(error = %err, "active regions not read; copies kept as they are");
                return;
            }
        };
        let copied = self.router.index().regions_copied();
        let needed = {
            let Ok(mut replication) = self.replication.lock() else {
                return;
            };
            replication
                .reach
                .needed(active.iter().copied(), |shard| owned.contains(&shard))
        };
        let start: Vec<CellIndex> = needed.difference(&copied).copied().collect();
        let stop: Vec<CellIndex> = copied.difference(&needed).copied().collect();
        let active: HashSet<CellIndex> = active.into_iter().collect();
        if start.is_empty() && stop.is_empty() {
            self.router.index().set_active_regions(active);
            return;
        }
        // Listen before copying, so no position of a new region is missed between the two; stop
        // listening after, so a dropped copy is not refilled.
        if let Err(err) = self.transport.listen_to(&start).await {
            tracing::warn!(error = %err, "region channels not listened to; tried again next tick");
            return;
        }
        let count = needed.len();
        self.router.index().copy_regions(needed, active);
        if let Err(err) = self.transport.stop_listening_to(&stop).await {
            tracing::warn!(error = %err, "region channels not left");
        }
        self.metrics
            .regions_copied
            .set(i64::try_from(count).unwrap_or(i64::MAX));
        tracing::info!(
            started = start.len(),
            stopped = stop.len(),
            "regions copied changed"
        );
    }

    /// The regions this node copies now.
    pub fn regions_copied(&self) -> Vec<CellIndex> {
        self.router.index().regions_copied().into_iter().collect()
    }
}
