//! `tomato-load run`: creates the city, then plays it for the duration — riders streaming
//! positions and taking offers, customers ordering and paying at the set rate, sellers cooking
//! what was paid for — then waits for the open orders to be delivered and reports. A rider who
//! wins an order rides to the restaurant and on to the customer at `--speed-kmh`, streaming its
//! positions on the way, then roams again.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use dashmap::DashMap;
use futures_util::{StreamExt, stream};
use indicatif::{ProgressBar, ProgressStyle};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;
use tokio::sync::{Mutex, watch};
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

use crate::api::{Api, CallError, Session};
use crate::city::{City, Point, Walker};
use crate::cli::{RunArgs, Transport};
use crate::conn::{Conn, Dialer, Incoming};
use crate::nodes::{Nodes, PATIENCE, ROUND_PAUSE, Retry, is_lost, node_of};
use crate::record::{Counters, Path, Recorder, Ride};
use crate::report::{NodeSide, Report, ServerSide};
use crate::setup::{self, Customer, RiderAccount, Shop};

/// A rider's movement, shared by its position ticks and the delivery it rides.
type Wheels = Arc<std::sync::Mutex<Walker>>;

fn wheels(wheels: &Wheels) -> std::sync::MutexGuard<'_, Walker> {
    // A walker is plain numbers, whole after any panic.
    wheels
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Acks not back after this long are counted as lost.
const ACK_PATIENCE: Duration = Duration::from_secs(30);
/// Sockets opened at once while connecting the riders.
const CONNECT_CONCURRENCY: usize = 64;

/// What the harness knows of one order.
#[derive(Debug, Default)]
struct Track {
    ready_at: Option<Instant>,
    offered: bool,
    assigned: bool,
    delivered: bool,
}

/// Shared by every simulated actor of the run.
#[derive(Debug)]
struct World {
    args: RunArgs,
    /// Every node; each party talks to the one its token picks (see [`node_of`]), and to the
    /// next while that one is down. Statistics and memory are read on the first.
    nodes: Nodes,
    /// Where each node's sockets are opened, in the order of `nodes`.
    dialers: Vec<Dialer>,
    city: City,
    recorder: Recorder,
    orders: DashMap<String, Track>,
    /// Each offered order's pickup and drop-off, from its offer: where a rider who wins it rides.
    places: DashMap<String, (Point, Point)>,
    /// Every order the node acknowledged (placed), paid or not, for audits.
    placed: std::sync::Mutex<Vec<String>>,
    interval: Duration,
    /// The highest resident memory of the node seen so far.
    memory_peak: AtomicU64,
}

impl World {
    fn fail(&self, kind: &str) {
        self.recorder.error(kind);
    }

    /// Offers heard by a rider: each counted, and their orders' ids.
    fn heard(&self, offers: &[serde_json::Value]) -> Vec<String> {
        offers
            .iter()
            .filter_map(|offer| match offer["orderId"].as_str() {
                Some(order) => {
                    self.offer_heard(order, offer);
                    Some(order.to_owned())
                }
                None => {
                    self.fail("offer_without_order");
                    None
                }
            })
            .collect()
    }

    /// The first offer of an order heard by any rider marks ready -> available.
    fn offer_heard(&self, order: &str, offer: &serde_json::Value) {
        Counters::bump(&self.recorder.counters.offers_heard);
        if !self.places.contains_key(order)
            && let (Some(pickup), Some(dropoff)) =
                (point_of(&offer["pickup"]), point_of(&offer["dropoff"]))
        {
            self.places.insert(order.to_owned(), (pickup, dropoff));
        }
        if let Some(mut track) = self.orders.get_mut(order)
            && !track.offered
        {
            track.offered = true;
            if let Some(ready) = track.ready_at {
                self.recorder
                    .latency(Path::ReadyToAvailable, ready.elapsed());
            }
        }
    }
}

