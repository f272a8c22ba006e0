//! `tomato-load geo-compare`: one nearest-rider workload — N riders, U position updates, then Q
//! "nearest 5 within 5 km" queries — played against Redis GEO (GEOADD / GEOSEARCH), against
//! Tile38 (SET .. POINT / NEARBY .. LIMIT, a geospatial server built for fleets), against
//! tomato's API (`PUT /api/rider/location`, `GET /api/rider/nearby`) and against the bare
//! ceiling of the same HTTP stack ([`crate::bare`]), on the same machine, with the same number
//! of connections and the same depth of requests in flight on each: Redis and Tile38 pipeline
//! P commands per round trip, tomato and the bare server get P concurrent HTTP/2 streams per
//! connection. A pipelined command's latency is its pipeline's round trip. `--mode stream` offers positions
//! the way rider apps send them instead ([`crate::stream`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use hdrhistogram::Histogram;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use tokio::process::Child;

use crate::api::{Api, Session};
use crate::city::Point;
use crate::cli::{GeoArgs, GeoSide, Transport};
use crate::conn::Dialer;
use crate::resp::{Resp, RespDialer, redis_connection, start_redis, start_tile38};
use crate::setup::RiderAccount;
use crate::stream::{Peer, Streaming};
use crate::usage::Probe;
use crate::{bare, record, setup, stream};

const KEY: &str = "tomato-load:riders";
const RADIUS_M: u32 = 5000;
const NEAREST: u32 = 5;

/// One operation of the workload.
#[derive(Debug, Clone, Copy)]
enum Op {
    Update { rider: usize, at: Point },
    Query { at: Point },
}

/// One side's figures for one phase.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Phase {
    pub ops: u64,
    pub per_s: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub errors: u64,
    /// Queries only: riders returned on average (both sides should agree roughly).
    pub mean_results: Option<f64>,
    /// What the first failed operation said, when any failed: a count alone does not tell a
    /// refused token from a timeout.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_error: Option<String>,
}

/// One side.
#[derive(Debug, Clone, Serialize)]
pub struct Side {
    pub updates: Phase,
    pub queries: Phase,
}

/// The comparison; a side left out by `--sides` is `None`, and so are the ratios it is in.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Comparison {
    pub riders: usize,
    pub connections: usize,
    pub pipeline: usize,
    pub redis: Option<Side>,
    pub tile38: Option<Side>,
    pub tomato: Option<Side>,
    /// The same requests on the same stack, answered without any work behind them.
    pub bare: Option<Side>,
    /// tomato's rate over Redis's, per phase (> 1: tomato is faster).
    pub update_rate_ratio: Option<f64>,
    pub query_rate_ratio: Option<f64>,
    /// tomato's rate over Tile38's, per phase.
    pub tile38_update_rate_ratio: Option<f64>,
    pub tile38_query_rate_ratio: Option<f64>,
    /// tomato's rate as a fraction of the bare ceiling's, per phase.
    pub update_ceiling_fraction: Option<f64>,
    pub query_ceiling_fraction: Option<f64>,
    /// Default sides that could not run here: `<side>: skipped, <why>`.
    pub skipped: Vec<String>,
}

