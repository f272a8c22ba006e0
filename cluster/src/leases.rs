//! Leases: each tick a node beats, reads the live set, and takes, renews, hands over or drops
//! each shard's lease so that every shard has one live owner, which serves it only while its
//! lease holds on its own clock.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tomato_shards::{ShardId, clock};

use crate::coordination::{Lease, millis};
use crate::{Cluster, View, rendezvous};

/// How often a node beats, reads the live set and renews its leases.
pub(crate) const TICK: Duration = Duration::from_secs(1);
/// How long a heartbeat keeps a node in the live set.
const HEARTBEAT_TTL: Duration = Duration::from_secs(5);
/// How long a lease lasts unless renewed.
const LEASE_TTL: Duration = Duration::from_secs(6);
/// How long before its lease lapses (on its own clock) a node stops serving the shard.
const LEASE_MARGIN: Duration = Duration::from_secs(1);
/// A shard this node holds, and until when (on [`clock`]) it may serve it.
pub(crate) struct Held {
    lease: Lease,
    until: u64,
}

impl Cluster {
    /// One round: heartbeat, live set, then each shard taken, renewed, handed over or dropped.
    pub(crate) async fn tick(&self) {
        let mut held = self.held.lock().await;
        if self.leaving.load(Ordering::Acquire) {
            return;
        }
        self.router.prune_heard_offers();
        // First what this node's own clock says: a lease that ran out (a pause, or Redis out
        // of reach for too long) is lost, whatever Redis would answer now.
        let now = clock();
        let expired: Vec<u32> = held
            .iter()
            .filter(|(_, h)| h.until <= now)
            .map(|(shard, _)| *shard)
            .collect();
        for shard in expired {
            held.remove(&shard);
            self.lost(shard, "its lease ran out on this node's clock")
                .await;
        }
        if let Err(err) = self.transport.keepalive().await {
            tracing::warn!(error = %err, "cluster inbox connection is down; reconnecting");
        }
        let live = match self
            .redis
            .heartbeat(&self.config.node_id, HEARTBEAT_TTL)
            .await
        {
            Ok(live) => live,
            Err(err) => {
                self.metrics.redis_errors.inc();
                tracing::warn!(error = %err, "cluster tick could not reach Redis");
                self.set_view(|view| view.redis_ok = false);
                return;
            }
        };
        let names: Vec<String> = live.iter().map(|m| m.id.clone()).collect();
        // The shards this node holds or is about to: it copies the regions their searches reach.
        let mut owned: HashSet<ShardId> = held.keys().map(|shard| ShardId(*shard)).collect();
        for shard in 0..self.router.map().count() {
            let mine = rendezvous::owner(shard, &names) == Some(self.config.node_id.as_str());
            if mine {
                owned.insert(ShardId(shard));
            }
            match (held.get(&shard), mine) {
                (Some(h), true) => {
                    let asked = clock();
                    match self.redis.renew(shard, &h.lease, LEASE_TTL).await {
                        Ok(true) => {
                            let until = asked + millis(LEASE_TTL - LEASE_MARGIN);
                            self.hold(shard, until);
                            if let Some(h) = held.get_mut(&shard) {
                                h.until = until;
                            }
                        }
                        Ok(false) => {
                            held.remove(&shard);
                            self.lost(shard, "another node holds its lease").await;
                        }
                        // Out of reach: keep serving until the local deadline says otherwise.
                        Err(err) => tracing::warn!(shard, error = %err, "lease not renewed"),
                    }
                }
                (Some(_), false) => {
                    if let Some(h) = held.remove(&shard) {
                        self.hand_over(shard, &h.lease).await;
                    }
                }
                (None, true) => {
                    let asked = clock();
                    match self
                        .redis
                        .acquire(shard, &self.config.node_id, LEASE_TTL)
                        .await
                    {
                        Ok(Some(lease)) => {
                            let until = asked + millis(LEASE_TTL - LEASE_MARGIN);
                            self.hold(shard, until);
                            match self.router.start(ShardId(shard)).await {
                                Ok(orders) => {
                                    self.metrics.leases_won.inc();
                                    tracing::info!(
                                        shard,
                                        epoch = lease.epoch,
                                        orders,
                                        "lease won, shard started"
                                    );
                                    held.insert(shard, Held { lease, until });
                                }
                                Err(err) => {
                                    tracing::warn!(shard, error = %err, "shard could not start; lease given back");
                                    self.router.stop(ShardId(shard)).await;
                                    let _ = self.redis.release(shard, &lease).await;
                                }
                            }
                        }
                        // Still held by its previous owner: its lease lapses or it hands over.
                        Ok(None) => {}
                        Err(err) => tracing::warn!(shard, error = %err, "lease not taken"),
                    }
                }
                (None, false) => {}
            }
        }
        self.metrics
            .shards_owned
            .set(i64::try_from(held.len()).unwrap_or(i64::MAX));
        drop(held);
        self.copy_what_is_needed(&owned).await;
        let leases = self.redis.leases(self.router.map().count()).await.ok();
        self.set_view(|view| {
            view.nodes = live;
            if let Some(leases) = leases {
                view.leases = leases;
            }
            view.joined = true;
            view.redis_ok = true;
        });
    }

    fn hold(&self, shard: u32, until: u64) {
        if let Some(s) = self.router.shard(ShardId(shard)) {
            s.hold_until(until);
        }
    }

    fn set_view(&self, change: impl FnOnce(&mut View)) {
        if let Ok(mut view) = self.view.lock() {
            change(&mut view);
        }
    }

    /// The shard was lost without this node giving it up: stop serving it at once.
    async fn lost(&self, shard: u32, why: &str) {
        self.hold(shard, 0);
        let stopped = self.router.stop(ShardId(shard)).await;
        self.metrics.leases_lost.inc();
        tracing::warn!(
            shard,
            why,
            orders = stopped.orders,
            "lease lost, shard stopped"
        );
    }

    /// Another node should own the shard: stop it here, then free the lease for it.
    async fn hand_over(&self, shard: u32, lease: &Lease) {
        let stopped = self.router.stop(ShardId(shard)).await;
        self.hold(shard, 0);
        if let Err(err) = self.redis.release(shard, lease).await {
            tracing::warn!(shard, error = %err, "lease not released; it lapses on its own");
        }
        self.metrics.handed_over.inc();
        tracing::info!(
            shard,
            epoch = lease.epoch,
            orders = stopped.orders,
            "shard handed over"
        );
    }

    /// Leaves cleanly: stops and releases every shard, then leaves the live set, so the others
    /// take over at their next tick instead of waiting for leases to lapse.
    pub async fn leave(&self) {
        self.leaving.store(true, Ordering::Release);
        let mut held = self.held.lock().await;
        // Out of the live set first, so the others' next tick already counts without us.
        if let Err(err) = self.redis.forget(&self.config.node_id).await {
            tracing::warn!(error = %err, "could not leave the live set; the heartbeat expires");
        }
        for (shard, h) in held.drain() {
            self.hand_over(shard, &h.lease).await;
        }
        self.metrics.shards_owned.set(0);
        tracing::info!(node_id = %self.config.node_id, "left the cluster");
    }
}
