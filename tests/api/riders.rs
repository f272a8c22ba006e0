//! Riders over HTTP: profiles, verification, availability, the location stream and the nearby
//! search.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{
    INTERNAL_KEY, Session, Store, TestApp, error_code, json_ok, spawn_app, spawn_app_on,
    spawn_app_with,
};

/// A registered rider at `at`; verified and online when `online`.
pub async fn rider(app: &TestApp, email: &str, at: (f64, f64), online: bool) -> (Session, String) {
    let session = app.user_with_role(email, "rider").await;
    let created = app
        .post(
            "/api/rider/new",
            Some(&session.token),
            &json!({
                "phoneNumber": "+91 98450 11111",
                "aadharNumber": "1234 5678 9012",
                "drivingLicenseNumber": "KA01-2019-0001234",
                "location": { "lat": at.0, "lon": at.1 },
            }),
        )
        .await;
    assert_eq!(created.status(), StatusCode::CREATED);
    let id = json_ok(created).await["rider"]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    if online {
        on_duty(app, &session, &id, at).await;
    }
    (session, id)
}

/// Verifies the rider `id`, puts it on duty, and reports it at `at`.
pub async fn on_duty(app: &TestApp, rider: &Session, id: &str, at: (f64, f64)) {
    let admin = app.admin().await;
    json_ok(
        app.put(
            &format!("/api/admin/rider/verify/{id}"),
            Some(&admin.token),
            &json!({}),
        )
        .await,
    )
    .await;
    json_ok(
        app.put(
            "/api/rider/availability",
            Some(&rider.token),
            &json!({ "available": true }),
        )
        .await,
    )
    .await;
    move_to(app, rider, at).await;
}

pub async fn move_to(app: &TestApp, rider: &Session, at: (f64, f64)) {
    let response = app
        .put(
            "/api/rider/location",
            Some(&rider.token),
            &json!({ "lat": at.0, "lon": at.1, "heading": 90.0, "speedMps": 8.5 }),
        )
        .await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
}

async fn nearby(app: &TestApp, token: &str, at: (f64, f64)) -> Vec<Value> {
    let body = json_ok(
        app.get(
            &format!(
                "/api/rider/nearby?lat={}&lon={}&radius=5000&limit=10",
                at.0, at.1
            ),
            Some(token),
        )
        .await,
    )
    .await;
    body["riders"].as_array().expect("riders").clone()
}

const MG_ROAD: (f64, f64) = (12.9756, 77.6050);

