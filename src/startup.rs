//! Building and running a node: open the store, wire the state, bind the listener (so callers can
//! read the real port before serving), serve until told to stop, then drain and flush.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use secrecy::ExposeSecret;
use time::OffsetDateTime;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tomato_store::Stores;

use crate::config::{Settings, StoreBackend};
use crate::state::AppState;

/// How often expired token revocations and day-old idempotent responses are forgotten.
const PURGE_EVERY: Duration = Duration::from_secs(3600);

/// A node, bound and ready to serve.
#[derive(Debug)]
pub struct Application {
    listener: TcpListener,
    state: AppState,
}

impl Application {
    /// Opens the store, builds the state and binds `server.bind`.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        warn_about_dev_settings(&settings);
        let stores = open_store(&settings).await?;
        let state = AppState::new(settings, stores)?;
        let addr = state.settings.bind_addr()?;
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding {addr}"))?;
        if state.settings.cluster.enabled() {
            // In a cluster the node starts the shards it wins, as it wins them.
            let node_id = node_id(&state.settings, listener.local_addr()?);
            let config = tomato_cluster::ClusterConfig {
                redis_url: state.settings.cluster.redis_url.expose_secret().to_owned(),
                node_id,
                search_radius_m: f64::from(state.settings.dispatch.search_radius_m),
            };
            let (cluster, _ticking) = tomato_cluster::Cluster::join(
                config,
                std::sync::Arc::clone(&state.shards),
                state.cluster_metrics.clone(),
            )
            .await
            .context("joining the cluster")?;
            crate::cluster::wire(&state, &cluster);
            let _ = state.cluster.set(cluster);
        } else {
            // A single node runs every shard: each starts as it would when won in a cluster.
            let resumed = state
                .shards
                .start_all()
                .await
                .context("starting the shards")?;
            tracing::info!(orders = resumed, "resumed open orders");
            let riders = crate::riders::restore(&state)
                .await
                .context("restoring rider positions")?;
            tracing::info!(riders, "restored rider positions");
        }
        Ok(Self { listener, state })
    }

    /// The address actually bound (the real port when `server.bind` asked for port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` completes, then lets open requests finish for up to
    /// `server.shutdown_grace_s` and flushes the store.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let Self { listener, state } = self;
        let grace = Duration::from_secs(state.settings.server.shutdown_grace_s);
        let stores = state.stores.clone();
        let actors = std::sync::Arc::clone(&state.actors);
        let purger = spawn_housekeeping(stores.clone(), std::sync::Arc::clone(&state.limits));
        let snapshots = crate::riders::snapshots::spawn(state.clone());
        let auth_refresher = crate::auth::cache::spawn_refresher(
            std::sync::Arc::clone(&state.auth_cache),
            stores.clone(),
        );
        let refunds = state.refunds.spawn();
        let ops = crate::ops::spawn_ticker(state.clone());
        let windows = state.shards.spawn_windows();
        let last_state = state.clone();
        let app = crate::app::app(state);
        tracing::info!(addr = %listener.local_addr()?, "serving");

        let (stopping_tx, stopping_rx) = tokio::sync::oneshot::channel::<()>();
        // The peer's address is the client address of the sign-in limit (without a trusted
        // header naming another).
        let app = app.into_make_service_with_connect_info::<SocketAddr>();
        let server = axum::serve(listener, app).with_graceful_shutdown(async move {
            shutdown.await;
            tracing::info!("shutting down");
            let _ = stopping_tx.send(());
        });
        let mut server = std::pin::pin!(server.into_future());
        tokio::select! {
            served = &mut server => served.context("serving http")?,
            Ok(()) = stopping_rx => {
                // Draining: open requests get the grace period, long-lived connections
                // (sockets) are cut when it runs out.
                if tokio::time::timeout(grace, &mut server).await.is_err() {
                    tracing::warn!(grace_s = grace.as_secs(), "grace period over, closing connections");
                }
            }
        }
        purger.abort();
        snapshots.abort();
        auth_refresher.abort();
        refunds.abort();
        ops.abort();
        if let Some(windows) = windows {
            windows.abort();
        }
        let flushed = crate::riders::snapshots::flush(&last_state).await;
        tracing::info!(riders = flushed, "rider positions flushed");
        // Every shard stops through the path a cluster hands a shard over by; a cluster node
        // also gives its leases back, so the others take over at once.
        if let Some(cluster) = last_state.cluster.get() {
            cluster.leave().await;
        }
        let stopped = last_state.shards.stop_all().await;
        tracing::info!(
            orders = stopped.orders,
            riders = stopped.riders,
            "shards stopped"
        );
        drop(last_state);
        // Actors first: a transition in flight finishes its write before the store closes.
        tokio::task::spawn_blocking(move || actors.stop())
            .await
            .context("stopping the actor runtime")?;
        stores.backend.close().await.context("flushing the store")?;
        tracing::info!("stopped");
        Ok(())
    }
}

