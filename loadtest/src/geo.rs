//! `tomato-load geo-compare`: one nearest-rider workload — N riders, U position updates, then Q
//! "nearest 5 within 5 km" queries — played against Redis GEO (GEOADD / GEOSEARCH), against
//! tomato's API (`PUT /api/rider/location`, `GET /api/rider/nearby`) and against the bare
//! ceiling of the same HTTP stack ([`crate::bare`]), on the same machine, with the same number
//! of connections and the same depth of requests in flight on each: Redis pipelines P commands
//! per round trip, tomato and the bare server get P concurrent HTTP/2 streams per connection.
//! A pipelined command's latency is its pipeline's round trip. `--mode stream` offers positions
//! the way rider apps send them instead ([`crate::stream`]).

use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hdrhistogram::Histogram;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use tokio::process::{Child, Command};

use crate::api::{Api, Session};
use crate::city::Point;
use crate::cli::{GeoArgs, GeoSide, Transport};
use crate::conn::Dialer;
use crate::setup::RiderAccount;
use crate::stream::{Peer, Streaming};
use crate::usage::Probe;
use crate::{bare, record, setup, stream};

const KEY: &str = "tomato-load:riders";
/// The loopback addresses (127.0.0.n) a `redis-server` started here listens on.
const LOOPBACKS: [u8; 8] = [1, 2, 3, 4, 5, 6, 7, 8];
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
    pub tomato: Option<Side>,
    /// The same requests on the same stack, answered without any work behind them.
    pub bare: Option<Side>,
    /// tomato's rate over Redis's, per phase (> 1: tomato is faster).
    pub update_rate_ratio: Option<f64>,
    pub query_rate_ratio: Option<f64>,
    /// tomato's rate as a fraction of the bare ceiling's, per phase.
    pub update_ceiling_fraction: Option<f64>,
    pub query_ceiling_fraction: Option<f64>,
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
        if let (Some(tomato), Some(redis), Some(updates), Some(queries)) = (
            &self.tomato,
            &self.redis,
            self.update_rate_ratio,
            self.query_rate_ratio,
        ) {
            out += &format!(
                "ratio tomato/redis: updates {updates:.2}x, queries {queries:.2}x (p99 {:.3} vs {:.3} ms, {:.3} vs {:.3} ms)\n",
                tomato.updates.p99_ms,
                redis.updates.p99_ms,
                tomato.queries.p99_ms,
                redis.queries.p99_ms
            );
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
        out
    }
}

/// Redis (started here unless `--redis` names one; none when no side is Redis) and the city's
/// riders, created on the node.
struct Prepared {
    redis: Option<redis::Client>,
    /// Clients of the same Redis on each address it listens on.
    spread: Vec<redis::Client>,
    /// The `redis-server` started here, killed when dropped.
    redis_server: Option<Child>,
    admin: Session,
    riders: Vec<RiderAccount>,
}