/// Plays a run and returns its report.
pub async fn run(args: RunArgs) -> anyhow::Result<Report> {
    let bases = args.target.urls()?;
    let history = match &args.history {
        Some(file) => Some(Arc::new(crate::history::Recorder::create(file).map_err(
            |err| anyhow::anyhow!("cannot write {}: {err}", file.display()),
        )?)),
        None => None,
    };
    let apis = bases
        .iter()
        .map(|base| {
            let api = Api::new(base.clone())?;
            Ok(match &history {
                Some(history) => api.recording(Arc::clone(history)),
                None => api,
            })
        })
        .collect::<anyhow::Result<Vec<Api>>>()?;
    let nodes = Nodes::new(apis);
    let api = nodes.first().clone();
    let apis = nodes.all();
    let sockets = match args.transport {
        Transport::Http => args.restaurants,
        Transport::Socketio | Transport::Ws => args.riders + args.restaurants,
    };
    check_open_files(sockets)?;
    let city = args.area.city();
    let setup_started = Instant::now();
    let admin = setup::admin(&api, &args.target.admin_email).await?;
    // The operations page signs in with the token in the fragment (which no server logs).
    if let Ok(page) = bases[0].join("/ops") {
        eprintln!("watch the city live: {page}#token={}", admin.token);
    }
    let before = api.get("/api/admin/stats", Some(&admin.token)).await?;
    let memory_start = api.server_memory().await;
    let nodes_start = cluster_counters(apis).await;

    let run_id = setup::run_id();
    let total = (args.restaurants + args.customers + args.riders) as u64;
    let bar = progress(total, "creating the city");
    let shops = setup::shops(
        apis,
        &admin,
        &city,
        &run_id,
        args.restaurants,
        args.setup_concurrency,
        &bar,
    )
    .await?;
    let customers = setup::customers(
        apis,
        &city,
        &run_id,
        args.customers,
        args.setup_concurrency,
        &bar,
    )
    .await?;
    let riders = setup::riders(
        apis,
        &admin,
        &city,
        (&run_id, args.seed),
        args.riders,
        args.setup_concurrency,
        &bar,
    )
    .await?;
    bar.finish_and_clear();

    let mut dialers = Vec::new();
    for base in &bases {
        dialers.push(Dialer::new(base, args.source_addrs).await?);
    }
    let seller_kind = seller_transport(args.transport);
    let rider_conns: Vec<Option<Conn>> = match args.transport {
        Transport::Http => riders.iter().map(|_| None).collect(),
        kind => {
            let bar = progress(riders.len() as u64, "connecting riders");
            let conns = connect_all(&dialers, kind, &riders, &bar).await?;
            bar.finish_and_clear();
            conns.into_iter().map(Some).collect()
        }
    };
    let mut seller_conns = Vec::new();
    for (i, (shop, _)) in shops.iter().enumerate() {
        seller_conns.push(
            dialers[node_of(&shop.seller.token, dialers.len())]
                .connect(seller_kind, &shop.seller.token, i)
                .await
                .map_err(|err| anyhow::anyhow!("connecting seller {i}: {err:#}"))?,
        );
    }
    let setup_s = setup_started.elapsed().as_secs_f64();
    // The nodes' counters count from here: the play is the city's work, the setup the harness's.
    let nodes_play = cluster_counters(apis).await;

    let world = Arc::new(World {
        interval: Duration::from_secs_f64(args.interval_s),
        args: args.clone(),
        nodes,
        dialers,
        city,
        recorder: Recorder::new(),
        orders: DashMap::new(),
        places: DashMap::new(),
        placed: std::sync::Mutex::default(),
        memory_peak: AtomicU64::new(memory_start.unwrap_or(0)),
    });
    let (stop_tx, stop) = watch::channel(false);
    let mut tasks: Vec<JoinHandle<()>> = Vec::new();
    for (i, (account, conn)) in riders.into_iter().zip(rider_conns).enumerate() {
        let rng = StdRng::seed_from_u64(args.seed.wrapping_add(i as u64));
        tasks.push(tokio::spawn(ride(
            Arc::clone(&world),
            (account, i),
            conn,
            rng,
            stop.clone(),
        )));
    }
    for (i, ((shop, _), conn)) in shops.iter().cloned().zip(seller_conns).enumerate() {
        tasks.push(tokio::spawn(cook(
            Arc::clone(&world),
            (shop, i),
            conn,
            stop.clone(),
        )));
    }

    let bar = progress(args.duration().as_secs().max(1), "load");
    let watcher = tokio::spawn(watch_progress(Arc::clone(&world), bar.clone()));
    let churn = tokio::spawn(churn(Arc::clone(&world), run_id.clone()));
    place_orders(&world, &shops, customers).await;
    let _ = churn.await;
    let load_s = world.recorder.elapsed().as_secs_f64();
    bar.set_message("load over; delivering the open orders");
    drain(&world).await;
    let _ = stop_tx.send(true);
    for task in tasks {
        let _ = task.await;
    }
    watcher.abort();
    bar.finish_and_clear();

    let after = api.get("/api/admin/stats", Some(&admin.token)).await?;
    let memory_end = api.server_memory().await;
    let nodes_end = cluster_counters(world.nodes.all()).await;
    let nodes = nodes_start
        .iter()
        .zip(&nodes_play)
        .zip(&nodes_end)
        .map(|((start, play), end)| NodeSide {
            setup_cpu_s: (play.cpu_s - start.cpu_s).max(0.0),
            ..end.since(play)
        })
        .collect();
    let peak = world
        .memory_peak
        .load(Ordering::Relaxed)
        .max(memory_end.unwrap_or(0));
    let undelivered = world.orders.iter().filter(|t| !t.delivered).count() as u64;
    if let Some(history) = &history {
        history.flush();
    }
    Ok(Report {
        run_id,
        transport: args.transport,
        riders: args.riders,
        restaurants: args.restaurants,
        customers: args.customers,
        interval_s: args.interval_s,
        order_rate: args.order_rate,
        speed_kmh: args.speed_kmh,
        seed: args.seed,
        setup_s,
        load_s,
        total_s: world.recorder.elapsed().as_secs_f64(),
        undelivered,
        acknowledged_orders: world
            .placed
            .lock()
            .map(|placed| placed.clone())
            .unwrap_or_default(),
        measured: world.recorder.measured(),
        server: ServerSide {
            memory_start_bytes: memory_start,
            memory_end_bytes: memory_end,
            memory_peak_bytes: (peak > 0).then_some(peak),
            stats_before: before,
            stats_after: after,
            nodes,
        },
    })
}