impl Comparison {
    /// The comparison for people.
    pub fn text(&self) -> String {
        let row = |name: &str, p: &Phase| {
            format!(
                "{name:<16} {:>9} {:>11.0} {:>9.3} {:>9.3} {:>7} {:>9}\n",
                p.ops,
                p.per_s,
                p.p50_ms,
                p.p99_ms,
                p.errors,
                p.mean_results.map_or("-".into(), |m| format!("{m:.2}"))
            )
        };
        let mut out = format!(
            "geo-compare: {} riders, {} connections x {} in flight, nearest {NEAREST} within {RADIUS_M} m\n\
             {:<16} {:>9} {:>11} {:>9} {:>9} {:>7} {:>9}\n",
            self.riders,
            self.connections,
            self.pipeline,
            "",
            "ops",
            "ops/s",
            "p50 ms",
            "p99 ms",
            "errors",
            "results"
        );
        let sides = [
            ("redis", &self.redis),
            ("tile38", &self.tile38),
            ("tomato", &self.tomato),
            ("bare", &self.bare),
        ];
        for (name, side) in sides {
            if let Some(side) = side {
                out += &row(&format!("{name} updates"), &side.updates);
            }
        }
        for (name, side) in sides {
            if let Some(side) = side {
                out += &row(&format!("{name} queries"), &side.queries);
            }
        }
        let peers = [
            (
                "redis",
                &self.redis,
                self.update_rate_ratio,
                self.query_rate_ratio,
            ),
            (
                "tile38",
                &self.tile38,
                self.tile38_update_rate_ratio,
                self.tile38_query_rate_ratio,
            ),
        ];
        for (name, peer, updates, queries) in peers {
            if let (Some(tomato), Some(peer), Some(updates), Some(queries)) =
                (&self.tomato, peer, updates, queries)
            {
                out += &format!(
                    "ratio tomato/{name}: updates {updates:.2}x, queries {queries:.2}x (p99 {:.3} vs {:.3} ms, {:.3} vs {:.3} ms)\n",
                    tomato.updates.p99_ms,
                    peer.updates.p99_ms,
                    tomato.queries.p99_ms,
                    peer.queries.p99_ms
                );
            }
        }
        if let (Some(updates), Some(queries)) =
            (self.update_ceiling_fraction, self.query_ceiling_fraction)
        {
            out += &format!(
                "tomato as a fraction of the bare ceiling: updates {updates:.2}, queries {queries:.2}\n"
            );
        }
        for (name, side) in sides {
            let Some(side) = side else { continue };
            for (phase, figures) in [("updates", &side.updates), ("queries", &side.queries)] {
                if let Some(error) = &figures.first_error {
                    out += &format!("{name} {phase}: first error: {error}\n");
                }
            }
        }
        for skipped in &self.skipped {
            out += &format!("{skipped}\n");
        }
        out
    }
}

/// Redis and Tile38 (each started here unless named; none when it is not a side) and the city's
/// riders, created on the node.
struct Prepared {
    redis: Option<RespServer>,
    /// The `redis-server` started here, killed when dropped.
    redis_server: Option<Child>,
    tile38: Option<RespServer>,
    /// The `tile38-server` started here, killed when dropped (with its data directory).
    tile38_server: Option<(Child, tempfile::TempDir)>,
    admin: Session,
    riders: Vec<RiderAccount>,
}

/// The dialer of a RESP side's server, which `prepare` made for every side asked for.
fn dialer(server: &Option<RespServer>) -> anyhow::Result<&RespDialer> {
    server
        .as_ref()
        .map(|server| &server.dialer)
        .context("a RESP side without its server")
}

/// A RESP side's server: one client for the batch mode's few connections, and a dialer for the
/// stream mode's one per rider.
struct RespServer {
    client: redis::Client,
    dialer: RespDialer,
}

impl RespServer {
    /// `started_here`: the harness runs the server, so connections may come from any loopback
    /// address.
    async fn new(
        resp: Resp,
        url: &str,
        started_here: bool,
        args: &GeoArgs,
    ) -> anyhow::Result<Self> {
        Ok(Self {
            client: redis::Client::open(url).with_context(|| format!("{resp:?} url"))?,
            dialer: RespDialer::new(resp, url, started_here, args.source_addrs).await?,
        })
    }
}