pub(crate) async fn open_store(settings: &Settings) -> anyhow::Result<Stores> {
    match settings.store.backend {
        StoreBackend::Embedded => {
            let dir = settings.store.data_dir.clone();
            let stores = tokio::task::spawn_blocking(move || tomato_store_embedded::open(&dir))
                .await
                .context("opening the embedded store")?
                .with_context(|| {
                    format!(
                        "opening the embedded store in {}",
                        settings.store.data_dir.display()
                    )
                })?;
            Ok(stores)
        }
        StoreBackend::Scylla => {
            let scylla = &settings.store.scylla;
            // Unreachable contact points end the start with one line and a non-zero exit: an
            // orchestrator restarts the node, and nothing half-started takes traffic.
            tomato_store_scylla::open(&scylla.backend_config())
                .await
                .with_context(|| {
                    format!(
                        "opening the scylla store (keyspace {} at {})",
                        scylla.keyspace,
                        scylla.nodes.join(", ")
                    )
                })
        }
    }
}

/// This node's name in the cluster: `cluster.node_id`, or the host name and the bound port.
fn node_id(settings: &Settings, bound: SocketAddr) -> String {
    if !settings.cluster.node_id.is_empty() {
        return settings.cluster.node_id.clone();
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "node".to_owned());
    format!("{host}:{}", bound.port())
}

fn warn_about_dev_settings(settings: &Settings) {
    if settings.auth.uses_shipped_secret() {
        tracing::warn!(
            "auth.jwt_secret is the public development value shipped in config.toml; set your own before going live"
        );
    }
    if settings.auth.dev_login {
        tracing::warn!(
            "auth.dev_login is on: anyone can sign in as any e-mail; turn it off before going live"
        );
    }
    if settings.internal.key.expose_secret().is_empty() {
        tracing::debug!("internal.key is empty: internal routes refuse every call");
    }
}

/// How long the authentication change feed is kept: far longer than a cached answer lives while
/// the feed is followed (minutes), so a node that falls behind misses only changes to answers
/// it no longer keeps.
const CHANGES_KEPT: time::Duration = time::Duration::hours(1);

/// Revocations only matter until the token would have expired anyway, and idempotent responses
/// are replayed for 24 h: forget both after that, the authentication changes older than
/// `CHANGES_KEPT` (unless the backend expires them itself), and the rate limiters' idle keys.
fn spawn_housekeeping(
    stores: Stores,
    limits: std::sync::Arc<crate::limits::Limits>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut every = tokio::time::interval(PURGE_EVERY);
        loop {
            every.tick().await;
            limits.sweep();
            // A backend whose records expire by a TTL is left to it: a purge would only add
            // deletes of what is going anyway.
            if stores.backend.expires_by_itself() {
                continue;
            }
            match stores.tokens.purge_expired(OffsetDateTime::now_utc()).await {
                Ok(0) => {}
                Ok(purged) => tracing::info!(purged, "forgot expired token revocations"),
                Err(err) => tracing::warn!(error = %err, "purging token revocations failed"),
            }
            match stores
                .changes
                .forget_before(OffsetDateTime::now_utc() - CHANGES_KEPT)
                .await
            {
                Ok(0) => {}
                Ok(forgot) => tracing::debug!(forgot, "forgot old authentication changes"),
                Err(err) => {
                    tracing::warn!(error = %err, "forgetting old authentication changes failed")
                }
            }
            match stores
                .idempotency
                .purge(crate::orders::idempotency_horizon())
                .await
            {
                Ok(0) => {}
                Ok(purged) => tracing::info!(purged, "forgot day-old idempotent responses"),
                Err(err) => tracing::warn!(error = %err, "purging idempotent responses failed"),
            }
        }
    })
}

/// Completes on ctrl-c or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(err) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %err, "cannot listen for ctrl-c");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(err) => {
                tracing::error!(error = %err, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}