async fn prepare(args: &GeoArgs) -> anyhow::Result<Prepared> {
    let base = args.target.url()?;
    let city = args.area.city();
    // Redis first, so a missing redis-server fails before any rider is created.
    let (redis, spread, server) = if args.has(GeoSide::Redis) {
        let (url, server) = match &args.redis {
            Some(url) => (url.clone(), None),
            None => {
                let (url, child) = start_redis().await?;
                (url, Some(child))
            }
        };
        let redis = redis::Client::open(url.as_str()).context("redis url")?;
        // The same server on each loopback address it listens on (the one given, for --redis).
        let spread = if server.is_some() {
            LOOPBACKS
                .iter()
                .map(|n| url.replace("127.0.0.1", &format!("127.0.0.{n}")))
                .map(|url| redis::Client::open(url.as_str()))
                .collect::<Result<Vec<_>, _>>()?
        } else {
            vec![redis.clone()]
        };
        (Some(redis), spread, server)
    } else {
        (None, Vec::new(), None)
    };
    let api = Api::new(base.clone())?;
    let admin = setup::admin(&api, &args.target.admin_email).await?;
    let bar = indicatif::ProgressBar::new(args.riders as u64);
    let run_id = setup::run_id();
    let riders = setup::riders(
        &api,
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
        spread,
        redis_server: server,
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
        spread,
        redis_server,
        riders,
        ..
    } = prepare(&args).await?;
    let tokens: Vec<String> = riders.iter().map(|r| r.session.token.clone()).collect();
    let walkers: Vec<_> = riders.iter().map(|r| r.walker.clone()).collect();
    let bare_base = reqwest::Url::parse(&format!("http://{}", bare.addr))?;
    let bare_dialer = Dialer::new(&bare_base, args.source_addrs).await?;
    let node_dialer = Dialer::new(&base, args.source_addrs).await?;
    let bare_tokens = [bare::TOKEN.to_owned()];
    if let Some(redis) = &redis {
        let mut conn = redis_connection(redis).await?;
        redis::cmd("DEL")
            .arg("tomato-load:stream")
            .query_async::<redis::Value>(&mut conn)
            .await?;
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
            GeoSide::Redis => (Peer::Redis(&spread), redis_probe),
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
    let redis_side = match &redis {
        Some(redis) => {
            // Both indexes start from the same positions.
            let mut conn = redis_connection(redis).await?;
            redis::cmd("DEL")
                .arg(KEY)
                .query_async::<redis::Value>(&mut conn)
                .await?;
            for (n, chunk) in riders.chunks(1000).enumerate() {
                let mut pipe = redis::pipe();
                for (i, rider) in chunk.iter().enumerate() {
                    pipe.cmd("GEOADD")
                        .arg(KEY)
                        .arg(rider.walker.at.lon)
                        .arg(rider.walker.at.lat)
                        .arg(n * 1000 + i);
                }
                pipe.query_async::<redis::Value>(&mut conn).await?;
            }
            let mut conns = Vec::new();
            for _ in 0..args.connections {
                conns.push(redis_connection(redis).await?);
            }
            Some(Side {
                updates: on_redis(&conns, &updates, args.pipeline).await,
                queries: on_redis(&conns, &queries, args.pipeline).await,
            })
        }
        None => None,
    };
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
    let (update_ceiling_fraction, query_ceiling_fraction) = ratios(&tomato_side, &bare_side);
    Ok(Comparison {
        riders: tokens.len(),
        connections: args.connections,
        pipeline: args.pipeline,
        update_rate_ratio,
        query_rate_ratio,
        update_ceiling_fraction,
        query_ceiling_fraction,
        redis: redis_side,
        tomato: tomato_side,
        bare: bare_side,
    })
}

/// One side's rate over another's (> 1: the first is faster).
fn ratio(a: &Phase, b: &Phase) -> f64 {
    a.per_s / b.per_s.max(1e-9)
}

/// A connection to the Redis side that waits for every answer: redis-rs gives up on one after
/// 500 ms by default, which at 100 000 riders (a GEOSEARCH walks every member within 5 km)
/// counted a slow Redis as a failed one, 19 968 errors in 20 000 queries. A slow peer is
/// measured as slow.
pub(crate) async fn redis_connection(
    client: &redis::Client,
) -> redis::RedisResult<redis::aio::MultiplexedConnection> {
    let config = redis::AsyncConnectionConfig::new().set_response_timeout(None);
    client
        .get_multiplexed_async_connection_with_config(&config)
        .await
}

/// A `redis-server` on a free loopback port, killed when the handle drops.
async fn start_redis() -> anyhow::Result<(String, Child)> {
    // A port free on 127.0.0.1 may still be the local port of a connection from another
    // loopback address (a previous run's sockets closing): Redis then cannot bind it and
    // exits, and another port is tried.
    for _ in 0..5 {
        if let Some(started) = try_start_redis().await? {
            return Ok(started);
        }
    }
    bail!("redis-server did not start on five free ports in a row")
}

/// One attempt: `None` when redis-server exited at once (its port was taken on an address).
async fn try_start_redis() -> anyhow::Result<Option<(String, Child)>> {
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let mut child = Command::new("redis-server")
        .args(["--port", &port.to_string()])
        // On eight loopback addresses, so that one connection per rider (stream mode) spreads
        // over as many addresses and the local ports of one do not run out.
        .arg("--bind")
        .args(LOOPBACKS.map(|n| format!("127.0.0.{n}")))
        .args(["--save", "", "--appendonly", "no"])
        // One connection per rider in stream mode: Redis lowers this to what its open-file
        // limit allows, rather than refusing clients past its default 10 000.
        .args(["--maxclients", "100000"])
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("starting redis-server (install it, or pass --redis URL)")?;
    let url = format!("redis://127.0.0.1:{port}/");
    let client = redis::Client::open(url.as_str())?;
    for _ in 0..100 {
        if child.try_wait()?.is_some() {
            return Ok(None);
        }
        if let Ok(mut conn) = client.get_multiplexed_async_connection().await
            && redis::cmd("PING")
                .query_async::<String>(&mut conn)
                .await
                .is_ok()
        {
            return Ok(Some((url, child)));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("redis-server on port {port} did not answer PING within 5 s")
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

async fn on_redis(
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
                    match *op {
                        Op::Update { rider, at } => {
                            pipe.cmd("GEOADD")
                                .arg(KEY)
                                .arg(at.lon)
                                .arg(at.lat)
                                .arg(rider);
                        }
                        Op::Query { at } => {
                            pipe.cmd("GEOSEARCH")
                                .arg(KEY)
                                .arg("FROMLONLAT")
                                .arg(at.lon)
                                .arg(at.lat)
                                .arg("BYRADIUS")
                                .arg(RADIUS_M)
                                .arg("m")
                                .arg("ASC")
                                .arg("COUNT")
                                .arg(NEAREST);
                        }
                    }
                }
                let sent = Instant::now();
                match pipe.query_async::<Vec<redis::Value>>(&mut conn).await {
                    Ok(replies) => {
                        tally.took(sent.elapsed(), batch.len() as u64);
                        for reply in replies {
                            if let redis::Value::Array(found) = reply {
                                tally
                                    .results
                                    .fetch_add(found.len() as u64, Ordering::Relaxed);
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
            update_rate_ratio: None,
            query_rate_ratio: None,
            update_ceiling_fraction: None,
            query_ceiling_fraction: None,
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