/// Each node's cluster counters now.
async fn cluster_counters(apis: &[Api]) -> Vec<NodeSide> {
    let mut nodes = Vec::new();
    for api in apis {
        let read = |name: &'static str| async move { api.metric(name).await.unwrap_or(0) };
        nodes.push(NodeSide {
            target: api.base().to_string(),
            shards_owned: read("tomato_cluster_shards_owned").await,
            cpu_s: api
                .metric_f64("tomato_process_cpu_seconds")
                .await
                .unwrap_or(0.0),
            setup_cpu_s: 0.0,
            replicated_positions: read("tomato_cluster_replicated_positions_total").await,
            replication_bytes: read("tomato_cluster_replication_bytes_total").await,
            regions_copied: read("tomato_cluster_regions_copied").await,
            remote_searches: read("tomato_cluster_remote_searches_total").await,
            forwarded_positions: read("tomato_cluster_forwarded_positions_total").await,
            remote_calls_ok: read("tomato_cluster_remote_calls_ok_total").await,
            remote_calls_refused: read("tomato_cluster_remote_calls_refused_total").await,
            remote_calls_not_owner: read("tomato_cluster_remote_calls_not_owner_total").await,
            remote_calls_failed: read("tomato_cluster_remote_calls_failed_total").await,
            remote_calls_unanswered: read("tomato_cluster_remote_calls_unanswered_total").await,
            owner_waits: read("tomato_cluster_owner_waits_total").await,
            leases_won: read("tomato_cluster_leases_won_total").await,
            leases_lost: read("tomato_cluster_leases_lost_total").await,
            handed_over: read("tomato_cluster_handed_over_total").await,
            entry_reads: read("tomato_rider_entry_reads_total").await,
        });
    }
    nodes
}

/// Sellers' dashboards hold a socket even when riders speak HTTP.
fn seller_transport(riders: Transport) -> Transport {
    match riders {
        Transport::Http => Transport::Ws,
        other => other,
    }
}

/// A party's socket again after its node closed it (the `n`th client's): to the node its token
/// picks or, while that one is down, the next ones in turn; `None` when none answered in
/// [`PATIENCE`].
async fn redial(world: &World, token: &str, kind: Transport, n: usize) -> Option<Conn> {
    let count = world.dialers.len();
    let home = node_of(token, count);
    let started = Instant::now();
    for turn in 0.. {
        if started.elapsed() >= PATIENCE {
            break;
        }
        if let Ok(conn) = world.dialers[(home + turn) % count]
            .connect(kind, token, n)
            .await
        {
            Counters::bump(&world.recorder.counters.redials);
            return Some(conn);
        }
        if (turn + 1) % count == 0 {
            tokio::time::sleep(ROUND_PAUSE).await;
        }
    }
    None
}

/// An accept whose answer was lost may still have won: the rider's current order says.
async fn won_anyway(
    world: &World,
    session: &Session,
    order: &str,
    lost: CallError,
) -> Result<serde_json::Value, CallError> {
    let current = world
        .nodes
        .get(&session.token, "/api/rider/orders/current")
        .await?;
    if current["order"]["id"].as_str() == Some(order) {
        Ok(current)
    } else {
        Err(lost)
    }
}

/// The process may need one descriptor per socket; raise the soft limit and check it fits.
pub(crate) fn check_open_files(sockets: usize) -> anyhow::Result<()> {
    let limit = rlimit::increase_nofile_limit(u64::MAX).unwrap_or(1024);
    let needed = sockets as u64 + 256;
    if needed > limit {
        anyhow::bail!(
            "{sockets} sockets need about {needed} open files but this process may open {limit} \
             (ulimit -n); use fewer riders, --transport http, or raise the limit (the node needs \
             as many)"
        );
    }
    Ok(())
}

