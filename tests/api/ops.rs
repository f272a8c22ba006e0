//! The operations page: its data routes (`GET /api/admin/ops`, `ops:snapshot` over `/ws`) on a
//! small city whose numbers the test knows, and the page itself in a real browser (the
//! system's Chromium, headless, driven by playwright-core from npm).

use std::path::PathBuf;
use std::process::Command;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::dispatch::make_ready;
use crate::helpers::{TestApp, error_code, json_ok, spawn_app};
use crate::riders::{move_to, rider};
use crate::sockets::WsClient;
use crate::world::{SHOP_AT, open_shop, paid_order};

fn browser_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

/// Installs the pinned playwright-core once (it downloads no browser).
fn ensure_installed() {
    crate::helpers::npm_ci(&browser_dir(), "playwright-core", "the browser test");
}

/// The system's Chromium: `TOMATO_TEST_CHROMIUM`, else `chromium` on the PATH.
fn chromium() -> PathBuf {
    if let Some(path) = std::env::var_os("TOMATO_TEST_CHROMIUM") {
        return PathBuf::from(path);
    }
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join("chromium"))
                .find(|candidate| candidate.is_file())
        })
        .unwrap_or_else(|| {
            panic!(
                "the operations page test needs Chromium: `apt-get install chromium`, or set \
                 TOMATO_TEST_CHROMIUM to its path"
            )
        })
}

/// A city the test knows: three free riders by one shop, and one order ready there that none
/// of them takes (offers go out and stand).
struct City {
    app: TestApp,
    admin: String,
    customer: String,
    order: String,
}

async fn city() -> City {
    let app = spawn_app().await;
    let admin = app.admin().await.token;
    let shop = open_shop(&app, "ops-seller@x.test", "Ops Kitchen", SHOP_AT).await;
    for name in ["ops-a", "ops-b", "ops-c"] {
        let (session, _) = rider(&app, &format!("{name}@x.test"), SHOP_AT, true).await;
        move_to(&app, &session, SHOP_AT).await;
    }
    let (buyer, order) = paid_order(&app, &shop, "ops-buyer@x.test").await;
    make_ready(&app, &shop, &order).await;
    City {
        app,
        admin,
        customer: buyer.session.token.clone(),
        order,
    }
}

/// `GET /api/admin/cluster/owner` of the shop.
async fn shop_zone(app: &TestApp, admin: &str) -> Value {
    let path = format!(
        "/api/admin/cluster/owner?lat={}&lon={}",
        SHOP_AT.0, SHOP_AT.1
    );
    json_ok(app.get(&path, Some(admin)).await).await
}

#[tokio::test]
async fn the_snapshot_counts_the_city_and_admins_alone_get_it() {
    let City {
        app,
        admin,
        customer,
        order,
    } = city().await;
    let snapshot = json_ok(app.get("/api/admin/ops", Some(&admin)).await).await;
    let counters = &snapshot["counters"];
    assert_eq!(counters["ridersOnline"], 3, "{snapshot}");
    assert_eq!(counters["ridersReporting"], 3);
    assert_eq!(counters["openByStatus"], json!({ "ready_for_rider": 1 }));
    assert_eq!(snapshot["waitingTotal"], 1);
    assert_eq!(snapshot["waiting"][0]["orderId"], order.as_str());
    assert_eq!(snapshot["waiting"][0]["restaurantName"], "Ops Kitchen");
    assert_eq!(snapshot["riders"]["total"], 3);
    assert_eq!(snapshot["riders"]["shown"], 3);
    assert_eq!(snapshot["resolution"], 8);
    assert_eq!(snapshot["nodes"], 1);
    // The shop's cell: one order waiting, three riders free.
    let cells = snapshot["cells"].as_array().expect("cells");
    assert_eq!(cells.len(), 1, "{cells:?}");
    let cell = &cells[0];
    assert_eq!(
        (
            &cell["availableRiders"],
            &cell["waitingOrders"],
            &cell["openOrders"],
            &cell["demandRatio"],
        ),
        (&json!(3), &json!(1), &json!(1), &json!(0.33))
    );
    assert_eq!(cell["boundary"].as_array().map(Vec::len), Some(6));
    // The zone under it, and its owner, as the cluster's owner route tells them.
    let owner = shop_zone(&app, &admin).await;
    assert_eq!(
        snapshot["zones"].as_array().map(Vec::len),
        Some(1),
        "{snapshot}"
    );
    let zone = &snapshot["zones"][0];
    assert_eq!(
        (&zone["zone"], &zone["shard"], &zone["owner"]),
        (&owner["zone"], &owner["shard"], &owner["owner"])
    );
    assert!(
        zone["owner"].is_string(),
        "a single node owns its zones: {zone}"
    );
    assert_eq!(zone["boundary"].as_array().map(Vec::len), Some(6));

    let refused = app.get("/api/admin/ops", Some(&customer)).await;
    assert_eq!(
        error_code(refused, StatusCode::FORBIDDEN).await,
        "forbidden"
    );
    let anonymous = app.get("/api/admin/ops", None).await;
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);

    // Over the socket: the admin's subscription brings snapshots, a customer's is refused.
    let mut watching = WsClient::connect(&app, &admin).await.expect("ws");
    watching
        .send_raw(json!({ "event": "ops:subscribe", "id": 1 }))
        .await;
    assert_eq!(watching.ack(1).await, json!({ "ok": true }));
    let live: Value = watching.event("ops:snapshot").await;
    assert_eq!(live["counters"]["ridersOnline"], 3);
    let mut nosy = WsClient::connect(&app, &customer).await.expect("ws");
    nosy.send_raw(json!({ "event": "ops:subscribe", "id": 1 }))
        .await;
    assert_eq!(nosy.ack(1).await["error"]["code"], "forbidden");
}