async fn prepare(args: &GeoArgs) -> anyhow::Result<Prepared> {
    let base = args.target.url()?;
    let city = args.area.city();
    // Redis first, so a missing redis-server fails before any rider is created.
    let (redis, server) = if args.has(GeoSide::Redis) {
        let (url, server) = match &args.redis {
            Some(url) => (url.clone(), None),
            None => {
                let (url, child) = start_redis().await?;
                (url, Some(child))
            }
        };
        let redis = RespServer::new(Resp::Redis, &url, server.is_some(), args).await?;
        (Some(redis), server)
    } else {
        (None, None)
    };
    let (tile38, tile38_server) = if args.has(GeoSide::Tile38) {
        let (url, server) = match &args.tile38 {
            Some(url) => (url.clone(), None),
            None => {
                let binary = args
                    .tile38_server
                    .clone()
                    .unwrap_or_else(|| "tile38-server".into());
                let (url, child, dir) = start_tile38(&binary).await?;
                (url, Some((child, dir)))
            }
        };
        let started_here = server.is_some();
        (
            Some(RespServer::new(Resp::Tile38, &url, started_here, args).await?),
            server,
        )
    } else {
        (None, None)
    };
    let api = Api::new(base.clone())?;
    let admin = setup::admin(&api, &args.target.admin_email).await?;
    let bar = indicatif::ProgressBar::new(args.riders as u64);
    let run_id = setup::run_id();
    let riders = setup::riders(
        std::slice::from_ref(&api),
        &admin,
        &city,
        (&run_id, args.seed),
        args.riders,
        args.setup_concurrency,
        &bar,
    )
    .await?;
    bar.finish_and_clear();
    Ok(Prepared {
        redis,
        redis_server: server,
        tile38,
        tile38_server,
        admin,
        riders,
    })
}

/// `--mode stream`: every side in turn on the same riders, one connection each.
pub async fn stream(args: GeoArgs) -> anyhow::Result<Streaming> {
    let bare = bare::spawn().await?;
    // One socket per rider; both of its ends are here when the bare server runs in-process.
    let ends = if bare.in_process() { 2 } else { 1 };
    crate::run::check_open_files(args.riders * ends)?;
    let base = args.target.url()?;
    let city = args.area.city();
    let Prepared {
        redis,
        redis_server,
        tile38,
        tile38_server,
        riders,
        ..
    } = prepare(&args).await?;
    let tokens: Vec<String> = riders.iter().map(|r| r.session.token.clone()).collect();
    let walkers: Vec<_> = riders.iter().map(|r| r.walker.clone()).collect();
    let bare_base = reqwest::Url::parse(&format!("http://{}", bare.addr))?;
    let bare_dialer = Dialer::new(&bare_base, args.source_addrs).await?;
    let node_dialer = Dialer::new(&base, args.source_addrs).await?;
    let bare_tokens = [bare::TOKEN.to_owned()];
    for (resp, server) in [(Resp::Redis, &redis), (Resp::Tile38, &tile38)] {
        if let Some(server) = server {
            let mut conn = redis_connection(&server.client).await?;
            resp.clear(stream::KEY)
                .query_async::<redis::Value>(&mut conn)
                .await?;
        }
    }
    let step = Duration::from_secs_f64(args.step_s);
    let socket = |dialer, transport, tokens| Peer::Socket {
        dialer,
        transport,
        tokens,
    };
    // The processes behind the sides, for their CPU and memory (the node: whoever listens on
    // its port, when it is on this machine).
    let node = base
        .port_or_known_default()
        .map_or(Probe::pid(None), Probe::listening_on);
    let redis_probe = Probe::pid(redis_server.as_ref().and_then(Child::id));
    let tile38_probe = Probe::pid(tile38_server.as_ref().and_then(|(child, _)| child.id()));
    let mut sides = Vec::new();
    for side in args.sides() {
        let (peer, server) = match side {
            GeoSide::BareWs => (
                socket(&bare_dialer, Transport::Ws, &bare_tokens[..]),
                Probe::pid(bare.pid()),
            ),
            GeoSide::BareSocketio => (
                socket(&bare_dialer, Transport::Socketio, &bare_tokens[..]),
                Probe::pid(bare.pid()),
            ),
            GeoSide::TomatoWs => (socket(&node_dialer, Transport::Ws, &tokens[..]), node),
            GeoSide::TomatoSocketio => {
                (socket(&node_dialer, Transport::Socketio, &tokens[..]), node)
            }
            GeoSide::Redis => (Peer::Resp(Resp::Redis, dialer(&redis)?), redis_probe),
            GeoSide::Tile38 => (Peer::Resp(Resp::Tile38, dialer(&tile38)?), tile38_probe),
            GeoSide::TomatoHttp | GeoSide::BareHttp => {
                unreachable!("checked with the command line: not a stream side")
            }
        };
        let run = stream::side(
            side.name(),
            peer,
            server,
            &walkers,
            &city,
            &args.rates,
            step,
        );
        sides.push(run.await);
    }
    sides.extend(
        args.skipped()
            .into_iter()
            .map(|(side, why)| stream::Side::skipped(side.name(), why)),
    );
    Ok(Streaming {
        riders: riders.len(),
        step_s: args.step_s,
        sides,
        ratios: Vec::new(),
    }
    .with_ratios())
}