fn progress(len: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    if let Ok(style) = ProgressStyle::with_template(
        "{prefix:>18} [{elapsed_precise}] {wide_bar} {pos}/{len} {msg}",
    ) {
        bar.set_style(style);
    }
    bar.set_prefix(what.to_owned());
    bar
}

async fn connect_all(
    dialers: &[Dialer],
    kind: Transport,
    riders: &[RiderAccount],
    bar: &ProgressBar,
) -> anyhow::Result<Vec<Conn>> {
    let conns: Vec<anyhow::Result<Conn>> = stream::iter(riders.iter().enumerate())
        .map(|(i, rider)| async move {
            let dialer = &dialers[node_of(&rider.session.token, dialers.len())];
            let conn = dialer.connect(kind, &rider.session.token, i).await;
            bar.inc(1);
            conn.map_err(|err| anyhow::anyhow!("connecting rider {i}: {err:#}"))
        })
        .buffered(CONNECT_CONCURRENCY)
        .collect()
        .await;
    conns.into_iter().collect()
}

/// The next thing on a connection, or never when there is none.
async fn next_of(conn: &mut Option<Conn>) -> Option<anyhow::Result<Incoming>> {
    match conn {
        Some(conn) => conn.next().await,
        None => std::future::pending().await,
    }
}

/// One rider: moves, reports its position every interval, takes an offer when free.
async fn ride(
    world: Arc<World>,
    (account, n): (RiderAccount, usize),
    mut conn: Option<Conn>,
    mut rng: StdRng,
    mut stop: watch::Receiver<bool>,
) {
    let RiderAccount { session, walker } = account;
    let session = Arc::new(session);
    let walker: Wheels = Arc::new(std::sync::Mutex::new(walker));
    // Spread the riders' ticks over the interval, as real apps are.
    let offset = world.interval.mul_f64(rng.random::<f64>());
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + offset, world.interval);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut job: Option<JoinHandle<()>> = None;
    let mut pending: HashMap<u64, Instant> = HashMap::new();
    let mut next_id = 0_u64;
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            _ = tick.tick() => {
                let at = wheels(&walker).step(world.args.interval_s, &world.city, &mut rng);
                Counters::bump(&world.recorder.counters.locations_sent);
                let free = job.as_ref().is_none_or(JoinHandle::is_finished);
                match conn.as_mut() {
                    Some(conn) => {
                        next_id += 1;
                        pending.insert(next_id, Instant::now());
                        if conn.send_location(next_id, at).await.is_err() {
                            world.fail("socket_send");
                        }
                        pending.retain(|_, sent| {
                            let waiting = sent.elapsed() < ACK_PATIENCE;
                            if !waiting {
                                world.fail("ack_lost");
                            }
                            waiting
                        });
                    }
                    None => {
                        let sent = Instant::now();
                        let body = at.json();
                        let put = world.nodes.call(
                            &session.token,
                            reqwest::Method::PUT,
                            "/api/rider/location",
                            Some(&body),
                            (Retry::Never, None),
                        );
                        match put.await {
                            Ok(_) => world.recorder.latency(Path::Ingest, sent.elapsed()),
                            Err(err) => world.fail(&err.kind),
                        }
                        if free {
                            poll_offers(&world, &session, &walker, &mut job).await;
                        }
                    }
                }
            }
            incoming = next_of(&mut conn) => match incoming {
                Some(Ok(Incoming::Ack(id, data))) => {
                    if let Some(sent) = pending.remove(&id) {
                        if data["ok"] == true {
                            world.recorder.latency(Path::Ingest, sent.elapsed());
                        } else {
                            let code = data["error"]["code"].as_str().unwrap_or("no_code");
                            world.fail(&format!("location_refused_{code}"));
                        }
                    }
                }
                Some(Ok(Incoming::Event(event, data))) if event == "order:available" => {
                    take_one(&world, &session, &walker, vec![data], &mut job);
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => {
                    conn = None;
                    pending.clear();
                    if *stop.borrow() {
                        continue;
                    }
                    world.fail("socket_closed");
                    // Its node went away: the app dials the next. Without a socket the rider
                    // cannot hear offers: one that finds no node in time stops, rather than
                    // silently going on.
                    conn = redial(&world, &session.token, world.args.transport, n).await;
                    if conn.is_none() {
                        world.fail("socket_not_redialled");
                        break;
                    }
                }
            }
        }
    }
    if let Some(job) = job {
        let _ = job.await;
    }
}

/// HTTP riders read the offers they hold after each position.
async fn poll_offers(
    world: &Arc<World>,
    session: &Arc<Session>,
    walker: &Wheels,
    job: &mut Option<JoinHandle<()>>,
) {
    if let Some(orders) = held_offers(world, session).await
        && !orders.is_empty()
    {
        take_one(world, session, walker, orders, job);
    }
}