#[tokio::test]
async fn the_page_shows_the_city_in_a_browser() {
    let City {
        app,
        admin,
        customer,
        ..
    } = city().await;
    let owner = shop_zone(&app, &admin).await["owner"].clone();
    ensure_installed();
    let chromium = chromium();
    let screenshot = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/ops-page.png");
    let output = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .arg(browser_dir().join("ops.mjs"))
            .arg(format!("http://{}", app.addr))
            .arg(&chromium)
            .arg(&admin)
            .arg(&customer)
            .arg("3")
            .arg("1")
            .arg(&screenshot)
            .output()
            .expect("node is needed for the browser test")
    })
    .await
    .expect("browser run");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let report: Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|_| {
        panic!(
            "the browser script printed no report: {stdout} {}",
            String::from_utf8_lossy(&output.stderr)
        )
    });
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(
        report["missing"],
        json!([]),
        "every file the page asked for was there"
    );
    assert_eq!(report["signInFirst"], true, "only the form before a token");
    assert_eq!(report["customerSeesNoData"], true);
    assert!(
        report["customerRefused"]
            .as_str()
            .is_some_and(|m| m.contains("not an admin")),
        "{report}"
    );
    assert_eq!(
        (&report["ridersOnline"], &report["waiting"]),
        (&json!("3"), &json!("1"))
    );
    assert_eq!(report["waitingItems"], 1);
    assert_eq!(report["openReady"], "1");
    assert!(report["cells"].as_u64().is_some_and(|n| n >= 1), "{report}");
    assert_eq!(report["sampleNote"], "The map shows all 3 riders.");
    let owner = owner.as_str().expect("an owner");
    assert_eq!(
        report["zoneOwners"],
        json!([format!("{owner} 1")]),
        "{report}"
    );
    assert!(
        report["scale"]
            .as_str()
            .is_some_and(|s| s.ends_with(" m") || s.ends_with(" km")),
        "{report}"
    );
    // The pointer over the middle of the map reads coordinates near the shop.
    let cursor: Vec<f64> = report["cursor"]
        .as_str()
        .unwrap_or_default()
        .split(", ")
        .filter_map(|n| n.parse().ok())
        .collect();
    assert!(
        cursor.len() == 2
            && (cursor[0] - SHOP_AT.0).abs() < 0.05
            && (cursor[1] - SHOP_AT.1).abs() < 0.05,
        "{report}"
    );
    assert!(
        report["drawnColours"].as_u64().is_some_and(|n| n >= 3),
        "{report}"
    );
    assert_eq!(report["fragmentCleared"], true);
    assert_eq!(report["errors"], json!([]), "no script errors on the page");
    eprintln!(
        "operations page screenshot: {}",
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("target/ops-page.png")
            .display()
    );
}
