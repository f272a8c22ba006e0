//! The fault campaign's short form: three node processes on Cassandra and Redis, played by the
//! harness with its history recorded, while every nemesis strikes once — a slowed, then
//! stalled, then cut link between one node and Redis, Redis paused, every pub/sub connection
//! cut, a node killed with kill -9 and started again, a node paused past its leases, Redis
//! restarted empty, and one node running 35 s ahead the whole time (the environment picks
//! other nemeses, skews and lengths for the long campaigns: see [`Plan`]). Once the faults heal and the city is
//! quiet, the checker holds what every client was told against the orders as they ended.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::Value;
use tomato_load::check::Finding;
use tomato_load::history::Kind;
use tomato_load::nemesis::{self, Link, Proxy};
use tomato_load::{Command, parse_from};

use crate::cluster::{ClusterEnv, Node, Redis, SHARDS, admin_token, settled};
use crate::helpers::ADMIN_EMAIL;

/// The three nodes' ids.
const IDS: [&str; 3] = ["node-a", "node-b", "node-c"];
/// How far ahead node-c's wall clock runs, unless `TOMATO_CAMPAIGN_SKEW_S` says otherwise.
const SKEW_S: i64 = 35;
/// The nemeses of a round, by the names `TOMATO_CAMPAIGN_NEMESES` takes (all by default).
const NEMESES: [&str; 7] = [
    "link",
    "redis-pause",
    "pubsub",
    "kill",
    "pause",
    "redis-restart",
    "skew",
];

/// What a campaign plays: the suite's short form by default; the long campaigns of the
/// performance notes set `TOMATO_CAMPAIGN_MINUTES` (the schedule strikes again and again for
/// that long), `TOMATO_CAMPAIGN_ORDER_RATE`, `TOMATO_CAMPAIGN_FAULTS=none` for the run beside
/// it with no fault at all, `TOMATO_CAMPAIGN_NEMESES` (a comma-separated few of [`NEMESES`])
/// for a campaign of one nemesis, and `TOMATO_CAMPAIGN_SKEW_S` (negative: behind).
struct Plan {
    play_s: u64,
    order_rate: String,
    nemeses: Vec<String>,
    skew_s: i64,
}

impl Plan {
    fn from_env() -> Plan {
        let var = |name: &str| std::env::var(name).ok();
        Plan {
            play_s: var("TOMATO_CAMPAIGN_MINUTES")
                .and_then(|m| m.parse::<u64>().ok())
                .map_or(130, |m| m * 60),
            order_rate: var("TOMATO_CAMPAIGN_ORDER_RATE").unwrap_or_else(|| "1.5".into()),
            nemeses: match var("TOMATO_CAMPAIGN_FAULTS").as_deref() {
                Some("none") => Vec::new(),
                _ => var("TOMATO_CAMPAIGN_NEMESES").map_or_else(
                    || NEMESES.map(str::to_owned).to_vec(),
                    |names| {
                        let names: Vec<String> =
                            names.split(',').map(|n| n.trim().to_owned()).collect();
                        for name in &names {
                            assert!(
                                NEMESES.contains(&name.as_str()),
                                "TOMATO_CAMPAIGN_NEMESES: {name:?} is none of {NEMESES:?}"
                            );
                        }
                        names
                    },
                ),
            },
            skew_s: var("TOMATO_CAMPAIGN_SKEW_S")
                .and_then(|s| s.parse().ok())
                .unwrap_or(SKEW_S),
        }
    }

