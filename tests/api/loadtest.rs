//! The load-test harness against a real node: short runs over each transport deliver every
//! order, and the report's counts agree with what the node says in its admin statistics.

use serde_json::Value;
use tomato_load::{Command, Report, parse_from};

use crate::helpers::{ADMIN_EMAIL, TestApp, spawn_app, spawn_app_with};

/// A small, fast city: every stage a fraction of a second.
async fn play(app: &TestApp, extra: &[&str]) -> anyhow::Result<Report> {
    play_as(app, ADMIN_EMAIL, extra).await
}

async fn play_as(app: &TestApp, admin: &str, extra: &[&str]) -> anyhow::Result<Report> {
    let target = format!("http://{}", app.addr);
    let mut args = vec![
        "tomato-load",
        "run",
        "--target",
        &target,
        "--admin-email",
        admin,
        "--radius-km",
        "1.5",
        "--restaurants",
        "3",
        "--customers",
        "4",
        "--interval-s",
        "1",
        "--prep-s",
        "0.2",
        "--think-s",
        "0.1",
        "--speed-kmh",
        "3600",
        "--handover-s",
        "0.1",
        "--drain-s",
        "30",
    ];
    args.extend_from_slice(extra);
    let Command::Run(run) = parse_from(args)? else {
        anyhow::bail!("not a run");
    };
    tomato_load::run::run(run).await
}

fn delta(report: &Report, pointer: &str) -> i64 {
    let of = |v: &Value| v.pointer(pointer).and_then(Value::as_i64).unwrap_or(0);
    of(&report.server.stats_after) - of(&report.server.stats_before)
}

/// Every placed order paid, cooked, taken and delivered, as both sides count it.
fn assert_all_delivered(report: &Report, riders: i64) {
    let c = &report.measured.counts;
    assert!(c.orders_placed >= 2, "{}", report.text());
    assert_eq!(c.orders_paid, c.orders_placed, "{}", report.text());
    assert_eq!(c.delivered, c.orders_placed, "{}", report.text());
    assert_eq!(report.undelivered, 0, "{}", report.text());
    assert!(report.measured.errors.is_empty(), "{}", report.text());
    assert_eq!(
        delta(report, "/ordersByStatus/delivered"),
        c.delivered as i64,
        "the node counts the same deliveries"
    );
    assert_eq!(delta(report, "/riders"), riders);
    assert_eq!(delta(report, "/restaurants"), 3);
    assert!(report.measured.counts.locations_acknowledged > 0);
    let ingest = &report.measured.latency_ms["location_ingest"];
    assert_eq!(ingest.count, c.locations_acknowledged);
    assert!(ingest.p50 > 0.0 && ingest.p50 <= ingest.p99 && ingest.p99 <= ingest.max);
    for path in ["order_placement", "ready_to_available", "ready_to_assigned"] {
        assert_eq!(
            report.measured.latency_ms[path].count, c.orders_placed,
            "{path}: one sample per order"
        );
    }
    assert!(report.server.memory_peak_bytes.unwrap_or(0) > 1_000_000);
    // Riders really rode: one ride per delivery, pickups no farther than across the 3 km city.
    let rides = &report.measured.rides;
    for ride in [
        "pickup_m",
        "pickup_s",
        "ready_to_picked_up_s",
        "ready_to_delivered_s",
    ] {
        assert_eq!(rides[ride].count, c.delivered, "{ride}: {}", report.text());
    }
    assert!(rides["pickup_m"].max <= 3_100.0, "{}", report.text());
    assert!(
        rides["ready_to_picked_up_s"].p50 <= rides["ready_to_delivered_s"].p50,
        "{}",
        report.text()
    );
    assert!(
        c.busy_s > 0.0 && report.idle_share() < 1.0,
        "{}",
        report.text()
    );
    assert!(report.delivered_per_rider_hour() > 0.0);
}

#[tokio::test]
async fn a_ten_second_city_over_socketio_delivers_every_order() {
    let app = spawn_app().await;
    let report = play(
        &app,
        &[
            "--riders",
            "300",
            "--duration-s",
            "10",
            "--order-rate",
            "0.5",
        ],
    )
    .await
    .expect("the run completes");
    assert_all_delivered(&report, 300);
    // The node's CPU, read when the city is built and at the end: the setup's and the play's.
    let node = &report.server.nodes[0];
    assert!(
        node.setup_cpu_s > 0.0 && node.cpu_s > 0.0,
        "{}",
        report.text()
    );

    // The JSON report parses back, and what the node says now matches it.
    let json = serde_json::to_string(&report).expect("serialise");
    let parsed: Report = serde_json::from_str(&json).expect("the JSON report parses");
    assert_eq!(
        parsed.measured.counts.delivered,
        report.measured.counts.delivered
    );
    let admin = app.dev_login(ADMIN_EMAIL, "Admin").await;
    let stats =
        crate::helpers::json_ok(app.get("/api/admin/stats", Some(&admin.token)).await).await;
    assert_eq!(
        stats["ordersByStatus"]["delivered"], report.measured.counts.delivered,
        "a fresh node: every delivery is the run's"
    );
    assert_eq!(stats["riders"], 300);
    assert_eq!(
        stats["ridersOnline"], 300,
        "nobody is left carrying an order"
    );

    let plots = tempfile::tempdir().expect("temp dir");
    report.plot(plots.path()).expect("plots");
    for file in ["latency.svg", "rate.svg", "orders.svg"] {
        let svg = std::fs::read_to_string(plots.path().join(file)).expect(file);
        assert!(svg.contains("<svg") && svg.contains("polyline"), "{file}");
    }
}