/// Runs every side and compares.
pub async fn compare(args: GeoArgs) -> anyhow::Result<Comparison> {
    let base = args.target.url()?;
    let city = args.area.city();
    let Prepared {
        redis,
        redis_server: _redis_server,
        tile38,
        tile38_server: _tile38_server,
        admin,
        riders,
        ..
    } = prepare(&args).await?;

    let mut rng = StdRng::seed_from_u64(args.seed);
    let mut walkers: Vec<_> = riders.iter().map(|r| r.walker.clone()).collect();
    let updates: Vec<Op> = (0..args.updates)
        .map(|_| {
            let rider = rng.random_range(0..walkers.len());
            let at = walkers[rider].step(5.0, &city, &mut rng);
            Op::Update { rider, at }
        })
        .collect();
    let queries: Vec<Op> = (0..args.queries)
        .map(|_| Op::Query {
            at: city.random_point(&mut rng),
        })
        .collect();

    let tokens: Arc<Vec<String>> =
        Arc::new(riders.iter().map(|r| r.session.token.clone()).collect());
    let resp_side = |resp: Resp, server: Option<RespServer>| {
        let (riders, updates, queries) = (&riders, &updates, &queries);
        async move {
            let Some(RespServer { client, .. }) = server else {
                return anyhow::Ok(None);
            };
            // Every index starts from the same positions.
            let mut conn = redis_connection(&client).await?;
            resp.clear(KEY)
                .query_async::<redis::Value>(&mut conn)
                .await?;
            for (n, chunk) in riders.chunks(1000).enumerate() {
                let mut pipe = redis::pipe();
                for (i, rider) in chunk.iter().enumerate() {
                    pipe.add_command(resp.update(KEY, n * 1000 + i, rider.walker.at));
                }
                pipe.query_async::<redis::Value>(&mut conn).await?;
            }
            let mut conns = Vec::new();
            for _ in 0..args.connections {
                conns.push(redis_connection(&client).await?);
            }
            Ok(Some(Side {
                updates: on_resp(resp, &conns, updates, args.pipeline).await,
                queries: on_resp(resp, &conns, queries, args.pipeline).await,
            }))
        }
    };
    let redis_side = resp_side(Resp::Redis, redis).await?;
    let tile38_side = resp_side(Resp::Tile38, tile38).await?;
    let http_side = |base: reqwest::Url, tokens: Arc<Vec<String>>, admin: Arc<String>| {
        let (updates, queries) = (&updates, &queries);
        async move {
            let clients = (0..args.connections)
                .map(|_| Api::http2(base.clone()))
                .collect::<anyhow::Result<Vec<_>>>()?;
            anyhow::Ok(Side {
                updates: on_tomato(&clients, updates, args.pipeline, &tokens, &admin).await,
                queries: on_tomato(&clients, queries, args.pipeline, &tokens, &admin).await,
            })
        }
    };
    let tomato_side = if args.has(GeoSide::TomatoHttp) {
        Some(http_side(base.clone(), Arc::clone(&tokens), Arc::new(admin.token)).await?)
    } else {
        None
    };
    // The ceiling: the same requests, on the same stack, to a server with nothing behind it.
    let bare_side = if args.has(GeoSide::BareHttp) {
        let bare = bare::spawn().await?;
        let bare_base = reqwest::Url::parse(&format!("http://{}", bare.addr))?;
        let bare_tokens = Arc::new(vec![bare::TOKEN.to_owned(); tokens.len()]);
        Some(http_side(bare_base, bare_tokens, Arc::new(bare::TOKEN.to_owned())).await?)
    } else {
        None
    };
    let ratios = |a: &Option<Side>, b: &Option<Side>| match (a, b) {
        (Some(a), Some(b)) => (
            Some(ratio(&a.updates, &b.updates)),
            Some(ratio(&a.queries, &b.queries)),
        ),
        _ => (None, None),
    };
    let (update_rate_ratio, query_rate_ratio) = ratios(&tomato_side, &redis_side);
    let (tile38_update_rate_ratio, tile38_query_rate_ratio) = ratios(&tomato_side, &tile38_side);
    let (update_ceiling_fraction, query_ceiling_fraction) = ratios(&tomato_side, &bare_side);
    Ok(Comparison {
        riders: tokens.len(),
        connections: args.connections,
        pipeline: args.pipeline,
        update_rate_ratio,
        query_rate_ratio,
        tile38_update_rate_ratio,
        tile38_query_rate_ratio,
        update_ceiling_fraction,
        query_ceiling_fraction,
        skipped: args
            .skipped()
            .into_iter()
            .map(|(side, why)| format!("{}: skipped, {why}", side.name()))
            .collect(),
        redis: redis_side,
        tile38: tile38_side,
        tomato: tomato_side,
        bare: bare_side,
    })
}