/// The offers this rider holds, from `GET /api/rider/offers`.
async fn held_offers(world: &World, session: &Session) -> Option<Vec<serde_json::Value>> {
    match world.nodes.get(&session.token, "/api/rider/offers").await {
        Ok(held) => Some(held["offers"].as_array().cloned().unwrap_or_default()),
        Err(err) => {
            world.fail(&err.kind);
            None
        }
    }
}

/// Offers heard: a free rider tries them in turn after thinking (another rider may have been
/// faster), then rides and delivers the one it wins.
fn take_one(
    world: &Arc<World>,
    session: &Arc<Session>,
    walker: &Wheels,
    offers: Vec<serde_json::Value>,
    job: &mut Option<JoinHandle<()>>,
) {
    let orders = world.heard(&offers);
    if job.as_ref().is_some_and(|j| !j.is_finished()) {
        return;
    }
    let (world, session, walker) = (Arc::clone(world), Arc::clone(session), Arc::clone(walker));
    *job = Some(tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs_f64(world.args.think_s)).await;
        if try_orders(&world, &session, &walker, &orders).await == Some(false) {
            // Beaten to every one: look at what else was offered meanwhile (events that came
            // while this rider was busy deciding), as an app's offer list would show.
            if let Some(mut more) = held_offers(&world, &session).await {
                more.retain(|o| {
                    o["orderId"]
                        .as_str()
                        .is_some_and(|id| !orders.iter().any(|t| t == id))
                });
                let more = world.heard(&more);
                try_orders(&world, &session, &walker, &more).await;
            }
        }
    }));
}

/// Accepts the first of `orders` this rider wins and delivers it: `Some(true)` when one was
/// won, `Some(false)` when others were faster to all, `None` on an error.
async fn try_orders(
    world: &World,
    session: &Session,
    walker: &Wheels,
    orders: &[String],
) -> Option<bool> {
    for order in orders {
        let path = format!("/api/rider/orders/{order}/accept");
        let accepted = world
            .nodes
            .call(
                &session.token,
                reqwest::Method::POST,
                &path,
                None,
                (Retry::Never, None),
            )
            .await;
        let accepted = match accepted {
            Err(err) if is_lost(&err) => won_anyway(world, session, order, err).await,
            answered => answered,
        };
        match accepted {
            Ok(_) => {
                Counters::bump(&world.recorder.counters.accepts);
                let taken = Instant::now();
                deliver(world, session, walker, order).await;
                let busy = u64::try_from(taken.elapsed().as_millis()).unwrap_or(u64::MAX);
                world
                    .recorder
                    .counters
                    .busy_ms
                    .fetch_add(busy, Ordering::Relaxed);
                return Some(true);
            }
            Err(err) if err.status == Some(reqwest::StatusCode::CONFLICT) => {
                Counters::bump(&world.recorder.counters.accepts_lost);
            }
            Err(err) => {
                world.fail(&err.kind);
                return None;
            }
        }
    }
    Some(false)
}

/// A point of the API's JSON (`{lat, lon}`).
fn point_of(json: &serde_json::Value) -> Option<Point> {
    Some(Point {
        lat: json["lat"].as_f64()?,
        lon: json["lon"].as_f64()?,
    })
}

/// The assigned rider rides to the restaurant, picks up, rides to the customer and hands over,
/// then roams again.
async fn deliver(world: &World, session: &Session, walker: &Wheels, id: &str) {
    let Some((pickup, dropoff)) = world.places.get(id).map(|places| *places) else {
        return world.fail("won_order_never_offered");
    };
    let speed = world.args.speed_mps();
    let handover = Duration::from_secs_f64(world.args.handover_s);
    let ready_at = world.orders.get(id).and_then(|track| track.ready_at);
    let status = format!("/api/rider/orders/{id}/status");
    let accepted = Instant::now();
    for (to, next, counter, since_ready) in [
        (
            pickup,
            "picked_up",
            &world.recorder.counters.picked_up,
            Ride::ReadyToPickedUp,
        ),
        (
            dropoff,
            "delivered",
            &world.recorder.counters.delivered,
            Ride::ReadyToDelivered,
        ),
    ] {
        let metres = wheels(walker).ride_to(to, speed);
        tokio::time::sleep(Duration::from_secs_f64(metres / speed)).await;
        wheels(walker).arrive();
        if since_ready == Ride::ReadyToPickedUp {
            world
                .recorder
                .ride(Ride::PickupDistance, metres, Duration::ZERO);
            world
                .recorder
                .ride(Ride::PickupTime, 0.0, accepted.elapsed());
        }
        tokio::time::sleep(handover).await;
        match world
            .nodes
            .step(&session.token, &status, &json!({ "status": next }))
            .await
        {
            Ok(_) => Counters::bump(counter),
            Err(err) => {
                wheels(walker).roam();
                return world.fail(&err.kind);
            }
        }
        if let Some(ready) = ready_at {
            world.recorder.ride(since_ready, 0.0, ready.elapsed());
        }
    }
    wheels(walker).roam();
    world.places.remove(id);
    if let Some(mut track) = world.orders.get_mut(id) {
        track.delivered = true;
    }
}