    /// Whether the campaign strikes with `nemesis`.
    fn strikes(&self, nemesis: &str) -> bool {
        self.nemeses.iter().any(|n| n == nemesis)
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// How each node is started, the same way again after a kill: a fixed port (its clients keep
/// their address), node-a's Redis through the proxy, node-c's clock ahead.
struct Starts {
    cluster: ClusterEnv,
    ports: [u16; 3],
    proxied: String,
    skewed: Vec<(&'static str, String)>,
}

impl Starts {
    fn start(&self, i: usize) -> Node {
        let bind = format!("127.0.0.1:{}", self.ports[i]);
        let mut extra: Vec<(&str, &str)> = vec![("TOMATO_SERVER__BIND", bind.as_str())];
        if i == 0 {
            extra.push(("TOMATO_CLUSTER__REDIS_URL", self.proxied.as_str()));
        }
        if i == 2 {
            extra.extend(self.skewed.iter().map(|(k, v)| (*k, v.as_str())));
        }
        self.cluster.start_setting(IDS[i], SHARDS, &extra)
    }
}

/// Orders the nodes hold, of any status (the city is playing once there are some).
async fn orders_stored(node: &Node, token: &str) -> i64 {
    let stats: Value = reqwest::Client::new()
        .get(node.url("/api/admin/stats"))
        .bearer_auth(token)
        .send()
        .await
        .expect("stats")
        .json()
        .await
        .unwrap_or_default();
    stats["ordersByStatus"]
        .as_object()
        .map(|by| by.values().filter_map(Value::as_i64).sum())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_short_fault_campaign_ends_with_a_clean_check() {
    let plan = Plan::from_env();
    let mut redis = Redis::start();
    let redis_port = redis.port;
    let proxy = Proxy::start(SocketAddr::from(([127, 0, 0, 1], redis_port)))
        .await
        .expect("proxy");
    let starts = Starts {
        cluster: ClusterEnv::new(&redis),
        ports: [free_port(), free_port(), free_port()],
        proxied: format!("redis://{}", proxy.addr()),
        skewed: if plan.strikes("skew") {
            nemesis::skewed_clock(plan.skew_s).expect("libfaketime")
        } else {
            Vec::new()
        },
    };
    let mut nodes: Vec<Node> = (0..3).map(|i| starts.start(i)).collect();
    let token = admin_token(&nodes[1]).await;
    settled(&nodes[1], &token, &IDS, Duration::from_secs(30)).await;

    let play_s = plan.play_s.to_string();
    let dir = tempfile::tempdir().expect("dir");
    let history = dir.path().join("history.jsonl");
    let targets: Vec<String> = nodes.iter().map(|n| format!("http://{}", n.addr)).collect();
    let mut args = vec![
        "tomato-load".to_owned(),
        "run".to_owned(),
        "--history".to_owned(),
        history.display().to_string(),
    ];
    for target in &targets {
        args.extend(["--target".to_owned(), target.clone()]);
    }
    for (flag, value) in [
        ("--admin-email", ADMIN_EMAIL),
        ("--radius-km", "1.5"),
        ("--riders", "12"),
        ("--restaurants", "3"),
        ("--customers", "10"),
        ("--order-rate", plan.order_rate.as_str()),
        ("--interval-s", "1"),
        ("--prep-s", "0.5"),
        ("--think-s", "0.3"),
        ("--speed-kmh", "3600"),
        ("--handover-s", "0.2"),
        ("--duration-s", play_s.as_str()),
        ("--drain-s", "60"),
        ("--transport", "ws"),
    ] {
        args.extend([flag.to_owned(), value.to_owned()]);
    }
    let Command::Run(run) = parse_from(args).expect("arguments") else {
        panic!("not a run");
    };
    // The harness plays the city while the schedule strikes (one task: the harness's future
    // borrows what it plays).
    let schedule = async {
        // The city is built and playing before the first fault.
        let started = Instant::now();
        while orders_stored(&nodes[1], &token).await < 3 {
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "the city never started"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let pause = |s: u64| tokio::time::sleep(Duration::from_secs(s));
        // A round strikes with each nemesis of the plan in turn (every one: about 110 s);
        // rounds go on while the city plays, and the short form plays one.
        let mut striking = plan.nemeses.iter().any(|n| n != "skew");
        let mut round = 0;
        while striking {
            round += 1;
            let began = Instant::now();
            eprintln!("campaign: round {round}");
            if plan.strikes("link") {
                eprintln!("campaign: node-a's link to Redis slowed to 2.5 s for 8 s");
                proxy.set(Link::Delay(Duration::from_millis(2500)));
                pause(8).await;
                proxy.set(Link::Stalled);
                eprintln!("campaign: node-a's link to Redis stalled for 3 s");
                pause(3).await;
                eprintln!("campaign: node-a cut off from Redis for 5 s");
                proxy.set(Link::Down);
                pause(5).await;
                proxy.set(Link::Clear);
                pause(8).await;
            }
            if plan.strikes("redis-pause") {
                eprintln!("campaign: Redis paused (SIGSTOP) for 3 s");
                nemesis::signal(redis.child.id(), "-STOP").expect("stop redis");
                pause(3).await;
                nemesis::signal(redis.child.id(), "-CONT").expect("cont redis");
                pause(8).await;
            }
            if plan.strikes("pubsub") {
                let cut = nemesis::kill_pubsub(&redis.url())
                    .await
                    .expect("client kill");
                eprintln!("campaign: CLIENT KILL TYPE pubsub cut {cut} connections");
                pause(8).await;
            }
            if plan.strikes("kill") {
                eprintln!("campaign: node-b killed (kill -9), back in 10 s");
                tokio::task::block_in_place(|| nodes[1].kill9());
                pause(10).await;
                // Starting a process blocks; the harness's tasks go on on the other workers.
                nodes[1] = tokio::task::block_in_place(|| starts.start(1));
                pause(12).await;
            }
            if plan.strikes("pause") {
                eprintln!("campaign: node-c paused (SIGSTOP) for 10 s, past its leases");
                nodes[2].signal("-STOP");
                pause(10).await;
                nodes[2].signal("-CONT");
                pause(12).await;
            }
            if plan.strikes("redis-restart") {
                eprintln!("campaign: Redis restarted empty");
                redis.kill();
                redis = tokio::task::block_in_place(|| Redis::start_on(redis_port));
                pause(10).await;
            }
            // Another round only if it ends while the city still plays.
            striking = started.elapsed() + began.elapsed() <= Duration::from_secs(plan.play_s);
        }
    };
    let (report, ()) = tokio::join!(tomato_load::run::run(run), schedule);
    let report = report.expect("harness run");
    eprintln!("{}", report.text());
    // Healed: every shard has one owner among the three again, and the city is quiet.
    let token = admin_token(&nodes[0]).await;
    settled(&nodes[0], &token, &IDS, Duration::from_secs(60)).await;
    tokio::time::sleep(Duration::from_secs(5)).await;

    let check = parse_from([
        "tomato-load",
        "check",
        &history.display().to_string(),
        "--target",
        &targets[0],
        "--admin-email",
        ADMIN_EMAIL,
        "--skew-s",
        &(plan.skew_s.abs() + 5).to_string(),
    ])
    .expect("arguments");
    let Command::Check(check) = check else {
        panic!("not a check");
    };
    let (findings, orders) = tomato_load::check::against_nodes(&check)
        .await
        .expect("check");
    let events = tomato_load::history::read(&history).expect("history");
    let ok = |f: tomato_load::history::Op| {
        events
            .iter()
            .filter(|e| e.f == f && e.kind == Kind::Ok)
            .count()
    };
    let kinds = [Kind::Ok, Kind::Fail, Kind::Info]
        .map(|kind| events.iter().filter(|e| e.kind == kind).count());
    eprintln!(
        "campaign: {} events ({} ok, {} fail, {} info), {} orders, {} placed ok, {} accepts ok, findings: {findings:#?}",
        events.len(),
        kinds[0],
        kinds[1],
        kinds[2],
        orders.len(),
        ok(tomato_load::history::Op::Place),
        ok(tomato_load::history::Op::Accept),
    );
    assert!(
        ok(tomato_load::history::Op::Place) >= 20,
        "too little was played"
    );
    assert!(
        ok(tomato_load::history::Op::Accept) >= 10,
        "too little was played"
    );
    // What a finding is about, for whoever reads a failed run: the orders it names, step by
    // step, and what the history says of them.
    for finding in &findings {
        let named = match finding {
            Finding::RiderTwice { first, second, .. } => vec![first, second],
            Finding::NotAPath { order, .. }
            | Finding::OkLost { order, .. }
            | Finding::FailDone { order, .. }
            | Finding::Accepts { order, .. }
            | Finding::Money { order, .. }
            | Finding::Overdue { order } => vec![order],
            _ => Vec::new(),
        };
        for id in named {
            eprintln!(
                "campaign: {finding}: order {id} ended as {:#?}",
                orders.get(id)
            );
            for event in events.iter().filter(|e| e.order.as_ref() == Some(id)) {
                eprintln!("  {}", serde_json::to_string(event).unwrap_or_default());
            }
        }
    }
    assert!(findings.is_empty(), "the checker found {findings:#?}");
    drop(redis);
}