#[tokio::test]
async fn plain_websocket_and_http_riders_deliver_too_with_batched_dispatch() {
    let app = spawn_app_with(&[
        ("TOMATO_DISPATCH__MODE", "batched"),
        ("TOMATO_DISPATCH__BATCH_WINDOW_MS", "250"),
    ])
    .await;
    let ws = play(
        &app,
        &[
            "--transport",
            "ws",
            "--riders",
            "60",
            "--duration-s",
            "5",
            "--order-rate",
            "0.5",
        ],
    )
    .await
    .expect("the ws run completes");
    assert_all_delivered(&ws, 60);
    // HTTP riders hold no socket: they learn of offers from GET /api/rider/offers.
    let http = play(
        &app,
        &[
            "--transport",
            "http",
            "--riders",
            "60",
            "--duration-s",
            "5",
            "--order-rate",
            "0.5",
        ],
    )
    .await
    .expect("the http run completes");
    assert_all_delivered(&http, 60);
}

#[tokio::test]
async fn a_run_without_an_admin_account_is_refused_with_the_fix() {
    let app = spawn_app().await;
    let err = play_as(&app, "nobody@load.test", &["--riders", "1"])
        .await
        .expect_err("refused");
    let message = format!("{err:#}");
    assert!(message.contains("auth.admin_emails"), "{message}");
    assert!(message.contains("tomato admin grant"), "{message}");
}

/// A node for geo-compare, and its URL: the comparison sends each rider's positions far faster
/// than the node lets one rider send by default.
async fn unlimited_positions() -> (TestApp, String) {
    let app = spawn_app_with(&[
        ("TOMATO_LIMITS__POSITIONS_PER_SECOND", "1000000"),
        ("TOMATO_LIMITS__POSITIONS_BURST", "1000000"),
    ])
    .await;
    let target = format!("http://{}", app.addr);
    (app, target)
}

/// `geo-compare` against `target` in a 2 km city, with `extra` arguments.
fn geo_args(target: &str, extra: &[&str]) -> tomato_load::cli::GeoArgs {
    let mut args = vec![
        "tomato-load",
        "geo-compare",
        "--target",
        target,
        "--admin-email",
        ADMIN_EMAIL,
        "--radius-km",
        "2",
    ];
    args.extend_from_slice(extra);
    match parse_from(args).expect("arguments") {
        Command::GeoCompare(args) => args,
        _ => panic!("not geo-compare"),
    }
}

#[tokio::test]
async fn geo_compare_runs_one_workload_on_redis_and_on_the_node() {
    let (_app, target) = unlimited_positions().await;
    let args = geo_args(
        &target,
        &[
            "--riders",
            "40",
            "--updates",
            "400",
            "--queries",
            "100",
            "--connections",
            "2",
            "--pipeline",
            "4",
        ],
    );
    // Its own redis-server on a free port, started and stopped by the harness.
    let comparison = tomato_load::geo::compare(args)
        .await
        .expect("both sides ran");
    let (Some(redis), Some(tomato), Some(bare)) =
        (&comparison.redis, &comparison.tomato, &comparison.bare)
    else {
        panic!("every side runs by default: {comparison:?}");
    };
    for (side, phase) in [
        ("redis updates", &redis.updates),
        ("redis queries", &redis.queries),
        ("tomato updates", &tomato.updates),
        ("tomato queries", &tomato.queries),
    ] {
        assert_eq!(phase.errors, 0, "{side}");
        assert!(
            phase.per_s > 0.0 && phase.p99_ms >= phase.p50_ms,
            "{side}: {phase:?}"
        );
    }
    assert_eq!(redis.updates.ops, 400);
    assert_eq!(tomato.queries.ops, 100);
    // 40 riders in a 2 km city: every query finds five, on both sides.
    assert_eq!(redis.queries.mean_results, Some(5.0));
    assert_eq!(tomato.queries.mean_results, Some(5.0));
    assert_eq!(
        comparison.query_rate_ratio,
        Some(tomato.queries.per_s / redis.queries.per_s)
    );
    assert!(comparison.text().contains("ratio tomato/redis"));
    // The bare ceiling took the same requests, refused none, and the fractions are computed.
    assert_eq!(bare.updates.ops, 400);
    assert_eq!(bare.updates.errors, 0);
    assert_eq!(bare.queries.errors, 0);
    assert_eq!(
        comparison.update_ceiling_fraction,
        Some(tomato.updates.per_s / bare.updates.per_s)
    );
    assert_eq!(
        comparison.query_ceiling_fraction,
        Some(tomato.queries.per_s / bare.queries.per_s)
    );
    assert!(comparison.text().contains("fraction of the bare ceiling"));
    // Tile38 runs the same workload when this machine has a `tile38-server`; otherwise the
    // report says in one line that it was left out, and why.
    if tomato_load::cli::tile38_installed() {
        let tile38 = comparison.tile38.as_ref().expect("tile38 ran");
        assert_eq!((tile38.updates.ops, tile38.updates.errors), (400, 0));
        assert_eq!(tile38.queries.mean_results, Some(5.0));
        assert_eq!(
            comparison.tile38_query_rate_ratio,
            Some(tomato.queries.per_s / tile38.queries.per_s)
        );
    } else {
        assert!(comparison.tile38.is_none());
        assert!(
            comparison
                .text()
                .contains("tile38: skipped, no tile38-server"),
            "{}",
            comparison.text()
        );
    }
}