/// How often a seller lists its restaurant's open orders, as a dashboard refreshes: an
/// `order:new` is sent once and lost with the node that owned the order if it dies before
/// passing the event on, and a step refused while a shard changes hands is tried again.
const RECHECK_EVERY: Duration = Duration::from_secs(3);

/// The orders a seller has begun cooking. An order goes in once (from its event or from the
/// list, whichever comes first) and leaves only when a step of it failed, so the next list
/// resumes it from where it stands.
type Begun = Arc<std::sync::Mutex<std::collections::HashSet<String>>>;

/// One seller: cooks every paid order (accepted, preparing, ready) and hears the assignment.
async fn cook(
    world: Arc<World>,
    (shop, n): (Shop, usize),
    conn: Conn,
    mut stop: watch::Receiver<bool>,
) {
    let mut conn = Some(conn);
    let seller = Arc::new(shop.seller);
    let begun = Begun::default();
    let mut recheck =
        tokio::time::interval_at(tokio::time::Instant::now() + RECHECK_EVERY, RECHECK_EVERY);
    recheck.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            _ = recheck.tick() => {
                tokio::spawn(resume_open(Arc::clone(&world), Arc::clone(&seller), Arc::clone(&begun)));
            }
            incoming = next_of(&mut conn) => match incoming {
                Some(Ok(Incoming::Event(event, data))) => match event.as_str() {
                    "order:new" => {
                        let order = data["order"]["id"].as_str().unwrap_or_default().to_owned();
                        begin(&world, &seller, &begun, order, "placed");
                    }
                    "order:rider_assigned" => {
                        let order = data["order"]["id"].as_str().unwrap_or_default();
                        if let Some(mut track) = world.orders.get_mut(order)
                            && !track.assigned
                        {
                            track.assigned = true;
                            if let Some(ready) = track.ready_at {
                                world.recorder.latency(Path::ReadyToAssigned, ready.elapsed());
                            }
                        }
                    }
                    _ => {}
                },
                Some(Ok(Incoming::Ack(..))) => {}
                Some(Err(_)) | None => {
                    if *stop.borrow() {
                        break;
                    }
                    world.fail("seller_socket_closed");
                    // The dashboard dials the next node; its list catches up what it missed.
                    conn = redial(&world, &seller.token, seller_transport(world.args.transport), n).await;
                    if conn.is_none() {
                        world.fail("seller_socket_not_redialled");
                        break;
                    }
                }
            }
        }
    }
}

/// Starts cooking `order` from `status` unless this seller already began it.
fn begin(world: &Arc<World>, seller: &Arc<Session>, begun: &Begun, order: String, status: &str) {
    let fresh = begun
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .insert(order.clone());
    if fresh {
        let (world, seller, begun) = (Arc::clone(world), Arc::clone(seller), Arc::clone(begun));
        let status = status.to_owned();
        tokio::spawn(async move {
            if !prepare(&world, &seller, &order, &status).await {
                begun
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .remove(&order);
            }
        });
    }
}

/// Lists the restaurant's paid orders still in the kitchen and begins those not begun yet.
async fn resume_open(world: Arc<World>, seller: Arc<Session>, begun: Begun) {
    for status in ["placed", "accepted", "preparing"] {
        let path = format!("/api/order/restaurant?status={status}");
        let Ok(listed) = world.nodes.get(&seller.token, &path).await else {
            // The dashboard tries again at the next refresh.
            continue;
        };
        for order in listed["orders"].as_array().into_iter().flatten() {
            if let Some(id) = order["id"].as_str() {
                begin(&world, &seller, &begun, id.to_owned(), status);
            }
        }
    }
}

