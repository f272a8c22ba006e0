//! Admin statistics against a scenario whose numbers the test knows.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{error_code, json_ok, spawn_app};
use crate::riders::rider;
use crate::world::{HOME_AT, SHOP_AT, customer, open_shop, paid_order};

async fn stats(app: &crate::helpers::TestApp, token: &str) -> Value {
    json_ok(app.get("/api/admin/stats", Some(token)).await).await
}

#[tokio::test]
async fn stats_match_a_known_scenario() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    let shop = open_shop(&app, "stats-seller@x.test", "Stats Kitchen", SHOP_AT).await;
    let (_, first) = paid_order(&app, &shop, "stats-a@x.test").await;
    paid_order(&app, &shop, "stats-b@x.test").await;
    let waiting = customer(&app, "stats-c@x.test", HOME_AT).await;
    waiting.add(&app, &shop.items[1], 1).await;
    waiting.order(&app).await;
    let (ravi, _) = rider(&app, "stats-ravi@x.test", SHOP_AT, true).await;
    rider(&app, "stats-asha@x.test", SHOP_AT, true).await;
    rider(&app, "stats-off@x.test", SHOP_AT, false).await;

    let now = stats(&app, &admin.token).await;
    // admin, seller, three customers, three riders.
    assert_eq!(now["users"], 8);
    assert_eq!(now["restaurants"], 1);
    assert_eq!(now["riders"], 3);
    assert_eq!(now["ridersOnline"], 2, "the offline rider is not counted");
    assert_eq!(now["nodes"], 1, "a single node sums its own memory");
    assert_eq!(now["ordersByStatus"], json!({ "placed": 3 }));
    // Two paid orders of 2 x 60 rupees: 120 + 49 delivery + 7 fee each; the unpaid one counts
    // for nothing.
    assert_eq!(now["revenueToday"], 2 * 17600);
    assert_eq!(now["platformFeesToday"], 2 * 700);
    assert_eq!(
        now["dispatch"],
        json!({ "offers": 0, "accepts": 0, "timeouts": 0, "medianAssignSeconds": null })
    );
    let cells = now["cells"].as_array().expect("cells");
    assert_eq!(cells.len(), 1, "{cells:?}");
    assert_eq!(cells[0]["availableRiders"], 2);
    assert_eq!(cells[0]["openOrders"], 3);
    assert_eq!(
        (&cells[0]["waitingOrders"], &cells[0]["demandRatio"]),
        (&json!(0), &json!(0.0))
    );

    for status in ["accepted", "preparing", "ready_for_rider"] {
        json_ok(shop.set_status(&app, &first, status).await).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let ready = stats(&app, &admin.token).await;
    let cell = &ready["cells"][0];
    assert_eq!(
        (&cell["waitingOrders"], &cell["demandRatio"]),
        (&json!(1), &json!(0.5)),
        "one order waits for two free riders: {cell}"
    );
    let accepted = app
        .request(
            reqwest::Method::POST,
            &format!("/api/rider/orders/{first}/accept"),
            Some(&ravi.token),
            None,
        )
        .await;
    assert_eq!(accepted.status(), StatusCode::OK);
    let later = stats(&app, &admin.token).await;
    assert_eq!(
        later["dispatch"]["offers"], 2,
        "both free riders were offered the order"
    );
    assert_eq!(later["dispatch"]["accepts"], 1);
    assert!(
        later["dispatch"]["medianAssignSeconds"]
            .as_f64()
            .is_some_and(|s| (0.0..10.0).contains(&s))
    );
    assert_eq!(later["ridersOnline"], 1, "the busy rider takes no offers");
    assert_eq!(
        later["ordersByStatus"],
        json!({ "placed": 2, "rider_assigned": 1 })
    );

    let customer = app.dev_login("stats-nosy@x.test", "Nosy").await;
    let response = app.get("/api/admin/stats", Some(&customer.token)).await;
    assert_eq!(
        error_code(response, StatusCode::FORBIDDEN).await,
        "forbidden"
    );
}