/// `--sides` runs only the sides named (here the node alone, as when profiling it): no Redis is
/// started, and no ratio is made up for the sides left out.
#[tokio::test]
async fn geo_compare_runs_only_the_sides_named() {
    let (_app, target) = unlimited_positions().await;
    let args = geo_args(
        &target,
        &[
            "--riders",
            "10",
            "--updates",
            "50",
            "--queries",
            "20",
            "--sides",
            "tomato-http",
            "--redis",
            "redis://127.0.0.1:1/",
        ],
    );
    // The Redis given is closed: it is not dialled when Redis is not a side.
    let comparison = tomato_load::geo::compare(args)
        .await
        .expect("the node's side ran");
    assert!(comparison.redis.is_none() && comparison.bare.is_none());
    let tomato = comparison.tomato.as_ref().expect("tomato-http ran");
    assert_eq!((tomato.updates.ops, tomato.updates.errors), (50, 0));
    assert_eq!((tomato.queries.ops, tomato.queries.errors), (20, 0));
    assert_eq!(comparison.query_rate_ratio, None);
    assert_eq!(comparison.query_ceiling_fraction, None);
    let text = comparison.text();
    assert!(
        text.contains("tomato queries") && !text.contains("redis"),
        "{text}"
    );
}

#[tokio::test]
async fn geo_compare_streams_positions_to_every_side_at_fixed_rates() {
    let (_app, target) = unlimited_positions().await;
    let args = geo_args(
        &target,
        &[
            "--mode", "stream", "--riders", "20", "--rates", "20,40", "--step-s", "1",
        ],
    );
    let streaming = tomato_load::geo::stream(args)
        .await
        .expect("every side ran");
    let names: Vec<&str> = streaming.sides.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "bare-ws",
            "tomato-ws",
            "bare-socketio",
            "tomato-socketio",
            "redis",
            "tile38"
        ]
    );
    // Tile38 runs when this machine has a `tile38-server`, else it is listed as skipped.
    let tile38_installed = tomato_load::cli::tile38_installed();
    for side in &streaming.sides {
        if side.name == "tile38" && !tile38_installed {
            let why = side.skipped.as_deref().unwrap_or_default();
            assert!(why.starts_with("no tile38-server on the PATH"), "{why}");
            continue;
        }
        assert_eq!(side.skipped, None, "{}", streaming.text());
        assert_eq!(side.steps.len(), 2, "{}", side.name);
        for step in &side.steps {
            // The schedule is fixed: one second at 20 (or 40) a second is 20 (or 40) sends,
            // however fast the side answers; every one was acknowledged.
            assert_eq!(
                step.sent as f64,
                step.offered_per_s,
                "{}: {}",
                side.name,
                streaming.text()
            );
            assert_eq!(step.errors, 0, "{}: {}", side.name, streaming.text());
            assert!(step.achieved_per_s > 0.0);
            assert!(step.p999_ms >= step.p99_ms && step.p99_ms >= step.p50_ms);
        }
    }
    // Each ratio is the two sides' held rates divided, when both held one (timing decides
    // which steps hold, so the test checks the arithmetic, not the speed).
    let held = |name: &str| {
        streaming
            .sides
            .iter()
            .find(|s| s.name == name)
            .and_then(|s| s.holds_per_s)
    };
    assert_eq!(streaming.ratios.len(), 6);
    for (pair, ratio) in &streaming.ratios {
        let (a, b) = pair.split_once(" / ").expect("a / b");
        let expected = held(a).zip(held(b)).map(|(a, b)| a / b);
        assert_eq!(*ratio, expected, "{pair}: {}", streaming.text());
    }
    let text = streaming.text();
    assert!(text.contains("tomato-ws / bare-ws"), "{text}");
    assert!(text.contains("tomato-socketio / bare-socketio"), "{text}");
}