/// Takes `order` from `status` to `ready_for_rider`; false when a step failed (counted).
async fn prepare(world: &World, seller: &Session, order: &str, status: &str) -> bool {
    let path = format!("/api/order/{order}");
    let steps: &[&str] = match status {
        "placed" => &["accepted", "preparing"],
        "accepted" => &["preparing"],
        _ => &[],
    };
    for step in steps {
        if let Err(err) = world
            .nodes
            .step(&seller.token, &path, &json!({ "status": step }))
            .await
        {
            world.fail(&err.kind);
            return false;
        }
    }
    tokio::time::sleep(Duration::from_secs_f64(world.args.prep_s)).await;
    world.orders.entry(order.to_owned()).or_default().ready_at = Some(Instant::now());
    match world
        .nodes
        .step(
            &seller.token,
            &path,
            &json!({ "status": "ready_for_rider" }),
        )
        .await
    {
        Ok(_) => {
            Counters::bump(&world.recorder.counters.orders_ready);
            true
        }
        Err(err) => {
            world.fail(&err.kind);
            false
        }
    }
}

/// Customers place and pay orders at the set rate until the duration or the count is reached.
async fn place_orders(world: &Arc<World>, shops: &[(Shop, Point)], customers: Vec<Customer>) {
    let args = &world.args;
    let deadline = tokio::time::Instant::now() + args.duration();
    if args.order_rate <= 0.0 {
        tokio::time::sleep_until(deadline).await;
        return;
    }
    // First in, first out: each customer orders at the run's rate over the customers, as a city's
    // would, and not the one who just finished over and over (which the node's per-user order
    // limit refused: 2 311 of 2 400 orders in a 120 s run at 20 orders/s).
    let idle = Arc::new(Mutex::new(std::collections::VecDeque::from(customers)));
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / args.order_rate));
    tick.set_missed_tick_behavior(MissedTickBehavior::Burst);
    let mut rng = StdRng::seed_from_u64(args.seed ^ 0x0_4d);
    let mut placed = 0_u64;
    let mut flows = Vec::new();
    while tokio::time::Instant::now() < deadline && args.max_orders.is_none_or(|max| placed < max) {
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => break,
            _ = tick.tick() => {}
        }
        let Some(customer) = idle.lock().await.pop_front() else {
            world.fail("no_idle_customer");
            continue;
        };
        let Some(shop) = shop_in_reach(shops, customer.home, args.delivery_km, &mut rng) else {
            world.fail("no_restaurant_in_reach");
            idle.lock().await.push_back(customer);
            continue;
        };
        placed += 1;
        let item = shop.items[rng.random_range(0..shop.items.len())].clone();
        let quantity = rng.random_range(1..=3);
        let (world, idle) = (Arc::clone(world), Arc::clone(&idle));
        flows.push(tokio::spawn(async move {
            order_and_pay(&world, &customer, &item, quantity).await;
            idle.lock().await.push_back(customer);
        }));
    }
    for flow in flows {
        let _ = flow.await;
    }
}

/// A restaurant delivering to `home`, at random among those within `delivery_km` (less a
/// margin: the harness measures on a flat map, the node on the sphere).
fn shop_in_reach<'a>(
    shops: &'a [(Shop, Point)],
    home: Point,
    delivery_km: f64,
    rng: &mut impl Rng,
) -> Option<&'a Shop> {
    let reach_m = delivery_km * 1000.0 * 0.98;
    let near: Vec<&Shop> = shops
        .iter()
        .filter(|(_, at)| at.distance_m(home) <= reach_m)
        .map(|(shop, _)| shop)
        .collect();
    (!near.is_empty()).then(|| near[rng.random_range(0..near.len())])
}

/// Signs accounts of its own in and out at `--churn-rate` cycles a second until the load ends,
/// each cycle on the node its account's token picks.
async fn churn(world: Arc<World>, run_id: String) {
    let args = &world.args;
    if args.churn_rate <= 0.0 {
        return;
    }
    let deadline = tokio::time::Instant::now() + args.duration();
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / args.churn_rate));
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut cycles = Vec::new();
    for turn in 0_usize.. {
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => break,
            _ = tick.tick() => {}
        }
        let email = format!(
            "churn-{run_id}-{}@load.tomato.test",
            turn % args.churn_users
        );
        let world = Arc::clone(&world);
        cycles.push(tokio::spawn(async move {
            let started = Instant::now();
            let session = match world.nodes.first().dev_login(&email, "Churning App").await {
                Ok(session) => session,
                Err(_) => return world.fail("churn_sign_in"),
            };
            let logout = world.nodes.call(
                &session.token,
                reqwest::Method::POST,
                "/api/auth/logout",
                None,
                (Retry::Never, None),
            );
            match logout.await {
                Ok(_) => world.recorder.latency(Path::SignInOut, started.elapsed()),
                Err(_) => world.fail("churn_logout"),
            }
        }));
        cycles.retain(|cycle| !cycle.is_finished());
    }
    for cycle in cycles {
        let _ = cycle.await;
    }
}