/// One side's rate over another's (> 1: the first is faster).
fn ratio(a: &Phase, b: &Phase) -> f64 {
    a.per_s / b.per_s.max(1e-9)
}

/// Shared tallies of one phase.
struct Tally {
    next: AtomicUsize,
    errors: AtomicU64,
    results: AtomicU64,
    latency: std::sync::Mutex<Histogram<u64>>,
    first_error: std::sync::OnceLock<String>,
}

impl Tally {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            next: AtomicUsize::new(0),
            errors: AtomicU64::new(0),
            results: AtomicU64::new(0),
            latency: std::sync::Mutex::new(record::histogram()),
            first_error: std::sync::OnceLock::new(),
        })
    }

    /// `times` operations failed with `error`; the first error's text is kept.
    fn failed(&self, error: &dyn std::fmt::Display, times: u64) {
        self.errors.fetch_add(times, Ordering::Relaxed);
        if self.first_error.get().is_none() {
            let _ = self.first_error.set(error.to_string());
        }
    }

    fn took(&self, took: Duration, times: u64) {
        let us = u64::try_from(took.as_micros())
            .unwrap_or(record::HIGHEST_US)
            .clamp(1, record::HIGHEST_US);
        if let Ok(mut h) = self.latency.lock() {
            let _ = h.record_n(us, times);
        }
    }

    fn phase(&self, ops: &[Op], elapsed: Duration) -> Phase {
        let (p50, p99) = self
            .latency
            .lock()
            .map(|h| {
                (
                    h.value_at_quantile(0.5) as f64 / 1000.0,
                    h.value_at_quantile(0.99) as f64 / 1000.0,
                )
            })
            .unwrap_or_default();
        let queries = matches!(ops.first(), Some(Op::Query { .. }));
        Phase {
            ops: ops.len() as u64,
            per_s: ops.len() as f64 / elapsed.as_secs_f64().max(1e-9),
            p50_ms: p50,
            p99_ms: p99,
            errors: self.errors.load(Ordering::Relaxed),
            mean_results: queries
                .then(|| self.results.load(Ordering::Relaxed) as f64 / (ops.len().max(1) as f64)),
            first_error: self.first_error.get().cloned(),
        }
    }
}