#[tokio::test]
async fn a_rider_registers_is_verified_goes_online_and_is_found_nearby() {
    let app = spawn_app().await;
    let (session, id) = rider(&app, "ravi@x.test", MG_ROAD, false).await;
    let me = json_ok(app.get("/api/rider/me", Some(&session.token)).await).await["rider"].clone();
    assert_eq!(me["aadharNumber"], "XXXXXXXX9012");
    assert_eq!(me["drivingLicenseNumber"], "XXXXXXXXXXX1234");
    assert_eq!(me["isVerified"], false);
    assert_eq!(me["isAvailable"], false);
    assert_eq!(me["phoneNumber"], "+919845011111");
    assert!(me["cell"].as_str().is_some_and(|c| c.len() == 15), "{me}");

    let again = app
        .post(
            "/api/rider/new",
            Some(&session.token),
            &json!({
                "phoneNumber": "9845011111", "aadharNumber": "123456789012",
                "drivingLicenseNumber": "KA0120190001234", "location": { "lat": 1.0, "lon": 1.0 },
            }),
        )
        .await;
    assert_eq!(
        error_code(again, StatusCode::CONFLICT).await,
        "rider_exists"
    );

    let online = app
        .put(
            "/api/rider/availability",
            Some(&session.token),
            &json!({ "available": true }),
        )
        .await;
    assert_eq!(
        error_code(online, StatusCode::FORBIDDEN).await,
        "rider_not_verified"
    );

    let admin = app.admin().await;
    let pending = json_ok(
        app.get("/api/admin/rider/pending", Some(&admin.token))
            .await,
    )
    .await;
    assert_eq!(pending["riders"][0]["id"], id.as_str());
    assert_eq!(
        pending["riders"][0]["aadharNumber"], "XXXXXXXX9012",
        "admins see masked documents"
    );
    json_ok(
        app.put(
            &format!("/api/admin/rider/verify/{id}"),
            Some(&admin.token),
            &json!({}),
        )
        .await,
    )
    .await;
    assert!(
        nearby(&app, &admin.token, MG_ROAD).await.is_empty(),
        "verified but offline"
    );

    let online = json_ok(
        app.put(
            "/api/rider/availability",
            Some(&session.token),
            &json!({ "available": true }),
        )
        .await,
    )
    .await;
    assert_eq!(online["rider"]["isAvailable"], true);
    move_to(&app, &session, (12.9760, 77.6060)).await;

    let found = nearby(&app, &admin.token, MG_ROAD).await;
    assert_eq!(found.len(), 1);
    assert_eq!(found[0]["id"], id.as_str());
    let distance = found[0]["distanceM"].as_f64().expect("distance");
    assert!((100.0..140.0).contains(&distance), "{distance}");
    assert_eq!(
        found[0]["location"]["lat"]
            .as_f64()
            .map(|l| (l * 1e4).round()),
        Some(129760.0)
    );

    let me = json_ok(app.get("/api/rider/me", Some(&session.token)).await).await["rider"].clone();
    assert_eq!(
        me["location"]["lon"].as_f64().map(|l| (l * 1e4).round()),
        Some(776060.0)
    );
    let current = json_ok(
        app.get("/api/rider/orders/current", Some(&session.token))
            .await,
    )
    .await;
    assert_eq!(current, json!({ "order": null }));

    // Other back-end services use the internal key; customers may not look at riders at all.
    let service = app
        .client
        .get(app.url(&format!(
            "/api/rider/nearby?lat={}&lon={}",
            MG_ROAD.0, MG_ROAD.1
        )))
        .header("x-internal-key", INTERNAL_KEY)
        .send()
        .await
        .expect("send");
    assert_eq!(
        json_ok(service).await["riders"].as_array().map(Vec::len),
        Some(1)
    );
    let forged = app
        .client
        .get(app.url(&format!(
            "/api/rider/nearby?lat={}&lon={}",
            MG_ROAD.0, MG_ROAD.1
        )))
        .header("x-internal-key", "guess")
        .send()
        .await
        .expect("send");
    assert_eq!(error_code(forged, StatusCode::FORBIDDEN).await, "forbidden");
    let customer = app.dev_login("nosy@x.test", "Nosy").await;
    let response = app
        .get(
            &format!("/api/rider/nearby?lat={}&lon={}", MG_ROAD.0, MG_ROAD.1),
            Some(&customer.token),
        )
        .await;
    assert_eq!(
        error_code(response, StatusCode::FORBIDDEN).await,
        "forbidden"
    );

    // Going offline hides the rider from the search.
    json_ok(
        app.put(
            "/api/rider/availability",
            Some(&session.token),
            &json!({ "available": false }),
        )
        .await,
    )
    .await;
    assert!(nearby(&app, &admin.token, MG_ROAD).await.is_empty());
}