async fn order_and_pay(world: &World, customer: &Customer, item: &str, quantity: u32) {
    let token = customer.session.token.as_str();
    let nodes = &world.nodes;
    let emptied = nodes.call(
        token,
        reqwest::Method::DELETE,
        "/api/cart",
        None,
        (Retry::Same, None),
    );
    if let Err(err) = emptied.await {
        return world.fail(&err.kind);
    }
    let body = json!({ "itemId": item, "quantity": quantity });
    let added = nodes.call(
        token,
        reqwest::Method::POST,
        "/api/cart/new",
        Some(&body),
        (Retry::Never, None),
    );
    if let Err(err) = added.await {
        return world.fail(&err.kind);
    }
    // One key for the order and its payment, so a call whose answer a dying node took with it
    // is tried again on another node without ordering or paying twice.
    let key = format!("{:032x}", rand::random::<u128>());
    let sent = Instant::now();
    let placed = nodes
        .post_keyed(
            token,
            "/api/order/new",
            &json!({ "addressId": customer.address_id, "paymentMethod": "test" }),
            &key,
        )
        .await;
    let order = match placed {
        Ok(placed) => {
            world.recorder.latency(Path::Placement, sent.elapsed());
            Counters::bump(&world.recorder.counters.orders_placed);
            placed["order"]["id"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        }
        Err(err) => return world.fail(&err.kind),
    };
    world.orders.entry(order.clone()).or_default();
    if let Ok(mut placed) = world.placed.lock() {
        placed.push(order.clone());
    }
    let body = json!({ "orderId": order });
    for step in ["/api/payment/create-order", "/api/payment/verify"] {
        if let Err(err) = nodes.post_keyed(token, step, &body, &key).await {
            // Unpaid, it will never be cooked: stop waiting for it.
            world.orders.remove(&order);
            return world.fail(&err.kind);
        }
    }
    Counters::bump(&world.recorder.counters.orders_paid);
}

/// Waits until every paid order is delivered, or `--drain-s` passes.
async fn drain(world: &World) {
    let deadline = Instant::now() + Duration::from_secs_f64(world.args.drain_s);
    while Instant::now() < deadline && world.orders.iter().any(|t| !t.delivered) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Updates the bar twice a second and samples the node's memory every 5 s.
async fn watch_progress(world: Arc<World>, bar: ProgressBar) {
    let mut last = (Instant::now(), 0_u64);
    let mut second = tokio::time::interval(Duration::from_millis(500));
    let mut ticks = 0_u64;
    loop {
        second.tick().await;
        ticks += 1;
        let c = &world.recorder.counters;
        let acked = world.recorder.samples(Path::Ingest);
        let rate = (acked - last.1) as f64 / last.0.elapsed().as_secs_f64().max(0.001);
        last = (Instant::now(), acked);
        bar.set_position(world.recorder.elapsed().as_secs());
        bar.set_message(format!(
            "loc/s {rate:.0} | orders {} paid {} delivered {} | errors {}",
            c.orders_placed.load(Ordering::Relaxed),
            c.orders_paid.load(Ordering::Relaxed),
            c.delivered.load(Ordering::Relaxed),
            world.recorder.error_count(),
        ));
        if ticks.is_multiple_of(10)
            && let Some(memory) = world.nodes.first().server_memory().await
        {
            world.memory_peak.fetch_max(memory, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn customers_order_only_from_restaurants_that_deliver_to_them() {
        let city = City {
            centre: Point {
                lat: 12.9716,
                lon: 77.5946,
            },
            radius_m: 10_000.0,
        };
        let mut rng = StdRng::seed_from_u64(7);
        let shops: Vec<(Shop, Point)> = (0..50)
            .map(|i| {
                let shop = Shop {
                    seller: Session {
                        token: format!("t{i}"),
                        user_id: format!("u{i}"),
                    },
                    id: format!("shop{i}"),
                    items: vec![format!("item{i}")],
                };
                (shop, city.random_point(&mut rng))
            })
            .collect();
        for _ in 0..200 {
            let home = city.random_point(&mut rng);
            if let Some(shop) = shop_in_reach(&shops, home, 5.0, &mut rng) {
                let (_, at) = shops.iter().find(|(s, _)| s.id == shop.id).expect("a shop");
                assert!(at.distance_m(home) <= 5_000.0);
            }
        }
        // A customer beyond every restaurant's reach orders nothing.
        let far = Point {
            lat: 13.5,
            lon: 77.5946,
        };
        assert!(shop_in_reach(&shops, far, 15.0, &mut rng).is_none());
        // Within reach of all, every restaurant gets chosen in time.
        let mut chosen = std::collections::HashSet::new();
        for _ in 0..2_000 {
            let shop = shop_in_reach(&shops, city.centre, 50.0, &mut rng).expect("in reach");
            chosen.insert(shop.id.clone());
        }
        assert_eq!(chosen.len(), shops.len());
    }
}