async fn on_resp(
    resp: Resp,
    conns: &[redis::aio::MultiplexedConnection],
    ops: &[Op],
    pipeline: usize,
) -> Phase {
    let tally = Tally::new();
    let ops: Arc<[Op]> = ops.into();
    let started = Instant::now();
    let mut workers = Vec::new();
    for conn in conns {
        let (mut conn, ops, tally) = (conn.clone(), Arc::clone(&ops), Arc::clone(&tally));
        workers.push(tokio::spawn(async move {
            loop {
                let from = tally.next.fetch_add(pipeline, Ordering::Relaxed);
                if from >= ops.len() {
                    break;
                }
                let batch = &ops[from..(from + pipeline).min(ops.len())];
                let mut pipe = redis::pipe();
                for op in batch {
                    pipe.add_command(match *op {
                        Op::Update { rider, at } => resp.update(KEY, rider, at),
                        Op::Query { at } => resp.nearest(KEY, at, RADIUS_M, NEAREST),
                    });
                }
                let sent = Instant::now();
                match pipe.query_async::<Vec<redis::Value>>(&mut conn).await {
                    Ok(replies) => {
                        tally.took(sent.elapsed(), batch.len() as u64);
                        for reply in &replies {
                            if matches!(batch[0], Op::Query { .. }) {
                                tally
                                    .results
                                    .fetch_add(resp.found(reply) as u64, Ordering::Relaxed);
                            }
                        }
                    }
                    Err(err) => tally.failed(&err, batch.len() as u64),
                }
            }
        }));
    }
    for worker in workers {
        let _ = worker.await;
    }
    tally.phase(&ops, started.elapsed())
}

async fn on_tomato(
    clients: &[Api],
    ops: &[Op],
    in_flight: usize,
    tokens: &Arc<Vec<String>>,
    admin: &Arc<String>,
) -> Phase {
    let tally = Tally::new();
    let ops: Arc<[Op]> = ops.into();
    let started = Instant::now();
    let mut workers = Vec::new();
    for client in clients {
        for _ in 0..in_flight {
            let (api, ops, tally) = (client.clone(), Arc::clone(&ops), Arc::clone(&tally));
            let (tokens, admin) = (Arc::clone(tokens), Arc::clone(admin));
            workers.push(tokio::spawn(async move {
                loop {
                    let i = tally.next.fetch_add(1, Ordering::Relaxed);
                    let Some(op) = ops.get(i) else { break };
                    let sent = Instant::now();
                    let outcome = match *op {
                        Op::Update { rider, at } => api
                            .put("/api/rider/location", &tokens[rider], &at.json())
                            .await
                            .map(|_| 0),
                        Op::Query { at } => {
                            let path = format!(
                                "/api/rider/nearby?lat={}&lon={}&radius={RADIUS_M}&limit={NEAREST}",
                                at.lat, at.lon
                            );
                            api.get(&path, Some(&admin))
                                .await
                                .map(|found| found["riders"].as_array().map_or(0, Vec::len) as u64)
                        }
                    };
                    match outcome {
                        Ok(found) => {
                            tally.took(sent.elapsed(), 1);
                            tally.results.fetch_add(found, Ordering::Relaxed);
                        }
                        Err(err) => tally.failed(&err, 1),
                    }
                }
            }));
        }
    }
    for worker in workers {
        let _ = worker.await;
    }
    tally.phase(&ops, started.elapsed())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn phase(errors: u64, first_error: Option<&str>) -> Phase {
        Phase {
            ops: 10,
            per_s: 100.0,
            p50_ms: 1.0,
            p99_ms: 2.0,
            errors,
            mean_results: None,
            first_error: first_error.map(str::to_owned),
        }
    }

    #[test]
    fn the_report_says_what_the_first_failure_said() {
        let comparison = Comparison {
            riders: 10,
            connections: 1,
            pipeline: 1,
            redis: None,
            tomato: Some(Side {
                updates: phase(0, None),
                queries: phase(3, Some("GET /api/rider/nearby: 401 token_expired")),
            }),
            bare: None,
            tile38: None,
            update_rate_ratio: None,
            query_rate_ratio: None,
            tile38_update_rate_ratio: None,
            tile38_query_rate_ratio: None,
            update_ceiling_fraction: None,
            query_ceiling_fraction: None,
            skipped: Vec::new(),
        };
        let text = comparison.text();
        assert!(
            text.contains("tomato queries: first error: GET /api/rider/nearby: 401 token_expired"),
            "{text}"
        );
        assert!(!text.contains("tomato updates: first error"), "{text}");
        let json = serde_json::to_value(&comparison).expect("json");
        assert_eq!(
            json["tomato"]["queries"]["firstError"],
            "GET /api/rider/nearby: 401 token_expired"
        );
        assert!(json["tomato"]["updates"].get("firstError").is_none());
    }
}