#[tokio::test]
async fn bad_positions_are_400s_and_change_nothing() {
    let app = spawn_app().await;
    let (session, _) = rider(&app, "bad-gps@x.test", MG_ROAD, true).await;
    for body in [
        json!({ "lat": 91.0, "lon": 77.6 }),
        json!({ "lat": 12.9, "lon": -180.5 }),
        json!({ "lat": "12.9", "lon": 77.6 }),
        json!({ "lat": 12.9 }),
        json!({ "lat": 12.9, "lon": 77.6, "heading": 361.0 }),
        json!({ "lat": 12.9, "lon": 77.6, "speedMps": -1.0 }),
        json!({ "lat": 12.9, "lon": 77.6, "speedMps": 1000.0 }),
        json!({ "lat": 12.9, "lon": 77.6, "at": "yesterday" }),
    ] {
        let response = app
            .put("/api/rider/location", Some(&session.token), &body)
            .await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{body}");
        error_code(response, StatusCode::BAD_REQUEST).await;
    }
    let nan = app
        .client
        .put(app.url("/api/rider/location"))
        .bearer_auth(&session.token)
        .header("content-type", "application/json")
        .body(r#"{"lat": NaN, "lon": 77.6}"#)
        .send()
        .await
        .expect("send");
    assert_eq!(
        error_code(nan, StatusCode::BAD_REQUEST).await,
        "malformed_json"
    );
    let ok = app
        .put(
            "/api/rider/location",
            Some(&session.token),
            &json!({ "lat": 12.9, "lon": 77.6, "at": "2026-11-26T10:00:00Z" }),
        )
        .await;
    assert_eq!(ok.status(), StatusCode::NO_CONTENT);
    let me = json_ok(app.get("/api/rider/me", Some(&session.token)).await).await;
    assert_eq!(
        me["rider"]["location"]["lat"]
            .as_f64()
            .map(|l| (l * 10.0).round()),
        Some(129.0)
    );

    let customer = app.dev_login("not-a-rider@x.test", "C").await;
    let response = app
        .put(
            "/api/rider/location",
            Some(&customer.token),
            &json!({ "lat": 1.0, "lon": 1.0 }),
        )
        .await;
    assert_eq!(
        error_code(response, StatusCode::FORBIDDEN).await,
        "forbidden"
    );
    let no_profile = app.user_with_role("no-profile@x.test", "rider").await;
    let response = app
        .put(
            "/api/rider/location",
            Some(&no_profile.token),
            &json!({ "lat": 1.0, "lon": 1.0 }),
        )
        .await;
    assert_eq!(
        error_code(response, StatusCode::NOT_FOUND).await,
        "not_found"
    );
}

#[tokio::test]
async fn stale_riders_are_invisible_until_they_report_again() {
    let app = spawn_app_with(&[("TOMATO_DISPATCH__STALE_AFTER_S", "1")]).await;
    let admin = app.admin().await;
    let (session, _) = rider(&app, "stale@x.test", MG_ROAD, true).await;
    assert_eq!(nearby(&app, &admin.token, MG_ROAD).await.len(), 1);
    tokio::time::sleep(Duration::from_millis(2200)).await;
    assert!(
        nearby(&app, &admin.token, MG_ROAD).await.is_empty(),
        "silent for 2 s > stale_after_s"
    );
    move_to(&app, &session, MG_ROAD).await;
    assert_eq!(nearby(&app, &admin.token, MG_ROAD).await.len(), 1);
}

#[tokio::test]
async fn nearby_input_is_validated_and_nearest_come_first() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    let (_, far) = rider(&app, "far@x.test", (12.9900, 77.6050), true).await;
    let (_, near) = rider(&app, "near@x.test", (12.9760, 77.6050), true).await;
    let (_, out) = rider(&app, "out@x.test", (13.1000, 77.6050), true).await;
    let found = nearby(&app, &admin.token, MG_ROAD).await;
    let ids: Vec<&str> = found
        .iter()
        .map(|r| r["id"].as_str().expect("id"))
        .collect();
    assert_eq!(
        ids,
        [near.as_str(), far.as_str()],
        "nearest first; {out} is beyond 5 km"
    );
    let one = json_ok(
        app.get(
            &format!(
                "/api/rider/nearby?lat={}&lon={}&limit=1",
                MG_ROAD.0, MG_ROAD.1
            ),
            Some(&admin.token),
        )
        .await,
    )
    .await;
    assert_eq!(one["riders"].as_array().map(Vec::len), Some(1));
    for query in [
        "lat=91&lon=1",
        "lat=1&lon=1&radius=0",
        "lat=1&lon=1&radius=50001",
        "lat=1&lon=1&limit=0",
        "lat=1&lon=1&limit=101",
        "lat=NaN&lon=1",
        "lon=1",
    ] {
        let response = app
            .get(&format!("/api/rider/nearby?{query}"), Some(&admin.token))
            .await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{query}");
    }
}

crate::on_both_stores!(positions_are_written_behind_and_survive_a_restart);
async fn positions_are_written_behind_and_survive_a_restart(store: Store) {
    let mut app = spawn_app_on(store, &[]).await;
    let (session, id) = rider(&app, "persist@x.test", MG_ROAD, true).await;
    move_to(&app, &session, (12.9800, 77.6100)).await;
    app.restart().await;
    let me = json_ok(app.get("/api/rider/me", Some(&session.token)).await).await["rider"].clone();
    assert_eq!(me["id"], id.as_str());
    assert_eq!(
        me["location"]["lat"].as_f64().map(|l| (l * 1e4).round()),
        Some(129800.0)
    );
    assert_eq!(me["isAvailable"], true);
    let admin = app.admin().await;
    assert_eq!(
        nearby(&app, &admin.token, (12.98, 77.61)).await.len(),
        1,
        "still fresh after a quick restart"
    );
}
